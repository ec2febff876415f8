//! The server's answers to what the protocol calls errors, each over a real
//! unix socket against an export in memory: every refusal is the error the
//! protocol names, and the session (or, for another client, the server)
//! goes on serving afterwards. Interoperability with the reference clients
//! is `cli/tests/serve`.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use qcow2_nbd::client::Client;
use qcow2_nbd::listener::{serve, Listener, ServeOptions, Stop, StopHandle};
use qcow2_nbd::wire::option;
use qcow2_nbd::wire::option_reply;
use qcow2_nbd::wire::reply::{self, Descriptor, STATE_HOLE, STATE_ZERO};
use qcow2_nbd::wire::request;
use qcow2_nbd::{Export, Run, TlsConfig, TlsMode};

const SIZE: u64 = 1 << 20;
const HOLE: std::ops::Range<u64> = (64 << 10)..(192 << 10);

/// 1 MiB: bytes `offset % 251` except a hole at 64-192 KiB that reads as zeros.
struct Memory;

impl Export for Memory {
    fn size(&self) -> u64 {
        SIZE
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (at, byte) in (offset..).zip(buf.iter_mut()) {
            *byte = if HOLE.contains(&at) {
                0
            } else {
                (at % 251) as u8
            };
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        let (end, hole) = if offset < HOLE.start {
            (HOLE.start, false)
        } else if offset < HOLE.end {
            (HOLE.end, true)
        } else {
            (SIZE, false)
        };
        Ok(Run {
            len: (end - offset).min(max_len),
            hole,
            zero: hole,
        })
    }
}

fn expected(offset: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    Memory.read_at(offset, &mut bytes).unwrap();
    bytes
}

/// A server on a socket in a temporary directory, stopped when dropped.
struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: StopHandle,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Server {
    fn start(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nbd.sock");
        let listener = Listener::unix(&socket).unwrap();
        let stop = Stop::new().unwrap();
        let handle = stop.handle().unwrap();
        let thread = thread::spawn(move || serve(&[listener], Arc::new(Memory), &options, &stop));
        Self {
            _dir: dir,
            socket,
            stop: handle,
            thread: Some(thread),
        }
    }

    fn named(name: &str) -> Self {
        Self::start(ServeOptions {
            name: name.to_string(),
            ..ServeOptions::default()
        })
    }

    fn connect(&self) -> Client<UnixStream> {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client::greet(stream).unwrap()
    }

    /// A client in transmission with structured replies and `base:allocation`.
    fn structured(&self) -> Client<UnixStream> {
        let mut client = self.connect();
        assert!(client.structured_replies().unwrap());
        let replies = client.set_meta_context("", &["base:allocation"]).unwrap();
        assert_eq!(replies.len(), 2, "one context, then ACK: {replies:?}");
        client.go("").unwrap().unwrap();
        client
    }

    /// A client in transmission with simple replies.
    fn simple(&self) -> Client<UnixStream> {
        let mut client = self.connect();
        client.go("").unwrap().unwrap();
        client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.stop().unwrap();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
    }
}

#[test]
fn structured_read_sends_holes_for_zero_runs_and_data_for_the_rest() {
    let server = Server::named("");
    let mut client = server.structured();
    let cookie = client.send(request::READ, 0, 0, 256 << 10).unwrap();
    let chunks = client.chunks(cookie).unwrap();
    let kinds: Vec<u16> = chunks.iter().map(|(chunk, _)| chunk.kind).collect();
    assert_eq!(
        kinds,
        [reply::OFFSET_DATA, reply::OFFSET_HOLE, reply::OFFSET_DATA]
    );
    assert!(chunks.last().unwrap().0.done());
    let data = client.read(1000, 300 << 10).unwrap().unwrap();
    assert_eq!(data, expected(1000, 300 << 10));
}

#[test]
fn simple_read_returns_the_bytes() {
    let server = Server::named("");
    let mut client = server.simple();
    let data = client.read(60 << 10, 200 << 10).unwrap().unwrap();
    assert_eq!(data, expected(60 << 10, 200 << 10));
}

#[test]
fn read_longer_than_32_mib_gets_eoverflow_and_the_session_goes_on() {
    let server = Server::named("");
    let mut client = server.structured();
    let answer = client.read(0, (32 << 20) + 1).unwrap();
    assert_eq!(answer.unwrap_err().0, reply::EOVERFLOW);
    let mut simple = server.simple();
    assert_eq!(
        simple.read(0, (32 << 20) + 1).unwrap().unwrap_err().0,
        reply::EINVAL
    );
    assert_eq!(client.read(0, 512).unwrap().unwrap(), expected(0, 512));
    assert_eq!(simple.read(0, 512).unwrap().unwrap(), expected(0, 512));
}

#[test]
fn read_past_the_end_gets_einval() {
    let server = Server::named("");
    let mut client = server.structured();
    let (error, message) = client.read(SIZE - 512, 1024).unwrap().unwrap_err();
    assert_eq!(error, reply::EINVAL);
    assert!(message.contains("past the end"), "{message}");
    let overflow = client.send(request::READ, 0, u64::MAX - 10, 512).unwrap();
    assert_eq!(client.status_reply(overflow).unwrap(), reply::EINVAL);
    assert_eq!(
        client.read(SIZE - 512, 512).unwrap().unwrap(),
        expected(SIZE - 512, 512)
    );
}

#[test]
fn writes_trims_and_write_zeroes_get_eperm() {
    let server = Server::named("");
    for mut client in [server.simple(), server.structured()] {
        let cookie = client.send(request::WRITE, 0, 0, 4).unwrap();
        io::Write::write_all(client.stream(), b"data").unwrap();
        assert_eq!(client.status_reply(cookie).unwrap(), reply::EPERM);
        for command in [request::TRIM, request::WRITE_ZEROES] {
            let cookie = client.send(command, 0, 0, 4096).unwrap();
            assert_eq!(client.status_reply(cookie).unwrap(), reply::EPERM);
        }
        assert_eq!(client.read(0, 16).unwrap().unwrap(), expected(0, 16));
    }
}

#[test]
fn unknown_commands_and_flags_get_einval() {
    let server = Server::named("");
    let mut client = server.structured();
    for (command, flags) in [
        (request::FLUSH, 0),
        (99, 0),
        (request::READ, request::FLAG_DF),
        (request::CACHE, request::FLAG_FUA),
        (request::BLOCK_STATUS, request::FLAG_NO_HOLE),
    ] {
        let cookie = client.send(command, flags, 0, 512).unwrap();
        assert_eq!(
            client.status_reply(cookie).unwrap(),
            reply::EINVAL,
            "command {command} flags {flags}"
        );
    }
    let cookie = client.send(request::CACHE, 0, 0, 4096).unwrap();
    assert_eq!(client.status_reply(cookie).unwrap(), 0);
}

#[test]
fn block_status_reports_holes_and_honours_req_one() {
    let server = Server::named("");
    let mut client = server.structured();
    let descriptors = client.block_status(0, SIZE as u32, 0).unwrap().unwrap();
    let hole = STATE_HOLE | STATE_ZERO;
    assert_eq!(
        descriptors,
        [
            Descriptor {
                len: 64 << 10,
                flags: 0
            },
            Descriptor {
                len: 128 << 10,
                flags: hole
            },
            Descriptor {
                len: 832 << 10,
                flags: 0
            },
        ]
    );
    let one = client
        .block_status(4096, 100 << 10, request::FLAG_REQ_ONE)
        .unwrap()
        .unwrap();
    assert_eq!(
        one,
        [Descriptor {
            len: 60 << 10,
            flags: 0
        }]
    );
    let past = client.block_status(SIZE, 512, 0).unwrap();
    assert_eq!(past.unwrap_err().0, reply::EINVAL);
}

#[test]
fn block_status_without_a_selected_context_gets_einval() {
    let server = Server::named("");
    let mut client = server.connect();
    assert!(client.structured_replies().unwrap());
    client.go("").unwrap().unwrap();
    assert_eq!(
        client.block_status(0, 512, 0).unwrap().unwrap_err().0,
        reply::EINVAL
    );
}

#[test]
fn unknown_export_gets_err_unknown_and_the_default_name_works() {
    let server = Server::named("disk");
    let mut client = server.connect();
    let refused = client.go("other").unwrap().unwrap_err();
    assert_eq!(refused.reply, option_reply::ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&refused.payload).contains("\"other\""));
    client.go("disk").unwrap().unwrap();
    assert_eq!(client.size, SIZE);
    let mut default = server.connect();
    default.go("").unwrap().unwrap();
}

#[test]
fn unknown_export_by_export_name_drops_the_connection() {
    let server = Server::named("disk");
    let mut client = server.connect();
    let header = option::OptionHeader {
        option: option::EXPORT_NAME,
        len: 5,
    };
    io::Write::write_all(client.stream(), &header.emit()).unwrap();
    io::Write::write_all(client.stream(), b"other").unwrap();
    let mut byte = [0; 1];
    assert_eq!(io::Read::read(client.stream(), &mut byte).unwrap_or(0), 0);
    server.simple().read(0, 1).unwrap().unwrap();
}

#[test]
fn unknown_and_oversized_options_are_refused_and_haggling_goes_on() {
    let server = Server::named("");
    let mut client = server.connect();
    let unknown = client.option(42, b"whatever").unwrap();
    assert_eq!(unknown.last().unwrap().reply, option_reply::ERR_UNSUP);
    let huge = vec![0; 1 << 20];
    let refused = client.option(option::INFO, &huge).unwrap();
    assert_eq!(refused.last().unwrap().reply, option_reply::ERR_TOO_BIG);
    let tls = client.option(option::STARTTLS, &[]).unwrap();
    assert_eq!(tls.last().unwrap().reply, option_reply::ERR_POLICY);
    let list_with_data = client.option(option::LIST, b"x").unwrap();
    assert_eq!(
        list_with_data.last().unwrap().reply,
        option_reply::ERR_INVALID
    );
    let garbled = client.option(option::GO, &[0, 0, 0, 50, 1]).unwrap();
    assert_eq!(garbled.last().unwrap().reply, option_reply::ERR_INVALID);
    let set_too_early = client.set_meta_context("", &["base:allocation"]).unwrap();
    assert_eq!(
        set_too_early.last().unwrap().reply,
        option_reply::ERR_INVALID
    );
    let list = client.option(option::LIST, &[]).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].reply, option_reply::SERVER);
    client.go("").unwrap().unwrap();
    assert_eq!(client.read(0, 8).unwrap().unwrap(), expected(0, 8));
}

#[test]
fn abort_is_acknowledged() {
    let server = Server::named("");
    let mut client = server.connect();
    let replies = client.option(option::ABORT, &[]).unwrap();
    assert_eq!(replies[0].reply, option_reply::ACK);
}

#[test]
fn garbage_instead_of_an_option_drops_only_that_client() {
    let server = Server::named("");
    let mut client = server.connect();
    io::Write::write_all(client.stream(), &[0x55; 64]).unwrap();
    let mut byte = [0; 1];
    assert_eq!(io::Read::read(client.stream(), &mut byte).unwrap_or(0), 0);
    server.structured().read(0, 512).unwrap().unwrap();
}

#[test]
fn client_silent_in_the_handshake_is_dropped_after_the_timeout() {
    let server = Server::start(ServeOptions {
        timeout: Some(Duration::from_millis(300)),
        ..ServeOptions::default()
    });
    let mut client = server.connect();
    let mut byte = [0; 1];
    let started = std::time::Instant::now();
    assert_eq!(io::Read::read(client.stream(), &mut byte).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn clients_beyond_the_maximum_are_closed_and_the_others_served() {
    let server = Server::start(ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    });
    let mut first = server.structured();
    let stream = UnixStream::connect(&server.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(
        Client::greet(stream).is_err(),
        "the second client was greeted"
    );
    assert_eq!(first.read(0, 512).unwrap().unwrap(), expected(0, 512));
}

#[test]
fn stale_socket_file_is_replaced_and_a_regular_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    // A listener dropped without unlinking leaves a socket nobody accepts on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    Listener::unix(&socket).expect("a stale socket is replaced");
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    let error = Listener::unix(&file).unwrap_err();
    assert!(error.to_string().contains("not a socket"), "{error}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

// TLS: the protocol's FORCEDTLS (`--tls=require`) and SELECTIVETLS
// (`--tls=on`) modes, with a rustls client against certificates made by
// `openssl` (`qcow2_testkit::tls`).

type TlsClient = Client<rustls::StreamOwned<rustls::ClientConnection, UnixStream>>;

fn tls_server(mode: TlsMode, client_ca: bool) -> Server {
    let certificates = qcow2_testkit::tls::certificates();
    let ca = client_ca.then_some(certificates.ca_cert.as_path());
    let config =
        TlsConfig::from_pem_files(&certificates.server_cert, &certificates.server_key, ca).unwrap();
    Server::start(ServeOptions {
        tls: mode,
        tls_config: Some(config),
        ..ServeOptions::default()
    })
}

/// The client's side of TLS: the test CA trusted, the server named
/// `localhost`, with the test client's certificate if `with_certificate`.
fn tls_client_config(with_certificate: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificates = qcow2_testkit::tls::certificates();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certificates.ca_cert).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_certificate {
        let dir = &certificates.client_dir;
        let chain = vec![CertificateDer::from_pem_file(dir.join("client-cert.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(dir.join("client-key.pem")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// `NBD_OPT_STARTTLS`, then the TLS handshake, completed before returning.
fn start_tls(client: Client<UnixStream>, with_certificate: bool) -> io::Result<TlsClient> {
    let config = tls_client_config(with_certificate);
    client.start_tls(|mut socket| {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut connection =
            rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        while connection.is_handshaking() {
            connection.complete_io(&mut socket)?;
        }
        Ok(rustls::StreamOwned::new(connection, socket))
    })
}

#[test]
fn tls_require_refuses_every_option_before_starttls_with_tls_reqd() {
    let server = tls_server(TlsMode::Require, false);
    let mut client = server.connect();
    for (code, payload) in [
        (option::LIST, &[][..]),
        (option::STRUCTURED_REPLY, &[]),
        (option::GO, &[0, 0, 0, 0, 0, 0]),
        (option::INFO, &[0, 0, 0, 0, 0, 0]),
        (option::SET_META_CONTEXT, &[0; 8]),
        (99, b"unknown option"),
    ] {
        let replies = client.option(code, payload).unwrap();
        assert_eq!(
            replies.iter().map(|reply| reply.reply).collect::<Vec<_>>(),
            [option_reply::ERR_TLS_REQD],
            "option {code}"
        );
    }
    let mut client = start_tls(client, false).unwrap();
    assert!(client.structured_replies().unwrap());
    client.go("").unwrap().unwrap();
    assert_eq!(client.size, SIZE);
    let data = client.read(1000, 300 << 10).unwrap().unwrap();
    assert_eq!(data, expected(1000, 300 << 10));
}

#[test]
fn tls_require_drops_a_client_choosing_by_export_name_before_tls() {
    let server = tls_server(TlsMode::Require, false);
    let mut client = server.connect();
    use std::io::{Read, Write};
    client
        .stream()
        .write_all(
            &option::OptionHeader {
                option: option::EXPORT_NAME,
                len: 0,
            }
            .emit(),
        )
        .unwrap();
    let mut rest = Vec::new();
    // The end of the stream, no export data: the protocol's disconnect.
    client.stream().read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "{} bytes after NBD_OPT_EXPORT_NAME",
        rest.len()
    );
    // The server goes on: another client gets TLS and the export.
    let mut other = start_tls(server.connect(), false).unwrap();
    other.go("").unwrap().unwrap();
    assert_eq!(other.read(0, 512).unwrap().unwrap(), expected(0, 512));
}

#[test]
fn tls_on_forgets_options_negotiated_before_starttls_and_refuses_a_second_one() {
    let server = tls_server(TlsMode::On, false);
    let mut client = server.connect();
    assert!(client.structured_replies().unwrap());
    let mut client = start_tls(client, false).unwrap();
    let again = client.option(option::STARTTLS, &[]).unwrap();
    assert_eq!(again.last().unwrap().reply, option_reply::ERR_INVALID);
    client.go("").unwrap().unwrap();
    // Structured replies were negotiated in the clear only: forgotten, so
    // the read gets a simple reply (a structured one would not parse).
    assert!(!client.structured);
    let data = client.read(60 << 10, 200 << 10).unwrap().unwrap();
    assert_eq!(data, expected(60 << 10, 200 << 10));
}

#[test]
fn tls_on_serves_a_client_that_stays_in_the_clear() {
    let server = tls_server(TlsMode::On, false);
    let mut client = server.structured();
    assert_eq!(client.read(0, 4096).unwrap().unwrap(), expected(0, 4096));
}

#[test]
fn tls_with_a_client_ca_refuses_a_client_without_a_certificate() {
    let server = tls_server(TlsMode::Require, true);
    let refused = start_tls(server.connect(), false);
    let error = match refused {
        Ok(mut client) => client.go("").unwrap_err(),
        Err(error) => error,
    };
    // In TLS 1.3 the client's handshake ends before the server checks its
    // certificate: the client hears of the refusal as the server's alert,
    // or, when the server has closed the socket before the client writes,
    // as a broken connection.
    let alert = error.to_string().to_lowercase().contains("certificate");
    let closed = matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    );
    assert!(alert || closed, "{error}");
    let mut client = start_tls(server.connect(), true).unwrap();
    client.go("").unwrap().unwrap();
    assert_eq!(client.read(0, 4096).unwrap().unwrap(), expected(0, 4096));
}

#[test]
fn tls_on_without_a_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::unix(&dir.path().join("nbd.sock")).unwrap();
    let options = ServeOptions {
        tls: TlsMode::On,
        ..ServeOptions::default()
    };
    let error = serve(
        &[listener],
        Arc::new(Memory),
        &options,
        &Stop::new().unwrap(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
}

#[test]
fn tls_config_names_the_file_that_is_not_pem() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, b"not a certificate").unwrap();
    let certificates = qcow2_testkit::tls::certificates();
    let error = TlsConfig::from_pem_files(&bogus, &certificates.server_key, None).unwrap_err();
    assert!(error.to_string().contains("bogus.pem"), "{error}");
    let error = TlsConfig::from_pem_files(&certificates.server_cert, &bogus, None).unwrap_err();
    assert!(error.to_string().contains("bogus.pem"), "{error}");
    let error = TlsConfig::from_pem_files(
        &certificates.server_cert,
        &certificates.client_dir.join("client-key.pem"),
        None,
    )
    .unwrap_err();
    assert!(error.to_string().contains("do not go together"), "{error}");
}
