//! Partition tables and read-only file systems over any
//! [`qcow2_reader::BlockRead`]: what lets a bootloader or a tool find a file
//! inside a disk image without knowing it is one.
//!
//! ```text
//! FileSystem (ext2/3/4 via ext4-view, FAT12/16/32 here)  a path -> bytes
//!     Slice (a partition as a disk)
//! Table (GPT, MBR, none)                                 a number -> a byte range
//!     any BlockRead: a qcow2 Image, a file, a slice, a virtio disk
//! ```
//!
//! ```
//! use qcow2_disk::{FileSystem, Table};
//!
//! fn read_config(disk: std::sync::Arc<Vec<u8>>) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
//!     let table = Table::read(&disk)?;
//!     let partition = table.get::<qcow2_reader::OutOfBounds>(1)?;
//!     let fs = FileSystem::open(partition.slice(disk.clone()))?;
//!     let mut file = fs.open_file("/etc/hostname")?;
//!     let mut bytes = vec![0; file.len() as usize];
//!     let mut done = 0;
//!     while done < bytes.len() {
//!         match file.read(&mut bytes[done..])? {
//!             0 => break,
//!             n => done += n,
//!         }
//!     }
//!     Ok(bytes)
//! }
//! ```
//!
//! # Bounds
//!
//! Every count read from the disk that sizes an allocation or a walk is
//! checked before it is used, against the disk's size, a fixed limit, or
//! the caller's [`Limits`] ([`FileSystem::open_with`]); a partition's size
//! alone bounds nothing, as a QCOW2 image claims terabytes for free. What
//! is over a limit fails as an [`FsError`] naming the field, its value and
//! the limit.
//!
//! - Reading a table: one sector per MBR/EBR, at most
//!   [`table::MAX_LOGICAL_PARTITIONS`] EBRs, a GPT entry array of at most
//!   [`table::MAX_GPT_ARRAY_BYTES`].
//! - An open file system: see [`FileSystem::open_with`]; ext2/3/4 block
//!   groups at most [`Limits::max_block_groups`] (default 2^20, 16 bytes
//!   each) and a descriptor table within the partition.
//! - A directory listed: one block or cluster at a time, entries handed to
//!   the caller one by one ([`FileSystem::read_dir`]); FAT stops at 65536
//!   entries, ext2/3/4 at the directory's own size, which is at most
//!   [`Limits::max_directory_bytes`] (default 1 GiB) for every directory
//!   listed or searched.
//! - A file read: the caller's buffer; FAT chains are followed for at most
//!   the volume's cluster count, ext4 extent trees by `ext4-view` 1.0
//!   (depth at most 5, each child one level down).
//! - A path: at most [`fs::MAX_PATH_BYTES`], at most 40 symlinks (ext2/3/4;
//!   FAT has none), each ext2/3/4 symlink target at most
//!   [`fs::MAX_SYMLINK_BYTES`], checked before it is read.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod ext4;
pub mod fat;
pub mod fs;
pub mod gpt;
pub mod location;
pub mod mbr;
pub mod slice;
pub mod table;

pub use fs::{Entry, EntryKind, File, FileSystem, FsError, FsKind, Limits};
pub use location::{Location, LocationError};
pub use slice::{Slice, SliceError};
pub use table::{Partition, PartitionKind, Scheme, Table, TableError};
