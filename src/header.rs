//! The image header: its on-disk layout, and validation into a plain [`Header`].
//!
//! Every rule QEMU applies when it opens an image is checked here, in QEMU's
//! order, so that an image QEMU refuses is refused here with a named reason.

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::block::{read_located, read_zero_padded, BlockRead};
use crate::error::{Error, HeaderError, Storage, TableKind};
use crate::extension::{Extension, Extensions};
use crate::feature::{Autoclear, Compatible, FeatureKind, Incompatible};
use crate::name::{FileName, FormatName};

/// The format of an image's backing file, as the header records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingFormat {
    /// No backing format extension, or an empty name in it: QEMU reads
    /// that as "no format" and probes the file's magic
    /// ([`is_qcow2`]: QCOW2, else raw).
    Probe,
    /// `qcow2`.
    Qcow2,
    /// `raw`: the file's bytes are the disk.
    Raw,
    /// Any other name (`vmdk`, `qcow`, ...): a format this crate does not read.
    Other(FormatName),
}

impl BackingFormat {
    /// The meaning of the stored name `name`.
    pub fn of(name: Option<&FormatName>) -> Self {
        let Some(name) = name else {
            return BackingFormat::Probe;
        };
        match name.as_bytes() {
            b"" => BackingFormat::Probe,
            b"qcow2" => BackingFormat::Qcow2,
            b"raw" => BackingFormat::Raw,
            _ => BackingFormat::Other(*name),
        }
    }
}

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

const V2_HEADER_BYTES: usize = 72;
const V3_MIN_HEADER_BYTES: u32 = 104;
/// Size of one snapshot table entry's fixed part, used by QEMU's offset check.
const SNAPSHOT_ENTRY_FIXED_BYTES: u64 = 40;

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

const HEADER_READ_BYTES: usize = V2_HEADER_BYTES + core::mem::size_of::<RawHeaderV3>();

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

/// The header of an image that passed every open-time check, as plain values.
#[derive(Debug, Clone)]
pub struct Header {
    version: u32,
    cluster_bits: u32,
    size_field: u64,
    l1_entries: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    snapshot_count: u32,
    snapshots_offset: u64,
    incompatible: Incompatible,
    compatible: Compatible,
    autoclear: Autoclear,
    refcount_order: u32,
    header_length: u32,
    compression_type: CompressionType,
    backing_file_offset: u64,
    backing_file: Option<FileName>,
    backing_format: Option<FormatName>,
    data_file: Option<FileName>,
    feature_table: Option<(u64, u32)>,
    file_size: u64,
    crypt_method: u32,
    crypto_area: Option<(u64, u64)>,
    bitmaps: Option<crate::bitmap::DirectoryPlace>,
    #[cfg(feature = "luks")]
    luks: Option<crate::crypto::LuksHeader>,
}

impl Header {
    /// Reads and validates the header, its extensions and the backing file
    /// name from `storage`. The snapshot table is validated by
    /// [`Image::builder`](crate::Image::builder), which is the door to use.
    pub fn read<R: BlockRead + ?Sized>(storage: &R) -> Result<Self, Error<R::Error>> {
        Self::read_as(storage, Opening::Image)
    }

    /// Reads the header as QEMU opens an image in check mode (`BDRV_O_CHECK`):
    /// an empty refcount table is accepted, and the snapshot table's count
    /// and offset are left to the check, which reports them.
    #[cfg(feature = "alloc")]
    pub(crate) fn read_for_check<R: BlockRead + ?Sized>(
        storage: &R,
    ) -> Result<Self, Error<R::Error>> {
        Self::read_as(storage, Opening::Check)
    }

    fn read_as<R: BlockRead + ?Sized>(
        storage: &R,
        opening: Opening,
    ) -> Result<Self, Error<R::Error>> {
        let file_size = storage.size().map_err(|source| Error::Io {
            source,
            storage: crate::error::Storage::Image,
            offset: 0,
            len: 0,
        })?;
        let io = |source, offset, len| Error::Io {
            source,
            storage: crate::error::Storage::Image,
            offset,
            len,
        };
        let mut bytes = [0u8; HEADER_READ_BYTES];
        read_zero_padded(storage, file_size, 0, &mut bytes)
            .map_err(|source| io(source, 0, HEADER_READ_BYTES as u64))?;
        let mut header = match Self::parse_fixed(&bytes, file_size, opening) {
            Ok(header) => header,
            Err(HeaderError::UnknownIncompatibleFeatures { bits, .. }) => {
                return Err(unknown_features_error(storage, &bytes, file_size, bits).into())
            }
            Err(error) => return Err(error.into()),
        };
        header.read_extensions(storage)?;
        header.check_after_extensions()?;
        header.read_backing_name(storage)?;
        // QEMU loads the bitmap list and tables when it opens the image,
        // for `qemu-img info` and `check` too.
        if let Some(place) = header.bitmaps {
            crate::bitmap::validate(
                storage,
                file_size,
                place,
                header.cluster_size(),
                header.virtual_size(),
            )?;
        }
        Ok(header)
    }

    // Validates the fixed fields (everything but extensions, names and snapshots).
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

    fn read_extensions<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
    ) -> Result<(), Error<R::Error>> {
        let mut extensions = Extensions::new(
            storage,
            self.file_size,
            u64::from(self.header_length),
            self.extensions_end(),
        );
        while let Some(extension) = extensions.next_extension()? {
            match extension {
                Extension::BackingFormat(name) => self.backing_format = Some(name),
                Extension::FeatureNameTable { offset, len } => {
                    self.feature_table = Some((offset, len))
                }
                Extension::DataFile(name) => self.data_file = Some(name),
                Extension::Bitmaps {
                    count,
                    directory_size,
                    directory_offset,
                    reserved,
                } => {
                    // QEMU ignores an inconsistent bitmaps extension (autoclear bit
                    // off) and validates a consistent one.
                    let consistent = self.autoclear.contains(Autoclear::BITMAPS);
                    if consistent && reserved != 0 {
                        return Err(crate::bitmap::BitmapError::ReservedNotZero.into());
                    }
                    let valid = count != 0
                        && count <= 65535
                        && directory_offset % self.cluster_size() == 0
                        && directory_size <= 1024 * 65535;
                    if consistent && !valid {
                        return Err(HeaderError::InvalidBitmapsExtension { len: 24 }.into());
                    }
                    if consistent {
                        self.bitmaps = Some(crate::bitmap::DirectoryPlace {
                            count,
                            offset: directory_offset,
                            size: directory_size,
                        });
                    }
                }
                Extension::CryptoHeader { offset, len } => {
                    self.read_crypto_extension(storage, offset, len)?
                }
                Extension::Unknown { .. } => {}
            }
        }
        Ok(())
    }

    /// QEMU's checks of the full disk encryption header extension, in its
    /// order (`qcow2_read_extensions`), then the LUKS header it points at,
    /// parsed here as QEMU does at open even without a key.
    fn read_crypto_extension<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
        offset: u64,
        len: u32,
    ) -> Result<(), Error<R::Error>> {
        if self.crypt_method != 2 {
            return Err(HeaderError::CryptoExtensionWithoutLuks {
                method: self.crypt_method,
            }
            .into());
        }
        if len != 16 {
            return Err(HeaderError::CryptoExtensionSize { len }.into());
        }
        let mut bytes = [0u8; 16];
        read_located(storage, Storage::Image, self.file_size, offset, &mut bytes)?;
        let (area_offset, rest) = U64::read_from_prefix(&bytes).expect("16 bytes");
        let area_len = U64::read_from_bytes(rest).expect("8 bytes").get();
        let area_offset = area_offset.get();
        let cluster_size = self.cluster_size();
        if !area_offset.is_multiple_of(cluster_size) {
            return Err(HeaderError::CryptoHeaderUnaligned {
                offset: area_offset,
                cluster_size,
            }
            .into());
        }
        self.crypto_area = Some((area_offset, area_len));
        #[cfg(feature = "luks")]
        {
            use crate::crypto::luks::HEADER_BYTES;
            // QEMU reads the header through the area: a shorter area is
            // "Request for data outside of extension header"; past the end
            // of the file reads as zeros.
            if area_len < HEADER_BYTES as u64 {
                return Err(HeaderError::CryptoAreaTooShort { len: area_len }.into());
            }
            let mut luks = [0u8; HEADER_BYTES];
            read_located(
                storage,
                Storage::Image,
                self.file_size,
                area_offset,
                &mut luks,
            )?;
            let header = crate::crypto::LuksHeader::parse(&luks).map_err(HeaderError::Luks)?;
            self.luks = Some(header);
        }
        Ok(())
    }

    fn check_after_extensions(&self) -> Result<(), HeaderError> {
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

    fn read_backing_name<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
    ) -> Result<(), Error<R::Error>> {
        let Some(placeholder) = self.backing_file else {
            return Ok(());
        };
        let len = placeholder.as_bytes().len();
        let offset = self.backing_file_offset;
        let mut bytes = [0u8; MAX_BACKING_NAME_BYTES as usize];
        // As in QEMU: bytes past the end of the file read as zeros, and the
        // name is a C string, so one that starts with NUL names no backing file.
        read_located(
            storage,
            Storage::Image,
            self.file_size,
            offset,
            &mut bytes[..len],
        )?;
        let name_len = bytes[..len].iter().position(|&b| b == 0).unwrap_or(len);
        self.backing_file = if name_len == 0 {
            None
        } else {
            FileName::new(&bytes[..name_len])
        };
        Ok(())
    }

    /// The bits set in one feature word, lowest first.
    pub fn feature_bits(&self, kind: FeatureKind) -> impl Iterator<Item = u8> {
        let word = match kind {
            FeatureKind::Incompatible => self.incompatible.bits(),
            FeatureKind::Compatible => self.compatible.bits(),
            FeatureKind::Autoclear => self.autoclear.bits(),
        };
        (0..64u8).filter(move |bit| word & (1 << bit) != 0)
    }

    /// What a feature bit is called, as `qemu-img info` names it: QEMU's
    /// name, else the image's feature name table's (read from `storage`).
    pub fn feature_label<R: BlockRead + ?Sized>(
        &self,
        storage: &R,
        kind: FeatureKind,
        bit: u8,
    ) -> crate::feature::FeatureLabel {
        use crate::feature::{known_feature_name, FeatureLabel};
        match known_feature_name(kind, bit) {
            Some(name) => FeatureLabel::Known(name),
            None => self
                .feature_name(storage, kind, bit)
                .map_or(FeatureLabel::Unnamed(bit), FeatureLabel::Table),
        }
    }

    /// Finds the feature name table's name for a bit, reading the table from `storage`.
    pub fn feature_name<R: BlockRead + ?Sized>(
        &self,
        storage: &R,
        kind: FeatureKind,
        bit: u8,
    ) -> Option<crate::error::FeatureName> {
        let (offset, len) = self.feature_table?;
        crate::extension::FeatureNames::new(storage, offset, len).name_of(kind, bit)
    }

    /// Where the extension area ends: at the backing file name, else at the end of the first cluster.
    fn extensions_end(&self) -> u64 {
        extensions_end(self.backing_file_offset, self.cluster_size())
    }

    /// What the meaning of table entries depends on.
    pub fn layout(&self) -> crate::table::Layout {
        crate::table::Layout {
            cluster_bits: self.cluster_bits,
            version: self.version,
            extended_l2: self.has_extended_l2(),
            data_file: self.has_data_file(),
        }
    }

    /// The byte range of the header extensions: from the end of the header
    /// to the backing file name, else to the end of the first cluster
    /// (read it with [`Extensions`]).
    pub fn extension_area(&self) -> core::ops::Range<u64> {
        u64::from(self.header_length)..self.extensions_end()
    }

    /// Format version, 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// log2 of the cluster size.
    pub fn cluster_bits(&self) -> u32 {
        self.cluster_bits
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The virtual disk size: the size field rounded down to 512 bytes, as QEMU does.
    pub fn virtual_size(&self) -> u64 {
        self.size_field & !511
    }

    /// The size field exactly as stored.
    pub fn size_field(&self) -> u64 {
        self.size_field
    }

    /// Entries of the active L1 table.
    pub fn l1_entries(&self) -> u32 {
        self.l1_entries
    }

    /// Offset of the active L1 table.
    pub fn l1_table_offset(&self) -> u64 {
        self.l1_table_offset
    }

    /// Offset of the refcount table.
    pub fn refcount_table_offset(&self) -> u64 {
        self.refcount_table_offset
    }

    /// Clusters of the refcount table.
    pub fn refcount_table_clusters(&self) -> u32 {
        self.refcount_table_clusters
    }

    /// log2 of the refcount width in bits (4 = 16-bit refcounts).
    pub fn refcount_order(&self) -> u32 {
        self.refcount_order
    }

    /// Number of internal snapshots.
    pub fn snapshot_count(&self) -> u32 {
        self.snapshot_count
    }

    /// Offset of the snapshot table.
    pub fn snapshots_offset(&self) -> u64 {
        self.snapshots_offset
    }

    /// Incompatible feature bits (all known: unknown ones are refused at open).
    pub fn incompatible_features(&self) -> Incompatible {
        self.incompatible
    }

    /// Compatible feature bits, unknown ones included.
    pub fn compatible_features(&self) -> Compatible {
        self.compatible
    }

    /// Autoclear feature bits, unknown ones included.
    pub fn autoclear_features(&self) -> Autoclear {
        self.autoclear
    }

    /// Length of the header structure (72 for v2).
    pub fn header_length(&self) -> u32 {
        self.header_length
    }

    /// Codec of compressed clusters.
    pub fn compression_type(&self) -> CompressionType {
        self.compression_type
    }

    /// Whether L2 entries are 128-bit with 32 subclusters.
    pub fn has_extended_l2(&self) -> bool {
        self.incompatible.contains(Incompatible::EXTENDED_L2)
    }

    /// Whether guest data lives in an external data file.
    pub fn has_data_file(&self) -> bool {
        self.incompatible.contains(Incompatible::EXTERNAL_DATA_FILE)
    }

    /// The backing file name exactly as stored, if the image has one.
    pub fn backing_file(&self) -> Option<&FileName> {
        self.backing_file.as_ref()
    }

    /// The backing format name exactly as stored ("raw", "qcow2", or an
    /// empty name), if the image has the extension: for printing, as
    /// `qemu-img info` does. What it means is [`Header::backing_format`].
    pub fn backing_format_name(&self) -> Option<&FormatName> {
        self.backing_format.as_ref()
    }

    /// How the backing file is to be read: QEMU's rule for the backing
    /// format extension, the one place it lives.
    pub fn backing_format(&self) -> BackingFormat {
        BackingFormat::of(self.backing_format.as_ref())
    }

    /// The external data file name, if the image has one.
    pub fn data_file(&self) -> Option<&FileName> {
        self.data_file.as_ref()
    }

    /// Where the feature name table lies (offset, length), if the image has one.
    pub fn feature_table(&self) -> Option<(u64, u32)> {
        self.feature_table
    }

    /// Size of the image file when the header was read.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The crypt_method field: 0 none, 1 legacy AES-128-CBC, 2 LUKS.
    pub fn crypt_method(&self) -> u32 {
        self.crypt_method
    }

    /// Whether the image's clusters are encrypted (any crypt_method).
    pub fn is_encrypted(&self) -> bool {
        self.crypt_method != 0
    }

    /// How the image is encrypted, `None` if it is not (feature `luks`).
    #[cfg(feature = "luks")]
    pub fn encryption(&self) -> Option<crate::encryption::Encryption<'_>> {
        crate::encryption::Encryption::of(self)
    }

    /// The LUKS area in the image file (offset, length), from the full disk
    /// encryption header extension; `Some` exactly when crypt_method is 2.
    pub fn crypto_area(&self) -> Option<(u64, u64)> {
        self.crypto_area
    }

    /// The LUKS header of a LUKS-encrypted image, checked at open.
    #[cfg(feature = "luks")]
    pub fn luks_header(&self) -> Option<&crate::crypto::LuksHeader> {
        self.luks.as_ref()
    }
}

fn extensions_end(backing_file_offset: u64, cluster_size: u64) -> u64 {
    if backing_file_offset == 0 {
        cluster_size
    } else {
        backing_file_offset
    }
}

/// QEMU's `validate_table_offset`: aligned, and offset + length does not overflow `i64`.
/// QEMU's `validate_table_offset`: the table is cluster-aligned and ends
/// below 2^63.
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

/// How the image is opened: QEMU relaxes a few rules for `qemu-img check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// To read it (and for `qemu-img info`).
    Image,
    /// To check it (`BDRV_O_CHECK`).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    Check,
}

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
fn unknown_features_error<R: BlockRead + ?Sized>(
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
