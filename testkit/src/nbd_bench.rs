//! `qcow serve` against `qemu-nbd --read-only` on the same images, side by
//! side in one run (issue 22's benchmark; the bin `nbd-bench` runs it).
//!
//! The images are made by `qemu-img` from one raw source of mixed data (the
//! machine's own files as a tar stream, pseudo-random bytes, zeros):
//! uncompressed, deflate, zstd, and a 3-deep chain whose upper layers
//! cover part of the base. Each is served by each server on a unix socket
//! and read by `nbdcopy` to `null:` and by `fio`'s `nbd` engine with 4 KiB
//! random reads over 1 and 4 connections (`iodepth` 1, fio's fixed seed:
//! both servers see the same offsets). The server's CPU time is its
//! `/proc/PID/stat` user + system time across the client's run. Servers
//! alternate (the first of each round swaps), and the table gives medians
//! of the rounds and the ratios of the medians: on a machine shared with
//! other work, ratios of interleaved runs mean more than absolute numbers.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{cached, qemu_img, qemu_io, run};

/// What a benchmark run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the images are made (and kept between runs).
    pub dir: PathBuf,
    /// The `qcow` binary (a release build).
    pub qcow: PathBuf,
    /// Rounds; the table gives medians (at least 3 for a median worth the name).
    pub rounds: usize,
    /// The source disk's size, MiB (a multiple of 8).
    pub size_mib: u64,
    /// Seconds of each fio run.
    pub random_seconds: u64,
}

/// The two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `qcow serve IMAGE --socket S`.
    Qcow,
    /// `qemu-nbd --read-only --persistent --shared=0 -f qcow2 -k S IMAGE`.
    QemuNbd,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Qcow => "qcow serve",
            Server::QemuNbd => "qemu-nbd",
        }
    }
}

/// The three readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `nbdcopy URI null:` (its defaults: 4 connections, 64 requests in flight).
    Copy,
    /// fio 4 KiB random reads over this many connections.
    Random(u32),
}

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::Copy => "nbdcopy to null:".to_string(),
            Workload::Random(1) => "4 KiB random, 1 connection".to_string(),
            Workload::Random(n) => format!("4 KiB random, {n} connections"),
        }
    }
}

const WORKLOADS: [Workload; 3] = [Workload::Copy, Workload::Random(1), Workload::Random(4)];

/// One measurement: bytes read, wall seconds, the server's CPU seconds.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Bytes the client read.
    pub bytes: u64,
    /// Seconds the client took (fio: its own runtime).
    pub seconds: f64,
    /// The server's user + system seconds over the client's run.
    pub cpu_seconds: f64,
}

impl Sample {
    fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.seconds
    }

    fn cpu_per_gib(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / (1u64 << 30) as f64)
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The raw source: `size_mib` MiB, 5/8 the machine's files (a tar stream
/// of /usr/lib and /usr/share: executables, libraries, text), 1/8
/// pseudo-random bytes (incompressible), 1/4 zeros, in that order but for
/// the last 1/4 of the files placed after the zeros.
fn make_source(path: &Path, size_mib: u64) {
    let eighth = (size_mib << 20) / 8;
    let files_bytes = 5 * eighth;
    let mut tar = Command::new("tar")
        .args(["cf", "-", "/usr/lib", "/usr/share"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tar");
    let mut files = vec![0; files_bytes as usize];
    tar.stdout
        .as_mut()
        .expect("tar's output")
        .read_exact(&mut files)
        .expect("enough files under /usr for the source disk");
    let _ = tar.kill();
    let _ = tar.wait();
    let mut random = vec![0; eighth as usize];
    // xorshift64*: incompressible enough for deflate and zstd, and the
    // same bytes in every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in random.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let value = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&value[..chunk.len()]);
    }
    let split = (4 * eighth) as usize;
    let mut out = std::fs::File::create(path).expect("create the source");
    out.write_all(&files[..split]).expect("write the source");
    out.write_all(&random).expect("write the source");
    out.write_all(&vec![0; (2 * eighth) as usize])
        .expect("write the source");
    out.write_all(&files[split..]).expect("write the source");
}

/// The images, made on first use: (name, path).
pub fn images(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let dir = config.dir.join(format!("nbd-bench-{}m", config.size_mib));
    // Absolute: the layers name their backing files by this path.
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let dir = dir.canonicalize().expect("the bench directory");
    let source = cached(&dir, "source.raw", |path| {
        make_source(path, config.size_mib)
    });
    let convert = |name: &str, options: &[&str]| {
        cached(&dir, name, |path| {
            let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
            args.extend(options);
            args.extend([text(&source), text(path)]);
            qemu_img(&args);
        })
    };
    let allocated = convert("allocated.qcow2", &[]);
    let deflate = convert("deflate.qcow2", &["-c", "-o", "compression_type=zlib"]);
    let zstd = convert("zstd.qcow2", &["-c", "-o", "compression_type=zstd"]);
    // The chain: the base is the source; the middle layer covers 2 MiB of
    // every 8 MiB, the top 1 MiB of every 8 MiB elsewhere, with bytes of
    // the source's files and random part (`qemu-io write -s`).
    let base = convert("chain-base.qcow2", &[]);
    let size = config.size_mib << 20;
    let patch = cached(&dir, "patch.raw", |path| {
        let bytes = std::fs::read(&source).expect("read the source");
        let start = (size / 2 - (1 << 20)) as usize;
        std::fs::write(path, &bytes[start..start + (2 << 20)]).expect("write the patch");
    });
    let layer = |name: &str, backing: &Path, at: u64, len: &str| {
        cached(&dir, name, |path| {
            qemu_img(&[
                "create",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                text(backing),
                text(path),
            ]);
            let commands: Vec<String> = (0..size / (8 << 20))
                .map(|unit| format!("write -s {} {} {len}", text(&patch), unit * (8 << 20) + at))
                .collect();
            let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
            qemu_io(path, &commands);
        })
    };
    let middle = layer("chain-middle.qcow2", &base, 1 << 20, "2M");
    let top = layer("chain-top.qcow2", &middle, 5 << 20, "1M");
    vec![
        ("allocated", allocated),
        ("deflate", deflate),
        ("zstd", zstd),
        ("3-deep chain", top),
    ]
}

/// A server on a socket, stopped (SIGTERM) when dropped.
struct Running {
    child: Child,
}

impl Running {
    fn start(config: &Config, server: Server, image: &Path, socket: &Path) -> Self {
        let _ = std::fs::remove_file(socket);
        let mut command = match server {
            Server::Qcow => {
                let mut command = Command::new(&config.qcow);
                command.arg("serve").arg(image).arg("--socket").arg(socket);
                command
            }
            Server::QemuNbd => {
                let mut command = Command::new("qemu-nbd");
                command
                    .args([
                        "--read-only",
                        "--persistent",
                        "--shared=0",
                        "-f",
                        "qcow2",
                        "-k",
                    ])
                    .arg(socket)
                    .arg(image);
                command
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", server.name()));
        let started = Instant::now();
        while UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited with {status}", server.name());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} not listening after 60 s",
                server.name()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Running { child }
    }

    /// User + system seconds so far (`/proc/PID/stat` fields 14 and 15,
    /// in clock ticks of 100 Hz, Linux's `USER_HZ` on every architecture).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the server's /proc stat");
        // The command name (field 2) may hold spaces: count after its ')'.
        let after = &stat[stat.rfind(')').expect("stat's command name") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / 100.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Runs `workload` against the server on `socket`; `size` is the export's.
fn measure(
    config: &Config,
    running: &Running,
    socket: &Path,
    size: u64,
    workload: Workload,
) -> Sample {
    let uri = format!("nbd+unix:///?socket={}", text(socket));
    let cpu_before = running.cpu_seconds();
    let started = Instant::now();
    let (bytes, seconds) = match workload {
        Workload::Copy => {
            run("nbdcopy", &[&uri, "null:"]);
            (size, started.elapsed().as_secs_f64())
        }
        Workload::Random(connections) => {
            let output = run(
                "fio",
                &[
                    "--name=random",
                    "--ioengine=nbd",
                    &format!("--uri={uri}"),
                    "--rw=randread",
                    "--bs=4k",
                    "--iodepth=1",
                    &format!("--numjobs={connections}"),
                    &format!("--size={size}"),
                    "--time_based",
                    &format!("--runtime={}", config.random_seconds),
                    "--group_reporting",
                    "--output-format=json",
                ],
            );
            // The nbd engine prints "fio: connected to NBD server" on
            // standard output before the report.
            let start = output.stdout.iter().position(|&byte| byte == b'{');
            let report: Value =
                serde_json::from_slice(&output.stdout[start.unwrap_or(0)..]).expect("fio's JSON");
            let read = &report["jobs"][0]["read"];
            let bytes = read["io_bytes"].as_u64().expect("fio's io_bytes");
            let milliseconds = read["runtime"].as_u64().expect("fio's runtime");
            (bytes, milliseconds as f64 / 1000.0)
        }
    };
    Sample {
        bytes,
        seconds,
        cpu_seconds: running.cpu_seconds() - cpu_before,
    }
}

/// Every sample: (image, workload, server) and the rounds' samples.
pub type Results = Vec<(&'static str, Workload, Server, Vec<Sample>)>;

/// Runs the rounds; `progress` hears of each sample.
pub fn run_rounds(config: &Config, mut progress: impl FnMut(&str)) -> Results {
    let images = images(config);
    // qemu-nbd takes absolute socket paths only: beside the images.
    let socket = images[0].1.with_file_name("nbd-bench.sock");
    let mut results: Results = Vec::new();
    for round in 0..config.rounds {
        for (name, image) in &images {
            let size = config.size_mib << 20;
            let order = if round % 2 == 0 {
                [Server::Qcow, Server::QemuNbd]
            } else {
                [Server::QemuNbd, Server::Qcow]
            };
            for server in order {
                let running = Running::start(config, server, image, &socket);
                for workload in WORKLOADS {
                    let sample = measure(config, &running, &socket, size, workload);
                    progress(&format!(
                        "round {} {name}, {}, {}: {:.1} MiB/s, {:.2} CPU s/GiB",
                        round + 1,
                        workload.name(),
                        server.name(),
                        sample.mib_per_second(),
                        sample.cpu_per_gib()
                    ));
                    match results
                        .iter_mut()
                        .find(|(i, w, s, _)| i == name && *w == workload && *s == server)
                    {
                        Some((_, _, _, samples)) => samples.push(sample),
                        None => results.push((name, workload, server, vec![sample])),
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    results
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// The medians as a markdown table: per image and workload, each server's
/// throughput and CPU per GiB, and `qcow serve`'s over `qemu-nbd`'s.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    out.push_str(
        "| image | reader | qcow serve MiB/s | qemu-nbd MiB/s | throughput ratio \
         | qcow serve CPU s/GiB | qemu-nbd CPU s/GiB | CPU ratio |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let medians = |image: &str, workload: Workload, server: Server| {
        let samples = &results
            .iter()
            .find(|(i, w, s, _)| *i == image && *w == workload && *s == server)
            .expect("both servers measured")
            .3;
        (
            median(samples.iter().map(Sample::mib_per_second).collect()),
            median(samples.iter().map(Sample::cpu_per_gib).collect()),
        )
    };
    let mut seen: Vec<(&str, Workload)> = Vec::new();
    for (image, workload, _, _) in results {
        if seen.contains(&(*image, *workload)) {
            continue;
        }
        seen.push((image, *workload));
        let (ours, our_cpu) = medians(image, *workload, Server::Qcow);
        let (theirs, their_cpu) = medians(image, *workload, Server::QemuNbd);
        let _ = writeln!(
            out,
            "| {image} | {} | {ours:.1} | {theirs:.1} | {:.2}x | {our_cpu:.2} | {their_cpu:.2} | {:.2}x |",
            workload.name(),
            ours / theirs,
            our_cpu / their_cpu
        );
    }
    out
}
