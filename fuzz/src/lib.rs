//! Shared pieces of the fuzz targets: a strict counting store, an allocation
//! tracker, the documented resource bounds, and the checks every target runs
//! on an opened image.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use qcow2_reader::{BlockRead, Config, Error, Image, Mapping, OutOfBounds};

/// Bytes of a zstd block's decoded content at most (the format's Block_Maximum_Size).
pub const ZSTD_BLOCK_MAX: usize = 128 << 10;

/// The largest block a frame decoded into one cluster may hold: its window
/// is at most the cluster size (1 KiB for 512-byte clusters).
pub fn zstd_block_limit(cluster_size: usize) -> usize {
    cluster_size.clamp(1 << 10, ZSTD_BLOCK_MAX)
}

/// The zstd decoder's sequence buffer at most: 12 bytes per sequence, at
/// most one sequence per 3 bytes of the block (the crate refuses block
/// headers announcing more), doubled by `Vec` growth in a reused decoder.
pub fn zstd_sequence_buffer_max(cluster_size: usize) -> usize {
    2 * 12 * (zstd_block_limit(cluster_size) / 3)
}

/// The largest single allocation a `read_at` may cause: the zstd decoder's
/// ring buffer, which holds the frame window (refused above the cluster size)
/// plus one decoded block, rounded up to a power of two, plus one sentinel
/// byte; or its sequence buffer, whichever is larger. (With ruzstd 0.8,
/// which did not bound a block's output, one block could grow the ring
/// buffer by gigabytes: README.md, "Findings".)
pub fn max_read_allocation(cluster_size: usize) -> usize {
    let ring = (cluster_size + ZSTD_BLOCK_MAX).next_power_of_two() + 1;
    ring.max(zstd_sequence_buffer_max(cluster_size))
        .max(vendored_zstd_context(cluster_size))
        .max(libdeflate_state())
}

/// The vendored libdeflate's decompressor (the fuzz build's deflate decoder,
/// `deflate-c-nostd`), allocated once per image: the crate's own bound.
pub fn libdeflate_state() -> usize {
    qcow2_reader::decoder_memory_bytes(qcow2_reader::CompressionType::Deflate, 0)
}

/// The vendored libzstd's one buffer (the fuzz build's decoder,
/// `zstd-c-nostd`), allocated once per image: the crate's own bound.
pub fn vendored_zstd_context(cluster_size: usize) -> usize {
    qcow2_reader::decoder_memory_bytes(qcow2_reader::CompressionType::Zstd, cluster_size)
}

/// Most live heap bytes a `read_at` may add (zstd decoder state, kept in the
/// image after the first compressed cluster): the ring buffer while it grows
/// (old and new copy), the sequence buffer, the block's compressed bytes and
/// literals, and the entropy tables.
/// With the vendored libzstd, its one buffer.
pub fn max_read_heap(cluster_size: usize) -> usize {
    let ring = (cluster_size + ZSTD_BLOCK_MAX).next_power_of_two() + 1;
    let ruzstd = ring + ring / 2 + 1 + zstd_sequence_buffer_max(cluster_size) + 4 * ZSTD_BLOCK_MAX;
    ruzstd
        .max(vendored_zstd_context(cluster_size))
        .max(libdeflate_state())
}

/// The geometry that the read bound depends on.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// 128-bit L2 entries with 32 subclusters.
    pub extended_l2: bool,
    /// Bytes per cached table slice (after clamping to the cluster size).
    pub slice_bytes: u64,
    /// Entries of the L1 table in use (active or snapshot).
    pub l1_entries: u64,
}

/// Upper bound on the storage reads of the image file (plus external data
/// file, plus backing `read_at` calls) that one `Image::read_at(offset, len)`
/// makes, whatever the cache holds before:
///
/// `units + l1_indexes + l2_slices`, where `units` are the mapping units
/// (clusters, or subclusters with extended L2) the request overlaps — at most
/// one data, compressed-input or backing read each — `l1_indexes` the L1
/// entries it spans (one L1 slice read each, at most), and `l2_slices` the
/// (L1 entry, L2 slice) pairs it spans (one L2 slice read each, at most).
pub fn max_reads(geometry: Geometry, offset: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let cluster_bits = geometry.cluster_bits;
    let unit_bits = if geometry.extended_l2 {
        cluster_bits - 5
    } else {
        cluster_bits
    };
    let last = offset + len - 1;
    let units = (last >> unit_bits) - (offset >> unit_bits) + 1;
    let entry_bytes = if geometry.extended_l2 { 16 } else { 8 };
    let l2_entries = (1u64 << cluster_bits) / entry_bytes;
    let entries_per_slice = geometry.slice_bytes / entry_bytes;
    let first_cluster = offset >> cluster_bits;
    let last_cluster = last >> cluster_bits;
    let mut l1_indexes = 0;
    let mut l2_slices = 0;
    let mut l1_index = first_cluster / l2_entries;
    while l1_index <= last_cluster / l2_entries && l1_index < geometry.l1_entries {
        let start = first_cluster.max(l1_index * l2_entries) % l2_entries;
        let end = last_cluster.min(l1_index * l2_entries + l2_entries - 1) % l2_entries;
        l1_indexes += 1;
        l2_slices += end / entries_per_slice - start / entries_per_slice + 1;
        l1_index += 1;
    }
    units + l1_indexes + l2_slices
}

thread_local! {
    static READS: [Cell<u64>; 2] = const { [Cell::new(0), Cell::new(0)] };
}

/// Which counter a [`Strict`] store adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The image under test (and its external data file).
    Top = 0,
    /// Its backing image's file.
    Backing = 1,
}

/// Storage reads made through [`Strict`] stores of `role` on this thread so far.
pub fn reads(role: Role) -> u64 {
    READS.with(|reads| reads[role as usize].get())
}

/// A byte slice store that counts reads and treats a read outside the slice
/// as a bug: the crate must clamp first (QEMU reads past the end as zeros).
#[derive(Debug, Clone, Copy)]
pub struct Strict<'a>(pub &'a [u8], pub Role);

impl BlockRead for Strict<'_> {
    type Error = OutOfBounds;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        READS.with(|reads| {
            let counter = &reads[self.1 as usize];
            counter.set(counter.get() + 1)
        });
        let inside = offset
            .checked_add(buf.len() as u64)
            .is_some_and(|end| end <= self.0.len() as u64);
        assert!(
            inside,
            "read of {} bytes at {offset:#x} outside the {}-byte store",
            buf.len(),
            self.0.len()
        );
        self.0.read_at(offset, buf)
    }

    fn size(&self) -> Result<u64, OutOfBounds> {
        Ok(self.0.len() as u64)
    }
}

/// Counts live heap bytes and the largest single allocation, so targets can
/// check the documented memory bounds.
pub struct Tracking;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System`, which upholds `GlobalAlloc`; the
// bookkeeping beside it never touches the memory.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for this call (a valid layout, or a pointer this
        // allocator returned with that layout) is passed on to `System` unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            record(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for this call (a valid layout, or a pointer this
        // allocator returned with that layout) is passed on to `System` unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for this call (a valid layout, or a pointer this
        // allocator returned with that layout) is passed on to `System` unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for this call (a valid layout, or a pointer this
        // allocator returned with that layout) is passed on to `System` unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            record(new_size);
        }
        new
    }
}

thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize) {
    // QCOW2_FUZZ_TRACE_ALLOC=<bytes>: print where allocations that large come from.
    if let Some(limit) = trace_limit() {
        if size >= limit && !IN_TRACE.with(|t| t.replace(true)) {
            eprintln!(
                "allocation of {size} bytes:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            IN_TRACE.with(|t| t.set(false));
        }
    }
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

fn trace_limit() -> Option<usize> {
    static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let mut limit = LIMIT.load(Ordering::Relaxed);
    if limit == usize::MAX {
        // Reading the environment allocates: mark the lookup first.
        LIMIT.store(0, Ordering::Relaxed);
        limit = std::env::var("QCOW2_FUZZ_TRACE_ALLOC")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        LIMIT.store(limit, Ordering::Relaxed);
    }
    (limit != 0).then_some(limit)
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Heap usage between [`HeapWatch::start`] and its `peak`/`largest` calls.
pub struct HeapWatch {
    base: usize,
}

impl HeapWatch {
    /// Starts watching: the peak and largest allocation are reset.
    pub fn start() -> Self {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        LARGEST.store(0, Ordering::Relaxed);
        Self { base }
    }

    /// Most live bytes above the starting point.
    pub fn peak_growth(&self) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(self.base)
    }

    /// The largest single allocation since the start.
    pub fn largest(&self) -> usize {
        LARGEST.load(Ordering::Relaxed)
    }
}

/// A small configuration chosen by one input byte: slice size, cache size
/// (down to a single slot, the worst case for the read bound) and
/// decompression slots.
pub fn config_from(byte: u8) -> Config {
    let slice = 512usize << (byte & 3);
    let slots = 1 + usize::from((byte >> 2) & 3);
    Config::default()
        .with_table_slice_bytes(slice)
        .with_table_cache_bytes(slice * slots)
        .with_compressed_clusters(usize::from(byte >> 4) % 3)
}

/// The bound geometry of an image opened with `config`.
pub fn geometry(header: &qcow2_reader::Header, config: &Config, l1_entries: u64) -> Geometry {
    Geometry {
        cluster_bits: header.cluster_bits(),
        extended_l2: header.has_extended_l2(),
        slice_bytes: (config.table_slice_bytes as u64).min(header.cluster_size()),
        l1_entries,
    }
}

/// What backs the image under test, for the bound on the backing's reads.
#[derive(Debug, Clone, Copy)]
pub enum BackingKind {
    /// No backing store (or ignored).
    None,
    /// A raw [`Strict`] store: one read per unallocated extent at most.
    Raw,
    /// A qcow2 image over a [`Strict`] store, with this geometry.
    Qcow2(Geometry),
}

/// Reads `offset..offset + len` in one call and in pieces, checks that the
/// results agree, that the reads stay within [`max_reads`] and the heap within
/// [`max_read_heap`], and that zero extents read as zeros.
pub fn check_read<R, B>(
    image: &Image<'_, R, B>,
    geometry: Geometry,
    backing: BackingKind,
    offset: u64,
    len: usize,
) where
    R: BlockRead,
    B: BlockRead,
    B::Error: Into<Error<R::Error>>,
{
    let size = image.virtual_size();
    if size == 0 {
        let mut empty = [0u8; 1];
        assert!(image.read_at(0, &mut empty).is_err());
        assert!(image.read_at(0, &mut []).is_ok());
        return;
    }
    let offset = offset % size;
    let len = len.min((size - offset) as usize);
    let cluster_size = 1usize << geometry.cluster_bits;
    let mut whole = vec![0u8; len];
    let heap = HeapWatch::start();
    let before = (reads(Role::Top), reads(Role::Backing));
    let whole_result = image.read_at(offset, &mut whole);
    let made = reads(Role::Top) - before.0;
    let bound = max_reads(geometry, offset, len as u64);
    assert!(
        made <= bound,
        "read_at({offset:#x}, {len}) made {made} reads, bound {bound}"
    );
    let backing_made = reads(Role::Backing) - before.1;
    let top_units = max_reads(geometry, offset, len as u64);
    let backing_bound = match backing {
        BackingKind::None => 0,
        BackingKind::Raw => top_units,
        // Each backing read_at covers one unallocated extent of the top image;
        // splitting the range adds at most three reads per piece.
        BackingKind::Qcow2(backing) => max_reads(backing, offset, len as u64) + 3 * top_units,
    };
    assert!(
        backing_made <= backing_bound,
        "read_at({offset:#x}, {len}) made {backing_made} backing reads, bound {backing_bound}"
    );
    assert!(
        heap.largest() <= max_read_allocation(cluster_size),
        "read_at allocated {} bytes at once (cluster {cluster_size})",
        heap.largest()
    );
    assert!(
        heap.peak_growth() <= max_read_heap(cluster_size),
        "read_at grew the heap by {} bytes (cluster {cluster_size})",
        heap.peak_growth()
    );

    // The same range in pieces that cut across units.
    let piece = (len / 3).max(1) + (offset % 7) as usize;
    let mut pieces = vec![0u8; len];
    let mut pieces_ok = true;
    let mut done = 0;
    while done < len {
        let n = piece.min(len - done);
        if image
            .read_at(offset + done as u64, &mut pieces[done..done + n])
            .is_err()
        {
            pieces_ok = false;
        }
        done += n;
    }
    if whole_result.is_ok() && pieces_ok {
        assert!(
            whole == pieces,
            "one read and pieces disagree at {offset:#x}"
        );
    }

    // Extents cover the range in order and say how it reads.
    let mut at = offset;
    let end = offset + len as u64;
    let mut steps = 0;
    while at < end && steps < 64 {
        steps += 1;
        let Ok(extent) = image.extent(at, end - at) else {
            break;
        };
        assert_eq!(extent.guest_offset, at);
        assert!(extent.len >= 1 && extent.len <= end - at, "{extent:?}");
        if whole_result.is_ok() && matches!(extent.kind, Mapping::Zero { .. }) {
            let start = (at - offset) as usize;
            let bytes = &whole[start..start + extent.len as usize];
            assert!(bytes.iter().all(|&b| b == 0), "zero extent reads non-zero");
        }
        at += extent.len;
    }
}

/// Opening walks the whole snapshot table, as QEMU does (up to 65536
/// entries, about four reads each: linear, but tens of milliseconds), and the
/// fuzzer would spend most of its time there. Targets skip images with more
/// than 1024 snapshots; tests/hostile.rs covers the limits themselves.
pub fn skip_long_snapshot_table(image: &[u8]) -> bool {
    image
        .get(60..64)
        .is_some_and(|count| u32::from_be_bytes(count.try_into().unwrap()) > 1024)
}

/// A disk of a declared size that is zeros except for (offset, bytes)
/// patches: the `disk_sparse` target's input, which reaches partitions and
/// file systems of terabytes from a few KiB.
#[derive(Debug, Clone)]
pub struct SparseDisk {
    size: u64,
    /// In input order; later ones win where they overlap.
    patches: Vec<(u64, Vec<u8>)>,
}

impl SparseDisk {
    /// Largest declared size: 16 TiB.
    pub const MAX_SIZE: u64 = 1 << 44;
    /// Smallest declared size: 1 MiB (room for a GPT and its backup).
    pub const MIN_SIZE: u64 = 1 << 20;

    /// Reads the description: 8 bytes little-endian size (modulo
    /// [`Self::MAX_SIZE`], at least [`Self::MIN_SIZE`]), then patches of
    /// 8 bytes little-endian offset (modulo the size), 2 bytes
    /// little-endian length and the bytes (cut at the input's end and at
    /// the disk's end). `None` for an input shorter than the size.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (size, mut rest) = data.split_first_chunk::<8>()?;
        let size = (u64::from_le_bytes(*size) % Self::MAX_SIZE).max(Self::MIN_SIZE);
        let mut patches = Vec::new();
        while let Some((offset, tail)) = rest.split_first_chunk::<8>() {
            let Some((len, tail)) = tail.split_first_chunk::<2>() else {
                break;
            };
            let offset = u64::from_le_bytes(*offset) % size;
            let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
            let room = usize::try_from(size - offset).unwrap_or(usize::MAX);
            patches.push((offset, tail[..len.min(room)].to_vec()));
            rest = &tail[len..];
        }
        Some(Self { size, patches })
    }

    /// Writes the description of a disk of `size` bytes with `patches`
    /// (the inverse of [`Self::parse`], for seeds and tests).
    pub fn describe(size: u64, patches: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = size.to_le_bytes().to_vec();
        for (offset, bytes) in patches {
            let piece_bytes = usize::from(u16::MAX);
            for (index, piece) in bytes.chunks(piece_bytes).enumerate() {
                let at = *offset + (index * piece_bytes) as u64;
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&(piece.len() as u16).to_le_bytes());
                out.extend_from_slice(piece);
            }
        }
        out
    }
}

impl BlockRead for SparseDisk {
    type Error = OutOfBounds;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            return Err(OutOfBounds {
                offset,
                len: buf.len(),
                size: self.size,
            });
        }
        let end = offset + buf.len() as u64;
        buf.fill(0);
        for (at, bytes) in &self.patches {
            let patch_end = at + bytes.len() as u64;
            if patch_end <= offset || *at >= end {
                continue;
            }
            let from = offset.max(*at);
            let to = end.min(patch_end);
            let dst = (from - offset) as usize..(to - offset) as usize;
            let src = (from - at) as usize..(to - at) as usize;
            buf[dst].copy_from_slice(&bytes[src]);
        }
        Ok(())
    }

    fn size(&self) -> Result<u64, OutOfBounds> {
        Ok(self.size)
    }
}

/// Directory levels [`walk_volume`] goes below the root.
pub const WALK_MAX_DEPTH: u32 = 3;
/// Entries [`walk_volume`] looks at in one directory.
pub const WALK_MAX_ENTRIES: usize = 32;
/// Bytes [`read_volume_file`] reads from one file.
pub const WALK_MAX_FILE_BYTES: u64 = 1 << 20;

/// Lists `path` of `fs` and below it (at most [`WALK_MAX_DEPTH`] levels,
/// [`WALK_MAX_ENTRIES`] per directory, `budget` entries in all), reading
/// every file and symlink met: the `disk` targets' walk.
pub fn walk_volume<D: BlockRead + 'static>(
    fs: &qcow2_disk::FileSystem<D>,
    path: &str,
    depth: u32,
    budget: &mut u32,
) {
    if depth > WALK_MAX_DEPTH || *budget == 0 {
        return;
    }
    let mut entries = Vec::new();
    let listed = fs.read_dir(path, &mut |entry| {
        if entries.len() < WALK_MAX_ENTRIES {
            entries.push(entry);
        }
    });
    if listed.is_err() {
        return;
    }
    for entry in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let child = format!("{}/{}", path.trim_end_matches('/'), entry.name);
        match entry.kind {
            qcow2_disk::EntryKind::Directory => walk_volume(fs, &child, depth + 1, budget),
            qcow2_disk::EntryKind::File | qcow2_disk::EntryKind::Symlink => {
                read_volume_file(fs, &child)
            }
            qcow2_disk::EntryKind::Other => {}
        }
    }
}

/// Reads up to [`WALK_MAX_FILE_BYTES`] of the file at `path`: no read may
/// return more than asked, nor pass the file's size.
pub fn read_volume_file<D: BlockRead + 'static>(fs: &qcow2_disk::FileSystem<D>, path: &str) {
    let Ok(mut file) = fs.open_file(path) else {
        return;
    };
    let mut buf = [0u8; 4099];
    let mut total = 0u64;
    while total < WALK_MAX_FILE_BYTES {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                assert!(read <= buf.len());
                total += read as u64;
                assert!(total <= file.len(), "read past the end of {path}");
            }
        }
    }
}
