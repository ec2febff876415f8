//! Boots Linux from QCOW2 images under stock UEFI firmware through the
//! `qcow2.efi` driver (uefi/), with the driver's own runner (`cargo run`'s,
//! `qcow2_testkit::uefi_run`, called in this process).
//!
//! The boot disk is `testkit::boot_disk`'s (GPT, ESP with GRUB, ext4 root
//! with a Debian kernel and a busybox initramfs whose /init prints
//! `QCOW2-BOOT-MARKER: reached init on ARCH` and powers off). Each
//! architecture boots it converted with `qemu-img` to a zstd- and a
//! deflate-compressed QCOW2 attached as a disk, and as an extended-L2
//! overlay over a compressed base attached as a file (the base beside it on
//! the same file system); each boot must print the marker and end with
//! QEMU's exit 0. On x86_64, the zstd disk once more with `reconnect -r`
//! before the boot (the driver's Stop detaches it, Start attaches it
//! again); the boot disk as a LUKS-encrypted QCOW2 (uncompressed: `qemu-img
//! convert` refuses compression with encryption) with the driver loaded
//! from a `Driver####` variable, the runner typing the passphrase at the
//! driver's prompt on the serial console; and images the driver must
//! refuse: a corrupt L1 entry (a read error line, after attaching) and the
//! encrypted disk given three wrong passphrases (its error line after the
//! third); on aarch64 a disk-attached image naming a backing file (an
//! error line at attach). Each must fail the runner with that line, never
//! reach the marker, never hang.
//!
//! On aarch64, the zstd disk booted the way a real machine would (the
//! firmware loads the driver from a `Driver####` variable and its boot
//! manager boots the image's ESP, without the shell).
//!
//! One test per architecture, its boots one after the other: at most two
//! QEMUs at once. The converted images are cached under
//! `target/uefi-test/ARCH/` and remade when the boot disk changes.
//!
//! Needs QEMU 7.2, OVMF/AAVMF, mtools, dosfstools and the boot disk's
//! packages; without them the tests fail and name `scripts/setup.sh`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qcow2_testkit::uefi_run::{Mode, UefiRun};
use qcow2_testkit::{build_driver, installed, qemu_io, Create, Qemu, QemuSecret, LUKS};

/// The passphrase of the encrypted boot disk.
const PASSPHRASE: &str = "password";

/// The driver's prompt, whatever the image's name.
const DRIVER_PROMPT: &str = "qcow2.efi: Passphrase for ";

const SETUP_HINT: &str = "run scripts/setup.sh as root (it installs QEMU 7.2, ovmf, \
    qemu-efi-aarch64, grub-efi-*-bin, mtools, dosfstools, fdisk, e2fsprogs, busybox-static \
    and the kernels, and builds the boot disks)";

/// How long the runner waits for the guest to power off.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_tools(emulator: &str, firmware: &str) {
    for tool in [emulator, "qemu-img", "qemu-io"] {
        let found = installed(tool);
        assert!(found, "`{tool}` is missing: {SETUP_HINT}");
    }
    for tool in ["mkfs.vfat", "mcopy"] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).exists());
        assert!(found, "`{tool}` is missing: {SETUP_HINT}");
    }
    assert!(
        Path::new(firmware).exists(),
        "the firmware {firmware} is missing: {SETUP_HINT}"
    );
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The boot disk of `arch`, built (or found cached) by testkit.
fn boot_disk(arch: &str) -> PathBuf {
    qcow2_testkit::boot_disk::path(arch)
}

/// The images made from one boot disk, cached beside each other.
struct Images {
    zstd: PathBuf,
    deflate: PathBuf,
    /// Extended-L2 overlay; its compressed base `base.qcow2` is beside it.
    overlay: PathBuf,
}

/// `path` if it is newer than `source`; otherwise `make(path)` first.
fn cached(source: &Path, path: PathBuf, make: impl FnOnce(&Path)) -> PathBuf {
    let newer = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if newer(&path).is_none() || newer(&path) < newer(source) {
        let tmp = path.with_extension("tmp");
        make(&tmp);
        fs::rename(&tmp, &path).expect("rename image");
    }
    path
}

fn images(disk: &Path, dir: &Path) -> Images {
    fs::create_dir_all(dir).expect("create image directory");
    let raw = path_str(disk);
    let convert = |options: &str, out: &Path| {
        Qemu::img()
            .args([
                "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", options, raw,
            ])
            .arg(out)
            .run();
    };
    let zstd = cached(disk, dir.join("zstd.qcow2"), |out: &Path| {
        convert("compression_type=zstd", out)
    });
    let deflate = cached(disk, dir.join("deflate.qcow2"), |out: &Path| {
        convert("compression_type=zlib", out)
    });
    let base = cached(disk, dir.join("base.qcow2"), |out: &Path| {
        convert("cluster_size=65536", out)
    });
    let overlay = cached(&base, dir.join("overlay.qcow2"), |out| {
        Create::new(out)
            .options("extended_l2=on,cluster_size=131072,backing_file=base.qcow2,backing_fmt=qcow2")
            .run();
        // Bytes 0..440 of the protective MBR are boot code that UEFI never
        // runs: rewriting them allocates one 4 KiB subcluster in the
        // overlay, the rest of its cluster still reading from the base.
        qemu_io(out, &["write -q -P 0xab 0 440"]);
    });
    Images {
        zstd,
        deflate,
        overlay,
    }
}

/// A copy of `image` whose first L1 entry points to an L2 table that is not
/// cluster-aligned: the header is valid, the first read is not.
fn corrupt_copy(image: &Path, out: &Path) {
    let mut bytes = fs::read(image).expect("read image");
    let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let entry = u64::from_be_bytes(bytes[l1..l1 + 8].try_into().unwrap());
    assert_ne!(entry, 0, "the first L1 entry of {image:?} is allocated");
    bytes[l1..l1 + 8].copy_from_slice(&(entry + 0x200).to_be_bytes());
    fs::write(out, bytes).expect("write corrupt image");
}

/// The boot disk `raw` as a LUKS-encrypted QCOW2 (PBKDF2 calibrated to
/// 10 ms, [`LUKS`]), uncompressed: QEMU 7.2's `qemu-img convert` refuses
/// `-c` with encryption ("Compression and encryption not supported at the
/// same time").
fn encrypted(raw: &Path, out: &Path) {
    Qemu::img()
        .arg("convert")
        .secret(&QemuSecret::Passphrase(PASSPHRASE.into()))
        .args(["-f", "raw", "-O", "qcow2", "-o"])
        .arg(format!("{LUKS},encrypt.key-secret=sec0"))
        .arg(raw)
        .arg(out)
        .run();
}

/// How an image reaches the guest.
#[derive(Clone, Copy)]
enum Attach {
    Disk,
    File,
    /// As a disk, then `reconnect -r` in the shell: the driver's Stop
    /// detaches it and Start attaches it again before the boot.
    DiskReconnected,
    /// As a disk, the driver loaded by the firmware from a `Driver####`
    /// variable (added by a first boot with `bcfg driver add`), the image
    /// booted by the firmware's boot manager without the shell.
    DriverOption,
}

/// What the run must show.
enum Expect {
    /// The marker, and QEMU's exit 0 after the guest powered off.
    Marker,
    /// A `qcow2.efi: error:` line containing this text, and a failed run.
    Error(&'static str),
}

struct Case {
    name: &'static str,
    image: PathBuf,
    attach: Attach,
    expect: Expect,
    /// Replies typed at the driver's passphrase prompts, in order.
    passphrases: &'static [&'static str],
}

fn boot_all(arch: &str, target: &str, emulator: &str, firmware: &str, on_x86_64: bool) {
    require_tools(emulator, firmware);
    let driver = build_driver(target);
    let disk = boot_disk(arch);
    let dir = repo().join("target/uefi-test").join(arch);
    let images = images(&disk, &dir);
    let mut cases = vec![
        Case {
            name: "zstd disk",
            image: images.zstd.clone(),
            attach: Attach::Disk,
            expect: Expect::Marker,
            passphrases: &[],
        },
        Case {
            name: "deflate disk",
            image: images.deflate,
            attach: Attach::Disk,
            expect: Expect::Marker,
            passphrases: &[],
        },
        Case {
            name: "extended-L2 overlay over a compressed base, as a file",
            image: images.overlay.clone(),
            attach: Attach::File,
            expect: Expect::Marker,
            passphrases: &[],
        },
    ];
    if !on_x86_64 {
        // On the architecture without the refusal cases, so that both
        // tests (which run in parallel) take about as long.
        cases.push(Case {
            name: "zstd disk, driver loaded from Driver0000 by the firmware",
            image: images.zstd.clone(),
            attach: Attach::DriverOption,
            expect: Expect::Marker,
            passphrases: &[],
        });
        cases.push(Case {
            name: "disk naming a backing file",
            image: images.overlay.clone(),
            attach: Attach::Disk,
            expect: Expect::Error("names a backing file \"base.qcow2\""),
            passphrases: &[],
        });
    }
    if on_x86_64 {
        // On x86_64 only: AAVMF's serial console is disconnected during
        // `reconnect -r`, so the driver's detach and attach lines, which
        // the case checks, would not be seen.
        cases.push(Case {
            name: "zstd disk, reconnected before the boot",
            image: images.zstd.clone(),
            attach: Attach::DiskReconnected,
            expect: Expect::Marker,
            passphrases: &[],
        });
        let corrupt = dir.join("corrupt.qcow2");
        corrupt_copy(&images.zstd, &corrupt);
        let locked = cached(&disk, dir.join("luks.qcow2"), |out| encrypted(&disk, out));
        cases.extend([
            Case {
                name: "LUKS disk, passphrase typed at the prompt of the driver loaded from Driver0000",
                image: locked.clone(),
                attach: Attach::DriverOption,
                expect: Expect::Marker,
                passphrases: &[PASSPHRASE],
            },
            Case {
                name: "corrupt L1 entry",
                image: corrupt,
                attach: Attach::Disk,
                expect: Expect::Error("L2 table offset 0x"),
                passphrases: &[],
            },
            Case {
                name: "LUKS disk, three wrong passphrases",
                image: locked,
                attach: Attach::Disk,
                expect: Expect::Error(
                    "invalid passphrase: no LUKS key slot opens with it (3 tries)",
                ),
                passphrases: &["wrong", "passwort", "Password"],
            },
        ]);
    }
    let work = dir.join("run");
    let marker = format!("QCOW2-BOOT-MARKER: reached init on {arch}");
    let mut failures = Vec::new();
    for case in &cases {
        let started = Instant::now();
        let mode = match case.attach {
            Attach::Disk | Attach::DiskReconnected => Mode::Disk,
            Attach::File => Mode::File,
            Attach::DriverOption => Mode::DriverOption,
        };
        let mut run = UefiRun::new(&driver, mode, Some(case.image.clone()));
        run.reconnect = matches!(case.attach, Attach::DiskReconnected);
        run.timeout = BOOT_TIMEOUT;
        run.work = Some(work.clone());
        run.answers = case
            .passphrases
            .iter()
            .map(|reply| (DRIVER_PROMPT.to_string(), reply.to_string()))
            .collect();
        let output = run.output();
        let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reached = stdout.contains(&marker);
        let error_line = stdout
            .lines()
            .find_map(|line| line.split_once("qcow2.efi: error: ").map(|(_, e)| e));
        let detached = stdout.contains("qcow2.efi: detached ");
        let attached = stdout.matches("qcow2.efi: attached ").count();
        let prompts = stdout.matches(DRIVER_PROMPT).count();
        let wrong = stdout.matches("qcow2.efi: wrong passphrase (try ").count();
        // Every reply but a booting case's last is wrong.
        let wrong_wanted = match case.expect {
            Expect::Marker => case.passphrases.len().saturating_sub(1),
            Expect::Error(_) => case.passphrases.len(),
        };
        let verdict = match case.expect {
            _ if prompts != case.passphrases.len() => Err(format!(
                "{prompts} passphrase prompts, want {}",
                case.passphrases.len()
            )),
            _ if wrong != wrong_wanted => Err(format!(
                "{wrong} wrong passphrase lines, want {wrong_wanted}"
            )),
            Expect::Marker
                if matches!(case.attach, Attach::DiskReconnected) && !(detached && attached == 2) =>
            {
                Err(format!(
                    "after reconnect -r: detached line {detached}, {attached} attached lines (want 2)"
                ))
            }
            Expect::Marker if reached && output.success() && error_line.is_none() => Ok(()),
            Expect::Marker => Err(format!(
                "marker {}, status {}, error line {error_line:?}",
                if reached { "seen" } else { "not seen" },
                output.code
            )),
            Expect::Error(text) => match error_line {
                Some(line) if line.contains(text) && !output.success() && !reached => Ok(()),
                _ => Err(format!(
                    "wanted a failed run with an error line containing `{text}`; got error \
                     line {error_line:?}, marker {reached}, status {}",
                    output.code
                )),
            },
        };
        eprintln!(
            "{arch} {}: {} in {:.1} s ({})",
            case.name,
            if verdict.is_ok() { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            stderr.lines().last().unwrap_or_default()
        );
        if let Err(reason) = verdict {
            failures.push(format!(
                "{}: {reason}\n--- stdout\n{stdout}--- stderr\n{stderr}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{arch}:\n{}", failures.join("\n"));
}

#[test]
fn x86_64_boots_linux_from_qcow2_images_and_refuses_bad_ones() {
    boot_all(
        "x86_64",
        "x86_64-unknown-uefi",
        "qemu-system-x86_64",
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        true,
    );
}

#[test]
fn aarch64_boots_linux_from_qcow2_images_and_refuses_a_backed_disk() {
    boot_all(
        "aarch64",
        "aarch64-unknown-uefi",
        "qemu-system-aarch64",
        "/usr/share/AAVMF/AAVMF_CODE.fd",
        false,
    );
}
