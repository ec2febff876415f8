//! Reading a whole store in chunks: the hash of the virtual disk, and the
//! timed passes that compare reading through the crate with reading raw
//! sectors. All three go through one loop, [`read_all`].

use crate::arch;
use crate::backing::{ImageError, Qcow2};
use crate::disk::{DiskError, VirtioDisk};
use qcow2_reader::BlockRead;
use sha2::{Digest, Sha256};

/// Reads `0..size` of `source` in `buffer`-sized chunks, in order, and
/// hands each chunk to `each`.
fn read_all<S: BlockRead + ?Sized>(
    source: &S,
    size: u64,
    buffer: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> Result<(), S::Error> {
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(buffer.len() as u64) as usize;
        let chunk = &mut buffer[..len];
        source.read_at(offset, chunk)?;
        each(chunk);
        offset += len as u64;
    }
    Ok(())
}

/// The SHA-256 of a virtual disk, and the counter ticks spent reading and
/// hashing it.
pub struct Hashed {
    /// The digest.
    pub digest: [u8; 32],
    /// Ticks spent in reads.
    pub read_ticks: u64,
    /// Ticks spent hashing.
    pub hash_ticks: u64,
}

/// Reads the virtual disk of `image` and hashes it.
pub fn hash_image(image: &Qcow2, buffer: &mut [u8]) -> Result<Hashed, ImageError> {
    let mut hasher = Sha256::new();
    let mut hash_ticks = 0u64;
    let start = arch::counter();
    read_all(image, image.virtual_size(), buffer, |chunk| {
        let before = arch::counter();
        hasher.update(chunk);
        hash_ticks += arch::counter().wrapping_sub(before);
    })?;
    let total = arch::counter().wrapping_sub(start);
    Ok(Hashed {
        digest: hasher.finalize().into(),
        read_ticks: total.saturating_sub(hash_ticks),
        hash_ticks,
    })
}

/// Time and device requests of one timed pass.
#[derive(Clone, Copy)]
pub struct Pass {
    /// Counter ticks of the whole pass.
    pub ticks: u64,
    /// Requests the disk served during it.
    pub requests: u64,
}

impl Pass {
    /// The faster of two passes.
    pub fn best(self, other: Pass) -> Pass {
        if other.ticks < self.ticks {
            other
        } else {
            self
        }
    }
}

/// Runs `read` as one pass, counting ticks and the requests `disk` serves.
fn timed<E>(disk: &VirtioDisk, read: impl FnOnce() -> Result<(), E>) -> Result<Pass, E> {
    let requests = disk.requests();
    let start = arch::counter();
    read()?;
    Ok(Pass {
        ticks: arch::counter().wrapping_sub(start),
        requests: disk.requests() - requests,
    })
}

/// Reads the whole virtual disk through the crate, nothing else in the
/// loop; `disk` is the one holding the image.
pub fn time_image(image: &Qcow2, disk: &VirtioDisk, buffer: &mut [u8]) -> Result<Pass, ImageError> {
    timed(disk, || {
        read_all(image, image.virtual_size(), buffer, |_| {})
    })
}

/// Reads `total` bytes of raw sectors from `disk` with the same loop as
/// [`time_image`]: from the start, wrapping at the device's end (the image
/// file is often smaller than its virtual disk).
pub fn time_raw(disk: &VirtioDisk, total: u64, buffer: &mut [u8]) -> Result<Pass, DiskError> {
    let wrapped = Wrapping {
        disk,
        size: disk.size()?,
    };
    timed(disk, || read_all(&wrapped, total, buffer, |_| {}))
}

/// A disk read as if repeated forever: offset `o` is the device's byte
/// `o % size`. A read across the device's end becomes two requests.
struct Wrapping<'a> {
    disk: &'a VirtioDisk,
    size: u64,
}

impl BlockRead for Wrapping<'_> {
    type Error = DiskError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        if self.size == 0 {
            return Ok(());
        }
        let mut done = 0;
        while done < buf.len() {
            let device_offset = (offset + done as u64) % self.size;
            let len = (buf.len() - done).min((self.size - device_offset) as usize);
            self.disk
                .read_at(device_offset, &mut buf[done..done + len])?;
            done += len;
        }
        Ok(())
    }

    fn size(&self) -> Result<u64, DiskError> {
        Ok(u64::MAX)
    }
}
