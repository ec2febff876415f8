//! X.509 certificates for the TLS tests, made by `openssl` (Debian's
//! `openssl` package) once per test process: a CA, a server certificate for
//! `localhost` and 127.0.0.1, and a client certificate, in the directory
//! layouts QEMU's `tls-creds-x509` and libnbd's `tls-certificates` read
//! (`ca-cert.pem`, `client-cert.pem`, `client-key.pem`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::run_in;

/// The certificates, in their directories.
pub struct Certificates {
    _dir: tempfile::TempDir,
    /// The server's certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
    /// The CA's certificate (what `--tls-ca` takes to check clients).
    pub ca_cert: PathBuf,
    /// A client's directory with the CA and a client certificate and key.
    pub client_dir: PathBuf,
    /// A client's directory with the CA only (no client certificate).
    pub anonymous_dir: PathBuf,
}

/// The test process's certificates, made on first use.
pub fn certificates() -> &'static Certificates {
    static CERTIFICATES: OnceLock<Certificates> = OnceLock::new();
    CERTIFICATES.get_or_init(make)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A P-256 key and a certificate for `subject` signed by the CA, with the
/// extensions of `extensions` (an `openssl x509 -extfile`).
fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let extfile = dir.join(format!("{name}.ext"));
    std::fs::write(&extfile, extensions).expect("write the extensions");
    let key = format!("{name}-key.pem");
    let request = format!("{name}.csr");
    let certificate = format!("{name}-cert.pem");
    run_in(
        Some(dir),
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &request,
            "-subj",
            subject,
        ],
    );
    run_in(
        Some(dir),
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            text(&extfile),
            "-out",
            &certificate,
        ],
    );
}

fn make() -> Certificates {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    run_in(
        Some(root),
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca-cert.pem",
            "-days",
            "2",
            "-sha256",
            "-subj",
            "/CN=qcow test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    // GnuTLS (QEMU, libnbd) checks the name the client connected to
    // against the subject alternative names, and the key usages.
    issue(
        root,
        "server",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    );
    issue(
        root,
        "client",
        "/CN=qcow test client",
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    );
    let client_dir = root.join("client");
    let anonymous_dir = root.join("anonymous");
    for dir in [&client_dir, &anonymous_dir] {
        std::fs::create_dir(dir).expect("a client directory");
        std::fs::copy(root.join("ca-cert.pem"), dir.join("ca-cert.pem")).expect("copy the CA");
    }
    for file in ["client-cert.pem", "client-key.pem"] {
        std::fs::copy(root.join(file), client_dir.join(file)).expect("copy the client's files");
    }
    Certificates {
        server_cert: root.join("server-cert.pem"),
        server_key: root.join("server-key.pem"),
        ca_cert: root.join("ca-cert.pem"),
        client_dir,
        anonymous_dir,
        _dir: dir,
    }
}
