//! `\qcow2.cfg`: the list of image files to attach from a file system.
//!
//! The driver reads this file from the root of every file system the
//! firmware mounts. One image path per line, from the root of the same
//! file system (`\images\disk.qcow2`; `/` is accepted for `\`), or an
//! `http://` URL, kept as written (`crate::http`); blank
//! lines and lines starting with `#` are ignored. The limits keep a
//! hostile or mistaken file from costing more than a few KiB.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The configuration file's path on each file system.
pub const CONFIG_PATH: &str = "\\qcow2.cfg";
/// Largest configuration file read.
pub const MAX_CONFIG_BYTES: usize = 4096;
/// Most images one configuration file attaches.
pub const MAX_IMAGES: usize = 8;
/// Longest image path, in bytes.
pub const MAX_LINE_BYTES: usize = 256;

/// A configuration file the driver refuses, with the line at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// The file is not UTF-8 text.
    NotUtf8,
    /// A line is longer than [`MAX_LINE_BYTES`].
    LineTooLong {
        /// Line number, from 1.
        line: usize,
    },
    /// More than [`MAX_IMAGES`] image lines.
    TooManyImages,
    /// A path component is `.` or `..`, or the path ends in a separator.
    BadPath {
        /// Line number, from 1.
        line: usize,
    },
    /// An `http://` or `https://` line the driver cannot use.
    BadUrl {
        /// Line number, from 1.
        line: usize,
        /// Why.
        error: qcow2_http::rules::UrlError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::TooLarge { bytes } => {
                write!(f, "{bytes} bytes is more than the {MAX_CONFIG_BYTES} read")
            }
            ConfigError::NotUtf8 => f.write_str("not UTF-8 text"),
            ConfigError::LineTooLong { line } => {
                write!(f, "line {line} is longer than {MAX_LINE_BYTES} bytes")
            }
            ConfigError::TooManyImages => write!(f, "more than {MAX_IMAGES} images"),
            ConfigError::BadPath { line } => write!(
                f,
                "line {line} is not a file path (empty, `.` or `..` component)"
            ),
            ConfigError::BadUrl { line, ref error } => write!(f, "line {line}: {error}"),
        }
    }
}

/// The image paths a configuration file lists, each starting with `\`,
/// and its URLs as written.
pub fn parse(bytes: &[u8]) -> Result<Vec<String>, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    let text = core::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut images = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(ConfigError::LineTooLong { line: number });
        }
        if images.len() == MAX_IMAGES {
            return Err(ConfigError::TooManyImages);
        }
        if qcow2_http::rules::is_url(line) {
            qcow2_http::rules::HttpUrl::parse(line).map_err(|error| ConfigError::BadUrl {
                line: number,
                error,
            })?;
            images.push(String::from(line));
            continue;
        }
        images.push(normalize(line).ok_or(ConfigError::BadPath { line: number })?);
    }
    Ok(images)
}

/// `line` as a path from the root with `\` separators, or `None` if a
/// component is empty, `.` or `..`.
fn normalize(line: &str) -> Option<String> {
    let mut path = String::with_capacity(line.len() + 1);
    for component in line.trim_start_matches(['\\', '/']).split(['\\', '/']) {
        if matches!(component, "" | "." | "..") {
            return None;
        }
        path.push('\\');
        path.push_str(component);
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_paths_skipping_comments_and_blank_lines() {
        let text = b"# images\r\n\r\n\\images\\disk.qcow2\r\n  /b/c.qcow2  \nd.qcow2\n";
        assert_eq!(
            parse(text).unwrap(),
            ["\\images\\disk.qcow2", "\\b\\c.qcow2", "\\d.qcow2"]
        );
        assert_eq!(parse(b"").unwrap(), [] as [String; 0]);
        assert_eq!(
            parse(b"http://10.0.2.2:8080/d.qcow2\r\n").unwrap(),
            ["http://10.0.2.2:8080/d.qcow2"]
        );
        assert_eq!(parse("\u{feff}a\n".as_bytes()).unwrap(), ["\\a"]);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert_eq!(
            parse(&[b'#'; MAX_CONFIG_BYTES + 1]),
            Err(ConfigError::TooLarge {
                bytes: MAX_CONFIG_BYTES as u64 + 1
            })
        );
        assert_eq!(parse(b"\xff\n"), Err(ConfigError::NotUtf8));
        assert_eq!(
            parse(b"a\n\\..\\x\n"),
            Err(ConfigError::BadPath { line: 2 })
        );
        assert_eq!(parse(b"dir\\\n"), Err(ConfigError::BadPath { line: 1 }));
        assert_eq!(
            parse(b"http://u@h/x\n"),
            Err(ConfigError::BadUrl {
                line: 1,
                error: qcow2_http::rules::UrlError::UserInfo
            })
        );
        let long = [b'a'; MAX_LINE_BYTES + 1];
        assert_eq!(parse(&long), Err(ConfigError::LineTooLong { line: 1 }));
        let many = "x\n".repeat(MAX_IMAGES + 1);
        assert_eq!(parse(many.as_bytes()), Err(ConfigError::TooManyImages));
    }
}
