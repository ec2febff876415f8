//! The boot measurements' counters (`qcow2_uefi::read_stats`), kept only
//! in a build with the `boot-stats` feature (`uefi-measure --stats`): what
//! the loader read of the virtual disks, what the crate read of the image
//! files for it, and what HTTP stores fetched, printed as one console line
//! when the loader calls `ExitBootServices`.
//!
//! The default build compiles these calls to nothing. The line is printed
//! from the exit event's notification, where the specification allows no
//! boot services; the console's output protocol is called all the same,
//! which OVMF and AAVMF take: a measurement build, never a shipped one.

#[cfg(feature = "boot-stats")]
mod counters {
    use core::ffi::c_void;
    use core::ptr::NonNull;

    use qcow2_uefi::read_stats::ReadStats;
    use spin::Mutex;
    use uefi::boot::{self, EventType, Tpl};
    use uefi::Event;

    pub static STATS: Mutex<ReadStats> = Mutex::new(ReadStats::new());

    /// Prints the line at `ExitBootServices`.
    unsafe extern "efiapi" fn on_exit(_event: Event, _context: Option<NonNull<c_void>>) {
        // A read interrupted by the exit would hold the lock: no line then.
        if let Some(stats) = STATS.try_lock() {
            super::super::info_line(format_args!("{}", *stats));
        }
    }

    pub fn install() {
        // SAFETY: `on_exit` only locks a static and writes a line; it lives
        // as long as the driver (never unloaded).
        let made = unsafe {
            boot::create_event(
                EventType::SIGNAL_EXIT_BOOT_SERVICES,
                Tpl::CALLBACK,
                Some(on_exit),
                None,
            )
        };
        if made.is_err() {
            super::super::error_line(format_args!("boot stats: no exit event"));
        }
    }
}

/// Starts counting (prints the line at `ExitBootServices`).
pub fn install() {
    #[cfg(feature = "boot-stats")]
    counters::install();
}

/// A `ReadBlocks` of `bytes` on a virtual disk.
pub fn disk_read(bytes: usize) {
    #[cfg(feature = "boot-stats")]
    counters::STATS.lock().disk_read(bytes);
    let _ = bytes;
}

/// The crate read `len` bytes at `offset` of the store `key` (its
/// address) of `size` bytes.
pub fn store_read(key: usize, size: u64, offset: u64, len: usize) {
    #[cfg(feature = "boot-stats")]
    counters::STATS.lock().store_read(key, size, offset, len);
    let _ = (key, size, offset, len);
}

/// An HTTP store fetched `bytes` in `requests` range requests.
pub fn fetched(requests: u64, bytes: u64) {
    #[cfg(feature = "boot-stats")]
    counters::STATS.lock().fetched(requests, bytes);
    let _ = (requests, bytes);
}
