//! `qcow serve --fork` and `--connect`/`--disconnect` as far as a host
//! without the `nbd` module shows them: `--fork` returns only once the
//! server serves, which runs as `@qcow` (systemd's root-storage
//! convention); a server failing before it is ready fails the command with
//! its reason; `--connect` and `--disconnect` say what is missing instead
//! of hanging. The device itself is proved by the boot test (README).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use qcow2_nbd::client::Client;

fn qcow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qcow"))
}

/// A 1 MiB QCOW2 image whose first 64 KiB are 0x5a.
fn image(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("disk.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg("1M")
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let written = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 0 64k"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .expect("qemu-io");
    assert!(written.success());
    path
}

/// Runs `qcow ARGS` with stderr to a file (a background server keeps the
/// stderr it inherits: a pipe would never end), at most 60 s.
fn run_with_stderr(dir: &Path, args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    let stderr = dir.join("stderr");
    let mut child = qcow()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "qcow hung");
        thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&stderr).unwrap_or_default())
}

#[test]
fn fork_returns_once_serving_as_at_qcow_and_sigterm_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    let socket = dir.path().join("nbd.sock");
    let pid_file = dir.path().join("qcow.pid");
    let (status, stderr) = run_with_stderr(
        dir.path(),
        &[
            "serve".as_ref(),
            "--fork".as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--pid-file".as_ref(),
            pid_file.as_os_str(),
            image.as_os_str(),
        ],
    );
    assert!(status.success(), "{status}: {stderr}");
    // Ready means ready: no waiting for the socket or the pid file.
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the pid file exists when --fork returns")
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap();
    assert_eq!(
        argv0, b"@qcow",
        "systemd spares only argv[0] starting with @"
    );
    let stream = std::os::unix::net::UnixStream::connect(&socket).expect("listening");
    let mut client = Client::greet(stream).unwrap();
    client.go("").unwrap().expect("the default export");
    assert_eq!(client.read(4096, 512).unwrap().unwrap(), vec![0x5a; 512]);
    drop(client);

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    while pid_file.exists() || socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still serving after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fork_fails_with_the_reason_when_the_server_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-an-image");
    std::fs::write(&bad, vec![0x11; 4096]).unwrap();
    let socket = dir.path().join("nbd.sock");
    let (status, stderr) = run_with_stderr(
        dir.path(),
        &[
            "serve".as_ref(),
            "--fork".as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            bad.as_os_str(),
        ],
    );
    assert!(!status.success());
    assert!(stderr.contains("not-an-image"), "{stderr}");
    assert!(stderr.contains("stopped before it was ready"), "{stderr}");
    assert!(!socket.exists());
}

fn output(args: &[&std::ffi::OsStr]) -> Output {
    qcow().args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn connect_refuses_a_path_that_is_not_an_nbd_device() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    for device in ["/dev/sda", "/dev/nbd0p1", "nbd"] {
        let out = output(&[
            "serve".as_ref(),
            "--connect".as_ref(),
            device.as_ref(),
            image.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(device) && stderr.contains("not an NBD device"),
            "{stderr}"
        );
    }
}

#[test]
fn connect_and_disconnect_without_the_nbd_module_say_to_load_it() {
    if Path::new("/sys/module/nbd").exists() {
        eprintln!("skipped: this kernel has nbd loaded; the boot test covers the device");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    let connect = output(&[
        "serve".as_ref(),
        "--connect".as_ref(),
        "/dev/nbd0".as_ref(),
        image.as_os_str(),
    ]);
    let disconnect = output(&[
        "serve".as_ref(),
        "--disconnect".as_ref(),
        "/dev/nbd0".as_ref(),
    ]);
    for out in [connect, disconnect] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("/dev/nbd0") && stderr.contains("modprobe nbd"),
            "{stderr}"
        );
    }
}
