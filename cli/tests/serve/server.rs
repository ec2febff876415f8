//! `qcow serve` as a child process on a socket in a temporary directory,
//! ready once its pid file exists, stopped (SIGTERM) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running server.
pub struct Served {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// Its unix socket.
    pub socket: PathBuf,
    /// Its pid file.
    pub pid_file: PathBuf,
    stderr: PathBuf,
}

impl Served {
    /// `qcow serve IMAGE --socket S --pid-file P ARGS`, ready.
    pub fn start(image: &Path, args: &[&str]) -> Self {
        Self::start_listening(image, args, true)
    }

    /// Like [`Served::start`]; the unix socket only if `unix`.
    pub fn start_listening(image: &Path, args: &[&str], unix: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("nbd.sock");
        let pid_file = dir.path().join("qcow.pid");
        let stderr = dir.path().join("stderr");
        let mut command = Command::new(env!("CARGO_BIN_EXE_qcow"));
        command
            .arg("serve")
            .arg(image)
            .arg("--pid-file")
            .arg(&pid_file);
        if unix {
            command.arg("--socket").arg(&socket);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = command.spawn().expect("start qcow serve");
        let mut served = Self {
            child: Some(child),
            _dir: dir,
            socket,
            pid_file,
            stderr,
        };
        served.wait_ready();
        served
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while !self.pid_file.exists() {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("poll qcow serve") {
                panic!("qcow serve exited with {status}: {}", self.read_stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "qcow serve not ready after 60 s: {}",
                self.read_stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `nbd+unix:///NAME?socket=PATH`.
    pub fn uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.socket.display())
    }

    /// Sends `signal` (`-TERM`...) and waits for the exit (at most 30 s).
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill {signal} {pid}"
        );
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for qcow serve") {
                return status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!(
                    "qcow serve still running 30 s after {signal}: {}",
                    self.read_stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (it must exit successfully) and returns what it logged.
    pub fn stop_and_stderr(mut self) -> String {
        let status = self.signal("-TERM");
        let stderr = self.read_stderr();
        assert!(
            status.success(),
            "qcow serve exited with {status}: {stderr}"
        );
        stderr
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.is_some() {
            let status = self.signal("-TERM");
            if !thread::panicking() {
                assert!(
                    status.success(),
                    "qcow serve exited with {status}: {}",
                    self.read_stderr()
                );
            }
        }
    }
}
