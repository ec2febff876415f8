//! The chain from the host's file system (`std`): [`Files`], the walk's
//! resolver for host paths, and [`open_chain`] on top of it.
//!
//! Each backing file name is resolved relative to the directory of the
//! image that names it (as QEMU does); which named files may be opened at
//! all is the caller's [`FollowPolicy`]. Everything else (formats, loops,
//! depth, the secret, errors naming the layer) is the walk's
//! ([`super::walk`]).

use std::boxed::Box;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use super::{
    find_layers, walk, Found, LayerFormat, LayerInfo, Resolver, Role, WalkError, WalkOptions,
    Walked,
};
use crate::block::BlockRead;
use crate::config::Config;
use crate::error::Error;
use crate::follow::{FollowPolicy, NamedFile, Refusal};
use crate::header::Header;
use crate::image::{Image, ImageBuilder, NoBacking};
use crate::name::FileName;

#[cfg(feature = "luks")]
use super::Secret;

/// A type-erased image of a chain: what a layer reads through.
pub type DynImage = Box<dyn BlockRead<Error = Error<io::Error>> + Send + Sync>;

/// One image of a chain.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Where it was opened from.
    pub path: PathBuf,
    /// Its format.
    pub format: LayerFormat,
    /// Its header, for QCOW2 layers.
    pub header: Option<Header>,
}

impl From<LayerInfo<PathBuf>> for Layer {
    fn from(layer: LayerInfo<PathBuf>) -> Self {
        Layer {
            path: layer.location,
            format: layer.format,
            header: layer.header,
        }
    }
}

/// Settings of [`open_chain`].
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// Most images in the chain, the top included.
    pub max_depth: usize,
    /// Cache sizes of every QCOW2 layer.
    pub config: Config,
    /// Read the top image as of this snapshot (id or name).
    pub snapshot: Option<String>,
    /// Which backing and data files the images may name ([`FollowPolicy::Any`]
    /// by default, as QEMU; choose [`FollowPolicy::SameDir`] or
    /// [`FollowPolicy::None`] for untrusted images).
    pub follow: FollowPolicy,
    /// The passphrase offered to every encrypted layer (feature `luks`);
    /// `None` refuses encrypted layers with [`Unsupported::NeedsKey`](crate::Unsupported::NeedsKey).
    #[cfg(feature = "luks")]
    pub secret: Option<Secret>,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            max_depth: DEFAULT_MAX_DEPTH,
            config: Config::default(),
            snapshot: None,
            follow: FollowPolicy::Any,
            #[cfg(feature = "luks")]
            secret: None,
        }
    }
}

/// Default limit on the images in a chain.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// An opened chain.
pub struct Chain {
    /// The top image, reading through all the layers below it.
    pub top: DynImage,
    /// Every layer, from the top down.
    pub layers: Vec<Layer>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

/// Why a chain could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChainError {
    /// A file could not be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// The image whose header names it, if it is not the top.
        named_by: Option<PathBuf>,
        /// What the system said.
        source: io::Error,
    },
    /// An image is invalid or unreadable.
    Image {
        /// The image.
        path: PathBuf,
        /// Why.
        error: Error<io::Error>,
    },
    /// The chain has more images than allowed.
    TooDeep {
        /// The image that would exceed the limit.
        path: PathBuf,
        /// The limit.
        max_depth: usize,
    },
    /// An image is its own backing file, directly or through others.
    Loop {
        /// The image met a second time.
        path: PathBuf,
    },
    /// A backing format this helper does not read.
    UnknownFormat {
        /// The image naming it.
        path: PathBuf,
        /// The format name.
        format: String,
    },
    /// The follow policy refuses a file an image names.
    Refused(Refusal),
    /// The layers' caches and decoders together would exceed the budget.
    OverBudget {
        /// The layer whose memory crosses it.
        path: PathBuf,
        /// Bytes the layers down to it need.
        needed: usize,
        /// The budget.
        budget: usize,
    },
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::Open {
                path,
                named_by: Some(parent),
                source,
            } => write!(
                f,
                "cannot open {} (named by {}): {source}",
                path.display(),
                parent.display()
            ),
            ChainError::Open {
                path,
                named_by: None,
                source,
            } => write!(f, "cannot open {}: {source}", path.display()),
            ChainError::Image { path, error } => write!(f, "{}: {error}", path.display()),
            ChainError::TooDeep { path, max_depth } => write!(
                f,
                "backing chain is deeper than {max_depth} images at {}",
                path.display()
            ),
            ChainError::Loop { path } => {
                write!(f, "backing chain loops back to {}", path.display())
            }
            ChainError::UnknownFormat { path, format } => write!(
                f,
                "{} names a backing file of format {format:?}, which is not supported",
                path.display()
            ),
            ChainError::Refused(refusal) => refusal.fmt(f),
            ChainError::OverBudget {
                path,
                needed,
                budget,
            } => write!(
                f,
                "{}: the chain's caches and decoders would take {needed} bytes, over the budget of {budget}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ChainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChainError::Open { source, .. } => Some(source),
            ChainError::Image { error, .. } => Some(error),
            ChainError::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }
}

/// Where a backing or data file name points: relative names are taken from
/// the directory of the image that names them.
///
/// For backing files this is QEMU's rule. For external data files QEMU 7.2
/// takes a relative name from its working directory instead; this helper
/// keeps one rule for both, so that an image opens the same from anywhere
/// (`qemu-img create` records the name as given, so prefer full paths).
pub fn resolve_name(image_path: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    image_path.parent().unwrap_or(Path::new("")).join(name)
}

fn open_file(path: &Path, named_by: Option<&Path>) -> Result<File, ChainError> {
    File::open(path).map_err(|source| ChainError::Open {
        path: path.to_path_buf(),
        named_by: named_by.map(Path::to_path_buf),
        source,
    })
}

fn image_error(path: &Path) -> impl FnOnce(Error<io::Error>) -> ChainError + '_ {
    move |error| ChainError::Image {
        path: path.to_path_buf(),
        error,
    }
}

/// The host file system as the chain walk's [`Resolver`]: names relative
/// to the naming image's directory, opened as the follow policy allows.
#[derive(Debug)]
pub struct Files {
    follow: FollowPolicy,
    /// The chain's top image: `same-dir` keeps every file under its directory.
    top: PathBuf,
    /// Canonical paths already asked for, for loop detection.
    canonical: HashMap<PathBuf, PathBuf>,
}

impl Files {
    /// Files that images may name under `follow`.
    pub fn new(follow: FollowPolicy) -> Self {
        Self {
            follow,
            top: PathBuf::new(),
            canonical: HashMap::new(),
        }
    }

    /// Opens the top image at `path`: the files it names are resolved
    /// from its directory.
    pub fn open_top(&mut self, path: &Path) -> Result<Found<File, PathBuf>, ChainError> {
        self.top = path.to_path_buf();
        Ok(Found {
            store: open_file(path, None)?,
            location: path.to_path_buf(),
        })
    }

    fn canonical(&mut self, path: &Path) -> PathBuf {
        self.canonical
            .entry(path.to_path_buf())
            .or_insert_with(|| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
            .clone()
    }
}

impl Resolver for Files {
    type Store = File;
    type Location = PathBuf;
    type Error = ChainError;

    fn open(
        &mut self,
        name: &FileName,
        role: Role,
        named_by: &PathBuf,
    ) -> Result<Found<File, PathBuf>, ChainError> {
        let name = String::from_utf8_lossy(name.as_bytes());
        let role = match role {
            Role::Backing => NamedFile::Backing,
            Role::DataFile => NamedFile::DataFile,
        };
        // Opened where the name is checked: the file checked is the file read.
        let (store, path) = self.follow.open(&self.top, named_by, role, &name)?;
        Ok(Found {
            store,
            location: path,
        })
    }

    fn follows_backing(&self) -> bool {
        self.follow.follows_backing()
    }

    fn same_file(&mut self, a: &PathBuf, b: &PathBuf) -> bool {
        self.canonical(a) == self.canonical(b)
    }

    fn describe(&self, location: &PathBuf) -> String {
        location.display().to_string()
    }
}

impl From<WalkError<PathBuf, ChainError, io::Error>> for ChainError {
    fn from(error: WalkError<PathBuf, ChainError, io::Error>) -> Self {
        match error {
            WalkError::Resolve { error, .. } => error,
            WalkError::Image { layer, error } => ChainError::Image { path: layer, error },
            WalkError::TooDeep { layer, max_depth } => ChainError::TooDeep {
                path: layer,
                max_depth,
            },
            WalkError::Loop { layer } => ChainError::Loop { path: layer },
            WalkError::UnknownFormat { layer, format } => ChainError::UnknownFormat {
                path: layer,
                format: format.to_string(),
            },
            WalkError::OverBudget {
                layer,
                needed,
                budget,
            } => ChainError::OverBudget {
                path: layer,
                needed,
                budget,
            },
        }
    }
}

/// Reads the header of a QCOW2 file and attaches its external data file, if `follow` allows.
fn qcow2_builder(
    file: File,
    path: &Path,
    follow: FollowPolicy,
) -> Result<ImageBuilder<File>, ChainError> {
    let builder = Image::builder(file).map_err(image_error(path))?;
    let Some(name) = builder.header().data_file().copied() else {
        return Ok(builder);
    };
    let mut files = Files::new(follow);
    files.top = path.to_path_buf();
    let data_file = files.open(&name, Role::DataFile, &path.to_path_buf())?;
    Ok(builder.data_file(data_file.store))
}

/// Opens one QCOW2 image alone: its backing file is not opened and its
/// unallocated clusters read as zeros; its external data file is opened if
/// `follow` allows.
pub fn open_layer(
    path: &Path,
    config: &Config,
    follow: FollowPolicy,
) -> Result<Image<'static, File, NoBacking>, ChainError> {
    let file = open_file(path, None)?;
    qcow2_builder(file, path, follow)?
        .ignore_backing()
        .open_alloc(config)
        .map_err(image_error(path))
}

/// The walk's settings for these options.
fn walk_options(options: &ChainOptions) -> WalkOptions<'_> {
    WalkOptions {
        max_depth: options.max_depth,
        config: options.config,
        snapshot: options.snapshot.as_deref().map(str::as_bytes),
        #[cfg(feature = "luks")]
        secret: options.secret.as_ref(),
        ..WalkOptions::default()
    }
}

/// Opens `path` (QCOW2 or raw, probed) with its backing chain and data
/// files, as far as `options.follow` allows; encrypted layers are unlocked
/// with `options.secret`.
pub fn open_chain(path: &Path, options: &ChainOptions) -> Result<Chain, ChainError> {
    let walked = open_disk(path, options)?;
    Ok(Chain {
        top: Box::new(walked.disk),
        layers: walked.layers.into_iter().map(Layer::from).collect(),
    })
}

/// [`open_chain`], keeping the chain's [`Disk`](super::Disk) and its
/// layers as the walk returns them: for front ends that follow the read
/// plan ([`Disk::plan`](super::Disk::plan)) themselves.
pub fn open_disk(path: &Path, options: &ChainOptions) -> Result<Walked<File, PathBuf>, ChainError> {
    let mut files = Files::new(options.follow);
    let top = files.open_top(path)?;
    Ok(walk(&mut files, top, &walk_options(options))?)
}

/// The layers of the chain of `path`, top first, as [`open_chain`] finds
/// them (headers read and checked, files the policy allows opened), without
/// opening any image: no key is needed, which is how `qemu-img info
/// --backing-chain` shows encrypted chains.
pub fn chain_layers(path: &Path, options: &ChainOptions) -> Result<Vec<Layer>, ChainError> {
    let mut files = Files::new(options.follow);
    let top = files.open_top(path)?;
    let layers = find_layers(&mut files, top, &walk_options(options))?;
    Ok(layers.into_iter().map(Layer::from).collect())
}
