//! The QEMU runner of `qcow2.efi` (cargo's `runner` in `uefi/`, through
//! the `uefi/run.sh` shim, and the boot tests): boots QEMU with the stock
//! UEFI firmware, loads the driver from a small FAT disk and boots the
//! operating system inside a QCOW2 image.
//!
//! ```text
//! uefi-run DRIVER.efi                 demo: scripts/boot-disk.sh's disk as zstd qcow2
//! uefi-run DRIVER.efi IMAGE           IMAGE attached as a raw virtio-blk drive
//!                                     (the guest sees the QCOW2 bytes)
//! uefi-run DRIVER.efi --file IMAGE    IMAGE and the backing/data files it names
//!                                     (found beside it on the host) copied to
//!                                     the driver's FAT disk and attached as
//!                                     files through \qcow2.cfg
//! uefi-run DRIVER.efi --raw DISK      DISK booted directly by the firmware,
//!                                     without the driver: the baseline for
//!                                     boot times
//! uefi-run DRIVER.efi --url URL       the image at URL read over HTTP by the
//!                                     driver (\qcow2.cfg holds URL) through
//!                                     QEMU's user network (the host is
//!                                     10.0.2.2) and a virtio-net NIC; for
//!                                     https://, QCOW2_UEFI_CACERTS=FILE gives
//!                                     the firmware its CA certificates (an
//!                                     EFI signature list); QCOW2_UEFI_PCAP=FILE
//!                                     writes what crosses the NIC to FILE
//!                                     (QEMU's filter-dump, pcap; the last
//!                                     boot's)
//! uefi-run DRIVER.efi --driver-option IMAGE
//!                                     as a real machine would: a first boot
//!                                     adds a Driver#### variable with the
//!                                     shell's `bcfg driver add` and powers
//!                                     off; the second boot (same VARS) must
//!                                     boot IMAGE's ESP from the firmware's
//!                                     boot manager, the firmware having
//!                                     loaded the driver by itself: reaching
//!                                     the shell is a failure
//! uefi-run DRIVER.efi --driver-option --file IMAGE
//!                                     the same with IMAGE attached as a file
//!                                     on a GPT stick (one FAT32 partition,
//!                                     PARTUUID $QCOW2_UEFI_STICK_PARTUUID or
//!                                     a fixed one); the first boot also adds
//!                                     a Boot#### for the image's ESP, first
//!                                     in BootOrder (`efibootmgr --create`
//!                                     on a real machine)
//! uefi-run DRIVER.efi --driver-option --url URL
//!                                     the image at URL, named in the
//!                                     driver's load options (`bcfg driver
//!                                     -opt`; `efibootmgr --driver -@ FILE`
//!                                     on a real machine), network
//!                                     as with --url; the first boot finds
//!                                     the image's ESP through a \qcow2.cfg
//!                                     holding URL to add its Boot####,
//!                                     and the runner deletes that
//!                                     \qcow2.cfg before the second boot
//! ```
//!
//! The architecture comes from the driver's PE machine field, so `cargo
//! run --target aarch64-unknown-uefi` needs nothing else.
//!
//! The driver disk's `startup.nsh` (CRLF, run by the UEFI Shell after its
//! 5-second countdown) finds the disk by a tag file, loads the driver,
//! reconnects, and runs `\EFI\BOOT\BOOTX64.EFI` (`BOOTAA64.EFI`) from the
//! first file system holding it: the driver disk holds no `\EFI\BOOT`, so
//! that is the image's ESP.
//!
//! The serial console goes to the console sink (stdout). The run succeeds
//! when the guest powers off (QEMU exits 0 by itself); it fails with a
//! message when a line says the boot failed (the driver's `qcow2.efi:
//! error:`, the runner's own `qcow2-runner: error:`, a driver panic, a
//! kernel panic), when QEMU fails, or on a timeout (`QCOW2_UEFI_TIMEOUT`
//! seconds, default 300). The last line of the message sink gives the
//! seconds from QEMU's start to the OS loader's start, to the marker of
//! `scripts/boot-disk.sh` (when seen) and to QEMU's exit; `uefi-measure`
//! and the README's table read it.
//!
//! `QCOW2_UEFI_SMP=N` gives the guest N CPUs (default 1).
//! `QCOW2_UEFI_RECONNECT=1` adds `reconnect -r` after loading the driver:
//! the driver is stopped and started again before the boot. Work files
//! (driver disk, VARS copy, console log, demo image) are kept in
//! `target/uefi-run/ARCH` of the workspace, or in `$QCOW2_UEFI_WORK`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::runner::{find_program, le_u16, le_u32, path_with, read_head, ChildGuard};
pub use crate::runner::{Failure, RunOutput};

/// The command that installs what the runner needs.
const SETUP_HINT: &str = "run scripts/setup.sh (as root), or: apt-get install -y \
     qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64 mtools dosfstools";

/// The usage line of every usage error.
pub const USAGE: &str = "usage: run.sh DRIVER.efi [IMAGE | --file IMAGE | --raw DISK | \
     --url URL | --driver-option [--file] IMAGE | --driver-option --url URL]";

/// The stick's partition GUID with `--driver-option --file`, unless
/// `QCOW2_UEFI_STICK_PARTUUID` names another: `qcow2root=efi` tests
/// compare the recorded PARTUUID with it.
pub const STICK_PARTUUID: &str = "6a5c0e1f-3b2d-4c8e-9f70-1d2e3f4a5b6c";

/// What `scripts/boot-disk.sh`'s init prints when the guest got there.
const MARKER: &str = "QCOW2-BOOT-MARKER: reached init";

/// Console lines that end a boot as failed (any line containing one).
const FAILURE_LINES: [&str; 4] = [
    "qcow2.efi: error:",
    "qcow2-runner: error:",
    "[PANIC]",
    "Kernel panic",
];

/// The shell's file-system names that the scripts try (`fs0` .. `fs19`).
const FILE_SYSTEMS: u32 = 20;

/// How the image reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A raw virtio-blk drive of the QCOW2 bytes, the driver loaded by the
    /// shell's `startup.nsh`.
    Disk,
    /// The image and the files of its chain on the driver's FAT disk.
    File,
    /// The disk booted by the firmware without the driver.
    Raw,
    /// The driver loaded from a `Driver####` variable, the image booted
    /// by the boot manager.
    DriverOption,
    /// [`Mode::DriverOption`] with the image attached as a file on a GPT
    /// stick, booted through a `Boot####` for its ESP.
    DriverOptionFile,
    /// The image read over HTTP: [`UefiRun::url`] in `\qcow2.cfg`, the
    /// guest on QEMU's user network with a virtio-net NIC.
    Url,
    /// [`Mode::DriverOption`] with the image read over HTTP as in
    /// [`Mode::Url`], its URL in `Driver0000`'s optional data (the
    /// driver's load options) and no `\qcow2.cfg` on the driver's disk;
    /// booted through a `Boot####` for its ESP.
    DriverOptionUrl,
}

impl Mode {
    /// Whether the driver comes from a `Driver####` variable.
    fn driver_option(self) -> bool {
        matches!(
            self,
            Mode::DriverOption | Mode::DriverOptionFile | Mode::DriverOptionUrl
        )
    }

    /// Whether the image comes over the network.
    fn url(self) -> bool {
        matches!(self, Mode::Url | Mode::DriverOptionUrl)
    }
}

/// The guest architecture, from the driver's PE machine field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// PE machine 0x8664.
    X86_64,
    /// PE machine 0xaa64.
    Aarch64,
}

impl Arch {
    /// The name in paths and messages (`x86_64`, `aarch64`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The removable-media loader's name.
    fn boot_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "BOOTX64.EFI",
            Arch::Aarch64 => "BOOTAA64.EFI",
        }
    }

    /// The firmware's code and VARS template (Debian's `ovmf`, AAVMF).
    fn firmware(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => (
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
            ),
            Arch::Aarch64 => (
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
            ),
        }
    }

    /// The emulator and its machine options.
    fn qemu(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", &["-M", "q35"]),
            Arch::Aarch64 => ("qemu-system-aarch64", &["-M", "virt", "-cpu", "cortex-a57"]),
        }
    }
}

/// The offset of `e_lfanew`, the PE header's offset, in the DOS header.
const E_LFANEW: usize = 0x3c;

/// How much of the driver is read to find the PE header: `e_lfanew` of
/// the linkers' output is a few hundred bytes.
const PE_HEAD_LIMIT: u64 = 64 << 10;

/// The architecture of a PE image from its bytes (the first
/// 64 KiB suffice): the DOS header's `MZ`, `e_lfanew`, the
/// `PE\0\0` signature there and the COFF machine field after it.
pub fn pe_arch(bytes: &[u8]) -> Result<Arch, String> {
    if bytes.get(..2) != Some(b"MZ") {
        return Err("not a PE image: no MZ signature at offset 0".into());
    }
    let pe = le_u32(bytes, E_LFANEW).ok_or_else(|| {
        format!(
            "not a PE image: e_lfanew at offset {E_LFANEW:#x} is past the end ({} bytes)",
            bytes.len()
        )
    })? as usize;
    if pe.checked_add(4).and_then(|end| bytes.get(pe..end)) != Some(b"PE\0\0") {
        return Err(format!(
            "not a PE image: no PE signature at e_lfanew {pe:#x} ({} bytes read)",
            bytes.len()
        ));
    }
    let machine = pe
        .checked_add(4)
        .and_then(|offset| le_u16(bytes, offset))
        .ok_or_else(|| format!("not a PE image: the machine field at {pe:#x}+4 is past the end"))?;
    match machine {
        0x8664 => Ok(Arch::X86_64),
        0xaa64 => Ok(Arch::Aarch64),
        other => Err(format!(
            "not an x86_64 or aarch64 PE image (machine {other:04x})"
        )),
    }
}

/// One run of the runner: the driver, how the image is attached, and the
/// settings the binary reads from the environment.
#[derive(Debug, Clone)]
pub struct UefiRun {
    /// The driver (`qcow2.efi`) as cargo built it.
    pub driver: PathBuf,
    /// How the image reaches the guest.
    pub mode: Mode,
    /// The image (the demo image when `None`, in [`Mode::Disk`] only).
    pub image: Option<PathBuf>,
    /// How long the guest may take to power off (`QCOW2_UEFI_TIMEOUT`).
    pub timeout: Duration,
    /// The guest's CPUs, QEMU's `-smp` (`QCOW2_UEFI_SMP`).
    pub smp: String,
    /// `reconnect -r` after loading the driver (`QCOW2_UEFI_RECONNECT`).
    pub reconnect: bool,
    /// Where work files go (`QCOW2_UEFI_WORK`; default
    /// `target/uefi-run/ARCH` of the workspace).
    pub work: Option<PathBuf>,
    /// The stick partition's GUID with [`Mode::DriverOptionFile`]
    /// (`QCOW2_UEFI_STICK_PARTUUID`, default [`STICK_PARTUUID`]).
    pub stick_partuuid: String,
    /// The image's URL with [`Mode::Url`] and [`Mode::DriverOptionUrl`].
    pub url: Option<String>,
    /// The text that `bcfg driver -opt` gives `Driver0000` with
    /// [`Mode::DriverOptionUrl`], when not [`url`](Self::url) (tests of
    /// load options the driver refuses).
    pub load_options: Option<String>,
    /// Attach the stick of [`Mode::File`] and [`Mode::DriverOptionFile`]
    /// writable, as a real one is (read-only otherwise): the stick stays
    /// in [`work`](Self::work) as `driver.img` for the caller to look into.
    pub writable_stick: bool,
    /// The CA certificates the firmware trusts for `https://`, an EFI
    /// signature list (`QCOW2_UEFI_CACERTS`), given to it through fw_cfg.
    pub cacerts: Option<PathBuf>,
    /// Where QEMU writes the frames that cross the NIC of the URL modes,
    /// as pcap (`QCOW2_UEFI_PCAP`; its `filter-dump`): when DHCP's
    /// packets and the requests went on the wire. A `--driver-option`
    /// run's second boot overwrites the first's.
    pub pcap: Option<PathBuf>,
    /// Prompts to answer on the serial console, in order, each once: when
    /// the console shows the first text (after the previous prompt
    /// answered), the second and a carriage return (Enter) are typed on
    /// QEMU's standard input, which `-nographic` makes the serial port's
    /// (a passphrase for `qcow2.efi`, then for the initramfs). Only the
    /// watched boot is answered: the first boot of the `--driver-option`
    /// modes is not (with `--file` its shell loads the driver, which would
    /// ask for an encrypted image's passphrase there).
    pub answers: Vec<(String, String)>,
}

impl UefiRun {
    /// A run with the defaults: 300 s, one CPU, no reconnect.
    pub fn new(driver: impl Into<PathBuf>, mode: Mode, image: Option<PathBuf>) -> Self {
        UefiRun {
            driver: driver.into(),
            mode,
            image,
            timeout: Duration::from_secs(300),
            smp: "1".into(),
            reconnect: false,
            work: None,
            stick_partuuid: STICK_PARTUUID.into(),
            url: None,
            load_options: None,
            writable_stick: false,
            cacerts: None,
            pcap: None,
            answers: Vec::new(),
        }
    }

    /// The run the command line asks for (`DRIVER.efi [--file|--raw|--url|
    /// --driver-option [--file|--url]] [IMAGE|URL]`), with the settings of
    /// the environment.
    pub fn from_args_and_env(args: &[OsString]) -> Result<Self, Failure> {
        let usage = || Failure::new(1, USAGE);
        let (driver, rest) = args.split_first().ok_or_else(usage)?;
        let (mode, rest) = match rest.first().and_then(|arg| arg.to_str()) {
            Some("--file") => (Mode::File, &rest[1..]),
            Some("--raw") => (Mode::Raw, &rest[1..]),
            Some("--url") => (Mode::Url, &rest[1..]),
            Some("--driver-option") => match rest.get(1).and_then(|arg| arg.to_str()) {
                Some("--file") => (Mode::DriverOptionFile, &rest[2..]),
                Some("--url") => (Mode::DriverOptionUrl, &rest[2..]),
                _ => (Mode::DriverOption, &rest[1..]),
            },
            _ => (Mode::Disk, rest),
        };
        if rest.len() > 1 {
            return Err(usage());
        }
        if mode.url() {
            let url = rest
                .first()
                .and_then(|url| url.to_str())
                .ok_or_else(|| Failure::new(1, "--url needs a URL"))?;
            let mut run = UefiRun::new(driver, mode, None);
            run.url = Some(url.to_string());
            run.apply_env()?;
            return Ok(run);
        }
        let mut run = UefiRun::new(driver, mode, rest.first().map(PathBuf::from));
        run.apply_env()?;
        Ok(run)
    }

    /// Takes `QCOW2_UEFI_TIMEOUT`, `QCOW2_UEFI_SMP`, `QCOW2_UEFI_RECONNECT`
    /// and `QCOW2_UEFI_WORK` from the environment where they are set.
    pub fn apply_env(&mut self) -> Result<(), Failure> {
        if let Some(value) = non_empty_env("QCOW2_UEFI_TIMEOUT") {
            let seconds = value
                .to_str()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| {
                    Failure::new(
                        1,
                        format!("QCOW2_UEFI_TIMEOUT={value:?} is not a number of seconds"),
                    )
                })?;
            self.timeout = Duration::from_secs(seconds);
        }
        if let Some(value) = non_empty_env("QCOW2_UEFI_SMP") {
            self.smp = value.to_string_lossy().into_owned();
        }
        self.reconnect = non_empty_env("QCOW2_UEFI_RECONNECT").is_some();
        if let Some(value) = non_empty_env("QCOW2_UEFI_WORK") {
            self.work = Some(value.into());
        }
        if let Some(value) = non_empty_env("QCOW2_UEFI_STICK_PARTUUID") {
            self.stick_partuuid = value.to_string_lossy().into_owned();
        }
        if let Some(value) = non_empty_env("QCOW2_UEFI_CACERTS") {
            self.cacerts = Some(value.into());
        }
        if let Some(value) = non_empty_env("QCOW2_UEFI_PCAP") {
            self.pcap = Some(value.into());
        }
        Ok(())
    }

    /// Runs the guest in this process, the console and the messages kept
    /// as the binary would print them: for tests.
    pub fn output(&self) -> RunOutput {
        RunOutput::collect("run.sh: error: ", |console, messages| {
            self.run(console, messages)
        })
    }

    /// Boots the guest: the serial console goes to `console` as it comes,
    /// the runner's lines (the timing line last) to `messages`.
    pub fn run(&self, console: &mut dyn Write, messages: &mut dyn Write) -> Result<(), Failure> {
        let fail = |message: String| Failure::new(1, message);
        if !self.driver.is_file() {
            return Err(fail(format!("no such driver: {}", self.driver.display())));
        }
        let head = read_head(&self.driver, PE_HEAD_LIMIT)
            .map_err(|error| fail(format!("{}: {error}", self.driver.display())))?;
        let arch =
            pe_arch(&head).map_err(|error| fail(format!("{}: {error}", self.driver.display())))?;
        let (emulator, machine) = arch.qemu();

        // mkfs.vfat lives in /usr/sbin, outside users' PATH on Debian.
        let path = path_with(&["/usr/sbin", "/sbin"]);
        let gpt = self.mode == Mode::DriverOptionFile;
        let missing: Vec<&str> = [emulator, "qemu-img", "mkfs.vfat", "mcopy"]
            .into_iter()
            .chain(gpt.then_some("sfdisk"))
            .filter(|tool| find_program(tool, &path).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(fail(format!("missing {}: {SETUP_HINT}", missing.join(" "))));
        }
        let (code, vars) = arch.firmware();
        if !(Path::new(code).is_file() && Path::new(vars).is_file()) {
            return Err(fail(format!("no firmware at {code}: {SETUP_HINT}")));
        }

        let work = match &self.work {
            Some(work) => work.clone(),
            None => crate::workspace_root()
                .join("target/uefi-run")
                .join(arch.name()),
        };
        fs::create_dir_all(&work).map_err(|error| {
            fail(format!(
                "cannot make the work directory {}: {error}",
                work.display()
            ))
        })?;
        // Named without `..` in messages and QEMU's command line.
        let work = fs::canonicalize(&work)
            .map_err(|error| fail(format!("{}: {error}", work.display())))?;
        let tools = Tools { path: &path };

        let image = match &self.image {
            Some(image) => image.clone(),
            None if self.mode == Mode::Disk => demo_image(&tools, arch, &work, messages)?,
            // No local image: the driver stands in for one in the checks below.
            None if self.mode.url() => self.driver.clone(),
            None => {
                return Err(fail(
                    "--file, --raw and --driver-option need an image".into(),
                ))
            }
        };
        if !image.is_file() {
            return Err(fail(format!("no such image: {}", image.display())));
        }
        let image = std::path::absolute(&image)
            .map_err(|error| fail(format!("{}: {error}", image.display())))?;

        let driver_disk = work.join("driver.img");
        let stick = DriverDisk {
            driver: &self.driver,
            arch,
            reconnect: self.reconnect,
            work: &work,
            partuuid: gpt.then_some(self.stick_partuuid.as_str()),
            url: self.url.as_deref(),
            load_options: match self.mode {
                Mode::DriverOptionUrl => self.load_options.as_deref().or(self.url.as_deref()),
                _ => None,
            },
        };
        let mut drives: Vec<OsString> = Vec::new();
        let mut raw_drive = |file: &Path, writable: bool| {
            let mut value = OsString::from("file=");
            value.push(file);
            value.push(",format=raw,if=virtio");
            if !writable {
                value.push(",readonly=on");
            }
            drives.extend(["-drive".into(), value]);
        };
        match self.mode {
            Mode::Disk | Mode::DriverOption => {
                stick.make(&tools, &driver_disk, &[])?;
                raw_drive(&image, false);
                raw_drive(&driver_disk, false);
            }
            Mode::File | Mode::DriverOptionFile => {
                let files = chain_files(&tools, &image)?;
                stick.make(&tools, &driver_disk, &files)?;
                raw_drive(&driver_disk, self.writable_stick);
            }
            Mode::Raw => raw_drive(&image, false),
            Mode::Url | Mode::DriverOptionUrl => {
                stick.make(&tools, &driver_disk, &[])?;
                // The driver disk first in the boot order keeps OVMF from
                // trying PXE and HTTP boot on the NIC for minutes (it then
                // connects only that disk; the driver connects the network).
                let mut value = OsString::from("file=");
                value.push(&driver_disk);
                value.push(",format=raw,if=none,id=drv,readonly=on");
                drives.extend(["-drive".into(), value]);
                drives.extend([
                    "-device".into(),
                    "virtio-blk-pci,drive=drv,bootindex=0".into(),
                ]);
            }
        }
        let mut network: Vec<OsString> = vec!["-net".into(), "none".into()];
        if self.mode.url() {
            network = vec![
                "-netdev".into(),
                "user,id=n0,ipv6=off".into(),
                "-device".into(),
                "virtio-net-pci,netdev=n0,romfile=".into(),
            ];
            if let Some(cacerts) = &self.cacerts {
                let mut value = OsString::from("name=etc/edk2/https/cacerts,file=");
                value.push(cacerts);
                network.extend(["-fw_cfg".into(), value]);
            }
            if let Some(pcap) = &self.pcap {
                let mut value = OsString::from("filter-dump,id=dump0,netdev=n0,file=");
                value.push(pcap);
                network.extend(["-object".into(), value]);
            }
        }

        let vars_copy = work.join("vars.fd");
        fs::copy(vars, &vars_copy).map_err(|error| {
            fail(format!(
                "cannot copy {vars} to {}: {error}",
                vars_copy.display()
            ))
        })?;
        let mut qemu = Command::new(emulator);
        qemu.env("PATH", &path)
            .args(machine)
            .args(["-accel", "tcg", "-m", "512", "-smp", &self.smp])
            .args(["-nographic", "-no-reboot"])
            .args(&network)
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={code}"
            ))
            .arg("-drive")
            .arg({
                let mut value = OsString::from("if=pflash,format=raw,unit=1,file=");
                value.push(&vars_copy);
                value
            })
            .args(&drives)
            .stdin(Stdio::null());

        if self.mode.driver_option() {
            driver_option::first_boot(
                &tools,
                &mut qemu,
                &stick,
                &driver_disk,
                self.timeout,
                console,
                messages,
            )?;
        }

        let loader_line = match self.mode {
            Mode::Raw | Mode::DriverOption | Mode::DriverOptionFile | Mode::DriverOptionUrl => {
                "BdsDxe: starting Boot"
            }
            Mode::Disk | Mode::File | Mode::Url => "qcow2-runner: booting",
        };
        let outcome = watch(
            &mut qemu,
            &work.join("console.log"),
            loader_line,
            self.timeout,
            Answers::new(&self.answers),
            console,
        )?;
        let timing = outcome.timing();
        if let Some(failure) = outcome.failure {
            return Err(fail(format!("{failure} ({timing})")));
        }
        if outcome.status != 0 {
            return Err(fail(format!(
                "QEMU exited with status {} ({timing})",
                outcome.status
            )));
        }
        let _ = writeln!(
            messages,
            "run.sh: {}: guest powered off: {timing}",
            arch.name()
        );
        Ok(())
    }
}

/// An environment variable, `None` when unset or empty (as the script's
/// `${VAR:-default}` read it).
fn non_empty_env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

/// Runs the helper programs with the runner's `PATH`.
struct Tools<'a> {
    path: &'a OsStr,
}

impl Tools<'_> {
    /// Runs `program` with `args`; its stdout on success, else an error
    /// with the command and what it printed on stderr.
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Vec<u8>, Failure> {
        self.run_with_input(program, args, &[])
    }

    /// [`Tools::run`] with `input` on the program's stdin.
    fn run_with_input(
        &self,
        program: &str,
        args: &[&OsStr],
        input: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let cannot =
            |error: std::io::Error| Failure::new(1, format!("cannot run {program}: {error}"));
        let mut child = Command::new(program)
            .args(args)
            .env("PATH", self.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(cannot)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading all of it says why on
            // stderr; the broken pipe adds nothing.
            let _ = stdin.write_all(input);
        }
        let output = child.wait_with_output().map_err(cannot)?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            let shown: Vec<_> = args.iter().map(|arg| arg.to_string_lossy()).collect();
            Err(Failure::new(
                1,
                format!(
                    "{program} {} failed ({}): {}",
                    shown.join(" "),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim_end()
                ),
            ))
        }
    }
}

/// Plain `cargo run`: `scripts/boot-disk.sh`'s disk converted to a
/// zstd-compressed QCOW2 in `work`, made again when the raw disk changes.
fn demo_image(
    tools: &Tools,
    arch: Arch,
    work: &Path,
    messages: &mut dyn Write,
) -> Result<PathBuf, Failure> {
    let script = crate::workspace_root().join("scripts/boot-disk.sh");
    let output = Command::new(&script)
        .arg(arch.name())
        .env("PATH", tools.path)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| Failure::new(1, format!("cannot run {}: {error}", script.display())))?;
    let _ = messages.write_all(&output.stderr);
    if !output.status.success() {
        return Err(Failure::new(
            1,
            format!(
                "{} {} failed ({})",
                script.display(),
                arch.name(),
                output.status
            ),
        ));
    }
    let raw = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim_end_matches('\n'));
    let image = work.join("demo.qcow2");
    let modified = |path: &Path| fs::metadata(path).and_then(|meta| meta.modified()).ok();
    let stale = match (modified(&image), modified(&raw)) {
        (Some(made), Some(source)) => source > made,
        _ => true,
    };
    if stale {
        let _ = writeln!(
            messages,
            "run.sh: converting {} to {} (qcow2, zstd)",
            raw.display(),
            image.display()
        );
        let partial = work.join("demo.qcow2.tmp");
        tools.run(
            "qemu-img",
            &[
                "convert".as_ref(),
                "-f".as_ref(),
                "raw".as_ref(),
                "-O".as_ref(),
                "qcow2".as_ref(),
                "-c".as_ref(),
                "-o".as_ref(),
                "compression_type=zstd".as_ref(),
                raw.as_os_str(),
                partial.as_os_str(),
            ],
        )?;
        fs::rename(&partial, &image).map_err(|error| {
            Failure::new(
                1,
                format!(
                    "cannot rename {} to {}: {error}",
                    partial.display(),
                    image.display()
                ),
            )
        })?;
    }
    Ok(image)
}

/// The files a file-attached image needs, from `qemu-img info
/// --backing-chain`: every layer and every external data file, since the
/// driver looks for them beside the image.
fn chain_files(tools: &Tools, image: &Path) -> Result<Vec<PathBuf>, Failure> {
    let json = tools.run(
        "qemu-img",
        &[
            "info".as_ref(),
            "--backing-chain".as_ref(),
            "--output=json".as_ref(),
            image.as_os_str(),
        ],
    )?;
    let bad = |what: &str| {
        Failure::new(
            1,
            format!("qemu-img info --backing-chain {}: {what}", image.display()),
        )
    };
    let layers: serde_json::Value =
        serde_json::from_slice(&json).map_err(|error| bad(&error.to_string()))?;
    let mut files = Vec::new();
    for layer in layers
        .as_array()
        .ok_or_else(|| bad("not a JSON array of layers"))?
    {
        let name = layer["filename"]
            .as_str()
            .ok_or_else(|| bad("a layer without a \"filename\""))?;
        let name = PathBuf::from(name);
        if let Some(data) = layer["format-specific"]["data"]["data-file"].as_str() {
            let data = name.parent().unwrap_or(Path::new("")).join(data);
            files.push(name);
            files.push(data);
        } else {
            files.push(name);
        }
    }
    Ok(files)
}

/// A UEFI Shell script: the lines joined with CRLF, as the shell wants.
fn shell_script(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\r\n")).collect()
}

/// `for %X in fs0 fs1 ... fs19`: the loop header over the file systems.
fn for_every_fs(variable: char) -> String {
    let names: String = (0..FILE_SYSTEMS).map(|n| format!(" fs{n}")).collect();
    format!("for %{variable} in{names}")
}

/// The FAT disk holding the driver, the tag file the shell finds it by,
/// `startup.nsh` and (with `--file`) the image's files.
struct DriverDisk<'a> {
    driver: &'a Path,
    arch: Arch,
    reconnect: bool,
    work: &'a Path,
    /// A GPT stick with one FAT32 partition of this GUID, instead of a
    /// bare FAT32 disk.
    partuuid: Option<&'a str>,
    /// A URL for `\qcow2.cfg` instead of a file.
    url: Option<&'a str>,
    /// The text for `Driver0000`'s optional data ([`Mode::DriverOptionUrl`]).
    load_options: Option<&'a str>,
}

impl DriverDisk<'_> {
    /// The startup script of the shell-loaded modes: load the driver from
    /// the tagged disk, connect, boot the first `\EFI\BOOT` loader found.
    fn startup_script(&self) -> String {
        let boot = self.arch.boot_name();
        let mut lines = vec![
            "@echo -off".to_string(),
            for_every_fs('a'),
            "  if exist %a:\\qcow2-runner.tag then".into(),
            "    load %a:\\qcow2.efi".into(),
            "  endif".into(),
            "endfor".into(),
        ];
        if self.reconnect {
            // Disconnects every driver (qcow2.efi's Stop detaches and frees
            // its disks) and connects them again (Start attaches anew).
            lines.push("reconnect -r".into());
        }
        lines.extend([
            "connect -r".to_string(),
            "map -r".into(),
            for_every_fs('b'),
            format!("  if exist %b:\\EFI\\BOOT\\{boot} then"),
            format!("    echo \"qcow2-runner: booting %b:\\EFI\\BOOT\\{boot}\""),
            format!("    %b:\\EFI\\BOOT\\{boot}"),
            "  endif".into(),
            "endfor".into(),
            format!("echo \"qcow2-runner: error: no file system with \\EFI\\BOOT\\{boot}\""),
        ]);
        shell_script(&lines)
    }

    /// Makes the FAT32 disk `disk` (at least 40 MiB, room for `files`
    /// with a tenth to spare); `files[0]`, when given, is named in
    /// `\qcow2.cfg` as the image to attach.
    fn make(&self, tools: &Tools, disk: &Path, files: &[PathBuf]) -> Result<(), Failure> {
        let io = |what: &str, path: &Path, error: std::io::Error| {
            Failure::new(1, format!("cannot {what} {}: {error}", path.display()))
        };
        let dir = self.work.join("fat");
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|error| io("remove", &dir, error))?;
        }
        fs::create_dir_all(&dir).map_err(|error| io("make", &dir, error))?;
        let efi = dir.join("qcow2.efi");
        fs::copy(self.driver, &efi).map_err(|error| io("copy the driver to", &efi, error))?;
        let mut contents: Vec<(&str, Vec<u8>)> = vec![
            ("qcow2-runner.tag", b"qcow2 runner driver disk\n".to_vec()),
            ("startup.nsh", self.startup_script().into_bytes()),
        ];
        let mut bytes: u64 = 8 << 20;
        for file in files {
            let size = fs::metadata(file)
                .map_err(|error| io("read", file, error))?
                .len();
            bytes = bytes.saturating_add(size.saturating_mul(11) / 10);
        }
        if let Some(first) = files.first() {
            let name = first.file_name().unwrap_or_default().to_string_lossy();
            contents.push(("qcow2.cfg", format!("\\{name}\r\n").into_bytes()));
        }
        if let Some(url) = self.url {
            contents.push(("qcow2.cfg", format!("{url}\r\n").into_bytes()));
        }
        for (name, bytes) in &contents {
            let path = dir.join(name);
            fs::write(&path, bytes).map_err(|error| io("write", &path, error))?;
        }
        if disk.exists() {
            fs::remove_file(disk).map_err(|error| io("remove", disk, error))?;
        }
        let kib = bytes.max(40 << 20) / 1024;
        match self.partuuid {
            None => {
                tools.run(
                    "mkfs.vfat",
                    &[
                        "-C".as_ref(),
                        "-F".as_ref(),
                        "32".as_ref(),
                        "-n".as_ref(),
                        "QCOW2DRV".as_ref(),
                        disk.as_os_str(),
                        kib.to_string().as_ref(),
                    ],
                )?;
            }
            Some(partuuid) => {
                // A stick as sold: a GPT with one FAT32 partition, whose
                // PARTUUID qcow2root=efi names. 1 MiB before it, 1 MiB
                // after it for the backup GPT.
                let file = fs::File::create(disk).map_err(|error| io("create", disk, error))?;
                file.set_len((kib + 2048) * 1024)
                    .map_err(|error| io("size", disk, error))?;
                let table = format!(
                    "label: gpt\nstart=2048, size={}, \
                     type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid={partuuid}\n",
                    kib * 2
                );
                tools.run_with_input(
                    "sfdisk",
                    &["-q".as_ref(), disk.as_os_str()],
                    table.as_bytes(),
                )?;
                tools.run(
                    "mkfs.vfat",
                    &[
                        "--offset=2048".as_ref(),
                        "-F".as_ref(),
                        "32".as_ref(),
                        "-n".as_ref(),
                        "QCOW2DRV".as_ref(),
                        disk.as_os_str(),
                        kib.to_string().as_ref(),
                    ],
                )?;
            }
        }
        let disk = &self.mtools_image(disk);
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|error| io("list", &dir, error))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        names.sort();
        let mut args: Vec<&OsStr> = vec!["-i".as_ref(), disk];
        args.extend(names.iter().map(|name| name.as_os_str()));
        args.push("::/".as_ref());
        tools.run("mcopy", &args)?;
        for file in files {
            let mut target = OsString::from("::/");
            target.push(file.file_name().unwrap_or_default());
            tools.run("mcopy", &["-i".as_ref(), disk, file.as_os_str(), &target])?;
        }
        Ok(())
    }

    /// The disk as mtools' `-i` takes it: the partition's offset after
    /// `@@` on a GPT stick.
    fn mtools_image(&self, disk: &Path) -> OsString {
        let mut image = disk.as_os_str().to_owned();
        if self.partuuid.is_some() {
            image.push("@@1M");
        }
        image
    }

    /// Deletes `name` from the root of the made disk.
    fn delete(&self, tools: &Tools, disk: &Path, name: &str) -> Result<(), Failure> {
        let target = format!("::/{name}");
        tools.run(
            "mdel",
            &["-i".as_ref(), &self.mtools_image(disk), target.as_ref()],
        )?;
        Ok(())
    }

    /// Replaces `startup.nsh` on the made disk with `script`.
    fn replace_startup(&self, tools: &Tools, disk: &Path, script: &str) -> Result<(), Failure> {
        let path = self.work.join("install.nsh");
        fs::write(&path, script).map_err(|error| {
            Failure::new(1, format!("cannot write {}: {error}", path.display()))
        })?;
        tools.run(
            "mcopy",
            &[
                "-o".as_ref(),
                "-i".as_ref(),
                &self.mtools_image(disk),
                path.as_os_str(),
                "::/startup.nsh".as_ref(),
            ],
        )?;
        Ok(())
    }
}

/// `--driver-option`: the boot before the measured one, which writes
/// `Driver0000` into the VARS copy with the shell's `bcfg`, and the
/// startup script that makes reaching the shell on the second boot a
/// failure. Kept apart so the way the option is made can change alone.
mod driver_option {
    use super::*;

    /// The description of the `Boot####` that `--driver-option --file`
    /// adds for the image's ESP.
    const ESP_OPTION: &str = "image ESP";

    /// `text` as one argument of a UEFI Shell command whose quotes reach
    /// the command: the shell removes bare quotes from arguments and
    /// keeps `^"`, and `^` also escapes the shell's `%` variables, `#`
    /// comments and itself.
    pub(super) fn shell_quoted(text: &str) -> String {
        let mut quoted = String::from("^\"");
        for c in text.chars() {
            if matches!(c, '^' | '"' | '%' | '#') {
                quoted.push('^');
            }
            quoted.push(c);
        }
        quoted + "^\""
    }

    /// The first boot's script: `bcfg driver add 0` for the driver on the
    /// tagged disk, `load_options` (`--driver-option --url`) as its
    /// optional data with `bcfg driver -opt N "TEXT"` (which takes quoted
    /// text as the data, stored as NUL-terminated UCS-2; the quotes must
    /// reach it: [`shell_quoted`]), a dump for the check, and power off.
    /// With `esp_option` (`--driver-option --file` and `--url`), first a
    /// `Boot####` for the image's
    /// ESP, first in BootOrder, as `efibootmgr --create` does on a real
    /// machine: without one, the boot manager makes an option for the
    /// attached image by itself but appends it to BootOrder, after the
    /// options it already had (here the EFI Shell, which then always starts
    /// first; on a PC, the installed system).
    pub(super) fn install_script(
        boot: &str,
        esp_option: bool,
        load_options: Option<&str>,
    ) -> String {
        let mut lines = vec!["@echo -off".to_string()];
        if esp_option {
            // The driver loaded by hand for once, to find the image's ESP.
            lines.extend([
                for_every_fs('a'),
                "  if exist %a:\\qcow2-runner.tag then".into(),
                "    load %a:\\qcow2.efi".into(),
                "  endif".into(),
                "endfor".into(),
                "connect -r".into(),
                "map -r".into(),
                for_every_fs('b'),
                format!("  if exist %b:\\EFI\\BOOT\\{boot} then"),
                format!("    bcfg boot add 0 %b:\\EFI\\BOOT\\{boot} \"{ESP_OPTION}\""),
                "  endif".into(),
                "endfor".into(),
                "bcfg boot dump".into(),
            ]);
        }
        lines.extend([
            for_every_fs('a'),
            "  if exist %a:\\qcow2-runner.tag then".into(),
            "    bcfg driver add 0 %a:\\qcow2.efi \"qcow2.efi\"".into(),
            "  endif".into(),
            "endfor".into(),
        ]);
        if let Some(text) = load_options {
            // Option 1, not 0: the shell of Debian's OVMF and AAVMF (edk2
            // 2022.11) reads the `0 ` of `-opt 0 "..."` as no number
            // ("Invalid argument - 'Option Index'"; TianoCore bug 3080,
            // fixed in edk2 by e99d532fd7 in 2024). With one option in
            // DriverOrder, bcfg takes entry 1 of its copy of DriverOrder,
            // which it allocates with four zeroed entries more than the
            // variable: 0, Driver0000 (the dump below checks it got the data).
            lines.push(format!("bcfg driver -opt 1 {}", shell_quoted(text)));
        }
        lines.extend(["bcfg driver dump -v".into(), "reset -s".into()]);
        shell_script(&lines)
    }

    /// The second boot's script: reaching the shell means the boot
    /// manager did not boot the image by itself.
    pub(super) fn shell_reached_script() -> String {
        shell_script(&[
            "echo \"qcow2-runner: error: the boot manager did not boot the image \
             with the driver loaded from Driver0000\""
                .to_string(),
        ])
    }

    /// Whether `bcfg ... dump` listed an option described as
    /// `description` (`Desc - qcow2.efi`, any number of spaces before the
    /// dash).
    pub(super) fn option_listed(log: &str, description: &str) -> bool {
        log.split("Desc").skip(1).any(|rest| {
            let after = rest.trim_start_matches(' ');
            after.len() < rest.len()
                && after
                    .strip_prefix("- ")
                    .is_some_and(|desc| desc.starts_with(description))
        })
    }

    /// Whether the dump lists optional data (`Optional- Y`) for the first
    /// option described as `description`.
    pub(super) fn option_has_data(log: &str, description: &str) -> bool {
        log.split("Option:").any(|option| {
            option_listed(option, description)
                && option
                    .split("Optional-")
                    .nth(1)
                    .is_some_and(|rest| rest.trim_start().starts_with('Y'))
        })
    }

    /// Runs the first boot (QEMU as `qemu` will run it, output to
    /// `install.log`) and puts the second boot's script in place; with
    /// load options, deletes the `\qcow2.cfg` the first boot found the
    /// image's ESP through.
    pub(super) fn first_boot(
        tools: &Tools,
        qemu: &mut Command,
        stick: &DriverDisk,
        disk: &Path,
        timeout: Duration,
        console: &mut dyn Write,
        messages: &mut dyn Write,
    ) -> Result<(), Failure> {
        let load_options = stick.load_options;
        let esp_option = stick.partuuid.is_some() || load_options.is_some();
        let script = install_script(stick.arch.boot_name(), esp_option, load_options);
        stick.replace_startup(tools, disk, &script)?;
        let _ = writeln!(
            messages,
            "run.sh: first boot: adding Driver0000 with bcfg driver add"
        );
        let log_path = stick.work.join("install.log");
        let (status, log) = run_logged(qemu, &log_path, timeout)?;
        if status != Some(0) {
            let _ = console.write_all(&log);
            return Err(Failure::new(1, "the boot that adds Driver0000 failed"));
        }
        let log_text = String::from_utf8_lossy(&log);
        if !option_listed(&log_text, "qcow2.efi") {
            let _ = console.write_all(&log);
            return Err(Failure::new(1, "bcfg did not add Driver0000"));
        }
        if esp_option && !option_listed(&log_text, ESP_OPTION) {
            let _ = console.write_all(&log);
            return Err(Failure::new(
                1,
                "bcfg did not add a Boot#### for the image's ESP",
            ));
        }
        if load_options.is_some() {
            if !option_has_data(&log_text, "qcow2.efi") {
                let _ = console.write_all(&log);
                return Err(Failure::new(
                    1,
                    "bcfg driver -opt did not give Driver0000 its load options",
                ));
            }
            stick.delete(tools, disk, "qcow2.cfg")?;
        }
        stick.replace_startup(tools, disk, &shell_reached_script())?;
        let _ = writeln!(
            messages,
            "run.sh: second boot: the firmware loads qcow2.efi from Driver0000"
        );
        Ok(())
    }

    /// Runs `qemu` with its output in `log_path`, killed after `timeout`:
    /// its exit status (`None` when killed) and what it printed.
    fn run_logged(
        qemu: &mut Command,
        log_path: &Path,
        timeout: Duration,
    ) -> Result<(Option<i32>, Vec<u8>), Failure> {
        let log = log_file(log_path)?;
        let mut child = spawn_logged(qemu, &log)?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(crate::runner::status_code(status)),
                Ok(None) if started.elapsed() > timeout => {
                    let _ = child.kill_and_wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(error) => return Err(Failure::new(1, format!("waiting for QEMU: {error}"))),
            }
        };
        let printed = fs::read(log_path).map_err(|error| {
            Failure::new(1, format!("cannot read {}: {error}", log_path.display()))
        })?;
        Ok((status, printed))
    }
}

/// Creates (truncates) the console log.
fn log_file(path: &Path) -> Result<fs::File, Failure> {
    fs::File::create(path)
        .map_err(|error| Failure::new(1, format!("cannot create {}: {error}", path.display())))
}

/// When a measured boot reached the loader and the marker, read back from
/// the runner's last line (which its private `Outcome::timing` writes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootTimes {
    /// From QEMU's start to the OS loader's start, when its line was seen.
    pub loader: Option<Duration>,
    /// From QEMU's start to the guest's marker.
    pub marker: Duration,
}

impl BootTimes {
    /// The times in `line`, if it has the marker's (a boot that reached it).
    pub fn from_line(line: &str) -> Option<Self> {
        let after = |label: &str| -> Option<Duration> {
            let (_, rest) = line.split_once(label)?;
            let seconds: f64 = rest.split(" s").next()?.parse().ok()?;
            Duration::try_from_secs_f64(seconds).ok()
        };
        Some(Self {
            loader: after("loader started after "),
            marker: after("marker after ")?,
        })
    }

    /// From the loader's start to the marker, when the loader's start was seen.
    pub fn loader_to_marker(&self) -> Option<Duration> {
        self.loader.map(|loader| self.marker.saturating_sub(loader))
    }
}

/// Starts `qemu` with stdout and stderr into `log`.
fn spawn_logged(qemu: &mut Command, log: &fs::File) -> Result<ChildGuard, Failure> {
    let clone = || {
        log.try_clone()
            .map_err(|error| Failure::new(1, format!("console log: {error}")))
    };
    qemu.stdout(clone()?).stderr(clone()?);
    ChildGuard::spawn(qemu).map_err(|message| Failure::new(1, message))
}

/// What the watched boot came to.
struct Outcome {
    loader: Option<Duration>,
    marker: Option<Duration>,
    end: Duration,
    failure: Option<String>,
    status: i32,
}

impl Outcome {
    /// The timing part of the last line (`loader started after 1.234 s,
    /// marker after ...`), which `uefi-measure` and the README's table read.
    fn timing(&self) -> String {
        let seconds = |time: Duration| {
            let ms = time.as_millis();
            format!("{}.{:03}", ms / 1000, ms % 1000)
        };
        let mut timing = match self.loader {
            None => "loader not started".to_string(),
            Some(loader) => format!("loader started after {} s", seconds(loader)),
        };
        match (self.marker, self.loader) {
            (Some(marker), loader) => {
                timing += &format!(", marker after {} s", seconds(marker));
                if let Some(loader) = loader {
                    timing += &format!(
                        " ({} s from loader to marker)",
                        seconds(marker.saturating_sub(loader))
                    );
                }
            }
            (None, _) => timing += ", marker not seen",
        }
        timing + &format!(", QEMU ended after {} s", seconds(self.end))
    }
}

/// The first line of `log` that says the boot failed, without its `\r`.
fn failure_line(log: &str) -> Option<String> {
    log.lines()
        .find(|line| FAILURE_LINES.iter().any(|failure| line.contains(failure)))
        .map(|line| line.replace('\r', ""))
}

/// The prompts a run answers on the serial console ([`UefiRun::answers`]):
/// each looked for in the console after the previous one's prompt, so that
/// the same prompt asked again (a wrong passphrase) is answered by the
/// next reply.
struct Answers<'a> {
    pending: &'a [(String, String)],
    /// Where the search for the next prompt starts in the console.
    from: usize,
}

impl<'a> Answers<'a> {
    fn new(answers: &'a [(String, String)]) -> Self {
        Answers {
            pending: answers,
            from: 0,
        }
    }

    /// The replies due now that the console holds `console`, in order:
    /// those whose prompt is there, each after the one before.
    fn due(&mut self, console: &[u8]) -> Vec<&'a str> {
        let mut due = Vec::new();
        while let Some(((prompt, reply), rest)) = self.pending.split_first() {
            let prompt = prompt.as_bytes();
            let found = console
                .get(self.from..)
                .unwrap_or_default()
                .windows(prompt.len().max(1))
                .position(|window| window == prompt);
            let Some(at) = found else { break };
            self.from += at + prompt.len();
            self.pending = rest;
            due.push(reply.as_str());
        }
        due
    }
}

/// Runs `qemu` with its output in `log_path`, copying it to `console` as
/// it grows, noting when the loader started and the marker showed, typing
/// the `answers` when their prompts show, until QEMU ends, a failure line
/// appears, or `timeout` passes.
fn watch(
    qemu: &mut Command,
    log_path: &Path,
    loader_line: &str,
    timeout: Duration,
    mut answers: Answers,
    console: &mut dyn Write,
) -> Result<Outcome, Failure> {
    let log = log_file(log_path)?;
    let started = Instant::now();
    if !answers.pending.is_empty() {
        qemu.stdin(Stdio::piped());
    }
    let mut child = spawn_logged(qemu, &log)?;
    let mut typing = child.child_mut().stdin.take();
    let mut reader = fs::File::open(log_path)
        .map_err(|error| Failure::new(1, format!("cannot read {}: {error}", log_path.display())))?;
    // The whole console so far (lossy UTF-8 per chunk is not enough: a
    // character may straddle two reads, so bytes are kept).
    let mut seen: Vec<u8> = Vec::new();
    let mut pump = |seen: &mut Vec<u8>, console: &mut dyn Write| {
        let mut chunk = Vec::new();
        let _ = reader.seek(SeekFrom::Start(seen.len() as u64));
        let _ = reader.read_to_end(&mut chunk);
        let _ = console.write_all(&chunk);
        let _ = console.flush();
        seen.extend_from_slice(&chunk);
    };
    let mut outcome = Outcome {
        loader: None,
        marker: None,
        end: Duration::ZERO,
        failure: None,
        status: 0,
    };
    // Lines before this offset are complete and have been looked at.
    let mut scanned = 0;
    // Why the watch ended.
    enum Stop {
        Exited(std::process::ExitStatus),
        FailureLine,
        Timeout,
    }
    let stop = loop {
        pump(&mut seen, console);
        for reply in answers.due(&seen) {
            let typed = typing.as_mut().map(|stdin| {
                stdin
                    .write_all(format!("{reply}\r").as_bytes())
                    .and_then(|()| stdin.flush())
            });
            if let Some(Err(error)) = typed {
                return Err(Failure::new(
                    1,
                    format!("typing on the serial console: {error}"),
                ));
            }
        }
        let text = String::from_utf8_lossy(&seen[scanned..]);
        for line in text.split('\n') {
            if outcome.loader.is_none()
                && line.contains(loader_line)
                && !line.contains("EFI Internal Shell")
            {
                outcome.loader = Some(started.elapsed());
            }
            if outcome.marker.is_none() && line.contains(MARKER) {
                outcome.marker = Some(started.elapsed());
            }
        }
        if failure_line(&text).is_some() {
            break Stop::FailureLine;
        }
        scanned += seen[scanned..]
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |at| at + 1);
        match child.try_wait() {
            Ok(Some(status)) => break Stop::Exited(status),
            Ok(None) => {}
            Err(error) => return Err(Failure::new(1, format!("waiting for QEMU: {error}"))),
        }
        if started.elapsed() > timeout {
            break Stop::Timeout;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    outcome.end = started.elapsed();
    let status = match stop {
        Stop::Exited(status) => status,
        Stop::FailureLine | Stop::Timeout => {
            outcome.failure = Some(if let Stop::FailureLine = stop {
                // The line may have been caught half-written: let the rest
                // arrive, then take it whole.
                std::thread::sleep(Duration::from_millis(500));
                pump(&mut seen, console);
                failure_line(&String::from_utf8_lossy(&seen)).unwrap_or_default()
            } else {
                format!(
                    "timeout: the guest did not power off within {} s",
                    timeout.as_secs()
                )
            });
            child
                .kill_and_wait()
                .map_err(|error| Failure::new(1, format!("waiting for QEMU: {error}")))?
        }
    };
    pump(&mut seen, console);
    outcome.status = crate::runner::status_code(status);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE head: `MZ`, `e_lfanew` = 0x40, `PE\0\0`, the machine.
    fn pe(machine: u16) -> Vec<u8> {
        let mut bytes = vec![0; 0x48];
        bytes[..2].copy_from_slice(b"MZ");
        bytes[E_LFANEW..E_LFANEW + 4].copy_from_slice(&0x40u32.to_le_bytes());
        bytes[0x40..0x44].copy_from_slice(b"PE\0\0");
        bytes[0x44..0x46].copy_from_slice(&machine.to_le_bytes());
        bytes
    }

    #[test]
    fn each_prompt_is_answered_once_in_order_after_the_one_before() {
        let answers = [
            ("Passphrase for \\a: ", "one"),
            ("Passphrase for \\a: ", "two"),
            ("Passphrase for /a: ", "three"),
        ]
        .map(|(prompt, reply)| (prompt.to_string(), reply.to_string()));
        let mut pending = Answers::new(&answers);
        assert!(pending.due(b"booting\r\nPassphrase for").is_empty());
        let mut console = b"booting\r\nPassphrase for \\a: ".to_vec();
        assert_eq!(pending.due(&console), ["one"]);
        // Seen again with nothing new: nothing more is typed.
        assert!(pending.due(&console).is_empty());
        // The prompt asked again, and the initramfs's, in one read.
        console.extend_from_slice(b"\r\nwrong\r\nPassphrase for \\a: \r\nPassphrase for /a: ");
        assert_eq!(pending.due(&console), ["two", "three"]);
        assert!(pending.pending.is_empty());
        // The initramfs's prompt before the driver's is not the driver's.
        let mut early = Answers::new(&answers[1..]);
        assert!(early.due(b"Passphrase for /a: ").is_empty());
    }

    #[test]
    fn the_pe_machine_field_selects_the_emulator() {
        assert_eq!(pe_arch(&pe(0x8664)), Ok(Arch::X86_64));
        assert_eq!(pe_arch(&pe(0xaa64)), Ok(Arch::Aarch64));
        let error = pe_arch(&pe(0x014c)).unwrap_err();
        assert!(error.contains("machine 014c"), "{error}");
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused_with_what_is_missing() {
        let whole = pe(0x8664);
        assert!(pe_arch(&whole[..1])
            .unwrap_err()
            .contains("no MZ signature"));
        assert!(pe_arch(&whole[..0x3e])
            .unwrap_err()
            .contains("e_lfanew at offset 0x3c"));
        assert!(pe_arch(&whole[..0x42])
            .unwrap_err()
            .contains("no PE signature"));
        assert!(pe_arch(&whole[..0x45])
            .unwrap_err()
            .contains("machine field"));
        let mut far = whole.clone();
        far[E_LFANEW..E_LFANEW + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(pe_arch(&far).unwrap_err().contains("no PE signature"));
        let elf = b"\x7fELF\x02\x01\x01".to_vec();
        assert!(pe_arch(&elf).unwrap_err().contains("no MZ signature"));
    }

    #[test]
    fn the_bcfg_dump_check_takes_any_spacing_before_the_dash() {
        let listed = driver_option::option_listed;
        assert!(listed("  Desc    - qcow2.efi\r\n", "qcow2.efi"));
        assert!(listed("Desc - qcow2.efi", "qcow2.efi"));
        assert!(!listed("Desc- qcow2.efi", "qcow2.efi"));
        assert!(!listed("Desc   - other.efi", "qcow2.efi"));
        assert!(listed(
            "Desc    - qcow2.efi\nDesc    - image ESP\n",
            "image ESP"
        ));
    }

    #[test]
    fn the_first_failure_line_is_taken_whole_without_carriage_returns() {
        let log = "boot\r\nqcow2.efi: error: L2 table offset 0x10 \r\nKernel panic\r\n";
        assert_eq!(
            failure_line(log).as_deref(),
            Some("qcow2.efi: error: L2 table offset 0x10 ")
        );
        assert_eq!(failure_line("all fine\n"), None);
    }

    #[test]
    fn the_command_line_selects_the_driver_option_url_mode() {
        let args = ["d.efi", "--driver-option", "--url", "http://h/x"].map(OsString::from);
        let run = UefiRun::from_args_and_env(&args).unwrap();
        assert_eq!(run.mode, Mode::DriverOptionUrl);
        assert_eq!(run.url.as_deref(), Some("http://h/x"));
        assert_eq!(run.image, None);
        let args = ["d.efi", "--driver-option", "--url"].map(OsString::from);
        assert!(UefiRun::from_args_and_env(&args).is_err());
        assert!(USAGE.contains("--driver-option --url URL"));
    }

    #[test]
    fn load_options_reach_bcfg_quoted_and_escaped() {
        assert_eq!(
            driver_option::shell_quoted("http://h/x"),
            "^\"http://h/x^\""
        );
        assert_eq!(
            driver_option::shell_quoted("a%b#c^d\"e"),
            "^\"a^%b^#c^^d^\"e^\""
        );
    }

    #[test]
    fn the_dump_check_finds_the_optional_data_of_the_option() {
        let dump = "Option: 00. Variable: Driver0000\r\n  Desc    - qcow2.efi\r\n  DevPath - PciRoot(0x0)\r\n  Optional- Y\r\n";
        assert!(driver_option::option_has_data(dump, "qcow2.efi"));
        let other = dump.replace("Optional- Y", "Optional- N");
        assert!(!driver_option::option_has_data(&other, "qcow2.efi"));
        let two = format!(
            "{other}Option: 01. Variable: Driver0001\r\n  Desc    - x\r\n  Optional- Y\r\n"
        );
        assert!(!driver_option::option_has_data(&two, "qcow2.efi"));
    }

    #[test]
    fn shell_scripts_end_every_line_with_crlf() {
        let script = driver_option::install_script("BOOTX64.EFI", true, None);
        assert!(script.contains("bcfg boot add 0 %b:\\EFI\\BOOT\\BOOTX64.EFI \"image ESP\"\r\n"));
        assert!(script.ends_with("reset -s\r\n"));
        assert!(!script.contains("-opt"));
        let script = driver_option::install_script("BOOTX64.EFI", true, Some("http://h:80/d"));
        assert!(script
            .contains("\r\nbcfg driver -opt 1 ^\"http://h:80/d^\"\r\nbcfg driver dump -v\r\n"));
        assert_eq!(script.matches("\r\n").count(), script.matches('\n').count());
        assert!(script.contains(" fs0 fs1 ") && script.contains(" fs19\r\n"));
    }

    /// A boot whose loader started at 7.005 s and marker came at 12.340 s.
    fn measured_boot() -> Outcome {
        Outcome {
            loader: Some(Duration::from_millis(7005)),
            marker: Some(Duration::from_millis(12_340)),
            end: Duration::from_millis(13_000),
            failure: None,
            status: 0,
        }
    }

    #[test]
    fn the_timing_line_reads_as_the_readme_table_expects() {
        let outcome = measured_boot();
        assert_eq!(
            outcome.timing(),
            "loader started after 7.005 s, marker after 12.340 s \
             (5.335 s from loader to marker), QEMU ended after 13.000 s"
        );
        let none = Outcome {
            loader: None,
            marker: None,
            ..outcome
        };
        assert_eq!(
            none.timing(),
            "loader not started, marker not seen, QEMU ended after 13.000 s"
        );
    }

    #[test]
    fn the_timing_line_reads_back() {
        let outcome = measured_boot();
        let line = format!("run.sh: x86_64: guest powered off: {}", outcome.timing());
        let times = BootTimes::from_line(&line).unwrap();
        assert_eq!(times.loader, Some(Duration::from_millis(7005)));
        assert_eq!(times.marker, Duration::from_millis(12_340));
        assert_eq!(times.loader_to_marker(), Some(Duration::from_millis(5335)));
        let no_loader = Outcome {
            loader: None,
            ..measured_boot()
        };
        let times = BootTimes::from_line(&no_loader.timing()).unwrap();
        assert_eq!((times.loader, times.loader_to_marker()), (None, None));
        let none = Outcome {
            marker: None,
            ..outcome
        };
        assert_eq!(BootTimes::from_line(&none.timing()), None);
    }
}
