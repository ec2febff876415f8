//! The driver's load options: URLs handed to `qcow2.efi` by the firmware.
//!
//! When the firmware loads the driver from a `Driver####` variable, the
//! option's optional data becomes the driver image's load options
//! (`EFI_LOADED_IMAGE_PROTOCOL.LoadOptions`). A machine whose ESP holds only
//! the driver can so name the image to boot without a `\qcow2.cfg`: the UEFI
//! Shell's `bcfg driver -opt N "URL"` stores the text as NUL-terminated
//! UCS-2, Linux's `efibootmgr --driver ... -@ FILE` stores the file's bytes
//! as they are (ASCII or UTF-8, with or without a NUL).
//!
//! The decoded text follows the grammar of `\qcow2.cfg` (`crate::config`,
//! the one owner of the rule: lines, `#` comments, the same limits), but
//! only URL lines are taken: a file path needs a volume to be read from,
//! and the volume the driver was loaded from can carry a `\qcow2.cfg` for
//! that.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::config::{self, ConfigError};

/// Most bytes of load options read: as many as a `\qcow2.cfg`.
pub const MAX_LOAD_OPTIONS_BYTES: usize = config::MAX_CONFIG_BYTES;

/// Load options the driver refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOptionsError {
    /// More than [`MAX_LOAD_OPTIONS_BYTES`].
    TooLarge {
        /// Their size.
        bytes: usize,
    },
    /// UCS-2 text (by its first character) of an odd number of bytes,
    /// without a NUL character before the stray byte.
    OddUcs2Length {
        /// Their size.
        bytes: usize,
    },
    /// Neither UCS-2 (UTF-16LE) nor UTF-8 text.
    NotText,
    /// The text is not a valid `\qcow2.cfg` text.
    Config(ConfigError),
    /// A line is a file path: only URLs are taken from load options.
    NotAUrl {
        /// The path, as `crate::config` normalised it.
        path: String,
    },
}

impl fmt::Display for LoadOptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadOptionsError::TooLarge { bytes } => write!(
                f,
                "{bytes} bytes is more than the {MAX_LOAD_OPTIONS_BYTES} read"
            ),
            LoadOptionsError::OddUcs2Length { bytes } => write!(
                f,
                "UCS-2 text of an odd number of bytes ({bytes}) without a NUL"
            ),
            LoadOptionsError::NotText => f.write_str("neither UCS-2 nor UTF-8 text"),
            LoadOptionsError::Config(error) => error.fmt(f),
            LoadOptionsError::NotAUrl { path } => write!(
                f,
                "`{path}` is not an http:// or https:// URL (files are listed in \\qcow2.cfg)"
            ),
        }
    }
}

/// The text of the load options: UCS-2 when they start with a byte-order
/// mark or with an ASCII character followed by a zero byte (what `bcfg
/// -opt` writes), UTF-8 otherwise; up to the first NUL character, if any.
pub fn text(bytes: &[u8]) -> Result<String, LoadOptionsError> {
    if bytes.len() > MAX_LOAD_OPTIONS_BYTES {
        return Err(LoadOptionsError::TooLarge { bytes: bytes.len() });
    }
    match bytes {
        [0xff, 0xfe, rest @ ..] => ucs2(rest, bytes.len()),
        [first, 0, ..] if *first != 0 => ucs2(bytes, bytes.len()),
        _ => utf8(bytes),
    }
}

/// UTF-16LE `bytes` up to the first NUL character (`total`, the size of
/// the whole load options, for the error).
fn ucs2(bytes: &[u8], total: usize) -> Result<String, LoadOptionsError> {
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let terminated = units.clone().any(|unit| unit == 0);
    if !terminated && !bytes.len().is_multiple_of(2) {
        return Err(LoadOptionsError::OddUcs2Length { bytes: total });
    }
    char::decode_utf16(units.take_while(|&unit| unit != 0))
        .collect::<Result<String, _>>()
        .map_err(|_| LoadOptionsError::NotText)
}

/// UTF-8 `bytes` up to the first NUL byte.
fn utf8(bytes: &[u8]) -> Result<String, LoadOptionsError> {
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end])
        .map(String::from)
        .map_err(|_| LoadOptionsError::NotText)
}

/// The URLs the load options list, as `\qcow2.cfg` lines (none for empty
/// load options or only blank and comment lines).
pub fn urls(bytes: &[u8]) -> Result<Vec<String>, LoadOptionsError> {
    let text = text(bytes)?;
    let lines = config::parse(text.as_bytes()).map_err(LoadOptionsError::Config)?;
    if let Some(path) = lines.iter().find(|line| !qcow2_http::rules::is_url(line)) {
        return Err(LoadOptionsError::NotAUrl { path: path.clone() });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    const URL: &str = "http://10.0.2.2:8080/disk.qcow2";

    fn ucs2_bytes(text: &str) -> Vec<u8> {
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    #[test]
    fn takes_what_bcfg_opt_writes_nul_terminated_ucs2() {
        let mut bytes = ucs2_bytes(URL);
        bytes.extend([0, 0]);
        assert_eq!(urls(&bytes).unwrap(), [URL]);
        // Without the NUL, and with a byte-order mark.
        assert_eq!(urls(&ucs2_bytes(URL)).unwrap(), [URL]);
        let mut marked = alloc::vec![0xff, 0xfe];
        marked.extend(ucs2_bytes(URL));
        assert_eq!(urls(&marked).unwrap(), [URL]);
        // Whatever follows the NUL is not read.
        bytes.extend(b"\xff\xd8junk");
        assert_eq!(urls(&bytes).unwrap(), [URL]);
    }

    #[test]
    fn takes_what_efibootmgr_writes_plain_utf8() {
        assert_eq!(urls(URL.as_bytes()).unwrap(), [URL]);
        assert_eq!(urls(format!("{URL}\n").as_bytes()).unwrap(), [URL]);
        assert_eq!(urls(format!("{URL}\0").as_bytes()).unwrap(), [URL]);
        let two = format!("# two images\r\n{URL}\r\nhttps://h/b.qcow2\r\n");
        assert_eq!(urls(two.as_bytes()).unwrap(), [URL, "https://h/b.qcow2"]);
    }

    #[test]
    fn empty_load_options_list_nothing() {
        assert_eq!(urls(b"").unwrap(), [] as [String; 0]);
        assert_eq!(urls(&[0, 0]).unwrap(), [] as [String; 0]);
        assert_eq!(urls(&ucs2_bytes("# none\n")).unwrap(), [] as [String; 0]);
    }

    #[test]
    fn refuses_garbage_naming_the_problem() {
        assert_eq!(urls(b"\xff\xff\x01"), Err(LoadOptionsError::NotText));
        // An unpaired surrogate.
        assert_eq!(
            urls(&[b'h', 0, 0x00, 0xd8, b'x', 0]),
            Err(LoadOptionsError::NotText)
        );
        assert_eq!(
            urls(b"\\images\\disk.qcow2"),
            Err(LoadOptionsError::NotAUrl {
                path: "\\images\\disk.qcow2".into()
            })
        );
        assert_eq!(
            urls(&ucs2_bytes("http://u@h/x")),
            Err(LoadOptionsError::Config(ConfigError::BadUrl {
                line: 1,
                error: qcow2_http::rules::UrlError::UserInfo
            }))
        );
        let error = urls(b"fs0:\\qcow2.efi").unwrap_err();
        assert!(error.to_string().contains("not an http:// or https:// URL"));
    }

    #[test]
    fn refuses_more_than_the_limit() {
        let long = alloc::vec![b'#'; MAX_LOAD_OPTIONS_BYTES + 1];
        assert_eq!(
            urls(&long),
            Err(LoadOptionsError::TooLarge {
                bytes: MAX_LOAD_OPTIONS_BYTES + 1
            })
        );
        assert!(urls(&alloc::vec![b'#'; MAX_LOAD_OPTIONS_BYTES]).is_ok());
        // Within the bytes, but a line longer than `\qcow2.cfg` allows.
        let line = format!("http://h/{}", "a".repeat(config::MAX_LINE_BYTES));
        assert_eq!(
            urls(line.as_bytes()),
            Err(LoadOptionsError::Config(ConfigError::LineTooLong {
                line: 1
            }))
        );
    }

    #[test]
    fn refuses_an_odd_byte_count_of_ucs2_without_a_nul() {
        let mut bytes = ucs2_bytes(URL);
        bytes.push(b'x');
        assert_eq!(
            urls(&bytes),
            Err(LoadOptionsError::OddUcs2Length { bytes: bytes.len() })
        );
        // A stray byte after the NUL is not read.
        let mut bytes = ucs2_bytes(URL);
        bytes.extend([0, 0, b'x']);
        assert_eq!(urls(&bytes).unwrap(), [URL]);
    }
}
