//! A TCP proxy that adds latency (the `latency-proxy` binary): what
//! `benches/http.sh` puts between its HTTP clients and nginx when
//! `DELAY_MS` is set, because this machine's kernel has no `netem` qdisc
//! and shaping `lo` would slow every other session's loopback too.
//!
//! Each accepted connection is connected to the target, and each direction
//! is forwarded through a queue of timestamped chunks: a chunk read at `t`
//! is written at `t + delay`, in order. Chunks are not serialised behind
//! each other's delay (a chunk read while an earlier one waits leaves
//! `delay` after its own read), so the proxy adds a fixed one-way delay and
//! a round trip of twice that, and no bandwidth limit of its own beyond
//! [`WINDOW`]. With a rate (`--rate-mbit`), each direction is one link of
//! that rate shared by all connections: a chunk also waits for the link
//! to have sent the chunks before it, then for its own bytes.
//!
//! The proxy accepts a connection at once (over loopback), so a new
//! connection costs no round trip before its first request, where TCP's
//! handshake costs one on a real link; with `--handshake`, a connection's
//! first bytes to the target leave no earlier than a round trip after it
//! was accepted, as they would. What it does not model: TCP's slow start
//! and congestion window (each side's TCP talks to the proxy over
//! loopback, where acknowledgements come at once), loss and jitter.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes one direction of one connection holds at most before it stops
/// reading: a bound on the proxy's memory, which acts like a TCP window
/// (at 10 ms, 16 MiB in flight is 1.6 GB/s, above anything measured here).
pub const WINDOW: usize = 16 << 20;

/// Bytes read at once from a socket: one chunk of the queue.
const CHUNK: usize = 64 << 10;

/// What the proxy does, from its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it listens (port 0: one the system picks).
    pub listen: String,
    /// Where each connection goes, `HOST:PORT`.
    pub to: String,
    /// Added to every chunk in each direction.
    pub delay: Duration,
    /// Bits per second of each direction's link, all connections together;
    /// `None`: no limit of the proxy's own.
    pub rate: Option<u64>,
    /// Whether a connection's first bytes to the target wait a round trip
    /// (`2 x delay`) after it was accepted: TCP's handshake on a real link.
    pub handshake: bool,
}

/// Why the proxy cannot start.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the text says how.
    Usage(String),
    /// The listening socket cannot be made.
    Listen {
        /// The address asked for.
        address: String,
        /// What the system said.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(
                f,
                "{message}\nusage: latency-proxy [--listen 127.0.0.1:PORT] --to HOST:PORT --delay-ms N [--rate-mbit N] [--handshake]"
            ),
            Error::Listen { address, source } => write!(f, "cannot listen on {address}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl Config {
    /// Reads `--listen ADDR` (default `127.0.0.1:0`), `--to HOST:PORT`,
    /// `--delay-ms N`, `--rate-mbit N` and `--handshake`.
    pub fn from_args(args: &[String]) -> Result<Self, Error> {
        let mut listen = "127.0.0.1:0".to_string();
        let (mut to, mut delay_ms, mut rate_mbit) = (None, None, None);
        let mut handshake = false;
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--listen" => listen = value()?.clone(),
                "--to" => to = Some(value()?.clone()),
                "--delay-ms" => delay_ms = Some(number(flag, value()?)?),
                "--rate-mbit" => rate_mbit = Some(number(flag, value()?)?),
                "--handshake" => handshake = true,
                _ => return Err(Error::Usage(format!("unknown argument {flag}"))),
            }
        }
        let to = to.ok_or_else(|| Error::Usage("--to HOST:PORT is required".into()))?;
        let delay_ms = delay_ms.ok_or_else(|| Error::Usage("--delay-ms N is required".into()))?;
        if rate_mbit == Some(0) {
            return Err(Error::Usage("--rate-mbit must be above 0".into()));
        }
        Ok(Self {
            listen,
            to,
            delay: Duration::from_millis(delay_ms),
            rate: rate_mbit.map(|mbit| mbit * 1_000_000),
            handshake,
        })
    }
}

fn number(flag: &str, value: &str) -> Result<u64, Error> {
    value
        .parse()
        .map_err(|_| Error::Usage(format!("{flag} {value}: not a whole number")))
}

/// A listening proxy; [`Proxy::run`] serves it.
pub struct Proxy {
    listener: TcpListener,
    to: String,
    /// Client to target, and target to client: each shared by every
    /// connection (it holds the rate's clock).
    links: [Arc<Link>; 2],
    /// How long after its accept a connection's first bytes may reach
    /// the target, at the earliest: a round trip with `--handshake`.
    setup: Duration,
}

impl Proxy {
    /// Listens where `config` says.
    pub fn bind(config: &Config) -> Result<Self, Error> {
        let listener = TcpListener::bind(&config.listen).map_err(|source| Error::Listen {
            address: config.listen.clone(),
            source,
        })?;
        let link = || Arc::new(Link::new(config.delay, config.rate));
        Ok(Self {
            listener,
            to: config.to.clone(),
            links: [link(), link()],
            setup: if config.handshake {
                config.delay * 2
            } else {
                Duration::ZERO
            },
        })
    }

    /// The address it listens on (the port the system picked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the listening socket fails (returns that
    /// error), each forwarded on threads of its own; a connection whose
    /// target cannot be reached is closed and named on standard error.
    pub fn run(self) -> io::Error {
        loop {
            let client = match self.listener.accept() {
                Ok((client, _)) => client,
                // A connection reset before it was accepted is that
                // connection's problem, not the listener's.
                Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(error) => return error,
            };
            let not_before = Instant::now() + self.setup;
            let to = self.to.clone();
            let links = self.links.clone();
            thread::spawn(move || {
                if let Err(error) = connect(client, &to, links, not_before) {
                    eprintln!("latency-proxy: cannot connect to {to}: {error}");
                }
            });
        }
    }

    /// Runs the proxy on a thread of its own (the tests' use); returns the
    /// address it listens on.
    pub fn spawn(self) -> io::Result<SocketAddr> {
        let address = self.local_addr()?;
        thread::spawn(move || self.run());
        Ok(address)
    }
}

/// Connects `client` to `to` and starts both directions; the client's
/// bytes are read no earlier than `not_before` (the handshake's round trip).
fn connect(
    client: TcpStream,
    to: &str,
    links: [Arc<Link>; 2],
    not_before: Instant,
) -> io::Result<()> {
    let target = TcpStream::connect(resolve(to)?)?;
    // The proxy's own writes must not wait for Nagle's algorithm: the
    // delay is the one it adds on purpose, the ends keep their own setting.
    client.set_nodelay(true)?;
    target.set_nodelay(true)?;
    let [up, down] = links;
    forward(client.try_clone()?, target.try_clone()?, up, not_before)?;
    forward(target, client, down, Instant::now())
}

fn resolve(to: &str) -> io::Result<SocketAddr> {
    to.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{to}: no address")))
}

/// Forwards what `from` sends to `to` through a queue on `link`: one
/// thread reads and stamps, one writes when each chunk is due.
fn forward(from: TcpStream, to: TcpStream, link: Arc<Link>, not_before: Instant) -> io::Result<()> {
    let queue = Arc::new(Queue::default());
    let reader_queue = queue.clone();
    let writer_from = from.try_clone()?;
    thread::Builder::new()
        .name("latency-proxy read".into())
        .spawn(move || read_side(from, &reader_queue, &link, not_before))?;
    thread::Builder::new()
        .name("latency-proxy write".into())
        .spawn(move || write_side(to, &writer_from, &queue))?;
    Ok(())
}

/// One direction's link: its delay, and with a rate, when it is free to
/// send the next chunk (shared by all connections in that direction).
struct Link {
    delay: Duration,
    rate: Option<u64>,
    free_at: Mutex<Instant>,
}

impl Link {
    fn new(delay: Duration, rate: Option<u64>) -> Self {
        Self {
            delay,
            rate,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// When `bytes` read at `now` arrive at the other end.
    fn due(&self, now: Instant, bytes: usize) -> Instant {
        let Some(rate) = self.rate else {
            return now + self.delay;
        };
        let mut free_at = lock(&self.free_at);
        let sent = (*free_at).max(now) + Duration::from_secs_f64(bytes as f64 * 8.0 / rate as f64);
        *free_at = sent;
        sent + self.delay
    }
}

/// What the reader hands the writer: bytes, or the end of the stream.
enum Item {
    Bytes(Vec<u8>),
    End,
}

/// Chunks in order with the time each is due, and the bytes they hold.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<(Instant, Item)>,
    bytes: usize,
    /// The writer gave up (its socket failed): the reader stops too.
    closed: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked holding it left plain data, still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Queue {
    /// Adds `item`, due at `due`, after waiting for room under [`WINDOW`];
    /// false when the writer has closed the queue.
    fn push(&self, due: Instant, item: Item) -> bool {
        let size = match &item {
            Item::Bytes(bytes) => bytes.len(),
            Item::End => 0,
        };
        let mut state = lock(&self.state);
        while !state.closed && state.bytes > 0 && state.bytes + size > WINDOW {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.closed {
            return false;
        }
        state.bytes += size;
        state.items.push_back((due, item));
        self.changed.notify_all();
        true
    }

    /// The oldest item, waiting for one.
    fn pop(&self) -> (Instant, Item) {
        let mut state = lock(&self.state);
        loop {
            if let Some((due, item)) = state.items.pop_front() {
                if let Item::Bytes(bytes) = &item {
                    state.bytes -= bytes.len();
                }
                self.changed.notify_all();
                return (due, item);
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Stops the reader (it returns from [`Queue::push`]).
    fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }
}

/// Reads `from` until its end or an error, stamping each chunk with the
/// time it is due; the end (or the error, as an end) goes through the
/// queue too, so the other side sees it after the data, delayed as well.
fn read_side(mut from: TcpStream, queue: &Queue, link: &Link, not_before: Instant) {
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => 0,
            Ok(read) => read,
        };
        // Bytes the client sent before the handshake would have ended
        // count as sent at its end.
        let now = Instant::now().max(not_before);
        let item = if read == 0 {
            Item::End
        } else {
            Item::Bytes(buffer[..read].to_vec())
        };
        if !queue.push(link.due(now, read), item) || read == 0 {
            return;
        }
    }
}

/// Writes each chunk to `to` when it is due; at the end, closes `to`'s
/// sending side (the peer reads its end of stream). A failed write closes
/// the queue and `from`'s reading side, so the reader stops whether it
/// waits for room or for bytes.
fn write_side(mut to: TcpStream, from: &TcpStream, queue: &Queue) {
    loop {
        let (due, item) = queue.pop();
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        match item {
            Item::Bytes(bytes) => {
                if to.write_all(&bytes).is_err() {
                    queue.close();
                    let _ = from.shutdown(Shutdown::Read);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            Item::End => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port: every connection gets back what it sends.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || {
                    let mut reader = stream.try_clone().expect("clone");
                    let _ = io::copy(&mut reader, &mut stream);
                });
            }
        });
        address
    }

    fn proxy(to: SocketAddr, delay_ms: u64, more: &[&str]) -> SocketAddr {
        let to = to.to_string();
        let delay_ms = delay_ms.to_string();
        let mut args = vec!["--to", &to, "--delay-ms", &delay_ms];
        args.extend(more);
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let config = Config::from_args(&args).expect("arguments");
        Proxy::bind(&config).expect("bind").spawn().expect("run")
    }

    #[test]
    fn a_round_trip_takes_twice_the_delay_and_keeps_the_bytes() {
        let address = proxy(echo_server(), 40, &[]);
        let mut stream = TcpStream::connect(address).expect("connect");
        let message: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let start = Instant::now();
        stream.write_all(&message[..1]).expect("write");
        let mut first = [0];
        stream.read_exact(&mut first).expect("read");
        let round_trip = start.elapsed();
        assert!(
            round_trip >= Duration::from_millis(80),
            "a round trip took {round_trip:?}, less than 2 x 40 ms"
        );
        assert_eq!(first[0], message[0]);

        // A bulk transfer, written from a thread while this one reads:
        // unchanged and in order. (That chunks are not held up by one
        // delay each is `Link::due`'s, tested without a clock below: an
        // upper bound on wall time would fail on a loaded machine.)
        let mut writer = stream.try_clone().expect("clone");
        let sent = message.clone();
        let writing = thread::spawn(move || {
            writer.write_all(&sent[1..]).expect("write");
            writer.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).expect("read");
        writing.join().expect("writer");
        assert_eq!(echoed, message[1..], "the bytes came back changed");
    }

    /// How long one byte takes there and back through `stream`.
    fn round_trip(stream: &mut TcpStream) -> Duration {
        let start = Instant::now();
        stream.write_all(b"x").expect("write");
        let mut byte = [0];
        stream.read_exact(&mut byte).expect("read");
        assert_eq!(&byte, b"x");
        start.elapsed()
    }

    #[test]
    fn with_the_handshake_the_first_round_trip_takes_two() {
        let address = proxy(echo_server(), 30, &["--handshake"]);
        let mut stream = TcpStream::connect(address).expect("connect");
        let first = round_trip(&mut stream);
        assert!(
            first >= Duration::from_millis(120),
            "the first round trip took {first:?}, less than 4 x 30 ms"
        );
        // The next round trips cost the delay only (no upper bound: wall
        // time on a loaded machine has none).
        let second = round_trip(&mut stream);
        assert!(
            second >= Duration::from_millis(60),
            "the second round trip took {second:?}, less than 2 x 30 ms"
        );
    }

    #[test]
    fn a_rate_spaces_the_chunks_by_their_size() {
        let link = Link::new(Duration::from_millis(5), Some(8_000_000));
        let now = Instant::now();
        // 1 MB/s: 10 kB take 10 ms on the link, the next waits for them.
        assert_eq!(link.due(now, 10_000), now + Duration::from_millis(15));
        assert_eq!(link.due(now, 10_000), now + Duration::from_millis(25));
        let unlimited = Link::new(Duration::from_millis(5), None);
        assert_eq!(unlimited.due(now, 10_000), now + Duration::from_millis(5));
        // Without a rate, chunks read at once are due at once: never one
        // delay behind another.
        assert_eq!(unlimited.due(now, 10_000), now + Duration::from_millis(5));
    }

    #[test]
    fn the_command_line_is_read_and_mistakes_are_named() {
        let args =
            |text: &str| -> Vec<String> { text.split_whitespace().map(String::from).collect() };
        let config = Config::from_args(&args(
            "--listen 127.0.0.1:0 --to 127.0.0.1:8080 --delay-ms 10 --rate-mbit 100 --handshake",
        ))
        .expect("understood");
        assert!(config.handshake);
        assert_eq!(config.to, "127.0.0.1:8080");
        assert_eq!(config.delay, Duration::from_millis(10));
        assert_eq!(config.rate, Some(100_000_000));
        for (wrong, named) in [
            ("--delay-ms 10", "--to"),
            ("--to x:1", "--delay-ms"),
            ("--to x:1 --delay-ms ten", "not a whole number"),
            ("--to x:1 --delay-ms 1 --rate-mbit 0", "above 0"),
            ("--to x:1 --delay-ms 1 --fast", "unknown argument --fast"),
            ("--to", "needs a value"),
        ] {
            let error = Config::from_args(&args(wrong))
                .expect_err(wrong)
                .to_string();
            assert!(error.contains(named), "{wrong}: {error}");
        }
    }
}
