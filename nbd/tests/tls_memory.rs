//! The heap one TLS session takes on the server's side, measured: what
//! TLS adds to the same session in the clear stays within
//! `tls::TLS_BUFFER_BYTES`, and the whole within what
//! `ServeOptions::connection_bytes` states (less the thread's stack, which
//! is not heap), through a handshake with a client certificate and reads
//! of the largest size. A test binary of its own:
//! `allocation-counter` replaces the global allocator and counts the
//! allocations of the measuring thread only.

use std::io::{self, BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;

use qcow2_nbd::client::Client;
use qcow2_nbd::session::Handshake;
use qcow2_nbd::tls::TLS_BUFFER_BYTES;
use qcow2_nbd::{Export, Limits, Run, ServeOptions, Session, TlsConfig, TlsMode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const SIZE: u64 = 64 << 20;

/// 64 MiB of `offset % 251`, all data.
struct Pattern;

impl Export for Pattern {
    fn size(&self) -> u64 {
        SIZE
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (at, byte) in (offset..).zip(buf.iter_mut()) {
            *byte = (at % 251) as u8;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        Ok(Run {
            len: max_len.min(SIZE - offset),
            hole: false,
            zero: false,
        })
    }
}

/// The client: STARTTLS with its certificate if `tls`, structured
/// replies, two 32 MiB reads, then it leaves.
fn client(stream: UnixStream, tls: bool) {
    let client = Client::greet(stream).unwrap();
    if tls {
        reads(start_tls(client));
    } else {
        reads(client);
    }
}

fn reads<S: io::Read + io::Write>(mut client: Client<S>) {
    assert!(client.structured_replies().unwrap());
    client.go("").unwrap().unwrap();
    for offset in [0, 32 << 20] {
        let data = client.read(offset, 32 << 20).unwrap().unwrap();
        assert_eq!(data.len(), 32 << 20);
        assert_eq!(data[1000], ((offset + 1000) % 251) as u8);
    }
}

fn start_tls(
    client: Client<UnixStream>,
) -> Client<rustls::StreamOwned<rustls::ClientConnection, UnixStream>> {
    let certificates = qcow2_testkit::tls::certificates();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certificates.ca_cert).unwrap())
        .unwrap();
    let dir = &certificates.client_dir;
    let chain = vec![CertificateDer::from_pem_file(dir.join("client-cert.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("client-key.pem")).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    );
    client
        .start_tls(|socket| {
            let name = ServerName::try_from("localhost").unwrap();
            let connection =
                rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
            Ok(rustls::StreamOwned::new(connection, socket))
        })
        .unwrap()
}

/// The server's side as the listener runs it: plain buffers for the
/// handshake, then, with `config`, TLS with the listener's buffer sizes.
fn serve(stream: &UnixStream, config: Option<&TlsConfig>) {
    let mode = if config.is_some() {
        TlsMode::Require
    } else {
        TlsMode::Off
    };
    let mut session = Session::new(&Pattern, "", Limits::default()).with_tls(mode);
    let mut reader = BufReader::with_capacity(4 << 10, stream);
    let mut writer = BufWriter::with_capacity(64 << 10, stream);
    let outcome = session.handshake(&mut reader, &mut writer).unwrap();
    let Some(config) = config else {
        assert_eq!(outcome, Handshake::Transmission);
        session.transmission(&mut reader, &mut writer).unwrap();
        return;
    };
    assert_eq!(outcome, Handshake::StartTls);
    drop(writer);
    let tls = config.accept(stream).unwrap();
    session.tls_started();
    let mut reader = tls.reader();
    let mut writer = BufWriter::with_capacity(64 << 10, tls.writer());
    assert_eq!(
        session.options(&mut reader, &mut writer).unwrap(),
        Handshake::Transmission
    );
    session.transmission(&mut reader, &mut writer).unwrap();
}

#[test]
fn tls_session_heap_stays_within_the_stated_connection_bytes() {
    let certificates = qcow2_testkit::tls::certificates();
    let config = TlsConfig::from_pem_files(
        &certificates.server_cert,
        &certificates.server_key,
        Some(&certificates.ca_cert),
    )
    .unwrap();
    let peak = |config: Option<&TlsConfig>| {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let tls = config.is_some();
        let client = thread::spawn(move || client(client_end, tls));
        let measured = allocation_counter::measure(|| serve(&server_end, config));
        client.join().unwrap();
        measured.bytes_max
    };
    let clear = peak(None);
    let tls = peak(Some(&config));
    let options = ServeOptions {
        tls: TlsMode::Require,
        ..ServeOptions::default()
    };
    let stated = (options.connection_bytes() - options.stack_bytes) as u64;
    println!(
        "peak heap of a session: {clear} bytes in the clear, {tls} over TLS ({} more); \
         stated with TLS: {stated}, TLS_BUFFER_BYTES {TLS_BUFFER_BYTES}",
        tls - clear
    );
    assert!(
        tls <= stated,
        "peak heap {tls} bytes over the stated {stated}"
    );
    assert!(
        tls - clear <= TLS_BUFFER_BYTES as u64,
        "TLS took {} bytes more, over the stated {TLS_BUFFER_BYTES}",
        tls - clear
    );
}
