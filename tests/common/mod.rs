//! Shared helpers of the integration tests: images made by QEMU's own tools
//! and QEMU's reading of them as the reference come from `qcow2-testkit`
//! (shared with the CLI's and qcow2-disk's tests); reading through the
//! crate is here.

#![allow(dead_code)]

use std::path::Path;

use qcow2_reader::chain::{open_chain, ChainOptions};
use qcow2_reader::BlockRead;

pub use qcow2_testkit::*;

/// Reads the whole virtual disk through the crate, in reads of `chunk` bytes.
pub fn crate_read(
    image: &dyn BlockRead<Error = qcow2_reader::Error<std::io::Error>>,
    chunk: usize,
) -> Vec<u8> {
    let size = image.size().unwrap() as usize;
    let mut out = vec![0u8; size];
    for start in (0..size).step_by(chunk) {
        let end = (start + chunk).min(size);
        image
            .read_at(start as u64, &mut out[start..end])
            .unwrap_or_else(|e| panic!("read at {start:#x}: {e}"));
    }
    out
}

/// Opens `image` with its chain and checks that every byte equals QEMU's,
/// read whole, in odd-sized chunks, and at scattered unaligned offsets.
pub fn assert_reads_like_qemu(scratch: &Scratch, image: &Path) {
    let expected = qemu_raw(scratch, image, &[]);
    let chain = open_chain(image, &ChainOptions::default()).unwrap_or_else(|e| panic!("open: {e}"));
    assert_same(&expected, &crate_read(&*chain.top, 1 << 20), "1 MiB reads");
    assert_same(
        &expected,
        &crate_read(&*chain.top, 4096 + 512 + 7),
        "odd-sized reads",
    );
    assert_scattered_reads(&expected, &*chain.top);
}

/// Reads at pseudo-random offsets and lengths, crossing clusters.
pub fn assert_scattered_reads(
    expected: &[u8],
    image: &dyn BlockRead<Error = qcow2_reader::Error<std::io::Error>>,
) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let offset = (next() % expected.len() as u64) as usize;
        let len = (next() % 300_000) as usize % (expected.len() - offset) + 1;
        let mut buf = vec![0u8; len];
        image.read_at(offset as u64, &mut buf).unwrap();
        assert_same(&expected[offset..offset + len], &buf, "scattered read");
    }
}
