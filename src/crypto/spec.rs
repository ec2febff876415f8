//! What a LUKS header's three text fields mean: the cipher, its block mode,
//! the IV generator and the hashes, looked up as QEMU 7.2 does
//! (`qcrypto_block_luks_parse_header` in `crypto/block-luks.c`).

use super::error::{CryptoError, SpecName};
use super::hash::HashAlgorithm;

/// A block cipher with its key size. Only AES is implemented; QEMU also
/// reads cast5, serpent and twofish, which are refused with
/// [`CryptoError::CipherNotImplemented`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherAlgorithm {
    /// AES with a 16-byte key.
    Aes128,
    /// AES with a 24-byte key.
    Aes192,
    /// AES with a 32-byte key.
    Aes256,
}

impl CipherAlgorithm {
    /// Bytes of key for one cipher instance.
    pub fn key_bytes(self) -> usize {
        match self {
            CipherAlgorithm::Aes128 => 16,
            CipherAlgorithm::Aes192 => 24,
            CipherAlgorithm::Aes256 => 32,
        }
    }

    /// QEMU's name (`qemu-img info` prints it), e.g. `aes-256`.
    pub fn name(self) -> &'static str {
        match self {
            CipherAlgorithm::Aes128 => "aes-128",
            CipherAlgorithm::Aes192 => "aes-192",
            CipherAlgorithm::Aes256 => "aes-256",
        }
    }

    /// The AES variant whose key is `key_bytes` long, if any.
    fn aes_with_key(key_bytes: usize) -> Option<Self> {
        match key_bytes {
            16 => Some(CipherAlgorithm::Aes128),
            24 => Some(CipherAlgorithm::Aes192),
            32 => Some(CipherAlgorithm::Aes256),
            _ => None,
        }
    }

    /// `qcrypto_block_luks_cipher_name_lookup`: the header's cipher name and
    /// per-cipher key size (the master key length, halved for XTS).
    fn from_name(name: &[u8], key_bytes: u32) -> Result<Self, CryptoError> {
        let spec_name = SpecName::new(name);
        let not_implemented = CryptoError::CipherNotImplemented {
            name: spec_name,
            key_bytes,
        };
        match (name, key_bytes) {
            (b"aes", 16) => Ok(CipherAlgorithm::Aes128),
            (b"aes", 24) => Ok(CipherAlgorithm::Aes192),
            (b"aes", 32) => Ok(CipherAlgorithm::Aes256),
            (b"cast5", 16) | (b"serpent" | b"twofish", 16 | 24 | 32) => Err(not_implemented),
            _ => Err(CryptoError::UnsupportedCipher {
                name: spec_name,
                key_bytes,
            }),
        }
    }
}

/// How the cipher chains blocks within one 512-byte sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherMode {
    /// Each block alone; the IV generator is not used (QEMU's IV length is 0).
    Ecb,
    /// Cipher block chaining, the IV starting each sector.
    Cbc,
    /// XTS: the master key is two keys, the IV is the tweak.
    Xts,
    /// Counter mode, the IV the first counter block (big-endian increment, as nettle).
    Ctr,
}

impl CipherMode {
    fn from_name(name: &[u8]) -> Result<Self, CryptoError> {
        Ok(match name {
            b"ecb" => CipherMode::Ecb,
            b"cbc" => CipherMode::Cbc,
            b"xts" => CipherMode::Xts,
            b"ctr" => CipherMode::Ctr,
            _ => {
                return Err(CryptoError::UnsupportedMode {
                    name: SpecName::new(name),
                })
            }
        })
    }

    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            CipherMode::Ecb => "ecb",
            CipherMode::Cbc => "cbc",
            CipherMode::Xts => "xts",
            CipherMode::Ctr => "ctr",
        }
    }
}

/// How each sector's IV is made from its sector number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvGenerator {
    /// The low 32 bits of the sector number, little-endian, zero-padded.
    Plain,
    /// The sector number, little-endian 64 bits, zero-padded.
    Plain64,
    /// `plain64` encrypted with a cipher keyed by the hash of the master key.
    Essiv,
}

impl IvGenerator {
    fn from_name(name: &[u8]) -> Result<Self, CryptoError> {
        Ok(match name {
            b"plain" => IvGenerator::Plain,
            b"plain64" => IvGenerator::Plain64,
            b"essiv" => IvGenerator::Essiv,
            _ => {
                return Err(CryptoError::UnsupportedIvGenerator {
                    name: SpecName::new(name),
                })
            }
        })
    }

    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            IvGenerator::Plain => "plain",
            IvGenerator::Plain64 => "plain64",
            IvGenerator::Essiv => "essiv",
        }
    }
}

/// Everything needed to build a sector cipher from a key, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSpec {
    /// The data cipher.
    pub cipher: CipherAlgorithm,
    /// Its block mode.
    pub mode: CipherMode,
    /// The IV generator.
    pub ivgen: IvGenerator,
    /// The hash after `:` in the mode field; QEMU checks its name even for
    /// `plain`/`plain64`, which ignore it (dm-crypt compatibility).
    pub ivgen_hash: Option<HashAlgorithm>,
    /// The cipher ESSIV encrypts sector numbers with (`Some` only for ESSIV).
    pub essiv_cipher: Option<CipherAlgorithm>,
    /// The hash of PBKDF2 and of the anti-forensic splitter.
    pub hash: HashAlgorithm,
}

impl CipherSpec {
    /// Parses the three NUL-terminated text fields in QEMU's order; the
    /// cipher's key size comes from the header's master key length.
    pub fn parse(
        cipher_name: &[u8],
        cipher_mode: &[u8],
        hash_spec: &[u8],
        master_key_bytes: u32,
    ) -> Result<Self, CryptoError> {
        // "<mode>-<ivgen>[:<ivhash>]": split at the first '-', then at the first ':'.
        let dash =
            cipher_mode
                .iter()
                .position(|&b| b == b'-')
                .ok_or(CryptoError::BadModeFormat {
                    mode: SpecName::new(cipher_mode),
                })?;
        let (mode_name, ivgen_part) = (&cipher_mode[..dash], &cipher_mode[dash + 1..]);
        let (ivgen_name, ivhash_name) = match ivgen_part.iter().position(|&b| b == b':') {
            Some(colon) => (&ivgen_part[..colon], Some(&ivgen_part[colon + 1..])),
            None => (ivgen_part, None),
        };
        let ivgen_hash = ivhash_name.map(HashAlgorithm::from_name).transpose()?;
        let mode = CipherMode::from_name(mode_name)?;
        let cipher_key_bytes = if mode == CipherMode::Xts {
            master_key_bytes / 2
        } else {
            master_key_bytes
        };
        // An odd XTS key length halves to a size that no cipher has only if
        // the halves differ; QEMU halves with integer division too.
        let cipher = CipherAlgorithm::from_name(cipher_name, cipher_key_bytes)?;
        if mode == CipherMode::Xts && !master_key_bytes.is_multiple_of(2) {
            return Err(CryptoError::UnsupportedCipher {
                name: SpecName::new(cipher_name),
                key_bytes: master_key_bytes,
            });
        }
        let hash = HashAlgorithm::from_name(hash_spec)?;
        let ivgen = IvGenerator::from_name(ivgen_name)?;
        let essiv_cipher = match ivgen {
            IvGenerator::Essiv => {
                let ivgen_hash = ivgen_hash.ok_or(CryptoError::MissingIvHash)?;
                Some(essiv_cipher(cipher, ivgen_hash)?)
            }
            IvGenerator::Plain | IvGenerator::Plain64 => None,
        };
        Ok(Self {
            cipher,
            mode,
            ivgen,
            ivgen_hash,
            essiv_cipher,
            hash,
        })
    }

    /// Bytes of master key: the cipher's key, twice for XTS.
    pub fn master_key_bytes(&self) -> usize {
        match self.mode {
            CipherMode::Xts => 2 * self.cipher.key_bytes(),
            _ => self.cipher.key_bytes(),
        }
    }
}

/// `qcrypto_block_luks_essiv_cipher`: dm-crypt keys the ESSIV cipher with
/// the whole digest, so its key size follows the hash, not the data cipher
/// (AES-128 data with sha256 ESSIV encrypts sector numbers with AES-256).
fn essiv_cipher(
    cipher: CipherAlgorithm,
    hash: HashAlgorithm,
) -> Result<CipherAlgorithm, CryptoError> {
    let digest_bytes = hash.digest_bytes();
    if digest_bytes == cipher.key_bytes() {
        return Ok(cipher);
    }
    CipherAlgorithm::aes_with_key(digest_bytes).ok_or(CryptoError::EssivKeySize { digest_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_default_spec() {
        let spec = CipherSpec::parse(b"aes", b"xts-plain64", b"sha256", 64).unwrap();
        assert_eq!(spec.cipher, CipherAlgorithm::Aes256);
        assert_eq!(spec.mode, CipherMode::Xts);
        assert_eq!(spec.ivgen, IvGenerator::Plain64);
        assert_eq!(spec.essiv_cipher, None);
        assert_eq!(spec.master_key_bytes(), 64);
    }

    #[test]
    fn essiv_cipher_follows_the_digest_length() {
        let spec = CipherSpec::parse(b"aes", b"cbc-essiv:sha256", b"sha1", 16).unwrap();
        assert_eq!(spec.cipher, CipherAlgorithm::Aes128);
        assert_eq!(spec.essiv_cipher, Some(CipherAlgorithm::Aes256));
        let spec = CipherSpec::parse(b"aes", b"cbc-essiv:md5", b"sha1", 32).unwrap();
        assert_eq!(spec.essiv_cipher, Some(CipherAlgorithm::Aes128));
        assert_eq!(
            CipherSpec::parse(b"aes", b"cbc-essiv:sha1", b"sha1", 16),
            Err(CryptoError::EssivKeySize { digest_bytes: 20 })
        );
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        assert!(matches!(
            CipherSpec::parse(b"aes", b"xtsplain64", b"sha256", 64),
            Err(CryptoError::BadModeFormat { .. })
        ));
        assert!(matches!(
            CipherSpec::parse(b"aes", b"gcm-plain64", b"sha256", 32),
            Err(CryptoError::UnsupportedMode { .. })
        ));
        assert!(matches!(
            CipherSpec::parse(b"aes", b"cbc-plain64", b"sha256", 20),
            Err(CryptoError::UnsupportedCipher { key_bytes: 20, .. })
        ));
        assert!(matches!(
            CipherSpec::parse(b"twofish", b"xts-plain64", b"sha256", 64),
            Err(CryptoError::CipherNotImplemented { key_bytes: 32, .. })
        ));
        assert!(matches!(
            CipherSpec::parse(b"aes", b"cbc-plain64", b"whirlpool", 32),
            Err(CryptoError::UnsupportedHash { .. })
        ));
        assert!(matches!(
            CipherSpec::parse(b"aes", b"cbc-benbi", b"sha256", 32),
            Err(CryptoError::UnsupportedIvGenerator { .. })
        ));
        assert_eq!(
            CipherSpec::parse(b"aes", b"cbc-essiv", b"sha256", 32),
            Err(CryptoError::MissingIvHash)
        );
        // plain64 ignores the hash but QEMU still checks its name.
        assert!(matches!(
            CipherSpec::parse(b"aes", b"cbc-plain64:nohash", b"sha256", 32),
            Err(CryptoError::UnsupportedHash { .. })
        ));
    }
}
