//! Backing resolution: opening the image on a disk together with the
//! backing files it names, found on the other disks.
//!
//! Disk rules (the runner follows them, see firmware/README.md):
//! - the backing file of disk `i` is the first disk after `i` whose
//!   virtio-blk serial equals the backing file name's last path component,
//!   cut to 20 bytes (the serial field's size);
//! - a backing file is qcow2 or raw, as its image's backing format says,
//!   or by probing for the qcow2 magic ([`qcow2_reader::is_qcow2`]) when
//!   the image does not say.

use crate::demo::DemoError;
use crate::disk::{DiskError, VirtioDisk};
use crate::{arch, println, report};
use alloc::boxed::Box;
use qcow2_reader::crypto::UnlockLimits;
use qcow2_reader::{is_qcow2, BlockRead, Config, FileName, FormatName, Image, ImageBuilder, Raw};

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

/// A disk as the images see it: devices live until the machine stops.
pub type Disk = &'static VirtioDisk;

/// The crate's error over a virtio disk.
pub type ImageError = qcow2_reader::Error<DiskError>;

/// An opened qcow2 image whose backing is any [`Backing`].
pub type Qcow2 = Image<'static, Disk, Backing>;

/// What an image reads its unallocated clusters from: the backing chain of
/// any depth with a single type, since each image's backing type would
/// otherwise nest.
pub enum Backing {
    /// The image names no backing file: unallocated clusters read as zeros
    /// (an empty backing reads as zeros past its end, which is everywhere).
    None,
    /// A raw backing file.
    Raw(Raw<Disk>),
    /// A qcow2 backing file, with its own backing.
    Qcow2(Box<Qcow2>),
}

impl BlockRead for Backing {
    type Error = ImageError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        match self {
            Backing::None if buf.is_empty() && offset == 0 => Ok(()),
            Backing::None => Err(ImageError::OutOfRange {
                offset,
                len: buf.len() as u64,
                size: 0,
            }),
            Backing::Raw(raw) => raw.read_at(offset, buf),
            Backing::Qcow2(image) => image.read_at(offset, buf),
        }
    }

    fn size(&self) -> Result<u64, ImageError> {
        match self {
            Backing::None => Ok(0),
            Backing::Raw(raw) => raw.size(),
            Backing::Qcow2(image) => Ok(image.virtual_size()),
        }
    }
}

/// Opens the qcow2 image on disk `index`, and its backing chain, with
/// `passphrase` for every encrypted layer; prints each image's header and
/// unlock time on the way.
pub fn open_qcow2(
    disks: &'static [VirtioDisk],
    index: usize,
    passphrase: Option<&[u8]>,
) -> Result<Qcow2, DemoError> {
    let image_error = |error| DemoError::Image { disk: index, error };
    let builder = Image::builder(&disks[index]).map_err(image_error)?;
    let header = builder.header().clone();
    report::print_header(index, &header, &disks[index]);
    let builder = unlock(builder, index, passphrase)?;

    let backing = match header.backing_file() {
        None => Backing::None,
        Some(name) => open_backing(disks, index, name, header.backing_format(), passphrase)?,
    };
    let config = Config::default();
    let builder = builder.backing(backing);
    let needed = builder.memory_bytes(&config).map_err(image_error)?;
    // Allocated once per image and kept: the image borrows it for good.
    let memory = alloc::vec![0u8; needed].leak();
    builder.open(memory, &config).map_err(image_error)
}

/// Unlocks the image on disk `index` if it is encrypted and a passphrase
/// was given, and prints how long that took. Without a passphrase the
/// builder is returned as it is: opening it then fails with the crate's
/// own error for a missing key.
fn unlock(
    builder: ImageBuilder<Disk>,
    index: usize,
    passphrase: Option<&[u8]>,
) -> Result<ImageBuilder<Disk>, DemoError> {
    let Some(passphrase) = passphrase else {
        return Ok(builder);
    };
    if builder.encryption().is_none() {
        return Ok(builder);
    }
    let start = arch::counter();
    let builder = builder
        .passphrase(passphrase, &UNLOCK_LIMITS)
        .map_err(|error| DemoError::Image { disk: index, error })?;
    report::print_unlock(index, arch::counter().wrapping_sub(start));
    Ok(builder)
}

/// Whether any layer of `image`'s chain is encrypted.
pub fn any_layer_encrypted(image: &Qcow2) -> bool {
    image.header().crypt_method() != 0
        || matches!(image.backing(), Some(Backing::Qcow2(backing)) if any_layer_encrypted(backing))
}

/// Finds and opens the backing file `name` of the image on disk `index`.
fn open_backing(
    disks: &'static [VirtioDisk],
    index: usize,
    name: &FileName,
    format: Option<&FormatName>,
    passphrase: Option<&[u8]>,
) -> Result<Backing, DemoError> {
    let serial = serial_for(name);
    let backing = (index + 1..disks.len())
        .find(|&candidate| disks[candidate].serial().as_bytes() == serial)
        .ok_or_else(|| DemoError::BackingNotFound {
            disk: index,
            name: Box::new(*name),
        })?;
    let qcow2 = match format {
        Some(format) if format.as_bytes() == b"qcow2" => true,
        Some(format) if format.as_bytes() == b"raw" => false,
        Some(format) => {
            return Err(DemoError::BackingFormat {
                disk: index,
                format: *format,
            })
        }
        // No format recorded: probe, as QEMU does.
        None => is_qcow2(&disks[backing]).map_err(|error| DemoError::Disk {
            disk: backing,
            error,
        })?,
    };
    println!(
        "disk {index}: backing file \"{name}\" ({}) is disk {backing}",
        if qcow2 { "qcow2" } else { "raw" }
    );
    if qcow2 {
        Ok(Backing::Qcow2(Box::new(open_qcow2(
            disks, backing, passphrase,
        )?)))
    } else {
        Ok(Backing::Raw(Raw(&disks[backing])))
    }
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
