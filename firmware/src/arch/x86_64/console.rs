//! COM1: a 16550 UART at I/O port 0x3f8 (`-serial stdio` in QEMU).

use super::port::{inb, outb};

const COM1: u16 = 0x3f8;
const THR: u16 = COM1; // transmit holding register (DLAB = 0)
const IER: u16 = COM1 + 1; // interrupt enable
const FCR: u16 = COM1 + 2; // FIFO control
const LCR: u16 = COM1 + 3; // line control
const MCR: u16 = COM1 + 4; // modem control
const LSR: u16 = COM1 + 5; // line status
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Puts the UART into a known state: no interrupts, 115200 8N1, FIFOs on.
pub fn init() {
    // SAFETY: COM1 is the standard 16550 on the ISA I/O ports of every
    // x86 PC-like machine QEMU provides; these writes only configure it.
    unsafe {
        outb(IER, 0x00);
        outb(LCR, 0x80); // DLAB on: the next two ports set the divisor
        outb(COM1, 0x01); // divisor 1 = 115200 baud
        outb(COM1 + 1, 0x00);
        outb(LCR, 0x03); // 8 data bits, no parity, 1 stop bit, DLAB off
        outb(FCR, 0x07); // enable and clear the FIFOs
        outb(MCR, 0x03); // DTR | RTS
    }
}

/// Writes bytes, waiting for room in the transmitter.
pub fn write_bytes(bytes: &[u8]) {
    for &byte in bytes {
        // SAFETY: reading the line status and writing the transmit register
        // of COM1 has no effect beyond sending the byte.
        unsafe {
            // An absent UART reads as 0xff (THR empty), so this cannot hang.
            while inb(LSR) & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            outb(THR, byte);
        }
    }
}
