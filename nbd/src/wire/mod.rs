//! The NBD wire format, as bytes and back, with no I/O: what the session
//! reads is parsed here into plain values, and what it sends is emitted
//! here from plain values. The fuzz target drives these parsers directly.
//!
//! One file per message family, in the order a session meets them:
//! [`handshake`] (greeting, client flags, the old export-name reply),
//! [`option`] (the client's options and their payloads), [`option_reply`]
//! (the server's answers to options), [`request`] (transmission requests),
//! [`reply`] (simple replies and structured reply chunks). Fixed-size
//! headers are `zerocopy` structs of big-endian fields (network byte order,
//! no alignment needed); variable payloads are read through [`Bytes`].
//!
//! Numbers and names follow the protocol document of the reference
//! implementation (`doc/proto.md` of NetworkBlockDevice/nbd).

pub mod handshake;
pub mod option;
pub mod option_reply;
pub mod reply;
pub mod request;

use core::fmt;

/// The protocol's longest string (export names, queries, messages): 4096 bytes.
pub const MAX_STRING_BYTES: usize = 4096;

/// Why a payload could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The payload ended before `what` (which needs `needed` more bytes; `left` were left).
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes the payload still had.
        left: usize,
    },
    /// Bytes were left after the last field.
    Trailing {
        /// The message being parsed.
        what: &'static str,
        /// How many bytes were left.
        left: usize,
    },
    /// A string is longer than the protocol's 4096-byte limit.
    StringTooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A magic number is not the one the message must start with.
    BadMagic {
        /// The message.
        what: &'static str,
        /// The magic found.
        found: u64,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated { what, needed, left } => {
                write!(f, "{what} needs {needed} bytes but only {left} are left")
            }
            ParseError::Trailing { what, left } => {
                write!(f, "{left} unexpected bytes after the {what}")
            }
            ParseError::StringTooLong { what, len } => write!(
                f,
                "{what} is {len} bytes long, more than the protocol's {MAX_STRING_BYTES}"
            ),
            ParseError::BadMagic { what, found } => {
                write!(f, "{what} starts with magic {found:#x}, not NBD's")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// A payload read field by field from the front; every read is checked.
#[derive(Debug, Clone)]
pub struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `len` bytes.
    pub fn take(&mut self, what: &'static str, len: usize) -> Result<&'a [u8], ParseError> {
        if len > self.rest.len() {
            return Err(ParseError::Truncated {
                what,
                needed: len,
                left: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    /// The next big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let bytes = self.take(what, 2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// The next big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let bytes = self.take(what, 4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A string preceded by its 32-bit length, at most [`MAX_STRING_BYTES`].
    pub fn string32(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let len = self.u32(what)? as usize;
        if len > MAX_STRING_BYTES {
            return Err(ParseError::StringTooLong { what, len });
        }
        self.take(what, len)
    }

    /// Fails if bytes are left after the message `what`.
    pub fn finish(&self, what: &'static str) -> Result<(), ParseError> {
        match self.rest.len() {
            0 => Ok(()),
            left => Err(ParseError::Trailing { what, left }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors_not_panics() {
        let mut bytes = Bytes::new(&[0, 0, 0, 5, b'a']);
        let error = bytes.string32("export name").unwrap_err();
        assert_eq!(
            error,
            ParseError::Truncated {
                what: "export name",
                needed: 5,
                left: 1
            }
        );
    }

    #[test]
    fn strings_over_4096_bytes_are_refused_before_reading_them() {
        let mut bytes = Bytes::new(&[0, 0, 0x10, 0x01]);
        assert!(matches!(
            bytes.string32("query"),
            Err(ParseError::StringTooLong { len: 4097, .. })
        ));
    }
}
