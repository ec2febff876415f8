//! The bootable GPT test disk of the UEFI boot tests, built once per
//! architecture and kept under `target/boot-disk/ARCH/disk.raw`
//! (`scripts/boot-disk.md` says why it is made this way):
//!
//! - partition 1: the EFI System Partition, FAT16, with GRUB at the
//!   removable-media path `\EFI\BOOT\BOOTX64.EFI` (`BOOTAA64.EFI`). GRUB is
//!   made with `grub-mkimage`; its `grub.cfg` sits in an embedded memdisk and
//!   finds partition 2 by its file system label, looking first on the disk
//!   GRUB itself was loaded from.
//! - partition 2: ext4, label `qcow2-root`, holding `/boot/vmlinuz` (a
//!   Debian cloud kernel) and `/boot/initrd.img` (a gzip cpio with a static
//!   busybox whose `/init` prints [`marker`] and powers the machine off).
//!
//! Everything is made without root and without loop devices: `sfdisk`
//! writes the GPT into the image file, `mkfs.vfat -C` + `mcopy` and
//! `mkfs.ext4 -d` build the partitions as files, and they are copied into
//! place. UUIDs, volume ids and timestamps are fixed, so rebuilding from
//! the same inputs gives the same bytes.
//!
//! x86_64 uses the host's packages (installed by `scripts/setup.sh`). The
//! arm64 packages (kernel, busybox-static, GRUB's arm64-efi modules) are
//! fetched once with `apt-get download` through a private apt state under
//! `target/boot-disk/arm64-apt` (no `dpkg --add-architecture`), and the
//! needed files are unpacked from the .debs into
//! `target/boot-disk/arm64-root`.
//!
//! The disk is rebuilt only when this file or one of its inputs (kernel,
//! busybox, GRUB modules, the disk tools' versions) changed: a digest of
//! them is kept beside it. Concurrent builds of one architecture wait for
//! each other on a lock file.

use crate::host;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The disk of `arch` (`x86_64` or `aarch64`) under the workspace's
/// `target/boot-disk`, built or found up to date. A failure (a missing
/// package, a failed download) fails the test with [`build`]'s message.
pub fn path(arch: &str) -> PathBuf {
    let arch = Arch::from_name(arch).unwrap_or_else(|error| panic!("boot-disk: {error}"));
    build(&cache_dir(), arch)
        .unwrap_or_else(|error| panic!("boot-disk: error: {error}"))
        .path
}

/// Where [`path`] keeps the disks and the fetched arm64 packages.
pub fn cache_dir() -> PathBuf {
    // Canonical: the printed path is `REPO/target/...`, not `REPO/testkit/..`.
    let root = crate::workspace_root();
    root.canonicalize()
        .unwrap_or_else(|_| root.to_path_buf())
        .join("target/boot-disk")
}

/// The line that the disk's `/init` prints on `arch`'s console.
pub fn marker(arch: Arch) -> String {
    format!("QCOW2-BOOT-MARKER: reached init on {}", arch.name())
}

/// The architectures a boot disk is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64, booted by OVMF.
    X86_64,
    /// aarch64, booted by AAVMF.
    Aarch64,
}

impl Arch {
    /// `x86_64` or `aarch64`.
    pub fn from_name(name: &str) -> Result<Arch, String> {
        match name {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            _ => Err(format!(
                "unknown architecture '{name}' (expected x86_64 or aarch64)"
            )),
        }
    }

    /// The name [`Arch::from_name`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name of the architecture (`amd64`, `arm64`): `dpkg
    /// --print-architecture`, `mmdebstrap --arch`, the kernel package
    /// `linux-image-cloud-NAME`, `scripts/package.sh --arch`.
    pub fn debian_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    pub(crate) fn grub_platform(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-efi",
            Arch::Aarch64 => "arm64-efi",
        }
    }

    /// GRUB's name at the removable-media path.
    pub(crate) fn efi_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "BOOTX64.EFI",
            Arch::Aarch64 => "BOOTAA64.EFI",
        }
    }

    pub(crate) fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

/// What [`build`] gives.
#[derive(Debug, Clone)]
pub struct BootDisk {
    /// `CACHE/ARCH/disk.raw`.
    pub path: PathBuf,
    /// Whether this call built it (rather than finding it up to date).
    pub built: bool,
}

// Fixed identities: the GPT, the partitions and both file systems. The
// tests and GRUB rely only on the label; the UUIDs are fixed for
// reproducibility.
const DISK_GUID: &str = "5143c032-0000-4b00-8000-000000000001";
const ESP_PART_UUID: &str = "5143c032-0000-4b00-8000-0000000000e1";
const ROOT_PART_UUID: &str = "5143c032-0000-4b00-8000-0000000000e2";
const ROOT_FS_UUID: &str = "5143c032-0000-4b00-8000-0000000000f2";
const ROOT_HASH_SEED: &str = "5143c032-0000-4b00-8000-0000000000f3";
const ESP_VOLUME_ID: &str = "5143C032";
const ROOT_LABEL: &str = "qcow2-root";
/// All file times on the disk (2024-01-01T00:00:00Z; FAT cannot store 1970).
const EPOCH: u64 = 1_704_067_200;
/// The ESP is small FAT16: GRUB is ~1 MiB; UEFI firmware reads FAT12/16/32.
const ESP_MIB: u64 = 4;

/// Host tools, with the Debian package that provides each.
const TOOLS: &[(&str, &str)] = &[
    ("sfdisk", "fdisk"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("cpio", "cpio"),
    ("grub-mkimage", "grub-common"),
    ("gzip", "gzip"),
    ("tar", "tar"),
    ("touch", "coreutils"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-query", "dpkg"),
    ("apt-get", "apt"),
];

/// Builds the disk of `arch` under `cache` (`cache/ARCH/disk.raw`), or
/// finds it up to date; progress goes to stderr. The error is a sentence
/// naming what failed, with the install command when a package is missing.
pub fn build(cache: &Path, arch: Arch) -> Result<BootDisk, String> {
    let (tools, packages) = host::missing(TOOLS);
    if !tools.is_empty() {
        return Err(format!(
            "missing {}; run scripts/setup.sh as root, or: apt-get install -y {}",
            tools.join(" "),
            packages.join(" ")
        ));
    }
    let out = cache.join(arch.name());
    std::fs::create_dir_all(&out).map_err(|error| format!("{}: {error}", out.display()))?;
    let lock_path = out.join("lock");
    let lock = File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|error| format!("{}: {error}", lock_path.display()))?;
    let inputs = Inputs::select(cache, arch)?;
    let key = inputs.key()?;
    let disk = out.join("disk.raw");
    let key_path = out.join("disk.key");
    let up_to_date = disk.is_file()
        && std::fs::read_to_string(&key_path).is_ok_and(|kept| kept.trim_end() == key);
    if up_to_date {
        log(&format!("up to date: {}", disk.display()));
    } else {
        let _ = std::fs::remove_file(&key_path);
        inputs.build(&out, &disk)?;
        std::fs::write(&key_path, format!("{key}\n"))
            .map_err(|error| format!("{}: {error}", key_path.display()))?;
    }
    drop(lock);
    Ok(BootDisk {
        path: disk,
        built: !up_to_date,
    })
}

fn log(message: &str) {
    eprintln!("boot-disk: {message}");
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |error| format!("{}: {error}", path.display())
}

/// What the disk is made from.
struct Inputs {
    arch: Arch,
    kernel: PathBuf,
    busybox: PathBuf,
    grub_modules: PathBuf,
}

/// The first package of a `Depends:` line (what a Debian metapackage such as
/// `linux-image-cloud-amd64` depends on, e.g. `linux-image-6.1.0-57-cloud-amd64`).
fn first_dependency(control: &str) -> Option<String> {
    let depends = control
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))?;
    let first = depends.trim_start().split([' ', ',']).next()?;
    (!first.is_empty()).then(|| first.to_string())
}

fn dpkg_query(args: &[&str]) -> Result<String, String> {
    let stdout = host::run(host::command("dpkg-query").args(args))?;
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

impl Inputs {
    fn select(cache: &Path, arch: Arch) -> Result<Inputs, String> {
        match arch {
            Arch::X86_64 => {
                let kernel_package = dpkg_query(&[
                    "-W",
                    "-f=Depends: ${Depends}\\n",
                    "linux-image-cloud-amd64",
                ])
                .ok()
                .and_then(|control| first_dependency(&control))
                .ok_or("linux-image-cloud-amd64 is not installed; run scripts/setup.sh as root, or: apt-get install -y linux-image-cloud-amd64")?;
                let kernel_version = kernel_package
                    .strip_prefix("linux-image-")
                    .unwrap_or(&kernel_package);
                let kernel = PathBuf::from(format!("/boot/vmlinuz-{kernel_version}"));
                if !kernel.is_file() {
                    return Err(format!(
                        "{kernel_package} is installed but {} is missing",
                        kernel.display()
                    ));
                }
                // busybox (not -static) is dynamically linked and cannot run alone.
                let busybox_static = dpkg_query(&["-W", "-f=${Status}", "busybox-static"]);
                if !busybox_static.is_ok_and(|status| status.contains("ok installed")) {
                    return Err("busybox-static is not installed; run scripts/setup.sh as root, or: apt-get install -y busybox-static".into());
                }
                let grub_modules = PathBuf::from("/usr/lib/grub/x86_64-efi");
                if !grub_modules.join("normal.mod").is_file() {
                    return Err(
                        "no GRUB x86_64-efi modules; run: apt-get install -y grub-efi-amd64-bin"
                            .into(),
                    );
                }
                Ok(Inputs {
                    arch,
                    kernel,
                    busybox: "/bin/busybox".into(),
                    grub_modules,
                })
            }
            Arch::Aarch64 => {
                let root = cache.join("arm64-root");
                fetch_arm64(&cache.join("arm64-apt"), &root)?;
                Ok(Inputs {
                    arch,
                    kernel: arm64_kernel(&root)?,
                    busybox: root.join("bin/busybox"),
                    grub_modules: root.join("usr/lib/grub/arm64-efi"),
                })
            }
        }
    }

    /// A digest of everything the disk is made from: this file (the
    /// recipe), the kernel, busybox, the GRUB modules and the versions of
    /// the tools that write the disk.
    fn key(&self) -> Result<String, String> {
        let mut key = Sha256::new();
        key.update(Sha256::digest(include_str!("boot_disk.rs")));
        key.update(Sha256::digest(include_str!("host.rs")));
        for file in [&self.kernel, &self.busybox] {
            key.update(Sha256::digest(std::fs::read(file).map_err(io_error(file))?));
        }
        key.update(dpkg_query(&[
            "-W",
            "-f=${Package} ${Version}\\n",
            "grub-common",
            "mtools",
            "dosfstools",
            "e2fsprogs",
            "fdisk",
            "cpio",
        ])?);
        let mut modules: Vec<PathBuf> = std::fs::read_dir(&self.grub_modules)
            .map_err(io_error(&self.grub_modules))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "mod"))
            .collect();
        modules.sort();
        for module in &modules {
            key.update(module.file_name().expect("a file").as_encoded_bytes());
            key.update(Sha256::digest(
                std::fs::read(module).map_err(io_error(module))?,
            ));
        }
        Ok(hex(&key.finalize()))
    }

    /// Builds the disk in a temporary directory under `out` and moves it to
    /// `disk`.
    fn build(&self, out: &Path, disk: &Path) -> Result<(), String> {
        let staging = tempfile::Builder::new()
            .prefix("build.")
            .tempdir_in(out)
            .map_err(io_error(out))?;
        let tmp = staging.path();
        log(&format!(
            "building {} from {}",
            disk.display(),
            self.kernel
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
        let efi = tmp.join(self.arch.efi_name());
        self.make_initrd(tmp, &tmp.join("initrd.img"))?;
        self.make_grub(tmp, &efi)?;
        self.make_esp(&efi, &tmp.join("esp.img"))?;
        let root_mib = self.make_root(tmp, &tmp.join("initrd.img"), &tmp.join("root.img"))?;
        let raw = tmp.join("disk.raw");
        let total_mib = host::gpt_esp_root(
            &raw,
            (&tmp.join("esp.img"), ESP_MIB),
            (&tmp.join("root.img"), root_mib),
            ROOT_LABEL,
            Some(host::GptIds {
                disk: DISK_GUID,
                esp: ESP_PART_UUID,
                root: ROOT_PART_UUID,
                epoch: EPOCH,
            }),
        )?;
        std::fs::rename(&raw, disk).map_err(io_error(disk))?;
        log(&format!(
            "built {}: {total_mib} MiB (ESP {ESP_MIB} MiB, root {root_mib} MiB)",
            disk.display()
        ));
        Ok(())
    }

    /// A gzip cpio (newc) of busybox and an `/init` that prints the marker.
    fn make_initrd(&self, tmp: &Path, initrd: &Path) -> Result<(), String> {
        let dir = tmp.join("initramfs");
        for sub in ["bin", "dev", "proc", "sys"] {
            make_dir(&dir.join(sub))?;
        }
        copy(&self.busybox, &dir.join("bin/busybox"), 0o755)?;
        let sh = dir.join("bin/sh");
        std::os::unix::fs::symlink("busybox", &sh).map_err(io_error(&sh))?;
        // The kernel finds no /dev/console in this cpio (making the node
        // needs root), so /init mounts devtmpfs and opens the console itself.
        write(
            &dir.join("init"),
            &format!(
                "#!/bin/sh\n\
                 /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
                 exec >/dev/console 2>&1 </dev/console\n\
                 echo \"{}\"\n\
                 /bin/busybox poweroff -f\n",
                marker(self.arch)
            ),
            0o755,
        )?;
        pin_times(&dir)?;
        // `find . -print0 | LC_ALL=C sort -z`: the directory itself first.
        let mut list = b".\0".to_vec();
        for path in host::tree(&dir).map_err(io_error(&dir))? {
            list.extend_from_slice(b"./");
            list.extend_from_slice(path.as_os_str().as_encoded_bytes());
            list.push(0);
        }
        let archive = host::run_with_input(
            host::command("cpio")
                .current_dir(&dir)
                .args(["--quiet", "--null", "--create", "--format=newc"])
                .args(["--reproducible", "--owner=0:0"]),
            &list,
        )?;
        let gzipped = host::run_with_input(host::command("gzip").args(["-n", "-9"]), &archive)?;
        std::fs::write(initrd, gzipped).map_err(io_error(initrd))
    }

    /// GRUB with its `grub.cfg` in an embedded memdisk.
    fn make_grub(&self, tmp: &Path, efi: &Path) -> Result<(), String> {
        let dir = tmp.join("grub");
        make_dir(&dir.join("boot/grub"))?;
        // $cmdpath is GRUB's own location, e.g. (hd0,gpt1)/EFI/BOOT: the
        // label search tries partition 2 of that disk first (--hint), so
        // another disk with the same label cannot win.
        // `no_timer_check` (x86_64): on a starved TCG host the kernel's
        // IO-APIC timer check failed once in a CI run ("IO-APIC + timer
        // doesn't work!", a panic); virtual machines skip that check.
        let timer = match self.arch {
            Arch::X86_64 => " no_timer_check",
            Arch::Aarch64 => "",
        };
        let cmdline = format!("console={} panic=-1 quiet{timer}", self.arch.console());
        let config = format!(
            r#"set timeout=0
# Any failure prints one line and powers off: never a GRUB prompt that waits.
function fail {{
    echo "QCOW2-BOOT-ERROR: $1"
    halt
}}
regexp --set=1:esp_disk '^\(([^,]+),' "$cmdpath"
if ! search --no-floppy --label --set=root --hint="$esp_disk,gpt2" {ROOT_LABEL}; then
    fail "no file system labelled {ROOT_LABEL}"
fi
if ! linux /boot/vmlinuz {cmdline}; then
    fail "cannot load /boot/vmlinuz from ($root)"
fi
if ! initrd /boot/initrd.img; then
    fail "cannot load /boot/initrd.img from ($root)"
fi
boot
fail "the kernel did not start"
"#
        );
        write(&dir.join("boot/grub/grub.cfg"), &config, 0o644)?;
        pin_times(&dir)?;
        let memdisk = tmp.join("memdisk.tar");
        host::run(
            host::command("tar")
                .arg("-C")
                .arg(&dir)
                .args(["--create", "--format=ustar", "--sort=name"])
                .arg(format!("--mtime=@{EPOCH}"))
                .args(["--owner=0", "--group=0", "--numeric-owner", "-f"])
                .arg(&memdisk)
                .arg("boot"),
        )?;
        host::run(
            host::command("grub-mkimage")
                .arg(format!("--directory={}", self.grub_modules.display()))
                .arg(format!("--format={}", self.arch.grub_platform()))
                .arg(format!("--output={}", efi.display()))
                .arg("--prefix=(memdisk)/boot/grub")
                .arg(format!("--memdisk={}", memdisk.display()))
                .args([
                    "memdisk",
                    "tar",
                    "part_gpt",
                    "part_msdos",
                    "fat",
                    "ext2",
                    "normal",
                    "linux",
                    "boot",
                    "search",
                    "search_fs_uuid",
                    "search_label",
                    "search_fs_file",
                    "regexp",
                    "test",
                    "echo",
                    "halt",
                    "reboot",
                    "configfile",
                    "ls",
                    "cat",
                    "efi_gop",
                ]),
        )?;
        Ok(())
    }

    /// The FAT16 ESP holding GRUB at the removable-media path.
    fn make_esp(&self, efi: &Path, esp: &Path) -> Result<(), String> {
        // mtools stamps the entries it makes with SOURCE_DATE_EPOCH; the
        // script this was ported from exported it from here on, so the
        // tools after this one get it too (the same bytes as its disks).
        let epoch = EPOCH.to_string();
        host::run(
            host::command("mkfs.vfat")
                .env("SOURCE_DATE_EPOCH", &epoch)
                .args(["-C", "--invariant", "-F", "16", "-s", "1"])
                .args(["-i", ESP_VOLUME_ID, "-n", "ESP"])
                .arg(esp)
                .arg((ESP_MIB * 1024).to_string()),
        )?;
        host::run(
            host::command("mmd")
                .env("SOURCE_DATE_EPOCH", &epoch)
                .arg("-i")
                .arg(esp)
                .args(["::/EFI", "::/EFI/BOOT"]),
        )?;
        touch(&[efi.to_path_buf()])?;
        host::run(
            host::command("mcopy")
                .env("SOURCE_DATE_EPOCH", &epoch)
                .args(["-m", "-i"])
                .arg(esp)
                .arg(efi)
                .arg(format!("::/EFI/BOOT/{}", self.arch.efi_name())),
        )?;
        Ok(())
    }

    /// The ext4 root with the kernel and the initrd; returns its size in MiB.
    fn make_root(&self, tmp: &Path, initrd: &Path, image: &Path) -> Result<u64, String> {
        let dir = tmp.join("root");
        make_dir(&dir.join("boot"))?;
        copy(&self.kernel, &dir.join("boot/vmlinuz"), 0o644)?;
        copy(initrd, &dir.join("boot/initrd.img"), 0o644)?;
        pin_times(&dir)?;
        // Content plus a quarter and 2 MiB for metadata and the journal, in
        // MiB; the content as `du -sk --apparent-size` counts it (every
        // entry's size, the directory's own included, rounded up to KiB).
        let paths = host::tree(&dir).map_err(io_error(&dir))?;
        let mut bytes = std::fs::symlink_metadata(&dir)
            .map_err(io_error(&dir))?
            .len();
        for path in &paths {
            let path = dir.join(path);
            bytes += std::fs::symlink_metadata(&path)
                .map_err(io_error(&path))?
                .len();
        }
        let content_kib = bytes.div_ceil(1024);
        let mib = (content_kib * 5 / 4) / 1024 + 3;
        // 4 KiB blocks, few inodes, no reserve: small. E2FSPROGS_FAKE_TIME
        // pins the superblock and inode times; hash_seed pins the directory
        // hashes.
        File::create(image)
            .and_then(|file| file.set_len(mib << 20))
            .map_err(io_error(image))?;
        host::run(
            host::command("mkfs.ext4")
                .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
                .env("E2FSPROGS_FAKE_TIME", EPOCH.to_string())
                .args(["-q", "-F", "-b", "4096", "-N", "64", "-m", "0"])
                .args(["-L", ROOT_LABEL, "-U", ROOT_FS_UUID, "-E"])
                .arg(format!("hash_seed={ROOT_HASH_SEED},root_owner=0:0"))
                .arg("-d")
                .arg(&dir)
                .arg(image)
                .arg(format!("{mib}M")),
        )?;
        // mkfs.ext4 -d copies the staged files' owner, ctime and atime (not
        // settable without root); pin them so that a rebuild writes the
        // same inodes.
        let mut commands = String::new();
        for path in &paths {
            let path = format!("/{}", path.display());
            commands += &format!("sif \"{path}\" uid 0\nsif \"{path}\" gid 0\n");
            for field in ["atime", "ctime", "mtime", "crtime"] {
                commands +=
                    &format!("sif \"{path}\" {field} @{EPOCH}\nsif \"{path}\" {field}_extra 0\n");
            }
        }
        host::run_with_input(
            host::command("debugfs")
                .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
                .args(["-w", "-f", "-"])
                .arg(image),
            commands.as_bytes(),
        )
        .map_err(|error| {
            format!(
                "debugfs could not pin the times in {}: {error}",
                image.display()
            )
        })?;
        Ok(mib)
    }
}

/// GRUB's arm64-efi modules, fetched (or found) under `cache`'s
/// `arm64-root` as for the aarch64 disk, matching the host's
/// `grub-mkimage`: the root boot test's arm64 disk
/// ([`crate::root_disk`]) is made with them too. Takes the aarch64 disk's
/// lock, as [`build`] does, so the two never fetch at once.
pub fn arm64_grub_modules(cache: &Path) -> Result<PathBuf, String> {
    let out = cache.join(Arch::Aarch64.name());
    std::fs::create_dir_all(&out).map_err(io_error(&out))?;
    let lock_path = out.join("lock");
    let _lock = File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(io_error(&lock_path))?;
    let root = cache.join("arm64-root");
    fetch_arm64(&cache.join("arm64-apt"), &root)?;
    Ok(root.join("usr/lib/grub/arm64-efi"))
}

/// The kernel unpacked into the arm64 root (the first `boot/vmlinuz-*`).
fn arm64_kernel(root: &Path) -> Result<PathBuf, String> {
    let boot = root.join("boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(&boot)
        .map_err(io_error(&boot))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels
        .into_iter()
        .next()
        .ok_or_else(|| format!("no kernel in {}", boot.display()))
}

/// Fetches the arm64 kernel, busybox-static and GRUB modules into `root`
/// once, through a private apt state in `apt`; later calls use them
/// offline. The GRUB modules must match the host's `grub-mkimage`: they are
/// fetched again when the host's GRUB changed.
fn fetch_arm64(apt: &Path, root: &Path) -> Result<(), String> {
    let grub_version = dpkg_query(&["-W", "-f=${Version}", "grub-common"])?;
    let complete = root.join(".complete");
    if std::fs::read_to_string(&complete).is_ok_and(|kept| kept.trim_end() == grub_version) {
        return Ok(());
    }
    log("fetching arm64 kernel, busybox-static and GRUB modules (apt-get download)");
    for dir in [apt, root] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
        }
    }
    for sub in [
        "lists/partial",
        "archives/partial",
        "parts",
        "prefs",
        "debs",
    ] {
        make_dir(&apt.join(sub))?;
    }
    make_dir(root)?;
    write(&apt.join("status"), "", 0o644)?;
    // The host's own Debian repositories (same mirror and suites), arm64 only.
    let targets = host::run(host::command("apt-get").args([
        "indextargets",
        "--format",
        "$(ORIGIN) $(REPO_URI) $(RELEASE) $(COMPONENT)",
        "Identifier: Packages",
    ]))
    .unwrap_or_default();
    let mut sources: Vec<String> = String::from_utf8_lossy(&targets)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4 && fields[0] == "Debian" && fields[3] == "main").then(|| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {} {}",
                    fields[1], fields[2], fields[3]
                )
            })
        })
        .collect();
    sources.sort();
    sources.dedup();
    if sources.is_empty() {
        return Err(
            "the host's apt knows no Debian repository; run apt-get update (as root) first".into(),
        );
    }
    write(
        &apt.join("sources.list"),
        &(sources.join("\n") + "\n"),
        0o644,
    )?;
    let apt_dir = apt.display();
    let options: Vec<String> = [
        "APT::Architecture=arm64".to_string(),
        "APT::Architectures::=arm64".into(),
        format!("Dir::State={apt_dir}"),
        format!("Dir::State::Lists={apt_dir}/lists"),
        format!("Dir::State::status={apt_dir}/status"),
        format!("Dir::Cache={apt_dir}"),
        format!("Dir::Cache::archives={apt_dir}/archives"),
        format!("Dir::Etc::SourceList={apt_dir}/sources.list"),
        format!("Dir::Etc::SourceParts={apt_dir}/parts"),
        "Dir::Etc::Preferences=/dev/null".into(),
        format!("Dir::Etc::PreferencesParts={apt_dir}/prefs"),
        "Acquire::Languages=none".into(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
        "APT::Sandbox::User=root".into(),
    ]
    .into_iter()
    .flat_map(|option| ["-o".to_string(), option])
    .collect();
    host::run(
        host::command("apt-get")
            .args(&options)
            .args(["-q", "update"]),
    )
    .map_err(|error| {
        format!(
            "apt-get update for arm64 failed (network to the Debian mirror needed once): {error}"
        )
    })?;
    let metapackage = host::run(
        host::command("apt-cache")
            .args(&options)
            .args(["show", "linux-image-cloud-arm64"]),
    )
    .unwrap_or_default();
    let kernel_package = first_dependency(&String::from_utf8_lossy(&metapackage))
        .ok_or("cannot resolve linux-image-cloud-arm64 to a kernel package")?;
    let grub_package = format!("grub-efi-arm64-bin={grub_version}");
    host::run(
        host::command("apt-get")
            .current_dir(apt.join("debs"))
            .args(&options)
            .args([
                "-q",
                "download",
                &kernel_package,
                "busybox-static",
                &grub_package,
            ]),
    )
    .map_err(|error| {
        format!(
            "apt-get download of {kernel_package} busybox-static {grub_package} failed: {error}"
        )
    })?;
    // Only the files the disk needs; the kernel package's modules are 100 MiB.
    let debs = apt.join("debs");
    let mut packages: Vec<PathBuf> = std::fs::read_dir(&debs)
        .map_err(io_error(&debs))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    packages.sort();
    for deb in &packages {
        // A package without some of the patterns makes tar fail: checked
        // below by what must be there.
        let _ = host::pipe(
            host::command("dpkg-deb").arg("--fsys-tarfile").arg(deb),
            host::command("tar")
                .arg("-x")
                .arg("-C")
                .arg(root)
                .args(["--wildcards", "./boot/vmlinuz-*", "./bin/busybox"])
                .arg("./usr/lib/grub/arm64-efi/*"),
        );
    }
    if !root.join("bin/busybox").is_file() {
        return Err("no bin/busybox in the arm64 busybox-static package".into());
    }
    arm64_kernel(root).map_err(|_| format!("no kernel in {kernel_package}"))?;
    if !root.join("usr/lib/grub/arm64-efi/normal.mod").is_file() {
        return Err("no GRUB modules in grub-efi-arm64-bin".into());
    }
    // The package lists served their purpose; the .debs stay as the record.
    let _ = std::fs::remove_dir_all(apt.join("lists"));
    for entry in std::fs::read_dir(apt).map_err(io_error(apt))?.flatten() {
        if entry.path().extension().is_some_and(|ext| ext == "bin") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    write(&complete, &format!("{grub_version}\n"), 0o644)
}

/// `mkdir -p` with mode 0755 on what it makes: file modes on the disk must
/// not depend on the caller's umask.
fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io_error(dir))
}

/// Writes `text` to `path` with `mode`, whatever the umask.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    std::fs::write(path, text).map_err(io_error(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error(path))
}

/// Copies `from` to `to` with `mode`, whatever the umask.
fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    std::fs::copy(from, to).map_err(io_error(from))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(io_error(to))
}

/// Sets the modification time of `paths` (symbolic links themselves, not
/// their targets) to [`EPOCH`]: `touch -h`, since the standard library
/// cannot set a link's times.
fn touch(paths: &[PathBuf]) -> Result<(), String> {
    host::run(
        host::command("touch")
            .args(["-h", "-d", &format!("@{EPOCH}")])
            .args(paths),
    )
    .map(|_| ())
}

/// Sets the times of `dir` and of everything under it to [`EPOCH`].
fn pin_times(dir: &Path) -> Result<(), String> {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(
        host::tree(dir)
            .map_err(io_error(dir))?
            .iter()
            .map(|path| dir.join(path)),
    );
    touch(&paths)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::first_dependency;

    #[test]
    fn first_dependency_is_the_package_before_the_first_comma_or_space() {
        let control = "Package: linux-image-cloud-amd64\nDepends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.158-1), foo\n";
        assert_eq!(
            first_dependency(control).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(first_dependency("Package: x\n"), None);
    }
}
