//! `qcow2_reader::check` against `qemu-img check`: the exit code, every
//! counter of `--output=json`, and the findings as QEMU's lines.
//!
//! Images made by `qemu-img` check clean or with QEMU's counts; hand-made
//! ones (see `hostile/builder.rs`) each break one rule that QEMU's image
//! fuzzer (`tests/image-fuzzer`) found `qcow check` disagreeing on, and are
//! named after it.

// Shared with tests/hostile.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "hostile/builder.rs"]
mod builder;

use std::fs::File;
use std::path::Path;

use builder::{field, Qcow2, COPIED};
use qcow2_reader::check::{check, CheckError, CheckLimits, Finding, Report, Stopped};
use qcow2_reader::{Error, HeaderError};
use qcow2_testkit::{output_in, qemu_io, Scratch};
use serde_json::{json, Map, Value};

/// What `qemu-img check --output=json` printed and its exit code.
struct Qemu {
    code: i32,
    json: Option<Value>,
    stderr: String,
}

fn qemu_check(image: &Path) -> Qemu {
    let dir = image.parent().unwrap();
    let name = image.file_name().unwrap().to_str().unwrap();
    let out = output_in(
        Some(dir),
        "qemu-img",
        &["check", "--output=json", "-f", "qcow2", name],
    );
    let json = serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .map(|mut value| {
            value.as_object_mut().unwrap().remove("filename");
            value
        });
    Qemu {
        code: out.status.code().unwrap(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The report's counters as `qemu-img check --output=json` prints them.
fn counters(report: &Report) -> Value {
    let mut object = Map::new();
    for (key, value) in [
        ("image-end-offset", report.image_end_offset),
        ("total-clusters", report.total_clusters),
        ("allocated-clusters", report.allocated_clusters),
        ("fragmented-clusters", report.fragmented_clusters),
        ("compressed-clusters", report.compressed_clusters),
        ("corruptions", report.corruptions),
        ("leaks", report.leaks),
    ] {
        if value != 0 {
            object.insert(key.into(), json!(value));
        }
    }
    object.insert("check-errors".into(), json!(report.check_errors));
    object.insert("format".into(), json!("qcow2"));
    Value::Object(object)
}

/// Checks `image` with the crate and with QEMU: the same exit code, the
/// same counters (when QEMU prints them), and every finding one of QEMU's
/// lines. Returns the report.
fn assert_like_qemu(image: &Path) -> Report {
    let report = check(&File::open(image).unwrap(), &CheckLimits::default())
        .unwrap_or_else(|error| panic!("{image:?}: {error}"));
    let qemu = qemu_check(image);
    assert_eq!(
        i32::from(report.exit_code()),
        qemu.code,
        "exit code of {image:?}; QEMU said:\n{}",
        qemu.stderr
    );
    match &qemu.json {
        Some(json) => {
            assert!(report.has_summary());
            assert_eq!(&counters(&report), json, "counters of {image:?}");
        }
        None => assert!(!report.has_summary(), "QEMU printed no summary"),
    }
    let lines: Vec<&str> = qemu.stderr.lines().collect();
    for finding in &report.findings {
        let line = finding.to_string();
        assert!(
            lines.iter().any(|qemu| qemu.ends_with(&line)),
            "{image:?}: QEMU does not say {line:?}:\n{}",
            qemu.stderr
        );
    }
    report
}

/// `bytes` as a file in `scratch`.
fn file(scratch: &Scratch, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = scratch.path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `image` with refcount 1 stored for each of its clusters, in a refcount
/// block appended at the end (the builder leaves the table empty).
fn with_refcounts(mut image: Qcow2) -> Qcow2 {
    let block = image.append_cluster();
    let clusters = block / image.cluster_size() + 1;
    for cluster in 0..clusters {
        let at = block as usize + 2 * cluster as usize;
        image.bytes[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    let table = image.cluster_size() as usize;
    image.put_u64(table, block);
    image
}

/// A v3 image of 512-byte clusters with one data cluster, refcounts right.
fn clean() -> Qcow2 {
    let mut image = Qcow2::new(3, 9, 64 << 10);
    image.write_cluster(0, &[0x5a; 512]);
    with_refcounts(image)
}

#[test]
fn images_made_by_qemu_check_like_qemu() {
    let scratch = Scratch::new();
    let busy = scratch.create("busy.qcow2", "8M", "");
    qemu_io(
        &busy,
        &[
            "write -P 1 0 1M",
            "write -c -P 2 2M 128k",
            "write -z 4M 64k",
        ],
    );
    output_in(
        None,
        "qemu-img",
        &["snapshot", "-c", "s1", busy.to_str().unwrap()],
    );
    qemu_io(&busy, &["write -P 3 512k 64k", "discard 6M 1M"]);
    let report = assert_like_qemu(&busy);
    assert_eq!(report.exit_code(), 0);
    assert!(report.findings.is_empty());
    assert!(report
        .to_string()
        .starts_with("No errors were found on the image.\n"));

    let narrow = scratch.create("narrow.qcow2", "1M", "refcount_bits=1,cluster_size=4k");
    qemu_io(&narrow, &["write -P 1 0 64k"]);
    assert_eq!(assert_like_qemu(&narrow).exit_code(), 0);
}

#[test]
fn the_hand_made_image_is_clean_for_qemu() {
    let scratch = Scratch::new();
    let report = assert_like_qemu(&file(&scratch, "clean.qcow2", &clean().finish()));
    assert_eq!(report.exit_code(), 0, "{:?}", report.findings);
}

#[test]
fn a_refcount_block_at_or_above_2_63_cannot_be_read() {
    // QEMU masks the entry with bit 63 kept: the block is outside the image
    // (a corruption), and every refcount it holds cannot be read (EIO, a
    // check error each), so the check fails with exit code 1.
    let scratch = Scratch::new();
    let mut image = clean();
    let table = image.cluster_size() as usize;
    image.put_u64(table, 1 << 63 | 0x200);
    let report = assert_like_qemu(&file(&scratch, "high.qcow2", &image.finish()));
    assert_eq!(report.exit_code(), 1);
    assert!(report
        .findings
        .contains(&Finding::RefcountBlockOutside { index: 0 }));
    assert!(report
        .findings
        .contains(&Finding::RefcountUnreadable { cluster: 0 }));
    assert_eq!(report.failure_line().as_deref(), Some("Check failed"));
}

#[test]
fn an_l1_entry_with_flags_and_offset_0_walks_the_header_as_an_l2_table() {
    // QEMU skips only an all-zero L1 entry: COPIED alone makes it count
    // cluster 0 once more and read the header's words as L2 entries.
    let scratch = Scratch::new();
    let mut image = clean();
    image.set_l1(1, COPIED);
    // The L1 table must have room for the entry.
    image.put_u32(field::L1_SIZE, 2);
    let report = assert_like_qemu(&file(&scratch, "flags.qcow2", &image.finish()));
    assert!(report.findings.contains(&Finding::RefcountTooLow {
        cluster: 0,
        stored: 1,
        references: 2
    }));
}

#[test]
fn an_empty_refcount_table_is_checked_not_refused() {
    // QEMU refuses the image at open, but opens it in check mode: every
    // cluster in use has refcount 0.
    let scratch = Scratch::new();
    let mut image = clean();
    image.put_u32(field::REFCOUNT_TABLE_CLUSTERS, 0);
    let bytes = image.finish();
    assert!(matches!(
        qcow2_reader::Image::builder(bytes.as_slice()),
        Err(Error::Header(HeaderError::RefcountTableEmpty))
    ));
    let report = assert_like_qemu(&file(&scratch, "empty.qcow2", &bytes));
    assert_eq!(report.exit_code(), 2);
    assert!(report.findings.contains(&Finding::RefcountTooLow {
        cluster: 0,
        stored: 0,
        references: 1
    }));
}

#[test]
fn v3_snapshot_entries_past_the_end_of_the_file_are_incomplete() {
    // The table reads as zeros past the end: two entries with no extra
    // data, each "incomplete" in a v3 image.
    let scratch = Scratch::new();
    let mut image = clean();
    let end = image.bytes.len() as u64;
    image.put_u32(field::NB_SNAPSHOTS, 2);
    image.put_u64(field::SNAPSHOTS_OFFSET, end);
    let report = assert_like_qemu(&file(&scratch, "past.qcow2", &image.finish()));
    assert!(report
        .findings
        .contains(&Finding::SnapshotIncomplete { index: 0 }));
    assert!(report
        .findings
        .contains(&Finding::SnapshotIncomplete { index: 1 }));
}

#[test]
fn too_many_snapshots_stop_the_check() {
    let scratch = Scratch::new();
    let mut image = clean();
    image.put_u32(field::NB_SNAPSHOTS, 65537);
    let report = assert_like_qemu(&file(&scratch, "many.qcow2", &image.finish()));
    assert_eq!(report.stopped, Some(Stopped::TooBig));
    assert_eq!(
        report.failure_line().as_deref(),
        Some("Check failed: File too large")
    );
}

#[test]
fn data_file_bits_without_a_name_fail_the_check() {
    // `qemu-img check` opens the image for I/O, which QEMU refuses.
    for (at, bit, expected) in [
        (
            field::INCOMPATIBLE_FEATURES,
            1u64 << 2,
            HeaderError::MissingDataFileName,
        ),
        (88, 1 << 1, HeaderError::DataFileRawWithoutDataFile),
    ] {
        let scratch = Scratch::new();
        let mut image = clean();
        image.put_u64(at, bit);
        let path = file(&scratch, "bits.qcow2", &image.finish());
        match check(&File::open(&path).unwrap(), &CheckLimits::default()) {
            Err(CheckError::Open(Error::Header(error))) => assert_eq!(error, expected),
            other => panic!("{expected:?}: {other:?}"),
        }
        assert_eq!(qemu_check(&path).code, 1);
    }
}

#[test]
fn a_file_above_the_cluster_limit_is_refused_before_counting() {
    let bytes = clean().finish();
    let clusters = (bytes.len() as u64).div_ceil(512);
    let limits = CheckLimits {
        max_clusters: clusters - 1,
        ..CheckLimits::default()
    };
    match check(bytes.as_slice(), &limits) {
        Err(CheckError::TooManyClusters {
            clusters: found,
            max,
        }) => {
            assert_eq!((found, max), (clusters, clusters - 1));
        }
        other => panic!("expected TooManyClusters, got {other:?}"),
    }
    let limits = CheckLimits {
        max_clusters: clusters,
        ..CheckLimits::default()
    };
    assert_eq!(check(bytes.as_slice(), &limits).unwrap().exit_code(), 0);
}

#[test]
fn findings_past_the_limit_are_counted_not_kept() {
    let mut image = clean();
    image.put_u32(field::REFCOUNT_TABLE_CLUSTERS, 0);
    let bytes = image.finish();
    let all = check(bytes.as_slice(), &CheckLimits::default()).unwrap();
    assert!(all.findings.len() > 2);
    let limits = CheckLimits {
        max_findings: 2,
        ..CheckLimits::default()
    };
    let capped = check(bytes.as_slice(), &limits).unwrap();
    assert_eq!(capped.findings, all.findings[..2]);
    assert_eq!(capped.findings_dropped, all.findings.len() as u64 - 2);
    assert_eq!(capped.corruptions, all.corruptions);
}

#[test]
fn the_l2_tables_walked_are_bounded() {
    // Three snapshots sharing the active L1 table: four walks of its one
    // L2 table, as in QEMU.
    let mut image = clean();
    let l1 = image.l1_offset;
    let mut table = Vec::new();
    for id in [b"1", b"2", b"3"] {
        let entry = builder::snapshot_entry(l1, 1, 16, id, b"s");
        table.extend_from_slice(&entry);
        table.resize(table.len().next_multiple_of(8), 0);
    }
    image.set_snapshots(3, &table);
    let bytes = image.finish();
    let limits = |max_l2_tables| CheckLimits {
        max_l2_tables,
        ..CheckLimits::default()
    };
    match check(bytes.as_slice(), &limits(3)) {
        Err(CheckError::TooManyL2Tables { max: 3 }) => {}
        other => panic!("expected TooManyL2Tables, got {other:?}"),
    }
    let report = check(bytes.as_slice(), &limits(4)).unwrap();
    // QEMU agrees on the rest: the shared tables' refcounts are too low.
    let scratch = Scratch::new();
    let qemu = assert_like_qemu(&file(&scratch, "shared.qcow2", &bytes));
    assert_eq!(report, qemu);
}

#[test]
fn the_file_length_counts_whole_512_byte_sectors() {
    // QEMU's file length is rounded up to 512 bytes: a structure ending
    // 4096 + 64 bytes past a file that ends 64 bytes into a sector is less
    // than a 4 KiB cluster past QEMU's end, so it is counted, not an error.
    let scratch = Scratch::new();
    let mut image = Qcow2::new(3, 12, 64 << 10);
    image.write_cluster(0, &[0x5a; 4096]);
    let mut image = with_refcounts(image);
    let table = image.append_cluster();
    let entry = builder::snapshot_entry(0, 0, 16, b"1", &[]);
    // The name's length only; its bytes lie past the end (zeros).
    let mut fixed = entry[..57].to_vec();
    fixed[14..16].copy_from_slice(&4300u16.to_be_bytes());
    image.bytes.truncate(table as usize);
    image.bytes.extend_from_slice(&fixed);
    image.bytes.resize(table as usize + 64, 0);
    image.put_u32(field::NB_SNAPSHOTS, 1);
    image.put_u64(field::SNAPSHOTS_OFFSET, table);
    let report = assert_like_qemu(&file(&scratch, "sector.qcow2", &image.finish()));
    assert!(!report
        .findings
        .iter()
        .any(|finding| matches!(finding, Finding::PastEndOfFile { .. })));
}
