//! Reading the header extensions into the [`Header`]: the backing file
//! name and format, the data file name, the feature name table and the
//! encryption header.

use zerocopy::byteorder::big_endian::U64;
use zerocopy::FromBytes;

use super::*;
use crate::block::{read_located, BlockRead};
use crate::error::{Error, HeaderError, Storage};
use crate::extension::{Extension, Extensions};
use crate::feature::Autoclear;
use crate::name::FileName;

impl Header {
    pub(super) fn read_extensions<R: BlockRead + ?Sized>(
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
    pub(super) fn read_crypto_extension<R: BlockRead + ?Sized>(
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

    pub(super) fn read_backing_name<R: BlockRead + ?Sized>(
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
}
