//! The driver's side of reading an image from a web server.
//!
//! The rules of HTTP storage (URLs, what an answer to a range request must
//! be, the object's pin, which faults are retried and how often, the
//! read-ahead cache) are `qcow2_http::rules`, shared with the host's
//! `qcow` (`http/src/rules/`); the driver's transport (`src/driver/net.rs`,
//! the firmware's `EFI_HTTP_PROTOCOL`) and store (`src/driver/store.rs`)
//! obey them. Here only what is the driver's own: the status code behind
//! the firmware's `EFI_HTTP_STATUS_CODE`, its error naming the URL, and
//! whether a server can be reached with the driver's own DHCP lease.
//! Where a file an HTTP image names is looked for is `path::url_beside`.

use alloc::string::String;
use core::fmt;
use core::net::Ipv4Addr;

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

/// Whether a URL's host (`HttpUrl::host_name`) is an IPv4 address on the
/// subnet of `address`/`mask`: then the driver's HTTP children use its own
/// DHCP lease (`src/driver/dhcp.rs`). Anything else (a name, which needs
/// the DNS servers that only the firmware's default address has; a server
/// behind a router, which the firmware's HTTP driver can only reach
/// through the default route table) uses the default address.
pub fn on_link(host_name: &str, address: Ipv4Addr, mask: Ipv4Addr) -> bool {
    let Ok(host) = host_name.parse::<Ipv4Addr>() else {
        return false;
    };
    let (host, address, mask) = (u32::from(host), u32::from(address), u32::from(mask));
    // A host address of the subnet, not its network or broadcast address.
    host & mask == address & mask && host & !mask != 0 && host | mask != u32::MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use qcow2_http::rules::{Fault, Retry};

    #[test]
    fn only_an_address_of_the_lease_subnet_is_on_link() {
        let (address, mask) = (Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(255, 255, 255, 0));
        assert!(on_link("10.0.2.2", address, mask));
        assert!(on_link("10.0.2.254", address, mask));
        assert!(!on_link("10.0.3.2", address, mask));
        assert!(!on_link("192.168.1.1", address, mask));
        // A name needs DNS, the network and broadcast addresses are no host.
        assert!(!on_link("images.example", address, mask));
        assert!(!on_link("[::1]", address, mask));
        assert!(!on_link("10.0.2.0", address, mask));
        assert!(!on_link("10.0.2.255", address, mask));
        assert!(!on_link("", address, mask));
        // A /16 lease reaches further.
        assert!(on_link("10.0.3.2", address, Ipv4Addr::new(255, 255, 0, 0)));
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
