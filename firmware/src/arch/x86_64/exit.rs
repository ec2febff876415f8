//! Leaving QEMU through `isa-debug-exit` (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
//!
//! Writing `v` to the port makes QEMU exit with status `(v << 1) | 1`, so a
//! guest can never produce status 0: the runner maps [`SUCCESS`]'s status
//! (33) to 0 and every other status to a failure.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The value written on success; QEMU exits with status 33.
pub const SUCCESS: u32 = 0x10;
/// The value written on failure; QEMU exits with status 35.
pub const FAILURE: u32 = 0x11;

/// Stops the machine with the given value; halts forever if the exit
/// device is missing.
pub fn exit(value: u32) -> ! {
    // SAFETY: writing to the isa-debug-exit port ends the QEMU process; on a
    // machine without the device the write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(value) };
    x86_64::instructions::interrupts::disable();
    loop {
        // With interrupts off this parks the CPU; nothing else runs.
        x86_64::instructions::hlt();
    }
}
