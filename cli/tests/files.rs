//! `qcow parts`, `qcow ls` and `qcow get` on disks made by the real tools
//! (`testkit::make_disks`: sfdisk, mkfs, mcopy, debugfs, qemu-img),
//! compared with the trees written into them, and their one-line errors.

mod common;

use std::path::Path;

use common::{qcow, qcow_ok, qemu_img, qemu_io, text, Scratch};
use serde_json::Value;

fn disks() -> &'static Path {
    qcow2_testkit::made_disks()
}

fn image(name: &str) -> String {
    text(&disks().join(name)).to_string()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON output")
}

/// Runs `qcow`, which must fail with exit status 1 and one `qcow: ` line; returns it.
fn qcow_error(args: &[&str]) -> String {
    let output = qcow(args);
    assert_eq!(output.status.code(), Some(1), "qcow {args:?} should fail");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 error");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("qcow: "), "{stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn parts_lists_partitions_file_systems_and_labels() {
    let gpt = json(&qcow_ok(&["parts", "--json", &image("gpt-base.qcow2")]));
    assert_eq!(gpt["table"], "gpt");
    let rows: Vec<(u64, &str, &str, &str)> = gpt["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| {
            (
                part["number"].as_u64().unwrap(),
                part["type"].as_str().unwrap(),
                part["filesystem"].as_str().unwrap(),
                part["label"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, "EFI System", "vfat", "EFI"),
            (2, "Linux filesystem", "ext4", "rootfs")
        ]
    );
    assert_eq!(gpt["partitions"][0]["start"], 1 << 20);
    assert_eq!(gpt["partitions"][0]["size"], 40 << 20);
    assert_eq!(gpt["partitions"][1]["name"], "root");

    let mbr = String::from_utf8(qcow_ok(&["parts", &image("mbr-overlay.qcow2")])).unwrap();
    let lines: Vec<Vec<&str>> = mbr
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["Partition", "table:", "dos"]);
    let numbers: Vec<&str> = lines[2..].iter().map(|line| line[0]).collect();
    assert_eq!(numbers, ["1", "2", "5", "6"]);
    assert_eq!(lines[3][3..], ["Extended", "-", "-"]);
    assert_eq!(lines[4][3..], ["Linux", "ext4", "logical"]);
    assert_eq!(lines[5][3..], ["FAT12", "vfat", "SMALL"]);

    let whole = json(&qcow_ok(&["parts", "--json", &image("whole.qcow2")]));
    assert_eq!(whole["table"], "none");
    assert_eq!(whole["partitions"][0]["number"], 0);
    assert_eq!(whole["partitions"][0]["label"], "whole");
    assert_eq!(whole["partitions"][0]["filesystem"], "ext2");
}

/// Every path under `dir` in the tree, with its type and (for files) size.
fn tree_paths(root: &Path, dir: &Path, paths: &mut Vec<(String, String, u64)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let metadata = path.symlink_metadata().unwrap();
        let name = format!("/{}", path.strip_prefix(root).unwrap().display());
        let (kind, size) = if metadata.is_symlink() {
            ("symlink", metadata.len())
        } else if metadata.is_dir() {
            ("directory", 0)
        } else {
            ("file", metadata.len())
        };
        paths.push((name, kind.into(), size));
        if kind == "directory" {
            tree_paths(root, &path, paths);
        }
    }
}

#[test]
fn ls_json_recursive_gives_every_path_of_the_tree() {
    for (name, partition, tree) in [
        ("gpt-overlay.qcow2", "1", "tree-fat-v2"),
        ("gpt-overlay.qcow2", "2", "tree-ext-v2"),
        ("mbr-base.qcow2", "6", "tree-fat-v1"),
        ("mbr-base.qcow2", "5", "tree-ext-v1"),
    ] {
        let location = format!("{partition}:/");
        let listing = json(&qcow_ok(&["ls", "-R", "--json", &image(name), &location]));
        let mut listed: Vec<(String, String, u64)> = listing
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| !entry["path"].as_str().unwrap().starts_with("/lost+found"))
            .map(|entry| {
                let kind = entry["type"].as_str().unwrap().to_string();
                let size = if kind == "directory" {
                    0
                } else {
                    entry["size"].as_u64().unwrap()
                };
                (entry["path"].as_str().unwrap().to_string(), kind, size)
            })
            .collect();
        for entry in listing.as_array().unwrap() {
            for field in ["name", "type", "size", "mode", "mtime"] {
                assert!(
                    entry.get(field).is_some(),
                    "{name}: {field} missing in {entry}"
                );
            }
        }
        let root = disks().join(tree);
        let mut expected = Vec::new();
        tree_paths(&root, &root, &mut expected);
        listed.sort();
        expected.sort();
        assert!(expected.len() > 300);
        assert_eq!(listed, expected, "{name} {location}");
    }
}

#[test]
fn ls_lists_one_directory_plain_and_long() {
    let plain = qcow_ok(&["ls", &image("mbr-overlay.qcow2"), "5:/dir"]);
    let plain = String::from_utf8(plain).unwrap();
    assert_eq!(
        plain.lines().collect::<Vec<_>>(),
        [
            "A file with a long name.conf",
            "café-naïve.txt",
            "link-up",
            "sub"
        ]
    );
    let long = String::from_utf8(qcow_ok(&["ls", "-l", &image("gpt-base.qcow2"), "1:/"])).unwrap();
    let hello = long
        .lines()
        .find(|line| line.ends_with(" hello.txt"))
        .expect("hello.txt");
    assert_eq!(
        hello.split_whitespace().collect::<Vec<_>>(),
        ["-rwxr-xr-x", "20", "2021-06-15", "12:34:56", "hello.txt"]
    );
    // Through a symlink to a directory, like ls.
    let through = qcow_ok(&["ls", &image("gpt-base.qcow2"), "2:/link-dir"]);
    assert_eq!(String::from_utf8(through).unwrap(), "deeper\n");
}

#[test]
fn get_writes_files_byte_for_byte() {
    let scratch = Scratch::new();
    for (name, location, tree_file) in [
        ("gpt-base.qcow2", "2:/big.bin", "tree-ext-v1/big.bin"),
        ("gpt-overlay.qcow2", "2:/big.bin", "tree-ext-v2/big.bin"),
        ("gpt-overlay.qcow2", "1:/BIG.BIN", "tree-fat-v2/big.bin"),
        (
            "mbr-base.qcow2",
            "6:/dir/sub/deeper/odd-size.bin",
            "tree-fat-v1/dir/sub/deeper/odd-size.bin",
        ),
        (
            "mbr-overlay.qcow2",
            "5:/link-added",
            "tree-ext-v2/added.bin",
        ),
        ("gpt-base.qcow2", "2:/sparse.bin", "tree-ext-v1/sparse.bin"),
        (
            "whole.qcow2",
            "/link-absolute",
            "tree-ext-v1/dir/sub/deeper/odd-size.bin",
        ),
        ("gpt-base.qcow2", "1:/empty", "tree-fat-v1/empty"),
    ] {
        let expected = std::fs::read(disks().join(tree_file)).unwrap();
        let out = qcow_ok(&["get", &image(name), location]);
        assert!(
            out == expected,
            "{name} {location}: standard output differs"
        );
        let file = scratch.path("out");
        qcow_ok(&["get", &image(name), location, "-o", text(&file)]);
        assert!(
            std::fs::read(&file).unwrap() == expected,
            "{name} {location}: -o differs"
        );
    }
}

#[test]
fn get_in_parallel_chunks_gives_the_same_bytes() {
    // Small and odd chunk sizes put chunk edges inside clusters and blocks,
    // so every reader thread seeks (FAT: along the chain; ext4: from the start).
    for (name, location, tree_file) in [
        ("gpt-overlay.qcow2", "2:/big.bin", "tree-ext-v2/big.bin"),
        ("gpt-base.qcow2", "1:/big.bin", "tree-fat-v1/big.bin"),
        ("mbr-base.qcow2", "5:/big.bin", "tree-ext-v1/big.bin"),
        ("mbr-overlay.qcow2", "6:/big.bin", "tree-fat-v2/big.bin"),
        ("gpt-base.qcow2", "2:/sparse.bin", "tree-ext-v1/sparse.bin"),
    ] {
        let expected = std::fs::read(disks().join(tree_file)).unwrap();
        for (threads, chunk) in [("2", "65536"), ("3", "70001")] {
            let args = [
                "get",
                "--threads",
                threads,
                "--chunk-size",
                chunk,
                &image(name),
                location,
            ];
            let out = qcow_ok(&args);
            assert!(
                out == expected,
                "{name} {location} threads {threads} chunk {chunk}: bytes differ"
            );
        }
    }
}

#[test]
fn errors_are_one_line_naming_the_location() {
    let gpt = image("gpt-base.qcow2");
    let cases = [
        (
            vec!["get", &gpt, "2:/nothing"],
            "2:/nothing: no such file or directory",
        ),
        (
            vec!["get", &gpt, "2:/hello.txt/x"],
            "2:/hello.txt/x: not a directory",
        ),
        (
            vec!["ls", &gpt, "2:/nothing"],
            "2:/nothing: no such file or directory",
        ),
        (vec!["get", &gpt, "2:/dir"], "2:/dir: is a directory"),
        (
            vec!["get", &gpt, "2:/loop-a"],
            "2:/loop-a: too many levels of symbolic links",
        ),
        (
            vec!["get", &gpt, "7:/x"],
            "no partition 7 in the disk's gpt partition table",
        ),
        (
            vec!["get", &gpt, "/x"],
            "the disk has 2 partitions; name one as N:/PATH",
        ),
    ];
    for (args, message) in cases {
        let error = qcow_error(&args);
        assert!(
            error.contains(message),
            "{error:?} should contain {message:?}"
        );
        assert!(error.contains("gpt-base.qcow2"), "{error}");
    }
    let mbr = image("mbr-base.qcow2");
    let error = qcow_error(&["ls", &mbr, "2:/"]);
    assert!(
        error.contains("partition 2: no supported file system"),
        "{error}"
    );
    let error = qcow_error(&["get", &image("whole.qcow2"), "1:/x"]);
    assert!(
        error.contains("no partition 1: the disk has no partition table"),
        "{error}"
    );
}

#[test]
fn snapshots_and_corrupt_file_systems() {
    let scratch = Scratch::new();
    let copy = scratch.path("copy.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &image("whole.qcow2"), text(&copy)]);
    qemu_img(&["snapshot", "-c", "before", text(&copy)]);
    // Zero the first 64 KiB after the snapshot: the superblock is gone now.
    qemu_io(&copy, &["write -z 0 64k"]);
    let hello = std::fs::read(disks().join("tree-ext-v1/hello.txt")).unwrap();
    let out = qcow_ok(&["get", "--snapshot", "before", text(&copy), "/hello.txt"]);
    assert_eq!(out, hello);
    let error = qcow_error(&["get", text(&copy), "/hello.txt"]);
    assert!(error.contains("no supported file system"), "{error}");

    // A broken group descriptor checksum: ext4-view's corruption message.
    let broken = scratch.path("broken.qcow2");
    let raw = scratch.path("broken.raw");
    qemu_img(&["convert", "-O", "raw", &image("mbr-base.qcow2"), text(&raw)]);
    let layout = json(&qcow_ok(&["parts", "--json", &image("mbr-base.qcow2")]));
    let start = layout["partitions"][2]["start"].as_u64().unwrap();
    let mut bytes = std::fs::read(&raw).unwrap();
    // 1 KiB blocks: the group descriptors are in block 2.
    bytes[start as usize + 2048] ^= 0xff;
    std::fs::write(&raw, bytes).unwrap();
    qemu_img(&["convert", "-O", "qcow2", text(&raw), text(&broken)]);
    let error = qcow_error(&["ls", text(&broken), "5:/"]);
    assert!(error.contains("partition 5: ext2/3/4: corrupt"), "{error}");
}

#[test]
fn damaged_gpt_falls_back_with_a_warning_or_fails_naming_both_copies() {
    let scratch = Scratch::new();
    let raw = scratch.path("gpt.raw");
    qemu_img(&["convert", "-O", "raw", &image("gpt-base.qcow2"), text(&raw)]);
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[512 + 0x38] ^= 1; // primary header: disk GUID, under the header CRC
    std::fs::write(&raw, &bytes).unwrap();
    let primary_damaged = scratch.path("primary.qcow2");
    qemu_img(&["convert", "-O", "qcow2", text(&raw), text(&primary_damaged)]);
    let output = qcow(&["get", text(&primary_damaged), "2:/hello.txt"]);
    assert!(output.status.success());
    assert_eq!(
        output.stdout,
        std::fs::read(disks().join("tree-ext-v1/hello.txt")).unwrap()
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("warning: primary GPT header at LBA 1: header CRC32")
            && stderr.contains("using the backup GPT"),
        "{stderr}"
    );

    let last = bytes.len() - 512;
    bytes[last + 0x38] ^= 1; // and the backup header
    std::fs::write(&raw, &bytes).unwrap();
    let both_damaged = scratch.path("both.qcow2");
    qemu_img(&["convert", "-O", "qcow2", text(&raw), text(&both_damaged)]);
    let error = qcow_error(&["parts", text(&both_damaged)]);
    assert!(
        error.contains("no valid GPT: primary GPT header at LBA 1: header CRC32")
            && error.contains("backup GPT header at LBA 204799: header CRC32"),
        "{error}"
    );
}

/// A 4 MiB ext4 (1 KiB blocks, no metadata_csum: patched superblock fields
/// need no new checksum) made by `mkfs.ext4 -d` from `/hello.txt` and
/// `/link` -> `/hello.txt`, changed by the `debugfs -w` request `change`,
/// as a raw file in `scratch`.
fn small_ext4(scratch: &Scratch, change: &str) -> std::path::PathBuf {
    let tree = scratch.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("/hello.txt", tree.join("link")).unwrap();
    let raw = scratch.path("ext4.raw");
    qcow2_testkit::run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "1024",
            "-O",
            "^metadata_csum",
            "-d",
            text(&tree),
            text(&raw),
            "4M",
        ],
    );
    if !change.is_empty() {
        qcow2_testkit::run("debugfs", &["-w", "-R", change, text(&raw)]);
    }
    raw
}

#[test]
fn ext4_block_counts_on_a_terabyte_disk_end_in_a_named_error_not_an_abort() {
    // The image: 4 TiB of virtual disk for a few hundred KiB, whose
    // superblock says 2^32 - 1 blocks of 1 KiB, one per group: 2^32 block
    // groups, which ext4-view would allocate 64 GiB for (SIGABRT).
    let scratch = Scratch::new();
    let raw = small_ext4(&scratch, "");
    common::patch(&raw, 1024 + 0x04, &u32::MAX.to_le_bytes()); // s_blocks_count_lo
    common::patch(&raw, 1024 + 0x20, &1u32.to_le_bytes()); // s_blocks_per_group
    let image = scratch.path("huge.qcow2");
    qemu_img(&["convert", "-O", "qcow2", text(&raw), text(&image)]);
    qemu_img(&["resize", text(&image), "4T"]);
    assert!(std::fs::metadata(&image).unwrap().len() < 4 << 20);
    let expected = "block groups (s_blocks_count / s_blocks_per_group) is 4294967294, \
                    over the limit of 1048576 (the caller's Limits::max_block_groups)";
    for args in [
        &["ls", text(&image), "/"][..],
        &["get", text(&image), "/hello.txt"],
    ] {
        let error = qcow_error(args);
        assert!(error.contains(expected), "qcow {args:?}: {error}");
    }
    // `parts` lists the disk with the error in its row, and fails naming it.
    let output = qcow(&["parts", text(&image)]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stderr.contains(expected), "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.contains("whole disk"))
        .expect("the disk's row");
    assert!(row.contains("4398046511104"), "{row}");
    assert!(
        row.contains(&format!("(error: ext2/3/4 superblock: {expected})")),
        "{row}"
    );
}

#[test]
fn ext4_symlink_claiming_a_terabyte_ends_in_a_named_error_not_an_abort() {
    let scratch = Scratch::new();
    let raw = small_ext4(&scratch, "sif /link size 0x10000000000");
    let image = scratch.path("link.qcow2");
    qemu_img(&["convert", "-O", "qcow2", text(&raw), text(&image)]);
    let error = qcow_error(&["get", text(&image), "/link"]);
    assert!(
        error.ends_with(
            "/link: ext2/3/4 symlink /link: target length (i_size) 1099511627776 bytes \
             is over the limit of 4096 (PATH_MAX)"
        ),
        "{error}"
    );
    // The rest of the volume reads.
    assert_eq!(qcow_ok(&["get", text(&image), "/hello.txt"]), b"hello\n");
    let listing = String::from_utf8(qcow_ok(&["ls", text(&image), "/"])).unwrap();
    assert!(listing.contains("link"), "{listing}");
}

#[test]
fn get_of_a_file_claiming_a_terabyte_streams_instead_of_allocating_it() {
    // hello.txt's inode says 1 TiB (its one block, then a hole): `get`
    // writes it in chunks, so a reader that stops after 16 MiB ends it.
    let scratch = Scratch::new();
    let raw = small_ext4(&scratch, "sif /hello.txt size 0x10000000000");
    let image = scratch.path("big-file.qcow2");
    qemu_img(&["convert", "-O", "qcow2", text(&raw), text(&image)]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qcow"))
        .args(["get", text(&image), "/hello.txt"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = vec![0u8; 16 << 20];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert_eq!(&head[..6], b"hello\n");
    assert!(head[6..].iter().all(|&byte| byte == 0));
}
