//! The images the differential test corrupts, each made by `qemu-img` and
//! `qemu-io`: one of every kind the reader handles differently.

use std::path::{Path, PathBuf};

// QEMU takes the relative names given to `create` (and stored in images)
// from its working directory: every tool runs in the image directory.
use qcow2_testkit::{create_in, qemu_io_in, Qemu};

/// One kind of image: its files as QEMU made them, and which one is corrupted.
pub struct Kind {
    /// Short name, used in reports and kept file names.
    pub name: &'static str,
    /// File names and their pristine bytes; the first is the image opened.
    pub files: Vec<(String, Vec<u8>)>,
    /// Index in `files` of the file each mutant replaces.
    pub target: usize,
    /// Internal snapshots also compared (`-l ID`), besides the active state.
    pub snapshots: Vec<&'static str>,
}

/// Disk contents that compress, but not to nothing: text-like bytes from a
/// small alphabet, with every eighth cluster incompressible (stored raw).
fn compressible_raw(path: &Path, size: usize, cluster: usize) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let in_random_cluster = (bytes.len() / cluster) % 8 == 5;
        let in_hole = (bytes.len() / cluster) % 8 == 2;
        bytes.push(if in_hole {
            0
        } else if in_random_cluster {
            state as u8
        } else {
            b"qcow2 reads like QEMU "[(state % 22) as usize]
        });
    }
    std::fs::write(path, bytes).unwrap();
}

/// Writes in several places: data, zeros, partial clusters.
const WRITES: &[&str] = &[
    "write -P 0x11 0 64k",
    "write -P 0x22 200k 3k",
    "write -z 320k 64k",
    "write -P 0x33 1M 128k",
    "write -P 0x44 1500k 1k",
    "discard 1M 64k",
];

/// Every kind, by name.
pub const KINDS: &[&str] = &[
    "v2",
    "v3-512",
    "v3-2m",
    "extl2",
    "deflate",
    "zstd",
    "snapshots",
    "lazy",
    "chain-top",
    "chain-base",
];

/// Builds every kind in `dir` (one subdirectory each).
pub fn make_all(dir: &Path) -> Vec<Kind> {
    KINDS.iter().map(|name| make(dir, name)).collect()
}

/// Builds kind `name` in `dir/name` and reads its files back.
pub fn make(dir: &Path, name: &'static str) -> Kind {
    let d = &dir.join(name);
    std::fs::create_dir_all(d).unwrap();
    let (names, target, snapshots) = build(d, name);
    let files = names
        .iter()
        .map(|file| (file.to_string(), std::fs::read(d.join(file)).unwrap()))
        .collect();
    Kind {
        name,
        files,
        target,
        snapshots,
    }
}

/// Makes kind `name` in `d`: its file names (opened first), the one to
/// corrupt, and the snapshots to compare.
fn build(d: &Path, name: &str) -> (Vec<&'static str>, usize, Vec<&'static str>) {
    match name {
        "v2" => {
            create_in(d, Path::new("v2.qcow2"), "compat=0.10", "2M");
            qemu_io_in(d, Path::new("v2.qcow2"), WRITES);
            (vec!["v2.qcow2"], 0, vec![])
        }
        "v3-512" => {
            create_in(d, Path::new("small.qcow2"), "cluster_size=512", "2M");
            qemu_io_in(d, Path::new("small.qcow2"), WRITES);
            (vec!["small.qcow2"], 0, vec![])
        }
        "v3-2m" => {
            create_in(d, Path::new("large.qcow2"), "cluster_size=2M", "8M");
            let writes = [
                "write -P 0x55 0 100k",
                "write -z 2M 2M",
                "write -P 0x66 5M 1M",
            ];
            qemu_io_in(d, Path::new("large.qcow2"), &writes);
            (vec!["large.qcow2"], 0, vec![])
        }
        "extl2" => {
            create_in(
                d,
                Path::new("ext.qcow2"),
                "extended_l2=on,cluster_size=64k",
                "2M",
            );
            let writes = [
                "write -P 0x11 2k 2k",
                "write -z 10k 2k",
                "write -P 0x22 70k 1k",
                "write -P 0x33 128k 64k",
                "write -z 256k 64k",
            ];
            qemu_io_in(d, Path::new("ext.qcow2"), &writes);
            (vec!["ext.qcow2"], 0, vec![])
        }
        "deflate" | "zstd" => {
            compressible_raw(&d.join("source.raw"), 1 << 20, 64 << 10);
            let compression = if name == "zstd" { "zstd" } else { "zlib" };
            let options = format!("compression_type={compression}");
            let convert = [
                "convert",
                "-q",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &options,
                "source.raw",
                "packed.qcow2",
            ];
            Qemu::img().args(convert).dir(d).run();
            std::fs::remove_file(d.join("source.raw")).unwrap();
            qemu_io_in(d, Path::new("packed.qcow2"), &["write -P 0x77 512k 4k"]);
            (vec!["packed.qcow2"], 0, vec![])
        }
        "snapshots" => {
            create_in(d, Path::new("snap.qcow2"), "", "2M");
            qemu_io_in(
                d,
                Path::new("snap.qcow2"),
                &["write -P 0x11 0 128k", "write -P 0x12 1M 64k"],
            );
            Qemu::img()
                .args(["snapshot", "-c", "first", "snap.qcow2"])
                .dir(d)
                .run();
            qemu_io_in(
                d,
                Path::new("snap.qcow2"),
                &["write -P 0x21 64k 128k", "write -z 1M 64k"],
            );
            Qemu::img()
                .args(["snapshot", "-c", "second", "snap.qcow2"])
                .dir(d)
                .run();
            qemu_io_in(d, Path::new("snap.qcow2"), &["write -P 0x31 1500k 8k"]);
            (vec!["snap.qcow2"], 0, vec!["first"])
        }
        "lazy" => {
            create_in(d, Path::new("lazy.qcow2"), "lazy_refcounts=on", "2M");
            qemu_io_in(d, Path::new("lazy.qcow2"), WRITES);
            // Left dirty, as after a crash: QEMU reads it read-only without repair.
            set_dirty(&d.join("lazy.qcow2"));
            (vec!["lazy.qcow2"], 0, vec![])
        }
        "chain-top" | "chain-base" => {
            create_in(d, Path::new("base.qcow2"), "", "2M");
            qemu_io_in(
                d,
                Path::new("base.qcow2"),
                &["write -P 0x81 0 1M", "write -P 0x82 1M 512k"],
            );
            create_in(
                d,
                Path::new("top.qcow2"),
                "backing_file=base.qcow2,backing_fmt=qcow2",
                "2M",
            );
            let writes = [
                "write -P 0x83 64k 64k",
                "write -z 512k 64k",
                "write -P 0x84 1200k 4k",
            ];
            qemu_io_in(d, Path::new("top.qcow2"), &writes);
            let target = if name == "chain-top" { 0 } else { 1 };
            (vec!["top.qcow2", "base.qcow2"], target, vec![])
        }
        other => panic!("no image kind {other:?}"),
    }
}

/// Sets the dirty bit (incompatible feature bit 0) of a v3 image.
fn set_dirty(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[79] |= 1;
    std::fs::write(path, bytes).unwrap();
}

impl Kind {
    /// Writes the pristine files into `dir`, which then holds a readable copy of the kind.
    pub fn install(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        dir.join(&self.files[0].0)
    }

    /// The file mutants replace, in `dir`.
    pub fn target_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.files[self.target].0)
    }

    /// The pristine bytes mutants start from.
    pub fn target_bytes(&self) -> &[u8] {
        &self.files[self.target].1
    }
}
