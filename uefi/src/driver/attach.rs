//! Opening an image, with what it needs, from a disk or a file system,
//! through the crate's chain walk (`qcow2_reader::chain`): this file only
//! supplies the resolvers and the driver's limits.
//!
//! A disk-attached image is a whole disk holding QCOW2 bytes. It has no
//! directory to look for other files in, so an image naming a backing
//! file or an external data file is refused (attach such an image as a
//! file instead). A file-attached image opens its backing chain and data
//! file from its own directory on the same file system
//! (`qcow2_uefi::path`), with at most [`MAX_CHAIN_DEPTH`] images and no
//! file twice. The walk is a loop: the driver's stack does not grow with
//! the chain while attaching.
//!
//! Memory: each QCOW2 layer takes `ImageBuilder::memory_bytes(&config())`
//! bytes, allocated once (fallibly) when it is opened and freed when the
//! disk is stopped: with [`config`], 256 KiB of table cache plus three
//! clusters (one decompressed cluster and two of compressed input), so
//! 448 KiB for 64 KiB clusters and at most 6.25 MiB for 2 MiB clusters, per
//! layer; a zstd layer's decoder adds `ImageBuilder::decoder_bytes` at its
//! first compressed cluster (423,712 bytes for 64 KiB clusters), counted
//! here at the walk. An encrypted layer is unlocked with a passphrase asked
//! on the console (`unlock`); its ciphers live in its image, and the
//! prompt's line and the secret are freed before the attach returns.
//! One image (its whole chain) may take at most [`IMAGE_BUDGET`]
//! bytes and all attached images together [`TOTAL_BUDGET`]
//! (`qcow2_uefi::budget`); an image over either is refused by name.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use core::fmt;

use qcow2_reader::chain::{
    self, Disk, Found, Resolver, Role, Secret, WalkError, WalkOptions, Walked,
};
use qcow2_reader::crypto::{CryptoError, UnlockLimits};
use qcow2_reader::{BlockRead, Config, Error, FileName, Unsupported};
use qcow2_uefi::budget::{self, Reservation};
use qcow2_uefi::passphrase::{self, Attempt, Refusal};
use qcow2_uefi::path::{self, PathError};
use uefi::proto::media::file::{Directory, File, FileAttribute, FileInfo, FileMode};
use uefi::{CString16, Status};

use super::info_line;
use super::net;
use super::prompt;
use super::store::{DiskStore, FileStore, HttpOpenError, HttpStore, Store, StoreError};
use qcow2_http::rules::HttpUrl;

/// A readable virtual disk of any depth of chain.
pub type Layer = Disk<Store>;

/// The caches of every QCOW2 layer (see the module documentation).
///
/// Set field by field on the default: `Config` is `#[non_exhaustive]` in
/// the reworked crate, which forbids the struct literal clippy prefers.
#[allow(clippy::field_reassign_with_default)]
pub fn config() -> Config {
    let mut config = Config::default();
    config.table_slice_bytes = 4096;
    config.table_cache_bytes = 256 << 10;
    config.compressed_clusters = 1;
    config
}

/// Most images in one chain, the top included.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Most bytes of cache and zstd decoder memory one attached image (its
/// whole chain) may take: 16 layers of 64 KiB clusters take 7 MiB (13.5 MiB
/// if they are zstd images); 5 layers of 2 MiB clusters 31.25 MiB (43.8 MiB
/// with zstd, over the budget).
pub const IMAGE_BUDGET: usize = 32 << 20;

/// Most bytes of cache and decoder memory all attached images may take together.
pub const TOTAL_BUDGET: usize = budget::TOTAL_BYTES;

/// An opened image: its virtual disk and the memory its layers took.
pub struct Attached {
    /// The virtual disk.
    pub disk: Layer,
    /// Its size in bytes.
    pub virtual_size: u64,
    /// Bytes allocated for the caches of all its layers, counted against
    /// the driver's budget until the disk is dropped.
    pub memory: Reservation,
    /// Images in the chain, the top included.
    pub layers: usize,
}

/// Why the resolver could not open a file an image names.
#[derive(Debug)]
pub enum OpenError {
    /// A disk-attached image has no directory to find files in.
    NoDirectory,
    /// The name cannot be used on this file system.
    Name(PathError),
    /// The firmware could not open the file.
    Open {
        /// The file.
        path: String,
        /// The firmware's status.
        status: Status,
    },
    /// The object could not be opened over HTTP.
    Http {
        /// Its URL.
        url: String,
        /// Why.
        error: HttpOpenError,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NoDirectory => f.write_str(
                "a disk-attached image cannot open it; attach the image as a file (\\qcow2.cfg) with the file beside it",
            ),
            OpenError::Name(error) => write!(f, "cannot use the name: {error}"),
            OpenError::Open { path, status } => write!(f, "cannot open {path}: {status:?}"),
            // An HTTP error names the URL itself.
            OpenError::Http {
                error: HttpOpenError::Http(error),
                ..
            } => write!(f, "{error}"),
            OpenError::Http { url, error } => write!(f, "cannot open {url}: {error}"),
        }
    }
}

/// Why an image is not attached. Each names the file or disk at fault.
#[derive(Debug)]
pub enum AttachError {
    /// The top image cannot be opened over HTTP.
    Http {
        /// Its URL.
        url: String,
        /// Why.
        error: HttpOpenError,
    },
    /// The top image cannot be opened.
    Open {
        /// The file.
        path: String,
        /// The firmware's status.
        status: Status,
    },
    /// The chain walk refused the image or a file it names.
    Chain(WalkError<String, OpenError, StoreError>),
    /// The image would take more of the driver's memory than it allows.
    OverBudget {
        /// The image.
        name: String,
        /// Bytes its caches and decoders need (down to the layer that crosses the budget).
        bytes: usize,
        /// Bytes it may take: [`IMAGE_BUDGET`], or what is left of
        /// [`TOTAL_BUDGET`] if that is less.
        allowed: usize,
    },
    /// The virtual disk cannot be presented as blocks.
    Geometry {
        /// The image.
        name: String,
        /// Why.
        error: qcow2_uefi::blocks::GeometryError,
    },
    /// An encrypted image no passphrase typed at the prompt opened.
    Locked {
        /// The image.
        name: String,
        /// Why: the last wrong passphrase's error, Escape, or no console.
        refusal: Refusal<Box<AttachError>>,
    },
}

impl AttachError {
    /// The crate's error, if the walk failed on an image.
    fn image_error(&self) -> Option<&Error<StoreError>> {
        match self {
            AttachError::Chain(WalkError::Image { error, .. }) => Some(error.innermost()),
            _ => None,
        }
    }

    /// Whether a layer is encrypted and no passphrase was given.
    fn needs_key(&self) -> bool {
        matches!(
            self.image_error(),
            Some(Error::Unsupported(Unsupported::NeedsKey { .. }))
        )
    }

    /// Whether the passphrase opened no key slot of a layer.
    fn wrong_passphrase(&self) -> bool {
        matches!(
            self.image_error(),
            Some(Error::Crypto(CryptoError::WrongPassphrase))
        )
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::Open { path, status } => write!(f, "{path}: cannot open: {status:?}"),
            AttachError::Http {
                error: HttpOpenError::Http(error),
                ..
            } => write!(f, "{error}"),
            AttachError::Http { url, error } => write!(f, "{url}: cannot open: {error}"),
            AttachError::Chain(error) => error.describe(&Names).fmt(f),
            AttachError::OverBudget {
                name,
                bytes,
                allowed,
            } => write!(
                f,
                "{name}: the image's caches and decoders need {bytes} bytes, over the {allowed} it may take (the driver allows {IMAGE_BUDGET} per image and {TOTAL_BUDGET} for all images)"
            ),
            AttachError::Geometry { name, error } => write!(f, "{name}: {error}"),
            // The last wrong passphrase's error names the image (and the layer).
            AttachError::Locked {
                refusal: refusal @ Refusal::Exhausted { last: Some(_) },
                ..
            } => write!(f, "{refusal}"),
            AttachError::Locked { name, refusal } => {
                write!(f, "{name}: the image is encrypted: {refusal}")
            }
        }
    }
}

/// Whether the first bytes of a store are a QCOW2 header's magic.
/// A store that cannot be read is not one.
pub fn has_qcow2_magic(store: &Store) -> bool {
    qcow2_reader::is_qcow2(store).unwrap_or(false)
}

/// Locations are the paths themselves: for messages only.
struct Names;

impl Resolver for Names {
    type Store = Store;
    type Location = String;
    type Error = OpenError;

    fn open(
        &mut self,
        _: &FileName,
        _: Role,
        _: &String,
    ) -> Result<Found<Store, String>, OpenError> {
        Err(OpenError::NoDirectory)
    }

    fn same_file(&mut self, a: &String, b: &String) -> bool {
        // FAT names are case-insensitive: `BASE.qcow2` and `base.qcow2` are one file.
        a.eq_ignore_ascii_case(b)
    }

    fn describe(&self, location: &String) -> String {
        location.clone()
    }
}

/// The files beside an image on its volume.
struct Volume<'a> {
    root: &'a mut Directory,
}

impl Resolver for Volume<'_> {
    type Store = Store;
    type Location = String;
    type Error = OpenError;

    fn open(
        &mut self,
        name: &FileName,
        _role: Role,
        named_by: &String,
    ) -> Result<Found<Store, String>, OpenError> {
        let path = path::beside(named_by, name.as_bytes()).map_err(OpenError::Name)?;
        let store = open_file(self.root, &path).map_err(|status| OpenError::Open {
            path: path.clone(),
            status,
        })?;
        Ok(Found {
            store,
            location: path,
        })
    }

    fn same_file(&mut self, a: &String, b: &String) -> bool {
        Names.same_file(a, b)
    }

    fn describe(&self, location: &String) -> String {
        location.clone()
    }
}

/// The files beside an image on its web server: the name's last component
/// in the image URL's directory, as for files on a volume.
struct Web {
    nic: net::Nic,
}

impl Resolver for Web {
    type Store = Store;
    type Location = String;
    type Error = OpenError;

    fn open(
        &mut self,
        name: &FileName,
        _role: Role,
        named_by: &String,
    ) -> Result<Found<Store, String>, OpenError> {
        let base = HttpUrl::parse(named_by).map_err(|_| OpenError::Name(PathError::NotAFile))?;
        let url = path::url_beside(&base, name.as_bytes()).map_err(OpenError::Name)?;
        let (store, location) =
            open_url(url.clone(), self.nic).map_err(|error| OpenError::Http {
                url: url.to_string(),
                error,
            })?;
        Ok(Found { store, location })
    }

    fn same_file(&mut self, a: &String, b: &String) -> bool {
        // Paths on a server are case-sensitive; the scheme and host are not,
        // but a loop through differently spelt hosts ends at the depth limit.
        a == b
    }

    fn describe(&self, location: &String) -> String {
        location.clone()
    }
}

/// Opens one object over HTTP and says so on the console; with the URL
/// where it was found (after redirects), the base of the names it holds.
fn open_url(url: HttpUrl, nic: net::Nic) -> Result<(Store, String), HttpOpenError> {
    let store = HttpStore::open(url.clone(), nic)?;
    let location = store.url().to_string();
    if location != url.as_str() {
        info_line(format_args!("{url}: redirected to {location}"));
    }
    info_line(format_args!(
        "{location}: {} bytes, pinned to {}, {} bytes of read-ahead cache ({} blocks of {} bytes)",
        store.size(),
        store.pinned_as(),
        qcow2_http::rules::ReadAhead::memory_bytes(
            super::store::HTTP_READAHEAD,
            super::store::HTTP_CACHE_BLOCKS
        ),
        super::store::HTTP_CACHE_BLOCKS,
        super::store::HTTP_READAHEAD,
    ));
    Ok((Store::Http(Box::new(store)), location))
}

/// The walk's settings: the driver's depth and cache size, and the
/// memory the budget has left, at most [`IMAGE_BUDGET`].
fn walk_options() -> WalkOptions<'static> {
    let mut options = WalkOptions::default();
    options.max_depth = MAX_CHAIN_DEPTH;
    options.config = config();
    options.max_memory = budget::left().min(IMAGE_BUDGET);
    options
}

/// Opens the top image of a chain: again for each passphrase tried, since
/// a walk takes the store it is given.
type OpenTop<'a, R> = dyn FnMut(&mut R) -> Result<Found<Store, String>, AttachError> + 'a;

/// Walks and opens the chain of the image `name` (opened by `open_top`),
/// asking for a passphrase when a layer is encrypted, and charges its
/// memory to the budget.
fn attach<R>(
    resolver: &mut R,
    name: &str,
    open_top: &mut OpenTop<R>,
) -> Result<Attached, AttachError>
where
    R: Resolver<Store = Store, Location = String, Error = OpenError>,
{
    let top = open_top(resolver)?;
    let walked = match walk(resolver, top, &walk_options(), name) {
        Err(error) if error.needs_key() => unlock(resolver, name, open_top, error)?,
        walked => walked?,
    };
    let bytes = walked.memory_bytes();
    let memory = budget::reserve(bytes).map_err(|left| AttachError::OverBudget {
        name: name.to_string(),
        bytes,
        allowed: left,
    })?;
    let layers = walked.layers.len();
    let disk = walked.disk;
    let virtual_size = disk.size().map_err(|error: Error<StoreError>| {
        AttachError::Chain(WalkError::Image {
            layer: name.to_string(),
            error,
        })
    })?;
    qcow2_uefi::blocks::Geometry::new(virtual_size).map_err(|error| AttachError::Geometry {
        name: name.to_string(),
        error,
    })?;
    Ok(Attached {
        disk,
        virtual_size,
        memory,
        layers,
    })
}

/// One walk of the chain from `top` with `options`.
fn walk<R>(
    resolver: &mut R,
    top: Found<Store, String>,
    options: &WalkOptions<'_>,
    name: &str,
) -> Result<Walked<Store, String>, AttachError>
where
    R: Resolver<Store = Store, Location = String, Error = OpenError>,
{
    chain::walk(resolver, top, options).map_err(|error| match error {
        WalkError::OverBudget { needed, .. } => AttachError::OverBudget {
            name: name.to_string(),
            bytes: needed,
            allowed: options.max_memory,
        },
        error => AttachError::Chain(error),
    })
}

/// Asks for the passphrase on the console ([`passphrase::TRIES`] tries)
/// and walks the chain with it, offered to every encrypted layer (the
/// crate's [`Secret`], zeroized when dropped after each try). `locked` is
/// the walk's refusal without a passphrase, returned as it is when there
/// is no console to ask on.
///
/// Memory: the prompt's line ([`passphrase::MAX_PASSPHRASE_BYTES`]) and,
/// during each try, the secret's copy of the passphrase and its list of
/// unlocked master keys; all freed before the attach returns. A LUKS
/// layer's ciphers live in its image (a few KiB of key schedules).
fn unlock<R>(
    resolver: &mut R,
    name: &str,
    open_top: &mut OpenTop<R>,
    locked: AttachError,
) -> Result<Walked<Store, String>, AttachError>
where
    R: Resolver<Store = Store, Location = String, Error = OpenError>,
{
    if !prompt::has_input() {
        return Err(locked);
    }
    let mut console = prompt::FirmwareConsole { name };
    passphrase::ask(&mut console, |typed| {
        let secret = Secret::passphrase(typed, UnlockLimits::default());
        let mut options = walk_options();
        options.secret = Some(&secret);
        let top = match open_top(resolver) {
            Ok(top) => top,
            Err(error) => return Attempt::Failed(Box::new(error)),
        };
        match walk(resolver, top, &options, name) {
            Ok(walked) => Attempt::Opened(walked),
            Err(error) if error.wrong_passphrase() => Attempt::Wrong(Box::new(error)),
            Err(error) => Attempt::Failed(Box::new(error)),
        }
    })
    .map_err(|refusal| match refusal {
        Refusal::Failed(error) => *error,
        refusal => AttachError::Locked {
            name: name.to_string(),
            refusal,
        },
    })
}

/// Opens the image on a whole disk, `name` being the disk's device path.
pub fn disk_image(name: &str, store: DiskStore) -> Result<Attached, AttachError> {
    attach(&mut Names, name, &mut |_| {
        Ok(Found {
            store: Store::Disk(store.clone()),
            location: name.to_string(),
        })
    })
}

/// Opens the image file at `path` on the volume `root`, with its chain.
pub fn file_image(root: &mut Directory, path: &str) -> Result<Attached, AttachError> {
    attach(&mut Volume { root }, path, &mut |volume| {
        let store = open_file(volume.root, path).map_err(|status| AttachError::Open {
            path: path.to_string(),
            status,
        })?;
        Ok(Found {
            store,
            location: path.to_string(),
        })
    })
}

/// Opens the image at `url` over the network, with its chain from the
/// same server directory.
pub fn url_image(url: &str) -> Result<Attached, AttachError> {
    let http_error = |error| AttachError::Http {
        url: url.to_string(),
        error,
    };
    let parsed = HttpUrl::parse(url).map_err(|_| {
        http_error(HttpOpenError::Net(net::NetError::Http(
            "parse the URL",
            Status::INVALID_PARAMETER,
        )))
    })?;
    let nic = net::interface().map_err(|error| http_error(HttpOpenError::Net(error)))?;
    attach(&mut Web { nic }, url, &mut |web| {
        let (store, location) = open_url(parsed.clone(), web.nic).map_err(http_error)?;
        Ok(Found { store, location })
    })
}

/// Opens a regular file for reading and learns its size.
fn open_file(root: &mut Directory, path: &str) -> Result<Store, Status> {
    let name = CString16::try_from(path).map_err(|_| Status::INVALID_PARAMETER)?;
    let handle = root
        .open(&name, FileMode::Read, FileAttribute::empty())
        .map_err(|e| e.status())?;
    let mut file = handle
        .into_regular_file()
        .ok_or(Status::INVALID_PARAMETER)?;
    let info = file.get_boxed_info::<FileInfo>().map_err(|e| e.status())?;
    Ok(Store::File(FileStore::new(file, info.file_size())))
}
