//! `qcow serve`: the virtual disk as a read-only NBD export, like
//! `qemu-nbd --read-only`, on a unix socket or TCP.
//!
//! The protocol, sessions and sockets are the `qcow2-nbd` crate's (a crate
//! of its own so that its fuzz target links it without this tool); this
//! module opens the image's backing chain and adapts it to the crate's
//! `Export`: reads through a small pool of opened chains (each decodes one
//! read at a time, so several let clients read in parallel), block status
//! through the chain's layers as `qcow map` walks them
//! ([`Stack::status`]). That status is the one place to swap in a
//! crate-level read plan over the chain when there is one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use qcow2_nbd::device::{Device, DeviceOptions};
use qcow2_nbd::listener::{serve, Listener, ServeOptions, Stop};
use qcow2_nbd::netlink::Netlink;
use qcow2_nbd::{Export, Limits, Run, TlsConfig, TlsMode};
use qcow2_reader::chain::Chain;
use qcow2_reader::Config;

use crate::failure::{Failure, Result};
use crate::layers::{open_reader, Access, Follow, Stack};
use crate::passphrase::KeyArgs;

#[path = "serve_detach.rs"]
mod detach;

/// Arguments of `qcow serve`.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("listen").required(true).multiple(true).args(["socket", "bind", "connect", "disconnect"])),
    after_help = "Memory: each connection takes at most about 1.7 MiB (a 1 MiB read \
buffer: reads are served in pieces of 1 MiB, and a read longer than 32 MiB is \
refused with NBD_EOVERFLOW, or NBD_EINVAL without structured replies; 64 KiB of \
option data; 64 KiB of block status; 68 KiB of socket buffers; a 512 KiB thread \
stack), so at most --max-connections times that, plus the image readers' caches \
(--readers of them, each 1 MiB of tables and up to three clusters) and the \
layers opened once for block status. With --connect: one connection, served by \
--readers workers of about 1.7 MiB each. With TLS, 160 KiB more per connection \
(rustls's buffers and state): about 1.9 MiB."
)]
pub struct Args {
    /// Serve the disk as of this internal snapshot (id or name), like `qemu-nbd -l`.
    #[arg(short = 'l', long)]
    snapshot: Option<String>,
    /// Listen on this unix socket (created; removed at exit).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Listen on TCP at this address: `127.0.0.1`, `[::1]:10810`, `0.0.0.0`
    /// (every interface). The port is NBD's 10809 unless given. Nothing
    /// listens on a network unless this is given.
    #[arg(long, value_name = "ADDR[:PORT]")]
    bind: Option<String>,
    /// The export's name. Clients asking for another name get
    /// NBD_REP_ERR_UNKNOWN; the empty name (NBD's default export) always
    /// selects it.
    #[arg(short = 'x', long, value_name = "NAME", default_value = "")]
    export_name: String,
    /// Clients served at once; more are closed at once with a message.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_connections: u64,
    /// Seconds a client has to finish its handshake, and the longest it may
    /// take no bytes of a reply (a client that stops reading is dropped
    /// then); 0: no limit. Idle time between requests is never limited.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Image readers shared by the clients (each an opened chain with its
    /// own caches, decoding one read at a time); default: the number of
    /// CPUs, at most 4.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    readers: Option<u64>,
    /// Write the server's process id to this file once it listens (removed at exit).
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// Serve the disk as the kernel's NBD device `/dev/nbdN` (needs root and
    /// the `nbd` module), set up through NBD's netlink interface: no
    /// `nbd-client` needed, and no thread waits in the kernel, so signals do
    /// not drop the device. Read-only, 512-byte blocks, one connection on
    /// which the kernel's requests are served as many at once as there are
    /// readers (a read waiting for a web server or for decoding does not
    /// hold up the others). The server runs until the device is disconnected
    /// (`--disconnect`, `nbd-client -d`) or SIGTERM/SIGINT, which
    /// disconnect the device first.
    #[arg(long, value_name = "/dev/nbdN")]
    connect: Option<String>,
    /// Disconnect the kernel's NBD device `/dev/nbdN` (whoever serves it)
    /// and exit; no image is opened.
    #[arg(long, value_name = "/dev/nbdN", conflicts_with_all = ["socket", "bind", "connect", "fork", "pid_file", "image"])]
    disconnect: Option<String>,
    /// Run in the background once ready (the device connected, the sockets
    /// listening): the command exits 0 only then, or with the server's
    /// error. The server is started again as `@qcow` (`argv[0]` starting with
    /// `@`: systemd's convention for storage daemons of the root file
    /// system, left running through switch_root and shutdown).
    #[arg(long)]
    fork: bool,
    /// Internal (`--fork`): write `ready` to standard output once serving.
    #[arg(long, hide = true)]
    ready_stdout: bool,
    /// TLS (NBD_OPT_STARTTLS): `off`; `on`, clients choose; `require`,
    /// every option but STARTTLS and ABORT is refused with
    /// NBD_REP_ERR_TLS_REQD until the client starts TLS. Default: `require`
    /// when --tls-cert is given (as qemu-nbd with --tls-creds), else `off`.
    #[arg(long, value_enum, value_name = "off|on|require")]
    tls: Option<TlsArg>,
    /// The server's certificate, PEM (the chain, the server's first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key, PEM (PKCS #8, PKCS #1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Clients must present a certificate signed by a CA of this PEM file
    /// (QEMU's `verify-peer`); without it no client certificate is asked for.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    #[arg(required_unless_present = "disconnect")]
    image: Option<PathBuf>,
}

/// `--tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TlsArg {
    Off,
    On,
    Require,
}

/// The TLS mode and configuration of `args`, the certificate files read.
fn tls(args: &Args) -> Result<(TlsMode, Option<TlsConfig>)> {
    let mode = match (args.tls, &args.tls_cert) {
        (None, None) | (Some(TlsArg::Off), None) => return Ok((TlsMode::Off, None)),
        (Some(TlsArg::Off), Some(_)) => {
            return Err(Failure::new(
                Path::new("--tls=off"),
                "--tls-cert was given too: leave out one of them",
            ))
        }
        (Some(TlsArg::On | TlsArg::Require), None) => {
            return Err(Failure::new(
                Path::new("--tls"),
                "TLS needs --tls-cert FILE and --tls-key FILE",
            ))
        }
        (Some(TlsArg::On), Some(_)) => TlsMode::On,
        (Some(TlsArg::Require) | None, Some(_)) => TlsMode::Require,
    };
    if args.connect.is_some() {
        return Err(Failure::new(
            Path::new("--connect"),
            "the kernel's NBD device does not speak TLS: leave out --tls-cert",
        ));
    }
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Err(Failure::new(
            Path::new("--tls-cert"),
            "needs --tls-key FILE too",
        ));
    };
    let config = TlsConfig::from_pem_files(cert, key, args.tls_ca.as_deref()).map_err(|error| {
        let file = error.file.clone().unwrap_or_else(|| cert.clone());
        Failure::new(&file, error.message)
    })?;
    Ok((mode, Some(config)))
}

/// Runs `qcow serve` until SIGTERM or SIGINT (or, with `--connect`, until
/// the device is disconnected).
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    if let Some(device) = &args.disconnect {
        let index = device_index(device)?;
        Netlink::open()
            .and_then(|mut netlink| netlink.disconnect(index))
            .map_err(|error| Failure::new(Path::new(device), error))?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(image) = args.image.as_deref() else {
        return Err(Failure::new(Path::new("qcow serve"), "no image given"));
    };
    let index = args.connect.as_deref().map(device_index).transpose()?;
    // Certificates are read before the fork, so that a bad one fails the
    // command itself.
    let (tls_mode, tls_config) = tls(args)?;
    if args.fork {
        // The background server opens the image (and asks for a passphrase,
        // on the same terminal) itself; this process waits for its word.
        return detach::start(image);
    }
    let snapshot = args.snapshot.as_deref();
    let access = args.key.access(image, follow)?;
    let readers = args.readers.map_or_else(default_readers, |n| n as usize);
    let export = Arc::new(ImageExport::open(image, snapshot, &access, readers)?);
    let mut listeners = Vec::new();
    if let Some(path) = &args.socket {
        listeners.push(Listener::unix(path).map_err(|error| Failure::new(path, error))?);
    }
    if let Some(address) = &args.bind {
        let listener =
            Listener::tcp(address).map_err(|error| Failure::new(Path::new(address), error))?;
        listeners.push(listener);
    }
    let fail = |error: io::Error| Failure::new(image, error);
    let stop = Stop::new().map_err(fail)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let handle = stop.handle().map_err(fail)?;
        signal_hook::low_level::pipe::register(signal, handle.into_stream()).map_err(fail)?;
    }
    let options = ServeOptions {
        name: args.export_name.clone(),
        limits: Limits::default(),
        max_connections: args.max_connections as usize,
        timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
        log_prefix: format!("qcow: {}: ", image.display()),
        tls: tls_mode,
        tls_config,
        ..ServeOptions::default()
    };
    // The device's sessions end when the kernel lets go of it: then the
    // server has nothing left to do and stops (`ended`).
    let device = match (index, &args.connect) {
        (Some(index), Some(path)) => {
            // One connection: the only boot that hung (an overlay on a
            // two-CPU guest, two connections, README "Not done yet") left
            // a request unanswered; no one-connection boot ever did. The
            // kernel keeps many requests in flight on it: as many as there
            // are readers are served at once.
            let device_options = DeviceOptions {
                index,
                connections: 1,
                requests: export.readers.len(),
                limits: options.limits,
                stack_bytes: options.stack_bytes,
                log_prefix: options.log_prefix.clone(),
            };
            let ended = stop.handle().map_err(fail)?;
            let device = Device::attach(export.clone(), &device_options, ended)
                .map_err(|error| Failure::new(Path::new(path), error))?;
            Some(device)
        }
        _ => None,
    };
    let pid_file = args.pid_file.as_deref().map(PidFile::write).transpose()?;
    if args.ready_stdout {
        detach::ready().map_err(fail)?;
    }
    let served = serve(&listeners, export, &options, &stop);
    drop(listeners);
    if let Some(device) = device {
        // A stop by signal: the device goes first, so that the kernel sends
        // its disconnect instead of finding the sockets closed (I/O errors).
        // When the kernel itself ended the sessions, it says so (ENOENT or
        // EINVAL: not connected), which is fine.
        let _ = device.disconnect();
    }
    drop(pid_file);
    served.map_err(fail)?;
    Ok(ExitCode::SUCCESS)
}

/// N of `/dev/nbdN`, or an error naming the path.
fn device_index(path: &str) -> Result<u32> {
    qcow2_nbd::netlink::device_index(path).ok_or_else(|| {
        Failure::new(
            Path::new(path),
            "not an NBD device (expected /dev/nbdN, N a number)",
        )
    })
}

fn default_readers() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The image's virtual disk as an NBD export.
struct ImageExport {
    size: u64,
    /// The chain opened once more, for block status (the crate's read plan).
    stack: Stack,
    /// Opened chains for reading; a read takes a free one.
    readers: Vec<Mutex<Chain>>,
    next: AtomicUsize,
}

impl ImageExport {
    /// Opens `readers` chains of `image` (in parallel: unlocking an
    /// encrypted image costs its PBKDF2 iterations each time) and the layers.
    fn open(image: &Path, snapshot: Option<&str>, access: &Access, readers: usize) -> Result<Self> {
        let config = Config::default();
        let stack = Stack::open(image, snapshot, config, access)?;
        let mut chains = Vec::with_capacity(readers);
        let more = thread::scope(|scope| {
            let opening: Vec<_> = (0..readers)
                .map(|_| scope.spawn(|| open_reader(image, snapshot, config, access)))
                .collect();
            opening
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(Failure::new(image, "a thread opening the image stopped"))
                    })
                })
                .collect::<Result<Vec<Chain>>>()
        })?;
        chains.extend(more.into_iter().map(Mutex::new));
        Ok(Self {
            size: stack.virtual_size(),
            stack,
            readers: chains,
            next: AtomicUsize::new(0),
        })
    }
}

impl Export for ImageExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let count = self.readers.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut read = |chain: &Chain| chain.top.read_at(offset, buf).map_err(io::Error::from);
        for index in (0..count).map(|step| (first + step) % count) {
            if let Ok(chain) = self.readers[index].try_lock() {
                return read(&chain);
            }
        }
        // All busy: wait for one (a blocked thread, not a spinning one).
        let chain = self.readers[first]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        read(&chain)
    }

    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        let status = self.stack.status(offset, max_len)?;
        Ok(Run {
            len: status.len,
            // qemu-nbd's base:allocation: a hole where no layer stores
            // data, zero where the run is known to read as zeros.
            hole: !status.data,
            zero: status.zero,
        })
    }
}

/// The pid file, written whole (a reader never sees it empty) and removed on drop.
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    fn write(path: &Path) -> Result<Self> {
        let fail = |error: io::Error| Failure::new(path, error);
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        std::fs::write(&partial, format!("{}\n", std::process::id())).map_err(fail)?;
        std::fs::rename(&partial, path).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// `File` is what every layer reads through; the export is shared by the
// connection threads, so the chain's readers must be shareable too.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<ImageExport>();
    shareable::<File>();
};
