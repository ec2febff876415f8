//! The hash algorithms a LUKS header names, and the three things LUKS does
//! with them: PBKDF2-HMAC, a plain digest (ESSIV), and the anti-forensic diffusion.

use digest::{Digest, FixedOutputReset};

use super::error::{CryptoError, SpecName};

/// The longest digest of any supported hash (SHA-512).
pub const MAX_DIGEST_BYTES: usize = 64;

/// A hash algorithm, by QEMU's name for it (`QCryptoHashAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// `md5`.
    Md5,
    /// `sha1`.
    Sha1,
    /// `sha224`.
    Sha224,
    /// `sha256`.
    Sha256,
    /// `sha384`.
    Sha384,
    /// `sha512`.
    Sha512,
    /// `ripemd160`.
    Ripemd160,
}

impl HashAlgorithm {
    /// Looks up QEMU's name (exact, case-sensitive, as `qapi_enum_parse`).
    pub fn from_name(name: &[u8]) -> Result<Self, CryptoError> {
        Ok(match name {
            b"md5" => HashAlgorithm::Md5,
            b"sha1" => HashAlgorithm::Sha1,
            b"sha224" => HashAlgorithm::Sha224,
            b"sha256" => HashAlgorithm::Sha256,
            b"sha384" => HashAlgorithm::Sha384,
            b"sha512" => HashAlgorithm::Sha512,
            b"ripemd160" => HashAlgorithm::Ripemd160,
            _ => {
                return Err(CryptoError::UnsupportedHash {
                    name: SpecName::new(name),
                })
            }
        })
    }

    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5",
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha224 => "sha224",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
            HashAlgorithm::Ripemd160 => "ripemd160",
        }
    }

    /// Digest length in bytes.
    pub fn digest_bytes(self) -> usize {
        match self {
            HashAlgorithm::Md5 => 16,
            HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160 => 20,
            HashAlgorithm::Sha224 => 28,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// PBKDF2-HMAC with this hash (`qcrypto_pbkdf2`): fills `out`.
    pub fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        use pbkdf2::pbkdf2_hmac;
        match self {
            HashAlgorithm::Md5 => pbkdf2_hmac::<md5::Md5>(password, salt, iterations, out),
            HashAlgorithm::Sha1 => pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
            HashAlgorithm::Sha224 => pbkdf2_hmac::<sha2::Sha224>(password, salt, iterations, out),
            HashAlgorithm::Sha256 => pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
            HashAlgorithm::Sha384 => pbkdf2_hmac::<sha2::Sha384>(password, salt, iterations, out),
            HashAlgorithm::Sha512 => pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, out),
            HashAlgorithm::Ripemd160 => {
                pbkdf2_hmac::<ripemd::Ripemd160>(password, salt, iterations, out)
            }
        }
    }

    /// The digest of `data` in the first [`digest_bytes`](Self::digest_bytes) of `out`.
    pub fn digest(self, data: &[u8], out: &mut [u8; MAX_DIGEST_BYTES]) {
        fn run<D: Digest>(data: &[u8], out: &mut [u8; MAX_DIGEST_BYTES]) {
            let digest = D::digest(data);
            out[..digest.len()].copy_from_slice(&digest);
        }
        match self {
            HashAlgorithm::Md5 => run::<md5::Md5>(data, out),
            HashAlgorithm::Sha1 => run::<sha1::Sha1>(data, out),
            HashAlgorithm::Sha224 => run::<sha2::Sha224>(data, out),
            HashAlgorithm::Sha256 => run::<sha2::Sha256>(data, out),
            HashAlgorithm::Sha384 => run::<sha2::Sha384>(data, out),
            HashAlgorithm::Sha512 => run::<sha2::Sha512>(data, out),
            HashAlgorithm::Ripemd160 => run::<ripemd::Ripemd160>(data, out),
        }
    }

    /// The anti-forensic diffusion of one stripe-sized `block`, in place
    /// (`qcrypto_afsplit_hash`): digest-sized pieces `i` become
    /// `H(be32(i) || piece)`, the last piece cut to what is left.
    pub fn diffuse(self, block: &mut [u8]) {
        match self {
            HashAlgorithm::Md5 => diffuse_with::<md5::Md5>(block),
            HashAlgorithm::Sha1 => diffuse_with::<sha1::Sha1>(block),
            HashAlgorithm::Sha224 => diffuse_with::<sha2::Sha224>(block),
            HashAlgorithm::Sha256 => diffuse_with::<sha2::Sha256>(block),
            HashAlgorithm::Sha384 => diffuse_with::<sha2::Sha384>(block),
            HashAlgorithm::Sha512 => diffuse_with::<sha2::Sha512>(block),
            HashAlgorithm::Ripemd160 => diffuse_with::<ripemd::Ripemd160>(block),
        }
    }
}

fn diffuse_with<D: Digest + FixedOutputReset>(block: &mut [u8]) {
    let mut hasher = D::new();
    let digest_bytes = <D as Digest>::output_size();
    for (index, piece) in block.chunks_mut(digest_bytes).enumerate() {
        // The piece counter is a u32 in QEMU and cryptsetup; a stripe is at
        // most 64 bytes, so it never exceeds a few pieces.
        Digest::update(&mut hasher, (index as u32).to_be_bytes());
        Digest::update(&mut hasher, &*piece);
        let digest = hasher.finalize_reset();
        piece.copy_from_slice(&digest[..piece.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for hash in [
            HashAlgorithm::Md5,
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha224,
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
            HashAlgorithm::Ripemd160,
        ] {
            assert_eq!(HashAlgorithm::from_name(hash.name().as_bytes()), Ok(hash));
        }
        assert!(matches!(
            HashAlgorithm::from_name(b"SHA256"),
            Err(CryptoError::UnsupportedHash { .. })
        ));
    }

    #[test]
    fn pbkdf2_sha1_matches_rfc6070() {
        // RFC 6070, test case 2: "password" / "salt", 2 iterations.
        let mut out = [0u8; 20];
        HashAlgorithm::Sha1.pbkdf2(b"password", b"salt", 2, &mut out);
        assert_eq!(
            out,
            [
                0xea, 0x6c, 0x01, 0x4d, 0xc7, 0x2d, 0x6f, 0x8c, 0xcd, 0x1e, 0xd9, 0x2a, 0xce, 0x1d,
                0x41, 0xf0, 0xd8, 0xde, 0x89, 0x57
            ]
        );
    }

    #[test]
    fn diffusion_hashes_counter_and_piece_and_cuts_the_last_piece() {
        // 40 bytes with SHA-256: one full piece, one of 8 bytes.
        let mut block = [0x5au8; 40];
        HashAlgorithm::Sha256.diffuse(&mut block);
        let mut first = sha2::Sha256::new();
        first.update(0u32.to_be_bytes());
        first.update([0x5au8; 32]);
        let mut second = sha2::Sha256::new();
        second.update(1u32.to_be_bytes());
        second.update([0x5au8; 8]);
        assert_eq!(&block[..32], &first.finalize()[..]);
        assert_eq!(&block[32..], &second.finalize()[..8]);
    }
}
