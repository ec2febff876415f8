//! A read-only NBD server over anything that can read bytes and say how
//! ranges read ([`Export`]): the protocol as the reference clients
//! (`qemu-img`, `nbdinfo`, `nbdcopy`, the Linux kernel's `nbd-client`)
//! speak it, fixed newstyle with structured replies and `base:allocation`.
//!
//! Why a crate of its own, not a module of the `qcow` tool: the fuzz
//! target links the wire parsers and the session without the tool, and the
//! server knows nothing of QCOW2 (the tool's `serve` module adapts the
//! image's backing chain to [`Export`]).
//!
//! - [`wire`]: the byte format, parse and emit, no I/O.
//! - [`export`]: what the server serves: size, reads, block status.
//! - [`session`]: one client's handshake and transmission, over any
//!   `Read`/`Write` pair.
//! - [`listener`]: sockets, a thread per client, timeouts, stopping.
//! - [`tls`]: TLS after `NBD_OPT_STARTTLS`, through rustls.
//! - [`netlink`]: NBD's generic-netlink messages, to set up `/dev/nbdN`.
//! - [`device`]: the export served to the kernel as `/dev/nbdN`.
//! - [`client`]: a minimal client, for tests that must misbehave.
//!
//! ```
//! use std::io;
//! use std::sync::Arc;
//! use qcow2_nbd::client::Client;
//! use qcow2_nbd::listener::{serve, Listener, ServeOptions, Stop};
//! use qcow2_nbd::{Export, Run};
//!
//! /// 1 MiB of 0x2a bytes.
//! struct Disk;
//!
//! impl Export for Disk {
//!     fn size(&self) -> u64 {
//!         1 << 20
//!     }
//!     fn read_at(&self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
//!         buf.fill(0x2a);
//!         Ok(())
//!     }
//!     fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
//!         Ok(Run { len: max_len.min(self.size() - offset), hole: false, zero: false })
//!     }
//! }
//!
//! # fn main() -> io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let socket = dir.path().join("disk.sock");
//! let listener = Listener::unix(&socket)?;
//! let stop = Stop::new()?;
//! let stopper = stop.handle()?;
//! let server = std::thread::spawn(move || {
//!     serve(&[listener], Arc::new(Disk), &ServeOptions::default(), &stop)
//! });
//!
//! let mut client = Client::greet(std::os::unix::net::UnixStream::connect(&socket)?)?;
//! client.structured_replies()?;
//! client.go("").expect("I/O").expect("the default export");
//! assert_eq!(client.read(4096, 512)?.expect("a read"), vec![0x2a; 512]);
//!
//! stopper.stop()?;
//! server.join().expect("server thread")?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod device;
pub mod export;
pub mod listener;
pub mod netlink;
pub mod session;
pub mod tls;
pub mod wire;

pub use export::{Export, Run};
pub use listener::{Listener, ServeOptions, Stop, StopHandle};
pub use session::{Limits, Session, TlsMode};
pub use tls::TlsConfig;
