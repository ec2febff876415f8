//! Read QCOW2 images straight from a web server, lazily: an HTTP storage
//! backend for `qcow2-reader`.
//!
//! - [`HttpFile`]: one object as a [`qcow2_reader::BlockRead`], read by
//!   range requests of a read-ahead size the caller chooses, through a
//!   bounded cache, pinned to the version (`ETag` or `Last-Modified`) it
//!   had at open, with retries and errors that name the URL and what the
//!   server did ([`HttpError`]).
//! - [`Urls`]: the chain walk's [`qcow2_reader::chain::Resolver`] over
//!   URLs: backing and data file names resolved against the naming
//!   image's URL, under the caller's follow policy.
//! - [`rules`]: what both this client and the UEFI driver (`qcow2.efi`)
//!   obey, `no_std` + `alloc`: URLs and the names beside them, the range
//!   request and the checks of its answer, the object's pin, the named
//!   [`rules::Fault`]s and which are retried, the read-ahead cache. Without
//!   the default `client` feature the crate is only these, and builds for
//!   UEFI targets.
//!
//! It knows nothing of QCOW2: the crate's chain walk reads the images.
//!
//! # Why a crate of its own
//!
//! `qcow2-reader` is `no_std` and does no I/O; the UEFI driver and the
//! firmware build it without an allocator's `std`. An HTTP client pulls in
//! `std`, sockets, TLS (`rustls` with `ring`) and certificate roots: kept
//! here, only the host tools that read URLs build them.
//!
//! # Memory
//!
//! Per object (per URL, shared by every reader of it through one
//! [`Client`]): at most [`HttpOptions::cache_blocks`] blocks of
//! [`HttpOptions::readahead`] bytes, the blocks being fetched included
//! ([`HttpOptions::memory_bytes`]; 16 MiB by default), plus the
//! connections' buffers.
//!
//! # Responses are parsed by `ureq`
//!
//! The HTTP protocol is `ureq`'s (a maintained client, its parser fuzzed
//! upstream); this crate hands the status and five headers
//! (`Content-Length`, `Content-Range`, `Content-Encoding`, `ETag`,
//! `Last-Modified`) to [`rules`], and reads a body bounded by the range
//! asked for. The rules are fuzzed by the `http_rules` target (`fuzz/`).

#![cfg_attr(not(feature = "client"), no_std)]
// The crate's page names the client's items, absent without `client`.
#![cfg_attr(not(feature = "client"), allow(rustdoc::broken_intra_doc_links))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod rules;

#[cfg(feature = "client")]
mod error;
#[cfg(feature = "client")]
mod file;
#[cfg(feature = "client")]
mod resolve;

#[cfg(feature = "client")]
pub use error::{ErrorKind, HttpError};
#[cfg(feature = "client")]
pub use file::{Client, HttpFile, HttpOptions, MAX_READAHEAD, MIN_READAHEAD};
#[cfg(feature = "client")]
pub use resolve::{directory, ResolveError, Urls};
pub use rules::is_url;
#[cfg(feature = "client")]
pub use url::Url;
