//! FAT directory entries: 8.3 short entries, the long-name (VFAT) entries
//! before them, and the walk over a directory's bytes.
//!
//! A directory is read one cluster (or, for a FAT12/16 root, one 4 KiB
//! piece) at a time into one buffer; at most [`MAX_DIR_ENTRIES`] 32-byte
//! entries are looked at, the limit of the FAT specification and Linux.

use alloc::string::String;
use alloc::vec::Vec;

use qcow2_reader::BlockRead;

use super::boot::RootDir;
use super::chain::Next;
use super::Fat;
use crate::fs::{read_fs, FatCorrupt, FsError};

/// Most 32-byte entries in one directory.
pub const MAX_DIR_ENTRIES: u32 = 65536;

const ENTRY_BYTES: usize = 32;
const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0f;
/// Most long-name entries before a short one (20 x 13 = 260 UTF-16 units).
const MAX_LFN_ENTRIES: usize = 20;

/// Where a directory's entries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirStart {
    /// The fixed root region of FAT12/16.
    FixedRoot {
        /// First byte.
        start: u64,
        /// Number of entries.
        entries: u32,
    },
    /// A cluster chain.
    Chain(u32),
}

impl From<RootDir> for DirStart {
    fn from(root: RootDir) -> Self {
        match root {
            RootDir::Fixed { start, entries } => Self::FixedRoot { start, entries },
            RootDir::Chain(cluster) => Self::Chain(cluster),
        }
    }
}

/// One file or directory named in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatEntry {
    /// The long name if a valid one precedes the entry, else the 8.3 name.
    pub name: String,
    /// The 8.3 name, as `NAME.EXT` (lookups match either name).
    pub short_name: String,
    /// Attribute bits.
    pub attributes: u8,
    /// First cluster (0 for an empty file).
    pub first_cluster: u32,
    /// Size in bytes (0 for directories).
    pub size: u32,
    /// Modification time, seconds since 1970 (the stored local time taken as UTC).
    pub mtime: i64,
}

impl FatEntry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.attributes & ATTR_DIRECTORY != 0
    }

    /// Whether the read-only attribute is set.
    pub fn is_read_only(&self) -> bool {
        self.attributes & ATTR_READ_ONLY != 0
    }
}

/// Long-name pieces gathered so far, in UTF-16 units.
struct LongName {
    units: [u16; MAX_LFN_ENTRIES * 13],
    /// The sequence number expected next (counting down to 1), 0 when none is pending.
    expected: u8,
    entries: u8,
    checksum: u8,
}

impl LongName {
    fn new() -> Self {
        Self {
            units: [0; MAX_LFN_ENTRIES * 13],
            expected: 0,
            entries: 0,
            checksum: 0,
        }
    }

    /// Adds one long-name entry; out-of-order pieces drop the name (Linux does the same).
    fn push(&mut self, raw: &[u8]) {
        let sequence = raw[0];
        let number = sequence & 0x1f;
        if sequence & 0x40 != 0 {
            if number == 0 || usize::from(number) > MAX_LFN_ENTRIES {
                self.abandon();
                return;
            }
            self.entries = number;
            self.checksum = raw[13];
            self.units = [0xffff; MAX_LFN_ENTRIES * 13];
        } else if number != self.expected || raw[13] != self.checksum || number == 0 {
            self.abandon();
            return;
        }
        let base = (usize::from(number) - 1) * 13;
        let positions = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (index, at) in positions.enumerate() {
            self.units[base + index] = u16::from_le_bytes([raw[at], raw[at + 1]]);
        }
        // Complete when this was piece 1: `expected` 0 with `entries` set.
        self.expected = number - 1;
    }

    /// The finished name if it belongs to the short entry `short` (by checksum).
    fn take(&mut self, short: &[u8]) -> Option<String> {
        let entries = core::mem::take(&mut self.entries);
        if entries == 0 || self.expected != 0 || self.checksum != short_checksum(short) {
            return None;
        }
        let units = &self.units[..usize::from(entries) * 13];
        let len = units
            .iter()
            .position(|&unit| unit == 0)
            .unwrap_or(units.len());
        let name: String = char::decode_utf16(units[..len].iter().copied())
            .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        (!name.is_empty()).then_some(name)
    }

    fn abandon(&mut self) {
        self.entries = 0;
        self.expected = 0;
    }
}

/// The checksum of an 8.3 name that its long-name entries repeat.
fn short_checksum(short: &[u8]) -> u8 {
    short[..11]
        .iter()
        .fold(0u8, |sum, &byte| sum.rotate_right(1).wrapping_add(byte))
}

/// The 8.3 name as text: `NAME.EXT`, lower-cased where Windows NT's flags
/// (byte 12) say so, as Linux shows it; bytes above 0x7f are taken as Latin-1.
fn short_name(raw: &[u8]) -> String {
    let lower_base = raw[12] & 0x08 != 0;
    let lower_ext = raw[12] & 0x10 != 0;
    let mut name = String::new();
    let text = |bytes: &[u8], lower: bool, name: &mut String| {
        let len = bytes
            .iter()
            .rposition(|&byte| byte != b' ')
            .map_or(0, |at| at + 1);
        for (index, &byte) in bytes[..len].iter().enumerate() {
            // 0x05 in the first byte stands for 0xe5, which marks deleted entries.
            let byte = if index == 0 && byte == 0x05 {
                0xe5
            } else {
                byte
            };
            let byte = if lower {
                byte.to_ascii_lowercase()
            } else {
                byte
            };
            name.push(char::from(byte));
        }
    };
    text(&raw[..8], lower_base, &mut name);
    if raw[8..11].iter().any(|&byte| byte != b' ') {
        name.push('.');
        let mut ext = String::new();
        text(&raw[8..11], lower_ext, &mut ext);
        name.push_str(&ext);
    }
    name
}

/// Seconds since 1970 of a FAT date and time.
fn unix_time(date: u16, time: u16) -> i64 {
    let year = 1980 + i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0x0f).clamp(1, 12);
    let day = i64::from(date & 0x1f).max(1);
    // Days from civil (Howard Hinnant's algorithm), valid for all FAT years.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = i64::from(time >> 11) * 3600
        + i64::from((time >> 5) & 0x3f) * 60
        + i64::from(time & 0x1f) * 2;
    days * 86_400 + seconds
}

fn entry(raw: &[u8], name: Option<String>, cluster_high: bool) -> FatEntry {
    let short = short_name(raw);
    let high = if cluster_high {
        u32::from(u16::from_le_bytes([raw[20], raw[21]]))
    } else {
        0
    };
    let low = u32::from(u16::from_le_bytes([raw[26], raw[27]]));
    FatEntry {
        name: name.unwrap_or_else(|| short.clone()),
        short_name: short,
        attributes: raw[11],
        first_cluster: high << 16 | low,
        size: u32::from_le_bytes([raw[28], raw[29], raw[30], raw[31]]),
        mtime: unix_time(
            u16::from_le_bytes([raw[24], raw[25]]),
            u16::from_le_bytes([raw[22], raw[23]]),
        ),
    }
}

/// What a directory walk found besides its entries.
pub struct Walk {
    /// The volume label entry's text, if the directory has one (the root).
    pub volume_label: Option<String>,
}

impl<D: BlockRead> Fat<D> {
    /// Calls `visit` with each entry of the directory at `start` (not `.`,
    /// `..`, deleted entries or the volume label), stopping early when it
    /// returns `true`.
    pub(crate) fn walk_dir(
        &self,
        start: DirStart,
        visit: &mut dyn FnMut(FatEntry) -> bool,
    ) -> Result<Walk, FsError> {
        let mut walk = Walk { volume_label: None };
        let mut long_name = LongName::new();
        let piece_bytes = match start {
            DirStart::FixedRoot { .. } => super::chain::WINDOW_BYTES as usize,
            DirStart::Chain(_) => self.geometry.cluster_bytes as usize,
        };
        let mut buf: Vec<u8> = alloc::vec![0; piece_bytes];
        let mut seen: u32 = 0;
        let mut piece = Some(match start {
            DirStart::FixedRoot { start, entries } => Piece::Fixed {
                offset: start,
                end: start + u64::from(entries) * ENTRY_BYTES as u64,
            },
            DirStart::Chain(cluster) => Piece::Cluster(self.check_cluster(cluster)?),
        });
        let high = self.geometry.width == super::boot::FatWidth::Fat32;
        while let Some(current) = piece {
            let (offset, len) = match current {
                Piece::Fixed { offset, end } => {
                    (offset, (end - offset).min(piece_bytes as u64) as usize)
                }
                Piece::Cluster(cluster) => (self.geometry.cluster_offset(cluster), piece_bytes),
            };
            read_fs(&self.disk, offset, &mut buf[..len])?;
            for raw in buf[..len].chunks_exact(ENTRY_BYTES) {
                seen += 1;
                if seen > MAX_DIR_ENTRIES {
                    return Err(FsError::Fat(FatCorrupt::DirectoryTooLong { offset }));
                }
                match raw[0] {
                    0x00 => return Ok(walk),
                    0xe5 => {
                        long_name.abandon();
                        continue;
                    }
                    _ => {}
                }
                let attributes = raw[11];
                if attributes & 0x3f == ATTR_LONG_NAME {
                    long_name.push(raw);
                    continue;
                }
                let name = long_name.take(raw);
                if attributes & ATTR_VOLUME_ID != 0 {
                    walk.volume_label
                        .get_or_insert_with(|| short_name_raw(&raw[..11]));
                    continue;
                }
                if raw[..11] == *b".          " || raw[..11] == *b"..         " {
                    continue;
                }
                if visit(entry(raw, name, high)) {
                    return Ok(walk);
                }
            }
            piece = match current {
                Piece::Fixed { offset, end } => {
                    let next = offset + len as u64;
                    (next < end).then_some(Piece::Fixed { offset: next, end })
                }
                Piece::Cluster(cluster) => {
                    match self.table.next(&self.disk, &self.geometry, cluster)? {
                        Next::Cluster(next) => Some(Piece::Cluster(next)),
                        Next::End => None,
                    }
                }
            };
        }
        Ok(walk)
    }
}

#[derive(Clone, Copy)]
enum Piece {
    /// Part of the fixed root region, from `offset` to the region's `end`.
    Fixed { offset: u64, end: u64 },
    /// One cluster of a chain.
    Cluster(u32),
}

/// A volume label: the 11 bytes with trailing spaces removed.
pub fn short_name_raw(raw: &[u8]) -> String {
    let len = raw
        .iter()
        .rposition(|&byte| byte != b' ')
        .map_or(0, |at| at + 1);
    raw[..len].iter().map(|&byte| char::from(byte)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_dates_count_from_1980() {
        // 1980-01-01 00:00:00
        assert_eq!(unix_time(0x0021, 0), 315_532_800);
        // 2024-02-29 13:45:30: year 44, month 2, day 29; 13h 45m 15x2s
        let date = (44 << 9) | (2 << 5) | 29;
        let time = (13 << 11) | (45 << 5) | 15;
        assert_eq!(unix_time(date, time), 1_709_214_330);
    }

    #[test]
    fn short_names_follow_the_case_flags() {
        let mut raw = [b' '; 32];
        raw[..8].copy_from_slice(b"README  ");
        raw[8..11].copy_from_slice(b"TXT");
        raw[12] = 0x18;
        assert_eq!(short_name(&raw), "readme.txt");
        raw[12] = 0x08;
        assert_eq!(short_name(&raw), "readme.TXT");
    }
}
