//! The one way the tests run `qemu-img` and `qemu-io`: a command line
//! ([`Qemu`]), images made by `qemu-img create` ([`Create`]), secrets
//! given as a passphrase or a file ([`QemuSecret`]), `--image-opts` that key
//! the layers of an encrypted chain ([`image_opts`]), `qemu-io -c` writes
//! and `qemu-img convert -O raw`.
//!
//! QEMU 7.2's `qemu-img` fails now and then with `Unable to get accurate
//! CPU usage` when it makes a LUKS key slot (`create`, `convert` or `amend`
//! with `encrypt.format=luks`): its PBKDF2 calibration times a burst of
//! iterations with the thread's CPU clock, and on a machine whose clock
//! ticks coarsely that clock can advance 0 ms over the burst. Nothing is
//! wrong with the command, so that failure, and only that one, is run
//! again (see [`ATTEMPTS`]); any other failure fails the test at once with
//! the command line and what QEMU said.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// What `qemu-img` prints when its PBKDF2 calibration measured no CPU time
/// (`qcrypto_pbkdf2_count_iters`, crypto/pbkdf.c).
pub const CALIBRATION_FAILURE: &str = "Unable to get accurate CPU usage";

/// How many times a command that failed with [`CALIBRATION_FAILURE`] is
/// run in all. The failures come in runs: on a 2-core machine running
/// other builds, one image of `tests/luks.rs` failed 5 times in a row
/// (100 to 400 ms apart), and a loop of its `qemu-img create` failed 5
/// times of 20; a failed run costs milliseconds.
pub const ATTEMPTS: u32 = 20;

/// The pause before a second run, grown by this much before each further
/// one up to [`MAX_PAUSE`]: the calibration measures again, later.
const PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two runs.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The id of the secret object every helper here gives QEMU.
pub const SECRET_ID: &str = "sec0";

/// The options that make a qcow2 image LUKS-encrypted with PBKDF2
/// calibrated to 10 ms (the least `qemu-img` takes), so that unlocking
/// stays fast; used with [`Create::secret`].
pub const LUKS: &str = "encrypt.format=luks,encrypt.iter-time=10";

/// QEMU's option syntax doubles a comma inside a value.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A passphrase as QEMU's `--object secret` takes it: inline, or the bytes
/// of a file (verbatim, a trailing newline included).
#[derive(Clone, Debug)]
pub enum QemuSecret {
    /// `secret,id=sec0,data=PASSPHRASE`.
    Passphrase(String),
    /// `secret,id=sec0,file=PATH`.
    File(PathBuf),
}

impl Default for QemuSecret {
    /// [`PASSPHRASE`](crate::PASSPHRASE), inline.
    fn default() -> Self {
        Self::Passphrase(crate::PASSPHRASE.to_string())
    }
}

impl QemuSecret {
    /// The `--object` argument defining this secret as [`SECRET_ID`].
    pub fn object(&self) -> String {
        match self {
            Self::Passphrase(text) => format!("secret,id={SECRET_ID},data={}", escape(text)),
            Self::File(path) => format!("secret,id={SECRET_ID},file={}", escape(utf8(path))),
        }
    }
}

/// `--image-opts` for `image` opened by `driver` (`qcow2` or `luks`), with
/// [`SECRET_ID`] given to the layers numbered in `keyed` (0 is `image`, 1
/// its backing file, and so on). QEMU ignores a key given to a layer that
/// is not encrypted.
pub fn image_opts(driver: &str, image: &Path, keyed: &[usize]) -> String {
    let mut opts = format!("driver={driver}");
    for &layer in keyed {
        let key = match (driver, layer) {
            // A raw LUKS file has no `encrypt.` group (and no backing).
            ("luks", 0) => "key-secret",
            _ => "encrypt.key-secret",
        };
        opts.push_str(&format!(",{}{key}={SECRET_ID}", "backing.".repeat(layer)));
    }
    opts + ",file.filename=" + &escape(utf8(image))
}

/// `--image-opts` for the qcow2 `image` with every layer of its backing
/// chain keyed (the layers counted by `qemu-img info --backing-chain`).
pub fn chain_image_opts(image: &Path) -> String {
    let info = Qemu::img()
        .args(["info", "--backing-chain", "-U"])
        .arg(image)
        .stdout();
    let layers = String::from_utf8_lossy(&info)
        .lines()
        .filter(|line| line.starts_with("image: "))
        .count();
    assert!(layers >= 1, "qemu-img info found no image in {image:?}");
    image_opts("qcow2", image, &(0..layers).collect::<Vec<_>>())
}

/// One `qemu-img` or `qemu-io` command line.
#[derive(Clone, Debug)]
pub struct Qemu {
    program: String,
    args: Vec<OsString>,
    dir: Option<PathBuf>,
    time_limit: Option<u32>,
    attempts: u32,
}

impl Qemu {
    /// `qemu-img`.
    pub fn img() -> Self {
        Self::program("qemu-img")
    }

    /// `qemu-io`.
    pub fn io() -> Self {
        Self::program("qemu-io")
    }

    /// Another program run the same way (the tests of this crate use a
    /// stand-in script).
    pub fn program(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            dir: None,
            time_limit: None,
            attempts: ATTEMPTS,
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// `--object` defining `secret`.
    pub fn secret(self, secret: &QemuSecret) -> Self {
        self.arg("--object").arg(secret.object())
    }

    /// `-c COMMAND` for each of `commands` (`qemu-io`).
    pub fn commands(self, commands: &[&str]) -> Self {
        commands
            .iter()
            .fold(self, |qemu, command| qemu.arg("-c").arg(command))
    }

    /// Runs in `dir`: QEMU 7.2 takes a relative backing or data file name
    /// given to `create` from its working directory, not from the image's.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// Runs under coreutils' `timeout -k 5 SECONDS`: exit status 124 when
    /// it did not finish in time.
    pub fn time_limit(mut self, seconds: u32) -> Self {
        self.time_limit = Some(seconds);
        self
    }

    /// Runs a command failing with [`CALIBRATION_FAILURE`] `attempts` times
    /// in all ([`ATTEMPTS`] unless said; this crate's tests say fewer).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        let mut line = self.program.clone();
        for arg in &self.args {
            let arg = arg.to_string_lossy();
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                line.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
            } else {
                line.push(' ');
                line.push_str(&arg);
            }
        }
        line
    }

    fn once(&self) -> Output {
        let mut command = match self.time_limit {
            Some(seconds) => {
                let mut command = Command::new("timeout");
                command.args(["-k", "5", &seconds.to_string(), &self.program]);
                command
            }
            None => Command::new(&self.program),
        };
        command.args(&self.args);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command.output().unwrap_or_else(|error| {
            panic!(
                "cannot run {}: {error}; install it with: {}",
                self.command_line(),
                crate::install_hint(&self.program)
            )
        })
    }

    /// Runs it and returns what it printed, whether it succeeded or not;
    /// a [`CALIBRATION_FAILURE`] is run again, up to [`ATTEMPTS`] times in
    /// all. For commands whose failure the test looks at.
    pub fn output(&self) -> Output {
        retrying(self, self.attempts, || self.once())
    }

    /// Runs it ([`output`](Self::output)); it must succeed, or the test
    /// fails with the command line and its standard error.
    pub fn run(&self) -> Output {
        let output = self.output();
        assert!(
            output.status.success(),
            "{} failed ({}): {}",
            self.command_line(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Runs it ([`run`](Self::run)) and returns its standard output.
    pub fn stdout(&self) -> Vec<u8> {
        self.run().stdout
    }
}

impl fmt::Display for Qemu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command_line())
    }
}

/// Whether `output` is the transient calibration failure.
pub fn is_calibration_failure(output: &Output) -> bool {
    !output.status.success()
        && String::from_utf8_lossy(&output.stderr).contains(CALIBRATION_FAILURE)
}

/// `attempt()` once, and again while it fails with [`CALIBRATION_FAILURE`],
/// `attempts` times in all; the last output is returned. Each retry is
/// said on standard error, naming `what` was run.
pub fn retrying(
    what: &dyn fmt::Display,
    attempts: u32,
    mut attempt: impl FnMut() -> Output,
) -> Output {
    let mut output = attempt();
    for again in 1..attempts {
        if !is_calibration_failure(&output) {
            break;
        }
        eprintln!(
            "{what}: {CALIBRATION_FAILURE} (QEMU's PBKDF2 calibration); run {} of {attempts}",
            again + 1
        );
        std::thread::sleep((PAUSE * again).min(MAX_PAUSE));
        output = attempt();
    }
    output
}

/// `qemu-img create` of one image: qcow2 unless [`format`](Self::format)
/// says otherwise, `-o` options joined from every [`options`](Self::options).
#[derive(Clone, Debug)]
pub struct Create {
    path: PathBuf,
    format: String,
    options: Vec<String>,
    size: Option<String>,
    secret: Option<QemuSecret>,
    backing: Option<(String, String)>,
    unsafe_backing: bool,
    dir: Option<PathBuf>,
}

impl Create {
    /// A qcow2 image at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            format: "qcow2".to_string(),
            options: Vec::new(),
            size: None,
            secret: None,
            backing: None,
            unsafe_backing: false,
            dir: None,
        }
    }

    /// `-f FORMAT` (`qcow2` by default; `raw`, `luks`).
    pub fn format(mut self, format: &str) -> Self {
        self.format = format.to_string();
        self
    }

    /// More `-o` options (comma-separated; empty adds none).
    pub fn options(mut self, options: &str) -> Self {
        if !options.is_empty() {
            self.options.push(options.to_string());
        }
        self
    }

    /// The virtual size (`4M`, `1G`, bytes); none takes the backing file's.
    pub fn size(mut self, size: &str) -> Self {
        self.size = Some(size.to_string());
        self
    }

    /// Keyed by `secret`: `--object` and the key option (`key-secret` for
    /// the `luks` format, `encrypt.key-secret` for qcow2); the encryption
    /// format comes with the options (e.g. [`LUKS`]).
    pub fn secret(mut self, secret: &QemuSecret) -> Self {
        self.secret = Some(secret.clone());
        self
    }

    /// `-b NAME -F FORMAT`.
    pub fn backing(mut self, name: &str, format: &str) -> Self {
        self.backing = Some((name.to_string(), format.to_string()));
        self
    }

    /// `-u`: the backing file is recorded without being opened (it may be
    /// encrypted, or not exist yet).
    pub fn unsafe_backing(mut self) -> Self {
        self.unsafe_backing = true;
        self
    }

    /// Runs in `dir` (see [`Qemu::dir`]).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// The command line.
    pub fn command(&self) -> Qemu {
        let mut qemu = Qemu::img().args(["create", "-q", "-f", &self.format]);
        if self.unsafe_backing {
            qemu = qemu.arg("-u");
        }
        let mut options = self.options.clone();
        if let Some(secret) = &self.secret {
            qemu = qemu.secret(secret);
            let key = if self.format == "luks" {
                "key-secret"
            } else {
                "encrypt.key-secret"
            };
            options.insert(0, format!("{key}={SECRET_ID}"));
        }
        if !options.is_empty() {
            qemu = qemu.arg("-o").arg(options.join(","));
        }
        if let Some((name, format)) = &self.backing {
            qemu = qemu.args(["-b", name, "-F", format]);
        }
        qemu = qemu.arg(&self.path);
        if let Some(size) = &self.size {
            qemu = qemu.arg(size);
        }
        if let Some(dir) = &self.dir {
            qemu = qemu.dir(dir);
        }
        qemu
    }

    /// Makes the image, which must succeed; returns its path.
    pub fn run(&self) -> PathBuf {
        self.command().run();
        self.path.clone()
    }
}

/// `qemu-io -f FORMAT -c COMMAND... IMAGE`, which must succeed.
pub fn qemu_io_as(image: &Path, format: &str, commands: &[&str]) {
    Qemu::io()
        .args(["-f", format])
        .commands(commands)
        .arg(image)
        .run();
}

/// `qemu-io -f qcow2 -c COMMAND... IMAGE` run in `dir` (where a relative
/// `image`, and the relative names it stores, are found).
pub fn qemu_io_in(dir: &Path, image: &Path, commands: &[&str]) {
    Qemu::io()
        .args(["-f", "qcow2"])
        .commands(commands)
        .arg(image)
        .dir(dir)
        .run();
}

/// `qemu-io --object SECRET --image-opts OPTS -c COMMAND...`, which must
/// succeed and print nothing on standard error.
pub fn qemu_io_keyed(secret: &QemuSecret, image_opts: &str, commands: &[&str]) {
    let qemu = Qemu::io()
        .secret(secret)
        .arg("--image-opts")
        .commands(commands)
        .arg(image_opts);
    let output = qemu.run();
    assert!(
        output.stderr.is_empty(),
        "{qemu}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `qemu-img convert SOURCE... -O raw OUT`: the virtual disk as QEMU reads
/// it, `source` being the arguments that name the image (a file name, with
/// options such as `-l SNAPSHOT` before it, or `--object ... --image-opts
/// OPTS`). `out` is removed after reading.
pub fn convert_raw(source: &[&str], out: &Path) -> Vec<u8> {
    Qemu::img()
        .arg("convert")
        .args(source)
        .args(["-O", "raw"])
        .arg(out)
        .run();
    let bytes = std::fs::read(out).unwrap_or_else(|e| panic!("read QEMU's raw {out:?}: {e}"));
    std::fs::remove_file(out).unwrap_or_else(|e| panic!("remove QEMU's raw {out:?}: {e}"));
    bytes
}

/// `qemu-img convert --object SECRET --image-opts OPTS -O raw OUT`, kept in
/// `out`.
pub fn convert_raw_keyed(secret: &QemuSecret, image_opts: &str, out: &Path) {
    Qemu::img()
        .arg("convert")
        .secret(secret)
        .args(["--image-opts", image_opts, "-O", "raw"])
        .arg(out)
        .run();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in all for a calibration failure here (fewer than [`ATTEMPTS`],
    /// whose pauses add up to seconds).
    const TRIES: u32 = 4;

    /// A stand-in for `qemu-img` that fails its first `failures` runs with
    /// `message` on standard error, as `qemu-img: IMAGE: MESSAGE`, then
    /// prints `made`; it counts its runs in a file beside it.
    struct StandIn {
        dir: tempfile::TempDir,
    }

    impl StandIn {
        fn new(failures: u32, message: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let script = format!(
                "#!/bin/sh\n\
                 runs=$(cat \"$0.runs\" 2>/dev/null || echo 0)\n\
                 echo $((runs + 1)) > \"$0.runs\"\n\
                 if [ \"$runs\" -lt {failures} ]; then\n\
                 \x20   echo \"qemu-img: $1: {message}\" >&2\n\
                 \x20   exit 1\n\
                 fi\n\
                 echo made\n"
            );
            std::fs::write(dir.path().join("qemu-img"), script).unwrap();
            Self { dir }
        }

        fn qemu(&self) -> Qemu {
            // Run by `sh`, not executed itself: a file just written can
            // be busy (ETXTBSY) while another test thread forks.
            Qemu::program("sh")
                .arg(self.dir.path().join("qemu-img"))
                .arg("image.qcow2")
                .attempts(TRIES)
        }

        fn runs(&self) -> u32 {
            std::fs::read_to_string(self.dir.path().join("qemu-img.runs"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        }
    }

    #[test]
    fn a_calibration_failure_is_run_again() {
        let stand_in = StandIn::new(2, CALIBRATION_FAILURE);
        assert_eq!(stand_in.qemu().stdout(), b"made\n");
        assert_eq!(stand_in.runs(), 3);
    }

    #[test]
    fn a_calibration_failure_every_time_fails_after_the_last_attempt() {
        let stand_in = StandIn::new(2 * TRIES, CALIBRATION_FAILURE);
        let output = stand_in.qemu().output();
        assert!(is_calibration_failure(&output));
        assert_eq!(stand_in.runs(), TRIES);
        let message = std::panic::catch_unwind(|| stand_in.qemu().run())
            .unwrap_err()
            .downcast::<String>()
            .unwrap();
        assert!(message.contains(CALIBRATION_FAILURE), "{message}");
    }

    #[test]
    fn another_failure_is_not_run_again_and_names_the_command() {
        let stand_in = StandIn::new(1, "Could not open 'image.qcow2': No such file");
        let message = std::panic::catch_unwind(|| stand_in.qemu().run())
            .unwrap_err()
            .downcast::<String>()
            .unwrap();
        assert_eq!(stand_in.runs(), 1);
        assert!(message.contains("qemu-img image.qcow2 failed"), "{message}");
        assert!(message.starts_with("sh "), "{message}");
        assert!(message.contains("Could not open"), "{message}");
    }

    #[test]
    fn secrets_and_options_escape_commas() {
        let secret = QemuSecret::Passphrase("a,b".into());
        assert_eq!(secret.object(), "secret,id=sec0,data=a,,b");
        assert_eq!(
            image_opts("qcow2", Path::new("/x,y.qcow2"), &[0, 2]),
            "driver=qcow2,encrypt.key-secret=sec0,backing.backing.encrypt.key-secret=sec0,\
             file.filename=/x,,y.qcow2"
        );
        assert_eq!(
            image_opts("luks", Path::new("/z.luks"), &[0]),
            "driver=luks,key-secret=sec0,file.filename=/z.luks"
        );
    }
}
