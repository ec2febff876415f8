//! Compressed clusters, backing chains, external data files and snapshots,
//! each compared with QEMU's reading of the same image.

mod common;

use std::path::Path;

use common::*;
use qcow2_reader::chain::{open_chain, ChainError, ChainOptions};

fn pattern_raw(path: &Path, size: usize) {
    // Compressible but not trivial: runs of a counter, and some noise.
    let mut bytes = vec![0u8; size];
    let mut state = 0x9e37_79b9u32;
    for (i, byte) in bytes.iter_mut().enumerate() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *byte = if (i / 4096) % 3 == 0 {
            (state >> 24) as u8
        } else {
            (i / 512) as u8
        };
    }
    // A hole so that compression leaves some clusters unallocated.
    bytes[size / 2..size / 2 + 200_000].fill(0);
    std::fs::write(path, bytes).unwrap();
}

/// Word salad: compressors code its literals with Huffman tables and cut it
/// into many short matches, the block layouts that random or run-filled data
/// does not reach.
fn text_raw(path: &Path, size: usize) {
    const WORDS: [&str; 16] = [
        "qcow2 ",
        "cluster ",
        "the ",
        "table ",
        "of ",
        "L2 ",
        "image, ",
        "refcount\n",
        "backing ",
        "zstd ",
        "a ",
        "snapshot ",
        "deflate. ",
        "header ",
        "to ",
        "offset ",
    ];
    let mut text = Vec::with_capacity(size + 64);
    let mut state = 0x2545_f491u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    while text.len() < size {
        let choice = next();
        if choice % 4 == 0 {
            // Letters of a skewed alphabet: Huffman-coded literals, few matches.
            text.extend((0..64).map(|_| b"eeeettaaoinshrdlu"[(next() % 17) as usize]));
        } else {
            text.extend_from_slice(WORDS[(choice % 16) as usize].as_bytes());
        }
    }
    text.truncate(size);
    std::fs::write(path, text).unwrap();
}

fn compressed(options: &str) {
    compressed_from(options, pattern_raw);
    compressed_from(options, text_raw);
}

fn compressed_from(options: &str, make_raw: fn(&Path, usize)) {
    let scratch = Scratch::new();
    let raw = scratch.path("source.raw");
    let image = scratch.path("image.qcow2");
    make_raw(&raw, 3 << 20);
    let mut args = vec!["convert", "-q", "-c", "-f", "raw", "-O", "qcow2"];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([raw.to_str().unwrap(), image.to_str().unwrap()]);
    qemu_img(&args);
    assert_reads_like_qemu(&scratch, &image);
}

#[test]
fn deflate_compressed() {
    compressed("");
    compressed("cluster_size=4k");
}

#[test]
fn zstd_compressed() {
    compressed("compression_type=zstd");
    compressed("compression_type=zstd,cluster_size=512");
    compressed("compression_type=zstd,cluster_size=2M");
}

#[test]
fn compressed_writes_ending_mid_sector() {
    // `write -c` appends compressed clusters, leaving a file that ends mid-sector.
    for codec in ["zlib", "zstd"] {
        let scratch = Scratch::new();
        let image = scratch.path("image.qcow2");
        create(&image, &format!("compression_type={codec}"), "4M");
        qemu_io(
            &image,
            &[
                "write -P 0x62 128k 64k",
                "write -c -P 0x61 0 64k",
                "write -c -P 0x63 1M 64k",
            ],
        );
        let file_size = std::fs::metadata(&image).unwrap().len();
        assert_ne!(file_size % 512, 0, "the image should end mid-sector");
        assert_reads_like_qemu(&scratch, &image);
    }
}

#[test]
fn plain_writes_over_compressed_clusters() {
    for options in ["", "extended_l2=on"] {
        let scratch = Scratch::new();
        let image = scratch.path("image.qcow2");
        create(&image, options, "4M");
        qemu_io(
            &image,
            &[
                "write -c -P 0x65 0 64k",
                "write -c -P 0x66 64k 64k",
                "write -P 0x67 4k 4k",
                "write -z 70k 2k",
            ],
        );
        assert_reads_like_qemu(&scratch, &image);
    }
}

#[test]
fn corrupt_compressed_payloads_are_named_errors() {
    use qcow2_reader::{Config, Error, Image, Mapping};
    for codec in ["zlib", "zstd"] {
        let scratch = Scratch::new();
        let image = scratch.path("image.qcow2");
        create(&image, &format!("compression_type={codec}"), "1M");
        qemu_io(&image, &["write -c -P 0x68 0 64k"]);
        let mut bytes = std::fs::read(&image).unwrap();
        let host_offset = {
            let opened = Image::builder(bytes.as_slice())
                .unwrap()
                .open_alloc(&Config::default())
                .unwrap();
            match opened.extent(0, 65536).unwrap().kind {
                Mapping::Compressed(descriptor) => descriptor.host_offset as usize,
                other => panic!("expected a compressed cluster, found {other:?}"),
            }
        };
        bytes[host_offset..host_offset + 16].fill(0xff);
        std::fs::write(&image, &bytes).unwrap();
        let status = Qemu::img()
            .args(["convert", "-O", "raw"])
            .arg(&image)
            .arg(scratch.path("out.raw"))
            .output()
            .status;
        assert!(
            !status.success(),
            "QEMU refuses the corrupt {codec} cluster too"
        );
        let opened = Image::builder(bytes.as_slice())
            .unwrap()
            .open_alloc(&Config::default())
            .unwrap();
        let mut buf = [0u8; 512];
        let error = opened.read_at(0, &mut buf).unwrap_err();
        assert!(
            matches!(error, Error::Decode { host_offset: h, guest_offset: 0, .. } if h as usize == host_offset),
            "{error}"
        );
    }
}

#[test]
fn compressed_cluster_in_extended_l2_image() {
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    create(&image, "extended_l2=on", "4M");
    qemu_io(&image, &["write -c -P 0x71 0 64k", "write -P 0x72 4k 2k"]);
    assert_reads_like_qemu(&scratch, &image);
}

fn backing_options(backing: &Path, format: &str) -> String {
    format!(
        "backing_file={},backing_fmt={format}",
        backing.file_name().unwrap().to_str().unwrap()
    )
}

#[test]
fn backing_chain_mixing_raw_and_qcow2() {
    let scratch = Scratch::new();
    let base = scratch.path("base.raw");
    let middle = scratch.path("middle.qcow2");
    let top = scratch.path("top.qcow2");
    pattern_raw(&base, 3 << 20); // shorter than the overlays: zeros past its end
    create(&middle, &backing_options(&base, "raw"), "6M");
    qemu_io(
        &middle,
        &[
            "write -P 0x81 64k 64k",
            "write -z 256k 128k",
            "write -P 0x82 4M 64k",
        ],
    );
    create(&top, &backing_options(&middle, "qcow2"), "8M");
    qemu_io(
        &top,
        &[
            "write -P 0x83 0 4k",
            "write -z 1M 64k",
            "write -P 0x84 7M 64k",
        ],
    );
    assert_reads_like_qemu(&scratch, &top);
    let chain = open_chain(&top, &ChainOptions::default()).unwrap();
    assert_eq!(chain.layers.len(), 3);
}

#[test]
fn extended_l2_overlay_falls_through_per_subcluster() {
    let scratch = Scratch::new();
    let base = scratch.path("base.qcow2");
    let top = scratch.path("top.qcow2");
    create(&base, "", "4M");
    qemu_io(&base, &["write -P 0x91 0 1M"]);
    create(
        &top,
        &format!("extended_l2=on,{}", backing_options(&base, "qcow2")),
        "4M",
    );
    qemu_io(
        &top,
        &[
            "write -P 0x92 2k 2k",
            "write -z 10k 2k",
            "write -P 0x93 70k 1k",
        ],
    );
    assert_reads_like_qemu(&scratch, &top);
}

#[test]
fn relative_backing_path_from_another_directory() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("base")).unwrap();
    std::fs::create_dir(scratch.path("top")).unwrap();
    let base = scratch.path("base/base.raw");
    let top = scratch.path("top/top.qcow2");
    pattern_raw(&base, 1 << 20);
    create(&top, "backing_file=../base/base.raw,backing_fmt=raw", "2M");
    qemu_io(&top, &["write -P 0xd1 4k 4k"]);
    // The name is relative to top/, not to the test's working directory.
    assert_reads_like_qemu(&scratch, &top);
}

#[test]
fn missing_data_file_is_named() {
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    let data = scratch.path("image.data");
    create(
        &image,
        &format!("data_file={}", data.to_str().unwrap()),
        "1M",
    );
    std::fs::remove_file(&data).unwrap();
    let message = open_chain(&image, &ChainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("image.data") && message.contains("named by"),
        "{message}"
    );
    let builder = qcow2_reader::Image::builder(std::fs::File::open(&image).unwrap()).unwrap();
    let error = builder
        .open_alloc(&qcow2_reader::Config::default())
        .unwrap_err();
    assert!(matches!(
        error,
        qcow2_reader::Error::Unsupported(qcow2_reader::Unsupported::MissingDataFile)
    ));
}

#[test]
fn backing_without_format_is_probed() {
    let scratch = Scratch::new();
    let base = scratch.path("base.qcow2");
    let top = scratch.path("top.qcow2");
    create(&base, "", "2M");
    qemu_io(&base, &["write -P 0xa1 0 1M"]);
    // qemu-img needs -u to record a backing file without its format.
    create(&top, "", "2M");
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    assert_reads_like_qemu(&scratch, &top);
}

/// An overlay whose backing format extension is missing or empty reads as
/// QEMU reads it: the backing file's format is probed (`Header::backing_format`).
#[test]
fn backing_format_absent_or_empty_is_probed() {
    use qcow2_testkit::{rewrite_backing_format, BackingFormatExtension};
    for (base_name, format) in [("base.qcow2", "qcow2"), ("base.raw", "raw")] {
        for how in [
            BackingFormatExtension::Absent,
            BackingFormatExtension::Empty,
        ] {
            let scratch = Scratch::new();
            let base = scratch.path(base_name);
            if format == "raw" {
                pattern_raw(&base, 2 << 20);
            } else {
                create(&base, "", "2M");
                qemu_io(&base, &["write -P 0xa1 0 1M"]);
            }
            let top = scratch.path("top.qcow2");
            create(&top, &backing_options(&base, format), "2M");
            qemu_io(&top, &["write -P 0xa2 64k 64k"]);
            rewrite_backing_format(&top, how);
            let header = qcow2_reader::Image::builder(std::fs::File::open(&top).unwrap())
                .unwrap()
                .header()
                .backing_format();
            assert_eq!(header, qcow2_reader::BackingFormat::Probe, "{how:?}");
            assert_reads_like_qemu(&scratch, &top);
        }
    }
}

#[test]
fn external_data_file() {
    for raw in ["off", "on"] {
        let scratch = Scratch::new();
        let image = scratch.path("image.qcow2");
        let data = scratch.path("image.data");
        // qemu-img resolves a relative name against its working directory, so give it a full path.
        let options = format!("data_file={},data_file_raw={raw}", data.to_str().unwrap());
        create(&image, &options, "4M");
        qemu_io(
            &image,
            &[
                "write -P 0xb1 0 64k",
                "write -z 64k 64k",
                "write -P 0xb2 1M 4k",
            ],
        );
        assert_reads_like_qemu(&scratch, &image);
    }
}

#[test]
fn snapshots_read_as_taken() {
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    create(&image, "", "4M");
    qemu_io(&image, &["write -P 0xc1 0 1M"]);
    qemu_img(&["snapshot", "-c", "first", image.to_str().unwrap()]);
    qemu_io(&image, &["write -P 0xc2 512k 1M"]);
    qemu_img(&["snapshot", "-c", "second", image.to_str().unwrap()]);
    qemu_io(&image, &["write -z 0 2M"]);
    // Grown after the snapshots: QEMU reads them at the current size.
    qemu_img(&["resize", "-q", image.to_str().unwrap(), "6M"]);
    qemu_io(&image, &["write -P 0xc3 5M 64k"]);
    for (snapshot, qemu_arg) in [("first", "snapshot.name=first"), ("2", "snapshot.id=2")] {
        let expected = qemu_raw(&scratch, &image, &["-l", qemu_arg]);
        let options = ChainOptions {
            snapshot: Some(snapshot.into()),
            ..ChainOptions::default()
        };
        let chain = open_chain(&image, &options).unwrap();
        assert_same(&expected, &crate_read(&*chain.top, 1 << 20), snapshot);
    }
    let file = std::fs::File::open(&image).unwrap();
    let header = qcow2_reader::Header::read(&file).unwrap();
    let names: Vec<String> = qcow2_reader::Snapshots::new(&file, &header)
        .map(|s| s.unwrap().name.to_string())
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert_reads_like_qemu(&scratch, &image);
}

#[test]
fn chain_errors_name_the_culprit() {
    let scratch = Scratch::new();
    let a = scratch.path("a.qcow2");
    let b = scratch.path("b.qcow2");
    create(&a, "", "1M");
    create(&b, "", "1M");
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        a.to_str().unwrap(),
    ]);
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        b.to_str().unwrap(),
    ]);
    let error = open_chain(&a, &ChainOptions::default()).unwrap_err();
    assert!(matches!(error, ChainError::Loop { .. }), "{error}");

    let missing = scratch.path("missing.qcow2");
    create(&missing, "", "1M");
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "gone.qcow2",
        "-F",
        "qcow2",
        missing.to_str().unwrap(),
    ]);
    let error = open_chain(&missing, &ChainOptions::default()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("gone.qcow2")
            && message.contains("named by")
            && message.contains("missing.qcow2"),
        "{message}"
    );

    let mut below = scratch.path("layer0.qcow2");
    create(&below, "", "1M");
    for depth in 1..6 {
        let layer = scratch.path(&format!("layer{depth}.qcow2"));
        create(&layer, &backing_options(&below, "qcow2"), "1M");
        below = layer;
    }
    let shallow = ChainOptions {
        max_depth: 4,
        ..ChainOptions::default()
    };
    assert!(matches!(
        open_chain(&below, &shallow),
        Err(ChainError::TooDeep { max_depth: 4, .. })
    ));
    assert_eq!(
        open_chain(&below, &ChainOptions::default())
            .unwrap()
            .layers
            .len(),
        6
    );
}

/// Makes the L2 entry of guest cluster 0 of `image` (64 KiB clusters)
/// point at an unaligned data offset, which QEMU reports as corruption.
fn misalign_first_data_cluster(image: &Path) {
    let mut bytes = std::fs::read(image).unwrap();
    let be64 = |bytes: &[u8], at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let l1_offset = be64(&bytes, 40) as usize;
    let l2_offset = (be64(&bytes, l1_offset) & 0x00ff_ffff_ffff_fe00) as usize;
    let entry = be64(&bytes, l2_offset);
    bytes[l2_offset..l2_offset + 8].copy_from_slice(&(entry | 0x200).to_be_bytes());
    std::fs::write(image, &bytes).unwrap();
}

#[test]
fn errors_in_backing_images_name_the_image() {
    use qcow2_reader::{Config, CorruptError, Error, Image};
    let scratch = Scratch::new();
    let base = scratch.path("base.qcow2");
    let middle = scratch.path("middle.qcow2");
    let top = scratch.path("top.qcow2");
    create(&base, "", "1M");
    qemu_io(&base, &["write -P 0x51 0 64k"]);
    create(&middle, &backing_options(&base, "qcow2"), "1M");
    qemu_io(&middle, &["write -P 0x52 128k 64k"]);
    create(&top, &backing_options(&middle, "qcow2"), "1M");
    qemu_io(&top, &["write -P 0x53 256k 64k"]);
    misalign_first_data_cluster(&base);

    // Through the chain opener: depth and file name of the broken image.
    let chain = open_chain(&top, &ChainOptions::default()).unwrap();
    let mut buf = [0u8; 512];
    let error = chain.top.read_at(0, &mut buf).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("backing image 2") && message.contains("base.qcow2"),
        "{message}"
    );
    match &error {
        Error::Backing { depth: 2, name, .. } => {
            assert!(name.as_deref().is_some_and(|n| n.ends_with("base.qcow2")))
        }
        other => panic!("expected an error of backing image 2, got {other:?}"),
    }
    assert!(matches!(
        error.innermost(),
        Error::Corrupt(CorruptError::DataOffsetUnaligned { .. })
    ));
    // Reads that the broken image does not serve still work.
    chain.top.read_at(128 << 10, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x52));

    // Stacked by hand, without file names: the depth alone.
    let config = Config::default();
    let file = |path: &Path| std::fs::File::open(path).unwrap();
    let base_image = Image::builder(file(&base))
        .unwrap()
        .open_alloc(&config)
        .unwrap();
    let middle_image = Image::builder(file(&middle))
        .unwrap()
        .backing(base_image)
        .open_alloc(&config)
        .unwrap();
    let error = middle_image.read_at(0, &mut buf).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backing {
                depth: 1,
                name: None,
                ..
            }
        ),
        "{error:?}"
    );

    // The top image's own corruption (its entry of cluster 0, which now
    // holds an unaligned offset) is its own error, not a backing one.
    misalign_first_data_cluster(&top);
    let chain = open_chain(&top, &ChainOptions::default()).unwrap();
    let error = chain.top.read_at(0, &mut buf).unwrap_err();
    assert!(matches!(error, Error::Corrupt(_)), "{error:?}");
}
