//! Feature bits of the v3 header, and the names QEMU gives them.

use bitflags::bitflags;

use crate::error::FeatureName;

bitflags! {
    /// Incompatible features: a reader that does not know a set bit must refuse the image.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Incompatible: u64 {
        /// Refcounts may be stale; irrelevant for reading.
        const DIRTY = 1 << 0;
        /// Metadata may be corrupt; QEMU still opens such images read-only.
        const CORRUPT = 1 << 1;
        /// Guest data lives in an external data file.
        const EXTERNAL_DATA_FILE = 1 << 2;
        /// The compression type field of the header is valid (and not deflate).
        const COMPRESSION_TYPE = 1 << 3;
        /// L2 entries are 128 bits wide, with 32 subclusters each.
        const EXTENDED_L2 = 1 << 4;
    }
}

bitflags! {
    /// Compatible features: safe to ignore.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Compatible: u64 {
        /// Refcount updates may be deferred; irrelevant for reading.
        const LAZY_REFCOUNTS = 1 << 0;
    }
}

bitflags! {
    /// Autoclear features: cleared by writers that do not know them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Autoclear: u64 {
        /// The bitmaps extension is consistent with the image.
        const BITMAPS = 1 << 0;
        /// The external data file is a valid raw image on its own.
        const DATA_FILE_RAW = 1 << 1;
    }
}

/// Which of the three feature words a bit belongs to, as in the feature name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Incompatible features (table kind 0).
    Incompatible,
    /// Compatible features (table kind 1).
    Compatible,
    /// Autoclear features (table kind 2).
    Autoclear,
}

impl FeatureKind {
    /// The three words, in header order.
    pub const ALL: [FeatureKind; 3] = [Self::Incompatible, Self::Compatible, Self::Autoclear];

    /// The word's name as `qemu-img info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Incompatible => "incompatible",
            Self::Compatible => "compatible",
            Self::Autoclear => "autoclear",
        }
    }

    /// Decodes the kind byte of a feature name table row.
    pub fn from_table_byte(kind: u8) -> Option<Self> {
        match kind {
            0 => Some(Self::Incompatible),
            1 => Some(Self::Compatible),
            2 => Some(Self::Autoclear),
            _ => None,
        }
    }
}

/// What a set feature bit is called: QEMU's name for the bits it knows,
/// else the name in the image's own feature name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureLabel {
    /// QEMU's name ([`known_feature_name`]).
    Known(&'static str),
    /// The image's feature name table's name.
    Table(FeatureName),
    /// Named nowhere: the bit number.
    Unnamed(u8),
}

impl core::fmt::Display for FeatureLabel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Known(name) => f.write_str(name),
            Self::Table(name) => f.write_str(name.as_str()),
            Self::Unnamed(bit) => write!(f, "unknown bit {bit}"),
        }
    }
}

/// The name QEMU uses for a known feature bit (as in `qemu-img info`), if any.
pub fn known_feature_name(kind: FeatureKind, bit: u8) -> Option<&'static str> {
    let name = match (kind, bit) {
        (FeatureKind::Incompatible, 0) => "dirty bit",
        (FeatureKind::Incompatible, 1) => "corrupt bit",
        (FeatureKind::Incompatible, 2) => "external data file",
        (FeatureKind::Incompatible, 3) => "compression type",
        (FeatureKind::Incompatible, 4) => "extended L2 entries",
        (FeatureKind::Compatible, 0) => "lazy refcounts",
        (FeatureKind::Autoclear, 0) => "bitmaps",
        (FeatureKind::Autoclear, 1) => "raw external data",
        _ => return None,
    };
    Some(name)
}
