//! Issue 22's boot test, x86_64, `qcow2root=LABEL=...:/PATH`: a minimal
//! Debian bookworm with systemd and this project's package installed
//! (`testkit::root_disk`: `mmdebstrap`, GPT disk with GRUB and an ext4
//! root, converted to a zstd-compressed QCOW2) is copied to a FAT32 "stick"
//! and booted under stock OVMF by the UEFI runner's `--file` mode
//! (`qcow2_testkit::uefi_run`, `uefi/run.sh`'s): the firmware loads
//! `qcow2.efi`, which attaches the file through `\qcow2.cfg`; GRUB inside
//! the image loads the kernel; the initramfs mounts the stick, serves the
//! image with `qcow serve --connect /dev/nbd0 --fork`, and the root mounts
//! from `/dev/nbd0p2` under a tmpfs overlay. A unit prints the marker at
//! `multi-user.target` and powers off; the console must show no I/O or NBD
//! error from boot to power-off, and no boot script failure.
//!
//! Then an overlay beside its base on the stick: the file the first boot
//! left, now `base.qcow2`, under an empty overlay named `debian.qcow2`
//! (`qemu-img create -b base.qcow2`), boots the same way through the
//! chain, on two CPUs, and leaves both files unchanged.
//!
//! And `qcow2root=efi` with no shell: a disk whose command line says
//! `qcow2root=efi`, on a GPT stick, booted by `uefi/run.sh --driver-option
//! --file`: the firmware loads `qcow2.efi` from `Driver0000`, the driver
//! records the file in its EFI variable, the boot manager starts GRUB from
//! a `Boot####` for the image's ESP, and the initramfs finds the stick by
//! the variable's PARTUUID.
//!
//! And an encrypted image: the disk converted to a LUKS QCOW2
//! (`root_disk::encrypted`), booted as the first; the runner types the
//! passphrase at `qcow2.efi`'s prompt (the firmware reads GRUB, the kernel
//! and the initramfs through it) and at the boot script's (`qcow serve`
//! reads the root through it), both on the serial console.
//!
//! And the failure path: the same image under another name on the stick
//! (the command line inside still names `/debian.qcow2`): one line with
//! the reason, then initramfs-tools' panic (`panic=-1` on the command line
//! makes it reboot at once, which ends QEMU), never a hang.
//!
//! And aarch64 under stock AAVMF (ignored: the CI is over its time; run
//! with `cargo test -p qcow2-reader --test root_boot -- --ignored
//! aarch64`): the package cross-built for arm64 (`scripts/package.sh
//! --arch arm64`), an arm64 root (`mmdebstrap --arch=arm64` through
//! `qemu-user-static`), booted from the zstd QCOW2 file with
//! `qcow2root=efi` from a `Driver####` and with `qcow2root=LABEL=` through
//! the shell's stick, with the same checks.
//!
//! The stick is attached read-only by QEMU, so the image cannot be written.
//! Needs root (mmdebstrap's chroot mode), the Debian mirror once (the disk
//! is cached under `target/root-disk/`), QEMU and OVMF (`scripts/setup.sh`)
//! and mmdebstrap. A boot takes one to a few minutes under TCG.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qcow2_testkit::boot_disk::Arch;
use qcow2_testkit::uefi_run::{Mode, UefiRun, STICK_PARTUUID};
use qcow2_testkit::RunOutput;
use std::sync::OnceLock;

/// An aarch64 Debian test: ignored by default, run with `cargo test -p
/// qcow2-reader --test root_boot -- --ignored aarch64`.
macro_rules! aarch64_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        #[ignore = "an arm64 cross build, mmdebstrap --arch=arm64 and an aarch64 TCG boot: \
                    too long for the CI; run: cargo test -p qcow2-reader --test root_boot -- \
                    --ignored aarch64"]
        fn $name() $body
    };
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn last_line_of(command: &mut Command) -> String {
    let output = command.output().expect("run the command");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    stdout.lines().last().expect("a line of output").to_string()
}

/// The package of `arch` (a cross build for aarch64 on an amd64 host),
/// made once for all tests (they share its directory).
fn package(arch: Arch) -> &'static str {
    static DEBS: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    let index = match arch {
        Arch::X86_64 => 0,
        Arch::Aarch64 => 1,
    };
    DEBS[index].get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        last_line_of(
            Command::new(repo().join("scripts/package.sh"))
                .args(["--arch", arch.debian_name()])
                .arg(tmp.join("root-boot-package")),
        )
    })
}

/// The disk whose command line names `/NAME` on the stick.
fn disk(name: &str) -> PathBuf {
    // run.sh's stick is FAT32 labelled QCOW2DRV, the image at its root.
    disk_named("QCOW2DRV", name)
}

/// The disk `name` whose command line says `qcow2root=LABEL=STICK:/NAME`,
/// or `qcow2root=efi` when `stick` is `efi`.
fn disk_named(stick: &str, name: &str) -> PathBuf {
    disk_of(Arch::X86_64, stick, name)
}

/// [`disk_named`] for `arch`.
fn disk_of(arch: Arch, stick: &str, name: &str) -> PathBuf {
    qcow2_testkit::root_disk::path(arch, Path::new(package(arch)), stick, name)
}

fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| disk("debian.qcow2"))
}

/// `uefi/run.sh qcow2.efi --file IMAGE`, in this process: the image on the FAT32 stick,
/// the guest with `cpus` CPUs.
///
/// One guest at a time: three TCG guests at once (one with two CPUs) on a
/// 2-core host starved the in-guest server past the kernel's 30 s NBD
/// request timeout in one of three repeated runs (`block nbd0: Connection
/// timed out, retrying`). One guest at a time still keeps each boot's
/// time meaningful.
fn boot(image: &Path, cpus: u32) -> RunOutput {
    boot_as(image, cpus, Mode::File)
}

/// The runner in `mode` on `image`, one guest at a time.
fn boot_as(image: &Path, cpus: u32, mode: Mode) -> RunOutput {
    boot_in(image, cpus, mode, None)
}

/// [`boot_as`], the stick writable and kept in `stick_dir` when given.
fn boot_in(image: &Path, cpus: u32, mode: Mode, stick_dir: Option<&Path>) -> RunOutput {
    let work = tempfile::tempdir().unwrap();
    let mut run = UefiRun::new(driver(), mode, Some(image.to_path_buf()));
    run.smp = cpus.to_string();
    run.work = Some(stick_dir.unwrap_or(work.path()).to_path_buf());
    run.writable_stick = stick_dir.is_some();
    run_guest(run)
}

/// The x86_64 driver the package's build made (`scripts/package.sh`).
fn driver() -> PathBuf {
    driver_of(Arch::X86_64)
}

/// The driver of `arch` the package's build made.
fn driver_of(arch: Arch) -> PathBuf {
    repo().join(format!(
        "uefi/target/{}-unknown-uefi/release/qcow2.efi",
        arch.name()
    ))
}

/// Runs `run`, one guest at a time, with time for a Debian boot under TCG.
fn run_guest(mut run: UefiRun) -> RunOutput {
    static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_GUEST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run.timeout = Duration::from_secs(900);
    run.output()
}

/// A boot of the Debian disk whose command line says `qcow2root=efi`, read
/// from nginx over HTTP (`Mode::Url`), and what it leaves to look at.
struct WebBoot {
    output: RunOutput,
    url: String,
    file_bytes: u64,
    nginx: qcow2_testkit::nginx::Nginx,
    /// The served file, nginx's files and the run's: kept until the end.
    _dir: tempfile::TempDir,
}

/// Boots `arch`'s `qcow2root=efi` Debian disk from nginx configured as
/// `server`, the driver given the file's URL.
fn boot_from_nginx(arch: Arch, server: qcow2_testkit::nginx::Server) -> WebBoot {
    let image = disk_of(arch, "efi", "debian-efi.qcow2");
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let served = www.join("debian.qcow2");
    std::fs::hard_link(&image, &served)
        .or_else(|_| std::fs::copy(&image, &served).map(drop))
        .unwrap();
    let file_bytes = std::fs::metadata(&served).unwrap().len();
    let nginx = qcow2_testkit::nginx::Nginx::serve(&www, &dir.path().join("nginx"), &[server]);
    let url = format!("http://10.0.2.2:{}/debian.qcow2", nginx.port(0));
    let mut run = UefiRun::new(driver_of(arch), Mode::Url, None);
    run.url = Some(url.clone());
    run.work = Some(dir.path().join("run"));
    WebBoot {
        output: run_guest(run),
        url,
        file_bytes,
        nginx,
        _dir: dir,
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Copies `name` out of the FAT stick the runner left in `stick_dir`
/// (`driver.img`, written by the guest) to `out`.
fn copy_from_stick(stick_dir: &Path, name: &str, out: &Path) {
    qcow2_testkit::run(
        "mcopy",
        &[
            "-n",
            "-i",
            stick_dir.join("driver.img").to_str().expect("UTF-8 path"),
            &format!("::/{name}"),
            out.to_str().expect("UTF-8 path"),
        ],
    );
}

/// The marker at multi-user.target on the overlay root, and no error line.
fn assert_boots_cleanly(output: &RunOutput) {
    assert_boots_cleanly_on(Arch::X86_64, output);
}

/// [`assert_boots_cleanly`], the marker of `arch`.
fn assert_boots_cleanly_on(arch: Arch, output: &RunOutput) {
    let console = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.success(),
        "the boot failed (status {}): {stderr}\n{console}",
        output.code
    );
    let expected = format!(
        "{} (multi-user.target",
        qcow2_testkit::boot_disk::marker(arch)
    );
    let marker = console
        .lines()
        .find(|line| line.contains(&expected))
        .unwrap_or_else(|| panic!("no marker at multi-user.target:\n{console}"));
    assert!(
        marker.contains("/ is overlay"),
        "the root is not the overlay: {marker}"
    );
    assert!(
        marker.contains("written at an earlier boot: no"),
        "the root kept a file an earlier boot wrote: {marker}"
    );
    for bad in [
        "I/O error",
        "block nbd0:",
        "qcow2root:",
        "qcow: ",
        "EXT4-fs error",
    ] {
        let lines: Vec<&str> = console.lines().filter(|line| line.contains(bad)).collect();
        assert!(lines.is_empty(), "{bad:?} on the console: {lines:#?}");
    }
    eprintln!("{}", stderr.lines().last().unwrap_or(""));
}

/// The boot script's one line `reason`, then initramfs-tools' panic (a
/// reboot with `panic=-1`, which ends QEMU): never the marker, never a hang.
fn assert_one_line_then_the_rescue_path(output: &RunOutput, reason: &str) {
    let console = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("timeout"),
        "the boot hung instead of failing: {stderr}\n{console}"
    );
    // After initramfs-tools' "Begin: ... " on the same line; a shell error
    // of the script (`/scripts/local-top/qcow2root: 85: ...`) would be one
    // more.
    let reasons: Vec<&str> = console
        .lines()
        .filter_map(|line| line.find("qcow2root: ").map(|at| &line[at..]))
        .collect();
    assert_eq!(reasons, [reason], "{console}");
    assert!(
        console.contains("Rebooting automatically due to panic= boot argument"),
        "not initramfs-tools' panic: {console}"
    );
    assert!(
        !console.contains("QCOW2-BOOT-MARKER"),
        "booted without its image: {console}"
    );
}

/// The tests, in a module of their own so that `scripts/test.sh` can run
/// them beside the rest of the suite (`--skip root_boot::` there).
mod root_boot {
    use super::*;

    /// Two boots from a writable stick, the second from an empty overlay
    /// over the file the first left: each reaches multi-user.target on a
    /// root that does not hold what an earlier boot wrote to `/`, and every
    /// image file on the stick is afterwards byte for byte the file copied
    /// there. The overlay is named as the command line says
    /// (`debian.qcow2`), its base `base.qcow2` beside it, found through the
    /// chain; its boot runs on two CPUs (the server's readers and the
    /// kernel's requests then run at once, as on a real machine).
    #[test]
    fn debian_boots_from_a_zstd_qcow2_file_then_from_an_overlay_over_it_and_leaves_both_files_unchanged(
    ) {
        let made = sha256_of(&std::fs::read(image()).unwrap());
        let first = tempfile::tempdir().unwrap();
        assert_boots_cleanly(&boot_in(image(), 1, Mode::File, Some(first.path())));
        let chain = tempfile::tempdir().unwrap();
        let base = chain.path().join("base.qcow2");
        copy_from_stick(first.path(), "debian.qcow2", &base);
        let left = sha256_of(&std::fs::read(&base).unwrap());
        assert_eq!(left, made, "boot 1 changed the image on the stick");

        let top = chain.path().join("debian.qcow2");
        // Through testkit, as every image of the tests (it fails the test with
        // qemu-img's message, and retries only its calibration failure).
        qcow2_testkit::run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                top.to_str().expect("UTF-8 path"),
            ],
        );
        let top_made = sha256_of(&std::fs::read(&top).unwrap());
        let second = tempfile::tempdir().unwrap();
        let output = boot_in(&top, 2, Mode::File, Some(second.path()));
        let console = String::from_utf8_lossy(&output.stdout);
        assert!(
            console.contains("Brought up 1 node, 2 CPUs"),
            "the guest did not get two CPUs:\n{console}"
        );
        assert_boots_cleanly(&output);
        let after = tempfile::tempdir().unwrap();
        for (name, wanted) in [("debian.qcow2", top_made), ("base.qcow2", made)] {
            let copy = after.path().join(name);
            copy_from_stick(second.path(), name, &copy);
            let left = sha256_of(&std::fs::read(&copy).unwrap());
            assert_eq!(
                left, wanted,
                "the overlay's boot changed {name} on the stick"
            );
        }
    }

    #[test]
    fn debian_boots_from_a_luks_qcow2_file_typing_its_passphrase_for_the_driver_and_the_initramfs()
    {
        const PASSPHRASE: &str = "qcow2 boot test";
        let image = qcow2_testkit::root_disk::encrypted(image(), PASSPHRASE);
        let work = tempfile::tempdir().unwrap();
        let mut run = UefiRun::new(driver(), Mode::File, Some(image));
        run.work = Some(work.path().to_path_buf());
        run.answers = [
            "qcow2.efi: Passphrase for \\debian.qcow2: ",
            "Passphrase for /debian.qcow2: ",
        ]
        .map(|prompt| (prompt.to_string(), PASSPHRASE.to_string()))
        .to_vec();
        let output = run_guest(run);
        let console = String::from_utf8_lossy(&output.stdout);
        assert!(
            console.contains("qcow2.efi: attached \\debian.qcow2: "),
            "the driver did not attach the encrypted image:\n{console}"
        );
        assert!(
            !console.contains("wrong passphrase"),
            "a passphrase was refused:\n{console}"
        );
        assert_boots_cleanly(&output);
    }

    #[test]
    fn debian_boots_with_qcow2root_efi_from_a_driver_option_without_a_shell() {
        boots_with_qcow2root_efi_from_a_driver_option(Arch::X86_64);
    }

    aarch64_test! {
        fn aarch64_debian_boots_with_qcow2root_efi_from_a_driver_option_under_aavmf() {
            boots_with_qcow2root_efi_from_a_driver_option(Arch::Aarch64);
        }
    }

    aarch64_test! {
        fn aarch64_debian_boots_from_a_zstd_qcow2_file_on_the_shells_stick_under_aavmf() {
            // qcow2root=LABEL=QCOW2DRV:/debian.qcow2: the shell loads the driver
            // and starts GRUB from the attached image, as in the x86_64 tests.
            let image = disk_of(Arch::Aarch64, "QCOW2DRV", "debian.qcow2");
            let work = tempfile::tempdir().unwrap();
            let mut run = UefiRun::new(driver_of(Arch::Aarch64), Mode::File, Some(image));
            run.work = Some(work.path().to_path_buf());
            let output = run_guest(run);
            assert_boots_cleanly_on(Arch::Aarch64, &output);
        }
    }

    /// The command line says `qcow2root=efi`, no path: the driver loaded by
    /// the firmware from Driver0000 attaches the file and records it in its
    /// EFI variable, the boot manager starts GRUB from the image's ESP
    /// through a Boot#### (no UEFI Shell: reaching it fails the run), and
    /// the initramfs finds the stick by the variable's PARTUUID.
    fn boots_with_qcow2root_efi_from_a_driver_option(arch: Arch) {
        let image = disk_of(arch, "efi", "debian-efi.qcow2");
        let work = tempfile::tempdir().unwrap();
        let mut run = UefiRun::new(driver_of(arch), Mode::DriverOptionFile, Some(image));
        run.work = Some(work.path().to_path_buf());
        let output = run_guest(run);
        let console = String::from_utf8_lossy(&output.stdout);
        let recorded = format!(
            "qcow2.efi: \\debian-efi.qcow2: recorded for qcow2root=efi as {STICK_PARTUUID}:/debian-efi.qcow2"
        );
        assert!(console.contains(&recorded), "no {recorded:?}:\n{console}");
        let found =
            format!("qcow2root=efi: the image is PARTUUID={STICK_PARTUUID}:/debian-efi.qcow2");
        assert!(console.contains(&found), "no {found:?}:\n{console}");
        assert!(
            !console.contains("EFI Internal Shell"),
            "the UEFI Shell ran:\n{console}"
        );
        assert_boots_cleanly_on(arch, &output);
    }

    #[test]
    fn a_missing_image_file_is_one_line_then_the_rescue_path_not_a_hang() {
        // The same disk as `other.qcow2`: the driver attaches it (\qcow2.cfg
        // names it), GRUB boots the kernel, whose command line names
        // /debian.qcow2, which the stick does not hold.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.qcow2");
        std::fs::copy(image(), &other).unwrap();
        let output = boot(&other, 1);
        assert_one_line_then_the_rescue_path(
            &output,
            "qcow2root: no file /debian.qcow2 on LABEL=QCOW2DRV",
        );
    }

    #[test]
    fn qcow2root_efi_without_the_variable_is_one_line_then_the_rescue_path() {
        // The `qcow2root=efi` disk through the shell's `--file` stick: a FAT on
        // the whole device, no partition table, so no PARTUUID: the driver
        // attaches the image but records nothing, GRUB boots the kernel, and
        // the boot script finds no variable.
        let output = boot(&disk_named("efi", "debian-efi.qcow2"), 1);
        let console = String::from_utf8_lossy(&output.stdout);
        assert!(
            console.contains(
                "qcow2.efi: \\debian-efi.qcow2: not recorded for qcow2root=efi: \
                 the file system is not on a GPT or MBR partition"
            ),
            "the driver did not say why it recorded nothing:\n{console}"
        );
        assert_one_line_then_the_rescue_path(
            &output,
            "qcow2root: qcow2root=efi: no EFI variable QcowRootImage \
             (qcow2.efi attached no image file on a partition and no URL)",
        );
    }

    /// The web server refuses Linux what it gave the firmware (nginx
    /// answers `qcow`'s requests, by their User-Agent, with 404): `qcow
    /// serve`'s own line naming the URL and the status, then the boot
    /// script's one line and the rescue path, never a hang.
    #[test]
    fn a_url_linux_cannot_read_is_one_line_then_the_rescue_path() {
        let refusing = qcow2_testkit::nginx::Server {
            directives: "if ($http_user_agent ~ qcow2-http) { return 404; }".into(),
            ..Default::default()
        };
        let WebBoot { output, url, .. } = boot_from_nginx(Arch::X86_64, refusing);
        let console = String::from_utf8_lossy(&output.stdout);
        let tool = console
            .lines()
            .find(|line| line.contains("qcow: ") && line.contains(&url))
            .unwrap_or_else(|| panic!("no line of qcow's naming {url}:\n{console}"));
        assert!(tool.contains("404"), "the status is not named: {tool}");
        assert_one_line_then_the_rescue_path(
            &output,
            &format!("qcow2root: qcow serve refused {url}"),
        );
    }

    /// Issue 23 on a real distribution: the whole system from a web server
    /// ([`boots_from_a_qcow2_url`]).
    #[test]
    fn debian_boots_to_multi_user_from_a_qcow2_url_fetching_a_fraction_of_the_file() {
        boots_from_a_qcow2_url(Arch::X86_64);
    }

    aarch64_test! {
        fn aarch64_debian_boots_to_multi_user_from_a_qcow2_url_under_aavmf() {
            boots_from_a_qcow2_url(Arch::Aarch64);
        }
    }

    /// `qcow2.efi` reads GRUB, the kernel and the initramfs from nginx over
    /// HTTP, lazily, and records the URL in its EFI variable; the command
    /// line says `qcow2root=efi`, so the initramfs brings the network up
    /// (DHCP from QEMU's user network) and serves the same URL as
    /// `/dev/nbd0` with `qcow serve`; the system reaches multi-user.target
    /// on it and shuts down cleanly. Prints what each part fetched against
    /// the file's size (issue 23's goal: at most 25% of the file before
    /// multi-user.target).
    fn boots_from_a_qcow2_url(arch: Arch) {
        let WebBoot {
            output,
            url,
            file_bytes,
            nginx,
            _dir,
        } = boot_from_nginx(arch, qcow2_testkit::nginx::Server::default());
        let console = String::from_utf8_lossy(&output.stdout);
        let requests = nginx.requests();
        // The firmware's requests carry no `User-Agent`; `qcow`'s say
        // `qcow2-http/VERSION`.
        let part = |linux: bool| {
            let requests: Vec<_> = requests
                .iter()
                .filter(|request| request.agent.starts_with("qcow2-http/") == linux)
                .collect();
            let bytes: u64 = requests.iter().map(|request| request.bytes).sum();
            let bodies: Vec<&str> = requests
                .iter()
                .filter(|request| request.bytes > 0)
                .map(|request| request.range.as_str())
                .collect();
            let ranges: std::collections::HashSet<&str> = bodies.iter().copied().collect();
            let again = bodies.len() - ranges.len();
            eprintln!(
                "  {}: {bytes} bytes ({:.1}% of the file) in {} requests, {again} of a range fetched before",
                if linux { "Linux (qcow serve)" } else { "firmware (qcow2.efi)" },
                bytes as f64 * 100.0 / file_bytes as f64,
                requests.len(),
            );
            bytes
        };
        eprintln!("{url}: a {file_bytes}-byte file");
        let firmware = part(false);
        let linux = part(true);
        let fetched = firmware + linux;
        eprintln!(
            "  together: {fetched} bytes, {:.1}% of the file",
            fetched as f64 * 100.0 / file_bytes as f64
        );
        let recorded = format!("qcow2.efi: {url}: recorded for qcow2root=efi as {url}");
        assert!(console.contains(&recorded), "no {recorded:?}:\n{console}");
        let found = format!("qcow2root=efi: the image is {url}");
        assert!(console.contains(&found), "no {found:?}:\n{console}");
        assert_boots_cleanly_on(arch, &output);
        // Ranges, and `qcow`'s `HEAD` (a 200 without a body).
        assert!(
            requests
                .iter()
                .all(|request| request.status == 206 || request.bytes == 0),
            "a request that is neither a range nor HEAD: {requests:?}"
        );
        // Each part reads a fraction: the firmware the kernel and the
        // initramfs, Linux what the boot reads of the root.
        for (who, bytes) in [("the firmware", firmware), ("Linux", linux)] {
            assert!(
                bytes > 0 && bytes * 2 < file_bytes,
                "{who} fetched {bytes} bytes of a {file_bytes}-byte file: not a lazy part"
            );
        }
    }
}
