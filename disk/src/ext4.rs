//! ext2/3/4 through `ext4-view`, the no_std reader of the field: this file
//! only connects it to `BlockRead` and maps its types to the crate's.
//!
//! Before `ext4-view` sees the volume, the superblock's size is checked
//! against the partition: `ext4-view` allocates its block group descriptor
//! table from the block count, so a hostile count must not reach it.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use core::fmt;

use ext4_view::{Ext4, Ext4Read, FileType, Metadata};
use qcow2_reader::BlockRead;

use crate::fs::{read_fs, Entry, EntryKind, FsError};

/// Byte of the superblock in the volume.
const SUPERBLOCK_OFFSET: u64 = 1024;
/// `s_magic` within the superblock.
const MAGIC_OFFSET: u64 = SUPERBLOCK_OFFSET + 0x38;
const MAGIC: [u8; 2] = [0x53, 0xef];

/// Whether the ext2/3/4 superblock magic is where it belongs.
pub fn has_magic<D: BlockRead>(disk: &D) -> Result<bool, FsError> {
    let size = disk.size().map_err(|error| FsError::read(0, error))?;
    if size < SUPERBLOCK_OFFSET * 2 {
        return Ok(false);
    }
    let mut magic = [0u8; 2];
    read_fs(disk, MAGIC_OFFSET, &mut magic)?;
    Ok(magic == MAGIC)
}

/// The partition as `ext4-view` reads it.
struct Source<D>(D);

/// A failed read, as `ext4-view` wants it (a boxed `Error`).
#[derive(Debug)]
struct SourceError(String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for SourceError {}

impl<D: BlockRead> Ext4Read for Source<D> {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn core::error::Error + Send + Sync + 'static>> {
        self.0.read_at(start_byte, dst).map_err(|error| {
            let message = alloc::format!("byte {start_byte:#x} of the partition: {error}");
            Box::new(SourceError(message)) as Box<dyn core::error::Error + Send + Sync>
        })
    }
}

/// An open ext2/3/4 volume.
pub struct Ext4Volume {
    fs: Ext4,
    name: &'static str,
}

/// `ext2`, `ext3` or `ext4`, by `blkid`'s rule: any feature ext3 lacks
/// makes it ext4, else a journal makes it ext3.
fn version_name(superblock: &[u8]) -> &'static str {
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    // filetype, recover, journal_dev, meta_bg
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x8 | 0x10;
    // sparse_super, large_file, btree_dir
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    let compat = u32_at(superblock, 0x5c);
    let incompat = u32_at(superblock, 0x60);
    let ro_compat = u32_at(superblock, 0x64);
    if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        "ext4"
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl Ext4Volume {
    /// Checks the superblock's size against the partition, then loads it with `ext4-view`.
    pub fn open<D: BlockRead + 'static>(disk: D) -> Result<Self, FsError> {
        let partition_bytes = disk.size().map_err(|error| FsError::read(0, error))?;
        let mut superblock = [0u8; 1024];
        read_fs(&disk, SUPERBLOCK_OFFSET, &mut superblock)?;
        // ext4-view 0.9.3 divides by s_blocks_per_group unchecked (found by
        // the `disk` fuzz target): a zero must be refused here.
        let blocks_per_group = u32_at(&superblock, 0x20);
        if blocks_per_group == 0 {
            return Err(FsError::ExtSuperblock {
                field: "blocks per group",
                value: 0,
            });
        }
        let log_block_size = u32_at(&superblock, 0x18);
        // ext4-view refuses block sizes above 64 KiB itself, with its own message.
        if log_block_size <= 6 {
            let block_size = 1024u64 << log_block_size;
            // ext4-view 0.9.3 takes s_blocks_count_hi whether or not the
            // 64bit feature is set (and sizes its descriptor table from the
            // result; found by the `disk` fuzz target), so the bound must
            // count it too. mkfs leaves the field zero without 64bit.
            let blocks =
                u64::from(u32_at(&superblock, 0x04)) | u64::from(u32_at(&superblock, 0x150)) << 32;
            if blocks
                .checked_mul(block_size)
                .is_none_or(|bytes| bytes > partition_bytes)
            {
                return Err(FsError::ExtTooLarge {
                    blocks,
                    block_size,
                    partition_bytes,
                });
            }
        }
        let name = version_name(&superblock);
        let fs = Ext4::load(Box::new(Source(disk))).map_err(FsError::from_ext4)?;
        Ok(Self { fs, name })
    }

    /// `ext2`, `ext3` or `ext4`, as `blkid` names it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The label, lossily decoded.
    pub fn label(&self) -> String {
        self.fs.label().display().to_string()
    }

    /// What `path` names, symlinks followed.
    pub fn metadata(&self, path: &str) -> Result<Entry, FsError> {
        let metadata = self.fs.metadata(path).map_err(FsError::from_ext4)?;
        let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let name = if name.is_empty() { "/" } else { name };
        Ok(entry(name.into(), &metadata))
    }

    /// Calls `visit` with each entry of the directory `path`, without `.` and `..`.
    pub fn read_dir(&self, path: &str, visit: &mut dyn FnMut(Entry)) -> Result<(), FsError> {
        for dir_entry in self.fs.read_dir(path).map_err(FsError::from_ext4)? {
            let dir_entry = dir_entry.map_err(FsError::from_ext4)?;
            let name = dir_entry.file_name().display().to_string();
            if name == "." || name == ".." {
                continue;
            }
            let metadata = dir_entry.metadata().map_err(FsError::from_ext4)?;
            visit(entry(name, &metadata));
        }
        Ok(())
    }

    /// Opens the file `path`, symlinks followed.
    pub fn open_file(&self, path: &str) -> Result<ext4_view::File, FsError> {
        self.fs.open(path).map_err(FsError::from_ext4)
    }
}

fn entry(name: String, metadata: &Metadata) -> Entry {
    let (kind, type_bits) = match metadata.file_type() {
        FileType::Regular => (EntryKind::File, 0o100_000),
        FileType::Directory => (EntryKind::Directory, 0o040_000),
        FileType::Symlink => (EntryKind::Symlink, 0o120_000),
        FileType::BlockDevice => (EntryKind::Other, 0o060_000),
        FileType::CharacterDevice => (EntryKind::Other, 0o020_000),
        FileType::Fifo => (EntryKind::Other, 0o010_000),
        FileType::Socket => (EntryKind::Other, 0o140_000),
    };
    Entry {
        name,
        kind,
        size: metadata.len(),
        mode: type_bits | u32::from(metadata.mode()),
        mtime: None,
    }
}
