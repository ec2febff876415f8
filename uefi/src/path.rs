//! Where the driver looks for a backing file or an external data file.
//!
//! QEMU resolves a relative backing file name against the directory of the
//! image naming it, and takes an absolute one as it is. On a UEFI file
//! system the host's absolute paths mean nothing, so the driver keeps only
//! the name's last component and opens it from the image's own directory
//! on the same file system: `/var/lib/images/base.qcow2` and `base.qcow2`
//! both become `\images\base.qcow2` for an image at `\images\top.qcow2`.
//! Protocol names (`nbd://...`, `json:{...}`) are refused.

use alloc::string::String;
use core::fmt;

use qcow2_http::rules::{HttpUrl, UrlError};

/// Longest path the driver builds, in bytes: deeper nesting is refused
/// rather than allocated.
pub const MAX_PATH_BYTES: usize = 512;

/// Why a file name cannot be turned into a path beside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The name has no last component (`dir/`, `.`, `..`).
    NoFileName,
    /// The name is a protocol or JSON specification, not a file.
    NotAFile,
    /// The name is not UTF-8.
    NotUtf8,
    /// The path would exceed [`MAX_PATH_BYTES`].
    TooLong,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NoFileName => "the name has no file name component",
            PathError::NotAFile => "the name is a protocol or JSON specification, not a file",
            PathError::NotUtf8 => "the name is not UTF-8",
            PathError::TooLong => "the path is too long",
        })
    }
}

/// The last component of `name`, split at `/` and `\`.
pub(crate) fn file_name(name: &str) -> Result<&str, PathError> {
    if name.contains("://") || name.starts_with("json:") {
        return Err(PathError::NotAFile);
    }
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match last {
        "" | "." | ".." => Err(PathError::NoFileName),
        _ if last.contains(':') => Err(PathError::NotAFile),
        _ => Ok(last),
    }
}

/// The directory part of a UEFI path, with its trailing `\` (empty for a
/// bare name, which the file system opens from the root).
pub fn directory_of(path: &str) -> &str {
    match path.rfind('\\') {
        Some(end) => &path[..=end],
        None => "",
    }
}

/// The path of the file `name` (bytes from an image header) beside the
/// image at `image_path`.
pub fn beside(image_path: &str, name: &[u8]) -> Result<String, PathError> {
    let name = core::str::from_utf8(name).map_err(|_| PathError::NotUtf8)?;
    let file = file_name(name)?;
    let directory = directory_of(image_path);
    if directory.len() + file.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let mut path = String::with_capacity(directory.len() + file.len());
    path.push_str(directory);
    path.push_str(file);
    Ok(path)
}

/// The URL of the file `name` (bytes from an image header) beside the
/// image at `image_url`: the URL's directory plus the name's last
/// component, as for a file-attached image (the query is dropped). The
/// driver's follow rule; the URL syntax is `qcow2_http::rules::url`'s.
pub fn url_beside(image_url: &HttpUrl, name: &[u8]) -> Result<HttpUrl, PathError> {
    let name = core::str::from_utf8(name).map_err(|_| PathError::NotUtf8)?;
    let file = file_name(name)?;
    image_url.beside(file).map_err(|error| match error {
        UrlError::TooLong => PathError::TooLong,
        _ => PathError::NotAFile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_names_resolve_in_the_image_directory() {
        let top = "\\images\\top.qcow2";
        assert_eq!(beside(top, b"base.qcow2").unwrap(), "\\images\\base.qcow2");
        assert_eq!(
            beside(top, b"/var/lib/libvirt/base.qcow2").unwrap(),
            "\\images\\base.qcow2"
        );
        assert_eq!(beside(top, b"..\\x\\b.raw").unwrap(), "\\images\\b.raw");
        assert_eq!(beside("\\top.qcow2", b"b").unwrap(), "\\b");
        assert_eq!(beside("top.qcow2", b"b").unwrap(), "b");
    }

    #[test]
    fn backing_names_of_an_http_image_resolve_beside_its_url_by_their_last_component() {
        let url = HttpUrl::parse("http://10.0.2.2:8080/img/top.qcow2?v=1").unwrap();
        assert_eq!(
            url_beside(&url, b"/var/lib/base.qcow2").unwrap().as_str(),
            "http://10.0.2.2:8080/img/base.qcow2"
        );
        let bare = HttpUrl::parse("http://h?q").unwrap();
        assert_eq!(
            url_beside(&bare, b"evil.example").unwrap().as_str(),
            "http://h/evil.example"
        );
        assert_eq!(url_beside(&url, b"http://evil/x"), Err(PathError::NotAFile));
        assert_eq!(url_beside(&url, b"dir/"), Err(PathError::NoFileName));
        assert_eq!(url_beside(&url, b"a?b"), Err(PathError::NotAFile));
        assert_eq!(url_beside(&url, b"\xff"), Err(PathError::NotUtf8));
    }

    #[test]
    fn names_that_are_not_files_are_refused() {
        let top = "\\top.qcow2";
        assert_eq!(beside(top, b"nbd://host/x"), Err(PathError::NotAFile));
        assert_eq!(beside(top, b"json:{}"), Err(PathError::NotAFile));
        assert_eq!(beside(top, b"dir/"), Err(PathError::NoFileName));
        assert_eq!(beside(top, b".."), Err(PathError::NoFileName));
        assert_eq!(beside(top, b"\xff"), Err(PathError::NotUtf8));
        assert_eq!(beside(top, &[b'a'; 600]), Err(PathError::TooLong));
    }
}
