//! QEMU's rules on the header's fixed fields and tables, in QEMU's order:
//! an image QEMU refuses at open is refused here with a named reason.

use zerocopy::FromBytes;

use super::*;
use crate::block::BlockRead;
use crate::error::{HeaderError, TableKind};
use crate::extension::{Extension, Extensions};
use crate::feature::{Autoclear, Compatible, FeatureKind, Incompatible};
use crate::name::FileName;

impl Header {
    pub(crate) fn parse_fixed(
        bytes: &[u8; HEADER_READ_BYTES],
        file_size: u64,
        opening: Opening,
    ) -> Result<Self, HeaderError> {
        let (v2, rest) =
            RawHeaderV2::ref_from_prefix(bytes).map_err(|_| HeaderError::BadMagic { found: 0 })?;
        let magic = v2.magic.get();
        if magic != MAGIC {
            return Err(HeaderError::BadMagic { found: magic });
        }
        let version = v2.version.get();
        if version != 2 && version != 3 {
            return Err(HeaderError::UnsupportedVersion { version });
        }
        let cluster_bits = v2.cluster_bits.get();
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(HeaderError::ClusterBits { cluster_bits });
        }
        let cluster_size = 1u64 << cluster_bits;

        let (
            incompatible_bits,
            compatible_bits,
            autoclear_bits,
            refcount_order,
            header_length,
            raw_compression,
        ) = if version == 2 {
            (0, 0, 0, 4, V2_HEADER_BYTES as u32, 0)
        } else {
            let v3 = RawHeaderV3::ref_from_bytes(rest)
                .map_err(|_| HeaderError::BadMagic { found: magic })?;
            let header_length = v3.header_length.get();
            if header_length < V3_MIN_HEADER_BYTES {
                return Err(HeaderError::HeaderLengthTooSmall { header_length });
            }
            // The compression type byte exists only in headers longer than 104 bytes.
            let compression = if header_length > V3_MIN_HEADER_BYTES {
                v3.compression_type
            } else {
                0
            };
            (
                v3.incompatible_features.get(),
                v3.compatible_features.get(),
                v3.autoclear_features.get(),
                v3.refcount_order.get(),
                header_length,
                compression,
            )
        };
        if u64::from(header_length) > cluster_size {
            return Err(HeaderError::HeaderLengthTooLarge {
                header_length,
                cluster_size,
            });
        }
        let backing_file_offset = v2.backing_file_offset.get();
        if backing_file_offset > cluster_size {
            return Err(HeaderError::BackingFileOffsetTooLarge {
                offset: backing_file_offset,
                cluster_size,
            });
        }

        let compression_type = match raw_compression {
            0 => CompressionType::Deflate,
            1 => CompressionType::Zstd,
            other => {
                return Err(HeaderError::UnknownCompressionType {
                    compression_type: other,
                })
            }
        };
        let compression_bit = incompatible_bits & Incompatible::COMPRESSION_TYPE.bits() != 0;
        if compression_bit != (compression_type != CompressionType::Deflate) {
            return Err(HeaderError::CompressionTypeBitMismatch {
                compression_type: raw_compression,
            });
        }

        let unknown = incompatible_bits & !Incompatible::all().bits();
        if unknown != 0 {
            // The name is looked up by `read` once the extensions are readable.
            return Err(HeaderError::UnknownIncompatibleFeatures {
                bits: unknown,
                name: None,
            });
        }
        let incompatible = Incompatible::from_bits_retain(incompatible_bits);
        if incompatible.contains(Incompatible::EXTENDED_L2) && cluster_bits < 14 {
            return Err(HeaderError::SubclusterTooSmall { cluster_bits });
        }
        if refcount_order > 6 {
            return Err(HeaderError::RefcountOrder { refcount_order });
        }

        let refcount_table_clusters = v2.refcount_table_clusters.get();
        if refcount_table_clusters == 0 && opening == Opening::Image {
            return Err(HeaderError::RefcountTableEmpty);
        }
        if u64::from(refcount_table_clusters) > MAX_REFCOUNT_TABLE_BYTES >> cluster_bits {
            return Err(HeaderError::RefcountTableTooLarge {
                clusters: refcount_table_clusters,
            });
        }
        let refcount_table_offset = v2.refcount_table_offset.get();
        check_table_offset(
            TableKind::Refcount,
            refcount_table_offset,
            u64::from(refcount_table_clusters),
            cluster_size,
            cluster_size,
        )?;

        let snapshot_count = v2.nb_snapshots.get();
        let snapshots_offset = v2.snapshots_offset.get();
        if opening == Opening::Image {
            check_snapshot_table(snapshot_count, snapshots_offset, cluster_size)?;
        }

        let l1_entries = v2.l1_size.get();
        if !crate::table::l1_table_fits(l1_entries) {
            return Err(HeaderError::L1TooLarge {
                entries: l1_entries,
            });
        }
        let size_field = v2.size.get();
        let entries_per_l2 = cluster_size
            / if incompatible.contains(Incompatible::EXTENDED_L2) {
                16
            } else {
                8
            };
        let bytes_per_l1_entry = cluster_size * entries_per_l2;
        let needed = size_field.div_ceil(bytes_per_l1_entry);
        if needed > i32::MAX as u64 {
            return Err(HeaderError::ImageTooBig { size: size_field });
        }
        if u64::from(l1_entries) < needed {
            return Err(HeaderError::L1TooSmall {
                entries: l1_entries,
                needed,
            });
        }
        let l1_table_offset = v2.l1_table_offset.get();
        check_table_offset(
            TableKind::L1,
            l1_table_offset,
            u64::from(l1_entries),
            crate::table::L1_ENTRY_BYTES,
            cluster_size,
        )?;

        let crypt_method = match v2.crypt_method.get() {
            0 => 0,
            method @ (1 | 2) if cfg!(feature = "luks") => method,
            method @ (1 | 2) => return Err(HeaderError::Encrypted { method }),
            method => return Err(HeaderError::UnknownEncryptionMethod { method }),
        };

        let backing_name_len = v2.backing_file_size.get();
        let backing_file = if backing_file_offset == 0 {
            None
        } else {
            let room = cluster_size - backing_file_offset;
            if backing_name_len > MAX_BACKING_NAME_BYTES || u64::from(backing_name_len) > room {
                return Err(HeaderError::BackingFileNameTooLong {
                    len: backing_name_len,
                });
            }
            // Filled in by `read_backing_name`; the length is kept here.
            FileName::new(&[0u8; MAX_BACKING_NAME_BYTES as usize][..backing_name_len as usize])
        };

        Ok(Header {
            version,
            cluster_bits,
            size_field,
            l1_entries,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            snapshot_count,
            snapshots_offset,
            incompatible,
            compatible: Compatible::from_bits_retain(compatible_bits),
            autoclear: Autoclear::from_bits_retain(autoclear_bits),
            refcount_order,
            header_length,
            compression_type,
            backing_file_offset,
            backing_file,
            backing_format: None,
            data_file: None,
            feature_table: None,
            file_size,
            crypt_method,
            crypto_area: None,
            bitmaps: None,
            #[cfg(feature = "luks")]
            luks: None,
        })
    }

    pub(super) fn check_after_extensions(&self) -> Result<(), HeaderError> {
        if self.crypt_method == 2 && self.crypto_area.is_none() {
            return Err(HeaderError::MissingCryptoHeader);
        }
        Ok(())
    }

    /// QEMU's rules on the data file bits, tested when the image is opened
    /// for I/O (`qemu-img info` opens without I/O and shows such images).
    pub(crate) fn check_data_file_bits(&self) -> Result<(), HeaderError> {
        let has_data_file = self.incompatible.contains(Incompatible::EXTERNAL_DATA_FILE);
        if has_data_file && self.data_file.is_none() {
            return Err(HeaderError::MissingDataFileName);
        }
        if !has_data_file && self.autoclear.contains(Autoclear::DATA_FILE_RAW) {
            return Err(HeaderError::DataFileRawWithoutDataFile);
        }
        Ok(())
    }
}

/// Where the header extensions end: at the backing file name, or at the
/// end of the first cluster when there is none.
pub(super) fn extensions_end(backing_file_offset: u64, cluster_size: u64) -> u64 {
    if backing_file_offset == 0 {
        cluster_size
    } else {
        backing_file_offset
    }
}

/// QEMU's open-time test of the snapshot table's count and offset.
pub(crate) fn check_snapshot_table(
    count: u32,
    offset: u64,
    cluster_size: u64,
) -> Result<(), HeaderError> {
    if count > MAX_SNAPSHOTS {
        return Err(HeaderError::TooManySnapshots { count });
    }
    check_table_offset(
        TableKind::Snapshot,
        offset,
        u64::from(count),
        SNAPSHOT_ENTRY_FIXED_BYTES,
        cluster_size,
    )
}

/// QEMU's `validate_table_offset`: the table is cluster-aligned, and
/// offset + length does not overflow `i64` (it ends below 2^63).
pub(crate) fn check_table_offset(
    table: TableKind,
    offset: u64,
    entries: u64,
    entry_bytes: u64,
    cluster_size: u64,
) -> Result<(), HeaderError> {
    let len = entries.saturating_mul(entry_bytes);
    let fits = len <= i64::MAX as u64 && offset <= i64::MAX as u64 - len;
    if !fits || !offset.is_multiple_of(cluster_size) {
        return Err(HeaderError::InvalidTableOffset { table, offset, len });
    }
    Ok(())
}

/// Names the lowest unknown incompatible bit from the feature name table, as QEMU does.
pub(super) fn unknown_features_error<R: BlockRead + ?Sized>(
    storage: &R,
    bytes: &[u8; HEADER_READ_BYTES],
    file_size: u64,
    bits: u64,
) -> HeaderError {
    let name = (|| {
        let (v2, rest) = RawHeaderV2::ref_from_prefix(bytes).ok()?;
        let v3 = RawHeaderV3::ref_from_bytes(rest).ok()?;
        let cluster_size = 1u64 << v2.cluster_bits.get();
        let end = extensions_end(v2.backing_file_offset.get(), cluster_size);
        let mut extensions =
            Extensions::new(storage, file_size, u64::from(v3.header_length.get()), end);
        let bit = bits.trailing_zeros() as u8;
        while let Ok(Some(extension)) = extensions.next_extension() {
            if let Extension::FeatureNameTable { offset, len } = extension {
                return crate::extension::FeatureNames::new(storage, offset, len)
                    .name_of(FeatureKind::Incompatible, bit);
            }
        }
        None
    })();
    HeaderError::UnknownIncompatibleFeatures { bits, name }
}
