//! Reading a whole store in chunks: the hash of the virtual disk, and the
//! timed passes that compare reading through the crate with reading raw
//! sectors. All three go through one loop, [`read_all`].
//!
//! [`compare`] runs the timed passes at one queue depth: at depth 1 each
//! chunk is one `read_at` (of the crate, or of raw sectors); above it, the
//! loop reads `depth` chunks at a time with that many device requests in
//! flight ([`VirtioDisk::read_queued`]), the qcow2 pass reading ahead along
//! the extents the crate reports ([`Qcow2::extent`]: data runs straight
//! from the disk, everything else through `read_at`). Raw and qcow2
//! alternate, each pass at least [`MIN_PASS_BYTES`] (the virtual disk
//! read as many times as that takes) so that a pass lasts long enough for
//! host noise to average out, and the spread of the per-pass ratios says
//! how much noise was left.

use crate::arch;
use crate::backing::{ImageError, Qcow2};
use crate::disk::MAX_REQUEST;
use crate::disk::{DiskError, VirtioDisk};
use core::fmt;
use qcow2_reader::BlockRead;
use qcow2_reader::Mapping;
use sha2::{Digest, Sha256};

/// Reads `0..size` of `source` in `buffer`-sized chunks, in order, and
/// hands each chunk to `each`.
fn read_all<S: BlockRead + ?Sized>(
    source: &S,
    size: u64,
    buffer: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> Result<(), S::Error> {
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(buffer.len() as u64) as usize;
        let chunk = &mut buffer[..len];
        source.read_at(offset, chunk)?;
        each(chunk);
        offset += len as u64;
    }
    Ok(())
}

/// The SHA-256 of a virtual disk, and the counter ticks spent reading and
/// hashing it.
pub struct Hashed {
    /// The digest.
    pub digest: [u8; 32],
    /// Ticks spent in reads.
    pub read_ticks: u64,
    /// Ticks spent hashing.
    pub hash_ticks: u64,
}

/// Reads the virtual disk of `image` and hashes it.
pub fn hash_image(image: &Qcow2, buffer: &mut [u8]) -> Result<Hashed, ImageError> {
    let mut hasher = Sha256::new();
    let mut hash_ticks = 0u64;
    let start = arch::counter();
    read_all(image, image.virtual_size(), buffer, |chunk| {
        let before = arch::counter();
        hasher.update(chunk);
        hash_ticks += arch::counter().wrapping_sub(before);
    })?;
    let total = arch::counter().wrapping_sub(start);
    Ok(Hashed {
        digest: hasher.finalize().into(),
        read_ticks: total.saturating_sub(hash_ticks),
        hash_ticks,
    })
}

/// Time and device requests of one timed pass.
#[derive(Clone, Copy)]
pub struct Pass {
    /// Counter ticks of the whole pass.
    pub ticks: u64,
    /// Requests the disk served during it.
    pub requests: u64,
}

impl Pass {
    /// The faster of two passes.
    pub fn best(self, other: Pass) -> Pass {
        if other.ticks < self.ticks {
            other
        } else {
            self
        }
    }
}

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
        (0..rounds).try_for_each(|_| read_all(image, image.virtual_size(), buffer, |_| {}))
    })
}

/// Bytes a timed pass reads at least: about 20 ms at TCG's usual rate, so
/// that a pass is not one host scheduling slice.
pub const MIN_PASS_BYTES: u64 = 256 << 20;

/// Most timed passes of each kind [`compare`] keeps.
pub const MAX_PASSES: usize = 16;

/// Whole reads of the virtual disk that make up one pass.
pub fn rounds_per_pass(size: u64) -> u64 {
    MIN_PASS_BYTES.div_ceil(size.max(1)).max(1)
}

/// Per-pass qcow2/raw throughput ratios in hundredths, sorted.
#[derive(Clone, Copy)]
pub struct Ratios {
    hundredths: [u64; MAX_PASSES],
    len: usize,
}

impl Ratios {
    fn sorted(&self) -> &[u64] {
        &self.hundredths[..self.len]
    }

    /// The median ratio (the lower middle of an even count).
    pub fn median(&self) -> u64 {
        self.sorted()
            .get(self.len.saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0)
    }

    /// The lowest ratio.
    pub fn min(&self) -> u64 {
        self.sorted().first().copied().unwrap_or(0)
    }

    /// The highest ratio.
    pub fn max(&self) -> u64 {
        self.sorted().last().copied().unwrap_or(0)
    }
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

/// A timed pass that failed.
#[derive(Debug)]
pub enum PassError {
    /// Through the crate.
    Image(ImageError),
    /// Of raw sectors.
    Disk(DiskError),
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(error) => error.fmt(f),
            Self::Disk(error) => error.fmt(f),
        }
    }
}

/// `passes` (at most [`MAX_PASSES`]) pairs of a raw pass and a qcow2 pass
/// of `rounds` whole virtual disks each, `depth` chunks of `chunk` bytes
/// in flight; `buffer` holds at least `depth` chunks.
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
    let bytes = image.virtual_size().saturating_mul(rounds);
    let mut ratios = Ratios {
        hundredths: [0; MAX_PASSES],
        len: passes,
    };
    let mut best: Option<(Pass, Pass)> = None;
    let mut run = || -> Result<(), PassError> {
        for ratio in &mut ratios.hundredths[..passes] {
            let (raw, qcow2) = if depth <= 1 {
                let buffer = &mut buffer[..chunk];
                let raw = time_raw(disk, bytes, buffer).map_err(PassError::Disk)?;
                (
                    raw,
                    time_image(image, disk, rounds, buffer).map_err(PassError::Image)?,
                )
            } else {
                let window = &mut buffer[..chunk * depth];
                let raw = timed(disk, || raw_queued(disk, bytes, chunk, depth, window))?;
                let qcow2 = timed(disk, || {
                    (0..rounds).try_for_each(|_| image_queued(image, disk, chunk, depth, window))
                })?;
                (raw, qcow2)
            };
            // qcow2 speed / raw speed = raw time / qcow2 time.
            *ratio = (u128::from(raw.ticks) * 100 / u128::from(qcow2.ticks.max(1))) as u64;
            best = Some(match best {
                Some((best_raw, best_qcow2)) => (best_raw.best(raw), best_qcow2.best(qcow2)),
                None => (raw, qcow2),
            });
        }
        Ok(())
    };
    run()?;
    ratios.hundredths[..passes].sort_unstable();
    let (raw, qcow2) = best.expect("at least one pass ran");
    Ok(Comparison {
        depth,
        qcow2,
        raw,
        ratios,
    })
}

/// Reads `total` bytes of raw sectors from `disk` with the same loop as
/// [`time_image`]: from the start, wrapping at the device's end (the image
/// file is often smaller than its virtual disk).
pub fn time_raw(disk: &VirtioDisk, total: u64, buffer: &mut [u8]) -> Result<Pass, DiskError> {
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

/// Reads `total` bytes of raw sectors from the start of `disk`, wrapping at
/// its end, `depth` chunks at a time with that many requests in flight.
fn raw_queued(
    disk: &VirtioDisk,
    total: u64,
    chunk: usize,
    depth: usize,
    window: &mut [u8],
) -> Result<(), PassError> {
    let size = disk.size().map_err(PassError::Disk)?;
    // Whole sectors, as the device reads them.
    let total = total.next_multiple_of(512);
    let mut offset = 0u64;
    while offset < total && size > 0 {
        let len = (total - offset).min(window.len() as u64) as usize;
        let start = offset;
        let pieces = window[..len].chunks_mut(chunk).scan(start, |next, piece| {
            let at = *next;
            *next += piece.len() as u64;
            Some((at, piece))
        });
        // A piece that crosses the device's end is cut there.
        let wrapped = pieces.flat_map(|(at, piece)| {
            let device_offset = at % size;
            let first = piece.len().min((size - device_offset) as usize);
            let (head, tail) = piece.split_at_mut(first);
            [(device_offset, head), (0, tail)]
                .into_iter()
                .filter(|(_, part)| !part.is_empty())
        });
        disk.read_queued(wrapped, depth).map_err(PassError::Disk)?;
        offset += len as u64;
    }
    Ok(())
}

/// The most pieces of one window of [`image_queued`]: a chunk's data runs,
/// `depth` chunks; a window with more is read through `read_at` instead.
const MAX_WINDOW_RUNS: usize = 64;

/// A run of one window of [`image_queued`]: `len` bytes at `window_offset`
/// of the window, read from the disk at `host_offset`, or through the
/// crate when `None`.
#[derive(Clone, Copy, Default)]
struct Run {
    window_offset: usize,
    len: usize,
    host_offset: Option<u64>,
}

/// Reads the whole virtual disk of `image` (stored on `disk`), `depth`
/// chunks at a time: the extents the crate reports for those chunks decide
/// what is read ahead. Data runs (uncompressed, in the image file, whole
/// sectors) go to the disk as up to `depth` queued requests, one per chunk
/// and run, as `read_at` would send them; the rest (zeros, compressed,
/// backing, unaligned) is read through [`Qcow2::read_at`] once they are in.
fn image_queued(
    image: &Qcow2,
    disk: &VirtioDisk,
    chunk: usize,
    depth: usize,
    window: &mut [u8],
) -> Result<(), PassError> {
    let size = image.virtual_size();
    // Runs in an external data file are not on this disk; runs past its
    // end read as zeros through the crate.
    let direct = (!image.header().has_data_file()).then_some(disk.size().map_err(PassError::Disk)?);
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(window.len() as u64) as usize;
        let mut runs = [Run::default(); MAX_WINDOW_RUNS];
        let count = plan_window(image, offset, len, chunk, direct, &mut runs)?;
        let runs = &runs[..count];
        // The disk reads first, all in flight together, then the crate.
        let mut rest: &mut [u8] = &mut window[..len];
        let mut rest_start = 0;
        let pieces = runs.iter().filter_map(|run| {
            let host_offset = run.host_offset?;
            let (_, tail) = core::mem::take(&mut rest).split_at_mut(run.window_offset - rest_start);
            let (piece, tail) = tail.split_at_mut(run.len);
            rest = tail;
            rest_start = run.window_offset + run.len;
            Some((host_offset, piece))
        });
        disk.read_queued(pieces, depth).map_err(PassError::Disk)?;
        for run in runs.iter().filter(|run| run.host_offset.is_none()) {
            let buf = &mut window[run.window_offset..run.window_offset + run.len];
            image
                .read_at(offset + run.window_offset as u64, buf)
                .map_err(PassError::Image)?;
        }
        offset += len as u64;
    }
    Ok(())
}

/// Fills `runs` with the runs of `len` bytes of the virtual disk at
/// `offset`, cut at chunk boundaries; returns how many. Data runs get a
/// host offset when `direct` holds the size of the disk they are on. When
/// the runs do not fit, the whole window is one run through the crate.
fn plan_window(
    image: &Qcow2,
    offset: u64,
    len: usize,
    chunk: usize,
    direct: Option<u64>,
    runs: &mut [Run; MAX_WINDOW_RUNS],
) -> Result<usize, PassError> {
    let mut count = 0;
    let mut done = 0;
    while done < len {
        let chunk_left = chunk - done % chunk;
        let extent = image
            .extent(offset + done as u64, chunk_left as u64)
            .map_err(PassError::Image)?;
        let run_len = (extent.len as usize).min(chunk_left);
        let host_offset = match extent.kind {
            Mapping::Data { host_offset }
                if direct.is_some_and(|disk_size| {
                    host_offset.is_multiple_of(512)
                        && run_len.is_multiple_of(512)
                        && run_len <= MAX_REQUEST
                        && host_offset.saturating_add(run_len as u64) <= disk_size
                }) =>
            {
                Some(host_offset)
            }
            _ => None,
        };
        let Some(run) = runs.get_mut(count) else {
            runs[0] = Run {
                window_offset: 0,
                len,
                host_offset: None,
            };
            return Ok(1);
        };
        *run = Run {
            window_offset: done,
            len: run_len,
            host_offset,
        };
        count += 1;
        done += run_len;
    }
    Ok(count)
}
