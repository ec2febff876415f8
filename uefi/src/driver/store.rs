//! The stores an image is read from: a whole disk through
//! `EFI_DISK_IO_PROTOCOL`, a file through `EFI_FILE_PROTOCOL`, or an
//! object on a web server through `EFI_HTTP_PROTOCOL` (`super::net`).
//!
//! One enum rather than two types, because an image, its external data file
//! and its raw backing share one storage type in the crate's `ImageBuilder`.

use core::cell::RefCell;
use core::fmt;
use core::ptr::NonNull;

use alloc::boxed::Box;
use alloc::string::{String, ToString};

use qcow2_http::rules::{
    self, CacheError, Fault, HttpUrl, Pin, ReadAhead, Retry, UrlError, MAX_REDIRECTS,
};
use qcow2_reader::BlockRead;
use qcow2_uefi::budget::Reservation;
use qcow2_uefi::http::HttpError;
use qcow2_uefi::short_read::{self, ShortReadError};
use uefi::proto::media::file::RegularFile;
use uefi::Status;
use uefi_raw::protocol::disk::DiskIoProtocol;

use super::net::{Connection, Nic};

/// Most bytes asked of a file system driver in one `Read` call.
const FILE_CHUNK_BYTES: usize = 1 << 20;

/// Why a store read failed.
#[derive(Debug)]
pub enum StoreError {
    /// The firmware returned this status.
    Firmware(Status),
    /// A file returned fewer bytes than its size promised.
    Ended {
        /// The first missing byte.
        offset: u64,
    },
    /// The range is outside the store.
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The store's size.
        size: u64,
    },
    /// A read arrived while another was in progress on the same file.
    Busy,
    /// Reading over HTTP failed (the error names the URL).
    Http(Box<HttpError>),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StoreError::Firmware(status) => write!(f, "firmware status {status:?}"),
            StoreError::Ended { offset } => write!(f, "the file ended at offset {offset:#x}"),
            StoreError::OutOfRange { offset, len, size } => write!(
                f,
                "{len} bytes at {offset:#x} are outside the {size} bytes of the store"
            ),
            StoreError::Busy => f.write_str("a read re-entered a read of the same file"),
            StoreError::Http(ref error) => write!(f, "{error}"),
        }
    }
}

/// A disk held by the driver: its `EFI_DISK_IO_PROTOCOL`, media and size.
/// A clone reads the same disk (an encrypted image's walk is repeated for
/// each passphrase tried).
#[derive(Clone)]
pub struct DiskStore {
    /// Valid while the driver holds the disk's DiskIo `BY_DRIVER`: the
    /// firmware calls the driver's `Stop`, which drops this store, before
    /// the protocol can go away.
    disk_io: NonNull<DiskIoProtocol>,
    media_id: u32,
    size: u64,
}

impl DiskStore {
    /// A store over `disk_io` for the media `media_id` of `size` bytes.
    pub fn new(disk_io: NonNull<DiskIoProtocol>, media_id: u32, size: u64) -> Self {
        Self {
            disk_io,
            media_id,
            size,
        }
    }
}

/// A file opened for reading, with its size.
pub struct FileStore {
    file: RefCell<RegularFile>,
    size: u64,
}

impl FileStore {
    /// A store over `file` of `size` bytes.
    pub fn new(file: RegularFile, size: u64) -> Self {
        Self {
            file: RefCell::new(file),
            size,
        }
    }
}

/// Bytes of one read-ahead block: each range request asks for one
/// aligned block (the range is 256 KiB to 2 MiB; the smallest
/// fetches least beyond what a boot reads).
pub const HTTP_READAHEAD: usize = 256 << 10;

/// Blocks in each HTTP object's cache: [`HTTP_READAHEAD`] times this is
/// allocated once per object at attach (4 MiB), counted in the budget.
pub const HTTP_CACHE_BLOCKS: usize = 16;

/// The size and version of the object at `url` from a one-byte range
/// request, with retries; a redirect is its [`Fault::Redirect`].
fn probe(connection: &mut Connection, url: &HttpUrl) -> Result<(u64, Pin), HttpError> {
    with_retries(url, || {
        let mut byte = [0u8; 1];
        let mut found = None;
        connection.get_range(url, 0, &mut byte, None, |answer| {
            found = Some(rules::probe(answer)?);
            Ok(())
        })?;
        found.ok_or_else(|| Fault::BadResponse("no answer".into()))
    })
}

/// An object on a web server, pinned to the version it had at open.
pub struct HttpStore {
    url: HttpUrl,
    size: u64,
    pin: Pin,
    state: RefCell<HttpState>,
    /// The cache's bytes, counted against the driver's budget.
    _memory: Reservation,
}

struct HttpState {
    connection: Connection,
    cache: ReadAhead,
}

/// Runs `once` under the shared retry policy (`Retry::DEFAULT`: which
/// faults, how many tries), the firmware stalling between tries.
fn with_retries<T>(url: &HttpUrl, once: impl FnMut() -> Result<T, Fault>) -> Result<T, HttpError> {
    Retry::DEFAULT
        .run(once, uefi::boot::stall)
        .map_err(|failure| HttpError {
            url: url.to_string(),
            failure,
        })
}

/// Why an HTTP object could not be opened.
#[derive(Debug)]
pub enum HttpOpenError {
    /// The network or the firmware's HTTP driver.
    Net(super::net::NetError),
    /// The server's answer to the first range request.
    Http(Box<HttpError>),
    /// The cache does not fit in the driver's budget or the pool.
    Memory {
        /// Bytes it needs.
        bytes: usize,
        /// What is left of the budget.
        left: usize,
    },
    /// A redirect that is not followed (boxed: the error travels up the
    /// driver's stack in every attach result).
    Redirect(Box<Redirected>),
}

/// A redirect not followed: its target (a downgrade to `http://`, another
/// scheme, `..`), or one more than [`MAX_REDIRECTS`].
#[derive(Debug)]
pub struct Redirected {
    /// The URL that answered with it.
    from: String,
    /// Its `Location`.
    location: String,
    /// Why it is not followed (`None`: too many redirects).
    refused: Option<UrlError>,
}

impl fmt::Display for Redirected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { from, location, .. } = self;
        match &self.refused {
            Some(error) => write!(f, "{from}: redirected to {location:?}, not followed: {error}"),
            None => write!(
                f,
                "{from}: redirected to {location:?} after {MAX_REDIRECTS} redirects already; not followed"
            ),
        }
    }
}

impl fmt::Display for HttpOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpOpenError::Net(error) => write!(f, "{error}"),
            HttpOpenError::Http(error) => write!(f, "{error}"),
            HttpOpenError::Memory { bytes, left } => write!(
                f,
                "its read-ahead cache needs {bytes} bytes, over the {left} left of the driver's budget or the pool"
            ),
            HttpOpenError::Redirect(redirected) => write!(f, "{redirected}"),
        }
    }
}

impl HttpStore {
    /// Opens `url` through the interface `nic`: its size and version from
    /// a one-byte range request (following redirects to where the object
    /// is, which [`url`](Self::url) then says), and its read-ahead cache
    /// allocated.
    pub fn open(mut url: HttpUrl, nic: Nic) -> Result<Self, HttpOpenError> {
        let mut connection = Connection::new(nic, &url).map_err(HttpOpenError::Net)?;
        let mut redirects = 0;
        let (size, pin) = loop {
            let error = match probe(&mut connection, &url) {
                Ok(found) => break found,
                Err(error) => error,
            };
            let Fault::Redirect { ref location, .. } = error.failure.fault else {
                return Err(HttpOpenError::Http(Box::new(error)));
            };
            let refused = |refused| {
                HttpOpenError::Redirect(Box::new(Redirected {
                    from: url.to_string(),
                    location: location.clone(),
                    refused,
                }))
            };
            if redirects == MAX_REDIRECTS {
                return Err(refused(None));
            }
            url = url
                .redirect(location)
                .map_err(|error| refused(Some(error)))?;
            redirects += 1;
        };
        let bytes = ReadAhead::memory_bytes(HTTP_READAHEAD, HTTP_CACHE_BLOCKS);
        let memory = qcow2_uefi::budget::reserve(bytes)
            .map_err(|left| HttpOpenError::Memory { bytes, left })?;
        let cache = ReadAhead::new(size, HTTP_READAHEAD, HTTP_CACHE_BLOCKS).map_err(|_| {
            HttpOpenError::Memory {
                bytes,
                left: qcow2_uefi::budget::left(),
            }
        })?;
        Ok(Self {
            url,
            size,
            pin,
            state: RefCell::new(HttpState { connection, cache }),
            _memory: memory,
        })
    }

    /// The object's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the object is: the URL opened, or where its redirects led.
    pub fn url(&self) -> &HttpUrl {
        &self.url
    }

    /// `ETag` (or `Last-Modified`) the object is pinned to, for the attach line.
    pub fn pinned_as(&self) -> &str {
        self.pin
            .etag
            .as_deref()
            .or(self.pin.last_modified.as_deref())
            .unwrap_or("no validator")
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let mut state = self.state.try_borrow_mut().map_err(|_| StoreError::Busy)?;
        let HttpState { connection, cache } = &mut *state;
        let (url, size, pin) = (&self.url, self.size, &self.pin);
        let before = (cache.requests(), cache.fetched());
        let read = cache
            .read_at(offset, buf, |first, out| {
                let last = first + out.len() as u64 - 1;
                with_retries(url, || {
                    connection
                        .get_range(url, first, out, pin.precondition(), |answer| {
                            rules::check_range(answer, first, last, size, pin)
                        })
                        .map(|_| ())
                })
            })
            .map_err(|error| match error {
                CacheError::OutOfRange => StoreError::OutOfRange {
                    offset,
                    len: buf.len() as u64,
                    size,
                },
                CacheError::Fetch(error) => StoreError::Http(Box::new(error)),
            });
        super::boot_stats::fetched(cache.requests() - before.0, cache.fetched() - before.1);
        read
    }
}

/// Where an image's bytes come from.
pub enum Store {
    /// A whole disk.
    Disk(DiskStore),
    /// A file.
    File(FileStore),
    /// An object on a web server (boxed: its cache state is larger than
    /// the other stores).
    Http(Box<HttpStore>),
}

impl Store {
    fn check_range(&self, offset: u64, len: usize) -> Result<(), StoreError> {
        let size = self.size_bytes();
        let len = len as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(StoreError::OutOfRange { offset, len, size }),
        }
    }

    fn size_bytes(&self) -> u64 {
        match self {
            Store::Disk(disk) => disk.size,
            Store::File(file) => file.size,
            Store::Http(object) => object.size,
        }
    }
}

impl BlockRead for Store {
    type Error = StoreError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let key = core::ptr::from_ref(self) as usize;
        super::boot_stats::store_read(key, self.size_bytes(), offset, buf.len());
        match self {
            Store::Disk(disk) => {
                let read_disk = {
                    // SAFETY: see `DiskStore::disk_io`.
                    unsafe { disk.disk_io.as_ref() }.read_disk
                };
                // SAFETY: the interface is valid (above), and `buf` is
                // writable for `buf.len()` bytes for the whole call.
                let status = unsafe {
                    read_disk(
                        disk.disk_io.as_ptr(),
                        disk.media_id,
                        offset,
                        buf.len(),
                        buf.as_mut_ptr().cast(),
                    )
                };
                if status.is_error() {
                    return Err(StoreError::Firmware(status));
                }
                Ok(())
            }
            Store::Http(object) => object.read(offset, buf),
            Store::File(file) => {
                let mut file = file.file.try_borrow_mut().map_err(|_| StoreError::Busy)?;
                let len = buf.len() as u64;
                short_read::read_exact(offset, buf, FILE_CHUNK_BYTES, |position, piece| {
                    file.set_position(position)?;
                    file.read(piece)
                        .map_err(|error| error.to_err_without_payload())
                })
                .map_err(|error| match error {
                    ShortReadError::Read { error, .. } => StoreError::Firmware(error.status()),
                    ShortReadError::Ended { offset } => StoreError::Ended { offset },
                    ShortReadError::Overflow => StoreError::OutOfRange {
                        offset,
                        len,
                        size: self.size_bytes(),
                    },
                })
            }
        }
    }

    fn size(&self) -> Result<u64, StoreError> {
        Ok(self.size_bytes())
    }
}
