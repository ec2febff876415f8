//! x86_64 on QEMU `-M microvm`, booted through PVH.
//!
//! What every architecture module provides (see firmware/README.md):
//! the entry point that calls [`crate::main`], `console::{init,
//! write_bytes}`, `exit_success`/`exit_failure`, `counter` and
//! `counter_frequency`, the virtio-mmio window [`VIRTIO_MMIO`] and the
//! memory description in [`BootInfo`].

mod boot;

pub use boot::STACK_SIZE;
pub mod console;
mod exit;
mod mem;
mod timer;

use crate::boot_info::BootInfo;
use crate::virtio::MmioWindow;

/// Short name for the banner.
pub const NAME: &str = "x86_64 (QEMU microvm, PVH boot)";

/// microvm's virtio-mmio transports: 24 slots of 512 bytes (8 with
/// `acpi=off`; the empty ones read as device id 0).
pub const VIRTIO_MMIO: MmioWindow = MmioWindow {
    base: 0xfeb0_0000,
    stride: 0x200,
    count: 24,
};

pub use timer::counter;

/// The TSC frequency found at boot, and its source: set once, before
/// anything reads it.
static COUNTER_FREQUENCY: spin::Once<Option<(u64, &'static str)>> = spin::Once::new();

/// The frequency of [`counter`] in Hz and how it was found, if known.
pub fn counter_frequency() -> Option<(u64, &'static str)> {
    COUNTER_FREQUENCY.get().copied().flatten()
}

/// Exits QEMU with the status the runner reads as success.
pub fn exit_success() -> ! {
    exit::exit(exit::SUCCESS)
}

/// Exits QEMU with a failure status.
pub fn exit_failure() -> ! {
    exit::exit(exit::FAILURE)
}

const HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    // version >= 1
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

fn boot_info(start_info: usize) -> BootInfo {
    let mut info = BootInfo {
        loader: "unknown loader (no hvm_start_info)",
        ram_bytes: None,
        footprint_in_ram: None,
    };
    if start_info == 0 || !start_info.is_multiple_of(8) {
        return info;
    }
    // SAFETY: the PVH loader passes the physical (= virtual, identity
    // mapping) address of an hvm_start_info; the address is non-zero and
    // aligned, and the structure is only read.
    let start = unsafe { &*(start_info as *const HvmStartInfo) };
    if start.magic != HVM_START_MAGIC {
        return info;
    }
    info.loader = "PVH (hvm_start_info)";
    if start.version < 1 || start.memmap_paddr == 0 || start.memmap_entries == 0 {
        return info;
    }
    let Ok(address) = usize::try_from(start.memmap_paddr) else {
        return info;
    };
    if !address.is_multiple_of(8) {
        return info;
    }
    // SAFETY: version 1 of the structure has a memory map of
    // `memmap_entries` entries at `memmap_paddr`, written by the loader in
    // low memory outside the firmware; it is only read. The count is
    // capped so that a corrupt value cannot walk far.
    let map = unsafe {
        core::slice::from_raw_parts(
            address as *const HvmMemmapEntry,
            start.memmap_entries.min(128) as usize,
        )
    };
    let (first, last) = crate::footprint();
    let mut ram = 0u64;
    let mut inside = false;
    for entry in map.iter().filter(|e| e.kind == E820_RAM) {
        ram = ram.saturating_add(entry.size);
        let end = entry.addr.saturating_add(entry.size);
        inside |= entry.addr <= first as u64 && last as u64 <= end;
    }
    info.ram_bytes = Some(ram);
    info.footprint_in_ram = Some(inside);
    info
}

/// Called by the boot code in long mode with a stack and a zeroed `.bss`.
#[no_mangle]
extern "C" fn x86_64_rust_entry(start_info: u32) -> ! {
    console::init();
    let info = boot_info(start_info as usize);
    COUNTER_FREQUENCY.call_once(timer::calibrate);
    crate::main(info)
}
