//! The read plan of a chain: for a guest range, which layer's storage each
//! piece comes from, at which offset, and how it reads (stored, encrypted,
//! compressed, zeros). [`Disk::read_at`] is this plan executed; a front end
//! with its own I/O (queued device reads, NBD block status, `qcow map`)
//! walks the same plan and decides no format rule itself.
//!
//! The walk down the layers is a loop: each piece is found by asking the
//! top layer first and going down while the range is unallocated, so the
//! stack does not grow with the chain's depth, and nothing is allocated.
//! Each step costs one cached table lookup per layer it passes.

use crate::block::BlockRead;
use crate::error::{Error, Storage};
use crate::lookup::Extent;
use crate::table::{CompressedDescriptor, Mapping};

use super::Disk;

/// A run of the virtual disk that reads one way from one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Guest offset of its first byte.
    pub guest_offset: u64,
    /// Its length in bytes (at least 1).
    pub len: u64,
    /// The layer it is read from, 0 being the top image; for zeros that no
    /// layer holds, the layer where the walk stopped.
    pub depth: usize,
    /// How it reads.
    pub source: Source,
}

/// How a [`Piece`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Bytes stored in the layer's `storage` from `offset` on (zeros past
    /// the storage's end, as QEMU). Encrypted bytes are ciphertext there:
    /// only the crate can read them ([`Disk::read_piece`]).
    Stored {
        /// The image file, its external data file, or a raw layer's file.
        storage: Storage,
        /// Offset of the piece's first byte in that storage.
        offset: u64,
        /// Whether the stored bytes are encrypted.
        encrypted: bool,
    },
    /// A compressed cluster of the layer (the piece is part of it).
    Compressed(CompressedDescriptor),
    /// A zero cluster (or subcluster) of the layer: zeros, which hide the
    /// layers below.
    ZeroCluster {
        /// The host offset the entry keeps allocated, if any (as
        /// `qemu-img map` shows it).
        kept_offset: Option<u64>,
    },
    /// Allocated in no layer down to the bottom: zeros (an NBD hole).
    Unallocated {
        /// The host offset the deciding layer's entry keeps allocated, if
        /// any (an allocated cluster's unallocated subclusters).
        kept_offset: Option<u64>,
    },
    /// Past the end of a backing layer shorter than the layer above: zeros.
    PastEnd {
        /// As for `Unallocated`.
        kept_offset: Option<u64>,
    },
}

impl Source {
    /// Whether the piece reads as zeros without any storage read.
    pub fn is_zero(&self) -> bool {
        matches!(
            self,
            Source::ZeroCluster { .. } | Source::Unallocated { .. } | Source::PastEnd { .. }
        )
    }
}

/// The pieces of a guest range, in order (see [`Disk::plan`]).
pub struct Plan<'d, S: BlockRead> {
    disk: &'d Disk<S>,
    next: u64,
    end: u64,
}

impl<S: BlockRead> Iterator for Plan<'_, S> {
    type Item = Result<Piece, Error<S::Error>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let piece = self.disk.piece_at(self.next, self.end - self.next);
        match &piece {
            Ok(piece) => self.next += piece.len,
            // One error ends the plan.
            Err(_) => self.next = self.end,
        }
        Some(piece)
    }
}

impl<S: BlockRead> Disk<S> {
    /// The virtual disk's size.
    fn virtual_size(&self) -> Result<u64, Error<S::Error>> {
        self.size()
    }

    /// The pieces that `len` bytes at `offset` read from, in guest order.
    /// A range reaching past the end of the disk is an error at its first
    /// piece.
    pub fn plan(&self, offset: u64, len: u64) -> Plan<'_, S> {
        Plan {
            disk: self,
            next: offset,
            end: offset.saturating_add(len),
        }
    }

    /// The layer at `depth` (0 is this disk) and how errors name it.
    pub fn layer(&self, depth: usize) -> Option<(&Disk<S>, &str)> {
        let mut disk = self;
        let mut name = "";
        for _ in 0..depth {
            let backing = disk.image()?.backing()?;
            disk = backing.disk()?;
            name = backing.name();
        }
        Some((disk, name))
    }

    /// The piece that starts at `offset`, at most `max_len` long.
    fn piece_at(&self, offset: u64, max_len: u64) -> Result<Piece, Error<S::Error>> {
        let size = self.virtual_size()?;
        if offset >= size || max_len > size - offset {
            return Err(Error::OutOfRange {
                offset,
                len: max_len,
                size,
            });
        }
        let mut disk = self;
        let mut depth = 0;
        let mut len = max_len;
        loop {
            let piece = |len, source| Piece {
                guest_offset: offset,
                len,
                depth,
                source,
            };
            let image = match disk {
                Disk::Raw(_) => {
                    return Ok(piece(
                        len,
                        Source::Stored {
                            storage: Storage::RawBacking,
                            offset,
                            encrypted: false,
                        },
                    ))
                }
                Disk::Qcow2(image) => image,
            };
            let extent = image
                .extent(offset, len)
                .map_err(|error| self.in_layer(depth, error))?;
            len = extent.len;
            let source = match extent.kind {
                Mapping::Data { host_offset } => Source::Stored {
                    storage: image.data_storage(),
                    offset: host_offset,
                    encrypted: image.header().is_encrypted(),
                },
                Mapping::Compressed(descriptor) => Source::Compressed(descriptor),
                Mapping::Zero { kept_offset } => Source::ZeroCluster { kept_offset },
                Mapping::Unallocated { kept_offset } => {
                    let Some(backing) = image.backing().and_then(|backing| backing.disk()) else {
                        return Ok(piece(len, Source::Unallocated { kept_offset }));
                    };
                    let backing_size = image.backing_size();
                    if offset >= backing_size {
                        return Ok(piece(len, Source::PastEnd { kept_offset }));
                    }
                    len = len.min(backing_size - offset);
                    disk = backing;
                    depth += 1;
                    continue;
                }
            };
            return Ok(piece(len, source));
        }
    }

    /// An error met in the layer at `depth`, as the top image reports it:
    /// for a layer below the top, an [`Error::Backing`] naming it.
    fn in_layer(&self, depth: usize, error: Error<S::Error>) -> Error<S::Error> {
        if depth == 0 {
            return error;
        }
        let name = self.layer(depth).map(|(_, name)| name.into());
        Error::Backing {
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            name,
            error: alloc::boxed::Box::new(error),
        }
    }

    /// Reads one piece of this disk's plan into `buf` (its length).
    pub fn read_piece(&self, piece: &Piece, buf: &mut [u8]) -> Result<(), Error<S::Error>> {
        if source_is_zero(piece, buf) {
            return Ok(());
        }
        let Some((layer, _)) = self.layer(piece.depth) else {
            return Err(Error::OutOfRange {
                offset: piece.guest_offset,
                len: piece.len,
                size: 0,
            });
        };
        let read = match (layer, piece.source) {
            (Disk::Raw(raw), _) => raw.read_at(piece.guest_offset, buf),
            (Disk::Qcow2(image), Source::Stored { offset, .. }) => image.read_extent_alone(
                &extent(
                    piece,
                    Mapping::Data {
                        host_offset: offset,
                    },
                ),
                buf,
            ),
            (Disk::Qcow2(image), Source::Compressed(descriptor)) => {
                image.read_extent_alone(&extent(piece, Mapping::Compressed(descriptor)), buf)
            }
            (Disk::Qcow2(_), _) => {
                buf.fill(0);
                Ok(())
            }
        };
        read.map_err(|error| self.in_layer(piece.depth, error))
    }

    /// Fills `buf` with the virtual disk's bytes at `offset`: the plan,
    /// executed piece by piece.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error<S::Error>> {
        let mut done = 0usize;
        for piece in self.plan(offset, buf.len() as u64) {
            let piece = piece?;
            // A piece is at most what is left of `buf`.
            let len = piece.len as usize;
            self.read_piece(&piece, &mut buf[done..done + len])?;
            done += len;
        }
        Ok(())
    }
}

/// Fills `buf` with zeros for a zero piece; says whether it was one.
fn source_is_zero(piece: &Piece, buf: &mut [u8]) -> bool {
    if piece.source.is_zero() {
        buf.fill(0);
        return true;
    }
    false
}

fn extent(piece: &Piece, kind: Mapping) -> Extent {
    Extent {
        guest_offset: piece.guest_offset,
        len: piece.len,
        kind,
    }
}
