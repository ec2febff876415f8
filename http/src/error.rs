//! What can go wrong reading over HTTP: every error names the URL and
//! what the server did.

use std::fmt;

/// A failed open or read of an object over HTTP.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// The URL asked for (after redirects, once known).
    pub url: String,
    /// What happened.
    pub kind: ErrorKind,
}

/// Why an HTTP open or read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not an `http://` or `https://` URL, or not a URL at all.
    BadUrl(String),
    /// The options are out of their range.
    BadOptions(String),
    /// The server answered with an error status (4xx, or 5xx after the retries).
    Status {
        /// The request: `HEAD` or `GET bytes=A-B`.
        request: String,
        /// The status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The server answered a range request with the whole object (200):
    /// it does not serve ranges.
    IgnoresRange {
        /// The range asked for.
        range: String,
    },
    /// The server sent fewer bytes than asked for.
    Short {
        /// The range asked for.
        range: String,
        /// What came instead.
        got: String,
    },
    /// The object is not the one pinned at open: its `ETag`,
    /// `Last-Modified` or size changed, or the server answered 412 to the
    /// `If-Match` / `If-Unmodified-Since` of a read.
    Changed {
        /// What changed.
        what: String,
    },
    /// An answer that cannot be used (no size, an unreadable `Content-Range`).
    BadResponse(String),
    /// The connection failed, timed out or was reset, each of the tries.
    Transport {
        /// The request.
        request: String,
        /// Tries made.
        tries: u32,
        /// The last failure.
        error: String,
    },
    /// A read outside the object.
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The object's size.
        size: u64,
    },
}

impl HttpError {
    pub(crate) fn new(url: &str, kind: ErrorKind) -> Self {
        Self {
            url: url.to_string(),
            kind,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.url)?;
        match &self.kind {
            ErrorKind::BadUrl(why) => write!(f, "not a usable URL: {why}"),
            ErrorKind::BadOptions(why) => write!(f, "{why}"),
            ErrorKind::Status {
                request,
                status,
                reason,
            } => write!(f, "the server answered {request} with {status} {reason}"),
            ErrorKind::IgnoresRange { range } => write!(
                f,
                "the server ignores range requests (asked for bytes {range}, it answered \
                 200 with the whole object); reading lazily needs a server that honours Range"
            ),
            ErrorKind::Short { range, got } => {
                write!(f, "short answer: asked for bytes {range}, got {got}")
            }
            ErrorKind::Changed { what } => write!(
                f,
                "the object changed on the server while it was being read ({what}); \
                 nothing read from the new version is used"
            ),
            ErrorKind::BadResponse(what) => write!(f, "unusable answer: {what}"),
            ErrorKind::Transport {
                request,
                tries,
                error,
            } if *tries > 1 => write!(f, "{request} failed {tries} times, last: {error}"),
            ErrorKind::Transport { request, error, .. } => write!(f, "{request} failed: {error}"),
            ErrorKind::OutOfRange { offset, len, size } => write!(
                f,
                "read of {len} bytes at offset {offset:#x} is outside the {size}-byte object"
            ),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for std::io::Error {
    fn from(error: HttpError) -> Self {
        let kind = match error.kind {
            ErrorKind::Status { status: 404, .. } => std::io::ErrorKind::NotFound,
            ErrorKind::Status { status: 403, .. } => std::io::ErrorKind::PermissionDenied,
            ErrorKind::OutOfRange { .. } => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}

impl HttpError {
    /// The message without the URL (for a message that names it already).
    pub fn kind_text(&self) -> String {
        let full = self.to_string();
        full.strip_prefix(&format!("{}: ", self.url))
            .unwrap_or(&full)
            .to_string()
    }
}
