//! The Debian disk of issue 22's boot test (`tests/root_boot.rs`): a GPT
//! disk whose root is a minimal Debian bookworm with systemd and this
//! project's package installed (so its initramfs serves its root from a
//! QCOW2 file), converted to a zstd-compressed QCOW2.
//!
//! - partition 1: the ESP (FAT16), GRUB (`grub-mkimage`, `grub.cfg` in a
//!   memdisk) loading `/vmlinuz` and `/initrd.img` from the root;
//! - partition 2: ext4, label `qcow2-debian`: `mmdebstrap
//!   --variant=minbase` bookworm with systemd-sysv, linux-image-cloud-amd64
//!   (`-arm64`), initramfs-tools, udev, kmod, zstd, the package installed
//!   with `apt-get`, and a unit that prints `QCOW2-BOOT-MARKER: reached init
//!   on ARCH (multi-user.target ...)` once multi-user.target is reached, with
//!   whether `/qcow2-boot-test`, which it then writes, was there from an
//!   earlier boot (`written at an earlier boot: no` on a root that forgets
//!   its writes), then powers off.
//!
//! The kernel command line inside says `qcow2root=LABEL=STICK_LABEL:/IMAGE_NAME`
//! (`qcow2root=efi` when STICK_LABEL is `efi`: the image found through
//! qcow2.efi's EFI variable; none when it is [`RAW`], whose disk stays raw),
//! so the image must be copied to the root of a file system with that
//! label. One cached disk per image name under `target/root-disk/ARCH`,
//! rebuilt only when the package, this file or the arguments change; the
//! variants differ only in their ESP (the command line), so the ext4 root
//! (mmdebstrap, most of the build) is made once and copied into each.
//!
//! [`encrypted`] makes the LUKS flavour of a disk from the zstd one: a
//! conversion only, no new root.
//!
//! Both architectures take the one path below; what differs is what
//! [`Arch`] says: Debian's name of the architecture (the kernel package and
//! `mmdebstrap --arch`), GRUB's platform and file name, the console.
//!
//! Needs root (mmdebstrap's chroot mode), mmdebstrap, the Debian mirror of
//! the host's apt sources, grub-common, dosfstools, mtools, fdisk,
//! e2fsprogs and qemu-img; for x86_64 grub-efi-amd64-bin. For aarch64 on
//! an amd64 host: GRUB's arm64-efi modules, fetched by
//! [`crate::boot_disk::arm64_grub_modules`] (`apt-get download`, matching
//! the host's `grub-mkimage`), `arch-test` (mmdebstrap's check of a
//! foreign architecture) and `qemu-user-static`, whose `qemu-aarch64` runs the arm64 packages' maintainer scripts inside
//! mmdebstrap's chroot through the kernel's `binfmt_misc`: this module
//! mounts `binfmt_misc` if it is not mounted and registers `qemu-aarch64`
//! from `/usr/lib/binfmt.d/qemu-aarch64.conf` if it is not registered (as
//! `systemd-binfmt` does at boot; a container has no such service), which
//! needs root, as mmdebstrap does.

use crate::boot_disk::{self, Arch};
use crate::host;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const ROOT_LABEL: &str = "qcow2-debian";
const ESP_MIB: u64 = 8;

/// The directory of GRUB's modules for `arch`: the host's for x86_64
/// (grub-efi-amd64-bin), fetched ones for aarch64.
fn grub_modules(arch: Arch) -> Result<PathBuf, String> {
    match arch {
        Arch::X86_64 => {
            let modules = PathBuf::from("/usr/lib/grub/x86_64-efi");
            if modules.join("normal.mod").is_file() {
                Ok(modules)
            } else {
                Err("no GRUB x86_64-efi modules; apt-get install -y grub-efi-amd64-bin".into())
            }
        }
        Arch::Aarch64 => boot_disk::arm64_grub_modules(&boot_disk::cache_dir()),
    }
}

/// Tools the disk is made with, and their Debian packages.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("grub-mkimage", "grub-common"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("qemu-img", "qemu-utils"),
    ("tar", "tar"),
];

/// The disk of `arch` for `deb` (a package of that architecture) under
/// [`cache_dir`], built or found up to date; a failure fails the test with
/// [`build`]'s message.
pub fn path(arch: Arch, deb: &Path, stick_label: &str, image_name: &str) -> PathBuf {
    build(&cache_dir(arch), arch, deb, stick_label, image_name)
        .unwrap_or_else(|error| panic!("root-disk: error: {error}"))
}

/// Where [`path`] keeps `arch`'s disks: the workspace's
/// `target/root-disk/ARCH`.
pub fn cache_dir(arch: Arch) -> PathBuf {
    let root = crate::workspace_root();
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    root.join("target/root-disk").join(arch.name())
}

/// The PBKDF2 time `qemu-img` calibrates the encrypted flavour's key slot
/// to, in ms (`encrypt.iter-time`): its least, so that the two unlocks of
/// a boot (the driver's and the initramfs's) take about a second each
/// under TCG. QEMU's default, 2000 ms, is the README's measured case.
pub const LUKS_ITER_TIME_MS: u32 = 10;

/// The LUKS-encrypted flavour of the disk `plain` (made by [`path`]):
/// converted with `qemu-img convert -o encrypt.format=luks` (AES-256-XTS,
/// QEMU's default) keyed by `passphrase`, [`LUKS_ITER_TIME_MS`] of PBKDF2,
/// uncompressed: QEMU 7.2's `qemu-img convert` refuses `-c` with
/// encryption ("Compression and encryption not supported at the same
/// time"), and a compressed cluster of an encrypted image would be stored
/// in the clear anyway. Cached in `luks/` beside `plain` under the same
/// file name (the command line inside names the file), made again when
/// `plain`'s cache key or the passphrase changes; a failure fails the test.
pub fn encrypted(plain: &Path, passphrase: &str) -> PathBuf {
    let dir = plain.parent().unwrap_or(Path::new(".")).join("luks");
    let name = plain.file_name().expect("a disk file name");
    let image = dir.join(name);
    let key_path = dir.join(format!("{}.key", name.to_string_lossy()));
    let plain_key = plain.with_file_name(format!("{}.key", name.to_string_lossy()));
    let plain_key = std::fs::read(&plain_key).unwrap_or_default();
    let options = format!("luks iter-time={LUKS_ITER_TIME_MS} {passphrase}\n");
    let key = digest_hex(&[&plain_key, options.as_bytes()]);
    if is_up_to_date(&image, &key_path, &key) {
        log(&format!("up to date: {}", image.display()));
        return image;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let _ = std::fs::remove_file(&key_path);
    let partial = dir.join(format!("{}.tmp", name.to_string_lossy()));
    log(&format!(
        "converting to a LUKS-encrypted QCOW2: {}",
        image.display()
    ));
    crate::Qemu::img()
        .arg("convert")
        .secret(&crate::QemuSecret::Passphrase(passphrase.into()))
        .args(["-f", "qcow2", "-O", "qcow2", "-o"])
        .arg(format!(
            "encrypt.format=luks,encrypt.key-secret={},encrypt.iter-time={LUKS_ITER_TIME_MS}",
            crate::SECRET_ID
        ))
        .arg(plain)
        .arg(&partial)
        .run();
    std::fs::rename(&partial, &image)
        .unwrap_or_else(|error| panic!("{}: {error}", image.display()));
    std::fs::write(&key_path, format!("{key}\n"))
        .unwrap_or_else(|error| panic!("{}: {error}", key_path.display()));
    image
}

fn log(message: &str) {
    eprintln!("root-disk: {message}");
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |error| format!("{}: {error}", path.display())
}

/// Builds `out/IMAGE_NAME` (or finds it up to date) and returns its path;
/// progress goes to stderr. The error is a sentence naming what failed,
/// with the install command when a tool is missing.
pub fn build(
    out: &Path,
    arch: Arch,
    deb: &Path,
    stick_label: &str,
    image_name: &str,
) -> Result<PathBuf, String> {
    let deb = deb
        .canonicalize()
        .map_err(|error| format!("no package {}: {error}", deb.display()))?;
    let (missing, _) = host::missing(TOOLS);
    if let Some(tool) = missing.first() {
        return Err(format!(
            "missing {tool}; apt-get install -y mmdebstrap grub-common dosfstools mtools fdisk e2fsprogs qemu-utils"
        ));
    }
    let uid = host::run(host::command("id").arg("-u"))?;
    if String::from_utf8_lossy(&uid).trim() != "0" {
        return Err("mmdebstrap's chroot mode needs root".into());
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let image = out.join(image_name);
    let key_path = out.join(format!("{image_name}.key"));
    let lock_path = out.join("lock");
    let _lock = File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(io_error(&lock_path))?;
    let root_fs = root_fs(out, arch, &deb)?;
    let key = digest_hex(&[
        std::fs::read_to_string(&root_fs.key_path)
            .map_err(io_error(&root_fs.key_path))?
            .as_bytes(),
        format!("{stick_label} {image_name}\n").as_bytes(),
    ]);
    if is_up_to_date(&image, &key_path, &key) {
        log(&format!("up to date: {}", image.display()));
        return Ok(image);
    }
    let _ = std::fs::remove_file(&key_path);
    let staging = tempfile::Builder::new()
        .prefix("build.")
        .tempdir_in(out)
        .map_err(io_error(out))?;
    let (made, raw_mib) = make(staging.path(), arch, &root_fs, stick_label, image_name)?;
    std::fs::rename(&made, &image).map_err(io_error(&image))?;
    std::fs::write(&key_path, format!("{key}\n")).map_err(io_error(&key_path))?;
    let size = std::fs::metadata(&image).map_err(io_error(&image))?.len();
    log(&format!(
        "built {} ({} MiB; raw {raw_mib} MiB)",
        image.display(),
        size >> 20
    ));
    Ok(image)
}

/// The ext4 root file system every disk variant shares: made once per
/// package (mmdebstrap, the longest step), then copied into each disk.
struct RootFs {
    image: PathBuf,
    /// Its size in MiB.
    mib: u64,
    /// What it was made from; disks built on it key on this.
    key_path: PathBuf,
}

/// Builds `out/root-fs.ext4` (or finds it up to date). The caller holds
/// the directory's lock.
fn root_fs(out: &Path, arch: Arch, deb: &Path) -> Result<RootFs, String> {
    let image = out.join("root-fs.ext4");
    let key_path = out.join("root-fs.ext4.key");
    let key = digest_hex(&[
        arch.debian_name().as_bytes(),
        &std::fs::read(deb).map_err(io_error(deb))?,
        include_str!("root_disk.rs").as_bytes(),
        include_str!("host.rs").as_bytes(),
    ]);
    if is_up_to_date(&image, &key_path, &key) {
        let mib = std::fs::metadata(&image).map_err(io_error(&image))?.len() >> 20;
        return Ok(RootFs {
            image,
            mib,
            key_path,
        });
    }
    let _ = std::fs::remove_file(&key_path);
    let staging = tempfile::Builder::new()
        .prefix("root-fs.")
        .tempdir_in(out)
        .map_err(io_error(out))?;
    let mib = make_root_fs(staging.path(), arch, deb)?;
    std::fs::rename(staging.path().join("root.img"), &image).map_err(io_error(&image))?;
    std::fs::write(&key_path, format!("{key}\n")).map_err(io_error(&key_path))?;
    Ok(RootFs {
        image,
        mib,
        key_path,
    })
}

/// Whether `file` exists and `key_path` holds `key`.
fn is_up_to_date(file: &Path, key_path: &Path, key: &str) -> bool {
    file.is_file() && std::fs::read_to_string(key_path).is_ok_and(|kept| kept.trim_end() == key)
}

/// SHA-256 over the SHA-256 of each part, in hex.
fn digest_hex(parts: &[&[u8]]) -> String {
    let mut key = Sha256::new();
    for part in parts {
        key.update(Sha256::digest(part));
    }
    key.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The first Debian mirror of the host's apt sources (not the security
/// archive), or deb.debian.org.
fn mirror() -> String {
    let targets = host::run(host::command("apt-get").args([
        "indextargets",
        "--format",
        "$(ORIGIN) $(REPO_URI)",
        "Identifier: Packages",
    ]))
    .unwrap_or_default();
    String::from_utf8_lossy(&targets)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (origin, uri) = (fields.next()?, fields.next()?);
            (origin == "Debian" && !uri.contains("security")).then(|| uri.to_string())
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian/".into())
}

/// Disk usage of `dir` in KiB as `du -sk` counts it: allocated blocks,
/// each hard-linked file once.
fn disk_usage_kib(dir: &Path) -> Result<u64, String> {
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(
        host::tree(dir)
            .map_err(io_error(dir))?
            .into_iter()
            .map(|path| dir.join(path)),
    );
    for path in &paths {
        let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        bytes += meta.blocks() * 512;
    }
    Ok(bytes.div_ceil(1024))
}

/// The host's Debian architecture (`dpkg --print-architecture`).
fn host_debian_arch() -> Result<String, String> {
    let arch = host::run(host::command("dpkg").arg("--print-architecture"))?;
    Ok(String::from_utf8_lossy(&arch).trim().to_string())
}

const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Makes `arch`'s binaries run on this host through `qemu-user-static`
/// and the kernel's `binfmt_misc`, as mmdebstrap needs for a foreign
/// root: mounts `binfmt_misc` if needed and registers `qemu-ARCH` from
/// the package's `binfmt.d` entry unless it is registered (its `F` flag
/// opens the interpreter now, so it runs inside the chroot too).
fn enable_binfmt(arch: Arch) -> Result<(), String> {
    let name = format!("qemu-{}", arch.name());
    let conf = PathBuf::from(format!("/usr/lib/binfmt.d/{name}.conf"));
    // mmdebstrap checks a foreign architecture with arch-test first.
    if !conf.is_file() || !host::found("arch-test") {
        return Err(format!(
            "no {} or no arch-test, to run {} binaries in the root's chroot; \
             apt-get install -y qemu-user-static arch-test",
            conf.display(),
            arch.name()
        ));
    }
    let misc = Path::new(BINFMT_MISC);
    if !misc.join("register").exists() {
        log(&format!("mounting binfmt_misc on {BINFMT_MISC}"));
        host::run(
            host::command("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(misc),
        )?;
    }
    let entry = misc.join(&name);
    if !entry.exists() {
        log(&format!("registering {name} with binfmt_misc"));
        let rule = std::fs::read_to_string(&conf).map_err(io_error(&conf))?;
        let rule = rule
            .lines()
            .find(|line| line.starts_with(':'))
            .ok_or_else(|| format!("{}: no binfmt_misc rule", conf.display()))?;
        std::fs::write(misc.join("register"), rule)
            .map_err(|error| format!("registering {name} in {BINFMT_MISC}/register: {error}"))?;
    }
    let state = std::fs::read_to_string(&entry).map_err(io_error(&entry))?;
    if state.lines().next() != Some("enabled") {
        return Err(format!(
            "{} is registered but not enabled: echo 1 >{}",
            name,
            entry.display()
        ));
    }
    Ok(())
}

/// Makes `tmp/root.img`, the ext4 root; returns its size in MiB.
fn make_root_fs(tmp: &Path, arch: Arch, deb: &Path) -> Result<u64, String> {
    let marker = boot_disk::marker(arch);
    if host_debian_arch()? != arch.debian_name() {
        enable_binfmt(arch)?;
    }
    let unit = tmp.join("qcow2-marker.service");
    std::fs::write(
        &unit,
        format!(
            r#"[Unit]
Description=Boot test marker: multi-user.target reached, then power off
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/sh -c 'if [ -e /qcow2-boot-test ]; then w=yes; else w=no; fi; date >/qcow2-boot-test; echo "{marker} (multi-user.target, / is $(findmnt -no FSTYPE /), nbd0 $(cat /sys/block/nbd0/size) sectors, written at an earlier boot: $w)"'
ExecStart=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"#
        ),
    )
    .map_err(io_error(&unit))?;
    let mirror = mirror();
    log(&format!(
        "mmdebstrap bookworm {} from {mirror}",
        arch.debian_name()
    ));
    let deb_name = deb
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", deb.display()))?
        .to_string_lossy()
        .into_owned();
    let root = tmp.join("root");
    let started = std::time::Instant::now();
    host::run_loud(
        host::command("mmdebstrap")
            .args(["--variant=minbase", "--mode=root"])
            .arg(format!("--arch={}", arch.debian_name()))
            .arg(format!(
                "--include=systemd-sysv,linux-image-cloud-{},initramfs-tools,udev,kmod,zstd",
                arch.debian_name()
            ))
            .arg("--dpkgopt=path-exclude=/usr/share/man/*")
            .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
            .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
            .arg(format!("--customize-hook=copy-in {} /tmp", deb.display()))
            .arg(format!(
                "--customize-hook=chroot \"$1\" apt-get install -y /tmp/{deb_name}"
            ))
            .arg(format!("--customize-hook=rm -f \"$1\"/tmp/{deb_name}"))
            .arg(format!(
                "--customize-hook=copy-in {} /etc/systemd/system",
                unit.display()
            ))
            .arg("--customize-hook=chroot \"$1\" systemctl enable qcow2-marker.service")
            .arg("--customize-hook=echo qcow2-debian >\"$1/etc/hostname\"")
            .arg(
                "--customize-hook=printf \"LABEL=qcow2-debian / ext4 ro 0 0\\n\" >\"$1/etc/fstab\"",
            )
            .arg("bookworm")
            .arg(&root)
            .arg(&mirror),
    )?;
    // The README's build times come from this line.
    log(&format!(
        "mmdebstrap {} took {:.0} s",
        arch.debian_name(),
        started.elapsed().as_secs_f64()
    ));
    if !root.join("vmlinuz").exists() || !root.join("initrd.img").exists() {
        return Err("no /vmlinuz or /initrd.img in the root".into());
    }

    log("the ext4 root");
    // Content plus a quarter and 64 MiB for metadata, the journal and what
    // the first boot writes.
    let root_mib = disk_usage_kib(&root)? * 5 / 4 / 1024 + 64;
    let root_image = tmp.join("root.img");
    host::run_loud(
        host::command("mkfs.ext4")
            .args(["-q", "-F", "-L", ROOT_LABEL, "-d"])
            .arg(&root)
            .arg(&root_image)
            .arg(format!("{root_mib}M")),
    )?;
    Ok(root_mib)
}

/// The stick label of the raw disk: no `qcow2root=` on its command line
/// (the root is mounted from the disk itself), and not converted: what the
/// boot-time measurement compares the QCOW2 boot with.
pub const RAW: &str = "raw";

/// Makes the disk in `tmp` from `root_fs`; returns its path and the raw
/// disk's size in MiB.
fn make(
    tmp: &Path,
    arch: Arch,
    root_fs: &RootFs,
    stick_label: &str,
    image_name: &str,
) -> Result<(PathBuf, u64), String> {
    // STICK_LABEL `efi`: the image found through qcow2.efi's EFI variable,
    // wherever it is.
    let qcow2root = match stick_label {
        RAW => String::new(),
        "efi" => " qcow2root=efi".to_string(),
        label => format!(" qcow2root=LABEL={label}:/{image_name}"),
    };
    let cmdline = format!(
        "root=LABEL={ROOT_LABEL} ro console={} panic=-1{qcow2root}",
        arch.console()
    );
    log("GRUB and the ESP");
    let grub = tmp.join("grub/boot/grub");
    std::fs::create_dir_all(&grub).map_err(io_error(&grub))?;
    let config = format!(
        "set timeout=0\n\
         if ! search --no-floppy --label --set=root {ROOT_LABEL}; then\n    \
         echo \"QCOW2-BOOT-ERROR: no file system labelled {ROOT_LABEL}\"\n    \
         halt\n\
         fi\n\
         linux /vmlinuz {cmdline}\n\
         initrd /initrd.img\n\
         boot\n"
    );
    std::fs::write(grub.join("grub.cfg"), config).map_err(io_error(&grub))?;
    let memdisk = tmp.join("memdisk.tar");
    host::run(
        host::command("tar")
            .arg("-C")
            .arg(tmp.join("grub"))
            .args(["--create", "--format=ustar", "-f"])
            .arg(&memdisk)
            .arg("boot"),
    )?;
    let efi = tmp.join(arch.efi_name());
    host::run(
        host::command("grub-mkimage")
            .arg(format!("--directory={}", grub_modules(arch)?.display()))
            .arg(format!("--format={}", arch.grub_platform()))
            .arg(format!("--output={}", efi.display()))
            .arg("--prefix=(memdisk)/boot/grub")
            .arg(format!("--memdisk={}", memdisk.display()))
            .args([
                "memdisk",
                "tar",
                "part_gpt",
                "fat",
                "ext2",
                "normal",
                "linux",
                "boot",
                "search",
                "search_label",
                "test",
                "echo",
                "halt",
            ]),
    )?;
    let esp = tmp.join("esp.img");
    host::run(
        host::command("mkfs.vfat")
            .args(["-C", "-F", "16", "-s", "1", "-n", "ESP"])
            .arg(&esp)
            .arg((ESP_MIB * 1024).to_string()),
    )?;
    host::run(
        host::command("mmd")
            .arg("-i")
            .arg(&esp)
            .args(["::/EFI", "::/EFI/BOOT"]),
    )?;
    host::run(
        host::command("mcopy")
            .arg("-i")
            .arg(&esp)
            .arg(&efi)
            .arg(format!("::/EFI/BOOT/{}", arch.efi_name())),
    )?;

    let raw = tmp.join("disk.raw");
    let total_mib = host::gpt_esp_root(
        &raw,
        (&esp, ESP_MIB),
        (&root_fs.image, root_fs.mib),
        ROOT_LABEL,
        None,
    )?;

    if stick_label == RAW {
        return Ok((raw, total_mib));
    }
    log("converting to a zstd-compressed QCOW2");
    host::run(
        host::command("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-c",
                "-o",
                "compression_type=zstd",
            ])
            .arg(&raw)
            .arg(tmp.join("image.qcow2")),
    )?;
    Ok((tmp.join("image.qcow2"), total_mib))
}
