//! `qcow serve` read by the reference clients: `qemu-img convert` from the
//! export equals `qemu-img convert` of the image byte for byte (zstd
//! compressed, a backing chain, LUKS, an internal snapshot, over unix and
//! TCP), `nbdinfo --map` equals `qemu-img map` and `qemu-nbd`'s own
//! `base:allocation`, `nbdcopy` equals the raw conversion; 64 clients at
//! once; bad clients refused or dropped while another is served; a clean
//! stop on SIGTERM and SIGINT.
//!
//! Images are made by `qemu-img`/`qemu-io` once per build directory
//! (`CARGO_TARGET_TMPDIR/serve-v1`). `nbdinfo` and `nbdcopy` come from
//! Debian's `libnbd-bin` (`scripts/setup.sh` installs it).

mod images;
mod server;
mod tls;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use images::Images;
use qcow2_nbd::client::Client;
use qcow2_nbd::wire::reply;
use qcow2_nbd::wire::request;
use qcow2_testkit::{assert_same, output_in, run, Scratch};
use serde_json::Value;
use server::Served;

/// `qemu-img convert -f raw URI out.raw`, read back.
fn convert_from(scratch: &Scratch, uri: &str) -> Vec<u8> {
    let out = scratch.path("from-nbd.raw");
    let out_text = out.to_str().expect("UTF-8 path");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", uri, out_text],
    );
    let bytes = std::fs::read(&out).expect("qemu-img's output");
    std::fs::remove_file(&out).expect("remove qemu-img's output");
    bytes
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn qemu_img_reads_a_zstd_compressed_export_as_the_image() {
    let images = Images::get();
    let served = Served::start(&images.compressed, &[]);
    let scratch = Scratch::new();
    assert_same(
        &images.reference(&images.compressed),
        &convert_from(&scratch, &served.uri("")),
        "zstd image through qcow serve",
    );
}

#[test]
fn qemu_img_reads_backing_chain_exports_as_the_images() {
    let images = Images::get();
    for image in [&images.overlay, &images.raw_overlay] {
        let served = Served::start(image, &[]);
        let scratch = Scratch::new();
        assert_same(
            &images.reference(image),
            &convert_from(&scratch, &served.uri("")),
            &format!("{} through qcow serve", image.display()),
        );
    }
}

#[test]
fn qemu_img_reads_a_luks_export_unlocked_by_the_passphrase_file() {
    let images = Images::get();
    let served = Served::start(
        &images.luks,
        &["--passphrase-file", path_text(&images.passphrase)],
    );
    let scratch = Scratch::new();
    assert_same(
        &qemu_raw_luks(&scratch, &images.luks),
        &convert_from(&scratch, &served.uri("")),
        "LUKS image through qcow serve",
    );
}

fn qemu_raw_luks(scratch: &Scratch, image: &Path) -> Vec<u8> {
    qcow2_testkit::qemu_raw_encrypted(scratch, image)
}

#[test]
fn qemu_img_reads_a_snapshot_export_as_qemu_img_convert_l() {
    let images = Images::get();
    let served = Served::start(&images.snapshot, &["--snapshot", "snap1"]);
    let scratch = Scratch::new();
    let expected = qcow2_testkit::qemu_raw(&scratch, &images.snapshot, &["-l", "snap1"]);
    let current = images.reference(&images.snapshot);
    assert_ne!(expected, current, "the snapshot must differ from the disk");
    assert_same(
        &expected,
        &convert_from(&scratch, &served.uri("")),
        "snapshot through qcow serve",
    );
}

#[test]
fn qemu_img_reads_a_tcp_export() {
    let images = Images::get();
    // A port free a moment ago; the server binds it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let served = Served::start_listening(&images.compressed, &["--bind", &address], false);
    let scratch = Scratch::new();
    assert_same(
        &images.reference(&images.compressed),
        &convert_from(&scratch, &format!("nbd://{address}")),
        "zstd image through qcow serve over TCP",
    );
    drop(served);
}

/// `base:allocation` runs as (length, NBD flags), merged where adjacent
/// runs have the same flags.
type Runs = Vec<(u64, u64)>;

fn push_run(runs: &mut Runs, len: u64, flags: u64) {
    match runs.last_mut() {
        Some(last) if last.1 == flags => last.0 += len,
        _ => runs.push((len, flags)),
    }
}

/// `nbdinfo --map --json` of `target` (a URI, or `[ command ]` arguments).
fn nbdinfo_map(target: &[&str]) -> Runs {
    let mut args = vec!["--map", "--json", "--"];
    args.extend(target);
    let output = run("nbdinfo", &args);
    let map: Value = serde_json::from_slice(&output.stdout).expect("nbdinfo's JSON");
    let mut runs = Runs::new();
    for extent in map.as_array().expect("a list of extents") {
        let len = extent["length"].as_u64().expect("length");
        push_run(&mut runs, len, extent["type"].as_u64().expect("type"));
    }
    runs
}

/// `qemu-img map --output=json` as NBD flags: a hole where there is no
/// data, zero where it reads as zeros (qemu-nbd's own translation).
fn qemu_img_map(image: &Path) -> Runs {
    let output = run("qemu-img", &["map", "--output=json", path_text(image)]);
    let map: Value = serde_json::from_slice(&output.stdout).expect("qemu-img's JSON");
    let mut runs = Runs::new();
    for extent in map.as_array().expect("a list of extents") {
        let data = extent["data"].as_bool().expect("data");
        let zero = extent["zero"].as_bool().expect("zero");
        let flags = u64::from(!data) | (u64::from(zero) << 1);
        push_run(&mut runs, extent["length"].as_u64().expect("length"), flags);
    }
    runs
}

#[test]
fn nbdinfo_map_equals_qemu_img_map_and_qemu_nbd() {
    let images = Images::get();
    let all = [
        &images.plain,
        &images.compressed,
        &images.overlay,
        &images.raw_overlay,
    ];
    for image in all {
        let served = Served::start(image, &[]);
        let ours = nbdinfo_map(&[&served.uri("")]);
        assert!(
            ours.len() > 2,
            "{}: a map with few runs proves little",
            image.display()
        );
        assert_eq!(
            ours,
            qemu_img_map(image),
            "{} against qemu-img map",
            image.display()
        );
        let qemu_nbd = nbdinfo_map(&["[", "qemu-nbd", "-r", "-f", "qcow2", path_text(image), "]"]);
        assert_eq!(ours, qemu_nbd, "{} against qemu-nbd", image.display());
    }
}

#[test]
fn nbdcopy_copies_the_export_as_the_raw_conversion() {
    let images = Images::get();
    let served = Served::start(&images.overlay, &[]);
    let scratch = Scratch::new();
    let out = scratch.path("nbdcopy.raw");
    run("nbdcopy", &[&served.uri(""), path_text(&out)]);
    assert_same(
        &images.reference(&images.overlay),
        &std::fs::read(&out).expect("nbdcopy's output"),
        "nbdcopy of the backing chain",
    );
}

#[test]
fn export_name_other_than_the_served_one_is_refused() {
    let images = Images::get();
    let served = Served::start(&images.plain, &["--export-name", "disk"]);
    let refused = output_in(None, "nbdinfo", &[&served.uri("other")]);
    assert!(
        !refused.status.success(),
        "nbdinfo of an unknown export succeeded"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // libnbd reports NBD_REP_ERR_UNKNOWN as ENOENT.
    assert!(
        stderr.contains("No such file or directory for export: other"),
        "nbdinfo said: {stderr}"
    );
    let named = run("nbdinfo", &[&served.uri("disk")]);
    assert!(String::from_utf8_lossy(&named.stdout).contains("export=\"disk\""));
}

/// A client in transmission with structured replies and `base:allocation`.
fn structured_client(socket: &Path) -> Client<UnixStream> {
    let stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut client = Client::greet(stream).expect("greeting");
    assert!(client.structured_replies().expect("structured replies"));
    client
        .set_meta_context("", &["base:allocation"])
        .expect("meta context");
    client.go("").expect("go").expect("export");
    client
}

#[test]
fn sixty_four_clients_at_once_are_all_served() {
    let images = Images::get();
    let served = Served::start(&images.compressed, &[]);
    let reference = Arc::new(images.reference(&images.compressed));
    let clients = 64;
    let connected = Arc::new(Barrier::new(clients));
    let piece = reference.len() / clients;
    let threads: Vec<_> = (0..clients)
        .map(|index| {
            let socket = served.socket.clone();
            let connected = connected.clone();
            let reference = reference.clone();
            thread::spawn(move || {
                let mut client = structured_client(&socket);
                // Every client is in transmission before any reads: the
                // server holds 64 sessions at once.
                connected.wait();
                let offset = index * piece;
                let data = client
                    .read(offset as u64, piece as u32)
                    .expect("read")
                    .expect("a successful read");
                data == reference[offset..offset + piece]
            })
        })
        .collect();
    let served_right = threads
        .into_iter()
        .map(|thread| thread.join().expect("client thread"))
        .filter(|&same| same)
        .count();
    assert_eq!(served_right, clients, "clients that read the right bytes");
}

/// Reads the whole disk in 1 MiB pieces and compares.
fn read_all(client: &mut Client<UnixStream>, reference: &[u8]) {
    for (index, expected) in reference.chunks(1 << 20).enumerate() {
        let offset = (index as u64) << 20;
        let data = client
            .read(offset, expected.len() as u32)
            .expect("read")
            .expect("a successful read");
        assert!(data == expected, "bytes at {offset} differ");
    }
}

#[test]
fn bad_clients_get_errors_or_are_dropped_while_another_is_served() {
    let images = Images::get();
    let served = Served::start(&images.compressed, &["--timeout", "2"]);
    let reference = images.reference(&images.compressed);
    let size = reference.len() as u64;
    let mut good = structured_client(&served.socket);

    // Oversized and out-of-range requests: NBD's errors, and the session goes on.
    let mut bold = structured_client(&served.socket);
    let (error, message) = bold.read(0, 64 << 20).expect("reply").unwrap_err();
    assert_eq!(error, reply::EOVERFLOW, "{message}");
    let (error, message) = bold.read(size - 512, 1024).expect("reply").unwrap_err();
    assert_eq!(error, reply::EINVAL, "{message}");
    let (error, _) = bold.block_status(size, 512, 0).expect("reply").unwrap_err();
    assert_eq!(error, reply::EINVAL);
    assert!(bold.read(0, 4096).expect("reply").expect("read") == reference[..4096]);

    // Leaves in the middle of a 32 MiB reply.
    let mut leaver = structured_client(&served.socket);
    leaver
        .send(request::READ, 0, 0, 32 << 20)
        .expect("send the read");
    let mut some = [0; 4096];
    leaver
        .stream()
        .read_exact(&mut some)
        .expect("the reply starts");
    drop(leaver);

    // Asks for 50 reads of 32 MiB and never reads a reply.
    let mut hog = structured_client(&served.socket);
    for _ in 0..50 {
        hog.send(request::READ, 0, 0, 32 << 20)
            .expect("send a read");
    }
    hog.stream().flush().expect("flush");

    let started = Instant::now();
    read_all(&mut good, &reference);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the good client waited {:?}",
        started.elapsed()
    );

    // After the 2 s timeout the hog is dropped: what it can read ends far
    // short of the 1.6 GB it asked for.
    thread::sleep(Duration::from_secs(4));
    let mut received = 0u64;
    let mut buf = vec![0; 1 << 20];
    loop {
        match hog.stream().read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(read) => received += read as u64,
        }
        assert!(received < 50 * (32 << 20), "the hog got every reply");
    }
    let stderr = served.stop_and_stderr();
    assert!(
        stderr.contains("did not finish its handshake or stopped taking a reply for"),
        "server log: {stderr}"
    );
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    let images = Images::get();
    for signal in ["-TERM", "-INT"] {
        let mut served = Served::start(&images.plain, &[]);
        // An idle client in transmission must not hold the server.
        let _idle = structured_client(&served.socket);
        let status = served.signal(signal);
        assert!(status.success(), "qcow serve after {signal}: {status:?}");
        assert!(
            !served.socket.exists(),
            "the socket file is left after {signal}"
        );
        assert!(
            !served.pid_file.exists(),
            "the pid file is left after {signal}"
        );
    }
}

#[test]
fn socket_of_a_running_server_is_not_taken_over() {
    let images = Images::get();
    let served = Served::start(&images.plain, &[]);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_qcow"))
        .args(["serve", path_text(&images.plain), "--socket"])
        .arg(&served.socket)
        .output()
        .expect("run qcow");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another server is listening"), "{stderr}");
    // The first server still serves.
    structured_client(&served.socket);
}

fn qcow(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qcow"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run qcow")
}

#[test]
fn help_states_the_memory_bound_per_connection() {
    let help = qcow(&["serve", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("at most about 1.7 MiB"), "{text}");
    assert!(text.contains("With TLS, 160 KiB more"), "{text}");
    assert!(text.contains("longer than 32 MiB"), "{text}");
}

#[test]
fn serve_without_a_listener_or_an_image_or_a_passphrase_is_refused() {
    let images = Images::get();
    let scratch = Scratch::new();
    let no_listener = qcow(&["serve", path_text(&images.plain)]);
    assert_eq!(no_listener.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&no_listener.stderr).contains("--socket"));

    let socket = scratch.path("s.sock");
    let missing = scratch.path("missing.qcow2");
    let output = qcow(&["serve", path_text(&missing), "--socket", path_text(&socket)]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("qcow: {}: ", missing.display())),
        "{stderr}"
    );

    // No terminal and no passphrase file: refused before listening.
    let output = qcow(&[
        "serve",
        path_text(&images.luks),
        "--socket",
        path_text(&socket),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--passphrase-file"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !socket.exists(),
        "a socket was created for an image that did not open"
    );
}
