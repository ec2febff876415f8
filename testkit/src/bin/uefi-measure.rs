//! Measures boot times to the marker of `scripts/boot-disk.sh` under the
//! stock firmware: the raw disk booted by the firmware itself (`--raw`),
//! the same disk converted to QCOW2 (uncompressed, deflate, zstd) booted
//! through `qcow2.efi`, and the zstd image with the driver loaded from a
//! Driver#### variable and booted by the boot manager like the raw disk
//! (`--driver-option`; the boot adding the variable is not counted). The
//! kinds alternate within each round, so a slow spell of the host touches
//! every kind alike. Prints one line per boot; uefi/README.md's table is
//! made from these lines.
//!
//! ```text
//! cargo run -p qcow2-testkit --bin uefi-measure -- ARCH [ROUNDS [KINDS]]
//! ```
//!
//! ARCH = x86_64 | aarch64, ROUNDS default 3, KINDS default
//! "raw plain deflate zstd zstd-option" (one argument, space-separated).
//! Builds the driver (dev profile, as `cargo run` does) first. Images go to
//! target/uefi-measure/ARCH/.

use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2_testkit::uefi_run::{Mode, UefiRun};
use qcow2_testkit::{run_in, workspace_root};

const USAGE: &str = "usage: uefi-measure x86_64|aarch64 [ROUNDS [KINDS]]";

fn fail(message: &str) -> ! {
    eprintln!("uefi-measure: {message}");
    std::process::exit(1);
}

fn main() {
    if let Err(message) = qcow2_testkit::stop_children_on_signals() {
        fail(&message);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = match args.first().map(String::as_str) {
        Some(arch @ ("x86_64" | "aarch64")) => arch,
        _ => fail(USAGE),
    };
    let rounds: u32 = match args.get(1) {
        None => 3,
        Some(rounds) => rounds
            .parse()
            .unwrap_or_else(|_| fail(&format!("ROUNDS {rounds:?} is not a number; {USAGE}"))),
    };
    let kinds: Vec<&str> = args
        .get(2)
        .map_or("raw plain deflate zstd zstd-option", String::as_str)
        .split_whitespace()
        .collect();
    let root = workspace_root();
    let uefi = root.join("uefi");
    let target = format!("{arch}-unknown-uefi");
    let built = Command::new("cargo")
        .args(["build", "--quiet", "--target", &target])
        .current_dir(&uefi)
        .status()
        .is_ok_and(|status| status.success());
    if !built {
        fail(&format!(
            "cargo build --target {target} in {} failed",
            uefi.display()
        ));
    }
    let driver = uefi.join("target").join(&target).join("debug/qcow2.efi");
    let raw = PathBuf::from(
        String::from_utf8_lossy(
            &run_in(None, &path(&root.join("scripts/boot-disk.sh")), &[arch]).stdout,
        )
        .trim_end_matches('\n'),
    );
    let dir = root.join("target/uefi-measure").join(arch);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| fail(&format!("{}: {error}", dir.display())));
    for (kind, options) in [
        ("plain", None),
        ("deflate", Some("compression_type=zlib")),
        ("zstd", Some("compression_type=zstd")),
    ] {
        let image = dir.join(format!("{kind}.qcow2"));
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        if let Some(options) = options {
            args.extend(["-c", "-o", options]);
        }
        let (raw, image) = (path(&raw), path(&image));
        args.extend([raw.as_str(), image.as_str()]);
        qcow2_testkit::qemu_img(&args);
    }
    for round in 1..=rounds {
        for kind in &kinds {
            let (mode, image) = match *kind {
                "raw" => (Mode::Raw, raw.clone()),
                "zstd-option" => (Mode::DriverOption, dir.join("zstd.qcow2")),
                other => (Mode::Disk, dir.join(format!("{other}.qcow2"))),
            };
            let mut run = UefiRun::new(&driver, mode, Some(image));
            if let Err(failure) = run.apply_env() {
                fail(&failure.message);
            }
            run.work = Some(dir.join("run"));
            let output = run.output();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr.lines().last().unwrap_or("");
            println!("{arch} round {round} {kind}: {line}");
        }
    }
}

/// A path as the tools' `&str` arguments take it.
fn path(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| fail(&format!("{}: not UTF-8", path.display())))
        .to_string()
}
