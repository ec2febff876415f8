//! Protocols opened by raw GUID, and closed when their guard drops.
//!
//! The `uefi` crate's `ScopedProtocol` would do for most of this, but it
//! builds a `&DevicePath` by walking nodes with a panic on a malformed
//! length, and asserts on close in debug builds: a driver must survive
//! whatever other drivers installed. Raw calls keep every check here.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use uefi::{Guid, Handle, Status};
use uefi_raw::table::boot::BootServices;

/// `EFI_OPEN_PROTOCOL_GET_PROTOCOL`: a look, no ownership.
const GET_PROTOCOL: u32 = 0x02;
/// `EFI_OPEN_PROTOCOL_BY_CHILD_CONTROLLER`: a child handle uses the parent's protocol.
const BY_CHILD_CONTROLLER: u32 = 0x08;
/// `EFI_OPEN_PROTOCOL_BY_DRIVER`: the driver manages the controller.
const BY_DRIVER: u32 = 0x10;

fn boot_services() -> Result<&'static BootServices, Status> {
    let table = uefi::table::system_table_raw().ok_or(Status::NOT_READY)?;
    // SAFETY: the system table stays valid while boot services run, the
    // only time the driver runs; its boot services pointer is checked.
    let services = unsafe { table.as_ref().boot_services };
    // SAFETY: a non-null boot services table is valid for the same time.
    unsafe { services.as_ref() }.ok_or(Status::NOT_READY)
}

fn open(
    handle: Handle,
    guid: &'static Guid,
    agent: Handle,
    controller: Option<Handle>,
    attributes: u32,
) -> Result<NonNull<c_void>, Status> {
    let services = boot_services()?;
    let mut interface = ptr::null_mut();
    let controller = controller.map_or(ptr::null_mut(), |c| c.as_ptr());
    // SAFETY: the handles come from the firmware, the GUID and out-pointer
    // are valid for the call.
    let status = unsafe {
        (services.open_protocol)(
            handle.as_ptr(),
            guid,
            &mut interface,
            agent.as_ptr(),
            controller,
            attributes,
        )
    };
    if status.is_error() {
        return Err(status);
    }
    NonNull::new(interface).ok_or(Status::UNSUPPORTED)
}

/// The interface of `guid` on `handle`, looked at without taking it.
///
/// Valid while the protocol stays installed; the callers use it within one
/// driver binding call or while they hold the controller `BY_DRIVER`.
pub fn get_protocol(handle: Handle, guid: &'static Guid) -> Result<NonNull<c_void>, Status> {
    let agent = uefi::boot::image_handle();
    open(handle, guid, agent, Some(handle), GET_PROTOCOL)
}

/// A protocol opened `BY_DRIVER` or `BY_CHILD_CONTROLLER`, closed on drop.
pub struct Opened {
    handle: Handle,
    guid: &'static Guid,
    agent: Handle,
    controller: Handle,
    interface: NonNull<c_void>,
}

impl Opened {
    /// Takes `guid` on `controller` for this driver (`agent`).
    ///
    /// `EFI_ALREADY_STARTED` (this driver has it) and `EFI_ACCESS_DENIED`
    /// (another driver has it) are returned as they are, as the driver
    /// model expects from `Supported`.
    pub fn by_driver(
        controller: Handle,
        guid: &'static Guid,
        agent: Handle,
    ) -> Result<Self, Status> {
        let interface = open(controller, guid, agent, Some(controller), BY_DRIVER)?;
        Ok(Self {
            handle: controller,
            guid,
            agent,
            controller,
            interface,
        })
    }

    /// Records that `child` uses the parent's `guid`, so that the firmware
    /// disconnects the child before the parent.
    pub fn by_child(
        parent: Handle,
        guid: &'static Guid,
        agent: Handle,
        child: Handle,
    ) -> Result<Self, Status> {
        let interface = open(parent, guid, agent, Some(child), BY_CHILD_CONTROLLER)?;
        Ok(Self {
            handle: parent,
            guid,
            agent,
            controller: child,
            interface,
        })
    }

    /// The protocol interface.
    pub fn interface(&self) -> NonNull<c_void> {
        self.interface
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Ok(services) = boot_services() {
            // SAFETY: the same parameters as the successful open.
            // A failure cannot be acted on here: the open is then already gone.
            let _ = unsafe {
                (services.close_protocol)(
                    self.handle.as_ptr(),
                    self.guid,
                    self.agent.as_ptr(),
                    self.controller.as_ptr(),
                )
            };
        }
    }
}
