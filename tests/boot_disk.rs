//! The boot disks of the UEFI boot tests (`testkit::boot_disk`), booted
//! raw under the stock firmware (`scripts/boot-raw.sh`: OVMF on x86_64, AAVMF
//! on aarch64, TCG). A disk that does not boot raw cannot prove anything when
//! booted through the QCOW2 driver, so this is the baseline.
//!
//! Needs the packages that `scripts/setup.sh` installs; without them the
//! scripts fail naming the install command, and so do these tests (they never
//! pass silently). The first aarch64 build downloads the arm64 packages.

use qcow2_testkit::boot_disk::{self, Arch};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a script and returns its output, failing with its stderr.
fn run(script: &Path, args: &[&str]) -> Output {
    let output = Command::new(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}); run scripts/setup.sh (as root) if a package is missing:\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Builds (or finds cached) the disk for `arch` through the script that
/// uefi/run.sh and scripts/boot-raw.sh call, checking its interface: one
/// line on stdout, the absolute path of target/boot-disk/ARCH/disk.raw.
fn boot_disk(arch: &str) -> PathBuf {
    let output = run(&repo().join("scripts/boot-disk.sh"), &[arch]);
    let stdout = String::from_utf8(output.stdout).expect("the path is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be the path alone: {stdout:?}");
    let path = PathBuf::from(lines[0]);
    assert_eq!(
        path,
        repo().join("target/boot-disk").join(arch).join("disk.raw")
    );
    let size = std::fs::metadata(&path).expect("the disk exists").len();
    // Kernel + initramfs + GRUB: tens of MiB, not hundreds.
    assert!(
        (8 << 20..64 << 20).contains(&size),
        "{}: {size} bytes",
        path.display()
    );
    path
}

/// Boots the disk raw and requires the marker of its /init and QEMU's exit 0.
fn boots_raw(arch: &str) {
    let disk = boot_disk(arch);
    let disk = disk.to_str().expect("UTF-8 path");
    let output = run(&repo().join("scripts/boot-raw.sh"), &[arch, disk]);
    let console = String::from_utf8_lossy(&output.stdout);
    let marker = format!("QCOW2-BOOT-MARKER: reached init on {arch}");
    assert!(
        console
            .lines()
            .any(|line| without_escapes(line).trim() == marker),
        "no line '{marker}' on the console:\n{console}"
    );
    assert!(!console.contains("QCOW2-BOOT-ERROR"), "{console}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr).trim_end());
}

/// The line without terminal control sequences (`ESC [ ... final byte`): the
/// firmware's console leaves GRUB's colour codes in front of the kernel's
/// first output on the same line.
fn without_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                // Parameters and intermediates, then one final byte @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn escapes_are_removed_from_console_lines() {
    let line = "\r\u{1b}[0m\u{1b}[37m\u{1b}[40mQCOW2-BOOT-MARKER: reached init on x86_64\r";
    assert_eq!(
        without_escapes(line),
        "\rQCOW2-BOOT-MARKER: reached init on x86_64\r"
    );
    assert_eq!(without_escapes("\u{1b}[=3hplain"), "plain");
}

#[test]
fn x86_64_disk_boots_raw_under_ovmf() {
    boots_raw("x86_64");
}

#[test]
fn aarch64_disk_boots_raw_under_aavmf() {
    boots_raw("aarch64");
}

/// A second build from the same inputs, in another directory, gives the same
/// bytes (fixed UUIDs, volume ids and timestamps).
fn rebuilds_to_the_same_bytes(arch: &str) {
    let cached = std::fs::read(boot_disk(arch)).expect("the cached disk");
    let other = tempfile::tempdir().expect("a temporary directory");
    // The arm64 packages that boot_disk fetched, not a second download.
    let cache = other.path().join("boot-disk");
    std::fs::create_dir_all(&cache).expect("mkdir");
    for fetched in ["arm64-apt", "arm64-root"] {
        std::os::unix::fs::symlink(
            repo().join("target/boot-disk").join(fetched),
            cache.join(fetched),
        )
        .expect("symlink");
    }
    let arch = Arch::from_name(arch).expect("a known architecture");
    let rebuilt =
        boot_disk::build(&cache, arch).unwrap_or_else(|error| panic!("boot-disk: error: {error}"));
    assert!(rebuilt.built, "the copy did not build a disk of its own");
    let rebuilt = std::fs::read(&rebuilt.path).expect("the rebuilt disk");
    assert!(
        rebuilt.len() == cached.len() && rebuilt == cached,
        "the rebuilt {} disk differs from the cached one",
        arch.name()
    );
}

#[test]
fn x86_64_disk_rebuilds_to_the_same_bytes() {
    rebuilds_to_the_same_bytes("x86_64");
}

#[test]
fn aarch64_disk_rebuilds_to_the_same_bytes() {
    rebuilds_to_the_same_bytes("aarch64");
}
