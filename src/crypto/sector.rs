//! Decrypting runs of 512-byte sectors in place, as QEMU's
//! `qcrypto_block_cipher_decrypt_helper` (`crypto/block.c`) does: each
//! sector is decrypted on its own, its IV made from its sector number.
//!
//! The ciphers are RustCrypto's `aes` and `serpent` (0.6, adapted to the
//! `cipher` 0.4 traits in the private module `crypto::serpent`), this
//! crate's own twofish (`crypto::twofish`: RustCrypto's is 50 times slower
//! than QEMU's) (16-byte blocks, all modes) and RustCrypto's `cast5` (8-byte blocks: ECB, CBC and CTR, with the
//! first 8 bytes of the IV, as QEMU's IV length is the block length). The key schedules are built
//! once; a call allocates nothing, and the key schedules are zeroized when
//! the [`SectorCipher`] is dropped (the cipher crates' `zeroize` features;
//! CBC and CTR work on short-lived copies that zeroize themselves too).
//!
//! XTS is written here rather than taken from `xts-mode`, which decrypts
//! one block at a time: computing a sector's 32 tweaks first and handing
//! all 32 blocks to the cipher at once lets AES-NI pipeline them, measured
//! 3 to 4 times faster (aes-256-xts, 64 MiB). Sectors are always 512 bytes,
//! so there is no ciphertext stealing. `xts-mode` stays the reference in
//! the tests.

use super::serpent::Serpent;
use super::twofish::Twofish;
use aes::{Aes128, Aes192, Aes256};
use cast5::Cast5;
use cipher::inout::InOutBuf;
use cipher::{
    BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockSizeUser, InnerIvInit, KeyInit,
    StreamCipher,
};
use zeroize::Zeroizing;

use super::error::{CryptoError, SpecName};
use super::hash::{HashAlgorithm, MAX_DIGEST_BYTES};
use super::spec::{CipherAlgorithm, CipherMode, CipherSpec, IvGenerator};

/// LUKS and legacy AES encrypt in 512-byte sectors (`QCRYPTO_BLOCK_LUKS_SECTOR_SIZE`).
pub const SECTOR_BYTES: usize = 512;

/// The largest block of an implemented cipher, so every IV fits in it
/// (cast5 uses the first 8 bytes).
const BLOCK_BYTES: usize = 16;

/// cast5's block, and so its IV.
const CAST5_BLOCK_BYTES: usize = 8;

/// A 16-byte-block cipher the modes below can drive.
trait Block16:
    BlockCipher
    + BlockEncrypt
    + BlockDecrypt
    + KeyInit
    + Clone
    + BlockSizeUser<BlockSize = cipher::consts::U16>
{
}

impl<C> Block16 for C where
    C: BlockCipher
        + BlockEncrypt
        + BlockDecrypt
        + KeyInit
        + Clone
        + BlockSizeUser<BlockSize = cipher::consts::U16>
{
}

/// One block mode keyed with one cipher type.
enum Keyed<C: Block16> {
    Ecb(C),
    Cbc(C),
    Ctr(C),
    /// Data cipher, tweak cipher.
    Xts(C, C),
}

impl<C: Block16> Keyed<C> {
    /// `key` has the length [`CipherSpec::master_key_bytes`] gives (checked by the caller).
    fn new(mode: CipherMode, key: &[u8]) -> Self {
        let cipher = |bytes: &[u8]| C::new_from_slice(bytes).expect("key length checked");
        match mode {
            CipherMode::Ecb => Keyed::Ecb(cipher(key)),
            CipherMode::Cbc => Keyed::Cbc(cipher(key)),
            CipherMode::Ctr => Keyed::Ctr(cipher(key)),
            // The first half keys the data, the second the tweak (IEEE 1619, nettle, QEMU).
            CipherMode::Xts => {
                let (data, tweak) = key.split_at(key.len() / 2);
                Keyed::Xts(cipher(data), cipher(tweak))
            }
        }
    }

    fn decrypt_sector(&self, iv: [u8; BLOCK_BYTES], sector: &mut [u8]) {
        match self {
            Keyed::Ecb(cipher) => {
                let (blocks, _) = InOutBuf::from(sector).into_chunks();
                cipher.decrypt_blocks_inout(blocks);
            }
            Keyed::Cbc(cipher) => {
                let mut decryptor = cbc::Decryptor::<C>::inner_iv_init(cipher.clone(), &iv.into());
                let (blocks, _) = InOutBuf::from(sector).into_chunks();
                decryptor.decrypt_blocks_inout_mut(blocks);
            }
            Keyed::Ctr(cipher) => {
                let core = ctr::CtrCore::<C, ctr::flavors::Ctr128BE>::inner_iv_init(
                    cipher.clone(),
                    &iv.into(),
                );
                let mut keystream = ctr::Ctr128BE::<C>::from_core(core);
                keystream.apply_keystream(sector);
            }
            Keyed::Xts(data, tweak) => xts_decrypt_sector(data, tweak, iv, sector),
        }
    }
}

/// cast5 in one of the modes QEMU has for it (no XTS: its blocks are 8 bytes).
enum Cast5Keyed {
    Ecb(Cast5),
    Cbc(Cast5),
    /// nettle's CTR increments the whole block as one big-endian number: 64 bits here.
    Ctr(Cast5),
}

impl Cast5Keyed {
    /// `key` is 16 bytes (checked by the caller); XTS is refused
    /// ([`CipherSpec::parse`] does too, but a spec's fields are public).
    fn new(mode: CipherMode, key: &[u8]) -> Result<Self, CryptoError> {
        let cipher = || Cast5::new_from_slice(key).expect("key length checked");
        Ok(match mode {
            CipherMode::Ecb => Cast5Keyed::Ecb(cipher()),
            CipherMode::Cbc => Cast5Keyed::Cbc(cipher()),
            CipherMode::Ctr => Cast5Keyed::Ctr(cipher()),
            // Checked before keying: an XTS master key is twice cast5's key.
            CipherMode::Xts => {
                return Err(CryptoError::UnsupportedMode {
                    name: SpecName::new(b"xts"),
                })
            }
        })
    }

    fn decrypt_sector(&self, iv: [u8; BLOCK_BYTES], sector: &mut [u8]) {
        let mut short_iv = [0u8; CAST5_BLOCK_BYTES];
        short_iv.copy_from_slice(&iv[..CAST5_BLOCK_BYTES]);
        match self {
            Cast5Keyed::Ecb(cipher) => {
                let (blocks, _) = InOutBuf::from(sector).into_chunks();
                cipher.decrypt_blocks_inout(blocks);
            }
            Cast5Keyed::Cbc(cipher) => {
                let mut decryptor =
                    cbc::Decryptor::<Cast5>::inner_iv_init(cipher.clone(), &short_iv.into());
                let (blocks, _) = InOutBuf::from(sector).into_chunks();
                decryptor.decrypt_blocks_inout_mut(blocks);
            }
            Cast5Keyed::Ctr(cipher) => {
                let core = ctr::CtrCore::<Cast5, ctr::flavors::Ctr64BE>::inner_iv_init(
                    cipher.clone(),
                    &short_iv.into(),
                );
                let mut keystream = ctr::Ctr64BE::<Cast5>::from_core(core);
                keystream.apply_keystream(sector);
            }
        }
    }
}

/// Blocks in a sector.
const SECTOR_BLOCKS: usize = SECTOR_BYTES / BLOCK_BYTES;

/// XTS (IEEE 1619) decryption of one whole sector: tweak `T_0 = E_tweak(iv)`,
/// `T_{i+1} = T_i * x` in GF(2^128) (little-endian, reduction 0x87), and
/// block `i` is `D_data(C_i ^ T_i) ^ T_i`.
fn xts_decrypt_sector<C: Block16>(data: &C, tweak: &C, iv: [u8; BLOCK_BYTES], sector: &mut [u8]) {
    let mut tweaks = [[0u8; BLOCK_BYTES]; SECTOR_BLOCKS];
    let mut current = iv;
    tweak.encrypt_block((&mut current).into());
    for slot in tweaks.iter_mut() {
        *slot = current;
        current = gf128_double(current);
    }
    let xor_tweaks = |sector: &mut [u8]| {
        for (block, tweak) in sector.chunks_exact_mut(BLOCK_BYTES).zip(&tweaks) {
            for (byte, t) in block.iter_mut().zip(tweak) {
                *byte ^= t;
            }
        }
    };
    xor_tweaks(sector);
    let (blocks, _) = InOutBuf::from(&mut *sector).into_chunks();
    data.decrypt_blocks_inout(blocks);
    xor_tweaks(sector);
}

/// Multiplication by x in XTS's GF(2^128), the tweak read as a little-endian number.
fn gf128_double(tweak: [u8; BLOCK_BYTES]) -> [u8; BLOCK_BYTES] {
    let value = u128::from_le_bytes(tweak);
    let carry = if value >> 127 != 0 { 0x87 } else { 0 };
    ((value << 1) ^ carry).to_le_bytes()
}

/// The data cipher, for whichever cipher and key size the header names.
// Key schedules live inline (up to about 2.3 KiB for twofish-XTS) because
// there is no allocator; one is built per image, so the size is the bound.
// Serpent and twofish take every key size in one type (`new_from_slice`).
#[allow(clippy::large_enum_variant)]
enum DataCipher {
    Aes128(Keyed<Aes128>),
    Aes192(Keyed<Aes192>),
    Aes256(Keyed<Aes256>),
    Serpent(Keyed<Serpent>),
    Twofish(Keyed<Twofish>),
    Cast5(Cast5Keyed),
}

impl DataCipher {
    fn new(cipher: CipherAlgorithm, mode: CipherMode, key: &[u8]) -> Result<Self, CryptoError> {
        use CipherAlgorithm::*;
        Ok(match cipher {
            Aes128 => DataCipher::Aes128(Keyed::new(mode, key)),
            Aes192 => DataCipher::Aes192(Keyed::new(mode, key)),
            Aes256 => DataCipher::Aes256(Keyed::new(mode, key)),
            Serpent128 | Serpent192 | Serpent256 => DataCipher::Serpent(Keyed::new(mode, key)),
            Twofish128 | Twofish192 | Twofish256 => DataCipher::Twofish(Keyed::new(mode, key)),
            Cast5_128 => DataCipher::Cast5(Cast5Keyed::new(mode, key)?),
        })
    }

    fn decrypt_sector(&self, iv: [u8; BLOCK_BYTES], sector: &mut [u8]) {
        match self {
            DataCipher::Aes128(keyed) => keyed.decrypt_sector(iv, sector),
            DataCipher::Aes192(keyed) => keyed.decrypt_sector(iv, sector),
            DataCipher::Aes256(keyed) => keyed.decrypt_sector(iv, sector),
            DataCipher::Serpent(keyed) => keyed.decrypt_sector(iv, sector),
            DataCipher::Twofish(keyed) => keyed.decrypt_sector(iv, sector),
            DataCipher::Cast5(keyed) => keyed.decrypt_sector(iv, sector),
        }
    }
}

/// The ESSIV cipher: encrypts the little-endian sector number in ECB.
#[allow(clippy::large_enum_variant)] // inline for the same reason as DataCipher
enum EssivCipher {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
    Serpent(Serpent),
    Twofish(Twofish),
}

impl EssivCipher {
    /// `key` is `cipher.key_bytes()` long (the caller cuts the digest to
    /// it). cast5 ESSIV is refused, as [`CipherSpec::parse`] does.
    fn new(cipher: CipherAlgorithm, key: &[u8]) -> Result<Self, CryptoError> {
        use CipherAlgorithm::*;
        fn keyed<C: KeyInit>(key: &[u8]) -> C {
            C::new_from_slice(key).expect("ESSIV key cut to the cipher's key size")
        }
        Ok(match cipher {
            Aes128 => EssivCipher::Aes128(keyed(key)),
            Aes192 => EssivCipher::Aes192(keyed(key)),
            Aes256 => EssivCipher::Aes256(keyed(key)),
            Serpent128 | Serpent192 | Serpent256 => EssivCipher::Serpent(keyed(key)),
            Twofish128 | Twofish192 | Twofish256 => EssivCipher::Twofish(keyed(key)),
            Cast5_128 => {
                return Err(CryptoError::CipherNotImplemented {
                    name: SpecName::new(b"cast5"),
                    key_bytes: 16,
                })
            }
        })
    }

    fn encrypt(&self, block: &mut [u8; BLOCK_BYTES]) {
        let block = block.into();
        match self {
            EssivCipher::Aes128(cipher) => cipher.encrypt_block(block),
            EssivCipher::Aes192(cipher) => cipher.encrypt_block(block),
            EssivCipher::Aes256(cipher) => cipher.encrypt_block(block),
            EssivCipher::Serpent(cipher) => cipher.encrypt_block(block),
            EssivCipher::Twofish(cipher) => cipher.encrypt_block(block),
        }
    }
}

/// How IVs are made (`crypto/ivgen-*.c`).
#[allow(clippy::large_enum_variant)] // inline for the same reason as DataCipher
enum IvSource {
    /// ECB has no IV.
    None,
    Plain,
    Plain64,
    Essiv(EssivCipher),
}

impl IvSource {
    fn iv(&self, sector: u64) -> [u8; BLOCK_BYTES] {
        let mut iv = [0u8; BLOCK_BYTES];
        match self {
            IvSource::None => {}
            // Only the low 32 bits: `plain` repeats every 2 TiB, by design.
            IvSource::Plain => iv[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
            IvSource::Plain64 => iv[..8].copy_from_slice(&sector.to_le_bytes()),
            IvSource::Essiv(cipher) => {
                iv[..8].copy_from_slice(&sector.to_le_bytes());
                cipher.encrypt(&mut iv);
            }
        }
        iv
    }
}

/// Decrypts 512-byte sectors in place with one key.
pub struct SectorCipher {
    data: DataCipher,
    iv: IvSource,
}

impl SectorCipher {
    /// A cipher for `spec` keyed with `key`, which must be
    /// [`CipherSpec::master_key_bytes`] long.
    pub fn new(spec: &CipherSpec, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != spec.master_key_bytes() {
            return Err(CryptoError::WrongMasterKey);
        }
        let iv = match (spec.mode, spec.ivgen, spec.essiv_cipher, spec.ivgen_hash) {
            // QEMU's IV length for ECB is 0: it never calls the generator.
            (CipherMode::Ecb, ..) => IvSource::None,
            (_, IvGenerator::Plain, ..) => IvSource::Plain,
            (_, IvGenerator::Plain64, ..) => IvSource::Plain64,
            (_, IvGenerator::Essiv, Some(essiv), Some(hash)) => {
                IvSource::Essiv(essiv_from_key(essiv, hash, key)?)
            }
            // CipherSpec::parse never yields ESSIV without its cipher and hash.
            (_, IvGenerator::Essiv, ..) => return Err(CryptoError::MissingIvHash),
        };
        Ok(Self {
            data: DataCipher::new(spec.cipher, spec.mode, key)?,
            iv,
        })
    }

    /// Decrypts `buf`, a whole number of sectors, in place; its first sector
    /// has number `first_sector` (what that number counts from is the
    /// caller's rule: see the module documentation of [`crate::crypto`]).
    pub fn decrypt_sectors(&self, first_sector: u64, buf: &mut [u8]) -> Result<(), CryptoError> {
        if !buf.len().is_multiple_of(SECTOR_BYTES) {
            return Err(CryptoError::PartialSector { len: buf.len() });
        }
        for (index, sector) in buf.chunks_exact_mut(SECTOR_BYTES).enumerate() {
            // Sector numbers wrap like QEMU's uint64_t counter.
            let number = first_sector.wrapping_add(index as u64);
            self.data.decrypt_sector(self.iv.iv(number), sector);
        }
        Ok(())
    }
}

// Every key schedule inside (AES, serpent or twofish data, tweak and ESSIV
// ciphers, and the short-lived CBC/CTR states) zeroizes itself on drop: the
// `zeroize` features of `aes`, `serpent`, `twofish`, `cbc` and `ctr`,
// checked by a test below.
impl zeroize::ZeroizeOnDrop for SectorCipher {}

/// `qcrypto_ivgen_essiv_init`: the ESSIV key is the hash of the whole master
/// key (both halves for XTS), cut to the ESSIV cipher's key length.
fn essiv_from_key(
    cipher: CipherAlgorithm,
    hash: HashAlgorithm,
    key: &[u8],
) -> Result<EssivCipher, CryptoError> {
    let mut salt = Zeroizing::new([0u8; MAX_DIGEST_BYTES]);
    hash.digest(key, &mut salt);
    let salt_bytes = cipher.key_bytes().min(hash.digest_bytes());
    EssivCipher::new(cipher, &salt[..salt_bytes])
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockEncryptMut, KeyIvInit};

    fn spec(mode: CipherMode, ivgen: IvGenerator) -> CipherSpec {
        CipherSpec {
            cipher: CipherAlgorithm::Aes128,
            mode,
            ivgen,
            ivgen_hash: Some(HashAlgorithm::Sha256),
            essiv_cipher: (ivgen == IvGenerator::Essiv).then_some(CipherAlgorithm::Aes256),
            hash: HashAlgorithm::Sha256,
        }
    }

    #[test]
    fn cbc_plain64_restarts_the_chain_at_each_sector_with_its_number() {
        let key = [7u8; 16];
        let plain: [u8; 1024] = core::array::from_fn(|i| i as u8);
        // Encrypt each sector independently with the reference construction.
        let mut encrypted = plain;
        for (index, sector) in encrypted.chunks_exact_mut(512).enumerate() {
            let mut iv = [0u8; 16];
            iv[..8].copy_from_slice(&(41u64 + index as u64).to_le_bytes());
            let mut encryptor = cbc::Encryptor::<Aes128>::new(&key.into(), &iv.into());
            for block in sector.chunks_exact_mut(16) {
                encryptor.encrypt_block_mut(block.into());
            }
        }
        let cipher = SectorCipher::new(&spec(CipherMode::Cbc, IvGenerator::Plain64), &key).unwrap();
        cipher.decrypt_sectors(41, &mut encrypted).unwrap();
        assert_eq!(encrypted, plain);
    }

    #[test]
    fn xts_matches_the_xts_mode_crate() {
        let key: [u8; 64] = core::array::from_fn(|i| (i * 3) as u8);
        let plain: [u8; 2048] = core::array::from_fn(|i| (i * 7 + 1) as u8);
        let reference = xts_mode::Xts128::new(
            Aes256::new_from_slice(&key[..32]).unwrap(),
            Aes256::new_from_slice(&key[32..]).unwrap(),
        );
        let mut encrypted = plain;
        for (index, sector) in encrypted.chunks_exact_mut(512).enumerate() {
            let mut tweak = [0u8; 16];
            tweak[..8].copy_from_slice(&(u64::MAX - 1).wrapping_add(index as u64).to_le_bytes());
            reference.encrypt_sector(sector, tweak);
        }
        let mut spec = spec(CipherMode::Xts, IvGenerator::Plain64);
        spec.cipher = CipherAlgorithm::Aes256;
        let cipher = SectorCipher::new(&spec, &key).unwrap();
        // Sector numbers wrap past u64::MAX, as QEMU's counter does.
        cipher
            .decrypt_sectors(u64::MAX - 1, &mut encrypted)
            .unwrap();
        assert_eq!(encrypted, plain);
    }

    #[test]
    fn gf128_doubling_carries_across_halves_and_reduces() {
        let mut low_top = [0u8; 16];
        low_top[7] = 0x80;
        let mut expected = [0u8; 16];
        expected[8] = 1;
        assert_eq!(gf128_double(low_top), expected);
        let mut high_top = [0u8; 16];
        high_top[15] = 0x80;
        let mut reduced = [0u8; 16];
        reduced[0] = 0x87;
        assert_eq!(gf128_double(high_top), reduced);
    }

    #[test]
    fn every_key_holder_zeroizes_on_drop() {
        fn zeroizes<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes::<Aes128>();
        zeroizes::<Aes192>();
        zeroizes::<Aes256>();
        zeroizes::<Serpent>();
        zeroizes::<Twofish>();
        zeroizes::<cbc::Decryptor<Aes256>>();
        zeroizes::<cbc::Decryptor<Serpent>>();
        zeroizes::<ctr::Ctr128BE<Twofish>>();
        zeroizes::<Cast5>();
        zeroizes::<cbc::Decryptor<Cast5>>();
        zeroizes::<ctr::Ctr64BE<Cast5>>();
        zeroizes::<ctr::Ctr128BE<Aes256>>();
        zeroizes::<SectorCipher>();
        zeroizes::<crate::crypto::MasterKey>();
    }

    #[test]
    fn plain_keeps_only_the_low_32_bits() {
        let plain = IvSource::Plain.iv(0x1_0000_0002);
        assert_eq!(plain, IvSource::Plain.iv(2));
        assert_ne!(IvSource::Plain64.iv(0x1_0000_0002), IvSource::Plain64.iv(2));
    }

    #[test]
    fn essiv_iv_is_the_encrypted_sector_number() {
        let key = [9u8; 16];
        let cipher = SectorCipher::new(&spec(CipherMode::Cbc, IvGenerator::Essiv), &key).unwrap();
        let mut salt = [0u8; 64];
        HashAlgorithm::Sha256.digest(&key, &mut salt);
        let essiv = Aes256::new_from_slice(&salt[..32]).unwrap();
        let mut expected = [0u8; 16];
        expected[..8].copy_from_slice(&5u64.to_le_bytes());
        essiv.encrypt_block((&mut expected).into());
        assert_eq!(cipher.iv.iv(5), expected);
    }

    #[test]
    fn cast5_uses_an_8_byte_iv_and_refuses_xts_and_essiv() {
        let key = [3u8; 16];
        let plain: [u8; 512] = core::array::from_fn(|i| (i * 5) as u8);
        let mut encrypted = plain;
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&9u64.to_le_bytes());
        let mut encryptor = cbc::Encryptor::<Cast5>::new(&key.into(), &iv.into());
        for block in encrypted.chunks_exact_mut(8) {
            encryptor.encrypt_block_mut(block.into());
        }
        let mut cast5 = spec(CipherMode::Cbc, IvGenerator::Plain64);
        cast5.cipher = CipherAlgorithm::Cast5_128;
        cast5.essiv_cipher = None;
        let cipher = SectorCipher::new(&cast5, &key).unwrap();
        cipher.decrypt_sectors(9, &mut encrypted).unwrap();
        assert_eq!(encrypted, plain);
        // A spec's fields are public: combinations parse refuses are refused here too.
        let mut xts = cast5;
        xts.mode = CipherMode::Xts;
        assert!(matches!(
            SectorCipher::new(&xts, &[3u8; 32]),
            Err(CryptoError::UnsupportedMode { .. })
        ));
        let mut essiv = cast5;
        essiv.ivgen = IvGenerator::Essiv;
        essiv.ivgen_hash = Some(HashAlgorithm::Md5);
        essiv.essiv_cipher = Some(CipherAlgorithm::Cast5_128);
        assert!(matches!(
            SectorCipher::new(&essiv, &key),
            Err(CryptoError::CipherNotImplemented { .. })
        ));
    }

    #[test]
    fn partial_sectors_and_wrong_key_lengths_are_refused() {
        let cipher =
            SectorCipher::new(&spec(CipherMode::Xts, IvGenerator::Plain64), &[1u8; 32]).unwrap();
        assert_eq!(
            cipher.decrypt_sectors(0, &mut [0u8; 100]),
            Err(CryptoError::PartialSector { len: 100 })
        );
        assert!(matches!(
            SectorCipher::new(&spec(CipherMode::Xts, IvGenerator::Plain64), &[1u8; 16]),
            Err(CryptoError::WrongMasterKey)
        ));
    }
}
