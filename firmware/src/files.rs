//! The demo's `--file N:/PATH` requests: each file is read through its file
//! system, the partition table, the QCOW2 image and virtio, hashed, and
//! printed as `file-sha256: N:/PATH <hex>` with the time it took.
//!
//! The requests come on a small read-only disk that `run.sh` attaches last,
//! with the serial [`FILES_SERIAL`]: one location per line. A disk needs no
//! new device code and works the same on both architectures.

use crate::backing::{ImageError, Qcow2};
use crate::demo::DemoError;
use crate::disk::VirtioDisk;
use crate::report;
use crate::{arch, println};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use qcow2_disk::{FileSystem, Location, Table};
use qcow2_reader::BlockRead;
use sha2::{Digest, Sha256};

/// The serial of the disk that carries the requested locations.
pub const FILES_SERIAL: &[u8] = b"qcow2-demo-files";

/// Most bytes read from the request disk.
const MAX_LIST_BYTES: u64 = 64 * 1024;

/// Bytes per file read (the caller's buffer; the file systems keep their own small caches).
const CHUNK: usize = 1024 * 1024;

/// The index of the request disk and the locations on it, if it is attached.
pub fn requested(disks: &[VirtioDisk]) -> Result<Option<(usize, Vec<String>)>, DemoError> {
    let Some(index) = disks
        .iter()
        .position(|disk| disk.serial().as_bytes() == FILES_SERIAL)
    else {
        return Ok(None);
    };
    let disk = &disks[index];
    let disk_error = |error| DemoError::Disk { disk: index, error };
    let size = disk.size().map_err(disk_error)?.min(MAX_LIST_BYTES);
    let mut bytes = alloc::vec![0u8; size as usize];
    disk.read_at(0, &mut bytes).map_err(disk_error)?;
    // run.sh pads the list with zeros to whole sectors.
    let len = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..len]);
    let locations = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(ToString::to_string)
        .collect();
    Ok(Some((index, locations)))
}

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
    let fs = FileSystem::open(partition.slice(image))
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
