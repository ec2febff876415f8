//! Discovery: every virtio block device of the machine, initialised, in
//! QEMU command-line order (disk 0 is the first `-device`).

use crate::demo::DemoError;
use crate::disk::VirtioDisk;
use crate::{arch, println};
use alloc::vec::Vec;
use qcow2_reader::BlockRead;

/// Initialises every virtio block device and prints one line for each.
pub fn discover() -> Result<&'static [VirtioDisk], DemoError> {
    let mut disks = Vec::new();
    // SAFETY: the architecture module's window is the machine's virtio-mmio
    // transport area, identity-mapped; `discover` runs once, so each
    // transport is owned by exactly one `VirtioDisk`.
    for transport in unsafe { crate::virtio::block_devices(&arch::VIRTIO_MMIO) } {
        let slot = transport.slot;
        let disk = VirtioDisk::new(transport).map_err(|error| DemoError::Device { slot, error })?;
        let (slot, address) = disk.location();
        println!(
            "disk {}: virtio-mmio slot {slot} at {address:#x}, {} bytes, serial \"{}\"{}",
            disks.len(),
            disk.size().unwrap_or(0),
            disk.serial(),
            if disk.read_only() { ", read-only" } else { "" }
        );
        disks.push(disk);
    }
    if disks.is_empty() {
        return Err(DemoError::NoDisk);
    }
    // The disks serve the images until the machine stops.
    Ok(disks.leak())
}
