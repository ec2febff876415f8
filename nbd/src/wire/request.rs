//! Transmission requests: the 28-byte header every command starts with
//! (a write's payload follows it).

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::ParseError;

/// The magic every request starts with.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;

/// `NBD_CMD_READ`.
pub const READ: u16 = 0;
/// `NBD_CMD_WRITE` (its payload follows the header).
pub const WRITE: u16 = 1;
/// `NBD_CMD_DISC`: the client is leaving.
pub const DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const TRIM: u16 = 4;
/// `NBD_CMD_CACHE`.
pub const CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const BLOCK_STATUS: u16 = 7;

/// Command flag `NBD_CMD_FLAG_FUA`.
pub const FLAG_FUA: u16 = 1 << 0;
/// Command flag `NBD_CMD_FLAG_NO_HOLE`.
pub const FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag `NBD_CMD_FLAG_DF`.
pub const FLAG_DF: u16 = 1 << 2;
/// Command flag `NBD_CMD_FLAG_REQ_ONE`: one extent per context.
pub const FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag `NBD_CMD_FLAG_FAST_ZERO`.
pub const FLAG_FAST_ZERO: u16 = 1 << 4;

/// The command's name, for messages.
pub fn name(command: u16) -> &'static str {
    match command {
        READ => "NBD_CMD_READ",
        WRITE => "NBD_CMD_WRITE",
        DISC => "NBD_CMD_DISC",
        FLUSH => "NBD_CMD_FLUSH",
        TRIM => "NBD_CMD_TRIM",
        CACHE => "NBD_CMD_CACHE",
        WRITE_ZEROES => "NBD_CMD_WRITE_ZEROES",
        BLOCK_STATUS => "NBD_CMD_BLOCK_STATUS",
        _ => "an unknown command",
    }
}

/// A request header as it is on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct RequestView {
    magic: U32,
    flags: U16,
    command: U16,
    cookie: U64,
    offset: U64,
    len: U32,
}

/// A request as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command (`READ`, `BLOCK_STATUS`...).
    pub command: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Export offset.
    pub offset: u64,
    /// Length (of the read, of the write's payload, of the range asked about).
    pub len: u32,
}

impl Request {
    /// Length on the wire.
    pub const LEN: usize = 28;

    /// Parses a header; a wrong magic means the stream lost its framing.
    pub fn parse(bytes: &[u8; Self::LEN]) -> Result<Self, ParseError> {
        let view = RequestView::read_from_bytes(bytes).map_err(|_| ParseError::Truncated {
            what: "request header",
            needed: Self::LEN,
            left: bytes.len(),
        })?;
        if view.magic.get() != REQUEST_MAGIC {
            return Err(ParseError::BadMagic {
                what: "request",
                found: u64::from(view.magic.get()),
            });
        }
        Ok(Self {
            flags: view.flags.get(),
            command: view.command.get(),
            cookie: view.cookie.get(),
            offset: view.offset.get(),
            len: view.len.get(),
        })
    }

    /// The bytes of this request's header (what a client sends).
    pub fn emit(&self) -> [u8; Self::LEN] {
        let view = RequestView {
            magic: U32::new(REQUEST_MAGIC),
            flags: U16::new(self.flags),
            command: U16::new(self.command),
            cookie: U64::new(self.cookie),
            offset: U64::new(self.offset),
            len: U32::new(self.len),
        };
        let mut bytes = [0; Self::LEN];
        bytes.copy_from_slice(view.as_bytes());
        bytes
    }

    /// The end of the range it names, if it does not overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let request = Request {
            flags: FLAG_REQ_ONE,
            command: BLOCK_STATUS,
            cookie: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            len: 65536,
        };
        let bytes = request.emit();
        assert_eq!(&bytes[..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(Request::parse(&bytes), Ok(request));
    }

    #[test]
    fn request_with_another_magic_is_refused() {
        let mut bytes = Request {
            flags: 0,
            command: READ,
            cookie: 1,
            offset: 0,
            len: 512,
        }
        .emit();
        bytes[3] = 0;
        assert_eq!(
            Request::parse(&bytes),
            Err(ParseError::BadMagic {
                what: "request",
                found: 0x2560_9500
            })
        );
    }

    #[test]
    fn range_end_overflow_is_none() {
        let request = Request {
            flags: 0,
            command: READ,
            cookie: 0,
            offset: u64::MAX - 1,
            len: 2,
        };
        assert_eq!(request.end(), None);
    }
}
