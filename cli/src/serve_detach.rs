//! `qcow serve --fork`: the server runs in the background, and the command
//! returns only once it serves (or with its error).
//!
//! Without `unsafe` there is no `fork(2)`: the server is this program
//! started again with the same arguments but `--fork`, plus the internal
//! `--ready-stdout`, and its standard output a pipe to this process. The
//! server writes `ready` there once its device is connected and its
//! sockets listen; this process then exits 0. If the pipe closes first,
//! the server failed (it has said why on the shared standard error) and
//! this process exits with its status.
//!
//! The server's `argv[0]` is `@` and the program's name (`@qcow`): systemd
//! leaves processes whose `argv[0]` starts with `@` running through
//! switch_root and shutdown ("storage daemons for the root file system",
//! systemd's ROOT_STORAGE_DAEMONS.md), which a server of the root file
//! system needs: killed, it would take the root away under the running
//! system.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::failure::{Failure, Result};

/// What the server writes once it serves.
const READY: &str = "ready";

/// The name the server runs under: `@` and this program's name.
pub fn storage_daemon_name(argv0: &OsString) -> OsString {
    let name = Path::new(argv0)
        .file_name()
        .map_or_else(|| OsString::from("qcow"), |name| name.to_os_string());
    if name.as_encoded_bytes().starts_with(b"@") {
        return name;
    }
    let mut at = OsString::from("@");
    at.push(name);
    at
}

/// The server's arguments: ours without `--fork`, with `--ready-stdout`.
fn server_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut options = true;
    for arg in args {
        if options && arg == "--" {
            // After a `--` every argument is a path: the flag goes before it.
            options = false;
            kept.push(OsString::from("--ready-stdout"));
        } else if options && arg == "--fork" {
            continue;
        }
        kept.push(arg);
    }
    if options {
        kept.push(OsString::from("--ready-stdout"));
    }
    kept
}

/// Starts the server in the background and waits for its word.
pub fn start(image: &Path) -> Result<ExitCode> {
    let fail = |error: io::Error| Failure::new(image, format!("cannot start the server: {error}"));
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("qcow"));
    let program = std::env::current_exe().map_err(fail)?;
    let mut child = Command::new(program)
        .arg0(storage_daemon_name(&argv0))
        .args(server_args(args))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(fail)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    // At most a line of a few bytes: the server writes nothing else there.
    let read = BufReader::new(stdout.take(64)).read_line(&mut line);
    if read.is_ok() && line.trim_end() == READY {
        return Ok(ExitCode::SUCCESS);
    }
    let status = child.wait().map_err(fail)?;
    Err(Failure::new(
        image,
        format!("the server stopped before it was ready ({status})"),
    ))
}

/// Says `ready` to the waiting parent, then points standard output at
/// `/dev/null` (the parent is gone: writing to its pipe would fail).
pub fn ready() -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{READY}")?;
    stdout.flush()?;
    let null = std::fs::File::options().write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdout(&null)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_runs_as_at_name_for_systemd() {
        assert_eq!(storage_daemon_name(&"/usr/bin/qcow".into()), "@qcow");
        assert_eq!(storage_daemon_name(&"qcow".into()), "@qcow");
        assert_eq!(storage_daemon_name(&"@qcow".into()), "@qcow");
    }

    #[test]
    fn server_args_drop_fork_and_ask_for_the_ready_line_before_positionals() {
        let args =
            ["serve", "--connect", "/dev/nbd0", "--fork", "--", "--fork"].map(OsString::from);
        assert_eq!(
            server_args(args.into_iter()),
            [
                "serve",
                "--connect",
                "/dev/nbd0",
                "--ready-stdout",
                "--",
                "--fork"
            ]
            .map(OsString::from)
        );
        let args = ["serve", "--fork", "--socket", "s", "disk.qcow2"].map(OsString::from);
        assert_eq!(
            server_args(args.into_iter()),
            ["serve", "--socket", "s", "disk.qcow2", "--ready-stdout"].map(OsString::from)
        );
    }
}
