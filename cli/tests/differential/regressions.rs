//! Mutants that differential runs found, kept as tests: a kind, the change
//! that made the mutant, and the outcome now expected.

use crate::{compare_one, explain, images, scratch, Outcome};

/// Reads kind `name` changed by `patch` with both tools.
fn outcome_of(
    name: &'static str,
    patch: impl FnOnce(&mut [u8]),
    snapshot: Option<&str>,
) -> Outcome {
    let work = scratch();
    let kind = images::make(&work.path().join("pristine"), name);
    let dir = work.path().join("run");
    let image = kind.install(&dir);
    let mut bytes = kind.target_bytes().to_vec();
    patch(&mut bytes);
    std::fs::write(kind.target_path(&dir), bytes).unwrap();
    compare_one(&dir, &image, snapshot)
}

fn be64(bytes: &[u8], at: usize) -> usize {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap()) as usize
}

/// Seed 1, mutant 78: the backing format extension zeroed. QEMU keeps the
/// format as a C string, and an empty one means "probe the backing file".
#[test]
fn an_empty_backing_format_is_probed() {
    let outcome = outcome_of(
        "chain-top",
        |bytes| {
            let magic = 0xe279_2acau32.to_be_bytes();
            let at = bytes.windows(4).position(|w| w == magic).unwrap();
            bytes[at + 8..at + 13].fill(0);
        },
        None,
    );
    assert!(matches!(outcome, Outcome::BothRead), "{outcome:?}");
}

/// Seed 1, mutant 436: a snapshot's name size one byte longer, taking in
/// the NUL padding after it. QEMU keeps the name as a C string.
#[test]
fn snapshot_names_end_at_nul() {
    let outcome = outcome_of(
        "snapshots",
        |bytes| {
            let entry = be64(bytes, 64);
            let name_size = entry + 14;
            assert_eq!(bytes[name_size..name_size + 2], [0, 5], "name \"first\"");
            bytes[name_size + 1] = 6;
        },
        Some("first"),
    );
    assert!(matches!(outcome, Outcome::BothRead), "{outcome:?}");
}

/// Seed 1, mutant 45: a run of a zstd stream zeroed. libzstd decodes it (to
/// whatever the damaged stream describes); ruzstd refuses, and the error must
/// say which compressed cluster is corrupt.
#[test]
fn a_corrupt_zstd_stream_is_named() {
    let outcome = outcome_of(
        "zstd",
        |bytes| {
            let layout = crate::mutate::Layout::of(bytes);
            let stream = layout
                .regions
                .iter()
                .find(|r| r.structure == crate::mutate::Structure::Compressed)
                .unwrap();
            let at = stream.start + 0x66f5;
            assert!(at + 0x15 <= stream.end, "the stream of seed 1's mutant 45");
            bytes[at..at + 0x15].fill(0);
        },
        None,
    );
    match &outcome {
        Outcome::OnlyQemuReads(message) => {
            assert!(explain(&outcome).is_some(), "{message}");
            assert!(message.contains("host offset 0x50000"), "{message}");
            assert!(message.contains("guest offset 0x0"), "{message}");
        }
        // A decoder that decodes as libzstd does would agree.
        Outcome::BothRead => {}
        other => panic!("{other:?}"),
    }
}
