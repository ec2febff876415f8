//! The start of a fixed newstyle handshake: the server's greeting, the
//! client's flags, and the reply that ends `NBD_OPT_EXPORT_NAME` (the only
//! way into transmission that answers with no option reply).

use zerocopy::big_endian::{U16, U64};
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

/// `NBDMAGIC`, the first 8 bytes a server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle greeting's second magic, and every option's first field.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

/// Client flag: the client speaks fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the client wants no zero padding after `NBD_OPT_EXPORT_NAME`.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags (what the export supports), sent with its size.
pub mod transmission {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// Writes are refused.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is understood.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is understood.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_CMD_TRIM` is understood.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` is understood.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF` is understood on reads.
    pub const SEND_DF: u16 = 1 << 7;
    /// Several connections may be used at once and see the same data.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_CACHE` is understood.
    pub const SEND_CACHE: u16 = 1 << 10;
}

/// The server's first message in newstyle negotiation.
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct Greeting {
    nbdmagic: U64,
    ihaveopt: U64,
    flags: U16,
}

impl Greeting {
    /// Length on the wire.
    pub const LEN: usize = 18;

    /// The greeting announcing `flags` (handshake flags).
    pub fn new(flags: u16) -> Self {
        Self {
            nbdmagic: U64::new(NBDMAGIC),
            ihaveopt: U64::new(IHAVEOPT),
            flags: U16::new(flags),
        }
    }
}

/// What the client's 32 flag bits ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client speaks fixed newstyle.
    pub fixed_newstyle: bool,
    /// No zero padding after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

impl ClientFlags {
    /// Parses the client's flags; `Err` carries the bits this server did
    /// not offer, after which the protocol says to drop the connection.
    pub fn parse(bits: [u8; 4], offered: u16) -> Result<Self, u32> {
        let bits = u32::from_be_bytes(bits);
        let mut known = CLIENT_FIXED_NEWSTYLE;
        if offered & FLAG_NO_ZEROES != 0 {
            known |= CLIENT_NO_ZEROES;
        }
        if bits & !known != 0 {
            return Err(bits & !known);
        }
        Ok(Self {
            fixed_newstyle: bits & CLIENT_FIXED_NEWSTYLE != 0,
            no_zeroes: bits & CLIENT_NO_ZEROES != 0,
        })
    }
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size and transmission flags, then
/// 124 zero bytes unless the client asked for none.
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct ExportNameReply {
    size: U64,
    flags: U16,
    zeroes: [u8; 124],
}

impl ExportNameReply {
    /// The reply for an export of `size` bytes with `flags`.
    pub fn new(size: u64, flags: u16) -> Self {
        Self {
            size: U64::new(size),
            flags: U16::new(flags),
            zeroes: [0; 124],
        }
    }

    /// The bytes to send: without the padding when `no_zeroes` was negotiated.
    pub fn bytes(&self, no_zeroes: bool) -> &[u8] {
        let bytes = self.as_bytes();
        if no_zeroes {
            &bytes[..10]
        } else {
            bytes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_then_flags() {
        let greeting = Greeting::new(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(greeting.as_bytes().len(), Greeting::LEN);
        assert_eq!(&greeting.as_bytes()[..8], b"NBDMAGIC");
        assert_eq!(&greeting.as_bytes()[8..16], b"IHAVEOPT");
        assert_eq!(&greeting.as_bytes()[16..], &[0, 3]);
    }

    #[test]
    fn client_flags_not_offered_are_refused() {
        assert_eq!(
            ClientFlags::parse([0, 0, 0, 3], FLAG_FIXED_NEWSTYLE),
            Err(CLIENT_NO_ZEROES)
        );
        assert_eq!(
            ClientFlags::parse([0x80, 0, 0, 1], FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES),
            Err(0x8000_0000)
        );
        let flags = ClientFlags::parse([0, 0, 0, 3], FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(
            flags,
            Ok(ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            })
        );
    }

    #[test]
    fn export_name_reply_pads_with_124_zeroes_unless_told_not_to() {
        let reply = ExportNameReply::new(1 << 20, transmission::HAS_FLAGS);
        assert_eq!(reply.bytes(false).len(), 134);
        assert_eq!(reply.bytes(true), &[0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1]);
    }
}
