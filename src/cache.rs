//! A fixed set of equally sized slots in caller memory, keyed by host offset.
//!
//! Used for table slices (L1 and L2) and for decompressed clusters. The
//! cache keeps only numbers; the bytes live in the memory passed to each call,
//! so it needs no allocator and never grows. Eviction is least recently used
//! over a linear scan: slot counts are small, and the most recent hit is
//! checked first because sequential reads hit the same slot again and again.

/// Bytes of bookkeeping per slot: the key and its last-use stamp.
const SLOT_META_BYTES: usize = 16;
/// Key of an empty slot; host offsets are below 2^56, so no real key collides.
const EMPTY: u64 = u64::MAX;

/// Slot bookkeeping for one region of the caller's memory.
#[derive(Debug)]
pub(crate) struct SlotCache {
    slots: usize,
    slot_bytes: usize,
    clock: u64,
    last_hit: usize,
}

impl SlotCache {
    /// Bytes of memory `slots` slots of `slot_bytes` need, or `None` on overflow.
    pub(crate) fn region_bytes(slots: usize, slot_bytes: usize) -> Option<usize> {
        slot_bytes.checked_add(SLOT_META_BYTES)?.checked_mul(slots)
    }

    /// Bookkeeping for `region`, which must be `region_bytes(slots, slot_bytes)` long; marks every slot empty.
    pub(crate) fn new(region: &mut [u8], slots: usize, slot_bytes: usize) -> Self {
        let cache = Self {
            slots,
            slot_bytes,
            clock: 0,
            last_hit: 0,
        };
        for slot in 0..slots {
            cache.set_meta(region, slot, EMPTY, 0);
        }
        cache
    }

    /// Size of each slot.
    fn meta(&self, region: &[u8], slot: usize) -> (u64, u64) {
        let at = slot * SLOT_META_BYTES;
        let word =
            |i: usize| u64::from_ne_bytes(region[at + i..at + i + 8].try_into().expect("8 bytes"));
        (word(0), word(8))
    }

    fn set_meta(&self, region: &mut [u8], slot: usize, key: u64, stamp: u64) {
        let at = slot * SLOT_META_BYTES;
        region[at..at + 8].copy_from_slice(&key.to_ne_bytes());
        region[at + 8..at + 16].copy_from_slice(&stamp.to_ne_bytes());
    }

    fn data<'r>(&self, region: &'r mut [u8], slot: usize) -> &'r mut [u8] {
        let start = self.slots * SLOT_META_BYTES + slot * self.slot_bytes;
        &mut region[start..start + self.slot_bytes]
    }

    fn touch(&mut self, region: &mut [u8], slot: usize, key: u64) {
        self.clock += 1;
        self.set_meta(region, slot, key, self.clock);
        self.last_hit = slot;
    }

    fn find(&self, region: &[u8], key: u64) -> Option<usize> {
        if self.meta(region, self.last_hit).0 == key {
            return Some(self.last_hit);
        }
        (0..self.slots).find(|&slot| self.meta(region, slot).0 == key)
    }

    fn victim(&self, region: &[u8]) -> usize {
        (0..self.slots)
            .min_by_key(|&slot| match self.meta(region, slot) {
                (EMPTY, _) => 0,
                (_, stamp) => stamp,
            })
            .unwrap_or(0)
    }

    /// The slot holding `key`, filling it with `load` on a miss.
    ///
    /// A failed load leaves the slot empty, so a later call tries again.
    pub(crate) fn get_or_load<'r, E>(
        &mut self,
        region: &'r mut [u8],
        key: u64,
        load: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<&'r mut [u8], E> {
        let slot = match self.find(region, key) {
            Some(slot) => slot,
            None => {
                let slot = self.victim(region);
                self.set_meta(region, slot, EMPTY, 0);
                load(self.data(region, slot))?;
                slot
            }
        };
        self.touch(region, slot, key);
        Ok(self.data(region, slot))
    }

    /// Whether `key` is cached, without loading it.
    #[cfg(test)]
    pub(crate) fn contains(&self, region: &[u8], key: u64) -> bool {
        self.find(region, key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_once_and_evicts_least_recently_used() {
        let mut region = [0u8; 2 * (16 + 4)];
        assert_eq!(SlotCache::region_bytes(2, 4), Some(region.len()));
        let mut cache = SlotCache::new(&mut region, 2, 4);
        let mut loads = 0;
        let mut load = |key: u64| {
            let mut count = |buf: &mut [u8]| -> Result<(), ()> {
                loads += 1;
                buf.fill(key as u8);
                Ok(())
            };
            cache
                .get_or_load(&mut region, key, &mut count)
                .map(|data| data[0])
        };
        assert_eq!(load(1), Ok(1));
        assert_eq!(load(2), Ok(2));
        assert_eq!(load(1), Ok(1));
        assert_eq!(load(3), Ok(3)); // evicts 2, the least recently used
        assert_eq!(load(1), Ok(1));
        assert_eq!(loads, 3);
        assert!(!cache.contains(&region, 2));
        assert!(cache.contains(&region, 3));
    }

    #[test]
    fn failed_load_leaves_slot_empty() {
        let mut region = [0u8; 16 + 4];
        let mut cache = SlotCache::new(&mut region, 1, 4);
        assert_eq!(cache.get_or_load(&mut region, 5, |_| Err("no")), Err("no"));
        assert!(!cache.contains(&region, 5));
    }
}
