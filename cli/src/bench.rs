//! `qcow bench`: timed read requests, with `qemu-img bench`'s meaning of
//! `-c`, `-s`, `-S` and `-o`, plus a random pattern, cache settings, and
//! threads reading through one opened image at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Instant;

use qcow2_reader::chain::DynImage;
use qcow2_reader::{BlockRead, Config};

use crate::failure::{Failure, Result};
use crate::layers::{open_reader, Follow};
use crate::passphrase::KeyArgs;
use crate::size::parse_size;

/// Where successive requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Each request `STEP` bytes after the previous one, wrapping like `qemu-img bench`.
    Seq,
    /// Request-aligned offsets drawn uniformly from `OFFSET..` the end of the disk.
    Random,
}

/// Arguments of `qcow bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of requests.
    #[arg(short = 'c', long, default_value_t = 75000)]
    count: u64,
    /// Bytes per request.
    #[arg(short = 's', long, value_parser = parse_size, default_value = "4K")]
    size: u64,
    /// Bytes from one request's offset to the next (default: the request size).
    #[arg(short = 'S', long, value_parser = parse_size)]
    step: Option<u64>,
    /// Offset of the first request.
    #[arg(short = 'o', long, value_parser = parse_size, default_value = "0")]
    offset: u64,
    /// Sequential (strided) or random offsets.
    #[arg(long, value_enum, default_value_t = Pattern::Seq)]
    pattern: Pattern,
    /// Seed of the random pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bytes of L2 table cache per image (like QEMU's l2-cache-size).
    #[arg(long, value_parser = parse_size)]
    l2_cache_size: Option<u64>,
    /// Bytes per cached L2 slice (like QEMU's l2-cache-entry-size).
    #[arg(long, value_parser = parse_size)]
    l2_slice_size: Option<u64>,
    /// Threads sending the requests, all through the one opened image (and
    /// its one cache): thread `t` of `T` sends requests `t`, `t + T`, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    image: PathBuf,
}

/// Runs `qcow bench`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let fail = |message: &dyn std::fmt::Display| Failure::new(&args.image, message);
    let config = config(args).map_err(|message| fail(&message))?;
    let access = args.key.access(&args.image, follow)?;
    let chain = open_reader(&args.image, None, config, &access)?;
    let image_size = chain.top.size().map_err(|error| fail(&error))?;
    let size = usize::try_from(args.size)
        .ok()
        .filter(|&size| size > 0 && args.size <= image_size)
        .ok_or_else(|| fail(&"request size must be between 1 byte and the disk size"))?;
    let step = args.step.unwrap_or(args.size);
    println!(
        "Sending {} read requests, {} bytes each, {} in parallel (starting at offset {}, step size {})",
        args.count,
        args.size,
        args.threads,
        args.offset,
        match args.pattern {
            Pattern::Seq => step.to_string(),
            Pattern::Random => "random".to_string(),
        }
    );
    let image = &chain.top;
    let started = Instant::now();
    let failures = thread::scope(|scope| {
        let workers: Vec<_> = (0..args.threads)
            .map(|thread| scope.spawn(move || send(args, image, image_size, step, size, thread)))
            .collect();
        workers
            .into_iter()
            .filter_map(|worker| worker.join().expect("a bench thread panicked").err())
            .next()
    });
    if let Some(error) = failures {
        return Err(fail(&error));
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = args.count as f64 * args.size as f64;
    println!(
        "Run completed in {seconds:.3} seconds ({:.1} MiB/s, {:.0} requests/s).",
        bytes / seconds.max(1e-9) / f64::from(1 << 20),
        args.count as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends thread `thread`'s share of the requests: every `threads`-th of the sequence.
fn send(
    args: &Args,
    image: &DynImage,
    image_size: u64,
    step: u64,
    size: usize,
    thread: u64,
) -> std::result::Result<(), qcow2_reader::Error<std::io::Error>> {
    let mut offsets = Offsets::new(args, image_size, step);
    let mut buf = vec![0u8; size];
    for request in 0..args.count {
        let offset = offsets.next_offset();
        if request % args.threads == thread {
            image.read_at(offset, &mut buf)?;
        }
    }
    Ok(())
}

/// The image configuration from the cache options.
fn config(args: &Args) -> std::result::Result<Config, String> {
    let mut config = Config::default();
    let too_large = |_| "cache size does not fit in memory".to_string();
    if let Some(bytes) = args.l2_cache_size {
        config.table_cache_bytes = usize::try_from(bytes).map_err(too_large)?;
    }
    if let Some(bytes) = args.l2_slice_size {
        config.table_slice_bytes = usize::try_from(bytes).map_err(too_large)?;
    }
    Ok(config)
}

/// The offsets of successive requests.
struct Offsets {
    pattern: Pattern,
    next: u64,
    step: u64,
    first: u64,
    request: u64,
    image_size: u64,
    state: u64,
}

impl Offsets {
    fn new(args: &Args, image_size: u64, step: u64) -> Self {
        Self {
            pattern: args.pattern,
            next: args.offset.min(image_size - args.size),
            step,
            first: args.offset,
            request: args.size,
            image_size,
            state: args.seed.max(1),
        }
    }

    fn next_offset(&mut self) -> u64 {
        match self.pattern {
            Pattern::Seq => {
                let offset = self.next;
                // qemu-img bench wraps before a request would cross the end.
                let room = self.image_size - self.request;
                self.next = if room == 0 {
                    0
                } else {
                    (offset + self.step) % room
                };
                offset
            }
            Pattern::Random => {
                let first = self.first.min(self.image_size - self.request);
                let slots = (self.image_size - self.request - first) / self.request + 1;
                first + self.random() % slots * self.request
            }
        }
    }

    /// xorshift64*: fast, and the same sequence on every run for one seed.
    fn random(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
