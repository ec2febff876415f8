//! The virtual disk as 512-byte blocks: geometry, and checked `ReadBlocks`.
//!
//! QCOW2 virtual sizes need not be multiples of 512 (`qemu-img create -f
//! qcow2 x 1000`), so the last block may be partial; its bytes past the
//! virtual size read as zeros, as QEMU presents such a disk to a guest.

use core::fmt;

use qcow2_reader::BlockRead;

/// The block size the driver presents: the size every UEFI partition and
/// file-system driver handles, whatever the image's cluster size.
pub const BLOCK_SIZE: u32 = 512;

/// Largest virtual size presented: every block's end offset fits in a `u64`.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 63;

/// The shape of a virtual disk as `EFI_BLOCK_IO_MEDIA` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of the virtual disk.
    pub virtual_size: u64,
    /// Index of the last 512-byte block (the virtual size rounded up).
    pub last_block: u64,
}

/// Why a virtual disk cannot be presented as blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// A disk of zero bytes has no last block to report.
    Empty,
    /// Larger than 2^63 bytes (QEMU's own limit): byte offsets of blocks
    /// would not fit in 64 bits.
    TooLarge {
        /// The size.
        virtual_size: u64,
    },
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeometryError::Empty => f.write_str("the virtual disk is empty (0 bytes)"),
            GeometryError::TooLarge { virtual_size } => {
                write!(
                    f,
                    "the virtual size {virtual_size} is larger than 2^63 bytes"
                )
            }
        }
    }
}

impl Geometry {
    /// The geometry of a virtual disk of `virtual_size` bytes.
    pub fn new(virtual_size: u64) -> Result<Self, GeometryError> {
        if virtual_size == 0 {
            return Err(GeometryError::Empty);
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(GeometryError::TooLarge { virtual_size });
        }
        let blocks = virtual_size.div_ceil(u64::from(BLOCK_SIZE));
        Ok(Self {
            virtual_size,
            last_block: blocks - 1,
        })
    }

    /// Checks a `ReadBlocks` request and returns the byte range it covers.
    ///
    /// The order of the checks is the specification's: a wrong media id
    /// first, then a size that is not whole blocks, then an address or
    /// length outside the disk. A zero-length read is valid and reads nothing.
    pub fn request(
        &self,
        media_id: u32,
        request: BlockRequest,
    ) -> Result<core::ops::Range<u64>, RequestError> {
        if request.media_id != media_id {
            return Err(RequestError::MediaChanged);
        }
        let len = request.buffer_size as u64;
        if !len.is_multiple_of(u64::from(BLOCK_SIZE)) {
            return Err(RequestError::BadBufferSize {
                buffer_size: request.buffer_size,
            });
        }
        if request.lba > self.last_block {
            return Err(RequestError::OutOfRange {
                lba: request.lba,
                blocks: len / u64::from(BLOCK_SIZE),
                last_block: self.last_block,
            });
        }
        let start = request.lba * u64::from(BLOCK_SIZE);
        let blocks = len / u64::from(BLOCK_SIZE);
        // `lba <= last_block`, so `lba + blocks` only overflows for absurd
        // lengths, which are out of range anyway.
        let end_block = request.lba.checked_add(blocks);
        match end_block {
            Some(end) if end <= self.last_block + 1 => Ok(start..start + len),
            _ => Err(RequestError::OutOfRange {
                lba: request.lba,
                blocks,
                last_block: self.last_block,
            }),
        }
    }
}

/// The arguments of one `ReadBlocks` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRequest {
    /// The media id the caller believes current.
    pub media_id: u32,
    /// The first block.
    pub lba: u64,
    /// Bytes to read.
    pub buffer_size: usize,
}

/// A `ReadBlocks` request the disk refuses, before any read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The caller's media id is not the current one (`EFI_MEDIA_CHANGED`).
    MediaChanged,
    /// The size is not a multiple of the block size (`EFI_BAD_BUFFER_SIZE`).
    BadBufferSize {
        /// The size asked for.
        buffer_size: usize,
    },
    /// The blocks are not all on the disk (`EFI_INVALID_PARAMETER`).
    OutOfRange {
        /// The first block asked for.
        lba: u64,
        /// Blocks asked for.
        blocks: u64,
        /// The last block of the disk.
        last_block: u64,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RequestError::MediaChanged => f.write_str("the media id is not the current one"),
            RequestError::BadBufferSize { buffer_size } => write!(
                f,
                "{buffer_size} bytes is not a multiple of the {BLOCK_SIZE}-byte block"
            ),
            RequestError::OutOfRange {
                lba,
                blocks,
                last_block,
            } => write!(
                f,
                "{blocks} blocks at LBA {lba} are not within blocks 0..={last_block}"
            ),
        }
    }
}

/// Reads `buf.len()` bytes at `offset` of a virtual disk of `virtual_size`
/// bytes: the part inside the disk from `disk`, the rest (the tail of a
/// partial last block) as zeros: the crate's one zero-padded read.
pub fn read_blocks<D: BlockRead + ?Sized>(
    disk: &D,
    virtual_size: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), D::Error> {
    qcow2_reader::read_zero_padded(disk, virtual_size, offset, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lba: u64, buffer_size: usize) -> BlockRequest {
        BlockRequest {
            media_id: 7,
            lba,
            buffer_size,
        }
    }

    #[test]
    fn geometry_rounds_the_last_block_up() {
        assert_eq!(Geometry::new(512).unwrap().last_block, 0);
        assert_eq!(Geometry::new(513).unwrap().last_block, 1);
        assert_eq!(Geometry::new(1 << 30).unwrap().last_block, (1 << 21) - 1);
        assert_eq!(
            Geometry::new(MAX_VIRTUAL_SIZE).unwrap().last_block,
            (MAX_VIRTUAL_SIZE / 512) - 1
        );
        assert_eq!(Geometry::new(0), Err(GeometryError::Empty));
        assert!(Geometry::new(MAX_VIRTUAL_SIZE + 1).is_err());
    }

    #[test]
    fn requests_inside_the_disk_give_their_bytes() {
        let disk = Geometry::new(1000).unwrap();
        assert_eq!(disk.request(7, request(0, 1024)), Ok(0..1024));
        assert_eq!(disk.request(7, request(1, 512)), Ok(512..1024));
        assert_eq!(disk.request(7, request(1, 0)), Ok(512..512));
    }

    #[test]
    fn requests_are_refused_in_the_specification_order() {
        let disk = Geometry::new(1000).unwrap();
        let mut wrong_media = request(99, 3);
        wrong_media.media_id = 8;
        assert_eq!(
            disk.request(7, wrong_media),
            Err(RequestError::MediaChanged)
        );
        assert_eq!(
            disk.request(7, request(99, 3)),
            Err(RequestError::BadBufferSize { buffer_size: 3 })
        );
        assert_eq!(
            disk.request(7, request(2, 512)),
            Err(RequestError::OutOfRange {
                lba: 2,
                blocks: 1,
                last_block: 1
            })
        );
        assert_eq!(
            disk.request(7, request(1, 1024)),
            Err(RequestError::OutOfRange {
                lba: 1,
                blocks: 2,
                last_block: 1
            })
        );
    }

    #[test]
    fn requests_near_the_top_of_the_address_space_do_not_overflow() {
        let disk = Geometry::new(MAX_VIRTUAL_SIZE - 1).unwrap();
        let last = disk.last_block;
        assert!(disk.request(7, request(last, 512)).is_ok());
        assert!(disk.request(7, request(last, 1024)).is_err());
        assert!(disk.request(7, request(u64::MAX, 512)).is_err());
        let huge = usize::MAX - usize::MAX % 512;
        assert!(disk.request(7, request(last, huge)).is_err());
    }

    #[test]
    fn the_partial_last_block_reads_as_zeros_past_the_disk() {
        let bytes: &[u8] = &[0xab; 1000];
        let mut buf = [0x55u8; 1024];
        read_blocks(bytes, 1000, 0, &mut buf).unwrap();
        assert!(buf[..1000].iter().all(|&b| b == 0xab));
        assert!(buf[1000..].iter().all(|&b| b == 0));
        let mut last = [0x55u8; 512];
        read_blocks(bytes, 1000, 512, &mut last).unwrap();
        assert!(last[..488].iter().all(|&b| b == 0xab));
        assert!(last[488..].iter().all(|&b| b == 0));
    }

    #[test]
    fn read_errors_of_the_disk_are_passed_on() {
        let bytes: &[u8] = &[0; 100];
        let mut buf = [0u8; 512];
        // The disk claims 1000 bytes but holds 100: the store's error comes back.
        assert!(read_blocks(bytes, 1000, 0, &mut buf).is_err());
    }
}
