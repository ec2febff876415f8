//! The refcounts stored in the image: the refcount table and its blocks.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use qcow2_reader::Header;

use super::REFTABLE_OFFSET;

/// The refcounts stored in the image.
pub struct StoredRefcounts {
    /// The refcount table's entries.
    pub table: Vec<u64>,
    block_entries_bits: u32,
    refcount_order: u32,
    cached: Option<(u64, Vec<u8>)>,
}

/// Reads `len` bytes at `offset`; bytes past the end of the file read as
/// zeros, as QEMU's file driver returns them.
pub fn read_padded(file: &File, file_size: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let inside = file_size.saturating_sub(offset).min(len as u64) as usize;
    if inside > 0 {
        file.read_exact_at(&mut buf[..inside], offset)?;
    }
    Ok(buf)
}

/// The big-endian u64 at `at`.
pub fn be64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

impl StoredRefcounts {
    /// Reads the refcount table.
    pub fn read(file: &File, header: &Header, file_size: u64) -> io::Result<Self> {
        let len = u64::from(header.refcount_table_clusters()) << header.cluster_bits();
        let bytes = read_padded(
            file,
            file_size,
            header.refcount_table_offset(),
            len as usize,
        )?;
        let table = bytes.chunks_exact(8).map(|word| be64(word, 0)).collect();
        // A refcount block holds cluster_size * 8 / refcount_bits entries.
        let block_entries_bits = header.cluster_bits() + 3 - header.refcount_order();
        Ok(Self {
            table,
            block_entries_bits,
            refcount_order: header.refcount_order(),
            cached: None,
        })
    }

    /// The stored refcount of a cluster, as QEMU's `qcow2_get_refcount` reads it.
    pub fn get(
        &mut self,
        file: &File,
        file_size: u64,
        cluster_size: u64,
        cluster: u64,
    ) -> io::Result<u64> {
        let table_index = cluster >> self.block_entries_bits;
        let Some(&entry) = self.table.get(table_index as usize) else {
            return Ok(0);
        };
        let block_offset = entry & REFTABLE_OFFSET;
        if block_offset == 0 {
            return Ok(0);
        }
        if !block_offset.is_multiple_of(cluster_size) {
            return Err(io::Error::other(format!(
                "refcount block offset {block_offset:#x} is unaligned (refcount table index {table_index:#x})"
            )));
        }
        if self.cached.as_ref().map(|(offset, _)| *offset) != Some(block_offset) {
            let block = read_padded(file, file_size, block_offset, cluster_size as usize)?;
            self.cached = Some((block_offset, block));
        }
        let block = &self.cached.as_ref().expect("just cached").1;
        let index = (cluster & ((1 << self.block_entries_bits) - 1)) as usize;
        Ok(refcount_at(block, index, self.refcount_order))
    }
}

/// Entry `index` of a refcount block of `1 << order`-bit entries (sub-byte
/// entries are packed from the least significant bit, as QEMU does).
fn refcount_at(block: &[u8], index: usize, order: u32) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let byte = block[index / per_byte];
            u64::from(byte >> (bits * (index % per_byte))) & ((1 << bits) - 1)
        }
        _ => {
            let bytes = 1usize << (order - 3);
            block[index * bytes..(index + 1) * bytes]
                .iter()
                .fold(0, |value, &byte| (value << 8) | u64::from(byte))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcounts_of_every_width_read_like_qemu() {
        let block = [0b1011_0001u8, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde];
        assert_eq!(refcount_at(&block, 0, 0), 1);
        assert_eq!(refcount_at(&block, 4, 0), 1);
        assert_eq!(refcount_at(&block, 6, 0), 0);
        assert_eq!(refcount_at(&block, 0, 1), 0b01);
        assert_eq!(refcount_at(&block, 3, 1), 0b10);
        assert_eq!(refcount_at(&block, 1, 2), 0b1011);
        assert_eq!(refcount_at(&block, 1, 3), 0x12);
        assert_eq!(refcount_at(&block, 1, 4), 0x3456);
        assert_eq!(refcount_at(&block, 1, 5), 0x789a_bcde);
        assert_eq!(refcount_at(&block, 0, 6), 0xb112_3456_789a_bcde);
    }
}
