//! The read-ahead cache: aligned blocks of one size in a buffer allocated
//! once, a missing block fetched whole, the least recently used evicted.
//!
//! One reader at a time (the driver's): the host's cache, shared by
//! threads with fetches in flight, is `HttpFile`'s own.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;

/// Why a cached read failed.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheError<E> {
    /// The read reaches past the object.
    OutOfRange,
    /// Fetching a block failed.
    Fetch(E),
}

/// One block of the cache: which block of the object it holds and when it
/// was last used.
#[derive(Debug, Clone, Copy)]
struct Slot {
    block: u64,
    used: u64,
}

/// The read-ahead cache: `slots` blocks of `block` bytes, aligned to
/// `block` in the object, in one buffer allocated at creation.
#[derive(Debug)]
pub struct ReadAhead {
    size: u64,
    block: usize,
    slots: Vec<Option<Slot>>,
    bytes: Vec<u8>,
    clock: u64,
    fetched: u64,
    requests: u64,
}

impl ReadAhead {
    /// The bytes a cache of `slots` blocks of `block` bytes allocates.
    pub fn memory_bytes(block: usize, slots: usize) -> usize {
        block.saturating_mul(slots)
    }

    /// A cache over an object of `size` bytes, its buffer allocated now
    /// (fallibly). `block` and `slots` must not be 0.
    pub fn new(size: u64, block: usize, slots: usize) -> Result<Self, TryReserveError> {
        let bytes_len = Self::memory_bytes(block.max(1), slots.max(1));
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(bytes_len)?;
        bytes.resize(bytes_len, 0);
        let mut table = Vec::new();
        table.try_reserve_exact(slots.max(1))?;
        table.resize(slots.max(1), None);
        Ok(Self {
            size,
            block: block.max(1),
            slots: table,
            bytes,
            clock: 0,
            fetched: 0,
            requests: 0,
        })
    }

    /// Bytes fetched so far.
    pub fn fetched(&self) -> u64 {
        self.fetched
    }

    /// Blocks fetched so far (one request each, retries not counted).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Reads `buf.len()` bytes at `offset`, fetching each missing block
    /// whole with `fetch(first_byte, block_bytes)`.
    pub fn read_at<E>(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        mut fetch: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), CacheError<E>> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or(CacheError::OutOfRange)?;
        let block = self.block as u64;
        let mut at = offset;
        let mut done = 0;
        while at < end {
            let index = at / block;
            let start = index * block;
            let len = (self.size - start).min(block) as usize;
            let slot = self.slot_of(index, start, len, &mut fetch)?;
            let within = (at - start) as usize;
            let take = (len - within).min(buf.len() - done);
            let base = slot * self.block;
            buf[done..done + take]
                .copy_from_slice(&self.bytes[base + within..base + within + take]);
            done += take;
            at += take as u64;
        }
        Ok(())
    }

    /// The slot holding block `index`, fetched into the least recently
    /// used slot if no slot holds it.
    fn slot_of<E>(
        &mut self,
        index: u64,
        start: u64,
        len: usize,
        fetch: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<usize, CacheError<E>> {
        self.clock += 1;
        let clock = self.clock;
        if let Some(slot) = self
            .slots
            .iter()
            .position(|slot| slot.is_some_and(|slot| slot.block == index))
        {
            self.slots[slot] = Some(Slot {
                block: index,
                used: clock,
            });
            return Ok(slot);
        }
        let victim = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, slot)| slot.map_or(0, |slot| slot.used))
            .map_or(0, |(at, _)| at);
        // Empty while fetching: a failed fetch leaves no stale tag.
        self.slots[victim] = None;
        let base = victim * self.block;
        self.requests += 1;
        fetch(start, &mut self.bytes[base..base + len]).map_err(CacheError::Fetch)?;
        self.fetched += len as u64;
        self.slots[victim] = Some(Slot {
            block: index,
            used: clock,
        });
        Ok(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn the_cache_fetches_aligned_blocks_once_and_evicts_the_least_recently_used() {
        let object: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut cache = ReadAhead::new(1000, 256, 2).unwrap();
        let mut asked = Vec::new();
        let read = |cache: &mut ReadAhead, offset: u64, len: usize, asked: &mut Vec<u64>| {
            let mut buf = vec![0; len];
            cache
                .read_at(offset, &mut buf, |first, out: &mut [u8]| {
                    asked.push(first);
                    out.copy_from_slice(&object[first as usize..first as usize + out.len()]);
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!(buf, object[offset as usize..offset as usize + len]);
        };
        read(&mut cache, 250, 10, &mut asked);
        assert_eq!(asked, [0, 256]);
        read(&mut cache, 0, 512, &mut asked);
        assert_eq!(asked, [0, 256], "both blocks were cached");
        read(&mut cache, 990, 10, &mut asked);
        assert_eq!(asked, [0, 256, 768], "the last block is short");
        read(&mut cache, 300, 1, &mut asked);
        assert_eq!(
            asked,
            [0, 256, 768],
            "block 1 was used more recently than 0"
        );
        read(&mut cache, 0, 1, &mut asked);
        assert_eq!(asked, [0, 256, 768, 0]);
        assert_eq!(cache.fetched(), 256 * 3 + 232);
        assert_eq!(cache.requests(), 4);
        assert_eq!(
            cache.read_at(999, &mut [0; 2], |_, _| Ok::<(), ()>(())),
            Err(CacheError::OutOfRange)
        );
    }

    #[test]
    fn a_failed_fetch_leaves_no_block_behind() {
        let mut cache = ReadAhead::new(512, 256, 1).unwrap();
        assert_eq!(
            cache.read_at(0, &mut [0; 4], |_, _| Err("reset")),
            Err(CacheError::Fetch("reset"))
        );
        let mut fetched = 0;
        cache
            .read_at(0, &mut [0; 4], |_, _| {
                fetched += 1;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(fetched, 1, "the failed block is fetched again");
    }
}
