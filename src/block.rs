//! The storage under an image: positioned, read-only byte access.
//!
//! The crate never does I/O by itself; everything it reads goes through
//! [`BlockRead`], which the caller implements for whatever holds the bytes:
//! a host file, a byte slice, a virtio block device, or another image.

use core::fmt;

use crate::error::{Error, Storage};

/// Positioned reads from a byte-addressed store of known size.
///
/// Reads take `&self` so that one store can serve several readers; a store
/// that needs mutable state (a device queue) keeps it behind a lock.
pub trait BlockRead {
    /// What a failed read reports.
    type Error: fmt::Debug + fmt::Display;

    /// Fills all of `buf` with the bytes at `offset..offset + buf.len()`.
    ///
    /// A range that is not wholly inside `0..size()` is an error; callers
    /// that want QEMU's "zeros past the end of the file" clamp first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// The number of readable bytes.
    fn size(&self) -> Result<u64, Self::Error>;
}

/// A read outside a byte slice, or a size that does not fit in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    /// First byte asked for.
    pub offset: u64,
    /// Number of bytes asked for.
    pub len: usize,
    /// Size of the slice.
    pub size: u64,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read of {} bytes at offset {:#x} is outside the {} bytes available",
            self.len, self.offset, self.size
        )
    }
}

impl BlockRead for [u8] {
    type Error = OutOfBounds;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let out_of_bounds = OutOfBounds {
            offset,
            len: buf.len(),
            size: self.len() as u64,
        };
        let start = usize::try_from(offset).map_err(|_| out_of_bounds)?;
        let end = start.checked_add(buf.len()).ok_or(out_of_bounds)?;
        let source = self.get(start..end).ok_or(out_of_bounds)?;
        buf.copy_from_slice(source);
        Ok(())
    }

    fn size(&self) -> Result<u64, OutOfBounds> {
        Ok(self.len() as u64)
    }
}

impl<T: BlockRead + ?Sized> BlockRead for &T {
    type Error = T::Error;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_at(offset, buf)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        (**self).size()
    }
}

#[cfg(feature = "alloc")]
impl<T: BlockRead + ?Sized> BlockRead for alloc::boxed::Box<T> {
    type Error = T::Error;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_at(offset, buf)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        (**self).size()
    }
}

#[cfg(feature = "alloc")]
impl<T: BlockRead + ?Sized> BlockRead for alloc::sync::Arc<T> {
    type Error = T::Error;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_at(offset, buf)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        (**self).size()
    }
}

#[cfg(feature = "alloc")]
impl BlockRead for alloc::vec::Vec<u8> {
    type Error = OutOfBounds;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.as_slice().read_at(offset, buf)
    }

    fn size(&self) -> Result<u64, OutOfBounds> {
        Ok(self.len() as u64)
    }
}

#[cfg(feature = "std")]
impl BlockRead for std::fs::File {
    type Error = std::io::Error;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let position = offset + done as u64;
                match std::os::windows::fs::FileExt::seek_read(self, &mut buf[done..], position)? {
                    0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    n => done += n,
                }
            }
            Ok(())
        }
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// Reads `buf.len()` bytes at `offset` where the store holds only `size`
/// bytes: the part past the end reads as zeros, as QEMU's block layer does.
///
/// The crate's one copy of this rule: its header, snapshot and check reads
/// use it, and so can a front end presenting a disk whose last block is
/// partial.
///
/// ```
/// let store: &[u8] = &[1, 2, 3];
/// let mut buf = [9u8; 4];
/// qcow2_reader::read_zero_padded(store, 3, 1, &mut buf).unwrap();
/// assert_eq!(buf, [2, 3, 0, 0]);
/// ```
pub fn read_zero_padded<R: BlockRead + ?Sized>(
    storage: &R,
    size: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), R::Error> {
    let available = size.saturating_sub(offset);
    let inside = usize::try_from(available).map_or(buf.len(), |n| n.min(buf.len()));
    let (head, tail) = buf.split_at_mut(inside);
    if !head.is_empty() {
        storage.read_at(offset, head)?;
    }
    tail.fill(0);
    Ok(())
}

/// [`read_zero_padded`], with a failure reported as an [`Error::Io`] of the `which` store.
pub(crate) fn read_located<R: BlockRead + ?Sized>(
    storage: &R,
    which: Storage,
    size: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), Error<R::Error>> {
    let len = buf.len() as u64;
    read_zero_padded(storage, size, offset, buf).map_err(|source| Error::Io {
        source,
        storage: which,
        offset,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_reads_inside_and_refuses_outside() {
        let bytes: &[u8] = &[1, 2, 3, 4, 5];
        let mut buf = [0u8; 2];
        bytes.read_at(3, &mut buf).unwrap();
        assert_eq!(buf, [4, 5]);
        let err = bytes.read_at(4, &mut buf).unwrap_err();
        assert_eq!(
            err,
            OutOfBounds {
                offset: 4,
                len: 2,
                size: 5
            }
        );
        assert!(bytes.read_at(u64::MAX, &mut buf).is_err());
        assert_eq!(bytes.size().unwrap(), 5);
    }

    #[test]
    fn zero_padded_read_fills_past_the_end() {
        let bytes: &[u8] = &[1, 2, 3];
        let mut buf = [9u8; 4];
        read_zero_padded(bytes, 3, 1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3, 0, 0]);
        read_zero_padded(bytes, 3, u64::MAX, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
    }
}
