//! COM1, the 16550 UART at I/O port 0x3f8 (`-serial stdio` in QEMU),
//! driven by the `uart_16550` crate.

use spin::{Mutex, Once};
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

const COM1: u16 = 0x3f8;

/// The UART once [`init`] found it; `None` inside when it is absent, so
/// that output is dropped instead of waiting forever on a missing device.
static UART: Once<Mutex<Option<Uart16550<PioBackend>>>> = Once::new();

/// Puts the UART into a known state: no interrupts, 115200 8N1, FIFOs on.
pub fn init() {
    UART.call_once(|| {
        // SAFETY: COM1 is the standard 16550 on the ISA I/O ports of every
        // x86 PC-like machine QEMU provides; this module is its only user.
        let uart = unsafe { Uart16550::new_port(COM1) };
        let config = Config {
            baud_rate: uart_16550::BaudRate::Baud115200,
            ..Config::DEFAULT
        };
        let uart = uart
            .ok()
            .and_then(|mut uart| uart.init(config).ok().map(|()| uart));
        Mutex::new(uart)
    });
}

/// Writes bytes, waiting for room in the transmitter.
pub fn write_bytes(bytes: &[u8]) {
    if let Some(uart) = UART.get() {
        if let Some(uart) = uart.lock().as_mut() {
            uart.send_bytes_exact(bytes);
        }
    }
}
