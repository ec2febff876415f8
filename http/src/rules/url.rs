//! URLs of storage objects: which text is one, its parts, and the URL of a
//! file beside it.
//!
//! This is the driver's URL: a plain split of `scheme://host[:port]/path?query`
//! (no user information, fragment, spaces or non-ASCII text), because the
//! firmware's HTTP driver sends the text as it is. The host client parses
//! URLs with the `url` crate and resolves relative names the way a browser
//! does under its follow policies; [`is_url`] is what both call a URL.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 1024;

/// Redirects followed when an object is opened ([`HttpUrl::redirect`]),
/// by the host's client (its default) and by the driver.
pub const MAX_REDIRECTS: u32 = 10;

/// Whether `text` is an `http://` or `https://` URL (read over HTTP rather
/// than as a path); the scheme is compared case-insensitively.
pub fn is_url(text: &str) -> bool {
    let head = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not `http://` (or `https://`).
    Scheme,
    /// No host after the scheme.
    NoHost,
    /// A port that is not a number from 0 to 65535.
    BadPort,
    /// User information (`user@host`) is not sent.
    UserInfo,
    /// A space, a control character, a fragment, or non-ASCII text.
    BadCharacter,
    /// Longer than [`MAX_URL_BYTES`].
    TooLong,
    /// A name beside a URL that is not one path segment (empty, `.`, `..`,
    /// or holding `/`, `?` or `#`).
    NotAFileName,
    /// A redirect from `https://` to `http://`: what TLS protected would
    /// come in the clear.
    Downgrade,
    /// A relative redirect target with a `.` or `..` segment (an absolute
    /// path or URL says the same without them).
    DotSegment,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => "not an http:// or https:// URL",
            UrlError::NoHost => "the URL has no host",
            UrlError::BadPort => "the URL's port is not a number from 0 to 65535",
            UrlError::UserInfo => "user names in URLs are not supported",
            UrlError::BadCharacter => {
                "the URL holds a space, a control or non-ASCII character, or a fragment (#)"
            }
            UrlError::TooLong => "the URL is too long",
            UrlError::NotAFileName => "the name is not one path segment",
            UrlError::Downgrade => "a redirect from https:// to http:// is not followed",
            UrlError::DotSegment => "a relative redirect target with . or .. is not followed",
        })
    }
}

/// An `http://` or `https://` URL that can be sent as it is.
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
        let authority = &rest[..host_len];
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (name, port) = split_authority(authority);
        if name.is_empty() {
            return Err(UrlError::NoHost);
        }
        if port.is_some_and(|port| !port.is_empty() && port.parse::<u16>().is_err()) {
            return Err(UrlError::BadPort);
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

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.scheme_len == "https://".len()
    }

    /// `host[:port]`, for the `Host` header.
    pub fn host(&self) -> &str {
        &self.text[self.scheme_len..self.host_end]
    }

    /// The host without the port (an IPv6 address keeps its brackets).
    pub fn host_name(&self) -> &str {
        split_authority(self.host()).0
    }

    /// The port, if the URL names one (checked at parse).
    pub fn port(&self) -> Option<u16> {
        split_authority(self.host())
            .1
            .and_then(|port| port.parse().ok())
    }

    /// The path, from its leading `/` to the query.
    pub fn path(&self) -> &str {
        &self.text[self.host_end..self.query_start()]
    }

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.text[self.query_start()..].strip_prefix('?')
    }

    fn query_start(&self) -> usize {
        self.text[self.host_end..]
            .find('?')
            .map_or(self.text.len(), |at| self.host_end + at)
    }

    /// The directory the object is in: the URL up to the last `/` of its
    /// path, no query.
    pub fn directory(&self) -> &str {
        // Searched in the path only (which starts with `/`), never in the
        // scheme's `//`: what is built on it stays on this host.
        let path = self.path();
        let end = self.host_end + path.rfind('/').unwrap_or(0) + 1;
        &self.text[..end]
    }

    /// The URL of the file `file` beside this one: its directory plus
    /// `file`, which must be one path segment. Which segment a name stored
    /// in an image gives is the caller's follow policy (the driver keeps a
    /// name's last component, as for files on a disk).
    pub fn beside(&self, file: &str) -> Result<HttpUrl, UrlError> {
        if matches!(file, "" | "." | "..") || file.contains(['/', '?', '#']) {
            return Err(UrlError::NotAFileName);
        }
        let directory = self.directory();
        if directory.len() + file.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        HttpUrl::parse(&format!("{directory}{file}"))
    }

    /// Where a redirect's `Location` leads from this URL: an absolute
    /// `http(s)://` URL, a scheme-relative `//host/path`, an absolute path
    /// on this host, or a path relative to this URL's directory (without
    /// `.` or `..` segments). Never from `https://` to `http://`.
    pub fn redirect(&self, location: &str) -> Result<HttpUrl, UrlError> {
        let scheme = &self.text[..self.scheme_len];
        let target = if is_url(location) {
            HttpUrl::parse(location)?
        } else if location.starts_with("//") {
            HttpUrl::parse(&format!("{}{location}", &scheme[..scheme.len() - 2]))?
        } else if location.starts_with('/') {
            HttpUrl::parse(&format!("{}{location}", &self.text[..self.host_end]))?
        } else if location
            .split(['/', '?'])
            .next()
            .is_some_and(|first| first.contains(':'))
        {
            // Another scheme (`ftp:`, `file:`), not a relative path.
            return Err(UrlError::Scheme);
        } else {
            let path = location.split(['?', '#']).next().unwrap_or("");
            if path.split('/').any(|segment| matches!(segment, "." | "..")) {
                return Err(UrlError::DotSegment);
            }
            HttpUrl::parse(&format!("{}{location}", self.directory()))?
        };
        if self.is_https() && !target.is_https() {
            return Err(UrlError::Downgrade);
        }
        Ok(target)
    }
}

/// `host[:port]` split into the host and the port's text; an IPv6
/// address (`[::1]:8080`) keeps its brackets.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    let after_host = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |at| at + 1)
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (name, rest) = authority.split_at(after_host);
    (name, rest.strip_prefix(':'))
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn urls_are_recognised_and_split_into_their_parts() {
        assert!(is_url("HTTP://h/x") && is_url("https://h/x") && !is_url("\\x.qcow2"));
        let url = HttpUrl::parse("http://10.0.2.2:8080/img/top.qcow2?v=1").unwrap();
        assert_eq!(url.host(), "10.0.2.2:8080");
        assert_eq!(url.host_name(), "10.0.2.2");
        assert_eq!(url.port(), Some(8080));
        assert_eq!(url.path(), "/img/top.qcow2");
        assert_eq!(url.query(), Some("v=1"));
        assert_eq!(url.directory(), "http://10.0.2.2:8080/img/");
        assert!(!url.is_https());
        let v6 = HttpUrl::parse("https://[::1]:8443/x").unwrap();
        assert_eq!((v6.host_name(), v6.port()), ("[::1]", Some(8443)));
        assert!(v6.is_https() && v6.query().is_none());
        let bare = HttpUrl::parse("http://h").unwrap();
        assert_eq!(bare.as_str(), "http://h/");
        assert_eq!(bare.beside("b.raw").unwrap().as_str(), "http://h/b.raw");
        assert_eq!(
            url.beside("base.qcow2").unwrap().as_str(),
            "http://10.0.2.2:8080/img/base.qcow2"
        );
        for file in ["", ".", "..", "a/b", "a?b", "a#b"] {
            assert_eq!(url.beside(file), Err(UrlError::NotAFileName), "{file}");
        }
    }

    #[test]
    fn redirects_lead_to_absolute_scheme_relative_absolute_path_and_relative_targets() {
        let url = HttpUrl::parse("https://h:8443/img/top.qcow2?v=1").unwrap();
        let to = |location: &str| url.redirect(location).map(|url| url.as_str().to_string());
        assert_eq!(
            to("https://mirror/x.qcow2").unwrap(),
            "https://mirror/x.qcow2"
        );
        assert_eq!(to("//cdn:9/a/b").unwrap(), "https://cdn:9/a/b");
        assert_eq!(
            to("/other/y.qcow2?s=2").unwrap(),
            "https://h:8443/other/y.qcow2?s=2"
        );
        assert_eq!(
            to("v2/top.qcow2").unwrap(),
            "https://h:8443/img/v2/top.qcow2"
        );
        assert_eq!(to("http://h/top.qcow2"), Err(UrlError::Downgrade));
        assert_eq!(to("//h/top.qcow2").map(|_| ()), Ok(()));
        assert_eq!(to("../top.qcow2"), Err(UrlError::DotSegment));
        assert_eq!(to("a/./b"), Err(UrlError::DotSegment));
        assert_eq!(to("ftp://h/x"), Err(UrlError::Scheme));
        assert_eq!(to("file:/etc/passwd"), Err(UrlError::Scheme));
        assert_eq!(to("x#frag"), Err(UrlError::BadCharacter));
        let plain = HttpUrl::parse("http://h/a").unwrap();
        assert_eq!(
            plain.redirect("https://h/a").unwrap().as_str(),
            "https://h/a"
        );
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
        let beside = url.beside("evil.example").unwrap();
        assert_eq!(beside.as_str(), "http://10.0.2.2/evil.example");
        assert_eq!(beside.host(), "10.0.2.2");
        let long = format!("http://h?{}", "q".repeat(MAX_URL_BYTES - "http://h?".len()));
        assert_eq!(HttpUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn unusable_urls_are_refused_by_reason() {
        assert_eq!(HttpUrl::parse("ftp://h/x"), Err(UrlError::Scheme));
        assert_eq!(HttpUrl::parse("http:///x"), Err(UrlError::NoHost));
        assert_eq!(HttpUrl::parse("http://:80/x"), Err(UrlError::NoHost));
        assert_eq!(HttpUrl::parse("http://h:http/x"), Err(UrlError::BadPort));
        assert_eq!(HttpUrl::parse("http://h:65536/x"), Err(UrlError::BadPort));
        assert_eq!(HttpUrl::parse("http://u:p@h/x"), Err(UrlError::UserInfo));
        assert_eq!(HttpUrl::parse("http://h/a b"), Err(UrlError::BadCharacter));
        assert_eq!(HttpUrl::parse("http://h/a#f"), Err(UrlError::BadCharacter));
        let long = format!("http://h/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(HttpUrl::parse(&long), Err(UrlError::TooLong));
    }
}
