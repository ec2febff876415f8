//! The export as the kernel's `/dev/nbdN`: connected socket pairs, one end
//! of each handed to the kernel through netlink ([`crate::netlink`]), the
//! other served by a thread each.
//!
//! The kernel starts in the transmission phase (a netlink connect carries
//! what the handshake would have said: size, block size, transmission
//! flags), sends `NBD_CMD_READ` and `NBD_CMD_DISC` requests and reads
//! simple replies only: it never negotiates structured replies, so the
//! sessions here are transmissions with none negotiated. The kernel keeps
//! many requests in flight on each connection, so each connection is served
//! by [`Session::transmission_concurrent`] with
//! [`DeviceOptions::requests`] workers: reads that wait (on a web server,
//! on decoding) overlap instead of queueing behind each other.

use std::io::{self, BufReader, BufWriter};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::export::Export;
use crate::listener::StopHandle;
use crate::netlink::{Connect, Netlink, REQUEST_TIMEOUT_SECONDS};
use crate::session::{Limits, Session, SessionError, TRANSMISSION_FLAGS};

/// The logical block size given to the kernel: 512 bytes, what a disk's
/// partition table and every file system expect of a virtual disk.
pub const BLOCK_SIZE: u64 = 512;

/// A connected `/dev/nbdN` and the threads serving it.
#[derive(Debug)]
pub struct Device {
    index: u32,
    threads: Vec<JoinHandle<()>>,
}

/// How the device is served.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// N of `/dev/nbdN`.
    pub index: u32,
    /// Connections handed to the kernel (it spreads requests over them; the
    /// export says `NBD_FLAG_CAN_MULTI_CONN`).
    pub connections: usize,
    /// Requests served at once on each connection (at least 1): memory
    /// `connections x requests x` [`Limits::session_bytes`].
    pub requests: usize,
    /// Each session's bounds.
    pub limits: Limits,
    /// Stack of each connection's thread.
    pub stack_bytes: usize,
    /// Messages go to standard error after this prefix.
    pub log_prefix: String,
}

/// Serves one connection as the kernel uses it: no handshake, simple
/// replies, up to `requests` of them at once, until `NBD_CMD_DISC` or the
/// end of the stream.
pub fn serve_connection<E: Export + ?Sized>(
    export: &E,
    stream: &UnixStream,
    limits: Limits,
    requests: usize,
    stack_bytes: usize,
) -> Result<(), SessionError> {
    let reader = BufReader::with_capacity(32 << 10, stream);
    let writer = BufWriter::with_capacity(32 << 10, stream);
    // A failed worker shuts the connection down: the one waiting for the
    // kernel's next request then returns.
    let stop = || {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    };
    Session::new(export, "", limits).transmission_concurrent(
        reader,
        writer,
        requests,
        stack_bytes,
        &stop,
    )
}

impl Device {
    /// Serves `export` to the kernel as `/dev/nbd{index}`. `ended` is
    /// triggered when the kernel has closed every connection (after a
    /// disconnect), so that the server can exit.
    pub fn attach<E: Export + 'static>(
        export: Arc<E>,
        options: &DeviceOptions,
        ended: StopHandle,
    ) -> io::Result<Self> {
        let connections = options.connections.max(1);
        let mut kernel_ends = Vec::with_capacity(connections);
        let mut threads = Vec::with_capacity(connections);
        let running = Arc::new(AtomicUsize::new(connections));
        let ended = Arc::new(ended);
        for number in 0..connections {
            let (ours, theirs) = UnixStream::pair()?;
            kernel_ends.push(theirs);
            let export = export.clone();
            let running = running.clone();
            let ended = ended.clone();
            let limits = options.limits;
            let requests = options.requests;
            let stack_bytes = options.stack_bytes;
            let prefix = options.log_prefix.clone();
            let index = options.index;
            let thread = thread::Builder::new()
                .name(format!("nbd{index}-{number}"))
                .stack_size(options.stack_bytes)
                .spawn(move || {
                    let served = serve_connection(&*export, &ours, limits, requests, stack_bytes);
                    if let Err(error) = served {
                        eprintln!("{prefix}/dev/nbd{index} connection {number}: {error}");
                    }
                    let _ = ours.shutdown(std::net::Shutdown::Both);
                    if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let _ = ended.stop();
                    }
                })?;
            threads.push(thread);
        }
        let connect = Connect {
            index: options.index,
            size: export.size(),
            block_size: BLOCK_SIZE,
            server_flags: u64::from(TRANSMISSION_FLAGS),
            timeout_seconds: REQUEST_TIMEOUT_SECONDS,
            sockets: kernel_ends.iter().map(|end| end.as_raw_fd()).collect(),
        };
        let connected = Netlink::open().and_then(|mut netlink| netlink.connect(&connect));
        // The kernel holds its own references to the sockets now (or has
        // refused them): ours are closed either way, so that a refusal ends
        // the serving threads with an end of file.
        drop(kernel_ends);
        if let Err(error) = connected {
            for thread in threads {
                let _ = thread.join();
            }
            return Err(error);
        }
        Ok(Self {
            index: options.index,
            threads,
        })
    }

    /// N of `/dev/nbdN`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Asks the kernel to detach the device (it sends `NBD_CMD_DISC` and
    /// closes the connections), then waits for the serving threads.
    pub fn disconnect(self) -> io::Result<()> {
        let asked = Netlink::open().and_then(|mut netlink| netlink.disconnect(self.index));
        if asked.is_ok() {
            self.wait();
        }
        asked
    }

    /// Waits until the kernel has closed every connection.
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
