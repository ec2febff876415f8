//! Header extensions, read one at a time from the storage without allocating.

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::block::{read_located, read_zero_padded, BlockRead};
use crate::error::{Error, FeatureName, HeaderError, Storage};
use crate::feature::FeatureKind;
use crate::name::{FileName, FormatName};

/// Extension type: end of the extension area.
pub const END: u32 = 0x0000_0000;
/// Extension type: backing file format name.
pub const BACKING_FORMAT: u32 = 0xe279_2aca;
/// Extension type: feature name table.
pub const FEATURE_NAME_TABLE: u32 = 0x6803_f857;
/// Extension type: persistent bitmaps.
pub const BITMAPS: u32 = 0x2385_2875;
/// Extension type: full disk encryption header location.
pub const CRYPTO_HEADER: u32 = 0x0537_be77;
/// Extension type: external data file name.
pub const DATA_FILE: u32 = 0x4441_5441;

const ROW_BYTES: u32 = 48;

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawExtensionHeader {
    kind: U32,
    len: U32,
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawBitmaps {
    nb_bitmaps: U32,
    reserved: U32,
    directory_size: U64,
    directory_offset: U64,
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawFeatureRow {
    kind: u8,
    bit: u8,
    name: [u8; 46],
}

/// One header extension, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Without an allocator a name cannot be boxed; an extension is moved once,
// into the header, so its size costs nothing that matters.
#[allow(clippy::large_enum_variant)]
pub enum Extension {
    /// The backing file's format.
    BackingFormat(FormatName),
    /// Where the feature name table lies; read it with [`FeatureNames`].
    FeatureNameTable {
        /// Offset of the first row.
        offset: u64,
        /// Length in bytes.
        len: u32,
    },
    /// Persistent bitmaps (irrelevant for reading).
    Bitmaps {
        /// Number of bitmaps.
        count: u32,
        /// Size of the bitmap directory.
        directory_size: u64,
        /// Offset of the bitmap directory.
        directory_offset: u64,
        /// The reserved field (QEMU refuses a consistent extension where it is not zero).
        reserved: u32,
    },
    /// Full disk encryption header location (only valid with LUKS): the
    /// extension's own place; [`Header`](crate::Header) checks it against
    /// crypt_method and reads the LUKS area's offset and length from it.
    CryptoHeader {
        /// Offset of the extension's data.
        offset: u64,
        /// Its length field.
        len: u32,
    },
    /// The external data file name.
    DataFile(FileName),
    /// An extension this crate does not know; QEMU skips these too.
    Unknown {
        /// Its type.
        kind: u32,
        /// Offset of its data.
        offset: u64,
        /// Its length.
        len: u32,
    },
}

/// Iterates over the header extensions between the header and the end of the extension area.
pub struct Extensions<'s, R: ?Sized> {
    storage: &'s R,
    file_size: u64,
    offset: u64,
    end: u64,
}

impl<'s, R: BlockRead + ?Sized> Extensions<'s, R> {
    /// Extensions from `start` (the header length) to `end` (backing name or first cluster end).
    pub fn new(storage: &'s R, file_size: u64, start: u64, end: u64) -> Self {
        Self {
            storage,
            file_size,
            offset: start,
            end,
        }
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error<R::Error>> {
        read_located(self.storage, Storage::Image, self.file_size, offset, buf)
    }

    /// The next extension, `None` at the end marker or when the area runs out.
    pub fn next_extension(&mut self) -> Result<Option<Extension>, Error<R::Error>> {
        if self.offset >= self.end {
            return Ok(None);
        }
        let mut raw = [0u8; 8];
        self.read(self.offset, &mut raw)?;
        let header = RawExtensionHeader::ref_from_bytes(&raw).expect("8 bytes");
        let (kind, len) = (header.kind.get(), header.len.get());
        let data_offset = self.offset + 8;
        // QEMU checks the length against the room left before it looks at the type.
        if u64::from(len) > self.end.saturating_sub(data_offset) {
            self.end = self.offset;
            return Err(HeaderError::ExtensionTooLarge {
                kind,
                offset: data_offset,
                len,
            }
            .into());
        }
        self.offset = data_offset + u64::from(len).next_multiple_of(8);
        let extension = match kind {
            END => {
                self.end = self.offset;
                return Ok(None);
            }
            BACKING_FORMAT => {
                let mut bytes = [0u8; 15];
                let bytes = bytes
                    .get_mut(..len as usize)
                    .ok_or(HeaderError::BackingFormatTooLong { len })?;
                self.read(data_offset, bytes)?;
                // A C string in QEMU too: it ends at the first NUL, and an
                // empty one names no format (the backing file is probed).
                let text_len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                Extension::BackingFormat(
                    FormatName::new(&bytes[..text_len]).expect("length checked"),
                )
            }
            FEATURE_NAME_TABLE => Extension::FeatureNameTable {
                offset: data_offset,
                len,
            },
            BITMAPS => {
                if len != 24 {
                    return Err(HeaderError::InvalidBitmapsExtension { len }.into());
                }
                let mut bytes = [0u8; 24];
                self.read(data_offset, &mut bytes)?;
                let bitmaps = RawBitmaps::ref_from_bytes(&bytes).expect("24 bytes");
                Extension::Bitmaps {
                    count: bitmaps.nb_bitmaps.get(),
                    directory_size: bitmaps.directory_size.get(),
                    directory_offset: bitmaps.directory_offset.get(),
                    reserved: bitmaps.reserved.get(),
                }
            }
            // Its checks need crypt_method, which the header has.
            CRYPTO_HEADER => Extension::CryptoHeader {
                offset: data_offset,
                len,
            },
            DATA_FILE => {
                let mut bytes = [0u8; 1023];
                let bytes = bytes
                    .get_mut(..len as usize)
                    .ok_or(HeaderError::DataFileNameTooLong { len })?;
                self.read(data_offset, bytes)?;
                // QEMU keeps the name as a C string: it ends at the first NUL.
                let text_len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                Extension::DataFile(FileName::new(&bytes[..text_len]).expect("length checked"))
            }
            _ => Extension::Unknown {
                kind,
                offset: data_offset,
                len,
            },
        };
        Ok(Some(extension))
    }
}

/// One row of the feature name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureNameRow {
    /// Which feature word; `None` for a kind byte QEMU does not define.
    pub kind: Option<FeatureKind>,
    /// Bit number within the word.
    pub bit: u8,
    /// The name.
    pub name: FeatureName,
}

/// Iterates over the rows of a feature name table, reading each from the storage.
pub struct FeatureNames<'s, R: ?Sized> {
    storage: &'s R,
    offset: u64,
    rows_left: u32,
}

impl<'s, R: BlockRead + ?Sized> FeatureNames<'s, R> {
    /// The rows of the table at `offset` of `len` bytes (a partial last row is ignored).
    pub fn new(storage: &'s R, offset: u64, len: u32) -> Self {
        Self {
            storage,
            offset,
            rows_left: len / ROW_BYTES,
        }
    }

    /// The name the table gives `bit` of `kind`, skipping rows it cannot read.
    pub fn name_of(self, kind: FeatureKind, bit: u8) -> Option<FeatureName> {
        self.filter_map(Result::ok)
            .find(|row| row.kind == Some(kind) && row.bit == bit)
            .map(|row| row.name)
    }
}

impl<R: BlockRead + ?Sized> Iterator for FeatureNames<'_, R> {
    type Item = Result<FeatureNameRow, R::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rows_left = self.rows_left.checked_sub(1)?;
        let mut bytes = [0u8; ROW_BYTES as usize];
        let size = match self.storage.size() {
            Ok(size) => size,
            Err(error) => return Some(Err(error)),
        };
        if let Err(error) = read_zero_padded(self.storage, size, self.offset, &mut bytes) {
            self.rows_left = 0;
            return Some(Err(error));
        }
        self.offset += u64::from(ROW_BYTES);
        let row = RawFeatureRow::ref_from_bytes(&bytes).expect("48 bytes");
        Some(Ok(FeatureNameRow {
            kind: FeatureKind::from_table_byte(row.kind),
            bit: row.bit,
            name: FeatureName::new(row.name),
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.rows_left as usize))
    }
}
