//! `qcow check`: walk all metadata and compare refcounts, like `qemu-img check`.
//!
//! The expected refcount of every cluster is rebuilt in memory from the
//! header, the L1/L2 tables (active and of each snapshot), the snapshot
//! table, the refcount structures and the bitmaps, then compared with the
//! refcounts stored in the image. Memory is one counter per cluster of the
//! image file (QEMU's bound: references past the end of the file by a
//! cluster or more are errors, not counted). Messages follow QEMU 7.2's
//! wording; nothing is written to the image.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use qcow2_reader::extension::{Extension, Extensions};
use qcow2_reader::feature::Autoclear;
use qcow2_reader::table::{l1_table_fits, ClusterType, L1Entry, L2Entry, Layout, L1_ENTRY_BYTES};
use qcow2_reader::{bitmap, Header, Image, Snapshots};

use crate::failure::{Failure, Result};
use crate::output::print;

use report::{exit_status, human_report, json_report, Report};
use stored::{read_padded, StoredRefcounts};

mod report;
mod stored;

/// Arguments of `qcow check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON, like `qemu-img check --output=json`.
    #[arg(long)]
    json: bool,
    /// The image.
    image: PathBuf,
}

/// The walk's state.
struct Checker {
    file: File,
    header: Header,
    layout: Layout,
    file_size: u64,
    expected: Vec<u64>,
    refcount_max: u64,
    stored: StoredRefcounts,
    report: Report,
}

/// Runs `qcow check`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let fail = |error: &dyn std::fmt::Display| Failure::new(&args.image, error);
    if crate::input::url_of(&args.image).is_some() {
        return Err(fail(
            &"check reads local files only (not URLs): download the image first",
        ));
    }
    let file = File::open(&args.image).map_err(|error| fail(&error))?;
    let header = Image::builder(&file)
        .map_err(|error| fail(&error))?
        .header()
        .clone();
    let mut checker = Checker::new(file, header).map_err(|error| fail(&error))?;
    checker.check();
    let report = &checker.report;
    let text = if args.json {
        json_report(report, &args.image)
    } else {
        human_report(report)
    };
    print(&text, &args.image)?;
    Ok(ExitCode::from(exit_status(report)))
}

impl Checker {
    fn new(file: File, header: Header) -> io::Result<Self> {
        let file_size = file.metadata()?.len();
        let stored = StoredRefcounts::read(&file, &header, file_size)?;
        let clusters = file_size.div_ceil(header.cluster_size());
        let refcount_max = stored.layout.max_refcount();
        let report = Report {
            total_clusters: header.virtual_size().div_ceil(header.cluster_size()),
            ..Report::default()
        };
        Ok(Self {
            file,
            file_size,
            expected: vec![0; clusters as usize],
            refcount_max,
            stored,
            report,
            layout: header.layout(),
            header,
        })
    }

    fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    fn error(&mut self, message: String) {
        eprintln!("{message}");
        self.report.corruptions += 1;
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        read_padded(&self.file, self.file_size, offset, len)
    }

    /// The whole check, in QEMU's order.
    fn check(&mut self) {
        self.reference(0, self.cluster_size());
        let (l1_offset, l1_entries) = (self.header.l1_table_offset(), self.header.l1_entries());
        self.check_l1(l1_offset, l1_entries, true);
        self.check_snapshots();
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
        self.check_copied_flags();
    }

    /// Counts one reference to every cluster of `offset..offset + size`.
    fn reference(&mut self, offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        let end = offset.saturating_add(size);
        // The last cluster may be partly past the end of the file, not more.
        if end.saturating_sub(self.file_size) >= self.cluster_size() {
            self.error(format!(
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {offset:#x} size {size:#x}"
            ));
            return;
        }
        let bits = self.header.cluster_bits();
        for cluster in (offset >> bits)..=((end - 1) >> bits) {
            let index = cluster as usize;
            if index >= self.expected.len() {
                self.expected.resize(index + 1, 0);
            }
            if self.expected[index] == self.refcount_max {
                self.error(format!(
                    "ERROR: overflow cluster offset={:#x}",
                    cluster << bits
                ));
                continue;
            }
            self.expected[index] += 1;
        }
    }

    /// Walks an L1 table and its L2 tables; `active` also gathers allocation statistics.
    fn check_l1(&mut self, l1_offset: u64, entries: u32, active: bool) {
        if !l1_table_fits(entries) {
            self.report.check_errors += 1;
            eprintln!("ERROR: L1 table of {entries} entries is too large");
            return;
        }
        let bytes = u64::from(entries) * L1_ENTRY_BYTES;
        self.reference(l1_offset, bytes);
        if entries == 0 {
            return;
        }
        let Ok(table) = self.read(l1_offset, bytes as usize) else {
            eprintln!("ERROR: I/O error in check_refcounts_l1");
            self.report.check_errors += 1;
            return;
        };
        for entry in L1Entry::table(&table) {
            if entry.raw() == 0 {
                continue;
            }
            if entry.reserved_bits() != 0 {
                self.error(format!(
                    "ERROR found L1 entry with reserved bits set: {:x}",
                    entry.raw()
                ));
            }
            let l2_offset = entry.l2_offset();
            if l2_offset == 0 {
                continue;
            }
            self.reference(l2_offset, self.cluster_size());
            if !l2_offset.is_multiple_of(self.cluster_size()) {
                self.error(format!(
                    "ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
            }
            self.check_l2(l2_offset, active);
        }
    }

    /// Walks one L2 table.
    fn check_l2(&mut self, l2_offset: u64, active: bool) {
        let Ok(table) = self.read(l2_offset, self.cluster_size() as usize) else {
            eprintln!("ERROR: I/O error in check_refcounts_l2");
            self.report.check_errors += 1;
            return;
        };
        let mut next_contiguous = 0u64;
        let layout = self.layout;
        for (index, entry) in layout.l2_entries_of(&table).enumerate() {
            if entry.reserved_bits() != 0 {
                self.error(format!(
                    "ERROR found l2 entry with reserved bits set: {:x}",
                    entry.raw()
                ));
            }
            match entry.cluster_type(&layout) {
                ClusterType::Compressed => self.check_compressed(entry, index, active),
                ClusterType::Normal | ClusterType::ZeroAlloc => {
                    self.check_allocated(entry, active, &mut next_contiguous)
                }
                ClusterType::ZeroPlain => {}
                ClusterType::Unallocated => {
                    if entry.allocated_subclusters() != 0 {
                        self.error(
                            "ERROR: Unallocated cluster has non-zero subcluster allocation map"
                                .to_string(),
                        );
                    }
                }
            }
        }
    }

    fn check_compressed(&mut self, entry: L2Entry, index: usize, active: bool) {
        let Some(descriptor) = entry.compressed(self.layout.cluster_bits) else {
            return;
        };
        if entry.copied() {
            self.error(format!(
                "ERROR: coffset={:#x}: copied flag must never be set for compressed clusters",
                descriptor.host_offset
            ));
        }
        let raw = entry.raw();
        if self.layout.data_file {
            self.error(format!(
                "ERROR compressed cluster {index} with data file, entry={raw:#x}"
            ));
            return;
        }
        if entry.bitmap() != 0 {
            self.error(format!(
                "ERROR compressed cluster {index} with non-zero subcluster allocation bitmap, entry={raw:#x}"
            ));
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
            self.error(format!(
                "ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap"
            ));
        }
        if !offset.is_multiple_of(self.cluster_size()) {
            let has_data = if self.layout.extended_l2 {
                entry.allocated_subclusters() != 0
            } else {
                entry.cluster_type(&self.layout) == ClusterType::Normal
            };
            self.error(if has_data {
                format!("ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted.")
            } else {
                format!("ERROR offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.")
            });
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

    /// The snapshot table and each snapshot's L1 and L2 tables.
    fn check_snapshots(&mut self) {
        let count = self.header.snapshot_count();
        if count == 0 {
            return;
        }
        if self.header.has_data_file() {
            self.error(format!("ERROR {count} snapshots in image with data file"));
        }
        let entries: std::result::Result<Vec<_>, _> =
            Snapshots::new(&self.file, &self.header).collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                eprintln!("ERROR: cannot read the snapshot table: {error}");
                self.report.check_errors += 1;
                return;
            }
        };
        let mut table_end = self.header.snapshots_offset();
        for entry in &entries {
            table_end = entry.entry_end;
            let label = format!("snapshot {} ({})", entry.id, entry.name);
            if entry.l1_table_offset % self.cluster_size() != 0 {
                self.error(format!(
                    "ERROR {label} l1_offset={:#x}: L1 table is not cluster aligned; snapshot table entry corrupted",
                    entry.l1_table_offset
                ));
                continue;
            }
            if !l1_table_fits(entry.l1_entries) {
                self.error(format!(
                    "ERROR {label} l1_size={:#x}: L1 table is too large; snapshot table entry corrupted",
                    entry.l1_entries
                ));
                continue;
            }
            self.check_l1(entry.l1_table_offset, entry.l1_entries, false);
        }
        let offset = self.header.snapshots_offset();
        self.reference(offset, table_end - offset);
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
        let Ok(directory) = self.read(directory_offset, directory_size as usize) else {
            self.error("ERROR: cannot read the bitmap directory".to_string());
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
        if bytes > self.file_size {
            return;
        }
        let Ok(table) = self.read(table_offset, bytes as usize) else {
            self.error("ERROR: cannot read a bitmap table".to_string());
            return;
        };
        for entry in bitmap::TableEntry::table(&table) {
            if !entry.is_valid(self.cluster_size()) {
                self.report.corruptions += 1;
                continue;
            }
            let offset = entry.data_offset();
            if offset != 0 {
                self.reference(offset, self.cluster_size());
            }
        }
    }

    /// The bitmaps extension's directory offset and size, if the image has one.
    fn bitmaps_extension(&self) -> Option<(u64, u64)> {
        let area = self.header.extension_area();
        let mut extensions = Extensions::new(&self.file, self.file_size, area.start, area.end);
        while let Ok(Some(extension)) = extensions.next_extension() {
            if let Extension::Bitmaps {
                count,
                directory_size,
                directory_offset,
            } = extension
            {
                return (count > 0).then_some((directory_offset, directory_size));
            }
        }
        None
    }

    /// The refcount blocks: aligned, inside the file, referenced exactly once.
    fn check_refcount_blocks(&mut self) {
        let nb_clusters = self.file_size.div_ceil(self.cluster_size());
        for index in 0..self.stored.table.len() {
            let entry = self.stored.table[index];
            let offset = entry.block_offset();
            if entry.reserved_bits() != 0 {
                self.error(format!(
                    "ERROR refcount table entry {index} has reserved bits set"
                ));
                continue;
            }
            if !offset.is_multiple_of(self.cluster_size()) {
                self.error(format!(
                    "ERROR refcount block {index} is not cluster aligned; refcount table entry corrupted"
                ));
                continue;
            }
            let cluster = offset >> self.header.cluster_bits();
            if cluster >= nb_clusters {
                self.error(format!("ERROR refcount block {index} is outside image"));
                continue;
            }
            if offset != 0 {
                self.reference(offset, self.cluster_size());
                let count = self.expected[cluster as usize];
                if count != 1 {
                    self.error(format!("ERROR refcount block {index} refcount={count}"));
                }
            }
        }
    }

    /// Stored against expected refcounts: too low is corruption, too high a leak.
    fn compare_refcounts(&mut self) {
        let mut highest = 0u64;
        let cluster_size = self.cluster_size();
        for cluster in 0..self.expected.len() as u64 {
            let stored = match self
                .stored
                .get(&self.file, self.file_size, cluster_size, cluster)
            {
                Ok(stored) => stored,
                Err(error) => {
                    eprintln!("Can't get refcount for cluster {cluster}: {error}");
                    self.report.check_errors += 1;
                    continue;
                }
            };
            let expected = self.expected[cluster as usize];
            if stored > 0 || expected > 0 {
                highest = cluster;
            }
            if stored == expected {
                continue;
            }
            let what = if stored < expected { "ERROR" } else { "Leaked" };
            eprintln!("{what} cluster {cluster} refcount={stored} reference={expected}");
            if stored < expected {
                self.report.corruptions += 1;
            } else {
                self.report.leaks += 1;
            }
        }
        self.report.image_end_offset = (highest + 1) * cluster_size;
    }

    /// COPIED flags of the active tables must say "refcount is exactly one".
    fn check_copied_flags(&mut self) {
        let bytes = u64::from(self.header.l1_entries()) * L1_ENTRY_BYTES;
        let Ok(l1) = self.read(self.header.l1_table_offset(), bytes as usize) else {
            return;
        };
        let cluster_size = self.cluster_size();
        for (l1_index, l1_entry) in L1Entry::table(&l1).enumerate() {
            let l2_offset = l1_entry.l2_offset();
            if l2_offset == 0 {
                continue;
            }
            let cluster = l2_offset >> self.header.cluster_bits();
            let Ok(refcount) = self
                .stored
                .get(&self.file, self.file_size, cluster_size, cluster)
            else {
                continue;
            };
            if (refcount == 1) != l1_entry.copied() {
                self.error(format!(
                    "ERROR OFLAG_COPIED L2 cluster: l1_index={l1_index} l1_entry={:x} refcount={refcount}",
                    l1_entry.raw()
                ));
            }
            self.check_copied_l2(l2_offset);
        }
    }

    fn check_copied_l2(&mut self, l2_offset: u64) {
        let cluster_size = self.cluster_size();
        let Ok(table) = self.read(l2_offset, cluster_size as usize) else {
            eprintln!("ERROR: Could not read L2 table");
            self.report.check_errors += 1;
            return;
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
                let cluster = entry.host_cluster_offset() >> layout.cluster_bits;
                match self
                    .stored
                    .get(&self.file, self.file_size, cluster_size, cluster)
                {
                    Ok(refcount) => refcount,
                    Err(_) => continue,
                }
            };
            if (refcount == 1) != entry.copied() {
                self.error(format!(
                    "ERROR OFLAG_COPIED data cluster: l2_entry={:x} refcount={refcount}",
                    entry.raw()
                ));
            }
        }
    }
}
