//! The demo: open the image on the first disk (with its backing chain on
//! the others), print its header, hash the whole virtual disk, and compare
//! the read's throughput with reading raw sectors from the same device.
//!
//! Disk rules (the runner follows them, see firmware/README.md):
//! - disk 0, the first `-device` on QEMU's command line, holds the image;
//! - the backing file of disk `i` is the first disk after `i` whose
//!   virtio-blk serial equals the backing file name's last path component,
//!   cut to 20 bytes (the serial field's size);
//! - a backing file is qcow2 or raw, as its image's backing format says,
//!   or by probing for the qcow2 magic when the image does not say.

use crate::disk::{DiskError, VirtioDisk};
use crate::{arch, heap, println};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use qcow2_reader::feature::{known_feature_name, FeatureKind};
use qcow2_reader::{BlockRead, Config, FileName, FormatName, Header, Image, Raw};
use sha2::{Digest, Sha256};

/// Bytes per read of the virtual disk (and of the raw comparison).
const CHUNK: usize = 1024 * 1024;

/// Timed passes of each kind; the fastest counts.
const PASSES: usize = 5;

/// A disk as the images see it: devices live until the machine stops.
type Disk = &'static VirtioDisk;

/// The crate's error over a virtio disk.
type ImageError = qcow2_reader::Error<DiskError>;

/// An opened qcow2 image whose backing is any [`Layer`].
type Qcow2 = Image<'static, Disk, Layer>;

/// One layer under an image: the backing chain of any depth with a single
/// type, since each image's backing type would otherwise nest.
pub enum Layer {
    /// The image names no backing file: unallocated clusters read as zeros
    /// (an empty backing reads as zeros past its end, which is everywhere).
    Empty,
    /// A raw backing file.
    Raw(Raw<Disk>),
    /// A qcow2 backing file, with its own backing.
    Qcow2(Box<Qcow2>),
}

impl BlockRead for Layer {
    type Error = ImageError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        match self {
            Layer::Empty if buf.is_empty() && offset == 0 => Ok(()),
            Layer::Empty => Err(ImageError::OutOfRange {
                offset,
                len: buf.len() as u64,
                size: 0,
            }),
            Layer::Raw(raw) => raw.read_at(offset, buf),
            Layer::Qcow2(image) => image.read_at(offset, buf),
        }
    }

    fn size(&self) -> Result<u64, ImageError> {
        match self {
            Layer::Empty => Ok(0),
            Layer::Raw(raw) => raw.size(),
            Layer::Qcow2(image) => Ok(image.virtual_size()),
        }
    }
}

/// Why the demo failed; printed after `error: `.
#[derive(Debug)]
pub enum DemoError {
    /// No virtio block device was found.
    NoDisk,
    /// A virtio block device did not initialise.
    Device {
        /// Transport slot.
        slot: usize,
        /// The driver's error.
        error: virtio_drivers::Error,
    },
    /// The crate refused an image or a read.
    Image {
        /// Disk number.
        disk: usize,
        /// The crate's error.
        error: ImageError,
    },
    /// A raw read from a disk failed.
    Disk {
        /// Disk number.
        disk: usize,
        /// The driver's error.
        error: DiskError,
    },
    /// No disk carries the serial that a backing file name maps to.
    BackingNotFound {
        /// Disk whose image names the backing file.
        disk: usize,
        /// The backing file name from the header (boxed: it is 1 KiB).
        name: Box<FileName>,
    },
    /// A backing format other than qcow2 and raw.
    BackingFormat {
        /// Disk whose image names the format.
        disk: usize,
        /// The format name.
        format: FormatName,
    },
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDisk => f.write_str("no virtio block device found (attach the image as a virtio-blk-device)"),
            Self::Device { slot, error } => {
                write!(f, "virtio-blk device in slot {slot} did not initialise: {error}")
            }
            Self::Image { disk, error } => write!(f, "disk {disk}: {error}"),
            Self::Disk { disk, error } => write!(f, "disk {disk}: {error}"),
            Self::BackingNotFound { disk, name } => write!(
                f,
                "disk {disk}: backing file \"{name}\" not attached: no later disk has the serial \"{}\"",
                Utf8Lossy(serial_for(name))
            ),
            Self::BackingFormat { disk, format } => write!(
                f,
                "disk {disk}: backing format \"{format}\" is not supported (only qcow2 and raw)"
            ),
        }
    }
}

/// Runs the demo; the caller prints the error and sets the exit status.
pub fn run(info: &crate::boot_info::BootInfo) -> Result<(), DemoError> {
    println!(
        "qcow2-firmware {} on {}",
        env!("CARGO_PKG_VERSION"),
        arch::NAME
    );
    print_boot(info);

    let disks = discover()?;
    let image = open_qcow2(disks, 0)?;

    let hz = arch::counter_frequency().map(|(hz, _)| hz);
    let size = image.virtual_size();
    let mut buffer = alloc::vec![0u8; CHUNK];

    let image_error = |error| DemoError::Image { disk: 0, error };
    let (digest, read_ticks, hash_ticks) = hash_image(&image, &mut buffer).map_err(image_error)?;
    println!("virtual-disk-sha256: {}", Hex(&digest));

    // The comparison: whole-disk passes with nothing but reads in the loop
    // (hashing between reads slows the next request down, host-side),
    // alternating raw and qcow2, best of PASSES each against host noise.
    let raw_error = |error| DemoError::Disk { disk: 0, error };
    let disk = &disks[0];
    let mut raw = time_raw(disk, size, &mut buffer).map_err(raw_error)?;
    let mut qcow2 = time_image(&image, disk, &mut buffer).map_err(image_error)?;
    for _ in 1..PASSES {
        raw = raw.best(time_raw(disk, size, &mut buffer).map_err(raw_error)?);
        qcow2 = qcow2.best(time_image(&image, disk, &mut buffer).map_err(image_error)?);
    }

    let (heap_used, heap_size) = heap::usage();
    let (dma_used, dma_pages) = crate::hal::pages_used();
    println!(
        "memory: heap {} KiB of {} KiB in use, DMA pool {dma_used} of {dma_pages} pages",
        heap_used / 1024,
        heap_size / 1024
    );
    println!(
        "hashing pass: read {}, SHA-256 {}",
        Rate {
            bytes: size,
            ticks: read_ticks,
            hz
        },
        Duration {
            ticks: hash_ticks,
            hz
        }
    );
    println!(
        "throughput of {size} bytes from disk 0 in {} KiB reads (best of {PASSES} passes):",
        CHUNK / 1024
    );
    println!(
        "  qcow2 read: {} ({} device requests)",
        Rate {
            bytes: size,
            ticks: qcow2.ticks,
            hz
        },
        qcow2.requests
    );
    println!(
        "  raw read:   {} ({} device requests)",
        Rate {
            bytes: size,
            ticks: raw.ticks,
            hz
        },
        raw.requests
    );
    // qcow2 speed / raw speed = raw time / qcow2 time.
    let hundredths = u128::from(raw.ticks) * 100 / u128::from(qcow2.ticks.max(1));
    println!(
        "  qcow2/raw throughput ratio: {}.{:02}",
        hundredths / 100,
        hundredths % 100
    );
    Ok(())
}

fn print_boot(info: &crate::boot_info::BootInfo) {
    let (first, last) = crate::footprint();
    match info.ram_bytes {
        Some(ram) => println!("boot: {}, {} MiB RAM", info.loader, ram >> 20),
        None => println!("boot: {}", info.loader),
    }
    let placement = match info.footprint_in_ram {
        Some(true) => "inside RAM",
        Some(false) => "NOT inside RAM of the loader's map",
        None => "RAM map unknown",
    };
    println!("firmware: {first:#x}..{last:#x} ({placement})");
    match arch::counter_frequency() {
        Some((hz, source)) => println!("counter: {} kHz ({source})", hz / 1000),
        None => println!("counter: frequency unknown, throughput in ticks"),
    }
}

/// Initialises every virtio block device, in command-line order.
fn discover() -> Result<&'static [VirtioDisk], DemoError> {
    let mut disks = Vec::new();
    // SAFETY: the architecture module's window is the machine's virtio-mmio
    // transport area, identity-mapped; `discover` runs once, so each
    // transport is owned by exactly one `VirtioDisk`.
    for transport in unsafe { crate::virtio::block_devices(&arch::VIRTIO_MMIO) } {
        let slot = transport.slot;
        let disk = VirtioDisk::new(transport).map_err(|error| DemoError::Device { slot, error })?;
        let (slot, address) = disk.location();
        println!(
            "disk {}: virtio-mmio slot {slot} at {address:#x}, {} bytes, serial \"{}\"{}",
            disks.len(),
            disk.size().unwrap_or(0),
            disk.serial(),
            if disk.read_only() { ", read-only" } else { "" }
        );
        disks.push(disk);
    }
    if disks.is_empty() {
        return Err(DemoError::NoDisk);
    }
    // The disks serve the images until the machine stops.
    Ok(disks.leak())
}

/// Opens the qcow2 image on disk `index`, and its backing chain.
fn open_qcow2(disks: &'static [VirtioDisk], index: usize) -> Result<Qcow2, DemoError> {
    let image_error = |error| DemoError::Image { disk: index, error };
    let builder = Image::builder(&disks[index]).map_err(image_error)?;
    let header = builder.header().clone();
    print_header(index, &header, &disks[index]);

    let backing = match header.backing_file() {
        None => Layer::Empty,
        Some(name) => open_backing(disks, index, name, header.backing_format())?,
    };
    let config = Config::default();
    let builder = builder.backing(backing);
    let needed = builder.memory_bytes(&config).map_err(image_error)?;
    // Allocated once per image and kept: the image borrows it for good.
    let memory = alloc::vec![0u8; needed].leak();
    builder.open(memory, &config).map_err(image_error)
}

/// Finds and opens the backing file `name` of the image on disk `index`.
fn open_backing(
    disks: &'static [VirtioDisk],
    index: usize,
    name: &FileName,
    format: Option<&FormatName>,
) -> Result<Layer, DemoError> {
    let serial = serial_for(name);
    let backing = (index + 1..disks.len())
        .find(|&candidate| disks[candidate].serial().as_bytes() == serial)
        .ok_or_else(|| DemoError::BackingNotFound {
            disk: index,
            name: Box::new(*name),
        })?;
    let qcow2 = match format.map(FormatName::as_bytes) {
        Some(b"qcow2") => true,
        Some(b"raw") => false,
        Some(_) => {
            return Err(DemoError::BackingFormat {
                disk: index,
                format: *format.expect("matched Some"),
            })
        }
        // No format recorded: probe, as QEMU does.
        None => {
            let mut magic = [0u8; 4];
            disks[backing].read_at(0, &mut magic).is_ok() && magic == *b"QFI\xfb"
        }
    };
    println!(
        "disk {index}: backing file \"{name}\" ({}) is disk {backing}",
        if qcow2 { "qcow2" } else { "raw" }
    );
    if qcow2 {
        Ok(Layer::Qcow2(Box::new(open_qcow2(disks, backing)?)))
    } else {
        Ok(Layer::Raw(Raw(&disks[backing])))
    }
}

/// The serial the runner gives a file: its base name, cut to 20 bytes.
fn serial_for(name: &FileName) -> &[u8] {
    let bytes = name.as_bytes();
    let base = match bytes.iter().rposition(|&byte| byte == b'/') {
        Some(slash) => &bytes[slash + 1..],
        None => bytes,
    };
    &base[..base.len().min(20)]
}

fn print_header(disk: usize, header: &Header, storage: &VirtioDisk) {
    println!("disk {disk}: qcow2 image");
    println!("  version: {}", header.version());
    println!(
        "  virtual size: {} bytes ({})",
        header.virtual_size(),
        Size(header.virtual_size())
    );
    println!("  cluster size: {} bytes", header.cluster_size());
    println!("  compression type: {}", header.compression_type().name());
    let words = [
        (
            FeatureKind::Incompatible,
            "incompatible",
            header.incompatible_features().bits(),
        ),
        (
            FeatureKind::Compatible,
            "compatible",
            header.compatible_features().bits(),
        ),
        (
            FeatureKind::Autoclear,
            "autoclear",
            header.autoclear_features().bits(),
        ),
    ];
    for (kind, label, bits) in words {
        crate::print!("  {label} features:");
        if bits == 0 {
            crate::print!(" none");
        }
        for bit in (0..64u8).filter(|&bit| bits & (1 << bit) != 0) {
            // QEMU's names for the bits it knows; the image's own feature
            // name table for the others.
            match known_feature_name(kind, bit) {
                Some(name) => crate::print!(" [{name}]"),
                None => match header.feature_name(storage, kind, bit) {
                    Some(name) => crate::print!(" [{}]", name.as_str()),
                    None => crate::print!(" [bit {bit}]"),
                },
            }
        }
        println!();
    }
    match header.backing_file() {
        Some(name) => {
            println!("  backing file: {name}");
            match header.backing_format() {
                Some(format) => println!("  backing format: {format}"),
                None => println!("  backing format: not recorded (probed)"),
            }
        }
        None => println!("  backing file: none"),
    }
}

/// Reads the virtual disk in [`CHUNK`]s and hashes it; returns the
/// digest and the ticks spent reading and hashing.
fn hash_image(image: &Qcow2, buffer: &mut [u8]) -> Result<([u8; 32], u64, u64), ImageError> {
    let size = image.virtual_size();
    let mut hasher = Sha256::new();
    let (mut read_ticks, mut hash_ticks) = (0u64, 0u64);
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(buffer.len() as u64) as usize;
        let chunk = &mut buffer[..len];
        let start = arch::counter();
        image.read_at(offset, chunk)?;
        let read = arch::counter();
        hasher.update(&*chunk);
        read_ticks += read.wrapping_sub(start);
        hash_ticks += arch::counter().wrapping_sub(read);
        offset += len as u64;
    }
    Ok((hasher.finalize().into(), read_ticks, hash_ticks))
}

/// Time and device requests of one timed pass.
#[derive(Clone, Copy)]
struct Pass {
    ticks: u64,
    requests: u64,
}

impl Pass {
    /// The faster of two passes.
    fn best(self, other: Pass) -> Pass {
        if other.ticks < self.ticks {
            other
        } else {
            self
        }
    }
}

/// Reads the whole virtual disk in [`CHUNK`]s, back to back, nothing else
/// in the loop.
fn time_image(image: &Qcow2, disk: &VirtioDisk, buffer: &mut [u8]) -> Result<Pass, ImageError> {
    let size = image.virtual_size();
    let requests = disk.requests();
    let start = arch::counter();
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(buffer.len() as u64) as usize;
        image.read_at(offset, &mut buffer[..len])?;
        offset += len as u64;
    }
    let ticks = arch::counter().wrapping_sub(start);
    Ok(Pass {
        ticks,
        requests: disk.requests() - requests,
    })
}

/// Reads `total` bytes of raw sectors from `disk` in [`CHUNK`]s, the same
/// loop as [`time_image`]: from the start, wrapping at the device's end
/// (the image file is often smaller than its virtual disk).
fn time_raw(disk: &VirtioDisk, total: u64, buffer: &mut [u8]) -> Result<Pass, DiskError> {
    let device_size = disk.size()?;
    let requests = disk.requests();
    let start = arch::counter();
    let (mut done, mut offset) = (0u64, 0u64);
    while done < total && device_size > 0 {
        if offset == device_size {
            offset = 0;
        }
        let len = (total - done)
            .min(device_size - offset)
            .min(buffer.len() as u64) as usize;
        disk.read_at(offset, &mut buffer[..len])?;
        done += len as u64;
        offset += len as u64;
    }
    let ticks = arch::counter().wrapping_sub(start);
    Ok(Pass {
        ticks,
        requests: disk.requests() - requests,
    })
}

/// Lowercase hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// Bytes as text, with invalid UTF-8 replaced.
struct Utf8Lossy<'a>(&'a [u8]);

impl fmt::Display for Utf8Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}

/// A byte count in binary units.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut unit = 0;
        let mut value = self.0;
        while value >= 1024 && value.is_multiple_of(1024) && unit + 1 < UNITS.len() {
            value /= 1024;
            unit += 1;
        }
        write!(f, "{value} {}", UNITS[unit])
    }
}

/// Counter ticks as milliseconds, or raw ticks without a frequency.
struct Duration {
    ticks: u64,
    hz: Option<u64>,
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hz {
            Some(hz) => {
                let micros = u128::from(self.ticks) * 1_000_000 / u128::from(hz);
                write!(f, "{}.{:03} ms", micros / 1000, micros % 1000)
            }
            None => write!(f, "{} ticks", self.ticks),
        }
    }
}

/// Bytes over ticks as MB/s (10^6 bytes per second), with the duration.
struct Rate {
    bytes: u64,
    ticks: u64,
    hz: Option<u64>,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration = Duration {
            ticks: self.ticks,
            hz: self.hz,
        };
        match self.hz {
            Some(hz) if self.ticks > 0 => {
                let rate =
                    u128::from(self.bytes) * u128::from(hz) / u128::from(self.ticks) / 1_000_000;
                write!(f, "{rate} MB/s in {duration}")
            }
            _ => write!(f, "{} bytes in {duration}", self.bytes),
        }
    }
}
