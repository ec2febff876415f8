//! Image bytes, backing image bytes and a list of reads, through `open` with
//! caller memory: with no backing, with the second slice as a raw backing
//! image, and with it as a qcow2 backing image; every read also via `extent`.
//!
//! Input layout (a fixed prefix, so that seeds made from `qemu-img` images
//! keep their structure under mutation):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | configuration (see `config_from`) |
//! | 1 | bit 0..1: backing as none / raw / qcow2 / ignored |
//! | 2..6 | backing length (big-endian, modulo what is left) |
//! | 6..54 | four reads: u64 offset, u32 length (big-endian) |
//! | 54..64 | reserved |
//! | 64.. | backing bytes, then image bytes |
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcow2_reader::{Image, NoBacking, Raw};
use qcow2_reader_fuzz::{
    check_read, config_from, geometry, skip_long_snapshot_table, BackingKind, Role, Strict,
};

const PREFIX: usize = 64;
const READS: usize = 4;
/// Longest single read: a few of the largest clusters.
const MAX_READ: usize = 5 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() < PREFIX {
        return;
    }
    let (prefix, rest) = data.split_at(PREFIX);
    let config = config_from(prefix[0]);
    let mode = prefix[1] & 3;
    let backing_len = u32::from_be_bytes(prefix[2..6].try_into().unwrap()) as usize;
    let backing_len = backing_len % (rest.len() + 1);
    let (backing_bytes, image_bytes) = rest.split_at(backing_len);
    let reads: Vec<(u64, usize)> = (0..READS)
        .map(|i| {
            let at = 6 + 12 * i;
            let offset = u64::from_be_bytes(prefix[at..at + 8].try_into().unwrap());
            let len = u32::from_be_bytes(prefix[at + 8..at + 12].try_into().unwrap());
            // Mostly small reads; sometimes long ones.
            let len = if len & 0x8000_0000 != 0 {
                len as usize % MAX_READ
            } else {
                len as usize % 70_000
            };
            (offset, len)
        })
        .collect();

    if skip_long_snapshot_table(image_bytes) || skip_long_snapshot_table(backing_bytes) {
        return;
    }
    let storage = Strict(image_bytes, Role::Top);
    let Ok(builder) = Image::builder(storage) else {
        return;
    };
    let header = builder.header().clone();
    let Ok(needed) = builder.memory_bytes(&config) else {
        return;
    };
    let mut memory = vec![0u8; needed];
    let geometry = geometry(&header, &config, u64::from(header.l1_entries()));
    match mode {
        0 | 3 => {
            let builder = if mode == 3 {
                builder.ignore_backing()
            } else {
                builder
            };
            let Ok(image) = builder.open(&mut memory, &config) else {
                return;
            };
            for &(offset, len) in &reads {
                check_read(&image, geometry, BackingKind::None, offset, len);
            }
        }
        1 => {
            let backing = Raw(Strict(backing_bytes, Role::Backing));
            let Ok(image) = builder.backing(backing).open(&mut memory, &config) else {
                return;
            };
            for &(offset, len) in &reads {
                check_read(&image, geometry, BackingKind::Raw, offset, len);
            }
        }
        _ => {
            let Ok(backing_builder) = Image::builder(Strict(backing_bytes, Role::Backing)) else {
                return;
            };
            let backing_header = backing_builder.header().clone();
            let backing_config = config_from(prefix[0].rotate_left(3));
            let Ok(backing) = backing_builder.ignore_backing().open_alloc(&backing_config) else {
                return;
            };
            let backing_geometry = geometry_of(&backing_header, &backing_config);
            let backing: Image<'static, Strict<'_>, NoBacking> = backing;
            let Ok(image) = builder.backing(backing).open(&mut memory, &config) else {
                return;
            };
            for &(offset, len) in &reads {
                check_read(
                    &image,
                    geometry,
                    BackingKind::Qcow2(backing_geometry),
                    offset,
                    len,
                );
            }
        }
    }
});

fn geometry_of(
    header: &qcow2_reader::Header,
    config: &qcow2_reader::Config,
) -> qcow2_reader_fuzz::Geometry {
    geometry(header, config, u64::from(header.l1_entries()))
}
