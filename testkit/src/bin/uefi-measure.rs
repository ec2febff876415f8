//! Measures boot times to the marker of `scripts/boot-disk.sh` under the
//! stock firmware: the raw disk booted by the firmware itself (`--raw`),
//! and the same disk converted to QCOW2 (uncompressed, deflate, zstd)
//! booted through `qcow2.efi`, loaded by the shell or, as on a real
//! machine, from a Driver#### variable with the image booted by the boot
//! manager like the raw disk (`--driver-option`; the boot adding the
//! variable is not counted), as a disk or from a URL. The
//! kinds alternate within each round, so a slow spell of the host touches
//! every kind alike. Prints one line per boot and a summary of medians;
//! uefi/README.md's table is made from these.
//!
//! ```text
//! cargo run -p qcow2-testkit --bin uefi-measure -- [--stats] ARCH [ROUNDS [KINDS]]
//! ```
//!
//! `--stats` builds the driver with its `boot-stats` feature and adds, to
//! each QCOW2 boot's line, the driver's count of what the loader read (its
//! `boot stats:` console line at `ExitBootServices`).
//! `UEFI_MEASURE_CONSOLES=DIR` keeps each boot's console in
//! `DIR/ARCH-ROUND-KIND.log` (and for a kind read over HTTP nginx's
//! requests, with their times, in `.requests`).
//!
//! ARCH = x86_64 | aarch64, ROUNDS default 3, KINDS default
//! "raw plain-option deflate-option zstd-option" (one argument,
//! space-separated): `raw`, or a codec (`plain`, `deflate`, `zstd`) alone
//! (the image as a disk, the driver loaded by the shell) or followed by
//! `-option` (the driver from `Driver####`) or `-url-option` (the image
//! read over HTTP from nginx on the host, the URL in the driver's load
//! options). `debian-raw` and `debian-zstd-file-option` boot the Debian
//! disk of `tests/root_boot.rs` to `multi-user.target` (on aarch64 the
//! arm64 one, from `scripts/package.sh --arch arm64`): raw,
//! its root on the disk, against the zstd QCOW2 file on a stick with
//! `qcow2root=efi`, the driver from `Driver####` and the root served by
//! `qcow serve` in the initramfs (issue 22's benchmark; needs what that
//! test needs: root, mmdebstrap); `debian-zstd-url-option` boots the same
//! file from nginx, the URL in the driver's load options, and Linux serves
//! its root from the URL the driver recorded (issue 23's). After the rounds,
//! a summary: each kind's medians, and the medians of its per-round ratios
//! to the raw boot of the same round.
//! Builds the driver (dev profile, as `cargo run` does) first. Images go to
//! target/uefi-measure/ARCH/.

use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2_testkit::boot_disk::Arch;
use qcow2_testkit::uefi_run::{BootTimes, Mode, UefiRun};
use qcow2_testkit::{run_in, workspace_root};

const USAGE: &str = "usage: uefi-measure [--stats] x86_64|aarch64 [ROUNDS [KINDS]]";

fn fail(message: &str) -> ! {
    eprintln!("uefi-measure: {message}");
    std::process::exit(1);
}

fn main() {
    if let Err(message) = qcow2_testkit::stop_children_on_signals() {
        fail(&message);
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let stats = args.first().is_some_and(|first| first == "--stats");
    if stats {
        args.remove(0);
    }
    let arch = match args.first().map(String::as_str) {
        Some(arch @ ("x86_64" | "aarch64")) => arch,
        _ => fail(USAGE),
    };
    let rounds: u32 = match args.get(1) {
        None => 3,
        Some(rounds) => rounds
            .parse()
            .unwrap_or_else(|_| fail(&format!("ROUNDS {rounds:?} is not a number; {USAGE}"))),
    };
    let kinds: Vec<&str> = args
        .get(2)
        .map_or(
            "raw plain-option deflate-option zstd-option",
            String::as_str,
        )
        .split_whitespace()
        .collect();
    let root = workspace_root();
    let uefi = root.join("uefi");
    let target = format!("{arch}-unknown-uefi");
    let mut build = Command::new("cargo");
    build.args(["build", "--quiet", "--target", &target]);
    if stats {
        build.args(["--features", "boot-stats"]);
    }
    let built = build
        .current_dir(&uefi)
        .status()
        .is_ok_and(|status| status.success());
    if !built {
        fail(&format!(
            "cargo build --target {target} in {} failed",
            uefi.display()
        ));
    }
    let driver = uefi.join("target").join(&target).join("debug/qcow2.efi");
    let raw = PathBuf::from(
        String::from_utf8_lossy(
            &run_in(None, &path(&root.join("scripts/boot-disk.sh")), &[arch]).stdout,
        )
        .trim_end_matches('\n'),
    );
    let dir = root.join("target/uefi-measure").join(arch);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| fail(&format!("{}: {error}", dir.display())));
    for (kind, options) in [
        ("plain", None),
        ("deflate", Some("compression_type=zlib")),
        ("zstd", Some("compression_type=zstd")),
    ] {
        let image = dir.join(format!("{kind}.qcow2"));
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        if let Some(options) = options {
            args.extend(["-c", "-o", options]);
        }
        let (raw, image) = (path(&raw), path(&image));
        args.extend([raw.as_str(), image.as_str()]);
        qcow2_testkit::qemu_img(&args);
    }
    let kinds: Vec<Kind> = kinds
        .iter()
        .map(|name| {
            Kind::parse(name).unwrap_or_else(|| fail(&format!("unknown kind {name:?}; {USAGE}")))
        })
        .collect();
    // Only started when a kind reads over HTTP.
    let server = kinds
        .iter()
        .any(|kind| kind.mode == Mode::DriverOptionUrl)
        .then(|| {
            qcow2_testkit::nginx::Nginx::serve(
                &dir,
                &dir.join("nginx"),
                &[qcow2_testkit::nginx::Server::default()],
            )
        });
    let debian = kinds
        .iter()
        .any(|kind| kind.debian)
        .then(|| debian_disks(root, &dir, arch));
    let mut measured: Vec<Vec<BootTimes>> = vec![Vec::new(); kinds.len()];
    for round in 1..=rounds {
        for (kind, times) in kinds.iter().zip(&mut measured) {
            let image = match (kind.debian, kind.codec) {
                (true, None) => debian.as_ref().expect("built").0.clone(),
                (true, Some(_)) => debian.as_ref().expect("built").1.clone(),
                (false, None) => raw.clone(),
                (false, Some(codec)) => dir.join(format!("{codec}.qcow2")),
            };
            let mut run = UefiRun::new(&driver, kind.mode, Some(image.clone()));
            if let Err(failure) = run.apply_env() {
                fail(&failure.message);
            }
            if kind.debian {
                // A Debian boot to multi-user.target under TCG: minutes.
                run.timeout = std::time::Duration::from_secs(900);
            }
            if let Some(server) = &server {
                if kind.mode == Mode::DriverOptionUrl {
                    run.url = Some(served_url(server, &dir, &image));
                }
                server.clear_log();
            }
            run.work = Some(dir.join("run"));
            let output = run.output();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr.lines().last().unwrap_or("");
            let console = String::from_utf8_lossy(&output.stdout);
            // `UEFI_MEASURE_CONSOLES=DIR` keeps each boot's console, to see
            // where a slow boot spent its time (the kernel's timestamps).
            if let Some(consoles) = std::env::var_os("UEFI_MEASURE_CONSOLES") {
                let file = Path::new(&consoles).join(format!("{arch}-{round}-{}.log", kind.name));
                if let Err(error) = std::fs::write(&file, &output.stdout) {
                    fail(&format!("{}: {error}", file.display()));
                }
            }
            let counted = console
                .lines()
                .find_map(|line| line.split_once("qcow2.efi: boot stats: "))
                .map_or(String::new(), |(_, counts)| {
                    format!(" [{}]", counts.trim_end())
                });
            // Both boots of the kind: the one adding `Driver####` and the
            // measured one (the driver's `fetches` count the latter alone).
            let served = server
                .as_ref()
                .filter(|_| kind.mode == Mode::DriverOptionUrl)
                .map_or(String::new(), |server| {
                    let requests = server.requests();
                    keep_requests(arch, round, &kind.name, &requests);
                    let bytes: u64 = requests.iter().map(|request| request.bytes).sum();
                    format!(
                        " [nginx served {bytes} bytes in {} requests]",
                        requests.len()
                    )
                });
            println!(
                "{arch} round {round} {}: {line}{counted}{served}",
                kind.name
            );
            times.extend(BootTimes::from_line(line));
        }
    }
    print_summary(arch, &kinds, &measured);
}

/// What one boot of a round is: the image's codec (`None`: the raw disk)
/// and how the driver and the image come to the firmware.
struct Kind {
    name: String,
    codec: Option<&'static str>,
    mode: Mode,
    /// The Debian disk of the root boot test instead of the boot disk.
    debian: bool,
}

impl Kind {
    /// `raw`; `plain`, `deflate`, `zstd` (the image as a disk, the driver
    /// from the shell); with `-option` the driver from `Driver####`, with
    /// `-url-option` also the image read from nginx over HTTP.
    fn parse(name: &str) -> Option<Self> {
        match name {
            "raw" | "debian-raw" => {
                return Some(Self {
                    name: name.into(),
                    codec: None,
                    mode: Mode::Raw,
                    debian: name == "debian-raw",
                })
            }
            // The root boot test's zstd file on a stick, `qcow2root=efi`,
            // the driver from `Driver####`: a real machine's boot; or the
            // same file from a web server.
            "debian-zstd-file-option" | "debian-zstd-url-option" => {
                return Some(Self {
                    name: name.into(),
                    codec: Some("zstd"),
                    mode: if name.ends_with("url-option") {
                        Mode::DriverOptionUrl
                    } else {
                        Mode::DriverOptionFile
                    },
                    debian: true,
                })
            }
            _ => {}
        }
        let (codec, how) = name.split_once('-').unwrap_or((name, ""));
        let codec = ["plain", "deflate", "zstd"]
            .into_iter()
            .find(|known| *known == codec)?;
        let mode = match how {
            "" => Mode::Disk,
            "option" => Mode::DriverOption,
            "url-option" => Mode::DriverOptionUrl,
            _ => return None,
        };
        Some(Self {
            name: name.into(),
            codec: Some(codec),
            mode,
            debian: false,
        })
    }
}

/// The root boot test's Debian disk raw (its root mounted from the disk,
/// no `qcow2root=`) and as the zstd QCOW2 file it boots from with
/// `qcow2root=efi` (`qcow2_testkit::root_disk`, cached under `target/`),
/// built from the package `scripts/package.sh` makes for `arch`.
fn debian_disks(root: &Path, dir: &Path, arch: &str) -> (PathBuf, PathBuf) {
    let arch = Arch::from_name(arch).unwrap_or_else(|error| fail(&error));
    let package = run_in(
        None,
        &path(&root.join("scripts/package.sh")),
        &["--arch", arch.debian_name(), &path(&dir.join("package"))],
    );
    let deb = String::from_utf8_lossy(&package.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let deb = Path::new(&deb);
    let raw =
        qcow2_testkit::root_disk::path(arch, deb, qcow2_testkit::root_disk::RAW, "debian.raw");
    // The disk of tests/root_boot.rs's qcow2root=efi boot, the same name.
    let qcow2 = qcow2_testkit::root_disk::path(arch, deb, "efi", "debian-efi.qcow2");
    (raw, qcow2)
}

/// With `UEFI_MEASURE_CONSOLES=DIR`, the requests nginx logged for a boot
/// in `DIR/ARCH-ROUND-KIND.requests`: time, status, bytes, range, agent.
fn keep_requests(arch: &str, round: u32, kind: &str, requests: &[qcow2_testkit::nginx::Request]) {
    let Some(consoles) = std::env::var_os("UEFI_MEASURE_CONSOLES") else {
        return;
    };
    let lines: String = requests
        .iter()
        .map(|request| {
            format!(
                "{:.3} {} {} {} {}\n",
                request.time, request.status, request.bytes, request.range, request.agent
            )
        })
        .collect();
    let file = Path::new(&consoles).join(format!("{arch}-{round}-{kind}.requests"));
    if let Err(error) = std::fs::write(&file, lines) {
        fail(&format!("{}: {error}", file.display()));
    }
}

/// The URL from which the guest reads `image`, served by `server` from
/// `dir` (a file elsewhere is linked in afresh, or copied: a rebuilt
/// image is a new file).
fn served_url(server: &qcow2_testkit::nginx::Nginx, dir: &Path, image: &Path) -> String {
    let name = image
        .file_name()
        .unwrap_or_else(|| fail(&format!("{}: no file name", image.display())));
    let served = dir.join(name);
    if image.parent() != Some(dir) {
        let _ = std::fs::remove_file(&served);
        std::fs::hard_link(image, &served)
            .or_else(|_| std::fs::copy(image, &served).map(drop))
            .unwrap_or_else(|error| fail(&format!("{}: {error}", served.display())));
    }
    format!(
        "http://10.0.2.2:{}/{}",
        server.port(0),
        name.to_string_lossy()
    )
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// Per kind: the medians of both times over the rounds, and the medians
/// of the per-round ratios to the raw disk's boot of the same round (when
/// raw was measured and both boots of the round reached the marker).
fn print_summary(arch: &str, kinds: &[Kind], measured: &[Vec<BootTimes>]) {
    let raw = kinds.iter().position(|kind| kind.codec.is_none());
    println!("{arch}: kind | to marker (median) | loader to marker (median) | /raw | loader to marker /raw");
    for (kind, times) in kinds.iter().zip(measured) {
        let seconds = |time: &dyn Fn(&BootTimes) -> Option<f64>| {
            median(times.iter().filter_map(time).collect())
                .map_or("-".into(), |value| format!("{value:.2} s"))
        };
        let ratio = |time: &dyn Fn(&BootTimes) -> Option<f64>| {
            let raw = &measured[raw?];
            median(
                times
                    .iter()
                    .zip(raw)
                    .filter_map(|(this, raw)| Some(time(this)? / time(raw)?))
                    .collect(),
            )
        };
        let show = |ratio: Option<f64>| ratio.map_or("-".into(), |value| format!("{value:.2}x"));
        let marker = |times: &BootTimes| Some(times.marker.as_secs_f64());
        let loader = |times: &BootTimes| times.loader_to_marker().map(|time| time.as_secs_f64());
        println!(
            "{arch}: {} | {} | {} | {} | {} ({} rounds)",
            kind.name,
            seconds(&marker),
            seconds(&loader),
            show(ratio(&marker)),
            show(ratio(&loader)),
            times.len()
        );
    }
}

/// A path as the tools' `&str` arguments take it.
fn path(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| fail(&format!("{}: not UTF-8", path.display())))
        .to_string()
}
