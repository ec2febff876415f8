//! `scripts/package.sh` builds a Debian package that installs what root on
//! a QCOW2 file needs: `/usr/bin/qcow` (runnable), the initramfs-tools hook
//! and boot scripts (executable, where initramfs-tools looks), the UEFI
//! driver of the host's architecture under `/usr/lib/qcow2/` (a PE image,
//! the bytes the UEFI build made), root-owned files, a control file naming
//! the host's architecture and the shared libraries' packages, and a
//! postinst that refreshes the initramfs. Read back with `dpkg-deb -c`,
//! `-I` and `-x`, the way dpkg sees the package.
//!
//! Builds qcow and the UEFI driver in release mode (minutes on a cold
//! target directory).

use std::path::{Path, PathBuf};
use std::process::Command;

fn text(command: &mut Command) -> String {
    let output = command.output().expect("run the command");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn build_package(out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stdout = text(Command::new(root.join("scripts/package.sh")).arg(out));
    let last = stdout.lines().last().expect("package.sh printed nothing");
    PathBuf::from(last)
}

#[test]
fn package_installs_qcow_the_initramfs_scripts_and_the_uefi_driver() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
    let deb = build_package(&out);
    assert!(deb.starts_with(&out) && deb.is_file(), "{}", deb.display());
    let arch = text(Command::new("dpkg").arg("--print-architecture"));
    let arch = arch.trim();
    assert!(
        deb.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(&format!("_{arch}.deb")),
        "{}",
        deb.display()
    );

    // Contents: every file with its mode and owner.
    let listing = text(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| {
        listing
            .lines()
            .find(|line| line.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("no {path} in the package:\n{listing}"))
            .to_string()
    };
    for path in [
        "usr/bin/qcow",
        "usr/share/initramfs-tools/hooks/qcow2root",
        "usr/share/initramfs-tools/scripts/local-top/qcow2root",
        "usr/share/initramfs-tools/scripts/local-bottom/qcow2root",
    ] {
        let line = entry(path);
        assert!(line.starts_with("-rwxr-xr-x root/root"), "{line}");
    }
    for path in ["usr/lib/qcow2/qcow2.efi", "usr/share/doc/qcow2/copyright"] {
        let line = entry(path);
        assert!(line.starts_with("-rw-r--r-- root/root"), "{line}");
    }
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "not root-owned: {line}");
    }

    // Control data.
    let info = text(Command::new("dpkg-deb").arg("-I").arg(&deb));
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim_start().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field:\n{info}"))
            .to_string()
    };
    assert_eq!(field("Package"), "qcow2");
    assert_eq!(field("Architecture"), arch);
    let depends = field("Depends");
    for needed in ["libc6", "libzstd1"] {
        assert!(depends.contains(needed), "Depends: {depends}");
    }
    let postinst = text(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("postinst"));
    assert!(postinst.contains("update-initramfs -u"), "{postinst}");

    // Extracted: qcow runs, the driver is the UEFI build's PE image.
    let tree = tempfile::tempdir().unwrap();
    text(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(tree.path()),
    );
    let help = text(
        Command::new(tree.path().join("usr/bin/qcow"))
            .arg("serve")
            .arg("--help"),
    );
    assert!(help.contains("--connect"), "{help}");
    let efi = std::fs::read(tree.path().join("usr/lib/qcow2/qcow2.efi")).unwrap();
    assert_eq!(&efi[..2], b"MZ", "not a PE image");
    let uefi_target = match arch {
        "amd64" => "x86_64-unknown-uefi",
        "arm64" => "aarch64-unknown-uefi",
        other => panic!("package.sh builds no UEFI driver for {other}"),
    };
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("uefi/target")
        .join(uefi_target)
        .join("release/qcow2.efi");
    assert_eq!(
        efi,
        std::fs::read(built).unwrap(),
        "the driver differs from the UEFI build"
    );
}
