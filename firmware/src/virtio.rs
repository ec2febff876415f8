//! Finding virtio block devices on a machine's virtio-mmio transports.
//!
//! Both machines (x86 `microvm`, arm `virt`) have a row of fixed-size
//! transport windows; QEMU puts the first `-device virtio-*-device` of its
//! command line in the highest slot and fills downwards, so walking the
//! slots from the top yields the disks in command-line order. An empty
//! slot reads as device id 0.

use core::ptr::NonNull;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

/// Where a machine's virtio-mmio transports are.
pub struct MmioWindow {
    /// Address of slot 0.
    pub base: usize,
    /// Distance between slots, also the size of one slot's registers.
    pub stride: usize,
    /// Number of slots.
    pub count: usize,
}

const MAGIC: u32 = 0x7472_6976; // "virt"
const DEVICE_ID_OFFSET: usize = 8;
const DEVICE_ID_BLOCK: u32 = 2;

/// A block device's transport and the slot it sits in.
pub struct BlockTransport {
    /// Slot number in the machine's window.
    pub slot: usize,
    /// Address of the slot's registers.
    pub address: usize,
    /// The transport, ready for `VirtIOBlk::new`.
    pub transport: MmioTransport<'static>,
}

/// The block devices of `window`, in QEMU command-line order.
///
/// Each slot is probed once, so every transport returned owns its slot;
/// calling this twice would alias them, hence the `unsafe`.
///
/// # Safety
/// `window` must describe the machine's real virtio-mmio transports,
/// identity-mapped as device memory, and this must be called only once.
pub unsafe fn block_devices(window: &MmioWindow) -> impl Iterator<Item = BlockTransport> + '_ {
    (0..window.count).rev().filter_map(move |slot| {
        let address = window.base + slot * window.stride;
        let header = address as *const u32;
        // SAFETY: the caller promises that the window is mapped MMIO;
        // the magic and device-id registers are read-only and reading
        // them has no side effects. `address` is 4-byte aligned.
        let (magic, device_id) = unsafe {
            (
                header.read_volatile(),
                header.byte_add(DEVICE_ID_OFFSET).read_volatile(),
            )
        };
        if magic != MAGIC || device_id != DEVICE_ID_BLOCK {
            return None;
        }
        let header = NonNull::new(address as *mut VirtIOHeader)?;
        // SAFETY: the slot holds a virtio-mmio register block of `stride`
        // bytes (header and config space), valid forever, and this is the
        // only transport made for it (the caller calls this once).
        let transport = unsafe { MmioTransport::new(header, window.stride) }.ok()?;
        (transport.device_type() == DeviceType::Block).then_some(BlockTransport {
            slot,
            address,
            transport,
        })
    })
}
