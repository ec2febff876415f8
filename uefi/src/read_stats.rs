//! What a boot reads, counted for the boot measurements (issues 23 and 25):
//! the loader's block reads of the virtual disk, what the crate then read
//! of each image's store (bytes in all, and distinct bytes: a cluster read
//! twice, e.g. decompressed twice, counts once in the second figure), and
//! what an HTTP store fetched for it.
//!
//! The driver keeps one [`ReadStats`] when built with the `boot-stats`
//! feature and prints [`ReadStats`]'s line when the loader exits boot
//! services; the default build counts nothing. Memory: one bit per
//! 512-byte sector of every store (a 1 GiB image file: 256 KiB), allocated
//! fallibly at the store's first read; a store whose bitmap cannot be
//! allocated is counted without its distinct bytes (the line says so).

use alloc::vec::Vec;
use core::fmt;

/// The granule of the distinct-bytes count: a sector, the unit of
/// compressed cluster offsets in QCOW2.
const GRANULE_SHIFT: u32 = 9;

/// Which granules of one store were read.
#[derive(Debug)]
struct Coverage {
    size: u64,
    bits: Vec<u64>,
}

impl Coverage {
    fn new(size: u64) -> Option<Self> {
        let granules = size.div_ceil(1 << GRANULE_SHIFT);
        let words = usize::try_from(granules.div_ceil(64)).ok()?;
        let mut bits = Vec::new();
        bits.try_reserve_exact(words).ok()?;
        bits.resize(words, 0);
        Some(Self { size, bits })
    }

    /// Marks `len` bytes at `offset`; returns how many of them were not
    /// marked before, in whole granules clipped to the store's size.
    fn mark(&mut self, offset: u64, len: u64) -> u64 {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return 0;
        }
        let mut new = 0;
        for granule in offset >> GRANULE_SHIFT..=(end - 1) >> GRANULE_SHIFT {
            let (word, bit) = ((granule / 64) as usize, granule % 64);
            if self.bits[word] & (1 << bit) == 0 {
                self.bits[word] |= 1 << bit;
                let start = granule << GRANULE_SHIFT;
                new += (start + (1 << GRANULE_SHIFT)).min(self.size) - start;
            }
        }
        new
    }
}

/// The counters of one boot (all disks and stores of the driver).
#[derive(Debug, Default)]
pub struct ReadStats {
    /// `ReadBlocks` calls of the loader (and firmware) on the virtual disks.
    pub disk_reads: u64,
    /// Bytes they asked for.
    pub disk_bytes: u64,
    /// Reads the crate made of the image files (or disks, or objects).
    pub store_reads: u64,
    /// Bytes it asked for.
    pub store_bytes: u64,
    /// Of those, bytes read for the first time (sector granules).
    pub store_distinct_bytes: u64,
    /// Range requests an HTTP store sent.
    pub fetches: u64,
    /// Bytes they brought.
    pub fetched_bytes: u64,
    /// Stores whose distinct bytes are not counted (no memory for the bitmap).
    pub uncovered_stores: u64,
    /// Each store's key and what of it was read.
    coverage: Vec<(usize, Option<Coverage>)>,
}

impl ReadStats {
    /// No reads yet.
    pub const fn new() -> Self {
        Self {
            disk_reads: 0,
            disk_bytes: 0,
            store_reads: 0,
            store_bytes: 0,
            store_distinct_bytes: 0,
            fetches: 0,
            fetched_bytes: 0,
            uncovered_stores: 0,
            coverage: Vec::new(),
        }
    }

    /// A `ReadBlocks` of `bytes`.
    pub fn disk_read(&mut self, bytes: usize) {
        self.disk_reads += 1;
        self.disk_bytes += bytes as u64;
    }

    /// The crate read `len` bytes at `offset` of the store of `size`
    /// bytes known by `key` (any number that tells the driver's stores
    /// apart while they live: their address).
    pub fn store_read(&mut self, key: usize, size: u64, offset: u64, len: usize) {
        self.store_reads += 1;
        self.store_bytes += len as u64;
        if let Some(coverage) = self.coverage_of(key, size) {
            self.store_distinct_bytes += coverage.mark(offset, len as u64);
        }
    }

    /// The coverage of store `key`, made at its first read.
    fn coverage_of(&mut self, key: usize, size: u64) -> Option<&mut Coverage> {
        let index = match self.coverage.iter().position(|(known, _)| *known == key) {
            Some(index) => index,
            None => {
                let coverage = Coverage::new(size);
                if coverage.is_none() || self.coverage.try_reserve(1).is_err() {
                    self.uncovered_stores += 1;
                    return None;
                }
                self.coverage.push((key, coverage));
                self.coverage.len() - 1
            }
        };
        self.coverage[index].1.as_mut()
    }

    /// An HTTP store fetched `bytes` in `requests` range requests.
    pub fn fetched(&mut self, requests: u64, bytes: u64) {
        self.fetches += requests;
        self.fetched_bytes += bytes;
    }
}

/// The line the driver prints: figures first, each named.
impl fmt::Display for ReadStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "boot stats: disk reads {} bytes {}; store reads {} bytes {} distinct {}",
            self.disk_reads,
            self.disk_bytes,
            self.store_reads,
            self.store_bytes,
            self.store_distinct_bytes
        )?;
        if self.uncovered_stores > 0 {
            write!(
                f,
                " (stores without a distinct count: {})",
                self.uncovered_stores
            )?;
        }
        if self.fetches > 0 {
            write!(f, "; fetches {} bytes {}", self.fetches, self.fetched_bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn a_sector_read_twice_counts_once_as_distinct() {
        let mut stats = ReadStats::new();
        stats.store_read(1, 4096, 100, 200);
        stats.store_read(1, 4096, 0, 512);
        stats.store_read(1, 4096, 1000, 100);
        assert_eq!(stats.store_reads, 3);
        assert_eq!(stats.store_bytes, 812);
        // Sector 0, then sectors 1 and 2 (the third read spans 1000..1100).
        assert_eq!(stats.store_distinct_bytes, 3 * 512);
    }

    #[test]
    fn the_last_partial_sector_counts_its_own_bytes() {
        let mut stats = ReadStats::new();
        stats.store_read(1, 1000, 900, 100);
        assert_eq!(stats.store_distinct_bytes, 1000 - 512);
        // Past the end (the crate never asks, but a count must not panic).
        stats.store_read(1, 1000, 5000, 10);
        assert_eq!(stats.store_distinct_bytes, 1000 - 512);
    }

    #[test]
    fn stores_are_counted_apart() {
        let mut stats = ReadStats::new();
        stats.store_read(1, 1 << 20, 0, 512);
        stats.store_read(2, 1 << 20, 0, 512);
        assert_eq!(stats.store_distinct_bytes, 1024);
    }

    #[test]
    fn the_line_names_every_figure() {
        let mut stats = ReadStats::new();
        stats.disk_read(4096);
        stats.store_read(1, 1 << 20, 0, 65536);
        stats.fetched(1, 262144);
        assert_eq!(
            stats.to_string(),
            "boot stats: disk reads 1 bytes 4096; store reads 1 bytes 65536 distinct 65536; fetches 1 bytes 262144"
        );
    }
}
