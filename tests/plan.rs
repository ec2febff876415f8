//! The chain's read plan against `qemu-img map --output=json`: the same
//! layer (depth), allocation (present), zeros and data for every byte, the
//! same host offsets for stored data; and the plan executed
//! (`Disk::read_at`) against `qemu-img convert`.

mod common;

use std::path::Path;

use common::*;
use qcow2_reader::chain::{open_disk, ChainOptions, Disk, Source};
use serde_json::Value;

/// How one byte reads, in `qemu-img map`'s terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    depth: u64,
    present: bool,
    zero: bool,
    data: bool,
}

/// A run of bytes that read alike, with the host offset of its first
/// byte where the map gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: u64,
    len: u64,
    class: Class,
    offset: Option<u64>,
}

/// Appends `run`, merging it into the last one where they continue each other.
fn push(runs: &mut Vec<Run>, run: Run) {
    if let Some(last) = runs.last_mut() {
        let continues_offset = match (last.offset, run.offset) {
            (Some(a), Some(b)) => a + last.len == b,
            (None, None) => true,
            _ => false,
        };
        if last.class == run.class && last.start + last.len == run.start && continues_offset {
            last.len += run.len;
            return;
        }
    }
    runs.push(run);
}

fn qemu_map(image: &Path) -> Vec<Run> {
    let json = qemu_img(&["map", "--output=json", image.to_str().unwrap()]);
    let entries: Vec<Value> = serde_json::from_slice(&json).expect("qemu-img map JSON");
    let mut runs = Vec::new();
    for entry in entries {
        let class = Class {
            depth: entry["depth"].as_u64().unwrap(),
            present: entry["present"].as_bool().unwrap(),
            zero: entry["zero"].as_bool().unwrap(),
            data: entry["data"].as_bool().unwrap(),
        };
        let run = Run {
            start: entry["start"].as_u64().unwrap(),
            len: entry["length"].as_u64().unwrap(),
            class,
            offset: entry.get("offset").and_then(Value::as_u64),
        };
        push(&mut runs, run);
    }
    runs
}

fn plan_map(disk: &Disk<std::fs::File>, size: u64) -> Vec<Run> {
    let mut runs = Vec::new();
    for piece in disk.plan(0, size) {
        let piece = piece.expect("plan");
        let (present, offset) = match piece.source {
            Source::Stored { offset, .. } => (true, Some(offset)),
            Source::Unallocated { kept_offset } | Source::PastEnd { kept_offset } => {
                (false, kept_offset)
            }
            Source::ZeroCluster { kept_offset } => (true, kept_offset),
            Source::Compressed(_) => (true, None),
        };
        let class = Class {
            depth: piece.depth as u64,
            present,
            zero: piece.source.is_zero(),
            data: matches!(piece.source, Source::Stored { .. } | Source::Compressed(_)),
        };
        push(
            &mut runs,
            Run {
                start: piece.guest_offset,
                len: piece.len,
                class,
                offset,
            },
        );
    }
    runs
}

fn assert_plan_like_qemu(scratch: &Scratch, top: &Path) {
    let walked = open_disk(top, &ChainOptions::default()).expect("open chain");
    let size = walked.disk.image().expect("qcow2 top").virtual_size();
    assert_eq!(plan_map(&walked.disk, size), qemu_map(top));
    let mut read = vec![0u8; size as usize];
    walked.disk.read_at(0, &mut read).expect("read");
    assert_same(&qemu_raw(scratch, top, &[]), &read, "the plan executed");
}

fn random_raw(path: &Path, size: usize) {
    let mut state = 0x2545_f491u32;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn plan_of_a_three_layer_chain_matches_qemu_img_map() {
    let scratch = Scratch::new();
    let base = scratch.path("base.raw");
    random_raw(&base, 3 << 20); // shorter than the overlays: zeros past its end
    let middle = scratch.create_on("middle.qcow2", "base.raw", "raw");
    qemu_img(&["resize", "-q", middle.to_str().unwrap(), "6M"]);
    qemu_io(
        &middle,
        &[
            "write -P 0x81 64k 64k",
            "write -z 256k 128k",
            "write -P 0x82 4M 64k",
        ],
    );
    let top = scratch.create_on("top.qcow2", "middle.qcow2", "qcow2");
    qemu_img(&["resize", "-q", top.to_str().unwrap(), "8M"]);
    qemu_io(
        &top,
        &[
            "write -P 0x83 0 4k",
            "write -z 1M 64k",
            "write -P 0x84 7M 64k",
            "write -c -P 0x85 2M 64k",
        ],
    );
    assert_plan_like_qemu(&scratch, &top);
}

#[test]
fn plan_of_an_extended_l2_overlay_falls_through_per_subcluster() {
    let scratch = Scratch::new();
    let base = scratch.create("base.qcow2", "4M", "");
    qemu_io(&base, &["write -P 0x91 0 1M"]);
    let top = scratch.create(
        "top.qcow2",
        "4M",
        "extended_l2=on,backing_file=base.qcow2,backing_fmt=qcow2",
    );
    qemu_io(
        &top,
        &[
            "write -P 0x92 2k 2k",
            "write -z 10k 2k",
            "write -P 0x93 70k 1k",
        ],
    );
    assert_plan_like_qemu(&scratch, &top);
}
