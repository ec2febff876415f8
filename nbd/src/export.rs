//! What the server serves: an [`Export`] of a fixed size that reads bytes
//! and says how a range reads (allocated data, zeros, a hole).
//!
//! This is the one seam between the protocol and the disk: `qcow serve`
//! implements it over a QCOW2 backing chain, tests over bytes in memory.

use std::io;

/// How a run of the export reads, in `base:allocation` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Its length in bytes (nonzero).
    pub len: u64,
    /// Nothing is stored for it in any layer (`NBD_STATE_HOLE`).
    pub hole: bool,
    /// It reads as zeros (`NBD_STATE_ZERO`); reads of it are answered with
    /// hole chunks, without reading.
    pub zero: bool,
}

/// A read-only disk the server exports. Shared by every connection.
pub trait Export: Send + Sync {
    /// The size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes at `offset`; the range is inside the export.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// How the run starting at `offset` reads, at most `max_len` bytes
    /// long (`max_len` is nonzero, the run inside the export). Shorter runs
    /// are fine; the server asks again for the rest.
    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run>;
}

impl<E: Export + ?Sized> Export for std::sync::Arc<E> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }

    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        (**self).status(offset, max_len)
    }
}
