//! The deepest backing chain the UEFI driver (`uefi/`) and the bare-metal
//! firmware (`firmware/`) accept, 16 images (`MAX_CHAIN_DEPTH` in
//! `uefi/src/driver/attach.rs` and `firmware/src/backing.rs`), booted and
//! read within their stated stack budgets; one image more is refused.
//!
//! The chain: the boot disk of `testkit::boot_disk` converted to a
//! compressed QCOW2 (`chain-00`), then 15 overlays (`chain-01` ..
//! `chain-15`), overlay `i` writing 4 KiB at cluster `i` (64 KiB clusters;
//! the gap between the GPT and the first partition, which nothing reads
//! but the firmware's hash), so that every layer holds data of its own and
//! everything else falls through all 16 layers. `chain-16` on top makes 17.
//! Two layers name their backing file the way QEMU probes: `chain-05` with
//! an empty backing-format extension, `chain-10` without one (header bytes
//! patched here: QEMU 7.2's `qemu-img create` and `rebase` insist on a
//! format); `qemu-img info` must show neither with a backing format.
//!
//! Each run prints a stack line, which the tests parse:
//! - the driver (the UEFI runner's `--file` mode, the chain on its FAT disk, named by
//!   `\qcow2.cfg`): `qcow2.efi: stack: Start used N bytes (...), K bytes of
//!   the firmware's stack never touched ...`; the boot must reach the
//!   guest's marker, `N` stay within [`DRIVER_STACK_BUDGET`], and `K` be
//!   at least [`DRIVER_UNTOUCHED_MIN`];
//! - the firmware (its runner, the chain as virtio disks with their
//!   names as serials): `stack: the firmware used N bytes (...)`, within
//!   [`FIRMWARE_STACK_BUDGET`], and the digest of the virtual disk equal to
//!   that of `qemu-img convert -O raw`.
//!
//! The chain is cached in `target/chain-boot/ARCH/<key>`, the key a hash of
//! the recipe's version and the boot disk's bytes. Needs what tests/uefi.rs
//! and tests/firmware.rs need (`scripts/setup.sh`).

use qcow2_testkit::firmware_run::FirmwareRun;
use qcow2_testkit::uefi_run::{Mode, UefiRun};
use qcow2_testkit::{build_driver, build_firmware, RunOutput};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Images in the deepest chain both accept.
const DEPTH: usize = 16;

/// The stack the driver's `Start` may use below its caller (README, the
/// driver's section): attaching a 16-layer chain and connecting the child,
/// whose partition and FAT drivers read through every layer.
const DRIVER_STACK_BUDGET: u64 = 48 << 10;

/// OVMF's boot-services stack is 128 KiB; the test wants at least this much
/// of it never touched after the driver's deepest point.
const DRIVER_UNTOUCHED_MIN: u64 = 32 << 10;

/// The most of its 1 MiB stack the firmware may use (firmware/README.md).
const FIRMWARE_STACK_BUDGET: u64 = 128 << 10;

/// The layer whose backing-format extension is emptied.
const EMPTY_FORMAT_LAYER: usize = 5;

/// The layer whose backing-format extension is removed.
const NO_FORMAT_LAYER: usize = 10;

/// Bumped whenever the recipe below changes: part of the cache key.
const RECIPE: &str = "chain-boot v1: zlib base 64k, 15+1 overlays at cluster i, 5 empty, 10 none";

/// The qcow2 header extension naming the backing file's format.
const BACKING_FORMAT_EXTENSION: u32 = 0xe279_2aca;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn layer_name(index: usize) -> String {
    format!("chain-{index:02}.qcow2")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The boot disk of `arch`, built (or found cached) by testkit.
fn boot_disk(arch: &str) -> PathBuf {
    qcow2_testkit::boot_disk::path(arch)
}

/// Rewrites the header extensions of the qcow2 v3 image at `path` so that
/// its backing-format extension holds `format`, or is gone when `None`;
/// the backing file name moves to just after the extensions, where QEMU
/// writes it. Everything stays in the first cluster.
fn set_backing_format(path: &Path, format: Option<&[u8]>) {
    let mut bytes = fs::read(path).expect("read the image");
    let be32 = |bytes: &[u8], at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(be32(&bytes, 4), 3, "{path:?}: a version 3 image");
    let header_length = be32(&bytes, 100) as usize;
    let name_offset = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let name_len = be32(&bytes, 16) as usize;
    let name = bytes[name_offset..name_offset + name_len].to_vec();
    let cluster = 1usize << be32(&bytes, 20);
    let mut extensions = Vec::new();
    let mut at = header_length;
    loop {
        let (kind, len) = (be32(&bytes, at), be32(&bytes, at + 4) as usize);
        if kind == 0 {
            break;
        }
        extensions.push((kind, bytes[at + 8..at + 8 + len].to_vec()));
        at += 8 + len.div_ceil(8) * 8;
    }
    let old_end = (name_offset + name_len).max(at + 8);
    extensions.retain(|(kind, _)| *kind != BACKING_FORMAT_EXTENSION);
    if let Some(format) = format {
        extensions.insert(0, (BACKING_FORMAT_EXTENSION, format.to_vec()));
    }
    let mut area = Vec::new();
    for (kind, data) in &extensions {
        area.extend_from_slice(&kind.to_be_bytes());
        area.extend_from_slice(&(data.len() as u32).to_be_bytes());
        area.extend_from_slice(data);
        area.resize(area.len().div_ceil(8) * 8, 0);
    }
    area.extend_from_slice(&[0; 8]);
    let new_name_offset = header_length + area.len();
    area.extend_from_slice(&name);
    let end = header_length + area.len();
    assert!(end <= cluster, "{path:?}: the header outgrows its cluster");
    bytes[header_length..old_end.max(end)].fill(0);
    bytes[header_length..end].copy_from_slice(&area);
    bytes[8..16].copy_from_slice(&(new_name_offset as u64).to_be_bytes());
    fs::write(path, bytes).expect("write the image");
}

/// `qemu-img info` of one image (its own header only).
fn info_json(image: &Path) -> String {
    let output = qcow2_testkit::run(
        "qemu-img",
        &["info", "-U", "--output=json", path_str(image)],
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The directory holding `chain-00` .. `chain-16` for `arch`, made once
/// per boot disk and recipe.
fn chain(arch: &str) -> PathBuf {
    let disk = boot_disk(arch);
    let mut key = Sha256::new();
    key.update(RECIPE.as_bytes());
    key.update(fs::read(&disk).expect("read the boot disk"));
    let key: String = key.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let dir = repo().join("target/chain-boot").join(arch);
    qcow2_testkit::cached(&dir, &key, |partial| {
        fs::create_dir_all(partial).expect("create the chain directory");
        let base = partial.join(layer_name(0));
        qcow2_testkit::qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-c",
            "-o",
            "cluster_size=65536",
            path_str(&disk),
            path_str(&base),
        ]);
        for index in 1..=DEPTH {
            let image = partial.join(layer_name(index));
            let options = format!(
                "cluster_size=65536,backing_file={},backing_fmt=qcow2",
                layer_name(index - 1)
            );
            // From the chain's directory: QEMU 7.2 takes a relative
            // backing name from its working directory.
            qcow2_testkit::run_in(
                Some(partial),
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-o",
                    &options,
                    path_str(&image),
                ],
            );
            // Clusters 1..15 lie between the GPT and the first partition
            // (at 1 MiB); the 17th image's write goes into cluster 15 too.
            let offset = index.min(DEPTH - 1) * 65536 + if index == DEPTH { 32768 } else { 0 };
            let write = format!("write -q -P {} {offset} 4k", 0x40 + index);
            qcow2_testkit::qemu_io(&image, &[&write]);
        }
        set_backing_format(&partial.join(layer_name(EMPTY_FORMAT_LAYER)), Some(b""));
        set_backing_format(&partial.join(layer_name(NO_FORMAT_LAYER)), None);
    });
    let dir = dir.join(key);
    for index in [EMPTY_FORMAT_LAYER, NO_FORMAT_LAYER] {
        let info = info_json(&dir.join(layer_name(index)));
        assert!(
            info.contains(&format!(
                "\"backing-filename\": \"{}\"",
                layer_name(index - 1)
            )) && !info.contains("backing-filename-format"),
            "qemu-img must see {} naming its backing file without a format:\n{info}",
            layer_name(index)
        );
    }
    dir
}

/// The number after `prefix` in `line`.
fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What a run printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl From<RunOutput> for Run {
    fn from(output: RunOutput) -> Self {
        Run {
            success: output.success(),
            stdout: String::from_utf8_lossy(&output.stdout).replace('\r', ""),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    fn line_with(&self, text: &str) -> Option<&str> {
        self.stdout.lines().find(|line| line.contains(text))
    }

    fn context(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Boots the image `top` attached as a file through the driver.
fn boot_driver(arch: &str, driver: &Path, top: &Path) -> Run {
    let work = repo()
        .join("target/chain-boot")
        .join(arch)
        .join("run-driver");
    let mut run = UefiRun::new(driver, Mode::File, Some(top.to_path_buf()));
    run.timeout = Duration::from_secs(300);
    run.work = Some(work);
    Run::from(run.output())
}

fn driver_chain(arch: &str, target: &str) {
    let chain = chain(arch);
    let driver = build_driver(target);
    let top = chain.join(layer_name(DEPTH - 1));
    let run = boot_driver(arch, &driver, &top);
    let marker = format!("QCOW2-BOOT-MARKER: reached init on {arch}");
    let context = run.context();
    assert!(
        run.success && run.stdout.contains(&marker),
        "{arch}: the {DEPTH}-layer chain must boot to the marker\n{context}"
    );
    let attached = run
        .line_with("qcow2.efi: attached ")
        .unwrap_or_else(|| panic!("no attach line\n{context}"));
    assert!(
        attached.contains(&format!("{DEPTH} image(s)")),
        "{attached}\n{context}"
    );
    let stack = run
        .line_with("qcow2.efi: stack: Start used ")
        .unwrap_or_else(|| panic!("no stack line\n{context}"));
    let used = number_after(stack, "Start used ").expect("bytes used");
    let untouched = number_after(stack, "), ").expect("bytes untouched");
    eprintln!("{arch}: {stack}");
    assert!(
        used <= DRIVER_STACK_BUDGET,
        "{arch}: Start used {used} bytes, over the budget of {DRIVER_STACK_BUDGET}: {stack}"
    );
    assert!(
        untouched >= DRIVER_UNTOUCHED_MIN,
        "{arch}: {untouched} bytes of the stack left, under {DRIVER_UNTOUCHED_MIN}: {stack}"
    );

    // One more image is refused by the walk, naming the limit.
    let top = chain.join(layer_name(DEPTH));
    let run = boot_driver(arch, &driver, &top);
    let context = run.context();
    let error = run
        .line_with("qcow2.efi: error: ")
        .unwrap_or_else(|| panic!("{arch}: no error line for {} images\n{context}", DEPTH + 1));
    assert!(
        error.contains(&format!("the backing chain has more than {DEPTH} images"))
            && !run.success
            && !run.stdout.contains(&marker),
        "{arch}: {} images must be refused by the depth limit\n{context}",
        DEPTH + 1
    );
}

#[test]
fn driver_boots_the_deepest_chain_within_its_stack_budget_and_refuses_one_more_x86_64() {
    driver_chain("x86_64", "x86_64-unknown-uefi");
}

#[test]
fn driver_boots_the_deepest_chain_within_its_stack_budget_and_refuses_one_more_aarch64() {
    driver_chain("aarch64", "aarch64-unknown-uefi");
}

fn firmware_chain(arch: &str, target: &str) {
    let chain = chain(arch);
    let elf = build_firmware(target);
    let top = chain.join(layer_name(DEPTH - 1));
    let raw = chain.join("expected.raw.partial");
    qcow2_testkit::qemu_img(&["convert", "-O", "raw", path_str(&top), path_str(&raw)]);
    let expected = sha256_hex(&fs::read(&raw).expect("read the converted disk"));
    fs::remove_file(&raw).ok();
    let mut run = FirmwareRun::new(&elf, vec![top.clone()]);
    run.timeout = Duration::from_secs(180);
    let run = Run::from(run.output());
    let context = run.context();
    let digest = run
        .line_with("virtual-disk-sha256: ")
        .and_then(|line| line.strip_prefix("virtual-disk-sha256: "))
        .unwrap_or_else(|| panic!("{arch}: no digest\n{context}"));
    assert!(
        run.success && digest == expected,
        "{arch}: digest {digest}, qemu-img's {expected}\n{context}"
    );
    // Every layer below the top found as qcow2, the two named without a
    // format by probing.
    let backings = run
        .stdout
        .lines()
        .filter(|line| line.contains(": backing file (qcow2) is disk "))
        .count();
    assert_eq!(backings, DEPTH - 1, "{arch}: backing lines\n{context}");
    let stack = run
        .line_with("stack: the firmware used ")
        .unwrap_or_else(|| panic!("{arch}: no stack line\n{context}"));
    eprintln!("{arch}: {stack}");
    let used = number_after(stack, "the firmware used ").expect("bytes used");
    assert!(
        used <= FIRMWARE_STACK_BUDGET,
        "{arch}: the firmware used {used} bytes of stack, over {FIRMWARE_STACK_BUDGET}: {stack}"
    );
}

#[test]
fn firmware_reads_the_deepest_chain_within_its_stack_budget_x86_64() {
    firmware_chain("x86_64", "x86_64-unknown-none");
}

#[test]
fn firmware_reads_the_deepest_chain_within_its_stack_budget_aarch64() {
    firmware_chain("aarch64", "aarch64-unknown-none");
}

/// Five zstd layers of 2 MiB clusters: with the driver's cache
/// configuration each takes 6.25 MiB of caches, 31.25 MiB in all, within
/// the 32 MiB one image may take (`IMAGE_BUDGET` in
/// uefi/src/driver/attach.rs), but each zstd decoder 2.6 MiB more at its
/// first compressed cluster, so the chain needs 43.8 MiB: refused with the
/// driver's error line, before anything is allocated for it.
#[test]
fn driver_refuses_a_chain_over_its_memory_budget_x86_64() {
    let driver = build_driver("x86_64-unknown-uefi");
    let scratch = qcow2_testkit::Scratch::new();
    let options = "compat=1.1,cluster_size=2M,compression_type=zstd";
    let mut below: Option<String> = None;
    for index in 0..5 {
        let name = format!("budget-{index}.qcow2");
        let options = match &below {
            Some(below) => format!("{options},backing_file={below},backing_fmt=qcow2"),
            None => options.to_string(),
        };
        qcow2_testkit::run_in(
            Some(scratch.dir()),
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", &options, &name, "16M"],
        );
        below = Some(name);
    }
    let top = scratch.path(&below.expect("five layers"));
    let run = boot_driver("x86_64", &driver, &top);
    let context = run.context();
    let error = run
        .line_with("qcow2.efi: error: ")
        .unwrap_or_else(|| panic!("no error line for the chain over budget\n{context}"));
    assert!(
        error.contains("the image's caches and decoders need ")
            && error.contains("over the 33554432 it may take")
            && !run.success,
        "{error}\n{context}"
    );
}
