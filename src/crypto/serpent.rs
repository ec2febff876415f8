//! Serpent from RustCrypto's `serpent` 0.6, seen through the `cipher` 0.4
//! traits that the modes here (`cbc`, `ctr`, XTS) and the other ciphers
//! use.
//!
//! `serpent` 0.5, the last release on `cipher` 0.4, applies each S-box bit
//! by bit (32 table lookups per S-box); 0.6 evaluates the S-boxes as
//! bitsliced Boolean formulas, which made serpent LUKS images read about
//! ten times faster. 0.6 implements `cipher` 0.5, whose release the rest of
//! the tree (`aes`, `cbc`, `ctr`, `cast5`) has not reached: this wrapper
//! delegates each block, copying 16 bytes in and out.

use cipher::consts::{U16, U32};
use cipher::{AlgorithmName, BlockCipher, InvalidLength, Key, KeyInit, KeySizeUser};
use core::fmt;
use serpent::cipher::{BlockCipherDecrypt as _, BlockCipherEncrypt as _, KeyInit as KeyInitNew};

/// Serpent with 1 to 32 key bytes (LUKS uses 16, 24 or 32).
#[derive(Clone)]
pub struct Serpent(serpent::Serpent);

impl BlockCipher for Serpent {}

impl KeySizeUser for Serpent {
    type KeySize = U32;
}

impl KeyInit for Serpent {
    fn new(key: &Key<Self>) -> Self {
        Self::new_from_slice(key).expect("32-byte key")
    }

    fn new_from_slice(key: &[u8]) -> Result<Self, InvalidLength> {
        serpent::Serpent::new_from_slice(key)
            .map(Serpent)
            .map_err(|_| InvalidLength)
    }
}

impl fmt::Debug for Serpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Serpent { .. }")
    }
}

impl AlgorithmName for Serpent {
    fn write_alg_name(f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Serpent")
    }
}

// The inner cipher zeroizes its round keys when dropped (its `zeroize`
// feature), and this wrapper holds nothing else.
impl zeroize::ZeroizeOnDrop for Serpent {}

cipher::impl_simple_block_encdec!(
    Serpent, U16, cipher, block,
    encrypt: {
        let mut inner: [u8; 16] = (*block.get_in()).into();
        let array = (&mut inner).into();
        cipher.0.encrypt_block(array);
        block.get_out().copy_from_slice(&inner);
    }
    decrypt: {
        let mut inner: [u8; 16] = (*block.get_in()).into();
        let array = (&mut inner).into();
        cipher.0.decrypt_block(array);
        block.get_out().copy_from_slice(&inner);
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockDecrypt, BlockEncrypt};

    /// Same blocks as `serpent` 0.5 (the previous implementation) for keys
    /// of each LUKS size.
    #[test]
    fn agrees_with_serpent_0_5() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for round in 0..30 {
            let key_len = [16, 24, 32][round % 3];
            let key: alloc::vec::Vec<u8> = (0..key_len).map(|_| next()).collect();
            let ours = Serpent::new_from_slice(&key).unwrap();
            let theirs = serpent05::Serpent::new_from_slice(&key).unwrap();
            for _ in 0..4 {
                let plain: [u8; 16] = core::array::from_fn(|_| next());
                let mut a = plain.into();
                let mut b = plain.into();
                ours.encrypt_block(&mut a);
                theirs.encrypt_block(&mut b);
                assert_eq!(a, b, "key {key:02x?}");
                ours.decrypt_block(&mut a);
                assert_eq!(a.as_slice(), &plain);
            }
        }
    }
}
