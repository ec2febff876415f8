//! aarch64 on QEMU `-M virt -cpu cortex-a72`, booted by `-kernel` (ELF).
//!
//! Provides the same items as `arch/x86_64/mod.rs` (see firmware/README.md,
//! "Adding an architecture").

mod boot;

pub use boot::STACK_SIZE;
pub mod console;
mod exit;
mod mem;
mod mmu;

use crate::boot_info::BootInfo;
use crate::virtio::MmioWindow;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTVCT_EL0};

/// Short name for the banner.
pub const NAME: &str = "aarch64 (QEMU virt, -kernel ELF, EL1, MMU on)";

/// `virt`'s virtio-mmio transports: 32 slots of 512 bytes from 0x0a000000.
pub const VIRTIO_MMIO: MmioWindow = MmioWindow {
    base: 0x0a00_0000,
    stride: 0x200,
    count: 32,
};

/// Reads the virtual counter (CNTVCT_EL0).
pub fn counter() -> u64 {
    // The `isb` keeps the read from being hoisted above earlier
    // instructions.
    barrier::isb(barrier::SY);
    CNTVCT_EL0.get()
}

/// The frequency of [`counter`] (CNTFRQ_EL0, set by QEMU) and its source.
pub fn counter_frequency() -> Option<(u64, &'static str)> {
    let hz = CNTFRQ_EL0.get();
    (hz != 0).then_some((hz, "CNTFRQ_EL0"))
}

/// Exits QEMU with the status the runner reads as success.
pub fn exit_success() -> ! {
    exit::exit(exit::SUCCESS)
}

/// Exits QEMU with a failure status.
pub fn exit_failure() -> ! {
    exit::exit(exit::FAILURE)
}

/// Where QEMU puts the device tree for a `-kernel` ELF: the start of RAM.
const DTB_ADDRESS: usize = 0x4000_0000;
const DTB_MAGIC: u32 = 0xd00d_feed;

fn boot_info() -> BootInfo {
    // SAFETY: 0x40000000 is the start of RAM on `virt`, mapped as normal
    // memory, aligned; the word is only read.
    let magic = unsafe { (DTB_ADDRESS as *const u32).read_volatile() };
    BootInfo {
        loader: if u32::from_be(magic) == DTB_MAGIC {
            "QEMU -kernel (ELF), device tree at 0x40000000"
        } else {
            "QEMU -kernel (ELF), no device tree found"
        },
        ram_bytes: None,
        footprint_in_ram: None,
    }
}

/// Called by the boot code with a stack and a zeroed `.bss`, MMU still off.
#[no_mangle]
extern "C" fn aarch64_rust_entry() -> ! {
    // SAFETY: this is the first code after the boot assembly, on the only
    // CPU, with the MMU off: what `mmu::enable` requires.
    unsafe { mmu::enable() };
    console::init();
    crate::main(boot_info())
}

/// Called by every exception vector: nothing is expected to trap, so any
/// exception is reported as an error and ends the run.
#[no_mangle]
extern "C" fn aarch64_exception(syndrome: u64, address: u64, fault_address: u64) -> ! {
    crate::println!(
        "error: CPU exception: ESR_EL1 {syndrome:#x}, ELR_EL1 {address:#x}, FAR_EL1 {fault_address:#x}"
    );
    exit::exit(exit::FAILURE)
}
