//! Internal snapshots: the snapshot table, validated at open and listed on demand.
//!
//! Entries are read one at a time from the storage, so listing 65536
//! snapshots costs no memory. Reading a snapshot's disk is the active read
//! path with the snapshot's L1 table (see [`crate::ImageBuilder::snapshot`]).

use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::block::{read_located, BlockRead};
use crate::error::{Error, HeaderError, Storage};
use crate::header::Header;
use crate::name::Name;

/// QEMU's limit on one entry's extra data (`QCOW_MAX_SNAPSHOT_EXTRA_DATA`).
pub const MAX_EXTRA_DATA_BYTES: u32 = 1024;
/// QEMU's limit on the whole snapshot table (`QCOW_MAX_SNAPSHOTS_SIZE`).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;

/// Snapshot ids and names are kept up to this many bytes; longer ones are cut.
pub const MAX_NAME_BYTES: usize = 255;

/// A snapshot id or name, cut at [`MAX_NAME_BYTES`].
pub type SnapshotName = Name<MAX_NAME_BYTES>;

/// The fixed part of a snapshot table entry.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawSnapshotEntry {
    l1_table_offset: U64,
    l1_size: U32,
    id_str_size: U16,
    name_size: U16,
    date_sec: U32,
    date_nsec: U32,
    vm_clock_nsec: U64,
    vm_state_size: U32,
    extra_data_size: U32,
}

/// The extra data this crate understands; QEMU allows it to be shorter or longer.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawSnapshotExtra {
    vm_state_size_large: U64,
    disk_size: U64,
    icount: U64,
}

const ENTRY_BYTES: u64 = core::mem::size_of::<RawSnapshotEntry>() as u64;
const EXTRA_BYTES: usize = core::mem::size_of::<RawSnapshotExtra>();

/// One internal snapshot, as plain values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Snapshot {
    /// Position in the snapshot table, from 0.
    pub index: u32,
    /// The unique id string (QEMU numbers them "1", "2", ...).
    pub id: SnapshotName,
    /// The user's name for it.
    pub name: SnapshotName,
    /// Offset of its L1 table (validated only when the snapshot is opened, as in QEMU).
    pub l1_table_offset: u64,
    /// Entries of its L1 table.
    pub l1_entries: u32,
    /// Creation time, seconds since the epoch.
    pub date_sec: u32,
    /// Creation time, nanoseconds part.
    pub date_nsec: u32,
    /// Guest clock when taken, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Size of the saved VM state (0 for disk-only snapshots).
    pub vm_state_size: u64,
    /// Virtual disk size when taken, if the entry records it.
    pub disk_size: Option<u64>,
    /// Guest instruction count when taken, if recorded (`u64::MAX` = not recorded by QEMU).
    pub icount: Option<u64>,
    /// Offset just past its table entry (fixed part, extra data, id and
    /// name; the next entry starts at the next multiple of 8).
    pub entry_end: u64,
}

/// Iterator over the snapshot table, reading one entry per step.
pub struct Snapshots<'s, R: ?Sized> {
    storage: &'s R,
    file_size: u64,
    start: u64,
    offset: u64,
    index: u32,
    count: u32,
}

impl<'s, R: BlockRead + ?Sized> Snapshots<'s, R> {
    /// Lists the snapshots of the image whose header is `header`.
    pub fn new(storage: &'s R, header: &Header) -> Self {
        Self {
            storage,
            file_size: header.file_size(),
            start: header.snapshots_offset(),
            offset: header.snapshots_offset(),
            index: 0,
            count: header.snapshot_count(),
        }
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error<R::Error>> {
        // QEMU's block layer reads past the end of the file as zeros.
        read_located(self.storage, Storage::Image, self.file_size, offset, buf)
    }

    fn read_name(&self, offset: u64, len: u16) -> Result<SnapshotName, Error<R::Error>> {
        let mut bytes = [0u8; MAX_NAME_BYTES];
        let kept = usize::from(len).min(MAX_NAME_BYTES);
        self.read(offset, &mut bytes[..kept])?;
        // QEMU keeps ids and names as C strings: they end at the first NUL.
        let text_len = bytes[..kept].iter().position(|&b| b == 0).unwrap_or(kept);
        Ok(SnapshotName::new(&bytes[..text_len]).unwrap_or_default())
    }

    fn read_entry(&mut self, table_start: u64) -> Result<Snapshot, Error<R::Error>> {
        let index = self.index;
        let mut fixed = [0u8; ENTRY_BYTES as usize];
        self.read(self.offset, &mut fixed)?;
        let entry = RawSnapshotEntry::ref_from_bytes(&fixed)
            .map_err(|_| HeaderError::SnapshotTableTooLarge { index })?;
        let extra_size = entry.extra_data_size.get();
        if extra_size > MAX_EXTRA_DATA_BYTES {
            return Err(HeaderError::SnapshotExtraDataTooLarge {
                index,
                size: extra_size,
            }
            .into());
        }
        let mut extra = [0u8; EXTRA_BYTES];
        let extra_kept = (extra_size as usize).min(EXTRA_BYTES);
        let extra_offset = self.offset + ENTRY_BYTES;
        self.read(extra_offset, &mut extra[..extra_kept])?;
        let extra_fields = RawSnapshotExtra::ref_from_bytes(&extra)
            .map_err(|_| HeaderError::SnapshotTableTooLarge { index })?;
        let field = |end: usize, value: &U64| (extra_kept >= end).then(|| value.get());

        let id_offset = extra_offset + u64::from(extra_size);
        let id_len = entry.id_str_size.get();
        let name_offset = id_offset + u64::from(id_len);
        let name_len = entry.name_size.get();
        let end = name_offset + u64::from(name_len);
        if end - table_start > MAX_TABLE_BYTES {
            return Err(HeaderError::SnapshotTableTooLarge { index }.into());
        }
        let snapshot = Snapshot {
            index,
            id: self.read_name(id_offset, id_len)?,
            name: self.read_name(name_offset, name_len)?,
            l1_table_offset: entry.l1_table_offset.get(),
            l1_entries: entry.l1_size.get(),
            date_sec: entry.date_sec.get(),
            date_nsec: entry.date_nsec.get(),
            vm_clock_nsec: entry.vm_clock_nsec.get(),
            vm_state_size: field(8, &extra_fields.vm_state_size_large)
                .unwrap_or(u64::from(entry.vm_state_size.get())),
            disk_size: field(16, &extra_fields.disk_size),
            icount: field(24, &extra_fields.icount),
            entry_end: end,
        };
        self.offset = end.next_multiple_of(8);
        self.index += 1;
        Ok(snapshot)
    }
}

impl<R: BlockRead + ?Sized> Iterator for Snapshots<'_, R> {
    type Item = Result<Snapshot, Error<R::Error>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        // The start is at most i64::MAX (checked at open) and each entry adds at
        // most 40 + 1024 + 2 * 65535 bytes before the 64 MiB check stops the walk.
        let entry = self.read_entry(self.start);
        if entry.is_err() {
            self.index = self.count;
        }
        Some(entry)
    }
}

/// Walks the whole table once, refusing it where QEMU does.
pub(crate) fn validate_table<R: BlockRead + ?Sized>(
    storage: &R,
    header: &Header,
) -> Result<(), Error<R::Error>> {
    Snapshots::new(storage, header).try_for_each(|entry| entry.map(drop))
}

/// Finds a snapshot by id, else by name, as `qemu-img convert -l` does.
pub fn find_snapshot<R: BlockRead + ?Sized>(
    storage: &R,
    header: &Header,
    id_or_name: &[u8],
) -> Result<Snapshot, Error<R::Error>> {
    let mut by_name = None;
    for entry in Snapshots::new(storage, header) {
        let snapshot = entry?;
        if snapshot.id.as_bytes() == id_or_name {
            return Ok(snapshot);
        }
        if by_name.is_none() && snapshot.name.as_bytes() == id_or_name {
            by_name = Some(snapshot);
        }
    }
    by_name.ok_or(Error::NoSuchSnapshot)
}
