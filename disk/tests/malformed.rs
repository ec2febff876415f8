//! Damaged partition tables and file systems give their named errors (or,
//! where Linux carries on, the same result Linux gets), never a panic or an
//! endless loop. Disks start from `sfdisk`/`mkfs` output and are then
//! broken byte by byte, one rule per test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use qcow2_disk::fat::dir::MAX_DIR_ENTRIES;
use qcow2_disk::gpt::GptProblemKind;
use qcow2_disk::table::MAX_LOGICAL_PARTITIONS;
use qcow2_disk::{FileSystem, FsError, Limits, Scheme, Table, TableError};
use qcow2_reader::{BlockRead, OutOfBounds};

type Disk = Arc<Vec<u8>>;

fn run(program: &str, args: &[&str], input: &str) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run {program} ({error}); install: apt-get install -y fdisk dosfstools mtools e2fsprogs")
        });
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "{program} {args:?} failed");
}

/// A disk of `mib` MiB partitioned by `sfdisk` with `script`.
fn sfdisk_disk(dir: &Path, mib: u64, script: &str) -> Vec<u8> {
    let path = dir.join("disk.raw");
    std::fs::write(&path, vec![0u8; (mib << 20) as usize]).unwrap();
    run("sfdisk", &["-q", path.to_str().unwrap()], script);
    std::fs::read(&path).unwrap()
}

/// A FAT file system of `mib` MiB made by `mkfs.vfat` with `args`, holding `files` (name, bytes).
fn fat_volume(dir: &Path, mib: u64, args: &[&str], files: &[(&str, &[u8])]) -> Vec<u8> {
    let path = dir.join("fat.fs");
    std::fs::write(&path, vec![0u8; (mib << 20) as usize]).unwrap();
    let mut mkfs_args = args.to_vec();
    mkfs_args.push(path.to_str().unwrap());
    run("mkfs.vfat", &mkfs_args, "");
    for (name, bytes) in files {
        let source = dir.join("source");
        std::fs::write(&source, bytes).unwrap();
        let target = format!("::/{name}");
        run(
            "mcopy",
            &[
                "-i",
                path.to_str().unwrap(),
                source.to_str().unwrap(),
                &target,
            ],
            "",
        );
    }
    std::fs::read(&path).unwrap()
}

fn gpt_disk() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    sfdisk_disk(
        dir.path(),
        4,
        "label: gpt\nsize=1MiB, type=uefi\ntype=linux\n",
    )
}

fn table(bytes: Vec<u8>) -> Result<Table, TableError<qcow2_reader::OutOfBounds>> {
    Table::read(&bytes)
}

#[test]
fn gpt_with_a_damaged_primary_header_uses_the_backup() {
    let mut bytes = gpt_disk();
    let good = table(bytes.clone()).unwrap();
    bytes[512 + 0x38] ^= 1; // the disk GUID, covered by the header CRC
    let read = table(bytes).unwrap();
    let warning = read.warning.expect("warning about the primary");
    assert_eq!(warning.lba, 1);
    assert!(matches!(warning.kind, GptProblemKind::HeaderCrc { .. }));
    assert_eq!(read.partitions.len(), 2);
    assert_eq!(read.partitions[1].start, good.partitions[1].start);
}

#[test]
fn gpt_with_a_damaged_primary_entry_array_uses_the_backup() {
    let mut bytes = gpt_disk();
    let good = table(bytes.clone()).unwrap();
    bytes[1024 + 0x20] ^= 1; // first entry's starting LBA, covered by the array CRC
    let read = table(bytes).unwrap();
    let warning = read.warning.expect("warning about the primary");
    assert!(
        matches!(warning.kind, GptProblemKind::ArrayCrc { .. }),
        "{warning}"
    );
    assert_eq!(read.partitions, good.partitions);
}

#[test]
fn gpt_with_both_copies_damaged_says_what_is_wrong_with_each() {
    let mut bytes = gpt_disk();
    let last = bytes.len() - 512;
    bytes[512] = b'X'; // primary signature
    bytes[last + 0x38] ^= 1; // backup header CRC
    let error = table(bytes).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, TableError::Gpt { .. }));
    assert!(
        text.contains("GPT header at LBA 1: no \"EFI PART\" signature"),
        "{text}"
    );
    assert!(
        text.contains("GPT header at LBA 8191: header CRC32"),
        "{text}"
    );
}

#[test]
fn gpt_entry_count_beyond_the_limit_is_refused_before_allocating() {
    let mut bytes = gpt_disk();
    // 2^24 entries of 128 bytes = 2 GiB of array; fix the header CRC so only the count is wrong.
    bytes[512 + 0x50..512 + 0x54].copy_from_slice(&(1u32 << 24).to_le_bytes());
    bytes[512 + 0x10..512 + 0x14].fill(0);
    let crc = crc32(&bytes[512..512 + 92]);
    bytes[512 + 0x10..512 + 0x14].copy_from_slice(&crc.to_le_bytes());
    let read = table(bytes).unwrap();
    let warning = read.warning.expect("the backup replaced the primary");
    assert!(matches!(
        warning.kind,
        GptProblemKind::ArrayTooLarge {
            entries: 16_777_216
        }
    ));
}

fn crc32(bytes: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE, reflected), independent of the crate's.
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An MBR with one extended partition at sector 2048 whose EBR lists
/// `logical` and links to `next` (relative to the extended start).
fn mbr_with_ebr(next: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; 4 << 20];
    let record = |bytes: &mut [u8], at: usize, kind: u8, start: u32, size: u32| {
        bytes[at + 4] = kind;
        bytes[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        bytes[at + 12..at + 16].copy_from_slice(&size.to_le_bytes());
    };
    record(&mut bytes, 446, 0x05, 2048, 4096);
    bytes[510..512].copy_from_slice(&[0x55, 0xaa]);
    let ebr = 2048 * 512;
    record(&mut bytes, ebr + 446, 0x83, 1, 100);
    record(&mut bytes, ebr + 462, 0x05, next, 4096);
    bytes[ebr + 510..ebr + 512].copy_from_slice(&[0x55, 0xaa]);
    bytes
}

#[test]
fn mbr_ebr_chain_that_loops_stops_at_the_limit() {
    let read = table(mbr_with_ebr(0)).unwrap();
    assert_eq!(read.scheme, Scheme::Mbr);
    let logical = read
        .partitions
        .iter()
        .filter(|part| part.number >= 5)
        .count();
    // Linux, too, follows a looping chain until its partition limit.
    assert_eq!(logical as u32, MAX_LOGICAL_PARTITIONS);
}

#[test]
fn mbr_logical_partitions_number_from_5_in_chain_order() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sfdisk_disk(
        dir.path(),
        8,
        "label: dos\nsize=1MiB, type=83\ntype=5\nsize=1MiB, type=83\nsize=1MiB, type=c\nsize=1MiB, type=82\n",
    );
    let read = table(bytes).unwrap();
    let numbers: Vec<(u32, String)> = read
        .partitions
        .iter()
        .map(|part| (part.number, part.type_name()))
        .collect();
    assert_eq!(
        numbers,
        [
            (1, "Linux".into()),
            (2, "Extended".into()),
            (5, "Linux".into()),
            (6, "W95 FAT32 (LBA)".into()),
            (7, "Linux swap / Solaris".into())
        ]
    );
}

#[test]
fn a_fat_boot_sector_on_the_whole_disk_is_not_a_partition_table() {
    let dir = tempfile::tempdir().unwrap();
    let volume = fat_volume(dir.path(), 2, &["-F", "12"], &[("a.txt", b"whole\n")]);
    let read = table(volume.clone()).unwrap();
    assert_eq!(read.scheme, Scheme::None);
    let fs = FileSystem::open(Arc::new(volume)).unwrap();
    let mut file = fs.open_file("/A.TXT").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(file.read(&mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], b"whole\n");
}

fn open(bytes: Vec<u8>) -> Result<FileSystem<Disk>, FsError> {
    FileSystem::open(Arc::new(bytes))
}

fn read_file(fs: &FileSystem<Disk>, path: &str) -> Result<Vec<u8>, FsError> {
    let mut file = fs.open_file(path)?;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(bytes),
            read => bytes.extend_from_slice(&buf[..read]),
        }
    }
}

#[test]
fn fat_boot_sector_fields_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = fat_volume(dir.path(), 2, &["-F", "12"], &[]);
    bytes[0x0b..0x0d].copy_from_slice(&1000u16.to_le_bytes());
    let error = open(bytes).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "corrupt FAT file system: FAT boot sector: invalid bytes per sector 1000"
    );
}

#[test]
fn fat_entries_outside_the_volume_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let content = vec![7u8; 20000];
    let mut bytes = fat_volume(
        dir.path(),
        16,
        &["-F", "16", "-s", "1"],
        &[("big.bin", &content)],
    );
    let fs = open(bytes.clone()).unwrap();
    assert_eq!(read_file(&fs, "/big.bin").unwrap(), content);
    // Point the file's first FAT entry past the last cluster.
    let reserved = usize::from(u16::from_le_bytes([bytes[0x0e], bytes[0x0f]]));
    let fat_sectors = usize::from(u16::from_le_bytes([bytes[0x16], bytes[0x17]]));
    let fat_start = reserved * 512;
    let root = (reserved + 2 * fat_sectors) * 512;
    let short = bytes[root..root + 512]
        .chunks_exact(32)
        .find(|entry| entry[..11] == *b"BIG     BIN")
        .expect("short entry of big.bin");
    let first = usize::from(u16::from_le_bytes([short[26], short[27]]));
    let entry = fat_start + 2 * first;
    bytes[entry..entry + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
    let error = read_file(&open(bytes).unwrap(), "/big.bin").unwrap_err();
    assert!(
        error.to_string().contains("FAT entry of cluster") && error.to_string().contains("0xfff0"),
        "{error}"
    );
}

#[test]
fn fat_directory_loops_end_at_the_entry_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = fat_volume(dir.path(), 8, &["-F", "16", "-s", "1"], &[]);
    let path = dir.path().join("fat.fs");
    std::fs::write(&path, &bytes).unwrap();
    run("mmd", &["-i", path.to_str().unwrap(), "::/loop"], "");
    bytes = std::fs::read(&path).unwrap();
    // The new directory is cluster 2: fill it with used entries and make
    // its chain point back at itself, so it never ends by itself.
    let reserved = usize::from(u16::from_le_bytes([bytes[0x0e], bytes[0x0f]]));
    let fat_sectors = usize::from(u16::from_le_bytes([bytes[0x16], bytes[0x17]]));
    let root_entries = usize::from(u16::from_le_bytes([bytes[0x11], bytes[0x12]]));
    let fat_start = reserved * 512;
    let data_start = (reserved + 2 * fat_sectors) * 512 + root_entries * 32;
    bytes[fat_start + 4..fat_start + 6].copy_from_slice(&2u16.to_le_bytes());
    for entry in bytes[data_start..data_start + 512].chunks_exact_mut(32) {
        entry[..11].copy_from_slice(b"FILE    TXT");
        entry[11] = 0x20;
    }
    let fs = open(bytes).unwrap();
    let mut seen = 0u32;
    let error = fs.read_dir("/loop", &mut |_| seen += 1).unwrap_err();
    assert!(
        error.to_string().contains("more than 65536 entries"),
        "{error}"
    );
    assert!(seen < MAX_DIR_ENTRIES + 1);
}

#[test]
fn ext_superblock_larger_than_its_partition_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.fs");
    std::fs::write(&path, vec![0u8; 4 << 20]).unwrap();
    run(
        "mkfs.ext4",
        &["-q", "-F", "-b", "1024", path.to_str().unwrap()],
        "",
    );
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1024 + 4..1024 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let error = open(bytes).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "corrupt ext2/3/4 superblock: 4294967295 blocks of 1024 bytes do not fit the partition's 4194304 bytes"
    );
}

#[test]
fn a_partition_without_a_known_file_system_says_so() {
    let error = open(vec![0u8; 1 << 20]).err().expect("refused");
    assert!(matches!(error, FsError::Unknown));
}

#[test]
fn ext_superblock_with_zero_blocks_per_group_is_refused_before_loading() {
    // ext4-view 0.9.3 would divide by it (found by the `disk` fuzz target).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.fs");
    std::fs::write(&path, vec![0u8; 4 << 20]).unwrap();
    run(
        "mkfs.ext4",
        &["-q", "-F", "-b", "1024", path.to_str().unwrap()],
        "",
    );
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1024 + 0x20..1024 + 0x24].fill(0);
    let error = open(bytes).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "corrupt ext2/3/4 superblock: invalid blocks per group 0"
    );
}

#[test]
fn ext_block_count_high_word_counts_without_the_64bit_feature() {
    // ext4-view 0.9.3 reads s_blocks_count_hi even without 64bit and sizes
    // its descriptor table from it (found by the `disk` fuzz target).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.fs");
    std::fs::write(&path, vec![0u8; 4 << 20]).unwrap();
    run(
        "mkfs.ext2",
        &["-q", "-F", "-b", "1024", path.to_str().unwrap()],
        "",
    );
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1024 + 0x150..1024 + 0x154].copy_from_slice(&4352u32.to_le_bytes());
    let error = open(bytes).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "corrupt ext2/3/4 superblock: 18691697676288 blocks of 1024 bytes do not fit the partition's 4194304 bytes"
    );
}

/// A disk of `size` bytes that holds `bytes` at its start and zeros after
/// them: what a QCOW2 image of that virtual size costs a few KiB for.
struct Claimed {
    bytes: Vec<u8>,
    size: u64,
}

impl BlockRead for Claimed {
    type Error = OutOfBounds;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            return Err(OutOfBounds {
                offset,
                len: buf.len(),
                size: self.size,
            });
        }
        buf.fill(0);
        if let Some(held) = self
            .bytes
            .get(offset.min(self.bytes.len() as u64) as usize..)
        {
            let n = held.len().min(buf.len());
            buf[..n].copy_from_slice(&held[..n]);
        }
        Ok(())
    }

    fn size(&self) -> Result<u64, OutOfBounds> {
        Ok(self.size)
    }
}

/// A 4 MiB ext4 with 1 KiB blocks made by `mkfs.ext4 -d` (without
/// metadata_csum, so patched superblock fields need no new checksum), with
/// `/hello.txt`, `/dir/` and `/link` -> `/hello.txt`, then changed by the
/// `debugfs -w` commands `changes`.
fn ext4_volume(mkfs_args: &[&str], changes: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("dir")).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello\n").unwrap();
    std::fs::write(tree.join("dir/inner.txt"), b"inner\n").unwrap();
    std::os::unix::fs::symlink("/hello.txt", tree.join("link")).unwrap();
    let path = dir.path().join("ext.fs");
    std::fs::write(&path, vec![0u8; 4 << 20]).unwrap();
    let mut args = vec![
        "-q",
        "-F",
        "-b",
        "1024",
        "-O",
        "^metadata_csum",
        "-d",
        tree.to_str().unwrap(),
    ];
    args.extend_from_slice(mkfs_args);
    args.push(path.to_str().unwrap());
    run("mkfs.ext4", &args, "");
    if !changes.is_empty() {
        run(
            "debugfs",
            &["-w", "-f", "-", path.to_str().unwrap()],
            changes,
        );
    }
    std::fs::read(&path).unwrap()
}

fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn ext_block_groups_over_the_callers_limit_are_refused_before_loading() {
    // The image: a 4 TiB disk (free in QCOW2) whose superblock says
    // 2^32 - 1 blocks of 1 KiB, one per group. ext4-view would allocate
    // 64 GiB of group descriptors (16 bytes per group) and abort.
    let mut bytes = ext4_volume(&[], "");
    set_u32(&mut bytes, 1024 + 0x04, u32::MAX);
    set_u32(&mut bytes, 1024 + 0x20, 1);
    let disk = Arc::new(Claimed {
        bytes,
        size: 4 << 40,
    });
    let error = FileSystem::open(disk).err().expect("refused");
    assert!(
        matches!(
            error,
            FsError::ExtOverLimit { value: 0xffff_fffe, limit, .. } if limit == u64::from(Limits::DEFAULT.max_block_groups)
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "ext2/3/4 superblock: block groups (s_blocks_count / s_blocks_per_group) is 4294967294, \
         over the limit of 1048576 (the caller's Limits::max_block_groups)"
    );
}

#[test]
fn ext_block_group_limit_is_the_callers_choice() {
    // mkfs.ext4 gives 4 MiB of 1 KiB blocks one group of 8192 blocks; 1024
    // blocks per group make it 4 groups.
    let mut bytes = ext4_volume(&["-g", "1024"], "");
    let groups = |bytes: &[u8]| {
        (u32::from_le_bytes(bytes[1028..1032].try_into().unwrap()) - 1).div_ceil(1024)
    };
    assert_eq!(groups(&bytes), 4);
    let disk = Arc::new(std::mem::take(&mut bytes));
    let tight = Limits {
        max_block_groups: 3,
        ..Limits::DEFAULT
    };
    let error = FileSystem::open_with(disk.clone(), &tight)
        .err()
        .expect("refused");
    assert!(
        matches!(
            error,
            FsError::ExtOverLimit {
                value: 4,
                limit: 3,
                ..
            }
        ),
        "{error:?}"
    );
    let enough = Limits {
        max_block_groups: 4,
        ..Limits::DEFAULT
    };
    let fs = FileSystem::open_with(disk, &enough).expect("4 groups within a limit of 4");
    assert_eq!(read_file(&fs, "/hello.txt").unwrap(), b"hello\n");
}

#[test]
fn ext_group_descriptor_table_past_the_partition_is_refused_before_loading() {
    // 64bit descriptors of one block each and one block per group: the
    // table (4095 blocks after the superblock's) runs past the 4 MiB.
    let mut bytes = ext4_volume(&["-O", "64bit"], "");
    set_u32(&mut bytes, 1024 + 0x20, 1);
    bytes[1024 + 0xfe..1024 + 0x100].copy_from_slice(&1024u16.to_le_bytes());
    let error = open(bytes).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "ext2/3/4 superblock: group descriptor table bytes is 4193280, over the limit of 4192256 \
         (the partition's bytes after the superblock)"
    );
}

#[test]
fn ext_symlink_claiming_a_terabyte_is_refused_before_its_target_is_read() {
    // ext4-view reads a target whole into a buffer of the inode's size.
    let bytes = ext4_volume(&[], "sif /link size 0x10000000000\n");
    let fs = open(bytes).expect("the volume itself is sound");
    let expected = "ext2/3/4 symlink /link: target length (i_size) 1099511627776 bytes is over the limit of 4096 (PATH_MAX)";
    let error = read_file(&fs, "/link").unwrap_err();
    assert!(
        matches!(
            error,
            FsError::SymlinkTooLong {
                size: 0x100_0000_0000,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.to_string(), expected);
    assert_eq!(fs.metadata("/link").unwrap_err().to_string(), expected);
    // Through the symlink, as a directory of the path.
    assert_eq!(fs.metadata("/link/x").unwrap_err().to_string(), expected);
    // Listing the directory does not follow it: the size is shown as claimed.
    let mut sizes = Vec::new();
    fs.read_dir("/", &mut |entry| sizes.push((entry.name, entry.size)))
        .unwrap();
    assert!(
        sizes.contains(&("link".to_string(), 0x100_0000_0000)),
        "{sizes:?}"
    );
    assert_eq!(read_file(&fs, "/hello.txt").unwrap(), b"hello\n");
}

#[test]
fn ext_symlinks_within_the_limit_are_followed_as_linux_does() {
    // Long targets (a 1 KiB block holds at most 1023 bytes), relative
    // targets, `..` after a symlink, and a symlink to `.`.
    let long = format!("{}/hello.txt", "/dir/..".repeat(144));
    assert_eq!(long.len(), 1018);
    let loop_of_dots = format!("/{}", ["d"; 505].join("/"));
    let bytes = ext4_volume(
        &[],
        &format!("symlink /dir/up ../link\nsymlink /long {long}\nmkdir /d\nsymlink /d/d .\nsymlink /dots {loop_of_dots}\n"),
    );
    let fs = open(bytes).expect("volume");
    assert_eq!(read_file(&fs, "/dir/up").unwrap(), b"hello\n");
    assert_eq!(read_file(&fs, "/dir/../dir/./up").unwrap(), b"hello\n");
    assert_eq!(read_file(&fs, "/long").unwrap(), b"hello\n");
    assert_eq!(fs.metadata("/dir/up").unwrap().size, 6);
    assert_eq!(
        fs.metadata("/d/d/d/d").unwrap().kind,
        qcow2_disk::EntryKind::Directory
    );
    // A trailing `/` only after a directory, also when a symlink leads there.
    for path in ["/hello.txt/", "/link/", "/dir/up/", "/hello.txt/x"] {
        let error = fs.metadata(path).unwrap_err();
        assert!(matches!(error, FsError::NotADirectory), "{path}: {error:?}");
    }
    assert_eq!(
        fs.metadata("/d/d/").unwrap().kind,
        qcow2_disk::EntryKind::Directory
    );
    // /d/d is /d itself: 504 levels of it are 504 symlinks, over Linux's 40.
    let error = fs.metadata("/dots").unwrap_err();
    assert!(matches!(error, FsError::TooManySymlinks), "{error:?}");
}

#[test]
fn ext_directory_claiming_a_terabyte_is_refused_before_it_is_searched() {
    let bytes = ext4_volume(&[], "sif /dir size 0x10000000000\n");
    let fs = open(bytes).expect("volume");
    let expected = "ext2/3/4 directory /dir: size (i_size) 1099511627776 bytes is over the limit of 1073741824 \
                    (the caller's Limits::max_directory_bytes)";
    let error = fs.read_dir("/dir", &mut |_| {}).unwrap_err();
    assert!(
        matches!(error, FsError::DirectoryTooLarge { .. }),
        "{error:?}"
    );
    assert_eq!(error.to_string(), expected);
    assert_eq!(
        read_file(&fs, "/dir/inner.txt").unwrap_err().to_string(),
        expected
    );
    assert_eq!(read_file(&fs, "/hello.txt").unwrap(), b"hello\n");
}

#[test]
fn ext_root_directory_over_the_limit_is_refused_at_open() {
    let bytes = ext4_volume(&[], "sif / size 0x10000000000\n");
    let error = open(bytes).err().expect("refused");
    assert!(
        matches!(error, FsError::DirectoryTooLarge { ref path, .. } if path == "/"),
        "{error:?}"
    );
}

#[test]
fn ext_block_size_over_64_kib_is_refused_before_loading() {
    // ext4-view takes block sizes up to 2 GiB and caches 8 blocks or more:
    // a 4 MiB block size made it allocate 32 MiB (found by `disk_sparse`).
    let mut bytes = ext4_volume(&[], "");
    set_u32(&mut bytes, 1024 + 0x18, 12);
    let error = open(bytes).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "corrupt ext2/3/4 superblock: invalid log block size (s_log_block_size; Linux reads at most 6, 64 KiB blocks) 12"
    );
}

#[test]
fn ext_journal_over_the_callers_limit_is_refused_before_it_is_replayed() {
    // A journal is read at open only when the volume needs recovery; then
    // ext4-view walks every block of the journal inode's size.
    let bytes = ext4_volume(
        &["-O", "metadata_csum,64bit,has_journal"],
        "feature needs_recovery\n",
    );
    // Within the default limit the 1 MiB journal reaches ext4-view, which
    // wants the checksum features jbd2 sets at mount and mke2fs does not.
    let error = open(bytes.clone()).err().expect("ext4-view refuses it");
    assert!(
        matches!(error, FsError::Ext(_)) && error.to_string().contains("journal"),
        "{error:?}"
    );
    let disk = Arc::new(bytes);
    let tight = Limits {
        max_journal_bytes: 512 << 10,
        ..Limits::DEFAULT
    };
    let error = FileSystem::open_with(disk, &tight).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "ext2/3/4 superblock: journal bytes (the journal inode's i_size; the volume needs recovery) \
         is 1048576, over the limit of 524288 (the caller's Limits::max_journal_bytes)"
    );
    let claimed = ext4_volume(
        &["-O", "metadata_csum,64bit,has_journal"],
        "feature needs_recovery\nsif <8> size 0x10000000000\n",
    );
    let error = open(claimed).err().expect("refused");
    assert!(
        matches!(
            error,
            FsError::ExtOverLimit {
                value: 0x100_0000_0000,
                limit: 0x4000_0000,
                ..
            }
        ),
        "{error:?}"
    );
}
