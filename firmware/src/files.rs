//! The demo's `--file N:/PATH` requests: each file is read through its file
//! system, the partition table, the QCOW2 image and virtio, hashed, and
//! printed as `file-sha256: N:/PATH <hex>` with the time it took.
//!
//! The requests are the `file:` lines of the control disk
//! ([`crate::control`]).

use crate::backing::{ImageError, Qcow2};
use crate::demo::DemoError;
use crate::report;
use crate::{arch, println};
use alloc::string::{String, ToString};
use qcow2_disk::{FileSystem, Limits, Location, Table};
use sha2::{Digest, Sha256};

/// What a file system may announce here, within the 32 MiB heap: 2^16
/// ext2/3/4 block groups (`ext4-view` keeps 16 bytes per group: 1 MiB; 8 TiB
/// volumes with 4 KiB blocks) and a 64 MiB journal to replay (one map entry
/// per journalled block: at most 65536 entries); a volume over either is
/// refused by name.
const FS_LIMITS: Limits = Limits {
    max_block_groups: 1 << 16,
    max_journal_bytes: 64 << 20,
    ..Limits::DEFAULT
};

/// Bytes per file read (the caller's buffer; the file systems keep their own small caches).
const CHUNK: usize = 1024 * 1024;

/// What one file read gave.
pub struct FileDigest {
    /// The SHA-256 of the file's bytes.
    pub digest: [u8; 32],
    /// The file's size.
    pub bytes: u64,
    /// Counter ticks from reading the partition table to the last byte.
    pub ticks: u64,
}

/// Hashes every requested file; prints one line per file (an `error:` line
/// for one that cannot be read) and fails if any could not be read.
pub fn hash_files(image: &'static Qcow2, locations: &[String]) -> Result<(), DemoError> {
    let mut buffer = alloc::vec![0u8; CHUNK];
    let mut failed = 0;
    for text in locations {
        match hash_file(image, text, &mut buffer) {
            Ok(file) => report::print_file_digest(text, &file),
            Err(message) => {
                println!("error: {text}: {message}");
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        failed => Err(DemoError::Files {
            failed,
            requested: locations.len(),
        }),
    }
}

/// Reads and hashes the file at `text` (`N:/PATH` or `/PATH`).
fn hash_file(image: &'static Qcow2, text: &str, buffer: &mut [u8]) -> Result<FileDigest, String> {
    let location = Location::parse(text).map_err(|error| error.to_string())?;
    let start = arch::counter();
    let table = Table::read(&image).map_err(|error| error.to_string())?;
    let partition = table
        .select::<ImageError>(location.partition)
        .map_err(|error| error.to_string())?;
    let fs = FileSystem::open_with(partition.slice(image), &FS_LIMITS)
        .map_err(|error| alloc::format!("partition {}: {error}", partition.number))?;
    let mut file = fs
        .open_file(location.path)
        .map_err(|error| error.to_string())?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        match file.read(buffer).map_err(|error| error.to_string())? {
            0 => break,
            read => {
                hasher.update(&buffer[..read]);
                bytes += read as u64;
            }
        }
    }
    Ok(FileDigest {
        digest: hasher.finalize().into(),
        bytes,
        ticks: arch::counter().wrapping_sub(start),
    })
}
