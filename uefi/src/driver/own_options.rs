//! The URLs in the driver's own load options (`qcow2_uefi::load_options`):
//! read once by the entry point, attached by `binding` when the firmware
//! connects the volume the driver was loaded from, as if that volume's
//! `\qcow2.cfg` listed them first.
//!
//! Not attached at the entry point: the firmware loads `Driver####`
//! options before it connects the consoles (edk2's `BdsEntry`), so the
//! console lines of an attach there (the URL, the network, an error) would
//! come before there is a console to show them (not tried); and `Start` on a volume is where `\qcow2.cfg` URLs are attached
//! already, with the network brought up the same way.

use alloc::string::String;
use alloc::vec::Vec;

use qcow2_uefi::load_options::{self, LoadOptionsError, MAX_LOAD_OPTIONS_BYTES};
use spin::Mutex;
use uefi::{boot, Handle};
use uefi_raw::protocol::loaded_image::LoadedImageProtocol;

use super::error_line;
use super::firmware::get_protocol;

/// The driver's load options, when they hold anything.
struct Own {
    /// The handle the driver was loaded from, as an address.
    volume: usize,
    /// The URLs, or why the load options are refused.
    urls: Result<Vec<String>, LoadOptionsError>,
}

/// Set once by [`read`]; `None` when the load options list nothing.
static OWN: Mutex<Option<Own>> = Mutex::new(None);

/// Reads and parses the driver image's load options (called once, by the
/// entry point). Empty options (the shell's `load`, a `Driver####` without
/// optional data) list nothing; refused ones are kept to be reported when
/// their volume is started, where the console line will be seen.
pub fn read() {
    let image = boot::image_handle();
    let Ok(interface) = get_protocol(image, &LoadedImageProtocol::GUID) else {
        return;
    };
    // SAFETY: the firmware's LoadedImage of this driver's own image, which
    // stays installed while the driver is loaded; read within this call.
    let loaded = unsafe { interface.cast::<LoadedImageProtocol>().as_ref() };
    let size = loaded.load_options_size as usize;
    if size == 0 || loaded.load_options.is_null() {
        return;
    }
    let urls = if size > MAX_LOAD_OPTIONS_BYTES {
        // Refused by their count alone, without reading them.
        Err(LoadOptionsError::TooLarge { bytes: size })
    } else {
        // SAFETY: the firmware gives `load_options_size` readable bytes at
        // `load_options`, which stay while the image is loaded.
        let bytes = unsafe { core::slice::from_raw_parts(loaded.load_options.cast::<u8>(), size) };
        load_options::urls(bytes)
    };
    if urls.as_ref().is_ok_and(Vec::is_empty) {
        return;
    }
    // SAFETY: the firmware passes a handle or null.
    let Some(volume) = (unsafe { Handle::from_ptr(loaded.device_handle) }) else {
        // Without a volume there is nothing to attach them to; this line
        // may be lost (no console yet), but it is the only place to say it.
        error_line(format_args!(
            "the driver's load options: the driver was not loaded from a volume: ignored"
        ));
        return;
    };
    *OWN.lock() = Some(Own {
        volume: volume.as_ptr() as usize,
        urls,
    });
}

/// The URLs of the load options (or why they are refused) when
/// `controller` is the volume the driver was loaded from.
pub fn for_volume(controller: Handle) -> Option<Result<Vec<String>, LoadOptionsError>> {
    OWN.lock()
        .as_ref()
        .filter(|own| own.volume == controller.as_ptr() as usize)
        .map(|own| own.urls.clone())
}
