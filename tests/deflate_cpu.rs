//! The deflate decoders' CPU per GiB of decoded clusters, on the clusters
//! of a real deflate QCOW2: zlib (the system's libz, what QEMU uses, raw
//! streams with QEMU's window bits -12), `miniz_oxide` (the `deflate`
//! feature alone), the vendored freestanding libdeflate on its own
//! (`qcow2-deflate-nostd`) and the crate's own decoder path
//! (`Decompressor`: libdeflate first with `deflate-c-nostd`, otherwise
//! `miniz_oxide`).
//!
//! A measurement, not a test: ignored, prints its numbers.
//!
//! ```sh
//! cargo test --release --features fuzzing,deflate-c-nostd --test deflate_cpu -- --ignored --nocapture
//! ```
//!
//! The data: 32 MiB of C headers from `/usr/include` and 32 MiB of shared
//! libraries from `/usr/lib` in a raw file, converted by `qemu-img convert
//! -c -O qcow2 -o compression_type=zlib` (64 KiB clusters); the compressed
//! clusters are read from the image where the crate's read plan says they
//! are (`Source::Compressed`), so each stream is QEMU's own, with its
//! sector padding. CPU time is the thread's own
//! (`/proc/thread-self/schedstat`), so other processes on a loaded machine
//! do not count; rounds alternate the decoders and the medians are printed.

use std::fs;
use std::path::Path;
use std::process::Command;

use qcow2_reader::chain::{self, ChainOptions, Source};
use qcow2_reader::fuzzing::Decompressor;
use qcow2_reader::CompressionType;
use qcow2_testkit::decoder_cpu::{headers_and_libraries, median, run, CLUSTER, ROUNDS};

/// The (stream, cluster) pairs of `data` compressed by `qemu-img`.
fn qemu_clusters(data: &[u8], dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let raw = dir.join("disk.raw");
    let image = dir.join("disk.qcow2");
    fs::write(&raw, data).expect("raw file");
    let status = Command::new("qemu-img")
        .args(["convert", "-c", "-O", "qcow2", "-o"])
        .arg("compression_type=zlib,cluster_size=65536")
        .arg(&raw)
        .arg(&image)
        .status()
        .expect("qemu-img");
    assert!(status.success(), "qemu-img convert failed");
    let file = fs::read(&image).expect("image");
    let walked = chain::open_disk(&image, &ChainOptions::default()).expect("open");
    let mut pairs = Vec::new();
    for piece in walked.disk.plan(0, data.len() as u64) {
        let piece = piece.expect("plan");
        if let Source::Compressed(descriptor) = piece.source {
            assert_eq!(piece.guest_offset % CLUSTER as u64, 0);
            let start = descriptor.host_offset as usize;
            let end = (start + descriptor.len as usize).min(file.len());
            let guest = piece.guest_offset as usize;
            pairs.push((
                file[start..end].to_vec(),
                data[guest..guest + CLUSTER].to_vec(),
            ));
        }
    }
    pairs
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture, in release mode"]
fn deflate_decoders_cpu_per_gib() {
    let (mut data, text, binary) = headers_and_libraries();
    data.truncate(data.len() / CLUSTER * CLUSTER);
    let dir = tempfile::tempdir().expect("temporary directory");
    let pairs = qemu_clusters(&data, dir.path());
    let streams: Vec<Vec<u8>> = pairs.iter().map(|(s, _)| s.clone()).collect();
    let compressed: usize = streams.iter().map(Vec::len).sum();
    let decoded = streams.len() * CLUSTER;
    println!(
        "data: {text} bytes of headers, {binary} bytes of libraries; {} of {} clusters compressed by qemu-img, to {:.1}% (sector padding included)",
        streams.len(),
        data.len() / CLUSTER,
        100.0 * compressed as f64 / decoded as f64
    );

    // Every decoder must give the clusters' bytes before it is timed.
    let mut zlib = flate2::Decompress::new_with_window_bits(false, 12);
    let mut zlib_decode = |stream: &[u8], out: &mut [u8]| {
        zlib.reset(false);
        let status = zlib
            .decompress(stream, out, flate2::FlushDecompress::Finish)
            .expect("zlib");
        assert!(
            matches!(status, flate2::Status::StreamEnd | flate2::Status::BufError)
                && zlib.total_out() == CLUSTER as u64
        );
    };
    let mut miniz_decode = |stream: &[u8], out: &mut [u8]| {
        let produced = miniz_oxide::inflate::decompress_slice_iter_to_slice(
            out,
            std::iter::once(stream),
            false,
            true,
        )
        .expect("miniz_oxide");
        assert_eq!(produced, CLUSTER);
    };
    let mut libdeflate = deflate_nostd::Decompressor::new().expect("decompressor");
    let mut libdeflate_decode = |stream: &[u8], out: &mut [u8]| {
        libdeflate.decompress(stream, out).expect("libdeflate");
    };
    let mut crate_path = Decompressor::new();
    let mut crate_decode = |stream: &[u8], out: &mut [u8]| {
        crate_path
            .decompress(CompressionType::Deflate, stream, out)
            .expect("the crate's decoder");
    };
    let mut out = vec![0u8; CLUSTER];
    for (stream, cluster) in &pairs {
        for decode in [
            &mut zlib_decode as &mut dyn FnMut(&[u8], &mut [u8]),
            &mut miniz_decode,
            &mut libdeflate_decode,
            &mut crate_decode,
        ] {
            out.fill(0);
            decode(stream, &mut out);
            assert_eq!(&out[..], &cluster[..]);
        }
    }

    let mut times: [Vec<u64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        times[0].push(run(&streams, &mut zlib_decode));
        times[1].push(run(&streams, &mut miniz_decode));
        times[2].push(run(&streams, &mut libdeflate_decode));
        times[3].push(run(&streams, &mut crate_decode));
    }
    let per_gib = |ns: u64| ns as f64 / 1e9 * (1u64 << 30) as f64 / decoded as f64;
    let zlib_ns = median(times[0].clone());
    let path = if cfg!(feature = "deflate-c-nostd") {
        "libdeflate, then miniz_oxide (deflate-c-nostd)"
    } else {
        "miniz_oxide"
    };
    for (name, samples) in [
        ("zlib (system libz), bare".to_string(), &times[0]),
        ("miniz_oxide, bare".to_string(), &times[1]),
        ("vendored libdeflate, bare".to_string(), &times[2]),
        (format!("crate's Decompressor: {path}"), &times[3]),
    ] {
        let ns = median(samples.clone());
        println!(
            "{name}: {:.3} s CPU per GiB decoded ({:.2}x zlib; rounds {:?} ms)",
            per_gib(ns),
            ns as f64 / zlib_ns as f64,
            samples.iter().map(|t| t / 1_000_000).collect::<Vec<_>>()
        );
    }
}
