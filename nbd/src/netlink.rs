//! The kernel's NBD device set up through NBD's generic-netlink family
//! (`include/uapi/linux/nbd-netlink.h`), as `nbd-client` does it: the
//! server hands connected sockets to the kernel with `NBD_CMD_CONNECT` and
//! keeps serving their other ends; `NBD_CMD_DISCONNECT` detaches the device.
//!
//! Not the `NBD_DO_IT` ioctl (`qemu-nbd -c`): there a thread of the server
//! sits in the kernel for the device's whole life, and any signal to the
//! server (systemd signals every process at shutdown) interrupts it and
//! drops the device under a mounted root. With netlink the kernel owns the
//! sockets and no thread of ours waits inside it.
//!
//! Why a small hand-written message builder, not a netlink crate: three
//! messages are sent (the family lookup, connect, disconnect), all built
//! here from fixed values, and the only input parsed is the kernel's own
//! answer on a `NETLINK_GENERIC` socket (a family id, a device index, an
//! error code), bounded by the receive buffer and checked field by field;
//! a general netlink library (`neli` and the like) would bring a large API
//! for those few bytes. Fuzzing is not needed for what is only emitted; the
//! reply parser never indexes past a length it checked (see
//! [`parse_replies`]).
//!
//! Layouts (native byte order, 4-byte alignment), from `linux/netlink.h`
//! and `linux/genetlink.h`:
//!
//! - `nlmsghdr`: length u32 (header included), type u16, flags u16,
//!   sequence u32, port id u32;
//! - `genlmsghdr`: command u8, version u8, reserved u16;
//! - `nlattr`: length u16 (header included, padding excluded), type u16,
//!   payload padded to 4 bytes; a nested attribute carries `NLA_F_NESTED`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    recv, sendto, socket_with, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType,
};

/// `GENL_ID_CTRL`: the generic-netlink controller, which names families.
pub const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (NUL-terminated string).
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `NBD_GENL_FAMILY_NAME`.
pub const NBD_GENL_FAMILY_NAME: &str = "nbd";
/// `NBD_GENL_VERSION`.
pub const NBD_GENL_VERSION: u8 = 1;

/// `NBD_CMD_CONNECT`.
pub const NBD_CMD_CONNECT: u8 = 1;
/// `NBD_CMD_DISCONNECT`.
pub const NBD_CMD_DISCONNECT: u8 = 2;
/// `NBD_ATTR_INDEX` (u32): the device's number, N of `/dev/nbdN`.
pub const NBD_ATTR_INDEX: u16 = 1;
/// `NBD_ATTR_SIZE_BYTES` (u64).
pub const NBD_ATTR_SIZE_BYTES: u16 = 2;
/// `NBD_ATTR_BLOCK_SIZE_BYTES` (u64).
pub const NBD_ATTR_BLOCK_SIZE_BYTES: u16 = 3;
/// `NBD_ATTR_TIMEOUT` (u64): the request timeout in seconds.
pub const NBD_ATTR_TIMEOUT: u16 = 4;
/// `NBD_ATTR_SERVER_FLAGS` (u64): the transmission flags a handshake would have sent.
pub const NBD_ATTR_SERVER_FLAGS: u16 = 5;
/// `NBD_ATTR_SOCKETS` (nested `NBD_SOCK_ITEM`s).
pub const NBD_ATTR_SOCKETS: u16 = 7;
/// `NBD_SOCK_ITEM` (nested `NBD_SOCK_FD`).
pub const NBD_SOCK_ITEM: u16 = 1;
/// `NBD_SOCK_FD` (u32): a socket descriptor of the calling process.
pub const NBD_SOCK_FD: u16 = 1;

/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 1 << 15;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 4;
/// `NLMSG_ERROR`: an error or, with code 0, the acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;

/// The kernel's answers are read into this many bytes: the family lookup's
/// reply (name, id, version, operations, groups) is under 1 KiB here.
const RECEIVE_BYTES: usize = 32 << 10;
/// How long the kernel may take to answer before we give up (never a hang).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One generic-netlink request being built.
#[derive(Debug)]
pub struct Message {
    bytes: Vec<u8>,
    /// Offsets of the open nested attributes' headers.
    open: Vec<usize>,
}

impl Message {
    /// A request with `NLM_F_REQUEST | NLM_F_ACK` to family `family`.
    pub fn new(family: u16, command: u8, version: u8, sequence: u32) -> Self {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&family.to_ne_bytes());
        bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&[command, version, 0, 0]);
        Self {
            bytes,
            open: Vec::new(),
        }
    }

    /// Appends an attribute with `payload`, padded to 4 bytes.
    pub fn attribute(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len =
            u16::try_from(NLA_HDRLEN + payload.len()).expect("attributes built here are small");
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.pad();
        self
    }

    /// A u32 attribute.
    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attribute(kind, &value.to_ne_bytes())
    }

    /// A u64 attribute.
    pub fn u64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.attribute(kind, &value.to_ne_bytes())
    }

    /// Opens a nested attribute; [`Message::end_nest`] closes it.
    pub fn nest(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost nested attribute: its length covers its children.
    pub fn end_nest(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end_nest after nest");
        let len = u16::try_from(self.bytes.len() - start).expect("attributes built here are small");
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// The message's bytes, its length field filled in.
    pub fn finish(mut self) -> Vec<u8> {
        assert!(self.open.is_empty(), "a nested attribute was left open");
        let len = self.bytes.len() as u32;
        self.bytes[..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

/// The request timeout given to the kernel, in seconds: 1,000,000 s
/// (11.5 days), so that in practice a request never times out.
///
/// Why one at all: without `NBD_ATTR_TIMEOUT` the kernel keeps blk-mq's
/// default request timeout of 30 s (`nbd_set_cmd_timeout` with 0), and when
/// it expires on a device with more than one connection,
/// `nbd_xmit_timeout` marks that connection dead and requeues the request
/// (Linux 6.1, `drivers/block/nbd.c`); with every connection dead the
/// device fails. Our server runs in the same machine: a slow answer means
/// a loaded host (a root boot under TCG on a shared host once logged
/// `block nbd0: Connection timed out`), never a lost server, and giving up
/// only kills the root file system. Why this value and not more: the
/// kernel stores `timeout * HZ` in 32-bit unsigned fields (`tag_set.timeout`,
/// the queue's `rq_timeout`), and a 32-bit kernel compares jiffies as
/// signed 32-bit differences, so `timeout * HZ` must stay under 2^31 with
/// HZ up to 1000: 10^9 does.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 1_000_000;
// `timeout * HZ` under 2^31 with HZ at most 1000 (Linux's Kconfig choices),
// checked when building rather than by a test of a constant.
const _: () = assert!(REQUEST_TIMEOUT_SECONDS * 1000 < 1 << 31);

/// What the kernel's connect request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// N of `/dev/nbdN`.
    pub index: u32,
    /// The export's size in bytes.
    pub size: u64,
    /// The device's logical block size (512 to the page size, a power of two).
    pub block_size: u64,
    /// NBD transmission flags (`NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY`...).
    pub server_flags: u64,
    /// The request timeout in seconds ([`REQUEST_TIMEOUT_SECONDS`]); 0
    /// leaves the kernel's default of 30 s.
    pub timeout_seconds: u64,
    /// The kernel's ends of the connections.
    pub sockets: Vec<RawFd>,
}

/// `CTRL_CMD_GETFAMILY` for `name`.
pub fn get_family(name: &str, sequence: u32) -> Vec<u8> {
    let mut message = Message::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, sequence);
    let mut with_nul = name.as_bytes().to_vec();
    with_nul.push(0);
    message.attribute(CTRL_ATTR_FAMILY_NAME, &with_nul);
    message.finish()
}

/// `NBD_CMD_CONNECT` to the `nbd` family (id `family`).
pub fn connect_message(family: u16, connect: &Connect, sequence: u32) -> Vec<u8> {
    let mut message = Message::new(family, NBD_CMD_CONNECT, NBD_GENL_VERSION, sequence);
    message
        .u32(NBD_ATTR_INDEX, connect.index)
        .u64(NBD_ATTR_SIZE_BYTES, connect.size)
        .u64(NBD_ATTR_BLOCK_SIZE_BYTES, connect.block_size)
        .u64(NBD_ATTR_SERVER_FLAGS, connect.server_flags);
    if connect.timeout_seconds != 0 {
        message.u64(NBD_ATTR_TIMEOUT, connect.timeout_seconds);
    }
    message.nest(NBD_ATTR_SOCKETS);
    for &fd in &connect.sockets {
        message
            .nest(NBD_SOCK_ITEM)
            .u32(NBD_SOCK_FD, fd as u32)
            .end_nest();
    }
    message.end_nest();
    message.finish()
}

/// `NBD_CMD_DISCONNECT` of device `index`.
pub fn disconnect_message(family: u16, index: u32, sequence: u32) -> Vec<u8> {
    let mut message = Message::new(family, NBD_CMD_DISCONNECT, NBD_GENL_VERSION, sequence);
    message.u32(NBD_ATTR_INDEX, index);
    message.finish()
}

/// One message of the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `NLMSG_ERROR`: 0 acknowledges, else a negative errno.
    Error(i32),
    /// `NLMSG_DONE`.
    Done,
    /// A generic-netlink message: its command and attributes (type without
    /// flags, payload).
    Data {
        /// The message's type (the family id).
        kind: u16,
        /// Attributes at the top level.
        attributes: Vec<(u16, Vec<u8>)>,
    },
}

fn ne_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a received buffer into messages; a length that does not fit is
/// an error naming it (the kernel never sends one).
pub fn parse_replies(mut bytes: &[u8]) -> io::Result<Vec<Reply>> {
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("netlink answer: {what}"),
        )
    };
    let mut replies = Vec::new();
    while !bytes.is_empty() {
        let len = ne_u32(bytes, 0)
            .ok_or_else(|| bad(format!("{} bytes left, less than a header", bytes.len())))?
            as usize;
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return Err(bad(format!(
                "message length {len} with {} bytes left",
                bytes.len()
            )));
        }
        let kind = ne_u16(bytes, 4).unwrap_or(0);
        let body = &bytes[NLMSG_HDRLEN..len];
        replies.push(match kind {
            NLMSG_ERROR => {
                let code =
                    ne_u32(body, 0).ok_or_else(|| bad("error message without its code".into()))?;
                Reply::Error(code as i32)
            }
            NLMSG_DONE => Reply::Done,
            _ => {
                let mut attributes = Vec::new();
                let mut rest = body.get(GENL_HDRLEN..).unwrap_or(&[]);
                while rest.len() >= NLA_HDRLEN {
                    let attr_len = usize::from(ne_u16(rest, 0).unwrap_or(0));
                    let attr_kind = ne_u16(rest, 2).unwrap_or(0) & !(NLA_F_NESTED | 1 << 14);
                    if attr_len < NLA_HDRLEN || attr_len > rest.len() {
                        return Err(bad(format!(
                            "attribute length {attr_len} with {} bytes left",
                            rest.len()
                        )));
                    }
                    attributes.push((attr_kind, rest[NLA_HDRLEN..attr_len].to_vec()));
                    let padded = attr_len.next_multiple_of(4).min(rest.len());
                    rest = &rest[padded..];
                }
                Reply::Data { kind, attributes }
            }
        });
        let padded = len.next_multiple_of(4).min(bytes.len());
        bytes = &bytes[padded..];
    }
    Ok(replies)
}

/// A `NETLINK_GENERIC` socket talking to the kernel.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    sequence: u32,
}

impl Netlink {
    /// Opens the socket, with a receive timeout so that no answer is waited
    /// for forever.
    pub fn open() -> io::Result<Self> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(netlink::GENERIC),
        )?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_TIMEOUT),
        )?;
        Ok(Self { fd, sequence: 0 })
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    /// Sends `message` and collects the answer up to the acknowledgement;
    /// a kernel error comes back as that errno.
    fn exchange(&mut self, message: &[u8]) -> io::Result<Vec<Reply>> {
        sendto(
            &self.fd,
            message,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        let mut answer = Vec::new();
        let mut buffer = vec![0; RECEIVE_BYTES];
        loop {
            let (received, _) = recv(&self.fd, &mut buffer[..], RecvFlags::empty())?;
            for reply in parse_replies(&buffer[..received])? {
                match reply {
                    Reply::Error(0) | Reply::Done => return Ok(answer),
                    Reply::Error(code) => return Err(io::Error::from_raw_os_error(-code)),
                    data => answer.push(data),
                }
            }
        }
    }

    /// The `nbd` family's id; `ENOENT` (named) when the kernel has no NBD.
    pub fn nbd_family(&mut self) -> io::Result<u16> {
        self.family(NBD_GENL_FAMILY_NAME).map_err(|error| {
            if error.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "the kernel has no NBD netlink family: load the nbd module (modprobe nbd)",
                )
            } else {
                error
            }
        })
    }

    /// The id of the generic-netlink family `name`, asked of the kernel's controller.
    pub fn family(&mut self, name: &str) -> io::Result<u16> {
        let sequence = self.next_sequence();
        let answer = self.exchange(&get_family(name, sequence))?;
        answer
            .iter()
            .find_map(|reply| match reply {
                Reply::Data { attributes, .. } => attributes
                    .iter()
                    .find(|(kind, payload)| *kind == CTRL_ATTR_FAMILY_ID && payload.len() >= 2)
                    .and_then(|(_, payload)| ne_u16(payload, 0)),
                _ => None,
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the kernel's family lookup named no id for {name:?}"),
                )
            })
    }

    /// Hands `connect.sockets` to the kernel as device `connect.index`.
    pub fn connect(&mut self, connect: &Connect) -> io::Result<()> {
        let family = self.nbd_family()?;
        let sequence = self.next_sequence();
        self.exchange(&connect_message(family, connect, sequence))
            .map_err(|error| explain(error, connect.index))?;
        Ok(())
    }

    /// Detaches device `index` (the kernel sends `NBD_CMD_DISC` on its sockets).
    pub fn disconnect(&mut self, index: u32) -> io::Result<()> {
        let family = self.nbd_family()?;
        let sequence = self.next_sequence();
        self.exchange(&disconnect_message(family, index, sequence))
            .map_err(|error| explain(error, index))?;
        Ok(())
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel's errno with what it means for NBD.
fn explain(error: io::Error, index: u32) -> io::Error {
    let errno = error.raw_os_error();
    let why = if errno == Some(rustix::io::Errno::BUSY.raw_os_error()) {
        "the device is already connected"
    } else if errno == Some(rustix::io::Errno::PERM.raw_os_error()) {
        "needs CAP_SYS_ADMIN (run as root)"
    } else if errno == Some(rustix::io::Errno::INVAL.raw_os_error()) {
        "the kernel refused the device's settings or it does not exist (nbd's nbds_max)"
    } else {
        return io::Error::new(error.kind(), format!("/dev/nbd{index}: {error}"));
    };
    io::Error::new(error.kind(), format!("/dev/nbd{index}: {why} ({error})"))
}

/// N of a `/dev/nbdN` path (or of `nbdN`).
pub fn device_index(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    let digits = name.strip_prefix("nbd")?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        ne_u16(bytes, at).unwrap()
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        ne_u32(bytes, at).unwrap()
    }

    #[test]
    fn connect_message_has_nbd_netlink_h_layout() {
        let connect = Connect {
            index: 0,
            size: 1 << 30,
            block_size: 512,
            server_flags: 0b1000_0011,
            timeout_seconds: REQUEST_TIMEOUT_SECONDS,
            sockets: vec![7, 9],
        };
        let bytes = connect_message(0x1d, &connect, 5);
        // nlmsghdr
        assert_eq!(u32_at(&bytes, 0) as usize, bytes.len());
        assert_eq!(u16_at(&bytes, 4), 0x1d);
        assert_eq!(u16_at(&bytes, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&bytes, 8), 5);
        assert_eq!(u32_at(&bytes, 12), 0);
        // genlmsghdr: NBD_CMD_CONNECT, version 1
        assert_eq!(&bytes[16..20], &[1, 1, 0, 0]);
        // NBD_ATTR_INDEX u32 = 0: length 8, type 1
        assert_eq!(
            (u16_at(&bytes, 20), u16_at(&bytes, 22), u32_at(&bytes, 24)),
            (8, 1, 0)
        );
        // NBD_ATTR_SIZE_BYTES u64: length 12, type 2
        assert_eq!((u16_at(&bytes, 28), u16_at(&bytes, 30)), (12, 2));
        assert_eq!(
            u64::from_ne_bytes(bytes[32..40].try_into().unwrap()),
            1 << 30
        );
        // NBD_ATTR_BLOCK_SIZE_BYTES, NBD_ATTR_SERVER_FLAGS
        assert_eq!((u16_at(&bytes, 40), u16_at(&bytes, 42)), (12, 3));
        assert_eq!(u64::from_ne_bytes(bytes[44..52].try_into().unwrap()), 512);
        assert_eq!((u16_at(&bytes, 52), u16_at(&bytes, 54)), (12, 5));
        assert_eq!(
            u64::from_ne_bytes(bytes[56..64].try_into().unwrap()),
            0b1000_0011
        );
        // NBD_ATTR_TIMEOUT (4) u64, seconds
        assert_eq!((u16_at(&bytes, 64), u16_at(&bytes, 66)), (12, 4));
        assert_eq!(
            u64::from_ne_bytes(bytes[68..76].try_into().unwrap()),
            1_000_000
        );
        // NBD_ATTR_SOCKETS (nested, 7): 4 + 2 * (4 + 8) bytes
        assert_eq!(
            (u16_at(&bytes, 76), u16_at(&bytes, 78)),
            (28, 7 | NLA_F_NESTED)
        );
        for (item, fd) in [(80, 7), (92, 9)] {
            // NBD_SOCK_ITEM (nested, 1) holding NBD_SOCK_FD (1) u32
            assert_eq!(
                (u16_at(&bytes, item), u16_at(&bytes, item + 2)),
                (12, 1 | NLA_F_NESTED)
            );
            assert_eq!((u16_at(&bytes, item + 4), u16_at(&bytes, item + 6)), (8, 1));
            assert_eq!(u32_at(&bytes, item + 8), fd);
        }
        assert_eq!(bytes.len(), 104);
    }

    #[test]
    fn a_zero_timeout_sends_no_timeout_attribute() {
        let connect = Connect {
            index: 1,
            size: 4096,
            block_size: 512,
            server_flags: 1,
            timeout_seconds: 0,
            sockets: vec![3],
        };
        let bytes = connect_message(0x1d, &connect, 1);
        // index, size, block size, flags, then the sockets at once
        assert_eq!(
            (u16_at(&bytes, 64), u16_at(&bytes, 66)),
            (16, 7 | NLA_F_NESTED)
        );
        assert_eq!(bytes.len(), 80);
    }

    #[test]
    fn family_lookup_names_nbd_with_its_nul_padded() {
        let bytes = get_family("nbd", 1);
        assert_eq!(bytes.len(), 16 + 4 + 8);
        assert_eq!(u16_at(&bytes, 4), GENL_ID_CTRL);
        assert_eq!(&bytes[16..20], &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
        // "nbd\0": length 8, CTRL_ATTR_FAMILY_NAME
        assert_eq!((u16_at(&bytes, 20), u16_at(&bytes, 22)), (8, 2));
        assert_eq!(&bytes[24..28], b"nbd\0");
    }

    #[test]
    fn disconnect_names_the_device_index() {
        let bytes = disconnect_message(0x1d, 3, 2);
        assert_eq!(bytes.len(), 28);
        assert_eq!(&bytes[16..20], &[NBD_CMD_DISCONNECT, 1, 0, 0]);
        assert_eq!(
            (u16_at(&bytes, 20), u16_at(&bytes, 22), u32_at(&bytes, 24)),
            (8, 1, 3)
        );
    }

    fn kernel_message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&[0; 10]);
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn family_reply_then_ack_parse() {
        // genl header, CTRL_ATTR_FAMILY_ID = 0x21, CTRL_ATTR_FAMILY_NAME "nbd"
        let mut body = vec![1, 2, 0, 0, 6, 0, 1, 0];
        body[4..6].copy_from_slice(&6u16.to_ne_bytes());
        body[6..8].copy_from_slice(&1u16.to_ne_bytes());
        body.extend_from_slice(&0x21u16.to_ne_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&2u16.to_ne_bytes());
        body.extend_from_slice(b"nbd\0");
        let mut bytes = kernel_message(GENL_ID_CTRL, &body);
        bytes.extend(kernel_message(NLMSG_ERROR, &[0; 20]));
        let replies = parse_replies(&bytes).unwrap();
        assert_eq!(
            replies[0],
            Reply::Data {
                kind: GENL_ID_CTRL,
                attributes: vec![(1, 0x21u16.to_ne_bytes().to_vec()), (2, b"nbd\0".to_vec())]
            }
        );
        assert_eq!(replies[1], Reply::Error(0));
    }

    #[test]
    fn a_kernel_error_code_comes_back_negative() {
        let mut body = (-16i32).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_replies(&kernel_message(NLMSG_ERROR, &body)).unwrap(),
            [Reply::Error(-16)]
        );
    }

    #[test]
    fn truncated_or_overlong_answers_are_errors_not_panics() {
        let good = kernel_message(NLMSG_ERROR, &[0; 20]);
        for cut in 0..good.len() {
            let _ = parse_replies(&good[..cut]);
        }
        let mut overlong = good.clone();
        overlong[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_replies(&overlong)
            .unwrap_err()
            .to_string()
            .contains("message length 1000"));
        let mut bad_attr = kernel_message(0x21, &[1, 1, 0, 0, 0, 0, 0, 0]);
        bad_attr[20..22].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_replies(&bad_attr)
            .unwrap_err()
            .to_string()
            .contains("attribute length 200"));
    }

    #[test]
    fn the_running_kernel_answers_family_lookups() {
        // The controller names itself with the id of linux/genetlink.h:
        // the request's layout and the answer's parsing, against the kernel.
        let mut netlink = Netlink::open().expect("a NETLINK_GENERIC socket");
        assert_eq!(netlink.family("nlctrl").unwrap(), GENL_ID_CTRL);
        // A family the kernel lacks is the kernel's ENOENT, not a hang (names
        // are at most 15 bytes: a longer one is EINVAL from the policy).
        let error = netlink.family("qcow-nofamily").unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::NOENT.raw_os_error())
        );
        // With no nbd module loaded (this host's case), the message says what to do.
        if !std::path::Path::new("/sys/module/nbd").exists() {
            let error = netlink.nbd_family().unwrap_err();
            assert!(error.to_string().contains("modprobe nbd"), "{error}");
        }
    }

    #[test]
    fn device_paths_give_their_index() {
        assert_eq!(device_index("/dev/nbd0"), Some(0));
        assert_eq!(device_index("/dev/nbd15"), Some(15));
        assert_eq!(device_index("nbd3"), Some(3));
        for bad in [
            "/dev/sda",
            "/dev/nbd",
            "/dev/nbd0p1",
            "/dev/nbd01",
            "/dev/nbdx",
        ] {
            assert_eq!(device_index(bad), None, "{bad}");
        }
    }
}
