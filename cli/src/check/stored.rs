//! The refcounts stored in the image: the refcount table and its blocks.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use qcow2_reader::refcount::{RefcountLayout, RefcountTableEntry};
use qcow2_reader::Header;

/// The refcounts stored in the image.
pub struct StoredRefcounts {
    /// The refcount table's entries.
    pub table: Vec<RefcountTableEntry>,
    /// How refcounts are packed.
    pub layout: RefcountLayout,
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
        Ok(Self {
            table: RefcountTableEntry::table(&bytes).collect(),
            layout: RefcountLayout {
                cluster_bits: header.cluster_bits(),
                refcount_order: header.refcount_order(),
            },
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
        let (table_index, index) = self.layout.indexes(cluster);
        let Some(&entry) = self.table.get(table_index as usize) else {
            return Ok(0);
        };
        let block_offset = entry.block_offset();
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
        Ok(self.layout.refcount_in_block(block, index))
    }
}
