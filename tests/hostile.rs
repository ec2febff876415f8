//! Hostile images: QEMU's own input-validation cases, decompression bombs,
//! backing-chain loops, and the documented resource bounds.
//!
//! Every image is made here, byte by byte (see `hostile/builder.rs`), and
//! broken in one place. Each test asserts the named error, or, where QEMU
//! reads the image, QEMU's bytes; when `qemu-img` is installed the test also
//! runs it on the same bytes and checks that QEMU agrees (refuses at open,
//! fails that read, or returns those bytes).

#[path = "hostile/builder.rs"]
mod builder;

use std::cell::Cell;

use builder::{field, qemu, Qcow2, ZstdBlock, COPIED, ZERO};
use qcow2_reader::{
    BlockRead, CompressionType, Config, CorruptError, DecodeError, Error, HeaderError, Image,
    OutOfBounds, Snapshots, TableKind,
};

/// The largest 512-aligned offset: aligned, and overflowing any table.
const TOP_SECTOR: u64 = u64::MAX - 511;

type Result<T> = std::result::Result<T, Error<OutOfBounds>>;

fn read(bytes: &[u8], offset: u64, len: usize) -> Result<Vec<u8>> {
    let image = Image::builder(bytes)?.open_alloc(&Config::default())?;
    let mut buf = vec![0u8; len];
    image.read_at(offset, &mut buf)?;
    Ok(buf)
}

fn read_all(bytes: &[u8]) -> Result<Vec<u8>> {
    let size = Image::builder(bytes)?.header().virtual_size();
    read(bytes, 0, size as usize)
}

/// The crate's bytes for the whole disk equal `qemu-img convert`'s.
fn assert_reads_like_qemu(bytes: &[u8], ours: &[u8]) {
    match qemu::convert(bytes, &[]) {
        None => eprintln!("qemu-img not found: QEMU check skipped"),
        Some(Ok(theirs)) => assert!(theirs == ours, "QEMU reads different bytes"),
        Some(Err(message)) => panic!("qemu-img convert fails: {message}"),
    }
}

/// QEMU fails the read of `len` bytes at `offset` with an I/O error.
fn assert_qemu_read_fails(bytes: &[u8], offset: u64, len: u64) {
    match qemu::read(bytes, offset, len) {
        None => eprintln!("qemu-io not found: QEMU check skipped"),
        Some(Ok(_)) => panic!("qemu-io reads {len} bytes at {offset:#x}"),
        Some(Err(message)) => assert!(message.contains("Input/output error"), "{message}"),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// 512-byte clusters, 64 KiB disk: small, and still every structure QEMU has.
fn small() -> Qcow2 {
    Qcow2::new(3, 9, 64 << 10)
}

// ---- images refused at open: one table ----------------------------------

/// Whether an open-time error is the expected one.
type Expect = Box<dyn Fn(&HeaderError) -> bool>;

/// One way to break an image that QEMU refuses at open.
struct Refusal {
    /// The rule the image breaks.
    rule: String,
    /// The image breaking it.
    bytes: Vec<u8>,
    /// Whether the crate's error is the right one.
    expected: Expect,
    /// Words of QEMU's refusal (`qemu-img info`); `None` where QEMU opens
    /// the image for `info` and the crate, which exists to read it, refuses.
    qemu: Option<&'static str>,
}

/// A row: `small()` changed by `mutate`, the crate's exact error, QEMU's words.
fn row(
    rule: impl Into<String>,
    mutate: impl FnOnce(&mut Qcow2),
    error: HeaderError,
    qemu: impl Into<Option<&'static str>>,
) -> Refusal {
    let mut image = small();
    mutate(&mut image);
    like(rule, image.finish(), move |found| *found == error, qemu)
}

/// A row with its own bytes and a pattern for the error.
fn like(
    rule: impl Into<String>,
    bytes: Vec<u8>,
    expected: impl Fn(&HeaderError) -> bool + 'static,
    qemu: impl Into<Option<&'static str>>,
) -> Refusal {
    Refusal {
        rule: rule.into(),
        bytes,
        expected: Box::new(expected),
        qemu: qemu.into(),
    }
}

fn set_u32(at: usize, value: u32) -> impl FnOnce(&mut Qcow2) {
    move |image| image.put_u32(at, value)
}

fn set_u64(at: usize, value: u64) -> impl FnOnce(&mut Qcow2) {
    move |image| image.put_u64(at, value)
}

/// `small()` with a table offset moved, for the table-offset rows.
fn table_at(at: usize, offset: u64, count: Option<u32>) -> Vec<u8> {
    let mut image = small();
    if let Some(count) = count {
        image.put_u32(field::NB_SNAPSHOTS, count);
    }
    image.put_u64(at, offset);
    image.finish()
}

fn invalid_offset(table: TableKind, offset: u64) -> impl Fn(&HeaderError) -> bool {
    move |error| {
        matches!(error, HeaderError::InvalidTableOffset { table: found_table, offset: found, .. }
            if *found_table == table && *found == offset)
    }
}

/// A feature name table naming incompatible bit 9 "future-magic".
fn future_feature(image: &mut Qcow2) {
    image.put_u64(field::INCOMPATIBLE_FEATURES, 1 << 9);
    let mut row = [0u8; 48];
    row[1] = 9;
    row[2..2 + 12].copy_from_slice(b"future-magic");
    image.put_extension(112, 0x6803_f857, 48, &row);
}

/// Every rule QEMU applies at open, broken once each.
fn refusals() -> Vec<Refusal> {
    let mut rows = vec![
        row(
            "magic",
            set_u32(0, 0x5146_49fc),
            HeaderError::BadMagic { found: 0x5146_49fc },
            "Image is not in qcow2 format",
        ),
        row(
            "version 2 or 3",
            set_u32(field::VERSION, 4),
            HeaderError::UnsupportedVersion { version: 4 },
            "Unsupported qcow2 version 4",
        ),
        row(
            "header length within the cluster",
            set_u32(field::HEADER_LENGTH, u32::MAX),
            HeaderError::HeaderLengthTooLarge {
                header_length: u32::MAX,
                cluster_size: 512,
            },
            "qcow2 header exceeds cluster size",
        ),
        row(
            "header length at least 104",
            set_u32(field::HEADER_LENGTH, 100),
            HeaderError::HeaderLengthTooSmall { header_length: 100 },
            "qcow2 header too short",
        ),
        row(
            "compression type 0 or 1",
            |image| image.bytes[field::COMPRESSION_TYPE] = 2,
            HeaderError::UnknownCompressionType {
                compression_type: 2,
            },
            "unknown compression type: 2",
        ),
        row(
            "compression type with its feature bit",
            |image| image.bytes[field::COMPRESSION_TYPE] = 1,
            HeaderError::CompressionTypeBitMismatch {
                compression_type: 1,
            },
            "Compression type incompatible feature bit must be set",
        ),
        row(
            "known incompatible features",
            set_u64(field::INCOMPATIBLE_FEATURES, 1 << 5),
            HeaderError::UnknownIncompatibleFeatures {
                bits: 1 << 5,
                name: None,
            },
            "Unknown incompatible feature: 20",
        ),
        like(
            "unknown incompatible feature named from the table",
            {
                let mut image = small();
                future_feature(&mut image);
                image.finish()
            },
            |error| {
                matches!(error, HeaderError::UnknownIncompatibleFeatures { bits: 512, name: Some(name) }
                    if name.as_str() == "future-magic")
                    && error.to_string().contains("future-magic")
            },
            "future-magic",
        ),
        like(
            "subclusters of at least 512 bytes",
            {
                let mut image = Qcow2::with_features(3, 13, 64 << 10, 1 << 4);
                image.put_u32(field::CLUSTER_BITS, 13);
                image.finish()
            },
            |error| *error == HeaderError::SubclusterTooSmall { cluster_bits: 13 },
            "Unsupported subcluster size: 256",
        ),
        row(
            "refcount order at most 6",
            set_u32(96, 7),
            HeaderError::RefcountOrder { refcount_order: 7 },
            "Reference count entry width too large",
        ),
        row(
            "a refcount table",
            set_u32(field::REFCOUNT_TABLE_CLUSTERS, 0),
            HeaderError::RefcountTableEmpty,
            "Image does not contain a reference count table",
        ),
        row(
            "refcount table at most 8 MiB",
            set_u32(field::REFCOUNT_TABLE_CLUSTERS, u32::MAX),
            HeaderError::RefcountTableTooLarge { clusters: u32::MAX },
            "Reference count table too large",
        ),
        row(
            "refcount table at most 8 MiB, one cluster over",
            set_u32(field::REFCOUNT_TABLE_CLUSTERS, 16385),
            HeaderError::RefcountTableTooLarge { clusters: 16385 },
            "Reference count table too large",
        ),
        row(
            "at most 65536 snapshots",
            set_u32(field::NB_SNAPSHOTS, 65537),
            HeaderError::TooManySnapshots { count: 65537 },
            "Snapshot table too large",
        ),
        row(
            "active L1 table at most 32 MiB",
            set_u32(field::L1_SIZE, 0x0400_0001),
            HeaderError::L1TooLarge {
                entries: 0x0400_0001,
            },
            "Active L1 table too large",
        ),
        // One L2 table maps 32 KiB with 512-byte clusters: 64 KiB needs two entries.
        row(
            "L1 table covering the disk",
            set_u32(field::L1_SIZE, 1),
            HeaderError::L1TooSmall {
                entries: 1,
                needed: 2,
            },
            "L1 table is too small",
        ),
        row(
            "disk size within QEMU's limit",
            set_u64(field::SIZE, 1 << 62),
            HeaderError::ImageTooBig { size: 1 << 62 },
            "Image is too big",
        ),
        // Encrypted images (feature `luks`): legacy AES has no header to
        // check, so it passes the builder and waits for a key (tests/luks.rs);
        // LUKS needs its header extension, checked as QEMU does.
        row(
            "LUKS with its header extension",
            set_u32(32, 2),
            HeaderError::MissingCryptoHeader,
            // qemu-img info fails here without a message (it wants a secret).
            None,
        ),
        row(
            "the LUKS header extension only with LUKS",
            |image| {
                image.put_extension(112, 0x0537_be77, 16, &[0; 16]);
            },
            HeaderError::CryptoExtensionWithoutLuks { method: 0 },
            "CRYPTO header extension only expected with LUKS encryption method",
        ),
        row(
            "the LUKS header extension of 16 bytes",
            |image| {
                image.put_u32(32, 2);
                image.put_extension(112, 0x0537_be77, 8, &[0; 8]);
            },
            HeaderError::CryptoExtensionSize { len: 8 },
            "CRYPTO header extension size 8, but expected size 16",
        ),
        row(
            "the LUKS header cluster aligned",
            |image| {
                image.put_u32(32, 2);
                let mut data = [0u8; 16];
                data[..8].copy_from_slice(&1000u64.to_be_bytes());
                data[8..].copy_from_slice(&4096u64.to_be_bytes());
                image.put_extension(112, 0x0537_be77, 16, &data);
            },
            HeaderError::CryptoHeaderUnaligned {
                offset: 1000,
                cluster_size: 512,
            },
            "is not a multiple of cluster size",
        ),
        row(
            "a known encryption method",
            set_u32(32, 3),
            HeaderError::UnknownEncryptionMethod { method: 3 },
            "Unsupported encryption method 3",
        ),
        row(
            "extension within the space left",
            |image| {
                image.put_extension(112, 0x1234_5678, 0xffff_fff0, &[]);
            },
            HeaderError::ExtensionTooLarge {
                kind: 0x1234_5678,
                offset: 120,
                len: 0xffff_fff0,
            },
            "Header extension too large",
        ),
        // QEMU checks the length before it looks at the type, so even END fails.
        row(
            "end extension within the space left",
            |image| {
                image.put_extension(112, 0, 0x8000_0000, &[]);
            },
            HeaderError::ExtensionTooLarge {
                kind: 0,
                offset: 120,
                len: 0x8000_0000,
            },
            "Header extension too large",
        ),
        // 512 - 120 bytes are left after the extension header at 112.
        row(
            "extension one byte past the cluster",
            |image| {
                image.put_extension(112, 0x1234_5678, 393, &[]);
            },
            HeaderError::ExtensionTooLarge {
                kind: 0x1234_5678,
                offset: 120,
                len: 393,
            },
            "Header extension too large",
        ),
        row(
            "backing format name within 15 bytes",
            |image| {
                image.put_extension(112, 0xe279_2aca, 22, b"a-format-name-too-long");
            },
            HeaderError::BackingFormatTooLong { len: 22 },
            "ext_backing_format: len=22 too large",
        ),
        like(
            "backing file name at most 1023 bytes",
            {
                let mut image = Qcow2::new(3, 16, 64 << 10);
                image.put_u64(field::BACKING_FILE_OFFSET, 512);
                image.put_u32(field::BACKING_FILE_SIZE, 1024);
                image.put_bytes(512, &[b'a'; 1024]);
                image.finish()
            },
            |error| *error == HeaderError::BackingFileNameTooLong { len: 1024 },
            "Backing file name too long",
        ),
        row(
            "backing file name within the first cluster",
            |image| {
                image.put_u64(field::BACKING_FILE_OFFSET, 400);
                image.put_u32(field::BACKING_FILE_SIZE, 113);
            },
            HeaderError::BackingFileNameTooLong { len: 113 },
            "Backing file name too long",
        ),
        row(
            "backing file offset within the first cluster",
            |image| {
                image.put_u64(field::BACKING_FILE_OFFSET, 513);
                image.put_u32(field::BACKING_FILE_SIZE, 1);
            },
            HeaderError::BackingFileOffsetTooLarge {
                offset: 513,
                cluster_size: 512,
            },
            "Invalid backing file offset",
        ),
        like(
            "snapshot extra data at most 1 KiB",
            {
                let mut image = small();
                let entry = builder::snapshot_entry(image.l1_offset, 1, 1025, b"1", b"big");
                image.set_snapshots(1, &entry);
                image.finish()
            },
            |error| {
                *error
                    == HeaderError::SnapshotExtraDataTooLarge {
                        index: 0,
                        size: 1025,
                    }
            },
            "Too much extra metadata in snapshot table entry",
        ),
        // 512 entries with 64 KiB ids and names: the table passes 64 MiB at entry 511.
        like(
            "snapshot table at most 64 MiB",
            {
                let mut image = small();
                let (id, name) = (vec![b'i'; 65535], vec![b'n'; 65535]);
                let entry = builder::snapshot_entry(image.l1_offset, 1, 16, &id, &name);
                image.set_snapshots(512, &entry.repeat(512));
                image.finish()
            },
            |error| *error == HeaderError::SnapshotTableTooLarge { index: 511 },
            "Snapshot table is too big",
        ),
    ];
    for cluster_bits in [0u32, 8, 22, 63, 64, 255] {
        rows.push(row(
            format!("cluster bits {cluster_bits} outside 9..=21"),
            set_u32(field::CLUSTER_BITS, cluster_bits),
            HeaderError::ClusterBits { cluster_bits },
            "Unsupported cluster size",
        ));
    }
    for offset in [512 + 8, TOP_SECTOR, i64::MAX as u64 + 1] {
        rows.push(like(
            format!("refcount table offset {offset:#x} aligned and below 2^63"),
            table_at(field::REFCOUNT_TABLE_OFFSET, offset, None),
            invalid_offset(TableKind::Refcount, offset),
            "Reference count table offset invalid",
        ));
    }
    // QEMU checks the offset even when there are no snapshots.
    for (count, offset) in [(0, 1000), (1, 1000), (1, TOP_SECTOR)] {
        rows.push(like(
            format!("snapshot table offset {offset:#x} aligned ({count} snapshots)"),
            table_at(field::SNAPSHOTS_OFFSET, offset, Some(count)),
            invalid_offset(TableKind::Snapshot, offset),
            "Snapshot table offset invalid",
        ));
    }
    for offset in [1024 + 8, TOP_SECTOR] {
        rows.push(like(
            format!("active L1 table offset {offset:#x} aligned and below 2^63"),
            table_at(field::L1_TABLE_OFFSET, offset, None),
            invalid_offset(TableKind::L1, offset),
            "Active L1 table offset invalid",
        ));
    }
    rows
}

#[test]
fn images_breaking_an_open_rule_are_refused_like_qemu() {
    let mut failures = Vec::new();
    for Refusal {
        rule,
        bytes,
        expected,
        qemu,
    } in refusals()
    {
        match Image::builder(bytes.as_slice()) {
            Err(Error::Header(error)) if expected(&error) => {}
            Err(other) => failures.push(format!("{rule}: wrong error {other:?}")),
            Ok(_) => failures.push(format!("{rule}: the image opened")),
        }
        let Some(words) = qemu else { continue };
        match qemu::info(&bytes) {
            None => eprintln!("qemu-img not found: QEMU check skipped ({rule})"),
            Some(Ok(())) => failures.push(format!("{rule}: qemu-img opens it")),
            Some(Err(message)) if message.contains(words) => {}
            Some(Err(message)) => {
                failures.push(format!("{rule}: qemu-img says {message:?}, not {words:?}"))
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The images one step inside each limit open: the rows above test the rule,
/// not something else about the image.
#[test]
fn images_at_the_limits_open() {
    let mut image = small();
    image.put_u32(field::REFCOUNT_TABLE_CLUSTERS, 16384);
    assert!(read_all(&image.finish()).is_ok(), "8 MiB refcount table");
    let mut image = small();
    image.put_extension(112, 0x1234_5678, 392, &[]);
    assert!(
        read_all(&image.finish()).is_ok(),
        "extension up to the cluster end"
    );
}

/// The same rules for a snapshot's L1 table, checked when it is opened.
#[test]
fn snapshot_l1_tables_breaking_a_rule_are_refused_like_qemu() {
    let cases: [(u64, u32, Expect, &str); 3] = [
        (
            0x1234,
            1,
            Box::new(|error| {
                *error
                    == HeaderError::InvalidTableOffset {
                        table: TableKind::L1,
                        offset: 0x1234,
                        len: 8,
                    }
            }),
            "Snapshot L1 table offset invalid",
        ),
        (
            TOP_SECTOR,
            1,
            Box::new(invalid_offset(TableKind::L1, TOP_SECTOR)),
            "Snapshot L1 table offset invalid",
        ),
        (
            1024,
            0x0400_0001,
            Box::new(|error| {
                *error
                    == HeaderError::L1TooLarge {
                        entries: 0x0400_0001,
                    }
            }),
            "Snapshot L1 table too large",
        ),
    ];
    for (l1_offset, l1_size, expected, words) in cases {
        let bytes = image_with_snapshot(l1_offset, l1_size);
        let (error, qemu) = open_snapshot(&bytes);
        assert!(expected(&error), "L1 at {l1_offset:#x}: {error:?}");
        if let Some(message) = qemu {
            assert!(message.contains(words), "{message}");
        }
    }
}

/// The data file bits without a data file name: `qemu-img info` opens the
/// image (it does no I/O) and QEMU refuses to open it for reading, so
/// `Image::builder` takes it and `open` refuses it, naming the rule.
#[test]
fn data_file_bits_without_a_name_open_for_info_and_are_refused_for_reading() {
    let cases = [
        (
            (|image: &mut Qcow2| image.put_u64(field::INCOMPATIBLE_FEATURES, 1 << 2))
                as fn(&mut Qcow2),
            HeaderError::MissingDataFileName,
        ),
        (
            (|image: &mut Qcow2| image.put_u64(88, 1 << 1)) as fn(&mut Qcow2),
            HeaderError::DataFileRawWithoutDataFile,
        ),
    ];
    for (mutate, expected) in cases {
        let mut image = small();
        mutate(&mut image);
        let bytes = image.finish();
        let builder =
            Image::builder(bytes.as_slice()).expect("the header reads, as in qemu-img info");
        match builder.open_alloc(&Config::default()) {
            Err(Error::Header(error)) => assert_eq!(error, expected),
            other => panic!("{expected:?}: expected a refusal at open, got {other:?}"),
        }
        if let Some(result) = qemu::info(&bytes) {
            assert_eq!(result, Ok(()), "qemu-img info opens it ({expected:?})");
        }
    }
}

fn image_with_snapshot(l1_offset: u64, l1_size: u32) -> Vec<u8> {
    let mut image = small();
    image.write_cluster(0, &pattern(512, 1));
    let entry = builder::snapshot_entry(l1_offset, l1_size, 16, b"1", b"snap");
    image.set_snapshots(1, &entry);
    image.finish()
}

/// The crate's error opening snapshot "snap", and QEMU's `convert -l` message.
fn open_snapshot(bytes: &[u8]) -> (HeaderError, Option<String>) {
    let builder = Image::builder(bytes).expect("QEMU opens these images too");
    let snapshot = Snapshots::new(builder.storage(), builder.header())
        .next()
        .unwrap()
        .unwrap();
    let error = match builder.snapshot(&snapshot) {
        Err(Error::Header(error)) => error,
        other => panic!("expected a header error, got {other:?}"),
    };
    let qemu = qemu::convert(bytes, &["-l", "snapshot.name=snap"])
        .map(|result| result.expect_err("qemu-img convert -l reads the snapshot"));
    (error, qemu)
}

// ---- backing file name ------------------------------------------------------

/// QEMU reads a backing file name past the end of the file as zeros: an
/// empty C string, so the image has no backing file and reads as zeros
/// (`qemu-img info` shows no backing file; checked with QEMU 7.2), and so
/// does the crate.
#[test]
fn backing_file_name_past_the_end_of_the_file() {
    let bytes = backing_name_past_the_end();
    let ours = read_all(&bytes).unwrap();
    assert!(ours.iter().all(|&b| b == 0));
    assert_reads_like_qemu(&bytes, &ours);
    // A name cut by the end of the file keeps what is there (`qemu-img
    // info` shows backing file "ab").
    let mut image = Qcow2::new(3, 16, 64 << 10);
    image.put_u64(field::BACKING_FILE_OFFSET, 0x200);
    image.put_u32(field::BACKING_FILE_SIZE, 16);
    image.put_bytes(0x200, b"ab");
    let mut bytes = image.finish();
    bytes.truncate(0x202);
    let builder = Image::builder(bytes.as_slice()).unwrap();
    let name = builder.header().backing_file().map(|name| name.as_bytes());
    assert_eq!(name, Some(&b"ab"[..]));
}

#[test]
fn version_2_ignores_bytes_after_its_header() {
    // QEMU reads v2 extensions from byte 72 on, so these stay zero (the end
    // extension), but the v3-only fields after them are not read as header.
    let mut image = Qcow2::new(2, 16, 64 << 10);
    image.put_u32(field::HEADER_LENGTH, 3); // a too-small header length in v3
    image.bytes[field::COMPRESSION_TYPE] = 5; // an unknown compression type in v3
    let bytes = image.finish();
    let builder = Image::builder(bytes.as_slice()).unwrap();
    let header = builder.header();
    assert_eq!((header.version(), header.header_length()), (2, 72));
}

/// A 64 KiB-cluster image cut short: its 8-byte name would lie at 0x1000, past the end.
fn backing_name_past_the_end() -> Vec<u8> {
    let mut image = Qcow2::new(3, 16, 64 << 10);
    image.put_u64(field::BACKING_FILE_OFFSET, 0x1000);
    image.put_u32(field::BACKING_FILE_SIZE, 8);
    let mut bytes = image.finish();
    bytes.truncate(0x800);
    bytes
}

// ---- L2 entries -------------------------------------------------------------

#[test]
fn l2_entries_with_huge_host_offsets_read_as_zeros() {
    // QEMU reads clusters and L2 tables past the end of the file as zeros.
    let mut image = small();
    let data = pattern(512, 7);
    image.write_cluster(0, &data);
    image.set_l2(1, COPIED | 0x00ff_ffff_ffff_fe00, 0);
    image.set_l2(2, 0x0080_0000_0000_0000, 0);
    image.set_l1(1, COPIED | 0x00ff_ffff_ffff_fe00); // L2 table past the end
    let bytes = image.finish();
    let ours = read_all(&bytes).unwrap();
    assert_eq!(&ours[..512], &data[..]);
    assert!(ours[512..].iter().all(|&b| b == 0));
    assert_reads_like_qemu(&bytes, &ours);
}

#[test]
fn l1_entry_with_an_unaligned_l2_offset() {
    // With 4 KiB clusters a 512-aligned L2 offset is still unaligned.
    let mut image = Qcow2::new(3, 12, 64 << 10);
    image.set_l1(0, COPIED | 0x2200);
    let bytes = image.finish();
    assert_eq!(
        read(&bytes, 0, 4096).unwrap_err().to_string(),
        Error::<OutOfBounds>::Corrupt(CorruptError::L2OffsetUnaligned {
            l2_offset: 0x2200,
            l1_index: 0
        })
        .to_string()
    );
    assert_qemu_read_fails(&bytes, 0, 4096);
}

#[test]
fn data_offset_unaligned_for_the_cluster_size() {
    let mut image = Qcow2::new(3, 12, 64 << 10);
    image.write_cluster(0, &pattern(4096, 3));
    image.set_l2(1, COPIED | 0x3200, 0);
    let bytes = image.finish();
    assert!(matches!(
        read(&bytes, 4096, 4096),
        Err(Error::Corrupt(CorruptError::DataOffsetUnaligned {
            host_offset: 0x3200,
            l2_index: 1,
            ..
        }))
    ));
    assert_qemu_read_fails(&bytes, 4096, 4096);
    // Only reads through that entry fail, as in QEMU.
    assert_eq!(read(&bytes, 0, 4096).unwrap(), pattern(4096, 3));
}

#[test]
fn zero_flag_in_a_version_2_image() {
    let mut image = Qcow2::new(2, 9, 64 << 10);
    image.write_cluster(0, &pattern(512, 5));
    image.set_l2(1, ZERO, 0);
    let bytes = image.finish();
    assert!(matches!(
        read(&bytes, 512, 512),
        Err(Error::Corrupt(CorruptError::ZeroInVersion2 {
            l2_index: 1,
            ..
        }))
    ));
    assert_qemu_read_fails(&bytes, 512, 512);
    assert_eq!(read(&bytes, 0, 512).unwrap(), pattern(512, 5));
}

#[test]
fn extended_l2_subcluster_both_allocated_and_zero() {
    let mut image = Qcow2::with_features(3, 14, 64 << 10, 1 << 4);
    image.write_cluster(0, &pattern(16 << 10, 9));
    let host = image.write_cluster(1, &pattern(16 << 10, 10));
    // Subcluster 5 is both allocated and zero: the whole entry is invalid.
    image.set_l2(1, COPIED | host, 0xffff_ffff | (1 << (32 + 5)));
    let bytes = image.finish();
    for offset in [16 << 10, (16 << 10) + 5 * 512, (32 << 10) - 512] {
        assert!(
            matches!(
                read(&bytes, offset, 512),
                Err(Error::Corrupt(CorruptError::InvalidSubclusterBitmap {
                    l2_index: 1,
                    ..
                }))
            ),
            "offset {offset:#x}"
        );
    }
    assert_qemu_read_fails(&bytes, 16 << 10, 512);
    assert_eq!(read(&bytes, 0, 16 << 10).unwrap(), pattern(16 << 10, 9));
}

#[test]
fn extended_l2_allocated_bits_without_an_offset() {
    let mut image = Qcow2::with_features(3, 14, 64 << 10, 1 << 4);
    image.set_l2(0, 0, 1);
    let bytes = image.finish();
    assert!(matches!(
        read(&bytes, 0, 512),
        Err(Error::Corrupt(CorruptError::InvalidSubclusterBitmap { .. }))
    ));
    assert_qemu_read_fails(&bytes, 0, 512);
}

// ---- compressed clusters ----------------------------------------------------

#[test]
fn compressed_descriptor_past_the_end_of_the_file() {
    // QEMU reads zeros past the end and hands them to the decoder, which fails.
    let mut image = small();
    image.l2_table(0);
    let far = image.bytes.len() as u64 + 4096;
    let entry = image.compressed_entry(far, 100);
    image.set_l2(0, entry, 0);
    let bytes = image.finish();
    assert!(matches!(
        read(&bytes, 0, 512),
        Err(Error::Decode {
            error: DecodeError::DeflateInvalid,
            host_offset,
            guest_offset: 0
        }) if host_offset == far
    ));
    assert_qemu_read_fails(&bytes, 0, 512);
}

#[test]
fn compressed_stream_running_past_the_end_of_the_file() {
    // The last stream ends mid-sector: the descriptor's length runs past the
    // end of the file, and that is fine (QEMU pads with zeros).
    let mut image = Qcow2::new(3, 12, 64 << 10);
    let data = pattern(4096, 11);
    image.write_compressed(0, &builder::deflate(&data));
    let bytes = image.finish();
    assert_ne!(bytes.len() % 512, 0);
    let ours = read_all(&bytes).unwrap();
    assert_eq!(&ours[..4096], &data[..]);
    assert_reads_like_qemu(&bytes, &ours);
}

#[test]
fn deflate_bomb_is_cut_at_the_cluster() {
    // 1 MiB of data in a 4 KiB cluster: QEMU keeps exactly the first cluster.
    let mut image = Qcow2::new(3, 12, 64 << 10);
    let data = pattern(1 << 20, 13);
    let stream = builder::deflate(&data);
    assert!(stream.len() <= 8192, "the descriptor holds 16 sectors");
    image.write_compressed(0, &stream);
    image.write_cluster(1, &pattern(4096, 14));
    let bytes = image.finish();
    let ours = read_all(&bytes).unwrap();
    assert_eq!(&ours[..4096], &data[..4096]);
    assert_eq!(&ours[4096..8192], &pattern(4096, 14)[..]);
    assert!(ours[8192..].iter().all(|&b| b == 0));
    assert_reads_like_qemu(&bytes, &ours);
}

#[test]
fn deflate_stream_shorter_than_the_cluster() {
    let mut image = Qcow2::new(3, 12, 64 << 10);
    image.write_compressed(0, &builder::deflate(&pattern(4000, 1)));
    let bytes = image.finish();
    assert!(matches!(
        read(&bytes, 0, 512),
        Err(Error::Decode {
            error: DecodeError::DeflateShort { produced: 4000 },
            ..
        })
    ));
    assert_qemu_read_fails(&bytes, 0, 512);
}

fn zstd_image(cluster_bits: u32, stream: &[u8]) -> Vec<u8> {
    let mut image = Qcow2::with_features(3, cluster_bits, 64 << 10, 1 << 3);
    image.write_compressed(0, stream);
    image.finish()
}

#[test]
fn zstd_frames_filling_the_cluster_read_like_qemu() {
    let stream = [
        builder::zstd_frame(
            12,
            &[ZstdBlock::Rle(0x41, 1000), ZstdBlock::Raw(pattern(96, 2))],
        ),
        builder::zstd_frame(12, &[ZstdBlock::Rle(0x42, 3000)]),
    ]
    .concat();
    let bytes = zstd_image(12, &stream);
    let ours = read_all(&bytes).unwrap();
    assert!(ours[..1000].iter().all(|&b| b == 0x41));
    assert_eq!(&ours[1000..1096], &pattern(96, 2)[..]);
    assert!(ours[1096..4096].iter().all(|&b| b == 0x42));
    assert_reads_like_qemu(&bytes, &ours);
}

#[test]
fn zstd_bomb_within_the_window_is_refused() {
    // Window = cluster size, then 100 clusters' worth of RLE blocks: the frame
    // does not end at the cluster, which QEMU refuses (the frame is not flushed).
    let blocks: Vec<_> = (0..100).map(|_| ZstdBlock::Rle(0x55, 4096)).collect();
    let bytes = zstd_image(12, &builder::zstd_frame(12, &blocks));
    assert!(matches!(
        read(&bytes, 0, 4096),
        Err(Error::Decode {
            error: DecodeError::ZstdLength { .. },
            ..
        })
    ));
    assert_qemu_read_fails(&bytes, 0, 4096);
}

#[test]
fn zstd_single_segment_frame_larger_than_the_cluster() {
    // A single-segment frame's window is its content size: 1 MiB, refused
    // before the decoder allocates it. QEMU fails the read too (frame not flushed).
    let blocks: Vec<_> = (0..8).map(|_| ZstdBlock::Rle(0x66, 128 << 10)).collect();
    let bytes = zstd_image(12, &builder::zstd_single_segment(1 << 20, &blocks));
    assert!(matches!(
        read(&bytes, 0, 4096),
        Err(Error::Decode {
            error: DecodeError::ZstdWindowTooLarge {
                window: 1048576,
                limit: 4096
            },
            ..
        })
    ));
    assert_qemu_read_fails(&bytes, 0, 4096);
}

#[test]
fn zstd_window_beyond_the_cluster_is_refused() {
    // A 128 MiB window declared for 4 KiB of content. libzstd (and so QEMU)
    // would decode it; this crate refuses any window above the cluster size,
    // which bounds the decoder's allocation by the cluster size (README of
    // fuzz/, "Bounds"). A deliberate difference: QEMU never writes such frames.
    let bytes = zstd_image(12, &builder::zstd_frame(27, &[ZstdBlock::Rle(0x77, 4096)]));
    assert!(matches!(
        read(&bytes, 0, 4096),
        Err(Error::Decode {
            error: DecodeError::ZstdWindowTooLarge {
                window: 134217728,
                limit: 4096
            },
            ..
        })
    ));
    if let Some(result) = qemu::read(&bytes, 0, 4096) {
        assert_eq!(result.unwrap(), vec![0x77; 4096], "QEMU reads it");
    }
}

#[test]
fn zstd_garbage_and_truncated_frames() {
    let frame = builder::zstd_frame(12, &[ZstdBlock::Raw(pattern(4096, 4))]);
    for stream in [&b"not zstd at all"[..], &frame[..frame.len() / 2]] {
        let bytes = zstd_image(12, stream);
        assert!(matches!(
            read(&bytes, 0, 4096),
            Err(Error::Decode {
                error: DecodeError::ZstdInvalid,
                ..
            })
        ));
        assert_qemu_read_fails(&bytes, 0, 4096);
    }
}

/// The first `open` fuzz crash: a zstd block header can announce 98047
/// sequences whatever the cluster size, and ruzstd sizes its sequence buffer
/// from it (1,176,564 bytes for a 512-byte cluster). Each sequence is a match
/// of at least 3 bytes, so the block announces more than a block of its
/// frame may hold (1 KiB here), as libzstd would find, and is refused before
/// the decoder sizes anything from it.
#[test]
fn zstd_block_announcing_the_most_sequences() {
    let stream = builder::zstd_single_segment(
        512,
        &[
            ZstdBlock::Raw(pattern(8, 1)),
            ZstdBlock::Compressed(builder::zstd_short_matches_block(98047)),
        ],
    );
    let bytes = zstd_image(9, &stream);
    let image = Image::builder(&bytes[..])
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    let mut buf = vec![0u8; 512];
    let mut result = Ok(());
    let (growth, _) = heap_use(|| result = image.read_at(0, &mut buf));
    assert!(
        matches!(
            result,
            Err(Error::Decode {
                error: DecodeError::ZstdBlockTooLarge {
                    announced: 294141,
                    limit: 512
                },
                ..
            })
        ),
        "{result:?}"
    );
    assert!(
        growth <= max_read_growth(512),
        "heap grew by {growth} bytes"
    );
    assert_qemu_read_fails(&bytes, 0, 512);
}

/// Found by the `decode` fuzzer in CI: a decoder kept from one cluster to the
/// next grows its sequence buffer by doubling, so a block of 49024 sequences
/// and then one of 98047 made a 1,290,408-byte buffer for 4 KiB clusters.
/// Refusing blocks that announce more than they may hold bounds the buffer
/// by the block size, whatever came before.
#[test]
fn zstd_sequence_buffer_of_a_reused_decoder_stays_bounded() {
    let cluster = 4096;
    let mut image = Qcow2::with_features(3, 12, 64 << 10, 1 << 3);
    for (index, count) in [49024, 98047].into_iter().enumerate() {
        let block = builder::zstd_short_matches_block(count);
        let stream = builder::zstd_single_segment(4096, &[ZstdBlock::Compressed(block)]);
        image.write_compressed(index as u64, &stream);
    }
    let bytes = image.finish();
    let image = Image::builder(&bytes[..])
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    let mut buf = vec![0u8; cluster];
    for index in 0..2u64 {
        let mut result = Ok(());
        let (growth, _) = heap_use(|| result = image.read_at(index * cluster as u64, &mut buf));
        assert!(
            matches!(
                result,
                Err(Error::Decode {
                    error: DecodeError::ZstdBlockTooLarge { limit: 4096, .. },
                    ..
                })
            ),
            "cluster {index}: {result:?}"
        );
        assert!(
            growth <= max_read_growth(cluster),
            "cluster {index}: heap grew by {growth} bytes"
        );
    }
    assert_qemu_read_fails(&bytes, cluster as u64, cluster as u64);
}

/// ruzstd 0.8.3 executes a compressed block's sequences without bounding the
/// block's output: 2 KiB of sequences, each a 128 KiB match, grow its buffer
/// to 128 MiB here, and proportionally more (gigabytes, then a panic from its
/// `seq_sum` assertion) with larger clusters. libzstd, and so QEMU, refuse the
/// block, and so does ruzstd from 0.9 on, which the crate requires.
#[test]
fn zstd_sequence_bomb_in_one_block() {
    let stream = builder::zstd_frame(
        16,
        &[
            ZstdBlock::Raw(pattern(8, 1)),
            ZstdBlock::Compressed(builder::zstd_long_matches_block(1000)),
        ],
    );
    let bytes = zstd_image(16, &stream);
    // Opened first: its cache memory is the caller's choice, not the decoder's.
    let image = Image::builder(&bytes[..])
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut result = Ok(());
    let (growth, _) = heap_use(|| result = image.read_at(0, &mut buf));
    assert!(matches!(
        result,
        Err(Error::Decode {
            error: DecodeError::ZstdInvalid | DecodeError::ZstdLength { .. },
            ..
        })
    ));
    assert!(
        growth <= max_read_growth(64 << 10),
        "heap grew by {growth} bytes"
    );
    assert_qemu_read_fails(&bytes, 0, 4096);
}

// ---- backing chains ---------------------------------------------------------

fn chain_image(backing: &str) -> Vec<u8> {
    let mut image = small();
    image.put_u64(field::BACKING_FILE_OFFSET, 256);
    image.put_u32(field::BACKING_FILE_SIZE, backing.len() as u32);
    image.put_bytes(256, backing.as_bytes());
    image.finish()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qcow2-hostile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn backing_chain_loops_are_refused() {
    use qcow2_reader::chain::{open_chain, ChainError, ChainOptions};
    let dir = temp_dir("loop");
    std::fs::write(dir.join("self.qcow2"), chain_image("self.qcow2")).unwrap();
    std::fs::write(dir.join("a.qcow2"), chain_image("b.qcow2")).unwrap();
    std::fs::write(dir.join("b.qcow2"), chain_image("c.qcow2")).unwrap();
    std::fs::write(dir.join("c.qcow2"), chain_image("./a.qcow2")).unwrap();
    for top in ["self.qcow2", "a.qcow2"] {
        let result = open_chain(&dir.join(top), &ChainOptions::default());
        assert!(
            matches!(result, Err(ChainError::Loop { .. })),
            "{top}: {result:?}"
        );
        // `qemu-img info --backing-chain` finds the loop too (plain `info`
        // does not open backing files, and QEMU 7.2's `convert` never returns).
        if let Some(result) = qemu::info_chain(&dir.join(top)) {
            // With "./a.qcow2" QEMU does not see the loop by name and stops
            // at the path length limit instead.
            let message = result.expect_err("qemu-img opens a looping chain");
            assert!(
                message.contains("creates an infinite loop")
                    || message.contains("File name too long"),
                "{}",
                &message[..message.len().min(300)]
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn deep_backing_chains_are_refused() {
    use qcow2_reader::chain::{open_chain, ChainError, ChainOptions, DEFAULT_MAX_DEPTH};
    let dir = temp_dir("deep");
    let depth = DEFAULT_MAX_DEPTH + 8;
    for i in 0..depth {
        let bytes = if i + 1 == depth {
            small().finish()
        } else {
            chain_image(&format!("{}.qcow2", i + 1))
        };
        std::fs::write(dir.join(format!("{i}.qcow2")), bytes).unwrap();
    }
    let result = open_chain(&dir.join("0.qcow2"), &ChainOptions::default());
    assert!(
        matches!(result, Err(ChainError::TooDeep { max_depth, .. }) if max_depth == DEFAULT_MAX_DEPTH),
        "{result:?}"
    );
    // Within the limit the same chain opens.
    let shallow = ChainOptions {
        max_depth: depth,
        ..ChainOptions::default()
    };
    assert!(open_chain(&dir.join("0.qcow2"), &shallow).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

// ---- resource bounds --------------------------------------------------------

/// A store that counts reads and refuses any outside its bytes: the crate
/// must clamp before it reads (QEMU reads past the end as zeros).
struct Counting<'a> {
    bytes: &'a [u8],
    reads: Cell<u64>,
}

impl BlockRead for Counting<'_> {
    type Error = OutOfBounds;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), OutOfBounds> {
        self.reads.set(self.reads.get() + 1);
        let end = offset + buf.len() as u64;
        assert!(end <= self.bytes.len() as u64, "read past the end");
        self.bytes.read_at(offset, buf)
    }

    fn size(&self) -> std::result::Result<u64, OutOfBounds> {
        Ok(self.bytes.len() as u64)
    }
}

/// The tight bound on one `read_at`'s storage reads: one data (or compressed
/// input) read per unit, one L1 slice read per L1 entry spanned, one L2 slice
/// read per (L1 entry, L2 slice) pair spanned.
fn tight_read_bound(
    cluster_bits: u32,
    extended_l2: bool,
    slice_bytes: u64,
    offset: u64,
    len: u64,
) -> u64 {
    let unit_bits = if extended_l2 {
        cluster_bits - 5
    } else {
        cluster_bits
    };
    let last = offset + len - 1;
    let units = (last >> unit_bits) - (offset >> unit_bits) + 1;
    let entry_bytes = if extended_l2 { 16 } else { 8 };
    let per_l2 = (1u64 << cluster_bits) / entry_bytes;
    let per_slice = slice_bytes / entry_bytes;
    let (first, last) = (offset >> cluster_bits, last >> cluster_bits);
    let mut tables = 0;
    for l1_index in first / per_l2..=last / per_l2 {
        let start = first.max(l1_index * per_l2) % per_l2;
        let end = last.min(l1_index * per_l2 + per_l2 - 1) % per_l2;
        tables += 1 + end / per_slice - start / per_slice + 1;
    }
    units + tables
}

/// Every unit reads differently from its neighbour (data, zero, unallocated,
/// compressed, data elsewhere): no two merge, the worst case for the bound.
fn checkerboard(cluster_bits: u32, extended_l2: bool) -> Vec<u8> {
    let features = if extended_l2 { 1 << 4 } else { 0 };
    let cluster = 1usize << cluster_bits;
    let mut image = Qcow2::with_features(3, cluster_bits, 256 * cluster as u64, features);
    for guest in 0..256u64 {
        match guest % 5 {
            0 | 4 => {
                image.write_cluster(guest, &pattern(cluster, guest as u8));
                if extended_l2 {
                    // Alternate allocated, zero and unallocated subclusters.
                    let entry = image.bytes.len() as u64 - cluster as u64;
                    image.set_l2(guest, COPIED | entry, 0x4924_9249 | (0x9249_2492 << 32));
                }
            }
            1 if !extended_l2 => image.set_l2(guest, ZERO, 0),
            1 => image.set_l2(guest, 0, 0xffff_ffff << 32),
            2 => {}
            _ => {
                image.l2_table(guest);
                let stream = builder::deflate(&pattern(cluster, 3));
                image.write_compressed(guest, &stream);
            }
        }
    }
    image.finish()
}

#[test]
fn storage_reads_per_read_at_are_bounded() {
    for (cluster_bits, extended_l2) in [(9, false), (12, false), (14, true)] {
        let bytes = checkerboard(cluster_bits, extended_l2);
        let cluster = 1u64 << cluster_bits;
        for slots in [1usize, 2, 64] {
            // The smallest slices and cache: every lookup can miss.
            let config = Config::default()
                .with_table_slice_bytes(512)
                .with_table_cache_bytes(512 * slots)
                .with_compressed_clusters(1);
            let storage = Counting {
                bytes: &bytes,
                reads: Cell::new(0),
            };
            let image = Image::builder(&storage)
                .unwrap()
                .open_alloc(&config)
                .unwrap();
            let size = image.virtual_size();
            for (offset, len) in [
                (0, size),
                (1, size - 1),
                (cluster - 1, 2),
                (7 * cluster + 300, 3 * cluster),
                (size - 513, 513),
                (100 * cluster, 64 * cluster + 17),
            ] {
                let mut buf = vec![0u8; len as usize];
                let before = storage.reads.get();
                image.read_at(offset, &mut buf).unwrap();
                let made = storage.reads.get() - before;
                let tight = tight_read_bound(cluster_bits, extended_l2, 512, offset, len);
                assert!(
                    made <= tight,
                    "cluster_bits {cluster_bits}, {slots} slots: read_at({offset}, {len}) made {made} reads, bound {tight}"
                );
                assert!(made <= image.max_storage_reads(offset, len));
            }
        }
    }
}

/// How much this thread's heap grows at most while `f` runs, and how many
/// allocations it makes (`allocation-counter` counts per thread, so tests
/// running in parallel do not mix their numbers).
fn heap_use(f: impl FnOnce()) -> (u64, u64) {
    let info = allocation_counter::measure(f);
    (info.bytes_max, info.count_total)
}

/// A zstd block's decoded size at most (the format's Block_Maximum_Size).
const ZSTD_BLOCK_MAX: usize = 128 << 10;

/// The most the heap grows during one `read_at`: the zstd decoder's
/// memory, as the crate states it for the decoder this build uses (ruzstd,
/// the system's libzstd, or the vendored one).
fn max_read_growth(cluster_size: usize) -> u64 {
    qcow2_reader::decoder_memory_bytes(CompressionType::Zstd, cluster_size) as u64
}

#[test]
fn reads_allocate_only_the_zstd_window() {
    for cluster_bits in [9u32, 12, 16, 21] {
        let cluster = 1usize << cluster_bits;
        // Single-segment frames as QEMU writes them (window = content size =
        // cluster size), filled with RLE and raw blocks of up to 128 KiB.
        let mut blocks = Vec::new();
        let mut left = cluster;
        while left > 0 {
            let n = left.min(ZSTD_BLOCK_MAX);
            blocks.push(if blocks.len() % 2 == 0 {
                ZstdBlock::Rle(0x5a, n)
            } else {
                ZstdBlock::Raw(pattern(n, 8))
            });
            left -= n;
        }
        let stream = builder::zstd_single_segment(cluster as u32, &blocks);
        let mut image = Qcow2::with_features(3, cluster_bits, 4 * cluster as u64, 1 << 3);
        if stream.len() > 2 * cluster {
            continue; // 512-byte clusters: a raw block does not fit in the descriptor
        }
        image.write_compressed(0, &stream);
        image.write_cluster(1, &pattern(cluster, 1));
        let bytes = image.finish();
        let image = Image::builder(&bytes[..])
            .unwrap()
            .open_alloc(&Config::default())
            .unwrap();
        let mut buf = vec![0u8; 2 * cluster];
        let (growth, _) = heap_use(|| image.read_at(0, &mut buf).unwrap());
        assert!(
            growth <= max_read_growth(cluster),
            "{cluster}-byte clusters: heap grew by {growth} bytes"
        );
        // Uncompressed and deflate reads allocate nothing.
        let (_, allocations) =
            heap_use(|| image.read_at(cluster as u64, &mut buf[..cluster]).unwrap());
        assert_eq!(allocations, 0);
    }
    let mut image = Qcow2::new(3, 12, 64 << 10);
    image.write_compressed(0, &builder::deflate(&pattern(1 << 20, 13)));
    image.write_compressed(1, &builder::deflate(&pattern(4096, 14)));
    let bytes = image.finish();
    let image = Image::builder(&bytes[..])
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // miniz_oxide allocates nothing; libdeflate (`deflate-c-nostd`) its
    // tables once, at the first deflate cluster, within the stated bound.
    let (growth, allocations) = heap_use(|| image.read_at(0, &mut buf[..4096]).unwrap());
    let once = u64::from(cfg!(feature = "deflate-c-nostd"));
    assert_eq!(
        allocations, once,
        "deflate allocates at most its state, once"
    );
    assert!(growth <= qcow2_reader::decoder_memory_bytes(CompressionType::Deflate, 4096) as u64);
    // Then another cluster decodes with no allocation.
    let (_, allocations) = heap_use(|| image.read_at(4096, &mut buf[..4096]).unwrap());
    assert_eq!(allocations, 0, "deflate allocates nothing after its state");
}

// ---- persistent bitmaps ------------------------------------------------------

/// Where the bitmaps extension of a `qemu-img` image sits: the offset of
/// its data (count, reserved, directory size, directory offset).
fn bitmaps_extension(bytes: &[u8]) -> usize {
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut at = word(field::HEADER_LENGTH) as usize;
    loop {
        let (kind, len) = (word(at), word(at + 4) as usize);
        assert_ne!(kind, 0, "no bitmaps extension");
        if kind == 0x2385_2875 {
            return at + 8;
        }
        at += 8 + len.next_multiple_of(8);
    }
}

/// QEMU loads the bitmap directory and each bitmap table when it opens an
/// image (`qemu-img info` and `check` too) and refuses one that breaks its
/// rules (found by mutating such images: `qcow info` opened them).
#[test]
fn bitmap_directories_qemu_refuses_are_refused_at_open() {
    use qcow2_reader::bitmap::BitmapError;
    let scratch = qcow2_testkit::Scratch::new();
    let image = scratch.create("bitmap.qcow2", "4M", "");
    qcow2_testkit::qemu_io(&image, &["write -P 1 0 1M"]);
    let path = image.to_str().unwrap();
    qcow2_testkit::qemu_img(&["bitmap", "--add", path, "b0"]);
    // A table entry to break needs a table: qemu-img writes it on close.
    qcow2_testkit::qemu_img(&["bitmap", "--add", path, "b1"]);
    let pristine = std::fs::read(&image).unwrap();
    assert!(Image::builder(pristine.as_slice()).is_ok());
    let extension = bitmaps_extension(&pristine);
    let u64_at =
        |bytes: &[u8], at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let directory = u64_at(&pristine, extension + 16) as usize;
    let table = u64_at(&pristine, directory) as usize;
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation, BitmapError)> = vec![
        (
            "reserved field",
            Box::new(move |b| b[extension + 4..extension + 8].copy_from_slice(&[0, 0, 0, 1])),
            BitmapError::ReservedNotZero,
        ),
        (
            "fewer bitmaps than the extension says",
            Box::new(move |b| b[extension..extension + 4].copy_from_slice(&3u32.to_be_bytes())),
            BitmapError::LessBitmaps { found: 2 },
        ),
        (
            "more bitmaps than the extension says",
            Box::new(move |b| b[extension..extension + 4].copy_from_slice(&1u32.to_be_bytes())),
            BitmapError::MoreBitmaps,
        ),
        (
            "an entry running past the directory",
            Box::new(move |b| {
                b[directory + 18..directory + 20].copy_from_slice(&300u16.to_be_bytes())
            }),
            BitmapError::BrokenDirectory,
        ),
        (
            "type 1 only",
            Box::new(move |b| b[directory + 16] = 2),
            BitmapError::Constraints { index: 0 },
        ),
        (
            "granularity 9 to 31",
            Box::new(move |b| b[directory + 17] = 8),
            BitmapError::Constraints { index: 0 },
        ),
        (
            "a valid table entry",
            Box::new(move |b| b[table..table + 8].copy_from_slice(&0x201u64.to_be_bytes())),
            BitmapError::TableEntry {
                index: 0,
                entry: 0x201,
            },
        ),
    ];
    for (rule, mutate, expected) in cases {
        let mut bytes = pristine.clone();
        mutate(&mut bytes);
        match Image::builder(bytes.as_slice()) {
            Err(Error::Header(HeaderError::Bitmaps(error))) => {
                assert_eq!(error, expected, "{rule}")
            }
            Err(other) => panic!("{rule}: wrong error {other}"),
            Ok(_) => panic!("{rule}: the image opened"),
        }
        if let Some(result) = qemu::info(&bytes) {
            assert!(result.is_err(), "{rule}: qemu-img info opens it");
        }
    }
}
