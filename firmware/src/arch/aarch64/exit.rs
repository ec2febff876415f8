//! Leaving QEMU through semihosting `SYS_EXIT` (`-semihosting-config
//! enable=on,target=native`), which gives the host process any status.
//!
//! The values are the process statuses the x86_64 firmware produces
//! through isa-debug-exit ((0x10 << 1) | 1 and (0x11 << 1) | 1), so the
//! runner reads both architectures alike: 33 is success, anything else
//! (including a plain 0 from QEMU stopping for another reason) is not.

const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// The status of a successful run.
pub const SUCCESS: u64 = 33;
/// The status of a failed run.
pub const FAILURE: u64 = 35;

/// Stops the machine with `status`; waits forever if semihosting is off
/// (the `hlt` then traps, and the exception handler calls this again,
/// which is why it must not recurse deeper: it parks the CPU instead).
pub fn exit(status: u64) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, status];
    // SAFETY: the semihosting call reads the two-word block and ends the
    // QEMU process; nothing in this program's memory is changed.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            in("x0") SYS_EXIT,
            in("x1") block.as_ptr(),
            options(nostack, readonly)
        );
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}
