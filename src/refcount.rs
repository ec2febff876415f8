//! Refcount structures: the refcount table's entries and the refcounts
//! packed in a refcount block. The reader never needs them (reading does
//! not change refcounts); tools that check an image do, and read them
//! through these views rather than decoding the bits themselves.

/// Offset bits of a refcount table entry (bits 9..=63).
const BLOCK_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// Reserved bits of a refcount table entry.
const RESERVED: u64 = 0x1ff;
/// Bytes of one refcount table entry.
pub const TABLE_ENTRY_BYTES: u64 = 8;

/// One refcount table entry: where a refcount block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefcountTableEntry(u64);

impl RefcountTableEntry {
    /// The entries of a refcount table's bytes (a short tail is ignored).
    pub fn table(bytes: &[u8]) -> impl Iterator<Item = RefcountTableEntry> + '_ {
        bytes.chunks_exact(TABLE_ENTRY_BYTES as usize).map(|word| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(word);
            Self(u64::from_be_bytes(raw))
        })
    }

    /// The refcount block's offset; 0 when the entry has none.
    pub fn block_offset(self) -> u64 {
        self.0 & BLOCK_OFFSET_MASK
    }

    /// Reserved bits that are set (none in a valid entry).
    pub fn reserved_bits(self) -> u64 {
        self.0 & RESERVED
    }
}

/// How refcounts of `1 << refcount_order` bits are laid out in blocks of
/// clusters of `1 << cluster_bits` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefcountLayout {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// log2 of the refcount width in bits (0..=6).
    pub refcount_order: u32,
}

impl RefcountLayout {
    /// log2 of the refcounts one block holds.
    pub fn block_entries_bits(self) -> u32 {
        self.cluster_bits + 3 - self.refcount_order
    }

    /// The largest refcount an entry can hold.
    pub fn max_refcount(self) -> u64 {
        match self.refcount_order {
            6 => u64::MAX,
            order => (1u64 << (1 << order)) - 1,
        }
    }

    /// The refcount table index and the index in that block of `cluster`'s refcount.
    pub fn indexes(self, cluster: u64) -> (u64, usize) {
        let bits = self.block_entries_bits();
        (cluster >> bits, (cluster & ((1 << bits) - 1)) as usize)
    }

    /// Entry `index` of a refcount block (sub-byte entries are packed from
    /// the least significant bit, as QEMU does). `block` is one cluster.
    pub fn refcount_in_block(self, block: &[u8], index: usize) -> u64 {
        match self.refcount_order {
            0..=2 => {
                let bits = 1usize << self.refcount_order;
                let per_byte = 8 / bits;
                let byte = block[index / per_byte];
                u64::from(byte >> (bits * (index % per_byte))) & ((1 << bits) - 1)
            }
            order => {
                let bytes = 1usize << (order - 3);
                block[index * bytes..(index + 1) * bytes]
                    .iter()
                    .fold(0, |value, &byte| (value << 8) | u64::from(byte))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcounts_of_every_width_read_like_qemu() {
        let block = [0b1011_0001u8, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde];
        let at = |order, index| {
            RefcountLayout {
                cluster_bits: 16,
                refcount_order: order,
            }
            .refcount_in_block(&block, index)
        };
        assert_eq!(at(0, 0), 1);
        assert_eq!(at(0, 4), 1);
        assert_eq!(at(0, 6), 0);
        assert_eq!(at(1, 0), 0b01);
        assert_eq!(at(1, 3), 0b10);
        assert_eq!(at(2, 1), 0b1011);
        assert_eq!(at(3, 1), 0x12);
        assert_eq!(at(4, 1), 0x3456);
        assert_eq!(at(5, 1), 0x789a_bcde);
        assert_eq!(at(6, 0), 0xb112_3456_789a_bcde);
    }

    #[test]
    fn table_entries() {
        let bytes = [0, 0, 0, 0, 0, 3, 0, 1];
        let entry = RefcountTableEntry::table(&bytes).next().unwrap();
        assert_eq!(entry.block_offset(), 0x30000);
        assert_eq!(entry.reserved_bits(), 1);
    }
}
