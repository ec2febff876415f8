//! A byte range of a disk read as a disk of its own: what a partition is to
//! the file system inside it.

use core::fmt;

use qcow2_reader::BlockRead;

/// The bytes `start..start + len` of `disk`, addressed from 0.
///
/// Reads outside `0..len` fail before they reach the disk, so a file system
/// in one partition can never read its neighbour's bytes.
#[derive(Debug, Clone)]
pub struct Slice<D> {
    disk: D,
    start: u64,
    len: u64,
}

impl<D: BlockRead> Slice<D> {
    /// The range `start..start + len` of `disk`; the caller has checked
    /// that it lies inside the disk (reads past the disk's end fail there).
    pub fn new(disk: D, start: u64, len: u64) -> Self {
        Self { disk, start, len }
    }

    /// First byte of the range on the disk.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The disk the range is part of.
    pub fn disk(&self) -> &D {
        &self.disk
    }
}

/// Why a read through a [`Slice`] failed.
#[derive(Debug)]
pub enum SliceError<E> {
    /// The read reaches outside the range.
    OutOfRange {
        /// First byte asked for, relative to the range.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// Size of the range.
        size: u64,
    },
    /// The disk under the range failed.
    Disk(E),
}

impl<E: fmt::Display> fmt::Display for SliceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { offset, len, size } => write!(
                f,
                "read of {len} bytes at offset {offset:#x} is outside the partition's {size} bytes"
            ),
            Self::Disk(error) => error.fmt(f),
        }
    }
}

impl<D: BlockRead> BlockRead for Slice<D> {
    type Error = SliceError<D::Error>;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        let out_of_range = SliceError::OutOfRange {
            offset,
            len: buf.len(),
            size: self.len,
        };
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len);
        if end.is_none() {
            return Err(out_of_range);
        }
        // Cannot overflow: `start + len` was checked against the disk when the table was read.
        let disk_offset = self.start.checked_add(offset).ok_or(out_of_range)?;
        self.disk
            .read_at(disk_offset, buf)
            .map_err(SliceError::Disk)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_relative_to_the_start_and_stop_at_the_end() {
        let disk: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7];
        let slice = Slice::new(disk, 2, 4);
        let mut buf = [0u8; 4];
        slice.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [2, 3, 4, 5]);
        assert!(matches!(
            slice.read_at(1, &mut buf),
            Err(SliceError::OutOfRange {
                offset: 1,
                len: 4,
                size: 4
            })
        ));
        assert_eq!(slice.size().unwrap(), 4);
    }
}
