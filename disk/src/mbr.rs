//! DOS/MBR partition tables with extended and logical partitions, read as
//! Linux's `block/partitions/msdos.c` reads them; record layout from
//! `gpt_disk_types`.

use alloc::vec::Vec;

use gpt_disk_types::MbrPartitionRecord;
use qcow2_reader::BlockRead;

use crate::table::{
    read, Partition, PartitionKind, TableError, MAX_LOGICAL_PARTITIONS, SECTOR_BYTES,
};

/// The system byte of a GPT's protective MBR record.
pub const GPT_PROTECTIVE: u8 = 0xee;

/// Offset of the four partition records in an MBR or EBR.
const RECORDS_OFFSET: usize = 446;

/// Bytes of one record.
const RECORD_BYTES: usize = 16;

/// The four records of a sector ending in the boot signature `55 aa`, else `None`.
pub fn records(sector: &[u8; SECTOR_BYTES as usize]) -> Option<[MbrPartitionRecord; 4]> {
    if sector[510..] != [0x55, 0xaa] {
        return None;
    }
    Some(core::array::from_fn(|index| {
        let start = RECORDS_OFFSET + index * RECORD_BYTES;
        bytemuck::pod_read_unaligned(&sector[start..start + RECORD_BYTES])
    }))
}

/// Whether the records are a partition table rather than the boot sector of
/// a file system that fills the disk: Linux rejects boot indicators other
/// than `0x00` and `0x80`; a table with no partition means the same here.
pub fn is_partition_table(records: &[MbrPartitionRecord; 4]) -> bool {
    records
        .iter()
        .all(|record| matches!(record.boot_indicator, 0x00 | 0x80))
        && records.iter().any(is_used)
}

fn is_used(record: &MbrPartitionRecord) -> bool {
    record.os_indicator != 0 && record.size_in_lba.to_u32() != 0
}

fn is_extended(record: &MbrPartitionRecord) -> bool {
    matches!(record.os_indicator, 0x05 | 0x0f | 0x85)
}

/// Start and length in bytes of a record relative to `base`, or `None`
/// when it starts beyond the disk; a tail past the end is cut, as Linux
/// does ("extends beyond EOD, truncated").
fn range(record: &MbrPartitionRecord, base: u64, disk_bytes: u64) -> Option<(u64, u64)> {
    let start = base + u64::from(record.starting_lba.to_u32()) * SECTOR_BYTES;
    let len = u64::from(record.size_in_lba.to_u32()) * SECTOR_BYTES;
    (start < disk_bytes).then(|| (start, len.min(disk_bytes - start)))
}

/// The primary partitions (1-4) and the logical ones of each extended partition (5 on).
pub fn partitions<D: BlockRead>(
    disk: &D,
    records: &[MbrPartitionRecord; 4],
    disk_bytes: u64,
) -> Result<Vec<Partition>, TableError<D::Error>> {
    let mut partitions = Vec::new();
    for (slot, record) in records.iter().enumerate() {
        if !is_used(record) {
            continue;
        }
        if let Some((start, len)) = range(record, 0, disk_bytes) {
            partitions.push(Partition {
                number: slot as u32 + 1,
                start,
                len,
                kind: PartitionKind::Mbr {
                    type_byte: record.os_indicator,
                    extended: is_extended(record),
                },
            });
        }
    }
    let mut next_number = 5;
    let containers: Vec<(u64, u64)> = partitions
        .iter()
        .filter(|partition| partition.is_container())
        .map(|partition| (partition.start, partition.len))
        .collect();
    for (start, len) in containers {
        logical_partitions(
            disk,
            start,
            len,
            disk_bytes,
            &mut next_number,
            &mut partitions,
        )?;
    }
    Ok(partitions)
}

/// Follows the chain of EBRs of the extended partition at `first..first + first_len`.
///
/// In an EBR, a data record's start is relative to that EBR and the link to
/// the next EBR is relative to the extended partition's start. Linux
/// ignores the 3rd and 4th records when they leave the extended partition.
fn logical_partitions<D: BlockRead>(
    disk: &D,
    first: u64,
    first_len: u64,
    disk_bytes: u64,
    next_number: &mut u32,
    partitions: &mut Vec<Partition>,
) -> Result<(), TableError<D::Error>> {
    let mut this_ebr = first;
    let mut this_len = first_len;
    for _ in 0..MAX_LOGICAL_PARTITIONS {
        let mut sector = [0u8; SECTOR_BYTES as usize];
        if this_ebr + SECTOR_BYTES > disk_bytes {
            return Ok(());
        }
        read(disk, "EBR", this_ebr, &mut sector)?;
        let Some(records) = records(&sector) else {
            return Ok(());
        };
        for (slot, record) in records.iter().enumerate() {
            if !is_used(record) || is_extended(record) {
                continue;
            }
            let Some((start, len)) = range(record, this_ebr, disk_bytes) else {
                continue;
            };
            let inside = start - this_ebr + len <= this_len
                && start >= first
                && start + len <= first + first_len;
            if slot >= 2 && !inside {
                continue;
            }
            if *next_number >= 5 + MAX_LOGICAL_PARTITIONS {
                return Ok(());
            }
            partitions.push(Partition {
                number: *next_number,
                start,
                len,
                kind: PartitionKind::Mbr {
                    type_byte: record.os_indicator,
                    extended: false,
                },
            });
            *next_number += 1;
        }
        let Some(link) = records
            .iter()
            .find(|record| is_used(record) && is_extended(record))
        else {
            return Ok(());
        };
        let Some((start, len)) = range(link, first, disk_bytes) else {
            return Ok(());
        };
        this_ebr = start;
        this_len = len;
    }
    Ok(())
}

/// `fdisk`'s name of an MBR system byte, for the common ones.
pub fn type_name(type_byte: u8) -> Option<&'static str> {
    Some(match type_byte {
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Ext'd (LBA)",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xfd => "Linux raid autodetect",
        _ => return None,
    })
}
