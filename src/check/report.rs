//! What a check found: `qemu-img check`'s counters, the findings as plain
//! values, and the exit code.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Which of `qemu-img check`'s counters a finding adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Metadata that is wrong: data may be lost (`corruptions`).
    Corruption,
    /// A cluster with a refcount but no reference: space wasted (`leaks`).
    Leak,
    /// Something the check could not do (`check-errors`).
    CheckError,
}

/// One problem, as QEMU 7.2 reports it (its `Display` is QEMU's line).
///
/// 64 bytes on 64-bit targets; only the snapshot findings own text on the
/// heap (their id and name, at most 255 bytes each).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A structure reaches a cluster or more past the end of the file.
    PastEndOfFile {
        /// First byte.
        offset: u64,
        /// Bytes.
        size: u64,
    },
    /// More references to a cluster than its refcount width can count.
    RefcountOverflow {
        /// The cluster's offset.
        offset: u64,
    },
    /// An L1 entry with reserved bits set.
    L1ReservedBits {
        /// The raw entry.
        entry: u64,
    },
    /// An L2 table offset that is not cluster aligned.
    L2TableUnaligned {
        /// The offset.
        l2_offset: u64,
    },
    /// An L2 entry with reserved bits set.
    L2ReservedBits {
        /// The raw entry (its first word).
        entry: u64,
    },
    /// An unallocated cluster whose subcluster bitmap marks allocations.
    UnallocatedWithSubclusters,
    /// A compressed cluster with the COPIED flag.
    CompressedCopied {
        /// Its host offset.
        host_offset: u64,
    },
    /// A compressed cluster in an image with an external data file.
    CompressedWithDataFile {
        /// Its index in the L2 table.
        index: usize,
        /// The raw entry.
        entry: u64,
    },
    /// A compressed cluster with a non-zero subcluster bitmap.
    CompressedWithBitmap {
        /// Its index in the L2 table.
        index: usize,
        /// The raw entry.
        entry: u64,
    },
    /// A cluster whose subclusters are marked both zero and allocated.
    SubclusterBitmapCorrupt {
        /// The cluster's host offset.
        offset: u64,
    },
    /// A data (or preallocated zero) cluster that is not cluster aligned.
    ClusterUnaligned {
        /// The host offset.
        offset: u64,
        /// Whether the cluster holds data (else it is a preallocated zero cluster).
        has_data: bool,
    },
    /// Internal snapshots in an image with an external data file.
    SnapshotsWithDataFile {
        /// How many.
        count: u32,
    },
    /// A v3 snapshot table entry with less than 16 bytes of extra data.
    SnapshotIncomplete {
        /// Its index in the table.
        index: u32,
    },
    /// A snapshot's L1 table is not cluster aligned.
    SnapshotL1Unaligned {
        /// The snapshot's id (as QEMU prints it).
        id: String,
        /// Its name (as QEMU prints it).
        name: String,
        /// The L1 table offset.
        l1_offset: u64,
    },
    /// A snapshot's L1 table is above QEMU's 32 MiB limit.
    SnapshotL1TooLarge {
        /// The snapshot's id (as QEMU prints it).
        id: String,
        /// Its name (as QEMU prints it).
        name: String,
        /// Its L1 entries.
        l1_entries: u32,
    },
    /// A bitmap directory that cannot be read.
    BitmapDirectoryUnreadable,
    /// A bitmap table that cannot be read.
    BitmapTableUnreadable,
    /// An invalid bitmap table entry.
    BitmapEntryInvalid,
    /// A refcount table entry with reserved bits set.
    RefcountEntryReservedBits {
        /// Index in the refcount table.
        index: u64,
    },
    /// A refcount block that is not cluster aligned.
    RefcountBlockUnaligned {
        /// Index in the refcount table.
        index: u64,
    },
    /// A refcount block outside the file.
    RefcountBlockOutside {
        /// Index in the refcount table.
        index: u64,
    },
    /// A refcount block referenced more (or less) than once.
    RefcountBlockShared {
        /// Index in the refcount table.
        index: u64,
        /// Its references.
        references: u64,
    },
    /// A cluster whose stored refcount is below its references.
    RefcountTooLow {
        /// The cluster index.
        cluster: u64,
        /// The stored refcount.
        stored: u64,
        /// The references found.
        references: u64,
    },
    /// A cluster whose stored refcount is above its references.
    Leaked {
        /// The cluster index.
        cluster: u64,
        /// The stored refcount.
        stored: u64,
        /// The references found.
        references: u64,
    },
    /// An L1 entry's COPIED flag disagrees with its L2 table's refcount.
    CopiedFlagL2 {
        /// Index in the active L1 table.
        l1_index: usize,
        /// The raw entry.
        entry: u64,
        /// The L2 table's stored refcount.
        refcount: u64,
    },
    /// An L2 entry's COPIED flag disagrees with its cluster's refcount.
    CopiedFlagData {
        /// The raw entry.
        entry: u64,
        /// The cluster's stored refcount.
        refcount: u64,
    },
    /// The active L1 table is larger than QEMU's limit.
    L1TooLarge {
        /// Its entries.
        entries: u32,
    },
    /// An L1 table cannot be read (it lies beyond QEMU's largest offset).
    L1Unreadable,
    /// An L2 table cannot be read while checking the COPIED flags.
    L2Unreadable,
    /// A stored refcount cannot be read (its block's offset is unaligned or
    /// beyond QEMU's largest offset).
    RefcountUnreadable {
        /// The cluster index.
        cluster: u64,
    },
    /// The snapshot table's count or offset is invalid.
    SnapshotTableInvalid {
        /// QEMU's words, e.g. "snapshot table too large".
        reason: &'static str,
    },
    /// The snapshot table cannot be read.
    SnapshotTableUnreadable {
        /// Why.
        reason: String,
    },
}

impl Finding {
    /// The counter this finding adds to.
    pub fn severity(&self) -> Severity {
        use Finding::*;
        match self {
            Leaked { .. } => Severity::Leak,
            L1TooLarge { .. }
            | L1Unreadable
            | L2Unreadable
            | RefcountUnreadable { .. }
            | SnapshotTableInvalid { .. }
            | SnapshotTableUnreadable { .. } => Severity::CheckError,
            _ => Severity::Corruption,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Finding::*;
        match self {
            PastEndOfFile { offset, size } => write!(
                f,
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {offset:#x} size {size:#x}"
            ),
            RefcountOverflow { offset } => write!(f, "ERROR: overflow cluster offset={offset:#x}"),
            L1ReservedBits { entry } => {
                write!(f, "ERROR found L1 entry with reserved bits set: {entry:x}")
            }
            L2TableUnaligned { l2_offset } => write!(
                f,
                "ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry corrupted"
            ),
            L2ReservedBits { entry } => {
                write!(f, "ERROR found l2 entry with reserved bits set: {entry:x}")
            }
            UnallocatedWithSubclusters => f.write_str(
                "ERROR: Unallocated cluster has non-zero subcluster allocation map",
            ),
            CompressedCopied { host_offset } => write!(
                f,
                "ERROR: coffset={host_offset:#x}: copied flag must never be set for compressed clusters"
            ),
            CompressedWithDataFile { index, entry } => write!(
                f,
                "ERROR compressed cluster {index} with data file, entry={entry:#x}"
            ),
            CompressedWithBitmap { index, entry } => write!(
                f,
                "ERROR compressed cluster {index} with non-zero subcluster allocation bitmap, entry={entry:#x}"
            ),
            SubclusterBitmapCorrupt { offset } => write!(
                f,
                "ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap"
            ),
            ClusterUnaligned { offset, has_data } => write!(
                f,
                "ERROR offset={offset:x}: {} cluster is not properly aligned; L2 entry corrupted.",
                if *has_data { "Data" } else { "Preallocated" }
            ),
            SnapshotsWithDataFile { count } => {
                write!(f, "ERROR {count} snapshots in image with data file")
            }
            SnapshotIncomplete { index } => {
                write!(f, "ERROR snapshot table entry {index} is incomplete")
            }
            SnapshotL1Unaligned { id, name, l1_offset } => write!(
                f,
                "ERROR snapshot {id} ({name}) l1_offset={l1_offset:#x}: L1 table is not cluster aligned; snapshot table entry corrupted"
            ),
            SnapshotL1TooLarge {
                id,
                name,
                l1_entries,
            } => write!(
                f,
                "ERROR snapshot {id} ({name}) l1_size={l1_entries:#x}: L1 table is too large; snapshot table entry corrupted"
            ),
            BitmapDirectoryUnreadable => f.write_str("ERROR: cannot read the bitmap directory"),
            BitmapTableUnreadable => f.write_str("ERROR: cannot read a bitmap table"),
            BitmapEntryInvalid => f.write_str("ERROR: invalid bitmap table entry"),
            RefcountEntryReservedBits { index } => {
                write!(f, "ERROR refcount table entry {index} has reserved bits set")
            }
            RefcountBlockUnaligned { index } => write!(
                f,
                "ERROR refcount block {index} is not cluster aligned; refcount table entry corrupted"
            ),
            RefcountBlockOutside { index } => {
                write!(f, "ERROR refcount block {index} is outside image")
            }
            RefcountBlockShared { index, references } => {
                write!(f, "ERROR refcount block {index} refcount={references}")
            }
            RefcountTooLow {
                cluster,
                stored,
                references,
            } => write!(
                f,
                "ERROR cluster {cluster} refcount={stored} reference={references}"
            ),
            Leaked {
                cluster,
                stored,
                references,
            } => write!(
                f,
                "Leaked cluster {cluster} refcount={stored} reference={references}"
            ),
            CopiedFlagL2 {
                l1_index,
                entry,
                refcount,
            } => write!(
                f,
                "ERROR OFLAG_COPIED L2 cluster: l1_index={l1_index} l1_entry={entry:x} refcount={refcount}"
            ),
            CopiedFlagData { entry, refcount } => write!(
                f,
                "ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={refcount}"
            ),
            L1TooLarge { entries } => write!(f, "ERROR: L1 table of {entries} entries is too large"),
            L1Unreadable => f.write_str("ERROR: I/O error in check_refcounts_l1"),
            L2Unreadable => f.write_str("ERROR: Could not read L2 table: Input/output error"),
            RefcountUnreadable { cluster } => write!(
                f,
                "Can't get refcount for cluster {cluster}: Input/output error"
            ),
            SnapshotTableInvalid { reason } => write!(f, "ERROR {reason}"),
            SnapshotTableUnreadable { reason } => {
                write!(f, "ERROR failed to read the snapshot table: {reason}")
            }
        }
    }
}

/// Why a check stopped before its end, as QEMU's check returns an error
/// (`qemu-img check` then prints no summary, says `Check failed: ...` and
/// exits with 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A table needed to go on could not be read (EIO).
    Io,
    /// The snapshot table is too large (EFBIG).
    TooBig,
    /// The snapshot table is invalid (EINVAL).
    Invalid,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // strerror's words, which `qemu-img check` prints.
        f.write_str(match self {
            Stopped::Io => "Input/output error",
            Stopped::TooBig => "File too large",
            Stopped::Invalid => "Invalid argument",
        })
    }
}

/// What a check found, with `qemu-img check`'s counters.
///
/// `Display` prints QEMU's summary (what `qemu-img check` writes to
/// standard output); the findings are QEMU's lines on standard error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// References above the stored refcount and other invalid metadata.
    pub corruptions: u64,
    /// Clusters whose stored refcount is above their references.
    pub leaks: u64,
    /// Metadata that could not be read.
    pub check_errors: u64,
    /// Clusters of the virtual disk.
    pub total_clusters: u64,
    /// Clusters the active L1 table maps.
    pub allocated_clusters: u64,
    /// Mapped clusters not right after the previous one in the file.
    pub fragmented_clusters: u64,
    /// Compressed clusters of the active L1 table.
    pub compressed_clusters: u64,
    /// End of the last cluster in use or with a refcount.
    pub image_end_offset: u64,
    /// The findings, in QEMU's order, up to [`CheckLimits::max_findings`](super::CheckLimits::max_findings).
    pub findings: Vec<Finding>,
    /// Findings counted but not kept (past the limit).
    pub findings_dropped: u64,
    /// Set when the check stopped early, as QEMU's does.
    pub stopped: Option<Stopped>,
}

impl Report {
    /// `qemu-img check`'s exit code: 1 when the check failed or met check
    /// errors, 2 corruptions, 3 leaks only, 0 clean.
    pub fn exit_code(&self) -> u8 {
        if self.stopped.is_some() || self.check_errors > 0 {
            1
        } else if self.corruptions > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }

    /// Whether QEMU prints the summary (it does not when the check stopped).
    pub fn has_summary(&self) -> bool {
        self.stopped.is_none()
    }

    /// QEMU's last line on standard error, if any: `Check failed` with the
    /// reason when the check stopped, alone when it met check errors.
    pub fn failure_line(&self) -> Option<String> {
        use alloc::format;
        match self.stopped {
            Some(reason) => Some(format!("Check failed: {reason}")),
            None if self.check_errors > 0 => Some(String::from("Check failed")),
            None => None,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.corruptions == 0 && self.leaks == 0 && self.check_errors == 0 {
            writeln!(f, "No errors were found on the image.")?;
        } else {
            if self.corruptions > 0 {
                write!(
                    f,
                    "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                    self.corruptions
                )?;
            }
            if self.leaks > 0 {
                write!(
                    f,
                    "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                    self.leaks
                )?;
            }
            if self.check_errors > 0 {
                write!(
                    f,
                    "\n{} internal errors have occurred during the check.\n",
                    self.check_errors
                )?;
            }
        }
        if self.total_clusters != 0 && self.allocated_clusters != 0 {
            let allocated = self.allocated_clusters as f64;
            writeln!(
                f,
                "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
                self.allocated_clusters,
                self.total_clusters,
                allocated * 100.0 / self.total_clusters as f64,
                self.fragmented_clusters as f64 * 100.0 / allocated,
                self.compressed_clusters as f64 * 100.0 / allocated
            )?;
        }
        if self.image_end_offset != 0 {
            writeln!(f, "Image end offset: {}", self.image_end_offset)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_is_small_whatever_its_kind() {
        // max_findings of them are kept: the size is part of the bound.
        assert!(
            core::mem::size_of::<Finding>() <= 64,
            "{}",
            core::mem::size_of::<Finding>()
        );
    }

    #[test]
    fn the_exit_code_is_qemu_img_checks() {
        let mut report = Report::default();
        assert_eq!(report.exit_code(), 0);
        report.leaks = 1;
        assert_eq!(report.exit_code(), 3);
        report.corruptions = 1;
        assert_eq!(report.exit_code(), 2);
        report.check_errors = 1;
        assert_eq!(report.exit_code(), 1);
        assert_eq!(report.failure_line().as_deref(), Some("Check failed"));
        report.stopped = Some(Stopped::Io);
        assert!(!report.has_summary());
        assert_eq!(
            report.failure_line().as_deref(),
            Some("Check failed: Input/output error")
        );
    }
}
