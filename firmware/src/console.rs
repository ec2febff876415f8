//! `print!`/`println!` over the architecture's serial port.

use core::fmt;

/// A handle on the serial console; writing never fails.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Terminals and log files want CR LF; the tests strip the CR.
        for (index, line) in text.split('\n').enumerate() {
            if index > 0 {
                crate::arch::console::write_bytes(b"\r\n");
            }
            crate::arch::console::write_bytes(line.as_bytes());
        }
        Ok(())
    }
}

/// Formats to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        // The firmware runs on one CPU with interrupts off, so no lock is
        // needed: output can only interleave with a panic message, which
        // is the last thing printed.
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Console, format_args!($($arg)*));
    }};
}

/// Formats a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {{
        $crate::print!($($arg)*);
        $crate::print!("\n");
    }};
}
