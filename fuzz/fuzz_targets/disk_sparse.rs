//! A large sparse disk described by the input: a declared size (up to
//! 16 TiB) and (offset, bytes) patches over zeros, so partitions of any size
//! and file systems announcing huge counts are reached without the fuzzer
//! having to write them out (the `disk` target's input is the whole disk, so
//! it never sees a partition larger than a few KiB).
//!
//! Read the partition table, open each partition's file system within
//! [`LIMITS`], list directories, stat odd paths and read files through
//! symlinks; nothing may panic, loop, or make one allocation larger than
//! [`MAX_ALLOCATION`] (the counting allocator of `src/lib.rs`).
//!
//! Input: 8 bytes little-endian disk size (taken modulo 16 TiB, at least
//! 1 MiB), then patches, each 8 bytes little-endian offset (modulo the
//! size), 2 bytes little-endian length, that many bytes (cut at the end of
//! the input). Later patches win where they overlap.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use qcow2_disk::{FileSystem, Limits, Table};
use qcow2_reader_fuzz::{read_volume_file, walk_volume, HeapWatch, SparseDisk};

/// The limits the target opens file systems with: the firmware's order of
/// magnitude, so the allocation bound below holds.
const LIMITS: Limits = Limits {
    max_block_groups: 1 << 16,
    max_directory_bytes: 16 << 20,
    max_journal_bytes: 64 << 20,
};
/// The largest single allocation allowed: the group descriptor vector at
/// the limit (16 bytes per group), or ext4-view's block cache entries and
/// read buffer (64 KiB blocks at most).
const MAX_ALLOCATION: usize = (1 << 16) * 16;
/// Entries looked at in all.
const MAX_TOTAL: u32 = 128;

fuzz_target!(|data: &[u8]| {
    let Some(disk) = SparseDisk::parse(data) else {
        return;
    };
    let disk = Arc::new(disk);
    let watch = HeapWatch::start();
    let Ok(table) = Table::read(&disk) else {
        return;
    };
    for partition in table.partitions.iter().take(4) {
        let _ = partition.type_name();
        let Ok(fs) = FileSystem::open_with(partition.slice(disk.clone()), &LIMITS) else {
            continue;
        };
        let _ = fs.label();
        let mut budget = MAX_TOTAL;
        walk_volume(&fs, "/", 0, &mut budget);
        for path in ["/.", "/..", "/a/../b", "/A/./B/", "/link", "/dir/up"] {
            let _ = fs.metadata(path);
            read_volume_file(&fs, path);
        }
    }
    assert!(
        watch.largest() <= MAX_ALLOCATION,
        "one allocation of {} bytes",
        watch.largest()
    );
});
