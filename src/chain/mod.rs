//! Opening an image with the files it names: the backing chain and the
//! external data files, walked once for every front end (feature `alloc`).
//!
//! The crate never opens files itself. A front end supplies a
//! [`Resolver`]: "open the file this image names, in this role", under
//! whatever policy it enforces (which directories, which disks, which
//! URLs). The walk owns everything else, so that the CLI, the firmware and
//! the UEFI driver read a chain by the same rules:
//!
//! - the backing format is [`Header::backing_format`]'s: `qcow2`, `raw`, or
//!   probed by the magic when the image records no format or an empty one,
//!   as QEMU; any other format is refused by name;
//! - at most [`WalkOptions::max_depth`] images, no file twice (the
//!   resolver says which locations are the same file);
//! - the caches and decoders of every layer together within [`WalkOptions::max_memory`],
//!   each allocated once, fallibly: a pool too small is an error, never
//!   the allocator's panic;
//! - one [`Secret`] offered to every encrypted layer (feature `luks`);
//! - the top image read as of a snapshot, if asked;
//! - errors that name the layer ([`WalkError`]).
//!
//! The walk is a loop, not a recursion: its stack use does not grow with
//! the chain's depth. Reads still pass from an image to its backing through
//! [`Backing`], one call level per layer that a request falls through.
//!
//! Memory: per QCOW2 layer [`ImageBuilder::memory_bytes`] of the options'
//! [`Config`], [`ImageBuilder::decoder_bytes`] for its zstd decoder
//! (allocated at its first compressed cluster, counted here at the walk),
//! plus a few hundred bytes of bookkeeping (header, names); the whole is
//! bounded by [`WalkOptions::max_memory`] and the depth limit.

#[cfg(feature = "std")]
mod files;
mod plan;
#[cfg(feature = "luks")]
mod secret;

#[cfg(feature = "std")]
pub use files::{
    chain_layers, open_chain, open_disk, open_layer, resolve_name, Chain, ChainError, ChainOptions,
    DynImage, Files, Layer, DEFAULT_MAX_DEPTH,
};
pub use plan::{Piece, Plan, Source};
#[cfg(feature = "luks")]
pub use secret::Secret;

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::block::BlockRead;
use crate::config::Config;
use crate::error::{Error, Unsupported};
use crate::header::{is_qcow2, BackingFormat, Header};
use crate::image::{Image, ImageBuilder, Raw};
use crate::name::{FileName, FormatName};
use crate::snapshot::find_snapshot;

/// Why the walk asks for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The backing file of an image: its unallocated clusters' contents.
    Backing,
    /// The external data file of an image: its clusters' bytes.
    DataFile,
}

impl Role {
    /// How messages name the role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Backing => "backing file",
            Role::DataFile => "external data file",
        }
    }
}

/// A file a [`Resolver`] opened: its storage and where it is.
#[derive(Debug)]
pub struct Found<S, L> {
    /// The file's bytes.
    pub store: S,
    /// Where the file is: the base for the names it holds, and what
    /// [`Resolver::same_file`] compares.
    pub location: L,
}

/// What a front end supplies to the walk: opening the files images name.
///
/// Implemented for host files ([`Files`], feature `std`), for the firmware's
/// virtio disks and for the UEFI driver's file systems.
pub trait Resolver {
    /// The storage of an opened file.
    type Store: BlockRead;
    /// Where a file is (a path, a disk number, a URL).
    type Location: Clone;
    /// Why a file could not be opened, or is refused by the policy.
    type Error;

    /// Opens the file `name` that the image at `named_by` stores as its
    /// `role`. A name the policy refuses is an error that says so.
    fn open(
        &mut self,
        name: &FileName,
        role: Role,
        named_by: &Self::Location,
    ) -> Result<Found<Self::Store, Self::Location>, Self::Error>;

    /// Whether backing files are opened at all: `false` reads every image
    /// alone (unallocated clusters as zeros, as QEMU with `"backing": null`).
    fn follows_backing(&self) -> bool {
        true
    }

    /// Whether two locations are the same file (loop detection).
    fn same_file(&mut self, a: &Self::Location, b: &Self::Location) -> bool;

    /// How messages name the file at `location`.
    fn describe(&self, location: &Self::Location) -> String;
}

/// Settings of a [`walk`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WalkOptions<'a> {
    /// Most images in the chain, the top included.
    pub max_depth: usize,
    /// Most bytes the caches and zstd decoders of all layers may take together.
    pub max_memory: usize,
    /// Cache sizes of every QCOW2 layer.
    pub config: Config,
    /// Read the top image as of this snapshot (id or name).
    pub snapshot: Option<&'a [u8]>,
    /// The passphrase offered to every encrypted layer; `None` refuses
    /// encrypted layers with [`Unsupported::NeedsKey`].
    #[cfg(feature = "luks")]
    pub secret: Option<&'a Secret>,
}

impl Default for WalkOptions<'_> {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_memory: usize::MAX,
            config: Config::default(),
            snapshot: None,
            #[cfg(feature = "luks")]
            secret: None,
        }
    }
}

/// The format of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFormat {
    /// A QCOW2 image.
    Qcow2,
    /// Raw bytes: the file is the disk.
    Raw,
}

impl LayerFormat {
    /// The name QEMU uses.
    pub fn name(self) -> &'static str {
        match self {
            LayerFormat::Qcow2 => "qcow2",
            LayerFormat::Raw => "raw",
        }
    }
}

/// One image of a walked chain, as found.
#[derive(Debug, Clone)]
pub struct LayerInfo<L> {
    /// Where it is.
    pub location: L,
    /// How messages name it.
    pub name: String,
    /// Its format.
    pub format: LayerFormat,
    /// Its header, for QCOW2 layers.
    pub header: Option<Header>,
    /// Where its external data file is, if it has one.
    pub data_file: Option<L>,
    /// Bytes its caches took, plus what its zstd decoder may allocate at its
    /// first compressed cluster ([`ImageBuilder::decoder_bytes`]); 0 for raw
    /// layers, and before opening.
    pub memory_bytes: usize,
}

/// Why a chain could not be walked or opened. Each names the layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum WalkError<L, E, S> {
    /// The resolver could not open (or refused) a file an image names.
    Resolve {
        /// The image naming the file.
        named_by: L,
        /// The name it stores, lossily printed.
        name: String,
        /// Backing or data file.
        role: Role,
        /// The resolver's reason.
        error: E,
    },
    /// An image is refused by the crate, or a read while opening it failed.
    Image {
        /// The image.
        layer: L,
        /// The crate's reason; for a layer below the top unlocked with the
        /// chain's secret, an [`Error::Backing`] naming it.
        error: Error<S>,
    },
    /// The chain has more images than [`WalkOptions::max_depth`].
    TooDeep {
        /// The image that would exceed the limit.
        layer: L,
        /// The limit.
        max_depth: usize,
    },
    /// An image is its own backing file, directly or through others.
    Loop {
        /// The file met a second time.
        layer: L,
    },
    /// A backing format the crate does not read.
    UnknownFormat {
        /// The image naming it.
        layer: L,
        /// The format name.
        format: FormatName,
    },
    /// The layers' caches and decoders together would exceed
    /// [`WalkOptions::max_memory`].
    OverBudget {
        /// The layer whose memory would cross the budget.
        layer: L,
        /// Bytes all layers down to this one need.
        needed: usize,
        /// The budget.
        budget: usize,
    },
}

impl<L, E, S> WalkError<L, E, S> {
    /// The location of the layer the error is about (for a resolver error,
    /// the image naming the file).
    pub fn location(&self) -> &L {
        match self {
            WalkError::Resolve { named_by, .. } => named_by,
            WalkError::Image { layer, .. }
            | WalkError::TooDeep { layer, .. }
            | WalkError::Loop { layer }
            | WalkError::UnknownFormat { layer, .. }
            | WalkError::OverBudget { layer, .. } => layer,
        }
    }
}

/// A [`WalkError`] with the resolver's name for its location, for printing.
pub struct Described<'a, L, E, S> {
    error: &'a WalkError<L, E, S>,
    name: String,
}

impl<L, E, S> WalkError<L, E, S> {
    /// The error, printable with `resolver`'s names for files.
    pub fn describe<R>(&self, resolver: &R) -> Described<'_, L, E, S>
    where
        R: Resolver<Location = L>,
    {
        Described {
            error: self,
            name: resolver.describe(self.location()),
        }
    }
}

impl<L, E: fmt::Display, S: fmt::Display> fmt::Display for Described<'_, L, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match self.error {
            WalkError::Resolve {
                name: file,
                role,
                error,
                ..
            } => write!(
                f,
                "{name}: the image names a {} \"{file}\": {error}",
                role.name()
            ),
            WalkError::Image { error, .. } => write!(f, "{name}: {error}"),
            WalkError::TooDeep { max_depth, .. } => {
                write!(
                    f,
                    "{name}: the backing chain has more than {max_depth} images"
                )
            }
            WalkError::Loop { .. } => {
                write!(f, "{name}: the backing chain comes back to this file")
            }
            WalkError::UnknownFormat { format, .. } => write!(
                f,
                "{name}: backing format \"{format}\" is not supported (qcow2 and raw are)"
            ),
            WalkError::OverBudget { needed, budget, .. } => write!(
                f,
                "{name}: the chain's caches and decoders would take {needed} bytes, over the budget of {budget}"
            ),
        }
    }
}

/// The virtual disk of a walked chain (or of any layer of it).
pub enum Disk<S: BlockRead> {
    /// A QCOW2 image reading unallocated clusters from its [`Backing`].
    Qcow2(Box<Image<'static, S, Backing<S>>>),
    /// A raw file.
    Raw(Raw<S>),
}

impl<S: BlockRead> fmt::Debug for Disk<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disk::Qcow2(image) => f.debug_tuple("Qcow2").field(image).finish(),
            Disk::Raw(_) => f.write_str("Raw"),
        }
    }
}

impl<S: BlockRead> Disk<S> {
    /// The QCOW2 image, if this layer is one.
    pub fn image(&self) -> Option<&Image<'static, S, Backing<S>>> {
        match self {
            Disk::Qcow2(image) => Some(image),
            Disk::Raw(_) => None,
        }
    }

    /// The layer below, if any.
    pub fn below(&self) -> Option<&Disk<S>> {
        self.image()?.backing()?.disk.as_deref()
    }
}

impl<S: BlockRead> BlockRead for Disk<S> {
    type Error = Error<S::Error>;

    /// The chain's [`plan`](Disk::plan), executed: no recursion per layer.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        Disk::read_at(self, offset, buf)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        match self {
            Disk::Qcow2(image) => Ok(image.virtual_size()),
            Disk::Raw(raw) => raw.size(),
        }
    }
}

/// What an image of a chain reads its unallocated clusters from: the disk
/// below with its name, so that its errors name it ([`Error::named`]), or
/// nothing (zeros) for the bottom image and for images read alone.
pub struct Backing<S: BlockRead> {
    disk: Option<Box<Disk<S>>>,
    name: String,
}

impl<S: BlockRead> Backing<S> {
    /// No backing: every unallocated cluster reads as zeros.
    pub fn none() -> Self {
        Self {
            disk: None,
            name: String::new(),
        }
    }

    /// The disk below, if any.
    pub fn disk(&self) -> Option<&Disk<S>> {
        self.disk.as_deref()
    }

    /// How errors name the disk below.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<S: BlockRead> BlockRead for Backing<S> {
    type Error = Error<S::Error>;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        match &self.disk {
            Some(disk) => disk
                .read_at(offset, buf)
                .map_err(|error| error.named(self.name.clone())),
            // Size 0: the image reads zeros past its backing's end, which is
            // everywhere; only an empty read at 0 reaches here.
            None if buf.is_empty() => Ok(()),
            None => Err(Error::OutOfRange {
                offset,
                len: buf.len() as u64,
                size: 0,
            }),
        }
    }

    fn size(&self) -> Result<u64, Self::Error> {
        match &self.disk {
            Some(disk) => disk.size().map_err(|error| error.named(self.name.clone())),
            None => Ok(0),
        }
    }
}

/// A walked and opened chain.
pub struct Walked<S: BlockRead, L> {
    /// The top image's virtual disk, reading through every layer below.
    pub disk: Disk<S>,
    /// Every layer, from the top down.
    pub layers: Vec<LayerInfo<L>>,
}

impl<S: BlockRead, L> Walked<S, L> {
    /// Bytes the caches of all layers took, with their zstd decoders' at most.
    pub fn memory_bytes(&self) -> usize {
        self.layers.iter().map(|layer| layer.memory_bytes).sum()
    }
}

type WalkResult<T, R> = Result<
    T,
    WalkError<
        <R as Resolver>::Location,
        <R as Resolver>::Error,
        <<R as Resolver>::Store as BlockRead>::Error,
    >,
>;

/// The layers found, with what opens each.
type FoundLayers<R> = (
    Vec<LayerInfo<<R as Resolver>::Location>>,
    Vec<Pending<<R as Resolver>::Store>>,
);

/// One layer found, not yet opened.
enum Pending<S: BlockRead> {
    Qcow2(Box<ImageBuilder<S>>),
    Raw(S),
}

/// The layers of the chain whose top is `top`, top first, found and
/// checked but not opened: no key is needed and nothing is allocated for
/// caches, which is how `qemu-img info --backing-chain` shows a chain.
pub fn find_layers<R: Resolver>(
    resolver: &mut R,
    top: Found<R::Store, R::Location>,
    options: &WalkOptions<'_>,
) -> WalkResult<Vec<LayerInfo<R::Location>>, R> {
    find(resolver, top, options).map(|(layers, _)| layers)
}

/// Walks the chain whose top is `top` through `resolver` and opens it.
pub fn walk<R: Resolver>(
    resolver: &mut R,
    top: Found<R::Store, R::Location>,
    options: &WalkOptions<'_>,
) -> WalkResult<Walked<R::Store, R::Location>, R> {
    let (mut layers, pending) = find(resolver, top, options)?;
    let mut pending = unlock_all::<R>(pending, &layers, options)?;
    budget::<R>(&mut layers, &pending, options)?;
    let below = pending.split_off(1);
    let Some(top) = pending.pop() else {
        // `find` returns the top image or an error.
        return Err(WalkError::TooDeep {
            layer: layers[0].location.clone(),
            max_depth: options.max_depth,
        });
    };
    let disk = stack::<R>(top, below, &layers, &options.config)?;
    Ok(Walked { disk, layers })
}

/// Follows the backing names from the top down, reading each header.
fn find<R: Resolver>(
    resolver: &mut R,
    top: Found<R::Store, R::Location>,
    options: &WalkOptions<'_>,
) -> WalkResult<FoundLayers<R>, R> {
    let mut layers: Vec<LayerInfo<R::Location>> = Vec::new();
    let mut pending = Vec::new();
    let mut next = Some((top, BackingFormat::Probe));
    while let Some((found, format)) = next.take() {
        let Found { store, location } = found;
        if layers.len() >= options.max_depth {
            return Err(WalkError::TooDeep {
                layer: location,
                max_depth: options.max_depth,
            });
        }
        if layers
            .iter()
            .any(|layer| resolver.same_file(&layer.location, &location))
        {
            return Err(WalkError::Loop { layer: location });
        }
        let image_error = |location: &R::Location| {
            let layer = location.clone();
            move |error| WalkError::Image { layer, error }
        };
        let format = match format {
            BackingFormat::Qcow2 => LayerFormat::Qcow2,
            BackingFormat::Raw => LayerFormat::Raw,
            // Refused where the name is read, below; the top is probed.
            BackingFormat::Probe | BackingFormat::Other(_) => {
                match is_qcow2(&store)
                    .map_err(|source| image_error(&location)(probe_error(source)))?
                {
                    true => LayerFormat::Qcow2,
                    false => LayerFormat::Raw,
                }
            }
        };
        let name = resolver.describe(&location);
        if format == LayerFormat::Raw {
            layers.push(LayerInfo {
                location,
                name,
                format,
                header: None,
                data_file: None,
                memory_bytes: 0,
            });
            pending.push(Pending::Raw(store));
            continue;
        }
        let mut builder = Image::builder(store).map_err(image_error(&location))?;
        let mut data_location = None;
        if let Some(data_file) = builder.header().data_file().copied() {
            let found = resolver
                .open(&data_file, Role::DataFile, &location)
                .map_err(|error| WalkError::Resolve {
                    named_by: location.clone(),
                    name: data_file.to_string(),
                    role: Role::DataFile,
                    error,
                })?;
            builder = builder.data_file(found.store);
            data_location = Some(found.location);
        }
        if layers.is_empty() {
            if let Some(snapshot) = options.snapshot {
                let found = find_snapshot(builder.storage(), builder.header(), snapshot)
                    .map_err(image_error(&location))?;
                builder = builder.snapshot(&found).map_err(image_error(&location))?;
            }
        }
        let header = builder.header().clone();
        match header.backing_file() {
            Some(backing) if resolver.follows_backing() => {
                let format = header.backing_format();
                if let BackingFormat::Other(format) = format {
                    return Err(WalkError::UnknownFormat {
                        layer: location,
                        format,
                    });
                }
                let found = resolver
                    .open(backing, Role::Backing, &location)
                    .map_err(|error| WalkError::Resolve {
                        named_by: location.clone(),
                        name: backing.to_string(),
                        role: Role::Backing,
                        error,
                    })?;
                next = Some((found, format));
            }
            Some(_) => builder = builder.ignore_backing(),
            None => {}
        }
        layers.push(LayerInfo {
            location,
            name,
            format,
            header: Some(header),
            data_file: data_location,
            memory_bytes: 0,
        });
        pending.push(Pending::Qcow2(Box::new(builder)));
    }
    Ok((layers, pending))
}

/// A probe's failed read, as the crate reports reads of the image file.
fn probe_error<E>(source: E) -> Error<E> {
    Error::Io {
        source,
        storage: crate::error::Storage::Image,
        offset: 0,
        len: 4,
    }
}

/// Offers the secret to every encrypted layer, top down, so that a wrong
/// passphrase is reported for the first layer the user would think of.
fn unlock_all<R: Resolver>(
    pending: Vec<Pending<R::Store>>,
    layers: &[LayerInfo<R::Location>],
    options: &WalkOptions<'_>,
) -> WalkResult<Vec<Pending<R::Store>>, R> {
    let mut unlocked = Vec::new();
    unlocked
        .try_reserve_exact(pending.len())
        .map_err(|_| out_of_memory(layers, 0, pending.len()))?;
    for (depth, layer) in pending.into_iter().enumerate() {
        unlocked.push(match layer {
            Pending::Qcow2(builder) => Pending::Qcow2(Box::new(
                unlock(*builder, options).map_err(|error| key_error(layers, depth, error))?,
            )),
            raw => raw,
        });
    }
    Ok(unlocked)
}

#[cfg(feature = "luks")]
fn unlock<S: BlockRead>(
    builder: ImageBuilder<S>,
    options: &WalkOptions<'_>,
) -> Result<ImageBuilder<S>, Error<S::Error>> {
    match options.secret {
        Some(secret) => secret.unlock(builder),
        // Refused here rather than at open, which goes bottom up.
        None if builder.encryption().is_some() => Err(Unsupported::NeedsKey {
            method: builder.header().crypt_method(),
        }
        .into()),
        None => Ok(builder),
    }
}

#[cfg(not(feature = "luks"))]
fn unlock<S: BlockRead>(
    builder: ImageBuilder<S>,
    _options: &WalkOptions<'_>,
) -> Result<ImageBuilder<S>, Error<S::Error>> {
    if builder.header().is_encrypted() {
        return Err(Unsupported::NeedsKey {
            method: builder.header().crypt_method(),
        }
        .into());
    }
    Ok(builder)
}

/// A layer that could not be unlocked: the top image's own error, or, for
/// a layer below it, an [`Error::Backing`] of the top image naming that layer.
fn key_error<L: Clone, E, S>(
    layers: &[LayerInfo<L>],
    depth: usize,
    error: Error<S>,
) -> WalkError<L, E, S> {
    let error = if depth == 0 {
        error
    } else {
        Error::Backing {
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            name: Some(layers[depth].name.clone()),
            error: Box::new(error),
        }
    };
    WalkError::Image {
        layer: layers[0].location.clone(),
        error,
    }
}

/// Sizes every layer's caches and checks their sum against the budget.
fn budget<R: Resolver>(
    layers: &mut [LayerInfo<R::Location>],
    pending: &[Pending<R::Store>],
    options: &WalkOptions<'_>,
) -> WalkResult<(), R> {
    let mut needed = 0usize;
    for (layer, pending) in layers.iter_mut().zip(pending) {
        if let Pending::Qcow2(builder) = pending {
            let caches =
                builder
                    .memory_bytes(&options.config)
                    .map_err(|error| WalkError::Image {
                        layer: layer.location.clone(),
                        error,
                    })?;
            layer.memory_bytes = caches.saturating_add(builder.decoder_bytes());
        }
        needed = needed.saturating_add(layer.memory_bytes);
        if needed > options.max_memory {
            return Err(WalkError::OverBudget {
                layer: layer.location.clone(),
                needed,
                budget: options.max_memory,
            });
        }
    }
    Ok(())
}

fn out_of_memory<L: Clone, E, S>(
    layers: &[LayerInfo<L>],
    depth: usize,
    bytes: usize,
) -> WalkError<L, E, S> {
    WalkError::Image {
        layer: layers[depth].location.clone(),
        error: Error::OutOfMemory { bytes },
    }
}

/// Opens the layers from the bottom up, each on top of the one below.
fn stack<R: Resolver>(
    top: Pending<R::Store>,
    below: Vec<Pending<R::Store>>,
    layers: &[LayerInfo<R::Location>],
    config: &Config,
) -> WalkResult<Disk<R::Store>, R> {
    let mut backing = Backing::none();
    for (depth, layer) in below.into_iter().enumerate().rev() {
        // `below` starts at depth 1.
        let depth = depth + 1;
        let disk = open_one::<R>(layer, backing, layers, depth, config)?;
        backing = Backing {
            disk: Some(try_box(disk).map_err(|bytes| out_of_memory(layers, depth, bytes))?),
            name: layers[depth].name.clone(),
        };
    }
    open_one::<R>(top, backing, layers, 0, config)
}

/// Opens one layer over `backing`, its caches allocated fallibly.
fn open_one<R: Resolver>(
    layer: Pending<R::Store>,
    backing: Backing<R::Store>,
    layers: &[LayerInfo<R::Location>],
    depth: usize,
    config: &Config,
) -> WalkResult<Disk<R::Store>, R> {
    match layer {
        Pending::Raw(store) => Ok(Disk::Raw(Raw(store))),
        Pending::Qcow2(builder) => {
            let image = builder
                .backing(backing)
                .try_open_alloc(config)
                .map_err(|error| WalkError::Image {
                    layer: layers[depth].location.clone(),
                    error,
                })?;
            let image = try_box(image).map_err(|bytes| out_of_memory(layers, depth, bytes))?;
            Ok(Disk::Qcow2(image))
        }
    }
}

/// `Box::new` for firmware whose allocator panics when it runs out: the
/// allocation is tried first (`try_reserve_exact`), so a pool too small is
/// an error. (Stable Rust has no fallible `Box::new`; the probe and the
/// box are one after the other on one thread.)
fn try_box<T>(value: T) -> Result<Box<T>, usize> {
    let bytes = core::mem::size_of::<T>();
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| bytes)?;
    drop(probe);
    Ok(Box::new(value))
}
