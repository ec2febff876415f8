//! Opening an image, with what it needs, from a disk or a file system.
//!
//! A disk-attached image is a whole disk holding QCOW2 bytes. It has no
//! directory to look for other files in, so an image naming a backing
//! file or an external data file is refused (attach such an image as a
//! file instead). A file-attached image opens its backing chain and data
//! file from its own directory on the same file system
//! (`qcow2_uefi::path`), with at most [`MAX_CHAIN_DEPTH`] images and no
//! file twice.
//!
//! Memory: each QCOW2 layer takes `ImageBuilder::memory_bytes(&config())`
//! bytes, allocated once when it is opened and freed when the disk is
//! stopped: with [`config`], 256 KiB of table cache plus three clusters
//! (one decompressed cluster and two of compressed input), so 448 KiB for
//! 64 KiB clusters and at most 6.25 MiB for 2 MiB clusters, per layer.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use qcow2_reader::{BlockRead, Config, Error, Image, ImageBuilder, Raw};
use qcow2_uefi::path::{self, PathError};
use uefi::proto::media::file::{Directory, File, FileAttribute, FileInfo, FileMode};
use uefi::{CString16, Status};

use super::store::{FileStore, Store, StoreError};

/// A readable virtual disk of any depth of chain.
pub type Layer = Box<dyn BlockRead<Error = Error<StoreError>>>;

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

/// An opened image: its virtual disk and the memory its layers took.
pub struct Attached {
    /// The virtual disk.
    pub disk: Layer,
    /// Its size in bytes.
    pub virtual_size: u64,
    /// Bytes allocated for the caches of all its layers.
    pub memory_bytes: usize,
    /// Images in the chain, the top included.
    pub layers: usize,
}

/// Why an image is not attached. Each names the file or disk at fault.
#[derive(Debug)]
pub enum AttachError {
    /// The crate refuses the image, or a read at open failed.
    Image {
        /// The image.
        name: String,
        /// The crate's reason.
        error: Error<StoreError>,
    },
    /// A disk-attached image needs a file it has no way to find.
    NeedsFile {
        /// The image.
        name: String,
        /// "backing file" or "external data file".
        what: &'static str,
        /// The name in the header.
        file: String,
    },
    /// A file could not be opened.
    Open {
        /// The file.
        path: String,
        /// Who names it.
        named_by: Option<String>,
        /// The firmware's status.
        status: Status,
    },
    /// A file name in a header cannot be used on this file system.
    Name {
        /// The image naming it.
        name: String,
        /// The name, lossily printed.
        file: String,
        /// Why.
        error: PathError,
    },
    /// A backing format other than qcow2 and raw.
    Format {
        /// The image naming it.
        name: String,
        /// The format.
        format: String,
    },
    /// The chain is deeper than [`MAX_CHAIN_DEPTH`].
    TooDeep {
        /// The top image.
        name: String,
    },
    /// The chain comes back to a file already in it.
    Loop {
        /// The file met twice.
        path: String,
    },
    /// The pool cannot hold an image's caches.
    OutOfMemory {
        /// The image.
        name: String,
        /// Bytes needed.
        bytes: usize,
    },
    /// The virtual disk cannot be presented as blocks.
    Geometry {
        /// The image.
        name: String,
        /// Why.
        error: qcow2_uefi::blocks::GeometryError,
    },
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::Image { name, error } => write!(f, "{name}: {error}"),
            AttachError::NeedsFile { name, what, file } => write!(
                f,
                "{name}: the image names a {what} \"{file}\", which a disk-attached image cannot open; attach the image as a file (\\qcow2.cfg) with the file beside it"
            ),
            AttachError::Open {
                path,
                named_by: Some(by),
                status,
            } => write!(f, "{path} (named by {by}): cannot open: {status:?}"),
            AttachError::Open {
                path,
                named_by: None,
                status,
            } => write!(f, "{path}: cannot open: {status:?}"),
            AttachError::Name { name, file, error } => {
                write!(f, "{name}: cannot use the file name \"{file}\": {error}")
            }
            AttachError::Format { name, format } => write!(
                f,
                "{name}: backing format \"{format}\" is not supported (qcow2 and raw are)"
            ),
            AttachError::TooDeep { name } => write!(
                f,
                "{name}: the backing chain has more than {MAX_CHAIN_DEPTH} images"
            ),
            AttachError::Loop { path } => {
                write!(f, "{path}: the backing chain comes back to this file")
            }
            AttachError::OutOfMemory { name, bytes } => {
                write!(f, "{name}: cannot allocate {bytes} bytes for the image's caches")
            }
            AttachError::Geometry { name, error } => write!(f, "{name}: {error}"),
        }
    }
}

/// Whether the first bytes of a store are a QCOW2 header's magic.
/// A store that cannot be read is not one.
pub fn has_qcow2_magic(store: &Store) -> bool {
    qcow2_reader::is_qcow2(store).unwrap_or(false)
}

/// Opens the builder's image in memory allocated once, here.
///
/// The allocation is tried with `try_reserve_exact` first, so that a pool
/// too small is an error line rather than the allocator's panic.
fn open_layer<B>(
    name: &str,
    builder: ImageBuilder<Store, B>,
) -> Result<(Image<'static, Store, B>, usize), AttachError>
where
    B: BlockRead,
    B::Error: Into<Error<StoreError>>,
{
    let image_error = |error| AttachError::Image {
        name: name.to_string(),
        error,
    };
    let bytes = builder.memory_bytes(&config()).map_err(image_error)?;
    let mut probe: Vec<u8> = Vec::new();
    probe
        .try_reserve_exact(bytes)
        .map_err(|_| AttachError::OutOfMemory {
            name: name.to_string(),
            bytes,
        })?;
    drop(probe);
    let image = builder.open_alloc(&config()).map_err(image_error)?;
    Ok((image, bytes))
}

fn finish(
    name: &str,
    disk: Layer,
    memory_bytes: usize,
    layers: usize,
) -> Result<Attached, AttachError> {
    let virtual_size = disk.size().map_err(|error| AttachError::Image {
        name: name.to_string(),
        error,
    })?;
    qcow2_uefi::blocks::Geometry::new(virtual_size).map_err(|error| AttachError::Geometry {
        name: name.to_string(),
        error,
    })?;
    Ok(Attached {
        disk,
        virtual_size,
        memory_bytes,
        layers,
    })
}

/// Opens the image on a whole disk, `name` being the disk's device path.
pub fn disk_image(name: &str, store: Store) -> Result<Attached, AttachError> {
    let builder = Image::builder(store).map_err(|error| AttachError::Image {
        name: name.to_string(),
        error,
    })?;
    let header = builder.header();
    if let Some(file) = header.backing_file() {
        return Err(AttachError::NeedsFile {
            name: name.to_string(),
            what: "backing file",
            file: file.to_string(),
        });
    }
    if header.has_data_file() {
        let file = header
            .data_file()
            .map(|f| f.to_string())
            .unwrap_or_default();
        return Err(AttachError::NeedsFile {
            name: name.to_string(),
            what: "external data file",
            file,
        });
    }
    let (image, memory_bytes) = open_layer(name, builder)?;
    finish(name, Box::new(image), memory_bytes, 1)
}

/// Opens the image file at `path` on the volume `root`, with its chain.
pub fn file_image(root: &mut Directory, path: &str) -> Result<Attached, AttachError> {
    let mut seen = Vec::new();
    let (disk, memory_bytes, layers) = open_chain(root, path, None, &mut seen)?;
    finish(path, disk, memory_bytes, layers)
}

/// What the chain below an image resolves to.
enum Below {
    Nothing,
    Qcow2(String),
    Raw(String),
}

/// Opens the QCOW2 image at `path` and everything below it; returns the
/// virtual disk, the bytes its layers allocated, and its depth.
fn open_chain(
    root: &mut Directory,
    path: &str,
    named_by: Option<&str>,
    seen: &mut Vec<String>,
) -> Result<(Layer, usize, usize), AttachError> {
    if seen.len() == MAX_CHAIN_DEPTH {
        return Err(AttachError::TooDeep {
            name: seen.first().cloned().unwrap_or_default(),
        });
    }
    // FAT names are case-insensitive: `BASE.qcow2` and `base.qcow2` are one file.
    if seen.iter().any(|p| p.eq_ignore_ascii_case(path)) {
        return Err(AttachError::Loop {
            path: path.to_string(),
        });
    }
    seen.push(path.to_string());
    let store = open_file(root, path, named_by)?;
    let image_error = |error| AttachError::Image {
        name: path.to_string(),
        error,
    };
    let mut builder = Image::builder(store).map_err(image_error)?;
    let header = builder.header().clone();
    if header.has_data_file() {
        let name = header.data_file().map(|n| n.as_bytes()).unwrap_or_default();
        let data_path = beside(path, name)?;
        builder = builder.data_file(open_file(root, &data_path, Some(path))?);
    }
    let below = match header.backing_file() {
        None => Below::Nothing,
        Some(name) => {
            let backing_path = beside(path, name.as_bytes())?;
            match header.backing_format().map(|f| f.as_bytes()) {
                Some(b"qcow2") => Below::Qcow2(backing_path),
                Some(b"raw") => Below::Raw(backing_path),
                Some(other) => {
                    return Err(AttachError::Format {
                        name: path.to_string(),
                        format: String::from_utf8_lossy(other).into_owned(),
                    })
                }
                // No format: probe the magic, as QEMU does.
                None => {
                    let probe = open_file(root, &backing_path, Some(path))?;
                    if has_qcow2_magic(&probe) {
                        Below::Qcow2(backing_path)
                    } else {
                        Below::Raw(backing_path)
                    }
                }
            }
        }
    };
    match below {
        Below::Nothing => {
            let (image, bytes) = open_layer(path, builder)?;
            Ok((Box::new(image), bytes, 1))
        }
        Below::Raw(backing_path) => {
            if seen.iter().any(|p| p.eq_ignore_ascii_case(&backing_path)) {
                return Err(AttachError::Loop { path: backing_path });
            }
            let raw = Raw(open_file(root, &backing_path, Some(path))?);
            let (image, bytes) = open_layer(path, builder.backing(raw))?;
            Ok((Box::new(image), bytes, 2))
        }
        Below::Qcow2(backing_path) => {
            let (backing, below_bytes, depth) = open_chain(root, &backing_path, Some(path), seen)?;
            let (image, bytes) = open_layer(path, builder.backing(backing))?;
            Ok((Box::new(image), bytes + below_bytes, depth + 1))
        }
    }
}

fn beside(image_path: &str, name: &[u8]) -> Result<String, AttachError> {
    path::beside(image_path, name).map_err(|error| AttachError::Name {
        name: image_path.to_string(),
        file: String::from_utf8_lossy(name).into_owned(),
        error,
    })
}

/// Opens a regular file for reading and learns its size.
fn open_file(
    root: &mut Directory,
    path: &str,
    named_by: Option<&str>,
) -> Result<Store, AttachError> {
    let open_error = |status| AttachError::Open {
        path: path.to_string(),
        named_by: named_by.map(ToString::to_string),
        status,
    };
    let name = CString16::try_from(path).map_err(|_| open_error(Status::INVALID_PARAMETER))?;
    let handle = root
        .open(&name, FileMode::Read, FileAttribute::empty())
        .map_err(|e| open_error(e.status()))?;
    let mut file = handle
        .into_regular_file()
        .ok_or_else(|| open_error(Status::INVALID_PARAMETER))?;
    let info = file
        .get_boxed_info::<FileInfo>()
        .map_err(|e| open_error(e.status()))?;
    Ok(Store::File(FileStore::new(file, info.file_size())))
}
