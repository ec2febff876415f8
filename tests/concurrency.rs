//! Many readers at once: `Image` reads through `&self`, its caches behind
//! one lock. Eight threads read random ranges of one opened image (and of
//! one opened chain) at the same time, with caches small enough to be
//! evicted all along, and every read is compared with QEMU's bytes.

mod common;

use std::path::Path;
use std::sync::Barrier;

use common::*;
use qcow2_reader::chain::{open_chain, ChainOptions};
use qcow2_reader::{BlockRead, Config};

const THREADS: u64 = 8;
const READS_PER_THREAD: u64 = 100;

/// Small caches: 8 table slices and one decompressed cluster, so threads
/// keep evicting each other's entries.
// Field by field: `Config` may become `#[non_exhaustive]`, which forbids a
// struct expression outside the crate.
#[allow(clippy::field_reassign_with_default)]
fn small_config() -> Config {
    let mut config = Config::default();
    config.table_slice_bytes = 512;
    config.table_cache_bytes = 8 * 512;
    config.compressed_clusters = 1;
    config
}

/// Reads random ranges (up to 3 clusters, unaligned) from `THREADS` threads
/// started together, comparing each with `expected`.
fn read_from_threads(
    image: &(dyn BlockRead<Error = qcow2_reader::Error<std::io::Error>> + Sync),
    expected: &[u8],
) {
    let start = Barrier::new(THREADS as usize);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let start = &start;
            scope.spawn(move || {
                let mut state =
                    0x9e37_79b9_7f4a_7c15u64 ^ (thread + 1).wrapping_mul(0xd1b5_4a32_d192_ed03);
                let mut next = || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut buf = vec![0u8; 64 << 10];
                start.wait();
                for read in 0..READS_PER_THREAD {
                    let offset = (next() % expected.len() as u64) as usize;
                    let len = 1 + (next() % (64 << 10)) as usize % (expected.len() - offset);
                    let part = &mut buf[..len];
                    image.read_at(offset as u64, part).unwrap_or_else(|e| {
                        panic!("thread {thread}, read {read} at {offset:#x}: {e}")
                    });
                    if part != &expected[offset..offset + len] {
                        assert_same(
                            &expected[offset..offset + len],
                            part,
                            &format!("thread {thread}, read {read} at {offset:#x}+{len:#x}"),
                        );
                    }
                }
            });
        }
    });
}

/// A disk of varied bytes: text-like runs (they compress), random clusters
/// (they do not), and holes.
fn source(path: &Path, size: usize) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..size)
        .map(|at| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match (at >> 16) % 5 {
                0 => 0,
                1 => state as u8,
                _ => b"eight readers at once "[(state % 22) as usize],
            }
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn eight_threads_read_one_image_like_qemu() {
    let scratch = Scratch::new();
    let raw = scratch.path("source.raw");
    source(&raw, 8 << 20);
    for (name, options) in [
        ("plain.qcow2", "cluster_size=4k"),
        ("zstd.qcow2", "cluster_size=16k,compression_type=zstd"),
        ("deflate.qcow2", "cluster_size=64k"),
    ] {
        let image = scratch.path(name);
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2", "-o", options];
        if name != "plain.qcow2" {
            args.push("-c");
        }
        args.extend([raw.to_str().unwrap(), image.to_str().unwrap()]);
        qemu_img(&args);
        // Overwrites after compression: some clusters compressed, some not.
        qemu_io(&image, &["write -P 0x5a 1M 100k", "write -z 3M 64k"]);
        let expected = qemu_raw(&scratch, &image, &[]);
        let options = ChainOptions {
            config: small_config(),
            ..ChainOptions::default()
        };
        let chain = open_chain(&image, &options).unwrap();
        read_from_threads(&*chain.top, &expected);
    }
}

#[test]
fn eight_threads_read_one_chain_like_qemu() {
    let scratch = Scratch::new();
    let raw = scratch.path("base.raw");
    source(&raw, 8 << 20);
    let middle = scratch.path("middle.qcow2");
    let top = scratch.path("top.qcow2");
    create(
        &middle,
        &format!(
            "backing_file={},backing_fmt=raw,cluster_size=4k",
            raw.display()
        ),
        "8M",
    );
    qemu_io(
        &middle,
        &[
            "write -P 0x61 512k 300k",
            "write -z 2M 1M",
            "write -c -P 0x62 5M 64k",
        ],
    );
    create(
        &top,
        &format!(
            "backing_file={},backing_fmt=qcow2,extended_l2=on",
            middle.display()
        ),
        "8M",
    );
    qemu_io(
        &top,
        &[
            "write -P 0x71 600k 5k",
            "write -z 2500k 8k",
            "write -P 0x72 7M 33k",
        ],
    );
    let expected = qemu_raw(&scratch, &top, &[]);
    let options = ChainOptions {
        config: small_config(),
        ..ChainOptions::default()
    };
    let chain = open_chain(&top, &options).unwrap();
    assert_eq!(chain.layers.len(), 3);
    read_from_threads(&*chain.top, &expected);
}
