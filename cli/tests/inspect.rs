//! `qcow info` and `qcow map` report what `qemu-img info/map --output=json` do.

mod common;

use common::*;
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// Every field both outputs have must be equal; the core fields must be in both.
fn assert_same_fields(ours: &Value, qemu: &Value, path: &str) {
    match (ours, qemu) {
        (Value::Object(ours), Value::Object(qemu)) => {
            for (key, value) in qemu {
                if let Some(mine) = ours.get(key) {
                    assert_same_fields(mine, value, &format!("{path}.{key}"));
                }
            }
        }
        (Value::Array(ours), Value::Array(qemu)) => {
            assert_eq!(ours.len(), qemu.len(), "length of {path}");
            for (index, (mine, theirs)) in ours.iter().zip(qemu).enumerate() {
                assert_same_fields(mine, theirs, &format!("{path}[{index}]"));
            }
        }
        _ => assert_eq!(ours, qemu, "field {path}"),
    }
}

fn assert_info_like_qemu(image: &std::path::Path) {
    let ours = json(&qcow_ok(&["info", "--json", text(image)]));
    let qemu = json(&qemu_img(&[
        "info",
        "--output=json",
        "--backing-chain",
        text(image),
    ]));
    assert_same_fields(&ours, &qemu, "info");
    let core = [
        "virtual-size",
        "filename",
        "format",
        "actual-size",
        "dirty-flag",
    ];
    for (mine, theirs) in ours
        .as_array()
        .unwrap()
        .iter()
        .zip(qemu.as_array().unwrap())
    {
        for key in core.iter().chain(
            [
                "cluster-size",
                "format-specific",
                "backing-filename",
                "full-backing-filename",
                "backing-filename-format",
                "snapshots",
            ]
            .iter(),
        ) {
            assert_eq!(
                mine.get(key).is_some(),
                theirs.get(key).is_some(),
                "presence of {key} for {image:?}"
            );
        }
    }
    let alone = json(&qcow_ok(&[
        "info",
        "--json",
        "--no-backing-chain",
        text(image),
    ]));
    let qemu_alone = json(&qemu_img(&["info", "--output=json", text(image)]));
    assert_same_fields(&alone, &qemu_alone, "info");
}

fn assert_map_like_qemu(image: &std::path::Path) {
    let ours = qcow_ok(&["map", "--json", text(image)]);
    let qemu = qemu_img(&["map", "--output=json", text(image)]);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&qemu),
        "map of {image:?}"
    );
}

/// A chain of raw, qcow2 and a longer qcow2 top with a snapshot.
fn chain(scratch: &Scratch) -> std::path::PathBuf {
    let raw = scratch.path("bottom.raw");
    qemu_img(&["create", "-q", "-f", "raw", text(&raw), "4M"]);
    qemu_io_as(
        &raw,
        "raw",
        &["write -P 0x01 0 1M", "write -P 0x01 2M 512k"],
    );
    let middle = scratch.create_on("middle.qcow2", "bottom.raw", "raw");
    qemu_io(&middle, &["write -P 0x02 1M 1M", "write -z 3M 64k"]);
    let top = scratch.create_on("top.qcow2", "middle.qcow2", "qcow2");
    qemu_img(&["resize", "-q", text(&top), "6M"]);
    qemu_io(&top, &["write -P 0x03 1536k 1M", "write -P 0x04 5M 64k"]);
    qemu_img(&["snapshot", "-c", "first", text(&top)]);
    qemu_io(&top, &["write -P 0x05 0 64k"]);
    top
}

#[test]
fn info_json_matches_qemu_on_a_chain() {
    let scratch = Scratch::new();
    let top = chain(&scratch);
    assert_info_like_qemu(&top);
}

#[test]
fn info_json_matches_qemu_on_image_kinds() {
    let scratch = Scratch::new();
    for (name, options) in [
        ("v2.qcow2", "compat=0.10"),
        ("lazy.qcow2", "lazy_refcounts=on,refcount_bits=64"),
        ("zstd.qcow2", "compression_type=zstd,cluster_size=4k"),
        (
            "ext.qcow2",
            "extended_l2=on,data_file={dir}/ext.data,data_file_raw=on",
        ),
    ] {
        let image = scratch.create(name, "2M", options);
        assert_info_like_qemu(&image);
    }
}

#[test]
fn info_human_names_features_and_chain() {
    let scratch = Scratch::new();
    let top = chain(&scratch);
    let out = String::from_utf8(qcow_ok(&["info", text(&top)])).unwrap();
    assert!(out.contains("virtual size: 6 MiB (6291456 bytes)"), "{out}");
    assert!(out.contains("backing file: middle.qcow2"), "{out}");
    assert!(out.contains("first"), "{out}");
    assert!(out.contains("file format: raw"), "{out}");
    let lazy = scratch.create("lazy.qcow2", "1M", "lazy_refcounts=on");
    let out = String::from_utf8(qcow_ok(&["info", text(&lazy)])).unwrap();
    assert!(out.contains("compatible: lazy refcounts"), "{out}");
}

#[test]
fn map_json_matches_qemu_on_a_chain() {
    let scratch = Scratch::new();
    let top = chain(&scratch);
    assert_map_like_qemu(&top);
    assert_map_like_qemu(&scratch.path("middle.qcow2"));
}

#[test]
fn map_json_matches_qemu_on_image_kinds() {
    let scratch = Scratch::new();
    for (name, options) in [
        ("v2.qcow2", "compat=0.10"),
        ("small.qcow2", "cluster_size=512"),
        ("ext.qcow2", "extended_l2=on"),
        ("data.qcow2", "data_file={dir}/data.raw"),
    ] {
        let image = scratch.create(name, "4M", options);
        qemu_io(
            &image,
            &[
                "write -P 1 0 100k",
                "write -P 2 1M 1M",
                "write -z -u 3M 64k",
            ],
        );
        assert_map_like_qemu(&image);
    }
    let source = scratch.path("v2.qcow2");
    let compressed = scratch.path("compressed.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        text(&source),
        text(&compressed),
    ]);
    assert_map_like_qemu(&compressed);
}

#[test]
fn map_human_lists_data_runs() {
    let scratch = Scratch::new();
    let top = chain(&scratch);
    let out = String::from_utf8(qcow_ok(&["map", text(&top)])).unwrap();
    assert!(out.starts_with("Offset          Length          Mapped to       File\n"));
    assert!(out.contains("top.qcow2"), "{out}");
    assert!(out.contains("bottom.raw"), "{out}");
}
