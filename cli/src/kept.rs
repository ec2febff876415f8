//! Host offsets that L2 entries keep for clusters reading as zeros or as
//! unallocated (QEMU's `ZERO_ALLOC` and `UNALLOCATED_ALLOC`): `qemu-img map`
//! prints them, and the crate's extents do not carry them, so `map` reads
//! the entries itself for such runs. The L1 table read here also lets runs
//! of empty L1 entries be skipped at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use qcow2_reader::table::{COMPRESSED, COPIED, OFFSET_MASK};
use qcow2_reader::Header;

/// QEMU's limit on the active L1 table.
const MAX_L1_BYTES: u64 = 32 << 20;

/// The active L1 table of one image, and the L2 table read last.
pub struct KeptOffsets {
    file: File,
    file_size: u64,
    l1: Vec<u64>,
    cluster_bits: u32,
    entry_bytes: u64,
    data_file: bool,
    l2: Mutex<Option<(u64, Vec<u8>)>>,
}

impl KeptOffsets {
    /// Reads the active L1 table of the image in `file`.
    pub fn open(file: File, header: &Header) -> io::Result<Self> {
        let file_size = file.metadata()?.len();
        let bytes = (u64::from(header.l1_entries()) * 8).min(MAX_L1_BYTES);
        let table = read_padded(&file, file_size, header.l1_table_offset(), bytes as usize)?;
        let l1 = table.chunks_exact(8).map(be64).collect();
        Ok(Self {
            file,
            file_size,
            l1,
            cluster_bits: header.cluster_bits(),
            entry_bytes: if header.has_extended_l2() { 16 } else { 8 },
            data_file: header.has_data_file(),
            l2: Mutex::new(None),
        })
    }

    /// The longest prefix of `start..start + len` (a run the crate reports
    /// as zeros or unallocated) whose entries all keep contiguous host
    /// offsets, or all keep none: the first kept offset, and the prefix length.
    pub fn run(&self, start: u64, len: u64) -> io::Result<(Option<u64>, u64)> {
        let cluster_size = 1u64 << self.cluster_bits;
        let first = self.kept(start)?;
        let mut done = (cluster_size - (start & (cluster_size - 1))).min(len);
        while done < len {
            let next = self.kept(start + done)?;
            let continues = match (first, next) {
                (None, None) => true,
                (Some(host), Some(next_host)) => next_host == host + done,
                _ => false,
            };
            if !continues {
                break;
            }
            let step = if next.is_none() {
                self.unmapped_span(start + done)
            } else {
                cluster_size
            };
            done = done.saturating_add(step).min(len);
        }
        Ok((first, done))
    }

    /// When the L1 entry of `offset` maps no L2 table, the bytes from `offset`
    /// to the end of the run of such entries: all of it is unallocated. The
    /// crate's extent walk steps through such a run cluster by cluster, which
    /// takes a while on a sparse disk of terabytes.
    pub fn unmapped_l1_span(&self, offset: u64) -> Option<u64> {
        let cluster_size = 1u64 << self.cluster_bits;
        let l2_span = cluster_size * (cluster_size / self.entry_bytes);
        let first = offset / l2_span;
        let empty = |index: u64| {
            self.l1
                .get(index as usize)
                .is_some_and(|entry| entry & OFFSET_MASK == 0)
        };
        if !empty(first) {
            return None;
        }
        let mut end = first + 1;
        while empty(end) {
            end += 1;
        }
        Some(end.saturating_mul(l2_span) - offset)
    }

    /// Bytes from `offset` to the end of its L1 entry's range when that entry
    /// maps no L2 table (nothing there keeps an offset), else to the end of its cluster.
    fn unmapped_span(&self, offset: u64) -> u64 {
        let cluster_size = 1u64 << self.cluster_bits;
        let l2_span = cluster_size * (cluster_size / self.entry_bytes);
        let l1_index = offset / l2_span;
        let unmapped = self
            .l1
            .get(l1_index as usize)
            .is_none_or(|entry| entry & OFFSET_MASK == 0);
        if unmapped {
            l2_span - offset % l2_span
        } else {
            cluster_size - (offset & (cluster_size - 1))
        }
    }

    /// The host offset the entry of the cluster at `guest_offset` keeps, if any.
    fn kept(&self, guest_offset: u64) -> io::Result<Option<u64>> {
        let cluster_size = 1u64 << self.cluster_bits;
        let l2_entries = cluster_size / self.entry_bytes;
        let cluster = guest_offset >> self.cluster_bits;
        let Some(&l1_entry) = self.l1.get((cluster / l2_entries) as usize) else {
            return Ok(None);
        };
        let l2_offset = l1_entry & OFFSET_MASK;
        if l2_offset == 0 || !l2_offset.is_multiple_of(cluster_size) {
            return Ok(None);
        }
        let entry = self.l2_entry(l2_offset, cluster % l2_entries)?;
        let host = entry & OFFSET_MASK;
        let allocated = host != 0 || (self.data_file && entry & COPIED != 0);
        if entry & COMPRESSED != 0 || !allocated {
            return Ok(None);
        }
        Ok(Some(host + (guest_offset & (cluster_size - 1))))
    }

    fn l2_entry(&self, l2_offset: u64, index: u64) -> io::Result<u64> {
        let mut cached = self.l2.lock().map_err(|_| io::Error::other("poisoned"))?;
        if cached.as_ref().map(|(offset, _)| *offset) != Some(l2_offset) {
            let size = 1usize << self.cluster_bits;
            let table = read_padded(&self.file, self.file_size, l2_offset, size)?;
            *cached = Some((l2_offset, table));
        }
        let table = &cached.as_ref().expect("just cached").1;
        let at = (index * self.entry_bytes) as usize;
        Ok(be64(&table[at..at + 8]))
    }
}

fn be64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

/// Reads `len` bytes at `offset`, zeros past the end of the file (as QEMU reads).
fn read_padded(file: &File, file_size: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let inside = file_size.saturating_sub(offset).min(len as u64) as usize;
    if inside > 0 {
        file.read_exact_at(&mut buf[..inside], offset)?;
    }
    Ok(buf)
}
