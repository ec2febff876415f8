//! ext2/3/4 through `ext4-view`, the no_std reader of the field: this file
//! only connects it to `BlockRead` and maps its types to the crate's.
//!
//! `ext4-view` (1.0) sizes some allocations from the volume's bytes before
//! checking them; each is bounded here first:
//!
//! - at load, one 16-byte entry per block group, read in full: the block
//!   count must fit the partition, and the group count the caller's
//!   [`Limits::max_block_groups`] and the partition (for the descriptor
//!   table);
//! - a symlink's target, read whole into a buffer of the size its inode
//!   claims: paths are walked here one name at a time, so `ext4-view`
//!   never follows a symlink itself, and a target over
//!   [`MAX_SYMLINK_BYTES`] is refused before it is read;
//! - directories, searched and listed block by block up to their size
//!   (a sparse one can claim 2^32 blocks): at most
//!   [`Limits::max_directory_bytes`].
//!
//! Extent trees are walked by `ext4-view` with its own bounds (depth at
//! most 5, each child one level below its parent, nodes within a block);
//! the journal map is one entry per journalled block of a committed
//! transaction, read only when the volume needs recovery, from a journal
//! whose size is checked first against [`Limits::max_journal_bytes`].
//! Block sizes over 64 KiB (which `ext4-view` takes up to 2 GiB, caching
//! 8 blocks or more) are refused as Linux refuses them.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use ext4_view::{Ext4, Ext4Read, FileType, Metadata};
use qcow2_reader::BlockRead;

use crate::fs::{
    components, read_fs, Entry, EntryKind, FsError, Limits, MAX_PATH_BYTES, MAX_SYMLINK_BYTES,
};

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
    limits: Limits,
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

/// Largest `s_log_block_size` read: 64 KiB blocks, as Linux.
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// `s_first_data_block` within the superblock.
const FIRST_DATA_BLOCK_AT: usize = 0x14;
/// `s_feature_incompat`'s 64bit flag: descriptors of `s_desc_size` bytes, not 32.
const INCOMPAT_64BIT: u32 = 0x80;

/// Symlinks followed in one path at most (Linux's and `ext4-view`'s 40).
const MAX_SYMLINKS: usize = 40;
/// Names looked up in one path walk at most: `ext4-view`'s own bound on the
/// components it resolves, so a walk here costs at most about
/// `MAX_LOOKUPS`² / 2 directory lookups (each call to `ext4-view` walks
/// from the root again).
const MAX_LOOKUPS: usize = 1000;

impl Ext4Volume {
    /// Checks the superblock's size against the partition and `limits`,
    /// then loads it with `ext4-view`.
    pub fn open<D: BlockRead + 'static>(disk: D, limits: &Limits) -> Result<Self, FsError> {
        let partition_bytes = disk.size().map_err(|error| FsError::read(0, error))?;
        let mut superblock = [0u8; 1024];
        read_fs(&disk, SUPERBLOCK_OFFSET, &mut superblock)?;
        check_superblock(&superblock, partition_bytes, limits)?;
        check_journal(&disk, &superblock, limits)?;
        let name = version_name(&superblock);
        let fs = Ext4::load(Box::new(Source(disk))).map_err(FsError::from_ext4)?;
        let volume = Self {
            fs,
            name,
            limits: *limits,
        };
        // Every walk starts at the root: its size is bounded once here.
        volume.check_directory(b"/", &volume.stat(b"/")?)?;
        Ok(volume)
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
        let resolved = self.resolve(path)?;
        let metadata = self.stat(&resolved)?;
        let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let name = if name.is_empty() { "/" } else { name };
        Ok(entry(name.into(), &metadata))
    }

    /// Calls `visit` with each entry of the directory `path`, without `.` and `..`.
    pub fn read_dir(&self, path: &str, visit: &mut dyn FnMut(Entry)) -> Result<(), FsError> {
        let resolved = self.resolve(path)?;
        let dir = ext_path(&resolved)?;
        for dir_entry in self.fs.read_dir(dir).map_err(FsError::from_ext4)? {
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
        let resolved = self.resolve(path)?;
        self.fs
            .open(ext_path(&resolved)?)
            .map_err(FsError::from_ext4)
    }

    /// `path` with every symlink replaced by its target: a path `ext4-view`
    /// can be handed without following a symlink itself.
    ///
    /// `ext4-view` reads a symlink's whole target into a buffer of the
    /// size its inode claims (1 TiB if it says so) before any check, so
    /// the walk is done here, one name at a time: each prefix handed to
    /// `ext4-view` holds no symlink, and a symlink's size is checked
    /// against [`MAX_SYMLINK_BYTES`] before its target is read. Each
    /// directory passed through is checked against the directory limit
    /// before it is searched.
    fn resolve(&self, path: &str) -> Result<Vec<u8>, FsError> {
        // Absolute and at most MAX_PATH_BYTES.
        let _absolute_and_short = components(path)?;
        let mut rest: Vec<u8> = path.as_bytes().to_vec();
        let mut at = 0;
        // The symlink-free path walked so far; empty for the root.
        let mut resolved: Vec<u8> = Vec::new();
        let mut symlinks = 0;
        let mut lookups = 0;
        loop {
            while rest.get(at) == Some(&b'/') {
                at += 1;
            }
            if at == rest.len() {
                break;
            }
            let end = rest[at..]
                .iter()
                .position(|&byte| byte == b'/')
                .map_or(rest.len(), |offset| at + offset);
            let name = &rest[at..end];
            match name {
                b"." => {}
                b".." => {
                    // `resolved` holds no symlink, so its parent is lexical.
                    let parent = resolved.iter().rposition(|&byte| byte == b'/').unwrap_or(0);
                    resolved.truncate(parent);
                }
                _ => {
                    lookups += 1;
                    if lookups > MAX_LOOKUPS {
                        return Err(FsError::PathTooLong);
                    }
                    let mut candidate = Vec::with_capacity(resolved.len() + 1 + name.len());
                    candidate.extend_from_slice(&resolved);
                    candidate.push(b'/');
                    candidate.extend_from_slice(name);
                    let metadata = self.lstat(&candidate)?;
                    if metadata.is_symlink() {
                        symlinks += 1;
                        if symlinks > MAX_SYMLINKS {
                            return Err(FsError::TooManySymlinks);
                        }
                        let target = self.read_link(&candidate, &metadata)?;
                        let mut next = Vec::with_capacity(target.len() + rest.len() - end);
                        next.extend_from_slice(&target);
                        next.extend_from_slice(&rest[end..]);
                        if next.len() > MAX_PATH_BYTES {
                            return Err(FsError::PathTooLong);
                        }
                        if target.first() == Some(&b'/') {
                            resolved.clear();
                        }
                        rest = next;
                        at = 0;
                        continue;
                    }
                    if metadata.is_dir() {
                        self.check_directory(&candidate, &metadata)?;
                    } else if end < rest.len() {
                        // A name or a trailing `/` follows a non-directory.
                        return Err(FsError::NotADirectory);
                    }
                    resolved = candidate;
                }
            }
            at = end;
        }
        if resolved.is_empty() {
            resolved.push(b'/');
        }
        Ok(resolved)
    }

    /// The target of the symlink at the symlink-free `path`, its size
    /// checked before `ext4-view` allocates it.
    fn read_link(&self, path: &[u8], metadata: &Metadata) -> Result<Vec<u8>, FsError> {
        if metadata.len() > MAX_SYMLINK_BYTES {
            return Err(FsError::SymlinkTooLong {
                path: String::from_utf8_lossy(path).into_owned(),
                size: metadata.len(),
            });
        }
        let target = self
            .fs
            .read_link(ext_path(path)?)
            .map_err(FsError::from_ext4)?;
        Ok(target.as_ref().to_vec())
    }

    /// Refuses a directory larger than the caller's limit, before it is searched or listed.
    fn check_directory(&self, path: &[u8], metadata: &Metadata) -> Result<(), FsError> {
        if metadata.len() > self.limits.max_directory_bytes {
            return Err(FsError::DirectoryTooLarge {
                path: String::from_utf8_lossy(path).into_owned(),
                size: metadata.len(),
                limit: self.limits.max_directory_bytes,
            });
        }
        Ok(())
    }

    /// Metadata of the symlink-free `path` (nothing for `ext4-view` to follow).
    fn stat(&self, path: &[u8]) -> Result<Metadata, FsError> {
        self.fs
            .metadata(ext_path(path)?)
            .map_err(FsError::from_ext4)
    }

    /// Metadata of `path`, whose last name is not followed; the names
    /// before it are directories already walked.
    fn lstat(&self, path: &[u8]) -> Result<Metadata, FsError> {
        self.fs
            .symlink_metadata(ext_path(path)?)
            .map_err(FsError::from_ext4)
    }
}

/// `bytes` as `ext4-view` takes a path (components of at most 255 bytes, no NUL).
fn ext_path(bytes: &[u8]) -> Result<ext4_view::Path<'_>, FsError> {
    ext4_view::Path::try_from(bytes)
        .map_err(|_| FsError::from_ext4(ext4_view::Ext4Error::MalformedPath))
}

/// Checks the journal's size when `ext4-view` will replay it (a journal
/// that needs recovery): it walks every block of the journal inode's size
/// and keeps one map entry per journalled block, so a journal inode
/// claiming 2^32 blocks, all mapped to the same few, costs hours and a map
/// without bound. Reads the journal inode's `i_size` the way `ext4-view`
/// finds it; whatever cannot be read is left to `ext4-view` to refuse.
fn check_journal<D: BlockRead>(
    disk: &D,
    superblock: &[u8],
    limits: &Limits,
) -> Result<(), FsError> {
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    const INCOMPAT_RECOVER: u32 = 0x4;
    if u32_at(superblock, 0x5c) & COMPAT_HAS_JOURNAL == 0
        || u32_at(superblock, 0x60) & INCOMPAT_RECOVER == 0
    {
        return Ok(());
    }
    let inode = u64::from(u32_at(superblock, 0xe0));
    let inodes_per_group = u64::from(u32_at(superblock, 0x28));
    let inode_size = u64::from(u16::from_le_bytes([superblock[0x58], superblock[0x59]]));
    if inode == 0 || inodes_per_group == 0 {
        return Ok(());
    }
    // Checked before: at most 64 KiB.
    let block_size = 1024u64 << u32_at(superblock, 0x18);
    let wide = u32_at(superblock, 0x60) & INCOMPAT_64BIT != 0;
    let descriptor_bytes = if wide {
        u64::from(u16::from_le_bytes([superblock[0xfe], superblock[0xff]]))
    } else {
        32
    };
    // ext4-view's rule: the descriptors start in the block after the superblock's.
    let table = if block_size == 1024 {
        2 * 1024
    } else {
        block_size
    };
    let group = (inode - 1) / inodes_per_group;
    let index = (inode - 1) % inodes_per_group;
    let Some(descriptor_at) = group
        .checked_mul(descriptor_bytes)
        .and_then(|offset| offset.checked_add(table))
    else {
        return Ok(());
    };
    let mut descriptor = [0u8; 0x2c];
    read_fs(disk, descriptor_at, &mut descriptor)?;
    let mut inode_table = u64::from(u32_at(&descriptor, 0x08));
    if wide && descriptor_bytes >= 64 {
        inode_table |= u64::from(u32_at(&descriptor, 0x28)) << 32;
    }
    let Some(inode_at) = inode_table
        .checked_mul(block_size)
        .and_then(|start| start.checked_add(index.checked_mul(inode_size)?))
    else {
        return Ok(());
    };
    let mut fields = [0u8; 0x70];
    read_fs(disk, inode_at, &mut fields)?;
    let bytes = u64::from(u32_at(&fields, 0x04)) | u64::from(u32_at(&fields, 0x6c)) << 32;
    if bytes > limits.max_journal_bytes {
        return Err(FsError::ExtOverLimit {
            field: "journal bytes (the journal inode's i_size; the volume needs recovery)",
            value: bytes,
            limit: limits.max_journal_bytes,
            bound: "the caller's Limits::max_journal_bytes",
        });
    }
    Ok(())
}

/// Checks every superblock field that `ext4-view` sizes an allocation or a
/// loop from at load time, before it sees them.
fn check_superblock(
    superblock: &[u8],
    partition_bytes: u64,
    limits: &Limits,
) -> Result<(), FsError> {
    // ext4-view 0.9 divided by s_blocks_per_group unchecked (found by the
    // `disk` fuzz target); 1.0 refuses it too, this names the field.
    let blocks_per_group = u32_at(superblock, 0x20);
    if blocks_per_group == 0 {
        return Err(FsError::ExtSuperblock {
            field: "blocks per group",
            value: 0,
        });
    }
    // ext4-view takes any block size up to 2 GiB (found by the
    // `disk_sparse` fuzz target) and keeps 8 to 256 blocks of it in its
    // cache: a 4 MiB block size cost 32 MiB. Linux reads 1 KiB to 64 KiB
    // (EXT4_MAX_BLOCK_LOG_SIZE).
    let log_block_size = u32_at(superblock, 0x18);
    if log_block_size > MAX_LOG_BLOCK_SIZE {
        return Err(FsError::ExtSuperblock {
            field: "log block size (s_log_block_size; Linux reads at most 6, 64 KiB blocks)",
            value: log_block_size.into(),
        });
    }
    let block_size = 1024u64 << log_block_size;
    // ext4-view takes s_blocks_count_hi whether or not the 64bit feature
    // is set (and sizes its descriptor table from the result; found by
    // the `disk` fuzz target), so the bounds must count it too. mkfs
    // leaves the field zero without 64bit.
    let blocks = u64::from(u32_at(superblock, 0x04)) | u64::from(u32_at(superblock, 0x150)) << 32;
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
    // ext4-view reads every block group descriptor at load time into a
    // vector of one 16-byte entry per group, sized up front: 64 GiB for
    // 2^32 groups, which a partition of any claimed size can announce
    // (s_blocks_per_group 1). ext4-view refuses a first data block past
    // the end itself.
    let first_data_block = u64::from(u32_at(superblock, FIRST_DATA_BLOCK_AT));
    let Some(data_blocks) = blocks.checked_sub(first_data_block) else {
        return Ok(());
    };
    let groups = data_blocks.div_ceil(u64::from(blocks_per_group));
    if groups > u64::from(limits.max_block_groups) {
        return Err(FsError::ExtOverLimit {
            field: "block groups (s_blocks_count / s_blocks_per_group)",
            value: groups,
            limit: u64::from(limits.max_block_groups),
            bound: "the caller's Limits::max_block_groups",
        });
    }
    // The descriptor table follows the superblock's block; it must lie
    // within the partition, as ext4-view reads all of it.
    let descriptor_bytes = if u32_at(superblock, 0x60) & INCOMPAT_64BIT != 0 {
        u64::from(u16::from_le_bytes([superblock[0xfe], superblock[0xff]]))
    } else {
        32
    };
    let table_start = (first_data_block + 1) * block_size;
    let room = partition_bytes.saturating_sub(table_start);
    let table_bytes = groups * descriptor_bytes;
    if table_bytes > room {
        return Err(FsError::ExtOverLimit {
            field: "group descriptor table bytes",
            value: table_bytes,
            limit: room,
            bound: "the partition's bytes after the superblock",
        });
    }
    Ok(())
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
