//! The LUKS1 header parser and the key slot path on hostile bytes.
//!
//! Input layout: byte 0 = passphrase length (% 32), then the passphrase,
//! then the LUKS area (header, key material). A header that parses is
//! checked against the invariants the rest of the crate relies on; then
//! every slot is unlocked under a small iteration limit, reading key
//! material through a `Strict` store (no read outside the area), and the
//! whole path must not allocate. A master key that comes out (or a made-up
//! one) builds a sector cipher that decrypts a few sectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcow2_reader::crypto::{
    check_master_key, unlock, CryptoError, KeyArea, LuksHeader, SectorCipher, UnlockLimits,
    MAX_MASTER_KEY_BYTES,
};
use qcow2_reader_fuzz::{HeapWatch, Role, Strict};

/// Small enough that one input costs at most a few milliseconds of PBKDF2.
const LIMITS: UnlockLimits = UnlockLimits {
    max_iterations: 4000,
};

fuzz_target!(|data: &[u8]| {
    let Some((&passphrase_len, rest)) = data.split_first() else {
        return;
    };
    let passphrase_len = usize::from(passphrase_len % 32).min(rest.len());
    let (passphrase, area_bytes) = rest.split_at(passphrase_len);

    let heap = HeapWatch::start();
    let parsed = LuksHeader::parse(area_bytes);
    assert_eq!(heap.largest(), 0, "parse allocated");
    let header = match parsed {
        Ok(header) => header,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let key_bytes = header.master_key_bytes();
    assert!(key_bytes <= MAX_MASTER_KEY_BYTES);
    assert!(header.payload_offset() >= 4096);
    for slot in header.slots() {
        assert_eq!(slot.stripes, 4000);
        assert!(slot.key_offset() >= 4096);
        assert!(slot.key_offset() + header.key_material_bytes() <= header.payload_offset());
    }

    // The area a qcow2 image would give: at most the payload offset, here
    // also cut to the input; the store panics on any read outside it.
    let store = Strict(area_bytes, Role::Top);
    let area = KeyArea::new(&store, 0, header.payload_offset());
    let heap = HeapWatch::start();
    let result = unlock(&header, &area, passphrase, &LIMITS);
    assert_eq!(heap.largest(), 0, "unlock allocated");
    let key = match &result {
        Ok(key) => {
            assert_eq!(key.as_bytes().len(), key_bytes);
            Some(key.as_bytes().to_vec())
        }
        Err(CryptoError::Io { .. }) => unreachable!("the Strict store never fails"),
        Err(error) => {
            assert!(!error.to_string().is_empty());
            None
        }
    };
    let _ = check_master_key(&header, passphrase, &LIMITS);

    let key = key.unwrap_or_else(|| (0..key_bytes).map(|i| i as u8).collect());
    let cipher = SectorCipher::new(header.spec(), &key).expect("key of the header's length");
    let mut sectors = [0u8; 1024];
    let take = area_bytes.len().min(sectors.len());
    sectors[..take].copy_from_slice(&area_bytes[..take]);
    let first_sector = u64::from_le_bytes(core::array::from_fn(|i| *data.get(i).unwrap_or(&0)));
    let heap = HeapWatch::start();
    cipher.decrypt_sectors(first_sector, &mut sectors).unwrap();
    assert!(cipher
        .decrypt_sectors(first_sector, &mut sectors[..100])
        .is_err());
    assert_eq!(heap.largest(), 0, "decryption allocated");
});
