//! Arbitrary bytes as a whole disk: read its partition table, open the file
//! system of each partition, list directories a few levels deep and read
//! files through symlinks. Nothing may panic, loop or allocate without
//! bound, and no read may return more bytes than the file's size.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use qcow2_disk::{FileSystem, Table};
use qcow2_reader_fuzz::{read_volume_file, walk_volume};

/// Entries looked at in all.
const MAX_TOTAL: u32 = 256;

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
        walk_volume(&fs, "/", 0, &mut budget);
        for path in ["/.", "/..", "/a/../b", "/A/./B/"] {
            let _ = fs.metadata(path);
            read_volume_file(&fs, path);
        }
    }
});
