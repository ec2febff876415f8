//! Persistent dirty bitmaps' metadata: the bitmap directory and bitmap
//! tables. The reader ignores bitmaps (they do not change what the disk
//! reads as); tools that account for every cluster of the file read them
//! through these views.

use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Offset bits of a bitmap table entry.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Reserved bits of a bitmap table entry.
const RESERVED: u64 = 0xff00_0000_0000_01fe;
/// Bitmap table entry bit 0: with no data cluster, the range reads as all ones.
const ALL_ONES: u64 = 1;
/// Bytes of one bitmap table entry.
pub const TABLE_ENTRY_BYTES: u64 = 8;

/// The fixed part of a bitmap directory entry.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawDirectoryEntry {
    table_offset: U64,
    table_entries: U32,
    flags: U32,
    kind: u8,
    granularity_bits: u8,
    name_size: U16,
    extra_data_size: U32,
}

const DIRECTORY_ENTRY_BYTES: usize = core::mem::size_of::<RawDirectoryEntry>();

/// One bitmap of the directory: where its table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Offset of the bitmap table.
    pub table_offset: u64,
    /// Entries of the bitmap table.
    pub table_entries: u32,
}

/// The entries of a bitmap directory's bytes, in order; an entry cut off
/// by the end of `directory` ends the walk.
pub fn directory(directory: &[u8]) -> impl Iterator<Item = DirectoryEntry> + '_ {
    let mut at = 0usize;
    core::iter::from_fn(move || {
        let rest = directory.get(at..)?;
        let (entry, _) = RawDirectoryEntry::ref_from_prefix(rest).ok()?;
        let extra = entry.extra_data_size.get() as usize;
        let name = usize::from(entry.name_size.get());
        at = at
            .checked_add(DIRECTORY_ENTRY_BYTES + extra + name)?
            .next_multiple_of(8);
        Some(DirectoryEntry {
            table_offset: entry.table_offset.get(),
            table_entries: entry.table_entries.get(),
        })
    })
}

/// One bitmap table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry(u64);

impl TableEntry {
    /// The entries of a bitmap table's bytes (a short tail is ignored).
    pub fn table(bytes: &[u8]) -> impl Iterator<Item = TableEntry> + '_ {
        bytes.chunks_exact(TABLE_ENTRY_BYTES as usize).map(|word| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(word);
            Self(u64::from_be_bytes(raw))
        })
    }

    /// The data cluster's offset; 0 when the entry has none.
    pub fn data_offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    /// Whether the entry is valid as QEMU's check sees it: no reserved bits,
    /// an aligned data cluster, and no all-ones flag beside a data cluster.
    pub fn is_valid(self, cluster_size: u64) -> bool {
        let offset = self.data_offset();
        self.0 & RESERVED == 0
            && offset.is_multiple_of(cluster_size)
            && !(offset != 0 && self.0 & ALL_ONES != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_entries_are_padded_to_eight() {
        let mut bytes = [0u8; 64];
        bytes[0..8].copy_from_slice(&0x50000u64.to_be_bytes());
        bytes[8..12].copy_from_slice(&3u32.to_be_bytes());
        bytes[18..20].copy_from_slice(&5u16.to_be_bytes()); // name "abcde": 24 + 5 -> 32
        bytes[32..40].copy_from_slice(&0x60000u64.to_be_bytes());
        assert_eq!(directory(&bytes[..56]).count(), 2);
        assert_eq!(directory(&bytes[..55]).count(), 1);
        let first = directory(&bytes).next().unwrap();
        assert_eq!(first.table_offset, 0x50000);
        assert_eq!(first.table_entries, 3);
    }

    #[test]
    fn table_entry_validity() {
        assert!(TableEntry(0x10000).is_valid(0x10000));
        assert!(TableEntry(1).is_valid(0x10000));
        assert!(!TableEntry(0x10001).is_valid(0x10000));
        assert!(!TableEntry(0x10200).is_valid(0x10000));
        assert!(!TableEntry(2).is_valid(0x10000));
    }
}
