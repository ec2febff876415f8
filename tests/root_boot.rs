//! Issue 22's boot test, x86_64, `qcow2root=LABEL=...:/PATH`: a minimal
//! Debian bookworm with systemd and this project's package installed
//! (`scripts/root-disk.sh`: `mmdebstrap`, GPT disk with GRUB and an ext4
//! root, converted to a zstd-compressed QCOW2) is copied to a FAT32 "stick"
//! and booted under stock OVMF by `uefi/run.sh --file`: the firmware loads
//! `qcow2.efi`, which attaches the file through `\qcow2.cfg`; GRUB inside
//! the image loads the kernel; the initramfs mounts the stick, serves the
//! image with `qcow serve --connect /dev/nbd0 --fork`, and the root mounts
//! from `/dev/nbd0p2` under a tmpfs overlay. A unit prints the marker at
//! `multi-user.target` and powers off; the console must show no I/O or NBD
//! error from boot to power-off, and no boot script failure.
//!
//! The stick is attached read-only by QEMU, so the image cannot be written.
//! Needs root (mmdebstrap's chroot mode), the Debian mirror once (the disk
//! is cached under `target/root-disk/`), QEMU and OVMF (`scripts/setup.sh`)
//! and mmdebstrap. A boot takes one to a few minutes under TCG.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn last_line_of(command: &mut Command) -> String {
    let output = command.output().expect("run the command");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    stdout.lines().last().expect("a line of output").to_string()
}

#[test]
fn debian_boots_to_multi_user_from_a_zstd_qcow2_file_on_a_fat_stick() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let deb = last_line_of(
        Command::new(repo().join("scripts/package.sh")).arg(tmp.join("root-boot-package")),
    );
    // run.sh's stick is FAT32 labelled QCOW2DRV, the image at its root.
    let image = PathBuf::from(last_line_of(
        Command::new(repo().join("scripts/root-disk.sh")).args([
            deb.as_str(),
            "QCOW2DRV",
            "debian.qcow2",
        ]),
    ));
    let driver = repo().join("uefi/target/x86_64-unknown-uefi/release/qcow2.efi");
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(repo().join("uefi/run.sh"))
        .arg(&driver)
        .arg("--file")
        .arg(&image)
        .env("QCOW2_UEFI_TIMEOUT", "900")
        .env("QCOW2_UEFI_WORK", work.path())
        .output()
        .expect("uefi/run.sh");
    let console = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the boot failed ({}): {stderr}\n{console}",
        output.status
    );
    let marker = console
        .lines()
        .find(|line| line.contains("QCOW2-BOOT-MARKER: reached init on x86_64 (multi-user.target"))
        .unwrap_or_else(|| panic!("no marker at multi-user.target:\n{console}"));
    assert!(
        marker.contains("/ is overlay"),
        "the root is not the overlay: {marker}"
    );
    for bad in [
        "I/O error",
        "block nbd0:",
        "qcow2root:",
        "qcow: ",
        "EXT4-fs error",
    ] {
        let lines: Vec<&str> = console.lines().filter(|line| line.contains(bad)).collect();
        assert!(lines.is_empty(), "{bad:?} on the console: {lines:#?}");
    }
    eprintln!("{}", stderr.lines().last().unwrap_or(""));
}
