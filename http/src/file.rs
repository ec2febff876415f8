//! One object on a web server as a [`BlockRead`]: its size from `HEAD`,
//! its bytes from range `GET`s of whole read-ahead blocks, kept in a
//! bounded cache shared by every reader of the object in the process.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use qcow2_reader::BlockRead;
use ureq::http::{HeaderMap, Response};
use ureq::{Agent, Body, ResponseExt};
use url::Url;

use crate::error::{ErrorKind, HttpError};

/// The smallest read-ahead block.
pub const MIN_READAHEAD: u64 = 256 << 10;
/// The largest read-ahead block.
pub const MAX_READAHEAD: u64 = 2 << 20;

/// How objects are read: block size, parallelism, cache, retries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Bytes per range request: a power of two from [`MIN_READAHEAD`] to
    /// [`MAX_READAHEAD`]; requests start at multiples of it.
    pub readahead: u64,
    /// Range requests one sequential reader may have in flight at once
    /// (a miss right after the previous block fetches this many blocks in
    /// parallel). Readers on other threads each fetch on their own
    /// connection besides.
    pub connections: usize,
    /// Blocks cached per object, in flight included: the memory bound is
    /// `readahead * cache_blocks` bytes per object ([`HttpOptions::memory_bytes`]).
    pub cache_blocks: usize,
    /// Tries after the first on a connection failure, a timeout, a reset,
    /// a body cut short or a 5xx answer.
    pub retries: u32,
    /// Wait before the first retry; doubled at each next one (at most 8 s).
    pub backoff: Duration,
    /// Limit for connecting, for the answer's head, and for its body.
    pub timeout: Duration,
    /// Redirects followed at open.
    pub max_redirects: u32,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            readahead: 1 << 20,
            connections: 4,
            cache_blocks: 16,
            retries: 4,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(30),
            max_redirects: 10,
        }
    }
}

impl HttpOptions {
    /// The most bytes the cache of one object holds.
    pub fn memory_bytes(&self) -> u64 {
        self.readahead.saturating_mul(self.cache_blocks as u64)
    }

    fn check(&self) -> Result<(), String> {
        if !self.readahead.is_power_of_two()
            || !(MIN_READAHEAD..=MAX_READAHEAD).contains(&self.readahead)
        {
            return Err(format!(
                "read-ahead {} bytes: it must be a power of two from {} KiB to {} MiB",
                self.readahead,
                MIN_READAHEAD >> 10,
                MAX_READAHEAD >> 20
            ));
        }
        if !(1..=64).contains(&self.connections) {
            return Err(format!("{} connections: from 1 to 64", self.connections));
        }
        if self.cache_blocks < self.connections.max(2) || self.cache_blocks > 4096 {
            return Err(format!(
                "{} cache blocks: at least the connections ({}) and 2, at most 4096",
                self.cache_blocks, self.connections
            ));
        }
        Ok(())
    }
}

/// Opens objects over HTTP: one connection pool, and one cache per URL,
/// shared by every [`HttpFile`] of the same URL (the threads of `qcow
/// convert` each open the chain, and read through one cache).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    agent: Agent,
    options: HttpOptions,
    opened: Mutex<HashMap<String, Arc<Object>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client reading with `options`; options out of range are an error.
    pub fn new(options: HttpOptions) -> Result<Self, HttpError> {
        options
            .check()
            .map_err(|why| HttpError::new("HTTP options", ErrorKind::BadOptions(why)))?;
        let config = Agent::config_builder()
            // Statuses are answers to judge here, not transport errors.
            .http_status_as_error(false)
            .max_redirects(options.max_redirects)
            .timeout_connect(Some(options.timeout))
            .timeout_recv_response(Some(options.timeout))
            .timeout_recv_body(Some(options.timeout))
            .max_idle_connections_per_host(64)
            .user_agent(concat!("qcow2-http/", env!("CARGO_PKG_VERSION")))
            // The system's trust (its CA bundle, or `SSL_CERT_FILE` /
            // `SSL_CERT_DIR`), as curl and QEMU's curl driver: an object
            // store behind an organisation's own CA is trusted where the
            // machine trusts it.
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        Ok(Self {
            inner: Arc::new(ClientInner {
                agent: Agent::new_with_config(config),
                options,
                opened: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options it reads with.
    pub fn options(&self) -> &HttpOptions {
        &self.inner.options
    }

    /// Opens the object at `url` (`http://` or `https://`): its size and
    /// validator from `HEAD` (or a one-byte range when `HEAD` gives no
    /// size), redirects followed. A URL opened before by this client is
    /// the same object, read through the same cache, pinned to the same
    /// version.
    pub fn open(&self, url: &Url) -> Result<HttpFile, HttpError> {
        check_scheme(url)?;
        let mut key = url.clone();
        key.set_fragment(None);
        let mut opened = self
            .inner
            .opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(object) = opened.get(key.as_str()) {
            return Ok(HttpFile {
                object: object.clone(),
            });
        }
        let object = Arc::new(Object::open(&self.inner.agent, &key, &self.inner.options)?);
        opened.insert(key.as_str().to_string(), object.clone());
        Ok(HttpFile { object })
    }
}

/// Only `http://` and `https://`: an image read over HTTP names no local file.
pub(crate) fn check_scheme(url: &Url) -> Result<(), HttpError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(HttpError::new(
            url.as_str(),
            ErrorKind::BadUrl(format!(
                "the scheme is {other:?}; only http and https are read"
            )),
        )),
    }
}

/// One object on a web server, read lazily by range requests.
///
/// Reads go through the object's cache of read-ahead blocks; a miss
/// fetches the block (and, for a reader going forward, the next ones, up
/// to [`HttpOptions::connections`] in parallel) with `Range` and the
/// validator pinned at open (`If-Match` with a strong `ETag`, otherwise
/// `If-Unmodified-Since` with `Last-Modified`), and checks the answer's
/// status, `Content-Range`, validator and length. Clones read through the
/// same cache.
#[derive(Clone)]
pub struct HttpFile {
    object: Arc<Object>,
}

impl std::fmt::Debug for HttpFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFile")
            .field("url", &self.object.url.as_str())
            .field("size", &self.object.size)
            .finish_non_exhaustive()
    }
}

impl HttpFile {
    /// Where the object is, after the redirects followed at open: the base
    /// for the names it holds.
    pub fn url(&self) -> &Url {
        &self.object.url
    }

    /// The `ETag` the object was pinned by, if the server gave one.
    pub fn etag(&self) -> Option<&str> {
        self.object.pin.etag.as_deref()
    }

    /// Range requests sent so far (retries included), by every reader of the object.
    pub fn requests(&self) -> u64 {
        self.object.requests.load(Ordering::Relaxed)
    }

    /// Body bytes received so far, by every reader of the object.
    pub fn bytes_fetched(&self) -> u64 {
        self.object.fetched.load(Ordering::Relaxed)
    }
}

impl BlockRead for HttpFile {
    type Error = HttpError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), HttpError> {
        self.object.read_at(offset, buf)
    }

    fn size(&self) -> Result<u64, HttpError> {
        Ok(self.object.size)
    }
}

/// What the object was at open; every answer must still be it.
#[derive(Debug, Clone, Default)]
struct Pin {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Pin {
    fn of(headers: &HeaderMap) -> Self {
        Self {
            etag: header(headers, "etag"),
            last_modified: header(headers, "last-modified"),
        }
    }

    /// The precondition a range request carries. `If-Match` compares
    /// strongly, so a weak `ETag` would never match: then the date.
    fn precondition(&self) -> Option<(&'static str, &str)> {
        match (&self.etag, &self.last_modified) {
            (Some(etag), _) if !etag.starts_with("W/") => Some(("If-Match", etag)),
            (_, Some(date)) => Some(("If-Unmodified-Since", date)),
            _ => None,
        }
    }

    /// Whether an answer's validators are those pinned (a validator the
    /// answer leaves out is not compared).
    fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let now = Pin::of(headers);
        if let (Some(was), Some(is)) = (&self.etag, &now.etag) {
            if was != is {
                return Err(format!("ETag was {was}, now {is}"));
            }
        }
        if let (Some(was), Some(is)) = (&self.last_modified, &now.last_modified) {
            if was != is {
                return Err(format!("Last-Modified was {was}, now {is}"));
            }
        }
        Ok(())
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_string())
}

/// A try that failed: worth another try (the error to report if none is
/// left), or final.
enum Failed {
    Retry(ErrorKind),
    Fatal(ErrorKind),
}

fn transport(request: &str, error: ureq::Error) -> Failed {
    let kind = ErrorKind::Transport {
        request: request.to_string(),
        tries: 1,
        error: error.to_string(),
    };
    // Worth another try: a connection cut, reset or timed out. Not: a
    // refused connection, an unknown host, TLS or protocol errors.
    let transient = match &error {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(error) => matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::TimedOut
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::Interrupted
        ),
        _ => false,
    };
    if transient {
        Failed::Retry(kind)
    } else {
        Failed::Fatal(kind)
    }
}

fn status_kind(request: &str, response: &Response<Body>) -> ErrorKind {
    let status = response.status();
    ErrorKind::Status {
        request: request.to_string(),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
    }
}

/// The retry policy: tries with a doubling wait between them.
#[derive(Debug, Clone, Copy)]
struct Retry {
    retries: u32,
    backoff: Duration,
}

impl Retry {
    fn run<T>(
        self,
        url: &str,
        mut once: impl FnMut() -> Result<T, Failed>,
    ) -> Result<T, HttpError> {
        let mut wait = self.backoff;
        let mut tries = 0u32;
        loop {
            tries += 1;
            match once() {
                Ok(value) => return Ok(value),
                Err(Failed::Fatal(kind)) => return Err(HttpError::new(url, kind)),
                Err(Failed::Retry(mut kind)) if tries > self.retries => {
                    if let ErrorKind::Transport { tries: counted, .. } = &mut kind {
                        *counted = tries;
                    }
                    return Err(HttpError::new(url, kind));
                }
                Err(Failed::Retry(_)) => {
                    thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
            }
        }
    }
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = header(headers, "content-range")?;
    let rest = value.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total))
}

/// A block of the cache.
enum Slot {
    /// Being fetched by some reader: wait for it.
    Loading,
    /// Fetched; `used` orders eviction (least recently used first).
    Ready { data: Vec<u8>, used: u64 },
}

#[derive(Default)]
struct State {
    slots: HashMap<u64, Slot>,
    clock: u64,
    last_miss: Option<u64>,
}

struct Object {
    agent: Agent,
    url: Url,
    size: u64,
    pin: Pin,
    block: u64,
    capacity: usize,
    parallel: usize,
    retry: Retry,
    state: Mutex<State>,
    wake: Condvar,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    fetched: AtomicU64,
}

impl Object {
    fn open(agent: &Agent, url: &Url, options: &HttpOptions) -> Result<Self, HttpError> {
        let retry = Retry {
            retries: options.retries,
            backoff: options.backoff,
        };
        let requests = AtomicU64::new(0);
        let head = retry.run(url.as_str(), || {
            requests.fetch_add(1, Ordering::Relaxed);
            let response = agent
                .head(url.as_str())
                .call()
                .map_err(|error| transport("HEAD", error))?;
            let status = response.status().as_u16();
            let size = header(response.headers(), "content-length")
                .and_then(|length| length.parse::<u64>().ok());
            match status {
                200..=299 => Ok(size.map(|size| {
                    (
                        response.get_uri().to_string(),
                        size,
                        Pin::of(response.headers()),
                    )
                })),
                // No HEAD here: ask for one byte instead.
                405 | 501 => Ok(None),
                500..=599 => Err(Failed::Retry(status_kind("HEAD", &response))),
                _ => Err(Failed::Fatal(status_kind("HEAD", &response))),
            }
        })?;
        let (location, size, pin) = match head {
            Some(found) => found,
            None => Self::probe(agent, url, retry, &requests)?,
        };
        let final_url = Url::parse(&location).map_err(|error| {
            HttpError::new(
                url.as_str(),
                ErrorKind::BadResponse(format!("redirected to {location:?}: {error}")),
            )
        })?;
        check_scheme(&final_url)?;
        Ok(Self {
            agent: agent.clone(),
            url: final_url,
            size,
            pin,
            block: options.readahead,
            capacity: options.cache_blocks,
            parallel: options.connections,
            retry,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            requests,
            fetched: AtomicU64::new(0),
        })
    }

    /// The size from a one-byte range: `Content-Range`'s total.
    fn probe(
        agent: &Agent,
        url: &Url,
        retry: Retry,
        requests: &AtomicU64,
    ) -> Result<(String, u64, Pin), HttpError> {
        let request = "GET bytes=0-0";
        retry.run(url.as_str(), || {
            requests.fetch_add(1, Ordering::Relaxed);
            let response = agent
                .get(url.as_str())
                .header("Range", "bytes=0-0")
                .call()
                .map_err(|error| transport(request, error))?;
            match response.status().as_u16() {
                206 => {}
                200 => {
                    return Err(Failed::Fatal(ErrorKind::IgnoresRange {
                        range: "0-0".into(),
                    }))
                }
                500..=599 => return Err(Failed::Retry(status_kind(request, &response))),
                _ => return Err(Failed::Fatal(status_kind(request, &response))),
            }
            let total = content_range(response.headers()).and_then(|(_, _, total)| total);
            let Some(size) = total else {
                return Err(Failed::Fatal(ErrorKind::BadResponse(
                    "neither HEAD's Content-Length nor a range's Content-Range gives the size"
                        .into(),
                )));
            };
            Ok((
                response.get_uri().to_string(),
                size,
                Pin::of(response.headers()),
            ))
        })
    }

    fn error(&self, kind: ErrorKind) -> HttpError {
        HttpError::new(self.url.as_str(), kind)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), HttpError> {
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| {
                self.error(ErrorKind::OutOfRange {
                    offset,
                    len,
                    size: self.size,
                })
            })?;
        let mut at = offset;
        while at < end {
            let block = at / self.block;
            let block_start = block * self.block;
            let take = (end.min(block_start + self.block) - at) as usize;
            let done = (at - offset) as usize;
            self.read_block(
                block,
                (at - block_start) as usize,
                &mut buf[done..done + take],
            )?;
            at += take as u64;
        }
        Ok(())
    }

    /// Copies `out.len()` bytes from `from` in block `block`, fetching it
    /// (and the blocks after it, for a reader going forward) on a miss.
    fn read_block(&self, block: u64, from: usize, out: &mut [u8]) -> Result<(), HttpError> {
        let mut state = self.lock();
        loop {
            state.clock += 1;
            let now = state.clock;
            match state.slots.get_mut(&block) {
                Some(Slot::Ready { data, used }) => {
                    *used = now;
                    out.copy_from_slice(&data[from..from + out.len()]);
                    return Ok(());
                }
                Some(Slot::Loading) => {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                None => {}
            }
            let wanted = self.batch(&state, block);
            let room = make_room(&mut state, self.capacity, wanted.len());
            if room == 0 {
                // Every slot is being fetched: wait for one to land.
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let batch = &wanted[..room];
            for &fetching in batch {
                state.slots.insert(fetching, Slot::Loading);
            }
            state.last_miss = batch.last().copied();
            drop(state);
            let results = self.fetch_all(batch);
            let mut state = self.lock();
            let mut outcome = Ok(());
            for (&fetched, result) in batch.iter().zip(results) {
                match result {
                    Ok(data) => {
                        if fetched == block {
                            out.copy_from_slice(&data[from..from + out.len()]);
                        }
                        state.slots.insert(fetched, Slot::Ready { data, used: now });
                    }
                    Err(error) => {
                        state.slots.remove(&fetched);
                        // A block fetched ahead is fetched again when read.
                        if fetched == block {
                            outcome = Err(error);
                        }
                    }
                }
            }
            self.wake.notify_all();
            return outcome;
        }
    }

    /// The blocks to fetch for a miss on `block`: it, and for a reader
    /// going forward the absent blocks after it, as many as the
    /// connections not already busy.
    fn batch(&self, state: &State, block: u64) -> Vec<u64> {
        let mut batch = vec![block];
        let forward = block > 0
            && (state.last_miss == Some(block - 1) || state.slots.contains_key(&(block - 1)));
        if !forward || self.size == 0 {
            return batch;
        }
        let busy = self.in_flight.load(Ordering::Relaxed);
        let extra = self.parallel.saturating_sub(busy + 1);
        let last = (self.size - 1) / self.block;
        let mut next = block + 1;
        while batch.len() <= extra && next <= last && !state.slots.contains_key(&next) {
            batch.push(next);
            next += 1;
        }
        batch
    }

    fn fetch_all(&self, batch: &[u64]) -> Vec<Result<Vec<u8>, HttpError>> {
        if let [block] = batch {
            return vec![self.fetch(*block)];
        }
        thread::scope(|scope| {
            let fetches: Vec<_> = batch
                .iter()
                .map(|&block| scope.spawn(move || self.fetch(block)))
                .collect();
            fetches
                .into_iter()
                .map(|fetch| {
                    fetch.join().unwrap_or_else(|_| {
                        Err(self.error(ErrorKind::BadResponse(
                            "a fetching thread stopped unexpectedly".into(),
                        )))
                    })
                })
                .collect()
        })
    }

    /// One block by a range request, checked, with retries.
    fn fetch(&self, block: u64) -> Result<Vec<u8>, HttpError> {
        let first = block * self.block;
        let last = (first + self.block).min(self.size) - 1;
        let len = (last - first + 1) as usize;
        let range = format!("{first}-{last}");
        let request = format!("GET bytes={range}");
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self.retry.run(self.url.as_str(), || {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut get = self
                .agent
                .get(self.url.as_str())
                .header("Range", format!("bytes={range}"));
            if let Some((name, value)) = self.pin.precondition() {
                get = get.header(name, value);
            }
            let response = get.call().map_err(|error| transport(&request, error))?;
            match response.status().as_u16() {
                206 => {}
                200 => {
                    return Err(Failed::Fatal(ErrorKind::IgnoresRange {
                        range: range.clone(),
                    }))
                }
                412 => {
                    let (name, value) = self.pin.precondition().unwrap_or(("a precondition", ""));
                    return Err(Failed::Fatal(ErrorKind::Changed {
                        what: format!("412 Precondition Failed for {name}: {value}"),
                    }));
                }
                416 => {
                    return Err(Failed::Fatal(ErrorKind::Changed {
                        what: format!(
                            "416 Range Not Satisfiable for bytes {range}: it had {} bytes at open",
                            self.size
                        ),
                    }))
                }
                500..=599 => return Err(Failed::Retry(status_kind(&request, &response))),
                _ => return Err(Failed::Fatal(status_kind(&request, &response))),
            }
            self.pin
                .check(response.headers())
                .map_err(|what| Failed::Fatal(ErrorKind::Changed { what }))?;
            // None is asked for; an encoded body is not the object's bytes.
            if let Some(coding) = header(response.headers(), "content-encoding")
                .filter(|coding| !coding.eq_ignore_ascii_case("identity"))
            {
                return Err(Failed::Fatal(ErrorKind::BadResponse(format!(
                    "206 for bytes {range} with Content-Encoding {coding}, which was not asked for"
                ))));
            }
            let Some((got_first, got_last, total)) = content_range(response.headers()) else {
                return Err(Failed::Fatal(ErrorKind::BadResponse(format!(
                    "206 for bytes {range} without a readable Content-Range"
                ))));
            };
            if let Some(total) = total.filter(|&total| total != self.size) {
                return Err(Failed::Fatal(ErrorKind::Changed {
                    what: format!("its size was {} bytes, now {total}", self.size),
                }));
            }
            if got_first != first || got_last != last {
                return Err(Failed::Fatal(ErrorKind::Short {
                    range: range.clone(),
                    got: format!("206 with Content-Range bytes {got_first}-{got_last}"),
                }));
            }
            let mut data = Vec::with_capacity(len);
            let read = response
                .into_body()
                .into_reader()
                .take(len as u64 + 1)
                .read_to_end(&mut data);
            if let Err(error) = read {
                return Err(Failed::Retry(ErrorKind::Transport {
                    request: request.clone(),
                    tries: 1,
                    error: format!("the body broke off after {} bytes: {error}", data.len()),
                }));
            }
            self.fetched.fetch_add(data.len() as u64, Ordering::Relaxed);
            match data.len().cmp(&len) {
                std::cmp::Ordering::Less => Err(Failed::Retry(ErrorKind::Short {
                    range: range.clone(),
                    got: format!("a body of {} bytes", data.len()),
                })),
                std::cmp::Ordering::Greater => Err(Failed::Fatal(ErrorKind::BadResponse(format!(
                    "a body longer than the {len} bytes of its Content-Range"
                )))),
                std::cmp::Ordering::Equal => Ok(data),
            }
        });
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }
}

/// Evicts least recently used blocks until `want` more fit in
/// `capacity`, or only blocks in flight are left; how many fit.
fn make_room(state: &mut State, capacity: usize, want: usize) -> usize {
    while state.slots.len() + want > capacity {
        let oldest = state
            .slots
            .iter()
            .filter_map(|(&block, slot)| match slot {
                Slot::Ready { used, .. } => Some((*used, block)),
                Slot::Loading => None,
            })
            .min();
        let Some((_, block)) = oldest else { break };
        state.slots.remove(&block);
    }
    capacity.saturating_sub(state.slots.len()).min(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed_and_garbage_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("content-range", "bytes 0-262143/1048576".parse().unwrap());
        assert_eq!(content_range(&headers), Some((0, 262143, Some(1048576))));
        headers.insert("content-range", "bytes 5-9/*".parse().unwrap());
        assert_eq!(content_range(&headers), Some((5, 9, None)));
        headers.insert("content-range", "items 0-1/2".parse().unwrap());
        assert_eq!(content_range(&headers), None);
    }

    #[test]
    fn weak_etags_pin_by_date_since_if_match_compares_strongly() {
        let pin = Pin {
            etag: Some("W/\"abc\"".into()),
            last_modified: Some("Mon, 07 Dec 2026 02:00:00 GMT".into()),
        };
        assert_eq!(
            pin.precondition(),
            Some(("If-Unmodified-Since", "Mon, 07 Dec 2026 02:00:00 GMT"))
        );
        let strong = Pin {
            etag: Some("\"abc\"".into()),
            last_modified: None,
        };
        assert_eq!(strong.precondition(), Some(("If-Match", "\"abc\"")));
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_block_never_one_in_flight() {
        let mut state = State::default();
        state.slots.insert(0, Slot::Loading);
        state.slots.insert(
            1,
            Slot::Ready {
                data: vec![1],
                used: 5,
            },
        );
        state.slots.insert(
            2,
            Slot::Ready {
                data: vec![2],
                used: 3,
            },
        );
        // One more fits in 3 after evicting the older ready block.
        assert_eq!(make_room(&mut state, 3, 1), 1);
        assert!(state.slots.contains_key(&0) && state.slots.contains_key(&1));
        assert!(!state.slots.contains_key(&2));
        // Two more: only block 1 can go; then one fits.
        assert_eq!(make_room(&mut state, 2, 2), 1);
        assert!(state.slots.contains_key(&0) && state.slots.len() == 1);
        // Full of blocks in flight: none fits, nothing evicted.
        assert_eq!(make_room(&mut state, 1, 1), 0);
        assert_eq!(state.slots.len(), 1);
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let options = HttpOptions {
            readahead: 3 << 18,
            ..HttpOptions::default()
        };
        assert!(Client::new(options).is_err());
        let options = HttpOptions {
            readahead: 4 << 20,
            ..HttpOptions::default()
        };
        assert!(Client::new(options).is_err());
        assert!(Client::new(HttpOptions::default()).is_ok());
    }
}
