//! Hand-made headers: each open-time refusal gives its own named error, and
//! each corrupt table entry fails the reads through it with its own error.

use qcow2_reader::{
    Config, CorruptError, Error, Header, HeaderError, Image, OutOfBounds, TableKind,
};

const CLUSTER: usize = 65536;
const REFCOUNT_TABLE: u64 = 0x10000;
const L1_TABLE: u64 = 0x30000;
const L2_TABLE: u64 = 0x40000;
const DATA: u64 = 0x50000;

/// A valid v3 image of 1 MiB: header, refcount table, L1 at 0x30000, empty otherwise.
fn valid_image() -> Vec<u8> {
    let mut bytes = vec![0u8; 6 * CLUSTER];
    put32(&mut bytes, 0, 0x5146_49fb);
    put32(&mut bytes, 4, 3);
    put32(&mut bytes, 20, 16); // cluster_bits
    put64(&mut bytes, 24, 1 << 20); // size
    put32(&mut bytes, 36, 1); // l1_size
    put64(&mut bytes, 40, L1_TABLE);
    put64(&mut bytes, 48, REFCOUNT_TABLE);
    put32(&mut bytes, 56, 1); // refcount_table_clusters
    put32(&mut bytes, 96, 4); // refcount_order
    put32(&mut bytes, 100, 112); // header_length
    bytes
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn put64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

fn refusal(mutate: impl FnOnce(&mut Vec<u8>)) -> HeaderError {
    let mut bytes = valid_image();
    mutate(&mut bytes);
    // Through the builder: it validates the snapshot table too.
    match Image::builder(bytes.as_slice()).map(|builder| builder.header().clone()) {
        Err(Error::Header(error)) => {
            assert!(!error.to_string().is_empty());
            error
        }
        other => panic!("expected a header error, got {other:?}"),
    }
}

#[test]
fn the_valid_image_opens() {
    let header = Header::read(valid_image().as_slice()).unwrap();
    assert_eq!(header.virtual_size(), 1 << 20);
}

#[test]
fn fixed_field_refusals() {
    assert_eq!(
        refusal(|b| put32(b, 0, 0x5146_49fc)),
        HeaderError::BadMagic { found: 0x5146_49fc }
    );
    assert_eq!(
        refusal(|b| put32(b, 4, 4)),
        HeaderError::UnsupportedVersion { version: 4 }
    );
    for cluster_bits in [0, 8, 22, 63, 64, 255] {
        assert_eq!(
            refusal(|b| put32(b, 20, cluster_bits)),
            HeaderError::ClusterBits { cluster_bits }
        );
    }
    assert_eq!(
        refusal(|b| put32(b, 100, 100)),
        HeaderError::HeaderLengthTooSmall { header_length: 100 }
    );
    assert!(matches!(
        refusal(|b| put32(b, 100, 0x20000)),
        HeaderError::HeaderLengthTooLarge { .. }
    ));
    assert!(matches!(
        refusal(|b| put64(b, 8, 0x20000)),
        HeaderError::BackingFileOffsetTooLarge { .. }
    ));
    assert_eq!(
        refusal(|b| b[104] = 2),
        HeaderError::UnknownCompressionType {
            compression_type: 2
        }
    );
    assert_eq!(
        refusal(|b| b[104] = 1),
        HeaderError::CompressionTypeBitMismatch {
            compression_type: 1
        }
    );
    assert!(matches!(
        refusal(|b| put64(b, 72, 1 << 5)),
        HeaderError::UnknownIncompatibleFeatures {
            bits: 32,
            name: None
        }
    ));
    assert_eq!(
        refusal(|b| {
            put32(b, 20, 13);
            put64(b, 72, 1 << 4);
        }),
        HeaderError::SubclusterTooSmall { cluster_bits: 13 }
    );
    assert_eq!(
        refusal(|b| put32(b, 96, 7)),
        HeaderError::RefcountOrder { refcount_order: 7 }
    );
    assert_eq!(
        refusal(|b| put32(b, 56, 0)),
        HeaderError::RefcountTableEmpty
    );
    assert_eq!(
        refusal(|b| put32(b, 56, 129)),
        HeaderError::RefcountTableTooLarge { clusters: 129 }
    );
    assert!(matches!(
        refusal(|b| put64(b, 48, REFCOUNT_TABLE + 512)),
        HeaderError::InvalidTableOffset {
            table: TableKind::Refcount,
            ..
        }
    ));
    assert!(matches!(
        refusal(|b| put64(b, 48, u64::MAX - 0xffff)),
        HeaderError::InvalidTableOffset {
            table: TableKind::Refcount,
            ..
        }
    ));
    assert_eq!(
        refusal(|b| put32(b, 60, 65537)),
        HeaderError::TooManySnapshots { count: 65537 }
    );
    assert!(matches!(
        refusal(|b| put64(b, 64, 0x1200)),
        HeaderError::InvalidTableOffset {
            table: TableKind::Snapshot,
            ..
        }
    ));
    assert_eq!(
        refusal(|b| put32(b, 36, 0x40_0001)),
        HeaderError::L1TooLarge { entries: 0x40_0001 }
    );
    assert!(matches!(
        refusal(|b| put64(b, 24, u64::MAX)),
        HeaderError::ImageTooBig { .. }
    ));
    assert!(matches!(
        refusal(|b| put64(b, 24, 1 << 40)),
        HeaderError::L1TooSmall {
            entries: 1,
            needed: 2048
        }
    ));
    assert!(matches!(
        refusal(|b| put64(b, 40, L1_TABLE + 8)),
        HeaderError::InvalidTableOffset {
            table: TableKind::L1,
            ..
        }
    ));
    assert_eq!(
        refusal(|b| put32(b, 32, 1)),
        HeaderError::Encrypted { method: 1 }
    );
    assert_eq!(
        refusal(|b| put32(b, 32, 2)),
        HeaderError::Encrypted { method: 2 }
    );
    assert_eq!(
        refusal(|b| put32(b, 32, 3)),
        HeaderError::UnknownEncryptionMethod { method: 3 }
    );
}

/// Appends a header extension at `at`, returning where the next one goes.
fn extension(bytes: &mut [u8], at: usize, kind: u32, data: &[u8]) -> usize {
    put32(bytes, at, kind);
    put32(bytes, at + 4, data.len() as u32);
    bytes[at + 8..at + 8 + data.len()].copy_from_slice(data);
    at + 8 + data.len().next_multiple_of(8)
}

#[test]
fn extension_and_name_refusals() {
    assert!(matches!(
        refusal(|b| {
            put32(b, 112, 0xe279_2aca);
            put32(b, 116, 0xffff_fff0);
        }),
        HeaderError::ExtensionTooLarge {
            kind: 0xe279_2aca,
            ..
        }
    ));
    assert_eq!(
        refusal(|b| {
            extension(b, 112, 0xe279_2aca, b"a-format-name-too-long");
        }),
        HeaderError::BackingFormatTooLong { len: 22 }
    );
    assert_eq!(
        refusal(|b| put64(b, 72, 1 << 2)),
        HeaderError::MissingDataFileName
    );
    assert_eq!(
        refusal(|b| put64(b, 88, 1 << 1)),
        HeaderError::DataFileRawWithoutDataFile
    );
    assert_eq!(
        refusal(|b| {
            put64(b, 8, 0x200);
            put32(b, 16, 1024);
        }),
        HeaderError::BackingFileNameTooLong { len: 1024 }
    );
}

#[test]
fn backing_name_past_the_end_of_the_file_reads_as_zeros_like_qemu() {
    // `qemu-img info` shows backing file "ab" for the first, none for the second.
    let mut bytes = valid_image();
    put64(&mut bytes, 8, 0x200);
    put32(&mut bytes, 16, 16);
    bytes[0x200..0x202].copy_from_slice(b"ab");
    bytes.truncate(0x202);
    let header = Header::read(bytes.as_slice()).unwrap();
    assert_eq!(
        header.backing_file().map(|name| name.as_bytes()),
        Some(&b"ab"[..])
    );
    bytes.truncate(0x200);
    assert!(Header::read(bytes.as_slice())
        .unwrap()
        .backing_file()
        .is_none());
}

#[test]
fn unknown_incompatible_feature_is_named_from_the_table() {
    let error = refusal(|b| {
        put64(b, 72, 1 << 9);
        let mut row = [0u8; 48];
        row[1] = 9;
        row[2..2 + 12].copy_from_slice(b"future-magic");
        extension(b, 112, 0x6803_f857, &row);
    });
    let HeaderError::UnknownIncompatibleFeatures {
        bits,
        name: Some(name),
    } = error
    else {
        panic!("{error:?}")
    };
    assert_eq!((bits, name.as_str()), (1 << 9, "future-magic"));
    assert!(error.to_string().contains("future-magic"));
}

#[test]
fn snapshot_table_refusals() {
    // One entry at 0x20000 whose extra data is larger than QEMU allows.
    let error = refusal(|b| {
        put32(b, 60, 1);
        put64(b, 64, 0x20000);
        put32(b, 0x20000 + 36, 1025);
    });
    assert_eq!(
        error,
        HeaderError::SnapshotExtraDataTooLarge {
            index: 0,
            size: 1025
        }
    );
}

#[test]
fn version2_ignores_bytes_after_its_header() {
    let mut bytes = valid_image();
    put32(&mut bytes, 4, 2);
    // QEMU reads v2 extensions from byte 72 on, so these stay zero (the end
    // extension), but the v3-only fields after them are not read as header.
    put32(&mut bytes, 100, 3); // would be a too-small header length in v3
    bytes[104] = 5; // would be an unknown compression type in v3
    let header = Header::read(bytes.as_slice()).unwrap();
    assert_eq!((header.version(), header.header_length()), (2, 72));
}

fn read_error(mutate: impl FnOnce(&mut Vec<u8>)) -> Error<OutOfBounds> {
    let mut bytes = valid_image();
    put64(&mut bytes, L1_TABLE as usize, L2_TABLE | 1 << 63);
    mutate(&mut bytes);
    let image = Image::builder(bytes.as_slice())
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    let mut buf = [0u8; 512];
    image.read_at(0, &mut buf).unwrap_err()
}

#[test]
fn corrupt_table_entries() {
    let l2 = L2_TABLE as usize;
    assert!(matches!(
        read_error(|b| put64(b, L1_TABLE as usize, L2_TABLE + 512)),
        Error::Corrupt(CorruptError::L2OffsetUnaligned {
            l2_offset: 0x40200,
            l1_index: 0
        })
    ));
    assert!(matches!(
        read_error(|b| put64(b, l2, DATA + 512)),
        Error::Corrupt(CorruptError::DataOffsetUnaligned {
            host_offset: 0x50200,
            l2_index: 0,
            ..
        })
    ));
    assert!(matches!(
        read_error(|b| {
            put32(b, 4, 2);
            put64(b, l2, 1);
        }),
        Error::Corrupt(CorruptError::ZeroInVersion2 { .. })
    ));
    let message = read_error(|b| put64(b, L1_TABLE as usize, L2_TABLE + 512)).to_string();
    assert!(
        message.contains("L2 table offset 0x40200 at L1 index 0 is not cluster aligned"),
        "{message}"
    );
}

#[test]
fn invalid_subcluster_bitmap() {
    let mut bytes = valid_image();
    put32(&mut bytes, 20, 16);
    put64(&mut bytes, 72, 1 << 4); // extended L2
    put64(&mut bytes, L1_TABLE as usize, L2_TABLE);
    put64(&mut bytes, L2_TABLE as usize, DATA);
    put64(&mut bytes, L2_TABLE as usize + 8, 1 | 1 << 32); // subcluster 0 allocated and zero
    let image = Image::builder(bytes.as_slice())
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(matches!(
        image.read_at(0, &mut buf),
        Err(Error::Corrupt(CorruptError::InvalidSubclusterBitmap { .. }))
    ));
}

#[test]
fn tables_and_data_past_the_end_of_the_file_read_as_zeros() {
    let mut bytes = valid_image();
    put64(&mut bytes, L1_TABLE as usize, 0x100_0000); // L2 table far past the end
    let image = Image::builder(bytes.as_slice())
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    let mut buf = [0xaau8; 4096];
    image.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));

    let mut bytes = valid_image();
    put64(&mut bytes, L1_TABLE as usize, L2_TABLE);
    put64(&mut bytes, L2_TABLE as usize, 0x200_0000); // data cluster past the end
    let image = Image::builder(bytes.as_slice())
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    buf.fill(0xaa);
    image.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}
