//! `EFI_COMPONENT_NAME2_PROTOCOL`: the driver's name in the shell's
//! `drivers` and `dh` output (without it they show `<null string>`).

use alloc::boxed::Box;
use uefi::{boot, cstr16, CStr16, Status};
use uefi_raw::protocol::driver::ComponentName2Protocol;
use uefi_raw::Handle;

/// The one language offered, as RFC 4646 codes separated by `;`.
const LANGUAGES: &[u8] = b"en\0";

const DRIVER_NAME: &CStr16 = cstr16!("QCOW2 image driver (qcow2.efi)");

/// Whether `language` (a NUL-terminated ASCII code) is English.
fn is_english(language: *const u8) -> bool {
    if language.is_null() {
        return false;
    }
    // SAFETY: the caller passes a NUL-terminated string; at most the
    // first three bytes are read, stopping at the NUL.
    let (first, second) = unsafe { (*language, if *language == 0 { 0 } else { *language.add(1) }) };
    if (first, second) != (b'e', b'n') {
        return false;
    }
    // SAFETY: as above; the third byte exists since the second was not NUL.
    let third = unsafe { *language.add(2) };
    third == 0 || third == b'-'
}

unsafe extern "efiapi" fn driver_name(
    _this: *const ComponentName2Protocol,
    language: *const u8,
    name: *mut *const u16,
) -> Status {
    if name.is_null() || !is_english(language) {
        return if name.is_null() || language.is_null() {
            Status::INVALID_PARAMETER
        } else {
            Status::UNSUPPORTED
        };
    }
    // SAFETY: checked non-null; the name is a static string.
    unsafe { *name = DRIVER_NAME.as_ptr().cast() };
    Status::SUCCESS
}

unsafe extern "efiapi" fn controller_name(
    _this: *const ComponentName2Protocol,
    _controller: Handle,
    _child: Handle,
    _language: *const u8,
    _name: *mut *const u16,
) -> Status {
    Status::UNSUPPORTED
}

/// Installs the protocol on the driver's image handle.
pub fn install() -> Result<(), Status> {
    let image = boot::image_handle();
    let protocol = Box::leak(Box::new(ComponentName2Protocol {
        get_driver_name: driver_name,
        get_controller_name: controller_name,
        supported_languages: LANGUAGES.as_ptr(),
    }));
    let interface: *const ComponentName2Protocol = protocol;
    // SAFETY: the interface is leaked, so it lives as long as the driver.
    unsafe {
        boot::install_protocol_interface(
            Some(image),
            &ComponentName2Protocol::GUID,
            interface.cast(),
        )
    }
    .map(|_| ())
    .map_err(|error| error.status())
}
