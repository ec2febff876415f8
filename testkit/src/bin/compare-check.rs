//! Compares `qcow check` and `qcow info` with `qemu-img check` and
//! `qemu-img info` on every `*.qcow2` file of the directories given, and
//! prints each disagreement: the exit status and the JSON counters of
//! `check`, and whether `info` opens the image.
//!
//! Made for images nobody here wrote, such as those of QEMU's image fuzzer
//! (`tests/image-fuzzer`, see docs/check.md): run it after `cargo build -p
//! qcow2-cli`, as `cargo run -p qcow2-testkit --bin compare-check -- DIR...`.
//! It exits with 1 when an image disagrees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qcow2_testkit::{output_in, workspace_root};
use serde_json::Value;

fn main() {
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        eprintln!("usage: compare-check DIR...");
        std::process::exit(2);
    }
    let qcow = std::env::var_os("QCOW")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/qcow"));
    let mut images = Vec::new();
    for dir in &dirs {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{dir:?}: {error}"));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|ext| ext == "qcow2") {
                images.push(path);
            }
        }
    }
    images.sort();
    let mut disagreements = 0;
    for image in &images {
        let differences = compare(&qcow, image);
        for difference in &differences {
            println!("{}: {difference}", image.display());
        }
        disagreements += usize::from(!differences.is_empty());
    }
    println!(
        "{} images, {} agree, {} disagree",
        images.len(),
        images.len() - disagreements,
        disagreements
    );
    std::process::exit(i32::from(disagreements > 0));
}

/// What differs between `qcow` and QEMU on one image.
fn compare(qcow: &Path, image: &Path) -> Vec<String> {
    let dir = image.parent().expect("a file in a directory");
    let name = image
        .file_name()
        .expect("a file name")
        .to_str()
        .expect("UTF-8");
    let mut differences = Vec::new();

    let qemu = output_in(
        Some(dir),
        "qemu-img",
        &["check", "--output=json", "-f", "qcow2", name],
    );
    let ours = run(qcow, dir, &["check", "--json", name]);
    if qemu.status.code() != ours.status.code() {
        differences.push(format!(
            "check exit {:?}, qemu-img {:?} ({}) / qcow: {}",
            ours.status.code(),
            qemu.status.code(),
            first_line(&qemu.stderr),
            first_line(&ours.stderr)
        ));
    }
    match (counters(&qemu.stdout), counters(&ours.stdout)) {
        (Some(expected), Some(actual)) if expected != actual => {
            differences.push(format!("check counters {actual} / qemu-img {expected}"))
        }
        (Some(_), None) => differences.push("check: qemu-img reports, qcow does not".into()),
        (None, Some(_)) => differences.push("check: qcow reports, qemu-img does not".into()),
        _ => {}
    }

    // Both probe the format: an image whose magic is broken shows as raw.
    let qemu = output_in(Some(dir), "qemu-img", &["info", "--output=json", name]);
    let ours = run(qcow, dir, &["info", "--json", "--no-backing-chain", name]);
    if qemu.status.success() != ours.status.success() {
        differences.push(format!(
            "info opens: qcow {}, qemu-img {} ({} / {})",
            ours.status.success(),
            qemu.status.success(),
            first_line(&ours.stderr),
            first_line(&qemu.stderr)
        ));
    }
    differences
}

fn run(qcow: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(qcow)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {qcow:?} (cargo build -p qcow2-cli): {error}"))
}

/// `check --output=json` without the file name, if it printed one.
fn counters(stdout: &[u8]) -> Option<Value> {
    let mut value: Value = serde_json::from_slice(stdout).ok()?;
    value.as_object_mut()?.remove("filename");
    Some(value)
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
