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
//! upstream); this crate reads only the status, four headers
//! (`Content-Length`, `Content-Range`, `ETag`, `Last-Modified`) with
//! checked parsing, and a body bounded by the range asked for. No fuzz
//! target of its own is kept for it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod file;
mod resolve;

pub use error::{ErrorKind, HttpError};
pub use file::{Client, HttpFile, HttpOptions, MAX_READAHEAD, MIN_READAHEAD};
pub use resolve::{directory, ResolveError, Urls};
pub use url::Url;

/// Whether `text` is an `http://` or `https://` URL (what the tools read
/// over HTTP rather than as a path).
pub fn is_url(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}
