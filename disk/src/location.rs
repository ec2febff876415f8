//! Where a file is on a disk, as the CLI and the firmware take it:
//! `N:/PATH` (partition N, numbered as Linux numbers them) or `/PATH` (the
//! disk's only file system).

use core::fmt;

/// A partition number (or none) and an absolute path in its file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location<'a> {
    /// The partition; `None` means the disk's only file system.
    pub partition: Option<u32>,
    /// The path, starting with `/`.
    pub path: &'a str,
}

/// Why a location does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationError {
    /// The text before `:` is not a partition number.
    PartitionNumber,
    /// The path does not start with `/`.
    NotAbsolute,
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PartitionNumber => f.write_str("the partition before ':' is not a number"),
            Self::NotAbsolute => f.write_str("expected N:/PATH or /PATH"),
        }
    }
}

impl<'a> Location<'a> {
    /// Parses `N:/PATH` or `/PATH` (a `:` after the first `/` is part of the path).
    pub fn parse(text: &'a str) -> Result<Self, LocationError> {
        let (partition, path) = match text.split_once(':') {
            Some((number, path)) if !number.contains('/') => {
                let number = number.parse().map_err(|_| LocationError::PartitionNumber)?;
                (Some(number), path)
            }
            _ => (None, text),
        };
        if !path.starts_with('/') {
            return Err(LocationError::NotAbsolute);
        }
        Ok(Self { partition, path })
    }
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.partition {
            Some(number) => write!(f, "{number}:{}", self.path),
            None => f.write_str(self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_a_partition_or_the_only_file_system() {
        let parsed = Location::parse("2:/boot/vmlinuz").unwrap();
        assert_eq!((parsed.partition, parsed.path), (Some(2), "/boot/vmlinuz"));
        let parsed = Location::parse("/etc/a:b").unwrap();
        assert_eq!((parsed.partition, parsed.path), (None, "/etc/a:b"));
        assert_eq!(
            Location::parse("x:/etc"),
            Err(LocationError::PartitionNumber)
        );
        assert_eq!(Location::parse("1:etc"), Err(LocationError::NotAbsolute));
        assert_eq!(
            alloc::format!("{}", Location::parse("2:/a").unwrap()),
            "2:/a"
        );
    }
}
