//! The LUKS1 header: its 592-byte big-endian layout, and validation into a
//! plain [`LuksHeader`] by QEMU 7.2's rules, in QEMU's order
//! (`qcrypto_block_luks_check_header`, then
//! `qcrypto_block_luks_parse_header`, `crypto/block-luks.c`).

use zerocopy::byteorder::big_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use super::error::{CryptoError, SlotProblem, SpecField};
use super::sector::SECTOR_BYTES;
use super::spec::CipherSpec;

/// Bytes of the LUKS1 header (`QCryptoBlockLUKSHeader`), key slots included.
pub const HEADER_BYTES: usize = 592;
/// `LUKS\xba\xbe`.
pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// Number of key slots.
pub const KEY_SLOTS: usize = 8;
/// Anti-forensic stripes per key slot: fixed at 4000 by cryptsetup, and checked by QEMU 7.2.
pub const STRIPES: u32 = 4000;
/// The header area that key material must not enter: 4 KiB, 8 sectors.
pub const HEADER_AREA_SECTORS: u32 = 4096 / SECTOR_BYTES as u32;
/// Bytes of the master key digest.
pub const DIGEST_BYTES: usize = 20;
/// Bytes of a PBKDF2 salt.
pub const SALT_BYTES: usize = 32;

const SLOT_ENABLED: u32 = 0x00ac_71f3;
const SLOT_DISABLED: u32 = 0x0000_dead;

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawKeySlot {
    active: U32,
    iterations: U32,
    salt: [u8; SALT_BYTES],
    key_offset_sector: U32,
    stripes: U32,
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    magic: [u8; 6],
    version: U16,
    cipher_name: [u8; 32],
    cipher_mode: [u8; 32],
    hash_spec: [u8; 32],
    payload_offset_sector: U32,
    master_key_bytes: U32,
    master_key_digest: [u8; DIGEST_BYTES],
    master_key_salt: [u8; SALT_BYTES],
    master_key_iterations: U32,
    uuid: [u8; 40],
    key_slots: [RawKeySlot; KEY_SLOTS],
}

const _: () = assert!(core::mem::size_of::<RawHeader>() == HEADER_BYTES);

/// One key slot, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlot {
    /// Enabled (holds a copy of the master key) or disabled.
    pub active: bool,
    /// PBKDF2 iterations of the passphrase.
    pub iterations: u32,
    /// PBKDF2 salt of the passphrase.
    pub salt: [u8; SALT_BYTES],
    /// First 512-byte sector of the key material, from the start of the LUKS header.
    pub key_offset_sector: u32,
    /// Anti-forensic stripes (always [`STRIPES`] after validation).
    pub stripes: u32,
}

impl KeySlot {
    /// Byte offset of the key material from the start of the LUKS header.
    pub fn key_offset(&self) -> u64 {
        u64::from(self.key_offset_sector) * SECTOR_BYTES as u64
    }
}

/// A LUKS1 header that passed QEMU's checks, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksHeader {
    spec: CipherSpec,
    payload_offset_sector: u32,
    master_key_digest: [u8; DIGEST_BYTES],
    master_key_salt: [u8; SALT_BYTES],
    master_key_iterations: u32,
    uuid: [u8; 40],
    slots: [KeySlot; KEY_SLOTS],
}

impl LuksHeader {
    /// Validates the first [`HEADER_BYTES`] of `bytes` (more are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (raw, _) = RawHeader::ref_from_prefix(bytes)
            .map_err(|_| CryptoError::HeaderTooShort { len: bytes.len() })?;
        if raw.magic != MAGIC {
            return Err(CryptoError::BadMagic { found: raw.magic });
        }
        let version = raw.version.get();
        if version != 1 {
            return Err(CryptoError::UnsupportedVersion { version });
        }
        let cipher_name = nul_terminated(&raw.cipher_name, SpecField::CipherName)?;
        let cipher_mode = nul_terminated(&raw.cipher_mode, SpecField::CipherMode)?;
        let hash_spec = nul_terminated(&raw.hash_spec, SpecField::HashSpec)?;
        let payload_offset_sector = raw.payload_offset_sector.get();
        if payload_offset_sector < HEADER_AREA_SECTORS {
            return Err(CryptoError::PayloadOverlapsHeader {
                payload_offset_sector,
            });
        }
        let master_key_iterations = raw.master_key_iterations.get();
        if master_key_iterations == 0 {
            return Err(CryptoError::ZeroMasterKeyIterations);
        }
        let master_key_bytes = raw.master_key_bytes.get();
        let slots = check_slots(&raw.key_slots, master_key_bytes, payload_offset_sector)?;
        let spec = CipherSpec::parse(cipher_name, cipher_mode, hash_spec, master_key_bytes)?;
        Ok(Self {
            spec,
            payload_offset_sector,
            master_key_digest: raw.master_key_digest,
            master_key_salt: raw.master_key_salt,
            master_key_iterations,
            uuid: raw.uuid,
            slots,
        })
    }

    /// The cipher, mode, IV generator and hashes.
    pub fn spec(&self) -> &CipherSpec {
        &self.spec
    }

    /// Bytes of master key.
    pub fn master_key_bytes(&self) -> usize {
        self.spec.master_key_bytes()
    }

    /// Where the encrypted payload starts, in bytes from the start of the
    /// header. A raw LUKS file's data starts there; inside a qcow2 image the
    /// payload is the clusters, and this is the length QEMU gives the header area.
    pub fn payload_offset(&self) -> u64 {
        u64::from(self.payload_offset_sector) * SECTOR_BYTES as u64
    }

    /// PBKDF2 iterations of the master key digest.
    pub fn master_key_iterations(&self) -> u32 {
        self.master_key_iterations
    }

    /// The master key digest: PBKDF2 of the master key, first 20 bytes.
    pub fn master_key_digest(&self) -> &[u8; DIGEST_BYTES] {
        &self.master_key_digest
    }

    /// The master key digest's salt.
    pub fn master_key_salt(&self) -> &[u8; SALT_BYTES] {
        &self.master_key_salt
    }

    /// The UUID as text (up to its first NUL), as `qemu-img info` prints it.
    pub fn uuid(&self) -> &str {
        let len = self.uuid.iter().position(|&b| b == 0).unwrap_or(40);
        core::str::from_utf8(&self.uuid[..len]).unwrap_or("")
    }

    /// The eight key slots.
    pub fn slots(&self) -> &[KeySlot; KEY_SLOTS] {
        &self.slots
    }

    /// Bytes of key material per slot: the master key times the stripes.
    pub fn key_material_bytes(&self) -> u64 {
        self.master_key_bytes() as u64 * u64::from(STRIPES)
    }
}

/// The text before the field's first NUL; a field without one is refused.
fn nul_terminated(field: &[u8; 32], which: SpecField) -> Result<&[u8], CryptoError> {
    let len = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(CryptoError::Unterminated { field: which })?;
    Ok(&field[..len])
}

/// Sectors a slot's key material occupies, rounded up to whole header
/// areas as cryptsetup lays them out (`qcrypto_block_luks_splitkeylen_sectors`).
/// Computed in 64 bits: QEMU's 32-bit sums can wrap on hostile values,
/// which only lets more hostile headers through there.
fn key_material_sectors(master_key_bytes: u32, stripes: u32) -> u64 {
    let bytes = u64::from(master_key_bytes) * u64::from(stripes);
    bytes
        .div_ceil(SECTOR_BYTES as u64)
        .next_multiple_of(u64::from(HEADER_AREA_SECTORS))
}

fn check_slots(
    raw: &[RawKeySlot; KEY_SLOTS],
    master_key_bytes: u32,
    payload_offset_sector: u32,
) -> Result<[KeySlot; KEY_SLOTS], CryptoError> {
    let extent = |slot: &RawKeySlot| {
        let start = u64::from(slot.key_offset_sector.get());
        (
            start,
            start + key_material_sectors(master_key_bytes, slot.stripes.get()),
        )
    };
    let mut slots = [KeySlot {
        active: false,
        iterations: 0,
        salt: [0; SALT_BYTES],
        key_offset_sector: 0,
        stripes: 0,
    }; KEY_SLOTS];
    for (index, slot) in raw.iter().enumerate() {
        let problem = |problem| CryptoError::KeySlot {
            slot: index as u8,
            problem,
        };
        let stripes = slot.stripes.get();
        if stripes != STRIPES {
            return Err(problem(SlotProblem::Stripes { stripes }));
        }
        let active = match slot.active.get() {
            SLOT_ENABLED => true,
            SLOT_DISABLED => false,
            active => return Err(problem(SlotProblem::State { active })),
        };
        let iterations = slot.iterations.get();
        if active && iterations == 0 {
            return Err(problem(SlotProblem::ZeroIterations));
        }
        let key_offset_sector = slot.key_offset_sector.get();
        if key_offset_sector < HEADER_AREA_SECTORS {
            return Err(problem(SlotProblem::OverlapsHeader { key_offset_sector }));
        }
        let (start, end) = extent(slot);
        if end > u64::from(payload_offset_sector) {
            return Err(problem(SlotProblem::OverlapsPayload {
                end_sector: end,
                payload_offset_sector,
            }));
        }
        // Disabled slots keep their place too: QEMU checks all eight.
        for (other_index, other) in raw.iter().enumerate().skip(index + 1) {
            let (other_start, other_end) = extent(other);
            if end > other_start && other_end > start {
                return Err(problem(SlotProblem::OverlapsSlot {
                    other: other_index as u8,
                }));
            }
        }
        slots[index] = KeySlot {
            active,
            iterations,
            salt: slot.salt,
            key_offset_sector,
            stripes,
        };
    }
    Ok(slots)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header laid out as QEMU 7.2 writes one for aes-256-xts-plain64
    /// (master key 64 bytes, 500 key material sectors per slot, 4 KiB aligned).
    pub(crate) fn qemu_like_header() -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..6].copy_from_slice(&MAGIC);
        bytes[6..8].copy_from_slice(&1u16.to_be_bytes());
        bytes[8..11].copy_from_slice(b"aes");
        bytes[40..51].copy_from_slice(b"xts-plain64");
        bytes[72..78].copy_from_slice(b"sha256");
        let slot_sectors = 504u32; // 500 rounded up to 8
        bytes[104..108].copy_from_slice(&(8 + 8 * slot_sectors).to_be_bytes());
        bytes[108..112].copy_from_slice(&64u32.to_be_bytes());
        bytes[164..168].copy_from_slice(&1000u32.to_be_bytes());
        bytes[168..172].copy_from_slice(b"uuid");
        for slot in 0..KEY_SLOTS {
            let at = 208 + slot * 48;
            let state = if slot == 0 {
                SLOT_ENABLED
            } else {
                SLOT_DISABLED
            };
            bytes[at..at + 4].copy_from_slice(&state.to_be_bytes());
            bytes[at + 4..at + 8].copy_from_slice(&1000u32.to_be_bytes());
            let offset = 8 + slot as u32 * slot_sectors;
            bytes[at + 40..at + 44].copy_from_slice(&offset.to_be_bytes());
            bytes[at + 44..at + 48].copy_from_slice(&STRIPES.to_be_bytes());
        }
        bytes
    }

    fn with(patch: impl FnOnce(&mut [u8; HEADER_BYTES])) -> Result<LuksHeader, CryptoError> {
        let mut bytes = qemu_like_header();
        patch(&mut bytes);
        LuksHeader::parse(&bytes)
    }

    #[test]
    fn a_qemu_layout_parses() {
        let header = with(|_| {}).unwrap();
        assert_eq!(header.payload_offset(), (8 + 8 * 504) * 512);
        assert_eq!(header.master_key_bytes(), 64);
        assert_eq!(header.uuid(), "uuid");
        assert!(header.slots()[0].active && !header.slots()[1].active);
        assert_eq!(header.slots()[1].key_offset(), (8 + 504) * 512);
    }

    #[test]
    fn short_input_bad_magic_and_version() {
        assert_eq!(
            LuksHeader::parse(&[0u8; 100]),
            Err(CryptoError::HeaderTooShort { len: 100 })
        );
        assert!(matches!(
            with(|b| b[0] = b'X'),
            Err(CryptoError::BadMagic { .. })
        ));
        assert_eq!(
            with(|b| b[7] = 2),
            Err(CryptoError::UnsupportedVersion { version: 2 })
        );
    }

    #[test]
    fn text_fields_must_end_with_nul() {
        assert_eq!(
            with(|b| b[40..72].fill(b'x')),
            Err(CryptoError::Unterminated {
                field: SpecField::CipherMode
            })
        );
    }

    #[test]
    fn payload_and_iterations() {
        assert_eq!(
            with(|b| b[104..108].copy_from_slice(&7u32.to_be_bytes())),
            Err(CryptoError::PayloadOverlapsHeader {
                payload_offset_sector: 7
            })
        );
        assert_eq!(
            with(|b| b[164..168].fill(0)),
            Err(CryptoError::ZeroMasterKeyIterations)
        );
    }

    #[test]
    fn slot_checks_in_qemu_order() {
        let slot3 = 208 + 3 * 48;
        let slot = |problem| Err(CryptoError::KeySlot { slot: 3, problem });
        assert_eq!(
            with(|b| b[slot3 + 44..slot3 + 48].copy_from_slice(&0xffff_ffffu32.to_be_bytes())),
            slot(SlotProblem::Stripes {
                stripes: 0xffff_ffff
            })
        );
        assert_eq!(
            with(|b| b[slot3..slot3 + 4].copy_from_slice(&1u32.to_be_bytes())),
            slot(SlotProblem::State { active: 1 })
        );
        assert_eq!(
            with(|b| {
                b[slot3..slot3 + 4].copy_from_slice(&SLOT_ENABLED.to_be_bytes());
                b[slot3 + 4..slot3 + 8].fill(0);
            }),
            slot(SlotProblem::ZeroIterations)
        );
        // Offsets are checked slot by slot, each against the later ones:
        // moving slot 0 is seen before any other slot meets it.
        let slot0 = |problem| Err(CryptoError::KeySlot { slot: 0, problem });
        assert_eq!(
            with(|b| b[248..252].copy_from_slice(&7u32.to_be_bytes())),
            slot0(SlotProblem::OverlapsHeader {
                key_offset_sector: 7
            })
        );
        assert_eq!(
            with(|b| b[248..252].copy_from_slice(&u32::MAX.to_be_bytes())),
            slot0(SlotProblem::OverlapsPayload {
                end_sector: u64::from(u32::MAX) + 504,
                payload_offset_sector: 8 + 8 * 504
            })
        );
        // Slot 3 moved onto slot 5.
        assert_eq!(
            with(|b| b[slot3 + 40..slot3 + 44].copy_from_slice(&(8 + 5 * 504u32 + 8).to_be_bytes())),
            slot(SlotProblem::OverlapsSlot { other: 5 })
        );
    }
}
