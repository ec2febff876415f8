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
//! - [`client`]: a minimal client, for tests that must misbehave.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod export;
pub mod listener;
pub mod session;
pub mod wire;

pub use export::{Export, Run};
pub use listener::{Listener, ServeOptions, Stop, StopHandle};
pub use session::{Limits, Session};
