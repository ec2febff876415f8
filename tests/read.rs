//! Every kind of image QEMU makes reads byte-identically to `qemu-img convert -O raw`.

mod common;

use common::*;

/// Writes a mix of patterns, zero ranges, discards and unaligned writes.
fn scribble(image: &std::path::Path, cluster: u64) {
    let c = cluster;
    let commands = [
        format!("write -P 0x11 0 {}", 3 * c),
        format!("write -P 0x22 {} {}", 5 * c + 512, c),
        format!("write -z {} {}", c, c),
        format!("discard {} {}", 2 * c, c),
        format!("write -P 0x33 {} 4096", 40 * c + 1024),
        format!("write -P 0x44 {} {}", 100 * c, 8 * c),
        format!("write -z {} {}", 102 * c, 2 * c),
    ];
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    common::qemu_io(image, &commands);
}

fn check(options: &str, size: &str, cluster: u64) {
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    create(&image, options, size);
    scribble(&image, cluster);
    assert_reads_like_qemu(&scratch, &image);
}

#[test]
fn version3_64k() {
    check("", "16M", 65536);
}

#[test]
fn version2() {
    check("compat=0.10", "16M", 65536);
}

#[test]
fn clusters_512_bytes() {
    check("cluster_size=512", "1M", 512);
}

#[test]
fn clusters_2_mib() {
    check("cluster_size=2M", "300M", 2 << 20);
}

#[test]
fn extended_l2() {
    check("extended_l2=on,cluster_size=64k", "16M", 65536);
}

#[test]
fn extended_l2_subclusters() {
    // 2 KiB subclusters written and zeroed one by one.
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    create(&image, "extended_l2=on,cluster_size=64k", "4M");
    qemu_io(
        &image,
        &[
            "write -P 0x51 2k 2k",
            "write -z 8k 4k",
            "write -P 0x52 62k 4k",
            "write -P 0x53 1M 6k",
        ],
    );
    assert_reads_like_qemu(&scratch, &image);
}

#[test]
fn lazy_refcounts_and_odd_size() {
    check("lazy_refcounts=on", "16777217", 65536);
}

#[test]
fn preallocated_metadata_and_full() {
    check("preallocation=metadata", "16M", 65536);
    check("preallocation=falloc", "16M", 65536);
}

#[test]
fn large_sparse_image_in_fixed_memory() {
    use qcow2_reader::{Config, Image};
    let scratch = Scratch::new();
    let small = scratch.path("small.qcow2");
    let large = scratch.path("large.qcow2");
    create(&small, "", "2M");
    create(&large, "", "2T");
    qemu_io(
        &large,
        &[
            "write -P 0x77 1099511627776 64k",
            "write -P 0x78 2199023190016 65536",
        ],
    );
    let config = Config::default();
    let small_builder = Image::builder(std::fs::File::open(&small).unwrap()).unwrap();
    let large_builder = Image::builder(std::fs::File::open(&large).unwrap()).unwrap();
    let memory = small_builder.memory_bytes(&config).unwrap();
    assert_eq!(
        memory,
        large_builder.memory_bytes(&config).unwrap(),
        "memory must not depend on the disk size"
    );
    let mut region = vec![0u8; memory];
    let image = large_builder.open(&mut region, &config).unwrap();
    let mut buf = vec![0u8; 65536];
    image.read_at(1 << 40, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x77));
    image
        .read_at(image.virtual_size() - 65536, &mut buf)
        .unwrap();
    assert!(buf.iter().all(|&b| b == 0x78));
    image.read_at(1 << 30, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // A hole in the L1 table is one lookup, not one per cluster.
    let hole = image.extent(0, u64::MAX).unwrap();
    assert_eq!(
        (hole.len, hole.kind),
        (
            1 << 40,
            qcow2_reader::Mapping::Unallocated { kept_offset: None }
        )
    );
    let mut past = [0u8; 2];
    assert!(matches!(
        image.read_at(image.virtual_size() - 1, &mut past),
        Err(qcow2_reader::Error::OutOfRange { .. })
    ));
}

#[test]
fn clusters_4k_and_refcount_widths() {
    check("cluster_size=4k", "2M", 4096);
    check("refcount_bits=1", "16M", 65536);
    check("refcount_bits=64", "16M", 65536);
}

#[test]
fn zero_writes_with_and_without_unmap() {
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    create(&image, "", "8M");
    qemu_io(
        &image,
        &[
            "write -P 0x61 0 4M",
            "write -z 64k 128k",
            "write -z -u 1M 256k",
            "write -z -u 3M 1k",
        ],
    );
    assert_reads_like_qemu(&scratch, &image);
}

#[test]
fn internal_snapshots_present() {
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    create(&image, "", "16M");
    scribble(&image, 65536);
    qemu_img(&["snapshot", "-c", "before", image.to_str().unwrap()]);
    qemu_io(&image, &["write -P 0x99 0 1M"]);
    assert_reads_like_qemu(&scratch, &image);
}
