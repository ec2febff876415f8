//! The image header, validated at the door into a plain [`Header`].
//!
//! One job per file: the on-disk layout and QEMU's limits (`layout`), the
//! rules QEMU applies at open, in QEMU's order, so that an image QEMU
//! refuses is refused here with a named reason (`validate`), and the
//! header extensions (`extensions`). This file owns the [`Header`] value,
//! the order of reading, and the accessors.

use crate::block::{read_zero_padded, BlockRead};
use crate::error::{Error, HeaderError};
use crate::feature::{Autoclear, Compatible, FeatureKind, Incompatible};
use crate::name::{FileName, FormatName};

mod extensions;
mod layout;
mod validate;

pub use layout::*;
#[cfg(feature = "alloc")]
pub(crate) use validate::check_snapshot_table;
pub(crate) use validate::check_table_offset;
use validate::{extensions_end, unknown_features_error};

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
    /// (read it with [`Extensions`](crate::extension::Extensions)).
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

/// How the image is opened: QEMU relaxes a few rules for `qemu-img check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// To read it (and for `qemu-img info`).
    Image,
    /// To check it (`BDRV_O_CHECK`).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    Check,
}
