//! The legacy qcow AES method (`crypt_method` 1, `crypto/block-qcow.c`):
//! AES-128-CBC, `plain64` IVs, 512-byte sectors, and a key that is the
//! passphrase itself: its bytes up to the first NUL, cut or zero-padded to
//! 16 bytes. There is no header, no salt and no check: a wrong passphrase
//! decrypts to garbage, and nothing in the image can tell.
//!
//! QEMU 7.2 refuses to run a guest on such an image but `qemu-img`
//! still creates (`-o encrypt.format=aes`) and converts it. In qcow2 the
//! sector number is the *guest* offset / 512 (`crypt_physical_offset` is
//! false for AES), unlike LUKS.

use zeroize::Zeroizing;

use super::hash::HashAlgorithm;
use super::sector::SectorCipher;
use super::spec::{CipherAlgorithm, CipherMode, CipherSpec, IvGenerator};

/// Bytes of the legacy AES key.
pub const KEY_BYTES: usize = 16;

/// The sector cipher of a legacy AES image with this passphrase.
pub fn legacy_aes_cipher(passphrase: &[u8]) -> SectorCipher {
    let text_len = passphrase
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(passphrase.len());
    let used = text_len.min(KEY_BYTES);
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    key[..used].copy_from_slice(&passphrase[..used]);
    SectorCipher::new(&legacy_spec(), &key[..]).expect("16-byte key for AES-128")
}

/// AES-128-CBC with `plain64` IVs; the hash is unused (there is no key derivation).
pub(crate) fn legacy_spec() -> CipherSpec {
    CipherSpec {
        cipher: CipherAlgorithm::Aes128,
        mode: CipherMode::Cbc,
        ivgen: IvGenerator::Plain64,
        ivgen_hash: None,
        essiv_cipher: None,
        hash: HashAlgorithm::Sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_equal_in_their_first_16_bytes_give_the_same_key() {
        let decrypt = |passphrase: &[u8]| {
            let mut sector = [0x42u8; 512];
            legacy_aes_cipher(passphrase)
                .decrypt_sectors(3, &mut sector)
                .unwrap();
            sector
        };
        assert_eq!(
            decrypt(b"0123456789abcdefXYZ"),
            decrypt(b"0123456789abcdef")
        );
        assert_eq!(decrypt(b"short\0ignored"), decrypt(b"short"));
        assert_eq!(decrypt(b"short"), decrypt(b"short\0\0\0\0\0\0\0\0\0\0\0"));
        assert_ne!(decrypt(b"short"), decrypt(b"shorT"));
    }
}
