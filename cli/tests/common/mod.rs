//! Helpers shared by the integration tests: run `qcow`, patch images; run
//! `qemu-img` and `qemu-io` and make images through `qcow2-testkit` (shared
//! with the other crates' tests), re-exported here.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

// QEMU's tools, scratch directories and cached images are the workspace's
// (`qcow2-testkit`); not every test binary uses all of it.
#[allow(unused_imports)]
pub use qcow2_testkit::*;

/// Runs the `qcow` binary under test.
pub fn qcow(args: &[&str]) -> Output {
    // No terminal on standard input: an encrypted image is refused rather
    // than prompting (and waiting) when the tests run in a terminal.
    let output = Command::new(env!("CARGO_BIN_EXE_qcow"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run qcow");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked"),
        "qcow {args:?} panicked: {stderr}"
    );
    output
}

/// Runs `qcow`, which must succeed, and returns its standard output.
pub fn qcow_ok(args: &[&str]) -> Vec<u8> {
    let output = qcow(args);
    assert!(
        output.status.success(),
        "qcow {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

pub fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Reads a big-endian u64 of a file.
pub fn read_u64(path: &Path, offset: u64) -> u64 {
    let bytes = std::fs::read(path).expect("read image");
    let at = offset as usize;
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Overwrites bytes of a file.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image for patching");
    file.write_all_at(bytes, offset).expect("patch image");
}
