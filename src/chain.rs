//! Opening an image with its backing chain and data file from the file system (`std`).
//!
//! The library itself never opens files; this helper is for host tools. It
//! resolves each backing file name relative to the directory of the image
//! that names it (as QEMU does), takes the format from the backing format
//! extension or probes the magic, refuses loops and chains deeper than a
//! limit, and says which image names a file that cannot be opened. Which
//! named files it may open at all is the caller's [`FollowPolicy`].
//!
//! Encrypted layers (feature `luks`): one [`Secret`] is offered to every
//! encrypted layer, as a user with one disk password expects (QEMU asks for
//! a `key-secret` per layer, usually the same one). A layer it does not
//! unlock, or an encrypted layer met without a secret, is refused; below
//! the top image the error is an [`Error::Backing`] naming the layer.

use std::boxed::Box;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use crate::block::BlockRead;
use crate::config::Config;
use crate::error::Error;
use crate::follow::{FollowPolicy, NamedFile, Refusal};
use crate::header::{is_qcow2, Header};
use crate::image::{Image, ImageBuilder, NoBacking, Raw};
use crate::snapshot::find_snapshot;

#[cfg(feature = "luks")]
use crate::crypto::{LuksHeader, MasterKey, UnlockLimits};
#[cfg(feature = "luks")]
use crate::encryption::Encryption;
#[cfg(feature = "luks")]
use crate::error::Unsupported;
#[cfg(feature = "luks")]
use std::sync::{Arc, Mutex};

/// A type-erased image of a chain: what a layer reads through.
pub type DynImage = Box<dyn BlockRead<Error = Error<io::Error>> + Send + Sync>;

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
    /// `None` refuses encrypted layers with [`Unsupported::NeedsKey`].
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

/// A passphrase for the encrypted layers of a chain, with the work its
/// unlocking may do. The bytes are zeroized when dropped and never printed.
///
/// A secret remembers the LUKS master keys it unlocked (shared by its
/// clones, zeroized with the last one): a tool opening the same chain again
/// (one per thread) keys those layers with the master key, which costs the
/// header's master key iterations (QEMU calibrates them to an eighth of a
/// slot's) instead of the slots' PBKDF2.
#[cfg(feature = "luks")]
#[derive(Clone)]
pub struct Secret {
    /// Allocated at its exact length (`to_vec`), so zeroizing the slice
    /// clears every copy this value made.
    passphrase: Vec<u8>,
    limits: UnlockLimits,
    /// Allocated once at [`MAX_REMEMBERED_KEYS`] and never grown: a Vec
    /// that grows copies the keys and frees the old buffer unzeroed.
    unlocked: Arc<Mutex<Vec<UnlockedKey>>>,
}

/// Most master keys a [`Secret`] remembers: one per layer of a chain of
/// [`DEFAULT_MAX_DEPTH`] encrypted layers. Keys past it are used but not
/// remembered (a chain opened again unlocks those layers' slots again).
#[cfg(feature = "luks")]
pub const MAX_REMEMBERED_KEYS: usize = DEFAULT_MAX_DEPTH;

/// A master key this secret unlocked, with the LUKS header it came from:
/// only an identical header (a layer opened again, or a copy of it) is
/// keyed with it, and the header's digest still checks it.
#[cfg(feature = "luks")]
struct UnlockedKey {
    header: LuksHeader,
    key: MasterKey,
}

#[cfg(feature = "luks")]
impl Secret {
    /// The passphrase `bytes` (used up to the first NUL, as QEMU's secrets
    /// are C strings), each layer's unlocking bounded by `limits`.
    pub fn passphrase(bytes: &[u8], limits: UnlockLimits) -> Self {
        Self {
            passphrase: bytes.to_vec(),
            limits,
            unlocked: Arc::new(Mutex::new(Vec::with_capacity(MAX_REMEMBERED_KEYS))),
        }
    }

    /// The work limit of each layer's unlocking.
    pub fn limits(&self) -> &UnlockLimits {
        &self.limits
    }

    /// Unlocks the image of `builder` if it is encrypted (an unencrypted
    /// one is returned as it is): for host tools that open layers alone.
    pub fn unlock<R: BlockRead, B>(
        &self,
        builder: ImageBuilder<R, B>,
    ) -> Result<ImageBuilder<R, B>, Error<R::Error>> {
        let luks = match builder.encryption() {
            None => return Ok(builder),
            // Legacy AES: the passphrase is the key, nothing to remember.
            Some(Encryption::Aes) => return builder.passphrase(&self.passphrase, &self.limits),
            Some(Encryption::Luks(luks)) => luks,
        };
        let header = luks.clone();
        let key = match self.known_key(&header) {
            Some(key) => key,
            None => crate::encryption::luks_master_key(
                builder.header(),
                luks,
                builder.storage(),
                &self.passphrase,
                &self.limits,
            )?,
        };
        let builder = builder.master_key(key.as_bytes(), &self.limits)?;
        self.remember(header, key);
        Ok(builder)
    }

    /// Remembers `key` for `header`, within the list's fixed capacity.
    fn remember(&self, header: LuksHeader, key: MasterKey) {
        let mut unlocked = self.unlocked.lock().unwrap_or_else(|e| e.into_inner());
        let known = unlocked.iter().any(|u| u.header == header);
        if !known && unlocked.len() < MAX_REMEMBERED_KEYS {
            unlocked.push(UnlockedKey { header, key });
        }
    }

    /// The master key this secret unlocked for `header`, if any.
    fn known_key(&self, header: &LuksHeader) -> Option<MasterKey> {
        let unlocked = self.unlocked.lock().unwrap_or_else(|e| e.into_inner());
        unlocked
            .iter()
            .find(|u| &u.header == header)
            .map(|u| u.key.clone())
    }
}

#[cfg(feature = "luks")]
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.passphrase.as_mut_slice());
    }
}

#[cfg(feature = "luks")]
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("passphrase", &"(hidden)")
            .field("limits", &self.limits)
            .finish()
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

/// The file's format by its magic, as QEMU probes a backing file whose
/// format the image does not record.
fn probe(file: &File, path: &Path) -> Result<LayerFormat, ChainError> {
    let qcow2 = is_qcow2(file).map_err(|source| ChainError::Open {
        path: path.to_path_buf(),
        named_by: None,
        source,
    })?;
    Ok(if qcow2 {
        LayerFormat::Qcow2
    } else {
        LayerFormat::Raw
    })
}

fn image_error(path: &Path) -> impl FnOnce(Error<io::Error>) -> ChainError + '_ {
    move |error| ChainError::Image {
        path: path.to_path_buf(),
        error,
    }
}

/// Reads the header of a QCOW2 file and attaches its external data file,
/// if `follow` allows (`top`: the chain's top image).
fn qcow2_builder(
    file: File,
    path: &Path,
    top: &Path,
    follow: FollowPolicy,
) -> Result<ImageBuilder<File>, ChainError> {
    let builder = Image::builder(file).map_err(image_error(path))?;
    let Some(name) = builder.header().data_file() else {
        return Ok(builder);
    };
    let name = String::from_utf8_lossy(name.as_bytes());
    let (data_file, _) = follow.open(top, path, NamedFile::DataFile, &name)?;
    Ok(builder.data_file(data_file))
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
    qcow2_builder(file, path, path, follow)?
        .ignore_backing()
        .open_alloc(config)
        .map_err(image_error(path))
}

enum Opened {
    Qcow2(Box<ImageBuilder<File>>),
    Raw(File),
}

/// Opens `path` (QCOW2 or raw, probed) with its backing chain and data
/// files, as far as `options.follow` allows; encrypted layers are unlocked
/// with `options.secret`.
pub fn open_chain(path: &Path, options: &ChainOptions) -> Result<Chain, ChainError> {
    let (layers, opened) = walk(path, options)?;
    let top = stack(opened, &layers, options)?;
    Ok(Chain { top, layers })
}

/// The layers of the chain of `path`, top first, as [`open_chain`] finds
/// them (headers read and checked, files the policy allows opened), without
/// opening any image: no key is needed, which is how `qemu-img info
/// --backing-chain` shows encrypted chains.
pub fn chain_layers(path: &Path, options: &ChainOptions) -> Result<Vec<Layer>, ChainError> {
    walk(path, options).map(|(layers, _)| layers)
}

/// Follows the backing names from `path` down, reading each header.
fn walk(path: &Path, options: &ChainOptions) -> Result<(Vec<Layer>, Vec<Opened>), ChainError> {
    let mut layers = Vec::new();
    let mut opened = Vec::new();
    let mut seen = HashSet::new();
    let top = path;
    // A backing file is opened where its name is checked: the file checked.
    let mut next = Some((path.to_path_buf(), None::<LayerFormat>, None::<File>));
    while let Some((path, format, opened_file)) = next.take() {
        if layers.len() >= options.max_depth {
            return Err(ChainError::TooDeep {
                path,
                max_depth: options.max_depth,
            });
        }
        let file = match opened_file {
            Some(file) => file,
            None => open_file(&path, None)?,
        };
        let identity = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !seen.insert(identity) {
            return Err(ChainError::Loop { path });
        }
        let format = match format {
            Some(format) => format,
            None => probe(&file, &path)?,
        };
        if format == LayerFormat::Raw {
            layers.push(Layer {
                path,
                format,
                header: None,
            });
            opened.push(Opened::Raw(file));
            continue;
        }
        let mut builder = qcow2_builder(file, &path, top, options.follow)?;
        if layers.is_empty() {
            if let Some(snapshot) = &options.snapshot {
                let found = find_snapshot(builder.storage(), builder.header(), snapshot.as_bytes())
                    .map_err(image_error(&path))?;
                builder = builder.snapshot(&found).map_err(image_error(&path))?;
            }
        }
        let header = builder.header().clone();
        if !options.follow.follows_backing() {
            builder = builder.ignore_backing();
        } else if let Some(name) = header.backing_file() {
            let name = String::from_utf8_lossy(name.as_bytes());
            let (backing_file, backing_path) =
                options.follow.open(top, &path, NamedFile::Backing, &name)?;
            let backing_format = match header.backing_format().map(|f| f.as_bytes()) {
                None | Some(b"") => None,
                Some(b"qcow2") => Some(LayerFormat::Qcow2),
                Some(b"raw") => Some(LayerFormat::Raw),
                Some(other) => {
                    return Err(ChainError::UnknownFormat {
                        path,
                        format: String::from_utf8_lossy(other).to_string(),
                    })
                }
            };
            next = Some((backing_path, backing_format, Some(backing_file)));
        }
        layers.push(Layer {
            path,
            format,
            header: Some(header),
        });
        opened.push(Opened::Qcow2(Box::new(builder)));
    }
    Ok((layers, opened))
}

/// A backing image tagged with its path, so that its errors name it
/// ([`Error::named`]) when they reach the image above.
struct Named {
    path: PathBuf,
    image: DynImage,
}

impl BlockRead for Named {
    type Error = Error<io::Error>;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.image
            .read_at(offset, buf)
            .map_err(|error| error.named(self.path.display().to_string()))
    }

    fn size(&self) -> Result<u64, Self::Error> {
        self.image
            .size()
            .map_err(|error| error.named(self.path.display().to_string()))
    }
}

/// Opens the layers from the bottom up, each on top of the one below,
/// unlocking encrypted ones with the options' secret.
fn stack(
    opened: Vec<Opened>,
    layers: &[Layer],
    options: &ChainOptions,
) -> Result<DynImage, ChainError> {
    let config = &options.config;
    // Unlocked top down, so that a wrong passphrase is reported for the
    // first layer the user would think of.
    let mut unlocked = Vec::with_capacity(opened.len());
    for (depth, opened) in opened.into_iter().enumerate() {
        unlocked.push(match opened {
            Opened::Qcow2(builder) => Opened::Qcow2(Box::new(
                unlock(*builder, options).map_err(key_error(layers, depth))?,
            )),
            raw => raw,
        });
    }
    let mut below: Option<Named> = None;
    for (opened, layer) in unlocked.into_iter().zip(layers).rev() {
        let image: DynImage = match opened {
            Opened::Raw(file) => Box::new(Raw(file)),
            Opened::Qcow2(builder) => {
                let opened = match below.take() {
                    Some(backing) => builder
                        .backing(backing)
                        .open_alloc(config)
                        .map(|image| Box::new(image) as DynImage),
                    None => builder
                        .open_alloc(config)
                        .map(|image| Box::new(image) as DynImage),
                };
                opened.map_err(image_error(&layer.path))?
            }
        };
        below = Some(Named {
            path: layer.path.clone(),
            image,
        });
    }
    // The top image's own errors are not a backing image's: no tag.
    Ok(below.expect("a chain has at least its top image").image)
}

/// Offers the options' secret to the layer, if it is encrypted.
#[cfg(feature = "luks")]
fn unlock(
    builder: ImageBuilder<File>,
    options: &ChainOptions,
) -> Result<ImageBuilder<File>, Error<io::Error>> {
    match &options.secret {
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
fn unlock(
    builder: ImageBuilder<File>,
    _options: &ChainOptions,
) -> Result<ImageBuilder<File>, Error<io::Error>> {
    Ok(builder)
}

/// A layer that could not be unlocked: the top image's own error, or, for
/// a layer below it, an [`Error::Backing`] of the top image naming that layer.
fn key_error(layers: &[Layer], depth: usize) -> impl FnOnce(Error<io::Error>) -> ChainError + '_ {
    move |error| {
        let top = &layers[0].path;
        if depth == 0 {
            return image_error(top)(error);
        }
        image_error(top)(Error::Backing {
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            name: Some(layers[depth].path.display().to_string()),
            error: Box::new(error),
        })
    }
}

#[cfg(all(test, feature = "luks"))]
mod secret_tests {
    use super::*;
    use crate::crypto::luks::tests::qemu_like_header;

    #[test]
    fn remembered_keys_are_never_moved_by_a_growing_list() {
        let secret = Secret::passphrase(b"pass", UnlockLimits::default());
        let (start, capacity) = {
            let unlocked = secret.unlocked.lock().unwrap();
            (unlocked.as_ptr(), unlocked.capacity())
        };
        assert!(capacity >= MAX_REMEMBERED_KEYS);
        for index in 0..MAX_REMEMBERED_KEYS + 3 {
            let mut bytes = qemu_like_header();
            bytes[168..176].copy_from_slice(std::format!("{index:08}").as_bytes());
            let header = LuksHeader::parse(&bytes).unwrap();
            let key = MasterKey::new(&[index as u8; 64]).unwrap();
            secret.remember(header.clone(), key.clone());
            secret.remember(header, key);
        }
        let unlocked = secret.unlocked.lock().unwrap();
        assert_eq!(unlocked.len(), MAX_REMEMBERED_KEYS);
        assert_eq!((unlocked.as_ptr(), unlocked.capacity()), (start, capacity));
        assert_eq!(unlocked[3].key.as_bytes(), [3u8; 64]);
    }
}
