//! One client's session: the fixed newstyle handshake (option haggling),
//! then transmission (requests and replies, one at a time, or several at
//! once for the kernel's device), over any `Read`/`Write` pair. The listener adds sockets and timeouts around it;
//! the fuzz target and the tests drive it over bytes in memory.
//!
//! TLS: the session answers `NBD_OPT_STARTTLS` as its [`TlsMode`] says;
//! when it acknowledges one, [`Session::handshake`] returns
//! [`Handshake::StartTls`] and the caller, who owns the connection, wraps it
//! in TLS and goes on with [`Session::options`] over the wrapped stream.
//!
//! Memory is bounded per session whatever the client asks: option payloads
//! up to [`Limits::max_option_bytes`] (larger ones are skipped and refused),
//! one read buffer of at most [`Limits::piece_bytes`] (a read is served in
//! pieces of that size), and at most [`Limits::max_extents`] block status
//! descriptors per reply.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;

use crate::export::{Export, Run};
use crate::wire::handshake::{
    transmission, ClientFlags, ExportNameReply, Greeting, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
};
use crate::wire::option::{self, ExportRequest, MetaContextRequest, OptionHeader};
use crate::wire::option_reply::{self, BlockSizes};
use crate::wire::reply::{self, Descriptor, SimpleReply};
use crate::wire::request::{self, Request};
use zerocopy::IntoBytes;

/// The one metadata context served.
pub const BASE_ALLOCATION: &[u8] = b"base:allocation";
/// Its id in this server's replies to `NBD_OPT_SET_META_CONTEXT`.
const ALLOCATION_ID: u32 = 1;

/// What the export supports: read-only, shareable, `NBD_CMD_CACHE`.
pub const TRANSMISSION_FLAGS: u16 = transmission::HAS_FLAGS
    | transmission::READ_ONLY
    | transmission::CAN_MULTI_CONN
    | transmission::SEND_CACHE;

/// The bounds of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest read (and write payload) a request may ask for, advertised
    /// as the maximum block size; larger reads get `NBD_EOVERFLOW`
    /// (`NBD_EINVAL` without structured replies). NBD's 32 MiB by default.
    pub max_payload: u32,
    /// A read is read from the export and sent in pieces of at most this
    /// many bytes: the session's read buffer. 1 MiB by default.
    pub piece_bytes: usize,
    /// Largest option payload kept; larger ones are read past and refused
    /// with `NBD_REP_ERR_TOO_BIG`. 64 KiB by default (export names and
    /// queries are at most 4 KiB each).
    pub max_option_bytes: u32,
    /// Most descriptors in one block status reply (the client asks again
    /// for the rest). 4096 (32 KiB) by default.
    pub max_extents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: 32 << 20,
            piece_bytes: 1 << 20,
            max_option_bytes: 64 << 10,
            max_extents: 4096,
        }
    }
}

impl Limits {
    /// The most memory one session's buffers take: the read piece, the
    /// option payload, the block status descriptors and their encoded
    /// reply (both at once), and the scratch of smaller replies (an error
    /// message is at most 4 KiB).
    pub fn session_bytes(&self) -> usize {
        self.piece_bytes + self.max_option_bytes as usize + 2 * self.max_extents * 8 + 4096 + 64
    }
}

/// Why a session ended other than by the client's leave.
#[derive(Debug)]
pub enum SessionError {
    /// Reading from or writing to the client failed (a timeout, a reset).
    Io(io::Error),
    /// The client broke the protocol; the connection is dropped (a hard
    /// disconnect, as the protocol allows).
    Protocol(String),
    /// A read failed after a simple reply's header promised data: the
    /// protocol leaves only a hard disconnect.
    ReadAfterHeader {
        /// Export offset of the failed read.
        offset: u64,
        /// The export's error.
        error: io::Error,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Io(error) => write!(f, "{error}"),
            SessionError::Protocol(message) => write!(f, "protocol violation: {message}"),
            SessionError::ReadAfterHeader { offset, error } => write!(
                f,
                "reading offset {offset} failed after the reply header was sent ({error}); disconnected"
            ),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<io::Error> for SessionError {
    fn from(error: io::Error) -> Self {
        SessionError::Io(error)
    }
}

type Result<T> = std::result::Result<T, SessionError>;

/// How the handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// An export was chosen: transmission follows.
    Transmission,
    /// The client aborted or left.
    Ended,
    /// `NBD_OPT_STARTTLS` was acknowledged: the next byte on the connection
    /// is the client's TLS handshake. The caller starts TLS, then calls
    /// [`Session::options`] over the TLS stream.
    StartTls,
}

/// How the session answers `NBD_OPT_STARTTLS`: the protocol's three modes
/// of a server (its "TLS support" section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// NOTLS: `NBD_OPT_STARTTLS` gets `NBD_REP_ERR_POLICY`.
    #[default]
    Off,
    /// SELECTIVETLS with no TLS-only export: the client may upgrade, or not.
    On,
    /// FORCEDTLS: before TLS, every option but `NBD_OPT_STARTTLS` and
    /// `NBD_OPT_ABORT` gets `NBD_REP_ERR_TLS_REQD`, and
    /// `NBD_OPT_EXPORT_NAME` (which has no error reply) drops the client.
    Require,
}

/// One client's session with one export.
pub struct Session<'e, E: Export + ?Sized> {
    export: &'e E,
    name: &'e str,
    limits: Limits,
    structured: bool,
    no_zeroes: bool,
    allocation: bool,
    tls: TlsMode,
    /// TLS was started (the stream the session is given is the TLS one).
    tls_started: bool,
    /// Option payloads, reply scratch.
    scratch: Vec<u8>,
    /// Read pieces.
    piece: Vec<u8>,
}

impl<'e, E: Export + ?Sized> Session<'e, E> {
    /// A session serving `export` under `name` (the empty name, NBD's
    /// default export, selects it too).
    pub fn new(export: &'e E, name: &'e str, limits: Limits) -> Self {
        Self {
            export,
            name,
            limits,
            structured: false,
            no_zeroes: false,
            allocation: false,
            tls: TlsMode::Off,
            tls_started: false,
            scratch: Vec::new(),
            piece: Vec::new(),
        }
    }

    /// The same session answering `NBD_OPT_STARTTLS` as `mode` says.
    pub fn with_tls(mut self, mode: TlsMode) -> Self {
        self.tls = mode;
        self
    }

    /// Whether structured replies were negotiated.
    pub fn structured(&self) -> bool {
        self.structured
    }

    /// The handshake, then transmission until the client leaves, over a
    /// stream that cannot carry TLS: a session in [`TlsMode::Off`] (one
    /// in another mode ends with an error when the client starts TLS).
    pub fn run<R: Read, W: Write>(&mut self, reader: &mut R, writer: &mut W) -> Result<()> {
        match self.handshake(reader, writer)? {
            Handshake::Transmission => self.transmission(reader, writer),
            Handshake::Ended => Ok(()),
            Handshake::StartTls => Err(SessionError::Protocol(
                "NBD_OPT_STARTTLS acknowledged on a stream without TLS".to_string(),
            )),
        }
    }

    /// The caller has started TLS after [`Handshake::StartTls`]: what was
    /// negotiated before is forgotten, as the protocol requires (a
    /// man in the middle could have chosen it), and another STARTTLS is
    /// refused.
    pub fn tls_started(&mut self) {
        self.tls_started = true;
        self.structured = false;
        self.allocation = false;
    }

    fn knows(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }

    fn unknown_export(&self, name: &[u8]) -> String {
        format!(
            "no export named {:?}; this server exports {:?}",
            String::from_utf8_lossy(name),
            self.name
        )
    }

    /// The greeting and option haggling, until an export is chosen or the client leaves.
    pub fn handshake<R: Read, W: Write>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<Handshake> {
        let offered = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;
        writer.write_all(Greeting::new(offered).as_bytes())?;
        writer.flush()?;
        let mut flags = [0; 4];
        if !read_or_eof(reader, &mut flags)? {
            return Ok(Handshake::Ended);
        }
        let flags = ClientFlags::parse(flags, offered).map_err(|bits| {
            SessionError::Protocol(format!("client flags {bits:#x} were not offered"))
        })?;
        self.no_zeroes = flags.no_zeroes;
        self.options(reader, writer)
    }

    /// Option haggling, until an export is chosen, the client leaves or
    /// TLS is to start: after the greeting ([`Session::handshake`]), and
    /// again over the TLS stream after [`Handshake::StartTls`].
    pub fn options<R: Read, W: Write>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<Handshake> {
        loop {
            let mut header = [0; OptionHeader::LEN];
            if !read_or_eof(reader, &mut header)? {
                return Ok(Handshake::Ended);
            }
            let header = OptionHeader::parse(&header)
                .map_err(|error| SessionError::Protocol(error.to_string()))?;
            let outcome = self.option(header, reader, writer)?;
            writer.flush()?;
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    /// Answers one option; `Some` when it ends the handshake.
    fn option<R: Read, W: Write>(
        &mut self,
        header: OptionHeader,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<Option<Handshake>> {
        let code = header.option;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        if self.tls == TlsMode::Require
            && !self.tls_started
            && code != option::STARTTLS
            && code != option::ABORT
        {
            if code == option::EXPORT_NAME {
                // It has no error reply: the protocol says to disconnect.
                return Err(SessionError::Protocol(
                    "NBD_OPT_EXPORT_NAME before TLS, which this server requires".to_string(),
                ));
            }
            skip(reader, u64::from(header.len))?;
            let message = format!(
                "{} refused: this server requires TLS (NBD_OPT_STARTTLS) first",
                option::name(code)
            );
            option_reply::push_error(&mut out, code, option_reply::ERR_TLS_REQD, &message);
            writer.write_all(&out)?;
            self.scratch = out;
            return Ok(None);
        }
        if header.len > self.limits.max_option_bytes {
            if code == option::EXPORT_NAME {
                // No error reply exists for it: no point reading it first.
                return Err(SessionError::Protocol(format!(
                    "NBD_OPT_EXPORT_NAME of {} bytes",
                    header.len
                )));
            }
            skip(reader, u64::from(header.len))?;
            let message = format!(
                "{} payload of {} bytes is larger than this server's {}",
                option::name(code),
                header.len,
                self.limits.max_option_bytes
            );
            option_reply::push_error(&mut out, code, option_reply::ERR_TOO_BIG, &message);
            writer.write_all(&out)?;
            self.scratch = out;
            return Ok(None);
        }
        let mut payload = vec![0; header.len as usize];
        reader.read_exact(&mut payload)?;
        let outcome = self.answer(code, &payload, &mut out);
        writer.write_all(&out)?;
        self.scratch = out;
        outcome
    }

    /// Appends the reply to option `code` with `payload` to `out`.
    fn answer(
        &mut self,
        code: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Handshake>> {
        let invalid = |out: &mut Vec<u8>, message: &str| {
            option_reply::push_error(out, code, option_reply::ERR_INVALID, message);
        };
        let no_data = |out: &mut Vec<u8>| {
            let message = format!("{} takes no data", option::name(code));
            invalid(out, &message);
        };
        match code {
            option::EXPORT_NAME => {
                if !self.knows(payload) {
                    // No error reply exists for this option: the protocol says to disconnect.
                    return Err(SessionError::Protocol(self.unknown_export(payload)));
                }
                let reply = ExportNameReply::new(self.export.size(), TRANSMISSION_FLAGS);
                out.extend_from_slice(reply.bytes(self.no_zeroes));
                return Ok(Some(Handshake::Transmission));
            }
            option::ABORT => {
                option_reply::push(out, code, option_reply::ACK, &[]);
                return Ok(Some(Handshake::Ended));
            }
            option::LIST if !payload.is_empty() => no_data(out),
            option::LIST => {
                option_reply::push_server(out, code, self.name.as_bytes());
                option_reply::push(out, code, option_reply::ACK, &[]);
            }
            option::STARTTLS if !payload.is_empty() => no_data(out),
            option::STARTTLS if self.tls == TlsMode::Off => option_reply::push_error(
                out,
                code,
                option_reply::ERR_POLICY,
                "TLS is off on this server",
            ),
            option::STARTTLS if self.tls_started => invalid(out, "TLS is already on"),
            option::STARTTLS => {
                option_reply::push(out, code, option_reply::ACK, &[]);
                return Ok(Some(Handshake::StartTls));
            }
            option::INFO | option::GO => return Ok(self.export_info(code, payload, out)),
            option::STRUCTURED_REPLY if !payload.is_empty() => no_data(out),
            option::STRUCTURED_REPLY => {
                self.structured = true;
                option_reply::push(out, code, option_reply::ACK, &[]);
            }
            option::LIST_META_CONTEXT | option::SET_META_CONTEXT => {
                self.meta_context(code, payload, out)
            }
            _ => {
                let message = format!("{} ({code}) is not supported", option::name(code));
                option_reply::push_error(out, code, option_reply::ERR_UNSUP, &message);
            }
        }
        Ok(None)
    }

    /// `NBD_OPT_INFO` / `NBD_OPT_GO`.
    fn export_info(&mut self, code: u32, payload: &[u8], out: &mut Vec<u8>) -> Option<Handshake> {
        let request = match ExportRequest::parse(payload) {
            Ok(request) => request,
            Err(error) => {
                let message = format!("{}: {error}", option::name(code));
                option_reply::push_error(out, code, option_reply::ERR_INVALID, &message);
                return None;
            }
        };
        if !self.knows(request.name) {
            let message = self.unknown_export(request.name);
            option_reply::push_error(out, code, option_reply::ERR_UNKNOWN, &message);
            return None;
        }
        option_reply::push_info_export(out, code, self.export.size(), TRANSMISSION_FLAGS);
        if request.requests.contains(option::INFO_NAME) {
            option_reply::push_info_name(out, code, self.name.as_bytes());
        }
        // Sent whether asked or not (allowed): clients that understand it
        // learn the 32 MiB bound, the others ignore it.
        let sizes = BlockSizes {
            minimum: 1,
            preferred: 4096,
            maximum: self.limits.max_payload,
        };
        option_reply::push_info_block_size(out, code, sizes);
        option_reply::push(out, code, option_reply::ACK, &[]);
        (code == option::GO).then_some(Handshake::Transmission)
    }

    /// `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
    fn meta_context(&mut self, code: u32, payload: &[u8], out: &mut Vec<u8>) {
        let set = code == option::SET_META_CONTEXT;
        if set {
            // A set replaces the selection even when it fails.
            self.allocation = false;
            if !self.structured {
                let message = "NBD_OPT_SET_META_CONTEXT needs NBD_OPT_STRUCTURED_REPLY first";
                option_reply::push_error(out, code, option_reply::ERR_INVALID, message);
                return;
            }
        }
        let request = match MetaContextRequest::parse(payload) {
            Ok(request) => request,
            Err(error) => {
                let message = format!("{}: {error}", option::name(code));
                option_reply::push_error(out, code, option_reply::ERR_INVALID, &message);
                return;
            }
        };
        if !self.knows(request.name) {
            let message = self.unknown_export(request.name);
            option_reply::push_error(out, code, option_reply::ERR_UNKNOWN, &message);
            return;
        }
        let mut matched = !set && request.queries.is_empty();
        for query in &request.queries {
            let Some(colon) = query.iter().position(|&byte| byte == b':') else {
                let message = format!(
                    "query {:?} has no namespace",
                    String::from_utf8_lossy(query)
                );
                option_reply::push_error(out, code, option_reply::ERR_INVALID, &message);
                return;
            };
            let (namespace, leaf) = (&query[..colon], &query[colon + 1..]);
            // `base:` is a wildcard when listing and selects nothing when
            // setting; other namespaces are not ours and are ignored.
            matched |= namespace == b"base" && (leaf == b"allocation" || (!set && leaf.is_empty()));
        }
        if matched {
            let id = if set { ALLOCATION_ID } else { 0 };
            option_reply::push_meta_context(out, code, id, BASE_ALLOCATION);
        }
        option_reply::push(out, code, option_reply::ACK, &[]);
        if set {
            self.allocation = matched;
        }
    }

    /// Requests and replies until the client leaves, one at a time.
    pub fn transmission<R: Read, W: Write>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<()> {
        while let Some(request) = next_request(reader, &self.limits)? {
            self.request(request, writer)?;
            writer.flush()?;
        }
        Ok(())
    }

    /// Transmission with up to `workers` requests served at once, each by
    /// a thread of its own (`stack_bytes` of stack) with its own buffers,
    /// so the session's memory is `workers` times
    /// [`Limits::session_bytes`]. The workers take turns reading the next
    /// request; each reply is written whole under the writer's lock, in the
    /// order the replies are ready, not the requests' (the protocol matches
    /// them by cookie), and the first piece of a read is read before the
    /// lock is taken, so one slow read does not hold up the others.
    ///
    /// For a client that keeps several requests in flight on one
    /// connection, as the kernel's `/dev/nbdN` does. With structured
    /// replies negotiated a read of several pieces holds the lock from its
    /// first chunk to its last. `stop` must make a worker blocked reading
    /// from the client return (shut the connection down): it is called
    /// when a worker fails, so that the others end too.
    pub fn transmission_concurrent<R: Read + Send, W: Write + Send>(
        &self,
        reader: R,
        writer: W,
        workers: usize,
        stack_bytes: usize,
        stop: &(dyn Fn() + Sync),
    ) -> Result<()> {
        let shared = Shared {
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            done: AtomicBool::new(false),
            failure: Mutex::new(None),
        };
        thread::scope(|scope| {
            for _ in 0..workers.max(1) {
                let mut worker = self.worker();
                let shared = &shared;
                let spawned =
                    thread::Builder::new()
                        .stack_size(stack_bytes)
                        .spawn_scoped(scope, move || {
                            if let Err(error) = worker.serve_shared(shared) {
                                shared.fail(error);
                                stop();
                            }
                        });
                if let Err(error) = spawned {
                    shared.fail(error.into());
                    stop();
                    break;
                }
            }
        });
        let failure = shared
            .failure
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        failure.map_or(Ok(()), Err)
    }

    /// A session for one worker of [`Self::transmission_concurrent`]: the
    /// negotiated state, buffers of its own.
    fn worker(&self) -> Session<'e, E> {
        Session {
            export: self.export,
            name: self.name,
            limits: self.limits,
            structured: self.structured,
            no_zeroes: self.no_zeroes,
            allocation: self.allocation,
            tls: self.tls,
            tls_started: self.tls_started,
            scratch: Vec::new(),
            piece: Vec::new(),
        }
    }

    /// One worker's loop: the next request under the reader's lock, its
    /// reply under the writer's, until the client leaves or another
    /// worker saw it leave or fail.
    fn serve_shared<R: Read, W: Write>(&mut self, shared: &Shared<R, W>) -> Result<()> {
        loop {
            let request = {
                let mut reader = lock(&shared.reader);
                if shared.done.load(Ordering::Acquire) {
                    return Ok(());
                }
                match next_request(&mut *reader, &self.limits)? {
                    Some(request) => request,
                    None => {
                        shared.done.store(true, Ordering::Release);
                        return Ok(());
                    }
                }
            };
            let mut reply = ReplyWriter {
                shared: &shared.writer,
                held: None,
            };
            self.request(request, &mut reply)?;
            reply.flush()?;
        }
    }

    fn request<W: Write>(&mut self, request: Request, writer: &mut W) -> Result<()> {
        let size = self.export.size();
        let in_export = request.end().is_some_and(|end| end <= size);
        let out_of_range = || {
            format!(
                "{} of {} bytes at offset {} goes past the end of the export ({size} bytes)",
                request::name(request.command),
                request.len,
                request.offset
            )
        };
        match request.command {
            // A write's payload was read past with the request.
            request::WRITE | request::TRIM | request::WRITE_ZEROES => self.error(
                writer,
                request.cookie,
                reply::EPERM,
                "the export is read-only",
            ),
            request::READ => {
                if request.flags != 0 {
                    let message =
                        format!("NBD_CMD_READ flags {:#x} are not supported", request.flags);
                    return self.error(writer, request.cookie, reply::EINVAL, &message);
                }
                if request.len > self.limits.max_payload {
                    let message = format!(
                        "NBD_CMD_READ of {} bytes is larger than the maximum of {}",
                        request.len, self.limits.max_payload
                    );
                    let error = if self.structured {
                        reply::EOVERFLOW
                    } else {
                        reply::EINVAL
                    };
                    return self.error(writer, request.cookie, error, &message);
                }
                if !in_export {
                    return self.error(writer, request.cookie, reply::EINVAL, &out_of_range());
                }
                if self.structured {
                    self.read_structured(request, writer)
                } else {
                    self.read_simple(request, writer)
                }
            }
            request::BLOCK_STATUS => {
                let message = if !self.allocation {
                    Some("no metadata context was selected (NBD_OPT_SET_META_CONTEXT)".to_string())
                } else if request.flags & !request::FLAG_REQ_ONE != 0 {
                    Some(format!(
                        "NBD_CMD_BLOCK_STATUS flags {:#x} are not supported",
                        request.flags
                    ))
                } else if request.len == 0 {
                    Some("NBD_CMD_BLOCK_STATUS of 0 bytes".to_string())
                } else if !in_export {
                    Some(out_of_range())
                } else {
                    None
                };
                match message {
                    Some(message) => self.error(writer, request.cookie, reply::EINVAL, &message),
                    None => self.block_status(request, writer),
                }
            }
            request::CACHE => {
                if request.flags != 0 {
                    let message =
                        format!("NBD_CMD_CACHE flags {:#x} are not supported", request.flags);
                    return self.error(writer, request.cookie, reply::EINVAL, &message);
                }
                if !in_export {
                    return self.error(writer, request.cookie, reply::EINVAL, &out_of_range());
                }
                // Nothing to prefetch into: the image's caches fill on
                // reads. Success, as the protocol allows.
                let ok = SimpleReply {
                    error: 0,
                    cookie: request.cookie,
                };
                writer.write_all(&ok.emit())?;
                Ok(())
            }
            command => {
                let message = format!("{} ({command}) is not supported", request::name(command));
                self.error(writer, request.cookie, reply::EINVAL, &message)
            }
        }
    }

    /// An error reply: a structured error chunk with the message once
    /// structured replies are on, else a simple reply.
    fn error<W: Write>(
        &mut self,
        writer: &mut W,
        cookie: u64,
        error: u32,
        message: &str,
    ) -> Result<()> {
        if self.structured {
            let mut out = std::mem::take(&mut self.scratch);
            out.clear();
            reply::push_error(&mut out, cookie, error, message, None, true);
            writer.write_all(&out)?;
            self.scratch = out;
        } else {
            writer.write_all(&SimpleReply { error, cookie }.emit())?;
        }
        Ok(())
    }

    /// The export's status at `offset`, checked (nonzero, inside `max_len`).
    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        let run = self.export.status(offset, max_len)?;
        if run.len == 0 {
            return Err(io::Error::other(format!(
                "the export reported an empty run at offset {offset}"
            )));
        }
        Ok(Run {
            len: run.len.min(max_len),
            ..run
        })
    }

    /// Reads `len` bytes at `offset` into the piece buffer.
    fn read_piece(&mut self, offset: u64, len: usize) -> io::Result<()> {
        if self.piece.len() < len {
            self.piece.resize(len, 0);
        }
        self.export.read_at(offset, &mut self.piece[..len])
    }

    /// A read with structured replies: hole chunks for runs that read as
    /// zeros, data chunks of at most one piece for the rest.
    fn read_structured<W: Write>(&mut self, request: Request, writer: &mut W) -> Result<()> {
        let cookie = request.cookie;
        let end = request.offset + u64::from(request.len);
        if request.len == 0 {
            writer.write_all(&reply::none(cookie))?;
            return Ok(());
        }
        let piece_bytes = self.limits.piece_bytes.max(1) as u64;
        let mut pos = request.offset;
        // Data gathered for the next data chunk: `pending_start..pos`.
        let mut pending_start = pos;
        while pos < end {
            let run = match self.status(pos, end - pos) {
                Ok(run) => run,
                Err(error) => return self.read_error(writer, cookie, pos, &error),
            };
            if run.zero {
                if pending_start < pos
                    && !self.send_data(writer, cookie, pending_start, pos, false)?
                {
                    return Ok(());
                }
                let done = pos + run.len == end;
                // `run.len` is within the request, so it fits in 32 bits.
                writer.write_all(&reply::offset_hole(cookie, pos, run.len as u32, done))?;
                pos += run.len;
                pending_start = pos;
                continue;
            }
            let data_end = pos + run.len;
            while pos < data_end {
                let room = piece_bytes - (pos - pending_start);
                pos += room.min(data_end - pos);
                if pos - pending_start == piece_bytes || pos == end {
                    if !self.send_data(writer, cookie, pending_start, pos, pos == end)? {
                        return Ok(());
                    }
                    pending_start = pos;
                }
            }
        }
        Ok(())
    }

    /// Reads `start..end` and sends it as one data chunk; on a read error
    /// sends the error chunk instead (ending the reply) and returns false.
    fn send_data<W: Write>(
        &mut self,
        writer: &mut W,
        cookie: u64,
        start: u64,
        end: u64,
        done: bool,
    ) -> Result<bool> {
        let len = (end - start) as usize;
        if let Err(error) = self.read_piece(start, len) {
            self.read_error(writer, cookie, start, &error)?;
            return Ok(false);
        }
        writer.write_all(&reply::offset_data_header(cookie, start, len as u32, done))?;
        writer.write_all(&self.piece[..len])?;
        Ok(true)
    }

    /// Ends a structured read reply with an `NBD_EIO` at `offset`.
    fn read_error<W: Write>(
        &mut self,
        writer: &mut W,
        cookie: u64,
        offset: u64,
        error: &io::Error,
    ) -> Result<()> {
        let message = format!("reading offset {offset}: {error}");
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        reply::push_error(&mut out, cookie, reply::EIO, &message, Some(offset), true);
        writer.write_all(&out)?;
        self.scratch = out;
        Ok(())
    }

    /// A read with a simple reply: the first piece is read before the
    /// header, so that its failure is still an error reply; a later
    /// failure can only drop the connection.
    fn read_simple<W: Write>(&mut self, request: Request, writer: &mut W) -> Result<()> {
        let cookie = request.cookie;
        let end = request.offset + u64::from(request.len);
        let piece_bytes = self.limits.piece_bytes.max(1) as u64;
        let mut pos = request.offset;
        let first = piece_bytes.min(end - pos) as usize;
        if let Err(error) = self.read_piece(pos, first) {
            let message = format!("reading offset {pos}: {error}");
            return self.error(writer, cookie, reply::EIO, &message);
        }
        writer.write_all(&SimpleReply { error: 0, cookie }.emit())?;
        writer.write_all(&self.piece[..first])?;
        pos += first as u64;
        while pos < end {
            let len = piece_bytes.min(end - pos) as usize;
            if let Err(error) = self.read_piece(pos, len) {
                return Err(SessionError::ReadAfterHeader { offset: pos, error });
            }
            writer.write_all(&self.piece[..len])?;
            pos += len as u64;
        }
        Ok(())
    }

    /// `base:allocation` descriptors from `offset`, merged by flags, at
    /// most `max_extents` (one with `NBD_CMD_FLAG_REQ_ONE`), never past the
    /// request's end.
    fn block_status<W: Write>(&mut self, request: Request, writer: &mut W) -> Result<()> {
        let end = request.offset + u64::from(request.len);
        let most = if request.flags & request::FLAG_REQ_ONE != 0 {
            1
        } else {
            self.limits.max_extents.max(1)
        };
        let mut descriptors: Vec<Descriptor> = Vec::new();
        let mut pos = request.offset;
        while pos < end {
            let run = match self.status(pos, end - pos) {
                Ok(run) => run,
                Err(error) => {
                    let message = format!("block status at offset {pos}: {error}");
                    let mut out = std::mem::take(&mut self.scratch);
                    out.clear();
                    reply::push_error(
                        &mut out,
                        request.cookie,
                        reply::EIO,
                        &message,
                        Some(pos),
                        true,
                    );
                    writer.write_all(&out)?;
                    self.scratch = out;
                    return Ok(());
                }
            };
            let flags = (if run.hole { reply::STATE_HOLE } else { 0 })
                | (if run.zero { reply::STATE_ZERO } else { 0 });
            // Within the request, so within 32 bits.
            let len = run.len as u32;
            match descriptors.last_mut() {
                Some(last) if last.flags == flags => last.len += len,
                _ => {
                    if descriptors.len() == most {
                        break;
                    }
                    descriptors.push(Descriptor { len, flags });
                }
            }
            pos += run.len;
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        reply::push_block_status(&mut out, request.cookie, ALLOCATION_ID, &descriptors, true);
        writer.write_all(&out)?;
        self.scratch = out;
        Ok(())
    }
}

/// The next request, a write's payload read past (the export is
/// read-only); `None` when the client leaves: the stream ends between
/// requests, or `NBD_CMD_DISC`.
fn next_request<R: Read>(reader: &mut R, limits: &Limits) -> Result<Option<Request>> {
    let mut header = [0; Request::LEN];
    if !read_or_eof(reader, &mut header)? {
        return Ok(None);
    }
    let request =
        Request::parse(&header).map_err(|error| SessionError::Protocol(error.to_string()))?;
    match request.command {
        request::DISC => return Ok(None),
        request::WRITE if request.len > limits.max_payload => {
            return Err(SessionError::Protocol(format!(
                "NBD_CMD_WRITE payload of {} bytes is larger than the {} advertised",
                request.len, limits.max_payload
            )))
        }
        request::WRITE => skip(reader, u64::from(request.len))?,
        _ => {}
    }
    Ok(Some(request))
}

/// What the workers of [`Session::transmission_concurrent`] share.
struct Shared<R, W> {
    reader: Mutex<R>,
    writer: Mutex<W>,
    /// The client left (or a worker failed): the others stop at their next
    /// request.
    done: AtomicBool,
    /// The first worker's failure, the session's result.
    failure: Mutex<Option<SessionError>>,
}

impl<R, W> Shared<R, W> {
    fn fail(&self, error: SessionError) {
        self.done.store(true, Ordering::Release);
        lock(&self.failure).get_or_insert(error);
    }
}

/// A lock whose holder panicked is still usable: the stream or slot it
/// guards holds no invariant a panic could break halfway (and a worker
/// that panics ends the session through its missing reply anyway).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared writer as one reply sees it: locked at the reply's first
/// byte, flushed and unlocked when the reply is done (dropped), so that
/// replies never interleave and the work before a reply's first byte runs
/// beside the other workers' replies.
struct ReplyWriter<'a, W: Write> {
    shared: &'a Mutex<W>,
    held: Option<MutexGuard<'a, W>>,
}

impl<W: Write> ReplyWriter<'_, W> {
    fn held(&mut self) -> &mut W {
        self.held.get_or_insert_with(|| lock(self.shared))
    }
}

impl<W: Write> Write for ReplyWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.held().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.held().write_all(buf)
    }

    /// Flushes what the reply wrote, if it wrote anything.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.held {
            Some(writer) => writer.flush(),
            None => Ok(()),
        }
    }
}

/// Fills `buf`; `false` if the stream ended before its first byte (the
/// peer left between messages), an error if it ended inside.
fn read_or_eof<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

/// Reads and drops `len` bytes, a small buffer at a time.
fn skip<R: Read>(reader: &mut R, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
