//! The server's sockets: unix and TCP listeners, a thread per client (at
//! most [`ServeOptions::max_connections`]), the timeouts that keep a stuck
//! client from holding its thread forever, and a clean stop.
//!
//! The accept loop sleeps in `poll(2)` on the listeners and on the read end
//! of a [`Stop`] pipe; a stop (a signal handler writing to the pipe, or
//! [`StopHandle::stop`]) ends it. Clients still connected then finish the
//! request in hand (their sockets are shut down for reading, so their next
//! read sees the end), and `serve` returns once they are gone or the
//! timeout has passed.
//!
//! TLS ([`ServeOptions::tls`]): a client's connection is wrapped in TLS when
//! its session acknowledges `NBD_OPT_STARTTLS`, and option haggling goes on
//! over TLS ([`crate::tls`]).

use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};

use crate::export::Export;
use crate::session::{Handshake, Limits, Session, SessionError, TlsMode};
use crate::tls::{TlsConfig, TLS_BUFFER_BYTES};

/// NBD's IANA port.
pub const DEFAULT_PORT: u16 = 10809;

/// Bytes of each connection's write buffer (replies' headers and small
/// payloads are gathered here; data pieces larger than it go straight out).
const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// Bytes of each connection's read buffer (request headers).
const READ_BUFFER_BYTES: usize = 4 << 10;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A unix socket; its file is removed when the listener is dropped.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
    },
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Listens on the unix socket `path`. A socket file left by a server
    /// that is gone (nobody accepts on it) is replaced; a live one, or any
    /// other file, is an error.
    pub fn unix(path: &Path) -> io::Result<Self> {
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            if !metadata.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ));
            }
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another server is listening on this socket",
                    ))
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?;
                }
                Err(error) => return Err(error),
            }
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Listener::Unix {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Listens on TCP at `address` (see [`parse_bind`]).
    pub fn tcp(address: &str) -> io::Result<Self> {
        let addresses = parse_bind(address)
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        let listener = TcpListener::bind(&addresses[..])?;
        listener.set_nonblocking(true)?;
        Ok(Listener::Tcp(listener))
    }

    /// Where it listens, for messages.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix { path, .. } => path.display().to_string(),
            Listener::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "TCP".to_string(), |address| address.to_string()),
        }
    }

    /// The TCP address actually bound (port 0 picks one).
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix { listener, .. } => listener.as_fd(),
            Listener::Tcp(listener) => listener.as_fd(),
        }
    }

    fn accept(&self) -> io::Result<Connection> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept()?;
                stream.set_nonblocking(false)?;
                Ok(Connection::Unix(stream))
            }
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                stream.set_nonblocking(false)?;
                // The protocol asks for no Nagle delay: replies are small
                // messages that must not wait for the previous one's ACK.
                stream.set_nodelay(true)?;
                Ok(Connection::Tcp(stream))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `ADDR[:PORT]` as `--bind` takes it: an IPv4 or bracketed IPv6 address
/// or a host name, with NBD's port 10809 when none is given
/// (`127.0.0.1`, `[::1]:10810`, `localhost`, `::1`).
pub fn parse_bind(text: &str) -> Result<Vec<SocketAddr>, String> {
    let with_port = if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(vec![address]);
    } else if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, DEFAULT_PORT)]);
    } else if text.starts_with('[') && text.ends_with(']') {
        format!("{text}:{DEFAULT_PORT}")
    } else if text.contains(':') {
        text.to_string()
    } else {
        format!("{text}:{DEFAULT_PORT}")
    };
    let addresses: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|error| format!("{text:?} is not an address to listen on: {error}"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("{text:?} resolves to no address"));
    }
    Ok(addresses)
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The export's name (the empty name also selects it).
    pub name: String,
    /// Each session's bounds.
    pub limits: Limits,
    /// Clients served at once; more are accepted and closed at once, with a message.
    pub max_connections: usize,
    /// A client must finish its handshake within this time, and is dropped
    /// when it takes no byte of a reply for this long. `None`: no limit.
    pub timeout: Option<Duration>,
    /// Stack of each connection's thread.
    pub stack_bytes: usize,
    /// Messages (a client dropped, refused) go to standard error after this prefix.
    pub log_prefix: String,
    /// How `NBD_OPT_STARTTLS` is answered; anything but
    /// [`TlsMode::Off`] needs [`ServeOptions::tls_config`].
    pub tls: TlsMode,
    /// The server's certificate and key, for TLS.
    pub tls_config: Option<TlsConfig>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            name: String::new(),
            limits: Limits::default(),
            max_connections: 128,
            timeout: Some(Duration::from_secs(30)),
            stack_bytes: 512 << 10,
            log_prefix: "nbd: ".to_string(),
            tls: TlsMode::Off,
            tls_config: None,
        }
    }
}

impl ServeOptions {
    /// The most memory one connection takes: its session's buffers, the
    /// socket buffers, its thread's stack, and with TLS on, rustls's state
    /// and buffers ([`TLS_BUFFER_BYTES`]; the plain read buffer is gone by then).
    pub fn connection_bytes(&self) -> usize {
        let tls = if self.tls == TlsMode::Off {
            0
        } else {
            TLS_BUFFER_BYTES
        };
        self.limits.session_bytes()
            + WRITE_BUFFER_BYTES
            + READ_BUFFER_BYTES
            + self.stack_bytes
            + tls
    }
}

/// The read end of the stop pipe; `serve` returns when a byte arrives.
#[derive(Debug)]
pub struct Stop {
    read: UnixStream,
    write: UnixStream,
}

/// Asks a running `serve` to stop; cloneable into a signal handler's pipe.
#[derive(Debug)]
pub struct StopHandle(UnixStream);

impl Stop {
    /// A new stop pipe.
    pub fn new() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        write.set_nonblocking(true)?;
        Ok(Self { read, write })
    }

    /// A handle that stops `serve`.
    pub fn handle(&self) -> io::Result<StopHandle> {
        Ok(StopHandle(self.write.try_clone()?))
    }
}

impl StopHandle {
    /// Stops `serve` (idempotent).
    pub fn stop(&self) -> io::Result<()> {
        match (&self.0).write(&[1]) {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => Err(error),
            _ => Ok(()),
        }
    }

    /// The pipe's write end, for `signal_hook::low_level::pipe::register`.
    pub fn into_stream(self) -> UnixStream {
        self.0
    }
}

/// An accepted client.
#[derive(Debug)]
enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Connection {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Connection::Unix(stream) => Connection::Unix(stream.try_clone()?),
            Connection::Tcp(stream) => Connection::Tcp(stream.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Connection::Unix(stream) => stream.shutdown(how),
            Connection::Tcp(stream) => stream.shutdown(how),
        };
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Connection::Unix(stream) => stream.set_read_timeout(timeout),
            Connection::Tcp(stream) => stream.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Connection::Unix(stream) => stream.set_write_timeout(timeout),
            Connection::Tcp(stream) => stream.set_write_timeout(timeout),
        }
    }
}

impl Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Unix(stream) => (&*stream).write(buf),
            Connection::Tcp(stream) => (&*stream).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection whose reads all end before `deadline` if one is set (the
/// handshake's), so that a client trickling bytes cannot stretch it.
struct DeadlineSocket<'c> {
    connection: &'c Connection,
    deadline: Option<Instant>,
}

impl Write for DeadlineSocket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.connection.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for DeadlineSocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the handshake took too long",
                ));
            }
            self.connection.set_read_timeout(Some(left))?;
        }
        match self.connection {
            Connection::Unix(stream) => (&*stream).read(buf),
            Connection::Tcp(stream) => (&*stream).read(buf),
        }
    }
}

/// The connections being served, for the limit and for stopping.
#[derive(Default)]
struct Registry {
    connections: Mutex<BTreeMap<u64, Connection>>,
    emptied: Condvar,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove(&self, id: u64) {
        let mut connections = self.lock();
        connections.remove(&id);
        if connections.is_empty() {
            self.emptied.notify_all();
        }
    }
}

/// Serves `export` on `listeners` until `stop` is triggered; then lets the
/// connected clients finish the request in hand and returns.
pub fn serve<E: Export + 'static>(
    listeners: &[Listener],
    export: Arc<E>,
    options: &ServeOptions,
    stop: &Stop,
) -> io::Result<()> {
    if options.tls != TlsMode::Off && options.tls_config.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TLS is on but no certificate and key were given",
        ));
    }
    let registry = Arc::new(Registry::default());
    let options = Arc::new(options.clone());
    let mut next_id = 0u64;
    'accepting: loop {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|listener| PollFd::from_borrowed_fd(listener.fd(), PollFlags::IN))
            .collect();
        fds.push(PollFd::new(&stop.read, PollFlags::IN));
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);
        if ready[listeners.len()] {
            break 'accepting;
        }
        for (listener, _) in listeners.iter().zip(&ready).filter(|(_, &ready)| ready) {
            let connection = match listener.accept() {
                Ok(connection) => connection,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => {
                    eprintln!(
                        "{}{}: cannot accept a client: {error}",
                        options.log_prefix,
                        listener.describe()
                    );
                    continue;
                }
            };
            next_id += 1;
            admit(connection, next_id, &registry, &options, &export);
        }
    }
    drain(&registry, &options);
    Ok(())
}

/// Starts a thread for `connection`, or closes it when the server is full.
fn admit<E: Export + 'static>(
    connection: Connection,
    id: u64,
    registry: &Arc<Registry>,
    options: &Arc<ServeOptions>,
    export: &Arc<E>,
) {
    {
        let mut connections = registry.lock();
        if connections.len() >= options.max_connections {
            eprintln!(
                "{}client {id} refused: {} clients are connected already (the maximum)",
                options.log_prefix, options.max_connections
            );
            return;
        }
        match connection.try_clone() {
            Ok(clone) => connections.insert(id, clone),
            Err(error) => {
                eprintln!("{}client {id}: {error}", options.log_prefix);
                return;
            }
        };
    }
    let thread_registry = registry.clone();
    let thread_options = options.clone();
    let export = export.clone();
    let spawned = thread::Builder::new()
        .name(format!("nbd-client-{id}"))
        .stack_size(options.stack_bytes)
        .spawn(move || {
            match run_connection(&connection, &*export, &thread_options) {
                Err(SessionError::Io(error)) if is_timeout(&error) => eprintln!(
                    "{}client {id}: dropped: it did not finish its handshake or stopped taking a reply for {:?}",
                    thread_options.log_prefix,
                    thread_options.timeout.unwrap_or_default()
                ),
                Err(error) => eprintln!("{}client {id}: {error}", thread_options.log_prefix),
                Ok(()) => {}
            }
            connection.shutdown(Shutdown::Both);
            thread_registry.remove(id);
        });
    if let Err(error) = spawned {
        eprintln!(
            "{}client {id}: cannot start its thread: {error}",
            options.log_prefix
        );
        registry.remove(id);
    }
}

/// A socket timeout, as `SO_RCVTIMEO`/`SO_SNDTIMEO` report it.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One client from handshake to goodbye.
fn run_connection<E: Export + ?Sized>(
    connection: &Connection,
    export: &E,
    options: &ServeOptions,
) -> Result<(), SessionError> {
    connection.set_write_timeout(options.timeout)?;
    let deadline = options.timeout.map(|timeout| Instant::now() + timeout);
    let mut reader = BufReader::with_capacity(
        READ_BUFFER_BYTES,
        DeadlineSocket {
            connection,
            deadline,
        },
    );
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, connection);
    let mut session = Session::new(export, &options.name, options.limits).with_tls(options.tls);
    match session.handshake(&mut reader, &mut writer)? {
        Handshake::Ended => Ok(()),
        Handshake::Transmission => {
            // Clients may sit idle between requests for as long as they like (a
            // mounted file system); only replies keep the timeout.
            reader.get_mut().deadline = None;
            connection.set_read_timeout(None)?;
            session.transmission(&mut reader, &mut writer)
        }
        Handshake::StartTls => {
            // A client waits for the acknowledgement before its TLS
            // handshake: bytes already here were sent before it, in the clear.
            if !reader.buffer().is_empty() {
                return Err(SessionError::Protocol(format!(
                    "{} bytes sent after NBD_OPT_STARTTLS before its acknowledgement",
                    reader.buffer().len()
                )));
            }
            let Some(config) = &options.tls_config else {
                return Err(SessionError::Protocol(
                    "TLS acknowledged without a configuration".to_string(),
                ));
            };
            drop(writer);
            let socket = reader.into_inner();
            run_tls(connection, config.accept(socket)?, session)
        }
    }
}

/// The rest of a session after `NBD_OPT_STARTTLS`: option haggling, then
/// transmission, over TLS; then TLS's close_notify.
fn run_tls<E: Export + ?Sized>(
    connection: &Connection,
    tls: crate::tls::TlsStream<DeadlineSocket<'_>>,
    mut session: Session<'_, E>,
) -> Result<(), SessionError> {
    session.tls_started();
    let mut reader = tls.reader();
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, tls.writer());
    let served = match session.options(&mut reader, &mut writer) {
        Ok(Handshake::Transmission) => {
            tls.with_socket(|socket| socket.deadline = None);
            connection.set_read_timeout(None)?;
            session.transmission(&mut reader, &mut writer)
        }
        Ok(Handshake::Ended) => Ok(()),
        Ok(Handshake::StartTls) => Err(SessionError::Protocol(
            "NBD_OPT_STARTTLS acknowledged twice".to_string(),
        )),
        Err(error) => Err(error),
    };
    if served.is_ok() {
        writer.flush()?;
        drop(writer);
        tls.close();
    }
    served
}

/// After a stop: every client's next read sees the end; wait for them to
/// finish the request in hand, at most the timeout (or 5 s without one).
fn drain(registry: &Registry, options: &ServeOptions) {
    let wait = options.timeout.unwrap_or(Duration::from_secs(5)) + Duration::from_secs(1);
    let deadline = Instant::now() + wait;
    let mut connections = registry.lock();
    for connection in connections.values() {
        connection.shutdown(Shutdown::Read);
    }
    while !connections.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            for connection in connections.values() {
                connection.shutdown(Shutdown::Both);
            }
            eprintln!(
                "{}{} clients did not finish in time; disconnected",
                options.log_prefix,
                connections.len()
            );
            return;
        }
        connections = registry
            .emptied
            .wait_timeout(connections, left)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_without_port_uses_nbd_port() {
        assert_eq!(
            parse_bind("127.0.0.1").unwrap(),
            ["127.0.0.1:10809".parse().unwrap()]
        );
        assert_eq!(parse_bind("::1").unwrap(), ["[::1]:10809".parse().unwrap()]);
        assert_eq!(
            parse_bind("[::1]").unwrap(),
            ["[::1]:10809".parse().unwrap()]
        );
        assert_eq!(
            parse_bind("0.0.0.0:10900").unwrap(),
            ["0.0.0.0:10900".parse().unwrap()]
        );
    }

    #[test]
    fn default_connection_memory_is_the_1_7_mib_the_help_states() {
        let bytes = ServeOptions::default().connection_bytes();
        assert!(bytes <= 1_740 << 10, "{bytes} bytes per connection");
        assert!(bytes > 1_600 << 10, "{bytes} bytes per connection");
    }

    #[test]
    fn tls_connection_memory_is_the_1_9_mib_the_help_states() {
        let options = ServeOptions {
            tls: TlsMode::Require,
            ..ServeOptions::default()
        };
        let bytes = options.connection_bytes();
        assert!(bytes <= 1_900 << 10, "{bytes} bytes per connection");
        assert!(bytes > 1_800 << 10, "{bytes} bytes per connection");
    }

    #[test]
    fn bind_to_a_bad_address_names_it() {
        let error = parse_bind("not an address:x").unwrap_err();
        assert!(error.contains("\"not an address:x\""), "{error}");
    }
}
