//! A file system inside a partition, whichever it is: the one entry point
//! the CLI and the firmware use, and the file-system layer's error.
//!
//! The kind is recognised from the bytes (the ext2/3/4 superblock magic,
//! else a valid FAT boot sector), never from the partition type, as
//! `blkid` and the kernel do.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use core::fmt;

use qcow2_reader::BlockRead;

use crate::ext4::{self, Ext4Volume};
use crate::fat::{Fat, FatFile, Node};

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest symlink target read, in bytes (Linux's `PATH_MAX`; the kernel
/// reads at most one 4 KiB page of a target). A longer one is refused as
/// [`FsError::SymlinkTooLong`] before it is read.
pub const MAX_SYMLINK_BYTES: u64 = 4096;

/// What an open file system may cost, chosen by the caller: the counts a
/// volume's bytes announce and this crate would otherwise trust. A volume
/// over a limit is refused with [`FsError::ExtOverLimit`] or
/// [`FsError::DirectoryTooLarge`], naming the field, its value and the
/// limit.
///
/// A partition's size is no bound on its own: a QCOW2 image claims a
/// 4 TiB disk in a few hundred KiB, so the counts are also checked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most ext2/3/4 block groups accepted. `ext4-view` keeps 16 bytes per
    /// group and reads every group descriptor (32 or 64 bytes) at open.
    /// Default 2^20: 16 MiB kept; a 128 TiB volume with 4 KiB blocks
    /// (8 TiB with 1 KiB blocks).
    pub max_block_groups: u32,
    /// Largest ext2/3/4 directory searched or listed, in bytes (its
    /// `i_size`): the blocks read to find a name or list it. Default
    /// 1 GiB (millions of entries).
    pub max_directory_bytes: u64,
    /// Largest ext3/4 journal replayed, in bytes (the journal inode's
    /// `i_size`), checked only when the volume needs recovery: `ext4-view`
    /// then reads the journal at open and keeps one map entry per
    /// journalled block. Default 1 GiB, the largest journal `mke2fs` makes
    /// by default.
    pub max_journal_bytes: u64,
}

impl Limits {
    /// The default limits: 2^20 block groups, 1 GiB directories, 1 GiB journals.
    pub const DEFAULT: Self = Self {
        max_block_groups: 1 << 20,
        max_directory_bytes: 1 << 30,
        max_journal_bytes: 1 << 30,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The kinds of file system read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4.
    Ext,
    /// FAT12, FAT16 or FAT32.
    Fat,
}

impl FsKind {
    /// The family's name (`ext` or `vfat`); an open file system names its
    /// version ([`FileSystem::name`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ext => "ext",
            Self::Fat => "vfat",
        }
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

impl EntryKind {
    /// `file`, `directory`, `symlink` or `other`.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Other => "other",
        }
    }
}

/// One entry of a directory, or what a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name in its directory (`/` for the root).
    pub name: String,
    /// What it is (a symlink is not followed).
    pub kind: EntryKind,
    /// Size in bytes (a symlink's: the length of its target).
    pub size: u64,
    /// The mode as `stat` gives it: type and permission bits. On FAT it is
    /// what Linux's `vfat` shows by default (0755, write bits removed for
    /// read-only files).
    pub mode: u32,
    /// Modification time in seconds since 1970; `None` on ext2/3/4, whose
    /// reader (`ext4-view` 0.9) does not give inode times.
    pub mtime: Option<i64>,
}

/// An open file system.
pub struct FileSystem<D> {
    volume: Volume<D>,
}

enum Volume<D> {
    Ext(Ext4Volume),
    Fat(Fat<D>),
}

/// The bytes of a file, read front to back.
pub struct File<'a, D> {
    inner: FileInner<'a, D>,
}

enum FileInner<'a, D> {
    Ext(Box<ext4_view::File>),
    Fat(FatFile<'a, D>),
}

/// Which kind of file system `disk` holds, if any known one.
pub fn detect<D: BlockRead>(disk: &D) -> Result<Option<FsKind>, FsError> {
    if ext4::has_magic(disk)? {
        return Ok(Some(FsKind::Ext));
    }
    let size = disk.size().map_err(|error| FsError::read(0, error))?;
    if size >= 512 {
        let mut sector = [0u8; 512];
        read_fs(disk, 0, &mut sector)?;
        // A valid boot sector, or one that says it is FAT (whose open then
        // names the bad field instead of "no file system").
        if crate::fat::boot::Geometry::parse(&sector, size).is_ok()
            || crate::fat::boot::names_fat(&sector)
        {
            return Ok(Some(FsKind::Fat));
        }
    }
    Ok(None)
}

impl<D: BlockRead + 'static> FileSystem<D> {
    /// Opens the file system on `disk` (a partition, or a whole disk), with
    /// the [`Limits::DEFAULT`] limits.
    pub fn open(disk: D) -> Result<Self, FsError> {
        Self::open_with(disk, &Limits::DEFAULT)
    }

    /// Opens the file system on `disk` within `limits`.
    ///
    /// Memory: ext2/3/4 keeps `ext4-view`'s block cache (256 KiB of blocks,
    /// 512 KiB with 64 KiB blocks, the largest accepted, plus a 32 or
    /// 64 KiB read buffer), its block group
    /// descriptors (16 bytes per group, at most
    /// [`Limits::max_block_groups`], and the descriptor table within the
    /// partition) and its journal map (one entry per journalled block, read
    /// only when the volume needs recovery, of a journal of at most
    /// [`Limits::max_journal_bytes`]); FAT keeps a 4 KiB FAT window.
    pub fn open_with(disk: D, limits: &Limits) -> Result<Self, FsError> {
        let volume = match detect(&disk)? {
            Some(FsKind::Ext) => Volume::Ext(Ext4Volume::open(disk, limits)?),
            Some(FsKind::Fat) => Volume::Fat(Fat::open(disk)?),
            None => return Err(FsError::Unknown),
        };
        Ok(Self { volume })
    }
}

impl<D: BlockRead> FileSystem<D> {
    /// The kind of file system.
    pub fn kind(&self) -> FsKind {
        match self.volume {
            Volume::Ext(_) => FsKind::Ext,
            Volume::Fat(_) => FsKind::Fat,
        }
    }

    /// The name `blkid` gives the file system: `ext2`, `ext3`, `ext4` or `vfat`.
    pub fn name(&self) -> &'static str {
        match &self.volume {
            Volume::Ext(volume) => volume.name(),
            Volume::Fat(_) => "vfat",
        }
    }

    /// The volume label (empty if none).
    pub fn label(&self) -> Result<String, FsError> {
        match &self.volume {
            Volume::Ext(volume) => Ok(volume.label()),
            Volume::Fat(fat) => fat.label(),
        }
    }

    /// What `path` names, following symlinks (like `stat`).
    pub fn metadata(&self, path: &str) -> Result<Entry, FsError> {
        match &self.volume {
            Volume::Ext(volume) => volume.metadata(path),
            Volume::Fat(fat) => Ok(fat_entry(&fat.lookup(path)?)),
        }
    }

    /// Calls `visit` with each entry of the directory `path` (symlinks in
    /// the path followed), without `.` and `..`, in directory order.
    ///
    /// Memory: one directory block (ext) or cluster (FAT) and one entry at
    /// a time; the caller decides what to keep.
    pub fn read_dir(&self, path: &str, visit: &mut dyn FnMut(Entry)) -> Result<(), FsError> {
        match &self.volume {
            Volume::Ext(volume) => volume.read_dir(path, visit),
            Volume::Fat(fat) => {
                let dir = fat.node_dir(&fat.lookup(path)?)?;
                fat.walk_dir(dir, &mut |entry| {
                    visit(fat_entry(&Node::Entry(entry)));
                    false
                })?;
                Ok(())
            }
        }
    }

    /// Opens the file `path` for reading, following symlinks.
    pub fn open_file(&self, path: &str) -> Result<File<'_, D>, FsError> {
        let inner = match &self.volume {
            Volume::Ext(volume) => FileInner::Ext(Box::new(volume.open_file(path)?)),
            Volume::Fat(fat) => match fat.lookup(path)? {
                Node::Root => return Err(FsError::IsADirectory),
                Node::Entry(entry) => FileInner::Fat(fat.file(&entry)?),
            },
        };
        Ok(File { inner })
    }
}

impl<D: BlockRead> File<'_, D> {
    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        match &self.inner {
            FileInner::Ext(file) => file.metadata().len(),
            FileInner::Fat(file) => file.len(),
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves to byte `position` of the file (past the end is allowed).
    ///
    /// Work: ext2/3/4 walks the file's block map from the start
    /// (`ext4-view`'s rule); FAT follows the chain forward from the
    /// current cluster, or from the first one when moving back.
    pub fn seek_to(&mut self, position: u64) -> Result<(), FsError> {
        match &mut self.inner {
            FileInner::Ext(file) => file.seek_to(position).map_err(FsError::from_ext4),
            FileInner::Fat(file) => file.seek_to(position),
        }
    }

    /// Reads the next bytes into `buf`; 0 means the end of the file.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        match &mut self.inner {
            FileInner::Ext(file) => file.read_bytes(buf).map_err(FsError::from_ext4),
            FileInner::Fat(file) => file.read(buf),
        }
    }
}

fn fat_entry(node: &Node) -> Entry {
    match node {
        Node::Root => Entry {
            name: "/".into(),
            kind: EntryKind::Directory,
            size: 0,
            mode: 0o040_755,
            mtime: None,
        },
        Node::Entry(entry) => {
            let (kind, type_bits) = if entry.is_dir() {
                (EntryKind::Directory, 0o040_000)
            } else {
                (EntryKind::File, 0o100_000)
            };
            let permissions = if entry.is_read_only() { 0o555 } else { 0o755 };
            Entry {
                name: entry.name.clone(),
                kind,
                size: if entry.is_dir() {
                    0
                } else {
                    u64::from(entry.size)
                },
                mode: type_bits | permissions,
                mtime: Some(entry.mtime),
            }
        }
    }
}

/// A part of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component<'a> {
    /// `.`
    Current,
    /// `..`
    Parent,
    /// Any other name.
    Name(&'a str),
}

/// The parts of an absolute path; empty parts (`//`) are skipped as the kernel does.
pub fn components(path: &str) -> Result<impl Iterator<Item = Component<'_>>, FsError> {
    if !path.starts_with('/') {
        return Err(FsError::RelativePath);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(FsError::PathTooLong);
    }
    Ok(path
        .split('/')
        .filter(|part| !part.is_empty())
        .map(|part| match part {
            "." => Component::Current,
            ".." => Component::Parent,
            name => Component::Name(name),
        }))
}

/// Reads `buf.len()` bytes at `offset` of a file system's disk.
pub(crate) fn read_fs<D: BlockRead>(disk: &D, offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
    disk.read_at(offset, buf)
        .map_err(|error| FsError::read(offset, error))
}

/// A corrupt FAT structure, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatCorrupt {
    /// A boot sector field has an impossible value.
    BootSector {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A FAT entry points outside the data clusters (or is free inside a chain).
    FatEntry {
        /// The cluster whose entry it is.
        cluster: u32,
        /// The entry's value.
        value: u32,
    },
    /// A FAT entry lies beyond the FAT.
    FatTooShort {
        /// The FAT byte asked for.
        offset: u64,
    },
    /// A directory entry's first cluster is not a data cluster.
    FirstCluster {
        /// The cluster number.
        cluster: u32,
    },
    /// A file's chain ends before its size is reached.
    ChainTooShort {
        /// The chain's first cluster.
        first_cluster: u32,
        /// Clusters in the chain.
        clusters: u32,
        /// The size in the directory entry.
        size: u64,
    },
    /// A chain is longer than the volume has clusters.
    ChainLoop {
        /// The chain's first cluster.
        first_cluster: u32,
    },
    /// A directory has more than 65536 entries.
    DirectoryTooLong {
        /// Byte of the directory piece where the limit was passed.
        offset: u64,
    },
}

impl fmt::Display for FatCorrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BootSector { field, value } => {
                write!(f, "FAT boot sector: invalid {field} {value}")
            }
            Self::FatEntry { cluster, value } => write!(
                f,
                "FAT entry of cluster {cluster} is {value:#x}, not a data cluster or end of chain"
            ),
            Self::FatTooShort { offset } => write!(f, "FAT entry at FAT byte {offset} is beyond the FAT"),
            Self::FirstCluster { cluster } => {
                write!(f, "directory entry points at cluster {cluster}, not a data cluster")
            }
            Self::ChainTooShort { first_cluster, clusters, size } => write!(
                f,
                "cluster chain from cluster {first_cluster} ends after {clusters} clusters, short of the file's {size} bytes"
            ),
            Self::ChainLoop { first_cluster } => write!(
                f,
                "cluster chain from cluster {first_cluster} is longer than the volume (a loop)"
            ),
            Self::DirectoryTooLong { offset } => write!(
                f,
                "directory has more than 65536 entries (at byte {offset:#x})"
            ),
        }
    }
}

/// Why a file system operation failed.
#[derive(Debug)]
pub enum FsError {
    /// No known file system on the partition.
    Unknown,
    /// The path names nothing.
    NotFound,
    /// A part of the path that must be a directory is not.
    NotADirectory,
    /// The path names a directory where a file was wanted.
    IsADirectory,
    /// The path names a device, FIFO or socket.
    NotAFile,
    /// The path does not start with `/`.
    RelativePath,
    /// The path is longer than [`MAX_PATH_BYTES`] (also after following symlinks).
    PathTooLong,
    /// More than 40 symlinks were followed.
    TooManySymlinks,
    /// The disk under the file system failed.
    Read {
        /// Byte offset in the partition.
        offset: u64,
        /// The disk's message.
        message: String,
    },
    /// A FAT structure is corrupt.
    Fat(FatCorrupt),
    /// The ext2/3/4 superblock does not fit the partition.
    ExtTooLarge {
        /// The superblock's block count.
        blocks: u64,
        /// Its block size.
        block_size: u64,
        /// The partition's size.
        partition_bytes: u64,
    },
    /// A count an ext2/3/4 superblock announces is over a limit.
    ExtOverLimit {
        /// The count, and the fields it comes from.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
        /// What sets the limit.
        bound: &'static str,
    },
    /// A symlink's target is longer than [`MAX_SYMLINK_BYTES`] (its inode's `i_size`).
    SymlinkTooLong {
        /// The symlink, with the symlinks before it resolved.
        path: String,
        /// The target's length its inode claims.
        size: u64,
    },
    /// A directory is larger than [`Limits::max_directory_bytes`] (its inode's `i_size`).
    DirectoryTooLarge {
        /// The directory, with the symlinks before it resolved.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An ext2/3/4 superblock field has a value `ext4-view` cannot take.
    ExtSuperblock {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// `ext4-view` refused the file system (corrupt or unsupported), with its reason.
    Ext(Box<ext4_view::Ext4Error>),
}

impl FsError {
    /// A failed read of the disk at `offset`.
    pub fn read(offset: u64, error: impl fmt::Display) -> Self {
        Self::Read {
            offset,
            message: error.to_string(),
        }
    }

    /// `ext4-view`'s error, with the kinds every file system shares mapped to ours.
    pub fn from_ext4(error: ext4_view::Ext4Error) -> Self {
        use ext4_view::Ext4Error as E;
        match error {
            E::NotFound => Self::NotFound,
            E::NotADirectory => Self::NotADirectory,
            E::IsADirectory => Self::IsADirectory,
            E::IsASpecialFile => Self::NotAFile,
            E::NotAbsolute => Self::RelativePath,
            E::PathTooLong => Self::PathTooLong,
            E::TooManySymlinks => Self::TooManySymlinks,
            other => Self::Ext(Box::new(other)),
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => write!(
                f,
                "no supported file system (no ext2/3/4 superblock, no valid FAT boot sector)"
            ),
            Self::NotFound => write!(f, "no such file or directory"),
            Self::NotADirectory => write!(f, "not a directory"),
            Self::IsADirectory => write!(f, "is a directory"),
            Self::NotAFile => write!(f, "not a regular file (device, FIFO or socket)"),
            Self::RelativePath => write!(f, "path must start with /"),
            Self::PathTooLong => write!(f, "path longer than {MAX_PATH_BYTES} bytes"),
            Self::TooManySymlinks => write!(f, "too many levels of symbolic links"),
            Self::Read { offset, message } => {
                write!(f, "cannot read byte {offset:#x} of the partition: {message}")
            }
            Self::Fat(corrupt) => write!(f, "corrupt FAT file system: {corrupt}"),
            Self::ExtTooLarge { blocks, block_size, partition_bytes } => write!(
                f,
                "corrupt ext2/3/4 superblock: {blocks} blocks of {block_size} bytes do not fit the partition's {partition_bytes} bytes"
            ),
            Self::ExtOverLimit { field, value, limit, bound } => write!(
                f,
                "ext2/3/4 superblock: {field} is {value}, over the limit of {limit} ({bound})"
            ),
            Self::SymlinkTooLong { path, size } => write!(
                f,
                "ext2/3/4 symlink {path}: target length (i_size) {size} bytes is over the limit of {MAX_SYMLINK_BYTES} (PATH_MAX)"
            ),
            Self::DirectoryTooLarge { path, size, limit } => write!(
                f,
                "ext2/3/4 directory {path}: size (i_size) {size} bytes is over the limit of {limit} (the caller's Limits::max_directory_bytes)"
            ),
            Self::ExtSuperblock { field, value } => {
                write!(f, "corrupt ext2/3/4 superblock: invalid {field} {value}")
            }
            Self::Ext(error) => write!(f, "ext2/3/4: {error}"),
        }
    }
}

impl core::error::Error for FsError {}
