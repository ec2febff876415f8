//! The read-only `EFI_BLOCK_IO_PROTOCOL` of one attached image.
//!
//! `BlockIoProtocol` is the first field of the `#[repr(C)]` [`VirtualDisk`],
//! so the `This` pointer the firmware passes back leads to the whole disk.
//! The disk is boxed and never moves while its protocols are installed.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr::NonNull;

use qcow2_uefi::blocks::{self, BlockRequest, Geometry, RequestError, BLOCK_SIZE};
use uefi::boot::{self, Tpl};
use uefi::Status;
use uefi_raw::protocol::block::{BlockIoMedia, BlockIoProtocol, Lba};
use uefi_raw::Boolean;

use super::attach::Layer;
use qcow2_uefi::budget::Reservation;

/// The media id of every virtual disk: the media never changes.
const MEDIA_ID: u32 = 0;

/// One image presented as a disk.
#[repr(C)]
pub struct VirtualDisk {
    /// First, so that a `*const BlockIoProtocol` is a `*const VirtualDisk`.
    block_io: BlockIoProtocol,
    media: BlockIoMedia,
    geometry: Geometry,
    image: Layer,
    /// The image's name in log lines.
    name: String,
    /// Whether a read error was logged already: the first is enough.
    error_logged: Cell<bool>,
    /// The device path installed with the block protocol.
    device_path: Vec<u8>,
    /// The image's caches, counted against the driver's budget until the
    /// disk is freed.
    _memory: Reservation,
}

impl VirtualDisk {
    /// A boxed disk over `image`, with its device path, ready to install.
    ///
    /// The geometry was checked when the image was attached; a geometry
    /// error here is returned as `EFI_UNSUPPORTED`.
    pub fn new(
        image: Layer,
        virtual_size: u64,
        name: String,
        device_path: Vec<u8>,
        memory: Reservation,
    ) -> Result<NonNull<Self>, Status> {
        let geometry = Geometry::new(virtual_size).map_err(|_| Status::UNSUPPORTED)?;
        let media = BlockIoMedia {
            media_id: MEDIA_ID,
            removable_media: Boolean::FALSE,
            media_present: Boolean::TRUE,
            logical_partition: Boolean::FALSE,
            read_only: Boolean::TRUE,
            write_caching: Boolean::FALSE,
            block_size: BLOCK_SIZE,
            // No alignment needed: the crate copies into any buffer.
            io_align: 0,
            last_block: geometry.last_block,
            lowest_aligned_lba: 0,
            logical_blocks_per_physical_block: 1,
            optimal_transfer_length_granularity: 0,
        };
        let disk = Box::new(Self {
            block_io: BlockIoProtocol {
                revision: BlockIoProtocol::REVISION_3,
                media: core::ptr::null(),
                reset,
                read_blocks,
                write_blocks,
                flush_blocks,
            },
            media,
            geometry,
            image,
            name,
            error_logged: Cell::new(false),
            device_path,
            _memory: memory,
        });
        let disk = NonNull::from(Box::leak(disk));
        // SAFETY: the box was just leaked, nothing else refers to it yet;
        // `media` now points into the same allocation, which never moves.
        unsafe {
            let disk_mut = &mut *disk.as_ptr();
            disk_mut.block_io.media = &disk_mut.media;
        }
        Ok(disk)
    }

    /// Frees a disk made by [`new`](Self::new).
    ///
    /// # Safety
    ///
    /// Its protocols must be uninstalled, so no one can call into it again.
    pub unsafe fn free(disk: NonNull<Self>) {
        // SAFETY: made by `Box::leak` in `new`; the caller guarantees no
        // other reference is left.
        drop(unsafe { Box::from_raw(disk.as_ptr()) });
    }

    /// The image's name in log lines.
    pub fn name(disk: NonNull<Self>) -> String {
        // SAFETY: the disk is alive (the caller holds its pointer).
        unsafe { disk.as_ref() }.name.clone()
    }

    /// The interface to install as `EFI_BLOCK_IO_PROTOCOL`.
    pub fn block_io_interface(disk: NonNull<Self>) -> *const c_void {
        disk.as_ptr().cast_const().cast()
    }

    /// The interface to install as `EFI_DEVICE_PATH_PROTOCOL`.
    pub fn device_path_interface(disk: NonNull<Self>) -> *const c_void {
        // SAFETY: the disk is alive (the caller holds its pointer).
        unsafe { disk.as_ref() }.device_path.as_ptr().cast()
    }

    fn read(&self, media_id: u32, lba: Lba, buffer_size: usize, buffer: *mut c_void) -> Status {
        let request = BlockRequest {
            media_id,
            lba,
            buffer_size,
        };
        let range = match self.geometry.request(self.media.media_id, request) {
            Ok(range) => range,
            Err(RequestError::MediaChanged) => return Status::MEDIA_CHANGED,
            Err(RequestError::BadBufferSize { .. }) => return Status::BAD_BUFFER_SIZE,
            Err(RequestError::OutOfRange { .. }) => return Status::INVALID_PARAMETER,
        };
        if buffer_size == 0 {
            return Status::SUCCESS;
        }
        if buffer.is_null() {
            return Status::INVALID_PARAMETER;
        }
        // SAFETY: the caller gives a buffer of `buffer_size` writable bytes
        // (checked non-null above) for the duration of the call.
        let buf = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), buffer_size) };
        // Timer events at TPL_CALLBACK could otherwise re-enter the image
        // while its cache lock is held. Callers of ReadBlocks are at
        // TPL_CALLBACK or below, as the specification requires.
        // SAFETY: raising to TPL_CALLBACK from a TPL at or below it.
        let _tpl = unsafe { boot::raise_tpl(Tpl::CALLBACK) };
        super::boot_stats::disk_read(buffer_size);
        match blocks::read_blocks(&self.image, self.geometry.virtual_size, range.start, buf) {
            Ok(()) => Status::SUCCESS,
            Err(error) => {
                if !self.error_logged.replace(true) {
                    super::error_line(format_args!(
                        "{}: read of {} bytes at LBA {lba}: {error} (later read errors of this disk are not logged)",
                        self.name, buffer_size
                    ));
                }
                Status::DEVICE_ERROR
            }
        }
    }
}

unsafe extern "efiapi" fn reset(_this: *mut BlockIoProtocol, _extended: Boolean) -> Status {
    Status::SUCCESS
}

unsafe extern "efiapi" fn read_blocks(
    this: *const BlockIoProtocol,
    media_id: u32,
    lba: Lba,
    buffer_size: usize,
    buffer: *mut c_void,
) -> Status {
    if this.is_null() {
        return Status::INVALID_PARAMETER;
    }
    // SAFETY: the firmware passes back the interface this driver installed,
    // the first field of a live `VirtualDisk` (`#[repr(C)]`).
    let disk = unsafe { &*this.cast::<VirtualDisk>() };
    disk.read(media_id, lba, buffer_size, buffer)
}

unsafe extern "efiapi" fn write_blocks(
    _this: *mut BlockIoProtocol,
    _media_id: u32,
    _lba: Lba,
    _buffer_size: usize,
    _buffer: *const c_void,
) -> Status {
    Status::WRITE_PROTECTED
}

unsafe extern "efiapi" fn flush_blocks(_this: *mut BlockIoProtocol) -> Status {
    Status::SUCCESS
}
