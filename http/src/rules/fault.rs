//! What can go wrong with one request, and which of it is worth another
//! try: the faults both transports report, named, never bytes.

use alloc::string::String;
use core::fmt;

/// What went wrong with one request (the caller adds the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// An error status (4xx, or 5xx after the tries).
    Status {
        /// The request: `HEAD` or `GET bytes=A-B`.
        request: String,
        /// The status code.
        status: u16,
    },
    /// 200 with the whole object to a range request: the server does not
    /// serve ranges.
    IgnoresRange {
        /// The range asked for, `A-B`.
        range: String,
    },
    /// Another range, or another length, than asked for.
    Short {
        /// The range asked for.
        range: String,
        /// What came instead.
        got: String,
    },
    /// The body ended before the bytes its head announced (a connection
    /// dropped mid-body).
    BodyEnded {
        /// The range asked for.
        range: String,
        /// Body bytes received.
        got: u64,
    },
    /// The object is not the version pinned at open: its `ETag`,
    /// `Last-Modified` or size changed, or the server answered 412 to the
    /// read's precondition (or 416 to a range inside the size at open).
    Changed(String),
    /// An answer that cannot be used (no size, no `Content-Range`, an
    /// encoded body).
    BadResponse(String),
    /// The connection failed, timed out or was reset.
    Transport {
        /// The request.
        request: String,
        /// The transport's own words for it.
        error: String,
        /// Whether another try may succeed (a reset or a timeout, not a
        /// refusal such as an unknown host or a missing TLS configuration):
        /// the transport knows.
        transient: bool,
    },
}

impl Fault {
    /// Whether another try may succeed: a 5xx, a body cut short, or a
    /// transient transport failure. A 4xx, an answer of the wrong shape or
    /// a changed object gives the same answer again.
    pub fn retry(&self) -> bool {
        match self {
            Fault::Status { status, .. } => (500..600).contains(status),
            Fault::BodyEnded { .. } => true,
            Fault::Transport { transient, .. } => *transient,
            _ => false,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status { request, status } => {
                write!(f, "the server answered {request} with {status}")?;
                match reason_phrase(*status) {
                    "" => Ok(()),
                    reason => write!(f, " {reason}"),
                }
            }
            Fault::IgnoresRange { range } => write!(
                f,
                "the server ignores range requests (asked for bytes {range}, it answered \
                 200 with the whole object); reading lazily needs a server that honours Range"
            ),
            Fault::Short { range, got } => {
                write!(f, "short answer: asked for bytes {range}, got {got}")
            }
            Fault::BodyEnded { range, got } => write!(
                f,
                "short answer: asked for bytes {range}, the body ended after {got} bytes"
            ),
            Fault::Changed(what) => write!(
                f,
                "the object changed on the server while it was being read ({what}); \
                 nothing read from the new version is used"
            ),
            Fault::BadResponse(what) => write!(f, "unusable answer: {what}"),
            Fault::Transport { request, error, .. } => write!(f, "{request} failed: {error}"),
        }
    }
}

/// The fault of a request's last try, and how many tries were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong on the last try.
    pub fault: Fault,
    /// Tries made.
    pub tries: u32,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fault.fmt(f)?;
        if self.tries > 1 {
            write!(f, " (after {} tries)", self.tries)?;
        }
        Ok(())
    }
}

/// The reason phrase of a status code (RFC 9110's), empty for one it
/// does not name.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn only_server_errors_cut_bodies_and_transient_transport_failures_are_retried() {
        let status = |status| Fault::Status {
            request: "GET bytes=0-0".into(),
            status,
        };
        assert!(status(503).retry() && !status(404).retry());
        assert!(!Fault::Changed(String::new()).retry());
        let cut = Fault::BodyEnded {
            range: "0-9".into(),
            got: 3,
        };
        assert!(cut.retry());
        let transport = |transient| Fault::Transport {
            request: "GET bytes=0-0".into(),
            error: "send failed: TIMEOUT".into(),
            transient,
        };
        assert!(transport(true).retry() && !transport(false).retry());
        let failure = Failure {
            fault: status(503),
            tries: 4,
        };
        assert_eq!(
            failure.to_string(),
            "the server answered GET bytes=0-0 with 503 Service Unavailable (after 4 tries)"
        );
        let once = Failure {
            fault: status(404),
            tries: 1,
        };
        assert_eq!(
            once.to_string(),
            "the server answered GET bytes=0-0 with 404 Not Found"
        );
    }
}
