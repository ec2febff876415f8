//! Reading one image with QEMU and with the `qcow` tool, each under a time
//! limit (and the tool under a memory limit), and comparing what they made.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use qcow2_testkit::Qemu;
use rustix::fs::SeekFrom;

/// Seconds either side may take for one image before it counts as a hang.
pub const TIME_LIMIT_SECS: u32 = 30;
/// Address space the tool may map, in KiB: far above what reading needs
/// (the crate's caches are a few MiB), far below a runaway allocation.
pub const MEMORY_LIMIT_KIB: u64 = 1 << 20;
/// Largest disk also read through `qcow cat` (into memory), besides `qcow convert`.
const CAT_LIMIT: u64 = 64 << 20;

/// How one side ended.
#[derive(Debug)]
pub enum Verdict {
    /// It read the disk; the raw file is at the path given to [`qemu`] or [`qcow`].
    Read,
    /// It refused, with this message.
    Refused(String),
    /// It did not finish in time.
    Hang,
    /// It panicked, was killed by a signal or ran out of memory.
    Crash(String),
}

fn verdict(output: &Output) -> Verdict {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.code() {
        Some(0) if stderr.contains("panicked") => Verdict::Crash(stderr),
        Some(0) => Verdict::Read,
        Some(1) => Verdict::Refused(stderr),
        Some(124) => Verdict::Hang,
        Some(code) => Verdict::Crash(format!("exit status {code}: {stderr}")),
        None => Verdict::Crash(format!("{:?}: {stderr}", output.status)),
    }
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}; timeout is in coreutils"))
}

/// `qemu-img convert -f qcow2 -O raw [-l SNAPSHOT] IMAGE OUT` under `timeout`.
pub fn qemu(image: &Path, snapshot: Option<&str>, out: &Path) -> Verdict {
    let mut qemu = Qemu::img()
        .time_limit(TIME_LIMIT_SECS)
        .args(["convert", "-f", "qcow2", "-O", "raw"]);
    if let Some(snapshot) = snapshot {
        qemu = qemu.args(["-l", snapshot]);
    }
    verdict(&qemu.arg(image).arg(out).output())
}

/// `qcow ARGS` under `timeout` and `ulimit -v`.
fn qcow_limited(args: &[OsString]) -> Output {
    let mut command = Command::new("timeout");
    command.args(["-k", "5", &TIME_LIMIT_SECS.to_string(), "sh", "-c"]);
    command.arg(format!(
        "ulimit -v {MEMORY_LIMIT_KIB} && exec \"$0\" \"$@\""
    ));
    command.arg(env!("CARGO_BIN_EXE_qcow"));
    command.args(args);
    run(&mut command)
}

/// `qcow convert --threads 1 [-l SNAPSHOT] IMAGE OUT`, and for small disks
/// also `qcow cat [-l SNAPSHOT] IMAGE`, which must agree with it. The second
/// value says how `cat` and `convert` differ, if they do.
pub fn qcow(image: &Path, snapshot: Option<&str>, out: &Path) -> (Verdict, Option<String>) {
    let mut source: Vec<OsString> = Vec::new();
    if let Some(snapshot) = snapshot {
        source.extend(["-l".into(), snapshot.into()]);
    }
    source.push(image.into());
    let mut convert: Vec<OsString> = vec!["convert".into(), "--threads".into(), "1".into()];
    convert.extend(source.iter().cloned());
    convert.push(out.into());
    let converted = verdict(&qcow_limited(&convert));
    let size = std::fs::metadata(out).map_or(0, |m| m.len());
    if !matches!(converted, Verdict::Read) || size > CAT_LIMIT {
        return (converted, None);
    }
    let mut cat: Vec<OsString> = vec!["cat".into()];
    cat.extend(source);
    let output = qcow_limited(&cat);
    let differs = match verdict(&output) {
        Verdict::Read => {
            let converted = std::fs::read(out).unwrap();
            first_difference(&converted, &output.stdout)
                .map(|at| format!("cat and convert differ at {at:#x}"))
        }
        other => Some(format!("convert reads, cat: {other:?}")),
    };
    (converted, differs)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    // memcmp first: the unoptimized byte-by-byte search is slow.
    if a == b {
        return None;
    }
    if let Some(at) = a.iter().zip(b).position(|(x, y)| x != y) {
        return Some(at as u64);
    }
    (a.len() != b.len()).then_some(a.len().min(b.len()) as u64)
}

/// The data runs of a sparse file (everything, where holes are not reported).
fn data_runs(file: &File, size: u64) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, size)],
        };
        let end = rustix::fs::seek(file, SeekFrom::Hole(start)).unwrap_or(size);
        runs.push((start, end.min(size)));
        at = end;
    }
    runs
}

/// Where two raw files first differ, reading only where either holds data
/// (a corrupt header may announce a disk of terabytes, almost all holes).
pub fn compare_raw(a: &Path, b: &Path) -> Option<String> {
    let (a, b) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (size_a, size_b) = (a.metadata().unwrap().len(), b.metadata().unwrap().len());
    if size_a != size_b {
        return Some(format!("sizes differ: QEMU {size_a}, qcow {size_b}"));
    }
    let mut runs = data_runs(&a, size_a);
    runs.extend(data_runs(&b, size_b));
    let (mut buf_a, mut buf_b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (start, end) in runs {
        let mut at = start;
        while at < end {
            let len = (end - at).min(1 << 20) as usize;
            a.read_exact_at(&mut buf_a[..len], at).unwrap();
            b.read_exact_at(&mut buf_b[..len], at).unwrap();
            if let Some(offset) = first_difference(&buf_a[..len], &buf_b[..len]) {
                let at = at + offset;
                let (x, y) = (buf_a[offset as usize], buf_b[offset as usize]);
                return Some(format!(
                    "first difference at {at:#x}: QEMU {x:#04x}, qcow {y:#04x}"
                ));
            }
            at += len as u64;
        }
    }
    None
}
