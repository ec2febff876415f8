//! A `no_std` reader for QCOW2 disk images, byte-identical to QEMU.
//!
//! Made for bootloaders, unikernels and disk tools: it reads any byte range
//! of an image's virtual disk through a [`BlockRead`] store that the caller
//! supplies (a file, a byte slice, a virtio block device, another image), in
//! memory the caller chooses once at open. Reading a 2 TiB image costs the
//! same memory as a 2 MiB one.
//!
//! Images QEMU refuses are refused here with the reason, at open
//! ([`HeaderError`]); invalid table entries fail the reads through them
//! ([`CorruptError`]), as in QEMU; nothing in an image can make the crate
//! panic, loop, or allocate beyond the caller's configuration.
//!
//! # In a bootloader: caller memory, a backing disk
//!
//! The crate never opens files and needs no allocator for uncompressed and
//! deflate images. The caller implements [`BlockRead`] for its disks, asks
//! how much memory the image needs ([`ImageBuilder::memory_bytes`]) and
//! hands that over, for example a static buffer. An image that names a
//! backing file gets it as another store: here a second disk holding a
//! qcow2 image, itself opened the same way ([`Raw`] wraps a raw one).
//!
//! ```no_run
//! use qcow2_reader::{BlockRead, Config, Error, Image, OutOfBounds};
//!
//! fn boot(disk0: &[u8], disk1: &[u8]) -> Result<(), Error<OutOfBounds>> {
//!     let config = Config::default(); // 1 MiB of table cache, one decompressed cluster
//!     let mut base_memory = [0u8; 2 << 20];
//!     let mut top_memory = [0u8; 2 << 20];
//!
//!     let top = Image::builder(disk0)?; // the header is validated here
//!     let image = if top.header().backing_file().is_some() {
//!         let base = Image::builder(disk1)?.open(&mut base_memory, &config)?;
//!         top.backing(base).open(&mut top_memory, &config)?
//!     } else {
//!         // Only when the image names none: a missing backing is refused
//!         // (`Unsupported::MissingBacking`) unless ignored on purpose.
//!         return Ok(());
//!     };
//!     let mut sector = [0u8; 512];
//!     image.read_at(0, &mut sector)?; // any offset and length inside the disk
//!     assert_eq!(image.size()?, image.virtual_size()); // an Image is a BlockRead too
//!     Ok(())
//! }
//! ```
//!
//! `open` fails with [`Error::MemoryTooSmall`] when the buffer is short;
//! [`Image`] reads through `&self` (its caches sit behind a spin lock) and is
//! itself a [`BlockRead`], so it stacks under a file system crate or as the
//! backing of another image. External data files work the same way
//! ([`ImageBuilder::data_file`]).
//!
//! # On a host: files, the whole chain, `std::io`
//!
//! With the `std` feature (on by default), [`chain::open_chain`] opens an
//! image with its backing chain and data file from the file system, the way
//! QEMU resolves their names, and [`Cursor`] turns any image into
//! `std::io::Read + Seek`:
//!
//! ```no_run
//! # #[cfg(feature = "std")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Read;
//! use qcow2_reader::chain::{open_chain, ChainOptions};
//! use qcow2_reader::{Cursor, Image};
//!
//! // One image: its header, and one allocation sized at open.
//! let builder = Image::builder(std::fs::File::open("disk.qcow2")?)?;
//! println!("{} bytes", builder.header().virtual_size());
//!
//! // The whole chain, read as a stream.
//! let chain = open_chain("overlay.qcow2".as_ref(), &ChainOptions::default())?;
//! let mut first_mib = vec![0u8; 1 << 20];
//! Cursor::new(chain.top).read_exact(&mut first_mib)?;
//! # Ok(()) }
//! # #[cfg(not(feature = "std"))]
//! # fn main() {}
//! ```
//!
//! # Features
//!
//! `std` (files, `std::io` adapters, the backing-chain opener; implies
//! `alloc`), `alloc` (`ImageBuilder::open_alloc`), `deflate` and `zstd` (the
//! two codecs of compressed clusters; zstd needs `alloc` for its window),
//! `zstd-c` and `zstd-c-nostd` (zstd through libzstd: the system's, or
//! libzstd's decompressor built freestanding for any target),
//! `deflate-c-nostd` (deflate through libdeflate's decompressor built
//! freestanding for any target, `miniz_oxide` deciding what it does not
//! decode whole).
//! With none of them the crate builds for `x86_64-unknown-none` and
//! `aarch64-unknown-none` and reads uncompressed images.
//!
//! # For tools
//!
//! The format's rules each live in one module, with typed views a checker
//! or mapper can walk without decoding bits itself: [`table`] (L1/L2
//! entries, QEMU's cluster types), [`refcount`], [`bitmap`], [`extension`],
//! [`feature`], [`snapshot`]; [`Image::extent`] says how a run reads, as
//! `qemu-img map` does. With `alloc`, `check` runs `qemu-img check` over
//! any [`BlockRead`] (memory: 8 bytes per cluster of the file, bounded by
//! the caller).
//!
//! # Bounds
//!
//! - Memory: [`ImageBuilder::memory_bytes`] for the chosen [`Config`], given
//!   (or allocated) once at open; it depends on the cluster size and the
//!   configuration, never on the virtual size. Uncompressed and deflate
//!   reads allocate nothing (with `deflate-c-nostd`, libdeflate's tables,
//!   11,584 bytes, once at the first deflate cluster). A zstd cluster makes the decoder allocate its
//!   window (refused above one cluster, or 1 KiB for 512-byte clusters) and
//!   its block buffers: the largest single allocation is at most
//!   `max(next_power_of_two(cluster_size + 128 KiB) + 1, 8 × min(cluster_size,
//!   128 KiB))` bytes (256 KiB + 1 up to 32 KiB clusters, 4 MiB + 1 at 2 MiB),
//!   whatever the compressed data says (measured and fuzzed in
//!   `tests/hostile.rs` and `fuzz/`). With `zstd-c-nostd` (libzstd built
//!   freestanding) it is one buffer, allocated at the first zstd cluster
//!   and never again: libzstd's `ZSTD_estimateDStreamSize` for the
//!   cluster-sized window, about 227 KiB plus the window plus two blocks
//!   (423,712 bytes for 64 KiB clusters). [`decoder_memory_bytes`] states
//!   each decoder's whole allocation as a bound
//!   ([`ImageBuilder::decoder_bytes`] for an image), and the chain walk
//!   counts it in its budget.
//! - Storage reads: [`Image::max_storage_reads`], at most
//!   [`READS_PER_UNIT`] per cluster (or subcluster) that a request touches.
//! - Work: proportional to the clusters a request touches; a compressed
//!   cluster stops decoding once one cluster of output is full.
//! - Recursion: none per layer in [`chain`]: the walk that opens a chain
//!   and the plan that reads it ([`chain::Disk::plan`]) are loops. Images
//!   stacked by hand ([`ImageBuilder::backing`] with another `Image`) read
//!   their backing through one call level per layer.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod bitmap;
mod block;
mod cache;
#[cfg(feature = "alloc")]
pub mod chain;
#[cfg(feature = "alloc")]
pub mod check;
mod codec;
mod config;
#[cfg(feature = "luks")]
pub mod crypto;
#[cfg(feature = "luks")]
mod encryption;
mod error;
pub mod extension;
pub mod feature;
#[cfg(feature = "std")]
pub mod follow;
pub mod header;
mod image;
#[cfg(feature = "std")]
mod io;
mod lookup;
mod name;
pub mod refcount;
pub mod snapshot;
pub mod table;

pub use block::{read_zero_padded, BlockRead, OutOfBounds};
pub use codec::decoder_memory_bytes;
pub use config::Config;
#[cfg(feature = "luks")]
pub use encryption::Encryption;
pub use error::{
    CorruptError, DecodeError, Error, FeatureName, HeaderError, Storage, TableKind, Unsupported,
};
pub use header::{is_qcow2, BackingFormat, CompressionType, Header};
pub use image::{Image, ImageBuilder, NoBacking, Raw, READS_PER_UNIT};
#[cfg(feature = "std")]
pub use io::Cursor;
pub use lookup::Extent;
pub use table::Mapping;

/// Internals for the fuzz targets only: not part of the API, may change in
/// any release. Enabled by the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::codec::{CodecError, Decompressor};
}
pub use name::{FileName, FormatName, Name};
pub use snapshot::{find_snapshot, Snapshot, Snapshots};
