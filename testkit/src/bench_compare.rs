//! Benchmarks `qcow` against QEMU's own tools on the same images (the
//! `bench-compare` binary; `benches/compare.sh` runs it).
//!
//! Makes its images with `qemu-img`/`qemu-io` in a tmpfs directory, runs
//! each workload alternating between the tools, `REPS` times, and prints
//! the medians and the ratio to QEMU as a markdown table. Settings come
//! from the environment, as they did for the script this replaces:
//!
//! - `REPS` (5), `BENCH_DIR` (`/dev/shm/qcow-bench`), `SEQ_COUNT` (250000),
//!   `RAND_COUNT` (100000), `THREADS` (qcow convert's default: the CPUs,
//!   at most 4), `JSON_OUT` (`target/bench/compare-DATE.json`);
//! - `ONLY`: the rows whose key word contains one of these `|`-separated
//!   words (`allocated`, `deflate`, `zstd`, `luks`, `seq`, `strided`,
//!   `random`, `memory`, `firmware`);
//! - `QCOW` (a built `qcow`; otherwise `target/release/qcow` is built);
//!   `QCOW_ALT`, named `QCOW_ALT_NAME` (`alt`): a second `qcow` measured in
//!   the same alternation on the rows whose label contains one of the
//!   `|`-separated words of `ALT_ROWS` (every row when unset): a
//!   before/after comparison of two commits on the same images.
//!   `RUZSTD=1` builds the ruzstd variant as that second tool, on the zstd
//!   rows;
//! - `FIRMWARE_TARGETS` (`x86_64-unknown-none`), `FIRMWARE_RUNS` (2).
//!
//! Every convert row is also measured against the copy limit: the image's
//! raw source copied by as many parallel `dd` streams as convert uses
//! threads. Each tool's CPU time (user + sys, from GNU time) is reported
//! next to its wall time: on a shared machine it is the steadier of the
//! two. The results are also written as JSON, from which
//! [`crate::readme_table`] makes README's table.
//!
//! Needs `qemu-img`, `qemu-io`, GNU time (`/usr/bin/time`), `dd` and about
//! 12 GiB of tmpfs. The images stay in `BENCH_DIR` for the next run (making
//! them takes about a minute). `qemu-img bench` has no random pattern in
//! QEMU 7.2, so the random rows compare with its strided reads.

use base64::Engine;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The median of `values` as the script's `sort -g | awk` gave it: the
/// middle value as written for an odd count, the mean of the two middle
/// ones with 4 decimals for an even count; `None` when empty.
pub fn median(values: &[&str]) -> Option<String> {
    let mut sorted: Vec<(f64, &str)> = values
        .iter()
        .map(|value| (value.parse().unwrap_or(0.0), *value))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = sorted.len();
    match count {
        0 => None,
        _ if count % 2 == 1 => Some(sorted[count / 2].1.to_string()),
        _ => Some(format!(
            "{:.4}",
            (sorted[count / 2 - 1].0 + sorted[count / 2].0) / 2.0
        )),
    }
}

/// `a / b` as `0.73x`, `-` when `b` is not positive.
pub fn ratio(a: &str, b: &str) -> String {
    let (a, b): (f64, f64) = (a.parse().unwrap_or(0.0), b.parse().unwrap_or(0.0));
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// A median as a JSON number (as `jq --argjson` read it).
fn number(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// One run of a measured command: wall seconds, CPU seconds (user + sys,
/// children included) and peak RSS in KiB, as text with the precision the
/// tables print.
#[derive(Clone, Debug)]
pub struct Sample {
    wall: String,
    cpu: String,
    rss: String,
}

impl Sample {
    /// From GNU time's `%e %U %S %M` line.
    pub fn parse(line: &str) -> Option<Sample> {
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [wall, user, sys, rss] = fields[..] else {
            return None;
        };
        Some(Sample {
            wall: format!("{wall:.4}"),
            cpu: format!("{:.4}", user + sys),
            rss: format!("{}", rss as u64),
        })
    }
}

/// The medians of samples' wall time, CPU time and RSS.
struct Medians {
    wall: String,
    cpu: String,
    rss: String,
}

impl Medians {
    fn of(samples: &[Sample]) -> Option<Medians> {
        let field = |get: fn(&Sample) -> &str| median(&samples.iter().map(get).collect::<Vec<_>>());
        Some(Medians {
            wall: field(|sample| &sample.wall)?,
            cpu: field(|sample| &sample.cpu)?,
            rss: field(|sample| &sample.rss)?,
        })
    }
}

/// The settings of a run, from the environment.
struct Settings {
    reps: usize,
    bench_dir: PathBuf,
    seq_count: u64,
    rand_count: u64,
    only: Option<String>,
    alt_rows: Option<String>,
    alt: Option<(PathBuf, String)>,
    threads: usize,
    json_out: PathBuf,
    qcow: PathBuf,
    root: PathBuf,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match env(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("{name}={text} is not a number")),
    }
}

/// Whether `text` contains one of the `|`-separated words of `words`.
fn matches(words: &str, text: &str) -> bool {
    words.split('|').any(|word| text.contains(word))
}

fn log(message: &str) {
    eprintln!("{message}");
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn status(command: &mut Command, what: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {what}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// The first line `program ARGS` prints, or `None` when it fails.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

impl Settings {
    fn from_env(root: &Path) -> Result<Settings, String> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut alt = env("QCOW_ALT").map(|path| {
            (
                PathBuf::from(path),
                env("QCOW_ALT_NAME").unwrap_or_else(|| "alt".into()),
            )
        });
        let mut alt_rows = env("ALT_ROWS").filter(|rows| rows != ".");
        if env("RUZSTD").is_some() {
            // The same tool with ruzstd instead of libzstd, as a second qcow column.
            log("building qcow with ruzstd (release)");
            status(
                cargo()
                    .args(["build", "--quiet", "--release", "-p", "qcow2-cli"])
                    .args(["--no-default-features", "--manifest-path"])
                    .arg(root.join("Cargo.toml")),
                "cargo build (ruzstd)",
            )?;
            let ruzstd = root.join("target/release/qcow-ruzstd");
            std::fs::copy(root.join("target/release/qcow"), &ruzstd)
                .map_err(|error| format!("{}: {error}", ruzstd.display()))?;
            alt = Some((ruzstd, "ruzstd".into()));
            alt_rows = Some("zstd".into());
        }
        let qcow = match env("QCOW") {
            Some(qcow) => PathBuf::from(qcow),
            None => {
                log("building qcow (release)");
                status(
                    cargo()
                        .args(["build", "--quiet", "--release", "-p", "qcow2-cli"])
                        .arg("--manifest-path")
                        .arg(root.join("Cargo.toml")),
                    "cargo build",
                )?;
                root.join("target/release/qcow")
            }
        };
        let json_out = match env("JSON_OUT") {
            Some(path) => PathBuf::from(path),
            None => root.join(format!(
                "target/bench/compare-{}.json",
                first_line("date", &["-u", "+%Y%m%dT%H%M%SZ"]).unwrap_or_default()
            )),
        };
        let json_out = std::path::absolute(&json_out)
            .map_err(|error| format!("{}: {error}", json_out.display()))?;
        Ok(Settings {
            reps: env_number("REPS", 5)?,
            bench_dir: env("BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/dev/shm/qcow-bench".into()),
            seq_count: env_number("SEQ_COUNT", 250_000)?,
            rand_count: env_number("RAND_COUNT", 100_000)?,
            only: env("ONLY"),
            alt_rows,
            alt,
            threads: env_number("THREADS", cpus.min(4))?,
            json_out,
            qcow: std::path::absolute(&qcow).unwrap_or(qcow),
            root: root.to_path_buf(),
        })
    }

    /// Whether the rows named by `word` are to run.
    fn want(&self, word: &str) -> bool {
        self.only.as_deref().is_none_or(|only| matches(only, word))
    }

    /// The second build, when it is to run on the row labelled `label`.
    fn alt_for(&self, label: &str) -> Option<&(PathBuf, String)> {
        let rows_match = self
            .alt_rows
            .as_deref()
            .is_none_or(|rows| matches(rows, label));
        self.alt.as_ref().filter(|_| rows_match)
    }
}

/// Runs the benchmark: the whole of what `benches/compare.sh` did. `root` is
/// the workspace; `self_exe` is this program (run under GNU time for the
/// copy limit, see [`parallel_dd`]).
pub fn run(root: &Path, self_exe: &Path) -> Result<(), String> {
    let settings = Settings::from_env(root)?;
    for tool in ["qemu-img", "qemu-io", "/usr/bin/time", "dd"] {
        let found = if tool.starts_with('/') {
            Path::new(tool).is_file()
        } else {
            crate::host::found(tool)
        };
        if !found {
            return Err(format!(
                "missing {tool} (apt-get install qemu-utils time coreutils)"
            ));
        }
    }
    if let Some(parent) = settings.json_out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("{}: {error}", parent.display()))?;
    }
    std::fs::create_dir_all(&settings.bench_dir)
        .map_err(|error| format!("{}: {error}", settings.bench_dir.display()))?;
    let mut bench = Bench {
        settings,
        self_exe: self_exe.to_path_buf(),
        rows: Vec::new(),
        json_rows: Vec::new(),
    };
    let result = bench.run();
    for leftover in [
        "out-qcow.raw",
        "out-qemu.raw",
        "out-dd.raw",
        "out-alt.raw",
        "out-big.raw",
        "out-small.raw",
        "time.txt",
    ] {
        let _ = std::fs::remove_file(bench.settings.bench_dir.join(leftover));
    }
    result
}

/// A run in progress: the settings and the rows so far.
struct Bench {
    settings: Settings,
    self_exe: PathBuf,
    rows: Vec<String>,
    json_rows: Vec<Value>,
}

/// A command measured by GNU time, in the bench directory.
struct Measured<'a> {
    program: &'a Path,
    args: Vec<String>,
}

impl<'a> Measured<'a> {
    fn new(program: &'a Path, args: &[&str]) -> Measured<'a> {
        Measured {
            program,
            args: args.iter().map(|arg| arg.to_string()).collect(),
        }
    }
}

impl Bench {
    fn dir(&self) -> &Path {
        &self.settings.bench_dir
    }

    fn exists(&self, name: &str) -> bool {
        self.dir().join(name).exists()
    }

    /// Runs `program args` in the bench directory, quietly; an error
    /// names it.
    fn tool(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let output = Command::new(program)
            .current_dir(self.dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {program}: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim_end()
            ))
        }
    }

    /// Makes `name` by `make(temporary name)` unless it exists.
    fn made(
        &self,
        name: &str,
        make: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<(), String> {
        if self.exists(name) {
            return Ok(());
        }
        let tmp = format!("{name}.tmp");
        make(&tmp)?;
        std::fs::rename(self.dir().join(&tmp), self.dir().join(name))
            .map_err(|error| format!("{name}: {error}"))
    }

    fn make_images(&self) -> Result<(), String> {
        // Compressible, non-uniform data: base64 of random bytes (deflate keeps ~75%).
        self.made("src.raw", |tmp| {
            log(&format!("making images in {}", self.dir().display()));
            let mut random = vec![0; 768 << 20];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut urandom| std::io::Read::read_exact(&mut urandom, &mut random))
                .map_err(|error| format!("/dev/urandom: {error}"))?;
            // `base64 -w 0`: standard alphabet, no line breaks.
            let mut text = base64::engine::general_purpose::STANDARD.encode(&random);
            text.truncate(1 << 30);
            std::fs::write(self.dir().join(tmp), text).map_err(|error| format!("{tmp}: {error}"))
        })?;
        self.made("full.qcow2", |tmp| {
            self.tool(
                "qemu-img",
                &[
                    "convert",
                    "-O",
                    "qcow2",
                    "-o",
                    "cluster_size=64k",
                    "src.raw",
                    tmp,
                ],
            )
        })?;
        // Text: the C headers of this machine, repeated to 1 GiB (zstd keeps ~20%).
        self.made("text.raw", |tmp| {
            let mut headers = Vec::new();
            collect_headers(Path::new("/usr/include"), &mut headers);
            headers.sort_by(|a, b| {
                a.as_os_str()
                    .as_encoded_bytes()
                    .cmp(b.as_os_str().as_encoded_bytes())
            });
            let mut once = Vec::new();
            for header in &headers {
                once.extend(std::fs::read(header).unwrap_or_default());
            }
            if once.is_empty() {
                return Err("no C headers in /usr/include for the text image".into());
            }
            let text: Vec<u8> = once.iter().copied().cycle().take(1 << 30).collect();
            std::fs::write(self.dir().join(tmp), text).map_err(|error| format!("{tmp}: {error}"))
        })?;
        for codec in ["zlib", "zstd"] {
            let options = format!("cluster_size=64k,compression_type={codec}");
            for (source, name) in [
                ("src.raw", format!("{codec}.qcow2")),
                ("text.raw", format!("text-{codec}.qcow2")),
            ] {
                self.made(&name, |tmp| {
                    self.tool(
                        "qemu-img",
                        &["convert", "-c", "-O", "qcow2", "-o", &options, source, tmp],
                    )
                })?;
            }
        }
        if self.settings.want("seq")
            || self.settings.want("strided")
            || self.settings.want("random")
        {
            self.made("big.qcow2", |tmp| {
                self.tool(
                    "qemu-img",
                    &[
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-o",
                        "cluster_size=64k",
                        tmp,
                        "4G",
                    ],
                )?;
                // qemu-io takes at most 2 GiB per request.
                self.tool(
                    "qemu-io",
                    &[
                        "-c",
                        "write -P 0x5a 0 1G",
                        "-c",
                        "write -P 0x5b 1G 1G",
                        "-c",
                        "write -P 0x5c 2G 1G",
                        "-c",
                        "write -P 0x5d 3G 1G",
                        tmp,
                    ],
                )
            })?;
        }
        if !self.settings.want("memory") {
            return Ok(());
        }
        self.made("sparse2t.qcow2", |tmp| {
            self.tool("qemu-img", &["create", "-q", "-f", "qcow2", tmp, "2T"])?;
            self.tool(
                "qemu-io",
                &["-c", "write -P 1 0 8M", "-c", "write -P 2 1T 8M", tmp],
            )
        })?;
        self.made("small16m.qcow2", |tmp| {
            self.tool("qemu-img", &["create", "-q", "-f", "qcow2", tmp, "16M"])?;
            self.tool("qemu-io", &["-c", "write -P 1 0 16M", tmp])
        })
    }

    /// One run of a command under GNU time (its output discarded).
    fn measure(&self, command: &Measured) -> Result<Sample, String> {
        let time_file = self.dir().join("time.txt");
        let status = Command::new("/usr/bin/time")
            .current_dir(self.dir())
            .args(["-f", "%e %U %S %M", "-o"])
            .arg(&time_file)
            .arg(command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|error| format!("cannot run /usr/bin/time: {error}"))?;
        let what = || format!("{} {}", command.program.display(), command.args.join(" "));
        if !status.success() {
            return Err(format!("failed: {}", what()));
        }
        let times =
            std::fs::read_to_string(&time_file).map_err(|error| format!("time.txt: {error}"))?;
        // The last line: GNU time puts a note about a signal before it.
        times
            .lines()
            .last()
            .and_then(Sample::parse)
            .ok_or_else(|| format!("GNU time's output for {} not understood: {times:?}", what()))
    }

    fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir().join(name));
    }

    fn run(&mut self) -> Result<(), String> {
        let settings = &self.settings;
        // The firmware row reads its own demo image: no need for the big ones.
        if settings.only.as_deref() != Some("firmware") {
            self.make_images()?;
        }
        let started = std::time::Instant::now();
        let date_utc = first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
        let load_before = load_average();
        if let Some(only) = &self.settings.only {
            log(&format!("only rows matching: {only}"));
        }
        let (seq, rand) = (self.settings.seq_count, self.settings.rand_count);
        let want = |word: &str| self.settings.want(word);
        let (allocated, deflate, zstd, luks) = (
            want("allocated"),
            want("deflate"),
            want("zstd"),
            want("luks"),
        );
        let (want_seq, strided, random, memory, firmware) = (
            want("seq"),
            want("strided"),
            want("random"),
            want("memory"),
            want("firmware"),
        );
        if allocated {
            self.convert(
                "convert 1 GiB, 64 KiB clusters, all allocated",
                "full.qcow2",
                "src.raw",
            )?;
        }
        if deflate {
            self.convert("convert 1 GiB, deflate-compressed", "zlib.qcow2", "src.raw")?;
        }
        if zstd {
            self.convert("convert 1 GiB, zstd-compressed", "zstd.qcow2", "src.raw")?;
            self.convert(
                "convert 1 GiB, zstd-compressed, text (C headers)",
                "text-zstd.qcow2",
                "text.raw",
            )?;
        }
        if deflate {
            self.convert(
                "convert 1 GiB, deflate-compressed, text (C headers)",
                "text-zlib.qcow2",
                "text.raw",
            )?;
        }
        if luks {
            self.convert_luks("convert 1 GiB, LUKS aes-256-xts")?;
        }
        let strided_step = ["-S", "1052672"];
        for cache in ["1M", "64K"] {
            if want_seq {
                self.reads(&format!("4 KiB seq reads x{seq}"), cache, seq, &[], &[])?;
            }
        }
        for cache in ["1M", "64K"] {
            if strided {
                let label = format!("4 KiB strided reads (step 1 MiB + 4 KiB) x{rand}");
                self.reads(&label, cache, rand, &strided_step, &strided_step)?;
            }
        }
        for cache in ["1M", "64K"] {
            if random {
                let label =
                    format!("4 KiB random reads x{rand} (qemu: strided, it has no random pattern)");
                self.reads(&label, cache, rand, &["--pattern", "random"], &strided_step)?;
            }
        }
        if memory {
            self.memory()?;
        }
        if firmware {
            self.firmware()?;
        }
        let elapsed = started.elapsed().as_secs();
        let load_after = load_average();
        let settings = &self.settings;
        let qemu_version = first_line("qemu-img", &["--version"]).unwrap_or_default();
        let cpu_model = Command::new("lscpu")
            .output()
            .ok()
            .and_then(|output| {
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .find_map(|line| line.strip_prefix("Model name:"))
                    .map(|model| model.trim().to_string())
            })
            .unwrap_or_default();
        let mem_gib = memory_gib();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = settings.threads;
        println!();
        println!(
            "Medians of {} alternating runs; ratio = qcow / QEMU (below 1 is faster). {qemu_version}.",
            settings.reps
        );
        println!(
            "Machine: {cpus} CPUs, {cpu_model}, {mem_gib} GiB RAM; images on tmpfs; {date_utc};"
        );
        println!("load average {load_before} before, {load_after} after. Limit: the raw file copied by {threads} parallel dd streams (convert uses {threads} threads).");
        println!();
        println!(
            "| workload | qcow | QEMU | qcow/QEMU | qcow CPU | QEMU CPU | limit | qcow/limit |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            println!("{row}");
        }
        println!();
        println!("Run time (without image creation): {elapsed} s.");
        let qcow_version = first_line(&settings.qcow.to_string_lossy(), &["--version"])
            .unwrap_or_else(|| settings.qcow.display().to_string());
        let results = json!({
            "date": date_utc,
            "machine": {
                "cpus": cpus,
                "cpu": cpu_model,
                "memory_gib": mem_gib,
                "load_average_before": load_before,
                "load_average_after": load_after,
            },
            "qemu": qemu_version,
            "qcow": qcow_version,
            "reps": settings.reps,
            "convert_threads": threads,
            "run_seconds": elapsed,
            "rows": self.json_rows,
        });
        let text = serde_json::to_string_pretty(&results).expect("JSON values print") + "\n";
        std::fs::write(&settings.json_out, text)
            .map_err(|error| format!("{}: {error}", settings.json_out.display()))?;
        log(&format!(
            "results: {} (`cargo run -p qcow2-testkit --bin readme-table -- FILE` makes README's table from it)",
            settings.json_out.display()
        ));
        Ok(())
    }

    /// The copy limit of `raw`, as a command GNU time can run.
    fn limit_copy<'a>(&'a self, raw: &str) -> Measured<'a> {
        let threads = self.settings.threads.to_string();
        Measured::new(
            &self.self_exe,
            &["--parallel-dd", raw, "out-dd.raw", &threads],
        )
    }

    /// The table row and JSON of a convert workload.
    fn convert_row(
        &mut self,
        label: &str,
        qcow: &[Sample],
        qemu: &[Sample],
        limit: &[Sample],
        alt: &[Sample],
    ) {
        let (q, m, l) = (
            Medians::of(qcow).expect("REPS >= 1"),
            Medians::of(qemu).expect("REPS >= 1"),
            Medians::of(limit).expect("REPS >= 1"),
        );
        let alt_fields = self.alt_fields(alt);
        self.rows.push(format!(
            "| {label}{} | {} s | {} s | {} | {} s | {} s | {} s | {} |",
            alt_label(&alt_fields),
            q.wall,
            m.wall,
            ratio(&q.wall, &m.wall),
            q.cpu,
            m.cpu,
            l.wall,
            ratio(&q.wall, &l.wall)
        ));
        let mut values = json!({
            "workload": label,
            "kind": "convert",
            "qcow_s": number(&q.wall),
            "qcow_cpu_s": number(&q.cpu),
            "qemu_s": number(&m.wall),
            "qemu_cpu_s": number(&m.cpu),
            "limit_s": number(&l.wall),
            "limit_cpu_s": number(&l.cpu),
        });
        values
            .as_object_mut()
            .expect("an object")
            .extend(alt_fields);
        self.json_rows.push(values);
    }

    /// The JSON fields of the second build's medians.
    fn alt_fields(&self, alt: &[Sample]) -> Map<String, Value> {
        let fields = match (Medians::of(alt), &self.settings.alt) {
            (Some(medians), Some((_, name))) => json!({
                "alt_name": name,
                "alt_s": number(&medians.wall),
                "alt_cpu_s": number(&medians.cpu),
            }),
            _ => json!({"alt_name": null, "alt_s": null, "alt_cpu_s": null}),
        };
        match fields {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object"),
        }
    }

    /// Whole-disk read to a raw file in the same tmpfs directory,
    /// alternating qcow, QEMU and the copy limit of the image's raw source.
    fn convert(&mut self, label: &str, image: &str, raw: &str) -> Result<(), String> {
        log(&format!("convert: {label}"));
        let alt = self.settings.alt_for(label).cloned();
        let threads = self.settings.threads.to_string();
        let (mut qcow, mut qemu, mut limit, mut alt_samples) = (vec![], vec![], vec![], vec![]);
        let qemu_img = PathBuf::from("qemu-img");
        for _ in 0..self.settings.reps {
            let convert = ["convert", "--threads", &threads, image, "out-qcow.raw"];
            qcow.push(self.measure(&Measured::new(&self.settings.qcow, &convert))?);
            self.remove("out-qcow.raw");
            qemu.push(self.measure(&Measured::new(
                &qemu_img,
                &["convert", "-O", "raw", image, "out-qemu.raw"],
            ))?);
            self.remove("out-qemu.raw");
            limit.push(self.measure(&self.limit_copy(raw))?);
            self.remove("out-dd.raw");
            if let Some((alt_qcow, _)) = &alt {
                let convert = ["convert", "--threads", &threads, image, "out-alt.raw"];
                alt_samples.push(self.measure(&Measured::new(alt_qcow, &convert))?);
                self.remove("out-alt.raw");
            }
        }
        self.convert_row(label, &qcow, &qemu, &limit, &alt_samples);
        Ok(())
    }

    /// The whole-disk read of a LUKS (aes-256-xts, QEMU's default) copy of
    /// src.raw, both tools given the same passphrase file. iter-time is
    /// small: the row measures the decryption, not PBKDF2.
    fn convert_luks(&mut self, label: &str) -> Result<(), String> {
        let secret = "secret,id=sec0,file=luks.pass";
        let opts = "driver=qcow2,encrypt.key-secret=sec0,file.filename=luks.qcow2";
        let pass = self.dir().join("luks.pass");
        std::fs::write(&pass, "qcow2-reader bench")
            .map_err(|error| format!("{}: {error}", pass.display()))?;
        if !self.exists("luks.qcow2") {
            log("making luks.qcow2");
        }
        self.made("luks.qcow2", |tmp| {
            self.tool(
                "qemu-img",
                &[
                    "convert", "-O", "qcow2", "--object", secret, "-o",
                    "cluster_size=64k,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
                    "src.raw", tmp,
                ],
            )
        })?;
        log(&format!("convert: {label}"));
        let mut alt = self.settings.alt_for(label).cloned();
        if let Some((alt_qcow, name)) = &alt {
            let help = Command::new(alt_qcow).args(["convert", "--help"]).output();
            let has_passphrase = help.is_ok_and(|output| {
                String::from_utf8_lossy(&output.stdout).contains("--passphrase-file")
            });
            if !has_passphrase {
                log(&format!(
                    "{name} has no --passphrase-file: not measured on this row"
                ));
                alt = None;
            }
        }
        let threads = self.settings.threads.to_string();
        let (mut qcow, mut qemu, mut limit, mut alt_samples) = (vec![], vec![], vec![], vec![]);
        let qemu_img = PathBuf::from("qemu-img");
        for _ in 0..self.settings.reps {
            let convert = |out| {
                [
                    "convert",
                    "--threads",
                    &threads,
                    "--passphrase-file",
                    "luks.pass",
                    "luks.qcow2",
                    out,
                ]
            };
            qcow.push(self.measure(&Measured::new(
                &self.settings.qcow,
                &convert("out-qcow.raw"),
            ))?);
            self.remove("out-qcow.raw");
            let qemu_args = [
                "convert",
                "--object",
                secret,
                "--image-opts",
                opts,
                "-O",
                "raw",
                "out-qemu.raw",
            ];
            qemu.push(self.measure(&Measured::new(&qemu_img, &qemu_args))?);
            self.remove("out-qemu.raw");
            limit.push(self.measure(&self.limit_copy("src.raw"))?);
            self.remove("out-dd.raw");
            if let Some((alt_qcow, _)) = &alt {
                alt_samples.push(self.measure(&Measured::new(alt_qcow, &convert("out-alt.raw")))?);
                self.remove("out-alt.raw");
            }
        }
        self.convert_row(label, &qcow, &qemu, &limit, &alt_samples);
        Ok(())
    }

    /// 4 KiB reads: qcow bench vs qemu-img bench -d 1 on the 4 GiB image.
    fn reads(
        &mut self,
        label: &str,
        cache: &str,
        count: u64,
        qcow_args: &[&str],
        qemu_args: &[&str],
    ) -> Result<(), String> {
        log(&format!("reads: {label}, L2 cache {cache}"));
        let label = format!("{label}, L2 cache {cache}");
        let alt = self.settings.alt_for(&label).cloned();
        let opts = format!("driver=qcow2,file.filename=big.qcow2,l2-cache-size={cache}");
        let count = count.to_string();
        let mut qcow_bench = vec!["bench", "-c", &count, "-s", "4K", "--l2-cache-size", cache];
        qcow_bench.extend(qcow_args);
        qcow_bench.push("big.qcow2");
        let mut qemu_bench = vec!["bench", "-d", "1", "-c", &count, "-s", "4K"];
        qemu_bench.extend(qemu_args);
        qemu_bench.extend(["--image-opts", &opts]);
        let qemu_img = PathBuf::from("qemu-img");
        let (mut qcow, mut qemu, mut alt_samples) = (vec![], vec![], vec![]);
        for _ in 0..self.settings.reps {
            qcow.push(self.measure(&Measured::new(&self.settings.qcow, &qcow_bench))?);
            qemu.push(self.measure(&Measured::new(&qemu_img, &qemu_bench))?);
            if let Some((alt_qcow, _)) = &alt {
                alt_samples.push(self.measure(&Measured::new(alt_qcow, &qcow_bench))?);
            }
        }
        let (q, m) = (
            Medians::of(&qcow).expect("REPS >= 1"),
            Medians::of(&qemu).expect("REPS >= 1"),
        );
        let alt_fields = self.alt_fields(&alt_samples);
        self.rows.push(format!(
            "| {label}{} | {} s | {} s | {} | {} s | {} s | - | - |",
            alt_label(&alt_fields),
            q.wall,
            m.wall,
            ratio(&q.wall, &m.wall),
            q.cpu,
            m.cpu
        ));
        let mut values = json!({
            "workload": label,
            "kind": "reads",
            "qcow_s": number(&q.wall),
            "qcow_cpu_s": number(&q.cpu),
            "qemu_s": number(&m.wall),
            "qemu_cpu_s": number(&m.cpu),
        });
        values
            .as_object_mut()
            .expect("an object")
            .extend(alt_fields);
        self.json_rows.push(values);
        Ok(())
    }

    /// Peak memory of a whole-disk read of a 2 TiB sparse image against a 16 MiB one.
    fn memory(&mut self) -> Result<(), String> {
        log("memory: 2 TiB sparse vs 16 MiB");
        let qemu_img = PathBuf::from("qemu-img");
        let (mut big, mut small, mut qemu_big) = (vec![], vec![], vec![]);
        for _ in 0..self.settings.reps {
            big.push(self.measure(&Measured::new(
                &self.settings.qcow,
                &["convert", "sparse2t.qcow2", "out-big.raw"],
            ))?);
            self.remove("out-big.raw");
            small.push(self.measure(&Measured::new(
                &self.settings.qcow,
                &["convert", "small16m.qcow2", "out-small.raw"],
            ))?);
            self.remove("out-small.raw");
            qemu_big.push(self.measure(&Measured::new(
                &qemu_img,
                &["convert", "-O", "raw", "sparse2t.qcow2", "out-qemu.raw"],
            ))?);
            self.remove("out-qemu.raw");
        }
        let mb = Medians::of(&big).expect("REPS >= 1").rss;
        let ms = Medians::of(&small).expect("REPS >= 1").rss;
        let mq = Medians::of(&qemu_big).expect("REPS >= 1").rss;
        self.rows.push(format!(
            "| peak RSS, convert 2 TiB sparse (16 MiB image: {ms} KiB) | {mb} KiB | {mq} KiB | {} | - | - | - | - |",
            ratio(&mb, &mq)
        ));
        self.json_rows.push(json!({
            "workload": "peak RSS, convert 2 TiB sparse",
            "kind": "memory",
            "qcow_kib": number(&mb),
            "qcow_small_kib": number(&ms),
            "qemu_kib": number(&mq),
        }));
        Ok(())
    }

    /// The firmware's qcow2 read against a raw read of the same virtio
    /// disk, on the default demo image under QEMU TCG: the release firmware
    /// is booted `FIRMWARE_RUNS` times per target of `FIRMWARE_TARGETS`.
    /// The interleaving of qcow2 and raw passes happens inside the
    /// firmware; each boot prints, per queue depth, the best pass of each
    /// read and the median and spread of the per-pass ratios.
    fn firmware(&mut self) -> Result<(), String> {
        let runs: usize = env_number("FIRMWARE_RUNS", 2)?;
        let targets = env("FIRMWARE_TARGETS").unwrap_or_else(|| "x86_64-unknown-none".into());
        let firmware = self.settings.root.join("firmware");
        for target in targets.split_whitespace() {
            log(&format!("firmware: {target}, {runs} boots"));
            status(
                cargo().current_dir(&firmware).args([
                    "build",
                    "--quiet",
                    "--release",
                    "--target",
                    target,
                ]),
                "cargo build (firmware)",
            )?;
            let elf = firmware
                .join("target")
                .join(target)
                .join("release/qcow2-firmware");
            let (mut depth1, mut queued) = (vec![], vec![]);
            for _ in 0..runs {
                let output = Command::new(firmware.join("run.sh"))
                    .arg(&elf)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|error| format!("cannot run firmware/run.sh: {error}"))?;
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text += &String::from_utf8_lossy(&output.stderr);
                if !output.status.success() {
                    return Err(format!("firmware run failed: {text}"));
                }
                let depths = firmware_depths(&text);
                let [first, second] = <[Value; 2]>::try_from(depths)
                    .map_err(|_| format!("firmware output not understood: {text}"))?;
                depth1.push(first);
                queued.push(second);
            }
            let label = format!(
                "firmware {target} (QEMU TCG), 64 MiB demo image: qcow2/raw read throughput"
            );
            for runs in [&depth1, &queued] {
                // Per run: "median (min-max)", and the best passes' MB/s.
                let ratios = runs
                    .iter()
                    .map(|run| {
                        format!(
                            "{:.2} ({:.2}-{:.2})",
                            run["median"].as_f64().unwrap_or(0.0),
                            run["min"].as_f64().unwrap_or(0.0),
                            run["max"].as_f64().unwrap_or(0.0)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let joined = |key: &str| {
                    runs.iter()
                        .map(|run| run[key].to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                self.rows.push(format!(
                    "| {label}, queue depth {}, median (spread) per run: {ratios} | {} MB/s | raw {} MB/s | - | - | - | - | - |",
                    runs[0]["depth"],
                    joined("qcow2_mb_s"),
                    joined("raw_mb_s")
                ));
            }
            self.json_rows.push(json!({
                "workload": label,
                "kind": "firmware",
                "target": target,
                "depth1": depth1,
                "queued": queued,
            }));
        }
        Ok(())
    }
}

/// The label suffix naming the second build's medians (numbers as JSON
/// prints them), or nothing.
fn alt_label(fields: &Map<String, Value>) -> String {
    match fields.get("alt_name") {
        Some(Value::String(name)) => format!(
            " ({name}: {} s, CPU {} s)",
            fields["alt_s"], fields["alt_cpu_s"]
        ),
        _ => String::new(),
    }
}

/// One JSON object per queue depth, `{depth, qcow2_mb_s, raw_mb_s, median,
/// min, max}`, from the firmware's "queue depth N:" blocks (the serial
/// console ends lines with CR LF).
pub fn firmware_depths(output: &str) -> Vec<Value> {
    let (mut depth, mut qcow2, mut raw) = (Value::Null, Value::Null, Value::Null);
    let mut depths = Vec::new();
    for line in output.lines().map(|line| line.trim_end_matches('\r')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(rest) = line.strip_prefix("  queue depth ") {
            if let Some(number) = rest
                .strip_suffix(':')
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                depth = number.parse::<u64>().map_or(Value::Null, Value::from);
            }
        } else if line.starts_with("    qcow2 read:") {
            qcow2 = words.get(2).map_or(Value::Null, |word| number(word));
        } else if line.starts_with("    raw read:") {
            raw = words.get(2).map_or(Value::Null, |word| number(word));
        } else if line.starts_with("    qcow2/raw per pass:") {
            let field = |index: usize| {
                words
                    .get(index)
                    .map_or(Value::Null, |word| number(word.trim_end_matches(',')))
            };
            depths.push(json!({
                "depth": depth,
                "qcow2_mb_s": qcow2,
                "raw_mb_s": raw,
                "median": field(4),
                "min": field(6),
                "max": field(8),
            }));
        }
    }
    depths
}

/// The copy limit: `file` copied to `out` by `streams` parallel `dd`
/// processes, each taking an equal share of the bytes (what `streams`
/// threads of convert may at best reach on this storage). The benchmark
/// runs it as `bench-compare --parallel-dd FILE OUT STREAMS` under GNU
/// time, which counts the children's CPU time.
pub fn parallel_dd(file: &Path, out: &Path, streams: u64) -> Result<(), String> {
    let size = std::fs::metadata(file)
        .map_err(|error| format!("{}: {error}", file.display()))?
        .len();
    let streams = streams.max(1);
    let share = size.div_ceil(streams);
    let children: Vec<_> = (0..streams)
        .map(|index| {
            Command::new("dd")
                .arg(format!("if={}", file.display()))
                .arg(format!("of={}", out.display()))
                .args([
                    "bs=1M",
                    "iflag=skip_bytes,count_bytes",
                    "oflag=seek_bytes",
                    "conv=notrunc",
                ])
                .arg(format!("skip={}", index * share))
                .arg(format!("seek={}", index * share))
                .arg(format!("count={share}"))
                .arg("status=none")
                .spawn()
                .map_err(|error| format!("cannot run dd: {error}"))
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        let status = child.wait().map_err(|error| format!("dd: {error}"))?;
        if !status.success() {
            return Err(format!("dd failed ({status})"));
        }
    }
    Ok(())
}

/// The first three fields of /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Total memory in GiB, rounded down as `free -g` shows it.
fn memory_gib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib >> 20)
}

/// Every `*.h` file under `dir` (unreadable directories skipped).
fn collect_headers(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => collect_headers(&path, into),
            Ok(kind) if kind.is_file() && path.extension().is_some_and(|ext| ext == "h") => {
                into.push(path)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_odd_count_is_the_middle_value_as_written() {
        assert_eq!(
            median(&["0.5000", "0.1000", "0.3000"]).as_deref(),
            Some("0.3000")
        );
        assert_eq!(median(&["6400"]).as_deref(), Some("6400"));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two_with_4_decimals() {
        assert_eq!(
            median(&["0.4000", "0.1000", "0.2000", "0.9000"]).as_deref(),
            Some("0.3000")
        );
        assert_eq!(median(&["6312", "6400"]).as_deref(), Some("6356.0000"));
    }

    #[test]
    fn ratio_has_two_decimals_and_a_dash_without_a_positive_divisor() {
        assert_eq!(ratio("0.4500", "0.6200"), "0.73x");
        assert_eq!(ratio("1", "0"), "-");
    }

    #[test]
    fn gnu_time_line_gives_wall_cpu_and_rss() {
        let sample = Sample::parse("0.45 0.60 0.29 6400").expect("understood");
        assert_eq!(
            (
                sample.wall.as_str(),
                sample.cpu.as_str(),
                sample.rss.as_str()
            ),
            ("0.4500", "0.8900", "6400")
        );
        assert!(Sample::parse("Command exited with non-zero status 1").is_none());
    }

    #[test]
    fn firmware_blocks_are_read_per_queue_depth() {
        let output = "  queue depth 1:\r\n    qcow2 read: 4974 MB/s (224 device requests)\r\n    raw read:   5386 MB/s (260 device requests)\r\n    qcow2/raw per pass: median 0.93, spread 0.92 to 1.14\r\n  queue depth 5:\r\n    qcow2 read: 4755 MB/s (1 device requests)\r\n    raw read:   4836 MB/s (1 device requests)\r\n    qcow2/raw per pass: median 0.98, spread 0.85 to 1.09\r\n";
        let depths = firmware_depths(output);
        assert_eq!(
            depths,
            vec![
                json!({"depth": 1, "qcow2_mb_s": 4974, "raw_mb_s": 5386, "median": 0.93, "min": 0.92, "max": 1.14}),
                json!({"depth": 5, "qcow2_mb_s": 4755, "raw_mb_s": 4836, "median": 0.98, "min": 0.85, "max": 1.09}),
            ]
        );
    }
}
