//! Arbitrary bytes as a whole disk: read its partition table, open the file
//! system of each partition, list directories a few levels deep and read
//! files through symlinks. Nothing may panic, loop or allocate without
//! bound, and no read may return more bytes than the file's size.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use qcow2_disk::{EntryKind, FileSystem, Slice, Table};

type Volume = FileSystem<Slice<Arc<Vec<u8>>>>;

/// Directory levels walked below the root.
const MAX_DEPTH: u32 = 3;
/// Entries looked at in one directory, and in all.
const MAX_ENTRIES: usize = 32;
const MAX_TOTAL: u32 = 256;
/// Bytes read from one file.
const MAX_FILE_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let disk = Arc::new(data.to_vec());
    let Ok(table) = Table::read(&disk) else {
        return;
    };
    for partition in table.partitions.iter().take(8) {
        let _ = partition.type_name();
        let Ok(fs) = FileSystem::open(partition.slice(disk.clone())) else {
            continue;
        };
        let _ = fs.label();
        let mut budget = MAX_TOTAL;
        walk(&fs, "/", 0, &mut budget);
        for path in ["/.", "/..", "/a/../b", "/A/./B/"] {
            let _ = fs.metadata(path);
            read_file(&fs, path);
        }
    }
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
