//! What can go wrong reading over HTTP: every error names the URL and
//! what the server did.

use std::fmt;

use crate::rules::{Failure, Fault};

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
    /// What the server or the connection did, on the last try
    /// ([`Fault`]: an error status, no ranges, a short or changed answer,
    /// a transport failure).
    Failed(Failure),
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

    /// `failure` of a request to `url`.
    pub(crate) fn failed(url: &str, failure: Failure) -> Self {
        Self::new(url, ErrorKind::Failed(failure))
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.url)?;
        match &self.kind {
            ErrorKind::BadUrl(why) => write!(f, "not a usable URL: {why}"),
            ErrorKind::BadOptions(why) => write!(f, "{why}"),
            ErrorKind::Failed(failure) => failure.fmt(f),
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
            ErrorKind::Failed(Failure {
                fault: Fault::Status { status: 404, .. },
                ..
            }) => std::io::ErrorKind::NotFound,
            ErrorKind::Failed(Failure {
                fault: Fault::Status { status: 403, .. },
                ..
            }) => std::io::ErrorKind::PermissionDenied,
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
