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
use ureq::http::Response;
use ureq::{Agent, Body, ResponseExt};
use url::Url;

use crate::error::{ErrorKind, HttpError};
use crate::rules::{self, Answer, Failure, Fault, Pin, Retry};

/// The smallest read-ahead block: 64 KiB, QEMU's default cluster size.
/// Reading forward wants large blocks, reading at random small ones: a
/// Debian root served by `qcow serve` from a URL fetched 82 MB of a
/// 113 MB file in 256 KiB blocks and 34 MB in 64 KiB blocks before
/// multi-user.target (`tests/root_boot.rs`).
pub const MIN_READAHEAD: u64 = 64 << 10;
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
    /// a body cut short or a 5xx answer ([`Fault::retry`]).
    pub retries: u32,
    /// Wait before the first retry; doubled at each next one (at most
    /// 8 s, [`Retry::DEFAULT`]'s longest wait).
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
            retries: Retry::DEFAULT.tries - 1,
            backoff: Retry::DEFAULT.first_wait,
            timeout: Duration::from_secs(30),
            max_redirects: rules::MAX_REDIRECTS,
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

/// The answer's status and the headers the rules read, from `ureq`'s response.
fn answer_of(response: &Response<Body>) -> Answer {
    let mut answer = Answer::new(response.status().as_u16());
    for (name, value) in response.headers() {
        if let Ok(value) = value.to_str() {
            answer.with_header(name.as_str(), value);
        }
    }
    answer
}

/// A failed `ureq` call as a fault; whether it is worth another try is
/// this client's to say: a connection cut, reset or timed out is. Not: a
/// refused connection, an unknown host, TLS or protocol errors.
fn transport(request: &str, error: ureq::Error) -> Fault {
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
    Fault::Transport {
        request: request.to_string(),
        error: error.to_string(),
        transient,
    }
}

/// `once` under `retry`, sleeping between tries; the failure names `url`.
fn with_retries<T>(
    retry: Retry,
    url: &str,
    once: impl FnMut() -> Result<T, Fault>,
) -> Result<T, HttpError> {
    retry
        .run(once, thread::sleep)
        .map_err(|failure| HttpError::failed(url, failure))
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
            tries: options.retries.saturating_add(1),
            first_wait: options.backoff,
            max_wait: Retry::DEFAULT.max_wait,
        };
        let requests = AtomicU64::new(0);
        let head = with_retries(retry, url.as_str(), || {
            requests.fetch_add(1, Ordering::Relaxed);
            let response = agent
                .head(url.as_str())
                .call()
                .map_err(|error| transport("HEAD", error))?;
            let found = rules::head(&answer_of(&response))?;
            Ok(found.map(|(size, pin)| (response.get_uri().to_string(), size, pin)))
        })?;
        let (location, size, pin) = match head {
            Some(found) => found,
            None => Self::probe(agent, url, retry, &requests)?,
        };
        let final_url = Url::parse(&location).map_err(|error| {
            HttpError::failed(
                url.as_str(),
                Failure {
                    fault: Fault::BadResponse(format!("redirected to {location:?}: {error}")),
                    tries: 1,
                },
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

    /// The size from a one-byte range (a server without `HEAD`, or whose
    /// `HEAD` gives no length).
    fn probe(
        agent: &Agent,
        url: &Url,
        retry: Retry,
        requests: &AtomicU64,
    ) -> Result<(String, u64, Pin), HttpError> {
        with_retries(retry, url.as_str(), || {
            requests.fetch_add(1, Ordering::Relaxed);
            let response = agent
                .get(url.as_str())
                .header("Range", rules::answer::range_header(0, 0))
                .call()
                .map_err(|error| transport(&rules::answer::range_request(0, 0), error))?;
            let (size, pin) = rules::probe(&answer_of(&response))?;
            Ok((response.get_uri().to_string(), size, pin))
        })
    }

    fn error(&self, kind: ErrorKind) -> HttpError {
        HttpError::new(self.url.as_str(), kind)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_at(self: &Arc<Self>, offset: u64, buf: &mut [u8]) -> Result<(), HttpError> {
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
    /// (and the blocks after it, for a reader going forward) on a miss; on
    /// a hit, a reader going forward keeps the blocks after it in flight.
    fn read_block(
        self: &Arc<Self>,
        block: u64,
        from: usize,
        out: &mut [u8],
    ) -> Result<(), HttpError> {
        let mut state = self.lock();
        loop {
            state.clock += 1;
            let now = state.clock;
            match state.slots.get_mut(&block) {
                Some(Slot::Ready { data, used }) => {
                    *used = now;
                    out.copy_from_slice(&data[from..from + out.len()]);
                    self.keep_ahead(&mut state, block);
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

    /// For a reader going forward on `block` (the block before it cached),
    /// starts fetching the absent blocks among the next
    /// [`HttpOptions::connections`], in the background, as many as
    /// connections are free: the next wave is on the wire while this one
    /// is decoded, where a miss would wait a round trip for it. A fetch
    /// that fails leaves no block: the reader fetches it again when it
    /// reads it, and gets the error then.
    fn keep_ahead(self: &Arc<Self>, state: &mut State, block: u64) {
        let forward = block > 0
            && (state.last_miss == Some(block - 1) || state.slots.contains_key(&(block - 1)));
        if !forward || self.size == 0 {
            return;
        }
        let loading = state
            .slots
            .values()
            .filter(|slot| matches!(slot, Slot::Loading))
            .count();
        let free = self.parallel.saturating_sub(loading);
        let last = (self.size - 1) / self.block;
        let window = block.saturating_add(self.parallel as u64).min(last);
        let wanted: Vec<u64> = (block + 1..=window)
            .filter(|next| !state.slots.contains_key(next))
            .take(free)
            .collect();
        let room = make_room(state, self.capacity, wanted.len());
        for &ahead in &wanted[..room] {
            state.slots.insert(ahead, Slot::Loading);
            let object = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name("qcow2-http read-ahead".into())
                .spawn(move || object.land(ahead));
            if spawned.is_err() {
                state.slots.remove(&ahead);
            }
        }
    }

    /// Fetches `block` and puts it in the cache (or takes its slot back).
    fn land(&self, block: u64) {
        let result = self.fetch(block);
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        match result {
            Ok(data) => {
                state.slots.insert(block, Slot::Ready { data, used: now });
            }
            Err(_) => {
                state.slots.remove(&block);
            }
        }
        self.wake.notify_all();
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
                        Err(HttpError::failed(
                            self.url.as_str(),
                            Failure {
                                fault: Fault::BadResponse(
                                    "a fetching thread stopped unexpectedly".into(),
                                ),
                                tries: 1,
                            },
                        ))
                    })
                })
                .collect()
        })
    }

    /// One block by a range request, checked, with retries.
    fn fetch(&self, block: u64) -> Result<Vec<u8>, HttpError> {
        let first = block * self.block;
        let last = (first + self.block).min(self.size) - 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = with_retries(self.retry, self.url.as_str(), || {
            self.fetch_once(first, last)
        });
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// One try of bytes `first..=last`: the answer's head checked by the
    /// rules before its body is read, the body's length after.
    fn fetch_once(&self, first: u64, last: u64) -> Result<Vec<u8>, Fault> {
        let request = rules::answer::range_request(first, last);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut get = self
            .agent
            .get(self.url.as_str())
            .header("Range", rules::answer::range_header(first, last));
        if let Some((name, value)) = self.pin.precondition() {
            get = get.header(name, value);
        }
        let response = get.call().map_err(|error| transport(&request, error))?;
        rules::check_range(&answer_of(&response), first, last, self.size, &self.pin)?;
        let len = last - first + 1;
        let mut data = Vec::with_capacity(len as usize);
        // One byte more than asked: a longer body is refused, not cut.
        let read = response
            .into_body()
            .into_reader()
            .take(len + 1)
            .read_to_end(&mut data);
        if let Err(error) = read {
            return Err(Fault::Transport {
                request,
                error: format!("the body broke off after {} bytes: {error}", data.len()),
                transient: true,
            });
        }
        self.fetched.fetch_add(data.len() as u64, Ordering::Relaxed);
        rules::check_body(first, last, data.len() as u64)?;
        Ok(data)
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
