//! `qcow serve --tls-cert --tls-key` read by the reference clients over
//! TLS: `qemu-img` with `tls-creds-x509` and libnbd's `nbdinfo`/`nbdcopy`
//! with `nbds://` read the export as the image; plaintext clients are
//! refused with NBD_REP_ERR_TLS_REQD; `--tls-ca` lets only clients with a
//! certificate of that CA in. Certificates: `qcow2_testkit::tls` (openssl).

use std::path::Path;

use qcow2_testkit::tls::certificates;
use qcow2_testkit::{assert_same, output_in, run, Scratch};

use crate::images::Images;
use crate::path_text;
use crate::server::Served;

/// `qcow serve IMAGE --bind 127.0.0.1:PORT` with the test's certificate
/// and `args`; the address.
fn serve_tls(image: &Path, args: &[&str]) -> (Served, String) {
    // A port free a moment ago; the server binds it right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let certificates = certificates();
    let mut all = vec![
        "--bind",
        &address,
        "--tls-cert",
        path_text(&certificates.server_cert),
        "--tls-key",
        path_text(&certificates.server_key),
    ];
    all.extend(args);
    let served = Served::start_listening(image, &all, false);
    (served, address)
}

/// QEMU's client TLS credentials from `dir` and the export at `address`.
fn qemu_tls_args(dir: &Path, address: &str) -> [String; 4] {
    let (host, port) = address.split_once(':').expect("HOST:PORT");
    [
        "--object".to_string(),
        format!(
            "tls-creds-x509,id=tls0,endpoint=client,dir={}",
            path_text(dir)
        ),
        "--image-opts".to_string(),
        format!("driver=nbd,host={host},port={port},tls-creds=tls0"),
    ]
}

/// `nbds://ADDRESS/?tls-certificates=DIR`.
fn nbds_uri(address: &str, dir: &Path) -> String {
    format!("nbds://{address}/?tls-certificates={}", path_text(dir))
}

#[test]
fn qemu_img_reads_a_tls_export_as_the_image() {
    let images = Images::get();
    let (_served, address) = serve_tls(&images.compressed, &[]);
    let scratch = Scratch::new();
    let out = scratch.path("from-tls.raw");
    let [object, creds, image_opts, image] = qemu_tls_args(&certificates().anonymous_dir, &address);
    run(
        "qemu-img",
        &[
            "convert",
            &object,
            &creds,
            "-O",
            "raw",
            &image_opts,
            &image,
            path_text(&out),
        ],
    );
    assert_same(
        &images.reference(&images.compressed),
        &std::fs::read(&out).expect("qemu-img's output"),
        "zstd image through qcow serve over TLS",
    );
    let info = run(
        "qemu-img",
        &[
            "info",
            "--output=json",
            &object,
            &creds,
            &image_opts,
            &image,
        ],
    );
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("qemu-img's JSON");
    assert_eq!(info["virtual-size"].as_u64(), Some(64 << 20), "{info}");
}

#[test]
fn nbdcopy_and_nbdinfo_read_a_tls_export_as_the_image() {
    let images = Images::get();
    let (_served, address) = serve_tls(&images.overlay, &[]);
    let uri = nbds_uri(&address, &certificates().anonymous_dir);
    let scratch = Scratch::new();
    let out = scratch.path("nbdcopy.raw");
    run("nbdcopy", &[&uri, path_text(&out)]);
    assert_same(
        &images.reference(&images.overlay),
        &std::fs::read(&out).expect("nbdcopy's output"),
        "nbdcopy of the backing chain over TLS",
    );
    let info = run("nbdinfo", &["--json", &uri]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("nbdinfo's JSON");
    assert_eq!(info["TLS"].as_bool(), Some(true), "{info}");
}

#[test]
fn plaintext_clients_of_a_tls_require_server_are_refused_with_tls_reqd() {
    let images = Images::get();
    let (served, address) = serve_tls(&images.plain, &["--tls", "require"]);
    // libnbd reports the refusal of NBD_OPT_GO as ENOTSUP; its debug log
    // has the server's message, sent with NBD_REP_ERR_TLS_REQD.
    let refused = std::process::Command::new("nbdinfo")
        .arg(format!("nbd://{address}"))
        .env("LIBNBD_DEBUG", "1")
        .output()
        .expect("run nbdinfo");
    assert!(!refused.status.success(), "nbdinfo in the clear succeeded");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("server error message: NBD_OPT_GO refused: this server requires TLS"),
        "nbdinfo said: {stderr}"
    );
    let refused = output_in(
        None,
        "qemu-img",
        &["info", "-f", "raw", &format!("nbd://{address}")],
    );
    assert!(!refused.status.success(), "qemu-img in the clear succeeded");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // QEMU's words for NBD_REP_ERR_TLS_REQD (nbd/client.c).
    assert!(
        stderr.contains("TLS negotiation required before option 7 (go)"),
        "qemu-img said: {stderr}"
    );
    // Refusing them is not an error of the server's.
    let log = served.stop_and_stderr();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn tls_on_serves_clients_with_and_without_tls() {
    let images = Images::get();
    let (_served, address) = serve_tls(&images.plain, &["--tls", "on"]);
    let scratch = Scratch::new();
    for (uri, out) in [
        (format!("nbd://{address}"), scratch.path("clear.raw")),
        (
            nbds_uri(&address, &certificates().anonymous_dir),
            scratch.path("tls.raw"),
        ),
    ] {
        run("nbdcopy", &[&uri, path_text(&out)]);
        assert_same(
            &images.reference(&images.plain),
            &std::fs::read(&out).expect("nbdcopy's output"),
            &uri,
        );
    }
}

#[test]
fn tls_ca_lets_in_only_clients_with_a_certificate_of_that_ca() {
    let images = Images::get();
    let certificates = certificates();
    let (_served, address) = serve_tls(
        &images.plain,
        &["--tls-ca", path_text(&certificates.ca_cert)],
    );
    let anonymous = output_in(
        None,
        "nbdinfo",
        &["--size", &nbds_uri(&address, &certificates.anonymous_dir)],
    );
    assert!(
        !anonymous.status.success(),
        "a client without a certificate was let in"
    );
    let admitted = run(
        "nbdinfo",
        &["--size", &nbds_uri(&address, &certificates.client_dir)],
    );
    assert_eq!(String::from_utf8_lossy(&admitted.stdout).trim(), "67108864");
}

#[test]
fn tls_options_without_a_certificate_or_with_a_bad_one_are_refused_at_start() {
    let images = Images::get();
    let qcow = env!("CARGO_BIN_EXE_qcow");
    let image = path_text(&images.plain);
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("s.sock");
    let socket = path_text(&socket);
    let no_cert = output_in(
        None,
        qcow,
        &["serve", image, "--socket", socket, "--tls", "on"],
    );
    assert!(!no_cert.status.success());
    let stderr = String::from_utf8_lossy(&no_cert.stderr);
    assert!(
        stderr.contains("--tls-cert FILE and --tls-key FILE"),
        "{stderr}"
    );
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not PEM").expect("write");
    let key = path_text(&certificates().server_key);
    let bad = output_in(
        None,
        qcow,
        &[
            "serve",
            image,
            "--socket",
            socket,
            "--tls-cert",
            path_text(&bogus),
            "--tls-key",
            key,
        ],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("bogus.pem"), "{stderr}");
}
