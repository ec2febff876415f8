//! The driver's side of reading an image from a web server.
//!
//! The rules of HTTP storage (URLs, what an answer to a range request must
//! be, the object's pin, which faults are retried and how often, the
//! read-ahead cache) are `qcow2_http::rules`, shared with the host's
//! `qcow` (`http/src/rules/`); the driver's transport (`src/driver/net.rs`,
//! the firmware's `EFI_HTTP_PROTOCOL`) and store (`src/driver/store.rs`)
//! obey them. Here only what is the driver's own: the status code behind
//! the firmware's `EFI_HTTP_STATUS_CODE`, and its error naming the URL.
//! Where a file an HTTP image names is looked for is `path::url_beside`.

use alloc::string::String;
use core::fmt;

use qcow2_http::rules::Failure;

/// A request's failure with the URL it was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The URL.
    pub url: String,
    /// What went wrong on the last try, and how many tries were made.
    pub failure: Failure,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.failure)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use qcow2_http::rules::{Fault, Retry};

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
    fn an_error_names_the_url_the_fault_and_the_tries() {
        let error = HttpError {
            url: "http://h/x".into(),
            failure: Failure {
                fault: Fault::Status {
                    request: "GET bytes=0-0".into(),
                    status: 503,
                },
                tries: Retry::DEFAULT.tries,
            },
        };
        assert_eq!(
            error.to_string(),
            "http://h/x: the server answered GET bytes=0-0 with 503 Service Unavailable (after 5 tries)"
        );
    }
}
