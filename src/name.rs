//! Fixed-capacity names kept from the header (backing file, backing format, data file).

use core::fmt;

/// A byte string of at most `N` bytes, stored inline so the header needs no allocator.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Name<N> {
    /// Copies `bytes`, or `None` if it is longer than `N`.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut name = Self {
            bytes: [0; N],
            len: bytes.len(),
        };
        name.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(name)
    }

    /// The raw bytes, exactly as stored in the image.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The name as text, if it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }
}

impl<const N: usize> fmt::Display for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.as_bytes().utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A file name from the header: QEMU limits backing file names to 1023 bytes.
pub type FileName = Name<1023>;

/// A format name from the backing format extension: QEMU limits it to 15 bytes.
pub type FormatName = Name<15>;

impl<const N: usize> Default for Name<N> {
    fn default() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }
}
