//! The PL011 UART of QEMU `virt` at 0x0900_0000 (`-serial stdio`).
//!
//! QEMU's model transmits without any set-up (no baud rate or enable
//! bits needed), so there is no `init` work beyond what firmware on real
//! hardware would have done already.

const UART_BASE: usize = 0x0900_0000;
const DATA: usize = 0x00; // UARTDR
const FLAGS: usize = 0x18; // UARTFR
const FLAG_TX_FULL: u32 = 1 << 5;

/// Nothing to do on QEMU; kept for the architecture interface.
pub fn init() {}

/// Writes bytes, waiting while the transmit FIFO is full.
pub fn write_bytes(bytes: &[u8]) {
    for &byte in bytes {
        // SAFETY: the PL011 registers are mapped (as device memory) at this
        // fixed address on `virt`; reading the flags and writing the data
        // register only sends the byte.
        unsafe {
            while ((UART_BASE + FLAGS) as *const u32).read_volatile() & FLAG_TX_FULL != 0 {
                core::hint::spin_loop();
            }
            ((UART_BASE + DATA) as *mut u32).write_volatile(u32::from(byte));
        }
    }
}
