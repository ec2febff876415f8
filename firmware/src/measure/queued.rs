//! The queued reads: a window of the virtual disk read with several device
//! requests in flight, what to read ahead decided by the crate's read plan
//! ([`Qcow2::plan`]), and the same for raw sectors.

use super::PassError;
use crate::backing::{ImageError, Qcow2};
use crate::disk::VirtioDisk;
use crate::disk::MAX_REQUEST;
use qcow2_reader::chain::{Piece, Source};
use qcow2_reader::{BlockRead, Storage};

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

/// Reads `total` bytes of raw sectors from the start of `disk`, wrapping at
/// its end, one `window` at a time in requests of `chunk` bytes with up to
/// `depth` in flight.
pub(super) fn raw_queued(
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
pub(super) fn image_queued(
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
