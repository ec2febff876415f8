//! `std::io::Read + Seek` over any [`BlockRead`], for crates that want a stream.

use std::io::{self, Read, Seek, SeekFrom};

use crate::block::BlockRead;

/// A reading position over a [`BlockRead`] store (an opened image, for example).
///
/// Reads stop at the end of the store; seeking past it is allowed and reads nothing there.
#[derive(Debug)]
pub struct Cursor<T> {
    inner: T,
    position: u64,
}

impl<T> Cursor<T> {
    /// A cursor at offset 0.
    pub fn new(inner: T) -> Self {
        Self { inner, position: 0 }
    }

    /// The store.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The store back.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> Read for Cursor<T>
where
    T: BlockRead,
    T::Error: Into<io::Error>,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.inner.size().map_err(Into::into)?;
        let available = size.saturating_sub(self.position);
        let len = usize::try_from(available).map_or(buf.len(), |n| n.min(buf.len()));
        self.inner
            .read_at(self.position, &mut buf[..len])
            .map_err(Into::into)?;
        self.position += len as u64;
        Ok(len)
    }
}

impl<T> Seek for Cursor<T>
where
    T: BlockRead,
    T::Error: Into<io::Error>,
{
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(offset) => (0, i128::from(offset)),
            SeekFrom::End(delta) => (self.inner.size().map_err(Into::into)?, i128::from(delta)),
            SeekFrom::Current(delta) => (self.position, i128::from(delta)),
        };
        let position = i128::from(base) + delta;
        self.position = u64::try_from(position).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        Ok(self.position)
    }
}
