//! `EFI_DRIVER_BINDING_PROTOCOL`: which controllers the driver takes, and
//! starting and stopping them.
//!
//! Two kinds of controller:
//! - a whole disk (`EFI_BLOCK_IO_PROTOCOL` with `LogicalPartition` false)
//!   whose first bytes are a QCOW2 header, read through the disk's
//!   `EFI_DISK_IO_PROTOCOL` (taken `BY_DRIVER`: the firmware's DiskIo
//!   driver already holds the BlockIo);
//! - a file system (`EFI_SIMPLE_FILE_SYSTEM_PROTOCOL`, taken `BY_DRIVER`)
//!   whose root holds `\qcow2.cfg`, listing image files to attach, or
//!   the volume the driver was loaded from when the driver's load options
//!   list URLs (`own_options`).
//!
//! Each attached image becomes a child handle with a read-only BlockIo and
//! the parent's device path plus a vendor node, and is connected so that
//! the firmware's partition and FAT drivers bind to it. The driver never
//! binds to its own children (nested images would take memory without
//! limit), recognised by the vendor node in their path.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr::NonNull;

use qcow2_uefi::config::{self, CONFIG_PATH, MAX_CONFIG_BYTES};
use qcow2_uefi::device_path::{self as path_bytes};
use qcow2_uefi::handoff;
use qcow2_uefi::load_options::LoadOptionsError;
use qcow2_uefi::short_read;
use spin::Mutex;
use uefi::proto::device_path::DevicePath;
use uefi::proto::media::file::{Directory, File, FileAttribute, FileInfo, FileMode};
use uefi::proto::media::fs::SimpleFileSystem;
use uefi::proto::ProtocolPointer;
use uefi::runtime::{self, VariableAttributes, VariableVendor};
use uefi::{boot, CString16, Guid, Handle, Status};
use uefi_raw::protocol::block::{BlockIoMedia, BlockIoProtocol};
use uefi_raw::protocol::device_path::DevicePathProtocol;
use uefi_raw::protocol::disk::DiskIoProtocol;
use uefi_raw::protocol::driver::DriverBindingProtocol;
use uefi_raw::protocol::file_system::SimpleFileSystemProtocol;

use super::attach::{self, Attached};
use super::disk::VirtualDisk;
use super::firmware::{get_protocol, Opened};
use super::own_options;
use super::stack::Probe;
use super::store::{DiskStore, Store};
use super::{error_line, info_line};

/// Above the firmware's partition (0xa) and FAT (0xa) drivers, so that a
/// QCOW2 disk is offered to this driver first.
const BINDING_VERSION: u32 = 0x20;

/// Every controller this driver started, with its children.
static CONTROLLERS: Mutex<Vec<Controller>> = Mutex::new(Vec::new());

/// Controllers whose `Start` failed, as handle addresses: `Supported`
/// refuses them afterwards, so that the error line is printed once, not at
/// every `connect -r`. A handle stays refused until the next boot.
static REFUSED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn refuse(controller: Handle) -> Status {
    REFUSED.lock().push(controller.as_ptr() as usize);
    Status::DEVICE_ERROR
}

fn is_refused(controller: Handle) -> bool {
    REFUSED.lock().contains(&(controller.as_ptr() as usize))
}

/// A started controller: what the driver holds of it, and its disks.
struct Controller {
    handle: Handle,
    children: Vec<Child>,
    /// Declared last: dropped after the children.
    _held: Opened,
}

// SAFETY: UEFI boot services run driver code on one processor only; the
// raw pointers inside are never touched from another thread.
unsafe impl Send for Controller {}

/// An attached image's handle and disk.
struct Child {
    handle: Handle,
    disk: NonNull<VirtualDisk>,
    /// The child's `BY_CHILD_CONTROLLER` use of the parent's protocol.
    _parent_use: Opened,
}

/// Installs the driver binding on the driver's image handle.
pub fn install() -> Result<(), Status> {
    let image = boot::image_handle();
    let binding = Box::leak(Box::new(DriverBindingProtocol {
        supported,
        start,
        stop,
        version: BINDING_VERSION,
        image_handle: image.as_ptr(),
        driver_binding_handle: image.as_ptr(),
    }));
    let interface: *const DriverBindingProtocol = binding;
    // SAFETY: the interface is leaked, so it lives as long as the driver.
    unsafe {
        boot::install_protocol_interface(
            Some(image),
            &DriverBindingProtocol::GUID,
            interface.cast(),
        )
    }
    .map(|_| ())
    .map_err(|error| error.status())
}

/// The media of a handle's BlockIo.
fn media(controller: Handle) -> Option<BlockIoMedia> {
    let block_io = get_protocol(controller, &BlockIoProtocol::GUID).ok()?;
    // SAFETY: a BlockIo interface of the firmware; read within this call.
    let media = unsafe { block_io.cast::<BlockIoProtocol>().as_ref() }.media;
    // SAFETY: a non-null media pointer of a live BlockIo.
    unsafe { media.as_ref() }.copied()
}

/// The device path of a handle, without its end node, if it has a valid one.
fn device_path(handle: Handle) -> Option<(&'static [u8], NonNull<c_void>)> {
    device_path_or_status(handle).ok()
}

fn device_path_or_status(handle: Handle) -> Result<(&'static [u8], NonNull<c_void>), Status> {
    let path = get_protocol(handle, &DevicePathProtocol::GUID)?;
    let bytes = path.cast::<u8>();
    let len = path_bytes::length_before_end(|offset| {
        // SAFETY: the walk reads a node header only at offsets it reached
        // through earlier nodes' lengths, before any end node: inside the
        // path the firmware installed.
        unsafe {
            bytes
                .as_ptr()
                .add(offset)
                .cast::<[u8; 4]>()
                .read_unaligned()
        }
    })
    .map_err(|_| Status::INVALID_PARAMETER)?;
    // SAFETY: the `len` bytes before the end node were just walked.
    let slice = unsafe { core::slice::from_raw_parts(bytes.as_ptr(), len) };
    Ok((slice, path))
}

/// The text of a handle's device path, for log lines.
fn device_name(handle: Handle) -> String {
    match device_path_or_status(handle) {
        Ok((_, path)) => {
            // SAFETY: the path was validated by `device_path` (every node
            // at least a header long, ended by an end node).
            let path = unsafe { DevicePath::from_ffi_ptr(path.as_ptr().cast()) };
            format!("{path}")
        }
        Err(status) => format!("disk without a device path ({status:?})"),
    }
}

/// A whole, present disk with a QCOW2 magic, held through DiskIo.
fn hold_qcow2_disk(controller: Handle, agent: Handle) -> Result<(Opened, DiskStore), Status> {
    let media = media(controller).ok_or(Status::UNSUPPORTED)?;
    if media.logical_partition.into() || !bool::from(media.media_present) || media.block_size == 0 {
        return Err(Status::UNSUPPORTED);
    }
    let size = media
        .last_block
        .checked_add(1)
        .and_then(|blocks| blocks.checked_mul(u64::from(media.block_size)))
        .ok_or(Status::UNSUPPORTED)?;
    let held = Opened::by_driver(controller, &DiskIoProtocol::GUID, agent)?;
    let store = DiskStore::new(held.interface().cast(), media.media_id, size);
    // Check the magic through a store that is dropped if it is not QCOW2.
    let probe = Store::Disk(DiskStore::new(
        held.interface().cast(),
        media.media_id,
        size,
    ));
    if !attach::has_qcow2_magic(&probe) {
        return Err(Status::UNSUPPORTED);
    }
    Ok((held, store))
}

/// What a file system lists to attach: its `\qcow2.cfg`'s bytes and, on
/// the volume the driver was loaded from, the URLs of the driver's load
/// options (`own_options`).
struct Listed {
    config: Option<Vec<u8>>,
    options: Option<Result<Vec<String>, LoadOptionsError>>,
}

/// A file system with `\qcow2.cfg` or the driver's load options, held,
/// with what it lists.
fn hold_configured_fs(
    controller: Handle,
    agent: Handle,
) -> Result<(Opened, Directory, Listed), Status> {
    let options = own_options::for_volume(controller);
    let held = Opened::by_driver(controller, &SimpleFileSystemProtocol::GUID, agent)?;
    // SAFETY: the interface is a SimpleFileSystemProtocol, which the
    // `uefi` wrapper is a transparent newtype of; it stays valid while held.
    let fs = unsafe { &mut *SimpleFileSystem::mut_ptr_from_ffi(held.interface().as_ptr()) };
    let mut root = fs.open_volume().map_err(|e| e.status())?;
    let config = read_config(&mut root);
    if config.is_none() && options.is_none() {
        return Err(Status::UNSUPPORTED);
    }
    Ok((held, root, Listed { config, options }))
}

/// The bytes of `\qcow2.cfg`, or `None` when there is none. A file too
/// large is returned cut to one byte over the limit, for the parser to refuse.
fn read_config(root: &mut Directory) -> Option<Vec<u8>> {
    let name = CString16::try_from(CONFIG_PATH).ok()?;
    let file = root
        .open(&name, FileMode::Read, FileAttribute::empty())
        .ok()?;
    let mut file = file.into_regular_file()?;
    let size = file.get_boxed_info::<FileInfo>().ok()?.file_size();
    let len = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .min(MAX_CONFIG_BYTES + 1);
    let mut bytes = alloc::vec![0u8; len];
    short_read::read_exact(0, &mut bytes, len, |position, piece| {
        file.set_position(position)?;
        file.read(piece).map_err(|e| e.to_err_without_payload())
    })
    .ok()?;
    Some(bytes)
}

fn handle_of(raw: uefi_raw::Handle) -> Option<Handle> {
    // SAFETY: the firmware passes a handle or null.
    unsafe { Handle::from_ptr(raw) }
}

fn agent_of(this: *const DriverBindingProtocol) -> Option<Handle> {
    // SAFETY: the firmware passes back the binding this driver installed.
    let binding = unsafe { this.as_ref() }?;
    handle_of(binding.driver_binding_handle)
}

fn is_own_child(controller: Handle) -> bool {
    device_path(controller).is_some_and(|(bytes, _)| path_bytes::is_own_child(bytes))
}

unsafe extern "efiapi" fn supported(
    this: *const DriverBindingProtocol,
    controller: uefi_raw::Handle,
    _remaining: *const DevicePathProtocol,
) -> Status {
    let (Some(agent), Some(controller)) = (agent_of(this), handle_of(controller)) else {
        return Status::INVALID_PARAMETER;
    };
    if is_refused(controller) || is_own_child(controller) {
        return Status::UNSUPPORTED;
    }
    match hold_qcow2_disk(controller, agent) {
        Ok(_) => return Status::SUCCESS,
        Err(Status::ALREADY_STARTED) => return Status::ALREADY_STARTED,
        Err(_) => {}
    }
    match hold_configured_fs(controller, agent) {
        Ok(_) => Status::SUCCESS,
        Err(Status::ALREADY_STARTED) => Status::ALREADY_STARTED,
        Err(_) => Status::UNSUPPORTED,
    }
}

unsafe extern "efiapi" fn start(
    this: *const DriverBindingProtocol,
    controller: uefi_raw::Handle,
    _remaining: *const DevicePathProtocol,
) -> Status {
    let (Some(agent), Some(controller)) = (agent_of(this), handle_of(controller)) else {
        return Status::INVALID_PARAMETER;
    };
    if is_own_child(controller) {
        return Status::UNSUPPORTED;
    }
    // Paint first: the attach, and the child's connect (the partition and
    // FAT drivers reading the image through its whole chain), are measured
    // (in a function of its own, so that its frame is measured too).
    let mut probe = Probe::start();
    let status = start_measured(controller, agent, &mut probe);
    probe.report();
    status
}

#[inline(never)]
fn start_measured(controller: Handle, agent: Handle, probe: &mut Probe) -> Status {
    if let Ok((held, store)) = hold_qcow2_disk(controller, agent) {
        return start_disk(controller, agent, held, store, probe);
    }
    match hold_configured_fs(controller, agent) {
        Ok((held, root, listed)) => start_files(controller, agent, held, root, listed, probe),
        Err(_) => Status::UNSUPPORTED,
    }
}

fn start_disk(
    controller: Handle,
    agent: Handle,
    held: Opened,
    store: DiskStore,
    probe: &mut Probe,
) -> Status {
    let name = device_name(controller);
    let attached = attach::disk_image(&name, store);
    probe.mark_attach();
    let attached = match attached {
        Ok(attached) => attached,
        Err(error) => {
            error_line(format_args!("{error}"));
            return refuse(controller);
        }
    };
    let child = match install_child(controller, agent, &DiskIoProtocol::GUID, 0, attached, &name) {
        Ok(child) => child,
        Err(_) => return refuse(controller),
    };
    finish_start(controller, held, Vec::from([child]))
}

fn start_files(
    controller: Handle,
    agent: Handle,
    held: Opened,
    mut root: Directory,
    listed: Listed,
    probe: &mut Probe,
) -> Status {
    let images = listed_images(controller, listed);
    if images.is_empty() {
        return refuse(controller);
    }
    let mut children = Vec::new();
    for (index, path) in images.iter().enumerate() {
        let attached = if qcow2_http::rules::is_url(path) {
            attach::url_image(path)
        } else {
            attach::file_image(&mut root, path)
        };
        // After each image: with several, the mark includes the lines and
        // installs of those before it.
        probe.mark_attach();
        let attached = match attached {
            Ok(attached) => attached,
            Err(error) => {
                error_line(format_args!("{error}"));
                continue;
            }
        };
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let guid = &SimpleFileSystemProtocol::GUID;
        match install_child(controller, agent, guid, index, attached, path) {
            Ok(child) => {
                record_for_linux(controller, path);
                children.push(child);
            }
            Err(_) => continue,
        }
    }
    drop(root);
    if children.is_empty() {
        return refuse(controller);
    }
    finish_start(controller, held, children)
}

/// The images a volume lists: the load options' URLs first (on the
/// volume the driver was loaded from: as the first lines of its
/// `\qcow2.cfg`, so that their children's device paths do not depend on
/// whether the volume has one), then its `\qcow2.cfg`'s lines. A list
/// refused is named on the console and adds nothing.
fn listed_images(controller: Handle, listed: Listed) -> Vec<String> {
    let mut images = Vec::new();
    match listed.options {
        Some(Ok(urls)) => {
            for url in &urls {
                info_line(format_args!("{url}: from the driver's load options"));
            }
            images.extend(urls);
        }
        Some(Err(error)) => error_line(format_args!("the driver's load options: {error}")),
        None => {}
    }
    if let Some(bytes) = listed.config {
        match config::parse(&bytes) {
            Ok(lines) => images.extend(lines),
            Err(error) => {
                let device = device_name(controller);
                error_line(format_args!("{device}{CONFIG_PATH}: {error}"));
            }
        }
    }
    images
}

/// Sets `qcow2root=efi`'s variable (`qcow2_uefi::handoff`) to the image
/// at `path`: a URL as it is, a file on `controller`'s file system as its
/// partition's PARTUUID and the path. Each attached image sets it, so with
/// several the last one attached is named (uefi/README.md). Not an error
/// when it cannot be set: the image is attached all the same, only
/// `qcow2root=efi` will not find it; the line says why.
fn record_for_linux(controller: Handle, path: &str) {
    let fs_path = device_path(controller).map_or(&[][..], |(bytes, _)| bytes);
    let value = if qcow2_http::rules::is_url(path) {
        Ok(handoff::url_value(path))
    } else {
        handoff::value(fs_path, path)
    };
    let value = match value {
        Ok(value) => value,
        Err(error) => {
            info_line(format_args!(
                "{path}: not recorded for qcow2root=efi: {error}"
            ));
            return;
        }
    };
    let Ok(name) = CString16::try_from(handoff::VARIABLE_NAME) else {
        return;
    };
    let vendor = VariableVendor(Guid::from_bytes(handoff::VARIABLE_GUID));
    let attributes = VariableAttributes::from_bits_truncate(handoff::ATTRIBUTES);
    let text = core::str::from_utf8(&value).unwrap_or("");
    match runtime::set_variable(&name, &vendor, attributes, &value) {
        Ok(()) => info_line(format_args!("{path}: recorded for qcow2root=efi as {text}")),
        Err(error) => info_line(format_args!(
            "{path}: not recorded for qcow2root=efi: SetVariable: {:?}",
            error.status()
        )),
    }
}

/// Records the controller, then connects its children, so that partition
/// and file-system drivers bind to them even under a non-recursive connect.
fn finish_start(controller: Handle, held: Opened, children: Vec<Child>) -> Status {
    let handles: Vec<Handle> = children.iter().map(|child| child.handle).collect();
    CONTROLLERS.lock().push(Controller {
        handle: controller,
        children,
        _held: held,
    });
    for handle in handles {
        // A child no driver wants is still a valid disk: ignore the result.
        let _ = boot::connect_controller(handle, &[], None, true);
    }
    Status::SUCCESS
}

/// Installs an attached image as a child of `parent`, which uses the
/// parent's `parent_guid` protocol.
fn install_child(
    parent: Handle,
    agent: Handle,
    parent_guid: &'static uefi::Guid,
    index: u32,
    attached: Attached,
    name: &str,
) -> Result<Child, Status> {
    let parent_path = device_path(parent).map(|(bytes, _)| bytes).unwrap_or(&[]);
    let child_path = path_bytes::child_path(parent_path, index);
    let Attached {
        disk: image,
        virtual_size,
        memory,
        layers,
    } = attached;
    let memory_bytes = memory.bytes();
    let disk = VirtualDisk::new(image, virtual_size, String::from(name), child_path, memory)?;
    let block_io = VirtualDisk::block_io_interface(disk);
    let path = VirtualDisk::device_path_interface(disk);
    let fail = |status: Status| {
        error_line(format_args!("{name}: cannot install the disk: {status:?}"));
        status
    };
    // SAFETY: the interfaces live in the leaked disk until `stop_child`
    // uninstalls them.
    let handle =
        match unsafe { boot::install_protocol_interface(None, &BlockIoProtocol::GUID, block_io) } {
            Ok(handle) => handle,
            Err(error) => {
                // SAFETY: nothing was installed.
                unsafe { VirtualDisk::free(disk) };
                return Err(fail(error.status()));
            }
        };
    // SAFETY: as above.
    let installed =
        unsafe { boot::install_protocol_interface(Some(handle), &DevicePathProtocol::GUID, path) };
    let parent_use = installed
        .map_err(|error| error.status())
        .and_then(|_| Opened::by_child(parent, parent_guid, agent, handle));
    match parent_use {
        Ok(parent_use) => {
            info_line(format_args!(
                "attached {name}: {virtual_size} bytes, {layers} image(s), {memory_bytes} bytes of cache and decoders"
            ));
            Ok(Child {
                handle,
                disk,
                _parent_use: parent_use,
            })
        }
        Err(status) => {
            // SAFETY: uninstalling what was installed above; then no one
            // can reach the disk and it is freed.
            unsafe {
                let _ = boot::uninstall_protocol_interface(handle, &DevicePathProtocol::GUID, path);
                if boot::uninstall_protocol_interface(handle, &BlockIoProtocol::GUID, block_io)
                    .is_ok()
                {
                    VirtualDisk::free(disk);
                }
            }
            Err(fail(status))
        }
    }
}

/// Uninstalls a child's protocols and frees its disk, or gives it back if
/// the firmware refuses (another driver will not let go of it).
fn stop_child(child: Child) -> Result<(), Child> {
    let block_io = VirtualDisk::block_io_interface(child.disk);
    let path = VirtualDisk::device_path_interface(child.disk);
    // SAFETY: the interfaces this driver installed on this handle.
    if unsafe { boot::uninstall_protocol_interface(child.handle, &BlockIoProtocol::GUID, block_io) }
        .is_err()
    {
        return Err(child);
    }
    // SAFETY: as above. Should this fail, the path stays installed and
    // the disk is not freed, since the path points into it.
    if unsafe { boot::uninstall_protocol_interface(child.handle, &DevicePathProtocol::GUID, path) }
        .is_err()
    {
        core::mem::forget(child);
        return Ok(());
    }
    info_line(format_args!("detached {}", VirtualDisk::name(child.disk)));
    // SAFETY: both protocols are gone: nothing can call into the disk.
    unsafe { VirtualDisk::free(child.disk) };
    Ok(())
}

unsafe extern "efiapi" fn stop(
    _this: *const DriverBindingProtocol,
    controller: uefi_raw::Handle,
    number_of_children: usize,
    child_handles: *const uefi_raw::Handle,
) -> Status {
    let Some(controller) = handle_of(controller) else {
        return Status::INVALID_PARAMETER;
    };
    let requested: &[uefi_raw::Handle] = if number_of_children == 0 || child_handles.is_null() {
        &[]
    } else {
        // SAFETY: the firmware passes `number_of_children` handles.
        unsafe { core::slice::from_raw_parts(child_handles, number_of_children) }
    };
    // Take the children to stop out of the registry first: uninstalling
    // calls into other drivers, which must not find the lock held.
    let (to_stop, whole) = {
        let mut controllers = CONTROLLERS.lock();
        let Some(index) = controllers.iter().position(|c| c.handle == controller) else {
            return Status::DEVICE_ERROR;
        };
        if requested.is_empty() {
            let record = controllers.swap_remove(index);
            (Vec::new(), Some(record))
        } else {
            let record = &mut controllers[index];
            let (stop, keep) = core::mem::take(&mut record.children)
                .into_iter()
                .partition(|child| requested.contains(&child.handle.as_ptr()));
            record.children = keep;
            (stop, None)
        }
    };
    let mut refused = Vec::new();
    let children = match whole {
        Some(mut record) => {
            let children = core::mem::take(&mut record.children);
            let mut all_stopped = true;
            for child in children {
                if let Err(child) = stop_child(child) {
                    all_stopped = false;
                    refused.push(child);
                }
            }
            if all_stopped {
                drop(record);
                return Status::SUCCESS;
            }
            record.children = refused;
            CONTROLLERS.lock().push(record);
            return Status::DEVICE_ERROR;
        }
        None => to_stop,
    };
    for child in children {
        if let Err(child) = stop_child(child) {
            refused.push(child);
        }
    }
    if refused.is_empty() {
        return Status::SUCCESS;
    }
    if let Some(record) = CONTROLLERS
        .lock()
        .iter_mut()
        .find(|c| c.handle == controller)
    {
        record.children.extend(refused);
    }
    Status::DEVICE_ERROR
}
