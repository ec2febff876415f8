//! Twofish (Schneier et al., 1998) with the key-dependent S-boxes computed
//! at keying time (four tables of 256 bytes) and the MDS matrix as four
//! static tables of 256 words, so g is eight table lookups.
//!
//! Written here because RustCrypto's `twofish` (0.7, and 0.8, the latest
//! release) evaluates the q permutations nibble by nibble and multiplies in
//! GF(2^8) bit by bit for every byte of every round: LUKS images with
//! twofish read 50 times slower than `qemu-img` (nettle, full keying).
//! The S-boxes cost 1 KiB per key, built once per image; a block allocates
//! nothing. (Folding the MDS matrix into 4 KiB of tables per key, as nettle
//! does, saves four lookups per g but made the firmware's 16-image chain
//! open use 230 KiB of its stack instead of 113 KiB: images are moved by
//! value while the chain is walked, and a twofish-XTS key holds two.) Checked against the paper's known answers and, in the tests,
//! against RustCrypto's `twofish` on random keys and blocks, and through
//! every LUKS test against QEMU.

use cipher::consts::{U16, U32};
use cipher::{AlgorithmName, BlockCipher, InvalidLength, Key, KeyInit, KeySizeUser};
use core::fmt;

/// The 4-bit permutations t0..t3 of q0 and q1 (the paper, section 4.3.5).
const T: [[[u8; 16]; 4]; 2] = [
    [
        [8, 1, 7, 13, 6, 15, 3, 2, 0, 11, 5, 9, 14, 12, 10, 4],
        [14, 12, 11, 8, 1, 2, 3, 5, 15, 4, 10, 6, 7, 0, 9, 13],
        [11, 10, 5, 14, 6, 13, 9, 0, 12, 8, 15, 3, 2, 4, 7, 1],
        [13, 7, 15, 4, 1, 2, 6, 14, 9, 11, 3, 0, 8, 5, 12, 10],
    ],
    [
        [2, 8, 11, 13, 15, 7, 6, 14, 3, 1, 9, 4, 0, 10, 12, 5],
        [1, 14, 2, 11, 4, 12, 3, 7, 6, 13, 10, 5, 15, 9, 0, 8],
        [4, 12, 7, 5, 1, 6, 9, 10, 0, 14, 13, 8, 2, 11, 3, 15],
        [11, 9, 5, 1, 12, 3, 13, 14, 6, 4, 7, 15, 2, 0, 8, 10],
    ],
];

/// q0 or q1 on one byte, from its t-boxes.
const fn q_permute(which: usize, x: u8) -> u8 {
    let t = &T[which];
    let (a0, b0) = (x >> 4, x & 15);
    let a1 = a0 ^ b0;
    let b1 = (a0 ^ ((b0 >> 1) | (b0 << 3)) ^ (a0 << 3)) & 15;
    let (a2, b2) = (t[0][a1 as usize], t[1][b1 as usize]);
    let a3 = a2 ^ b2;
    let b3 = (a2 ^ ((b2 >> 1) | (b2 << 3)) ^ (a2 << 3)) & 15;
    let (a4, b4) = (t[2][a3 as usize], t[3][b3 as usize]);
    (b4 << 4) | a4
}

/// q0 and q1 as byte tables, computed at compile time.
const Q: [[u8; 256]; 2] = {
    let mut q = [[0u8; 256]; 2];
    let mut x = 0;
    while x < 256 {
        q[0][x] = q_permute(0, x as u8);
        q[1][x] = q_permute(1, x as u8);
        x += 1;
    }
    q
};

/// Multiplication in GF(2^8) modulo `poly` (the low byte of a degree-8
/// polynomial: 0x69 for the MDS matrix, 0x4d for the RS code).
const fn gf_mul(mut a: u8, mut b: u8, poly: u8) -> u8 {
    let mut product = 0;
    while a != 0 {
        if a & 1 != 0 {
            product ^= b;
        }
        a >>= 1;
        b = if b & 0x80 != 0 {
            (b << 1) ^ poly
        } else {
            b << 1
        };
    }
    product
}

const MDS_POLY: u8 = 0x69;
const RS_POLY: u8 = 0x4d;

/// The MDS matrix's column `column` times `y`, as a little-endian word.
const fn mds_column(column: usize, y: u8) -> u32 {
    let (x5b, xef) = (gf_mul(y, 0x5b, MDS_POLY), gf_mul(y, 0xef, MDS_POLY));
    let bytes = match column {
        0 => [y, x5b, xef, xef],
        1 => [xef, xef, x5b, y],
        2 => [x5b, xef, y, xef],
        _ => [x5b, y, xef, x5b],
    };
    u32::from_le_bytes(bytes)
}

/// [`mds_column`] for every column and byte, computed at compile time.
const MDS: [[u32; 256]; 4] = {
    let mut table = [[0u32; 256]; 4];
    let mut column = 0;
    while column < 4 {
        let mut y = 0;
        while y < 256 {
            table[column][y] = mds_column(column, y as u8);
            y += 1;
        }
        column += 1;
    }
    table
};

/// The RS code's rows (the paper, section 4.3.2).
const RS: [[u8; 8]; 4] = [
    [0x01, 0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e],
    [0xa4, 0x56, 0x82, 0xf3, 0x1e, 0xc6, 0x68, 0xe5],
    [0x02, 0xa1, 0xfc, 0xc1, 0x47, 0xae, 0x3d, 0x19],
    [0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e, 0x03],
];

/// Which q each byte position passes through at each stage of h, from the
/// input (`k = 4` only) to the output.
const Q_ORDER: [[usize; 4]; 5] = [
    [1, 0, 0, 1], // k = 4 only
    [1, 1, 0, 0], // k >= 3
    [0, 1, 0, 1],
    [0, 0, 1, 1],
    [1, 0, 1, 0],
];

/// The key-dependent S-box of byte position `j` on `x`: the q stages of h
/// with `words` (`L_0..L_{k-1}`) XORed in between, before the MDS matrix.
fn s_box(j: usize, x: u8, words: &[u32]) -> u8 {
    let k = words.len();
    let byte = |word: u32| word.to_le_bytes()[j];
    let mut y = x;
    for stage in (5 - k - 1)..4 {
        // Stage `stage` is followed by L_{3 - stage}.
        y = Q[Q_ORDER[stage][j]][y as usize] ^ byte(words[3 - stage]);
    }
    Q[Q_ORDER[4][j]][y as usize]
}

/// The function h of the paper: four S-boxes, then the MDS matrix.
fn h(x: u32, words: &[u32]) -> u32 {
    let bytes = x.to_le_bytes();
    (0..4).fold(0, |z, j| z ^ MDS[j][s_box(j, bytes[j], words) as usize])
}

/// Twofish keyed for encryption and decryption.
#[derive(Clone)]
pub struct Twofish {
    /// Whitening and round subkeys K_0..K_39.
    subkeys: [u32; 40],
    /// The key-dependent S-boxes: g(X) = MDS[0][sbox[0][x0]] ^ .. ^ MDS[3][sbox[3][x3]].
    sbox: [[u8; 256]; 4],
}

impl Twofish {
    /// Keys with 16, 24 or 32 bytes.
    fn with_key(key: &[u8]) -> Result<Self, InvalidLength> {
        if !matches!(key.len(), 16 | 24 | 32) {
            return Err(InvalidLength);
        }
        let k = key.len() / 8;
        let word = |i: usize| u32::from_le_bytes(key[4 * i..4 * i + 4].try_into().unwrap());
        let mut even = [0u32; 4];
        let mut odd = [0u32; 4];
        // The S-box words, S_{k-1} first: g's L_0 is S_{k-1}.
        let mut sbox_words = [0u32; 4];
        for i in 0..k {
            even[i] = word(2 * i);
            odd[i] = word(2 * i + 1);
            let mut s = [0u8; 4];
            for (row, out) in RS.iter().zip(&mut s) {
                *out = row
                    .iter()
                    .zip(&key[8 * i..8 * i + 8])
                    .fold(0, |acc, (&r, &m)| acc ^ gf_mul(m, r, RS_POLY));
            }
            sbox_words[k - 1 - i] = u32::from_le_bytes(s);
        }
        let mut twofish = Self {
            subkeys: [0; 40],
            sbox: [[0; 256]; 4],
        };
        const RHO: u32 = 0x0101_0101;
        for i in 0..20u32 {
            let a = h(2 * i * RHO, &even[..k]);
            let b = h((2 * i + 1) * RHO, &odd[..k]).rotate_left(8);
            twofish.subkeys[2 * i as usize] = a.wrapping_add(b);
            twofish.subkeys[2 * i as usize + 1] = a.wrapping_add(b).wrapping_add(b).rotate_left(9);
        }
        for (j, table) in twofish.sbox.iter_mut().enumerate() {
            for (x, entry) in table.iter_mut().enumerate() {
                *entry = s_box(j, x as u8, &sbox_words[..k]);
            }
        }
        Ok(twofish)
    }

    #[inline(always)]
    fn g(&self, x: u32) -> u32 {
        let [b0, b1, b2, b3] = x.to_le_bytes();
        let s = &self.sbox;
        MDS[0][s[0][b0 as usize] as usize]
            ^ MDS[1][s[1][b1 as usize] as usize]
            ^ MDS[2][s[2][b2 as usize] as usize]
            ^ MDS[3][s[3][b3 as usize] as usize]
    }

    fn encrypt(&self, block: &[u8; 16]) -> [u8; 16] {
        let k = &self.subkeys;
        let word = |i: usize| u32::from_le_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        let mut p = [
            word(0) ^ k[0],
            word(1) ^ k[1],
            word(2) ^ k[2],
            word(3) ^ k[3],
        ];
        for round in 0..8 {
            let key = 8 + 4 * round;
            let t0 = self.g(p[0]);
            let t1 = self.g(p[1].rotate_left(8));
            p[2] = (p[2] ^ t0.wrapping_add(t1).wrapping_add(k[key])).rotate_right(1);
            p[3] = p[3].rotate_left(1)
                ^ t0.wrapping_add(t1)
                    .wrapping_add(t1)
                    .wrapping_add(k[key + 1]);
            let t0 = self.g(p[2]);
            let t1 = self.g(p[3].rotate_left(8));
            p[0] = (p[0] ^ t0.wrapping_add(t1).wrapping_add(k[key + 2])).rotate_right(1);
            p[1] = p[1].rotate_left(1)
                ^ t0.wrapping_add(t1)
                    .wrapping_add(t1)
                    .wrapping_add(k[key + 3]);
        }
        let out = [p[2] ^ k[4], p[3] ^ k[5], p[0] ^ k[6], p[1] ^ k[7]];
        words_to_bytes(out)
    }

    fn decrypt(&self, block: &[u8; 16]) -> [u8; 16] {
        let k = &self.subkeys;
        let word = |i: usize| u32::from_le_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        // Undo the output whitening and the last swap.
        let mut c = [
            word(2) ^ k[6],
            word(3) ^ k[7],
            word(0) ^ k[4],
            word(1) ^ k[5],
        ];
        for round in (0..8).rev() {
            let key = 8 + 4 * round;
            let t0 = self.g(c[2]);
            let t1 = self.g(c[3].rotate_left(8));
            c[0] = c[0].rotate_left(1) ^ t0.wrapping_add(t1).wrapping_add(k[key + 2]);
            c[1] = (c[1]
                ^ t0.wrapping_add(t1)
                    .wrapping_add(t1)
                    .wrapping_add(k[key + 3]))
            .rotate_right(1);
            let t0 = self.g(c[0]);
            let t1 = self.g(c[1].rotate_left(8));
            c[2] = c[2].rotate_left(1) ^ t0.wrapping_add(t1).wrapping_add(k[key]);
            c[3] = (c[3]
                ^ t0.wrapping_add(t1)
                    .wrapping_add(t1)
                    .wrapping_add(k[key + 1]))
            .rotate_right(1);
        }
        words_to_bytes([c[0] ^ k[0], c[1] ^ k[1], c[2] ^ k[2], c[3] ^ k[3]])
    }
}

fn words_to_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

impl BlockCipher for Twofish {}

impl KeySizeUser for Twofish {
    type KeySize = U32;
}

impl KeyInit for Twofish {
    fn new(key: &Key<Self>) -> Self {
        Self::with_key(key).expect("32-byte key")
    }

    fn new_from_slice(key: &[u8]) -> Result<Self, InvalidLength> {
        Self::with_key(key)
    }
}

impl fmt::Debug for Twofish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Twofish { .. }")
    }
}

impl AlgorithmName for Twofish {
    fn write_alg_name(f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Twofish")
    }
}

impl Drop for Twofish {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.subkeys.zeroize();
        for table in &mut self.sbox {
            table.zeroize();
        }
    }
}

impl zeroize::ZeroizeOnDrop for Twofish {}

cipher::impl_simple_block_encdec!(
    Twofish, U16, cipher, block,
    encrypt: {
        let out = cipher.encrypt(&(*block.get_in()).into());
        block.get_out().copy_from_slice(&out);
    }
    decrypt: {
        let out = cipher.decrypt(&(*block.get_in()).into());
        block.get_out().copy_from_slice(&out);
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockDecrypt, BlockEncrypt};

    fn hex(text: &str) -> alloc::vec::Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The paper's known answers (ecb_tbl.txt, I=1, and the all-zero keys
    /// of each size).
    #[test]
    fn known_answers_of_the_paper() {
        for (key, plain, cipher_text) in [
            (
                "00000000000000000000000000000000",
                "00000000000000000000000000000000",
                "9F589F5CF6122C32B6BFEC2F2AE8C35A",
            ),
            (
                "0123456789ABCDEFFEDCBA98765432100011223344556677",
                "00000000000000000000000000000000",
                "CFD1D2E5A9BE9CDF501F13B892BD2248",
            ),
            (
                "0123456789ABCDEFFEDCBA987654321000112233445566778899AABBCCDDEEFF",
                "00000000000000000000000000000000",
                "37527BE0052334B89F0CFCCAE87CFA20",
            ),
        ] {
            let twofish = Twofish::new_from_slice(&hex(key)).unwrap();
            let mut block = [0u8; 16];
            block.copy_from_slice(&hex(plain));
            let mut buffer = block.into();
            twofish.encrypt_block(&mut buffer);
            assert_eq!(buffer.as_slice(), hex(cipher_text).as_slice(), "key {key}");
            twofish.decrypt_block(&mut buffer);
            assert_eq!(buffer.as_slice(), &block, "key {key}");
        }
    }

    /// The subkeys of the paper's intermediate values (128-bit zero key).
    #[test]
    fn subkeys_of_the_zero_key() {
        let twofish = Twofish::new_from_slice(&[0u8; 16]).unwrap();
        assert_eq!(
            &twofish.subkeys[..8],
            &[
                0x52C54DDE, 0x11F0626D, 0x7CAC9D4A, 0x4D1B4AAA, 0xB7B83A10, 0x1E7D0BEB, 0xEE9C341F,
                0xCFE14BE4
            ]
        );
    }

    /// Same blocks as RustCrypto's `twofish` for keys of each size.
    #[test]
    fn agrees_with_rustcrypto_twofish() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for round in 0..60 {
            let key_len = [16, 24, 32][round % 3];
            let key: alloc::vec::Vec<u8> = (0..key_len).map(|_| next()).collect();
            let ours = Twofish::new_from_slice(&key).unwrap();
            let theirs = twofish::Twofish::new_from_slice(&key).unwrap();
            for _ in 0..8 {
                let plain: [u8; 16] = core::array::from_fn(|_| next());
                let mut a = plain.into();
                let mut b = plain.into();
                ours.encrypt_block(&mut a);
                theirs.encrypt_block(&mut b);
                assert_eq!(a, b, "encryption, key {key:02x?}");
                ours.decrypt_block(&mut a);
                assert_eq!(a.as_slice(), &plain);
            }
        }
    }
}
