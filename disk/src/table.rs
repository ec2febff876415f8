//! Which partitions a disk has: the table on it (GPT, MBR, or none), read
//! the way Linux reads it, as a list of numbered byte ranges.
//!
//! Numbers are Linux's: a GPT partition is numbered by its slot in the entry
//! array (from 1); an MBR's primary slots are 1 to 4 and logical partitions
//! inside an extended one are numbered from 5 in the order of their chain.
//! A disk without a table is one file system, number 0 here (the whole disk).
//!
//! Sectors are 512 bytes: QEMU presents qcow2 disks with 512-byte logical
//! sectors unless told otherwise, and GPT positions are counted in them.
//!
//! Work and memory: one sector per MBR/EBR read; a GPT entry array of at
//! most [`MAX_GPT_ARRAY_BYTES`]; at most [`MAX_LOGICAL_PARTITIONS`] EBRs
//! followed, so a looping chain ends.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use qcow2_reader::BlockRead;

use crate::gpt::{self, GptProblem, GptSlot};
use crate::mbr;
use crate::slice::Slice;

/// Bytes per sector (logical block) of the disks read here.
pub const SECTOR_BYTES: u64 = 512;

/// Largest GPT partition entry array read (the number of entries times
/// their size); Linux's own limit is its largest allocation, several MiB.
pub const MAX_GPT_ARRAY_BYTES: usize = 1 << 20;

/// Most logical partitions followed in an extended partition's chain, as
/// Linux stops at its 256 minor numbers per disk.
pub const MAX_LOGICAL_PARTITIONS: u32 = 251;

/// The partition table of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// What kind of table the disk has.
    pub scheme: Scheme,
    /// Its partitions in number order; for [`Scheme::None`] one entry, number 0, the whole disk.
    pub partitions: Vec<Partition>,
    /// A problem that did not stop the table from being read (a damaged
    /// primary GPT that the backup replaced).
    pub warning: Option<GptProblem>,
}

/// The kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// GUID partition table, behind a protective MBR.
    Gpt,
    /// DOS/MBR partition table, with extended partitions.
    Mbr,
    /// No table: the disk holds one file system (or nothing known).
    None,
}

impl Scheme {
    /// The name `blkid` and `sfdisk` use (`gpt`, `dos`), or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gpt => "gpt",
            Self::Mbr => "dos",
            Self::None => "none",
        }
    }
}

/// One partition: a numbered byte range of the disk and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Linux's number (`/dev/sdaN`); 0 for a whole disk without a table.
    pub number: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the table says about it.
    pub kind: PartitionKind,
}

/// The type information a table keeps for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKind {
    /// A GPT entry.
    Gpt {
        /// Partition type GUID, as text.
        type_guid: String,
        /// Unique partition GUID, as text.
        unique_guid: String,
        /// The entry's name (UTF-16 in the table).
        name: String,
    },
    /// An MBR or EBR record.
    Mbr {
        /// The system (type) byte.
        type_byte: u8,
        /// Whether this is an extended partition (a container of logical ones).
        extended: bool,
    },
    /// The whole disk, which has no table.
    WholeDisk,
}

impl Partition {
    /// The partition as a disk of its own.
    pub fn slice<D: BlockRead>(&self, disk: D) -> Slice<D> {
        Slice::new(disk, self.start, self.len)
    }

    /// The type as `fdisk` names it, or the GUID/byte when it has no name here.
    pub fn type_name(&self) -> String {
        match &self.kind {
            PartitionKind::Gpt { type_guid, .. } => match gpt::type_name(type_guid) {
                Some(name) => name.into(),
                None => type_guid.clone(),
            },
            PartitionKind::Mbr { type_byte, .. } => match mbr::type_name(*type_byte) {
                Some(name) => name.into(),
                None => alloc::format!("{type_byte:#04x}"),
            },
            PartitionKind::WholeDisk => "whole disk".into(),
        }
    }

    /// Whether the partition only holds other partitions (an MBR extended partition).
    pub fn is_container(&self) -> bool {
        matches!(self.kind, PartitionKind::Mbr { extended: true, .. })
    }
}

/// Why a disk's partition table could not be read.
#[derive(Debug)]
pub enum TableError<E> {
    /// The disk failed to read a structure.
    Read {
        /// Which structure was being read.
        what: &'static str,
        /// Its byte offset on the disk.
        offset: u64,
        /// The disk's error.
        error: E,
    },
    /// Neither GPT header (with its entry array) is valid.
    Gpt {
        /// What is wrong with the primary GPT.
        primary: GptProblem,
        /// What is wrong with the backup GPT.
        backup: GptProblem,
    },
    /// No partition was named and the disk has more than one (or none).
    NotOneFileSystem {
        /// Partitions that may hold a file system (not extended containers).
        candidates: usize,
        /// The kind of table the disk has.
        scheme: Scheme,
    },
    /// No partition has this number.
    NoSuchPartition {
        /// The number asked for.
        number: u32,
        /// The kind of table the disk has.
        scheme: Scheme,
    },
}

impl<E: fmt::Display> fmt::Display for TableError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { what, offset, error } => {
                write!(f, "cannot read the {what} at byte {offset:#x}: {error}")
            }
            Self::Gpt { primary, backup } => write!(
                f,
                "no valid GPT: primary {primary}; backup {backup}"
            ),
            Self::NotOneFileSystem { candidates: 0, scheme } => write!(
                f,
                "the disk's {} partition table has no partitions",
                scheme.name()
            ),
            Self::NotOneFileSystem { candidates, .. } => write!(
                f,
                "the disk has {candidates} partitions; name one as N:/PATH (see qcow parts)"
            ),
            Self::NoSuchPartition { number, scheme: Scheme::None } => write!(
                f,
                "no partition {number}: the disk has no partition table (use /PATH for its file system)"
            ),
            Self::NoSuchPartition { number, scheme } => write!(
                f,
                "no partition {number} in the disk's {} partition table",
                scheme.name()
            ),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for TableError<E> {}

/// Reads `buf.len()` bytes at `offset`, naming the structure if the disk fails.
pub(crate) fn read<D: BlockRead>(
    disk: &D,
    what: &'static str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), TableError<D::Error>> {
    disk.read_at(offset, buf).map_err(|error| TableError::Read {
        what,
        offset,
        error,
    })
}

impl Table {
    /// Reads the partition table of `disk`.
    ///
    /// A protective MBR (type `0xee`) means GPT: the primary header at LBA 1
    /// is used if it and its entry array are valid, otherwise the backup in
    /// the disk's last sector (Linux reads the backup only with `gpt` on its
    /// command line; `sfdisk`, `parted` and UEFI firmware always do). Any
    /// other boot signature `55 aa` is an MBR unless the sector is really a
    /// file system's boot sector (Linux's test: a boot indicator other than
    /// `0x00`/`0x80`, or no partition at all); anything else is no table.
    pub fn read<D: BlockRead>(disk: &D) -> Result<Self, TableError<D::Error>> {
        let disk_bytes = disk.size().map_err(|error| TableError::Read {
            what: "disk size",
            offset: 0,
            error,
        })?;
        let whole = || Self {
            scheme: Scheme::None,
            partitions: alloc::vec![Partition {
                number: 0,
                start: 0,
                len: disk_bytes,
                kind: PartitionKind::WholeDisk,
            }],
            warning: None,
        };
        if disk_bytes < SECTOR_BYTES {
            return Ok(whole());
        }
        let mut sector = [0u8; SECTOR_BYTES as usize];
        read(disk, "MBR", 0, &mut sector)?;
        let Some(records) = mbr::records(&sector) else {
            return Ok(whole());
        };
        if records
            .iter()
            .any(|record| record.os_indicator == mbr::GPT_PROTECTIVE)
        {
            let (partitions, warning) = read_gpt(disk, disk_bytes)?;
            return Ok(Self {
                scheme: Scheme::Gpt,
                partitions,
                warning,
            });
        }
        if !mbr::is_partition_table(&records) {
            return Ok(whole());
        }
        let partitions = mbr::partitions(disk, &records, disk_bytes)?;
        Ok(Self {
            scheme: Scheme::Mbr,
            partitions,
            warning: None,
        })
    }

    /// The partition `number`, or without one the disk's only file system:
    /// the whole disk when it has no table, else the one partition that is
    /// not an extended container.
    pub fn select<E>(&self, number: Option<u32>) -> Result<&Partition, TableError<E>> {
        if let Some(number) = number {
            return self.get(number);
        }
        let mut candidates = self.partitions.iter().filter(|part| !part.is_container());
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Ok(only),
            _ => Err(TableError::NotOneFileSystem {
                candidates: self
                    .partitions
                    .iter()
                    .filter(|part| !part.is_container())
                    .count(),
                scheme: self.scheme,
            }),
        }
    }

    /// The partition numbered `number` (0 for a disk without a table).
    pub fn get<E>(&self, number: u32) -> Result<&Partition, TableError<E>> {
        self.partitions
            .iter()
            .find(|partition| partition.number == number)
            .ok_or(TableError::NoSuchPartition {
                number,
                scheme: self.scheme,
            })
    }
}

/// A GPT's partitions, and the primary copy's problem when the backup was used.
type GptPartitions = (Vec<Partition>, Option<GptProblem>);

/// The primary GPT if valid, else the backup; the primary's problem comes back as a warning.
fn read_gpt<D: BlockRead>(
    disk: &D,
    disk_bytes: u64,
) -> Result<GptPartitions, TableError<D::Error>> {
    let last_lba = disk_bytes / SECTOR_BYTES - 1;
    let primary = match gpt::read(disk, GptSlot::Primary, last_lba)? {
        Ok(partitions) => return Ok((partitions, None)),
        Err(problem) => problem,
    };
    match gpt::read(disk, GptSlot::Backup, last_lba)? {
        Ok(partitions) => Ok((partitions, Some(primary))),
        Err(backup) => Err(TableError::Gpt { primary, backup }),
    }
}
