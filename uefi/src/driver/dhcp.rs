//! The driver's own DHCP exchange, through the firmware's
//! `EFI_DHCP4_PROTOCOL` (edk2's Dhcp4Dxe), which takes the first offer.
//!
//! Why not only `EFI_IP4_CONFIG2_PROTOCOL`'s DHCP: edk2 (stable202211,
//! Debian's OVMF and AAVMF) configures its DHCP child without a callback
//! (`Ip4StartAutoConfig`, NetworkPkg/Ip4Dxe/Ip4Config2Impl.c), and without
//! one `DhcpCallUser` answers an offer with `EFI_NOT_READY` ("collect more
//! offers", NetworkPkg/Dhcp4Dxe/Dhcp4Io.c), so `DhcpHandleSelect` keeps it
//! and the offer is only chosen when the DISCOVER's retransmission timer
//! runs out: `DhcpOnTimerTick`, once a second, from `mDhcp4DefaultTimeout`'s
//! 4 s. Every address through `EFI_IP4_CONFIG2` came 3 to 4 s after the
//! offer (QEMU's answers within a millisecond); a callback that answers
//! `EFI_SUCCESS` to the offer makes Dhcp4Dxe request it at once.
//!
//! Nothing here is kept in non-volatile variables: the lease lives in the
//! DHCP driver's memory until the next boot. When `EFI_IP4_CONFIG2` is
//! later asked for DHCP (`net`'s default address), `Ip4StartAutoConfig`
//! finds the service bound and takes this lease as it is ("if the DHCP
//! process has already finished, return now").

use core::ffi::c_void;
use core::net::Ipv4Addr;
use core::ptr;
use core::time::Duration;

use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol};
use uefi::proto::unsafe_protocol;
use uefi::{Handle, Status};
use uefi_raw::protocol::driver::ServiceBindingProtocol;
use uefi_raw::protocol::network::dhcp4::{
    Dhcp4ConfigData, Dhcp4Event, Dhcp4ModeData, Dhcp4Packet, Dhcp4PacketOption, Dhcp4Protocol,
    Dhcp4State,
};

/// `EFI_DHCP4_PROTOCOL` of a DHCP child.
#[unsafe_protocol(Dhcp4Protocol::GUID)]
#[repr(transparent)]
struct Dhcp4(Dhcp4Protocol);

/// `EFI_DHCP4_SERVICE_BINDING_PROTOCOL` of a network interface.
#[unsafe_protocol(Dhcp4Protocol::SERVICE_BINDING_GUID)]
#[repr(transparent)]
struct Dhcp4Binding(ServiceBindingProtocol);

/// An address leased by DHCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The interface's address.
    pub address: Ipv4Addr,
    /// Its subnet's mask.
    pub mask: Ipv4Addr,
}

/// Longest wait for a lease (as for `EFI_IP4_CONFIG2`'s DHCP in `net`).
const TIMEOUT: Duration = Duration::from_secs(30);

/// How often the exchange is looked at.
const POLL: Duration = Duration::from_millis(20);

/// The Parameter Request List (option 55) that `Ip4StartAutoConfig` sends:
/// subnet mask, router, DNS servers, so that the ACK holds what
/// `EFI_IP4_CONFIG2` reads from it if it takes the lease over.
#[repr(C)]
struct ParameterRequest {
    op_code: u8,
    length: u8,
    data: [u8; 3],
}

static PARAMETER_REQUEST: ParameterRequest = ParameterRequest {
    op_code: 55,
    length: 3,
    data: [1, 3, 6],
};

/// Dhcp4Dxe's callback: `EFI_SUCCESS` to an offer selects it now (the
/// default is to wait for more); to every other event it means "go on".
unsafe extern "efiapi" fn take_first_offer(
    _this: *mut Dhcp4Protocol,
    _context: *const c_void,
    _state: Dhcp4State,
    _event: Dhcp4Event,
    _packet: *const Dhcp4Packet,
    _new_packet: *mut *mut Dhcp4Packet,
) -> Status {
    Status::SUCCESS
}

/// A DHCP child of the interface, destroyed on drop; stopped first if it
/// was configured (the DHCP service's active child) and is not bound. A
/// bound lease stays with the DHCP service for whoever asks next.
struct Child {
    binding: ScopedProtocol<Dhcp4Binding>,
    handle: Handle,
    dhcp: Option<ScopedProtocol<Dhcp4>>,
    /// Its configuration was taken: it drives the service. (Any child's
    /// `Stop` stops the service, another client's exchange too.)
    configured: bool,
    bound: bool,
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut dhcp) = self.dhcp.take() {
            if self.configured && !self.bound {
                let this = &raw mut dhcp.0;
                // SAFETY: the child's protocol, open until `dhcp` drops.
                let _ = unsafe { (dhcp.0.stop)(this) };
            }
        }
        let this = &raw mut self.binding.0;
        // SAFETY: the child this binding made; its protocol is closed.
        let _ = unsafe { (self.binding.0.destroy_child)(this, self.handle.as_ptr()) };
    }
}

/// Opens `P` on `handle` for a look (the driver does not bind to it).
fn open<P: uefi::proto::ProtocolPointer + ?Sized>(
    handle: Handle,
) -> uefi::Result<ScopedProtocol<P>> {
    // SAFETY: a `GetProtocol` open, as for the HTTP service binding in `net`:
    // the interface and the child outlive the driver's use of them.
    unsafe {
        boot::open_protocol::<P>(
            OpenProtocolParams {
                handle,
                agent: boot::image_handle(),
                controller: None,
            },
            OpenProtocolAttributes::GetProtocol,
        )
    }
}

/// A new DHCP child of `nic`; `None` when the interface has no DHCP
/// service.
fn child(nic: Handle) -> Result<Option<Child>, Status> {
    let Ok(mut binding) = open::<Dhcp4Binding>(nic) else {
        return Ok(None);
    };
    let mut handle = ptr::null_mut();
    // SAFETY: the binding's own function, with a place for the handle.
    let status = unsafe { (binding.0.create_child)(&raw mut binding.0, &mut handle) };
    // SAFETY: null or the handle the binding made.
    let handle = match (status, unsafe { Handle::from_ptr(handle) }) {
        (Status::SUCCESS, Some(handle)) => handle,
        (status, _) => return Err(status),
    };
    let mut child = Child {
        binding,
        handle,
        dhcp: None,
        configured: false,
        bound: false,
    };
    child.dhcp = Some(open::<Dhcp4>(handle).map_err(|error| error.status())?);
    Ok(Some(child))
}

/// The DHCP service's state and address.
fn mode(dhcp: &mut Dhcp4) -> Result<Dhcp4ModeData, Status> {
    // SAFETY: plain data, all zero is a valid value of each field.
    let mut mode: Dhcp4ModeData = unsafe { core::mem::zeroed() };
    // SAFETY: the child's protocol and a place for its answer.
    match unsafe { (dhcp.0.get_mode_data)(&raw const dhcp.0, &mut mode) } {
        Status::SUCCESS => Ok(mode),
        status => Err(status),
    }
}

/// Leases an address for `nic` by DHCP, taking the first offer.
///
/// `Ok(None)`: the interface has no DHCP service, or another client
/// (`EFI_IP4_CONFIG2`'s, when the firmware's variables say DHCP and it
/// started on connecting the interface) holds it: then that client's
/// address is waited for instead. `Err(TIMEOUT)` after 30 s without one.
pub fn lease(nic: Handle) -> Result<Option<Lease>, Status> {
    let Some(mut child) = child(nic)? else {
        return Ok(None);
    };
    let Some(dhcp) = child.dhcp.as_mut() else {
        return Ok(None);
    };
    let mut options = [ptr::addr_of!(PARAMETER_REQUEST).cast::<Dhcp4PacketOption>()];
    let config = Dhcp4ConfigData {
        discover_try_count: 0,
        discover_timeout: ptr::null_mut(),
        request_try_count: 0,
        request_timeout: ptr::null_mut(),
        client_address: Default::default(),
        callback: Some(take_first_offer),
        callback_context: ptr::null_mut(),
        option_count: 1,
        option_list: options.as_mut_ptr(),
    };
    // SAFETY: the child's protocol; Dhcp4Dxe copies the configuration
    // and its options.
    match unsafe { (dhcp.0.configure)(&raw mut dhcp.0, &config) } {
        Status::SUCCESS => {}
        Status::ACCESS_DENIED => return Ok(None),
        status => return Err(status),
    }
    child.configured = true;
    // SAFETY: a plain event, signalled by Dhcp4Dxe when the exchange ends.
    let done =
        unsafe { boot::create_event(boot::EventType::empty(), boot::Tpl::CALLBACK, None, None) }
            .map_err(|error| error.status())?;
    let lease = match child.dhcp.as_mut() {
        Some(dhcp) => exchange(dhcp, &done),
        None => Err(Status::ABORTED),
    };
    child.bound = matches!(lease, Ok(Some(_)));
    // Stopped (unless bound) before the event is closed: Dhcp4Dxe signals
    // it when the exchange ends, which a stop makes sure is never.
    drop(child);
    let _ = boot::close_event(done);
    lease
}

/// Starts the exchange and waits for its end (`done`) or [`TIMEOUT`].
/// A service bound already (by an earlier call) is its lease.
fn exchange(dhcp: &mut Dhcp4, done: &uefi::Event) -> Result<Option<Lease>, Status> {
    // SAFETY: the child's protocol; `done` outlives the exchange (the
    // caller stops the child before closing it, unless bound).
    let waited = match unsafe { (dhcp.0.start)(&raw mut dhcp.0, done.as_ptr()) } {
        Status::SUCCESS => wait(done),
        Status::ALREADY_STARTED => Status::ALREADY_STARTED,
        status => return Err(status),
    };
    let mode = mode(dhcp)?;
    if mode.state != Dhcp4State::BOUND {
        return Err(waited);
    }
    Ok(Some(Lease {
        address: Ipv4Addr::from(mode.client_address.0),
        mask: Ipv4Addr::from(mode.subnet_mask.0),
    }))
}

/// Waits until `done` is signalled (the exchange ended: `ABORTED` unless
/// bound) or [`TIMEOUT`] passes (`TIMEOUT`); the firmware runs the
/// exchange from its timer while this stalls.
fn wait(done: &uefi::Event) -> Status {
    let polls = TIMEOUT.as_millis() / POLL.as_millis();
    for _ in 0..polls {
        if boot::check_event(done).unwrap_or(false) {
            return Status::ABORTED;
        }
        boot::stall(POLL);
    }
    Status::TIMEOUT
}
