//! The demo (temporary: raw device read).

use crate::disk::VirtioDisk;
use crate::{arch, println};
use alloc::vec::Vec;
use crate::shim::BlockRead;

pub fn run(info: &arch::BootInfo) -> Result<(), &'static str> {
    println!("qcow2-firmware on {}", arch::NAME);
    println!("loader: {} ram {:?} inside {:?}", info.loader, info.ram_bytes, info.footprint_in_ram);
    println!("counter: {:?}", arch::counter_frequency());
    let mut disks = Vec::new();
    // SAFETY: called once.
    for transport in unsafe { crate::virtio::block_devices(&arch::VIRTIO_MMIO) } {
        let disk = VirtioDisk::new(transport).map_err(|_| "init")?;
        println!("disk slot {:?} serial {} size {}", disk.location(), disk.serial(), disk.size().unwrap());
        disks.push(disk);
    }
    let disk = disks.first().ok_or("no disk")?;
    let mut buf = alloc::vec![0u8; 1 << 20];
    let size = disk.size().unwrap();
    let (hz, _) = arch::counter_frequency().ok_or("no hz")?;
    for _ in 0..2 {
    let start = arch::counter();
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(buf.len() as u64) as usize;
        disk.read_at(offset, &mut buf[..n]).map_err(|_| "read")?;
        offset += n as u64;
    }
    let ticks = arch::counter() - start;
    println!("raw {} bytes in {} us: {} MB/s", size, ticks * 1_000_000 / hz, size * hz / ticks / 1_000_000);
    }
    let mut b = [0u8; 100];
    disk.read_at(1000, &mut b).map_err(|_| "read")?;
    disk.read_at(511, &mut buf[..20000]).map_err(|_| "read")?;
    println!("requests {}", disk.requests());
    Ok(())
}
