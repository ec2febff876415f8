//! Range requests through the firmware's own network stack: an address by
//! DHCP (the driver's own exchange, `dhcp`, or `EFI_IP4_CONFIG2_PROTOCOL`'s),
//! then `EFI_HTTP_PROTOCOL` (edk2's HttpDxe, in Debian's OVMF and AAVMF).
//!
//! The address: with the driver's own lease, HTTP children whose server
//! is on the lease's subnet use it directly (`UseDefaultAddress = FALSE`),
//! and `EFI_IP4_CONFIG2` is never asked: asking it for DHCP sets its policy
//! to DHCP in a non-volatile variable (`EfiIp4Config2SetData` writes it),
//! after which edk2 starts its own, slower DHCP whenever the interface is
//! connected at the next boots. Other servers (a name, which needs the DNS
//! servers only the default address has; a server behind a router, which
//! HttpDxe reaches only through the default route table) use the default
//! address: `EFI_IP4_CONFIG2` is then asked, and takes the driver's lease
//! over at once.
//!
//! This module only moves bytes: which answers may be used, the retries'
//! limits and the read-ahead cache are `qcow2_http::rules`, shared with
//! the host's `qcow`.
//!
//! The `uefi` crate's `HttpHelper` sends only a `Host` header and waits
//! for ever; range requests need `Range` and `If-Match`, and a server that
//! stops answering must end in an error line, so requests are built here
//! on its raw `Http` protocol, each wait bounded by [`TIMEOUT`].

use alloc::string::ToString;
use alloc::vec::Vec;
use core::ffi::{c_void, CStr};
use core::ptr::{self, NonNull};
use core::time::Duration;

use qcow2_http::rules::{answer, Answer, Fault, HttpUrl};
use qcow2_uefi::http::{on_link, status_code};
use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol, SearchType};
use uefi::proto::network::http::{Http, HttpBinding};
use uefi::proto::network::ip4config2::Ip4Config2;
use uefi::{CString16, Event, Handle, Status};
use uefi_raw::protocol::network::http::{
    HttpAccessPoint, HttpConfigData, HttpHeader, HttpMessage, HttpMethod, HttpProtocol,
    HttpRequestData, HttpResponseData, HttpStatusCode, HttpToken, HttpV4AccessPoint, HttpVersion,
};
use uefi_raw::protocol::network::ip4_config2::Ip4Config2Policy;

use super::dhcp::{self, Lease};

/// Longest wait for one step of an exchange (sending the request, the
/// answer's headers, each piece of its body).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the network could not be used at all.
#[derive(Debug)]
pub enum NetError {
    /// No handle carries the HTTP service binding, even after connecting
    /// every network interface.
    NoHttp,
    /// DHCP gave no address (the firmware's status; `TIMEOUT` after 30 s).
    Dhcp(Status),
    /// The HTTP child could not be made or configured.
    Http(&'static str, Status),
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetError::NoHttp => f.write_str(
                "no network: no network interface with the firmware's HTTP driver (EFI_HTTP_SERVICE_BINDING_PROTOCOL)",
            ),
            NetError::Dhcp(status) => write!(f, "no network: DHCP failed: {status:?}"),
            NetError::Http(step, status) => write!(f, "the firmware's HTTP driver: {step}: {status:?}"),
        }
    }
}

fn by_protocol(guid: &uefi::Guid) -> Vec<Handle> {
    boot::locate_handle_buffer(SearchType::ByProtocol(guid))
        .map(|handles| handles.iter().copied().collect())
        .unwrap_or_default()
}

/// A network interface with the HTTP service binding, and the address its
/// HTTP children use.
#[derive(Clone, Copy, Debug)]
pub struct Nic {
    handle: Handle,
    /// The driver's own DHCP lease, for servers on its subnet; `None`:
    /// the interface had its default address already, or another DHCP
    /// client held the DHCP service and gave it one.
    lease: Option<Lease>,
}

impl Nic {
    /// The lease that an HTTP child for `url` uses (`None`: the default
    /// address, configured first if it is not yet).
    fn address_for(&self, url: &HttpUrl) -> Result<Option<Lease>, NetError> {
        match self.lease {
            Some(lease) if on_link(url.host_name(), lease.address, lease.mask) => Ok(Some(lease)),
            Some(_) => default_address(self.handle).map(|()| None),
            None => Ok(None),
        }
    }
}

/// The first network interface with the HTTP service binding, with an
/// IPv4 address by DHCP: its default address if it has one, else a lease
/// of the driver's own (or, when another DHCP client holds the service,
/// the default address that client gives it).
pub fn interface() -> Result<Nic, NetError> {
    let mut nics = by_protocol(&HttpProtocol::SERVICE_BINDING_GUID);
    if nics.is_empty() {
        // The platform may not have connected the network: OVMF connects
        // only the devices that have a `bootindex` when one has, and the
        // shell's `load` starts this driver before its `connect -r`. Connect
        // everything, as `connect -r` would (a controller no driver takes
        // answers an error, which is expected).
        let handles = boot::locate_handle_buffer(SearchType::AllHandles)
            .map(|handles| handles.iter().copied().collect::<Vec<_>>())
            .unwrap_or_default();
        for handle in handles {
            let _ = boot::connect_controller(handle, &[], None, true);
        }
        nics = by_protocol(&HttpProtocol::SERVICE_BINDING_GUID);
    }
    let handle = *nics.first().ok_or(NetError::NoHttp)?;
    let mut config = Ip4Config2::new(handle).map_err(|e| NetError::Dhcp(e.status()))?;
    if has_address(&mut config).map_err(NetError::Dhcp)? {
        return Ok(Nic {
            handle,
            lease: None,
        });
    }
    match dhcp::lease(handle).map_err(NetError::Dhcp)? {
        Some(lease) => Ok(Nic {
            handle,
            lease: Some(lease),
        }),
        None => {
            wait_for_address(&mut config).map_err(NetError::Dhcp)?;
            Ok(Nic {
                handle,
                lease: None,
            })
        }
    }
}

/// Longest wait for a DHCP address.
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the address is looked at while DHCP runs.
const DHCP_POLL: Duration = Duration::from_millis(20);

/// Whether the interface has its default address.
fn has_address(config: &mut Ip4Config2) -> Result<bool, Status> {
    config
        .get_interface_info()
        .map(|info| info.station_addr != core::net::Ipv4Addr::UNSPECIFIED.into())
        .map_err(|error| error.status())
}

/// Gives the interface its default address by DHCP, unless it has one:
/// after the driver's own lease, `EFI_IP4_CONFIG2` takes that lease over
/// at once (`Ip4StartAutoConfig` finds the DHCP service bound).
///
/// This sets `EFI_IP4_CONFIG2`'s policy to DHCP, which edk2 keeps in a
/// non-volatile variable, as it does itself for any client of the default
/// address (`Ip4ConfigProtocol` in Ip4Impl.c): only done for a server the
/// lease cannot reach.
fn default_address(nic: Handle) -> Result<(), NetError> {
    let mut config = Ip4Config2::new(nic).map_err(|e| NetError::Dhcp(e.status()))?;
    if has_address(&mut config).map_err(NetError::Dhcp)? {
        return Ok(());
    }
    config
        .set_policy(Ip4Config2Policy::DHCP)
        .map_err(|error| NetError::Dhcp(error.status()))?;
    wait_for_address(&mut config).map_err(NetError::Dhcp)
}

/// Waits for the default address of a DHCP under way.
///
/// Not the `uefi` crate's `Ip4Config2::ifup`, which looks once a second:
/// every boot over HTTP would wait up to a second more. The firmware runs
/// DHCP from its timer while this stalls.
fn wait_for_address(config: &mut Ip4Config2) -> Result<(), Status> {
    let polls = DHCP_TIMEOUT.as_millis() / DHCP_POLL.as_millis();
    for _ in 0..polls {
        if has_address(config)? {
            return Ok(());
        }
        boot::stall(DHCP_POLL);
    }
    Err(Status::TIMEOUT)
}

/// An HTTP child of the interface, configured: one connection, re-made
/// after any failed exchange so that no half-read answer is reused.
struct Child {
    handle: Handle,
    http: ScopedProtocol<Http>,
    /// The lease it was configured with (`None`: the default address).
    lease: Option<Lease>,
}

/// Range requests to one object.
pub struct Connection {
    nic: Nic,
    binding: ScopedProtocol<HttpBinding>,
    child: Option<Child>,
}

/// A bounded wait: a timer event, closed on drop.
struct Deadline(Option<Event>);

impl Deadline {
    fn new() -> Self {
        // SAFETY: a timer event without a notification function.
        let event =
            unsafe { boot::create_event(boot::EventType::TIMER, boot::Tpl::CALLBACK, None, None) }
                .ok()
                .filter(|event| {
                    boot::set_timer(event, boot::TimerTrigger::Relative(TIMEOUT)).is_ok()
                });
        Self(event)
    }

    /// Whether the time is up (never, if the firmware gave no timer:
    /// then the HTTP driver's own timeouts end the wait).
    fn passed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|event| boot::check_event(event).unwrap_or(false))
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(event) = self.0.take() {
            let _ = boot::close_event(event);
        }
    }
}

/// Polls until `token` completes or [`TIMEOUT`] passes (then cancels it).
///
/// The token is a raw pointer read with volatile loads: the firmware
/// writes its status from inside `poll` through the pointer it was given,
/// which a `&mut` argument would let the compiler assume cannot happen
/// (and keep the first value it read for ever).
fn wait(
    http: &mut Http,
    token: *mut HttpToken,
    step: &'static str,
    request: &str,
) -> Result<Status, Fault> {
    // SAFETY: `token` points to a live token of the caller's for the call.
    let status = || unsafe { ptr::read_volatile(ptr::addr_of!((*token).status)) };
    let deadline = Deadline::new();
    while status() == Status::NOT_READY {
        // Its result is that of the lower layers' polls (NOT_READY when no
        // packet came): only the token's status counts.
        let _ = http.poll();
        if status() == Status::NOT_READY && deadline.passed() {
            // SAFETY: as above; no other reference to the token is live.
            let _ = http.cancel(unsafe { &mut *token });
            return Err(Fault::Transport {
                request: request.to_string(),
                error: alloc::format!("{step}: no answer within 10 s"),
                transient: true,
            });
        }
    }
    Ok(status())
}

/// A failed step with the firmware's status. Statuses that say the request
/// cannot be made (a bad parameter, a missing TLS configuration) are not
/// worth another try; resets, timeouts and device errors are.
fn transport(step: &'static str, request: &str, status: Status) -> Fault {
    let transient = !matches!(
        status,
        Status::INVALID_PARAMETER
            | Status::UNSUPPORTED
            | Status::NOT_FOUND
            | Status::ACCESS_DENIED
            | Status::SECURITY_VIOLATION
            | Status::OUT_OF_RESOURCES
    );
    Fault::Transport {
        request: request.to_string(),
        error: alloc::format!("{step}: {status:?}"),
        transient,
    }
}

/// A failed send; for `https://`, edk2's HttpDxe answers `NOT_FOUND` when
/// the firmware has no CA certificates (its `TlsCaCertificate` variable):
/// the line says so.
fn send_fault(url: &HttpUrl, request: &str, status: Status) -> Fault {
    let mut fault = transport("send", request, status);
    if let Fault::Transport { error: text, .. } = &mut fault {
        if url.is_https() && status == Status::NOT_FOUND {
            text.push_str(
                " (https: the firmware has no CA certificates to check the server with: its TlsCaCertificate variable is missing; OVMF and AAVMF take them from QEMU's -fw_cfg name=etc/edk2/https/cacerts)",
            );
        }
    }
    fault
}

/// A NUL-terminated copy of `text` for a header.
fn c_text(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend(text.bytes().filter(|&b| b != 0));
    bytes.push(0);
    bytes
}

/// Reads the headers the firmware allocated into `answer`, and frees them.
///
/// # Safety
///
/// `message` was filled by the HTTP driver's `Response`.
unsafe fn take_headers(message: &HttpMessage, answer: &mut Answer) {
    let Some(headers) = NonNull::new(message.header) else {
        return;
    };
    for i in 0..message.header_count {
        // SAFETY: the driver wrote `header_count` entries.
        let header = unsafe { &*headers.as_ptr().add(i) };
        if !header.field_name.is_null() && !header.field_value.is_null() {
            // SAFETY: NUL-terminated strings of the driver.
            let (name, value) = unsafe {
                (
                    CStr::from_ptr(header.field_name.cast()),
                    CStr::from_ptr(header.field_value.cast()),
                )
            };
            if let (Ok(name), Ok(value)) = (name.to_str(), value.to_str()) {
                answer.with_header(name, value);
            }
        }
        for field in [header.field_name, header.field_value] {
            if let Some(field) = NonNull::new(field.cast_mut()) {
                // SAFETY: pool memory the driver gave to the caller.
                let _ = unsafe { boot::free_pool(field.cast()) };
            }
        }
    }
    // SAFETY: as above.
    let _ = unsafe { boot::free_pool(headers.cast()) };
}

impl Connection {
    /// A connection through the interface `nic` (from [`interface`]),
    /// its child made for `url`.
    pub fn new(nic: Nic, url: &HttpUrl) -> Result<Self, NetError> {
        // SAFETY: a look at the service binding, as the `uefi` crate's
        // `HttpHelper` does; the interface outlives the driver's use.
        let binding = unsafe {
            boot::open_protocol::<HttpBinding>(
                OpenProtocolParams {
                    handle: nic.handle,
                    agent: boot::image_handle(),
                    controller: None,
                },
                OpenProtocolAttributes::GetProtocol,
            )
        }
        .map_err(|e| NetError::Http("open the service binding", e.status()))?;
        let mut connection = Self {
            nic,
            binding,
            child: None,
        };
        connection.child(url)?;
        Ok(connection)
    }

    /// The child configured for `url`, made if there is none or the one
    /// there uses another address (a redirect to another server).
    fn child(&mut self, url: &HttpUrl) -> Result<&mut Child, NetError> {
        let lease = self.nic.address_for(url)?;
        if self
            .child
            .as_ref()
            .is_some_and(|child| child.lease != lease)
        {
            self.reset();
        }
        if self.child.is_none() {
            let handle = self
                .binding
                .create_child()
                .map_err(|e| NetError::Http("create a child", e.status()))?;
            // SAFETY: the child just made; its protocol lives until
            // `destroy_child`, which runs after this guard drops.
            let opened = unsafe {
                boot::open_protocol::<Http>(
                    OpenProtocolParams {
                        handle,
                        agent: boot::image_handle(),
                        controller: None,
                    },
                    OpenProtocolAttributes::GetProtocol,
                )
            };
            let mut http = match opened {
                Ok(http) => http,
                Err(error) => {
                    let _ = self.binding.destroy_child(handle);
                    return Err(NetError::Http("open the child", error.status()));
                }
            };
            let mut ip4 = match lease {
                Some(Lease { address, mask }) => HttpV4AccessPoint {
                    use_default_addr: false.into(),
                    local_address: address.into(),
                    local_subnet: mask.into(),
                    local_port: 0,
                },
                None => HttpV4AccessPoint {
                    use_default_addr: true.into(),
                    ..Default::default()
                },
            };
            let config = HttpConfigData {
                http_version: HttpVersion::HTTP_VERSION_11,
                time_out_millisec: 10_000,
                local_addr_is_ipv6: false.into(),
                access_point: HttpAccessPoint {
                    ipv4_node: &mut ip4,
                },
            };
            if let Err(error) = http.configure(&config) {
                drop(http);
                let _ = self.binding.destroy_child(handle);
                return Err(NetError::Http("configure", error.status()));
            }
            self.child = Some(Child {
                handle,
                http,
                lease,
            });
        }
        // Set just above.
        self.child
            .as_mut()
            .ok_or(NetError::Http("configure", Status::ABORTED))
    }

    /// Drops the connection (a failed or half-read exchange).
    fn reset(&mut self) {
        if let Some(child) = self.child.take() {
            let Child { handle, http, .. } = child;
            drop(http);
            let _ = self.binding.destroy_child(handle);
        }
    }

    /// `GET url` with `Range: bytes=first-last` (and the pin's
    /// precondition); the answer's headers are checked by `check` before
    /// its body fills `out` (`last - first + 1` bytes), and refused bodies
    /// are never read. One try: the caller retries.
    pub fn get_range(
        &mut self,
        url: &HttpUrl,
        first: u64,
        out: &mut [u8],
        precondition: Option<(&str, &str)>,
        check: impl FnOnce(&Answer) -> Result<(), Fault>,
    ) -> Result<Answer, Fault> {
        let result = self.exchange(url, first, out, precondition, check);
        // Without a `Content-Length` (a chunked answer) bytes past the
        // range could still be on the connection: it is not reused.
        if result
            .as_ref()
            .map_or(true, |answer| answer.content_length.is_none())
        {
            self.reset();
        }
        result
    }

    fn exchange(
        &mut self,
        url: &HttpUrl,
        first: u64,
        out: &mut [u8],
        precondition: Option<(&str, &str)>,
        check: impl FnOnce(&Answer) -> Result<(), Fault>,
    ) -> Result<Answer, Fault> {
        let last = first + (out.len() as u64).max(1) - 1;
        let asked = answer::range_request(first, last);
        let nic = self.nic;
        let child = self.child(url).map_err(|error| Fault::Transport {
            request: asked.clone(),
            error: alloc::format!("connect: {error} (interface {nic:?})"),
            transient: true,
        })?;
        let http = &mut *child.http;

        let url16 = CString16::try_from(url.as_str())
            .map_err(|_| Fault::BadResponse("URL not UCS-2".to_string()))?;
        let host = c_text(url.host());
        let range_value = c_text(&answer::range_header(first, last));
        let mut owned: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some((name, value)) = precondition {
            owned.push((c_text(name), c_text(value)));
        }
        let mut headers: Vec<HttpHeader> = Vec::from([
            HttpHeader {
                field_name: c"Host".as_ptr().cast(),
                field_value: host.as_ptr(),
            },
            HttpHeader {
                field_name: c"Range".as_ptr().cast(),
                field_value: range_value.as_ptr(),
            },
        ]);
        for (name, value) in &owned {
            headers.push(HttpHeader {
                field_name: name.as_ptr(),
                field_value: value.as_ptr(),
            });
        }
        let mut request = HttpRequestData {
            method: HttpMethod::GET,
            url: url16.as_ptr().cast(),
        };
        let mut message = HttpMessage::default();
        message.data.request = &mut request;
        message.header_count = headers.len();
        message.header = headers.as_mut_ptr();
        let mut token = HttpToken {
            status: Status::NOT_READY,
            message: &mut message,
            ..Default::default()
        };
        http.request(&mut token)
            .map_err(|e| send_fault(url, &asked, e.status()))?;
        let status = wait(http, &raw mut token, "send", &asked)?;
        if status.is_error() {
            return Err(send_fault(url, &asked, status));
        }

        // The headers first, without a body buffer: a refused answer's
        // body is never read.
        let mut response = HttpResponseData {
            status_code: HttpStatusCode::STATUS_UNSUPPORTED,
        };
        let mut message = HttpMessage::default();
        message.data.response = &mut response;
        let mut token = HttpToken {
            status: Status::NOT_READY,
            message: &mut message,
            ..Default::default()
        };
        http.response(&mut token)
            .map_err(|e| transport("receive the headers", &asked, e.status()))?;
        let status = wait(http, &raw mut token, "receive the headers", &asked);
        let mut answer = Answer {
            status: status_code(u32::try_from(response.status_code.0).unwrap_or(u32::MAX)),
            ..Answer::default()
        };
        // SAFETY: `message` was given to the driver's `Response`.
        unsafe { take_headers(&message, &mut answer) };
        let status = status?;
        if status.is_error() && status != Status::HTTP_ERROR {
            return Err(transport("receive the headers", &asked, status));
        }
        check(&answer)?;

        let mut got = 0;
        while got < out.len() {
            let piece = &mut out[got..];
            let mut message = HttpMessage {
                body_length: piece.len(),
                body: piece.as_mut_ptr().cast::<c_void>(),
                ..Default::default()
            };
            message.data.response = ptr::null_mut();
            let mut token = HttpToken {
                status: Status::NOT_READY,
                message: &mut message,
                ..Default::default()
            };
            http.response(&mut token)
                .map_err(|e| transport("receive the body", &asked, e.status()))?;
            let status = wait(http, &raw mut token, "receive the body", &asked)?;
            if status.is_error() {
                return Err(transport("receive the body", &asked, status));
            }
            // SAFETY: the firmware wrote it through the pointer it was given.
            let length = unsafe { ptr::read_volatile(ptr::addr_of!(message.body_length)) };
            if length == 0 || length > piece.len() {
                return Err(Fault::BodyEnded {
                    range: answer::range_text(first, last),
                    got: got as u64,
                });
            }
            got += length;
        }
        Ok(answer)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reset();
    }
}
