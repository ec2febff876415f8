//! `qcow cat`: the virtual disk's bytes, or a range of them, to standard output.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use qcow2_reader::{BlockRead, Config};

use crate::failure::{is_broken_pipe, Failure, Result};
use crate::layers::{open_reader, Follow};
use crate::passphrase::KeyArgs;
use crate::size::parse_size;

/// Arguments of `qcow cat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First byte of the virtual disk to write.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    offset: u64,
    /// Bytes to write (default: to the end of the disk).
    #[arg(long, value_parser = parse_size)]
    length: Option<u64>,
    /// Read the disk as of this internal snapshot (id or name), like `qemu-img convert -l`.
    #[arg(short = 'l', long)]
    snapshot: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    image: PathBuf,
}

/// Bytes read and written per step.
const CHUNK_BYTES: usize = 4 << 20;

/// Runs `qcow cat`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let access = args.key.access(&args.image, follow)?;
    let chain = open_reader(
        &args.image,
        args.snapshot.as_deref(),
        Config::default(),
        &access,
    )?;
    let fail = |error: &dyn std::fmt::Display| Failure::new(&args.image, error);
    let size = chain.top.size().map_err(|error| fail(&error))?;
    let length = args.length.unwrap_or(size.saturating_sub(args.offset));
    let end = args.offset.checked_add(length).filter(|&end| end <= size);
    let Some(end) = end else {
        let message = format!(
            "range of {length} bytes at offset {} is beyond the virtual disk size {size}",
            args.offset
        );
        return Err(fail(&message));
    };
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut offset = args.offset;
    while offset < end {
        let len = (end - offset).min(CHUNK_BYTES as u64) as usize;
        let part = &mut buf[..len];
        chain
            .top
            .read_at(offset, part)
            .map_err(|error| fail(&error))?;
        match out.write_all(part) {
            Err(error) if is_broken_pipe(&error) => return Ok(ExitCode::SUCCESS),
            result => result.map_err(|error| fail(&error))?,
        }
        offset += len as u64;
    }
    match out.flush() {
        Err(error) if !is_broken_pipe(&error) => Err(fail(&error)),
        _ => Ok(ExitCode::SUCCESS),
    }
}
