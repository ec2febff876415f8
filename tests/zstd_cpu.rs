//! The zstd decoders' CPU per GiB of decoded clusters, on the same frames:
//! the system's libzstd (what QEMU and `zstd-c` use) against the crate's
//! own decoder path (`Decompressor`: whichever of `ruzstd`, `zstd-c` or
//! `zstd-c-nostd` this build has) and the vendored freestanding libzstd on
//! its own (`qcow2-zstd-nostd`, without the crate's frame checks).
//!
//! A measurement, not a test: ignored, prints its numbers.
//!
//! ```sh
//! cargo test --release --features fuzzing,zstd-c-nostd --test zstd_cpu -- --ignored --nocapture
//! cargo test --release --features fuzzing --test zstd_cpu -- --ignored --nocapture  # ruzstd
//! ```
//!
//! The data: 32 MiB of C headers from `/usr/include` and 32 MiB of shared
//! libraries from `/usr/lib`, in 64 KiB clusters, each compressed as QEMU
//! compresses a cluster (one frame, level 3, content size in the header:
//! `ZSTD_compressStream2` with `ZSTD_e_end`); clusters that do not shrink
//! are left out, as QEMU stores them uncompressed. CPU time is the
//! thread's own (`/proc/thread-self/schedstat`), so other processes on a
//! loaded machine do not count; rounds alternate the decoders and the
//! medians are printed.

use qcow2_reader::fuzzing::Decompressor;
use qcow2_reader::CompressionType;
use qcow2_testkit::decoder_cpu::{headers_and_libraries, median, run, CLUSTER, ROUNDS};

fn compress(cluster: &[u8]) -> Option<Vec<u8>> {
    let mut context = zstd_safe::CCtx::create();
    context
        .set_parameter(zstd_safe::CParameter::CompressionLevel(3))
        .ok()?;
    let mut frame = vec![0u8; zstd_safe::compress_bound(cluster.len())];
    let mut sink = zstd_safe::OutBuffer::around(&mut frame[..]);
    let mut source = zstd_safe::InBuffer::around(cluster);
    let left = context
        .compress_stream2(
            &mut sink,
            &mut source,
            zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
        )
        .ok()?;
    assert_eq!(left, 0, "one call ends the frame");
    let len = sink.pos();
    frame.truncate(len);
    // QEMU keeps a cluster uncompressed unless it shrinks.
    (frame.len() < cluster.len()).then_some(frame)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture, in release mode"]
fn zstd_decoders_cpu_per_gib() {
    let (data, text, binary) = headers_and_libraries();
    let clusters: Vec<&[u8]> = data.chunks_exact(CLUSTER).collect();
    let pairs: Vec<(Vec<u8>, &[u8])> = clusters
        .iter()
        .filter_map(|c| compress(c).map(|f| (f, *c)))
        .collect();
    let frames: Vec<Vec<u8>> = pairs.iter().map(|(f, _)| f.clone()).collect();
    let compressed: usize = frames.iter().map(Vec::len).sum();
    let decoded = frames.len() * CLUSTER;
    println!(
        "data: {text} bytes of headers, {binary} bytes of libraries; {} of {} clusters compressed, to {:.1}% ",
        frames.len(),
        clusters.len(),
        100.0 * compressed as f64 / decoded as f64
    );

    // Every decoder must give the clusters' bytes before it is timed.
    let mut system = zstd_safe::DCtx::create();
    let mut system_decode = |frame: &[u8], out: &mut [u8]| {
        let mut sink = zstd_safe::OutBuffer::around(out);
        let mut source = zstd_safe::InBuffer::around(frame);
        let hint = system
            .decompress_stream(&mut sink, &mut source)
            .expect("system libzstd");
        assert_eq!((hint, sink.pos()), (0, CLUSTER));
    };
    let mut crate_path = Decompressor::new();
    let mut crate_decode = |frame: &[u8], out: &mut [u8]| {
        crate_path
            .decompress(CompressionType::Zstd, frame, out)
            .expect("the crate's decoder");
    };
    let mut vendored = zstd_nostd::DCtx::new(CLUSTER).expect("context");
    let mut vendored_decode = |frame: &[u8], out: &mut [u8]| {
        vendored.reset_session().expect("reset");
        let (mut consumed, mut produced) = (0, 0);
        let hint = vendored
            .decompress_stream(out, &mut produced, frame, &mut consumed)
            .expect("vendored libzstd");
        assert_eq!((hint, produced), (0, CLUSTER));
    };
    let mut out = vec![0u8; CLUSTER];
    for (frame, cluster) in &pairs {
        for decode in [
            &mut system_decode as &mut dyn FnMut(&[u8], &mut [u8]),
            &mut crate_decode,
            &mut vendored_decode,
        ] {
            out.fill(0);
            decode(frame, &mut out);
            assert_eq!(&out[..], *cluster);
        }
    }

    let mut times: [Vec<u64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        times[0].push(run(&frames, &mut system_decode));
        times[1].push(run(&frames, &mut crate_decode));
        times[2].push(run(&frames, &mut vendored_decode));
    }
    let per_gib = |ns: u64| ns as f64 / 1e9 * (1u64 << 30) as f64 / decoded as f64;
    let system_ns = median(times[0].clone());
    let path = if cfg!(feature = "zstd-c-nostd") {
        "vendored libzstd (zstd-c-nostd)"
    } else if cfg!(feature = "zstd-c") {
        "system libzstd (zstd-c)"
    } else {
        "ruzstd"
    };
    for (name, samples) in [
        ("system libzstd, bare".to_string(), &times[0]),
        (format!("crate's Decompressor: {path}"), &times[1]),
        ("vendored libzstd, bare".to_string(), &times[2]),
    ] {
        let ns = median(samples.clone());
        println!(
            "{name}: {:.3} s CPU per GiB decoded ({:.2}x system libzstd; rounds {:?} ms)",
            per_gib(ns),
            ns as f64 / system_ns as f64,
            samples.iter().map(|t| t / 1_000_000).collect::<Vec<_>>()
        );
    }
}
