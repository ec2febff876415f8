//! `qemu-img check` over any [`BlockRead`]: QEMU 7.2's refcount rebuild and
//! its corruption and leak rules, as a [`Report`].
//!
//! The expected refcount of every cluster is rebuilt in memory from the
//! header, the L1/L2 tables (active and of each snapshot), the snapshot
//! table, the refcount structures, the LUKS area and the bitmaps, then
//! compared with the refcounts stored in the image. Nothing is written.
//! The image is opened as QEMU opens it for a check (an empty refcount
//! table and a broken snapshot table are reported, not refused); its
//! backing chain and data file are the caller's to open first, as
//! `qemu-img check` fails when they are missing.
//!
//! # Memory
//!
//! The rebuild is O(image file size / cluster size): one 8-byte counter per
//! cluster of the file (plus one, for a reference ending in the last
//! partial cluster). [`CheckLimits::max_clusters`] bounds it; a file with
//! more clusters is refused with [`CheckError::TooManyClusters`] before
//! anything is allocated. Besides the counters the check holds at most one
//! L1 table (QEMU's limit: 32 MiB), the refcount table (8 MiB), one
//! refcount block and one L2 table (a cluster each), the bitmap directory
//! (64 MiB) or one cluster of a bitmap table, and up to [`CheckLimits::max_findings`]
//! findings of 64 bytes each (plus a snapshot's id and name for the two
//! snapshot findings; the rest are counted, not kept).
//!
//! # Work
//!
//! Proportional to the file's clusters (the comparison) plus the L2 tables
//! walked, one cluster read each. QEMU walks an L2 table once per L1 entry
//! naming it, in the active table and in every snapshot's, so a small
//! hostile file can name the same tables billions of times:
//! [`CheckLimits::max_l2_tables`] bounds the walk, and an image past it is
//! refused with [`CheckError::TooManyL2Tables`] (where QEMU would run on).
//!
//! ```no_run
//! use qcow2_reader::check::{check, CheckLimits};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = std::fs::File::open("disk.qcow2")?;
//! let report = check(&file, &CheckLimits::default())?;
//! for finding in &report.findings {
//!     eprintln!("{finding}"); // QEMU's lines, e.g. "Leaked cluster 5 refcount=1 reference=0"
//! }
//! if report.has_summary() {
//!     print!("{report}"); // "No errors were found on the image." ...
//! }
//! std::process::exit(i32::from(report.exit_code())); // 0, 1, 2 or 3, as qemu-img check
//! # }
//! ```

use alloc::string::ToString;
use alloc::vec::Vec;
use core::fmt;

use crate::bitmap;
use crate::block::BlockRead;
use crate::error::HeaderError;
use crate::error::{Error, Storage};
use crate::extension::{Extension, Extensions};
use crate::feature::Autoclear;
use crate::header::{check_snapshot_table, Header};
use crate::refcount::RefcountLayout;
use crate::snapshot::{Snapshot, Snapshots};
use crate::table::{l1_table_fits, ClusterType, L1Entry, L2Entry, Layout, L1_ENTRY_BYTES};

pub use report::{Finding, Report, Severity, Stopped};
use stored::{File, ReadError, RefcountError, StoredRefcounts};

mod report;
mod stored;

/// How much a check may hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLimits {
    /// Clusters of the image file the refcount rebuild may count (8 bytes
    /// each). The default, 2^27, is 1 GiB of counters: a 128 TiB file of
    /// 1 MiB clusters, or 8 TiB of 64 KiB clusters.
    pub max_clusters: u64,
    /// Findings kept in [`Report::findings`]; further ones are only counted.
    pub max_findings: usize,
    /// L2 tables the walk may read (one cluster each), over the active L1
    /// table and every snapshot's: QEMU walks a table again for each entry
    /// naming it, so a small hostile file (65536 snapshots sharing one full
    /// L1 table) would otherwise cost 2^38 cluster reads. The default, 2^22,
    /// is 2048 snapshots of a 1 TiB disk of 64 KiB clusters.
    pub max_l2_tables: u64,
}

impl Default for CheckLimits {
    fn default() -> Self {
        Self {
            max_clusters: 1 << 27,
            max_findings: 100_000,
            max_l2_tables: 1 << 22,
        }
    }
}

/// Why an image could not be checked at all.
#[derive(Debug)]
pub enum CheckError<E> {
    /// The image does not open (QEMU: `Could not open`), or its storage failed.
    Open(Error<E>),
    /// The refcount table reaches past QEMU's largest offset (2^63 - 1 GiB),
    /// so QEMU cannot read it at open.
    RefcountTableUnreadable {
        /// Its offset.
        offset: u64,
    },
    /// The walk would read more L2 tables than [`CheckLimits::max_l2_tables`].
    TooManyL2Tables {
        /// The limit.
        max: u64,
    },
    /// The refcount counters could not be allocated.
    OutOfMemory {
        /// Bytes asked for.
        bytes: u64,
    },
    /// The file has more clusters than [`CheckLimits::max_clusters`].
    TooManyClusters {
        /// Clusters of the file.
        clusters: u64,
        /// The limit.
        max: u64,
    },
}

impl<E: fmt::Display> fmt::Display for CheckError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Open(error) => error.fmt(f),
            CheckError::RefcountTableUnreadable { offset } => write!(
                f,
                "the refcount table at {offset:#x} reaches past the largest offset QEMU reads"
            ),
            CheckError::TooManyL2Tables { max } => write!(
                f,
                "the check would read more than {max} L2 tables (the active L1 table's and every snapshot's)"
            ),
            CheckError::OutOfMemory { bytes } => write!(
                f,
                "cannot allocate {bytes} bytes for the refcount counters (8 per cluster of the file)"
            ),
            CheckError::TooManyClusters { clusters, max } => write!(
                f,
                "the refcount rebuild needs one counter per cluster of the file: {clusters} clusters is more than the limit of {max}"
            ),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for CheckError<E> {}

impl<E> From<Error<E>> for CheckError<E> {
    fn from(error: Error<E>) -> Self {
        CheckError::Open(error)
    }
}

/// The check stops here (QEMU's check returns an error).
struct Stop;

/// Checks the image in `storage` as `qemu-img check` does.
///
/// An image that QEMU cannot open for a check is an error; everything the
/// check finds (including what QEMU calls check errors) is in the report.
pub fn check<R: BlockRead + ?Sized>(
    storage: &R,
    limits: &CheckLimits,
) -> Result<Report, CheckError<R::Error>> {
    let header = Header::read_for_check(storage)?;
    header.check_data_file_bits().map_err(Error::from)?;
    let file = File {
        storage,
        size: header.file_size(),
    };
    let cluster_size = header.cluster_size();
    let clusters = file.size.div_ceil(cluster_size);
    if clusters > limits.max_clusters {
        return Err(CheckError::TooManyClusters {
            clusters,
            max: limits.max_clusters,
        });
    }
    let refcount_layout = RefcountLayout {
        cluster_bits: header.cluster_bits(),
        refcount_order: header.refcount_order(),
    };
    let stored = StoredRefcounts::read(
        &file,
        refcount_layout,
        header.refcount_table_offset(),
        header.refcount_table_clusters(),
    )
    .map_err(|error| io_error(error, header.refcount_table_offset()))?;
    // One more for a reference ending in the partial cluster past the end.
    let counters = usize::try_from(clusters + 1).map_err(|_| CheckError::TooManyClusters {
        clusters,
        max: limits.max_clusters,
    })?;
    let mut expected = Vec::new();
    expected
        .try_reserve_exact(counters)
        .map_err(|_| CheckError::OutOfMemory {
            bytes: counters as u64 * 8,
        })?;
    expected.resize(clusters as usize, 0);
    let mut checker = Checker {
        file,
        layout: header.layout(),
        expected,
        refcount_max: refcount_layout.max_refcount(),
        stored,
        report: Report {
            total_clusters: header.virtual_size().div_ceil(cluster_size),
            ..Report::default()
        },
        header,
        max_findings: limits.max_findings,
        l2_tables_left: limits.max_l2_tables,
        out_of_work: false,
        storage_error: None,
    };
    let outcome = checker.check();
    if let Some(error) = checker.storage_error.take() {
        return Err(CheckError::Open(error));
    }
    if checker.out_of_work {
        return Err(CheckError::TooManyL2Tables {
            max: limits.max_l2_tables,
        });
    }
    if let Err(Stop) = outcome {
        if checker.report.stopped.is_none() {
            checker.report.stopped = Some(Stopped::Io);
        }
    }
    Ok(checker.report)
}

/// The refcount table could not be read at open.
fn io_error<E>(error: ReadError<E>, offset: u64) -> CheckError<E> {
    match error {
        ReadError::Storage(source) => CheckError::Open(Error::Io {
            source,
            storage: Storage::Image,
            offset,
            len: 0,
        }),
        ReadError::BeyondMaxLength => CheckError::RefcountTableUnreadable { offset },
    }
}

/// The walk's state.
struct Checker<'s, R: BlockRead + ?Sized> {
    file: File<'s, R>,
    header: Header,
    layout: Layout,
    expected: Vec<u64>,
    refcount_max: u64,
    stored: StoredRefcounts,
    report: Report,
    max_findings: usize,
    l2_tables_left: u64,
    out_of_work: bool,
    storage_error: Option<Error<R::Error>>,
}

impl<R: BlockRead + ?Sized> Checker<'_, R> {
    fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    fn found(&mut self, finding: Finding) {
        match finding.severity() {
            Severity::Corruption => self.report.corruptions += 1,
            Severity::Leak => self.report.leaks += 1,
            Severity::CheckError => self.report.check_errors += 1,
        }
        if self.report.findings.len() < self.max_findings {
            self.report.findings.push(finding);
        } else {
            self.report.findings_dropped += 1;
        }
    }

    /// Reads `len` bytes at `offset`: `None` when QEMU's read fails (a
    /// storage failure also stops the check, kept to be returned).
    fn read(&mut self, offset: u64, len: usize) -> Option<Vec<u8>> {
        match self.file.read(offset, len) {
            Ok(bytes) => Some(bytes),
            Err(ReadError::BeyondMaxLength) => None,
            Err(ReadError::Storage(source)) => {
                self.storage_error.get_or_insert(Error::Io {
                    source,
                    storage: Storage::Image,
                    offset,
                    len: len as u64,
                });
                None
            }
        }
    }

    fn stored_refcount(&mut self, cluster: u64) -> Result<u64, ()> {
        match self.stored.get(&self.file, cluster) {
            Ok(refcount) => Ok(refcount),
            Err(RefcountError::Unaligned | RefcountError::Read(ReadError::BeyondMaxLength)) => {
                Err(())
            }
            Err(RefcountError::Read(ReadError::Storage(source))) => {
                self.storage_error.get_or_insert(Error::Io {
                    source,
                    storage: Storage::Image,
                    offset: cluster << self.header.cluster_bits(),
                    len: 0,
                });
                Err(())
            }
        }
    }

    /// The whole check, in QEMU's order (`qcow2_co_check_locked`).
    fn check(&mut self) -> Result<(), Stop> {
        let snapshots_end = self.read_snapshot_table()?;
        self.reference(0, self.cluster_size());
        let (l1_offset, l1_entries) = (self.header.l1_table_offset(), self.header.l1_entries());
        self.check_l1(l1_offset, l1_entries, true)?;
        self.check_snapshots(snapshots_end)?;
        let refcount_table_bytes =
            u64::from(self.header.refcount_table_clusters()) * self.cluster_size();
        self.reference(self.header.refcount_table_offset(), refcount_table_bytes);
        // The LUKS header and key slots, which QEMU counts as referenced.
        // Metadata only: no passphrase is needed.
        if let Some((offset, len)) = self.header.crypto_area() {
            self.reference(offset, len);
        }
        self.check_bitmaps();
        self.check_refcount_blocks();
        self.compare_refcounts();
        self.check_copied_flags()?;
        if self.storage_error.is_some() {
            return Err(Stop);
        }
        Ok(())
    }

    /// QEMU's `qcow2_check_read_snapshot_table`: the table's count and
    /// offset, then every entry; any failure stops the check. Returns the
    /// end of the last entry.
    fn read_snapshot_table(&mut self) -> Result<u64, Stop> {
        let count = self.header.snapshot_count();
        let offset = self.header.snapshots_offset();
        if let Err(error) = check_snapshot_table(count, offset, self.cluster_size()) {
            let (reason, stopped) = match error {
                HeaderError::TooManySnapshots { .. } => {
                    ("snapshot table too large", Stopped::TooBig)
                }
                _ => ("snapshot table offset invalid", Stopped::Invalid),
            };
            self.found(Finding::SnapshotTableInvalid { reason });
            self.report.stopped = Some(stopped);
            return Err(Stop);
        }
        let mut end = offset;
        for (index, entry) in Snapshots::new(self.file.storage, &self.header).enumerate() {
            let snapshot = self.snapshot_entry(entry)?;
            end = snapshot.entry_end;
            // v3 entries carry at least the 16 bytes of extra data that
            // hold the VM state size and the disk size.
            if self.header.version() >= 3 && snapshot.disk_size.is_none() {
                self.found(Finding::SnapshotIncomplete {
                    index: index as u32,
                });
            }
        }
        Ok(end)
    }

    /// One entry of the snapshot table, or the check stops.
    fn snapshot_entry(
        &mut self,
        entry: Result<Snapshot, Error<R::Error>>,
    ) -> Result<Snapshot, Stop> {
        match entry {
            Ok(snapshot) => Ok(snapshot),
            Err(error @ Error::Io { .. }) => {
                self.storage_error.get_or_insert(error);
                Err(Stop)
            }
            Err(error) => {
                let stopped = match error {
                    Error::Header(
                        HeaderError::SnapshotTableTooLarge { .. }
                        | HeaderError::SnapshotExtraDataTooLarge { .. },
                    ) => Stopped::TooBig,
                    _ => Stopped::Invalid,
                };
                self.found(Finding::SnapshotTableUnreadable {
                    reason: error.to_string(),
                });
                self.report.stopped = Some(stopped);
                Err(Stop)
            }
        }
    }

    /// Counts one reference to every cluster of `offset..offset + size`.
    fn reference(&mut self, offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        let end = offset.saturating_add(size);
        // The last cluster may be partly past the end of the file, not more.
        // QEMU's file length counts whole 512-byte sectors.
        let file_length = self.file.size.next_multiple_of(512);
        if end.saturating_sub(file_length) >= self.cluster_size() {
            self.found(Finding::PastEndOfFile { offset, size });
            return;
        }
        let bits = self.header.cluster_bits();
        for cluster in (offset >> bits)..=((end - 1) >> bits) {
            // At most one cluster past the counters sized from the file.
            let index = cluster as usize;
            if index >= self.expected.len() {
                self.expected.resize(index + 1, 0);
            }
            if self.expected[index] == self.refcount_max {
                self.found(Finding::RefcountOverflow {
                    offset: cluster << bits,
                });
                continue;
            }
            self.expected[index] += 1;
        }
    }

    /// Walks an L1 table and its L2 tables; `active` also gathers allocation statistics.
    fn check_l1(&mut self, l1_offset: u64, entries: u32, active: bool) -> Result<(), Stop> {
        if !l1_table_fits(entries) {
            self.found(Finding::L1TooLarge { entries });
            return Ok(());
        }
        if entries == 0 {
            return Ok(());
        }
        let bytes = u64::from(entries) * L1_ENTRY_BYTES;
        self.reference(l1_offset, bytes);
        let Some(table) = self.read(l1_offset, bytes as usize) else {
            self.found(Finding::L1Unreadable);
            return Err(Stop);
        };
        for entry in L1Entry::table(&table) {
            // QEMU skips only an all-zero entry: one with flags but offset 0
            // walks the header cluster as an L2 table.
            if entry.raw() == 0 {
                continue;
            }
            if entry.reserved_bits() != 0 {
                self.found(Finding::L1ReservedBits { entry: entry.raw() });
            }
            let l2_offset = entry.l2_offset();
            self.reference(l2_offset, self.cluster_size());
            if !l2_offset.is_multiple_of(self.cluster_size()) {
                self.found(Finding::L2TableUnaligned { l2_offset });
            }
            self.check_l2(l2_offset, active)?;
        }
        Ok(())
    }

    /// Walks one L2 table.
    fn check_l2(&mut self, l2_offset: u64, active: bool) -> Result<(), Stop> {
        if self.l2_tables_left == 0 {
            self.out_of_work = true;
            return Err(Stop);
        }
        self.l2_tables_left -= 1;
        // L2 offsets are below 2^56: the read cannot fail but on the storage.
        let Some(table) = self.read(l2_offset, self.cluster_size() as usize) else {
            return Err(Stop);
        };
        let mut next_contiguous = 0u64;
        let layout = self.layout;
        for (index, entry) in layout.l2_entries_of(&table).enumerate() {
            if entry.reserved_bits() != 0 {
                self.found(Finding::L2ReservedBits { entry: entry.raw() });
            }
            match entry.cluster_type(&layout) {
                ClusterType::Compressed => self.check_compressed(entry, index, active),
                ClusterType::Normal | ClusterType::ZeroAlloc => {
                    self.check_allocated(entry, active, &mut next_contiguous)
                }
                ClusterType::ZeroPlain => {}
                ClusterType::Unallocated => {
                    if entry.allocated_subclusters() != 0 {
                        self.found(Finding::UnallocatedWithSubclusters);
                    }
                }
            }
        }
        Ok(())
    }

    fn check_compressed(&mut self, entry: L2Entry, index: usize, active: bool) {
        let Some(descriptor) = entry.compressed(self.layout.cluster_bits) else {
            return;
        };
        if entry.copied() {
            self.found(Finding::CompressedCopied {
                host_offset: descriptor.host_offset,
            });
        }
        let raw = entry.raw();
        if self.layout.data_file {
            self.found(Finding::CompressedWithDataFile { index, entry: raw });
            return;
        }
        if entry.bitmap() != 0 {
            self.found(Finding::CompressedWithBitmap { index, entry: raw });
            return;
        }
        self.reference(descriptor.host_offset, descriptor.len);
        if active {
            self.report.allocated_clusters += 1;
            self.report.compressed_clusters += 1;
            // QEMU counts every compressed cluster as fragmented.
            self.report.fragmented_clusters += 1;
        }
    }

    fn check_allocated(&mut self, entry: L2Entry, active: bool, next_contiguous: &mut u64) {
        let offset = entry.host_cluster_offset();
        if entry.zero_subclusters() & entry.allocated_subclusters() != 0 {
            self.found(Finding::SubclusterBitmapCorrupt { offset });
        }
        if !offset.is_multiple_of(self.cluster_size()) {
            let has_data = if self.layout.extended_l2 {
                entry.allocated_subclusters() != 0
            } else {
                entry.cluster_type(&self.layout) == ClusterType::Normal
            };
            self.found(Finding::ClusterUnaligned { offset, has_data });
        }
        if active {
            self.report.allocated_clusters += 1;
            if *next_contiguous != 0 && offset != *next_contiguous {
                self.report.fragmented_clusters += 1;
            }
            *next_contiguous = offset + self.cluster_size();
        }
        // Clusters of an external data file are not counted in the image's refcounts.
        if !self.header.has_data_file() {
            self.reference(offset, self.cluster_size());
        }
    }

    /// Each snapshot's L1 and L2 tables, then the snapshot table itself
    /// (read again rather than kept: 65536 entries with names are 33 MiB).
    fn check_snapshots(&mut self, table_end: u64) -> Result<(), Stop> {
        let count = self.header.snapshot_count();
        if count > 0 && self.header.has_data_file() {
            self.found(Finding::SnapshotsWithDataFile { count });
        }
        let storage = self.file.storage;
        for entry in Snapshots::new(storage, &self.header) {
            let snapshot = self.snapshot_entry(entry)?;
            if !snapshot.l1_table_offset.is_multiple_of(self.cluster_size()) {
                self.found(Finding::SnapshotL1Unaligned {
                    id: snapshot.id.to_string(),
                    name: snapshot.name.to_string(),
                    l1_offset: snapshot.l1_table_offset,
                });
                continue;
            }
            if !l1_table_fits(snapshot.l1_entries) {
                self.found(Finding::SnapshotL1TooLarge {
                    id: snapshot.id.to_string(),
                    name: snapshot.name.to_string(),
                    l1_entries: snapshot.l1_entries,
                });
                continue;
            }
            self.check_l1(snapshot.l1_table_offset, snapshot.l1_entries, false)?;
        }
        let offset = self.header.snapshots_offset();
        if count > 0 {
            self.reference(offset, table_end - offset);
        }
        Ok(())
    }

    /// Persistent bitmaps: their directory, tables and data clusters.
    fn check_bitmaps(&mut self) {
        if !self
            .header
            .autoclear_features()
            .contains(Autoclear::BITMAPS)
        {
            return;
        }
        let Some((directory_offset, directory_size)) = self.bitmaps_extension() else {
            return;
        };
        self.reference(directory_offset, directory_size);
        let Some(directory) = self.read(directory_offset, directory_size as usize) else {
            self.found(Finding::BitmapDirectoryUnreadable);
            return;
        };
        for entry in bitmap::directory(&directory) {
            self.check_bitmap_table(entry.table_offset, u64::from(entry.table_entries));
        }
    }

    fn check_bitmap_table(&mut self, table_offset: u64, entries: u64) {
        let bytes = entries * bitmap::TABLE_ENTRY_BYTES;
        self.reference(table_offset, bytes);
        // A table larger than the file cannot be read (and was just reported).
        if bytes > self.file.size {
            return;
        }
        // Read a cluster at a time: the table may be as large as the file.
        let chunk = self.cluster_size();
        let mut done = 0;
        while done < bytes {
            let len = chunk.min(bytes - done);
            let Some(table) = self.read(table_offset + done, len as usize) else {
                self.found(Finding::BitmapTableUnreadable);
                return;
            };
            for entry in bitmap::TableEntry::table(&table) {
                if !entry.is_valid(self.cluster_size()) {
                    self.found(Finding::BitmapEntryInvalid);
                    continue;
                }
                let offset = entry.data_offset();
                if offset != 0 {
                    self.reference(offset, self.cluster_size());
                }
            }
            done += len;
        }
    }

    /// The bitmaps extension's directory offset and size, if the image has one.
    fn bitmaps_extension(&self) -> Option<(u64, u64)> {
        let area = self.header.extension_area();
        let mut extensions =
            Extensions::new(self.file.storage, self.file.size, area.start, area.end);
        while let Ok(Some(extension)) = extensions.next_extension() {
            if let Extension::Bitmaps {
                count,
                directory_size,
                directory_offset,
                ..
            } = extension
            {
                return (count > 0).then_some((directory_offset, directory_size));
            }
        }
        None
    }

    /// The refcount blocks: aligned, inside the file, referenced exactly once.
    fn check_refcount_blocks(&mut self) {
        let nb_clusters = self.file.size.div_ceil(self.cluster_size());
        for index in 0..self.stored.table.len() {
            let entry = self.stored.table[index];
            let offset = entry.block_offset();
            let index = index as u64;
            if entry.reserved_bits() != 0 {
                self.found(Finding::RefcountEntryReservedBits { index });
                continue;
            }
            if !offset.is_multiple_of(self.cluster_size()) {
                self.found(Finding::RefcountBlockUnaligned { index });
                continue;
            }
            let cluster = offset >> self.header.cluster_bits();
            if cluster >= nb_clusters {
                self.found(Finding::RefcountBlockOutside { index });
                continue;
            }
            if offset != 0 {
                self.reference(offset, self.cluster_size());
                let references = self.expected[cluster as usize];
                if references != 1 {
                    self.found(Finding::RefcountBlockShared { index, references });
                }
            }
        }
    }

    /// Stored against expected refcounts: too low is corruption, too high a leak.
    fn compare_refcounts(&mut self) {
        let mut highest = 0u64;
        for cluster in 0..self.expected.len() as u64 {
            let Ok(stored) = self.stored_refcount(cluster) else {
                self.found(Finding::RefcountUnreadable { cluster });
                continue;
            };
            let references = self.expected[cluster as usize];
            if stored > 0 || references > 0 {
                highest = cluster;
            }
            if stored < references {
                self.found(Finding::RefcountTooLow {
                    cluster,
                    stored,
                    references,
                });
            } else if stored > references {
                self.found(Finding::Leaked {
                    cluster,
                    stored,
                    references,
                });
            }
        }
        self.report.image_end_offset = (highest + 1) * self.cluster_size();
    }

    /// COPIED flags of the active tables must say "refcount is exactly one".
    fn check_copied_flags(&mut self) -> Result<(), Stop> {
        let bytes = u64::from(self.header.l1_entries()) * L1_ENTRY_BYTES;
        // The active L1 table was read at open in QEMU (and above here).
        let Some(l1) = self.read(self.header.l1_table_offset(), bytes as usize) else {
            return Ok(());
        };
        for (l1_index, l1_entry) in L1Entry::table(&l1).enumerate() {
            let l2_offset = l1_entry.l2_offset();
            if l2_offset == 0 {
                continue;
            }
            // QEMU neither reports nor counts a refcount it cannot read here.
            let Ok(refcount) = self.stored_refcount(l2_offset >> self.header.cluster_bits()) else {
                continue;
            };
            if (refcount == 1) != l1_entry.copied() {
                self.found(Finding::CopiedFlagL2 {
                    l1_index,
                    entry: l1_entry.raw(),
                    refcount,
                });
            }
            self.check_copied_l2(l2_offset)?;
        }
        Ok(())
    }

    fn check_copied_l2(&mut self, l2_offset: u64) -> Result<(), Stop> {
        let Some(table) = self.read(l2_offset, self.cluster_size() as usize) else {
            self.found(Finding::L2Unreadable);
            return Err(Stop);
        };
        let layout = self.layout;
        for entry in layout.l2_entries_of(&table) {
            let kind = entry.cluster_type(&layout);
            if kind != ClusterType::Normal && kind != ClusterType::ZeroAlloc {
                continue;
            }
            let refcount = if layout.data_file {
                1
            } else {
                match self.stored_refcount(entry.host_cluster_offset() >> layout.cluster_bits) {
                    Ok(refcount) => refcount,
                    Err(()) => continue,
                }
            };
            if (refcount == 1) != entry.copied() {
                self.found(Finding::CopiedFlagData {
                    entry: entry.raw(),
                    refcount,
                });
            }
        }
        Ok(())
    }
}
