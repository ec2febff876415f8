//! `qcow get`: a file inside the image's file system, to standard output
//! or a file, like `virt-cat`.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::failure::{is_broken_pipe, Failure, Result};
use crate::location::{open_volume, Location};

/// Arguments of `qcow get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Read the disk as of this internal snapshot (id or name).
    #[arg(short = 'l', long)]
    snapshot: Option<String>,
    /// The image.
    image: PathBuf,
    /// The file: N:/PATH (partition N) or /PATH (the disk's only file system); symlinks are followed.
    location: Location,
}

/// Bytes gathered from the file system before each write.
const CHUNK_BYTES: usize = 4 << 20;

/// Runs `qcow get`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let volume = open_volume(&args.image, args.snapshot.as_deref(), &args.location)?;
    let in_file = |error: &dyn std::fmt::Display| {
        Failure::new(&args.image, format!("{}: {error}", args.location))
    };
    let mut file = volume
        .open_file(&args.location.path)
        .map_err(|error| in_file(&error))?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(File::create(path).map_err(|error| Failure::new(path, error))?),
        None => Box::new(io::stdout().lock()),
    };
    let out_name = args
        .output
        .clone()
        .unwrap_or_else(|| "standard output".into());
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file
                .read(&mut buf[filled..])
                .map_err(|error| in_file(&error))?
            {
                0 => break,
                read => filled += read,
            }
        }
        if filled == 0 {
            break;
        }
        total += filled as u64;
        match out.write_all(&buf[..filled]) {
            Err(error) if is_broken_pipe(&error) => return Ok(ExitCode::SUCCESS),
            result => result.map_err(|error| Failure::new(&out_name, error))?,
        }
    }
    if total != file.len() {
        let message = format!("read {total} bytes of a {}-byte file", file.len());
        return Err(in_file(&message));
    }
    match out.flush() {
        Err(error) if !is_broken_pipe(&error) => Err(Failure::new(&out_name, error)),
        _ => Ok(ExitCode::SUCCESS),
    }
}
