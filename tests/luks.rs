//! The `crypto` module against QEMU: images encrypted by `qemu-img` (LUKS
//! in qcow2 for every AES cipher, mode and IV generator it accepts, serpent
//! and twofish in every key size and mode, cast5, raw
//! LUKS, legacy AES), unlocked and decrypted by the crate, compared byte
//! for byte with `qemu-img convert`'s decryption; wrong passphrases and
//! hostile headers refused with their named error.
//!
//! Every image is read twice: through the crate's read path
//! (`Image::builder(..).passphrase(..)`, then `read_at` over the whole disk,
//! in odd-sized chunks and at scattered offsets), and by the crypto core
//! alone over the test's own walk of the L1/L2 tables (uncompressed images
//! and deflate clusters only: that walk is the test's, not a second copy of
//! the crate's format rules), so a failure says which layer is wrong.
//!
//! `qemu-img create` calibrates PBKDF2 for about a second of CPU per image,
//! so images and QEMU's raw output are cached under `CARGO_TARGET_TMPDIR`.

#![cfg(feature = "luks")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use qcow2_reader::chain::{chain_layers, open_chain, ChainError, ChainOptions, Secret};
use qcow2_reader::crypto::{
    check_master_key, legacy_aes_cipher, unlock, CryptoError, KeyArea, LuksHeader, SectorCipher,
    SlotProblem, UnlockLimits,
};
use qcow2_reader::{Config, Encryption, Error, Image, NoBacking, Unsupported};

use common::{
    assert_same, assert_scattered_reads, convert_raw_keyed, crate_read, encrypted_image_opts,
    image_opts, qemu_io_keyed, Create, Qemu, QemuSecret, LUKS, PASSPHRASE,
};

/// Changing how images are made must not reuse old cached ones.
const CACHE_VERSION: u32 = 1;
/// Writes made in every image: whole clusters, a partial cluster at an odd
/// sector, single sectors far apart, so both sector numbers and host offsets vary.
const WRITES: &[&str] = &[
    "write -P 0x11 0 64k",
    "write -P 0x22 65536 8k",
    "write -P 0x33 1049088 3k",
    "write -P 0x44 3145728 512",
    "write -P 0x55 2097152 128k",
];
const VIRTUAL_SIZE: &str = "4M";

fn cache_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("luks-v{CACHE_VERSION}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An image made once by `create` (given a temporary path), then kept
/// in [`cache_dir`].
fn cached(name: &str, create: impl FnOnce(&Path)) -> PathBuf {
    common::cached(&cache_dir(), name, create)
}

/// What `qemu-img convert` reads from an encrypted image (cached beside it).
fn qemu_decrypted(image: &Path, driver: &str) -> Vec<u8> {
    let raw = cached(
        &format!("{}.raw", image.file_name().unwrap().to_str().unwrap()),
        |out| {
            convert_raw_keyed(
                &QemuSecret::default(),
                &image_opts(driver, image, &[0]),
                out,
            )
        },
    );
    std::fs::read(raw).unwrap()
}

fn qemu_io_writes(path: &Path, driver: &str, compressed: bool) {
    let commands: Vec<String> = WRITES
        .iter()
        .map(|w| {
            if compressed && w.ends_with("64k") {
                w.replace("write", "write -c")
            } else {
                w.to_string()
            }
        })
        .collect();
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    qemu_io_keyed(
        &QemuSecret::default(),
        &image_opts(driver, path, &[0]),
        &commands,
    );
}

/// A LUKS-encrypted qcow2 image with `encrypt.*` options, written by qemu-io.
fn luks_qcow2(name: &str, options: &str, compressed: bool) -> PathBuf {
    cached(&format!("{name}.qcow2"), |path| {
        Create::new(path)
            .secret(&QemuSecret::default())
            .options(&format!("{LUKS}{options}"))
            .size(VIRTUAL_SIZE)
            .run();
        qemu_io_writes(path, "qcow2", compressed);
    })
}

/// The qcow2 fields the test's own table walk needs.
struct Qcow2 {
    bytes: Vec<u8>,
    cluster_bits: u32,
    size: u64,
    crypt_method: u32,
    l1_offset: u64,
    l1_entries: u64,
    /// The full disk encryption header extension: (offset, length).
    fde: Option<(u64, u64)>,
    /// Incompatible bit 4: 16-byte L2 entries with subcluster bitmaps.
    extended_l2: bool,
    /// The external data file's bytes (incompatible bit 2), if any.
    data_file: Option<Vec<u8>>,
}

fn zero_padded(bytes: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let start = (offset as usize).min(bytes.len());
    let end = (offset as usize + len).min(bytes.len());
    out[..end - start].copy_from_slice(&bytes[start..end]);
    out
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

impl Qcow2 {
    fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(be32(&bytes, 0), 0x5146_49fb, "qcow2 magic");
        let version = be32(&bytes, 4);
        let header_length = if version >= 3 {
            be32(&bytes, 100) as usize
        } else {
            72
        };
        let incompatible = if version >= 3 { be64(&bytes, 72) } else { 0 };
        let mut fde = None;
        let mut data_file = None;
        let mut at = header_length;
        while at + 8 <= bytes.len() {
            let (kind, len) = (be32(&bytes, at), be32(&bytes, at + 4) as usize);
            if kind == 0 {
                break;
            }
            if kind == 0x0537_be77 {
                assert_eq!(len, 16, "FDE extension length");
                fde = Some((be64(&bytes, at + 8), be64(&bytes, at + 16)));
            }
            if kind == 0x4441_5441 && incompatible & (1 << 2) != 0 {
                let name = std::str::from_utf8(&bytes[at + 8..at + 8 + len]).unwrap();
                data_file = Some(std::fs::read(path.parent().unwrap().join(name)).unwrap());
            }
            at += 8 + len.next_multiple_of(8);
        }
        Self {
            cluster_bits: be32(&bytes, 20),
            size: be64(&bytes, 24),
            crypt_method: be32(&bytes, 32),
            l1_entries: u64::from(be32(&bytes, 36)),
            l1_offset: be64(&bytes, 40),
            fde,
            extended_l2: incompatible & (1 << 4) != 0,
            data_file,
            bytes,
        }
    }

    fn luks_header(&self) -> LuksHeader {
        let (offset, _) = self.fde.expect("LUKS image has an FDE header extension");
        LuksHeader::parse(&self.bytes[offset as usize..]).unwrap()
    }

    fn key_area(&self) -> KeyArea<'_, [u8]> {
        let (offset, len) = self.fde.unwrap();
        KeyArea::new(&self.bytes[..], offset, len)
    }

    /// Bytes at `offset` of the image file, zeros past its end (as QEMU reads).
    fn file_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        zero_padded(&self.bytes, offset, len)
    }

    /// Bytes at `offset` of where data clusters live (the data file, if any).
    fn data_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        zero_padded(self.data_file.as_ref().unwrap_or(&self.bytes), offset, len)
    }

    /// The virtual disk: unallocated and zero clusters read as zeros,
    /// compressed clusters inflate (they are never encrypted), data clusters
    /// are decrypted with sector numbers from the host offset (LUKS) or the
    /// guest offset (legacy AES).
    fn decrypt_disk(&self, cipher: &SectorCipher) -> Vec<u8> {
        let cluster_size = 1usize << self.cluster_bits;
        let entry_bytes = if self.extended_l2 { 16 } else { 8 };
        let l2_entries = cluster_size as u64 / entry_bytes;
        let mut disk = vec![0u8; self.size as usize];
        for (index, cluster) in disk.chunks_mut(cluster_size).enumerate() {
            let guest = index as u64 * cluster_size as u64;
            let l1_index = index as u64 / l2_entries;
            assert!(l1_index < self.l1_entries);
            let l1_entry = be64(&self.bytes, (self.l1_offset + 8 * l1_index) as usize);
            let l2_offset = l1_entry & 0x00ff_ffff_ffff_fe00;
            if l2_offset == 0 {
                continue;
            }
            let entry_at = (l2_offset + entry_bytes * (index as u64 % l2_entries)) as usize;
            let l2_entry = be64(&self.bytes, entry_at);
            if l2_entry & (1 << 62) != 0 {
                let x = 62 - (self.cluster_bits - 8);
                let offset = l2_entry & ((1 << x) - 1);
                let sectors = ((l2_entry >> x) & ((1 << (self.cluster_bits - 8)) - 1)) + 1;
                let len = sectors * 512 - (offset & 511);
                let input = self.file_bytes(offset, len as usize);
                let mut out = vec![0u8; cluster_size];
                // Raw deflate (QEMU's windowBits -12), inflated by the
                // reference implementation, not the crate.
                use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
                let (status, _, produced) = decompress(
                    &mut DecompressorOxide::new(),
                    &input,
                    &mut out,
                    0,
                    inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
                );
                assert!(status as i32 >= 0 && produced == cluster_size, "{status:?}");
                cluster.copy_from_slice(&out[..cluster.len()]);
                continue;
            }
            let host = l2_entry & 0x00ff_ffff_ffff_fe00;
            let zero_flag = !self.extended_l2 && l2_entry & 1 != 0;
            // With an external data file, offset 0 with COPIED set is real
            // data (guest cluster 0); without COPIED it is unallocated.
            let copied = l2_entry & (1 << 63) != 0;
            if zero_flag || (host == 0 && !(self.data_file.is_some() && copied)) {
                continue;
            }
            let mut data = self.data_bytes(host, cluster_size);
            let first_sector = if self.crypt_method == 2 {
                host / 512
            } else {
                guest / 512
            };
            cipher.decrypt_sectors(first_sector, &mut data).unwrap();
            cluster.copy_from_slice(&data[..cluster.len()]);
            if self.extended_l2 {
                // Subclusters not allocated (bit i) or reading as zeros
                // (bit 32 + i) are zeros, whatever the decrypted bytes say.
                let bitmap = be64(&self.bytes, entry_at + 8);
                let subcluster = cluster_size / 32;
                for (i, part) in cluster.chunks_mut(subcluster).enumerate() {
                    if bitmap & (1 << i) == 0 || bitmap & (1 << (32 + i)) != 0 {
                        part.fill(0);
                    }
                }
            }
        }
        disk
    }
}

type FileImage = Image<'static, std::fs::File, NoBacking>;

/// The builder of the image at `path`, with its external data file if it names one.
fn builder(path: &Path) -> qcow2_reader::ImageBuilder<std::fs::File> {
    let builder = Image::builder(std::fs::File::open(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match builder.header().data_file() {
        Some(name) => {
            let data = path.parent().unwrap().join(name.to_str().unwrap());
            builder.data_file(std::fs::File::open(data).unwrap())
        }
        None => builder,
    }
}

/// Opens `path` through the crate's read path, unlocked with `passphrase`.
fn open_with(path: &Path, passphrase: &[u8]) -> Result<FileImage, Error<std::io::Error>> {
    builder(path)
        .passphrase(passphrase, &UnlockLimits::default())?
        .open_alloc(&Config::default())
}

/// The crate's read path against QEMU's decryption: whole, in odd-sized
/// chunks (partial sectors at both ends of most reads), and scattered.
fn assert_library_reads(expected: &[u8], image: &FileImage, what: &str) {
    assert_same(expected, &crate_read(image, 1 << 20), what);
    assert_same(expected, &crate_read(image, 4096 + 512 + 7), what);
    assert_scattered_reads(expected, image);
}

/// Unlocks with the passphrase, decrypts every cluster, compares with QEMU.
fn assert_luks_qcow2_reads_like_qemu(path: &Path) -> LuksHeader {
    let expected = qemu_decrypted(path, "qcow2");
    let library = open_with(path, PASSPHRASE.as_bytes())
        .unwrap_or_else(|e| panic!("{}: open: {e}", path.display()));
    assert_library_reads(&expected, &library, &path.display().to_string());
    let image = Qcow2::open(path);
    assert_eq!(image.crypt_method, 2);
    let header = image.luks_header();
    let key = unlock(
        &header,
        &image.key_area(),
        PASSPHRASE.as_bytes(),
        &UnlockLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{}: unlock: {e}", path.display()));
    let cipher = SectorCipher::new(header.spec(), key.as_bytes()).unwrap();
    assert_eq!(library.header().luks_header(), Some(&header));
    let actual = image.decrypt_disk(&cipher);
    assert_same(&expected, &actual, &path.display().to_string());
    // The written patterns are really there (QEMU's output is not all zeros).
    assert_eq!(expected[0], 0x11);
    assert_eq!(expected[3145728], 0x44);
    header
}

macro_rules! luks_cases {
    ($($name:ident: $cipher:literal, $mode:literal, $ivgen:literal, $hash:literal, $ivhash:literal;)*) => {$(
        #[test]
        fn $name() {
            let mut options = format!(
                ",encrypt.cipher-alg={},encrypt.cipher-mode={},encrypt.ivgen-alg={},encrypt.hash-alg={}",
                $cipher, $mode, $ivgen, $hash
            );
            if !$ivhash.is_empty() {
                options.push_str(&format!(",encrypt.ivgen-hash-alg={}", $ivhash));
            }
            let header = assert_luks_qcow2_reads_like_qemu(&luks_qcow2(stringify!($name), &options, false));
            let spec = header.spec();
            assert_eq!(spec.cipher.name(), $cipher);
            assert_eq!(spec.mode.name(), $mode);
            assert_eq!(spec.ivgen.name(), $ivgen);
            assert_eq!(spec.hash.name(), $hash);
        }
    )*};
}

// Every AES cipher, mode and IV generator `qemu-img create` 7.2 accepts for
// LUKS (AES-192 outside XTS makes it abort: 24 x 4000 bytes of key material
// is not a whole number of sectors). The PBKDF2 hash rotates through all
// seven QEMU knows; ESSIV hashes through those giving an AES key size.
luks_cases! {
    aes_128_xts_plain: "aes-128", "xts", "plain", "sha256", "";
    aes_128_xts_plain64: "aes-128", "xts", "plain64", "sha1", "";
    aes_128_xts_essiv: "aes-128", "xts", "essiv", "sha512", "sha256";
    aes_128_cbc_plain: "aes-128", "cbc", "plain", "md5", "";
    aes_128_cbc_plain64: "aes-128", "cbc", "plain64", "sha224", "";
    aes_128_cbc_essiv: "aes-128", "cbc", "essiv", "sha384", "sha256";
    aes_128_ecb_plain: "aes-128", "ecb", "plain", "ripemd160", "";
    aes_128_ecb_plain64: "aes-128", "ecb", "plain64", "sha256", "";
    aes_128_ecb_essiv: "aes-128", "ecb", "essiv", "sha1", "md5";
    aes_128_ctr_plain: "aes-128", "ctr", "plain", "sha512", "";
    aes_128_ctr_plain64: "aes-128", "ctr", "plain64", "md5", "";
    aes_128_ctr_essiv: "aes-128", "ctr", "essiv", "sha224", "md5";
    aes_192_xts_plain: "aes-192", "xts", "plain", "sha384", "";
    aes_192_xts_plain64: "aes-192", "xts", "plain64", "ripemd160", "";
    aes_192_xts_essiv: "aes-192", "xts", "essiv", "sha256", "sha256";
    aes_256_xts_plain: "aes-256", "xts", "plain", "sha1", "";
    aes_256_xts_plain64: "aes-256", "xts", "plain64", "sha256", "";
    aes_256_xts_essiv: "aes-256", "xts", "essiv", "md5", "md5";
    aes_256_cbc_plain: "aes-256", "cbc", "plain", "sha224", "";
    aes_256_cbc_plain64: "aes-256", "cbc", "plain64", "sha384", "";
    aes_256_cbc_essiv: "aes-256", "cbc", "essiv", "ripemd160", "sha256";
    aes_256_ecb_plain: "aes-256", "ecb", "plain", "sha256", "";
    aes_256_ecb_plain64: "aes-256", "ecb", "plain64", "sha1", "";
    aes_256_ecb_essiv: "aes-256", "ecb", "essiv", "sha512", "md5";
    aes_256_ctr_plain: "aes-256", "ctr", "plain", "md5", "";
    aes_256_ctr_plain64: "aes-256", "ctr", "plain64", "sha224", "";
    aes_256_ctr_essiv: "aes-256", "ctr", "essiv", "sha384", "sha256";
}

// Serpent and twofish: every key size with XTS (the only mode qemu-img
// takes 192-bit keys in), then CBC with ESSIV and with plain, CTR and ECB
// on one key size each. serpent-128 with essiv:sha256 encrypts sector
// numbers with serpent-256 (ESSIV keeps the family, takes the digest's size).
luks_cases! {
    serpent_128_xts_plain64: "serpent-128", "xts", "plain64", "sha256", "";
    serpent_192_xts_plain64: "serpent-192", "xts", "plain64", "sha1", "";
    serpent_256_xts_plain64: "serpent-256", "xts", "plain64", "sha512", "";
    serpent_128_cbc_essiv: "serpent-128", "cbc", "essiv", "sha256", "sha256";
    serpent_128_cbc_plain: "serpent-128", "cbc", "plain", "md5", "";
    serpent_128_ctr_plain64: "serpent-128", "ctr", "plain64", "sha224", "";
    serpent_128_ecb_plain64: "serpent-128", "ecb", "plain64", "ripemd160", "";
    twofish_128_xts_plain64: "twofish-128", "xts", "plain64", "sha384", "";
    twofish_192_xts_plain64: "twofish-192", "xts", "plain64", "sha256", "";
    twofish_256_xts_plain64: "twofish-256", "xts", "plain64", "md5", "";
    twofish_256_cbc_essiv: "twofish-256", "cbc", "essiv", "sha1", "md5";
    twofish_256_cbc_plain: "twofish-256", "cbc", "plain", "sha512", "";
    twofish_256_ctr_plain64: "twofish-256", "ctr", "plain64", "sha1", "";
    twofish_256_ecb_plain64: "twofish-256", "ecb", "plain64", "sha224", "";
}

// cast5 (8-byte blocks, 8-byte IVs): every mode and IV generator qemu-img
// creates it with (no xts, no essiv).
luks_cases! {
    cast5_128_cbc_plain: "cast5-128", "cbc", "plain", "sha256", "";
    cast5_128_cbc_plain64: "cast5-128", "cbc", "plain64", "sha1", "";
    cast5_128_ctr_plain: "cast5-128", "ctr", "plain", "md5", "";
    cast5_128_ctr_plain64: "cast5-128", "ctr", "plain64", "sha512", "";
    cast5_128_ecb_plain64: "cast5-128", "ecb", "plain64", "sha256", "";
}

/// QEMU's defaults (aes-256-xts-plain64, sha256), used by the error tests.
fn default_image() -> PathBuf {
    luks_qcow2("default", "", false)
}

#[test]
fn qemu_defaults_read_like_qemu() {
    let header = assert_luks_qcow2_reads_like_qemu(&default_image());
    assert_eq!(header.spec().cipher.name(), "aes-256");
    assert_eq!(header.spec().mode.name(), "xts");
    // QEMU puts slot 0's material right after the 4 KiB header and
    // reserves the LUKS area in whole clusters.
    assert_eq!(header.slots()[0].key_offset(), 4096);
    assert_eq!(header.payload_offset(), 2068480);
}

#[test]
fn compressed_clusters_are_stored_in_the_clear() {
    // `qemu-io write -c` compresses into a LUKS image without encrypting
    // (qcow2_co_pwritev_compressed_task never calls the cipher), and
    // QEMU's read path inflates them without decrypting.
    let path = luks_qcow2("compressed", "", true);
    let image = Qcow2::open(&path);
    let l1_entry = be64(&image.bytes, image.l1_offset as usize);
    let l2_entry = be64(&image.bytes, (l1_entry & 0x00ff_ffff_ffff_fe00) as usize);
    assert_ne!(l2_entry & (1 << 62), 0, "cluster 0 is compressed");
    assert_luks_qcow2_reads_like_qemu(&path);
}

#[test]
fn an_encrypted_image_without_a_key_is_refused_by_name() {
    let path = default_image();
    let builder = builder(&path);
    let Some(Encryption::Luks(header)) = builder.encryption() else {
        panic!("a LUKS image reports its encryption");
    };
    assert_eq!(header.spec().cipher.name(), "aes-256");
    let error = builder.open_alloc(&Config::default()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unsupported(Unsupported::NeedsKey { method: 2 })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("no passphrase or key"),
        "{error}"
    );
    // The work limit travels with the passphrase, and refuses before any work.
    let error = builder_of_default()
        .passphrase(PASSPHRASE.as_bytes(), &UnlockLimits { max_iterations: 1 })
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Crypto(CryptoError::IterationLimit { slot: Some(0), .. })
        ),
        "{error}"
    );
}

fn builder_of_default() -> qcow2_reader::ImageBuilder<std::fs::File> {
    builder(&default_image())
}

#[test]
fn the_read_path_takes_the_master_key_too() {
    let path = default_image();
    let image = Qcow2::open(&path);
    let header = image.luks_header();
    let limits = UnlockLimits::default();
    let key = unlock(&header, &image.key_area(), PASSPHRASE.as_bytes(), &limits).unwrap();
    let library = builder(&path)
        .master_key(key.as_bytes(), &limits)
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    assert_library_reads(&qemu_decrypted(&path, "qcow2"), &library, "master key");
    let mut wrong = key.as_bytes().to_vec();
    wrong[0] ^= 1;
    let error = builder(&path).master_key(&wrong, &limits).unwrap_err();
    assert!(
        matches!(error, Error::Crypto(CryptoError::WrongMasterKey)),
        "{error}"
    );
}

/// An encrypted overlay over an encrypted base (same passphrase, each with
/// its own LUKS header and master key), and what QEMU reads from the top.
fn encrypted_chain() -> (PathBuf, PathBuf, Vec<u8>) {
    // Each image has its own LUKS header and master key; the top one's
    // writes cover part of the base's, and the rest reads through.
    let base = luks_qcow2(
        "chain-base",
        ",encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv",
        false,
    );
    let top = cached("chain-top.qcow2", |path| {
        Create::new(path)
            .unsafe_backing()
            .secret(&QemuSecret::default())
            .options(&format!(
                "{LUKS},backing_file={},backing_fmt=qcow2",
                base.display()
            ))
            .size(VIRTUAL_SIZE)
            .run();
        qemu_io_keyed(
            &QemuSecret::default(),
            &image_opts("qcow2", path, &[0, 1]),
            &["write -P 0x66 32768 64k", "write -P 0x77 3146240 1536"],
        );
    });
    let raw = cached("chain-top.qcow2.raw", |out| {
        convert_raw_keyed(
            &QemuSecret::default(),
            &image_opts("qcow2", &top, &[0, 1]),
            out,
        )
    });
    let expected = std::fs::read(raw).unwrap();
    assert_eq!(expected[0], 0x11, "base data reads through");
    assert_eq!(expected[32768], 0x66, "top data");
    assert_eq!(expected[3145728], 0x44, "base sector beside the top's");
    assert_eq!(expected[3146240], 0x77, "top sector");
    (base, top, expected)
}

#[test]
fn a_backing_chain_of_encrypted_images_reads_like_qemu() {
    let (base, top, expected) = encrypted_chain();
    let base_image = open_with(&base, PASSPHRASE.as_bytes()).unwrap();
    let chain = Image::builder(std::fs::File::open(&top).unwrap())
        .unwrap()
        .backing(base_image)
        .passphrase(PASSPHRASE.as_bytes(), &UnlockLimits::default())
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    assert_same(&expected, &crate_read(&chain, 1 << 20), "encrypted chain");
    assert_same(
        &expected,
        &crate_read(&chain, 4096 + 512 + 7),
        "encrypted chain, odd reads",
    );
    assert_scattered_reads(&expected, &chain);
}

#[test]
fn a_given_master_key_decrypts_like_the_passphrase() {
    let image = Qcow2::open(&default_image());
    let header = image.luks_header();
    let limits = UnlockLimits::default();
    let key = unlock(&header, &image.key_area(), PASSPHRASE.as_bytes(), &limits).unwrap();
    let again = check_master_key(&header, key.as_bytes(), &limits).unwrap();
    assert_eq!(again.as_bytes(), key.as_bytes());
    let mut wrong = key.as_bytes().to_vec();
    wrong[5] ^= 1;
    assert_eq!(
        check_master_key(&header, &wrong, &limits).unwrap_err(),
        CryptoError::WrongMasterKey
    );
    assert_eq!(
        check_master_key(&header, &wrong[..32], &limits).unwrap_err(),
        CryptoError::WrongMasterKey
    );
}

#[test]
fn a_wrong_passphrase_is_its_own_error() {
    let path = default_image();
    let image = Qcow2::open(&path);
    let header = image.luks_header();
    let error = unlock(
        &header,
        &image.key_area(),
        b"correct horse battery stapl",
        &UnlockLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(error, CryptoError::WrongPassphrase), "{error}");
    let error = open_with(&path, b"correct horse battery stapl").unwrap_err();
    assert!(
        matches!(error, Error::Crypto(CryptoError::WrongPassphrase)),
        "{error}"
    );
    // QEMU agrees.
    let out = Qemu::img()
        .arg("convert")
        .secret(&QemuSecret::Passphrase(
            "correct horse battery stapl".into(),
        ))
        .args([
            "--image-opts",
            &encrypted_image_opts(&path),
            "-O",
            "raw",
            "/dev/null",
        ])
        .output();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid password"));
}

/// A copy of the default image with `patch` applied to its bytes.
fn patched(name: &str, patch: impl FnOnce(&mut Vec<u8>, (u64, u64))) -> PathBuf {
    let source = Qcow2::open(&default_image());
    let mut bytes = source.bytes.clone();
    patch(&mut bytes, source.fde.unwrap());
    let path = cache_dir().join(format!("{name}-{}.qcow2", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// QEMU's refusal of an image, as its error text.
fn qemu_refusal(path: &Path) -> String {
    let out = Qemu::img()
        .arg("convert")
        .secret(&QemuSecret::default())
        .args([
            "--image-opts",
            &encrypted_image_opts(path),
            "-O",
            "raw",
            "/dev/null",
        ])
        .output();
    assert!(!out.status.success(), "QEMU accepted {}", path.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn billions_of_iterations_are_refused_before_any_work() {
    // Slot 0 asks for u32::MAX iterations (QEMU would spin for hours).
    let path = patched("iterations", |bytes, (fde, _)| {
        let at = fde as usize + 208 + 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    });
    let image = Qcow2::open(&path);
    let header = image.luks_header();
    let started = Instant::now();
    let error = unlock(
        &header,
        &image.key_area(),
        PASSPHRASE.as_bytes(),
        &UnlockLimits::default(),
    )
    .unwrap_err();
    // PBKDF2 of u32::MAX iterations would take hours; the refusal takes
    // microseconds (1 s leaves room for a loaded machine).
    assert!(
        started.elapsed().as_millis() < 1000,
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            error,
            CryptoError::IterationLimit {
                slot: Some(0),
                limit: 50_000_000,
                ..
            }
        ),
        "{error}"
    );
    // A lower caller limit refuses the unpatched image the same way.
    let image = Qcow2::open(&default_image());
    let error = unlock(
        &image.luks_header(),
        &image.key_area(),
        PASSPHRASE.as_bytes(),
        &UnlockLimits {
            max_iterations: 1000,
        },
    )
    .unwrap_err();
    assert!(
        matches!(error, CryptoError::IterationLimit { .. }),
        "{error}"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn key_material_past_the_header_area_is_refused_like_qemu() {
    // The FDE extension says the LUKS area is one 4 KiB page: slot 0's key
    // material (4096..260096) is outside it.
    let path = patched("short-area", |bytes, _| {
        let image = &bytes[..];
        let header_length = be32(image, 100) as usize;
        let mut at = header_length;
        while be32(image, at) != 0x0537_be77 {
            at += 8 + (be32(image, at + 4) as usize).next_multiple_of(8);
        }
        bytes[at + 16..at + 24].copy_from_slice(&4096u64.to_be_bytes());
    });
    let image = Qcow2::open(&path);
    let error = unlock(
        &image.luks_header(),
        &image.key_area(),
        PASSPHRASE.as_bytes(),
        &UnlockLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            CryptoError::KeyMaterialOutsideHeader {
                slot: 0,
                end: 260096,
                area_len: 4096
            }
        ),
        "{error}"
    );
    assert!(qemu_refusal(&path).contains("outside of extension header"));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn hostile_headers_get_the_error_qemu_gives() {
    // (what is patched in the LUKS header, the crate's error, QEMU's message)
    type Patch = fn(&mut [u8]);
    type Expected = fn(&CryptoError) -> bool;
    let cases: [(&str, Patch, Expected, &str); 5] = [
        (
            "magic",
            |luks| luks[0] = b'X',
            |e| matches!(e, CryptoError::BadMagic { .. }),
            "Volume is not in LUKS format",
        ),
        (
            "stripes",
            |luks| luks[208 + 44..208 + 48].copy_from_slice(&3999u32.to_be_bytes()),
            |e| {
                matches!(
                    e,
                    CryptoError::KeySlot {
                        slot: 0,
                        problem: SlotProblem::Stripes { stripes: 3999 }
                    }
                )
            },
            "stripes 3999 != 4000",
        ),
        (
            "payload",
            |luks| luks[104..108].copy_from_slice(&4u32.to_be_bytes()),
            |e| {
                matches!(
                    e,
                    CryptoError::PayloadOverlapsHeader {
                        payload_offset_sector: 4
                    }
                )
            },
            "LUKS payload is overlapping with the header",
        ),
        (
            "slot-overlap",
            |luks| {
                let slot1 = 208 + 48 + 40;
                luks[slot1..slot1 + 4].copy_from_slice(&100u32.to_be_bytes());
            },
            |e| {
                matches!(
                    e,
                    CryptoError::KeySlot {
                        slot: 0,
                        problem: SlotProblem::OverlapsSlot { other: 1 }
                    }
                )
            },
            "Keyslots 0 and 1 are overlapping in the header",
        ),
        (
            "cipher",
            |luks| luks[8..12].copy_from_slice(b"des\0"),
            |e| matches!(e, CryptoError::UnsupportedCipher { .. }),
            "Algorithm 'des' with key size 32 bytes not supported",
        ),
    ];
    for (name, patch, is_expected, qemu_says) in cases {
        let path = patched(name, |bytes, (fde, _)| patch(&mut bytes[fde as usize..]));
        let image = Qcow2::open(&path);
        let (fde, _) = image.fde.unwrap();
        let error = LuksHeader::parse(&image.bytes[fde as usize..]).unwrap_err();
        assert!(is_expected(&error), "{name}: {error}");
        let refusal = qemu_refusal(&path);
        assert!(refusal.contains(qemu_says), "{name}: QEMU said {refusal}");
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn raw_luks_counts_sectors_from_the_payload() {
    let path = cached("raw.luks", |path| {
        Create::new(path)
            .format("luks")
            .secret(&QemuSecret::default())
            .options("iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv")
            .size(VIRTUAL_SIZE)
            .run();
        qemu_io_writes(path, "luks", false);
    });
    let bytes = std::fs::read(&path).unwrap();
    let header = LuksHeader::parse(&bytes).unwrap();
    let area = KeyArea::new(&bytes[..], 0, header.payload_offset());
    let key = unlock(
        &header,
        &area,
        PASSPHRASE.as_bytes(),
        &UnlockLimits::default(),
    )
    .unwrap();
    let cipher = SectorCipher::new(header.spec(), key.as_bytes()).unwrap();
    let mut disk = bytes[header.payload_offset() as usize..].to_vec();
    cipher.decrypt_sectors(0, &mut disk).unwrap();
    assert_same(&qemu_decrypted(&path, "luks"), &disk, "raw LUKS");
}

#[test]
fn legacy_aes_reads_like_qemu_with_guest_sector_numbers() {
    let path = cached("legacy-aes.qcow2", |path| {
        Create::new(path)
            .secret(&QemuSecret::default())
            .options("encrypt.format=aes")
            .size(VIRTUAL_SIZE)
            .run();
        qemu_io_writes(path, "qcow2", false);
    });
    let image = Qcow2::open(&path);
    assert_eq!(image.crypt_method, 1);
    assert_eq!(image.fde, None);
    let expected = qemu_decrypted(&path, "qcow2");
    assert_eq!(expected[3145728], 0x44);
    let cipher = legacy_aes_cipher(PASSPHRASE.as_bytes());
    assert_same(&expected, &image.decrypt_disk(&cipher), "legacy AES");
    // No check exists: a wrong passphrase decrypts to garbage, not an error.
    let garbage = image.decrypt_disk(&legacy_aes_cipher(b"wrong"));
    assert_ne!(garbage, expected);

    // The read path, with the same API as LUKS.
    assert!(matches!(builder(&path).encryption(), Some(Encryption::Aes)));
    let library = open_with(&path, PASSPHRASE.as_bytes()).unwrap();
    assert_library_reads(&expected, &library, "legacy AES, read path");
    let wrong = open_with(&path, b"wrong").unwrap();
    assert_ne!(crate_read(&wrong, 1 << 20), expected);
    // The key is the passphrase cut or padded to 16 bytes.
    let mut key = [0u8; 16];
    key.copy_from_slice(&PASSPHRASE.as_bytes()[..16]);
    let keyed = builder(&path)
        .master_key(&key, &UnlockLimits::default())
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    assert_same(
        &expected,
        &crate_read(&keyed, 1 << 20),
        "legacy AES, master key",
    );
    let error = builder(&path).open_alloc(&Config::default()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unsupported(Unsupported::NeedsKey { method: 1 })
        ),
        "{error}"
    );
}

#[test]
fn key_material_past_the_end_of_the_file_reads_as_zeros_like_qemu() {
    // Move the LUKS area to a new cluster at the end of the file, copying
    // the header and half of slot 0's key material: the rest of it lies past
    // the end of the file, which QEMU reads as zeros, so no key comes out.
    let path = patched("past-eof", |bytes, (fde, len)| {
        let new_offset = (bytes.len() as u64).next_multiple_of(65536);
        let copied = 4096 + 128_000;
        let area = bytes[fde as usize..fde as usize + copied].to_vec();
        bytes.resize(new_offset as usize, 0);
        bytes.extend_from_slice(&area);
        let header_length = be32(bytes, 100) as usize;
        let mut at = header_length;
        while be32(bytes, at) != 0x0537_be77 {
            at += 8 + (be32(bytes, at + 4) as usize).next_multiple_of(8);
        }
        bytes[at + 8..at + 16].copy_from_slice(&new_offset.to_be_bytes());
        assert!(new_offset + len > bytes.len() as u64);
    });
    let image = Qcow2::open(&path);
    let error = unlock(
        &image.luks_header(),
        &image.key_area(),
        PASSPHRASE.as_bytes(),
        &UnlockLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(error, CryptoError::WrongPassphrase), "{error}");
    assert!(qemu_refusal(&path).contains("Invalid password, cannot unlock any keyslot"));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn subclusters_decrypt_from_their_host_offset() {
    // Extended L2 (16 KiB clusters: 512-byte subclusters); the writes leave
    // partly allocated clusters.
    let path = luks_qcow2("extended-l2", ",extended_l2=on,cluster_size=16k", false);
    let image = Qcow2::open(&path);
    assert!(image.extended_l2);
    assert_luks_qcow2_reads_like_qemu(&path);
}

#[test]
fn a_data_file_decrypts_from_its_own_offsets() {
    // With an external data file the host offset is the offset in the data
    // file (equal to the guest offset), and that is what numbers sectors.
    let data_name = "data-file.qcow2.data";
    let data_path = cache_dir().join(data_name);
    let path = cached("data-file.qcow2", |path| {
        let _ = std::fs::remove_file(&data_path);
        Create::new(path)
            .secret(&QemuSecret::default())
            .options(&format!("{LUKS},data_file={}", data_path.display()))
            .size(VIRTUAL_SIZE)
            .run();
        qemu_io_writes(path, "qcow2", false);
    });
    let image = Qcow2::open(&path);
    assert!(image.data_file.is_some());
    assert_luks_qcow2_reads_like_qemu(&path);
}

#[test]
fn slots_are_tried_in_order_until_one_opens() {
    // `qemu-img amend` enables slot 1 with a second passphrase; both open
    // the same master key, and the second is found after slot 0 fails.
    let path = cached("two-slots.qcow2", |path| {
        std::fs::copy(default_image(), path).unwrap();
        Qemu::img()
            .arg("amend")
            .secret(&QemuSecret::default())
            .args(["--object", "secret,id=sec1,data=second passphrase"])
            .args(["--image-opts", &encrypted_image_opts(path)])
            .args([
                "-o",
                "encrypt.state=active,encrypt.new-secret=sec1,encrypt.iter-time=10",
            ])
            .run();
    });
    let image = Qcow2::open(&path);
    let header = image.luks_header();
    assert!(header.slots()[0].active && header.slots()[1].active);
    let limits = UnlockLimits::default();
    let first = unlock(&header, &image.key_area(), PASSPHRASE.as_bytes(), &limits).unwrap();
    let second = unlock(&header, &image.key_area(), b"second passphrase", &limits).unwrap();
    assert_eq!(first.as_bytes(), second.as_bytes());
    // Both slots plus two digests: a limit that covers only slot 0 and
    // its digest refuses before trying slot 1.
    let slot0 = u64::from(header.slots()[0].iterations + header.master_key_iterations());
    let error = unlock(
        &header,
        &image.key_area(),
        b"second passphrase",
        &UnlockLimits {
            max_iterations: slot0,
        },
    )
    .unwrap_err();
    assert!(
        matches!(error, CryptoError::IterationLimit { slot: Some(1), .. }),
        "{error}"
    );
    assert_same(
        &qemu_decrypted(&path, "qcow2"),
        &image.decrypt_disk(&SectorCipher::new(header.spec(), second.as_bytes()).unwrap()),
        "two slots",
    );
}

/// A plain (unencrypted) overlay over the encrypted base of
/// [`encrypted_chain`], and what QEMU reads from it.
fn plain_overlay_over_encrypted_base() -> (PathBuf, Vec<u8>) {
    let (base, _, _) = encrypted_chain();
    // Only the base is keyed.
    let image_opts = |path: &Path| image_opts("qcow2", path, &[1]);
    let top = cached("plain-over-luks.qcow2", |path| {
        Create::new(path)
            .unsafe_backing()
            .options(&format!(
                "backing_file={},backing_fmt=qcow2",
                base.display()
            ))
            .size(VIRTUAL_SIZE)
            .run();
        qemu_io_keyed(
            &QemuSecret::default(),
            &image_opts(path),
            &["write -P 0x88 65536 4k"],
        );
    });
    let raw = cached("plain-over-luks.qcow2.raw", |out| {
        convert_raw_keyed(&QemuSecret::default(), &image_opts(&top), out)
    });
    let expected = std::fs::read(raw).unwrap();
    assert_eq!(expected[0], 0x11, "base data reads through");
    assert_eq!(expected[65536], 0x88, "overlay data");
    (top, expected)
}

fn chain_options(passphrase: Option<&[u8]>) -> ChainOptions {
    ChainOptions {
        secret: passphrase.map(|bytes| Secret::passphrase(bytes, UnlockLimits::default())),
        ..ChainOptions::default()
    }
}

/// The chain of `top` read whole and in odd chunks through `open_chain`.
fn assert_chain_reads(top: &Path, expected: &[u8], what: &str) {
    let chain = open_chain(top, &chain_options(Some(PASSPHRASE.as_bytes())))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(chain.layers.len(), 2, "{what}: layers");
    assert_same(expected, &crate_read(&*chain.top, 1 << 20), what);
    assert_same(expected, &crate_read(&*chain.top, 4096 + 512 + 7), what);
}

#[test]
fn open_chain_offers_one_passphrase_to_every_encrypted_layer() {
    let (_, top, expected_top) = encrypted_chain();
    assert_chain_reads(&top, &expected_top, "encrypted over encrypted");
    let (plain_top, expected) = plain_overlay_over_encrypted_base();
    assert_chain_reads(&plain_top, &expected, "plain over encrypted");
    // A secret opening a chain again keys its layers with the master keys
    // it unlocked the first time: the same bytes.
    let options = chain_options(Some(PASSPHRASE.as_bytes()));
    let first = open_chain(&top, &options).unwrap();
    let again = open_chain(&top, &options.clone()).unwrap();
    assert_same(
        &crate_read(&*first.top, 1 << 20),
        &crate_read(&*again.top, 1 << 20),
        "reopened",
    );
    assert_same(
        &expected_top,
        &crate_read(&*again.top, 1 << 20),
        "reopened chain",
    );
}

/// The error `open_chain` gives for `top` with `passphrase`.
fn chain_error(top: &Path, passphrase: Option<&[u8]>) -> (PathBuf, Error<std::io::Error>) {
    match open_chain(top, &chain_options(passphrase)) {
        Err(ChainError::Image { path, error }) => (path, error),
        Err(other) => panic!("{}: unexpected error {other}", top.display()),
        Ok(_) => panic!("{}: opened", top.display()),
    }
}

#[test]
fn open_chain_names_the_layer_it_cannot_unlock() {
    let (base, top, _) = encrypted_chain();
    let (plain_top, _) = plain_overlay_over_encrypted_base();
    let wrong = Some(&b"correct horse battery stapl"[..]);

    // The encrypted top is refused as itself.
    let (path, error) = chain_error(&top, wrong);
    assert_eq!(path, top);
    assert!(
        matches!(error, Error::Crypto(CryptoError::WrongPassphrase)),
        "{error}"
    );
    let (path, error) = chain_error(&top, None);
    assert_eq!(path, top);
    assert!(
        matches!(
            error,
            Error::Unsupported(Unsupported::NeedsKey { method: 2 })
        ),
        "{error}"
    );

    // Under a plain overlay, the base is named as backing image 1.
    for (passphrase, what) in [(wrong, "wrong passphrase"), (None, "no passphrase")] {
        let (path, error) = chain_error(&plain_top, passphrase);
        assert_eq!(path, plain_top, "{what}");
        let Error::Backing { depth, name, error } = &error else {
            panic!("{what}: not a backing error: {error}");
        };
        assert_eq!(*depth, 1, "{what}");
        assert_eq!(name.as_deref(), Some(base.to_str().unwrap()), "{what}");
        let expected = match passphrase {
            Some(_) => matches!(**error, Error::Crypto(CryptoError::WrongPassphrase)),
            None => matches!(
                **error,
                Error::Unsupported(Unsupported::NeedsKey { method: 2 })
            ),
        };
        assert!(expected, "{what}: {error}");
        let text = open_chain(&plain_top, &chain_options(passphrase))
            .err()
            .unwrap()
            .to_string();
        assert!(text.contains("backing image 1"), "{text}");
        assert!(text.contains(base.to_str().unwrap()), "{text}");
    }

    // The layers are listed without any key.
    let layers = chain_layers(&top, &ChainOptions::default()).unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[1].path, base);
    assert!(layers[1].header.as_ref().unwrap().luks_header().is_some());
}
