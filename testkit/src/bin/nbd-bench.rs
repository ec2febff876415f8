//! `qcow serve` against `qemu-nbd` (`qcow2_testkit::nbd_bench`): prints the
//! machine's state, each sample as it comes, then the table of medians.
//!
//!     cargo build --release -p qcow2-cli
//!     cargo run --release -p qcow2-testkit --bin nbd-bench
//!
//! Environment: `ROUNDS` (3), `SIZE_MIB` (384), `RANDOM_SECONDS` (5),
//! `BENCH_DIR` (`target/nbd-bench`), `QCOW` (`target/release/qcow`).

use std::path::PathBuf;

use qcow2_testkit::nbd_bench::{run_rounds, table, Config};
use qcow2_testkit::{run, workspace_root};

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number"))
    })
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() {
    let root = workspace_root();
    let path = |name: &str, default: PathBuf| std::env::var_os(name).map_or(default, PathBuf::from);
    let config = Config {
        dir: path("BENCH_DIR", root.join("target/nbd-bench")),
        qcow: path("QCOW", root.join("target/release/qcow")),
        rounds: number("ROUNDS", 3) as usize,
        size_mib: number("SIZE_MIB", 384) / 8 * 8,
        random_seconds: number("RANDOM_SECONDS", 5),
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let qemu = run("qemu-nbd", &["--version"]);
    let qemu = String::from_utf8_lossy(&qemu.stdout);
    println!(
        "{cpus} CPUs; load average at start: {}; {}; {} rounds, {} MiB disk, fio runs of {} s",
        load(),
        qemu.lines().next().unwrap_or("qemu-nbd"),
        config.rounds,
        config.size_mib,
        config.random_seconds
    );
    let results = run_rounds(&config, |line| eprintln!("{line}"));
    println!("load average at the end: {}\n", load());
    print!("{}", table(&results));
}
