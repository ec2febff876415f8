//! `qcow check` finds what `qemu-img check` finds, with the same exit status.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// An image with data, a zero cluster, compressed clusters and a snapshot.
fn busy_image(scratch: &Scratch) -> std::path::PathBuf {
    let image = scratch.create("busy.qcow2", "8M", "");
    qemu_io(
        &image,
        &[
            "write -P 1 0 1M",
            "write -c -P 2 2M 128k",
            "write -z 4M 64k",
        ],
    );
    qemu_img(&["snapshot", "-c", "s1", text(&image)]);
    qemu_io(&image, &["write -P 3 512k 64k", "discard 6M 1M"]);
    image
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// `qemu-img check [--output=json] IMAGE`, which may report problems.
fn qemu_check(image: &Path, json: bool) -> std::process::Output {
    let mut qemu = Qemu::img().arg("check");
    if json {
        qemu = qemu.arg("--output=json");
    }
    qemu.arg(image).output()
}

/// Exit status and every JSON counter equal QEMU's.
fn assert_check_like_qemu(image: &Path) -> (i32, String) {
    let ours = qcow(&["check", text(image)]);
    let qemu = qemu_check(image, false);
    assert_eq!(
        ours.status.code(),
        qemu.status.code(),
        "exit status for {image:?}"
    );
    let mut ours_json = json(&qcow(&["check", "--json", text(image)]).stdout);
    let mut qemu_json = json(&qemu_check(image, true).stdout);
    ours_json.as_object_mut().unwrap().remove("filename");
    qemu_json.as_object_mut().unwrap().remove("filename");
    assert_eq!(ours_json, qemu_json, "check --json for {image:?}");
    (
        ours.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&ours.stdout).into_owned() + &String::from_utf8_lossy(&ours.stderr),
    )
}

#[test]
fn clean_images_pass() {
    let scratch = Scratch::new();
    let image = busy_image(&scratch);
    let (code, out) = assert_check_like_qemu(&image);
    assert_eq!(code, 0);
    assert!(out.contains("No errors were found on the image."), "{out}");
    for (name, options) in [
        ("v2.qcow2", "compat=0.10"),
        ("narrow.qcow2", "refcount_bits=1"),
        ("wide.qcow2", "refcount_bits=64,cluster_size=4k"),
        ("ext.qcow2", "extended_l2=on"),
        ("data.qcow2", "data_file={dir}/data.raw"),
    ] {
        let image = scratch.create(name, "4M", options);
        qemu_io(&image, &["write -P 1 0 100k", "write -P 2 1M 1M"]);
        let (code, _) = assert_check_like_qemu(&image);
        assert_eq!(code, 0, "{name}");
    }
}

#[test]
fn persistent_bitmaps_are_not_leaks() {
    let scratch = Scratch::new();
    let image = scratch.create("bitmap.qcow2", "4M", "");
    qemu_io(&image, &["write -P 1 0 1M"]);
    qemu_img(&["bitmap", "--add", text(&image), "b0"]);
    qemu_img(&["bitmap", "--add", text(&image), "b1"]);
    let (code, _) = assert_check_like_qemu(&image);
    assert_eq!(code, 0);
}

/// Offsets of the first L2 table and the first refcount block.
fn l2_and_refblock(image: &Path) -> (u64, u64) {
    let l1_offset = read_u64(image, 40);
    let l2_offset = read_u64(image, l1_offset) & 0x00ff_ffff_ffff_fe00;
    let reftable_offset = read_u64(image, 48);
    let refblock = read_u64(image, reftable_offset) & !0x1ff;
    (l2_offset, refblock)
}

#[test]
fn a_dropped_l2_entry_is_a_leak() {
    let scratch = Scratch::new();
    let image = scratch.create("leak.qcow2", "4M", "");
    qemu_io(&image, &["write -P 1 0 128k"]);
    let (l2_offset, _) = l2_and_refblock(&image);
    patch(&image, l2_offset + 8, &[0; 8]);
    let (code, out) = assert_check_like_qemu(&image);
    assert_eq!(code, 3);
    assert!(
        out.contains("1 leaked clusters were found on the image."),
        "{out}"
    );
    assert!(out.contains("Leaked cluster"), "{out}");
}

#[test]
fn a_zeroed_refcount_is_corruption() {
    let scratch = Scratch::new();
    let image = scratch.create("corrupt.qcow2", "4M", "");
    qemu_io(&image, &["write -P 1 0 64k"]);
    let (l2_offset, refblock) = l2_and_refblock(&image);
    let data_offset = read_u64(&image, l2_offset) & 0x00ff_ffff_ffff_fe00;
    let cluster = data_offset >> 16;
    patch(&image, refblock + 2 * cluster, &[0, 0]);
    let (code, out) = assert_check_like_qemu(&image);
    assert_eq!(code, 2);
    assert!(
        out.contains(&format!("ERROR cluster {cluster} refcount=0 reference=1")),
        "{out}"
    );
    assert!(out.contains("errors were found on the image."), "{out}");
    assert!(out.contains("OFLAG_COPIED"), "{out}");
}

#[test]
fn an_unaligned_l2_offset_is_named() {
    let scratch = Scratch::new();
    let image = scratch.create("unaligned.qcow2", "4M", "");
    qemu_io(&image, &["write -P 1 0 64k"]);
    let l1_offset = read_u64(&image, 40);
    let entry = read_u64(&image, l1_offset);
    patch(&image, l1_offset, &(entry + 0x200).to_be_bytes());
    let output = qcow(&["check", text(&image)]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Table is not cluster aligned; L1 entry corrupted"),
        "{stderr}"
    );
}

#[test]
fn a_refcount_block_outside_the_file_is_named() {
    let scratch = Scratch::new();
    let image = scratch.create("outside.qcow2", "4M", "");
    let reftable_offset = read_u64(&image, 48);
    patch(&image, reftable_offset + 8, &(1u64 << 40).to_be_bytes());
    let (code, out) = assert_check_like_qemu(&image);
    assert_eq!(code, 2);
    assert!(
        out.contains("ERROR refcount block 1 is outside image"),
        "{out}"
    );
}

#[test]
fn a_missing_backing_or_data_file_fails_the_check_like_qemu() {
    // `qemu-img check` opens the chain and the data file first: without
    // them it checks nothing and exits with 1.
    let scratch = Scratch::new();
    let base = scratch.create("base.qcow2", "1M", "");
    let top = scratch.create_on("top.qcow2", text(&base), "qcow2");
    let data = scratch.create("data.qcow2", "1M", "data_file={dir}/data.raw");
    std::fs::remove_file(&base).unwrap();
    std::fs::remove_file(scratch.path("data.raw")).unwrap();
    for image in [&top, &data] {
        for json in [false, true] {
            let qemu = qemu_check(image, json);
            let mut args = vec!["check"];
            if json {
                args.push("--json");
            }
            args.push(text(image));
            let ours = qcow(&args);
            assert_eq!(ours.status.code(), Some(1), "{image:?}");
            assert_eq!(ours.status.code(), qemu.status.code(), "{image:?}");
            assert!(
                ours.stdout.is_empty() && qemu.stdout.is_empty(),
                "no report"
            );
            let message = String::from_utf8_lossy(&ours.stderr);
            assert!(message.contains("No such file"), "{message}");
        }
    }
    // Under `--follow none` the image is checked alone.
    let alone = qcow(&["check", "--follow", "none", text(&top)]);
    assert_eq!(
        alone.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
}
