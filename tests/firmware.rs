//! Boots the bare-metal firmware (firmware/) in QEMU on images made here
//! with `qemu-img`/`qemu-io`, and checks that the SHA-256 of the virtual
//! disk that the firmware prints equals that of `qemu-img convert -O raw`.
//!
//! Needs the QEMU 7.2 system emulators and tools; without them the tests
//! fail (they never pass silently) and name the command that installs them.
//! Each architecture is one test, its images booted one after the other,
//! so at most two QEMUs run at once. aarch64 runs under TCG on an x86_64
//! host, so it gets a few small images.
//!
//! Encrypted images are made with `encrypt.iter-time=10` (a few tens of
//! thousands of PBKDF2 iterations, well under a second in the guest) and
//! compared with `qemu-img convert --object secret,file=...` reading the
//! same passphrase file that the runner's `--passphrase-file` gets
//! (`qcow2_testkit::firmware_run`, `firmware/run.sh`'s, called in this
//! process).

use qcow2_testkit::firmware_run::FirmwareRun;
use qcow2_testkit::{
    build_firmware, chain_image_opts, convert_raw, create_in, installed, made_disks, qemu_io,
    qemu_io_keyed, run_in, Create, Qemu, QemuSecret, Scratch, LUKS, SECRET_ID,
};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const APT_COMMAND: &str = "apt-get update && apt-get install -y --allow-downgrades \
    qemu-system-x86 qemu-system-arm qemu-utils/bookworm";

const MIB: u64 = 1024 * 1024;

/// A backing file name longer than the 20-byte virtio-blk serial.
const BASE_NAME: &str = "chain-base-with-a-long-name.qcow2";

/// The passphrase of the encrypted images, with a trailing newline: QEMU's
/// `secret,file=` and `run.sh --passphrase-file` both take the file's
/// bytes verbatim, newline included.
const PASSPHRASE: &str = "correct horse battery staple\n";

/// One image to boot: how to make it, and what the firmware must say.
struct Case {
    name: &'static str,
    make: fn(&Path) -> PathBuf,
    expect: Expect,
    /// What `run.sh --passphrase-file` gets.
    passphrase: Given,
}

/// The passphrase handed to the firmware.
enum Given {
    /// No `--passphrase-file`.
    Nothing,
    /// The file the image was made with ([`secret_file`]).
    Right,
    /// A file with another passphrase.
    Wrong,
}

enum Expect {
    /// Prints the sha256 of `qemu-img convert -O raw` and exits 0.
    Digest,
    /// Exits non-zero with an `error:` line containing this text.
    Error(&'static str),
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_tools(emulator: &str) {
    for tool in [emulator, "qemu-img", "qemu-io"] {
        let found = installed(tool);
        assert!(
            found,
            "`{tool}` is missing: the firmware tests need the QEMU 7.2 system emulators and \
             tools; install them with: {APT_COMMAND}"
        );
    }
}

/// `qemu-img create -f qcow2 -o <options> <name> <size>` in `dir` (where
/// QEMU finds relative backing file names).
fn create(dir: &Path, name: &str, options: &str, size: u64) -> PathBuf {
    create_in(dir, &dir.join(name), options, &size.to_string())
}

/// A mix that touches every kind of cluster: data at aligned and odd
/// places, a zeroed range, and unallocated space.
const MIXED: &[&str] = &[
    "write -q -P 0x11 0 1M",
    "write -q -P 0x22 1536k 700k",
    "write -q -P 0x33 3333 4444",
    "write -q -z 2M 512k",
    "write -q -P 0x44 5M 2M",
];

fn v2_64k(dir: &Path) -> PathBuf {
    let image = create(dir, "v2.qcow2", "compat=0.10,cluster_size=65536", 8 * MIB);
    qemu_io(&image, MIXED);
    image
}

fn v3_512(dir: &Path) -> PathBuf {
    let image = create(dir, "v3-512.qcow2", "compat=1.1,cluster_size=512", 8 * MIB);
    qemu_io(&image, MIXED);
    image
}

fn v3_2m(dir: &Path) -> PathBuf {
    let image = create(
        dir,
        "v3-2m.qcow2",
        "compat=1.1,cluster_size=2097152",
        16 * MIB,
    );
    qemu_io(&image, MIXED);
    qemu_io(&image, &["write -q -P 0x55 9M 3M"]);
    image
}

fn extended_l2(dir: &Path) -> PathBuf {
    let image = create(
        dir,
        "ext-l2.qcow2",
        "compat=1.1,cluster_size=65536,extended_l2=on",
        8 * MIB,
    );
    qemu_io(&image, MIXED);
    // Subclusters are 2 KiB here: partial clusters, some zeroed.
    qemu_io(
        &image,
        &[
            "write -q -P 0x66 6144 2048",
            "write -q -z 1M 2048",
            "write -q -P 0x77 7M 10k",
        ],
    );
    image
}

/// Compressed clusters (written one by one, so they sit at odd byte
/// offsets of the file), mixed with ordinary ones. The file stays smaller
/// than one 1 MiB chunk of the demo's raw passes, which therefore wrap
/// around the device more than once per chunk.
fn compressed(dir: &Path, name: &str, options: &str) -> PathBuf {
    let image = create(dir, name, options, 8 * MIB);
    qemu_io(
        &image,
        &[
            "write -q -c -P 0x12 0 64k",
            "write -q -c -P 0x34 64k 64k",
            "write -q -c -P 0x56 1M 64k",
            "write -q -P 0x78 2M 256k",
            "write -q -c -P 0x9a 4M 64k",
        ],
    );
    image
}

fn deflate(dir: &Path) -> PathBuf {
    compressed(dir, "deflate.qcow2", "compat=1.1,cluster_size=65536")
}

fn zstd(dir: &Path) -> PathBuf {
    compressed(
        dir,
        "zstd.qcow2",
        "compat=1.1,cluster_size=65536,compression_type=zstd",
    )
}

/// A qcow2 backing chain across two disks (the runner attaches the
/// backing file it finds with `qemu-img info --backing-chain`). The base's
/// name is longer than a virtio-blk serial, so matching uses its first 20
/// bytes.
fn qcow2_chain(dir: &Path) -> PathBuf {
    let base = create(dir, BASE_NAME, "compat=1.1,cluster_size=65536", 8 * MIB);
    qemu_io(&base, MIXED);
    let top = create(
        dir,
        "chain-top.qcow2",
        &format!("compat=1.1,cluster_size=65536,backing_file={BASE_NAME},backing_fmt=qcow2"),
        8 * MIB,
    );
    qemu_io(&top, &["write -q -P 0xab 512k 1M", "write -q -z 5M 64k"]);
    top
}

/// Three zstd layers of 2 MiB clusters: with the firmware's default
/// `Config` each layer's caches take 7 MiB and its decoder 2.6 MiB, so the
/// chain needs 28.7 MiB, over the firmware's 26 MiB `CACHE_BUDGET` (before
/// the budget, about five such layers ran the 32 MiB heap out and panicked;
/// before the decoders counted, this chain passed and its decoders came
/// out of the heap's remainder).
fn over_budget_chain(dir: &Path) -> PathBuf {
    // zstd images: their caches alone (3 x 7 MiB) fit in the 26 MiB budget,
    // so the chain is refused only because the decoders (3 x 2.6 MiB) count.
    let options = "compat=1.1,cluster_size=2M,compression_type=zstd";
    create(dir, "budget-base.qcow2", options, 8 * MIB);
    let middle = create(
        dir,
        "budget-middle.qcow2",
        &format!("{options},backing_file=budget-base.qcow2,backing_fmt=qcow2"),
        8 * MIB,
    );
    qemu_io(&middle, &["write -q -P 0x5a 2M 64k"]);
    create(
        dir,
        "budget-top.qcow2",
        &format!("{options},backing_file=budget-middle.qcow2,backing_fmt=qcow2"),
        8 * MIB,
    )
}

/// A raw backing file, shorter than the overlay's virtual disk (reads
/// past its end are zeros).
fn raw_backing(dir: &Path) -> PathBuf {
    let base = dir.join("base.raw");
    let pattern: Vec<u8> = (0..6 * MIB).map(|i| (i % 251) as u8).collect();
    fs::write(&base, pattern).expect("write raw base");
    let top = create(
        dir,
        "raw-top.qcow2",
        "compat=1.1,cluster_size=65536,backing_file=base.raw,backing_fmt=raw",
        8 * MIB,
    );
    qemu_io(&top, &["write -q -P 0xcd 1M 64k", "write -q -P 0xef 5M 2M"]);
    top
}

/// The passphrase file of the images in `dir`, written on first use.
fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join("passphrase.txt");
    if !path.exists() {
        fs::write(&path, PASSPHRASE).expect("write passphrase file");
    }
    path
}

/// The passphrase file of `dir` as QEMU's secret.
fn secret(dir: &Path) -> QemuSecret {
    QemuSecret::File(secret_file(dir))
}

/// `qemu-img create` of an encrypted qcow2 image (`encrypt` names the
/// format and its options) keyed with the passphrase file of `dir`.
fn create_encrypted(dir: &Path, name: &str, encrypt: &str, size: u64) -> PathBuf {
    Create::new(&dir.join(name))
        .secret(&secret(dir))
        .options(encrypt)
        .size(&size.to_string())
        .dir(dir)
        .run()
}

/// Runs `qemu-io` commands on an encrypted image (every layer keyed).
fn write_encrypted(image: &Path, commands: &[&str]) {
    let dir = image.parent().expect("image in a directory");
    qemu_io_keyed(&secret(dir), &chain_image_opts(image), commands);
}

/// LUKS with QEMU's defaults: aes-256-xts-plain64, sha256. Made once per
/// test run and copied: `qemu-img create` spends seconds calibrating
/// PBKDF2 whatever the `iter-time`, and four cases on two architectures
/// boot this image.
fn luks_xts(dir: &Path) -> PathBuf {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = IMAGE.get_or_init(|| {
        let made = Scratch::new();
        let image = create_encrypted(
            made.dir(),
            "luks-xts.qcow2",
            "encrypt.format=luks,encrypt.iter-time=10",
            8 * MIB,
        );
        write_encrypted(&image, MIXED);
        fs::read(&image).expect("read image")
    });
    let image = dir.join("luks-xts.qcow2");
    fs::write(&image, bytes).expect("write image");
    // The passphrase the copy was made with, for the runner and qemu-img.
    secret_file(dir);
    image
}

/// Legacy AES (crypt_method 1), keyed by the passphrase itself.
fn legacy_aes(dir: &Path) -> PathBuf {
    let image = create_encrypted(dir, "legacy-aes.qcow2", "encrypt.format=aes", 8 * MIB);
    write_encrypted(&image, MIXED);
    image
}

/// A LUKS overlay with compressed clusters (stored in the clear) and
/// ordinary ones, over a LUKS base with another cipher, mode and IV
/// generator (aes-128-cbc-essiv:sha256): both unlocked with one passphrase.
fn luks_compressed_chain(dir: &Path) -> PathBuf {
    let base = create_encrypted(
        dir,
        "luks-base.qcow2",
        "encrypt.format=luks,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,\
         encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256",
        8 * MIB,
    );
    write_encrypted(&base, MIXED);
    let top = create_encrypted(
        dir,
        "luks-top.qcow2",
        "encrypt.format=luks,encrypt.iter-time=10,backing_file=luks-base.qcow2,backing_fmt=qcow2",
        8 * MIB,
    );
    write_encrypted(
        &top,
        &[
            "write -q -c -P 0x5a 0 64k",
            "write -q -c -P 0x6b 1M 64k",
            "write -q -P 0x7c 3M 192k",
            "write -q -c -P 0x8d 6M 64k",
        ],
    );
    top
}

/// A LUKS image whose key slot 0 asks for 4 billion PBKDF2 iterations
/// (hours of TCG): the firmware's bound must refuse it before any work.
fn luks_hostile_iterations(dir: &Path) -> PathBuf {
    let image = luks_xts(dir);
    let mut bytes = fs::read(&image).expect("read image");
    // The LUKS header sits at a cluster-aligned offset (64 KiB clusters);
    // slot 0's iteration count is the big-endian u32 at 212.
    let header = (0..bytes.len())
        .step_by(65536)
        .find(|&at| bytes[at..].starts_with(b"LUKS\xba\xbe"))
        .expect("a LUKS header in the image");
    bytes[header + 212..header + 216].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&image, bytes).expect("write image");
    image
}

fn bad_magic(dir: &Path) -> PathBuf {
    let image = v2_64k(dir);
    let bad = dir.join("bad-magic.qcow2");
    let mut bytes = fs::read(&image).expect("read image");
    bytes[..4].copy_from_slice(b"QFI\0");
    fs::write(&bad, bytes).expect("write image");
    bad
}

/// An L1 entry pointing to an L2 table that is not cluster-aligned.
fn unaligned_l2(dir: &Path) -> PathBuf {
    let image = create(
        dir,
        "bad-l2.qcow2",
        "compat=1.1,cluster_size=65536",
        8 * MIB,
    );
    qemu_io(&image, &["write -q -P 0x11 0 64k"]);
    let mut bytes = fs::read(&image).expect("read image");
    let l1_offset = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let entry = u64::from_be_bytes(bytes[l1_offset..l1_offset + 8].try_into().unwrap());
    let moved = entry + 0x200; // keeps the flags, breaks the alignment
    bytes[l1_offset..l1_offset + 8].copy_from_slice(&moved.to_be_bytes());
    fs::write(&image, bytes).expect("write image");
    image
}

/// SHA-256 of the virtual disk as QEMU reads it; decrypted with the
/// passphrase file of `dir` when `encrypted`.
fn expected_digest(image: &Path, dir: &Path, encrypted: bool) -> String {
    let raw = dir.join("expected.raw");
    let bytes = if encrypted {
        let object = secret(dir).object();
        let opts = chain_image_opts(image);
        convert_raw(&["--object", &object, "--image-opts", &opts], &raw)
    } else {
        convert_raw(&[image.to_str().expect("UTF-8 path")], &raw)
    };
    Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn boot_all<'a>(target: &str, emulator: &str, cases: impl IntoIterator<Item = &'a Case>) {
    require_tools(emulator);
    let elf = build_firmware(target);
    let mut failures = Vec::new();
    for case in cases {
        let dir = Scratch::new();
        let image = (case.make)(dir.dir());
        let mut run = FirmwareRun::new(&elf, vec![image.clone()]);
        run.passphrase_file = match case.passphrase {
            Given::Nothing => None,
            Given::Right => Some(secret_file(dir.dir())),
            Given::Wrong => {
                let wrong = dir.path("wrong-passphrase.txt");
                fs::write(&wrong, "correct horse battery stapler\n").expect("write passphrase");
                Some(wrong)
            }
        };
        run.timeout = Duration::from_secs(180);
        let started = Instant::now();
        let output = run.output();
        let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let printed = |prefix: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(prefix))
                .map(str::to_owned)
        };
        let verdict = match &case.expect {
            Expect::Digest => {
                let encrypted = matches!(case.passphrase, Given::Right);
                let expected = expected_digest(&image, dir.dir(), encrypted);
                let unlock = printed("disk 0: unlock: ");
                // The timed passes' queued read is checked against
                // read_at by the firmware itself; the line says it ran
                // (encrypted images, and images whose passes would last
                // too long under TCG, say why they skip the timed passes).
                let queued_checked = printed("queued read: same bytes as read_at").is_some()
                    || printed("throughput comparison: skipped, ").is_some();
                match printed("virtual-disk-sha256: ") {
                    Some(_) if encrypted && unlock.is_none() => {
                        Err("no `disk 0: unlock:` time printed".to_string())
                    }
                    Some(_) if !encrypted && !queued_checked => Err(format!(
                        "no `queued read: same bytes as read_at` line, status {}",
                        output.code
                    )),
                    Some(digest) if digest == expected && output.success() => Ok(()),
                    Some(digest) => Err(format!(
                        "digest {digest}, expected {expected}, status {}",
                        output.code
                    )),
                    None => Err(format!("no digest printed, status {}", output.code)),
                }
            }
            Expect::Error(text) => match printed("error: ") {
                Some(error) if error.contains(text) && !output.success() => Ok(()),
                Some(error) => Err(format!(
                    "error `{error}` (wanted `{text}`), status {}",
                    output.code
                )),
                None => Err(format!("no error printed, status {}", output.code)),
            },
        };
        let unlocks: Vec<&str> = stdout
            .lines()
            .filter(|line| line.contains(": unlock: "))
            .collect();
        eprintln!(
            "{target} {}: {} in {:.1} s{}",
            case.name,
            if verdict.is_ok() { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            if unlocks.is_empty() {
                String::new()
            } else {
                format!(" ({})", unlocks.join(", "))
            }
        );
        if let Err(reason) = verdict {
            failures.push(format!(
                "{}: {reason}\n--- stdout\n{stdout}--- stderr\n{stderr}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{target}:\n{}", failures.join("\n"));
}

/// The same images for both architectures (all small: aarch64 runs under
/// TCG). 512-byte clusters and compressed clusters at odd file offsets
/// go through the bounce buffer at odd addresses, which is what the
/// arm64 alignment question is about.
const CASES: &[Case] = &[
    Case {
        name: "v2-64k",
        make: v2_64k,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "v3-512",
        make: v3_512,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "v3-2m",
        make: v3_2m,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "extended-l2",
        make: extended_l2,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "deflate",
        make: deflate,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "zstd",
        make: zstd,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "qcow2-chain",
        make: qcow2_chain,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "raw-backing",
        make: raw_backing,
        expect: Expect::Digest,
        passphrase: Given::Nothing,
    },
    Case {
        name: "bad-magic",
        make: bad_magic,
        expect: Expect::Error("magic"),
        passphrase: Given::Nothing,
    },
    Case {
        name: "unaligned-l2",
        make: unaligned_l2,
        expect: Expect::Error("not cluster aligned"),
        passphrase: Given::Nothing,
    },
];

/// A LUKS image with QEMU's default cipher: booted on both architectures.
const LUKS_CASE: Case = Case {
    name: "luks-xts",
    make: luks_xts,
    expect: Expect::Digest,
    passphrase: Given::Right,
};

/// The other encrypted cases, booted on x86_64 only (each boot costs
/// seconds under TCG; aarch64 runs the same crate code).
const ENCRYPTED_CASES: &[Case] = &[
    Case {
        name: "legacy-aes",
        make: legacy_aes,
        expect: Expect::Digest,
        passphrase: Given::Right,
    },
    Case {
        name: "luks-compressed-chain",
        make: luks_compressed_chain,
        expect: Expect::Digest,
        passphrase: Given::Right,
    },
    Case {
        name: "luks-wrong-passphrase",
        make: luks_xts,
        expect: Expect::Error("disk 0: encryption: invalid passphrase"),
        passphrase: Given::Wrong,
    },
    Case {
        name: "luks-hostile-iterations",
        make: luks_hostile_iterations,
        // The count includes the image's calibrated digest iterations.
        expect: Expect::Error("PBKDF2 iterations, beyond the limit of 8000000"),
        passphrase: Given::Right,
    },
    Case {
        name: "luks-no-passphrase",
        make: luks_xts,
        expect: Expect::Error("disk 0: image is encrypted (LUKS) and no passphrase"),
        passphrase: Given::Nothing,
    },
];

/// A chain whose caches would pass the firmware's memory budget is
/// refused by name (x86_64 only: the budget is the crate's walk's).
const BUDGET_CASE: Case = Case {
    name: "over-budget-chain",
    make: over_budget_chain,
    expect: Expect::Error("over the budget of 27262976"),
    passphrase: Given::Nothing,
};

#[test]
fn firmware_x86_64() {
    boot_all(
        "x86_64-unknown-none",
        "qemu-system-x86_64",
        CASES
            .iter()
            .chain([&LUKS_CASE])
            .chain(ENCRYPTED_CASES)
            .chain([&BUDGET_CASE]),
    );
}

#[test]
fn firmware_aarch64() {
    boot_all(
        "aarch64-unknown-none",
        "qemu-system-aarch64",
        CASES.iter().chain([&LUKS_CASE]),
    );
}

fn file_digest(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One boot with `--file` requests: the image, (location, tree file) pairs
/// that must print their digest, and a location that must not exist.
type FileRun = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

/// `--file` requests: each file inside an image (an overlay over a
/// compressed base; a zstd-compressed MBR disk with logical partitions)
/// must print the SHA-256 of the file the tools wrote; a missing file
/// prints an `error:` line and fails the run, after the others are printed.
fn files_on(target: &str, emulator: &str) {
    require_tools(emulator);
    let disks = made_disks();
    let elf = build_firmware(target);
    let runs: [FileRun; 2] = [
        (
            "gpt-overlay.qcow2",
            &[
                ("2:/big.bin", "tree-ext-v2/big.bin"),
                ("2:/link-added", "tree-ext-v2/added.bin"),
                ("1:/NEWDIR/INNER.TXT", "tree-fat-v2/newdir/inner.txt"),
                (
                    "1:/dir/A file with a long name.conf",
                    "tree-fat-v2/dir/A file with a long name.conf",
                ),
            ],
            None,
        ),
        (
            "mbr-base.qcow2",
            &[
                (
                    "5:/dir/sub/deeper/odd-size.bin",
                    "tree-ext-v1/dir/sub/deeper/odd-size.bin",
                ),
                ("6:/hello.txt", "tree-fat-v1/hello.txt"),
            ],
            Some("5:/nothing"),
        ),
    ];
    for (image, files, missing) in runs {
        check_file_run(target, &elf, &disks.join(image), files, missing, None);
    }
}

/// Boots `image` with `--file` requests for `files` (and `missing`), and
/// `--passphrase-file passphrase` if given; checks each `file-sha256:` line
/// against the tree file the tools wrote, and the missing file's error.
fn check_file_run(
    target: &str,
    elf: &Path,
    image: &Path,
    files: &[(&str, &str)],
    missing: Option<&str>,
    passphrase: Option<&Path>,
) {
    let disks = manifest_dir().join("target/disks");
    let mut run = FirmwareRun::new(elf, vec![image.to_path_buf()]);
    run.passphrase_file = passphrase.map(Path::to_path_buf);
    run.files = files
        .iter()
        .map(|(location, _)| *location)
        .chain(missing)
        .map(OsString::from)
        .collect();
    run.timeout = Duration::from_secs(300);
    let output = run.output();
    let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    let context = format!(
        "{target} {}:\n{stdout}{}",
        image.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    for (location, tree_file) in files {
        let expected = format!(
            "file-sha256: {location} {}",
            file_digest(&disks.join(tree_file))
        );
        assert!(
            stdout.lines().any(|line| line.starts_with(&expected)),
            "no `{expected}` line; {context}"
        );
    }
    match missing {
        None => assert!(output.success(), "{context}"),
        Some(location) => {
            let expected = format!("error: {location}: no such file or directory");
            assert!(
                stdout.lines().any(|line| line == expected),
                "no `{expected}`; {context}"
            );
            assert!(
                !output.success(),
                "a missing file must fail the run; {context}"
            );
        }
    }
}

#[test]
fn firmware_files_x86_64() {
    files_on("x86_64-unknown-none", "qemu-system-x86_64");
}

#[test]
fn firmware_files_aarch64() {
    files_on("aarch64-unknown-none", "qemu-system-aarch64");
}

/// `--file` and `--passphrase-file` together (two kinds of control disk
/// line): the MBR disk converted by `qemu-img` to LUKS, its files read
/// through the decrypting image. x86_64 only: one more boot.
#[test]
fn firmware_files_encrypted_x86_64() {
    let target = "x86_64-unknown-none";
    require_tools("qemu-system-x86_64");
    let disks = made_disks();
    let elf = build_firmware(target);
    let dir = Scratch::new();
    let image = dir.path("mbr-luks.qcow2");
    Qemu::img()
        .arg("convert")
        .secret(&secret(dir.dir()))
        .args(["-O", "qcow2", "-o"])
        .arg(format!("{LUKS},encrypt.key-secret={SECRET_ID}"))
        .arg(disks.join("mbr-base.qcow2"))
        .arg(&image)
        .run();
    check_file_run(
        target,
        &elf,
        &image,
        &[
            ("6:/hello.txt", "tree-fat-v1/hello.txt"),
            (
                "5:/dir/sub/deeper/odd-size.bin",
                "tree-ext-v1/dir/sub/deeper/odd-size.bin",
            ),
        ],
        None,
        Some(&secret_file(dir.dir())),
    );
}

/// The hostile ext4 images through the firmware's `--file`
/// requests (32 MiB heap): a 4 TiB QCOW2 disk whose ext4 claims 2^32 block
/// groups, and a symlink whose inode claims 1 TiB, end in `error:` lines
/// naming the field and the limit, not a panic; the sound file beside the
/// symlink is read. x86_64 only: two more boots.
#[test]
fn firmware_files_on_hostile_ext4_end_in_named_errors_x86_64() {
    let target = "x86_64-unknown-none";
    require_tools("qemu-system-x86_64");
    let elf = build_firmware(target);
    let scratch = Scratch::new();
    let dir = scratch.dir();
    fs::create_dir_all(dir.join("tree")).unwrap();
    fs::write(dir.join("tree/hello.txt"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("/hello.txt", dir.join("tree/link")).unwrap();
    let ext4 = |name: &str| {
        run_in(
            Some(dir),
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "1024",
                "-O",
                "^metadata_csum",
                "-d",
                "tree",
                name,
                "4M",
            ],
        );
    };
    // 2^32 - 1 blocks of 1 KiB, one per group, on a 4 TiB disk.
    ext4("groups.raw");
    let mut bytes = fs::read(dir.join("groups.raw")).unwrap();
    bytes[1024 + 4..1024 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes[1024 + 0x20..1024 + 0x24].copy_from_slice(&1u32.to_le_bytes());
    fs::write(dir.join("groups.raw"), bytes).unwrap();
    run_in(
        Some(dir),
        "qemu-img",
        &["convert", "-O", "qcow2", "groups.raw", "groups.qcow2"],
    );
    run_in(Some(dir), "qemu-img", &["resize", "groups.qcow2", "4T"]);
    ext4("link.raw");
    run_in(
        Some(dir),
        "debugfs",
        &["-w", "-R", "sif /link size 0x10000000000", "link.raw"],
    );
    run_in(
        Some(dir),
        "qemu-img",
        &["convert", "-O", "qcow2", "link.raw", "link.qcow2"],
    );
    let boots: [(&str, &[&str], &[&str]); 2] = [
        (
            "groups.qcow2",
            &["/hello.txt"],
            &[
                "error: /hello.txt: partition 0: ext2/3/4 superblock: block groups \
               (s_blocks_count / s_blocks_per_group) is 4294967294, over the limit of 65536 \
               (the caller's Limits::max_block_groups)",
            ],
        ),
        (
            "link.qcow2",
            &["/link", "/hello.txt"],
            &[
                "error: /link: ext2/3/4 symlink /link: target length (i_size) 1099511627776 \
                 bytes is over the limit of 4096 (PATH_MAX)",
                "file-sha256: /hello.txt \
                 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
            ],
        ),
    ];
    for (image, files, expected) in boots {
        let mut run = FirmwareRun::new(&elf, vec![dir.join(image)]);
        run.files = files.iter().map(OsString::from).collect();
        run.timeout = Duration::from_secs(300);
        let output = run.output();
        let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
        let context = format!(
            "{image}:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for line in expected {
            assert!(
                stdout.lines().any(|printed| printed.starts_with(line)),
                "no `{line}` line; {context}"
            );
        }
        assert!(!stdout.contains("panicked"), "{context}");
        assert!(!output.success(), "a refused file fails the run; {context}");
    }
}
