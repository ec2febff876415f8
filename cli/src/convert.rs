//! `qcow convert`: the virtual disk to a sparse raw file, as fast as the
//! storage allows.
//!
//! A planner walks the chain's extents: runs that read as zeros become holes
//! (the file is sized at the end), and data runs are cut into chunks. Worker
//! threads, each with its own opened chain (so compressed clusters decode in
//! parallel), take chunks from the planner, read each with one call (the
//! crate merges contiguous clusters into one read) and write it in place.

use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::thread;

use indicatif::{ProgressBar, ProgressStyle};
use qcow2_reader::chain::Chain;
use qcow2_reader::Config;

use crate::failure::{Failure, Result};
use crate::layers::{open_reader, Follow, Stack};
use crate::output::OutputFile;
use crate::passphrase::KeyArgs;
use crate::size::parse_size;

/// Arguments of `qcow convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Convert the disk as of this internal snapshot (id or name), like `qemu-img convert -l`.
    #[arg(short = 'l', long)]
    snapshot: Option<String>,
    /// Reader threads (default: the number of CPUs, at most 4).
    #[arg(long)]
    threads: Option<usize>,
    /// Largest read, in bytes. The default, 1 MiB, copied an allocated
    /// image to tmpfs 5-10% faster than 2 or 4 MiB (the buffer stays in
    /// the CPU's cache between the read and the write); compressed images
    /// decode at the same speed with either.
    #[arg(long, value_parser = parse_size, default_value = "1M")]
    chunk_size: u64,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    image: PathBuf,
    /// The raw file to write: written beside it and renamed over it once
    /// complete (nothing is left on failure); refused if it is the image, a
    /// layer of its chain or its data file, or a symbolic link (see
    /// --follow-output-symlink).
    out: PathBuf,
    /// Write through a symbolic link at the output path (replacing the file
    /// it leads to) instead of refusing it.
    #[arg(long)]
    follow_output_symlink: bool,
}

/// A data run to copy.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    offset: u64,
    len: u64,
}

/// Hands out data chunks in disk order, skipping runs that read as zeros.
struct Planner<'s> {
    stack: &'s Stack,
    offset: u64,
    end: u64,
    chunk_bytes: u64,
    progress: &'s ProgressBar,
}

impl Planner<'_> {
    fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        while self.offset < self.end {
            let remaining = self.end - self.offset;
            let mut status = self
                .stack
                .status(self.offset, remaining.min(self.chunk_bytes))?;
            if status.reads_as_zeros() && status.len == self.chunk_bytes {
                // A long hole: skip all of it at once.
                status = self.stack.status(self.offset, remaining)?;
            }
            let offset = self.offset;
            self.offset += status.len;
            if status.reads_as_zeros() {
                self.progress.inc(status.len);
                continue;
            }
            return Ok(Some(Chunk {
                offset,
                len: status.len,
            }));
        }
        Ok(None)
    }
}

/// Runs `qcow convert`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let snapshot = args.snapshot.as_deref();
    let config = Config::default();
    let access = args.key.access(&args.image, follow)?;
    let stack = Stack::open(&args.image, snapshot, config, &access)?;
    let size = stack.virtual_size();
    let chunk_bytes = args.chunk_size.clamp(64 << 10, 256 << 20);
    let threads = args.threads.unwrap_or_else(default_threads).clamp(1, 64);
    let mut readers = Vec::with_capacity(threads);
    for _ in 0..threads {
        readers.push(open_reader(&args.image, snapshot, config, &access)?);
    }
    let inputs: Vec<PathBuf> = stack.input_paths().map(Path::to_path_buf).collect();
    let output = OutputFile::create(&args.out, &inputs, args.follow_output_symlink)?;
    let out = output.file();
    let progress = progress_bar(size);
    let planner = Mutex::new(Planner {
        stack: &stack,
        offset: 0,
        end: size,
        chunk_bytes,
        progress: &progress,
    });
    let outcome = thread::scope(|scope| {
        let workers: Vec<_> = readers
            .iter()
            .map(|reader| {
                let shared = Shared {
                    planner: &planner,
                    out,
                    progress: &progress,
                    args,
                };
                scope.spawn(move || copy_chunks(reader, shared, chunk_bytes))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_else(|_| Err(panicked(args))))
            .collect::<Result<Vec<()>>>()
    });
    progress.finish_and_clear();
    outcome?;
    out.set_len(size)
        .map_err(|error| Failure::new(&args.out, error))?;
    output.finish()?;
    Ok(ExitCode::SUCCESS)
}

fn panicked(args: &Args) -> Failure {
    Failure::new(&args.image, "a reader thread stopped unexpectedly")
}

fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// A bar with percentage, rate and ETA on a terminal; nothing otherwise.
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{percent:>3}% [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// What every worker uses.
#[derive(Clone, Copy)]
struct Shared<'a, 's> {
    planner: &'a Mutex<Planner<'s>>,
    out: &'a File,
    progress: &'a ProgressBar,
    args: &'a Args,
}

/// One worker: takes chunks until none are left, reads each and writes it in place.
fn copy_chunks(reader: &Chain, shared: Shared<'_, '_>, chunk_bytes: u64) -> Result<()> {
    let Shared {
        planner,
        out,
        progress,
        args,
    } = shared;
    let mut buf = vec![0u8; chunk_bytes as usize];
    loop {
        let next = planner
            .lock()
            .map_err(|_| panicked(args))?
            .next_chunk()
            .map_err(|error| Failure::new(&args.image, error))?;
        let Some(chunk) = next else {
            return Ok(());
        };
        let part = &mut buf[..chunk.len as usize];
        reader
            .top
            .read_at(chunk.offset, part)
            .map_err(|error| Failure::new(&args.image, error))?;
        out.write_all_at(part, chunk.offset)
            .map_err(|error| Failure::new(&args.out, error))?;
        progress.inc(chunk.len);
    }
}
