//! The header's on-disk layout: QEMU's limits, the magic, the fixed fields
//! as zerocopy big-endian views, and the compression type.

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::block::BlockRead;

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Smallest cluster_bits QEMU accepts (512-byte clusters).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster_bits QEMU accepts (2 MiB clusters).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU's limit on the refcount table (`QCOW_MAX_REFTABLE_SIZE`).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// QEMU's limit on the number of snapshots.
pub const MAX_SNAPSHOTS: u32 = 65536;
/// QEMU's limit on a backing file name.
pub const MAX_BACKING_NAME_BYTES: u32 = 1023;

/// Whether `storage` starts with the QCOW2 magic: the probe QEMU makes
/// when an image names its backing file but not the file's format. A store
/// shorter than the magic is not QCOW2 (QEMU then takes it as raw).
pub fn is_qcow2<S: BlockRead + ?Sized>(storage: &S) -> Result<bool, S::Error> {
    let mut magic = [0u8; 4];
    if storage.size()? < magic.len() as u64 {
        return Ok(false);
    }
    storage.read_at(0, &mut magic)?;
    Ok(u32::from_be_bytes(magic) == MAGIC)
}

pub(super) const V2_HEADER_BYTES: usize = 72;
pub(super) const V3_MIN_HEADER_BYTES: u32 = 104;
/// Size of one snapshot table entry's fixed part, used by QEMU's offset check.
pub(super) const SNAPSHOT_ENTRY_FIXED_BYTES: u64 = 40;

/// The fields common to v2 and v3 (bytes 0..72).
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawHeaderV2 {
    /// `QFI\xfb`.
    pub magic: U32,
    /// 2 or 3.
    pub version: U32,
    /// Offset of the backing file name, 0 for none.
    pub backing_file_offset: U64,
    /// Length of the backing file name.
    pub backing_file_size: U32,
    /// log2 of the cluster size.
    pub cluster_bits: U32,
    /// Virtual disk size in bytes.
    pub size: U64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: U32,
    /// Entries in the active L1 table.
    pub l1_size: U32,
    /// Offset of the active L1 table.
    pub l1_table_offset: U64,
    /// Offset of the refcount table.
    pub refcount_table_offset: U64,
    /// Clusters the refcount table occupies.
    pub refcount_table_clusters: U32,
    /// Number of internal snapshots.
    pub nb_snapshots: U32,
    /// Offset of the snapshot table.
    pub snapshots_offset: U64,
}

/// The v3 additions (bytes 72..112); absent in v2.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawHeaderV3 {
    /// Incompatible feature bits.
    pub incompatible_features: U64,
    /// Compatible feature bits.
    pub compatible_features: U64,
    /// Autoclear feature bits.
    pub autoclear_features: U64,
    /// log2 of the refcount width in bits.
    pub refcount_order: U32,
    /// Length of the header structure.
    pub header_length: U32,
    /// 0 deflate, 1 zstd; valid only when header_length > 104.
    pub compression_type: u8,
    /// Alignment padding.
    pub padding: [u8; 7],
}

pub(super) const HEADER_READ_BYTES: usize = V2_HEADER_BYTES + core::mem::size_of::<RawHeaderV3>();

/// The codec of compressed clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (RFC 1951), QEMU's default.
    Deflate,
    /// Zstandard.
    Zstd,
}

impl CompressionType {
    /// The name `qemu-img info` prints.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Deflate => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}
