//! `N:/PATH` arguments, and the way from an image to the file system they
//! name: chain, partition table, partition, file system. Every step's error
//! becomes one `Failure` naming the image and the location.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use qcow2_disk::{FileSystem, Partition, Slice, Table};
use qcow2_reader::chain::DynImage;
use qcow2_reader::Config;

use crate::failure::{Failure, Result};
use crate::layers::{open_reader, Access};

/// The virtual disk of an image, shared by the partitions read from it.
pub type Disk = Arc<DynImage>;

/// A file system opened inside an image.
pub type Volume = FileSystem<Slice<Disk>>;

/// A place in an image (owned, for the command line): see [`qcow2_disk::Location`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The partition number, as Linux numbers it.
    pub partition: Option<u32>,
    /// The path, starting with `/`.
    pub path: String,
}

impl FromStr for Location {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let parsed =
            qcow2_disk::Location::parse(text).map_err(|error| format!("{text:?}: {error}"))?;
        Ok(Self {
            partition: parsed.partition,
            path: parsed.path.to_string(),
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = qcow2_disk::Location {
            partition: self.partition,
            path: &self.path,
        };
        location.fmt(f)
    }
}

/// An image's virtual disk with its partition table.
pub struct OpenDisk {
    /// The virtual disk, through the whole backing chain.
    pub disk: Disk,
    /// Its partition table.
    pub table: Table,
}

/// Opens `image` (with the backing chain `access` allows and unlocks, as of `snapshot`) and reads its partition table.
pub fn open_disk(image: &Path, snapshot: Option<&str>, access: &Access) -> Result<OpenDisk> {
    // Metadata reads between data blocks must not evict the data cluster being
    // read: a few decompressed clusters keep sequential file reads at one
    // decompression per cluster.
    let config = Config::default().with_compressed_clusters(4);
    let chain = open_reader(image, snapshot, config, access)?;
    let disk: Disk = Arc::new(chain.top);
    let table = Table::read(&disk).map_err(|error| Failure::new(image, error))?;
    if let Some(warning) = &table.warning {
        eprintln!(
            "qcow: {}: warning: primary {warning}; using the backup GPT",
            image.display()
        );
    }
    Ok(OpenDisk { disk, table })
}

impl OpenDisk {
    /// The partition `number`; without one, the disk's only file system.
    pub fn partition(&self, image: &Path, number: Option<u32>) -> Result<&Partition> {
        self.table
            .select::<std::io::Error>(number)
            .map_err(|error| Failure::new(image, error))
    }

    /// Opens the file system of `partition`.
    pub fn volume(&self, image: &Path, partition: &Partition) -> Result<Volume> {
        FileSystem::open(partition.slice(self.disk.clone())).map_err(|error| {
            Failure::new(image, format!("partition {}: {error}", partition.number))
        })
    }
}

/// Opens the file system that `location` is in.
pub fn open_volume(
    image: &Path,
    snapshot: Option<&str>,
    access: &Access,
    location: &Location,
) -> Result<Volume> {
    let disk = open_disk(image, snapshot, access)?;
    let partition = disk.partition(image, location.partition)?;
    disk.volume(image, partition)
}
