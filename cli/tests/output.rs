//! Output files of `qcow get -o` and `qcow convert`: never an input of the
//! command, never through a symlink unless asked, never left partial. The
//! images are the file-system disks of `testkit::make_disks`, a
//! `qemu-img` overlay of one, and a copy whose data lives in a data file.

mod common;

use std::path::{Path, PathBuf};

use common::{qcow, qcow_ok, qemu_img, text, Scratch};
use sha2::{Digest, Sha256};

/// A chain in a scratch directory: `top.qcow2` over `base.qcow2` (a copy
/// of the GPT disk), and `data.qcow2` whose clusters live in `data.raw`.
struct Chain {
    scratch: Scratch,
}

impl Chain {
    fn new() -> Self {
        let scratch = Scratch::new();
        let base = scratch.path("base.qcow2");
        std::fs::copy(qcow2_testkit::made_disks().join("gpt-base.qcow2"), &base).unwrap();
        let top = scratch.path("top.qcow2");
        let backing = format!("backing_file={},backing_fmt=qcow2", text(&base));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &backing, text(&top)]);
        let data_file = format!("data_file={}", text(&scratch.path("data.raw")));
        let data = scratch.path("data.qcow2");
        let args = [
            "convert",
            "-O",
            "qcow2",
            "-o",
            &data_file,
            text(&base),
            text(&data),
        ];
        qemu_img(&args);
        Self { scratch }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path(name)
    }

    /// SHA-256 of every file of the directory, by name, symlinks as their target.
    fn digests(&self) -> Vec<(String, String)> {
        let mut digests: Vec<_> = std::fs::read_dir(self.path(""))
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let digest = match std::fs::read_link(&path) {
                    Ok(target) => format!("-> {}", target.display()),
                    Err(_) => format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap())),
                };
                (name, digest)
            })
            .collect();
        digests.sort();
        digests
    }
}

/// Runs `qcow`, which must fail with exit status 1 and one line naming
/// `output` and saying `message`.
fn assert_refused(args: &[&str], output: &Path, message: &str) {
    let run = qcow(args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let prefix = format!("qcow: {}: ", output.display());
    assert!(stderr.starts_with(&prefix), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

#[test]
fn get_output_onto_its_own_image_is_refused_and_image_unchanged() {
    let chain = Chain::new();
    std::fs::hard_link(chain.path("base.qcow2"), chain.path("hard-link")).unwrap();
    std::os::unix::fs::symlink("top.qcow2", chain.path("sym-link")).unwrap();
    let before = chain.digests();
    let top = chain.path("top.qcow2");
    let data = chain.path("data.qcow2");
    for (image, output, input) in [
        (&top, "top.qcow2", "top.qcow2"),
        (&top, "base.qcow2", "base.qcow2"),
        (&top, "hard-link", "base.qcow2"),
        (&data, "data.raw", "data.raw"),
        (&data, "data.qcow2", "data.qcow2"),
    ] {
        let output = chain.path(output);
        let args = ["get", text(image), "2:/hello.txt", "-o", text(&output)];
        let message = format!("is {}, an input of this command", text(&chain.path(input)));
        assert_refused(&args, &output, &message);
    }
    // A symlink to the image: refused as a symlink, and as the image when followed.
    let link = chain.path("sym-link");
    let args = ["get", text(&top), "2:/hello.txt", "-o", text(&link)];
    assert_refused(&args, &link, "is a symbolic link (to top.qcow2)");
    let args = [&args[..], &["--follow-output-symlink"]].concat();
    assert_refused(&args, &link, "an input of this command");
    assert_eq!(chain.digests(), before, "a file of the directory changed");
}

#[test]
fn get_failed_read_leaves_the_old_output_and_no_partial_file() {
    let scratch = Scratch::new();
    // The whole-disk image cut short: its first blocks of /big.bin read,
    // then the file system's extent blocks read as zeros (past the end).
    let image = scratch.path("cut.qcow2");
    std::fs::copy(qcow2_testkit::made_disks().join("whole.qcow2"), &image).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(700_000)
        .unwrap();
    let small_reads = ["--threads", "1", "--chunk-size", "4096"];
    let streamed = qcow(&[&["get", text(&image), "/big.bin"], &small_reads[..]].concat());
    assert_eq!(streamed.status.code(), Some(1));
    assert!(
        !streamed.stdout.is_empty() && streamed.stdout.len() < 3_145_739,
        "the read must fail part way: {} bytes",
        streamed.stdout.len()
    );

    let output = scratch.path("out");
    std::fs::write(&output, b"old contents").unwrap();
    let args = [
        &["get", text(&image), "/big.bin", "-o", text(&output)],
        &small_reads[..],
    ]
    .concat();
    let run = qcow(&args);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("/big.bin: ext2/3/4: corrupt"), "{stderr}");
    assert_eq!(std::fs::read(&output).unwrap(), b"old contents");
    let mut names: Vec<_> = std::fs::read_dir(scratch.path(""))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cut.qcow2", "out"], "a partial file is left");
}

#[test]
fn get_output_symlink_is_refused_unless_asked_then_written_through() {
    let chain = Chain::new();
    let target = chain.path("real");
    std::fs::write(&target, b"old contents").unwrap();
    let link = chain.path("link");
    std::os::unix::fs::symlink("real", &link).unwrap();
    let top = chain.path("top.qcow2");
    let args = ["get", text(&top), "2:/hello.txt", "-o", text(&link)];
    assert_refused(
        &args,
        &link,
        "is a symbolic link (to real); refused as an output",
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"old contents");

    let args = [&args[..], &["--follow-output-symlink"]].concat();
    qcow_ok(&args);
    let expected =
        std::fs::read(qcow2_testkit::made_disks().join("tree-ext-v1/hello.txt")).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), expected);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn convert_output_onto_its_own_chain_is_refused_and_image_unchanged() {
    let chain = Chain::new();
    std::os::unix::fs::symlink("elsewhere.raw", chain.path("sym-link")).unwrap();
    let before = chain.digests();
    let top = chain.path("top.qcow2");
    let data = chain.path("data.qcow2");
    for (image, output) in [
        (&top, "top.qcow2"),
        (&top, "base.qcow2"),
        (&data, "data.raw"),
    ] {
        let output = chain.path(output);
        let args = ["convert", text(image), text(&output)];
        assert_refused(&args, &output, "an input of this command");
    }
    let link = chain.path("sym-link");
    let args = ["convert", text(&top), text(&link)];
    assert_refused(&args, &link, "is a symbolic link (to elsewhere.raw)");
    assert_eq!(chain.digests(), before, "a file of the directory changed");

    // The output is complete and where it was named, nothing else is left.
    let output = chain.path("out.raw");
    qcow_ok(&["convert", text(&top), text(&output)]);
    let reference = qcow2_testkit::Scratch::new();
    let expected = common::qemu_raw(&reference, &top, &[]);
    assert!(
        std::fs::read(&output).unwrap() == expected,
        "convert differs from QEMU"
    );
    let mut after = chain.digests();
    after.retain(|(name, _)| name != "out.raw");
    assert_eq!(after, before);
}
