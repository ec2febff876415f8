//! Reading an image from a web server: the rules of "HTTP storage" that
//! need no firmware.
//!
//! The driver's transport (`src/driver/net.rs`, the firmware's
//! `EFI_HTTP_PROTOCOL`) sends the requests; everything it decides about
//! them is here, so that it is unit-tested on the host:
//!
//! - [`HttpUrl`]: which `\qcow2.cfg` lines are URLs, and where a backing
//!   file an HTTP image names is looked for (beside it, by the name's last
//!   component, as for files: `path::beside`);
//! - [`probe`] and [`check_range`]: what a server's answer to a range
//!   request must be before its body is used (206 with exactly the range
//!   asked for, the object pinned at open by its `ETag` / `Last-Modified`);
//!   anything else is a named [`Fault`], never bytes;
//! - [`Fault::retry`]: which faults are worth another try (5xx, a transport
//!   failure), up to [`MAX_TRIES`];
//! - [`ReadAhead`]: the read-ahead cache, aligned blocks of one size in a
//!   buffer allocated once, least recently used evicted.
//!
//! These are the same rules as the host's `qcow2-http` crate (`http/`),
//! written again here because that crate is built on `std` and `ureq`; a
//! `no_std` core shared by both is the intended shape (issue 23).

use alloc::collections::TryReserveError;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::path::{self, PathError};

/// Longest URL the driver accepts, in bytes.
pub const MAX_URL_BYTES: usize = 1024;

/// Tries of one request before its fault is reported (a 5xx answer or a
/// transport failure); the driver waits 100 ms, 200 ms, 400 ms between them.
pub const MAX_TRIES: u32 = 4;

/// Whether a `\qcow2.cfg` line is a URL rather than a path.
pub fn is_url(line: &str) -> bool {
    let head = line.get(..8).unwrap_or(line).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not `http://` (or `https://`).
    Scheme,
    /// No host after the scheme.
    NoHost,
    /// User information (`user@host`) is not sent by the driver.
    UserInfo,
    /// A space, a control character, a fragment, or non-ASCII text.
    BadCharacter,
    /// Longer than [`MAX_URL_BYTES`].
    TooLong,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => "not an http:// or https:// URL",
            UrlError::NoHost => "the URL has no host",
            UrlError::UserInfo => "user names in URLs are not supported",
            UrlError::BadCharacter => {
                "the URL holds a space, a control or non-ASCII character, or a fragment (#)"
            }
            UrlError::TooLong => "the URL is too long",
        })
    }
}

/// An `http://` or `https://` URL the driver can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    text: String,
    /// Bytes of the scheme and `://`.
    scheme_len: usize,
    /// End of the authority (`host[:port]`) in `text`.
    host_end: usize,
}

impl HttpUrl {
    /// Parses `text`; a URL without a path gets `/` (before its query).
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        if text.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        if !is_url(text) {
            return Err(UrlError::Scheme);
        }
        if text
            .bytes()
            .any(|b| !b.is_ascii_graphic() || b == b'#' || b == b'\\')
        {
            return Err(UrlError::BadCharacter);
        }
        let scheme_len = text.find("://").map_or(0, |at| at + 3);
        let rest = &text[scheme_len..];
        let host_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let host = &rest[..host_len];
        if host.is_empty() || host.starts_with(':') {
            return Err(UrlError::NoHost);
        }
        if host.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let mut text = text.to_string();
        if !rest[host_len..].starts_with('/') {
            // A path of its own, before any query (`http://h?q` is
            // `http://h/?q`), so that the names beside it stay on this host.
            text.insert(scheme_len + host_len, '/');
            if text.len() > MAX_URL_BYTES {
                return Err(UrlError::TooLong);
            }
        }
        Ok(Self {
            text,
            scheme_len,
            host_end: scheme_len + host_len,
        })
    }

    /// The whole URL.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `host[:port]`, for the `Host` header.
    pub fn host(&self) -> &str {
        &self.text[self.scheme_len..self.host_end]
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.scheme_len == "https://".len()
    }

    /// The URL of the file `name` (bytes from an image header) beside this
    /// one: its directory plus the name's last component, as the driver
    /// finds files beside a file-attached image. The query is dropped.
    pub fn beside(&self, name: &[u8]) -> Result<HttpUrl, PathError> {
        let name = core::str::from_utf8(name).map_err(|_| PathError::NotUtf8)?;
        let file = path::file_name(name)?;
        let path_end = self.text[self.host_end..]
            .find('?')
            .map_or(self.text.len(), |at| self.host_end + at);
        // Searched in the path only (which starts with `/`), never in the
        // scheme's `//`: the file stays on this host.
        let directory_end =
            self.host_end + self.text[self.host_end..path_end].rfind('/').unwrap_or(0) + 1;
        let directory = &self.text[..directory_end];
        if directory.len() + file.len() > MAX_URL_BYTES {
            return Err(PathError::TooLong);
        }
        HttpUrl::parse(&format!("{directory}{file}")).map_err(|_| PathError::NotAFile)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the server said, as far as the driver reads it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code (0 if the firmware did not know it).
    pub status: u16,
    /// `Content-Range`.
    pub content_range: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

impl Answer {
    /// Takes the headers the driver reads from `(name, value)` pairs
    /// (names compared case-insensitively, values trimmed).
    pub fn with_header(&mut self, name: &str, value: &str) {
        let value = Some(value.trim().to_string());
        if name.eq_ignore_ascii_case("content-range") {
            self.content_range = value;
        } else if name.eq_ignore_ascii_case("content-length") {
            self.content_length = value;
        } else if name.eq_ignore_ascii_case("etag") {
            self.etag = value;
        } else if name.eq_ignore_ascii_case("last-modified") {
            self.last_modified = value;
        }
    }
}

/// The version of the object the driver opened: every later answer must
/// carry the same validators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pin {
    /// `ETag` at open.
    pub etag: Option<String>,
    /// `Last-Modified` at open.
    pub last_modified: Option<String>,
}

impl Pin {
    /// The precondition header a range request carries, so that a server
    /// holding a new version answers 412 rather than its bytes. `If-Match`
    /// compares strongly, so a weak `ETag` would never match: then the date.
    pub fn precondition(&self) -> Option<(&'static str, &str)> {
        match (&self.etag, &self.last_modified) {
            (Some(etag), _) if !etag.starts_with("W/") => Some(("If-Match", etag)),
            (_, Some(date)) => Some(("If-Unmodified-Since", date)),
            _ => None,
        }
    }

    /// Whether an answer's validators are those pinned (one the answer
    /// leaves out is not compared).
    fn check(&self, answer: &Answer) -> Result<(), Fault> {
        if let (Some(was), Some(is)) = (&self.etag, &answer.etag) {
            if was != is {
                return Err(Fault::Changed(format!("ETag was {was}, now {is}")));
            }
        }
        if let (Some(was), Some(is)) = (&self.last_modified, &answer.last_modified) {
            if was != is {
                return Err(Fault::Changed(format!("Last-Modified was {was}, now {is}")));
            }
        }
        Ok(())
    }
}

/// What went wrong with one request (the caller adds the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// An error status (4xx, or 5xx after the tries).
    Status {
        /// The range asked for, `A-B`.
        range: String,
        /// The status code.
        status: u16,
    },
    /// 200 with the whole object to a range request.
    IgnoresRange {
        /// The range asked for.
        range: String,
    },
    /// Another range, or fewer bytes, than asked for.
    Short {
        /// The range asked for.
        range: String,
        /// What came instead.
        got: String,
    },
    /// The object is not the version pinned at open.
    Changed(String),
    /// An answer that cannot be used.
    BadResponse(String),
    /// The connection failed or timed out (the firmware's status).
    Transport {
        /// What was being done.
        step: &'static str,
        /// The range asked for.
        range: String,
        /// The firmware's status, as text.
        status: String,
        /// Whether another try may succeed (a reset or a timeout, not a
        /// refusal such as a missing TLS configuration).
        transient: bool,
    },
}

impl Fault {
    /// Whether another try may succeed: a 5xx or a transient transport
    /// failure.
    pub fn retry(&self) -> bool {
        match self {
            Fault::Status { status, .. } => (500..600).contains(status),
            Fault::Transport { transient, .. } => *transient,
            _ => false,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status { range, status } => {
                write!(f, "the server answered GET bytes={range} with {status}")
            }
            Fault::IgnoresRange { range } => write!(
                f,
                "the server ignores range requests (asked for bytes {range}, it answered 200 with the whole object); reading lazily needs a server that honours Range"
            ),
            Fault::Short { range, got } => {
                write!(f, "short answer: asked for bytes {range}, got {got}")
            }
            Fault::Changed(what) => write!(
                f,
                "the object changed on the server while it was being read ({what}); nothing read from the new version is used"
            ),
            Fault::BadResponse(what) => write!(f, "unusable answer: {what}"),
            Fault::Transport {
                step,
                range,
                status,
                ..
            } => write!(f, "GET bytes={range}: {step} failed: {status}"),
        }
    }
}

/// A fault with the URL it happened at, and how many tries were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The URL.
    pub url: String,
    /// What went wrong on the last try.
    pub fault: Fault,
    /// Tries made.
    pub tries: u32,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.fault)?;
        if self.tries > 1 {
            write!(f, " (after {} tries)", self.tries)?;
        }
        Ok(())
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
pub fn content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first <= last).then_some((first, last, total))
}

/// The `Range` value for bytes `first..=last`.
pub fn range_text(first: u64, last: u64) -> String {
    format!("{first}-{last}")
}

/// An answer's status refused, if it is not 206.
fn check_status(answer: &Answer, range: &str) -> Result<(), Fault> {
    match answer.status {
        206 => Ok(()),
        200 => Err(Fault::IgnoresRange {
            range: range.to_string(),
        }),
        412 => Err(Fault::Changed(
            "the server answered 412 Precondition Failed to the pinned version".to_string(),
        )),
        status => Err(Fault::Status {
            range: range.to_string(),
            status,
        }),
    }
}

/// The object's size and version from the answer to `Range: bytes=0-0`,
/// the driver's first request to an object.
pub fn probe(answer: &Answer) -> Result<(u64, Pin), Fault> {
    let range = range_text(0, 0);
    check_status(answer, &range)?;
    let value = answer
        .content_range
        .as_deref()
        .ok_or_else(|| Fault::BadResponse("206 without Content-Range".to_string()))?;
    match content_range(value) {
        Some((0, 0, Some(size))) if size > 0 => Ok((
            size,
            Pin {
                etag: answer.etag.clone(),
                last_modified: answer.last_modified.clone(),
            },
        )),
        Some((_, _, None)) => Err(Fault::BadResponse(format!(
            "Content-Range {value:?} gives no size"
        ))),
        _ => Err(Fault::Short {
            range,
            got: format!("Content-Range {value:?}"),
        }),
    }
}

/// Checks the answer to `Range: bytes=first-last` of an object of `size`
/// bytes pinned as `pin`: the body may be used only if this is `Ok`, and
/// then it is exactly `last - first + 1` bytes.
pub fn check_range(
    answer: &Answer,
    first: u64,
    last: u64,
    size: u64,
    pin: &Pin,
) -> Result<(), Fault> {
    let range = range_text(first, last);
    check_status(answer, &range)?;
    pin.check(answer)?;
    let value = answer
        .content_range
        .as_deref()
        .ok_or_else(|| Fault::BadResponse("206 without Content-Range".to_string()))?;
    match content_range(value) {
        Some((a, b, total)) if a == first && b == last => {
            if let Some(total) = total.filter(|&total| total != size) {
                return Err(Fault::Changed(format!("size was {size}, now {total}")));
            }
        }
        _ => {
            return Err(Fault::Short {
                range,
                got: format!("Content-Range {value:?}"),
            })
        }
    }
    if let Some(length) = answer.content_length.as_deref() {
        if length.trim().parse::<u64>().ok() != Some(last - first + 1) {
            return Err(Fault::Short {
                range,
                got: format!("Content-Length {length}"),
            });
        }
    }
    Ok(())
}

/// The status code of the firmware's `EFI_HTTP_STATUS_CODE` (an index
/// into the UEFI specification's list), or 0 for one not in it.
pub fn status_code(index: u32) -> u16 {
    const CODES: [u16; 43] = [
        0, 100, 101, 200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 305, 307, 400,
        401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 500,
        501, 502, 503, 504, 505, 308, 429,
    ];
    usize::try_from(index)
        .ok()
        .and_then(|index| CODES.get(index))
        .copied()
        .unwrap_or(0)
}

/// Why a cached read failed.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheError<E> {
    /// The read reaches past the object.
    OutOfRange,
    /// Fetching a block failed.
    Fetch(E),
}

/// One block of the cache: which block of the object it holds and when it
/// was last used.
#[derive(Debug, Clone, Copy)]
struct Slot {
    block: u64,
    used: u64,
}

/// The read-ahead cache: `slots` blocks of `block` bytes, aligned to
/// `block` in the object, in one buffer allocated at creation.
#[derive(Debug)]
pub struct ReadAhead {
    size: u64,
    block: usize,
    slots: Vec<Option<Slot>>,
    bytes: Vec<u8>,
    clock: u64,
    fetched: u64,
    requests: u64,
}

impl ReadAhead {
    /// The bytes a cache of `slots` blocks of `block` bytes allocates.
    pub fn memory_bytes(block: usize, slots: usize) -> usize {
        block.saturating_mul(slots)
    }

    /// A cache over an object of `size` bytes, its buffer allocated now
    /// (fallibly). `block` and `slots` must not be 0.
    pub fn new(size: u64, block: usize, slots: usize) -> Result<Self, TryReserveError> {
        let bytes_len = Self::memory_bytes(block.max(1), slots.max(1));
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(bytes_len)?;
        bytes.resize(bytes_len, 0);
        let mut table = Vec::new();
        table.try_reserve_exact(slots.max(1))?;
        table.resize(slots.max(1), None);
        Ok(Self {
            size,
            block: block.max(1),
            slots: table,
            bytes,
            clock: 0,
            fetched: 0,
            requests: 0,
        })
    }

    /// Bytes fetched so far.
    pub fn fetched(&self) -> u64 {
        self.fetched
    }

    /// Blocks fetched so far (one request each, retries not counted).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Reads `buf.len()` bytes at `offset`, fetching each missing block
    /// whole with `fetch(first_byte, block_bytes)`.
    pub fn read_at<E>(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        mut fetch: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), CacheError<E>> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or(CacheError::OutOfRange)?;
        let block = self.block as u64;
        let mut at = offset;
        let mut done = 0;
        while at < end {
            let index = at / block;
            let start = index * block;
            let len = (self.size - start).min(block) as usize;
            let slot = self.slot_of(index, start, len, &mut fetch)?;
            let within = (at - start) as usize;
            let take = (len - within).min(buf.len() - done);
            let base = slot * self.block;
            buf[done..done + take]
                .copy_from_slice(&self.bytes[base + within..base + within + take]);
            done += take;
            at += take as u64;
        }
        Ok(())
    }

    /// The slot holding block `index`, fetched into the least recently
    /// used slot if no slot holds it.
    fn slot_of<E>(
        &mut self,
        index: u64,
        start: u64,
        len: usize,
        fetch: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<usize, CacheError<E>> {
        self.clock += 1;
        let clock = self.clock;
        if let Some(slot) = self
            .slots
            .iter()
            .position(|slot| slot.is_some_and(|slot| slot.block == index))
        {
            self.slots[slot] = Some(Slot {
                block: index,
                used: clock,
            });
            return Ok(slot);
        }
        let victim = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, slot)| slot.map_or(0, |slot| slot.used))
            .map_or(0, |(at, _)| at);
        // Empty while fetching: a failed fetch leaves no stale tag.
        self.slots[victim] = None;
        let base = victim * self.block;
        self.requests += 1;
        fetch(start, &mut self.bytes[base..base + len]).map_err(CacheError::Fetch)?;
        self.fetched += len as u64;
        self.slots[victim] = Some(Slot {
            block: index,
            used: clock,
        });
        Ok(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn urls_are_recognised_and_backing_names_resolve_beside_the_image() {
        assert!(is_url("HTTP://h/x") && is_url("https://h/x") && !is_url("\\x.qcow2"));
        let url = HttpUrl::parse("http://10.0.2.2:8080/img/top.qcow2?v=1").unwrap();
        assert_eq!(url.host(), "10.0.2.2:8080");
        assert!(!url.is_https());
        assert_eq!(
            url.beside(b"/var/lib/base.qcow2").unwrap().as_str(),
            "http://10.0.2.2:8080/img/base.qcow2"
        );
        let bare = HttpUrl::parse("http://h").unwrap();
        assert_eq!(bare.as_str(), "http://h/");
        assert_eq!(bare.beside(b"b.raw").unwrap().as_str(), "http://h/b.raw");
        assert_eq!(url.beside(b"http://evil/x"), Err(PathError::NotAFile));
        assert_eq!(url.beside(b"dir/"), Err(PathError::NoFileName));
    }

    /// Found by the `uefi_adapter` fuzz target: `http://h?q` had no path,
    /// so the directory of a name beside it was searched back into the
    /// scheme's `//`, and the backing file `evil.example` of an image at
    /// `http://h?q` became `http://evil.example`, another host.
    #[test]
    fn a_name_beside_a_url_without_a_path_stays_on_its_host() {
        let url = HttpUrl::parse("http://10.0.2.2?v=1").unwrap();
        assert_eq!(url.as_str(), "http://10.0.2.2/?v=1");
        assert_eq!(url.host(), "10.0.2.2");
        let beside = url.beside(b"evil.example").unwrap();
        assert_eq!(beside.as_str(), "http://10.0.2.2/evil.example");
        assert_eq!(beside.host(), "10.0.2.2");
        let long = format!("http://h?{}", "q".repeat(MAX_URL_BYTES - "http://h?".len()));
        assert_eq!(HttpUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn unusable_urls_are_refused_by_reason() {
        assert_eq!(HttpUrl::parse("ftp://h/x"), Err(UrlError::Scheme));
        assert_eq!(HttpUrl::parse("http:///x"), Err(UrlError::NoHost));
        assert_eq!(HttpUrl::parse("http://u:p@h/x"), Err(UrlError::UserInfo));
        assert_eq!(HttpUrl::parse("http://h/a b"), Err(UrlError::BadCharacter));
        assert_eq!(HttpUrl::parse("http://h/a#f"), Err(UrlError::BadCharacter));
        let long = format!("http://h/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(HttpUrl::parse(&long), Err(UrlError::TooLong));
    }

    fn answer(status: u16, range: &str, length: &str, etag: &str) -> Answer {
        let mut answer = Answer {
            status,
            ..Answer::default()
        };
        answer.with_header("Content-Range", range);
        answer.with_header("CONTENT-LENGTH", length);
        answer.with_header("ETag", etag);
        answer
    }

    #[test]
    fn the_probe_gives_size_and_pin_and_refuses_servers_without_ranges() {
        let (size, pin) = probe(&answer(206, "bytes 0-0/12345", "1", "\"e1\"")).unwrap();
        assert_eq!(size, 12345);
        assert_eq!(pin.precondition(), Some(("If-Match", "\"e1\"")));
        assert!(matches!(
            probe(&answer(200, "", "12345", "")),
            Err(Fault::IgnoresRange { .. })
        ));
        assert!(matches!(
            probe(&answer(206, "bytes 0-0/*", "1", "")),
            Err(Fault::BadResponse(_))
        ));
        let weak = Pin {
            etag: Some("W/\"x\"".into()),
            last_modified: Some("Mon, 07 Dec 2026 04:00:00 GMT".into()),
        };
        assert_eq!(
            weak.precondition(),
            Some(("If-Unmodified-Since", "Mon, 07 Dec 2026 04:00:00 GMT"))
        );
    }

    #[test]
    fn range_answers_are_used_only_when_exactly_the_range_of_the_pinned_object() {
        let pin = Pin {
            etag: Some("\"e1\"".into()),
            last_modified: None,
        };
        let ok = answer(206, "bytes 100-199/1000", "100", "\"e1\"");
        assert_eq!(check_range(&ok, 100, 199, 1000, &pin), Ok(()));
        let other = answer(206, "bytes 0-99/1000", "100", "\"e1\"");
        assert!(matches!(
            check_range(&other, 100, 199, 1000, &pin),
            Err(Fault::Short { .. })
        ));
        let short = answer(206, "bytes 100-199/1000", "50", "\"e1\"");
        assert!(matches!(
            check_range(&short, 100, 199, 1000, &pin),
            Err(Fault::Short { .. })
        ));
        let changed = answer(206, "bytes 100-199/1000", "100", "\"e2\"");
        assert!(matches!(
            check_range(&changed, 100, 199, 1000, &pin),
            Err(Fault::Changed(_))
        ));
        let grown = answer(206, "bytes 100-199/2000", "100", "\"e1\"");
        assert!(matches!(
            check_range(&grown, 100, 199, 1000, &pin),
            Err(Fault::Changed(_))
        ));
        let precondition = answer(412, "", "", "");
        assert!(matches!(
            check_range(&precondition, 100, 199, 1000, &pin),
            Err(Fault::Changed(_))
        ));
        let whole = answer(200, "", "1000", "\"e1\"");
        assert!(matches!(
            check_range(&whole, 100, 199, 1000, &pin),
            Err(Fault::IgnoresRange { .. })
        ));
    }

    #[test]
    fn only_server_errors_and_transport_failures_are_retried() {
        let status = |status| Fault::Status {
            range: "0-0".into(),
            status,
        };
        assert!(status(503).retry() && !status(404).retry());
        assert!(!Fault::Changed(String::new()).retry());
        let transport = |transient| Fault::Transport {
            step: "send",
            range: "0-0".into(),
            status: "TIMEOUT".into(),
            transient,
        };
        assert!(transport(true).retry() && !transport(false).retry());
        let error = HttpError {
            url: "http://h/x".into(),
            fault: status(503),
            tries: MAX_TRIES,
        };
        assert_eq!(
            error.to_string(),
            "http://h/x: the server answered GET bytes=0-0 with 503 (after 4 tries)"
        );
    }

    #[test]
    fn firmware_status_indices_map_to_codes() {
        assert_eq!(status_code(9), 206);
        assert_eq!(status_code(3), 200);
        assert_eq!(status_code(21), 404);
        assert_eq!(status_code(38), 503);
        assert_eq!(status_code(42), 429);
        assert_eq!(status_code(9999), 0);
    }

    #[test]
    fn the_cache_fetches_aligned_blocks_once_and_evicts_the_least_recently_used() {
        let object: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut cache = ReadAhead::new(1000, 256, 2).unwrap();
        let mut asked = Vec::new();
        let read = |cache: &mut ReadAhead, offset: u64, len: usize, asked: &mut Vec<u64>| {
            let mut buf = vec![0; len];
            cache
                .read_at(offset, &mut buf, |first, out: &mut [u8]| {
                    asked.push(first);
                    out.copy_from_slice(&object[first as usize..first as usize + out.len()]);
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!(buf, object[offset as usize..offset as usize + len]);
        };
        read(&mut cache, 250, 10, &mut asked);
        assert_eq!(asked, [0, 256]);
        read(&mut cache, 0, 512, &mut asked);
        assert_eq!(asked, [0, 256], "both blocks were cached");
        read(&mut cache, 990, 10, &mut asked);
        assert_eq!(asked, [0, 256, 768], "the last block is short");
        read(&mut cache, 300, 1, &mut asked);
        assert_eq!(
            asked,
            [0, 256, 768],
            "block 1 was used more recently than 0"
        );
        read(&mut cache, 0, 1, &mut asked);
        assert_eq!(asked, [0, 256, 768, 0]);
        assert_eq!(cache.fetched(), 256 * 3 + 232);
        assert_eq!(cache.requests(), 4);
        assert_eq!(
            cache.read_at(999, &mut [0; 2], |_, _| Ok::<(), ()>(())),
            Err(CacheError::OutOfRange)
        );
    }

    #[test]
    fn a_failed_fetch_leaves_no_block_behind() {
        let mut cache = ReadAhead::new(512, 256, 1).unwrap();
        assert_eq!(
            cache.read_at(0, &mut [0; 4], |_, _| Err("reset")),
            Err(CacheError::Fetch("reset"))
        );
        let mut fetched = 0;
        cache
            .read_at(0, &mut [0; 4], |_, _| {
                fetched += 1;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(fetched, 1, "the failed block is fetched again");
    }
}
