//! The UEFI side of `qcow2.efi`: entry point, console lines, and modules
//! that turn the plain logic of the library into protocols.
//!
//! - `firmware`: opening and closing protocols by raw GUID (the driver
//!   model's `BY_DRIVER` / `BY_CHILD_CONTROLLER` bookkeeping).
//! - `store`: the `BlockRead` stores under an image: a disk read through
//!   `EFI_DISK_IO_PROTOCOL`, a file on a file system, or an object on a
//!   web server.
//! - `net`: range requests through the firmware's `EFI_HTTP_PROTOCOL`.
//! - `dhcp`: the driver's own DHCP lease (`EFI_DHCP4_PROTOCOL`), which
//!   takes the first offer.
//! - `own_options`: the URLs in the driver's own load options (`Driver####`).
//! - `attach`: opening an image (and, for files, its chain) from a store.
//! - `prompt`: the passphrase of an encrypted image, asked on the console.
//! - `disk`: the read-only `EFI_BLOCK_IO_PROTOCOL` each image produces.
//! - `binding`: `EFI_DRIVER_BINDING_PROTOCOL` Supported / Start / Stop.
//! - `name`: `EFI_COMPONENT_NAME2_PROTOCOL`, the name the shell shows.
//! - `stack`: how much of the firmware's stack `Start` used (its stack line).
//! - `boot_stats`: the boot measurements' read counts (feature `boot-stats`).

mod attach;
mod binding;
mod boot_stats;
mod dhcp;
mod disk;
mod firmware;
mod name;
mod net;
mod own_options;
mod prompt;
mod stack;
mod store;

use core::fmt;

use uefi::prelude::*;

/// The fixed prefix of the driver's console lines; the runner and the
/// tests look for `qcow2.efi: error:`.
const PREFIX: &str = "qcow2.efi:";

/// Prints one line on the console, if there is one.
fn console_line(kind: &str, message: fmt::Arguments) {
    console_text(format_args!("{PREFIX} {kind}{message}\r\n"));
}

/// Prints `text` on the console, if there is one.
///
/// Written by hand rather than with `uefi::println!`, which panics when the
/// console is missing or a write fails: a driver must never take the
/// platform down for a log line.
fn console_text(text: fmt::Arguments) {
    let Some(table) = uefi::table::system_table_raw() else {
        return;
    };
    // SAFETY: the system table pointer set by the entry point stays valid
    // while boot services run, which is the only time the driver runs.
    let table = unsafe { table.as_ref() };
    if table.stdout.is_null() || table.boot_services.is_null() {
        return;
    }
    uefi::system::with_stdout(|out| {
        use core::fmt::Write;
        let _ = out.write_fmt(text);
    });
}

/// A line saying what went wrong, for the user and the runner.
fn error_line(message: fmt::Arguments) {
    console_line("error: ", message);
}

/// A line saying what the driver did.
fn info_line(message: fmt::Arguments) {
    console_line("", message);
}

#[entry]
fn main() -> Status {
    // Before the binding is installed: `Supported` looks for them.
    own_options::read();
    boot_stats::install();
    // Without a name the driver still works: its failure is not fatal.
    let _ = name::install();
    match binding::install() {
        Ok(()) => Status::SUCCESS,
        Err(status) => {
            error_line(format_args!(
                "cannot install the driver binding: {status:?}"
            ));
            status
        }
    }
}
