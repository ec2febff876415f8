//! Bare-metal demo of `qcow2-reader`: boots under QEMU, finds the virtio
//! block devices, opens the QCOW2 image on the first one (and its backing
//! files on the others) and reads the whole virtual disk through the crate.
//!
//! Only [`arch`] knows the machine (boot, console, exit, counter, where the
//! virtio-mmio transports are); everything else is shared by the
//! architectures. See `firmware/README.md`.

#![no_std]
#![no_main]

extern crate alloc;

#[cfg_attr(target_arch = "x86_64", path = "arch/x86_64/mod.rs")]
#[cfg_attr(target_arch = "aarch64", path = "arch/aarch64/mod.rs")]
mod arch;
mod backing;
mod boot_info;
mod console;
mod control;
mod demo;
mod disk;
mod disks;
mod files;
mod hal;
mod heap;
mod measure;
mod report;
mod stack;
mod virtio;

use core::panic::PanicInfo;

/// First and one-past-last address of the firmware's memory (code, data,
/// `.bss` and the `.noinit` regions: stack, page tables, heap, DMA pool).
pub fn footprint() -> (usize, usize) {
    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    // Only the symbols' addresses are used; the bytes behind them are
    // never read (taking a raw address of an extern static is safe).
    (
        core::ptr::addr_of!(__image_start) as usize,
        core::ptr::addr_of!(__image_end) as usize,
    )
}

/// The architecture-independent entry, called by `arch` once the console
/// works. Runs the demo and leaves QEMU with its outcome.
pub fn main(info: boot_info::BootInfo) -> ! {
    heap::init();
    let mut probe = stack::Probe::start();
    let result = demo::run(&info, &mut probe);
    // The last phase: the reads (or the files), unless the demo stopped
    // before them.
    probe.report(if result.is_ok() {
        "reads"
    } else {
        "until the error"
    });
    match result {
        Ok(()) => {
            println!("demo: ok");
            arch::exit_success()
        }
        Err(error) => {
            println!("error: {error}");
            arch::exit_failure()
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    // The same `error:` prefix as a returned error, so that the runner and
    // the tests treat both alike; the status is a failure either way.
    println!("error: firmware panic: {info}");
    arch::exit_failure()
}
