//! `qcow map`: the allocation extents of the virtual disk, merged as
//! `qemu-img map` merges them, in its human or JSON format.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use qcow2_reader::Config;

use crate::failure::{is_broken_pipe, Failure, Result};
use crate::layers::{Follow, Stack, Status};
use crate::passphrase::KeyArgs;
use crate::size::parse_size;

/// Arguments of `qcow map`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON, like `qemu-img map --output=json`.
    #[arg(long)]
    json: bool,
    /// First guest offset to map.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    start_offset: u64,
    /// Bytes to map from the start offset (default: to the end of the disk).
    #[arg(long, value_parser = parse_size)]
    max_length: Option<u64>,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    image: PathBuf,
}

/// Longest run asked of the layers at once; merging joins the pieces.
const STEP_BYTES: u64 = 1 << 30;

/// Runs `qcow map`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let config = Config::default();
    let access = args.key.access(&args.image, follow)?;
    let stack = Stack::open(&args.image, None, config, &access)?;
    let size = stack.virtual_size();
    let start = args.start_offset.min(size);
    let end = match args.max_length {
        Some(len) => start.saturating_add(len).min(size),
        None => size,
    };
    let mut printer = Printer::new(args.json, &stack);
    let result =
        walk(&stack, start, end, |status| printer.push(status)).and_then(|()| printer.finish());
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) if is_broken_pipe(&error) => Ok(ExitCode::SUCCESS),
        Err(error) => Err(Failure::new(&args.image, error)),
    }
}

/// Calls `emit` with every merged run of `start..end`, in order.
pub fn walk(
    stack: &Stack,
    start: u64,
    end: u64,
    mut emit: impl FnMut(&Status) -> io::Result<()>,
) -> io::Result<()> {
    let mut pending: Option<Status> = None;
    let mut offset = start;
    while offset < end {
        let status = stack.status(offset, (end - offset).min(STEP_BYTES))?;
        offset += status.len;
        match &mut pending {
            Some(current) if mergeable(current, &status) => current.len += status.len,
            _ => {
                if let Some(done) = pending.replace(status) {
                    emit(&done)?;
                }
            }
        }
    }
    match pending {
        Some(done) => emit(&done),
        None => Ok(()),
    }
}

/// `qemu-img map`'s rule: same flags and layer, and contiguous host offsets when there are any.
fn mergeable(current: &Status, next: &Status) -> bool {
    let same = current.zero == next.zero
        && current.data == next.data
        && current.depth == next.depth
        && current.present == next.present;
    same && match (current.offset, next.offset) {
        (None, None) => true,
        (Some(offset), Some(next_offset)) => offset + current.len == next_offset,
        _ => false,
    }
}

/// Writes runs as they come, in either format.
struct Printer<'s> {
    json: bool,
    stack: &'s Stack,
    out: io::BufWriter<io::StdoutLock<'static>>,
    count: usize,
}

impl<'s> Printer<'s> {
    fn new(json: bool, stack: &'s Stack) -> Self {
        Self {
            json,
            stack,
            out: io::BufWriter::new(io::stdout().lock()),
            count: 0,
        }
    }

    fn push(&mut self, status: &Status) -> io::Result<()> {
        if self.json {
            self.push_json(status)
        } else {
            self.push_human(status)
        }
    }

    /// Byte for byte `qemu-img map --output=json`.
    fn push_json(&mut self, status: &Status) -> io::Result<()> {
        let lead = if self.count == 0 { "[" } else { ",\n" };
        self.count += 1;
        let Status {
            start,
            len,
            depth,
            present,
            zero,
            data,
            offset,
        } = *status;
        write!(
            self.out,
            "{lead}{{ \"start\": {start}, \"length\": {len}, \"depth\": {depth}, \"present\": {present}, \"zero\": {zero}, \"data\": {data}"
        )?;
        if let Some(offset) = offset {
            write!(self.out, ", \"offset\": {offset}")?;
        }
        write!(self.out, "}}")
    }

    /// `qemu-img map`'s table of data runs; compressed runs and encrypted
    /// layers' runs, which it refuses, say so.
    fn push_human(&mut self, status: &Status) -> io::Result<()> {
        if self.count == 0 {
            writeln!(
                self.out,
                "{:<16}{:<16}{:<16}File",
                "Offset", "Length", "Mapped to"
            )?;
        }
        self.count += 1;
        if !status.data || status.zero {
            return Ok(());
        }
        let view = &self.stack.views[status.depth];
        let unmapped = if view.encrypted {
            "encrypted"
        } else {
            "compressed"
        };
        let mapped = status.offset.map_or(unmapped.to_string(), hex);
        let file = view.data_path.display();
        writeln!(
            self.out,
            "{:<16}{:<16}{:<16}{file}",
            hex(status.start),
            hex(status.len),
            mapped
        )
    }

    fn finish(mut self) -> io::Result<()> {
        if self.json {
            if self.count == 0 {
                write!(self.out, "[")?;
            }
            writeln!(self.out, "]")?;
        } else if self.count == 0 {
            writeln!(
                self.out,
                "{:<16}{:<16}{:<16}File",
                "Offset", "Length", "Mapped to"
            )?;
        }
        self.out.flush()
    }
}

/// C's `%#x`: `0` for zero, `0x...` otherwise.
fn hex(value: u64) -> String {
    if value == 0 {
        "0".to_string()
    } else {
        format!("{value:#x}")
    }
}
