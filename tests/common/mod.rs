//! Shared helpers of the integration tests: images made by QEMU's own tools,
//! and QEMU's reading of them as the reference.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2_reader::chain::{open_chain, ChainOptions};
use qcow2_reader::BlockRead;

/// A scratch directory for one test's images.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e}; install QEMU's tools with: apt-get install -y qemu-utils")
    });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `qemu-img` with `args`, failing the test if it fails.
pub fn qemu_img(args: &[&str]) -> Vec<u8> {
    run("qemu-img", args)
}

/// Creates a qcow2 image with `-o options` of `size`.
pub fn create(path: &Path, options: &str, size: &str) {
    let path = path.to_str().unwrap();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([path, size]);
    qemu_img(&args);
}

/// Runs `qemu-io` commands (each like `write -P 0x11 0 64k`) on an image.
pub fn qemu_io(path: &Path, commands: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args);
}

/// The virtual disk as QEMU reads it: `qemu-img convert -O raw`, plus optional extra args.
pub fn qemu_raw(scratch: &Scratch, image: &Path, extra: &[&str]) -> Vec<u8> {
    let out = scratch.path("qemu-reference.raw");
    let mut args = vec!["convert"];
    args.extend(extra);
    args.extend(["-O", "raw", image.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&args);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Reads the whole virtual disk through the crate, in reads of `chunk` bytes.
pub fn crate_read(
    image: &dyn BlockRead<Error = qcow2_reader::Error<std::io::Error>>,
    chunk: usize,
) -> Vec<u8> {
    let size = image.size().unwrap() as usize;
    let mut out = vec![0u8; size];
    for start in (0..size).step_by(chunk) {
        let end = (start + chunk).min(size);
        image
            .read_at(start as u64, &mut out[start..end])
            .unwrap_or_else(|e| panic!("read at {start:#x}: {e}"));
    }
    out
}

/// Opens `image` with its chain and checks that every byte equals QEMU's,
/// read whole, in odd-sized chunks, and at scattered unaligned offsets.
pub fn assert_reads_like_qemu(scratch: &Scratch, image: &Path) {
    let expected = qemu_raw(scratch, image, &[]);
    let chain = open_chain(image, &ChainOptions::default()).unwrap_or_else(|e| panic!("open: {e}"));
    assert_same(&expected, &crate_read(&*chain.top, 1 << 20), "1 MiB reads");
    assert_same(
        &expected,
        &crate_read(&*chain.top, 4096 + 512 + 7),
        "odd-sized reads",
    );
    assert_scattered_reads(&expected, &*chain.top);
}

/// Reads at pseudo-random offsets and lengths, crossing clusters.
pub fn assert_scattered_reads(
    expected: &[u8],
    image: &dyn BlockRead<Error = qcow2_reader::Error<std::io::Error>>,
) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let offset = (next() % expected.len() as u64) as usize;
        let len = (next() % 300_000) as usize % (expected.len() - offset) + 1;
        let mut buf = vec![0u8; len];
        image.read_at(offset as u64, &mut buf).unwrap();
        assert_same(&expected[offset..offset + len], &buf, "scattered read");
    }
}

/// Compares two disks, naming the first differing offset instead of dumping bytes.
pub fn assert_same(expected: &[u8], actual: &[u8], what: &str) {
    assert_eq!(expected.len(), actual.len(), "{what}: lengths differ");
    if let Some(at) = expected.iter().zip(actual).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at offset {at:#x}: QEMU has {:#04x}, the crate {:#04x}",
            expected[at], actual[at]
        );
    }
}

/// The passphrase of the encrypted images the tests make.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// QEMU's `--object` carrying [`PASSPHRASE`] as the secret `sec0`.
pub fn secret_object() -> String {
    format!("secret,id=sec0,data={PASSPHRASE}")
}

/// QEMU's `--image-opts` for an encrypted qcow2 image unlocked by `sec0`.
pub fn encrypted_image_opts(image: &Path) -> String {
    format!(
        "driver=qcow2,encrypt.key-secret=sec0,file.filename={}",
        image.display()
    )
}

/// Creates a LUKS-encrypted qcow2 image (PBKDF2 calibrated to 10 ms, the
/// least `qemu-img` accepts, so that unlocking stays fast) with
/// `-o options` added.
pub fn create_luks(path: &Path, options: &str, size: &str) {
    let mut opts = String::from("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10");
    if !options.is_empty() {
        opts = format!("{opts},{options}");
    }
    let object = secret_object();
    let path = path.to_str().unwrap();
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "--object", &object, "-o", &opts, path, size,
    ]);
}

/// Runs `qemu-io` commands on an encrypted image made by [`create_luks`].
pub fn qemu_io_encrypted(path: &Path, commands: &[&str]) {
    let object = secret_object();
    let opts = encrypted_image_opts(path);
    let mut args = vec!["--object", object.as_str(), "--image-opts", opts.as_str()];
    for command in commands {
        args.extend(["-c", command]);
    }
    run("qemu-io", &args);
}

/// The virtual disk of an encrypted image as QEMU decrypts it.
pub fn qemu_raw_encrypted(scratch: &Scratch, image: &Path) -> Vec<u8> {
    let out = scratch.path("qemu-reference.raw");
    let object = secret_object();
    let opts = encrypted_image_opts(image);
    let out_path = out.to_str().unwrap();
    qemu_img(&[
        "convert",
        "--object",
        &object,
        "--image-opts",
        &opts,
        "-O",
        "raw",
        out_path,
    ]);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}
