//! Images read straight from a web server: nginx (Debian's `nginx-light`,
//! started here on a free local port) serving images made by `qemu-img`,
//! read by `qcow` byte-identical to `qemu-img convert` of the local files;
//! and a tiny server in this file that misbehaves on demand (ignores
//! `Range`, changes the object between requests, answers 503, drops the
//! connection mid-body), each a named error or recovered as specified.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{qcow, qcow_ok, qemu_img, qemu_io, qemu_raw, text, Scratch};
use qcow2_testkit::assert_same;

/// nginx serving a directory on a free local port, stopped when dropped.
struct Nginx {
    server: qcow2_testkit::nginx::Nginx,
    _conf: Scratch,
}

impl Nginx {
    /// Serves `root`; `/moved/top.qcow2` redirects (302) to `/images/top.qcow2`.
    fn serve(root: &Path) -> Self {
        let conf = Scratch::new();
        let redirect = qcow2_testkit::nginx::Server {
            tls: None,
            directives: "location = /moved/top.qcow2 { return 302 /images/top.qcow2; }".into(),
        };
        let server = qcow2_testkit::nginx::Nginx::serve(root, conf.dir(), &[redirect]);
        Self {
            server,
            _conf: conf,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.server.port(0))
    }
}

/// Pseudo-random bytes (xorshift): clusters that do not compress, so the
/// compressed image spans many read-ahead blocks.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        bytes.extend_from_slice(&seed.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// `images/` with a compressed image, and a chain `top.qcow2` over
/// `base.qcow2` named relatively; `images/sub/escape.qcow2` names
/// `../base.qcow2`.
fn images() -> Scratch {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("images/sub")).unwrap();
    let mut raw = noise(3 << 20, 0x9e37_79b9_7f4a_7c15);
    raw.extend(std::iter::repeat_n(0x5a, 2 << 20));
    raw.extend(noise(1 << 20, 7));
    let raw_path = scratch.path("source.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    for (name, options) in [
        ("images/compressed.qcow2", "compression_type=zlib"),
        ("images/zstd.qcow2", "compression_type=zstd"),
    ] {
        let path = scratch.path(name);
        qemu_img(&[
            "convert",
            "-q",
            "-c",
            "-O",
            "qcow2",
            "-o",
            options,
            text(&raw_path),
            text(&path),
        ]);
    }
    let base = scratch.create("images/base.qcow2", "8M", "");
    qemu_io(&base, &["write -P 0x11 0 5M", "write -P 0x33 7M 64k"]);
    scratch.create_on("images/top.qcow2", "base.qcow2", "qcow2");
    qemu_io(
        &scratch.path("images/top.qcow2"),
        &["write -P 0x22 1M 2M", "write -z 4M 64k"],
    );
    scratch.create_on("images/sub/escape.qcow2", "../base.qcow2", "qcow2");
    scratch
}

fn stderr_of(args: &[&str]) -> String {
    let output = qcow(args);
    assert_eq!(output.status.code(), Some(1), "qcow {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn cat_and_convert_over_http_equal_qemu_img_of_the_local_files() {
    let scratch = images();
    let nginx = Nginx::serve(scratch.dir());
    for name in ["compressed.qcow2", "zstd.qcow2", "top.qcow2"] {
        let local = scratch.path(&format!("images/{name}"));
        let expected = qemu_raw(&scratch, &local, &[]);
        let url = nginx.url(&format!("images/{name}"));
        for readahead in ["64K", "2M"] {
            let cat = qcow_ok(&["--http-readahead", readahead, "cat", &url]);
            assert_same(&expected, &cat, &format!("qcow cat {url} ({readahead})"));
            let out = scratch.path("out.raw");
            qcow_ok(&[
                "--http-readahead",
                readahead,
                "--http-connections",
                "3",
                "convert",
                "--threads",
                "3",
                &url,
                text(&out),
            ]);
            let converted = std::fs::read(&out).unwrap();
            assert_same(
                &expected,
                &converted,
                &format!("qcow convert {url} ({readahead})"),
            );
        }
    }
}

#[test]
fn info_over_http_names_the_chain_by_url_with_the_backing_resolved_against_it() {
    let scratch = images();
    let nginx = Nginx::serve(scratch.dir());
    let info = qcow_ok(&["info", "--json", &nginx.url("images/top.qcow2")]);
    let chain: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(chain[0]["filename"], nginx.url("images/top.qcow2"));
    assert_eq!(chain[0]["backing-filename"], "base.qcow2");
    assert_eq!(
        chain[0]["full-backing-filename"],
        nginx.url("images/base.qcow2")
    );
    assert_eq!(chain[1]["filename"], nginx.url("images/base.qcow2"));
    assert_eq!(chain.as_array().unwrap().len(), 2);
    // `check` reports on the object as on the local file.
    let local = scratch.path("images/top.qcow2");
    assert_eq!(
        qcow_ok(&["check", &nginx.url("images/top.qcow2")]),
        qcow_ok(&["check", text(&local)])
    );
    // `map` names the layer each run comes from by its URL, as qemu-img map names files.
    let map = String::from_utf8(qcow_ok(&["map", &nginx.url("images/top.qcow2")])).unwrap();
    assert!(map.contains(&nginx.url("images/base.qcow2")), "{map}");
    assert!(map.contains(&nginx.url("images/top.qcow2")), "{map}");
}

#[test]
fn a_redirect_is_followed_and_backing_names_resolve_from_where_it_leads() {
    let scratch = images();
    let nginx = Nginx::serve(scratch.dir());
    // `/moved/` holds no base.qcow2: read right only from the final location.
    let cat = qcow_ok(&["cat", &nginx.url("moved/top.qcow2")]);
    let expected = qemu_raw(&scratch, &scratch.path("images/top.qcow2"), &[]);
    assert_same(&expected, &cat, "qcow cat through a redirect");
}

#[test]
fn a_missing_url_is_an_error_naming_it_and_the_status() {
    let scratch = images();
    let nginx = Nginx::serve(scratch.dir());
    let url = nginx.url("images/absent.qcow2");
    let stderr = stderr_of(&["cat", &url]);
    assert!(
        stderr.contains(&url) && stderr.contains("404 Not Found"),
        "{stderr}"
    );
}

#[test]
fn same_dir_refuses_a_backing_url_outside_the_image_directory() {
    let scratch = images();
    let nginx = Nginx::serve(scratch.dir());
    let url = nginx.url("images/sub/escape.qcow2");
    let stderr = stderr_of(&["--follow", "same-dir", "cat", &url]);
    assert!(
        stderr.contains("refused by the follow policy same-dir")
            && stderr.contains(&nginx.url("images/base.qcow2"))
            && stderr.contains(&nginx.url("images/sub/")),
        "{stderr}"
    );
    // Under `any` the same chain reads as QEMU reads the local files.
    let cat = qcow_ok(&["--follow", "any", "cat", &url]);
    let expected = qemu_raw(&scratch, &scratch.path("images/sub/escape.qcow2"), &[]);
    assert_same(&expected, &cat, "qcow cat --follow any");
    // Under `none` the image alone: the backing file reads as zeros.
    let alone = qcow_ok(&["--follow", "none", "cat", &url]);
    assert!(alone.iter().all(|&byte| byte == 0));
}

#[test]
fn a_local_image_naming_a_backing_url_reads_it_over_http_under_follow_any_only() {
    let scratch = images();
    let nginx = Nginx::serve(scratch.dir());
    // A local overlay of the served base: made on the local copy (what QEMU
    // reads as the reference), then pointed at the URL without opening it.
    let overlay = scratch.create_on("local.qcow2", "images/base.qcow2", "qcow2");
    qemu_io(&overlay, &["write -P 0x44 2M 1M"]);
    let expected = qemu_raw(&scratch, &overlay, &[]);
    let base_url = nginx.url("images/base.qcow2");
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        &base_url,
        "-F",
        "qcow2",
        text(&overlay),
    ]);

    // `any` (the default, QEMU's behaviour): the base comes from the server.
    let cat = qcow_ok(&["cat", text(&overlay)]);
    assert_same(&expected, &cat, "qcow cat of a local overlay over a URL");
    let info = qcow_ok(&["info", "--json", text(&overlay)]);
    let chain: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(chain[1]["filename"], base_url.as_str(), "{chain}");
    // No other policy lets a name lead off the machine.
    for policy in ["same-dir", "none"] {
        let output = qcow(&["--follow", policy, "cat", text(&overlay)]);
        if policy == "none" {
            // The overlay alone: what it wrote, zeros elsewhere.
            assert!(output.status.success());
            assert!(output.stdout[..2 << 20].iter().all(|&byte| byte == 0));
            assert!(output.stdout[2 << 20..3 << 20]
                .iter()
                .all(|&byte| byte == 0x44));
        } else {
            assert_eq!(output.status.code(), Some(1), "--follow {policy}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(&base_url), "--follow {policy}: {stderr}");
        }
    }
}

#[test]
fn files_inside_an_image_over_http_read_as_from_the_local_file() {
    let disks = qcow2_testkit::made_disks();
    let nginx = Nginx::serve(disks);
    let local = disks.join("gpt-base.qcow2");
    let url = nginx.url("gpt-base.qcow2");
    assert_eq!(qcow_ok(&["parts", &url]), qcow_ok(&["parts", text(&local)]));
    assert_eq!(
        qcow_ok(&["ls", &url, "2:/"]),
        qcow_ok(&["ls", text(&local), "2:/"])
    );
    let big = std::fs::read(disks.join("tree-ext-v1/big.bin")).unwrap();
    for threads in ["1", "3"] {
        let got = qcow_ok(&["get", "--threads", threads, &url, "2:/big.bin"]);
        assert_same(&big, &got, &format!("qcow get --threads {threads}"));
    }
}

/// How the tiny server misbehaves.
#[derive(Debug, Clone, Copy)]
enum Misbehave {
    /// Answers every GET with 200 and the whole object.
    IgnoreRange,
    /// Gives `ETag: "v2"` from the request with this index on (0 is the HEAD), ignoring `If-Match`.
    ChangeAfter(usize),
    /// Answers the first GETs with 503, this many.
    Unavailable(usize),
    /// Sends half of the first GET's body, then closes the connection.
    DropFirstBody,
}

/// A one-thread HTTP/1.1 server of one object on a local port, one
/// request per connection, at most 500 requests.
struct TinyServer {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl TinyServer {
    fn start(object: Vec<u8>, how: Misbehave) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        thread::spawn(move || {
            let mut gets = 0;
            for stream in listener.incoming().take(500) {
                let Ok(stream) = stream else { continue };
                let index = counted.fetch_add(1, Ordering::SeqCst);
                answer(stream, &object, how, index, &mut gets);
            }
        });
        Self { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/image.qcow2", self.port)
    }
}

fn answer(stream: TcpStream, object: &[u8], how: Misbehave, index: usize, gets: &mut usize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("range: bytes=") {
            let (first, last) = value.trim().split_once('-').unwrap();
            range = Some((
                first.parse::<usize>().unwrap(),
                last.parse::<usize>().unwrap(),
            ));
        }
    }
    let etag = match how {
        Misbehave::ChangeAfter(from) if index >= from => "\"v2\"",
        _ => "\"v1\"",
    };
    let mut out = &stream;
    let head = |status: &str, length: usize, extra: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nETag: {etag}\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    if request.starts_with("HEAD") {
        let _ = out.write_all(head("200 OK", object.len(), "").as_bytes());
        return;
    }
    *gets += 1;
    match (how, range) {
        (Misbehave::Unavailable(times), _) if *gets <= times => {
            let _ = out.write_all(head("503 Service Unavailable", 0, "").as_bytes());
        }
        (Misbehave::IgnoreRange, _) | (_, None) => {
            let _ = out.write_all(head("200 OK", object.len(), "").as_bytes());
            let _ = out.write_all(object);
        }
        (_, Some((first, last))) => {
            let last = last.min(object.len() - 1);
            let body = &object[first..=last];
            let extra = format!("Content-Range: bytes {first}-{last}/{}\r\n", object.len());
            let _ = out.write_all(head("206 Partial Content", body.len(), &extra).as_bytes());
            let body = match how {
                Misbehave::DropFirstBody if *gets == 1 => &body[..body.len() / 2],
                _ => body,
            };
            let _ = out.write_all(body);
        }
    }
    // Drain what the client sends, so the close is not a reset before it reads.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = reader.read(&mut [0u8; 64]);
}

/// The compressed image of [`images`], its bytes and its disk as QEMU reads it.
fn compressed() -> (Vec<u8>, Vec<u8>) {
    let scratch = images();
    let path = scratch.path("images/compressed.qcow2");
    (
        std::fs::read(&path).unwrap(),
        qemu_raw(&scratch, &path, &[]),
    )
}

#[test]
fn a_server_ignoring_range_is_an_error_naming_the_url_and_what_it_did() {
    let (object, _) = compressed();
    let server = TinyServer::start(object, Misbehave::IgnoreRange);
    let stderr = stderr_of(&["--http-readahead", "256K", "cat", &server.url()]);
    assert!(
        stderr.contains(&server.url())
            && stderr.contains("ignores range requests")
            && stderr.contains("200 with the whole object"),
        "{stderr}"
    );
}

#[test]
fn an_object_changing_between_requests_is_an_error_never_mixed_bytes() {
    let (object, expected) = compressed();
    let server = TinyServer::start(object, Misbehave::ChangeAfter(2));
    let url = server.url();
    let output = qcow(&["--http-readahead", "256K", "cat", &url]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&url)
            && stderr.contains("changed on the server")
            && stderr.contains("ETag was \"v1\", now \"v2\""),
        "{stderr}"
    );
    // What was written before the error is the first version's.
    assert!(expected.starts_with(&output.stdout));
    assert!(output.stdout.len() < expected.len());
}

#[test]
fn answers_503_are_retried_and_the_read_completes() {
    let (object, expected) = compressed();
    let server = TinyServer::start(object, Misbehave::Unavailable(2));
    let cat = qcow_ok(&["--http-readahead", "256K", "cat", &server.url()]);
    assert_same(&expected, &cat, "qcow cat after two 503s");
    // The HEAD, two 503s, then the blocks.
    assert!(server.requests.load(Ordering::SeqCst) > 3);
}

#[test]
fn a_connection_dropped_mid_body_is_retried_and_the_read_completes() {
    let (object, expected) = compressed();
    let server = TinyServer::start(object, Misbehave::DropFirstBody);
    let cat = qcow_ok(&["--http-readahead", "256K", "cat", &server.url()]);
    assert_same(&expected, &cat, "qcow cat after a dropped body");
}

#[test]
fn http_options_out_of_range_are_refused_by_name() {
    let stderr = stderr_of(&["--http-readahead", "4M", "cat", "http://127.0.0.1:1/x"]);
    assert!(stderr.contains("read-ahead"), "{stderr}");
}

/// `qcow` with `SSL_CERT_FILE` set to `ca` (the system's trust, as curl
/// reads it), or to an empty bundle when `None`.
fn qcow_trusting(ca: Option<&Path>, scratch: &Scratch, args: &[&str]) -> std::process::Output {
    let empty = scratch.path("no-ca.pem");
    std::fs::write(&empty, b"").unwrap();
    Command::new(env!("CARGO_BIN_EXE_qcow"))
        .args(args)
        .env("SSL_CERT_FILE", ca.unwrap_or(&empty))
        .env_remove("SSL_CERT_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run qcow")
}

/// `https://` against a real TLS server (nginx with the tests' CA's
/// certificate for localhost): trusted through the system's trust
/// (`SSL_CERT_FILE`, as curl), the chain reads as `qemu-img convert` of the
/// local files; a server the system does not trust is an error naming the
/// URL and the certificate, never bytes.
#[test]
fn https_reads_through_the_systems_trust_and_refuses_an_untrusted_server() {
    let scratch = images();
    let certificates = qcow2_testkit::tls::certificates();
    let server = qcow2_testkit::nginx::Nginx::serve(
        scratch.dir(),
        &scratch.path("nginx-tls"),
        &[qcow2_testkit::nginx::Server {
            tls: Some((
                certificates.server_cert.clone(),
                certificates.server_key.clone(),
            )),
            directives: String::new(),
        }],
    );
    let url = format!("https://localhost:{}/images/top.qcow2", server.port(0));
    let expected = qemu_raw(&scratch, &scratch.path("images/top.qcow2"), &[]);
    let trusted = qcow_trusting(Some(&certificates.ca_cert), &scratch, &["cat", &url]);
    assert!(
        trusted.status.success(),
        "qcow cat {url}: {}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_same(&expected, &trusted.stdout, &format!("qcow cat {url}"));

    let untrusted = qcow_trusting(None, &scratch, &["cat", &url]);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(
        untrusted.stdout.is_empty(),
        "bytes from an untrusted server"
    );
    assert!(
        stderr.contains(&url) && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
}
