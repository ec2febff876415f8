//! TLS for the listener's connections (`NBD_OPT_STARTTLS`), through rustls
//! with the `ring` provider (the one `qcow2-http` uses): the server's
//! configuration from PEM files, and a connection's TLS stream split into
//! the reader and the writer a [`Session`](crate::Session) takes.
//!
//! Memory: rustls bounds what it holds per connection; this module states
//! it as [`TLS_BUFFER_BYTES`] and sets the one limit that is settable.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// Encrypted bytes waiting for the socket, at most (rustls's default,
/// set explicitly so that the memory stated here stays true).
const SEND_BUFFER_BYTES: usize = 64 << 10;

/// The most memory one TLS connection's state takes, as rustls 0.23 bounds
/// it: the send buffer (64 KiB), the received records being reassembled (a
/// handshake message is at most 64 KiB, a record 16 KiB plus its header and
/// tag), decrypted bytes not yet read (rustls stops reading at 16 KiB), and
/// the handshake state with the certificates (a few KiB; the server's own
/// chain is shared by every connection).
pub const TLS_BUFFER_BYTES: usize = SEND_BUFFER_BYTES + (64 << 10) + (16 << 10) + (16 << 10);

/// The server's TLS: its certificate and key, and which clients it lets in.
#[derive(Clone)]
pub struct TlsConfig(Arc<ServerConfig>);

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig")
    }
}

/// Why a TLS configuration could not be made: the file and what is wrong.
#[derive(Debug)]
pub struct TlsConfigError {
    /// The file at fault (`None`: the certificate and key do not go together).
    pub file: Option<std::path::PathBuf>,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TlsConfigError {}

fn file_error(file: &Path, message: impl fmt::Display) -> TlsConfigError {
    TlsConfigError {
        file: Some(file.to_path_buf()),
        message: message.to_string(),
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certificates = CertificateDer::pem_file_iter(file)
        .map_err(|error| file_error(file, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(file, error))?;
    if certificates.is_empty() {
        return Err(file_error(
            file,
            "no PEM certificate (BEGIN CERTIFICATE) in it",
        ));
    }
    Ok(certificates)
}

impl TlsConfig {
    /// The server's certificate chain from `certificate` (PEM, the server's
    /// certificate first), its private key from `key` (PEM: PKCS #8, PKCS #1
    /// or SEC1); with `client_ca`, clients must present a certificate
    /// signed by one of that file's certificates (as qemu-nbd's
    /// `verify-peer=on`), else no client certificate is asked for.
    pub fn from_pem_files(
        certificate: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, TlsConfigError> {
        let chain = certificates(certificate)?;
        let private_key =
            PrivateKeyDer::from_pem_file(key).map_err(|error| file_error(key, error))?;
        // rustls 0.23.48 deprecates ring's provider for lacking
        // post-quantum key exchange; it is the provider the rest of the
        // tree builds (ureq), and the NBD clients (GnuTLS in QEMU and
        // libnbd) agree on X25519 or P-256 with it.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsConfigError {
                file: None,
                message: error.to_string(),
            })?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for certificate in certificates(ca)? {
                    roots
                        .add(certificate)
                        .map_err(|error| file_error(ca, error))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|error| file_error(ca, error))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, private_key)
            .map_err(|error| TlsConfigError {
                file: None,
                message: format!(
                    "the certificate {} and the key {} do not go together: {error}",
                    certificate.display(),
                    key.display()
                ),
            })?;
        Ok(Self(Arc::new(config)))
    }

    /// A new server side of a TLS connection over `socket`.
    pub fn accept<S: Read + Write>(&self, socket: S) -> io::Result<TlsStream<S>> {
        let mut connection = ServerConnection::new(self.0.clone()).map_err(io::Error::other)?;
        connection.set_buffer_limit(Some(SEND_BUFFER_BYTES));
        Ok(TlsStream(RefCell::new(StreamOwned::new(
            connection, socket,
        ))))
    }
}

/// One connection's TLS stream. The session reads and writes it through
/// [`TlsStream::reader`] and [`TlsStream::writer`], one at a time (a
/// connection's thread serves one request at a time).
pub struct TlsStream<S: Read + Write>(RefCell<StreamOwned<ServerConnection, S>>);

impl<S: Read + Write> TlsStream<S> {
    /// The reading half.
    pub fn reader(&self) -> TlsReader<'_, S> {
        TlsReader(&self.0)
    }

    /// The writing half.
    pub fn writer(&self) -> TlsWriter<'_, S> {
        TlsWriter(&self.0)
    }

    /// The socket under TLS.
    pub fn with_socket<T>(&self, change: impl FnOnce(&mut S) -> T) -> T {
        change(&mut self.0.borrow_mut().sock)
    }

    /// Sends TLS's close_notify, as the protocol asks before closing;
    /// best effort (the client may be gone).
    pub fn close(&self) {
        let mut stream = self.0.borrow_mut();
        stream.conn.send_close_notify();
        let StreamOwned { conn, sock } = &mut *stream;
        let _ = conn.complete_io(sock);
    }
}

/// The reading half of a [`TlsStream`].
pub struct TlsReader<'t, S: Read + Write>(&'t RefCell<StreamOwned<ServerConnection, S>>);

impl<S: Read + Write> Read for TlsReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut stream = self.0.borrow_mut();
        let handshaking = stream.conn.is_handshaking();
        match stream.read(buf) {
            // A client that closes the socket without close_notify: the
            // session tells a clean leave (between messages) from a cut
            // (inside one) itself, as on a plain socket; a truncation
            // cannot make a read-only server do anything it should not.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof && !handshaking => Ok(0),
            Err(error) if handshaking => Err(io::Error::new(
                error.kind(),
                format!("TLS handshake failed: {error}"),
            )),
            other => other,
        }
    }
}

/// The writing half of a [`TlsStream`].
pub struct TlsWriter<'t, S: Read + Write>(&'t RefCell<StreamOwned<ServerConnection, S>>);

impl<S: Read + Write> Write for TlsWriter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}
