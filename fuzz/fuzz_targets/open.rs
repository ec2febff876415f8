//! Arbitrary bytes as an image file: validate the header, walk what
//! `qemu-img info` shows (extensions, feature names, snapshots), then open it
//! (and each of its first snapshots) with a small configuration and read a
//! little. Nothing may panic; see `qcow2_reader_fuzz` for the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcow2_reader::extension::{Extensions, FeatureNames};
use qcow2_reader::{Config, Image, Snapshots};
use qcow2_reader_fuzz::{
    check_read, config_from, geometry, skip_long_snapshot_table, BackingKind, Role, Strict,
};

fuzz_target!(|data: &[u8]| {
    let storage = Strict(data, Role::Top);
    // Extensions from any start to any end, also on images the header refuses.
    if data.len() >= 8 {
        let start = u64::from(data[5] & 0x7f) * 8;
        let end = start + u64::from(u16::from_be_bytes([data[6], data[7]]));
        let mut extensions = Extensions::new(&storage, data.len() as u64, start, end);
        for _ in 0..64 {
            match extensions.next_extension() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    if skip_long_snapshot_table(data) {
        return;
    }
    let Ok(builder) = Image::builder(storage) else {
        return;
    };
    let header = builder.header().clone();
    let _ = (
        header.virtual_size(),
        header.backing_file(),
        header.data_file(),
    );
    let mut extensions = Extensions::new(
        &storage,
        header.file_size(),
        u64::from(header.header_length()),
        header.cluster_size(),
    );
    while let Ok(Some(_)) = extensions.next_extension() {}
    if let Some((offset, len)) = header.feature_table() {
        for row in FeatureNames::new(&storage, offset, len) {
            let _ = row.map(|row| row.name.as_str().len());
        }
    }
    let config = config_from(data.get(9).copied().unwrap_or(0) | 0x10);
    let snapshots: Vec<_> = Snapshots::new(&storage, &header)
        .take(4)
        .filter_map(Result::ok)
        .collect();
    // Listing must agree with the open-time validation of the whole table.
    assert!(Snapshots::new(&storage, &header).all(|s| s.is_ok()));

    open_and_read(builder, &config, u64::from(header.l1_entries()));
    for snapshot in &snapshots {
        let Ok(builder) = Image::builder(storage) else {
            unreachable!("the same bytes opened a moment ago");
        };
        if let Ok(builder) = builder.snapshot(snapshot) {
            open_and_read(builder, &config, u64::from(snapshot.l1_entries));
        }
    }
});

fn open_and_read(
    builder: qcow2_reader::ImageBuilder<Strict<'_>>,
    config: &Config,
    l1_entries: u64,
) {
    let header = builder.header().clone();
    let Ok(needed) = builder.memory_bytes(config) else {
        return;
    };
    let mut memory = vec![0u8; needed];
    let builder = builder.ignore_backing();
    let Ok(image) = builder.open(&mut memory, config) else {
        return;
    };
    let geometry = geometry(&header, config, l1_entries);
    let size = image.virtual_size();
    check_read(&image, geometry, BackingKind::None, 0, 4096);
    check_read(
        &image,
        geometry,
        BackingKind::None,
        size.saturating_sub(700),
        700,
    );
}
