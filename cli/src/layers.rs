//! Opening a backing chain for the subcommands, and which layer a run of
//! the virtual disk comes from (what `qemu-img map` calls its depth): the
//! crate's read plan (`Disk::plan`) in `qemu-img map`'s terms. The only
//! rule added here is the file system's: holes of a raw layer read as
//! zeros, as QEMU's file driver reports them.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use qcow2_reader::chain::{Chain, ChainError, ChainOptions, Disk, Layer, Secret, Source, Walked};
use qcow2_reader::follow::FollowPolicy;
use qcow2_reader::{BlockRead, Config, Image};
use rustix::fs::SeekFrom;

use crate::failure::{Failure, Result};
use crate::input::{chain_layers, open_disk, resolve_name, Input};
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

/// One layer of the chain, as `qcow map` names it.
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

/// A chain opened once: its virtual disk and its layers, top first.
pub struct Stack {
    /// The layers, top first.
    pub views: Vec<LayerView>,
    walked: Walked<Input, PathBuf>,
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
    let options = qcow2_top_options(path, snapshot, config, access)?;
    let walked = open_disk(path, &options).map_err(|error| access.chain_failure(path, error))?;
    Ok(Chain {
        top: Box::new(walked.disk),
        layers: walked.layers.into_iter().map(Layer::from).collect(),
    })
}

/// The chain options for `path`, whose top image must be QCOW2.
fn qcow2_top_options(
    path: &Path,
    snapshot: Option<&str>,
    config: Config,
    access: &Access,
) -> Result<ChainOptions> {
    let file = Input::open(path).map_err(|error| Failure::new(path, error))?;
    Image::builder(file).map_err(|error| Failure::new(path, error))?;
    Ok(ChainOptions {
        config,
        snapshot: snapshot.map(str::to_string),
        follow: access.follow.policy(),
        secret: access.secret.clone(),
        ..ChainOptions::default()
    })
}

/// The layers of the chain of `path`, top first, headers read but no
/// image opened (no passphrase needed), as far as `follow` allows. The top
/// image must be QCOW2, as for [`open_reader`].
pub fn list_layers(path: &Path, follow: Follow) -> Result<Vec<Layer>> {
    let file = Input::open(path).map_err(|error| Failure::new(path, error))?;
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
    /// Opens the chain of `path` once, the top image as of `snapshot` if
    /// given, opening only the named files `access` allows and unlocking
    /// encrypted layers with its passphrase.
    pub fn open(
        path: &Path,
        snapshot: Option<&str>,
        config: Config,
        access: &Access,
    ) -> Result<Self> {
        let options = qcow2_top_options(path, snapshot, config, access)?;
        let walked =
            open_disk(path, &options).map_err(|error| access.chain_failure(path, error))?;
        let mut views = Vec::with_capacity(walked.layers.len());
        for (depth, layer) in walked.layers.iter().enumerate() {
            let size = match &layer.header {
                Some(header) => header.virtual_size(),
                None => {
                    layer_size(&walked.disk, depth).map_err(|error| Failure::new(path, error))?
                }
            };
            views.push(LayerView {
                path: layer.location.clone(),
                data_path: layer
                    .data_file
                    .clone()
                    .unwrap_or_else(|| layer.location.clone()),
                size,
                encrypted: layer
                    .header
                    .as_ref()
                    .is_some_and(|header| header.is_encrypted()),
            });
        }
        Ok(Self { views, walked })
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

    /// How the run at `start` reads, at most `max_len` bytes long: the
    /// first piece of the crate's plan, in `qemu-img map`'s terms.
    pub fn status(&self, start: u64, max_len: u64) -> io::Result<Status> {
        let max_len = max_len.min(self.virtual_size().saturating_sub(start));
        let piece = self
            .walked
            .disk
            .plan(start, max_len)
            .next()
            .ok_or_else(|| io::Error::other(format!("offset {start:#x} is past the disk's end")))?
            .map_err(io::Error::from)?;
        let encrypted = self
            .views
            .get(piece.depth)
            .is_some_and(|view| view.encrypted);
        let status = |present, zero, data, offset: Option<u64>| Status {
            start,
            len: piece.len,
            depth: piece.depth,
            present,
            zero,
            data,
            // QEMU shows no host offsets for encrypted layers.
            offset: offset.filter(|_| !encrypted),
        };
        Ok(match piece.source {
            Source::Stored { offset, .. } => match self.walked.disk.layer(piece.depth) {
                Some((Disk::Raw(raw), _)) => match &raw.0 {
                    Input::File(file) => {
                        // The size the walk read: no `metadata` call per piece.
                        let size = self.views.get(piece.depth).map_or(0, |view| view.size);
                        raw_status(file, size, start, piece.len, piece.depth)?
                    }
                    // A web server tells no holes: all of it is data.
                    Input::Http(_) => status(true, false, true, Some(start)),
                },
                _ => status(true, false, true, Some(offset)),
            },
            Source::Compressed(_) => status(true, false, true, None),
            Source::ZeroCluster { kept_offset } => status(true, true, false, kept_offset),
            Source::Unallocated { kept_offset } | Source::PastEnd { kept_offset } => {
                status(false, true, false, kept_offset)
            }
        })
    }
}

/// The size of the raw layer at `depth`.
fn layer_size(disk: &Disk<Input>, depth: usize) -> std::result::Result<u64, String> {
    match disk.layer(depth) {
        Some((layer, _)) => layer.size().map_err(|error| error.to_string()),
        None => Err(format!("the chain has no layer {depth}")),
    }
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
