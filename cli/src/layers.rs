//! The images of a backing chain opened one by one, and which layer a run of
//! the virtual disk comes from (what `qemu-img map` calls its depth).
//!
//! The crate's chain helper gives one reader for the whole chain; here each
//! layer is also opened alone (its backing ignored) so that its own extents
//! can be asked for, as QEMU's block-status walk does layer by layer.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use qcow2_reader::chain::{
    chain_layers, open_chain, resolve_name, Chain, ChainError, ChainOptions, Layer, LayerFormat,
    Secret,
};
use qcow2_reader::follow::{FollowPolicy, NamedFile};
use qcow2_reader::{find_snapshot, Config, Image, Mapping, NoBacking};
use rustix::fs::SeekFrom;

use crate::failure::{Failure, Result};
use crate::passphrase::is_wrong_passphrase;

/// Which files named by an image the tool may open (`--follow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Follow {
    /// Any path the image names, absolute or relative (QEMU's behaviour): only for images you trust.
    #[default]
    Any,
    /// Only files in the image's own directory or below: no absolute paths, no `..`, no symlink leading out.
    SameDir,
    /// None: the image alone, its backing file ignored (reads as zeros), an external data file refused.
    None,
}

impl Follow {
    /// The crate's policy of the same name.
    pub fn policy(self) -> FollowPolicy {
        match self {
            Follow::Any => FollowPolicy::Any,
            Follow::SameDir => FollowPolicy::SameDir,
            Follow::None => FollowPolicy::None,
        }
    }
}

/// What a run may open and unlock: the follow policy, and the passphrase
/// of encrypted layers ([`KeyArgs::access`](crate::passphrase::KeyArgs::access)).
#[derive(Debug, Clone)]
pub struct Access {
    /// Which named files may be opened.
    pub follow: Follow,
    /// The passphrase offered to every encrypted layer.
    pub secret: Option<Secret>,
    /// The passphrase came from a file ending with a newline, which is part
    /// of it: said when it is wrong, as the likely cause.
    pub ends_with_newline: bool,
}

impl Access {
    /// The failure to open the chain of `image`, with the newline hint.
    fn chain_failure(&self, image: &Path, error: ChainError) -> Failure {
        let hint = self.ends_with_newline
            && matches!(&error, ChainError::Image { error, .. } if is_wrong_passphrase(error));
        let mut failure = Failure::chain(image, error);
        if hint {
            failure.message += " (the passphrase file ends with a newline, which is part of \
                 the passphrase, as for qemu-img's secret,file=)";
        }
        failure
    }
}

/// One layer of the chain, readable on its own.
pub struct LayerView {
    /// The layer's own file.
    pub path: PathBuf,
    /// The file that host offsets of this layer point into (the external data file, if any).
    pub data_path: PathBuf,
    /// Its virtual size (the file size for a raw layer).
    pub size: u64,
    /// Its data is encrypted: QEMU reports no host offsets for it (they
    /// would point at ciphertext).
    pub encrypted: bool,
    source: Source,
}

enum Source {
    Qcow2(Box<Image<'static, File, NoBacking>>),
    Raw(File),
}

/// How a run of the virtual disk reads, with `qemu-img map`'s flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Guest offset of the run.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Index of the layer that decides it, 0 for the top.
    pub depth: usize,
    /// Whether that layer allocates it (QEMU's `present`).
    pub present: bool,
    /// Whether it reads as zeros without reading data.
    pub zero: bool,
    /// Whether data is stored for it.
    pub data: bool,
    /// Host offset in the layer's data file, when the data is stored uncompressed.
    pub offset: Option<u64>,
}

impl Status {
    /// Whether the run reads as zeros and needs no data read.
    pub fn reads_as_zeros(&self) -> bool {
        self.zero && !self.data
    }
}

/// Every layer of a chain, top first.
pub struct Stack {
    /// The layers, top first.
    pub views: Vec<LayerView>,
}

/// Opens the chain of `path` for reading, with `snapshot` applied to the top
/// image, opening only the named files `access` allows and unlocking
/// encrypted layers with its passphrase.
///
/// The top image must be QCOW2 (the chain helper would take any other file
/// as raw); raw images are read only as backing files.
pub fn open_reader(
    path: &Path,
    snapshot: Option<&str>,
    config: Config,
    access: &Access,
) -> Result<Chain> {
    let file = File::open(path).map_err(|error| Failure::new(path, error))?;
    Image::builder(file).map_err(|error| Failure::new(path, error))?;
    let options = ChainOptions {
        config,
        snapshot: snapshot.map(str::to_string),
        follow: access.follow.policy(),
        secret: access.secret.clone(),
        ..ChainOptions::default()
    };
    open_chain(path, &options).map_err(|error| access.chain_failure(path, error))
}

/// The layers of the chain of `path`, top first, headers read but no
/// image opened (no passphrase needed), as far as `follow` allows. The top
/// image must be QCOW2, as for [`open_reader`].
pub fn list_layers(path: &Path, follow: Follow) -> Result<Vec<Layer>> {
    let file = File::open(path).map_err(|error| Failure::new(path, error))?;
    Image::builder(file).map_err(|error| Failure::new(path, error))?;
    let options = ChainOptions {
        follow: follow.policy(),
        ..ChainOptions::default()
    };
    chain_layers(path, &options).map_err(|error| Failure::chain(path, error))
}

/// Every file the chain of `path` reads under `follow`, top first: each
/// layer, each external data file (as [`list_layers`] finds them).
pub fn input_paths(path: &Path, follow: Follow) -> Result<Vec<PathBuf>> {
    let layers = list_layers(path, follow)?;
    let mut paths = Vec::with_capacity(2 * layers.len());
    for layer in layers {
        let data_file = layer.header.as_ref().and_then(|header| header.data_file());
        if let Some(name) = data_file {
            let name = String::from_utf8_lossy(name.as_bytes());
            paths.push(resolve_name(&layer.path, &name));
        }
        paths.push(layer.path);
    }
    Ok(paths)
}

impl Stack {
    /// Opens every layer of `chain` alone; the top one as of `snapshot`, if
    /// given; data files as `access` allows; encrypted layers unlocked with its passphrase. Runs that read as zeros or fall
    /// through report the host offsets their entries keep, as `qemu-img map`
    /// does.
    pub fn open(
        chain: &Chain,
        snapshot: Option<&str>,
        config: &Config,
        access: &Access,
    ) -> Result<Self> {
        let top = chain.layers.first().map(|layer| layer.path.clone());
        let top = top.unwrap_or_default();
        let mut views = Vec::with_capacity(chain.layers.len());
        for (depth, layer) in chain.layers.iter().enumerate() {
            let snapshot = if depth == 0 { snapshot } else { None };
            let view = open_view(&top, layer, snapshot, config, access).map_err(|message| {
                let message = if depth == 0 {
                    message
                } else {
                    format!("{}: {message}", layer.path.display())
                };
                Failure::new(&top, message)
            })?;
            views.push(view);
        }
        Ok(Self { views })
    }

    /// Every file the chain reads: each layer and each external data file.
    pub fn input_paths(&self) -> impl Iterator<Item = &Path> {
        self.views
            .iter()
            .flat_map(|view| [view.path.as_path(), view.data_path.as_path()])
    }

    /// The virtual size of the top image.
    pub fn virtual_size(&self) -> u64 {
        self.views.first().map_or(0, |view| view.size)
    }

    /// How the run at `start` reads, at most `max_len` bytes long, walking down the chain.
    pub fn status(&self, start: u64, max_len: u64) -> io::Result<Status> {
        let mut len = max_len;
        for (depth, view) in self.views.iter().enumerate() {
            let status = |len, present, zero, data, offset| Status {
                start,
                len,
                depth,
                present,
                zero,
                data,
                offset,
            };
            let image = match &view.source {
                Source::Raw(file) => return raw_status(file, view.size, start, len, depth),
                Source::Qcow2(image) => image,
            };
            let extent = image.extent(start, len).map_err(io::Error::from)?;
            len = extent.len;
            let status = |len, present, zero, data, offset: Option<u64>| {
                status(len, present, zero, data, offset.filter(|_| !view.encrypted))
            };
            let kept_offset = match extent.kind {
                Mapping::Data { host_offset } => {
                    return Ok(status(len, true, false, true, Some(host_offset)))
                }
                Mapping::Compressed(_) => return Ok(status(len, true, false, true, None)),
                Mapping::Zero { kept_offset } => {
                    return Ok(status(len, true, true, false, kept_offset));
                }
                Mapping::Unallocated { kept_offset } => kept_offset,
            };
            // QEMU: unallocated over no backing, or past the end of a shorter
            // backing image, reads as zeros decided by this layer.
            match self.views.get(depth + 1) {
                Some(below) if start < below.size => len = len.min(below.size - start),
                _ => return Ok(status(len, false, true, false, kept_offset)),
            }
        }
        Err(io::Error::other("empty backing chain"))
    }
}

/// Opens one layer alone: QCOW2 with its data file and without its backing, or raw.
fn open_view(
    top: &Path,
    layer: &Layer,
    snapshot: Option<&str>,
    config: &Config,
    access: &Access,
) -> std::result::Result<LayerView, String> {
    let file = File::open(&layer.path).map_err(|error| error.to_string())?;
    if layer.format == LayerFormat::Raw {
        let size = file.metadata().map_err(|error| error.to_string())?.len();
        return Ok(LayerView {
            path: layer.path.clone(),
            data_path: layer.path.clone(),
            size,
            encrypted: false,
            source: Source::Raw(file),
        });
    }
    let text = |error: qcow2_reader::Error<io::Error>| error.to_string();
    let mut builder = Image::builder(file).map_err(text)?;
    let mut data_path = layer.path.clone();
    if let Some(name) = builder.header().data_file() {
        let name = String::from_utf8_lossy(name.as_bytes());
        let (data_file, path) = access
            .follow
            .policy()
            .open(top, &layer.path, NamedFile::DataFile, &name)
            .map_err(|error| error.to_string())?;
        data_path = path;
        builder = builder.data_file(data_file);
    }
    if let Some(snapshot) = snapshot {
        let found = find_snapshot(builder.storage(), builder.header(), snapshot.as_bytes())
            .map_err(text)?;
        builder = builder.snapshot(&found).map_err(text)?;
    }
    if let Some(secret) = &access.secret {
        builder = secret.unlock(builder).map_err(text)?;
    }
    // The chain decided which backing files exist; each view reads its layer alone.
    let image = builder.ignore_backing().open_alloc(config).map_err(text)?;
    Ok(LayerView {
        path: layer.path.clone(),
        data_path,
        size: image.virtual_size(),
        encrypted: image.header().is_encrypted(),
        source: Source::Qcow2(Box::new(image)),
    })
}

/// A raw layer's status from the file system's holes, as QEMU's file driver reports it.
fn raw_status(file: &File, size: u64, start: u64, len: u64, depth: usize) -> io::Result<Status> {
    let len = len.min(size.saturating_sub(start)).max(1);
    let status = |len, zero: bool| Status {
        start,
        len,
        depth,
        present: true,
        zero,
        data: !zero,
        offset: Some(start),
    };
    match rustix::fs::seek(file, SeekFrom::Data(start)) {
        Ok(data) if data == start => {
            let hole = rustix::fs::seek(file, SeekFrom::Hole(start)).unwrap_or(size);
            Ok(status(len.min(hole.saturating_sub(start)).max(1), false))
        }
        Ok(data) => Ok(status(len.min(data - start), true)),
        Err(rustix::io::Errno::NXIO) => Ok(status(len, true)),
        // No hole support: everything is data.
        Err(_) => Ok(status(len, false)),
    }
}
