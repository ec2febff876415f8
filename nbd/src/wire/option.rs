//! The client's options during the handshake: the 16-byte header, and the
//! payloads of the options this server understands.

use zerocopy::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::handshake::IHAVEOPT;
use super::{Bytes, ParseError};

/// `NBD_OPT_EXPORT_NAME`: choose an export and enter transmission (no error reply possible).
pub const EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`: end the session.
pub const ABORT: u32 = 2;
/// `NBD_OPT_LIST`: list the exports.
pub const LIST: u32 = 3;
/// `NBD_OPT_STARTTLS`: upgrade to TLS.
pub const STARTTLS: u32 = 5;
/// `NBD_OPT_INFO`: describe an export.
pub const INFO: u32 = 6;
/// `NBD_OPT_GO`: describe an export and enter transmission.
pub const GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`: use structured replies.
pub const STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT`: list metadata contexts.
pub const LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT`: select metadata contexts.
pub const SET_META_CONTEXT: u32 = 10;

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`: a description for people.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// The option's name, for messages.
pub fn name(option: u32) -> &'static str {
    match option {
        EXPORT_NAME => "NBD_OPT_EXPORT_NAME",
        ABORT => "NBD_OPT_ABORT",
        LIST => "NBD_OPT_LIST",
        4 => "NBD_OPT_PEEK_EXPORT",
        STARTTLS => "NBD_OPT_STARTTLS",
        INFO => "NBD_OPT_INFO",
        GO => "NBD_OPT_GO",
        STRUCTURED_REPLY => "NBD_OPT_STRUCTURED_REPLY",
        LIST_META_CONTEXT => "NBD_OPT_LIST_META_CONTEXT",
        SET_META_CONTEXT => "NBD_OPT_SET_META_CONTEXT",
        11 => "NBD_OPT_EXTENDED_HEADERS",
        _ => "an unknown option",
    }
}

/// The header of every option: `IHAVEOPT`, the option, the payload length.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct OptionHeaderView {
    magic: U64,
    option: U32,
    len: U32,
}

/// An option's header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// Which option.
    pub option: u32,
    /// Bytes of payload that follow.
    pub len: u32,
}

impl OptionHeader {
    /// Length on the wire.
    pub const LEN: usize = 16;

    /// Parses a header; a wrong magic means the client is not speaking NBD.
    pub fn parse(bytes: &[u8; Self::LEN]) -> Result<Self, ParseError> {
        let view = OptionHeaderView::read_from_bytes(bytes).map_err(|_| ParseError::Truncated {
            what: "option header",
            needed: Self::LEN,
            left: bytes.len(),
        })?;
        if view.magic.get() != IHAVEOPT {
            return Err(ParseError::BadMagic {
                what: "option header",
                found: view.magic.get(),
            });
        }
        Ok(Self {
            option: view.option.get(),
            len: view.len.get(),
        })
    }

    /// The bytes of this header (what a client sends).
    pub fn emit(&self) -> [u8; Self::LEN] {
        let view = OptionHeaderView {
            magic: U64::new(IHAVEOPT),
            option: U32::new(self.option),
            len: U32::new(self.len),
        };
        let mut bytes = [0; Self::LEN];
        bytes.copy_from_slice(view.as_bytes());
        bytes
    }
}

/// The payload of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest<'a> {
    /// The export's name (empty: the default export).
    pub name: &'a [u8],
    /// The `NBD_INFO_*` items asked for, as 16-bit types.
    pub requests: InfoRequests<'a>,
}

/// The list of information types an `NBD_OPT_INFO`/`NBD_OPT_GO` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequests<'a> {
    bytes: &'a [u8],
}

impl InfoRequests<'_> {
    /// The types asked for, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.bytes
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
    }

    /// Whether `info` is asked for.
    pub fn contains(&self, info: u16) -> bool {
        self.iter().any(|asked| asked == info)
    }
}

impl<'a> ExportRequest<'a> {
    /// Parses the payload: a name, then a counted list of 16-bit info types.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ParseError> {
        let mut bytes = Bytes::new(payload);
        let name = bytes.string32("export name")?;
        let count = bytes.u16("number of information requests")?;
        let requests = bytes.take("information requests", usize::from(count) * 2)?;
        bytes.finish("information requests")?;
        Ok(Self {
            name,
            requests: InfoRequests { bytes: requests },
        })
    }
}

/// The payload of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest<'a> {
    /// The export's name.
    pub name: &'a [u8],
    /// The queries, each `namespace:leaf`.
    pub queries: Vec<&'a [u8]>,
}

impl<'a> MetaContextRequest<'a> {
    /// Parses the payload: a name, then a counted list of counted strings.
    /// Every query is checked before any is used (a count larger than the
    /// payload can hold is refused without allocating for it).
    pub fn parse(payload: &'a [u8]) -> Result<Self, ParseError> {
        let mut bytes = Bytes::new(payload);
        let name = bytes.string32("export name")?;
        let count = bytes.u32("number of queries")? as usize;
        // Each query takes at least its 4-byte length.
        if count > bytes.remaining() / 4 {
            return Err(ParseError::Truncated {
                what: "queries",
                needed: count.saturating_mul(4),
                left: bytes.remaining(),
            });
        }
        let mut queries = Vec::with_capacity(count);
        for _ in 0..count {
            queries.push(bytes.string32("query")?);
        }
        bytes.finish("queries")?;
        Ok(Self { name, queries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_header_round_trips() {
        let header = OptionHeader {
            option: GO,
            len: 12,
        };
        assert_eq!(OptionHeader::parse(&header.emit()), Ok(header));
    }

    #[test]
    fn option_header_with_another_magic_is_refused() {
        let mut bytes = OptionHeader { option: GO, len: 0 }.emit();
        bytes[0] ^= 1;
        assert!(matches!(
            OptionHeader::parse(&bytes),
            Err(ParseError::BadMagic { .. })
        ));
    }

    #[test]
    fn go_payload_gives_name_and_info_types() {
        let payload = [0, 0, 0, 2, b'h', b'd', 0, 2, 0, 3, 0, 1];
        let request = ExportRequest::parse(&payload).unwrap();
        assert_eq!(request.name, b"hd");
        assert_eq!(request.requests.iter().collect::<Vec<_>>(), [3, 1]);
        assert!(request.requests.contains(INFO_NAME));
    }

    #[test]
    fn go_payload_whose_name_runs_past_the_end_is_refused() {
        let payload = [0, 0, 0, 9, b'h', b'd', 0, 0];
        assert!(ExportRequest::parse(&payload).is_err());
    }

    #[test]
    fn go_payload_with_bytes_after_the_list_is_refused() {
        let payload = [0, 0, 0, 0, 0, 1, 0, 3, 0xff];
        assert!(matches!(
            ExportRequest::parse(&payload),
            Err(ParseError::Trailing { left: 1, .. })
        ));
    }

    #[test]
    fn meta_context_payload_gives_queries() {
        let mut payload = vec![0, 0, 0, 0, 0, 0, 0, 2];
        for query in [&b"base:allocation"[..], b"qemu:dirty-bitmap:x"] {
            payload.extend((query.len() as u32).to_be_bytes());
            payload.extend(query);
        }
        let request = MetaContextRequest::parse(&payload).unwrap();
        assert_eq!(request.name, b"");
        assert_eq!(
            request.queries,
            [&b"base:allocation"[..], b"qemu:dirty-bitmap:x"]
        );
    }

    #[test]
    fn meta_context_count_beyond_the_payload_is_refused_without_allocating() {
        let payload = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            MetaContextRequest::parse(&payload),
            Err(ParseError::Truncated {
                what: "queries",
                ..
            })
        ));
    }
}
