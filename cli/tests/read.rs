//! `qcow cat` and `qcow convert` return exactly the bytes `qemu-img convert -O raw` does.

mod common;

use common::*;

/// An image with data, zero clusters, a discarded range and an unaligned write.
fn mixed_image(scratch: &Scratch, name: &str, options: &str) -> std::path::PathBuf {
    let image = scratch.create(name, "8M", options);
    qemu_io(
        &image,
        &[
            "write -P 0x11 0 1M",
            "write -P 0x22 1536k 100k",
            "write -z 256k 128k",
            "write -P 0x33 3M 1M",
            "discard 3M 64k",
            "write -P 0x44 8191k 1k",
        ],
    );
    image
}

fn assert_reads_like_qemu(image: &std::path::Path, snapshot: Option<&str>) {
    let mut cat_args = vec!["cat"];
    let mut convert_args = vec!["convert"];
    if let Some(snapshot) = snapshot {
        cat_args.extend(["--snapshot", snapshot]);
        convert_args.extend(["-l", snapshot]);
    }
    // `qemu-img convert` takes the same `-l SNAPSHOT IMAGE`.
    let source = [&convert_args[1..], &[text(image)]].concat();
    let expected = convert_raw(&source, &image.with_extension("qemu.raw"));
    cat_args.push(text(image));
    let cat = qcow_ok(&cat_args);
    assert!(
        cat == expected,
        "qcow cat differs from qemu-img for {image:?}"
    );
    let out = image.with_extension("out.raw");
    convert_args.extend([text(image), text(&out)]);
    qcow_ok(&convert_args);
    let converted = std::fs::read(&out).expect("converted file");
    assert!(
        converted == expected,
        "qcow convert differs from qemu-img for {image:?}"
    );
}

#[test]
fn plain_images_read_like_qemu() {
    let scratch = Scratch::new();
    for (name, options) in [
        ("v3.qcow2", ""),
        ("v2.qcow2", "compat=0.10"),
        ("small-clusters.qcow2", "cluster_size=512"),
        ("big-clusters.qcow2", "cluster_size=2M"),
        ("extended-l2.qcow2", "extended_l2=on,cluster_size=128k"),
    ] {
        let image = mixed_image(&scratch, name, options);
        assert_reads_like_qemu(&image, None);
    }
}

#[test]
fn compressed_images_read_like_qemu() {
    let scratch = Scratch::new();
    let source = mixed_image(&scratch, "source.qcow2", "");
    for codec in ["zlib", "zstd"] {
        let image = scratch.path(&format!("{codec}.qcow2"));
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &format!("compression_type={codec}"),
            text(&source),
            text(&image),
        ]);
        assert_reads_like_qemu(&image, None);
    }
}

#[test]
fn backing_chains_read_like_qemu() {
    let scratch = Scratch::new();
    let raw = scratch.path("bottom.raw");
    qemu_img(&["create", "-q", "-f", "raw", text(&raw), "4M"]);
    qemu_io_as(&raw, "raw", &["write -P 0x01 0 4M"]);
    let middle = scratch.create_on("middle.qcow2", "bottom.raw", "raw");
    qemu_io(&middle, &["write -P 0x02 1M 1M", "write -z 3M 64k"]);
    // A longer top: past the backing file's end the disk reads as zeros.
    let top = scratch.create_on("top.qcow2", "middle.qcow2", "qcow2");
    qemu_img(&["resize", "-q", text(&top), "6M"]);
    qemu_io(&top, &["write -P 0x03 1536k 1M", "write -P 0x04 5M 64k"]);
    assert_reads_like_qemu(&top, None);
    assert_reads_like_qemu(&middle, None);

    let expected = qemu_raw(&scratch, &top, &[]);
    let range = qcow_ok(&[
        "cat",
        "--offset",
        "1000000",
        "--length",
        "3000000",
        text(&top),
    ]);
    assert!(range == expected[1_000_000..4_000_000], "cat range differs");
}

#[test]
fn snapshots_read_like_qemu_convert_l() {
    let scratch = Scratch::new();
    let image = mixed_image(&scratch, "snap.qcow2", "");
    qemu_img(&["snapshot", "-c", "before", text(&image)]);
    qemu_io(&image, &["write -P 0x55 0 2M", "write -z 3M 1M"]);
    qemu_img(&["snapshot", "-c", "after", text(&image)]);
    qemu_io(&image, &["write -P 0x66 512k 64k"]);
    assert_reads_like_qemu(&image, Some("before"));
    assert_reads_like_qemu(&image, Some("2"));
    assert_reads_like_qemu(&image, None);
}

#[test]
fn convert_writes_holes_for_zero_extents() {
    let scratch = Scratch::new();
    let image = scratch.create("sparse.qcow2", "1G", "");
    qemu_io(&image, &["write -P 0x77 512M 1M"]);
    let out = scratch.path("sparse.raw");
    qcow_ok(&["convert", text(&image), text(&out)]);
    let metadata = std::fs::metadata(&out).expect("output");
    assert_eq!(metadata.len(), 1 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(metadata.blocks() * 512 < 8 << 20, "output is not sparse");
}

#[test]
fn external_data_files_read_like_qemu() {
    let scratch = Scratch::new();
    let image = scratch.create("external.qcow2", "4M", "data_file={dir}/external.data");
    qemu_io(&image, &["write -P 0x12 64k 1M", "write -z 2M 64k"]);
    assert_reads_like_qemu(&image, None);
}
