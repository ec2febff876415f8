//! Helpers shared by the integration tests: run `qcow`, `qemu-img` and
//! `qemu-io`, and make images in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory holding the images of one test.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `qemu-img create -f qcow2 [-o options] NAME SIZE`; `{dir}` in the
    /// options is this directory (QEMU 7.2 opens a relative data file name
    /// from its working directory, not from the image's, so tests use absolute ones).
    pub fn create(&self, name: &str, size: &str, options: &str) -> PathBuf {
        let path = self.path(name);
        let options = options.replace("{dir}", text(self.dir.path()));
        let options = options.as_str();
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        let path_text = path.to_str().expect("UTF-8 path").to_string();
        args.push(&path_text);
        if !size.is_empty() {
            args.push(size);
        }
        // qemu-img creates a relative data file name in its working directory.
        let output = Command::new("qemu-img")
            .args(&args)
            .current_dir(self.dir.path())
            .output()
            .expect("run qemu-img (install qemu-utils)");
        assert!(output.status.success(), "qemu-img {args:?} failed");
        path
    }

    /// `qemu-img create -f qcow2 -b BACKING -F FORMAT NAME`.
    pub fn create_on(&self, name: &str, backing: &str, format: &str) -> PathBuf {
        let path = self.path(name);
        let path_text = path.to_str().expect("UTF-8 path");
        qemu_img(&[
            "create", "-q", "-f", "qcow2", "-b", backing, "-F", format, path_text,
        ]);
        path
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} (install qemu-utils): {error}"));
    output
}

/// Runs `qemu-img`, which must succeed.
pub fn qemu_img(args: &[&str]) -> Output {
    let output = run("qemu-img", args);
    assert!(
        output.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `qemu-img check` on an image, which may report problems.
pub fn qemu_check(image: &Path, json: bool) -> Output {
    let mut args = vec!["check"];
    if json {
        args.push("--output=json");
    }
    args.push(image.to_str().expect("UTF-8 path"));
    run("qemu-img", &args)
}

/// Runs `qemu-io` commands on an image.
pub fn qemu_io(image: &Path, commands: &[&str]) {
    let mut args = Vec::new();
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(image.to_str().expect("UTF-8 path"));
    let output = run("qemu-io", &args);
    assert!(output.status.success(), "qemu-io {args:?} failed");
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
