//! Opening the image on the first disk with the files it names, found on
//! the other disks, through the crate's chain walk
//! (`qcow2_reader::chain`): this file supplies only the resolver (which
//! disk holds a named file) and the firmware's limits.
//!
//! Disk rules (the runner follows them, see firmware/README.md):
//! - the backing file (or external data file) of disk `i` is the first
//!   disk after `i` whose virtio-blk serial equals the name's last path
//!   component, cut to 20 bytes (the serial field's size);
//! - its format is the crate's rule (`Header::backing_format`): qcow2,
//!   raw, or probed by the magic when the image records no format.
//!
//! Memory: the caches and zstd decoders of all layers together are at
//! most [`CACHE_BUDGET`] of the 32 MiB heap, the caches allocated once,
//! fallibly, at the walk, each decoder (fallibly too) at its layer's first
//! compressed cluster.

use crate::demo::DemoError;
use crate::disk::{DiskError, VirtioDisk};
use crate::{arch, report};
use alloc::format;
use alloc::string::String;
use core::fmt;
use qcow2_reader::chain::{self, Found, Resolver, Role, Secret, WalkOptions};
use qcow2_reader::crypto::UnlockLimits;
use qcow2_reader::{Config, FileName, Image};

/// PBKDF2 work allowed for unlocking one image (summed over the key slots
/// tried and the master key digest check).
///
/// Sized for QEMU under TCG, where the guest's software PBKDF2-SHA256 ran
/// about 100 000 iterations a second on both architectures (measured on
/// this project's loaded 2-core host: 673 000 iterations in 6.5 s, see
/// firmware/README.md): 8 million is about 80 s, inside `run.sh`'s default
/// 120 s timeout, so a header asking for more is refused with the crate's
/// iteration-limit error instead of running into the timeout. An image
/// made with `qemu-img`'s default `encrypt.iter-time` (2 s of the host's
/// hashing, about 6.6 million iterations here) still opens, slowly; images
/// made for the guest should use a small `encrypt.iter-time`.
pub const UNLOCK_LIMITS: UnlockLimits = UnlockLimits {
    max_iterations: 8_000_000,
};

/// Most images in one chain, the top included.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Most bytes the caches and zstd decoders of all layers may take, of the
/// 32 MiB heap (the rest holds the read buffers and file systems): 16
/// layers of 64 KiB clusters take 19 MiB with the default `Config`, 25.5 MiB
/// if they are zstd images (423,712 bytes of decoder each); two layers of
/// 2 MiB clusters 14 MiB, 19.1 MiB with zstd.
pub const CACHE_BUDGET: usize = 26 << 20;

/// A disk as the images see it: devices live until the machine stops.
pub type Disk = &'static VirtioDisk;

/// The crate's error over a virtio disk.
pub type ImageError = qcow2_reader::Error<DiskError>;

/// The virtual disk of the chain whose top (disk 0) is a qcow2 image:
/// read through the chain's plan ([`chain::Disk::plan`]).
pub type Qcow2 = chain::Disk<Disk>;

/// Why the firmware could not open a file an image names.
#[derive(Debug)]
pub struct NotAttached {
    /// The serial the name maps to.
    serial: String,
}

impl fmt::Display for NotAttached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not attached: no later disk has the serial \"{}\"",
            self.serial
        )
    }
}

/// The chain walk's error over virtio disks; locations are disk numbers.
pub type ChainError = chain::WalkError<usize, NotAttached, DiskError>;

/// The virtio disks as the chain walk's resolver.
pub struct Disks(pub &'static [VirtioDisk]);

impl Resolver for Disks {
    type Store = Disk;
    type Location = usize;
    type Error = NotAttached;

    fn open(
        &mut self,
        name: &FileName,
        _role: Role,
        named_by: &usize,
    ) -> Result<Found<Disk, usize>, NotAttached> {
        let serial = serial_for(name);
        let index = (named_by + 1..self.0.len())
            .find(|&candidate| self.0[candidate].serial().as_bytes() == serial)
            .ok_or_else(|| NotAttached {
                serial: String::from_utf8_lossy(serial).into_owned(),
            })?;
        Ok(Found {
            store: &self.0[index],
            location: index,
        })
    }

    fn same_file(&mut self, a: &usize, b: &usize) -> bool {
        a == b
    }

    fn describe(&self, location: &usize) -> String {
        format!("disk {location}")
    }
}

/// Opens the qcow2 image on disk 0 with its chain, with `passphrase` for
/// every encrypted layer; prints each layer's header and the unlock time.
pub fn open_qcow2(
    disks: &'static [VirtioDisk],
    passphrase: Option<&[u8]>,
) -> Result<Qcow2, DemoError> {
    let secret = passphrase.map(|bytes| Secret::passphrase(bytes, UNLOCK_LIMITS));
    let mut options = WalkOptions::default();
    options.max_depth = MAX_CHAIN_DEPTH;
    options.max_memory = CACHE_BUDGET;
    options.config = Config::default();
    options.secret = secret.as_ref();
    let mut resolver = Disks(disks);
    let top = Found {
        store: &disks[0],
        location: 0,
    };
    let start = arch::counter();
    let walked = chain::walk(&mut resolver, top, &options);
    let ticks = arch::counter().wrapping_sub(start);
    let walked = walked.map_err(|error| DemoError::Chain(alloc::boxed::Box::new(error)))?;
    for (depth, layer) in walked.layers.iter().enumerate() {
        if let Some(header) = &layer.header {
            report::print_header(layer.location, header, &disks[layer.location]);
        }
        if let Some(below) = walked.layers.get(depth + 1) {
            crate::println!(
                "disk {}: backing file ({}) is disk {}",
                layer.location,
                below.format.name(),
                below.location
            );
        }
    }
    let encrypted =
        |layer: &chain::LayerInfo<usize>| layer.header.as_ref().is_some_and(|h| h.is_encrypted());
    if secret.is_some() && walked.layers.iter().any(encrypted) {
        report::print_unlock(0, ticks);
    }
    match walked.disk {
        disk @ chain::Disk::Qcow2(_) => Ok(disk),
        // The walk probed disk 0 as raw: the crate's header error says why
        // it is not qcow2 (its magic).
        chain::Disk::Raw(_) => Err(match Image::builder(&disks[0]) {
            Err(error) => DemoError::Image { disk: 0, error },
            Ok(_) => DemoError::NotQcow2,
        }),
    }
}

/// Whether any layer of `image`'s chain is encrypted.
pub fn any_layer_encrypted(image: &Qcow2) -> bool {
    (0..MAX_CHAIN_DEPTH)
        .map_while(|depth| image.layer(depth))
        .any(|(layer, _)| {
            layer
                .image()
                .is_some_and(|image| image.header().is_encrypted())
        })
}

/// The serial the runner gives a file: its base name, cut to 20 bytes.
pub fn serial_for(name: &FileName) -> &[u8] {
    let bytes = name.as_bytes();
    let base = match bytes.iter().rposition(|&byte| byte == b'/') {
        Some(slash) => &bytes[slash + 1..],
        None => bytes,
    };
    &base[..base.len().min(20)]
}
