//! Recovering the master key: from a passphrase through the key slots
//! (`qcrypto_block_luks_find_key` / `qcrypto_block_luks_load_key`), or from
//! a master key the caller already has.
//!
//! Per enabled slot, in slot order: PBKDF2 of the passphrase with the slot's
//! salt and iterations gives a slot key; the slot's key material (the master
//! key split into 4000 stripes, `crypto/afsplit.c`) is decrypted with it as
//! sectors numbered from 0; merging the stripes gives a candidate master
//! key; PBKDF2 of the candidate with the header's salt and iterations must
//! equal the header's 20-byte digest.
//!
//! Bounds: the key material (up to 256 000 bytes) is read, decrypted and
//! merged in chunks of [`CHUNK_BYTES`] on the stack; nothing is allocated.
//! The work is PBKDF2 iterations, which the caller caps with
//! [`UnlockLimits::max_iterations`]: the limit is checked before each slot
//! is tried, so an image asking for more is refused before any spinning.

use zeroize::{Zeroize, Zeroizing};

use super::error::CryptoError;
use super::hash::{HashAlgorithm, MAX_DIGEST_BYTES};
use super::luks::{LuksHeader, DIGEST_BYTES, STRIPES};
use super::sector::{SectorCipher, SECTOR_BYTES};
use crate::block::BlockRead;

/// The longest master key: AES-256 in XTS mode, two 32-byte keys.
pub const MAX_MASTER_KEY_BYTES: usize = 64;

/// Key material is read and decrypted this many bytes at a time.
pub const CHUNK_BYTES: usize = 8 * SECTOR_BYTES;

/// A master key, zeroized when dropped.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; MAX_MASTER_KEY_BYTES],
    len: usize,
}

impl MasterKey {
    /// Copies a key of at most [`MAX_MASTER_KEY_BYTES`].
    pub fn new(key: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; MAX_MASTER_KEY_BYTES];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(Self {
            bytes,
            len: key.len(),
        })
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for MasterKey {}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MasterKey({} bytes, hidden)", self.len)
    }
}

/// How much work unlocking may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnlockLimits {
    /// PBKDF2 iterations, summed over every slot tried and every master key
    /// digest checked. QEMU 7.2 calibrates a slot to `iter-time` (default
    /// 2 s) of its own hashing and the digest to an eighth of that: with
    /// `iter-time=10` it wrote 26 481 SHA-256 slot iterations on this
    /// project's (loaded) 2-core machine, so about 5 million for the
    /// default, and more on a faster CPU. The default, 50 million, opens
    /// such images with room to spare (about 10 s of PBKDF2-SHA256 here at
    /// worst), and refuses a header asking for billions before any work.
    pub max_iterations: u64,
}

impl Default for UnlockLimits {
    fn default() -> Self {
        Self {
            max_iterations: 50_000_000,
        }
    }
}

/// The LUKS header area of a store: `len` bytes from `offset`, with bytes
/// past the end of the store reading as zeros (QEMU's file reads do).
///
/// For a qcow2 image it is the full disk encryption header extension's
/// (offset, length); for a raw LUKS file, offset 0 and the payload offset.
#[derive(Debug, Clone, Copy)]
pub struct KeyArea<'s, R: ?Sized> {
    storage: &'s R,
    offset: u64,
    len: u64,
}

impl<'s, R: BlockRead + ?Sized> KeyArea<'s, R> {
    /// The area of `len` bytes at `offset` of `storage`.
    pub fn new(storage: &'s R, offset: u64, len: u64) -> Self {
        Self {
            storage,
            offset,
            len,
        }
    }

    /// Reads `buf.len()` bytes at `at` from the start of the area.
    fn read(&self, at: u64, buf: &mut [u8]) -> Result<(), CryptoError<R::Error>> {
        let offset = self.offset.saturating_add(at);
        let io = |source| CryptoError::Io {
            offset,
            len: buf.len(),
            source,
        };
        let size = self.storage.size().map_err(io)?;
        let inside = usize::try_from(size.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let (present, past_end) = buf.split_at_mut(inside);
        if !present.is_empty() {
            self.storage
                .read_at(offset, present)
                .map_err(|source| CryptoError::Io {
                    offset,
                    len: present.len(),
                    source,
                })?;
        }
        past_end.fill(0);
        Ok(())
    }
}

/// Unlocks the master key with `passphrase`, trying the enabled slots in order.
///
/// QEMU passes the secret as a C string: a passphrase is used up to its first NUL.
pub fn unlock<R: BlockRead + ?Sized>(
    header: &LuksHeader,
    area: &KeyArea<'_, R>,
    passphrase: &[u8],
    limits: &UnlockLimits,
) -> Result<MasterKey, CryptoError<R::Error>> {
    let passphrase = match passphrase.iter().position(|&b| b == 0) {
        Some(nul) => &passphrase[..nul],
        None => passphrase,
    };
    let mut spent = 0u64;
    for (index, slot) in header.slots().iter().enumerate() {
        if !slot.active {
            continue;
        }
        let index = index as u8;
        let needed = spent
            .saturating_add(u64::from(slot.iterations))
            .saturating_add(u64::from(header.master_key_iterations()));
        if needed > limits.max_iterations {
            return Err(CryptoError::IterationLimit {
                slot: Some(index),
                needed,
                limit: limits.max_iterations,
            });
        }
        spent = needed;
        let material_bytes = header.key_material_bytes();
        if !material_bytes.is_multiple_of(SECTOR_BYTES as u64) {
            return Err(CryptoError::KeyMaterialUnaligned {
                slot: index,
                bytes: material_bytes,
            });
        }
        let end = slot.key_offset() + material_bytes;
        if end > area.len {
            return Err(CryptoError::KeyMaterialOutsideHeader {
                slot: index,
                end,
                area_len: area.len,
            });
        }

        let key_bytes = header.master_key_bytes();
        let mut slot_key = Zeroizing::new([0u8; MAX_MASTER_KEY_BYTES]);
        header.spec().hash.pbkdf2(
            passphrase,
            &slot.salt,
            slot.iterations,
            &mut slot_key[..key_bytes],
        );
        let slot_cipher =
            SectorCipher::new(header.spec(), &slot_key[..key_bytes]).map_err(CryptoError::widen)?;
        let candidate = merge_key_material(header, area, &slot_cipher, slot.key_offset())?;
        if digest_matches(header, candidate.as_bytes()) {
            return Ok(candidate);
        }
    }
    Err(CryptoError::WrongPassphrase)
}

/// Accepts a master key the caller already has, after checking it against
/// the header's digest (which costs the header's master key iterations).
pub fn check_master_key(
    header: &LuksHeader,
    key: &[u8],
    limits: &UnlockLimits,
) -> Result<MasterKey, CryptoError> {
    let needed = u64::from(header.master_key_iterations());
    if needed > limits.max_iterations {
        return Err(CryptoError::IterationLimit {
            slot: None,
            needed,
            limit: limits.max_iterations,
        });
    }
    if key.len() != header.master_key_bytes() || !digest_matches(header, key) {
        return Err(CryptoError::WrongMasterKey);
    }
    MasterKey::new(key).ok_or(CryptoError::WrongMasterKey)
}

fn digest_matches(header: &LuksHeader, key: &[u8]) -> bool {
    let mut digest = Zeroizing::new([0u8; DIGEST_BYTES]);
    header.spec().hash.pbkdf2(
        key,
        header.master_key_salt(),
        header.master_key_iterations(),
        &mut digest[..],
    );
    // Not secret-dependent in a way that matters: the digest is public in the header.
    digest[..] == header.master_key_digest()[..]
}

/// Reads, decrypts and merges one slot's stripes into a candidate master key.
fn merge_key_material<R: BlockRead + ?Sized>(
    header: &LuksHeader,
    area: &KeyArea<'_, R>,
    slot_cipher: &SectorCipher,
    key_offset: u64,
) -> Result<MasterKey, CryptoError<R::Error>> {
    let mut merger = StripeMerger::new(header.spec().hash, header.master_key_bytes());
    let total = header.key_material_bytes();
    let mut chunk = Zeroizing::new([0u8; CHUNK_BYTES]);
    let mut done = 0u64;
    while done < total {
        let len = (total - done).min(CHUNK_BYTES as u64) as usize;
        let chunk = &mut chunk[..len];
        area.read(key_offset + done, chunk)?;
        // Key material sectors count from 0 at the slot's first sector.
        slot_cipher
            .decrypt_sectors(done / SECTOR_BYTES as u64, chunk)
            .map_err(CryptoError::widen)?;
        merger.feed(chunk);
        done += len as u64;
    }
    Ok(merger.finish())
}

/// `qcrypto_afsplit_decode`, fed a stream of bytes: for each of the first
/// 3999 stripes `block = diffuse(block ^ stripe)`; the key is `block ^ last stripe`.
struct StripeMerger {
    hash: HashAlgorithm,
    key_bytes: usize,
    stripes_done: u32,
    filled: usize,
    block: Zeroizing<[u8; MAX_MASTER_KEY_BYTES]>,
    stripe: Zeroizing<[u8; MAX_MASTER_KEY_BYTES]>,
    key: Zeroizing<[u8; MAX_MASTER_KEY_BYTES]>,
}

impl StripeMerger {
    fn new(hash: HashAlgorithm, key_bytes: usize) -> Self {
        debug_assert!(key_bytes <= MAX_MASTER_KEY_BYTES && MAX_DIGEST_BYTES > 0);
        Self {
            hash,
            key_bytes,
            stripes_done: 0,
            filled: 0,
            block: Zeroizing::new([0; MAX_MASTER_KEY_BYTES]),
            stripe: Zeroizing::new([0; MAX_MASTER_KEY_BYTES]),
            key: Zeroizing::new([0; MAX_MASTER_KEY_BYTES]),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.stripes_done < STRIPES {
            let take = (self.key_bytes - self.filled).min(bytes.len());
            self.stripe[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == self.key_bytes {
                self.finish_stripe();
            }
        }
    }

    fn finish_stripe(&mut self) {
        let n = self.key_bytes;
        self.filled = 0;
        self.stripes_done += 1;
        if self.stripes_done < STRIPES {
            for (b, s) in self.block[..n].iter_mut().zip(&self.stripe[..n]) {
                *b ^= s;
            }
            self.hash.diffuse(&mut self.block[..n]);
        } else {
            for ((k, b), s) in self.key[..n]
                .iter_mut()
                .zip(&self.block[..n])
                .zip(&self.stripe[..n])
            {
                *k = b ^ s;
            }
        }
    }

    fn finish(self) -> MasterKey {
        MasterKey::new(&self.key[..self.key_bytes]).expect("at most 64 bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The splitter QEMU uses to write a slot, with fixed "random" stripes.
    fn split(hash: HashAlgorithm, key: &[u8], out: &mut [u8]) {
        let n = key.len();
        let mut block = [0u8; 64];
        for i in 0..(STRIPES as usize - 1) {
            for (j, byte) in out[i * n..(i + 1) * n].iter_mut().enumerate() {
                *byte = (i * 7 + j * 13) as u8;
            }
            for j in 0..n {
                block[j] ^= out[i * n + j];
            }
            hash.diffuse(&mut block[..n]);
        }
        let last = (STRIPES as usize - 1) * n;
        for j in 0..n {
            out[last + j] = key[j] ^ block[j];
        }
    }

    #[test]
    fn merging_undoes_splitting_in_any_chunking() {
        let key: [u8; 32] = core::array::from_fn(|i| 200 - i as u8);
        let mut material = [0u8; 32 * STRIPES as usize];
        split(HashAlgorithm::Sha1, &key, &mut material);
        for chunk in [1usize, 5, 512, 4096] {
            let mut merger = StripeMerger::new(HashAlgorithm::Sha1, 32);
            for piece in material.chunks(chunk) {
                merger.feed(piece);
            }
            assert_eq!(merger.finish().as_bytes(), &key);
        }
    }

    #[test]
    fn key_area_reads_zeros_past_the_end_of_the_store() {
        let store = [1u8; 10];
        let area = KeyArea::new(&store[..], 6, 100);
        let mut buf = [9u8; 8];
        area.read(0, &mut buf).unwrap();
        assert_eq!(buf, [1, 1, 1, 1, 0, 0, 0, 0]);
        area.read(50, &mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
    }
}
