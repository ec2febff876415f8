//! The control disk: what `run.sh` asks of the demo besides the images.
//!
//! `run.sh` attaches it last, read-only, with the serial
//! [`CONTROL_SERIAL`], only when there is something to ask. Its format is
//! defined here and nowhere else in the firmware (the runner writes it:
//! `testkit/src/firmware_run.rs`, behind `run.sh`):
//! UTF-8 text, one `key: value` request per line, padded with zeros to
//! whole sectors (the first zero byte ends the text).
//!
//! | line | request |
//! |---|---|
//! | `file: N:/PATH` | hash this file instead of the whole disk (repeatable, see [`crate::files`]) |
//! | `passphrase-hex: HEX` | unlock encrypted images with these bytes (at most once) |
//!
//! The passphrase is hex so that any bytes survive, newlines included: it
//! is the passphrase file's content verbatim, as QEMU's `--object
//! secret,file=PATH` takes it. An unknown key is an error, so a runner and
//! a firmware that disagree about the format say so instead of ignoring a
//! request.
//!
//! A disk needs no new device code and works the same on both
//! architectures. The text and the decoded passphrase live in
//! [`Zeroizing`] buffers, so none of the firmware's copies of the
//! passphrase stays in memory once the images are open (what PBKDF2 leaves
//! on the stack is the crate's and RustCrypto's business); the disk's
//! sectors are read straight into that buffer (whole sectors from offset 0
//! do not go through the driver's bounce buffer).

use crate::demo::DemoError;
use crate::disk::VirtioDisk;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use qcow2_reader::BlockRead;
use zeroize::Zeroizing;

/// The serial of the control disk.
pub const CONTROL_SERIAL: &[u8] = b"qcow2-demo-control";

/// The largest control disk read (a larger one is refused): room for
/// hundreds of requests and a passphrase far longer than anyone types.
const MAX_CONTROL_BYTES: u64 = 64 * 1024;

/// Key of a file request.
const FILE_KEY: &[u8] = b"file:";

/// Key of the passphrase.
const PASSPHRASE_KEY: &[u8] = b"passphrase-hex:";

/// A passphrase, zeroized when dropped.
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// The passphrase's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What the control disk asks for; empty when there is no control disk.
#[derive(Default)]
pub struct Requests {
    /// `file:` locations, in order.
    pub files: Vec<String>,
    /// The passphrase for encrypted images.
    pub passphrase: Option<Passphrase>,
}

/// Why the control disk was refused.
#[derive(Debug)]
pub enum ControlError {
    /// The disk is larger than [`MAX_CONTROL_BYTES`] (the runner never
    /// writes one; reading only the start would cut a request silently).
    TooLarge {
        /// The disk's size.
        bytes: u64,
    },
    /// A line was refused.
    Line {
        /// Line number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
}

/// What is wrong with a control disk line.
#[derive(Debug)]
pub enum LineProblem {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// The line has no known `key:`.
    UnknownKey,
    /// A second `passphrase-hex:` line.
    SecondPassphrase,
    /// The passphrase's hex has an odd length or a non-hex character.
    BadHex,
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLarge { bytes } => write!(
                f,
                "{bytes} bytes, more than the {MAX_CONTROL_BYTES} bytes read"
            ),
            Self::Line { line, problem } => write!(f, "line {line}: {problem}"),
        }
    }
}

impl core::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotUtf8 => "not UTF-8",
            Self::UnknownKey => "unknown request (expected `file:` or `passphrase-hex:`)",
            Self::SecondPassphrase => "a second `passphrase-hex:` line",
            Self::BadHex => "`passphrase-hex:` needs an even number of hex digits",
        })
    }
}

/// Reads the control disk among `disks`, if one is attached.
pub fn read(disks: &[VirtioDisk]) -> Result<Requests, DemoError> {
    let Some(index) = disks
        .iter()
        .position(|disk| disk.serial().as_bytes() == CONTROL_SERIAL)
    else {
        return Ok(Requests::default());
    };
    let disk = &disks[index];
    let disk_error = |error| DemoError::Disk { disk: index, error };
    let control_error = |error| DemoError::Control { disk: index, error };
    let size = disk.size().map_err(disk_error)?;
    if size > MAX_CONTROL_BYTES {
        return Err(control_error(ControlError::TooLarge { bytes: size }));
    }
    let mut bytes = Zeroizing::new(alloc::vec![0u8; size as usize]);
    disk.read_at(0, &mut bytes).map_err(disk_error)?;
    parse(&bytes).map_err(control_error)
}

/// Parses the control text (up to the first zero byte); an error names
/// the line (from 1).
fn parse(bytes: &[u8]) -> Result<Requests, ControlError> {
    let len = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    let mut requests = Requests::default();
    for (number, line) in bytes[..len].split(|&byte| byte == b'\n').enumerate() {
        let at = |problem| ControlError::Line {
            line: number + 1,
            problem,
        };
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if let Some(location) = line.strip_prefix(FILE_KEY) {
            let location = core::str::from_utf8(location.trim_ascii())
                .map_err(|_| at(LineProblem::NotUtf8))?;
            requests.files.push(location.to_string());
        } else if let Some(hex) = line.strip_prefix(PASSPHRASE_KEY) {
            if requests.passphrase.is_some() {
                return Err(at(LineProblem::SecondPassphrase));
            }
            let passphrase = decode_hex(hex.trim_ascii()).ok_or(at(LineProblem::BadHex))?;
            requests.passphrase = Some(passphrase);
        } else {
            return Err(at(LineProblem::UnknownKey));
        }
    }
    Ok(requests)
}

/// Decodes hex digits into a buffer allocated once at its final size, so
/// no reallocation leaves a copy of the bytes behind.
fn decode_hex(hex: &[u8]) -> Option<Passphrase> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(hex.len() / 2));
    for pair in hex.chunks_exact(2) {
        let digit = |byte: u8| char::from(byte).to_digit(16);
        let (high, low) = (digit(pair[0])?, digit(pair[1])?);
        bytes.push((high << 4 | low) as u8);
    }
    Some(Passphrase(bytes))
}
