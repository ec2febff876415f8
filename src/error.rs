//! Errors, one enum per layer, each carrying the numbers that locate the problem.
//!
//! - [`HeaderError`]: the image is refused at open (header, extensions,
//!   table placement, snapshot table).
//! - [`CorruptError`]: a table entry met during a read is invalid; only reads
//!   through that entry fail, as in QEMU.
//! - [`DecodeError`]: a compressed cluster does not decode to one cluster.
//! - [`Error`]: what the image's operations return; wraps the above and the
//!   storage's own error type.

use core::fmt;

/// A fixed-capacity copy of a feature name from the image's feature name table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FeatureName {
    bytes: [u8; 46],
}

impl FeatureName {
    /// Wraps the 46-byte name field of a feature name table row.
    pub fn new(bytes: [u8; 46]) -> Self {
        Self { bytes }
    }

    /// The name up to its first NUL, lossily as text.
    pub fn as_str(&self) -> &str {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(46);
        let bytes = &self.bytes[..len];
        match core::str::from_utf8(bytes) {
            Ok(name) => name,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl fmt::Debug for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Which on-disk table a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// The active (or a snapshot's) L1 table.
    L1,
    /// The refcount table.
    Refcount,
    /// The snapshot table.
    Snapshot,
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::L1 => "L1 table",
            TableKind::Refcount => "refcount table",
            TableKind::Snapshot => "snapshot table",
        })
    }
}

/// Why an image is refused at open. The order of checks follows QEMU's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The first four bytes are not `QFI\xfb`.
    BadMagic {
        /// The bytes found, as a big-endian number.
        found: u32,
    },
    /// Only versions 2 and 3 exist.
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// cluster_bits must be 9..=21 (512 B to 2 MiB).
    ClusterBits {
        /// The cluster_bits field.
        cluster_bits: u32,
    },
    /// A v3 header_length below 104.
    HeaderLengthTooSmall {
        /// The header_length field.
        header_length: u32,
    },
    /// header_length beyond the first cluster.
    HeaderLengthTooLarge {
        /// The header_length field.
        header_length: u32,
        /// The cluster size.
        cluster_size: u64,
    },
    /// backing_file_offset beyond the first cluster.
    BackingFileOffsetTooLarge {
        /// The backing_file_offset field.
        offset: u64,
        /// The cluster size.
        cluster_size: u64,
    },
    /// The compression type byte is neither deflate (0) nor zstd (1).
    UnknownCompressionType {
        /// The compression_type field.
        compression_type: u8,
    },
    /// The compression type and incompatible bit 3 disagree.
    CompressionTypeBitMismatch {
        /// The compression_type field.
        compression_type: u8,
    },
    /// Incompatible feature bits this reader does not know.
    UnknownIncompatibleFeatures {
        /// The unknown bits.
        bits: u64,
        /// The feature name table's name for the lowest unknown bit, if any.
        name: Option<FeatureName>,
    },
    /// Extended L2 entries need subclusters of at least 512 bytes.
    SubclusterTooSmall {
        /// The cluster_bits field.
        cluster_bits: u32,
    },
    /// refcount_order above 6 (64-bit refcounts).
    RefcountOrder {
        /// The refcount_order field.
        refcount_order: u32,
    },
    /// refcount_table_clusters is zero.
    RefcountTableEmpty,
    /// The refcount table is larger than QEMU's 8 MiB limit.
    RefcountTableTooLarge {
        /// The refcount_table_clusters field.
        clusters: u32,
    },
    /// A table's offset is not cluster aligned, or the table overflows.
    InvalidTableOffset {
        /// Which table.
        table: TableKind,
        /// Its offset.
        offset: u64,
        /// Its length in bytes (saturated).
        len: u64,
    },
    /// More than 65536 snapshots.
    TooManySnapshots {
        /// The nb_snapshots field.
        count: u32,
    },
    /// An L1 table larger than QEMU's 32 MiB limit.
    L1TooLarge {
        /// The entry count.
        entries: u32,
    },
    /// The virtual size needs more than `i32::MAX` L1 entries.
    ImageTooBig {
        /// The size field.
        size: u64,
    },
    /// The L1 table does not cover the virtual size.
    L1TooSmall {
        /// The l1_size field.
        entries: u32,
        /// The entries the virtual size needs.
        needed: u64,
    },
    /// crypt_method other than 0, 1 or 2.
    UnknownEncryptionMethod {
        /// The crypt_method field.
        method: u32,
    },
    /// The image is encrypted and this build has no decryption (the `luks`
    /// cargo feature is off).
    Encrypted {
        /// 1 = AES-128-CBC, 2 = LUKS.
        method: u32,
    },
    /// A header extension starts beyond the first cluster.
    ExtensionOffset {
        /// Offset of the extension header.
        offset: u64,
    },
    /// A header extension is longer than the space left for extensions.
    ExtensionTooLarge {
        /// The extension's type.
        kind: u32,
        /// Offset of its data.
        offset: u64,
        /// Its length field.
        len: u32,
    },
    /// A backing format name of 16 bytes or more.
    BackingFormatTooLong {
        /// Its length.
        len: u32,
    },
    /// A full disk encryption header extension in an image whose
    /// crypt_method is not 2 (LUKS).
    CryptoExtensionWithoutLuks {
        /// The crypt_method field.
        method: u32,
    },
    /// A full disk encryption header extension whose length is not 16.
    CryptoExtensionSize {
        /// Its length field.
        len: u32,
    },
    /// The LUKS header's offset is not a multiple of the cluster size.
    CryptoHeaderUnaligned {
        /// The offset in the extension.
        offset: u64,
        /// The cluster size.
        cluster_size: u64,
    },
    /// crypt_method 2 (LUKS) without the full disk encryption header extension.
    MissingCryptoHeader,
    /// The LUKS area is shorter than the 592-byte LUKS1 header (QEMU:
    /// "Request for data outside of extension header").
    CryptoAreaTooShort {
        /// The length in the extension.
        len: u64,
    },
    /// The LUKS header inside the image is refused.
    #[cfg(feature = "luks")]
    Luks(crate::crypto::CryptoError),
    /// Persistent bitmaps QEMU refuses at open: the extension's reserved
    /// field, the bitmap directory or a bitmap table.
    Bitmaps(crate::bitmap::BitmapError),
    /// A bitmaps extension whose length or contents QEMU refuses.
    InvalidBitmapsExtension {
        /// Its length field.
        len: u32,
    },
    /// An external data file name longer than this crate keeps.
    DataFileNameTooLong {
        /// Its length.
        len: u32,
    },
    /// Incompatible bit 2 without a data file name extension.
    MissingDataFileName,
    /// Autoclear bit 1 (raw data file) without incompatible bit 2.
    DataFileRawWithoutDataFile,
    /// The backing file name is longer than 1023 bytes or leaves the first cluster.
    BackingFileNameTooLong {
        /// Its length field.
        len: u32,
    },
    /// A snapshot table entry with more than 1024 bytes of extra data.
    SnapshotExtraDataTooLarge {
        /// Index of the entry.
        index: u32,
        /// Its extra_data_size field.
        size: u32,
    },
    /// The snapshot table is larger than QEMU's 64 MiB limit.
    SnapshotTableTooLarge {
        /// Index of the entry that crossed the limit.
        index: u32,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HeaderError::*;
        match *self {
            BadMagic { found } => write!(f, "not a QCOW2 image: magic is {found:#010x}, expected 0x514649fb"),
            UnsupportedVersion { version } => write!(f, "unsupported QCOW2 version {version} (only 2 and 3 exist)"),
            ClusterBits { cluster_bits } => write!(f, "cluster_bits {cluster_bits} is outside 9..=21"),
            HeaderLengthTooSmall { header_length } => write!(f, "v3 header_length {header_length} is smaller than 104"),
            HeaderLengthTooLarge { header_length, cluster_size } => {
                write!(f, "header_length {header_length} is larger than the cluster size {cluster_size}")
            }
            BackingFileOffsetTooLarge { offset, cluster_size } => {
                write!(f, "backing file name offset {offset:#x} is beyond the first cluster ({cluster_size} bytes)")
            }
            UnknownCompressionType { compression_type } => write!(f, "unknown compression type {compression_type}"),
            CompressionTypeBitMismatch { compression_type } => write!(
                f,
                "compression type {compression_type} disagrees with incompatible feature bit 3 (compression type)"
            ),
            UnknownIncompatibleFeatures { bits, name } => {
                write!(f, "unsupported incompatible features {bits:#x}")?;
                match name {
                    Some(name) => write!(f, " ({})", name.as_str()),
                    None => Ok(()),
                }
            }
            SubclusterTooSmall { cluster_bits } => write!(
                f,
                "unsupported subcluster size: extended L2 entries need cluster_bits >= 14, found {cluster_bits}"
            ),
            RefcountOrder { refcount_order } => write!(f, "refcount_order {refcount_order} is above 6"),
            RefcountTableEmpty => f.write_str("refcount table has zero clusters"),
            RefcountTableTooLarge { clusters } => {
                write!(f, "refcount table of {clusters} clusters is larger than 8 MiB")
            }
            InvalidTableOffset { table, offset, len } => write!(
                f,
                "{table} at offset {offset:#x} ({len} bytes) is not cluster aligned or overflows"
            ),
            TooManySnapshots { count } => write!(f, "{count} snapshots is more than 65536"),
            L1TooLarge { entries } => write!(f, "L1 table of {entries} entries is larger than 32 MiB"),
            ImageTooBig { size } => write!(f, "image is too big: virtual size {size} needs too many L1 entries"),
            L1TooSmall { entries, needed } => write!(
                f,
                "L1 table has {entries} entries but the virtual size needs {needed}"
            ),
            UnknownEncryptionMethod { method } => write!(f, "unsupported encryption method {method}"),
            Encrypted { method } => write!(
                f,
                "image is encrypted ({}); enable the `luks` cargo feature to read it",
                if method == 1 { "AES-128-CBC" } else { "LUKS" }
            ),
            ExtensionOffset { offset } => write!(f, "header extension at offset {offset:#x} is beyond the first cluster"),
            ExtensionTooLarge { kind, offset, len } => write!(
                f,
                "header extension {kind:#010x} at offset {offset:#x} has length {len}, more than the space left"
            ),
            BackingFormatTooLong { len } => write!(f, "backing format name of {len} bytes is too long (at most 15)"),
            CryptoExtensionWithoutLuks { method } => write!(
                f,
                "CRYPTO header extension only expected with LUKS encryption method (crypt_method is {method})"
            ),
            CryptoExtensionSize { len } => write!(f, "CRYPTO header extension size {len}, but expected size 16"),
            CryptoHeaderUnaligned { offset, cluster_size } => write!(
                f,
                "Encryption header offset '{offset}' is not a multiple of cluster size '{cluster_size}'"
            ),
            MissingCryptoHeader => f.write_str("Missing CRYPTO header for crypt method 2"),
            CryptoAreaTooShort { len } => write!(
                f,
                "the LUKS area of {len} bytes cannot hold the 592-byte LUKS header"
            ),
            #[cfg(feature = "luks")]
            Luks(error) => write!(f, "LUKS header: {error}"),
            Bitmaps(error) => write!(f, "{error}"),
            InvalidBitmapsExtension { len } => write!(f, "invalid bitmaps extension (length {len})"),
            DataFileNameTooLong { len } => write!(f, "external data file name of {len} bytes is too long (at most 1023)"),
            MissingDataFileName => f.write_str("external data file bit is set but the image names no data file"),
            DataFileRawWithoutDataFile => f.write_str("data-file-raw bit is set but the image has no external data file"),
            BackingFileNameTooLong { len } => write!(f, "backing file name of {len} bytes is too long"),
            SnapshotExtraDataTooLarge { index, size } => write!(
                f,
                "snapshot table entry {index} has {size} bytes of extra data (at most 1024)"
            ),
            SnapshotTableTooLarge { index } => {
                write!(f, "snapshot table exceeds 64 MiB at entry {index}")
            }
        }
    }
}

/// An invalid table entry met while mapping a guest offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptError {
    /// An L1 entry points at an L2 table that is not cluster aligned.
    L2OffsetUnaligned {
        /// The L2 table offset.
        l2_offset: u64,
        /// The L1 index.
        l1_index: u64,
    },
    /// An L2 entry's host cluster offset is not cluster aligned.
    DataOffsetUnaligned {
        /// The host offset.
        host_offset: u64,
        /// The L2 table offset.
        l2_offset: u64,
        /// The L2 index.
        l2_index: u64,
    },
    /// A ZERO flag in a version 2 image.
    ZeroInVersion2 {
        /// The L2 table offset.
        l2_offset: u64,
        /// The L2 index.
        l2_index: u64,
    },
    /// An extended L2 bitmap marks a subcluster both allocated and zero, or allocates without an offset.
    InvalidSubclusterBitmap {
        /// The bitmap word.
        bitmap: u64,
        /// The L2 table offset.
        l2_offset: u64,
        /// The L2 index.
        l2_index: u64,
    },
    /// A compressed entry in an image with an external data file.
    CompressedWithDataFile {
        /// The L2 table offset.
        l2_offset: u64,
        /// The L2 index.
        l2_index: u64,
    },
    /// With an external data file, the host offset must equal the guest offset.
    DataFileOffsetMismatch {
        /// The host offset in the entry.
        host_offset: u64,
        /// The guest offset it maps.
        guest_offset: u64,
        /// The L2 index.
        l2_index: u64,
    },
}

impl fmt::Display for CorruptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CorruptError::*;
        match *self {
            L2OffsetUnaligned { l2_offset, l1_index } => write!(
                f,
                "L2 table offset {l2_offset:#x} at L1 index {l1_index} is not cluster aligned"
            ),
            DataOffsetUnaligned { host_offset, l2_offset, l2_index } => write!(
                f,
                "cluster offset {host_offset:#x} at L2 index {l2_index} (L2 table {l2_offset:#x}) is not cluster aligned"
            ),
            ZeroInVersion2 { l2_offset, l2_index } => write!(
                f,
                "zero cluster entry at L2 index {l2_index} (L2 table {l2_offset:#x}) in a version 2 image"
            ),
            InvalidSubclusterBitmap { bitmap, l2_offset, l2_index } => write!(
                f,
                "invalid subcluster bitmap {bitmap:#018x} at L2 index {l2_index} (L2 table {l2_offset:#x})"
            ),
            CompressedWithDataFile { l2_offset, l2_index } => write!(
                f,
                "compressed cluster at L2 index {l2_index} (L2 table {l2_offset:#x}) in an image with an external data file"
            ),
            DataFileOffsetMismatch { host_offset, guest_offset, l2_index } => write!(
                f,
                "external data file offset {host_offset:#x} at L2 index {l2_index} does not match guest offset {guest_offset:#x}"
            ),
        }
    }
}

/// A compressed cluster that does not decode to exactly one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The deflate stream is invalid or ran out of input.
    DeflateInvalid,
    /// The deflate stream ended before the cluster was full.
    DeflateShort {
        /// Bytes it produced.
        produced: usize,
    },
    /// The zstd input is not a valid frame sequence, or ran out.
    ZstdInvalid,
    /// The zstd frames ended before the cluster was full, or a frame ran past it.
    ZstdLength {
        /// Bytes produced when decoding stopped.
        produced: usize,
    },
    /// A zstd frame asks for a window larger than the cluster size allows.
    ZstdWindowTooLarge {
        /// The window the frame header asks for.
        window: u64,
        /// The bound.
        limit: u64,
    },
    /// A zstd block's header announces more output than a block of its
    /// frame may hold: all its literals, plus 3 bytes per sequence at least.
    ZstdBlockTooLarge {
        /// The least output the block's header announces.
        announced: usize,
        /// The most a block of this frame may produce.
        limit: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        match *self {
            DeflateInvalid => f.write_str("invalid or truncated deflate stream"),
            DeflateShort { produced } => {
                write!(
                    f,
                    "deflate stream ended after {produced} bytes, before the cluster was full"
                )
            }
            ZstdInvalid => f.write_str("invalid or truncated zstd stream"),
            ZstdLength { produced } => write!(
                f,
                "zstd frames do not end at the cluster boundary (stopped after {produced} bytes)"
            ),
            ZstdWindowTooLarge { window, limit } => {
                write!(
                    f,
                    "zstd window of {window} bytes exceeds the limit of {limit} bytes"
                )
            }
            ZstdBlockTooLarge { announced, limit } => write!(
                f,
                "zstd block announces at least {announced} bytes of output, more than the block limit of {limit} bytes"
            ),
        }
    }
}

/// Which store a failed storage read was aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The image file itself.
    Image,
    /// The external data file.
    DataFile,
    /// A raw backing image.
    RawBacking,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Storage::Image => "image file",
            Storage::DataFile => "external data file",
            Storage::RawBacking => "raw backing file",
        })
    }
}

/// Something the image needs that this build or this open does not provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsupported {
    /// A compressed cluster whose codec's cargo feature is off.
    CodecDisabled {
        /// The codec.
        codec: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// A compressed cluster met, but the configuration reserved no memory for decompression.
    NoDecompressionMemory,
    /// The image names a backing file, and none was supplied.
    MissingBacking,
    /// The image keeps its data in an external data file, and none was supplied.
    MissingDataFile,
    /// The caller's configuration is unusable.
    Config {
        /// Why.
        reason: &'static str,
    },
    /// The image is encrypted and no passphrase or key was given (QEMU:
    /// "Parameter 'encrypt.key-secret' is required for cipher").
    NeedsKey {
        /// The crypt_method field: 1 = AES-128-CBC, 2 = LUKS.
        method: u32,
    },
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Unsupported::CodecDisabled { codec, feature } => write!(
                f,
                "image has {codec}-compressed clusters; enable the `{feature}` cargo feature to read them"
            ),
            Unsupported::NoDecompressionMemory => {
                f.write_str("compressed cluster met, but no decompression memory was configured")
            }
            Unsupported::MissingBacking => {
                f.write_str("image has a backing file, and no backing image was supplied")
            }
            Unsupported::MissingDataFile => {
                f.write_str("image has an external data file, and none was supplied")
            }
            Unsupported::Config { reason } => write!(f, "invalid configuration: {reason}"),
            Unsupported::NeedsKey { method } => write!(
                f,
                "image is encrypted ({}) and no passphrase or key was given",
                if method == 1 { "AES-128-CBC" } else { "LUKS" }
            ),
        }
    }
}

/// Everything an image operation can report. `E` is the storage's error type.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The storage failed to read.
    Io {
        /// The storage's error.
        source: E,
        /// Which storage.
        storage: Storage,
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
    },
    /// The image is refused at open.
    Header(HeaderError),
    /// A table entry met during a read is invalid.
    Corrupt(CorruptError),
    /// A compressed cluster does not decode.
    Decode {
        /// Why.
        error: DecodeError,
        /// The compressed data's host offset.
        host_offset: u64,
        /// The guest offset of the cluster.
        guest_offset: u64,
    },
    /// The image needs something not available.
    Unsupported(Unsupported),
    /// A read beyond the virtual disk.
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The virtual disk size.
        size: u64,
    },
    /// The memory given at open is smaller than the configuration needs.
    MemoryTooSmall {
        /// Bytes the configuration needs.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// Memory for the image's caches could not be allocated
    /// ([`ImageBuilder::try_open_alloc`](crate::ImageBuilder::try_open_alloc)).
    OutOfMemory {
        /// Bytes asked for.
        bytes: usize,
    },
    /// A snapshot id or name that the snapshot table does not have.
    NoSuchSnapshot,
    /// Unlocking the image's key failed (wrong passphrase, work limit,
    /// key material unreadable), or the data could not be decrypted.
    #[cfg(feature = "luks")]
    Crypto(crate::crypto::CryptoError<E>),
    /// A read through a backing image failed in that image: which image of
    /// the chain it is, and its own error. (Needs `alloc`; without it the
    /// backing's error is passed on as it is.)
    #[cfg(feature = "alloc")]
    Backing {
        /// How far down the chain, from the image that reports the error:
        /// 1 is its backing file, 2 that file's backing, and so on.
        depth: u32,
        /// The image's file name, where the opener knows it
        /// ([`chain::open_chain`](crate::chain) names every backing file).
        name: Option<alloc::string::String>,
        /// The error as that image reported it.
        error: alloc::boxed::Box<Error<E>>,
    },
}

impl<E> Error<E> {
    /// This error, met in the backing image of the image that reports it:
    /// one level deeper.
    pub(crate) fn in_backing(self) -> Self {
        #[cfg(feature = "alloc")]
        return match self {
            Error::Backing { depth, name, error } => Error::Backing {
                depth: depth.saturating_add(1),
                name,
                error,
            },
            error => Error::Backing {
                depth: 1,
                name: None,
                error: alloc::boxed::Box::new(error),
            },
        };
        #[cfg(not(feature = "alloc"))]
        self
    }

    /// This error, met in the image whose file is `name`: names it for the
    /// image above, which makes it [`Error::Backing`] one level down.
    /// Errors of images further down keep their own names.
    #[cfg(feature = "alloc")]
    pub fn named(self, name: alloc::string::String) -> Self {
        match self {
            backing @ Error::Backing { .. } => backing,
            error => Error::Backing {
                depth: 0,
                name: Some(name),
                error: alloc::boxed::Box::new(error),
            },
        }
    }

    /// The error where it happened, under any [`Error::Backing`] wrapping.
    pub fn innermost(&self) -> &Self {
        match self {
            #[cfg(feature = "alloc")]
            Error::Backing { error, .. } => error.innermost(),
            error => error,
        }
    }
}

impl<E> From<crate::bitmap::BitmapError> for Error<E> {
    fn from(error: crate::bitmap::BitmapError) -> Self {
        Error::Header(HeaderError::Bitmaps(error))
    }
}

impl<E> From<HeaderError> for Error<E> {
    fn from(error: HeaderError) -> Self {
        Error::Header(error)
    }
}

impl<E> From<CorruptError> for Error<E> {
    fn from(error: CorruptError) -> Self {
        Error::Corrupt(error)
    }
}

impl<E> From<Unsupported> for Error<E> {
    fn from(error: Unsupported) -> Self {
        Error::Unsupported(error)
    }
}

impl<E> From<core::convert::Infallible> for Error<E> {
    fn from(never: core::convert::Infallible) -> Self {
        match never {}
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { source, storage, offset, len } => {
                write!(f, "reading {len} bytes at offset {offset:#x} of the {storage} failed: {source}")
            }
            Error::Header(error) => write!(f, "invalid image: {error}"),
            Error::Corrupt(error) => write!(f, "corrupt image: {error}"),
            Error::Decode { error, host_offset, guest_offset } => write!(
                f,
                "compressed cluster at host offset {host_offset:#x} (guest offset {guest_offset:#x}): {error}"
            ),
            Error::Unsupported(error) => error.fmt(f),
            Error::OutOfRange { offset, len, size } => write!(
                f,
                "read of {len} bytes at offset {offset:#x} is beyond the virtual disk size {size}"
            ),
            Error::MemoryTooSmall { needed, given } => {
                write!(f, "the configuration needs {needed} bytes of memory, {given} given")
            }
            Error::OutOfMemory { bytes } => {
                write!(f, "cannot allocate {bytes} bytes for the image's caches")
            }
            Error::NoSuchSnapshot => f.write_str("no snapshot with that id or name"),
            #[cfg(feature = "luks")]
            Error::Crypto(error) => write!(f, "encryption: {error}"),
            #[cfg(feature = "alloc")]
            Error::Backing { depth, name, error } => {
                write!(f, "backing image {depth} of the chain")?;
                if let Some(name) = name {
                    write!(f, " (\"{name}\")")?;
                }
                write!(f, ": {error}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Backing { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + Send + Sync + 'static> From<Error<E>> for std::io::Error {
    fn from(error: Error<E>) -> Self {
        let kind = match error.innermost() {
            Error::OutOfRange { .. } => std::io::ErrorKind::UnexpectedEof,
            Error::Unsupported(_) => std::io::ErrorKind::Unsupported,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, error)
    }
}
