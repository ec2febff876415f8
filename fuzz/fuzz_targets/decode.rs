//! The compressed-cluster path on its own: arbitrary payloads through
//! `Decompressor` for deflate and zstd, into one cluster of 512 B .. 2 MiB.
//!
//! Input layout: byte 0 bit 0 = codec (0 deflate, 1 zstd); byte 1 = cluster
//! bits (9 + value % 13); bytes 2..4 = where the first payload ends; then the
//! payloads. The first payload is decoded with a decompressor that then
//! decodes the second, which must give what a fresh decompressor gives.
//!
//! Deflate is differential: the build's decoder is libdeflate with
//! `miniz_oxide` behind it (`deflate-c-nostd`, as in the firmware and the
//! UEFI driver), and every result must be what `miniz_oxide` alone gives
//! under QEMU's rule (the reader's decoder before libdeflate): the same
//! bytes, or both an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcow2_reader::fuzzing::Decompressor;
use qcow2_reader::CompressionType;
use qcow2_reader_fuzz::{max_read_allocation, max_read_heap, HeapWatch};

const CANARY: u8 = 0xa5;

/// QEMU's rule through `miniz_oxide` alone: the cluster full, whether the
/// stream ended there or goes on.
fn miniz_reference(input: &[u8], cluster_size: usize) -> Option<Vec<u8>> {
    use miniz_oxide::inflate::{decompress_slice_iter_to_slice, TINFLStatus};
    let mut output = vec![0u8; cluster_size];
    match decompress_slice_iter_to_slice(&mut output, core::iter::once(input), false, true) {
        Ok(produced) if produced == cluster_size => Some(output),
        Err(TINFLStatus::HasMoreOutput) => Some(output),
        _ => None,
    }
}

/// For deflate, `result` must be `miniz_oxide`'s.
fn check_deflate(
    codec: CompressionType,
    input: &[u8],
    cluster_size: usize,
    result: &Option<Vec<u8>>,
) {
    if codec == CompressionType::Deflate {
        assert!(
            *result == miniz_reference(input, cluster_size),
            "libdeflate and miniz_oxide disagree on a {cluster_size}-byte cluster"
        );
    }
}

fn decode(
    decompressor: &mut Decompressor,
    codec: CompressionType,
    input: &[u8],
    cluster_size: usize,
) -> Option<Vec<u8>> {
    let mut output = vec![CANARY; cluster_size + 64];
    let heap = HeapWatch::start();
    let result = decompressor.decompress(codec, input, &mut output[..cluster_size]);
    assert!(
        heap.largest() <= max_read_allocation(cluster_size),
        "decoder allocated {} bytes at once for a {cluster_size}-byte cluster",
        heap.largest()
    );
    assert!(
        heap.peak_growth() <= max_read_heap(cluster_size),
        "decoder grew the heap by {} bytes for a {cluster_size}-byte cluster",
        heap.peak_growth()
    );
    assert!(output[cluster_size..].iter().all(|&b| b == CANARY));
    output.truncate(cluster_size);
    result.ok().map(|()| output)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let codec = if data[0] & 1 == 0 {
        CompressionType::Deflate
    } else {
        CompressionType::Zstd
    };
    let cluster_size = 1usize << (9 + data[1] % 13);
    let payload = &data[4..];
    let split = usize::from(u16::from_be_bytes([data[2], data[3]])) % (payload.len() + 1);
    let (first, second) = payload.split_at(split);

    let mut reused = Decompressor::new();
    let result = decode(&mut reused, codec, first, cluster_size);
    check_deflate(codec, first, cluster_size, &result);
    let after_reuse = decode(&mut reused, codec, second, cluster_size);
    let fresh = decode(&mut Decompressor::new(), codec, second, cluster_size);
    assert!(
        after_reuse == fresh,
        "a decompressor's state leaks between clusters"
    );
    check_deflate(codec, second, cluster_size, &fresh);
    // And the whole payload, with the decompressor's state from before.
    let result = decode(&mut reused, codec, payload, cluster_size);
    check_deflate(codec, payload, cluster_size, &result);
});
