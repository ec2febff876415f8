//! Reading a whole store in chunks: the hash of the virtual disk, and the
//! timed passes that compare reading through the crate with reading raw
//! sectors.
//!
//! [`compare`] runs the timed passes at one queue depth (`passes`): at
//! depth 1 each chunk is one `read_at` (of the crate, or of raw sectors,
//! through one loop, [`read_all`]); above it, both read a window of chunks
//! at a time with up to `depth` device requests in flight
//! ([`VirtioDisk::read_queued`](crate::disk::VirtioDisk::read_queued)), the
//! qcow2 pass built on the crate's read plan (`queued`): data runs
//! straight from the disk, zero runs filled by the CPU while the disk
//! reads, everything else through `read_at` afterwards ([`verify_queued`]
//! checks that this reads what `read_at` reads). A pass is at least
//! `MIN_PASS_BYTES` (the virtual disk read as many times as that takes),
//! raw and qcow2 rounds interleaved so that host noise lands on both; the
//! median of the per-pass ratios (`stats`) is the result and their spread
//! says how much noise was left. Hashing (`hash`) reads through the same
//! loop.

mod hash;
mod passes;
mod queued;
mod stats;

pub use hash::{hash_image, Hashed};
pub use passes::{compare, rounds_per_pass, Comparison};
pub use queued::verify_queued;

use crate::backing::ImageError;
use crate::disk::DiskError;
use core::fmt;
use qcow2_reader::BlockRead;

/// Reads `0..size` of `source` in `buffer`-sized chunks, in order, and
/// hands each chunk to `each`.
fn read_all<S: BlockRead + ?Sized>(
    source: &S,
    size: u64,
    buffer: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> Result<(), S::Error> {
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(buffer.len() as u64) as usize;
        let chunk = &mut buffer[..len];
        source.read_at(offset, chunk)?;
        each(chunk);
        offset += len as u64;
    }
    Ok(())
}

/// A timed pass that failed.
#[derive(Debug)]
pub enum PassError {
    /// Through the crate.
    Image(ImageError),
    /// Of raw sectors.
    Disk(DiskError),
    /// The queued read gave other bytes than `read_at` in this chunk.
    Mismatch {
        /// Virtual disk offset of the chunk.
        offset: u64,
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(error) => error.fmt(f),
            Self::Disk(error) => error.fmt(f),
            Self::Mismatch { offset, len } => write!(
                f,
                "the queued read of {len} bytes at virtual offset {offset:#x} differs from read_at's"
            ),
        }
    }
}
