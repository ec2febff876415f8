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

/// QEMU's limits on a bitmap directory entry (`check_dir_entry`).
const MAX_TABLE_ENTRIES: u32 = 0x800_0000;
const MAX_PHYS_BYTES: u64 = 0x2000_0000;
const MIN_GRANULARITY_BITS: u8 = 9;
const MAX_GRANULARITY_BITS: u8 = 31;
const MAX_NAME_BYTES: u16 = 1023;
const FLAG_IN_USE: u32 = 1;
const FLAG_AUTO: u32 = 2;
const TYPE_DIRTY_TRACKING: u8 = 1;
/// Bitmap table bytes inside the file that [`validate`] reads at most: a
/// hostile directory can name one 8 MiB table 65535 times.
const MAX_TABLE_BYTES_CHECKED: u64 = 64 << 20;

/// Why QEMU refuses an image's persistent bitmaps at open
/// (`qcow2_read_extensions`, `bitmap_list_load`, `bitmap_table_load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapError {
    /// The extension's reserved field is not zero.
    ReservedNotZero,
    /// The directory's size is zero.
    EmptyDirectory,
    /// An entry runs past the directory's end, or the entries stop short of it.
    BrokenDirectory,
    /// The directory holds more bitmaps than the extension says.
    MoreBitmaps,
    /// The directory holds fewer bitmaps than the extension says.
    LessBitmaps {
        /// Entries found.
        found: u32,
    },
    /// A directory entry has extra data.
    ExtraData {
        /// The entry's index.
        index: u32,
    },
    /// A directory entry breaks QEMU's constraints (table placement and
    /// size, granularity, flags, name length, type, size for the disk).
    Constraints {
        /// The entry's index.
        index: u32,
    },
    /// A bitmap table entry is invalid (reserved bits, unaligned, or the
    /// all-ones flag beside a data cluster).
    TableEntry {
        /// The bitmap's index.
        index: u32,
        /// The raw entry.
        entry: u64,
    },
}

impl core::fmt::Display for BitmapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BitmapError::ReservedNotZero => {
                f.write_str("bitmaps extension: reserved field is not zero")
            }
            BitmapError::EmptyDirectory => f.write_str("bitmap directory size is zero"),
            BitmapError::BrokenDirectory => f.write_str("broken bitmap directory"),
            BitmapError::MoreBitmaps => {
                f.write_str("more bitmaps found than specified in the header extension")
            }
            BitmapError::LessBitmaps { found } => write!(
                f,
                "less bitmaps found ({found}) than specified in the header extension"
            ),
            BitmapError::ExtraData { index } => {
                write!(
                    f,
                    "bitmap {index} has extra data, which QEMU does not support"
                )
            }
            BitmapError::Constraints { index } => {
                write!(f, "bitmap {index} does not satisfy QEMU's constraints")
            }
            BitmapError::TableEntry { index, entry } => {
                write!(f, "bitmap {index}'s table has an invalid entry {entry:#x}")
            }
        }
    }
}

/// Where the bitmaps extension puts the directory, and how many bitmaps it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirectoryPlace {
    pub count: u32,
    pub offset: u64,
    pub size: u64,
}

/// The fixed part of a directory entry, read from storage.
struct Entry {
    table_offset: u64,
    table_entries: u32,
    flags: u32,
    kind: u8,
    granularity_bits: u8,
    name_size: u16,
    extra_data_size: u32,
}

impl Entry {
    /// Bytes from this entry to the next (padded to 8).
    fn span(&self) -> u64 {
        (DIRECTORY_ENTRY_BYTES as u64 + u64::from(self.name_size) + u64::from(self.extra_data_size))
            .next_multiple_of(8)
    }

    /// QEMU's `check_dir_entry`.
    fn satisfies_constraints(&self, cluster_size: u64, virtual_size: u64) -> bool {
        let fixed = self.table_entries != 0
            && self.table_offset != 0
            && self.table_offset.is_multiple_of(cluster_size)
            && self.table_entries <= MAX_TABLE_ENTRIES
            && (MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&self.granularity_bits)
            && self.flags & !(FLAG_IN_USE | FLAG_AUTO) == 0
            && self.name_size <= MAX_NAME_BYTES
            && self.kind == TYPE_DIRTY_TRACKING;
        if !fixed {
            return false;
        }
        let phys_bytes = u64::from(self.table_entries) * cluster_size;
        if phys_bytes > MAX_PHYS_BYTES {
            return false;
        }
        // An in-use bitmap may be too small (not saved after a resize).
        self.flags & FLAG_IN_USE != 0 || virtual_size <= (phys_bytes * 8) << self.granularity_bits
    }
}

/// Reads the entry at `offset`.
fn read_entry<R: crate::BlockRead + ?Sized>(
    storage: &R,
    file_size: u64,
    offset: u64,
) -> Result<Entry, crate::Error<R::Error>> {
    let mut bytes = [0u8; DIRECTORY_ENTRY_BYTES];
    crate::block::read_located(
        storage,
        crate::Storage::Image,
        file_size,
        offset,
        &mut bytes,
    )?;
    let raw = RawDirectoryEntry::ref_from_bytes(&bytes).expect("24 bytes");
    Ok(Entry {
        table_offset: raw.table_offset.get(),
        table_entries: raw.table_entries.get(),
        flags: raw.flags.get(),
        kind: raw.kind,
        granularity_bits: raw.granularity_bits,
        name_size: raw.name_size.get(),
        extra_data_size: raw.extra_data_size.get(),
    })
}

/// Validates the bitmap directory and tables as QEMU does when it opens an
/// image (also for `qemu-img info` and `check`): the directory is read an
/// entry at a time and the tables 512 bytes at a time, so nothing is
/// allocated; table bytes past the end of the file read as zeros (valid),
/// and at most 64 MiB of table bytes inside the file are read in all.
pub(crate) fn validate<R: crate::BlockRead + ?Sized>(
    storage: &R,
    file_size: u64,
    place: DirectoryPlace,
    cluster_size: u64,
    virtual_size: u64,
) -> Result<(), crate::Error<R::Error>> {
    if place.size == 0 {
        return Err(BitmapError::EmptyDirectory.into());
    }
    // The header limits the directory to 64 MiB and its offset below 2^56
    // bytes (cluster aligned, checked), so these sums cannot overflow.
    let end = place.size;
    let mut at = 0u64;
    let mut found = 0u32;
    while at < end {
        if at + DIRECTORY_ENTRY_BYTES as u64 > end {
            return Err(BitmapError::BrokenDirectory.into());
        }
        found += 1;
        if found > place.count {
            return Err(BitmapError::MoreBitmaps.into());
        }
        let entry = read_entry(storage, file_size, place.offset + at)?;
        if at + entry.span() > end {
            return Err(BitmapError::BrokenDirectory.into());
        }
        let index = found - 1;
        if entry.extra_data_size != 0 {
            return Err(BitmapError::ExtraData { index }.into());
        }
        if !entry.satisfies_constraints(cluster_size, virtual_size) {
            return Err(BitmapError::Constraints { index }.into());
        }
        at += entry.span();
    }
    if found != place.count {
        return Err(BitmapError::LessBitmaps { found }.into());
    }
    // The tables, once the whole directory is valid (QEMU loads the list first).
    let mut budget = MAX_TABLE_BYTES_CHECKED;
    let mut at = 0u64;
    for index in 0..place.count {
        let entry = read_entry(storage, file_size, place.offset + at)?;
        at += entry.span();
        let bytes = u64::from(entry.table_entries) * TABLE_ENTRY_BYTES;
        let inside = file_size.saturating_sub(entry.table_offset).min(bytes);
        let checked = inside.min(budget);
        budget -= checked;
        let mut buf = [0u8; 512];
        let mut done = 0;
        while done < checked {
            let len = (checked - done).min(buf.len() as u64) as usize;
            let offset = entry.table_offset + done;
            crate::block::read_located(
                storage,
                crate::Storage::Image,
                file_size,
                offset,
                &mut buf[..len],
            )?;
            if let Some(bad) = TableEntry::table(&buf[..len]).find(|e| !e.is_valid(cluster_size)) {
                return Err(BitmapError::TableEntry {
                    index,
                    entry: bad.0,
                }
                .into());
            }
            done += len as u64;
        }
    }
    Ok(())
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
