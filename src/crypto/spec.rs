//! What a LUKS header's three text fields mean: the cipher, its block mode,
//! the IV generator and the hashes, looked up as QEMU 7.2 does
//! (`qcrypto_block_luks_parse_header` in `crypto/block-luks.c`).

use super::error::{CryptoError, SpecName};
use super::hash::HashAlgorithm;

/// A block cipher with its key size: every one QEMU 7.2 reads for LUKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherAlgorithm {
    /// AES with a 16-byte key.
    Aes128,
    /// AES with a 24-byte key.
    Aes192,
    /// AES with a 32-byte key.
    Aes256,
    /// Serpent with a 16-byte key.
    Serpent128,
    /// Serpent with a 24-byte key.
    Serpent192,
    /// Serpent with a 32-byte key.
    Serpent256,
    /// Twofish with a 16-byte key.
    Twofish128,
    /// Twofish with a 24-byte key.
    Twofish192,
    /// Twofish with a 32-byte key.
    Twofish256,
    /// CAST-128 (8-byte blocks, a 16-byte key): ECB, CBC and CTR only.
    Cast5_128,
}

/// The cipher families: AES, serpent and twofish have 16-, 24- and 32-byte
/// keys, cast5 only 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Aes,
    Serpent,
    Twofish,
    Cast5,
}

impl Family {
    /// QEMU's (and the LUKS header's) name of the family.
    fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"aes" => Some(Family::Aes),
            b"serpent" => Some(Family::Serpent),
            b"twofish" => Some(Family::Twofish),
            b"cast5" => Some(Family::Cast5),
            _ => None,
        }
    }

    /// The member whose key is `key_bytes` long, if any.
    fn with_key(self, key_bytes: usize) -> Option<CipherAlgorithm> {
        use CipherAlgorithm::*;
        Some(match (self, key_bytes) {
            (Family::Aes, 16) => Aes128,
            (Family::Aes, 24) => Aes192,
            (Family::Aes, 32) => Aes256,
            (Family::Serpent, 16) => Serpent128,
            (Family::Serpent, 24) => Serpent192,
            (Family::Serpent, 32) => Serpent256,
            (Family::Twofish, 16) => Twofish128,
            (Family::Twofish, 24) => Twofish192,
            (Family::Twofish, 32) => Twofish256,
            (Family::Cast5, 16) => Cast5_128,
            _ => return None,
        })
    }
}

impl CipherAlgorithm {
    /// Bytes of key for one cipher instance.
    pub fn key_bytes(self) -> usize {
        use CipherAlgorithm::*;
        match self {
            Aes128 | Serpent128 | Twofish128 | Cast5_128 => 16,
            Aes192 | Serpent192 | Twofish192 => 24,
            Aes256 | Serpent256 | Twofish256 => 32,
        }
    }

    /// QEMU's name (`qemu-img info` prints it), e.g. `aes-256`.
    pub fn name(self) -> &'static str {
        use CipherAlgorithm::*;
        match self {
            Aes128 => "aes-128",
            Aes192 => "aes-192",
            Aes256 => "aes-256",
            Serpent128 => "serpent-128",
            Serpent192 => "serpent-192",
            Serpent256 => "serpent-256",
            Twofish128 => "twofish-128",
            Twofish192 => "twofish-192",
            Twofish256 => "twofish-256",
            Cast5_128 => "cast5-128",
        }
    }

    fn family(self) -> Family {
        use CipherAlgorithm::*;
        match self {
            Aes128 | Aes192 | Aes256 => Family::Aes,
            Serpent128 | Serpent192 | Serpent256 => Family::Serpent,
            Twofish128 | Twofish192 | Twofish256 => Family::Twofish,
            Cast5_128 => Family::Cast5,
        }
    }

    /// Bytes per cipher block (and so per IV): 8 for cast5, 16 for the others.
    pub fn block_bytes(self) -> usize {
        match self {
            CipherAlgorithm::Cast5_128 => 8,
            _ => 16,
        }
    }

    /// `qcrypto_block_luks_cipher_name_lookup`: the header's cipher name and
    /// per-cipher key size (the master key length, halved for XTS).
    fn from_name(name: &[u8], key_bytes: u32) -> Result<Self, CryptoError> {
        Family::from_name(name)
            .and_then(|family| family.with_key(key_bytes as usize))
            .ok_or(CryptoError::UnsupportedCipher {
                name: SpecName::new(name),
                key_bytes,
            })
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
        // XTS needs 16-byte blocks: QEMU refuses cast5-xts when it builds
        // the cipher ("Unsupported cipher mode xts"), here at parse time.
        if mode == CipherMode::Xts && cipher.block_bytes() != 16 {
            return Err(CryptoError::UnsupportedMode {
                name: SpecName::new(mode_name),
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
/// (AES-128 data with sha256 ESSIV encrypts sector numbers with AES-256;
/// serpent and twofish likewise stay in their family).
fn essiv_cipher(
    cipher: CipherAlgorithm,
    hash: HashAlgorithm,
) -> Result<CipherAlgorithm, CryptoError> {
    let digest_bytes = hash.digest_bytes();
    let essiv = if digest_bytes == cipher.key_bytes() {
        Some(cipher)
    } else {
        cipher.family().with_key(digest_bytes)
    };
    match essiv {
        // QEMU reads cast5 with essiv:md5, but `qemu-img create` refuses to
        // make one, so there is no QEMU-made image to check it against.
        Some(CipherAlgorithm::Cast5_128) => Err(CryptoError::CipherNotImplemented {
            name: SpecName::new(b"cast5"),
            key_bytes: 16,
        }),
        Some(essiv) => Ok(essiv),
        None => Err(CryptoError::EssivKeySize { digest_bytes }),
    }
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
    fn serpent_and_twofish_keep_their_family_for_essiv() {
        let spec = CipherSpec::parse(b"twofish", b"xts-plain64", b"sha256", 64).unwrap();
        assert_eq!(spec.cipher, CipherAlgorithm::Twofish256);
        assert_eq!(spec.cipher.name(), "twofish-256");
        let spec = CipherSpec::parse(b"serpent", b"cbc-essiv:sha256", b"sha1", 16).unwrap();
        assert_eq!(spec.cipher, CipherAlgorithm::Serpent128);
        assert_eq!(spec.essiv_cipher, Some(CipherAlgorithm::Serpent256));
        let spec = CipherSpec::parse(b"twofish", b"cbc-essiv:md5", b"sha1", 24).unwrap();
        assert_eq!(spec.essiv_cipher, Some(CipherAlgorithm::Twofish128));
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
            CipherSpec::parse(b"cast5", b"cbc-essiv:md5", b"sha256", 16),
            Err(CryptoError::CipherNotImplemented { key_bytes: 16, .. })
        ));
        assert!(matches!(
            CipherSpec::parse(b"cast5", b"xts-plain64", b"sha256", 32),
            Err(CryptoError::UnsupportedMode { .. })
        ));
        assert!(matches!(
            CipherSpec::parse(b"cast5", b"cbc-plain64", b"sha256", 24),
            Err(CryptoError::UnsupportedCipher { key_bytes: 24, .. })
        ));
        assert_eq!(
            CipherSpec::parse(b"cast5", b"ctr-plain", b"sha256", 16)
                .unwrap()
                .cipher,
            CipherAlgorithm::Cast5_128
        );
        assert!(matches!(
            CipherSpec::parse(b"serpent", b"cbc-plain64", b"sha256", 20),
            Err(CryptoError::UnsupportedCipher { key_bytes: 20, .. })
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
