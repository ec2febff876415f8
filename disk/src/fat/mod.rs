//! A read-only FAT12/16/32 reader with long names, written for this crate.
//!
//! Why not a crate: `fatfs` 0.3 (the released version) builds without
//! `std` only through the `core_io` crate and needs `Read + Write + Seek`
//! of its own; `embedded-sdmmc` opens files by 8.3 name and takes 512-byte
//! block devices with its own fixed handle tables. Neither reads through
//! `BlockRead` with memory bounded by the caller's choice and errors that
//! name the structure, so this reader is small and owns only what a
//! read-only path lookup needs.
//!
//! Memory per open volume: the boot sector values and a 4 KiB FAT window.
//! Per directory listed: one cluster (at most 512 KiB) plus one long name.
//! Per file read: nothing beyond the caller's buffer. Work: at most 65536
//! entries per directory, and a cluster chain is followed for at most the
//! volume's number of clusters (a loop is reported, not followed forever).

pub mod boot;
pub mod chain;
pub mod dir;

use alloc::string::String;
use alloc::vec::Vec;

use qcow2_reader::BlockRead;

use crate::fs::{components, read_fs, Component, FatCorrupt, FsError};
use boot::Geometry;
use chain::{Next, Table};
use dir::{DirStart, FatEntry};

/// An open FAT volume over `disk`.
pub struct Fat<D> {
    disk: D,
    geometry: Geometry,
    table: Table,
}

/// What a path names on a FAT volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// The root directory.
    Root,
    /// A file or directory entry.
    Entry(FatEntry),
}

impl<D: BlockRead> Fat<D> {
    /// Opens the volume whose boot sector is at byte 0 of `disk`.
    pub fn open(disk: D) -> Result<Self, FsError> {
        let volume_bytes = disk.size().map_err(|error| FsError::read(0, error))?;
        let mut sector = [0u8; 512];
        read_fs(&disk, 0, &mut sector)?;
        let geometry = Geometry::parse(&sector, volume_bytes)?;
        Ok(Self {
            disk,
            geometry,
            table: Table::default(),
        })
    }

    /// The volume's layout.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The label: the root directory's volume entry, else the boot sector's
    /// (the order `blkid` uses); `NO NAME` means none.
    pub fn label(&self) -> Result<String, FsError> {
        let walk = self.walk_dir(self.geometry.root.into(), &mut |_| false)?;
        let label = walk
            .volume_label
            .unwrap_or_else(|| dir::short_name_raw(&self.geometry.boot_label));
        Ok(if label == "NO NAME" {
            String::new()
        } else {
            label
        })
    }

    /// What `path` names: `.` and `..` as the kernel reads them, names
    /// compared without case (long or 8.3), a trailing `/` only after a directory.
    pub fn lookup(&self, path: &str) -> Result<Node, FsError> {
        // The directories from the root to the current one, so `..` pops.
        let mut stack: Vec<FatEntry> = Vec::new();
        for part in components(path)? {
            match part {
                Component::Current => continue,
                Component::Parent => {
                    stack.pop();
                    continue;
                }
                Component::Name(name) => {
                    let dir = match stack.last() {
                        None => self.geometry.root.into(),
                        Some(entry) if entry.is_dir() => self.dir_start(entry)?,
                        Some(_) => return Err(FsError::NotADirectory),
                    };
                    let found = self.find(dir, name)?.ok_or(FsError::NotFound)?;
                    stack.push(found);
                }
            }
        }
        let node = stack.pop().map_or(Node::Root, Node::Entry);
        if path.ends_with('/') {
            if let Node::Entry(entry) = &node {
                if !entry.is_dir() {
                    return Err(FsError::NotADirectory);
                }
            }
        }
        Ok(node)
    }

    /// Where the entries of directory `entry` are (cluster 0 in a `..` means the root).
    pub fn dir_start(&self, entry: &FatEntry) -> Result<DirStart, FsError> {
        match entry.first_cluster {
            0 => Ok(self.geometry.root.into()),
            cluster => Ok(DirStart::Chain(self.check_cluster(cluster)?)),
        }
    }

    /// Where the entries of the directory `node` are.
    pub fn node_dir(&self, node: &Node) -> Result<DirStart, FsError> {
        match node {
            Node::Root => Ok(self.geometry.root.into()),
            Node::Entry(entry) if entry.is_dir() => self.dir_start(entry),
            Node::Entry(_) => Err(FsError::NotADirectory),
        }
    }

    fn find(&self, dir: DirStart, name: &str) -> Result<Option<FatEntry>, FsError> {
        let mut found = None;
        self.walk_dir(dir, &mut |entry| {
            let matches =
                eq_ignore_case(&entry.name, name) || eq_ignore_case(&entry.short_name, name);
            if matches {
                found = Some(entry);
            }
            matches
        })?;
        Ok(found)
    }

    /// `cluster` if it names a data cluster, else the corruption.
    fn check_cluster(&self, cluster: u32) -> Result<u32, FsError> {
        if self.geometry.is_data_cluster(cluster) {
            Ok(cluster)
        } else {
            Err(FsError::Fat(FatCorrupt::FirstCluster { cluster }))
        }
    }

    /// A reader of the file `entry`.
    pub fn file<'a>(&'a self, entry: &FatEntry) -> Result<FatFile<'a, D>, FsError> {
        if entry.is_dir() {
            return Err(FsError::IsADirectory);
        }
        let first = match (entry.first_cluster, entry.size) {
            (_, 0) => None,
            (cluster, _) => Some(self.check_cluster(cluster)?),
        };
        Ok(FatFile {
            fat: self,
            first,
            size: u64::from(entry.size),
            position: 0,
            cursor: first.map(|cluster| (0, cluster)),
        })
    }
}

/// Unicode-aware comparison without case, as `vfat` does with its default options.
fn eq_ignore_case(left: &str, right: &str) -> bool {
    left.chars()
        .flat_map(char::to_lowercase)
        .eq(right.chars().flat_map(char::to_lowercase))
}

/// A file on a FAT volume being read front to back (seeking back restarts the chain).
pub struct FatFile<'a, D> {
    fat: &'a Fat<D>,
    first: Option<u32>,
    size: u64,
    position: u64,
    /// The index in the chain and the number of the cluster holding `position`.
    cursor: Option<(u32, u32)>,
}

impl<D: BlockRead> FatFile<'_, D> {
    /// The file's size.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Moves to byte `position` (past the end is allowed: reads then give 0).
    /// Forward moves follow the chain from the current cluster, backward
    /// ones from the first.
    pub fn seek_to(&mut self, position: u64) -> Result<(), FsError> {
        let Some(first) = self.first else {
            self.position = position;
            return Ok(());
        };
        let cluster_bytes = u64::from(self.fat.geometry.cluster_bytes);
        // The last cluster that holds file bytes: seeking past it walks no further.
        let last_index = (self.size - 1) / cluster_bytes;
        let target = (position / cluster_bytes).min(last_index);
        let (mut index, mut cluster) = match self.cursor {
            Some((index, cluster)) if u64::from(index) <= target => (index, cluster),
            _ => (0, first),
        };
        while u64::from(index) < target {
            match self.next_cluster(index, cluster)? {
                Some(next) => {
                    index += 1;
                    cluster = next;
                }
                None => {
                    return Err(FsError::Fat(FatCorrupt::ChainTooShort {
                        first_cluster: first,
                        clusters: index + 1,
                        size: self.size,
                    }))
                }
            }
        }
        self.cursor = Some((index, cluster));
        self.position = position;
        Ok(())
    }

    /// Reads from the current position into `buf`, returning the bytes read
    /// (0 at the end). Physically contiguous clusters are read with one request.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, FsError> {
        let (Some(_), Some((mut index, mut cluster))) = (self.first, self.cursor) else {
            return Ok(0);
        };
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let geometry = &self.fat.geometry;
        let cluster_bytes = u64::from(geometry.cluster_bytes);
        let want = (buf.len() as u64).min(self.size - self.position);
        let within = self.position % cluster_bytes;
        let start = geometry.cluster_offset(cluster) + within;
        let mut run = cluster_bytes - within;
        // Extend the run over following clusters that are next on the disk too.
        while run < want {
            match self.next_cluster(index, cluster)? {
                Some(next) if next == cluster + 1 => {
                    index += 1;
                    cluster = next;
                    run += cluster_bytes;
                }
                _ => break,
            }
        }
        let len = run.min(want);
        read_fs(&self.fat.disk, start, &mut buf[..len as usize])?;
        self.position += len;
        if self.position < self.size && self.position.is_multiple_of(cluster_bytes) {
            match self.next_cluster(index, cluster)? {
                Some(next) => {
                    index += 1;
                    cluster = next;
                }
                None => {
                    return Err(FsError::Fat(FatCorrupt::ChainTooShort {
                        first_cluster: self.first.unwrap_or(0),
                        clusters: index + 1,
                        size: self.size,
                    }))
                }
            }
        }
        self.cursor = Some((index, cluster));
        Ok(len as usize)
    }

    /// The cluster after `cluster`, which is number `index` in the chain;
    /// a chain longer than the volume's clusters is a loop.
    fn next_cluster(&self, index: u32, cluster: u32) -> Result<Option<u32>, FsError> {
        if index >= self.fat.geometry.cluster_count {
            return Err(FsError::Fat(FatCorrupt::ChainLoop {
                first_cluster: self.first.unwrap_or(0),
            }));
        }
        match self
            .fat
            .table
            .next(&self.fat.disk, &self.fat.geometry, cluster)?
        {
            Next::Cluster(next) => Ok(Some(next)),
            Next::End => Ok(None),
        }
    }
}
