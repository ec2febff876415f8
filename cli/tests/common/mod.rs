//! Helpers shared by the integration tests: run `qcow`, `qemu-img` and
//! `qemu-io` (through `qcow2-testkit`, shared with the other crates' tests),
//! and make images in a temporary directory.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

// Not every test binary makes images.
#[allow(unused_imports)]
pub use qcow2_testkit::Scratch;
use qcow2_testkit::{output_in, run};

/// Runs `qemu-img`, which must succeed.
pub fn qemu_img(args: &[&str]) -> Output {
    run("qemu-img", args)
}

/// Runs `qemu-img check` on an image, which may report problems.
pub fn qemu_check(image: &Path, json: bool) -> Output {
    let mut args = vec!["check"];
    if json {
        args.push("--output=json");
    }
    args.push(image.to_str().expect("UTF-8 path"));
    output_in(None, "qemu-img", &args)
}

/// Runs `qemu-io` commands on an image.
pub fn qemu_io(image: &Path, commands: &[&str]) {
    let mut args = Vec::new();
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(image.to_str().expect("UTF-8 path"));
    run("qemu-io", &args);
}

/// The virtual disk as `qemu-img convert -O raw [-l SNAPSHOT]` writes it.
pub fn qemu_raw(image: &Path, snapshot: Option<&str>) -> Vec<u8> {
    let out = image.with_extension("qemu.raw");
    let mut args = vec!["convert", "-O", "raw"];
    if let Some(snapshot) = snapshot {
        args.extend(["-l", snapshot]);
    }
    args.push(image.to_str().expect("UTF-8 path"));
    args.push(out.to_str().expect("UTF-8 path"));
    qemu_img(&args);
    let bytes = std::fs::read(&out).expect("qemu-img output");
    std::fs::remove_file(&out).expect("remove qemu-img output");
    bytes
}

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
