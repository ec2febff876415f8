//! What the QEMU runners ([`crate::uefi_run`], [`crate::firmware_run`])
//! share: the QEMU child that is killed on every way out, the lookup of a
//! program on `PATH`, the exit status as a number, and the output a test
//! reads when it runs a runner in its own process.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;

/// The process ids of the children that `ChildGuard`s hold, for
/// [`stop_children_on_signals`]: a signal ends the runner without running
/// destructors.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Makes SIGINT, SIGTERM and SIGHUP kill the runner's QEMU before the
/// runner exits (with 128 + the signal, as a shell reports it): a runner
/// stopped by `timeout`, a test harness or a closed terminal leaves no
/// emulator behind. For the binaries only; a test's process keeps its own
/// signal handling.
pub fn stop_children_on_signals() -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|error| format!("cannot install the signal handlers: {error}"))?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let live = LIVE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for pid in live.iter() {
                // `kill` the program: the standard library offers no kill
                // by process id, and the crates forbid unsafe code.
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

/// What a runner printed and how it ended, for a test that runs it in its
/// own process: `stdout` is the guest's console, `stderr` the runner's own
/// lines (its timing line or its error last), `code` the exit status the
/// runner's binary would have.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The guest's console (serial output), as the binary prints it.
    pub stdout: Vec<u8>,
    /// The runner's messages, as the binary prints them on stderr.
    pub stderr: Vec<u8>,
    /// The binary's exit status: 0 on success.
    pub code: i32,
}

impl RunOutput {
    /// Runs `run` with the console and the messages captured, as the
    /// runner's binary prints them: a failure's message last on stderr
    /// after `prefix` (`run.sh: ` or `run.sh: error: `).
    pub fn collect(
        prefix: &str,
        run: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> Result<(), Failure>,
    ) -> Self {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let code = match run(&mut stdout, &mut stderr) {
            Ok(()) => 0,
            Err(failure) => {
                stderr.extend_from_slice(format!("{prefix}{}\n", failure.message).as_bytes());
                failure.code
            }
        };
        RunOutput {
            stdout,
            stderr,
            code,
        }
    }

    /// Whether the run succeeded (the binary would exit with 0).
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Why a runner stopped: the message (without the `run.sh:` prefix the
/// binary adds) and the exit status the binary ends with.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The exit status: 1 for a failed boot, 2 for bad usage (firmware),
    /// 124 for the firmware's timeout.
    pub code: i32,
    /// What went wrong, naming the file or the step.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// A running QEMU (or any child) that is killed and reaped when dropped,
/// so that no exit path of a runner (an error, a panic, a timeout) leaves
/// an emulator behind.
pub(crate) struct ChildGuard {
    child: Child,
    reaped: bool,
}

impl ChildGuard {
    /// Starts `command`; the error names the program.
    pub(crate) fn spawn(command: &mut Command) -> Result<Self, String> {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {program}: {error}"))?;
        LIVE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(child.id());
        Ok(ChildGuard {
            child,
            reaped: false,
        })
    }

    /// The child's standard streams, to be taken by a reader.
    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has ended.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        self.reaped |= status.is_some();
        Ok(status)
    }

    /// Kills the child (if it still runs) and waits for it.
    pub(crate) fn kill_and_wait(&mut self) -> io::Result<ExitStatus> {
        if !self.reaped {
            // An error here means the child has already ended; wait says how.
            let _ = self.child.kill();
        }
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let id = self.child.id();
        LIVE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|&live| live != id);
    }
}

/// The exit status as a shell reports it: the code, or 128 + the signal
/// that ended the process.
pub(crate) fn status_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// `PATH` with `extra` directories appended (`/usr/sbin` for `mkfs.vfat`
/// on Debian, where users' `PATH` lacks it).
pub(crate) fn path_with(extra: &[&str]) -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(extra.iter().map(PathBuf::from));
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Where `program` is on `path` (a `PATH` value), as `command -v` finds it.
pub(crate) fn find_program(program: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// A little-endian `u16` at `offset` of `bytes`, or `None` past the end.
pub(crate) fn le_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let end = offset.checked_add(2)?;
    let field = bytes.get(offset..end)?;
    Some(u16::from_le_bytes([field[0], field[1]]))
}

/// A little-endian `u32` at `offset` of `bytes`, or `None` past the end.
pub(crate) fn le_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let field = bytes.get(offset..end)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

/// Reads at most `limit` bytes from the start of `path`: the headers the
/// runners parse sit in the first bytes, and a huge file is not read whole.
pub(crate) fn read_head(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_past_the_end_are_none_not_a_panic() {
        let bytes = [1, 2, 3];
        assert_eq!(le_u16(&bytes, 1), Some(0x0302));
        assert_eq!(le_u16(&bytes, 2), None);
        assert_eq!(le_u32(&bytes, 0), None);
        assert_eq!(le_u32(&bytes, usize::MAX), None);
    }
}
