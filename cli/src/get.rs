//! `qcow get`: a file inside the image's file system, to standard output
//! or a file, like `virt-cat`.
//!
//! Large files are read by several threads, each with its own opened chain
//! and file system (so compressed clusters decode in parallel, as in `qcow
//! convert`): thread `t` reads chunks `t`, `t + threads`, ... and hands them
//! over its own channel; the main thread writes them in order. Memory: at
//! most three chunks (8 MiB each) per thread. Each seek costs ext2/3/4 a
//! walk of the block map from the start, which the large chunks keep rare.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;

use crate::failure::{is_broken_pipe, Failure, Result};
use crate::layers::{input_paths, Access, Follow};
use crate::location::{open_volume, Location, Volume};
use crate::output::OutputFile;
use crate::passphrase::KeyArgs;
use crate::size::parse_size;

/// Arguments of `qcow get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write to this file instead of standard output: written beside it and
    /// renamed over it once the whole file is read (nothing is left on
    /// failure); refused if it is the image, a layer of its chain or its
    /// data file, or a symbolic link (see --follow-output-symlink).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Write through a symbolic link at the output path (replacing the file
    /// it leads to) instead of refusing it.
    #[arg(long, requires = "output")]
    follow_output_symlink: bool,
    /// Read the disk as of this internal snapshot (id or name).
    #[arg(short = 'l', long)]
    snapshot: Option<String>,
    /// Reader threads for large files (default: the number of CPUs, at most 4).
    #[arg(long)]
    threads: Option<usize>,
    /// Bytes per chunk read by a thread (tests use small ones to cross many chunk edges).
    #[arg(long, value_parser = parse_size, default_value = "8M", hide = true)]
    chunk_size: u64,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    image: PathBuf,
    /// The file: N:/PATH (partition N) or /PATH (the disk's only file system); symlinks are followed.
    location: Location,
}

/// Chunks a reader thread may have ready before the writer takes them.
const CHUNKS_AHEAD: usize = 1;

/// Runs `qcow get`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let access = args.key.access(&args.image, follow)?;
    let volume = open_volume(
        &args.image,
        args.snapshot.as_deref(),
        &access,
        &args.location,
    )?;
    let file_len = volume
        .open_file(&args.location.path)
        .map_err(|error| in_file(args, &error))?
        .len();
    let mut output = match &args.output {
        Some(path) => {
            let inputs = input_paths(&args.image, follow)?;
            Some(OutputFile::create(
                path,
                &inputs,
                args.follow_output_symlink,
            )?)
        }
        None => None,
    };
    let mut stdout;
    let out: &mut dyn Write = match &mut output {
        Some(output) => output.file_mut(),
        None => {
            stdout = io::stdout().lock();
            &mut stdout
        }
    };
    let out_name = args
        .output
        .clone()
        .unwrap_or_else(|| "standard output".into());
    let chunk_bytes = args.chunk_size.clamp(4096, 1 << 30);
    let chunks = file_len.div_ceil(chunk_bytes);
    let threads = args
        .threads
        .unwrap_or_else(default_threads)
        .clamp(1, 64)
        .min(chunks.max(1) as usize);
    let written = if threads == 1 {
        write_sequentially(args, &volume, chunk_bytes as usize, out, &out_name)?
    } else {
        drop(volume);
        let plan = Plan {
            access,
            threads,
            chunks,
            chunk_bytes,
        };
        write_in_parallel(args, &plan, out, &out_name)?
    };
    let Some(written) = written else {
        // The reader of standard output went away.
        return Ok(ExitCode::SUCCESS);
    };
    if written != file_len {
        let message = format!("read {written} bytes of a {file_len}-byte file");
        return Err(in_file(args, &message));
    }
    match out.flush() {
        Err(error) if !is_broken_pipe(&error) => return Err(Failure::new(&out_name, error)),
        _ => {}
    }
    if let Some(output) = output {
        output.finish()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn in_file(args: &Args, error: &dyn std::fmt::Display) -> Failure {
    Failure::new(&args.image, format!("{}: {error}", args.location))
}

fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Writes `chunk`; `Ok(false)` when the reader of standard output went away.
fn write_chunk(out: &mut dyn Write, chunk: &[u8], out_name: &Path) -> Result<bool> {
    match out.write_all(chunk) {
        Err(error) if is_broken_pipe(&error) => Ok(false),
        result => result
            .map(|()| true)
            .map_err(|error| Failure::new(out_name, error)),
    }
}

/// Reads the file front to back in one thread; the bytes written, or `None` on a closed pipe.
fn write_sequentially(
    args: &Args,
    volume: &Volume,
    chunk_bytes: usize,
    out: &mut dyn Write,
    out_name: &Path,
) -> Result<Option<u64>> {
    let mut file = volume
        .open_file(&args.location.path)
        .map_err(|error| in_file(args, &error))?;
    let mut buf = vec![0u8; chunk_bytes];
    let mut total = 0u64;
    loop {
        let filled = fill(&mut file, &mut buf).map_err(|error| in_file(args, &error))?;
        if filled == 0 {
            return Ok(Some(total));
        }
        total += filled as u64;
        if !write_chunk(out, &buf[..filled], out_name)? {
            return Ok(None);
        }
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn fill(
    file: &mut qcow2_disk::File<'_, impl qcow2_reader::BlockRead>,
    buf: &mut [u8],
) -> std::result::Result<usize, qcow2_disk::FsError> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// What a reader thread hands over: a chunk, or why it stopped.
type Piece = std::result::Result<Vec<u8>, Failure>;

/// How the file is split among the reader threads.
struct Plan {
    access: Access,
    threads: usize,
    chunks: u64,
    chunk_bytes: u64,
}

/// Reads chunks `first`, `first + threads`, ... of the file with its own chain and file system.
fn read_chunks(args: &Args, plan: &Plan, first: u64, sender: &mpsc::SyncSender<Piece>) {
    let result = (|| -> Result<()> {
        let volume = open_volume(
            &args.image,
            args.snapshot.as_deref(),
            &plan.access,
            &args.location,
        )?;
        let mut file = volume
            .open_file(&args.location.path)
            .map_err(|error| in_file(args, &error))?;
        let mut index = first;
        while index < plan.chunks {
            let mut buf = vec![0u8; plan.chunk_bytes as usize];
            file.seek_to(index * plan.chunk_bytes)
                .map_err(|error| in_file(args, &error))?;
            let filled = fill(&mut file, &mut buf).map_err(|error| in_file(args, &error))?;
            buf.truncate(filled);
            if sender.send(Ok(buf)).is_err() {
                return Ok(()); // the writer stopped
            }
            index += plan.threads as u64;
        }
        Ok(())
    })();
    if let Err(failure) = result {
        let _ = sender.send(Err(failure));
    }
}

/// Reads with `threads` threads, writes in order; the bytes written, or `None` on a closed pipe.
fn write_in_parallel(
    args: &Args,
    plan: &Plan,
    out: &mut dyn Write,
    out_name: &Path,
) -> Result<Option<u64>> {
    thread::scope(|scope| {
        let mut receivers = Vec::with_capacity(plan.threads);
        for worker in 0..plan.threads {
            let (sender, receiver) = mpsc::sync_channel(CHUNKS_AHEAD);
            receivers.push(receiver);
            scope.spawn(move || read_chunks(args, plan, worker as u64, &sender));
        }
        let mut total = 0u64;
        for index in 0..plan.chunks {
            let receiver = &receivers[(index % plan.threads as u64) as usize];
            let chunk = match receiver.recv() {
                Ok(piece) => piece?,
                Err(_) => return Err(in_file(args, &"a reader thread stopped early")),
            };
            total += chunk.len() as u64;
            if !write_chunk(out, &chunk, out_name)? {
                return Ok(None);
            }
        }
        Ok(Some(total))
    })
}
