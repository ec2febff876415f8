//! The server's replies to options (fixed newstyle): a 20-byte header and
//! a payload, appended to a caller's buffer.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::option::{INFO_BLOCK_SIZE, INFO_EXPORT, INFO_NAME};
use super::{Bytes, ParseError};

/// The magic every option reply starts with.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// `NBD_REP_ACK`: done, successfully.
pub const ACK: u32 = 1;
/// `NBD_REP_SERVER`: one export of a list.
pub const SERVER: u32 = 2;
/// `NBD_REP_INFO`: one item of information about an export.
pub const INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`: one metadata context.
pub const META_CONTEXT: u32 = 4;

/// Error replies have bit 31 set.
const ERROR: u32 = 1 << 31;
/// `NBD_REP_ERR_UNSUP`: the option is unknown.
pub const ERR_UNSUP: u32 = ERROR + 1;
/// `NBD_REP_ERR_POLICY`: the option is known but not allowed here.
pub const ERR_POLICY: u32 = ERROR + 2;
/// `NBD_REP_ERR_INVALID`: the option is malformed or misplaced.
pub const ERR_INVALID: u32 = ERROR + 3;
/// `NBD_REP_ERR_TLS_REQD`: the server answers nothing but
/// `NBD_OPT_STARTTLS` and `NBD_OPT_ABORT` before TLS.
pub const ERR_TLS_REQD: u32 = ERROR + 5;
/// `NBD_REP_ERR_UNKNOWN`: no export of that name.
pub const ERR_UNKNOWN: u32 = ERROR + 6;
/// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
pub const ERR_SHUTDOWN: u32 = ERROR + 7;
/// `NBD_REP_ERR_TOO_BIG`: the request is larger than the server handles.
pub const ERR_TOO_BIG: u32 = ERROR + 9;

/// Whether `reply` is an error reply.
pub fn is_error(reply: u32) -> bool {
    reply & ERROR != 0
}

/// The header of an option reply.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct OptionReplyView {
    magic: U64,
    option: U32,
    reply: U32,
    len: U32,
}

/// An option reply's header as plain values (what a client parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option answered.
    pub option: u32,
    /// The reply type (`ACK`, `INFO`, an error...).
    pub reply: u32,
    /// Payload bytes that follow.
    pub len: u32,
}

impl OptionReplyHeader {
    /// Length on the wire.
    pub const LEN: usize = 20;

    /// Parses a header (for clients and tests).
    pub fn parse(bytes: &[u8; Self::LEN]) -> Result<Self, ParseError> {
        let view = OptionReplyView::read_from_bytes(bytes).map_err(|_| ParseError::Truncated {
            what: "option reply header",
            needed: Self::LEN,
            left: bytes.len(),
        })?;
        if view.magic.get() != REPLY_MAGIC {
            return Err(ParseError::BadMagic {
                what: "option reply header",
                found: view.magic.get(),
            });
        }
        Ok(Self {
            option: view.option.get(),
            reply: view.reply.get(),
            len: view.len.get(),
        })
    }
}

/// Appends a reply to `option` of type `reply` whose payload is `parts`, in order.
pub fn push(out: &mut Vec<u8>, option: u32, reply: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let header = OptionReplyView {
        magic: U64::new(REPLY_MAGIC),
        option: U32::new(option),
        reply: U32::new(reply),
        // Payloads are built from strings of at most 4096 bytes.
        len: U32::new(u32::try_from(len).unwrap_or(u32::MAX)),
    };
    out.extend_from_slice(header.as_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Appends an error reply with a message for people.
pub fn push_error(out: &mut Vec<u8>, option: u32, error: u32, message: &str) {
    let message = truncate(message.as_bytes());
    push(out, option, error, &[message]);
}

/// Appends `NBD_REP_SERVER` naming one export.
pub fn push_server(out: &mut Vec<u8>, option: u32, name: &[u8]) {
    let len = u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes();
    push(out, option, SERVER, &[&len, name]);
}

/// Appends `NBD_REP_INFO` with `NBD_INFO_EXPORT`.
pub fn push_info_export(out: &mut Vec<u8>, option: u32, size: u64, flags: u16) {
    let info = InfoExport {
        info: U16::new(INFO_EXPORT),
        size: U64::new(size),
        flags: U16::new(flags),
    };
    push(out, option, INFO, &[info.as_bytes()]);
}

/// Appends `NBD_REP_INFO` with `NBD_INFO_NAME`.
pub fn push_info_name(out: &mut Vec<u8>, option: u32, name: &[u8]) {
    push(
        out,
        option,
        INFO,
        &[&INFO_NAME.to_be_bytes(), truncate(name)],
    );
}

/// Appends `NBD_REP_INFO` with `NBD_INFO_BLOCK_SIZE`.
pub fn push_info_block_size(out: &mut Vec<u8>, option: u32, sizes: BlockSizes) {
    let info = InfoBlockSize {
        info: U16::new(INFO_BLOCK_SIZE),
        minimum: U32::new(sizes.minimum),
        preferred: U32::new(sizes.preferred),
        maximum: U32::new(sizes.maximum),
    };
    push(out, option, INFO, &[info.as_bytes()]);
}

/// Appends `NBD_REP_META_CONTEXT`.
pub fn push_meta_context(out: &mut Vec<u8>, option: u32, id: u32, name: &[u8]) {
    push(out, option, META_CONTEXT, &[&id.to_be_bytes(), name]);
}

/// The size constraints a server advertises (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Smallest addressable unit.
    pub minimum: u32,
    /// Smallest efficient request.
    pub preferred: u32,
    /// Largest payload the server takes.
    pub maximum: u32,
}

#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct InfoExport {
    info: U16,
    size: U64,
    flags: U16,
}

#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct InfoBlockSize {
    info: U16,
    minimum: U32,
    preferred: U32,
    maximum: U32,
}

/// Strings on the wire are at most 4096 bytes.
fn truncate(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(super::MAX_STRING_BYTES)]
}

/// The information of an `NBD_REP_INFO` payload, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info<'a> {
    /// `NBD_INFO_EXPORT`.
    Export {
        /// Export size in bytes.
        size: u64,
        /// Transmission flags.
        flags: u16,
    },
    /// `NBD_INFO_NAME`.
    Name(&'a [u8]),
    /// `NBD_INFO_BLOCK_SIZE`.
    BlockSize(BlockSizes),
    /// Another type, with its payload.
    Other(u16, &'a [u8]),
}

impl<'a> Info<'a> {
    /// Parses an `NBD_REP_INFO` payload (for clients and tests).
    pub fn parse(payload: &'a [u8]) -> Result<Self, ParseError> {
        let mut bytes = Bytes::new(payload);
        let info = bytes.u16("information type")?;
        let parsed = match info {
            INFO_EXPORT => {
                let size = bytes.take("export size", 8)?;
                let size = u64::from_be_bytes(size.try_into().unwrap_or_default());
                let flags = bytes.u16("transmission flags")?;
                Info::Export { size, flags }
            }
            INFO_NAME => Info::Name(bytes.take("name", bytes.remaining())?),
            INFO_BLOCK_SIZE => Info::BlockSize(BlockSizes {
                minimum: bytes.u32("minimum block size")?,
                preferred: bytes.u32("preferred block size")?,
                maximum: bytes.u32("maximum payload size")?,
            }),
            other => Info::Other(other, bytes.take("information", bytes.remaining())?),
        };
        bytes.finish("information")?;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::option::GO;

    #[test]
    fn info_export_is_12_bytes_after_the_header() {
        let mut out = Vec::new();
        push_info_export(&mut out, GO, 4096, 3);
        let header = OptionReplyHeader::parse(out[..20].try_into().unwrap()).unwrap();
        assert_eq!(
            header,
            OptionReplyHeader {
                option: GO,
                reply: INFO,
                len: 12
            }
        );
        assert_eq!(
            Info::parse(&out[20..]),
            Ok(Info::Export {
                size: 4096,
                flags: 3
            })
        );
    }

    #[test]
    fn error_replies_have_bit_31_and_carry_the_message() {
        let mut out = Vec::new();
        push_error(&mut out, GO, ERR_UNKNOWN, "no export \"x\"");
        let header = OptionReplyHeader::parse(out[..20].try_into().unwrap()).unwrap();
        assert!(is_error(header.reply));
        assert_eq!(header.reply, 0x8000_0006);
        assert_eq!(&out[20..], b"no export \"x\"");
    }

    #[test]
    fn block_size_info_round_trips() {
        let sizes = BlockSizes {
            minimum: 1,
            preferred: 4096,
            maximum: 32 << 20,
        };
        let mut out = Vec::new();
        push_info_block_size(&mut out, GO, sizes);
        assert_eq!(Info::parse(&out[20..]), Ok(Info::BlockSize(sizes)));
    }
}
