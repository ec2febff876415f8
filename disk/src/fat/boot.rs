//! The FAT boot sector (BIOS parameter block): where the FATs, the root
//! directory and the clusters are, and which FAT width the volume uses.

use crate::fs::{FatCorrupt, FsError};

/// FAT12, FAT16 or FAT32, decided by the number of clusters as the
/// Microsoft specification (and Linux) decide it, never by the label text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatWidth {
    /// 12-bit entries (fewer than 4085 clusters).
    Fat12,
    /// 16-bit entries (fewer than 65525 clusters).
    Fat16,
    /// 28-bit entries in 32 bits.
    Fat32,
}

/// Where the root directory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootDir {
    /// FAT12/16: a fixed region of `entries` directory entries at byte `start`.
    Fixed {
        /// First byte of the region.
        start: u64,
        /// Number of 32-byte entries.
        entries: u32,
    },
    /// FAT32: a cluster chain starting at this cluster.
    Chain(u32),
}

/// The volume's layout, validated against the partition's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The FAT entry width.
    pub width: FatWidth,
    /// Bytes per cluster (a power of two, at most 512 KiB).
    pub cluster_bytes: u32,
    /// First byte of the first FAT.
    pub fat_start: u64,
    /// Bytes of one FAT.
    pub fat_bytes: u64,
    /// The root directory.
    pub root: RootDir,
    /// First byte of cluster 2.
    pub data_start: u64,
    /// Number of data clusters; valid cluster numbers are `2..cluster_count + 2`.
    pub cluster_count: u32,
    /// The label in the boot sector (11 bytes, space padded).
    pub boot_label: [u8; 11],
}

/// Whether the boot sector's file system type text says FAT (at the
/// FAT12/16 or the FAT32 position); informative only, never trusted for the width.
pub fn names_fat(sector: &[u8; 512]) -> bool {
    sector[0x36..0x39] == *b"FAT" || sector[0x52..0x57] == *b"FAT32"
}

fn u16_at(sector: &[u8; 512], at: usize) -> u16 {
    u16::from_le_bytes([sector[at], sector[at + 1]])
}

fn u32_at(sector: &[u8; 512], at: usize) -> u32 {
    u32::from_le_bytes([sector[at], sector[at + 1], sector[at + 2], sector[at + 3]])
}

impl Geometry {
    /// Validates the boot sector of a volume of `volume_bytes` bytes.
    pub fn parse(sector: &[u8; 512], volume_bytes: u64) -> Result<Self, FsError> {
        let corrupt = |what: &'static str, value: u64| {
            FsError::Fat(FatCorrupt::BootSector { field: what, value })
        };
        let bytes_per_sector = u16_at(sector, 0x0b);
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
            return Err(corrupt("bytes per sector", bytes_per_sector.into()));
        }
        let sectors_per_cluster = sector[0x0d];
        if !sectors_per_cluster.is_power_of_two() {
            return Err(corrupt("sectors per cluster", sectors_per_cluster.into()));
        }
        let reserved = u16_at(sector, 0x0e);
        if reserved == 0 {
            return Err(corrupt("reserved sectors", 0));
        }
        let fats = sector[0x10];
        if fats == 0 {
            return Err(corrupt("number of FATs", 0));
        }
        let root_entries = u16_at(sector, 0x11);
        let total_sectors = match u16_at(sector, 0x13) {
            0 => u32_at(sector, 0x20),
            small => small.into(),
        };
        let media = sector[0x15];
        if media != 0xf0 && media < 0xf8 {
            return Err(corrupt("media byte", media.into()));
        }
        let fat_sectors = match u16_at(sector, 0x16) {
            0 => u32_at(sector, 0x24),
            small => small.into(),
        };
        if fat_sectors == 0 {
            return Err(corrupt("sectors per FAT", 0));
        }
        let sector_bytes = u64::from(bytes_per_sector);
        let root_dir_sectors = (u64::from(root_entries) * 32).div_ceil(sector_bytes);
        let data_sector =
            u64::from(reserved) + u64::from(fats) * u64::from(fat_sectors) + root_dir_sectors;
        let total_sectors = u64::from(total_sectors);
        if total_sectors * sector_bytes > volume_bytes {
            return Err(corrupt(
                "total sectors (beyond the partition)",
                total_sectors,
            ));
        }
        if data_sector >= total_sectors {
            return Err(corrupt("total sectors (no room for data)", total_sectors));
        }
        let cluster_count = (total_sectors - data_sector) / u64::from(sectors_per_cluster);
        let width = match cluster_count {
            0..4085 => FatWidth::Fat12,
            4085..65525 => FatWidth::Fat16,
            _ => FatWidth::Fat32,
        };
        // Cannot truncate: at most 2^32 sectors per volume.
        let cluster_count = cluster_count as u32;
        let fat_bytes = u64::from(fat_sectors) * sector_bytes;
        let entry_bits = match width {
            FatWidth::Fat12 => 12,
            FatWidth::Fat16 => 16,
            FatWidth::Fat32 => 32,
        };
        if fat_bytes * 8 < (u64::from(cluster_count) + 2) * entry_bits {
            return Err(corrupt(
                "sectors per FAT (too few for the clusters)",
                fat_sectors.into(),
            ));
        }
        let fat_start = u64::from(reserved) * sector_bytes;
        let (root, label_at) = match width {
            FatWidth::Fat32 => {
                let cluster = u32_at(sector, 0x2c);
                if !(2..cluster_count + 2).contains(&cluster) {
                    return Err(corrupt("root directory cluster", cluster.into()));
                }
                (RootDir::Chain(cluster), 0x47)
            }
            _ => {
                if root_entries == 0 {
                    return Err(corrupt("root directory entries", 0));
                }
                let start = fat_start + u64::from(fats) * fat_bytes;
                (
                    RootDir::Fixed {
                        start,
                        entries: root_entries.into(),
                    },
                    0x2b,
                )
            }
        };
        let mut boot_label = [b' '; 11];
        boot_label.copy_from_slice(&sector[label_at..label_at + 11]);
        Ok(Self {
            width,
            cluster_bytes: u32::from(bytes_per_sector) * u32::from(sectors_per_cluster),
            fat_start,
            fat_bytes,
            root,
            data_start: data_sector * sector_bytes,
            cluster_count,
            boot_label,
        })
    }

    /// The byte where `cluster` starts; the caller has checked it is a data cluster.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_start + u64::from(cluster - 2) * u64::from(self.cluster_bytes)
    }

    /// Whether `cluster` names a data cluster.
    pub fn is_data_cluster(&self, cluster: u32) -> bool {
        (2..self.cluster_count.saturating_add(2)).contains(&cluster)
    }
}
