//! The timed passes: reading the whole virtual disk through the crate and
//! reading as many raw sectors, interleaved, at one queue depth.

use super::queued::{image_queued, raw_queued};
use super::stats::{Pass, Ratios, MAX_PASSES};
use super::{read_all, PassError};
use crate::arch;
use crate::backing::{ImageError, Qcow2};
use crate::disk::{DiskError, VirtioDisk};
use qcow2_reader::BlockRead;

/// Runs `read` as one pass, counting ticks and the requests `disk` serves.
fn timed<E>(disk: &VirtioDisk, read: impl FnOnce() -> Result<(), E>) -> Result<Pass, E> {
    let requests = disk.requests();
    let start = arch::counter();
    read()?;
    Ok(Pass {
        ticks: arch::counter().wrapping_sub(start),
        requests: disk.requests() - requests,
    })
}

/// Reads the whole virtual disk through the crate `rounds` times, nothing
/// else in the loop; `disk` is the one holding the image.
pub fn time_image(
    image: &Qcow2,
    disk: &VirtioDisk,
    rounds: u64,
    buffer: &mut [u8],
) -> Result<Pass, ImageError> {
    timed(disk, || {
        let size = image.size()?;
        (0..rounds).try_for_each(|_| read_all(image, size, buffer, |_| {}))
    })
}

/// Reads `total` bytes of raw sectors from `disk` with the same loop as
/// [`time_image`]: from the start, wrapping at the device's end (the image
/// file is often smaller than its virtual disk).
fn time_raw(disk: &VirtioDisk, total: u64, buffer: &mut [u8]) -> Result<Pass, DiskError> {
    let wrapped = Wrapping {
        disk,
        size: disk.size()?,
    };
    timed(disk, || read_all(&wrapped, total, buffer, |_| {}))
}

/// A disk read as if repeated forever: offset `o` is the device's byte
/// `o % size`. A read across the device's end becomes two requests.
struct Wrapping<'a> {
    disk: &'a VirtioDisk,
    size: u64,
}

impl BlockRead for Wrapping<'_> {
    type Error = DiskError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        if self.size == 0 {
            return Ok(());
        }
        let mut done = 0;
        while done < buf.len() {
            let device_offset = (offset + done as u64) % self.size;
            let len = (buf.len() - done).min((self.size - device_offset) as usize);
            self.disk
                .read_at(device_offset, &mut buf[done..done + len])?;
            done += len;
        }
        Ok(())
    }

    fn size(&self) -> Result<u64, DiskError> {
        Ok(u64::MAX)
    }
}

/// Bytes a timed pass reads at least: about 20 ms at TCG's usual rate, so
/// that a pass is not one host scheduling slice.
pub const MIN_PASS_BYTES: u64 = 256 << 20;

/// Whole reads of the virtual disk that make up one pass.
pub fn rounds_per_pass(size: u64) -> u64 {
    MIN_PASS_BYTES.div_ceil(size.max(1)).max(1)
}

/// The timed passes at one queue depth.
#[derive(Clone, Copy)]
pub struct Comparison {
    /// Requests in flight per long read.
    pub depth: usize,
    /// The fastest pass through the crate.
    pub qcow2: Pass,
    /// The fastest pass of raw sectors.
    pub raw: Pass,
    /// raw time / qcow2 time of each pair of neighbouring passes.
    pub ratios: Ratios,
}

/// `passes` (at most [`MAX_PASSES`]) pairs of a raw pass and a qcow2 pass
/// of `rounds` whole virtual disks each, their rounds interleaved, `depth`
/// chunks of `chunk` bytes in flight; above depth 1 the qcow2 pass reads
/// `buffer` (whole chunks, at least `depth` of them) one window at a
/// time, the raw pass `depth` chunks at a time.
pub fn compare(
    image: &Qcow2,
    disk: &VirtioDisk,
    rounds: u64,
    depth: usize,
    passes: usize,
    chunk: usize,
    buffer: &mut [u8],
) -> Result<Comparison, PassError> {
    let passes = passes.clamp(1, MAX_PASSES);
    let size = image.size().map_err(PassError::Image)?;
    let mut ratios = [0; MAX_PASSES];
    let whole_chunks = buffer.len() / chunk * chunk;
    let window = &mut buffer[..whole_chunks];
    // One whole virtual disk's worth of each read.
    let raw_round = |window: &mut [u8]| -> Result<Pass, PassError> {
        if depth <= 1 {
            time_raw(disk, size, &mut window[..chunk]).map_err(PassError::Disk)
        } else {
            // `depth` chunks, all in flight at once: raw's fastest
            // (measured: 16-chunk windows made raw 5-15% slower, the
            // host caching less of the destination).
            let window = &mut window[..chunk * depth];
            timed(disk, || raw_queued(disk, size, chunk, depth, window))
        }
    };
    let qcow2_round = |window: &mut [u8]| -> Result<Pass, PassError> {
        if depth <= 1 {
            time_image(image, disk, 1, &mut window[..chunk]).map_err(PassError::Image)
        } else {
            timed(disk, || {
                image_queued(image, disk, chunk, depth, window, |_, _| Ok(()))
            })
        }
    };
    let mut best: Option<(Pass, Pass)> = None;
    let mut run = || -> Result<(), PassError> {
        for (index, ratio) in ratios[..passes].iter_mut().enumerate() {
            // A pass alternates the two reads round by round, which one
            // goes first alternating too, so that a slow spell of the
            // host lands on both rather than on one whole pass.
            let mut raw = Pass::default();
            let mut qcow2 = Pass::default();
            for round in 0..rounds {
                if (index as u64 + round).is_multiple_of(2) {
                    raw = raw.plus(raw_round(window)?);
                    qcow2 = qcow2.plus(qcow2_round(window)?);
                } else {
                    qcow2 = qcow2.plus(qcow2_round(window)?);
                    raw = raw.plus(raw_round(window)?);
                }
            }
            *ratio = Ratios::hundredths(raw, qcow2);
            best = Some(match best {
                Some((best_raw, best_qcow2)) => (best_raw.best(raw), best_qcow2.best(qcow2)),
                None => (raw, qcow2),
            });
        }
        Ok(())
    };
    run()?;
    let (raw, qcow2) = best.expect("at least one pass ran");
    Ok(Comparison {
        depth,
        qcow2,
        raw,
        ratios: Ratios::sorted(&ratios[..passes]),
    })
}
