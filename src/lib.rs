//! A `no_std` reader for QCOW2 disk images, byte-identical to QEMU.
//!
//! Made for bootloaders, unikernels and disk tools: it reads any byte range
//! of an image's virtual disk through a [`BlockRead`] store that the caller
//! supplies (a file, a byte slice, a virtio block device, another image), in
//! memory the caller chooses once at open. Reading a 2 TiB image costs the
//! same memory as a 2 MiB one.
//!
//! ```no_run
//! # fn demo(disk: &[u8]) -> Result<(), qcow2_reader::Error<qcow2_reader::OutOfBounds>> {
//! use qcow2_reader::{Config, Image};
//!
//! let config = Config::default();
//! let builder = Image::builder(disk)?;
//! let mut memory = [0u8; 2 << 20];
//! let image = builder.open(&mut memory, &config)?;
//! let mut sector = [0u8; 512];
//! image.read_at(0, &mut sector)?;
//! # Ok(()) }
//! ```
//!
//! Features: `std` (files, `std::io` adapters, the backing-chain opener),
//! `alloc` (allocate the cache memory at open), `deflate` and `zstd` (the
//! two codecs of compressed clusters). With none of them the crate still
//! reads uncompressed images.
//!
//! Images QEMU refuses are refused here with the reason, at open
//! ([`HeaderError`]); invalid table entries fail the reads through them
//! ([`CorruptError`]), as in QEMU; nothing in an image can make the crate
//! panic, loop, or allocate beyond the caller's configuration.

//!
//! # Bounds
//!
//! - Memory: [`ImageBuilder::memory_bytes`] for the chosen [`Config`], given
//!   (or allocated) once at open; it depends on the cluster size and the
//!   configuration, never on the virtual size. Uncompressed and deflate
//!   reads allocate nothing. A zstd cluster makes the decoder allocate its
//!   window (refused above one cluster, or 1 KiB for 512-byte clusters) and
//!   its block buffers: the largest single allocation is at most
//!   `max(next_power_of_two(cluster_size + 128 KiB) + 1, 8 × min(cluster_size,
//!   128 KiB))` bytes (256 KiB + 1 up to 32 KiB clusters, 4 MiB + 1 at 2 MiB),
//!   whatever the compressed data says (measured and fuzzed in
//!   `tests/hostile.rs` and `fuzz/`).
//! - Storage reads: [`Image::max_storage_reads`], at most
//!   [`READS_PER_UNIT`] per cluster (or subcluster) that a request touches.
//! - Work: proportional to the clusters a request touches; a compressed
//!   cluster stops decoding once one cluster of output is full.
//! - Recursion: only through backing images, as deep as the caller stacks
//!   them ([`chain::ChainOptions::max_depth`] for the `std` opener).

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod block;
mod cache;
#[cfg(feature = "std")]
pub mod chain;
pub mod codec;
mod config;
#[cfg(feature = "luks")]
pub mod crypto;
mod error;
pub mod extension;
pub mod feature;
pub mod header;
mod image;
#[cfg(feature = "std")]
mod io;
mod lookup;
mod name;
pub mod snapshot;
pub mod table;

pub use block::{BlockRead, OutOfBounds};
pub use config::Config;
pub use error::{
    CorruptError, DecodeError, Error, FeatureName, HeaderError, Storage, TableKind, Unsupported,
};
pub use header::{CompressionType, Header};
pub use image::{Image, ImageBuilder, NoBacking, Raw, READS_PER_UNIT};
#[cfg(feature = "std")]
pub use io::Cursor;
pub use lookup::{Extent, ExtentKind};
pub use name::{FileName, FormatName, Name};
pub use snapshot::{find_snapshot, Snapshot, Snapshots};
