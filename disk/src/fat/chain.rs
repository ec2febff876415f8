//! The file allocation table: the next cluster of a chain, read through a
//! one-block window so that walking a chain costs one disk read per 4 KiB
//! of FAT rather than one per cluster.

use alloc::boxed::Box;
use core::cell::RefCell;

use qcow2_reader::BlockRead;

use super::boot::{FatWidth, Geometry};
use crate::fs::{read_fs, FatCorrupt, FsError};

/// Bytes of FAT held in memory at a time.
pub const WINDOW_BYTES: u64 = 4096;

/// What a FAT entry says follows a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The chain goes on at this cluster.
    Cluster(u32),
    /// The chain ends here.
    End,
}

/// The first FAT of a volume, with its window.
pub struct Table {
    window: RefCell<Window>,
}

struct Window {
    /// Offset of the window's first byte within the FAT, if loaded.
    start: Option<u64>,
    bytes: Box<[u8]>,
}

impl Default for Table {
    /// A table with an empty window.
    fn default() -> Self {
        Self {
            window: RefCell::new(Window {
                start: None,
                bytes: alloc::vec![0; WINDOW_BYTES as usize].into_boxed_slice(),
            }),
        }
    }
}

impl Table {
    /// The entry of `cluster`: the next cluster, or the end of the chain.
    pub fn next<D: BlockRead>(
        &self,
        disk: &D,
        geometry: &Geometry,
        cluster: u32,
    ) -> Result<Next, FsError> {
        let (offset, len) = match geometry.width {
            FatWidth::Fat12 => (u64::from(cluster) + u64::from(cluster / 2), 2),
            FatWidth::Fat16 => (u64::from(cluster) * 2, 2),
            FatWidth::Fat32 => (u64::from(cluster) * 4, 4),
        };
        let mut raw = [0u8; 4];
        self.read(disk, geometry, offset, &mut raw[..len])?;
        let value = u32::from_le_bytes(raw);
        let (value, end) = match geometry.width {
            FatWidth::Fat12 if cluster % 2 == 1 => (value >> 4, 0xff8),
            FatWidth::Fat12 => (value & 0xfff, 0xff8),
            FatWidth::Fat16 => (value, 0xfff8),
            FatWidth::Fat32 => (value & 0x0fff_ffff, 0x0fff_fff8),
        };
        if value >= end {
            return Ok(Next::End);
        }
        if !geometry.is_data_cluster(value) {
            return Err(FsError::Fat(FatCorrupt::FatEntry { cluster, value }));
        }
        Ok(Next::Cluster(value))
    }

    /// Reads FAT bytes at `offset`, through the window unless they straddle its end.
    fn read<D: BlockRead>(
        &self,
        disk: &D,
        geometry: &Geometry,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), FsError> {
        let end = offset + out.len() as u64;
        if end > geometry.fat_bytes {
            return Err(FsError::Fat(FatCorrupt::FatTooShort { offset: end }));
        }
        let window_start = offset - offset % WINDOW_BYTES;
        let within = (offset - window_start) as usize;
        if within + out.len() > WINDOW_BYTES as usize {
            return read_fs(disk, geometry.fat_start + offset, out);
        }
        let mut window = self.window.borrow_mut();
        if window.start != Some(window_start) {
            let len = WINDOW_BYTES.min(geometry.fat_bytes - window_start) as usize;
            window.start = None;
            read_fs(
                disk,
                geometry.fat_start + window_start,
                &mut window.bytes[..len],
            )?;
            window.start = Some(window_start);
        }
        out.copy_from_slice(&window.bytes[within..within + out.len()]);
        Ok(())
    }
}
