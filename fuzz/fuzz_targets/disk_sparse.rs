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
use qcow2_disk::{EntryKind, FileSystem, Limits, Slice, Table};
use qcow2_reader_fuzz::{HeapWatch, SparseDisk};

type Volume = FileSystem<Slice<Arc<SparseDisk>>>;

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
/// Directory levels walked below the root.
const MAX_DEPTH: u32 = 3;
/// Entries looked at in one directory, and in all.
const MAX_ENTRIES: usize = 32;
const MAX_TOTAL: u32 = 128;
/// Bytes read from one file.
const MAX_FILE_BYTES: u64 = 1 << 20;

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
        walk(&fs, "/", 0, &mut budget);
        for path in ["/.", "/..", "/a/../b", "/A/./B/", "/link", "/dir/up"] {
            let _ = fs.metadata(path);
            read_file(&fs, path);
        }
    }
    assert!(
        watch.largest() <= MAX_ALLOCATION,
        "one allocation of {} bytes",
        watch.largest()
    );
});

fn walk(fs: &Volume, path: &str, depth: u32, budget: &mut u32) {
    if depth > MAX_DEPTH || *budget == 0 {
        return;
    }
    let mut entries = Vec::new();
    let listed = fs.read_dir(path, &mut |entry| {
        if entries.len() < MAX_ENTRIES {
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
            EntryKind::Directory => walk(fs, &child, depth + 1, budget),
            EntryKind::File | EntryKind::Symlink => read_file(fs, &child),
            EntryKind::Other => {}
        }
    }
}

fn read_file(fs: &Volume, path: &str) {
    let Ok(mut file) = fs.open_file(path) else {
        return;
    };
    let mut buf = [0u8; 4099];
    let mut total = 0u64;
    while total < MAX_FILE_BYTES {
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
