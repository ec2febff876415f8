//! What the workspace's integration tests share (the crate's, the CLI's and
//! `qcow2-disk`'s): the one way to run QEMU's tools ([`Qemu`], [`Create`],
//! secrets, encrypted chains; QEMU 7.2's transient calibration failure run
//! again, see the `qemu` module), the disk tools with a message that names
//! the install command when one is missing, scratch directories, images
//! made once and kept between runs, and encrypted images keyed the same way
//! everywhere. Not published; tests only.
//!
//! The disks the tests boot or read are made here too, with the real
//! tools ([`boot_disk`], [`make_disks`], [`root_disk`]), and so are the
//! benchmark against QEMU ([`bench_compare`]) and README's table of it
//! ([`readme_table`]), and the proxy that adds latency to `benches/http.sh`
//! ([`latency_proxy`]); the binaries under `src/bin` are their command lines.
//!
//! What is specific to one crate (reading through `qcow2_reader`, running
//! `qcow`) stays in that crate's `tests/common`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

pub mod check_compare;
mod qemu;

pub mod bench_compare;
pub mod boot_disk;
pub mod decoder_cpu;
mod host;
pub mod latency_proxy;
pub mod make_disks;
pub mod readme_table;
pub mod root_disk;
pub use qemu::*;
pub mod nbd_bench;
pub mod nginx;
pub mod tls;

/// The workspace's root directory (where `scripts/` and `target/` are).
pub fn workspace_root() -> &'static Path {
    // This crate sits one level below the root.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The command that installs `program` on a fresh machine.
pub(crate) fn install_hint(program: &str) -> &'static str {
    match program {
        "qemu-img" | "qemu-io" => "apt-get install -y qemu-utils (or scripts/setup.sh)",
        p if p.starts_with("qemu-system") => "scripts/setup.sh",
        "sfdisk" => "apt-get install -y fdisk",
        "mkfs.vfat" | "mcopy" | "mmd" => "apt-get install -y dosfstools mtools",
        "mkfs.ext4" | "debugfs" => "apt-get install -y e2fsprogs",
        "nbdinfo" | "nbdcopy" => "apt-get install -y libnbd-bin",
        "openssl" => "apt-get install -y openssl",
        _ => "scripts/setup.sh",
    }
}

/// Whether `program --version` runs and succeeds (QEMU's tools, the
/// emulators): tests that skip without QEMU, or say how to install it.
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `program` with `args` in `dir` (the current directory when
/// `None`) and returns what it printed, whether it succeeded or not; a
/// program that cannot start fails the test with its install command.
/// For programs other than QEMU's tools (scripts, `mkfs`): those go
/// through [`Qemu`], although the calibration rule of [`retrying`] holds
/// here too.
pub fn output_in(dir: Option<&Path>, program: &str, args: &[&str]) -> Output {
    let mut qemu = Qemu::program(program).args(args);
    if let Some(dir) = dir {
        qemu = qemu.dir(dir);
    }
    qemu.output()
}

/// Like [`output_in`] in `dir`, and `program` must succeed.
pub fn run_in(dir: Option<&Path>, program: &str, args: &[&str]) -> Output {
    let mut qemu = Qemu::program(program).args(args);
    if let Some(dir) = dir {
        qemu = qemu.dir(dir);
    }
    qemu.run()
}

/// Runs `program`, which must succeed, and returns what it printed.
pub fn run(program: &str, args: &[&str]) -> Output {
    run_in(None, program, args)
}

/// Runs `qemu-img` with `args`, which must succeed; returns its stdout.
pub fn qemu_img(args: &[&str]) -> Vec<u8> {
    Qemu::img().args(args).stdout()
}

/// Creates a qcow2 image with `-o options` of `size`; returns its path.
pub fn create(path: &Path, options: &str, size: &str) -> PathBuf {
    Create::new(path).options(options).size(size).run()
}

/// `qemu-img create -f qcow2 [-o options] PATH SIZE` run from `dir`:
/// QEMU 7.2 takes a relative backing or data file name from its working
/// directory (the crate from the image's, `src/chain.rs`).
pub fn create_in(dir: &Path, path: &Path, options: &str, size: &str) -> PathBuf {
    Create::new(path).options(options).size(size).dir(dir).run()
}

/// Runs `qemu-io` commands (each like `write -P 0x11 0 64k`) on a qcow2 image.
pub fn qemu_io(path: &Path, commands: &[&str]) {
    qemu_io_as(path, "qcow2", commands);
}

/// A scratch directory for one test's images, removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// A new empty directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `qemu-img create -f qcow2 [-o options] NAME [SIZE]` run in this
    /// directory; `{dir}` in the options is the directory (QEMU 7.2 opens a
    /// relative data file name from its working directory, not from the
    /// image's, so tests name them absolutely).
    pub fn create(&self, name: &str, size: &str, options: &str) -> PathBuf {
        let options = options.replace("{dir}", self.dir().to_str().expect("UTF-8 path"));
        let mut create = Create::new(&self.path(name))
            .options(&options)
            .dir(self.dir());
        if !size.is_empty() {
            create = create.size(size);
        }
        create.run()
    }

    /// `qemu-img create -f qcow2 -b BACKING -F FORMAT NAME`.
    pub fn create_on(&self, name: &str, backing: &str, format: &str) -> PathBuf {
        Create::new(&self.path(name)).backing(backing, format).run()
    }
}

/// The virtual disk as QEMU reads it: `qemu-img convert [extra] -O raw`.
pub fn qemu_raw(scratch: &Scratch, image: &Path, extra: &[&str]) -> Vec<u8> {
    let mut source = extra.to_vec();
    source.push(image.to_str().expect("UTF-8 path"));
    convert_raw(&source, &scratch.path("qemu-reference.raw"))
}

/// The file `name` in `dir`, made by `create` (given a temporary path in
/// `dir`) the first time and kept for later runs. Tests run in parallel
/// and share such files: one lock per path.
pub fn cached(dir: &Path, name: &str, create: impl FnOnce(&Path)) -> PathBuf {
    static LOCKS: Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>> = Mutex::new(BTreeMap::new());
    std::fs::create_dir_all(dir).expect("create the cache directory");
    let path = dir.join(name);
    let lock = LOCKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(path.clone())
        .or_default()
        .clone();
    let _creating = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !path.exists() {
        let partial = dir.join(format!("{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        create(&partial);
        std::fs::rename(&partial, &path).expect("keep the made file");
    }
    path
}

/// The disks of the file tests ([`make_disks`]: sfdisk, mkfs, mcopy,
/// debugfs, qemu-img), made once per run and kept in `target/disks`
/// (nothing is made again while they are up to date).
pub fn made_disks() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace_root().join("target/disks");
        make_disks::make(&dir).unwrap_or_else(|error| panic!("make-disks: {error}"));
        dir
    })
}

/// Compares two disks, naming the first differing offset instead of dumping bytes.
pub fn assert_same(expected: &[u8], actual: &[u8], what: &str) {
    assert_eq!(expected.len(), actual.len(), "{what}: lengths differ");
    // Slices compare with memcmp; the byte-by-byte search below, unoptimized
    // in test builds, took most of the LUKS tests' time. It runs only to
    // name the first difference.
    if expected == actual {
        return;
    }
    if let Some(at) = expected.iter().zip(actual).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at offset {at:#x}: QEMU has {:#04x}, the reader {:#04x}",
            expected[at], actual[at]
        );
    }
}

/// The passphrase of the encrypted images the tests make.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// QEMU's `--image-opts` for an encrypted qcow2 image unlocked by [`QemuSecret`].
pub fn encrypted_image_opts(image: &Path) -> String {
    image_opts("qcow2", image, &[0])
}

/// Creates a LUKS-encrypted qcow2 image keyed by [`PASSPHRASE`] (see
/// [`LUKS`]), with `-o options` added.
pub fn create_luks(path: &Path, options: &str, size: &str) {
    Create::new(path)
        .secret(&QemuSecret::default())
        .options(LUKS)
        .options(options)
        .size(size)
        .run();
}

/// Runs `qemu-io` commands on an encrypted image made by [`create_luks`].
pub fn qemu_io_encrypted(path: &Path, commands: &[&str]) {
    qemu_io_keyed(
        &QemuSecret::default(),
        &encrypted_image_opts(path),
        commands,
    );
}

/// The virtual disk of an encrypted image as QEMU decrypts it.
pub fn qemu_raw_encrypted(scratch: &Scratch, image: &Path) -> Vec<u8> {
    let object = QemuSecret::default().object();
    let opts = encrypted_image_opts(image);
    convert_raw(
        &["--object", &object, "--image-opts", &opts],
        &scratch.path("qemu-reference.raw"),
    )
}

/// What [`rewrite_backing_format`] leaves of an image's backing format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingFormatExtension {
    /// No backing format extension at all (QEMU probes the backing file).
    Absent,
    /// The extension with an empty name (QEMU reads it as "no format" and
    /// probes too). `qemu-img` makes neither, so tests patch the header.
    Empty,
}

/// Rewrites the backing format extension of the version-3 QCOW2 image at
/// `path` (made with `-F FORMAT`, a name of at most 8 bytes) in place, keeping
/// every other extension where it is: `Absent` turns it into an unknown
/// extension of the same length (QEMU ignores those), `Empty` into an
/// empty one followed by an empty unknown one.
pub fn rewrite_backing_format(path: &Path, to: BackingFormatExtension) {
    const BACKING_FORMAT: u32 = 0xe279_2aca;
    const UNKNOWN: u32 = 0x7e57_0000;
    let mut bytes = std::fs::read(path).expect("read image");
    let be32 = |bytes: &[u8], at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut at = be32(&bytes, 100) as usize; // header_length (version 3)
    loop {
        let (kind, len) = (be32(&bytes, at), be32(&bytes, at + 4) as usize);
        assert_ne!(kind, 0, "{}: no backing format extension", path.display());
        if kind == BACKING_FORMAT {
            assert!(len <= 8, "a backing format name of at most 8 bytes");
            let area = &mut bytes[at..at + 16];
            area.fill(0);
            match to {
                BackingFormatExtension::Absent => {
                    area[..4].copy_from_slice(&UNKNOWN.to_be_bytes());
                    area[4..8].copy_from_slice(&8u32.to_be_bytes());
                }
                BackingFormatExtension::Empty => {
                    area[..4].copy_from_slice(&BACKING_FORMAT.to_be_bytes());
                    area[8..12].copy_from_slice(&UNKNOWN.to_be_bytes());
                }
            }
            std::fs::write(path, bytes).expect("write image");
            return;
        }
        at += 8 + len.div_ceil(8) * 8;
    }
}

/// Builds the bare-metal firmware for `target` (release, as `cargo run`
/// does) and returns the ELF's path. The firmware has its own workspace
/// and target directory, so this does not wait on the lock of the `cargo
/// test` that runs it; its config (rustflags, runner) is passed explicitly
/// because cargo reads configuration from the working directory.
pub fn build_firmware(target: &str) -> PathBuf {
    let firmware = workspace_root().join("firmware");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&firmware)
        .args(["build", "--release", "--target", target, "--config"])
        .arg(firmware.join(".cargo/config.toml"))
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the firmware for {target} failed"
    );
    firmware
        .join("target")
        .join(target)
        .join("release/qcow2-firmware")
}

/// Builds the UEFI driver for `target` (the dev profile at opt-level 3, as
/// `cargo run` uses it) and returns the path of `qcow2.efi`. Its own
/// workspace: no wait on the running `cargo test`'s lock.
pub fn build_driver(target: &str) -> PathBuf {
    let uefi = workspace_root().join("uefi");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&uefi)
        .args(["build", "--target", target])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building qcow2.efi for {target} failed");
    uefi.join("target").join(target).join("debug/qcow2.efi")
}

mod runner;
pub use runner::{stop_children_on_signals, Failure, RunOutput};
pub mod firmware_run;
pub mod uefi_run;
