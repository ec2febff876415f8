//! Benchmarks `qcow` against QEMU's own tools (see
//! [`qcow2_testkit::bench_compare`] for the settings):
//! `benches/compare.sh` runs `cargo run --release -p qcow2-testkit --bin
//! bench-compare`. `bench-compare --parallel-dd FILE OUT STREAMS` is the
//! copy limit it measures under GNU time.

use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, file, out, streams] if flag == "--parallel-dd" => match streams.parse() {
            Ok(streams) => {
                qcow2_testkit::bench_compare::parallel_dd(Path::new(file), Path::new(out), streams)
            }
            Err(_) => Err(format!(
                "--parallel-dd: {streams} is not a number of streams"
            )),
        },
        [] => std::env::current_exe()
            .map_err(|error| format!("cannot find this program: {error}"))
            .and_then(|exe| {
                let root = qcow2_testkit::workspace_root();
                let root = root.canonicalize().unwrap_or_else(|_| PathBuf::from(root));
                qcow2_testkit::bench_compare::run(&root, &exe)
            }),
        _ => {
            Err("usage: bench-compare (settings in the environment, see benches/compare.sh)".into())
        }
    };
    if let Err(error) = result {
        eprintln!("bench-compare: {error}");
        std::process::exit(1);
    }
}
