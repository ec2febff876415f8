//! The demo: open the image on the first disk (with its backing chain on
//! the others), print its header, hash the whole virtual disk, and compare
//! the read's throughput with reading raw sectors from the same device.
//!
//! With `--file` requests (see [`crate::files`]) it reads and hashes those
//! files instead of the whole disk. Encrypted images are unlocked with the
//! passphrase of the control disk ([`crate::control`]). The throughput
//! comparison is skipped for them (software AES under TCG) and for any
//! image whose timed passes would last longer than
//! [`COMPARISON_BUDGET_SECONDS`] (compressed images: decoding under TCG).
//!
//! Each job has its own module: [`crate::disks`] finds the devices,
//! [`crate::control`] reads what the runner asks for,
//! [`crate::backing`] opens an image with its backing chain,
//! [`crate::measure`] reads, hashes and times, [`crate::report`] prints.

use crate::backing::{self, ChainError, Disks, ImageError};
use crate::control::ControlError;
use crate::disk::DiskError;
use crate::measure::{compare, hash_image, rounds_per_pass, verify_queued, PassError};
use crate::report::{self, Measurements};
use crate::{arch, control, disks, files, println};
use alloc::boxed::Box;
use core::fmt;
use qcow2_reader::BlockRead;

/// Bytes per read of the virtual disk (and of the raw comparison).
const CHUNK: usize = 1024 * 1024;

/// Timed passes of each kind at each queue depth; the median ratio counts.
const PASSES: usize = 9;

/// The longest the timed qcow2 passes may take, estimated from the hashing
/// pass's read time, for the comparison to run (run.sh stops QEMU after
/// 120 s; a compressed 64 MiB disk reads at a few MB/s under TCG).
const COMPARISON_BUDGET_SECONDS: u64 = 30;

/// The seconds that the timed qcow2 passes would take (both depths, the
/// check of the queued read included), from the hashing pass's read time of
/// one whole disk, `None` without a counter frequency.
fn comparison_seconds(read_ticks: u64, rounds: u64) -> Option<u64> {
    let (hz, _) = arch::counter_frequency()?;
    let disk_reads = rounds.saturating_mul(2 * PASSES as u64).saturating_add(1);
    Some(read_ticks.saturating_mul(disk_reads) / hz.max(1))
}

/// Requests in flight per long read for the queued passes: the most the
/// driver's queue holds, [`crate::disk::MAX_QUEUE_DEPTH`].
const QUEUE_DEPTH: usize = crate::disk::MAX_QUEUE_DEPTH;

/// Chunks of one window of the queued qcow2 passes: each window is
/// planned from the crate's extents and read with up to [`QUEUE_DEPTH`]
/// requests in flight. More than the depth, so that zero runs have device
/// reads to overlap with. (The raw passes read [`QUEUE_DEPTH`] chunks at a
/// time, their fastest.)
const WINDOW_CHUNKS: usize = 8;

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
    /// The chain walk refused the image or a file it names (boxed: the
    /// walk's error is large and rare).
    Chain(Box<ChainError>),
    /// Disk 0 holds no qcow2 image.
    NotQcow2,
    /// Some requested files could not be read (each has its own `error:` line).
    Files {
        /// Files that failed.
        failed: usize,
        /// Files requested.
        requested: usize,
    },
    /// The control disk was refused.
    Control {
        /// Disk number of the control disk.
        disk: usize,
        /// What is wrong with it.
        error: ControlError,
    },
    /// The queued read (the timed passes' read-ahead) read other bytes
    /// than the crate's `read_at` in a chunk of the virtual disk.
    QueuedMismatch {
        /// Virtual disk offset of the chunk.
        offset: u64,
        /// Its length.
        len: usize,
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
            Self::Chain(error) => error.describe(&Disks(&[])).fmt(f),
            Self::NotQcow2 => f.write_str("disk 0: not a qcow2 image"),
            Self::Files { failed, requested } => {
                write!(f, "{failed} of {requested} requested files could not be read")
            }
            Self::Control { disk, error } => write!(f, "disk {disk} (control disk): {error}"),
            Self::QueuedMismatch { offset, len } => write!(
                f,
                "disk 0: the queued read of {len} bytes at virtual offset {offset:#x} differs from read_at's"
            ),
        }
    }
}

/// Runs the demo; the caller prints the error and sets the exit status.
pub fn run(
    info: &crate::boot_info::BootInfo,
    probe: &mut crate::stack::Probe,
) -> Result<(), DemoError> {
    println!(
        "qcow2-firmware {} on {}",
        env!("CARGO_PKG_VERSION"),
        arch::NAME
    );
    report::print_boot(info);

    let disks = disks::discover()?;
    let control::Requests { files, passphrase } = control::read(disks)?;
    probe.mark("devices");
    let image = backing::open_qcow2(disks, passphrase.as_ref().map(|p| p.as_bytes()));
    probe.mark("opening the chain");
    let image = image?;
    // The keys are in the images now: the passphrase is zeroized here.
    drop(passphrase);
    if !files.is_empty() {
        // Files were asked for: read those instead of the whole-disk passes.
        // The file systems keep the image for good, as the disks are kept.
        let image: &'static backing::Qcow2 = Box::leak(Box::new(image));
        files::hash_files(image, &files)?;
        let (heap_used, heap_size) = crate::heap::usage();
        println!(
            "memory: heap {} KiB of {} KiB in use",
            heap_used / 1024,
            heap_size / 1024
        );
        return Ok(());
    }
    let size = image
        .size()
        .map_err(|error| DemoError::Image { disk: 0, error })?;
    let mut buffer = alloc::vec![0u8; CHUNK];

    let image_error = |error| DemoError::Image { disk: 0, error };
    let hashed = hash_image(&image, &mut buffer).map_err(image_error)?;
    report::print_digest(&hashed);
    if backing::any_layer_encrypted(&image) {
        let why = format_args!("encrypted image (software AES)");
        report::print_read_without_comparison(size, &hashed, "read and decrypt", why);
        return Ok(());
    }
    let rounds = rounds_per_pass(size);
    if let Some(seconds) = comparison_seconds(hashed.read_ticks, rounds) {
        if seconds > COMPARISON_BUDGET_SECONDS {
            let why = format_args!(
                "its qcow2 passes alone would take about {seconds} s \
                 (more than {COMPARISON_BUDGET_SECONDS} s; compressed clusters decode slowly under TCG)"
            );
            report::print_read_without_comparison(size, &hashed, "read", why);
            return Ok(());
        }
    }

    // The comparison: whole-disk passes with nothing but reads in the loop
    // (hashing between reads slows the next request down, host-side),
    // alternating raw and qcow2, one request in flight and then QUEUE_DEPTH.
    let pass_error = |error| match error {
        PassError::Image(error) => DemoError::Image { disk: 0, error },
        PassError::Disk(error) => DemoError::Disk { disk: 0, error },
        PassError::Mismatch { offset, len } => DemoError::QueuedMismatch { offset, len },
    };
    let disk = &disks[0];
    // The queued qcow2 passes' window (the raw passes use its start).
    buffer.resize(CHUNK * WINDOW_CHUNKS, 0);
    // The queued passes read differently from `read_at`: check they read
    // the same bytes before timing them.
    let mut scratch = alloc::vec![0u8; CHUNK];
    let start = arch::counter();
    verify_queued(&image, disk, CHUNK, QUEUE_DEPTH, &mut buffer, &mut scratch)
        .map_err(pass_error)?;
    drop(scratch);
    let verify_ticks = arch::counter().wrapping_sub(start);
    let depth1 =
        compare(&image, disk, rounds, 1, PASSES, CHUNK, &mut buffer).map_err(pass_error)?;
    let queued = compare(
        &image,
        disk,
        rounds,
        QUEUE_DEPTH,
        PASSES,
        CHUNK,
        &mut buffer,
    )
    .map_err(pass_error)?;
    report::print_measurements(&Measurements {
        size,
        chunk: CHUNK,
        passes: PASSES,
        pass_bytes: size.saturating_mul(rounds),
        hashed,
        depth1,
        queued,
        window_chunks: WINDOW_CHUNKS,
        verify_ticks,
    });
    Ok(())
}
