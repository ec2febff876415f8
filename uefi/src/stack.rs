//! Measuring how much of the firmware's stack the driver uses: finding the
//! boot-services stack in the HOB list, and reading a painted stack's
//! low-water mark.
//!
//! EDK II firmware (OVMF, AAVMF) runs all of DXE, the boot manager, the
//! shell and every driver on one stack, allocated by the DXE IPL (128 KiB
//! in EDK II's `DxeIplPeim`) and described in the HOB list by a memory
//! allocation HOB named `gEfiHobMemoryAllocStackGuid`. The HOB list is the
//! system table's configuration table entry `gEfiHobListGuid`. It has no
//! guard page unless the platform sets `PcdCpuStackGuard`, so a driver
//! that overruns it writes over whatever lies below, silently.
//!
//! The driver (`src/driver/stack.rs`) fills the unused stack below its
//! stack pointer with [`PAINT`] before it attaches an image, and afterwards
//! counts the words still holding it from the bottom up
//! ([`untouched_words`]): everything above them was written. Everything
//! here works on byte and word slices, so it is tested on the host.
//!
//! HOB layout (PI specification, volume 3): every HOB starts with a
//! generic header (type `u16`, length `u16` including the header, a
//! reserved `u32`), lengths are multiples of 8, and the list ends with a
//! HOB of type `0xffff`. A memory allocation HOB (type 2) continues with
//! the allocation's GUID name (16 bytes), its base (`u64`), its length
//! (`u64`) and its memory type (`u32`): 48 bytes in all.

use core::fmt;

/// The word written over the unused stack.
pub const PAINT: u64 = 0x51c0_2eb5_7ac4_d00d;

/// `gEfiHobMemoryAllocStackGuid` (4ed4bf27-4092-42e9-807d-527b1d00c9bd),
/// in the UEFI (mixed-endian) byte layout.
pub const STACK_HOB_GUID: [u8; 16] = [
    0x27, 0xbf, 0xd4, 0x4e, 0x92, 0x40, 0xe9, 0x42, 0x80, 0x7d, 0x52, 0x7b, 0x1d, 0x00, 0xc9, 0xbd,
];

/// Longest HOB list the driver walks (OVMF's is a few KiB).
pub const MAX_HOB_LIST_BYTES: usize = 1 << 20;

/// Bytes of a HOB's generic header.
pub const HOB_HEADER_BYTES: usize = 8;

const MEMORY_ALLOCATION: u16 = 0x0002;
const END_OF_HOB_LIST: u16 = 0xffff;
const MEMORY_ALLOCATION_BYTES: usize = 48;

/// A HOB list the driver does not walk further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HobError {
    /// A HOB's length is below its header or not a multiple of 8.
    BadLength {
        /// The HOB's offset in the list.
        offset: usize,
        /// Its length.
        len: u16,
    },
    /// No end HOB within [`MAX_HOB_LIST_BYTES`] (or within the slice).
    NoEnd,
}

impl fmt::Display for HobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HobError::BadLength { offset, len } => write!(
                f,
                "the HOB at byte {offset} of the HOB list has the length {len} (not a multiple of 8 of at least 8)"
            ),
            HobError::NoEnd => write!(
                f,
                "the HOB list has no end HOB in {MAX_HOB_LIST_BYTES} bytes"
            ),
        }
    }
}

/// The type and length of the HOB whose generic header is `header`.
fn type_and_length(
    header: [u8; HOB_HEADER_BYTES],
    offset: usize,
) -> Result<(u16, usize), HobError> {
    let kind = u16::from_le_bytes([header[0], header[1]]);
    let len = u16::from_le_bytes([header[2], header[3]]);
    if usize::from(len) < HOB_HEADER_BYTES || !len.is_multiple_of(8) {
        return Err(HobError::BadLength { offset, len });
    }
    Ok((kind, usize::from(len)))
}

/// The bytes of a HOB list up to and including its end HOB, found by
/// reading HOB headers with `header(offset)`; no byte past the end HOB's
/// header is asked for.
pub fn list_length(
    mut header: impl FnMut(usize) -> [u8; HOB_HEADER_BYTES],
) -> Result<usize, HobError> {
    let mut offset = 0;
    while offset + HOB_HEADER_BYTES <= MAX_HOB_LIST_BYTES {
        let (kind, len) = type_and_length(header(offset), offset)?;
        if kind == END_OF_HOB_LIST {
            return Ok(offset + HOB_HEADER_BYTES);
        }
        offset += len;
    }
    Err(HobError::NoEnd)
}

/// A stack: `base..base + len`, growing down from its top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackRange {
    /// Its lowest address.
    pub base: u64,
    /// Its size in bytes.
    pub len: u64,
}

impl StackRange {
    /// One past its highest address (`None` if that overflows).
    pub fn top(&self) -> Option<u64> {
        self.base.checked_add(self.len)
    }

    /// Whether `address` lies inside.
    pub fn contains(&self, address: u64) -> bool {
        self.top()
            .is_some_and(|top| (self.base..top).contains(&address))
    }
}

/// The stack the HOB list `list` describes (the first memory allocation
/// HOB named [`STACK_HOB_GUID`]), `None` if it describes none.
pub fn find_stack(list: &[u8]) -> Result<Option<StackRange>, HobError> {
    let mut offset = 0;
    loop {
        let header = list
            .get(offset..offset + HOB_HEADER_BYTES)
            .ok_or(HobError::NoEnd)?;
        let (kind, len) = type_and_length(header.try_into().expect("8 bytes"), offset)?;
        if kind == END_OF_HOB_LIST {
            return Ok(None);
        }
        let hob = list.get(offset..offset + len).ok_or(HobError::NoEnd)?;
        if kind == MEMORY_ALLOCATION
            && len >= MEMORY_ALLOCATION_BYTES
            && hob[8..24] == STACK_HOB_GUID
        {
            let word = |at: usize| u64::from_le_bytes(hob[at..at + 8].try_into().expect("8 bytes"));
            return Ok(Some(StackRange {
                base: word(24),
                len: word(32),
            }));
        }
        offset += len;
    }
}

/// How many words at the start (the bottom) of a painted stack still hold
/// [`PAINT`]: the stack never reached them. The words are taken from the
/// bottom up, and none after the first that differs: the driver reads them
/// one by one, never reaching the live frames above the low-water mark.
pub fn untouched_words(painted: impl IntoIterator<Item = u64>) -> usize {
    painted
        .into_iter()
        .take_while(|&word| word == PAINT)
        .count()
}

/// What one `Start` did to the stack, for its console line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackUse {
    /// Bytes below `Start`'s stack pointer that the whole `Start` wrote.
    pub start: u64,
    /// Bytes below it that the attach wrote (`None`: nothing was
    /// attached).
    pub attach: Option<u64>,
    /// Bytes below it written after the attach: installing the child and
    /// connecting it, which reads the image through its whole chain.
    pub after_attach: u64,
    /// Bytes of the firmware's stack never written, from its painted
    /// bottom up.
    pub untouched: u64,
    /// The stack's size.
    pub stack_bytes: u64,
    /// Bytes at the bottom left out (neither painted nor read: a guard
    /// page on firmware that sets one).
    pub skipped: u64,
}

impl fmt::Display for StackUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stack: Start used {} bytes", self.start)?;
        match self.attach {
            Some(attach) => write!(f, " (attach {attach}, connect {})", self.after_attach)?,
            None => write!(f, " (nothing attached)")?,
        }
        write!(
            f,
            ", {} bytes of the firmware's stack never touched (of {}; its lowest {} bytes not checked)",
            self.untouched, self.stack_bytes, self.skipped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn hob(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(HOB_HEADER_BYTES + body.len()).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(body);
        bytes
    }

    fn allocation(name: [u8; 16], base: u64, len: u64) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&name);
        body.extend_from_slice(&base.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&4u32.to_le_bytes()); // EfiBootServicesData
        body.extend_from_slice(&[0; 4]);
        hob(MEMORY_ALLOCATION, &body)
    }

    fn end() -> Vec<u8> {
        hob(END_OF_HOB_LIST, &[])
    }

    fn list(hobs: &[Vec<u8>]) -> Vec<u8> {
        hobs.concat()
    }

    fn header_reader(bytes: &[u8]) -> impl FnMut(usize) -> [u8; 8] + '_ {
        |offset| bytes[offset..offset + 8].try_into().unwrap()
    }

    #[test]
    fn the_stack_hob_is_found_among_other_hobs() {
        let mut other = STACK_HOB_GUID;
        other[0] ^= 1;
        let bytes = list(&[
            hob(0x0001, &[0; 48]), // handoff table, another type
            allocation(other, 0x1000, 0x2000),
            allocation(STACK_HOB_GUID, 0x7fe0_0000, 0x20000),
            end(),
        ]);
        assert_eq!(list_length(header_reader(&bytes)), Ok(bytes.len()));
        assert_eq!(
            find_stack(&bytes),
            Ok(Some(StackRange {
                base: 0x7fe0_0000,
                len: 0x20000
            }))
        );
    }

    #[test]
    fn a_list_without_a_stack_hob_reports_none() {
        let bytes = list(&[allocation([0; 16], 0, 4096), end()]);
        assert_eq!(find_stack(&bytes), Ok(None));
    }

    #[test]
    fn a_memory_allocation_hob_too_short_for_its_fields_is_not_read() {
        let bytes = list(&[hob(MEMORY_ALLOCATION, &STACK_HOB_GUID), end()]);
        assert_eq!(find_stack(&bytes), Ok(None));
    }

    #[test]
    fn a_hob_length_below_the_header_or_unaligned_is_refused() {
        let mut bytes = list(&[allocation(STACK_HOB_GUID, 0, 1), end()]);
        bytes[2..4].copy_from_slice(&4u16.to_le_bytes());
        let refused = HobError::BadLength { offset: 0, len: 4 };
        assert_eq!(list_length(header_reader(&bytes)), Err(refused));
        assert_eq!(find_stack(&bytes), Err(refused));
        bytes[2..4].copy_from_slice(&12u16.to_le_bytes());
        assert_eq!(
            find_stack(&bytes),
            Err(HobError::BadLength { offset: 0, len: 12 })
        );
    }

    #[test]
    fn a_list_without_an_end_stops_at_the_bound_or_the_slice() {
        // One 0xfff8-byte HOB repeated: the walk stops within the bound.
        let mut reads = 0;
        let result = list_length(|_| {
            reads += 1;
            let mut header = [0u8; 8];
            header[2..4].copy_from_slice(&0xfff8u16.to_le_bytes());
            header
        });
        assert_eq!(result, Err(HobError::NoEnd));
        assert!(reads <= MAX_HOB_LIST_BYTES / 0xfff8 + 1);
        let bytes = allocation([0; 16], 0, 1);
        assert_eq!(find_stack(&bytes), Err(HobError::NoEnd));
        assert_eq!(find_stack(&bytes[..5]), Err(HobError::NoEnd));
    }

    #[test]
    fn untouched_words_count_the_paint_from_the_bottom_up() {
        let mut stack = [PAINT; 16];
        assert_eq!(untouched_words(stack), 16);
        stack[9] = 0;
        stack[12] = 7;
        assert_eq!(untouched_words(stack), 9);
        stack[0] = PAINT ^ 1;
        assert_eq!(untouched_words(stack), 0);
        assert_eq!(untouched_words([]), 0);
    }

    #[test]
    fn a_stack_range_contains_its_bytes_only() {
        let range = StackRange {
            base: 0x1000,
            len: 0x100,
        };
        assert!(range.contains(0x1000) && range.contains(0x10ff));
        assert!(!range.contains(0xfff) && !range.contains(0x1100));
        let overflowing = StackRange {
            base: u64::MAX,
            len: 2,
        };
        assert!(!overflowing.contains(u64::MAX));
    }

    #[test]
    fn the_line_says_what_start_used_and_what_was_left() {
        let line = StackUse {
            start: 20480,
            attach: Some(9000),
            after_attach: 20480,
            untouched: 60000,
            stack_bytes: 131072,
            skipped: 4096,
        };
        assert_eq!(
            alloc::format!("{line}"),
            "stack: Start used 20480 bytes (attach 9000, connect 20480), 60000 bytes of the firmware's stack \
             never touched (of 131072; its lowest 4096 bytes not checked)"
        );
    }
}
