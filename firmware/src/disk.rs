//! A virtio block device as a byte-addressed [`BlockRead`].
//!
//! The device reads whole 512-byte sectors into buffers whose length is a
//! non-zero multiple of 512 (`VirtIOBlk::read_blocks` *asserts* this, so a
//! wrong length would panic rather than fail). The reader asks for any
//! byte range, so a read is split into:
//!
//! - a small read (whose sectors fit in the bounce buffer): one request
//!   into the bounce buffer, then a copy;
//! - otherwise an unaligned head and tail, each one sector through the
//!   bounce buffer, and the aligned middle read straight into the caller's
//!   buffer (the device can DMA to any address) in requests of up to
//!   [`MAX_REQUEST`] bytes.
//!
//! [`VirtioDisk::read_queued`] reads a list of sector-aligned pieces
//! (read-ahead: the caller knows where the next chunks lie) with several
//! requests in flight: submitted with `read_blocks_nb` before the first is
//! waited for, each slot refilled as its request completes, so the host
//! reads the next piece while the guest handles the last, and the caller's
//! CPU work (`meanwhile`: zero-filling, in the measurement) runs while the
//! host reads on its own threads. The queue has 16 descriptors and a
//! request without indirect descriptors takes 3, so at most
//! [`MAX_QUEUE_DEPTH`] fit. Cutting one read into several queued pieces
//! did not pay (measured slower under TCG: more requests, no overlap), so
//! plain reads stay one request per run.
//!
//! Every request issued here is non-empty and sector-sized by
//! construction, and every range is checked against the capacity first,
//! so nothing reaches the driver's assertions.

use crate::hal::PoolHal;
use crate::virtio::BlockTransport;
use core::fmt;
use qcow2_reader::BlockRead;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::mmio::MmioTransport;

/// Largest single request. QEMU's virtio-blk takes one descriptor of any
/// length and splits it in its block layer; 4 MiB is a tested size, and
/// beyond it the per-request cost is already negligible.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Most requests in flight: the driver's 16 descriptors, 3 per request.
pub const MAX_QUEUE_DEPTH: usize = 5;

/// Bounce buffer size: reads spanning at most this many bytes of sectors
/// (table entries, headers, small compressed clusters) take one request.
const BOUNCE_SIZE: usize = 8 * 1024;

const SECTOR: u64 = SECTOR_SIZE as u64;

/// The virtio-blk serial (`-device virtio-blk-device,serial=...`): at most
/// 20 bytes, no terminator when all 20 are used.
#[derive(Clone, Copy)]
pub struct Serial {
    bytes: [u8; 20],
    len: usize,
}

impl Serial {
    /// The serial's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.as_bytes() {
            if byte.is_ascii_graphic() || byte == b' ' {
                write!(f, "{}", byte as char)?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// What a failed disk read reports.
#[derive(Debug)]
pub enum DiskError {
    /// The range is not wholly inside the device.
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// Device size in bytes.
        size: u64,
    },
    /// A queued piece that is empty, not sector-aligned or longer than
    /// [`MAX_REQUEST`].
    Unaligned {
        /// First byte of the piece.
        offset: u64,
        /// Its length.
        len: usize,
    },
    /// The device or the driver refused a request.
    Device {
        /// First sector of the request.
        sector: u64,
        /// Bytes requested.
        len: usize,
        /// The driver's error.
        error: virtio_drivers::Error,
    },
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { offset, len, size } => write!(
                f,
                "disk read of {len} bytes at offset {offset:#x} is outside the disk's {size} bytes"
            ),
            Self::Unaligned { offset, len } => write!(
                f,
                "queued disk read of {len} bytes at offset {offset:#x} is not whole sectors of at most {MAX_REQUEST} bytes"
            ),
            Self::Device { sector, len, error } => write!(
                f,
                "virtio-blk read of {len} bytes at sector {sector} failed: {error}"
            ),
        }
    }
}

#[repr(C, align(512))]
struct Bounce([u8; BOUNCE_SIZE]);

/// The driver state that a read needs exclusive use of.
struct Device {
    blk: VirtIOBlk<PoolHal, MmioTransport<'static>>,
    bounce: Bounce,
    requests: u64,
}

impl Device {
    /// Reads whole sectors straight into `buf`, in requests of at most
    /// [`MAX_REQUEST`] bytes. `buf.len()` must be a multiple of 512.
    fn read_sectors(&mut self, first_sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        read_sectors(&mut self.blk, &mut self.requests, first_sector, buf)
    }

    /// Reads `sectors` sectors into the bounce buffer and returns them.
    fn read_bounced(&mut self, first_sector: u64, sectors: usize) -> Result<&[u8], DiskError> {
        let len = sectors * SECTOR_SIZE;
        debug_assert!(sectors > 0 && len <= BOUNCE_SIZE);
        let bounce = &mut self.bounce.0[..len];
        read_sectors(&mut self.blk, &mut self.requests, first_sector, bounce)?;
        Ok(bounce)
    }
}

/// See [`Device::read_sectors`]; a function over the fields so that the
/// bounce buffer can be borrowed alongside the driver.
fn read_sectors(
    blk: &mut VirtIOBlk<PoolHal, MmioTransport<'static>>,
    requests: &mut u64,
    first_sector: u64,
    buf: &mut [u8],
) -> Result<(), DiskError> {
    debug_assert_eq!(buf.len() % SECTOR_SIZE, 0);
    let mut sector = first_sector;
    // `chunks_mut` never yields an empty chunk, and every chunk is a
    // multiple of 512 because both `buf.len()` and MAX_REQUEST are.
    for chunk in buf.chunks_mut(MAX_REQUEST) {
        let len = chunk.len();
        let error = |error| DiskError::Device { sector, len, error };
        let index =
            usize::try_from(sector).map_err(|_| error(virtio_drivers::Error::InvalidParam))?;
        *requests += 1;
        blk.read_blocks(index, chunk).map_err(error)?;
        sector += (len / SECTOR_SIZE) as u64;
    }
    Ok(())
}

/// One request in flight: what the device reads from and writes to until
/// it completes, kept in place (the device holds their addresses).
struct InFlight<'b> {
    token: u16,
    sector: u64,
    request: BlkReq,
    response: BlkResp,
    buf: &'b mut [u8],
}

/// Reads each `(byte offset, buffer)` piece with its own request, keeping
/// up to `depth` in flight; pieces must be whole sectors, at most
/// [`MAX_REQUEST`] bytes, inside a device of `size` bytes. While requests
/// are in flight and none has completed, `meanwhile` is called until it
/// returns `false` (it has no more work).
///
/// Every submitted request is completed before this returns, also after an
/// error, so the device never writes into memory the caller has taken back.
fn read_queued<'b>(
    blk: &mut VirtIOBlk<PoolHal, MmioTransport<'static>>,
    requests: &mut u64,
    size: u64,
    pieces: impl IntoIterator<Item = (u64, &'b mut [u8])>,
    depth: usize,
    mut meanwhile: impl FnMut() -> bool,
) -> Result<(), DiskError> {
    let mut meanwhile_done = false;
    let mut slots: [Option<InFlight<'b>>; MAX_QUEUE_DEPTH] = Default::default();
    let depth = depth.clamp(1, MAX_QUEUE_DEPTH);
    let mut pieces = pieces.into_iter();
    let mut first_error = None;
    let mut in_flight = 0;
    loop {
        // Fill free slots while there is work and nothing has failed.
        for slot in slots[..depth].iter_mut().filter(|slot| slot.is_none()) {
            if first_error.is_some() {
                break;
            }
            let Some((offset, chunk)) = pieces.next() else {
                break;
            };
            let len = chunk.len();
            let whole_sectors = len > 0
                && len <= MAX_REQUEST
                && len.is_multiple_of(SECTOR_SIZE)
                && offset.is_multiple_of(SECTOR)
                && offset
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= size);
            let index = usize::try_from(offset / SECTOR)
                .ok()
                .filter(|_| whole_sectors);
            let Some(index) = index else {
                first_error = Some(DiskError::Unaligned { offset, len });
                break;
            };
            // The request is placed in its slot first and submitted from
            // there, so the addresses the device gets stay valid.
            let entry = slot.insert(InFlight {
                token: 0,
                sector: offset / SECTOR,
                request: BlkReq::default(),
                response: BlkResp::default(),
                buf: chunk,
            });
            *requests += 1;
            // SAFETY: `request`, `buf` and `response` live in `slots`, which
            // is neither moved nor read (except the token and sector) until
            // `complete_read_blocks` below has returned them, and every
            // submitted request is completed before this function returns.
            let submitted = unsafe {
                blk.read_blocks_nb(index, &mut entry.request, entry.buf, &mut entry.response)
            };
            match submitted {
                Ok(token) => {
                    entry.token = token;
                    in_flight += 1;
                }
                Err(error) => {
                    first_error = Some(DiskError::Device {
                        sector: offset / SECTOR,
                        len,
                        error,
                    });
                    *slot = None;
                }
            }
        }
        if in_flight == 0 {
            return first_error.map_or(Ok(()), Err);
        }
        // Wait for any request to complete (the device may finish them out
        // of order), doing the caller's other work in the meantime: the
        // host reads on its own threads while this CPU works.
        let token = loop {
            if let Some(token) = blk.peek_used() {
                break token;
            }
            if meanwhile_done || !meanwhile() {
                meanwhile_done = true;
                core::hint::spin_loop();
            }
        };
        let slot = slots[..depth]
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|entry| entry.token == token));
        let Some(slot) = slot else {
            // A token this loop never issued: the driver's state is broken.
            // Nothing can be completed safely, so stop here for good.
            panic!("virtio-blk completed unknown request {token}");
        };
        let Some(entry) = slot.as_mut() else {
            unreachable!("the slot was found by its entry")
        };
        in_flight -= 1;
        // SAFETY: the same request, buffer and response, at the same
        // addresses, that were passed to `read_blocks_nb` for this token.
        let completed = unsafe {
            blk.complete_read_blocks(token, &entry.request, entry.buf, &mut entry.response)
        };
        if let Err(error) = completed {
            first_error.get_or_insert(DiskError::Device {
                sector: entry.sector,
                len: entry.buf.len(),
                error,
            });
        }
        *slot = None;
    }
}

/// A virtio block device, readable at any byte offset.
pub struct VirtioDisk {
    slot: usize,
    address: usize,
    serial: Serial,
    size: u64,
    read_only: bool,
    device: spin::Mutex<Device>,
}

impl VirtioDisk {
    /// Initialises the device behind `transport` and reads its serial.
    pub fn new(transport: BlockTransport) -> Result<Self, virtio_drivers::Error> {
        let mut blk = VirtIOBlk::<PoolHal, _>::new(transport.transport)?;
        let mut serial = Serial {
            bytes: [0; 20],
            len: 0,
        };
        // A device without the GET_ID request simply has no serial.
        if let Ok(len) = blk.device_id(&mut serial.bytes) {
            serial.len = len.min(serial.bytes.len());
        }
        let size = blk.capacity().saturating_mul(SECTOR);
        let read_only = blk.readonly();
        Ok(Self {
            slot: transport.slot,
            address: transport.address,
            serial,
            size,
            read_only,
            device: spin::Mutex::new(Device {
                blk,
                bounce: Bounce([0; BOUNCE_SIZE]),
                requests: 0,
            }),
        })
    }

    /// The device's serial (empty if it has none).
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// Transport slot and register address, for the device list.
    pub fn location(&self) -> (usize, usize) {
        (self.slot, self.address)
    }

    /// Whether the device refuses writes (`readonly=on`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Reads each `(byte offset, buffer)` piece into its buffer with up to
    /// `depth` (at most [`MAX_QUEUE_DEPTH`]) requests in flight, in any
    /// order. Each piece must be whole sectors at a sector offset, at most
    /// [`MAX_REQUEST`] bytes, inside the disk; a piece that is not fails
    /// the read ([`DiskError::Unaligned`]) after the earlier ones finish.
    ///
    /// While the device works, `meanwhile` is called (repeatedly, until it
    /// returns `false`) so that the caller's CPU work overlaps the reads;
    /// each call should be short, as completed requests wait for it to
    /// return before their slots are refilled. It runs with this disk
    /// locked, so it must not read this disk (that would spin forever).
    pub fn read_queued<'b>(
        &self,
        pieces: impl IntoIterator<Item = (u64, &'b mut [u8])>,
        depth: usize,
        meanwhile: impl FnMut() -> bool,
    ) -> Result<(), DiskError> {
        let mut device = self.device.lock();
        let Device { blk, requests, .. } = &mut *device;
        read_queued(blk, requests, self.size, pieces, depth, meanwhile)
    }

    /// Requests sent to the device so far.
    pub fn requests(&self) -> u64 {
        self.device.lock().requests
    }
}

impl BlockRead for VirtioDisk {
    type Error = DiskError;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let out_of_range = DiskError::OutOfRange {
            offset,
            len: buf.len(),
            size: self.size,
        };
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or(out_of_range)?;
        if buf.is_empty() {
            return Ok(());
        }
        let first_sector = offset / SECTOR;
        let end_sector = end.div_ceil(SECTOR);
        let head_skip = (offset % SECTOR) as usize;
        let mut device = self.device.lock();

        // The sectors fit in the bounce buffer: one request. Aligned reads
        // skip this and go straight into `buf`.
        let span = end_sector - first_sector;
        let aligned = head_skip == 0 && end % SECTOR == 0;
        if !aligned && span * SECTOR <= BOUNCE_SIZE as u64 {
            let sectors = device.read_bounced(first_sector, span as usize)?;
            buf.copy_from_slice(&sectors[head_skip..head_skip + buf.len()]);
            return Ok(());
        }

        // Head: the rest of a partial first sector. `buf` is longer than
        // the bounce buffer here (or aligned), so it covers that rest.
        let mut done = 0;
        let mut sector = first_sector;
        if head_skip != 0 {
            let head = device.read_bounced(sector, 1)?;
            done = SECTOR_SIZE - head_skip;
            buf[..done].copy_from_slice(&head[head_skip..]);
            sector += 1;
        }
        // Middle: whole sectors, directly.
        let middle = (buf.len() - done) / SECTOR_SIZE * SECTOR_SIZE;
        if middle > 0 {
            device.read_sectors(sector, &mut buf[done..done + middle])?;
            done += middle;
            sector += (middle / SECTOR_SIZE) as u64;
        }
        // Tail: the start of a partial last sector.
        let tail = buf.len() - done;
        if tail > 0 {
            let sectors = device.read_bounced(sector, 1)?;
            buf[done..].copy_from_slice(&sectors[..tail]);
        }
        Ok(())
    }

    fn size(&self) -> Result<u64, DiskError> {
        Ok(self.size)
    }
}
