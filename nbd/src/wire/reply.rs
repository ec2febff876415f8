//! Transmission replies: the 16-byte simple reply, and structured reply
//! chunks (a 20-byte header and a typed payload), with the error values
//! and the `base:allocation` status flags.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::ParseError;

/// The magic of a simple reply.
pub const SIMPLE_MAGIC: u32 = 0x6744_6698;
/// The magic of a structured reply chunk.
pub const STRUCTURED_MAGIC: u32 = 0x668e_33ef;

/// Chunk flag: the last chunk of the reply.
pub const FLAG_DONE: u16 = 1 << 0;

/// `NBD_REPLY_TYPE_NONE`: no payload; ends a reply.
pub const NONE: u16 = 0;
/// `NBD_REPLY_TYPE_OFFSET_DATA`: an offset, then data.
pub const OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`: an offset and a length that read as zeros.
pub const OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_BLOCK_STATUS`: a context id, then (length, flags) descriptors.
pub const BLOCK_STATUS: u16 = 5;
/// `NBD_REPLY_TYPE_ERROR`: an error for the whole request.
pub const ERROR: u16 = (1 << 15) + 1;
/// `NBD_REPLY_TYPE_ERROR_OFFSET`: an error at an offset.
pub const ERROR_OFFSET: u16 = (1 << 15) + 2;

/// `NBD_EPERM`: not permitted (a write to a read-only export).
pub const EPERM: u32 = 1;
/// `NBD_EIO`: the data could not be read.
pub const EIO: u32 = 5;
/// `NBD_EINVAL`: an invalid request (range, flags, unknown command).
pub const EINVAL: u32 = 22;
/// `NBD_EOVERFLOW`: a length larger than the server serves.
pub const EOVERFLOW: u32 = 75;
/// `NBD_ESHUTDOWN`: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// `base:allocation` flag: not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// A simple reply's header (a read's data follows it on success).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct SimpleReplyView {
    magic: U32,
    error: U32,
    cookie: U64,
}

/// A simple reply as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    /// 0 for success, else an `NBD_E*` value.
    pub error: u32,
    /// The request's cookie.
    pub cookie: u64,
}

impl SimpleReply {
    /// Length on the wire.
    pub const LEN: usize = 16;

    /// The header's bytes.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let view = SimpleReplyView {
            magic: U32::new(SIMPLE_MAGIC),
            error: U32::new(self.error),
            cookie: U64::new(self.cookie),
        };
        let mut bytes = [0; Self::LEN];
        bytes.copy_from_slice(view.as_bytes());
        bytes
    }

    /// Parses a header (for clients and tests).
    pub fn parse(bytes: &[u8; Self::LEN]) -> Result<Self, ParseError> {
        let view = SimpleReplyView::read_from_bytes(bytes).map_err(|_| ParseError::Truncated {
            what: "simple reply",
            needed: Self::LEN,
            left: bytes.len(),
        })?;
        if view.magic.get() != SIMPLE_MAGIC {
            return Err(ParseError::BadMagic {
                what: "simple reply",
                found: u64::from(view.magic.get()),
            });
        }
        Ok(Self {
            error: view.error.get(),
            cookie: view.cookie.get(),
        })
    }
}

/// A structured reply chunk's header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct ChunkView {
    magic: U32,
    flags: U16,
    kind: U16,
    cookie: U64,
    len: U32,
}

/// A chunk header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Chunk flags (`FLAG_DONE`).
    pub flags: u16,
    /// The chunk type (`OFFSET_DATA`...).
    pub kind: u16,
    /// The request's cookie.
    pub cookie: u64,
    /// Payload bytes that follow.
    pub len: u32,
}

impl Chunk {
    /// Length on the wire.
    pub const LEN: usize = 20;

    /// The header's bytes.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let view = ChunkView {
            magic: U32::new(STRUCTURED_MAGIC),
            flags: U16::new(self.flags),
            kind: U16::new(self.kind),
            cookie: U64::new(self.cookie),
            len: U32::new(self.len),
        };
        let mut bytes = [0; Self::LEN];
        bytes.copy_from_slice(view.as_bytes());
        bytes
    }

    /// Parses a header (for clients and tests).
    pub fn parse(bytes: &[u8; Self::LEN]) -> Result<Self, ParseError> {
        let view = ChunkView::read_from_bytes(bytes).map_err(|_| ParseError::Truncated {
            what: "structured reply chunk",
            needed: Self::LEN,
            left: bytes.len(),
        })?;
        if view.magic.get() != STRUCTURED_MAGIC {
            return Err(ParseError::BadMagic {
                what: "structured reply chunk",
                found: u64::from(view.magic.get()),
            });
        }
        Ok(Self {
            flags: view.flags.get(),
            kind: view.kind.get(),
            cookie: view.cookie.get(),
            len: view.len.get(),
        })
    }

    /// Whether this is the reply's last chunk.
    pub fn done(&self) -> bool {
        self.flags & FLAG_DONE != 0
    }
}

fn done_flag(done: bool) -> u16 {
    if done {
        FLAG_DONE
    } else {
        0
    }
}

/// The header and offset of an `OFFSET_DATA` chunk carrying `data_len`
/// bytes (the data follows). `data_len` is at most the server's piece size,
/// far below `u32::MAX - 8`.
pub fn offset_data_header(cookie: u64, offset: u64, data_len: u32, done: bool) -> [u8; 28] {
    let chunk = Chunk {
        flags: done_flag(done),
        kind: OFFSET_DATA,
        cookie,
        len: data_len.saturating_add(8),
    };
    let mut bytes = [0; 28];
    bytes[..20].copy_from_slice(&chunk.emit());
    bytes[20..].copy_from_slice(&offset.to_be_bytes());
    bytes
}

/// A whole `OFFSET_HOLE` chunk: `len` bytes at `offset` read as zeros.
pub fn offset_hole(cookie: u64, offset: u64, len: u32, done: bool) -> [u8; 32] {
    let chunk = Chunk {
        flags: done_flag(done),
        kind: OFFSET_HOLE,
        cookie,
        len: 12,
    };
    let mut bytes = [0; 32];
    bytes[..20].copy_from_slice(&chunk.emit());
    bytes[20..28].copy_from_slice(&offset.to_be_bytes());
    bytes[28..].copy_from_slice(&len.to_be_bytes());
    bytes
}

/// A whole `NONE` chunk, ending a reply.
pub fn none(cookie: u64) -> [u8; 20] {
    Chunk {
        flags: FLAG_DONE,
        kind: NONE,
        cookie,
        len: 0,
    }
    .emit()
}

/// Appends an error chunk: `ERROR_OFFSET` when `offset` is given, else
/// `ERROR`; the message is cut to the protocol's 4096 bytes.
pub fn push_error(
    out: &mut Vec<u8>,
    cookie: u64,
    error: u32,
    message: &str,
    offset: Option<u64>,
    done: bool,
) {
    let message = &message.as_bytes()[..message.len().min(super::MAX_STRING_BYTES)];
    let tail = if offset.is_some() { 8 } else { 0 };
    let chunk = Chunk {
        flags: done_flag(done),
        kind: if offset.is_some() {
            ERROR_OFFSET
        } else {
            ERROR
        },
        cookie,
        // At most 4 + 2 + 4096 + 8.
        len: (6 + message.len() + tail) as u32,
    };
    out.extend_from_slice(&chunk.emit());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    if let Some(offset) = offset {
        out.extend_from_slice(&offset.to_be_bytes());
    }
}

/// One `base:allocation` descriptor: a run's length and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Bytes the status covers (nonzero).
    pub len: u32,
    /// `STATE_HOLE` / `STATE_ZERO`.
    pub flags: u32,
}

/// Appends a `BLOCK_STATUS` chunk for context `id` with `descriptors`.
pub fn push_block_status(
    out: &mut Vec<u8>,
    cookie: u64,
    id: u32,
    descriptors: &[Descriptor],
    done: bool,
) {
    let chunk = Chunk {
        flags: done_flag(done),
        kind: BLOCK_STATUS,
        cookie,
        // The server bounds the descriptors far below 2^29.
        len: u32::try_from(4 + descriptors.len() * 8).unwrap_or(u32::MAX),
    };
    out.extend_from_slice(&chunk.emit());
    out.extend_from_slice(&id.to_be_bytes());
    for descriptor in descriptors {
        out.extend_from_slice(&descriptor.len.to_be_bytes());
        out.extend_from_slice(&descriptor.flags.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_reply_round_trips() {
        let reply = SimpleReply {
            error: EPERM,
            cookie: 7,
        };
        assert_eq!(SimpleReply::parse(&reply.emit()), Ok(reply));
    }

    #[test]
    fn hole_chunk_is_header_offset_and_length() {
        let bytes = offset_hole(9, 4096, 512, true);
        let chunk = Chunk::parse(bytes[..20].try_into().unwrap()).unwrap();
        assert_eq!(
            chunk,
            Chunk {
                flags: FLAG_DONE,
                kind: OFFSET_HOLE,
                cookie: 9,
                len: 12
            }
        );
        assert_eq!(&bytes[20..], &[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 2, 0]);
    }

    #[test]
    fn error_offset_chunk_counts_message_and_offset() {
        let mut out = Vec::new();
        push_error(&mut out, 1, EIO, "bad", Some(512), true);
        let chunk = Chunk::parse(out[..20].try_into().unwrap()).unwrap();
        assert_eq!(chunk.kind, ERROR_OFFSET);
        assert_eq!(chunk.len as usize, out.len() - 20);
        assert_eq!(&out[20..26], &[0, 0, 0, 5, 0, 3]);
        assert_eq!(&out[26..29], b"bad");
    }

    #[test]
    fn block_status_chunk_is_id_then_pairs() {
        let mut out = Vec::new();
        let descriptors = [
            Descriptor {
                len: 65536,
                flags: 0,
            },
            Descriptor {
                len: 512,
                flags: STATE_HOLE | STATE_ZERO,
            },
        ];
        push_block_status(&mut out, 3, 1, &descriptors, true);
        let chunk = Chunk::parse(out[..20].try_into().unwrap()).unwrap();
        assert_eq!(chunk.len, 20);
        assert_eq!(&out[20..24], &[0, 0, 0, 1]);
        assert_eq!(&out[32..40], &[0, 0, 2, 0, 0, 0, 0, 3]);
    }
}
