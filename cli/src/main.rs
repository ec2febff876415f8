//! `qcow`: look inside QCOW2 images without QEMU.
//!
//! Each subcommand lives in its own module and mirrors the `qemu-img`
//! command with the same job. Every failure is reported on standard error as
//! `qcow: IMAGE: message` with exit status 1.

mod bench;
mod cat;
mod check;
mod convert;
mod failure;
mod get;
mod info;
mod input;
mod layers;
mod location;
mod ls;
mod map;
mod output;
mod parts;
mod passphrase;
mod serve;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use layers::Follow;

/// Look inside QCOW2 images without QEMU: read-only, byte-identical to QEMU.
#[derive(Debug, Parser)]
#[command(name = "qcow", version, about, propagate_version = true)]
struct Cli {
    /// Which backing and data files an image may make the tool open: `any`
    /// (QEMU's behaviour), `same-dir` (only in the image's directory; for
    /// untrusted images) or `none` (the image alone).
    #[arg(long, global = true, value_enum, default_value_t = Follow::Any)]
    follow: Follow,
    /// Bytes per range request when the image is an `http://` or `https://`
    /// URL: a power of two from 64K to 2M (small for reading at random, as
    /// `serve` of a root file system does; large for reading through).
    #[arg(long, global = true, value_parser = size::parse_size, default_value = "1M")]
    http_readahead: u64,
    /// Range requests in flight at once for a URL read forward (`cat`,
    /// `get`, `convert`, ...); the threads of `convert` and `get` each fetch
    /// on their own connection besides. Cached per URL: 4 blocks per
    /// connection, at least 16 (16 MiB with the defaults).
    #[arg(long, global = true, default_value_t = 4)]
    http_connections: usize,
    /// Bytes of fetched blocks kept per URL, the memory bound of its cache
    /// (whole blocks of `--http-readahead`; default 4 blocks per connection,
    /// at least 16). `serve` reads at random: a cache that holds the blocks
    /// a client comes back to saves fetching them again.
    #[arg(long, global = true, value_parser = size::parse_size)]
    http_cache: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the header, features, snapshots and backing chain of an image.
    Info(info::Args),
    /// Show the allocation extents of the virtual disk, like `qemu-img map`.
    Map(map::Args),
    /// Write the virtual disk's bytes to standard output.
    Cat(cat::Args),
    /// Write the virtual disk to a sparse raw file.
    Convert(convert::Args),
    /// Check the image's metadata for corruption and leaks, like `qemu-img check`.
    Check(check::Args),
    /// Time read requests, like `qemu-img bench`.
    Bench(bench::Args),
    /// List the partitions and the file system in each.
    Parts(parts::Args),
    /// List a directory inside a partition's file system.
    Ls(ls::Args),
    /// Write a file from inside a partition's file system to standard output.
    Get(get::Args),
    /// Serve the virtual disk read-only over NBD, like `qemu-nbd --read-only`.
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut http = qcow2_http::HttpOptions::default();
    http.readahead = cli.http_readahead;
    http.connections = cli.http_connections;
    http.cache_blocks = match cli.http_cache {
        Some(bytes) => usize::try_from(bytes / cli.http_readahead).unwrap_or(usize::MAX),
        None => cli.http_connections.saturating_mul(4).max(16),
    };
    if let Err(message) = input::configure(http) {
        eprintln!("qcow: {message}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Info(args) => info::run(&args, cli.follow),
        Command::Map(args) => map::run(&args, cli.follow),
        Command::Cat(args) => cat::run(&args, cli.follow),
        Command::Convert(args) => convert::run(&args, cli.follow),
        Command::Check(args) => check::run(&args, cli.follow),
        Command::Bench(args) => bench::run(&args, cli.follow),
        Command::Parts(args) => parts::run(&args, cli.follow),
        Command::Ls(args) => ls::run(&args, cli.follow),
        Command::Get(args) => get::run(&args, cli.follow),
        Command::Serve(args) => serve::run(&args, cli.follow),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("qcow: {failure}");
            ExitCode::FAILURE
        }
    }
}
