//! What the decoder CPU measurements share (`tests/zstd_cpu.rs`,
//! `tests/deflate_cpu.rs`): the same data (the machine's C headers and
//! shared libraries), each decoder timed by its thread's own CPU time, and
//! medians over alternating rounds.

use std::fs;
use std::path::Path;

/// The clusters measured: QEMU's default size.
pub const CLUSTER: usize = 64 << 10;
/// Rounds per decoder, alternating.
pub const ROUNDS: usize = 7;

/// The data: up to 32 MiB of `/usr/include`'s headers, then up to 32 MiB
/// of `/usr/lib`'s shared libraries; with the bytes of each.
pub fn headers_and_libraries() -> (Vec<u8>, usize, usize) {
    let mut data = Vec::new();
    corpus(
        Path::new("/usr/include"),
        32 << 20,
        &|p| p.extension().is_some_and(|e| e == "h"),
        &mut data,
    );
    let text = data.len();
    corpus(
        Path::new("/usr/lib"),
        text + (32 << 20),
        &|p| p.to_str().is_some_and(|s| s.contains(".so")),
        &mut data,
    );
    let binary = data.len() - text;
    (data, text, binary)
}

/// Up to `limit` bytes from the regular files under `dir`, in sorted order.
fn corpus(dir: &Path, limit: usize, accept: &dyn Fn(&Path) -> bool, out: &mut Vec<u8>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if out.len() >= limit {
            return;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            corpus(&path, limit, accept, out);
        } else if meta.is_file() && accept(&path) {
            if let Ok(bytes) = fs::read(&path) {
                let take = bytes.len().min(limit - out.len());
                out.extend_from_slice(&bytes[..take]);
            }
        }
    }
}

/// This thread's CPU time so far, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let stat = fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("first field: CPU time in ns")
}

/// Decodes every stream once into a cluster with `decode`; returns the
/// thread's CPU time for it, in nanoseconds.
pub fn run(streams: &[Vec<u8>], decode: &mut dyn FnMut(&[u8], &mut [u8])) -> u64 {
    let mut out = vec![0u8; CLUSTER];
    let start = thread_cpu_ns();
    for stream in streams {
        decode(stream, &mut out);
    }
    thread_cpu_ns() - start
}

/// The median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}
