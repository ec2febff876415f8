//! `qcow serve`'s protocol (`qcow2-nbd`): the option and request parsers
//! on raw bytes, and a whole session driven by an arbitrary client byte
//! stream against an export in memory.
//!
//! Input: byte 0 chooses the limits (read piece size, option payload
//! bound), the export name, which export offset fails to read and the TLS
//! mode (bits 5-6: off, on, require); byte 1 the export's layout; the rest
//! is what the client sends after the server's greeting (client flags,
//! options, requests). An acknowledged `NBD_OPT_STARTTLS` goes on as if
//! TLS were a transparent layer: the rest of the bytes are the options
//! (and requests) sent over TLS.
//!
//! Checks: nothing panics; the session's heap stays within the limits it
//! states (`Limits::session_bytes`, twice over for `Vec` growth), whatever
//! lengths the client claims; the server's output starts with its greeting
//! and stays within what the requests can ask for; every read the export
//! sees lies inside the export.
#![no_main]

use std::io::{self, Cursor, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use qcow2_nbd::session::Handshake;
use qcow2_nbd::wire::option::{ExportRequest, MetaContextRequest, OptionHeader};
use qcow2_nbd::wire::request::Request;
use qcow2_nbd::{Export, Limits, Run, Session, TlsMode};
use qcow2_reader_fuzz::HeapWatch;

const SIZE: u64 = 256 << 10;

/// 256 KiB whose runs (4 KiB units) are data, zero or hole by the layout
/// byte; reads at `fail_at` fail.
struct Fake {
    layout: u8,
    fail_at: Option<u64>,
    reads: AtomicU64,
}

impl Fake {
    fn unit(&self, offset: u64) -> u8 {
        ((offset >> 12) as u8 ^ self.layout) % 3
    }
}

impl Export for Fake {
    fn size(&self) -> u64 {
        SIZE
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        assert!(
            end <= SIZE,
            "read of {} bytes at {offset} past the export",
            buf.len()
        );
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.fail_at.is_some_and(|at| (offset..end).contains(&at)) {
            return Err(io::Error::other("injected failure"));
        }
        buf.fill(0x5a);
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        assert!(offset < SIZE && max_len > 0 && offset + max_len <= SIZE);
        let kind = self.unit(offset);
        let mut end = (offset | 4095) + 1;
        while end < offset + max_len && self.unit(end) == kind {
            end += 4096;
        }
        Ok(Run {
            len: end.min(offset + max_len) - offset,
            hole: kind == 2,
            zero: kind != 0,
        })
    }
}

/// Counts what the server writes, without keeping it past the greeting.
struct Counter {
    written: u64,
    start: Vec<u8>,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.start.len() < 18 {
            let take = buf.len().min(18 - self.start.len());
            self.start.extend_from_slice(&buf[..take]);
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (config, layout, client) = (data[0], data[1], &data[2..]);

    // The parsers alone, on the client bytes as each message.
    if let Ok(header) = <&[u8; OptionHeader::LEN]>::try_from(client.get(..16).unwrap_or_default()) {
        let _ = OptionHeader::parse(header);
    }
    if let Ok(header) = <&[u8; Request::LEN]>::try_from(client.get(..28).unwrap_or_default()) {
        if let Ok(request) = Request::parse(header) {
            assert_eq!(&request.emit(), header);
        }
    }
    let _ = ExportRequest::parse(client);
    if let Ok(request) = MetaContextRequest::parse(client) {
        assert!(request.queries.len() <= client.len() / 4);
    }

    let limits = Limits {
        piece_bytes: [512, 4096, 65536, 1 << 20][usize::from(config & 3)],
        max_option_bytes: [64 << 10, 100][usize::from((config >> 2) & 1)],
        ..Limits::default()
    };
    let name = if config & 8 != 0 { "disk" } else { "" };
    let fake = Fake {
        layout,
        fail_at: (config & 16 != 0).then(|| u64::from(layout) << 10),
        reads: AtomicU64::new(0),
    };
    let mut reader = Cursor::new(client);
    let mut writer = Counter {
        written: 0,
        start: Vec::new(),
    };
    let watch = HeapWatch::start();
    let tls = [
        TlsMode::Off,
        TlsMode::On,
        TlsMode::Require,
        TlsMode::Require,
    ][usize::from((config >> 5) & 3)];
    let mut session = Session::new(&fake, name, limits).with_tls(tls);
    let mut outcome = session.handshake(&mut reader, &mut writer);
    if let Ok(Handshake::StartTls) = outcome {
        assert_ne!(tls, TlsMode::Off, "STARTTLS acknowledged with TLS off");
        session.tls_started();
        outcome = session.options(&mut reader, &mut writer);
        assert!(
            !matches!(outcome, Ok(Handshake::StartTls)),
            "a second STARTTLS acknowledged"
        );
    }
    if let Ok(Handshake::Transmission) = outcome {
        let _ = session.transmission(&mut reader, &mut writer);
    }
    drop(session);
    let peak = watch.peak_growth();
    assert!(
        peak <= 2 * limits.session_bytes(),
        "session heap grew by {peak} bytes, limits say {}",
        limits.session_bytes()
    );
    assert!(writer.start.starts_with(b"NBDMAGIC"), "no greeting");
    // Each 28-byte request asks for at most the export's size back, each
    // option for a few replies: a generous bound on the output.
    let requests = client.len() as u64 / 16 + 1;
    assert!(
        writer.written <= 18 + requests * (SIZE + 8192),
        "{} bytes written for {} input bytes",
        writer.written,
        client.len()
    );
});
