//! `N:/PATH` arguments, and the way from an image to the file system they
//! name: chain, partition table, partition, file system. Every step's error
//! becomes one `Failure` naming the image and the location.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use qcow2_disk::{FileSystem, Partition, Scheme, Slice, Table};
use qcow2_reader::chain::DynImage;
use qcow2_reader::Config;

use crate::failure::{Failure, Result};
use crate::layers::open_reader;

/// The virtual disk of an image, shared by the partitions read from it.
pub type Disk = Arc<DynImage>;

/// A file system opened inside an image.
pub type Volume = FileSystem<Slice<Disk>>;

/// A place in an image: a partition number (none: the disk's only file
/// system) and an absolute path inside its file system.
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
        let (partition, path) = match text.split_once(':') {
            Some((number, path)) if !number.starts_with('/') => {
                let number = number
                    .parse()
                    .map_err(|_| format!("{text:?}: partition {number:?} is not a number"))?;
                (Some(number), path)
            }
            _ => (None, text),
        };
        if !path.starts_with('/') {
            return Err(format!("{text:?}: expected N:/PATH or /PATH"));
        }
        Ok(Self {
            partition,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.partition {
            Some(number) => write!(f, "{number}:{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// An image's virtual disk with its partition table.
pub struct OpenDisk {
    /// The virtual disk, through the whole backing chain.
    pub disk: Disk,
    /// Its partition table.
    pub table: Table,
}

/// Opens `image` (with its backing chain, as of `snapshot`) and reads its partition table.
pub fn open_disk(image: &Path, snapshot: Option<&str>) -> Result<OpenDisk> {
    // Metadata reads between data blocks must not evict the data cluster being
    // read: a few decompressed clusters keep sequential file reads at one
    // decompression per cluster.
    let config = Config {
        compressed_clusters: 4,
        ..Config::default()
    };
    let chain = open_reader(image, snapshot, config)?;
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
        let fail = |message: String| Failure::new(image, message);
        if let Some(number) = number {
            return self
                .table
                .get::<std::io::Error>(number)
                .map_err(|error| fail(error.to_string()));
        }
        if self.table.scheme == Scheme::None {
            return Ok(&self.table.partitions[0]);
        }
        let mut candidates = self
            .table
            .partitions
            .iter()
            .filter(|part| !part.is_container());
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(fail(format!(
                "the disk's {} partition table has no partitions",
                self.table.scheme.name()
            ))),
            (Some(_), Some(_)) => Err(fail(format!(
                "the disk has several partitions ({}); name one as N:/PATH",
                self.numbers()
            ))),
        }
    }

    fn numbers(&self) -> String {
        let numbers: Vec<String> = self
            .table
            .partitions
            .iter()
            .map(|part| part.number.to_string())
            .collect();
        numbers.join(", ")
    }

    /// Opens the file system of `partition`.
    pub fn volume(&self, image: &Path, partition: &Partition) -> Result<Volume> {
        FileSystem::open(partition.slice(self.disk.clone())).map_err(|error| {
            Failure::new(image, format!("partition {}: {error}", partition.number))
        })
    }
}

/// Opens the file system that `location` is in.
pub fn open_volume(image: &Path, snapshot: Option<&str>, location: &Location) -> Result<Volume> {
    let disk = open_disk(image, snapshot)?;
    let partition = disk.partition(image, location.partition)?;
    disk.volume(image, partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_a_partition_or_the_only_file_system() {
        let parsed: Location = "2:/boot/vmlinuz".parse().unwrap();
        assert_eq!(parsed.partition, Some(2));
        assert_eq!(parsed.path, "/boot/vmlinuz");
        let parsed: Location = "/etc/a:b".parse().unwrap();
        assert_eq!(parsed.partition, None);
        assert_eq!(parsed.path, "/etc/a:b");
        assert!("x:/etc".parse::<Location>().is_err());
        assert!("1:etc".parse::<Location>().is_err());
    }
}
