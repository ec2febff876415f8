//! The disks that the file tests read, made with the real tools: a tree of
//! files, file systems made from it (`mkfs.ext4 -d`, `mkfs.ext2 -d`,
//! `mkfs.vfat` + `mcopy`), partition tables (`sfdisk`: GPT; MBR with
//! logical partitions), the disks turned into compressed QCOW2 images, then
//! changed (`debugfs -w`, `mcopy`/`mdel`/`mmd`) and stored as overlays made
//! with `qemu-img convert -B`, so that changed files live in the overlay and
//! the rest in the base.
//!
//! [`make`] writes `OUT/manifest`, one line per file system: `IMAGE
//! PARTITION TREE_DIR KIND` (PARTITION `-` = no table). Nothing is made
//! again while `OUT/stamp` matches this file.

use crate::host;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Tools the disks are made with, and their Debian packages.
const TOOLS: &[(&str, &str)] = &[
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.ext2", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("mdel", "mtools"),
    ("qemu-img", "qemu-utils"),
    ("cp", "coreutils"),
];

/// What the manifest lists: image, partition, tree, file system kind.
const MANIFEST: &str = "\
gpt-base.qcow2 1 tree-fat-v1 fat
gpt-base.qcow2 2 tree-ext-v1 ext
gpt-overlay.qcow2 1 tree-fat-v2 fat
gpt-overlay.qcow2 2 tree-ext-v2 ext
mbr-base.qcow2 1 tree-fat-v1 fat
mbr-base.qcow2 5 tree-ext-v1 ext
mbr-base.qcow2 6 tree-fat-v1 fat
mbr-overlay.qcow2 1 tree-fat-v2 fat
mbr-overlay.qcow2 5 tree-ext-v2 ext
mbr-overlay.qcow2 6 tree-fat-v2 fat
whole.qcow2 - tree-ext-v1 ext
";

/// Makes the disks in `out` unless its stamp says they are up to date.
/// Concurrent calls for one directory wait for each other on a lock file.
/// The error is a sentence naming what failed, with the install command
/// when a tool is missing.
pub fn make(out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let out = out.canonicalize().map_err(io_error(out))?;
    let stamp = hex(&Sha256::digest(include_str!("make_disks.rs")));
    let lock_path = out.join(".lock");
    let _lock = File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(io_error(&lock_path))?;
    let stamp_path = out.join("stamp");
    if std::fs::read_to_string(&stamp_path).is_ok_and(|kept| kept.trim_end() == stamp) {
        return Ok(());
    }
    let (tools, packages) = host::missing(TOOLS);
    if !tools.is_empty() {
        return Err(format!(
            "missing {}; install with (as root):\n    apt-get install -y {}",
            tools.join(" "),
            packages.join(" ")
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("work.")
        .tempdir_in(&out)
        .map_err(io_error(&out))?;
    for entry in std::fs::read_dir(&out).map_err(io_error(&out))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("tree-") {
            std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
        } else if name.ends_with(".qcow2") || name == "manifest" || name == "stamp" {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Maker {
        work: work.path(),
        out: &out,
    }
    .make()?;
    std::fs::write(&stamp_path, format!("{stamp}\n")).map_err(io_error(&stamp_path))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |error| format!("{}: {error}", path.display())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The kinds of file system the disks hold.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ext,
    Fat,
}

/// A tool run in the work directory, in UTC, mtools without its geometry
/// check (the FAT images have no partition table of their own).
fn tool(work: &Path, program: &str) -> Command {
    let mut command = host::command(program);
    command
        .current_dir(work)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC");
    command
}

/// Where the disks are made and kept.
struct Maker<'a> {
    work: &'a Path,
    out: &'a Path,
}

impl Maker<'_> {
    fn tool(&self, program: &str) -> Command {
        tool(self.work, program)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        host::run(self.tool(program).args(args))
    }

    fn make(&self) -> Result<(), String> {
        let (work, out) = (self.work, self.out);
        self.make_tree()?;
        for (kind, name) in [(Kind::Ext, "ext"), (Kind::Fat, "fat")] {
            let source = work.join(if kind == Kind::Fat {
                "fat-tree"
            } else {
                "tree"
            });
            for version in ["v1", "v2"] {
                let copy = out.join(format!("tree-{name}-{version}"));
                host::run(self.tool("cp").arg("-a").arg(&source).arg(&copy))?;
            }
            self.change_tree(&out.join(format!("tree-{name}-v2")))?;
        }
        symlink("/added.bin", &out.join("tree-ext-v2/link-added"))?;

        // GPT: 1 = FAT32 (EFI System), 2 = ext4 (Linux filesystem).
        sized(&work.join("gpt.raw"), 100)?;
        host::run_with_input(
            self.tool("sfdisk").args(["-q", "gpt.raw"]),
            b"label: gpt\nsize=40MiB, type=uefi, name=\"EFI system\"\ntype=linux, name=root\n",
        )?;
        self.make_fat("gpt1.fs", 40, "32", "EFI", &["-s", "1", "-S", "512"])?;
        self.make_ext("gpt2.fs", 58, "rootfs", "mkfs.ext4", &[])?;
        self.place("gpt.raw", 1, "gpt1.fs")?;
        self.place("gpt.raw", 2, "gpt2.fs")?;

        // MBR: 1 = FAT16, 2 = extended with 5 = ext4 (1 KiB blocks), 6 = FAT12.
        sized(&work.join("mbr.raw"), 64)?;
        host::run_with_input(
            self.tool("sfdisk").args(["-q", "mbr.raw"]),
            b"label: dos\nsize=16MiB, type=6\ntype=5\nsize=30MiB, type=83\nsize=4MiB, type=1\n",
        )?;
        self.make_fat("mbr1.fs", 16, "16", "DOSPART", &[])?;
        self.make_ext("mbr5.fs", 30, "logical", "mkfs.ext4", &["-b", "1024"])?;
        self.make_fat("mbr6.fs", 4, "12", "SMALL", &[])?;
        self.place("mbr.raw", 1, "mbr1.fs")?;
        self.place("mbr.raw", 5, "mbr5.fs")?;
        self.place("mbr.raw", 6, "mbr6.fs")?;

        // No table: ext2 over the whole disk.
        self.make_ext("whole.raw", 24, "whole", "mkfs.ext2", &[])?;

        // Base images compressed (deflate; the MBR one zstd), an
        // uncompressed one too.
        let stored = |name: &str| out.join(name).to_string_lossy().into_owned();
        self.run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "gpt.raw",
                &stored("gpt-base.qcow2"),
            ],
        )?;
        self.run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                "compression_type=zstd",
                "mbr.raw",
                &stored("mbr-base.qcow2"),
            ],
        )?;
        self.run(
            "qemu-img",
            &[
                "convert",
                "-O",
                "qcow2",
                "whole.raw",
                &stored("whole.qcow2"),
            ],
        )?;

        // Changes, then overlays holding only what changed.
        for (disk, ext_parts, fat_parts) in [("gpt", &[2][..], &[1][..]), ("mbr", &[5], &[1, 6])] {
            let raw = format!("{disk}.raw");
            for (parts, kind) in [(ext_parts, Kind::Ext), (fat_parts, Kind::Fat)] {
                for &number in parts {
                    self.take(&raw, number, "part.fs")?;
                    match kind {
                        Kind::Ext => self.change_ext("part.fs")?,
                        Kind::Fat => self.change_fat("part.fs")?,
                    }
                    self.place(&raw, number, "part.fs")?;
                }
            }
            self.run(
                "qemu-img",
                &[
                    "convert",
                    "-O",
                    "qcow2",
                    "-B",
                    &stored(&format!("{disk}-base.qcow2")),
                    "-F",
                    "qcow2",
                    &raw,
                    &stored(&format!("{disk}-overlay.qcow2")),
                ],
            )?;
        }
        let manifest = out.join("manifest");
        std::fs::write(&manifest, MANIFEST).map_err(io_error(&manifest))
    }

    /// The tree: text, empty, large random and sparse files, long and
    /// non-ASCII names, a directory of 300 entries (several FAT clusters,
    /// ext4 blocks), nesting, and (ext only) symlinks: relative, absolute,
    /// to a directory, through "..", and a loop. Also the files the
    /// changes add.
    fn make_tree(&self) -> Result<(), String> {
        let tree = self.work.join("tree");
        for dir in ["dir/sub/deeper", "many", "Mixed Case Dir"] {
            let dir = tree.join(dir);
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        }
        write(&tree.join("hello.txt"), b"hello from the disk\n")?;
        write(&tree.join("empty"), b"")?;
        write(&tree.join("big.bin"), &random(3_145_739)?)?;
        write(&tree.join("dir/sub/deeper/odd-size.bin"), &random(70_000)?)?;
        write(&tree.join("dir/small.txt"), b"small\n")?;
        write(
            &tree.join("dir/A file with a long name.conf"),
            b"config=1\n",
        )?;
        write(&tree.join("dir/café-naïve.txt"), b"accents\n")?;
        write(&tree.join("Mixed Case Dir/ReadMe.TXT"), b"mixed\n")?;
        for index in 1..=300 {
            write(
                &tree.join(format!("many/entry-number-{index:03}.txt")),
                format!("entry {index:03}\n").as_bytes(),
            )?;
        }
        chmod(&tree.join("dir/small.txt"), 0o600)?;
        chmod(&tree.join("dir/sub"), 0o755)?;
        // 2021-06-15 12:34:56 UTC.
        let hello = tree.join("hello.txt");
        File::options()
            .write(true)
            .open(&hello)
            .and_then(|file| {
                file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_623_760_496))
            })
            .map_err(io_error(&hello))?;
        let fat_tree = self.work.join("fat-tree");
        host::run(self.tool("cp").arg("-a").arg(&tree).arg(&fat_tree))?;
        // 5 MiB of hole, then a line.
        let sparse = tree.join("sparse.bin");
        File::create(&sparse)
            .and_then(|file| {
                file.set_len(5 << 20)?;
                file.write_all_at(b"end of sparse\n", 5 << 20)
            })
            .map_err(io_error(&sparse))?;
        symlink("dir/small.txt", &tree.join("link-relative"))?;
        symlink("/dir/sub/deeper/odd-size.bin", &tree.join("link-absolute"))?;
        symlink("dir/sub", &tree.join("link-dir"))?;
        symlink("../hello.txt", &tree.join("dir/link-up"))?;
        symlink("loop-b", &tree.join("loop-a"))?;
        symlink("loop-a", &tree.join("loop-b"))?;

        // The changes made to the disks after the base image was taken.
        write(&self.work.join("added.bin"), &random(200_000)?)?;
        write(&self.work.join("replaced.bin"), &random(1_048_583)?)?;
        write(&self.work.join("inner.txt"), b"inner\n")
    }

    /// The same changes as [`Maker::change_ext`] and [`Maker::change_fat`]
    /// make, on a copy of the tree.
    fn change_tree(&self, tree: &Path) -> Result<(), String> {
        let copy = |from: &str, to: &str| {
            let to = tree.join(to);
            std::fs::copy(self.work.join(from), &to)
                .map(|_| ())
                .map_err(io_error(&to))
        };
        copy("added.bin", "added.bin")?;
        let small = tree.join("dir/small.txt");
        std::fs::remove_file(&small).map_err(io_error(&small))?;
        let new_dir = tree.join("newdir");
        std::fs::create_dir(&new_dir).map_err(io_error(&new_dir))?;
        copy("inner.txt", "newdir/inner.txt")?;
        let big = tree.join("big.bin");
        std::fs::remove_file(&big).map_err(io_error(&big))?;
        copy("replaced.bin", "big.bin")
    }

    fn change_ext(&self, image: &str) -> Result<(), String> {
        let work = self.work.display();
        let commands = format!(
            "write {work}/added.bin /added.bin\n\
             rm /dir/small.txt\n\
             mkdir /newdir\n\
             write {work}/inner.txt /newdir/inner.txt\n\
             rm /big.bin\n\
             write {work}/replaced.bin /big.bin\n\
             symlink /link-added /added.bin\n"
        );
        host::run_with_input(
            self.tool("debugfs").args(["-w", image, "-f", "-"]),
            commands.as_bytes(),
        )?;
        // debugfs exits 0 when a command fails: the new file must be there.
        let stat = self.run("debugfs", &["-R", "stat /newdir/inner.txt", image])?;
        if !String::from_utf8_lossy(&stat).contains("Size: 6") {
            return Err(format!("debugfs did not change {image}"));
        }
        Ok(())
    }

    fn change_fat(&self, image: &str) -> Result<(), String> {
        self.run("mcopy", &["-o", "-i", image, "added.bin", "::/added.bin"])?;
        self.run("mdel", &["-i", image, "::/dir/small.txt"])?;
        self.run("mmd", &["-i", image, "::/newdir"])?;
        self.run(
            "mcopy",
            &["-o", "-i", image, "inner.txt", "::/newdir/inner.txt"],
        )?;
        self.run("mcopy", &["-o", "-i", image, "replaced.bin", "::/big.bin"])?;
        Ok(())
    }

    /// A FAT file system of `mib` MiB holding the FAT tree.
    fn make_fat(
        &self,
        image: &str,
        mib: u64,
        bits: &str,
        label: &str,
        extra: &[&str],
    ) -> Result<(), String> {
        sized(&self.work.join(image), mib)?;
        host::run(
            self.tool("mkfs.vfat")
                .args(["-F", bits, "-n", label])
                .args(extra)
                .arg(image),
        )?;
        // `mcopy -s fat-tree/* ::/`: the top entries in byte order.
        let fat_tree = self.work.join("fat-tree");
        let mut top: Vec<String> = std::fs::read_dir(&fat_tree)
            .map_err(io_error(&fat_tree))?
            .flatten()
            .map(|entry| format!("fat-tree/{}", entry.file_name().to_string_lossy()))
            .collect();
        top.sort();
        host::run(
            self.tool("mcopy")
                .args(["-s", "-m", "-i", image])
                .args(&top)
                .arg("::/"),
        )?;
        Ok(())
    }

    /// An ext file system of `mib` MiB made by `mkfs` from the tree.
    fn make_ext(
        &self,
        image: &str,
        mib: u64,
        label: &str,
        mkfs: &str,
        extra: &[&str],
    ) -> Result<(), String> {
        sized(&self.work.join(image), mib)?;
        host::run(
            self.tool(mkfs)
                .args(["-q", "-F", "-L", label, "-d"])
                .arg(self.work.join("tree"))
                .args(extra)
                .arg(image),
        )?;
        Ok(())
    }

    /// First sector and sectors of partition `number` of `disk`, from
    /// `sfdisk --json`.
    fn partition(&self, disk: &str, number: u32) -> Result<(u64, u64), String> {
        let dump = self.run("sfdisk", &["--json", disk])?;
        let table: serde_json::Value = serde_json::from_slice(&dump)
            .map_err(|error| format!("sfdisk --json {disk}: {error}"))?;
        let node = format!("{disk}{number}");
        table["partitiontable"]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|partition| partition["node"] == node.as_str())
            .and_then(|partition| Some((partition["start"].as_u64()?, partition["size"].as_u64()?)))
            .ok_or_else(|| format!("{disk} has no partition {number} (sfdisk --json)"))
    }

    /// Writes the file system `image` over partition `number` of `disk`.
    fn place(&self, disk: &str, number: u32, image: &str) -> Result<(), String> {
        let (start, _) = self.partition(disk, number)?;
        let (image, disk) = (self.work.join(image), self.work.join(disk));
        let bytes = std::fs::read(&image).map_err(io_error(&image))?;
        File::options()
            .write(true)
            .open(&disk)
            .and_then(|file| file.write_all_at(&bytes, start * 512))
            .map_err(io_error(&disk))
    }

    /// Copies partition `number` of `disk` out into `image`.
    fn take(&self, disk: &str, number: u32, image: &str) -> Result<(), String> {
        let (start, sectors) = self.partition(disk, number)?;
        let (image, disk) = (self.work.join(image), self.work.join(disk));
        let mut bytes = vec![0; (sectors * 512) as usize];
        File::open(&disk)
            .and_then(|file| file.read_exact_at(&mut bytes, start * 512))
            .map_err(io_error(&disk))?;
        std::fs::write(&image, bytes).map_err(io_error(&image))
    }
}

/// `len` random bytes.
fn random(len: usize) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0; len];
    File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .map_err(|error| format!("/dev/urandom: {error}"))?;
    Ok(bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(io_error(path))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error(path))
}

fn symlink(target: &str, link: &Path) -> Result<(), String> {
    std::os::unix::fs::symlink(target, link).map_err(io_error(link))
}

/// A file of `mib` MiB of holes (`truncate -s`).
fn sized(path: &Path, mib: u64) -> Result<(), String> {
    File::create(path)
        .and_then(|file| file.set_len(mib << 20))
        .map_err(io_error(path))
}
