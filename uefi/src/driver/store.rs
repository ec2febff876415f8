//! The stores an image is read from: a whole disk through
//! `EFI_DISK_IO_PROTOCOL`, or a file through `EFI_FILE_PROTOCOL`.
//!
//! One enum rather than two types, because an image, its external data file
//! and its raw backing share one storage type in the crate's `ImageBuilder`.

use core::cell::RefCell;
use core::fmt;
use core::ptr::NonNull;

use qcow2_reader::BlockRead;
use qcow2_uefi::short_read::{self, ShortReadError};
use uefi::proto::media::file::RegularFile;
use uefi::Status;
use uefi_raw::protocol::disk::DiskIoProtocol;

/// Most bytes asked of a file system driver in one `Read` call.
const FILE_CHUNK_BYTES: usize = 1 << 20;

/// Why a store read failed.
#[derive(Debug)]
pub enum StoreError {
    /// The firmware returned this status.
    Firmware(Status),
    /// A file returned fewer bytes than its size promised.
    Ended {
        /// The first missing byte.
        offset: u64,
    },
    /// The range is outside the store.
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The store's size.
        size: u64,
    },
    /// A read arrived while another was in progress on the same file.
    Busy,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StoreError::Firmware(status) => write!(f, "firmware status {status:?}"),
            StoreError::Ended { offset } => write!(f, "the file ended at offset {offset:#x}"),
            StoreError::OutOfRange { offset, len, size } => write!(
                f,
                "{len} bytes at {offset:#x} are outside the {size} bytes of the store"
            ),
            StoreError::Busy => f.write_str("a read re-entered a read of the same file"),
        }
    }
}

/// A disk held by the driver: its `EFI_DISK_IO_PROTOCOL`, media and size.
pub struct DiskStore {
    /// Valid while the driver holds the disk's DiskIo `BY_DRIVER`: the
    /// firmware calls the driver's `Stop`, which drops this store, before
    /// the protocol can go away.
    disk_io: NonNull<DiskIoProtocol>,
    media_id: u32,
    size: u64,
}

impl DiskStore {
    /// A store over `disk_io` for the media `media_id` of `size` bytes.
    pub fn new(disk_io: NonNull<DiskIoProtocol>, media_id: u32, size: u64) -> Self {
        Self {
            disk_io,
            media_id,
            size,
        }
    }
}

/// A file opened for reading, with its size.
pub struct FileStore {
    file: RefCell<RegularFile>,
    size: u64,
}

impl FileStore {
    /// A store over `file` of `size` bytes.
    pub fn new(file: RegularFile, size: u64) -> Self {
        Self {
            file: RefCell::new(file),
            size,
        }
    }
}

/// Where an image's bytes come from.
pub enum Store {
    /// A whole disk.
    Disk(DiskStore),
    /// A file.
    File(FileStore),
}

impl Store {
    fn check_range(&self, offset: u64, len: usize) -> Result<(), StoreError> {
        let size = self.size_bytes();
        let len = len as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(StoreError::OutOfRange { offset, len, size }),
        }
    }

    fn size_bytes(&self) -> u64 {
        match self {
            Store::Disk(disk) => disk.size,
            Store::File(file) => file.size,
        }
    }
}

impl BlockRead for Store {
    type Error = StoreError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        match self {
            Store::Disk(disk) => {
                let read_disk = {
                    // SAFETY: see `DiskStore::disk_io`.
                    unsafe { disk.disk_io.as_ref() }.read_disk
                };
                // SAFETY: the interface is valid (above), and `buf` is
                // writable for `buf.len()` bytes for the whole call.
                let status = unsafe {
                    read_disk(
                        disk.disk_io.as_ptr(),
                        disk.media_id,
                        offset,
                        buf.len(),
                        buf.as_mut_ptr().cast(),
                    )
                };
                if status.is_error() {
                    return Err(StoreError::Firmware(status));
                }
                Ok(())
            }
            Store::File(file) => {
                let mut file = file.file.try_borrow_mut().map_err(|_| StoreError::Busy)?;
                let len = buf.len() as u64;
                short_read::read_exact(offset, buf, FILE_CHUNK_BYTES, |position, piece| {
                    file.set_position(position)?;
                    file.read(piece)
                        .map_err(|error| error.to_err_without_payload())
                })
                .map_err(|error| match error {
                    ShortReadError::Read { error, .. } => StoreError::Firmware(error.status()),
                    ShortReadError::Ended { offset } => StoreError::Ended { offset },
                    ShortReadError::Overflow => StoreError::OutOfRange {
                        offset,
                        len,
                        size: self.size_bytes(),
                    },
                })
            }
        }
    }

    fn size(&self) -> Result<u64, StoreError> {
        Ok(self.size_bytes())
    }
}
