//! Reading a whole store in chunks: the hash of the virtual disk, and the
//! timed passes that compare reading through the crate with reading raw
//! sectors.
//!
//! [`compare`] runs the timed passes at one queue depth: at depth 1 each
//! chunk is one `read_at` (of the crate, or of raw sectors, through one
//! loop, [`read_all`]); above it, both read a window of chunks at a time
//! with up to `depth` device requests in flight
//! ([`VirtioDisk::read_queued`]), the qcow2 pass reading ahead along the
//! extents the crate reports ([`Qcow2::extent`]): data runs straight from
//! the disk, zero runs filled by the CPU while the disk reads, everything
//! else through `read_at` afterwards ([`verify_queued`] checks that this
//! reads what `read_at` reads). A pass is at least [`MIN_PASS_BYTES`]
//! (the virtual disk read as many times as that takes), raw and qcow2
//! rounds interleaved so that host noise lands on both; the median of the
//! per-pass ratios is the result and their spread says how much noise was
//! left.

use crate::arch;
use crate::backing::{ImageError, Qcow2};
use crate::disk::MAX_REQUEST;
use crate::disk::{DiskError, VirtioDisk};
use core::fmt;
use qcow2_reader::chain::{Piece, Source};
use qcow2_reader::{BlockRead, Storage};
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
    read_all(image, image.size()?, buffer, |chunk| {
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
#[derive(Clone, Copy, Default)]
pub struct Pass {
    /// Counter ticks of the whole pass.
    pub ticks: u64,
    /// Requests the disk served during it.
    pub requests: u64,
}

impl Pass {
    /// Two parts of a pass together.
    fn plus(self, other: Pass) -> Pass {
        Pass {
            ticks: self.ticks + other.ticks,
            requests: self.requests + other.requests,
        }
    }

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
        let size = image.size()?;
        (0..rounds).try_for_each(|_| read_all(image, size, buffer, |_| {}))
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
    /// The queued read gave other bytes than `read_at` in this chunk.
    Mismatch {
        /// Virtual disk offset of the chunk.
        offset: u64,
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(error) => error.fmt(f),
            Self::Disk(error) => error.fmt(f),
            Self::Mismatch { offset, len } => write!(
                f,
                "the queued read of {len} bytes at virtual offset {offset:#x} differs from read_at's"
            ),
        }
    }
}

/// Whether `a` and `b` hold the same bytes, compared 8 at a time where
/// both are aligned alike: `==` on slices calls `compiler_builtins`'
/// byte-wise `memcmp`, which took 4-5 s for the 64 MiB demo disk under
/// aarch64 TCG.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid `u64`, so viewing the aligned
    // middle of a byte slice as `u64`s is sound; `align_to` does the
    // alignment arithmetic.
    let ((a_head, a_words, a_tail), (b_head, b_words, b_tail)) =
        unsafe { (a.align_to::<u64>(), b.align_to::<u64>()) };
    if a.len() != b.len() || a_head.len() != b_head.len() {
        return a == b;
    }
    // Word by word: `==` on the word slices would call `memcmp` again.
    a_head == b_head && a_words.iter().eq(b_words.iter()) && a_tail == b_tail
}

/// Reads the whole virtual disk once as the queued qcow2 pass does and
/// compares every `chunk` with what [`Qcow2::read_at`] reads into
/// `scratch` (one chunk long): the queued pass reads runs straight from
/// the disk and fills zeros itself, so this checks it reads the same
/// bytes as the crate (whose bytes the tests compare with QEMU's).
pub fn verify_queued(
    image: &Qcow2,
    disk: &VirtioDisk,
    chunk: usize,
    depth: usize,
    window: &mut [u8],
    scratch: &mut [u8],
) -> Result<(), PassError> {
    let whole_chunks = window.len() / chunk * chunk;
    image_queued(
        image,
        disk,
        chunk,
        depth,
        &mut window[..whole_chunks],
        |offset, read| {
            for (index, queued) in read.chunks(chunk).enumerate() {
                let at = offset + (index * chunk) as u64;
                let expected = &mut scratch[..queued.len()];
                image.read_at(at, expected).map_err(PassError::Image)?;
                if !same_bytes(expected, queued) {
                    return Err(PassError::Mismatch {
                        offset: at,
                        len: queued.len(),
                    });
                }
            }
            Ok(())
        },
    )
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
    let mut ratios = Ratios {
        hundredths: [0; MAX_PASSES],
        len: passes,
    };
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
        for (index, ratio) in ratios.hundredths[..passes].iter_mut().enumerate() {
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
/// its end, one `window` at a time in requests of `chunk` bytes with up to
/// `depth` in flight.
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
        let wrapped = pieces.flat_map(|(at, piece)| wrapped_parts(at, piece, size));
        disk.read_queued(wrapped, depth, || false)
            .map_err(PassError::Disk)?;
        offset += len as u64;
    }
    Ok(())
}

/// `piece`, read from byte `at` of a device of `size` bytes (`size > 0`)
/// repeated forever, as `(device offset, part)` pairs: cut wherever it
/// crosses the device's end, as often as it does (a device smaller than a
/// chunk is crossed more than once).
fn wrapped_parts(at: u64, piece: &mut [u8], size: u64) -> impl Iterator<Item = (u64, &mut [u8])> {
    let mut device_offset = at % size;
    let mut rest = piece;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = rest.len().min((size - device_offset) as usize);
        let (part, tail) = core::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        let part = (device_offset, part);
        device_offset = 0;
        Some(part)
    })
}

/// The most runs of one window of [`image_queued`]; a window with more is
/// read through `read_at` instead.
const MAX_WINDOW_RUNS: usize = 64;

/// Bytes of zeros [`ZeroFill::step`] writes at a time: short enough
/// (tens of microseconds under TCG) that a completed request does not
/// wait long for its slot to be refilled.
const ZERO_STEP: usize = 256 * 1024;

/// How a run of a window of [`image_queued`] is read.
#[derive(Clone, Copy, Default)]
enum RunRead {
    /// From the disk at this byte offset: the plan's plain stored bytes of
    /// the top image's file, whole sectors, inside the disk.
    Disk(u64),
    /// Zeros, written by the CPU while the disk reads: the plan's zero
    /// pieces (zero clusters, unallocated everywhere, past a backing's end).
    Zeros,
    /// Through [`qcow2_reader::chain::Disk::read_piece`], after the disk reads: compressed
    /// and encrypted pieces, other layers' and data files' bytes, anything
    /// unaligned.
    #[default]
    Crate,
}

/// A run of one window of [`image_queued`]: `len` bytes, the window's
/// runs following each other from its start.
#[derive(Clone, Copy, Default)]
struct Run {
    len: usize,
    read: RunRead,
}

/// Reads the whole virtual disk of `image` (stored on `disk`) one
/// `window` at a time: the extents the crate reports for the window
/// decide what is read ahead. Data runs go to the disk as queued requests
/// (one per chunk and run, as `read_at` would send them, up to `depth` in
/// flight); zero runs are filled by the CPU while those requests are in
/// flight; the rest is read through [`Qcow2::read_at`] once they are in.
///
/// Each window, once read, is handed to `each` with its virtual disk offset.
fn image_queued(
    image: &Qcow2,
    disk: &VirtioDisk,
    chunk: usize,
    depth: usize,
    window: &mut [u8],
    mut each: impl FnMut(u64, &[u8]) -> Result<(), PassError>,
) -> Result<(), PassError> {
    let size = image.size().map_err(PassError::Image)?;
    let plan = Plan {
        chunk,
        disk_size: disk.size().map_err(PassError::Disk)?,
    };
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(window.len() as u64) as usize;
        let mut runs = [Run::default(); MAX_WINDOW_RUNS];
        let count = plan.window(image, offset, len, &mut runs)?;
        let runs = &runs[..count];
        read_window(disk, depth, runs, &mut window[..len])?;
        // Last, with the disk idle: the runs that need the crate.
        let mut run_start = 0;
        for run in runs {
            if let RunRead::Crate = run.read {
                let buf = &mut window[run_start..run_start + run.len];
                image
                    .read_at(offset + run_start as u64, buf)
                    .map_err(PassError::Image)?;
            }
            run_start += run.len;
        }
        each(offset, &window[..len])?;
        offset += len as u64;
    }
    Ok(())
}

/// Reads the disk runs of `runs` into their places in `window` with up to
/// `depth` requests in flight, and fills the zero runs while they are.
fn read_window(
    disk: &VirtioDisk,
    depth: usize,
    runs: &[Run],
    window: &mut [u8],
) -> Result<(), PassError> {
    let mut reads: [(u64, &mut [u8]); MAX_WINDOW_RUNS] = core::array::from_fn(|_| (0, &mut [][..]));
    let mut zeros: [&mut [u8]; MAX_WINDOW_RUNS] = core::array::from_fn(|_| &mut [][..]);
    let (mut read_count, mut zero_count) = (0, 0);
    let mut rest = window;
    for run in runs {
        let (piece, tail) = core::mem::take(&mut rest).split_at_mut(run.len);
        rest = tail;
        match run.read {
            RunRead::Disk(host_offset) => {
                reads[read_count] = (host_offset, piece);
                read_count += 1;
            }
            RunRead::Zeros => {
                zeros[zero_count] = piece;
                zero_count += 1;
            }
            RunRead::Crate => {}
        }
    }
    let mut fill = ZeroFill {
        pieces: &mut zeros[..zero_count],
        next: 0,
    };
    let reads = reads[..read_count]
        .iter_mut()
        .map(|(host_offset, piece)| (*host_offset, core::mem::take(piece)));
    disk.read_queued(reads, depth, || fill.step())
        .map_err(PassError::Disk)?;
    // Zeros left when the reads finished first.
    while fill.step() {}
    Ok(())
}

/// Zero runs, filled [`ZERO_STEP`] bytes per step.
struct ZeroFill<'a, 'b> {
    pieces: &'a mut [&'b mut [u8]],
    next: usize,
}

impl ZeroFill<'_, '_> {
    /// Fills the next step; `false` when all is filled.
    fn step(&mut self) -> bool {
        while let Some(piece) = self.pieces.get_mut(self.next) {
            if piece.is_empty() {
                self.next += 1;
                continue;
            }
            let step = piece.len().min(ZERO_STEP);
            let (head, tail) = core::mem::take(piece).split_at_mut(step);
            head.fill(0);
            *piece = tail;
            return true;
        }
        false
    }
}

/// What decides how [`image_queued`] reads a run, besides the crate's plan.
struct Plan {
    /// Bytes per request: runs are cut at chunk boundaries.
    chunk: usize,
    /// The size of the disk holding the top image: only pieces inside it
    /// are read from it directly.
    disk_size: u64,
}

impl Plan {
    /// Fills `runs` with the runs of `len` bytes of the virtual disk at
    /// `offset`, cut at chunk boundaries; returns how many. When they do
    /// not fit, the whole window is one run through the crate.
    fn window(
        &self,
        image: &Qcow2,
        offset: u64,
        len: usize,
        runs: &mut [Run; MAX_WINDOW_RUNS],
    ) -> Result<usize, PassError> {
        let mut count = 0;
        let mut done = 0;
        while done < len {
            let chunk_left = (self.chunk - done % self.chunk).min(len - done);
            let piece = image
                .plan(offset + done as u64, chunk_left as u64)
                .next()
                .ok_or(PassError::Image(ImageError::OutOfRange {
                    offset: offset + done as u64,
                    len: chunk_left as u64,
                    size: 0,
                }))?
                .map_err(PassError::Image)?;
            let run_len = piece.len as usize;
            let Some(run) = runs.get_mut(count) else {
                runs[0] = Run {
                    len,
                    read: RunRead::Crate,
                };
                return Ok(1);
            };
            *run = Run {
                len: run_len,
                read: self.read(&piece),
            };
            count += 1;
            done += run_len;
        }
        Ok(count)
    }

    /// How a piece of the crate's plan is read: the device's rules only
    /// (whole sectors, inside the disk, one request at most); what the
    /// bytes are is the plan's.
    fn read(&self, piece: &Piece) -> RunRead {
        match piece.source {
            source if source.is_zero() => RunRead::Zeros,
            Source::Stored {
                storage: Storage::Image,
                offset,
                encrypted: false,
            } if piece.depth == 0
                && offset.is_multiple_of(512)
                && piece.len.is_multiple_of(512)
                && piece.len <= MAX_REQUEST as u64
                && offset.saturating_add(piece.len) <= self.disk_size =>
            {
                RunRead::Disk(offset)
            }
            _ => RunRead::Crate,
        }
    }
}
