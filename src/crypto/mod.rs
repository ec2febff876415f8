//! Decryption of QEMU's encrypted images (feature `luks`): LUKS1
//! (`crypt_method` 2) and the legacy qcow AES method (`crypt_method` 1).
//!
//! Pure functions over bytes and a caller's [`BlockRead`](crate::BlockRead);
//! no allocation, no `unsafe`, RustCrypto's `aes`, `serpent`, `twofish`, `cbc`, `ctr`,
//! `pbkdf2`/`hmac` and hashes, with key material zeroized on
//! drop (`zeroize`).
//!
//! ```no_run
//! # fn demo(image: &[u8], fde_offset: u64, fde_len: u64, cluster: &mut [u8], host_offset: u64)
//! # -> Result<(), qcow2_reader::crypto::CryptoError<qcow2_reader::OutOfBounds>> {
//! use qcow2_reader::crypto::{unlock, KeyArea, LuksHeader, SectorCipher, UnlockLimits, CryptoError};
//!
//! // The full disk encryption header extension gives (fde_offset, fde_len).
//! let header = LuksHeader::parse(&image[fde_offset as usize..]).map_err(CryptoError::widen)?;
//! let area = KeyArea::new(image, fde_offset, fde_len);
//! let key = unlock(&header, &area, b"passphrase", &UnlockLimits::default())?;
//! let cipher = SectorCipher::new(header.spec(), key.as_bytes()).map_err(CryptoError::widen)?;
//! // A LUKS qcow2 data cluster: sectors count from its host offset.
//! cipher.decrypt_sectors(host_offset / 512, cluster).map_err(CryptoError::widen)?;
//! # Ok(()) }
//! ```
//!
//! # QEMU's rules (7.2), and where each lives
//!
//! - Sector size 512 for both methods ([`SECTOR_BYTES`]).
//! - **Which number a sector has** is the caller's rule: in a qcow2 image
//!   with LUKS, the *host* offset / 512 of the sector in the image file
//!   (`crypt_physical_offset`); with legacy AES, the *guest* offset / 512;
//!   in a raw LUKS file, the offset / 512 from the start of the payload;
//!   in key material, the offset / 512 from the slot's first sector.
//! - Compressed clusters of an encrypted qcow2 image are not encrypted:
//!   QEMU writes them as plain deflate/zstd and reads them without
//!   decrypting (`qemu-io -c 'write -c'` makes such an image).
//! - The header's layout and checks: [`luks`]; the cipher names: [`spec`];
//!   the IV generators and modes: [`sector`]; key slots: [`mod@unlock`];
//!   legacy AES: [`legacy`].
//!
//! # Bounds
//!
//! - Memory: a [`SectorCipher`] holds at most three AES key schedules
//!   (data, XTS tweak or ESSIV) inline; unlocking uses a 4 KiB stack chunk
//!   ([`CHUNK_BYTES`]) and a few 64-byte blocks. Nothing is allocated.
//! - Work: decryption is linear in the bytes; unlocking is bounded by the
//!   caller's [`UnlockLimits::max_iterations`] of PBKDF2, plus reading and
//!   merging at most 8 × 256 000 bytes of key material.

mod error;
mod hash;
pub mod legacy;
pub mod luks;
pub mod sector;
mod serpent;
pub mod spec;
mod twofish;
pub mod unlock;

pub use error::{CryptoError, SlotProblem, SpecField, SpecName};
pub use hash::HashAlgorithm;
pub use legacy::legacy_aes_cipher;
pub use luks::{KeySlot, LuksHeader};
pub use sector::{SectorCipher, SECTOR_BYTES};
pub use spec::{CipherAlgorithm, CipherMode, CipherSpec, IvGenerator};
pub use unlock::{
    check_master_key, unlock, KeyArea, MasterKey, UnlockLimits, CHUNK_BYTES, MAX_MASTER_KEY_BYTES,
};
