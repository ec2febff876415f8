//! The firmware side of the passphrase prompt (`qcow2_uefi::passphrase`
//! has its logic): the prompt on the system table's `ConOut`, keys from its
//! `ConIn` (`EFI_SIMPLE_TEXT_INPUT_PROTOCOL`), waited for on its
//! `WaitForKey` event.
//!
//! When it runs (EDK2's BdsDxe, as in Debian's OVMF and AAVMF 2022.11):
//! the prompt comes from `Start`, when the firmware connects a disk or file
//! system holding an encrypted image. A driver loaded from a `Driver####`
//! variable is started by BDS before the consoles are connected
//! (`ProcessLoadOptions` of the driver options comes before
//! `EfiBootManagerConnectAllDefaultConsoles`), but its entry point attaches
//! nothing: the disks and file systems it binds to are connected after the
//! consoles, by OVMF's `PlatformBootManagerAfterConsole` (its connect
//! sequence: `EfiBootManagerConnectAll`, or the devices of QEMU's boot
//! order), so `ConIn` and `ConOut` already include the serial terminal
//! when `Start` asks (seen under OVMF with `Driver0000`: the prompt on the
//! serial console, the passphrase typed there). With the UEFI Shell's
//! `load` or `connect`, the shell's own consoles are the system table's.
//! A firmware built with `PcdConInConnectOnDemand` connects `ConIn` only
//! at its first read, which `ReadKeyStroke` below is.
//!
//! `WaitForEvent` is refused above `TPL_APPLICATION` (a `ConnectController`
//! from a raised TPL): the keys are then polled every 10 ms instead.

use core::fmt;
use core::ptr;

use qcow2_uefi::passphrase::{Console, Key};
use uefi::Status;
use uefi_raw::protocol::console::InputKey;

use super::{console_text, info_line, PREFIX};

/// Microseconds between two polls of `ConIn` when waiting is refused.
const POLL_MICROSECONDS: usize = 10_000;

/// The firmware's console, asking for the passphrase of the image `name`.
pub struct FirmwareConsole<'a> {
    /// How the prompt names the image (its path or device path).
    pub name: &'a str,
}

impl Console for FirmwareConsole<'_> {
    fn prompt(&mut self) {
        console_text(format_args!("{PREFIX} Passphrase for {}: ", self.name));
    }

    fn key(&mut self) -> Option<Key> {
        read_key()
    }

    fn end_line(&mut self) {
        console_text(format_args!("\r\n"));
    }

    fn say(&mut self, message: fmt::Arguments) {
        info_line(message);
    }
}

/// Whether the system table has a `ConIn` to ask on.
pub fn has_input() -> bool {
    uefi::table::system_table_raw().is_some_and(|table| {
        // SAFETY: the system table stays valid while boot services run,
        // the only time the driver runs.
        let table = unsafe { table.as_ref() };
        !table.stdin.is_null() && !table.boot_services.is_null()
    })
}

/// The next key from `ConIn`, waiting for it; `None` when there is no
/// `ConIn` or it fails (a device error), so that the prompt ends.
fn read_key() -> Option<Key> {
    let table = uefi::table::system_table_raw()?;
    // SAFETY: as in `has_input`.
    let table = unsafe { table.as_ref() };
    let input = table.stdin;
    if input.is_null() {
        return None;
    }
    // SAFETY: a non-null boot services table stays valid while they run.
    let services = unsafe { table.boot_services.as_ref() }?;
    loop {
        let mut key = InputKey::default();
        // SAFETY: `input` is the system table's non-null ConIn; the key is
        // a valid out-pointer for the call.
        let status = unsafe { ((*input).read_key_stroke)(input, &mut key) };
        match status {
            Status::SUCCESS => {
                let typed = Key::from_input(key.scan_code, key.unicode_char);
                // The character is part of the passphrase: not left on the stack.
                // SAFETY: a valid, aligned local.
                unsafe { ptr::write_volatile(&mut key, InputKey::default()) };
                return Some(typed);
            }
            Status::NOT_READY => {}
            _ => return None,
        }
        // SAFETY: as above; the event is ConIn's own WaitForKey.
        let wait_for_key = unsafe { (*input).wait_for_key };
        let mut index = 0;
        // SAFETY: one event, read from the protocol; a valid out-pointer.
        let waited = unsafe { (services.wait_for_event)(1, &wait_for_key, &mut index) };
        if waited.is_error() {
            // SAFETY: Stall has no preconditions.
            let _ = unsafe { (services.stall)(POLL_MICROSECONDS) };
        }
    }
}
