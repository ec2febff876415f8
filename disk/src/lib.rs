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
//! - Reading a table: one sector per MBR/EBR, at most
//!   [`table::MAX_LOGICAL_PARTITIONS`] EBRs, a GPT entry array of at most
//!   [`table::MAX_GPT_ARRAY_BYTES`].
//! - An open file system: see [`FileSystem::open`].
//! - A directory listed: one block or cluster at a time, entries handed to
//!   the caller one by one ([`FileSystem::read_dir`]); FAT stops at 65536
//!   entries, ext2/3/4 at the directory's own size.
//! - A file read: the caller's buffer; FAT chains and ext4 extent trees are
//!   followed for at most the volume's size.
//! - A path: at most [`fs::MAX_PATH_BYTES`], at most 40 symlinks (ext2/3/4;
//!   FAT has none).

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

pub use fs::{Entry, EntryKind, File, FileSystem, FsError, FsKind};
pub use location::{Location, LocationError};
pub use slice::{Slice, SliceError};
pub use table::{Partition, PartitionKind, Scheme, Table, TableError};
