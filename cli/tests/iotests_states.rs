//! `qcow check` and `qcow info` against `qemu-img check` and `qemu-img info`
//! on the image states that QEMU's own iotests make by hand: a fresh image
//! from `qemu-img create`, then bytes poked into its header, tables and
//! refcount blocks, with QEMU's own writes in between (iotests 060: overlapping
//! metadata; 080: header and table input validation; 108: refcount
//! structures beyond repair by the on-disk refcounts; 261: broken snapshot
//! tables).
//!
//! The states are described here as data (offset and bytes, as the iotests'
//! `poke_file` writes them, at the offsets of a default 64 KiB-cluster
//! image); at every `Compare` step the exit status and JSON counters of
//! `check` and whether `info` opens must agree with QEMU 7.2
//! (`qcow2_testkit::check_compare`). What QEMU's writes do to a corrupt
//! image (set the corrupt bit, refuse) is part of the state.

use std::path::Path;

use qcow2_testkit::check_compare::compare_with_qemu;
use qcow2_testkit::{output_in, Scratch};

/// One step of making an image state.
enum Step {
    /// `qemu-img create -f qcow2 [-o OPTIONS] IMG SIZE`.
    Make(&'static str, &'static str),
    /// Bytes written at an offset of the file.
    Poke(u64, &'static [u8]),
    /// Bytes written into a snapshot table entry (by index, at an offset
    /// inside the entry), found by walking the table as the header says.
    PokeSnapshot(u32, u64, &'static [u8]),
    /// The file cut or grown to a length.
    Truncate(u64),
    /// `qemu-io` with these arguments (`IMG` is the image); its exit status
    /// is not asserted: some of these writes fail on purpose.
    Io(&'static [&'static str]),
    /// `qemu-img` with these arguments (`IMG` is the image); may fail too.
    Img(&'static [&'static str]),
    /// `qcow` and QEMU must agree on the image as it is now.
    Compare,
}

use Step::*;

/// An iotest's image state: the test's number, its section, the steps.
struct State {
    test: &'static str,
    name: &'static str,
    steps: &'static [Step],
}

const L1: u64 = 0x30000;
const L2: u64 = 0x40000;
const REFCOUNT_TABLE: u64 = 0x10000;
const REFCOUNT_BLOCK: u64 = 0x20000;
const RW: &str = "open -o overlap-check=all IMG";

const STATES: &[State] = &[
    // 060: overlapping metadata.
    State {
        test: "060",
        name: "L2 reference into the L1 table",
        steps: &[
            Make("compat=1.1", "64M"),
            Poke(L1, b"\x80\x00\x00\x00\x00\x03\x00\x00"),
            Compare,
            Io(&["-c", RW, "-c", "write -P 0x2a 0 512"]),
            Compare,
        ],
    },
    State {
        test: "060",
        name: "cluster data reference into a refcount block",
        steps: &[
            Make("compat=1.1", "64M"),
            Truncate(L2 + 65536),
            Poke(L1, b"\x80\x00\x00\x00\x00\x04\x00\x00"),
            Poke(REFCOUNT_BLOCK + 8, b"\x00\x01"),
            Poke(L2, b"\x80\x00\x00\x00\x00\x02\x00\x00"),
            Compare,
            Io(&["-c", RW, "-c", "write -P 0x2a 0 512"]),
            Compare,
        ],
    },
    State {
        test: "060",
        name: "cluster data reference into an inactive L2 table",
        steps: &[
            Make("compat=1.1", "64M"),
            Io(&["-c", RW, "-c", "write -P 1 0 512"]),
            Img(&["snapshot", "-c", "foo", "IMG"]),
            Io(&["-c", RW, "-c", "write -P 2 0 512"]),
            Poke(0x80000, b"\x80\x00\x00\x00\x00\x04\x00\x00"),
            Compare,
            Io(&["-c", RW, "-c", "write -P 3 0 512"]),
            Compare,
        ],
    },
    State {
        test: "060",
        name: "the second L2 table marked free (compat=0.10)",
        steps: &[
            Make("compat=0.10", "1G"),
            Io(&["-c", "write 0k 64k", "-c", "write 512M 64k", "IMG"]),
            Io(&["-c", "discard 0k 64k", "IMG"]),
            Poke(0x2000c, b"\x00\x00"),
            Compare,
        ],
    },
    // 080: header and table input validation.
    State {
        test: "080",
        name: "huge header size",
        steps: &[
            Make("", "64M"),
            Poke(100, b"\xff\xff\xff\xff"),
            Compare,
            Poke(100, b"\x7f\xff\xff\xff"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "huge unknown header extension",
        steps: &[
            Make("", "64M"),
            Poke(8, b"\xff\xff\xff\xff\xff\xff\xff\xff"),
            Poke(104, b"\x12\x34\x56\x78"),
            Poke(108, b"\x7f\xff\xff\xff"),
            Compare,
            Poke(8, b"\x00\x00\x00\x00\x00\x00\x00\x6c"),
            Compare,
            Poke(8, b"\x00\x00\x00\x00\x00\x00\x00\x00"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "huge refcount table size",
        steps: &[
            Make("", "64M"),
            Poke(56, b"\xff\xff\xff\xff"),
            Compare,
            Poke(56, b"\x00\x02\x00\x01"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "misaligned refcount table",
        steps: &[
            Make("", "64M"),
            Poke(48, b"\x12\x34\x56\x78\x90\xab\xcd\xef"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "huge refcount table offset",
        steps: &[
            Make("", "64M"),
            Poke(48, b"\xff\xff\xff\xff\xff\xff\x00\x00"),
            Poke(56, b"\x00\x00\x00\x7f"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "invalid snapshot table",
        steps: &[
            Make("", "64M"),
            Poke(60, b"\xff\xff\xff\xff"),
            Compare,
            Poke(60, b"\x7f\xff\xff\xff"),
            Compare,
            Poke(64, b"\xff\xff\xff\xff\xff\xff\x00\x00"),
            Poke(60, b"\x00\x00\xff\xff"),
            Compare,
            Poke(64, b"\x12\x34\x56\x78\x90\xab\xcd\xef"),
            Poke(60, b"\x00\x00\x00\x00"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "snapshot table at its size limit",
        steps: &[
            Make("", "64M"),
            Poke(64, b"\x00\x00\x00\x00\x01\x00\x00\x00"),
            Poke(60, b"\x00\x01\x00\x00"),
            Compare,
            Img(&["snapshot", "-c", "test", "IMG"]),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "invalid L1 table",
        steps: &[
            Make("", "64M"),
            Poke(36, b"\xff\xff\xff\xff"),
            Compare,
            Poke(36, b"\x7f\xff\xff\xff"),
            Compare,
            Poke(40, b"\x7f\xff\xff\xff\xff\xff\x00\x00"),
            Poke(36, b"\x00\x00\xff\xff"),
            Compare,
            Poke(40, b"\x12\x34\x56\x78\x90\xab\xcd\xef"),
            Poke(36, b"\x00\x00\x00\x01"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "empty L1 table with an internal snapshot",
        steps: &[
            Make("", "64M"),
            Img(&["snapshot", "-c", "foo", "IMG"]),
            Poke(36, b"\x00\x00\x00\x00"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "invalid backing file size",
        steps: &[
            Make("", "64M"),
            Poke(8, b"\x00\x00\x00\x00\x00\x00\x10\x00"),
            Poke(16, b"\xff\xff\xff\xff"),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "L2 entry with a huge physical offset",
        steps: &[
            Make("", "64M"),
            Io(&["-c", "write 0 512", "IMG"]),
            Poke(L2, b"\xbf\xff\xff\xff\xff\xff\x00\x00"),
            Compare,
            Img(&["snapshot", "-c", "test", "IMG"]),
            Compare,
            Poke(L2, b"\x80\x00\x00\xff\xff\xff\x00\x00"),
            Compare,
            Img(&["snapshot", "-c", "test", "IMG"]),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "invalid snapshot L1 table offset",
        steps: &[
            Make("", "64M"),
            Io(&["-c", "write 0 512", "IMG"]),
            Img(&["snapshot", "-c", "test", "IMG"]),
            Poke(0x70000, b"\x00\x00\x00\x00\x00\x40\x02\x00"),
            Compare,
            Img(&["amend", "-o", "compat=0.10", "IMG"]),
            Compare,
            Io(&[
                "-c",
                "open -o overlap-check.inactive-l2=on IMG",
                "-c",
                "write 0 4k",
            ]),
            Compare,
        ],
    },
    State {
        test: "080",
        name: "invalid snapshot L1 table size",
        steps: &[
            Make("", "64M"),
            Io(&["-c", "write 0 512", "IMG"]),
            Img(&["snapshot", "-c", "test", "IMG"]),
            Poke(0x70008, b"\x10\x00\x00\x00"),
            Compare,
            Img(&["amend", "-o", "compat=0.10", "IMG"]),
            Compare,
        ],
    },
    // 108: refcount structures that the on-disk refcounts cannot repair.
    State {
        test: "108",
        name: "no refcount table at all",
        steps: &[
            Make("", "64M"),
            Io(&["-c", "write -P 42 0 64k", "IMG"]),
            Poke(0x30, b"\x00\x00\x00\x00\x00\x00\x00\x00"),
            Poke(0x38, b"\x00\x00\x00\x00"),
            Compare,
        ],
    },
    State {
        test: "108",
        name: "unreferenced data cluster where a new refblock would go",
        steps: &[
            Make("cluster_size=512", "64M"),
            Io(&["-c", "write 0 0x1b200", "IMG"]),
            Poke(0x1ccc8, b"\x80\x00\x00\x00\x00\x02\x00\x00"),
            Truncate(0x20200),
            Compare,
        ],
    },
    State {
        test: "108",
        name: "an empty refblock beyond the end, marked used",
        steps: &[
            Make("", "64M"),
            Poke(REFCOUNT_TABLE + 8, b"\x00\x00\x00\x00\x00\x10\x00\x00"),
            Poke(REFCOUNT_BLOCK + 0x20, b"\x00\x01"),
            Compare,
        ],
    },
    State {
        test: "108",
        name: "a refblock beyond the end, unallocated",
        steps: &[
            Make("", "64M"),
            Poke(REFCOUNT_TABLE + 8, b"\x00\x00\x00\x00\x00\x10\x00\x00"),
            Compare,
        ],
    },
    State {
        test: "108",
        name: "a refblock offset that overflows signed",
        steps: &[
            Make("", "64M"),
            Poke(REFCOUNT_TABLE + 8, b"\x7f\xff\xff\xff\xff\xff\x00\x00"),
            Compare,
        ],
    },
    State {
        test: "108",
        name: "a refblock offset that overflows unsigned",
        steps: &[
            Make("", "64M"),
            Poke(REFCOUNT_TABLE + 8, b"\xff\xff\xff\xff\xff\xff\x00\x00"),
            Compare,
        ],
    },
    // 261: snapshot tables.
    State {
        test: "261",
        name: "a v2 image with snapshots forced to v3 (entries without extra data)",
        steps: &[
            Make("compat=0.10", "64M"),
            Img(&["snapshot", "-c", "sn0", "IMG"]),
            Img(&["snapshot", "-c", "sn1", "IMG"]),
            Img(&["snapshot", "-c", "sn2", "IMG"]),
            Compare,
            Poke(4, b"\x00\x00\x00\x03"),
            Poke(100, b"\x00\x00\x00\x68"),
            Poke(96, b"\x00\x00\x00\x04"),
            Compare,
        ],
    },
    State {
        test: "261",
        name: "a snapshot with 64 KiB of unknown extra data",
        steps: &[
            Make("", "64M"),
            Img(&["snapshot", "-c", "sn0", "IMG"]),
            Img(&["snapshot", "-c", "sn1", "IMG"]),
            PokeSnapshot(1, 36, b"\x00\x01\x00\x00"),
            Compare,
        ],
    },
    State {
        test: "261",
        name: "more than 65536 snapshots",
        steps: &[
            Make("compat=0.10", "64M"),
            Poke(64, b"\x00\x00\x00\x00\x00\x10\x00\x00"),
            Poke(60, b"\x00\x02\x00\x00"),
            Truncate(1048576 + 40 * 131072),
            Compare,
        ],
    },
];

/// The file offset of snapshot table entry `index`: the table's offset
/// from the header, then each entry's length (40 bytes, its extra data,
/// ID and name, padded to 8).
fn snapshot_entry(image: &Path, index: u32) -> u64 {
    let bytes = std::fs::read(image).unwrap();
    let be = |at: u64, len: usize| {
        let at = at as usize;
        bytes[at..at + len]
            .iter()
            .fold(0u64, |value, byte| value << 8 | u64::from(*byte))
    };
    let mut offset = be(64, 8);
    for _ in 0..index {
        let length = 40 + be(offset + 36, 4) + be(offset + 12, 2) + be(offset + 14, 2);
        offset += length.div_ceil(8) * 8;
    }
    offset
}

fn poke(image: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

fn with_image<'a>(args: &[&'a str], image: &'a str) -> Vec<&'a str> {
    args.iter()
        .map(|arg| if *arg == "IMG" { image } else { arg })
        .collect()
}

/// Runs one state's steps in `dir`; returns each disagreement, named by the
/// test, the section and the step.
fn run_state(state: &State, dir: &Path) -> Vec<String> {
    let image = dir.join("test.qcow2");
    let name = "test.qcow2";
    let mut differences = Vec::new();
    for (index, step) in state.steps.iter().enumerate() {
        match step {
            Make(options, size) => {
                let _ = std::fs::remove_file(&image);
                let mut args = vec!["create", "-q", "-f", "qcow2"];
                if !options.is_empty() {
                    args.extend(["-o", options]);
                }
                args.extend([name, size]);
                let out = output_in(Some(dir), "qemu-img", &args);
                assert!(
                    out.status.success(),
                    "{}: qemu-img create failed",
                    state.test
                );
            }
            Poke(offset, bytes) => poke(&image, *offset, bytes),
            PokeSnapshot(entry, offset, bytes) => {
                poke(&image, snapshot_entry(&image, *entry) + offset, bytes)
            }
            Truncate(length) => std::fs::OpenOptions::new()
                .write(true)
                .open(&image)
                .unwrap()
                .set_len(*length)
                .unwrap(),
            Io(args) => {
                // `IMG` inside an `open` command too.
                let replaced: Vec<String> =
                    args.iter().map(|arg| arg.replace("IMG", name)).collect();
                let refs: Vec<&str> = replaced.iter().map(String::as_str).collect();
                output_in(Some(dir), "qemu-io", &refs);
            }
            Img(args) => {
                output_in(Some(dir), "qemu-img", &with_image(args, name));
            }
            Compare => {
                let qcow = Path::new(env!("CARGO_BIN_EXE_qcow"));
                for difference in compare_with_qemu(qcow, &image) {
                    differences.push(format!(
                        "iotest {} \"{}\", step {index}: {difference}",
                        state.test, state.name
                    ));
                }
            }
        }
    }
    differences
}

#[test]
fn check_and_info_agree_with_qemu_on_the_iotests_image_states() {
    let mut differences = Vec::new();
    let mut compared = 0;
    for state in STATES {
        let scratch = Scratch::new();
        compared += state
            .steps
            .iter()
            .filter(|step| matches!(step, Compare))
            .count();
        differences.extend(run_state(state, scratch.dir()));
    }
    assert!(compared > 40, "only {compared} states compared");
    assert!(
        differences.is_empty(),
        "{} of {compared} states disagree:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
