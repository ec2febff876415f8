//! `qcow check` and `qcow info` compared with `qemu-img check` and
//! `qemu-img info` on one image: the exit status and the JSON counters of
//! `check`, and whether `info` opens it. Used by the `compare-check`
//! binary (directories of outside images) and by the CLI's tests of the
//! image states QEMU's iotests make.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::output_in;

/// What differs between `qcow` and QEMU on one image.
pub fn compare_with_qemu(qcow: &Path, image: &Path) -> Vec<String> {
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
