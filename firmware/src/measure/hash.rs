//! The SHA-256 of a virtual disk, read through the crate.

use super::read_all;
use crate::arch;
use crate::backing::{ImageError, Qcow2};
use qcow2_reader::BlockRead;
use sha2::{Digest, Sha256};

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
    read_all(image, image.size()?, buffer, |chunk| {
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
