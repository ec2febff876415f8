//! Command-line behaviour: help, errors, exit statuses, bench output.

mod common;

use common::*;

#[test]
fn every_subcommand_has_help() {
    for command in ["info", "map", "cat", "convert", "check", "bench"] {
        let out = String::from_utf8(qcow_ok(&[command, "--help"])).unwrap();
        assert!(out.contains("Usage: qcow"), "{command}: {out}");
    }
    let out = String::from_utf8(qcow_ok(&["--help"])).unwrap();
    assert!(out.contains("convert"), "{out}");
}

fn assert_fails_with(args: &[&str], file: &str, message: &str) {
    let output = qcow(args);
    assert_eq!(output.status.code(), Some(1), "{args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let prefix = format!("qcow: {file}: ");
    assert!(stderr.starts_with(&prefix), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn errors_name_the_image_and_exit_1() {
    let scratch = Scratch::new();
    let missing = scratch.path("missing.qcow2");
    let not_qcow = scratch.path("text.qcow2");
    std::fs::write(&not_qcow, b"QFI but not really an image, only text").unwrap();
    for command in ["info", "map", "cat", "check", "bench"] {
        assert_fails_with(&[command, text(&missing)], text(&missing), "No such file");
    }
    for command in ["cat", "check"] {
        assert_fails_with(
            &[command, text(&not_qcow)],
            text(&not_qcow),
            "not a QCOW2 image",
        );
    }
    let out = scratch.path("out.raw");
    assert_fails_with(
        &["convert", text(&missing), text(&out)],
        text(&missing),
        "No such file",
    );
}

#[test]
fn a_missing_backing_file_is_named() {
    let scratch = Scratch::new();
    let base = scratch.create("base.qcow2", "1M", "");
    let top = scratch.create_on("top.qcow2", "base.qcow2", "qcow2");
    std::fs::remove_file(&base).unwrap();
    assert_fails_with(&["cat", text(&top)], text(&top), "base.qcow2");
    // The image alone is still readable.
    qcow_ok(&["info", "--no-backing-chain", text(&top)]);
}

#[test]
fn bad_ranges_and_snapshots_are_errors() {
    let scratch = Scratch::new();
    let image = scratch.create("small.qcow2", "1M", "");
    assert_fails_with(
        &["cat", "--offset", "1M", "--length", "1", text(&image)],
        text(&image),
        "beyond the virtual disk size",
    );
    assert_fails_with(
        &["cat", "--snapshot", "nope", text(&image)],
        text(&image),
        "snapshot",
    );
}

#[test]
fn truncated_images_fail_cleanly() {
    let scratch = Scratch::new();
    let image = scratch.create("cut.qcow2", "8M", "");
    qemu_io(&image, &["write -P 9 0 4M"]);
    let full = std::fs::metadata(&image).unwrap().len();
    for len in [0, 50, 200, 65536, 65536 * 3, full / 2] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        file.set_len(len).unwrap();
        drop(file);
        for command in ["info", "map", "check"] {
            let output = qcow(&[command, text(&image)]);
            assert!(output.status.code().is_some(), "{command} at {len}");
        }
        let _ = qcow(&["cat", text(&image)]);
    }
}

#[test]
fn bench_reports_time_and_rate() {
    let scratch = Scratch::new();
    let image = scratch.create("bench.qcow2", "16M", "");
    qemu_io(&image, &["write -P 1 0 16M"]);
    for pattern in ["seq", "random"] {
        let out = String::from_utf8(qcow_ok(&[
            "bench",
            "-c",
            "1000",
            "-s",
            "4K",
            "-S",
            "64K",
            "--pattern",
            pattern,
            "--l2-cache-size",
            "64K",
            text(&image),
        ]))
        .unwrap();
        assert!(
            out.contains("Sending 1000 read requests, 4096 bytes each"),
            "{out}"
        );
        assert!(out.contains("Run completed in"), "{out}");
        assert!(out.contains("MiB/s"), "{out}");
    }
}

#[test]
fn convert_refuses_to_overwrite_its_input() {
    let scratch = Scratch::new();
    let base = scratch.create("base.qcow2", "1M", "");
    let top = scratch.create_on("top.qcow2", "base.qcow2", "qcow2");
    let before = std::fs::read(&base).unwrap();
    assert_fails_with(&["convert", text(&top), text(&base)], text(&base), "input");
    assert_fails_with(&["convert", text(&top), text(&top)], text(&top), "input");
    assert_eq!(std::fs::read(&base).unwrap(), before);
}
