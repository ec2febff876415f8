//! The encryption layer's one error enum, with the numbers that locate each problem.

use core::fmt;

/// One of the three text fields of a LUKS1 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecField {
    /// `cipher_name` (bytes 8..40), e.g. `aes`.
    CipherName,
    /// `cipher_mode` (bytes 40..72), e.g. `xts-plain64`.
    CipherMode,
    /// `hash_spec` (bytes 72..104), e.g. `sha256`.
    HashSpec,
}

impl fmt::Display for SpecField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecField::CipherName => "cipher name",
            SpecField::CipherMode => "cipher mode",
            SpecField::HashSpec => "hash spec",
        })
    }
}

/// A name copied from a LUKS header text field (at most 31 bytes before its NUL).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SpecName {
    bytes: [u8; 32],
    len: u8,
}

impl SpecName {
    /// Copies `text` (truncated to 32 bytes).
    pub fn new(text: &[u8]) -> Self {
        let len = text.len().min(32);
        let mut bytes = [0u8; 32];
        bytes[..len].copy_from_slice(&text[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name, lossily as text (up to the first byte that is not UTF-8).
    pub fn as_str(&self) -> &str {
        let bytes = self.as_bytes();
        match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl fmt::Debug for SpecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SpecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with one key slot of a LUKS header (QEMU's per-slot checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotProblem {
    /// LUKS1 fixes the anti-forensic stripes at 4000 (cryptsetup and QEMU).
    Stripes {
        /// The stripes field.
        stripes: u32,
    },
    /// The state is neither enabled (0x00AC71F3) nor disabled (0x0000DEAD).
    State {
        /// The active field.
        active: u32,
    },
    /// An enabled slot with zero PBKDF2 iterations.
    ZeroIterations,
    /// Its key material starts inside the 4 KiB header area.
    OverlapsHeader {
        /// First sector of the key material.
        key_offset_sector: u32,
    },
    /// Its key material runs into the payload.
    OverlapsPayload {
        /// First sector after the key material.
        end_sector: u64,
        /// The payload_offset field, in sectors.
        payload_offset_sector: u32,
    },
    /// Its key material overlaps that of a later slot.
    OverlapsSlot {
        /// The other slot.
        other: u8,
    },
}

/// Why a LUKS header is refused, a key cannot be unlocked, or sectors cannot be decrypted.
///
/// `E` is the storage's error type for the errors that come from reading key
/// material; parsing a header in memory uses the default, which cannot occur.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError<E = core::convert::Infallible> {
    /// Fewer bytes than the 592-byte LUKS1 header.
    HeaderTooShort {
        /// Bytes given.
        len: usize,
    },
    /// The first six bytes are not `LUKS\xba\xbe`.
    BadMagic {
        /// The bytes found.
        found: [u8; 6],
    },
    /// Only LUKS version 1 is read (QEMU 7.2 writes nothing else).
    UnsupportedVersion {
        /// The version field.
        version: u16,
    },
    /// A text field fills its 32 bytes without a terminating NUL.
    Unterminated {
        /// Which field.
        field: SpecField,
    },
    /// The payload starts inside the 4 KiB header area.
    PayloadOverlapsHeader {
        /// The payload_offset field, in 512-byte sectors.
        payload_offset_sector: u32,
    },
    /// The master key digest asks for zero PBKDF2 iterations.
    ZeroMasterKeyIterations,
    /// A key slot is corrupt.
    KeySlot {
        /// Slot index, 0..8.
        slot: u8,
        /// What is wrong.
        problem: SlotProblem,
    },
    /// The cipher mode field is not `<mode>-<ivgen>[:<hash>]`.
    BadModeFormat {
        /// The field.
        mode: SpecName,
    },
    /// A hash name QEMU does not know (PBKDF2 hash or ESSIV hash).
    UnsupportedHash {
        /// The name.
        name: SpecName,
    },
    /// A block cipher mode QEMU does not know.
    UnsupportedMode {
        /// The name.
        name: SpecName,
    },
    /// A cipher name and key size that QEMU does not know.
    UnsupportedCipher {
        /// The cipher name.
        name: SpecName,
        /// Key bytes per cipher (half the master key for XTS).
        key_bytes: u32,
    },
    /// A cipher QEMU reads that this crate does not implement: only cast5 with
    /// ESSIV IVs, which `qemu-img create` cannot make.
    CipherNotImplemented {
        /// The cipher name.
        name: SpecName,
        /// Key bytes per cipher.
        key_bytes: u32,
    },
    /// An IV generator QEMU does not know.
    UnsupportedIvGenerator {
        /// The name.
        name: SpecName,
    },
    /// ESSIV without a hash (`cbc-essiv` instead of `cbc-essiv:sha256`).
    MissingIvHash,
    /// ESSIV needs a cipher whose key is as long as the hash's digest.
    EssivKeySize {
        /// The digest length of the ESSIV hash.
        digest_bytes: usize,
    },
    /// The key material of a slot is not a whole number of 512-byte sectors
    /// (QEMU 7.2 aborts on such a header: an AES-192 key outside XTS).
    KeyMaterialUnaligned {
        /// Slot index.
        slot: u8,
        /// Bytes of key material (key bytes times stripes).
        bytes: u64,
    },
    /// A slot's key material lies outside the LUKS header area (QEMU:
    /// "Request for data outside of extension header").
    KeyMaterialOutsideHeader {
        /// Slot index.
        slot: u8,
        /// End of the key material, in bytes from the start of the LUKS header.
        end: u64,
        /// Length of the header area.
        area_len: u64,
    },
    /// Unlocking would run more PBKDF2 iterations than the caller allows.
    IterationLimit {
        /// The slot about to be tried, or `None` for a given master key.
        slot: Option<u8>,
        /// Iterations the unlock would have run by the end of this step.
        needed: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// No enabled key slot opens with this passphrase.
    WrongPassphrase,
    /// A given master key has the wrong length or does not match the header's digest.
    WrongMasterKey,
    /// A decryption request that is not a whole number of 512-byte sectors.
    PartialSector {
        /// Its length in bytes.
        len: usize,
    },
    /// Reading the key material failed.
    Io {
        /// Offset of the read in the storage.
        offset: u64,
        /// Its length.
        len: usize,
        /// The storage's error.
        source: E,
    },
}

impl<E> CryptoError<E> {
    /// Converts a storage-free error (from the header parser) into one with a storage error type.
    pub fn widen(error: CryptoError) -> Self {
        match error {
            CryptoError::HeaderTooShort { len } => CryptoError::HeaderTooShort { len },
            CryptoError::BadMagic { found } => CryptoError::BadMagic { found },
            CryptoError::UnsupportedVersion { version } => {
                CryptoError::UnsupportedVersion { version }
            }
            CryptoError::Unterminated { field } => CryptoError::Unterminated { field },
            CryptoError::PayloadOverlapsHeader {
                payload_offset_sector,
            } => CryptoError::PayloadOverlapsHeader {
                payload_offset_sector,
            },
            CryptoError::ZeroMasterKeyIterations => CryptoError::ZeroMasterKeyIterations,
            CryptoError::KeySlot { slot, problem } => CryptoError::KeySlot { slot, problem },
            CryptoError::BadModeFormat { mode } => CryptoError::BadModeFormat { mode },
            CryptoError::UnsupportedHash { name } => CryptoError::UnsupportedHash { name },
            CryptoError::UnsupportedMode { name } => CryptoError::UnsupportedMode { name },
            CryptoError::UnsupportedCipher { name, key_bytes } => {
                CryptoError::UnsupportedCipher { name, key_bytes }
            }
            CryptoError::CipherNotImplemented { name, key_bytes } => {
                CryptoError::CipherNotImplemented { name, key_bytes }
            }
            CryptoError::UnsupportedIvGenerator { name } => {
                CryptoError::UnsupportedIvGenerator { name }
            }
            CryptoError::MissingIvHash => CryptoError::MissingIvHash,
            CryptoError::EssivKeySize { digest_bytes } => {
                CryptoError::EssivKeySize { digest_bytes }
            }
            CryptoError::KeyMaterialUnaligned { slot, bytes } => {
                CryptoError::KeyMaterialUnaligned { slot, bytes }
            }
            CryptoError::KeyMaterialOutsideHeader {
                slot,
                end,
                area_len,
            } => CryptoError::KeyMaterialOutsideHeader {
                slot,
                end,
                area_len,
            },
            CryptoError::IterationLimit {
                slot,
                needed,
                limit,
            } => CryptoError::IterationLimit {
                slot,
                needed,
                limit,
            },
            CryptoError::WrongPassphrase => CryptoError::WrongPassphrase,
            CryptoError::WrongMasterKey => CryptoError::WrongMasterKey,
            CryptoError::PartialSector { len } => CryptoError::PartialSector { len },
            CryptoError::Io { source, .. } => match source {},
        }
    }
}

impl<E: fmt::Display> fmt::Display for CryptoError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::HeaderTooShort { len } => {
                write!(f, "LUKS header needs 592 bytes, only {len} given")
            }
            CryptoError::BadMagic { found } => {
                write!(f, "volume is not in LUKS format (magic {found:02x?})")
            }
            CryptoError::UnsupportedVersion { version } => {
                write!(f, "LUKS version {version} is not supported (only 1)")
            }
            CryptoError::Unterminated { field } => {
                write!(f, "LUKS header {field} is not NUL terminated")
            }
            CryptoError::PayloadOverlapsHeader {
                payload_offset_sector,
            } => write!(
                f,
                "LUKS payload at sector {payload_offset_sector} is overlapping with the header"
            ),
            CryptoError::ZeroMasterKeyIterations => {
                f.write_str("LUKS master key iteration count is zero")
            }
            CryptoError::KeySlot { slot, problem } => {
                write!(f, "LUKS key slot {slot} ")?;
                match problem {
                    SlotProblem::Stripes { stripes } => {
                        write!(f, "is corrupted (stripes {stripes} != 4000)")
                    }
                    SlotProblem::State { active } => {
                        write!(f, "state {active:#010x} is neither enabled nor disabled")
                    }
                    SlotProblem::ZeroIterations => f.write_str("iteration count is zero"),
                    SlotProblem::OverlapsHeader { key_offset_sector } => write!(
                        f,
                        "key material at sector {key_offset_sector} is overlapping with the LUKS header"
                    ),
                    SlotProblem::OverlapsPayload {
                        end_sector,
                        payload_offset_sector,
                    } => write!(
                        f,
                        "key material ending at sector {end_sector} is overlapping with the payload at sector {payload_offset_sector}"
                    ),
                    SlotProblem::OverlapsSlot { other } => {
                        write!(f, "key material is overlapping with that of slot {other}")
                    }
                }
            }
            CryptoError::BadModeFormat { mode } => write!(
                f,
                "unexpected LUKS cipher mode string '{mode}' (expected <mode>-<ivgen>[:<hash>])"
            ),
            CryptoError::UnsupportedHash { name } => {
                write!(f, "hash algorithm '{name}' is not supported")
            }
            CryptoError::UnsupportedMode { name } => {
                write!(f, "cipher mode '{name}' is not supported")
            }
            CryptoError::UnsupportedCipher { name, key_bytes } => write!(
                f,
                "cipher '{name}' with key size {key_bytes} bytes is not supported"
            ),
            CryptoError::CipherNotImplemented { name, key_bytes } => write!(
                f,
                "cipher '{name}' with key size {key_bytes} bytes is not implemented by this reader with ESSIV IVs"
            ),
            CryptoError::UnsupportedIvGenerator { name } => {
                write!(f, "IV generator '{name}' is not supported")
            }
            CryptoError::MissingIvHash => f.write_str("missing IV generator hash specification"),
            CryptoError::EssivKeySize { digest_bytes } => write!(
                f,
                "no cipher of the family with a {digest_bytes}-byte key is available for ESSIV"
            ),
            CryptoError::KeyMaterialUnaligned { slot, bytes } => write!(
                f,
                "key material of LUKS key slot {slot} ({bytes} bytes) is not a whole number of 512-byte sectors"
            ),
            CryptoError::KeyMaterialOutsideHeader {
                slot,
                end,
                area_len,
            } => write!(
                f,
                "key material of LUKS key slot {slot} ends at byte {end:#x}, outside the {area_len:#x}-byte LUKS header area"
            ),
            CryptoError::IterationLimit {
                slot: Some(slot),
                needed,
                limit,
            } => write!(
                f,
                "trying LUKS key slot {slot} would run {needed} PBKDF2 iterations, beyond the limit of {limit}"
            ),
            CryptoError::IterationLimit {
                slot: None,
                needed,
                limit,
            } => write!(
                f,
                "checking the master key would run {needed} PBKDF2 iterations, beyond the limit of {limit}"
            ),
            CryptoError::WrongPassphrase => {
                f.write_str("invalid passphrase: no LUKS key slot opens with it")
            }
            CryptoError::WrongMasterKey => {
                f.write_str("the master key does not match the LUKS header's digest")
            }
            CryptoError::PartialSector { len } => write!(
                f,
                "cannot decrypt {len} bytes: not a whole number of 512-byte sectors"
            ),
            CryptoError::Io {
                offset,
                len,
                source,
            } => write!(
                f,
                "reading {len} bytes of LUKS key material at {offset:#x}: {source}"
            ),
        }
    }
}
