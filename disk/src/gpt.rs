//! GUID partition tables: header and entry-array checks as Linux's
//! `block/partitions/efi.c` makes them, with the layouts of `gpt_disk_types`
//! and CRC32 from `crc`.
//!
//! The header CRC is computed here over `header_size` bytes (as the UEFI
//! specification and Linux do), not with `gpt_disk_types`' helper, which
//! covers only the 92 bytes it knows.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use gpt_disk_types::{GptHeader, GptPartitionEntry, GptPartitionType};
use qcow2_reader::BlockRead;

use crate::table::{
    read as read_disk, Partition, PartitionKind, TableError, MAX_GPT_ARRAY_BYTES, SECTOR_BYTES,
};

/// The CRC32 of GPT (and of zlib, Ethernet).
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Bytes of the header fields; `header_size` may be larger, never smaller.
const HEADER_FIELDS_BYTES: u32 = 92;

/// The only entry size Linux accepts.
const ENTRY_BYTES: u32 = 128;

/// Which of the two copies of the GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptSlot {
    /// The primary header, at LBA 1.
    Primary,
    /// The backup header, in the disk's last sector.
    Backup,
}

/// What makes one GPT copy invalid, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptProblem {
    /// The sector of the header.
    pub lba: u64,
    /// What is wrong.
    pub kind: GptProblemKind,
}

/// The rule a GPT copy breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptProblemKind {
    /// The sector does not start with `EFI PART`.
    Signature,
    /// `header_size` is below 92 bytes or above a sector.
    HeaderSize(u32),
    /// The header's CRC32 does not match its bytes.
    HeaderCrc {
        /// The CRC32 in the header.
        stored: u32,
        /// The CRC32 of the header's bytes.
        computed: u32,
    },
    /// `my_lba` is not the sector the header was read from.
    MyLba(u64),
    /// The usable range is inverted or past the end of the disk.
    UsableRange {
        /// `first_usable_lba`.
        first: u64,
        /// `last_usable_lba`.
        last: u64,
    },
    /// An entry size other than 128 bytes.
    EntrySize(u32),
    /// The entry array is larger than [`MAX_GPT_ARRAY_BYTES`].
    ArrayTooLarge {
        /// `number_of_partition_entries`.
        entries: u32,
    },
    /// The entry array does not lie inside the disk.
    ArrayOutsideDisk {
        /// `partition_entry_lba`.
        lba: u64,
    },
    /// The entry array's CRC32 does not match its bytes.
    ArrayCrc {
        /// The CRC32 in the header.
        stored: u32,
        /// The CRC32 of the array's bytes.
        computed: u32,
    },
}

impl fmt::Display for GptProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GPT header at LBA {}: ", self.lba)?;
        match self.kind {
            GptProblemKind::Signature => write!(f, "no \"EFI PART\" signature"),
            GptProblemKind::HeaderSize(size) => {
                write!(f, "header size {size} is not between 92 and 512 bytes")
            }
            GptProblemKind::HeaderCrc { stored, computed } => write!(
                f,
                "header CRC32 is {stored:#010x} but its bytes give {computed:#010x}"
            ),
            GptProblemKind::MyLba(lba) => write!(f, "it says it is at LBA {lba}"),
            GptProblemKind::UsableRange { first, last } => write!(
                f,
                "usable LBAs {first}..={last} are inverted or beyond the disk"
            ),
            GptProblemKind::EntrySize(size) => {
                write!(f, "partition entry size {size} is not 128 bytes")
            }
            GptProblemKind::ArrayTooLarge { entries } => write!(
                f,
                "{entries} partition entries exceed the {MAX_GPT_ARRAY_BYTES}-byte limit"
            ),
            GptProblemKind::ArrayOutsideDisk { lba } => {
                write!(f, "partition entry array at LBA {lba} is outside the disk")
            }
            GptProblemKind::ArrayCrc { stored, computed } => write!(
                f,
                "partition entry array CRC32 is {stored:#010x} but its bytes give {computed:#010x}"
            ),
        }
    }
}

/// The partitions of one GPT copy, or why that copy is invalid.
///
/// The outer error is the disk failing; the inner one is the table's.
pub fn read<D: BlockRead>(
    disk: &D,
    slot: GptSlot,
    last_lba: u64,
) -> Result<Result<Vec<Partition>, GptProblem>, TableError<D::Error>> {
    let lba = match slot {
        GptSlot::Primary => 1,
        GptSlot::Backup => last_lba,
    };
    let problem = |kind| Err(GptProblem { lba, kind });
    let mut sector = [0u8; SECTOR_BYTES as usize];
    read_disk(disk, "GPT header", lba * SECTOR_BYTES, &mut sector)?;
    let header: GptHeader = bytemuck::pod_read_unaligned(&sector[..HEADER_FIELDS_BYTES as usize]);
    if let Err(kind) = check_header(&header, &sector, lba, last_lba) {
        return Ok(problem(kind));
    }
    let entries = header.number_of_partition_entries.to_u32();
    let array_bytes = entries as usize * ENTRY_BYTES as usize;
    if array_bytes > MAX_GPT_ARRAY_BYTES {
        return Ok(problem(GptProblemKind::ArrayTooLarge { entries }));
    }
    let array_lba = header.partition_entry_lba.to_u64();
    let array_end = array_lba
        .checked_mul(SECTOR_BYTES)
        .and_then(|start| start.checked_add(array_bytes as u64));
    if array_end.is_none_or(|end| end > (last_lba + 1) * SECTOR_BYTES) {
        return Ok(problem(GptProblemKind::ArrayOutsideDisk { lba: array_lba }));
    }
    let mut array = alloc::vec![0u8; array_bytes];
    read_disk(
        disk,
        "GPT partition entry array",
        array_lba * SECTOR_BYTES,
        &mut array,
    )?;
    let stored = header.partition_entry_array_crc32.0.to_u32();
    let computed = CRC32.checksum(&array);
    if stored != computed {
        return Ok(problem(GptProblemKind::ArrayCrc { stored, computed }));
    }
    Ok(Ok(partitions(&array, last_lba)))
}

/// Linux's header checks, in its order.
fn check_header(
    header: &GptHeader,
    sector: &[u8],
    lba: u64,
    last_lba: u64,
) -> Result<(), GptProblemKind> {
    if !header.is_signature_valid() {
        return Err(GptProblemKind::Signature);
    }
    let header_size = header.header_size.to_u32();
    if !(HEADER_FIELDS_BYTES..=SECTOR_BYTES as u32).contains(&header_size) {
        return Err(GptProblemKind::HeaderSize(header_size));
    }
    let mut digest = CRC32.digest();
    digest.update(&sector[..16]);
    digest.update(&[0; 4]); // the CRC field itself counts as zeros
    digest.update(&sector[20..header_size as usize]);
    let computed = digest.finalize();
    let stored = header.header_crc32.0.to_u32();
    if stored != computed {
        return Err(GptProblemKind::HeaderCrc { stored, computed });
    }
    let my_lba = header.my_lba.to_u64();
    if my_lba != lba {
        return Err(GptProblemKind::MyLba(my_lba));
    }
    let first = header.first_usable_lba.to_u64();
    let last = header.last_usable_lba.to_u64();
    if first > last_lba || last > last_lba || last < first {
        return Err(GptProblemKind::UsableRange { first, last });
    }
    let entry_size = header.size_of_partition_entry.to_u32();
    if entry_size != ENTRY_BYTES {
        return Err(GptProblemKind::EntrySize(entry_size));
    }
    Ok(())
}

/// The used entries that lie inside the disk, numbered by slot as Linux does.
fn partitions(array: &[u8], last_lba: u64) -> Vec<Partition> {
    let mut partitions = Vec::new();
    for (slot, bytes) in array.chunks_exact(ENTRY_BYTES as usize).enumerate() {
        let entry: GptPartitionEntry = bytemuck::pod_read_unaligned(bytes);
        let type_guid = entry.partition_type_guid;
        let unique_guid = entry.unique_partition_guid;
        if type_guid == GptPartitionType::UNUSED {
            continue;
        }
        let first = entry.starting_lba.to_u64();
        let last = entry.ending_lba.to_u64();
        // Linux's is_pte_valid, plus an inverted range (which Linux would wrap).
        if first > last_lba || last > last_lba || last < first {
            continue;
        }
        partitions.push(Partition {
            number: slot as u32 + 1,
            start: first * SECTOR_BYTES,
            len: (last - first + 1) * SECTOR_BYTES,
            kind: PartitionKind::Gpt {
                type_guid: alloc::format!("{}", type_guid.0),
                unique_guid: alloc::format!("{unique_guid}"),
                name: entry.name.chars().collect::<String>(),
            },
        });
    }
    partitions
}

/// `fdisk`'s name of a partition type GUID, for the common ones.
pub fn type_name(type_guid: &str) -> Option<&'static str> {
    const NAMES: &[(&str, &str)] = &[
        ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System"),
        ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
        ("0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"),
        ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"),
        ("e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM"),
        ("a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID"),
        (
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "Linux root (x86-64)",
        ),
        (
            "b921b045-1df0-41c3-af44-4c6f280d3fae",
            "Linux root (ARM-64)",
        ),
        (
            "bc13c2ff-59e6-4262-a352-b275fd6f7172",
            "Linux extended boot",
        ),
        ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"),
        (
            "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
            "Microsoft basic data",
        ),
        ("e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved"),
    ];
    NAMES
        .iter()
        .find(|(guid, _)| guid.eq_ignore_ascii_case(type_guid))
        .map(|(_, name)| *name)
}
