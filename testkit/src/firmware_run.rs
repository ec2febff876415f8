//! The QEMU runner of the bare-metal firmware (cargo's `runner` in
//! `firmware/`, through the `firmware/run.sh` shim, and the firmware
//! tests): boots the ELF in QEMU on a QCOW2 image.
//!
//! ```text
//! firmware-run <firmware.elf>                        the default demo image
//! firmware-run <firmware.elf> <image> [backing...]   that image; its backing
//!                                                    chain is found with
//!                                                    `qemu-img info` unless
//!                                                    the backing files are given
//! ... --file N:/PATH [--file ...]                    hash these files inside the
//!                                                    image instead of the whole
//!                                                    disk (`N:` the partition)
//! ... --passphrase-file PATH                         unlock encrypted images
//!                                                    (the image and its backing
//!                                                    files) with the file's
//!                                                    bytes, verbatim, as QEMU's
//!                                                    `--object secret,file=PATH`
//! ```
//!
//! The `--file` locations and the passphrase reach the firmware on one
//! more read-only disk, the control disk, attached last with the serial
//! `qcow2-demo-control`: one `key: value` line per request (`file:
//! N:/PATH`, `passphrase-hex: <hex of the file's bytes>`), padded with
//! zeros to whole sectors. `firmware/src/control.rs` defines the format;
//! the file is private (a temporary file) and removed when QEMU has
//! stopped.
//!
//! The architecture comes from the ELF's `e_machine`, so `cargo run
//! --target aarch64-unknown-none` needs nothing else.
//!
//! Every file is attached read-only as a *raw* virtio-blk drive (the guest
//! reads the qcow2 bytes itself), in chain order: the image first, then its
//! backing file, then that file's backing, ... QEMU puts the first device in
//! the highest virtio-mmio slot, which is how the firmware knows the image.
//! Each disk's virtio-blk serial is its file's base name, cut to 20 bytes
//! (the field's size, and the firmware compares bytes); the firmware finds
//! a backing file by that serial.
//!
//! The firmware reports success by an exit value that QEMU turns into
//! status 33 (isa-debug-exit's `(0x10 << 1) | 1` on x86, semihosting
//! `exit(33)` on arm); the runner maps 33 to 0 and everything else to a
//! failure (1), so a QEMU that stops for any other reason never counts as
//! success; a timeout ends with 124, bad usage with 2.
//!
//! Environment: `QCOW2_FW_TIMEOUT` (seconds, default 120),
//! `QCOW2_FW_MEMORY` (guest RAM, default 128M), `QCOW2_FW_QEMU_ARGS` (extra
//! QEMU arguments, split at white space), `QCOW2_FW_ACCEL` (the
//! accelerator; default KVM when hardware-assisted, else TCG).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::runner::{find_program, le_u16, read_head, status_code, ChildGuard};
pub use crate::runner::{Failure, RunOutput};

/// What installs QEMU 7.2 on Debian bookworm (run when root and missing).
const APT_COMMAND: &str = "apt-get update && apt-get install -y --allow-downgrades \
     qemu-system-x86 qemu-system-arm qemu-utils/bookworm";

/// The exit status QEMU reports for the firmware's success.
const SUCCESS_STATUS: i32 = 33;

/// The usage line of every usage error.
pub const USAGE: &str = "usage: run.sh <firmware.elf> [image [backing...]] [--file N:/PATH]... \
     [--passphrase-file PATH]";

/// The most the firmware reads of the control disk (firmware/src/control.rs).
const CONTROL_LIMIT: usize = 64 << 10;

/// The serial of the control disk (firmware/src/control.rs).
const CONTROL_SERIAL: &str = "qcow2-demo-control";

/// The virtio-blk serial's size: names are cut to this many bytes.
const SERIAL_BYTES: usize = 20;

/// The version of the default image's recipe, in its file name: a new
/// recipe makes a new file instead of reusing a stale one.
const DEMO_VERSION: u32 = 1;

/// The ELF header's `e_machine` offset.
const E_MACHINE: usize = 18;

/// The guest architecture, from the ELF's `e_machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `EM_X86_64` (62).
    X86_64,
    /// `EM_AARCH64` (183).
    Aarch64,
}

impl Arch {
    /// The name of the emulator's suffix and of the host machine.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// The architecture of a little-endian ELF from its first bytes.
pub fn elf_arch(bytes: &[u8]) -> Result<Arch, String> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file: no \\x7fELF signature at offset 0".into());
    }
    let machine = le_u16(bytes, E_MACHINE).ok_or_else(|| {
        format!(
            "not an ELF file: e_machine at offset {E_MACHINE} is past the end ({} bytes)",
            bytes.len()
        )
    })?;
    match machine {
        62 => Ok(Arch::X86_64),
        183 => Ok(Arch::Aarch64),
        other => Err(format!("not an x86_64 or aarch64 ELF (e_machine {other})")),
    }
}

/// One run: the ELF, the disks, the requests for the control disk and the
/// settings the binary reads from the environment.
#[derive(Debug, Clone)]
pub struct FirmwareRun {
    /// The firmware ELF as cargo built it.
    pub elf: PathBuf,
    /// The image, then its backing files if given; empty for the default
    /// image. With one image, the chain comes from `qemu-img info`.
    pub disks: Vec<PathBuf>,
    /// The `--file` locations, in order.
    pub files: Vec<OsString>,
    /// The `--passphrase-file`.
    pub passphrase_file: Option<PathBuf>,
    /// How long QEMU may run (`QCOW2_FW_TIMEOUT`).
    pub timeout: Duration,
    /// The guest's RAM, QEMU's `-m` (`QCOW2_FW_MEMORY`).
    pub memory: String,
    /// More QEMU arguments (`QCOW2_FW_QEMU_ARGS`).
    pub extra_args: Vec<OsString>,
    /// The accelerator (`QCOW2_FW_ACCEL`); `None` picks one.
    pub accel: Option<String>,
}

impl FirmwareRun {
    /// A run of `elf` on `disks` with the defaults (120 s, 128M).
    pub fn new(elf: impl Into<PathBuf>, disks: Vec<PathBuf>) -> Self {
        FirmwareRun {
            elf: elf.into(),
            disks,
            files: Vec::new(),
            passphrase_file: None,
            timeout: Duration::from_secs(120),
            memory: "128M".into(),
            extra_args: Vec::new(),
            accel: None,
        }
    }

    /// The run the command line asks for, with the environment's settings.
    pub fn from_args_and_env(args: &[OsString]) -> Result<Self, Failure> {
        let usage = |message: &str| Failure::new(2, message);
        let (elf, rest) = args.split_first().ok_or_else(|| usage(USAGE))?;
        let mut run = FirmwareRun::new(elf, Vec::new());
        let mut rest = rest.iter();
        while let Some(arg) = rest.next() {
            let bytes = arg.as_bytes();
            if arg == "--passphrase-file" {
                let path = rest
                    .next()
                    .ok_or_else(|| usage("--passphrase-file needs a path"))?;
                run.passphrase_file = Some(path.into());
            } else if let Some(path) = bytes.strip_prefix(b"--passphrase-file=") {
                run.passphrase_file = Some(OsStr::from_bytes(path).into());
            } else if arg == "--file" {
                let location = rest
                    .next()
                    .ok_or_else(|| usage("--file needs a location (N:/PATH or /PATH)"))?;
                run.files.push(location.clone());
            } else if let Some(location) = bytes.strip_prefix(b"--file=") {
                run.files.push(OsStr::from_bytes(location).into());
            } else {
                run.disks.push(arg.into());
            }
        }
        run.apply_env()?;
        Ok(run)
    }

    /// Takes `QCOW2_FW_TIMEOUT`, `QCOW2_FW_MEMORY`, `QCOW2_FW_QEMU_ARGS`
    /// and `QCOW2_FW_ACCEL` from the environment where they are set.
    pub fn apply_env(&mut self) -> Result<(), Failure> {
        let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        if let Some(value) = set("QCOW2_FW_TIMEOUT") {
            let seconds = value
                .to_str()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| {
                    Failure::new(
                        2,
                        format!("QCOW2_FW_TIMEOUT={value:?} is not a number of seconds"),
                    )
                })?;
            self.timeout = Duration::from_secs(seconds);
        }
        if let Some(value) = set("QCOW2_FW_MEMORY") {
            self.memory = value.to_string_lossy().into_owned();
        }
        if let Some(value) = set("QCOW2_FW_QEMU_ARGS") {
            self.extra_args = value
                .as_bytes()
                .split(u8::is_ascii_whitespace)
                .filter(|word| !word.is_empty())
                .map(|word| OsStr::from_bytes(word).into())
                .collect();
        }
        if let Some(value) = set("QCOW2_FW_ACCEL") {
            self.accel = Some(value.to_string_lossy().into_owned());
        }
        Ok(())
    }

    /// Runs QEMU from this process, the console and the messages kept as
    /// the binary would print them: for tests.
    pub fn output(&self) -> RunOutput {
        RunOutput::collect("run.sh: ", |console, messages| self.run(console, messages))
    }

    /// Boots the firmware: the serial console goes to `console` and QEMU's
    /// own messages to `messages` as they come.
    pub fn run(&self, console: &mut dyn Write, messages: &mut dyn Write) -> Result<(), Failure> {
        let usage = |message: String| Failure::new(2, message);
        if !self.elf.is_file() {
            return Err(usage(format!(
                "no such firmware ELF: {}",
                self.elf.display()
            )));
        }
        if let Some(passphrase) = &self.passphrase_file {
            if fs::File::open(passphrase)
                .map(|file| file.metadata().is_ok_and(|meta| meta.is_file()))
                .ok()
                != Some(true)
            {
                return Err(usage(format!(
                    "cannot read the passphrase file: {}",
                    passphrase.display()
                )));
            }
        }
        let head = read_head(&self.elf, 64)
            .map_err(|error| usage(format!("{}: {error}", self.elf.display())))?;
        let arch =
            elf_arch(&head).map_err(|error| usage(format!("{}: {error}", self.elf.display())))?;
        let emulator = format!("qemu-system-{}", arch.name());
        self.install_missing(&emulator, messages)?;

        let disks = match self.disks.as_slice() {
            [] => vec![self.default_image(messages)?],
            disks => disks.to_vec(),
        };
        if !disks[0].is_file() {
            return Err(usage(format!("no such image: {}", disks[0].display())));
        }
        let disks = match disks.as_slice() {
            [image] => chain(image)?,
            _ => disks,
        };

        let control = self.control_disk()?;
        let mut qemu = Command::new(&emulator);
        let accel = self.accel(arch);
        match arch {
            Arch::X86_64 => {
                qemu.args(["-M", "microvm"])
                    .args(&accel)
                    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
            }
            Arch::Aarch64 => {
                // Under KVM (an arm64 host) the CPU model must be the host's.
                let cpu = if accel[1] == "kvm" {
                    "max"
                } else {
                    "cortex-a72"
                };
                qemu.args(["-M", "virt"]).args(&accel).args([
                    "-cpu",
                    cpu,
                    "-semihosting-config",
                    "enable=on,target=native",
                ]);
            }
        }
        qemu.args([
            "-m",
            &self.memory,
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-serial", "stdio"]);
        for (index, disk) in disks.iter().enumerate() {
            if !disk.is_file() {
                return Err(usage(format!("no such backing file: {}", disk.display())));
            }
            let name = disk.file_name().unwrap_or_default().as_bytes();
            let serial = &name[..name.len().min(SERIAL_BYTES)];
            attach(
                &mut qemu,
                index,
                disk.as_os_str(),
                OsStr::from_bytes(serial),
            );
        }
        if let Some(control) = &control {
            attach(
                &mut qemu,
                disks.len(),
                control.path().as_os_str(),
                CONTROL_SERIAL.as_ref(),
            );
        }
        qemu.args(&self.extra_args).arg("-kernel").arg(&self.elf);

        let result = run_piped(&mut qemu, self.timeout, console, messages);
        // The control disk holds the passphrase: gone once QEMU has stopped.
        drop(control);
        match result? {
            Some(SUCCESS_STATUS) => Ok(()),
            None => Err(Failure::new(
                124,
                format!("QEMU did not finish within {}s", self.timeout.as_secs()),
            )),
            Some(status) => Err(Failure::new(
                1,
                format!("firmware failed (QEMU exit status {status})"),
            )),
        }
    }

    /// QEMU where it can be installed (root with apt-get), else an error
    /// that says how.
    fn install_missing(&self, emulator: &str, messages: &mut dyn Write) -> Result<(), Failure> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut need = vec![emulator, "qemu-img"];
        // Only the default image is written by qemu-io.
        if self.disks.is_empty() {
            need.push("qemu-io");
        }
        let missing: Vec<&str> = need
            .into_iter()
            .filter(|tool| find_program(tool, &path).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let missing = missing.join(" ");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        if root && find_program("apt-get", &path).is_some() {
            let _ = writeln!(
                messages,
                "run.sh: {missing} missing; installing: {APT_COMMAND}"
            );
            let installed = Command::new("bash")
                .args(["-c", APT_COMMAND])
                .stdin(Stdio::null())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()
                .is_ok_and(|status| status.success());
            if installed {
                return Ok(());
            }
            return Err(Failure::new(
                2,
                format!("installing QEMU failed; run: {APT_COMMAND}"),
            ));
        }
        Err(Failure::new(
            2,
            format!("{missing} not found; install QEMU 7.2 system emulators and tools, e.g. as root: {APT_COMMAND}"),
        ))
    }

    /// The default demo image, cached next to the build output:
    /// `<target-dir>/demo/`, the ELF being `<target-dir>/<triple>/<profile>/<name>`.
    fn default_image(&self, messages: &mut dyn Write) -> Result<PathBuf, Failure> {
        let fail = |message: String| Failure::new(2, message);
        let elf = std::path::absolute(&self.elf)
            .map_err(|error| fail(format!("{}: {error}", self.elf.display())))?;
        let target_dir = elf.ancestors().nth(3).ok_or_else(|| {
            fail(format!(
                "{}: not inside <target-dir>/<triple>/<profile>/",
                elf.display()
            ))
        })?;
        let demo_dir = target_dir.join("demo");
        let image = demo_dir.join(format!("demo-v{DEMO_VERSION}.qcow2"));
        if image.is_file() {
            return Ok(image);
        }
        fs::create_dir_all(&demo_dir)
            .map_err(|error| fail(format!("cannot make {}: {error}", demo_dir.display())))?;
        let partial = demo_dir.join(format!(
            "demo-v{DEMO_VERSION}.qcow2.partial.{}",
            std::process::id()
        ));
        // 64 MiB, qcow2 v3, 64 KiB clusters: patterned data (most of the
        // disk, so the throughput numbers mean something), a zeroed range
        // (zero clusters), one compressed cluster, and an unallocated tail.
        let made = tool(
            Command::new("qemu-img")
                .args([
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-o",
                    "compat=1.1,cluster_size=65536",
                ])
                .arg(&partial)
                .arg("64M"),
        )
        .and_then(|_| {
            tool(
                Command::new("qemu-io")
                    .args(["-f", "qcow2"])
                    .args(["-c", "write -q -P 0x11 0 16M"])
                    .args(["-c", "write -q -P 0x22 16M 16M"])
                    .args(["-c", "write -q -z 32M 4M"])
                    .args(["-c", "write -q -P 0x33 36M 24M"])
                    .args(["-c", "write -q -c -P 0x44 60M 64k"])
                    .arg(&partial),
            )
        })
        .and_then(|_| {
            fs::rename(&partial, &image)
                .map_err(|error| format!("cannot rename {}: {error}", partial.display()))
        });
        if let Err(message) = made {
            let _ = fs::remove_file(&partial);
            return Err(fail(message));
        }
        let _ = writeln!(messages, "run.sh: made the demo image {}", image.display());
        Ok(image)
    }

    /// The control disk when there is something to ask: private, removed
    /// when dropped.
    fn control_disk(&self) -> Result<Option<tempfile::NamedTempFile>, Failure> {
        if self.files.is_empty() && self.passphrase_file.is_none() {
            return Ok(None);
        }
        let fail = |message: String| Failure::new(2, message);
        let mut text = Vec::new();
        for file in &self.files {
            text.extend_from_slice(b"file: ");
            text.extend_from_slice(file.as_bytes());
            text.push(b'\n');
        }
        if let Some(path) = &self.passphrase_file {
            let passphrase = fs::read(path).map_err(|error| {
                fail(format!(
                    "cannot read the passphrase file: {}: {error}",
                    path.display()
                ))
            })?;
            text.extend_from_slice(b"passphrase-hex: ");
            for byte in passphrase {
                text.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
            text.push(b'\n');
        }
        if text.len() > CONTROL_LIMIT {
            return Err(fail(
                "the --file list and passphrase take more than 64 KiB".into(),
            ));
        }
        text.resize(text.len().div_ceil(512) * 512, 0);
        let mut control = tempfile::Builder::new()
            .prefix("qcow2-demo-control.")
            .tempfile()
            .map_err(|error| fail(format!("cannot make the control disk: {error}")))?;
        control
            .write_all(&text)
            .and_then(|()| control.flush())
            .map_err(|error| fail(format!("cannot write the control disk: {error}")))?;
        Ok(Some(control))
    }

    /// `-accel` arguments: KVM when it is hardware-assisted, else TCG. A
    /// `/dev/kvm` on a host CPU without vmx/svm is a paravirtual KVM (PVM,
    /// for nested sandboxes): it runs a guest that is not PVM-aware about
    /// 1000 times slower than native (measured: a register-only loop at
    /// ~7 us per iteration), far slower than TCG.
    fn accel(&self, arch: Arch) -> Vec<String> {
        let accel = self.accel.clone().unwrap_or_else(|| {
            let hardware = fs::read_to_string("/proc/cpuinfo").is_ok_and(|cpuinfo| {
                cpuinfo
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|word| word == "vmx" || word == "svm")
            });
            if std::env::consts::ARCH == arch.name() && hardware {
                "kvm"
            } else {
                "tcg"
            }
            .to_string()
        });
        if accel == "kvm" {
            // TCG if KVM cannot be opened.
            ["-accel", "kvm", "-accel", "tcg"]
                .map(String::from)
                .to_vec()
        } else {
            vec!["-accel".into(), accel]
        }
    }
}

/// Runs a helper tool; its failure as a message with what it printed.
fn tool(command: &mut Command) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ))
    }
}

/// The chain as QEMU resolves it (relative backing names are relative to
/// the overlay's directory), from `qemu-img info --backing-chain`; the
/// image first, named as given.
fn chain(image: &Path) -> Result<Vec<PathBuf>, Failure> {
    let fail = |what: String| {
        Failure::new(
            2,
            format!("qemu-img info --backing-chain {}: {what}", image.display()),
        )
    };
    let output = Command::new("qemu-img")
        .args(["info", "--backing-chain", "-U", "--output=json"])
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| fail(error.to_string()))?;
    if !output.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_string(),
        ));
    }
    let layers: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|error| fail(error.to_string()))?;
    let mut disks = vec![image.to_path_buf()];
    for layer in layers
        .as_array()
        .ok_or_else(|| fail("not a JSON array of layers".into()))?
        .iter()
        .skip(1)
    {
        let name = layer["filename"]
            .as_str()
            .ok_or_else(|| fail("a layer without a \"filename\"".into()))?;
        disks.push(name.into());
    }
    Ok(disks)
}

/// QEMU's option syntax doubles commas inside values.
fn escape(value: &OsStr) -> OsString {
    let mut escaped = Vec::with_capacity(value.len());
    for &byte in value.as_bytes() {
        escaped.push(byte);
        if byte == b',' {
            escaped.push(b',');
        }
    }
    OsString::from_vec(escaped)
}

/// Attaches `file` read-only as raw virtio-blk device `index` with `serial`.
fn attach(qemu: &mut Command, index: usize, file: &OsStr, serial: &OsStr) {
    let mut drive = OsString::from("file=");
    drive.push(escape(file));
    drive.push(format!(",format=raw,if=none,id=disk{index},readonly=on"));
    let mut device = OsString::from(format!("virtio-blk-device,drive=disk{index},serial="));
    device.push(escape(serial));
    qemu.arg("-drive").arg(drive).arg("-device").arg(device);
}

/// Which of QEMU's streams a chunk came from.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A thread that sends what `pipe` gives, chunk by chunk, until it closes.
fn forward(
    mut pipe: impl Read + Send + 'static,
    stream: Stream,
    sender: mpsc::Sender<(Stream, Vec<u8>)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0; 8192];
        while let Ok(read @ 1..) = pipe.read(&mut buffer) {
            if sender.send((stream, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    })
}

/// Runs `qemu` (stdin closed), its stdout to `console` and stderr to
/// `messages` as they come; its exit status, or `None` when `timeout`
/// passed and it was killed.
fn run_piped(
    qemu: &mut Command,
    timeout: Duration,
    console: &mut dyn Write,
    messages: &mut dyn Write,
) -> Result<Option<i32>, Failure> {
    qemu.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(qemu).map_err(|message| Failure::new(1, message))?;
    let (sender, chunks) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(pipe) = child.child_mut().stdout.take() {
        readers.push(forward(pipe, Stream::Stdout, sender.clone()));
    }
    if let Some(pipe) = child.child_mut().stderr.take() {
        readers.push(forward(pipe, Stream::Stderr, sender.clone()));
    }
    drop(sender);
    let started = Instant::now();
    let mut write = |(stream, bytes): (Stream, Vec<u8>)| {
        let sink: &mut dyn Write = match stream {
            Stream::Stdout => console,
            Stream::Stderr => messages,
        };
        let _ = sink.write_all(&bytes);
        let _ = sink.flush();
    };
    let status = loop {
        match chunks.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => write(chunk),
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status_code(status)),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill_and_wait();
                break None;
            }
            Ok(None) => {}
            Err(error) => return Err(Failure::new(1, format!("waiting for QEMU: {error}"))),
        }
    };
    // What QEMU printed last, until both pipes close.
    for chunk in chunks {
        write(chunk);
    }
    for reader in readers {
        let _ = reader.join();
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut bytes = vec![0; 64];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[E_MACHINE..E_MACHINE + 2].copy_from_slice(&machine.to_le_bytes());
        bytes
    }

    #[test]
    fn e_machine_selects_the_emulator_and_anything_else_is_named() {
        assert_eq!(elf_arch(&elf(62)), Ok(Arch::X86_64));
        assert_eq!(elf_arch(&elf(183)), Ok(Arch::Aarch64));
        assert!(elf_arch(&elf(40)).unwrap_err().contains("e_machine 40"));
        assert!(elf_arch(&elf(62)[..19])
            .unwrap_err()
            .contains("past the end (19 bytes)"));
        assert!(elf_arch(b"MZ\x90\0").unwrap_err().contains("no \\x7fELF"));
    }

    #[test]
    fn commas_in_paths_are_doubled_for_qemu() {
        assert_eq!(escape("a,b,,c".as_ref()), "a,,b,,,,c");
    }

    #[test]
    fn options_and_positional_arguments_mix_in_any_order() {
        let args: Vec<OsString> = [
            "fw.elf",
            "--file",
            "1:/a",
            "top.qcow2",
            "--file=/b",
            "--passphrase-file=p",
            "base.qcow2",
        ]
        .map(OsString::from)
        .to_vec();
        let run = FirmwareRun::from_args_and_env(&args).unwrap();
        assert_eq!(run.files, ["1:/a", "/b"]);
        assert_eq!(run.passphrase_file.as_deref(), Some(Path::new("p")));
        assert_eq!(
            run.disks,
            [PathBuf::from("top.qcow2"), PathBuf::from("base.qcow2")]
        );
        let missing =
            FirmwareRun::from_args_and_env(&["fw.elf".into(), "--file".into()]).unwrap_err();
        assert_eq!(
            (missing.code, missing.message.as_str()),
            (2, "--file needs a location (N:/PATH or /PATH)")
        );
    }
}
