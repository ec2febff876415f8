//! The refcounts stored in the image (the refcount table and its blocks),
//! and the reads of the check, with QEMU's rules for what a read returns.

use alloc::vec;
use alloc::vec::Vec;

use crate::block::{read_zero_padded, BlockRead};
use crate::refcount::{RefcountLayout, RefcountTableEntry};

/// QEMU's largest request end (`BDRV_MAX_LENGTH`: `INT64_MAX` rounded down
/// to 1 GiB): a read reaching past it fails with EIO before any I/O, so a
/// table at or above 2^63 cannot be read, while one merely past the end of
/// the file reads as zeros.
pub(super) const MAX_REQUEST_END: u64 = 0x7fff_ffff_c000_0000;

/// Why a read of the check failed.
#[derive(Debug)]
pub(super) enum ReadError<E> {
    /// The range reaches past [`MAX_REQUEST_END`]: QEMU's EIO, a check error.
    BeyondMaxLength,
    /// The storage failed: the check stops with this error.
    Storage(E),
}

/// The image file as the check reads it.
pub(super) struct File<'s, R: ?Sized> {
    pub storage: &'s R,
    pub size: u64,
}

impl<R: BlockRead + ?Sized> File<'_, R> {
    /// `len` bytes at `offset`; past the end of the file they read as zeros.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, ReadError<R::Error>> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > MAX_REQUEST_END) {
            return Err(ReadError::BeyondMaxLength);
        }
        let mut buf = vec![0u8; len];
        read_zero_padded(self.storage, self.size, offset, &mut buf).map_err(ReadError::Storage)?;
        Ok(buf)
    }
}

/// The refcounts stored in the image.
pub(super) struct StoredRefcounts {
    /// The refcount table's entries.
    pub table: Vec<RefcountTableEntry>,
    /// How refcounts are packed.
    pub layout: RefcountLayout,
    cached: Option<(u64, Vec<u8>)>,
}

/// Why a stored refcount cannot be read (QEMU's `qcow2_get_refcount` fails).
#[derive(Debug)]
pub(super) enum RefcountError<E> {
    /// The refcount block's offset is not cluster aligned.
    Unaligned,
    /// The block cannot be read.
    Read(ReadError<E>),
}

impl StoredRefcounts {
    /// Reads the refcount table (`clusters` clusters at `offset`), as QEMU
    /// does at open.
    pub fn read<R: BlockRead + ?Sized>(
        file: &File<'_, R>,
        layout: RefcountLayout,
        offset: u64,
        clusters: u32,
    ) -> Result<Self, ReadError<R::Error>> {
        let len = u64::from(clusters) << layout.cluster_bits;
        // The header limits the table to 8 MiB.
        let bytes = file.read(offset, len as usize)?;
        Ok(Self {
            table: RefcountTableEntry::table(&bytes).collect(),
            layout,
            cached: None,
        })
    }

    /// The stored refcount of a cluster, as QEMU's `qcow2_get_refcount` reads it.
    pub fn get<R: BlockRead + ?Sized>(
        &mut self,
        file: &File<'_, R>,
        cluster: u64,
    ) -> Result<u64, RefcountError<R::Error>> {
        let (table_index, index) = self.layout.indexes(cluster);
        let Some(&entry) = usize::try_from(table_index)
            .ok()
            .and_then(|i| self.table.get(i))
        else {
            return Ok(0);
        };
        let block_offset = entry.block_offset();
        if block_offset == 0 {
            return Ok(0);
        }
        let cluster_size = 1u64 << self.layout.cluster_bits;
        if !block_offset.is_multiple_of(cluster_size) {
            return Err(RefcountError::Unaligned);
        }
        let cached = match self.cached.take() {
            Some((offset, block)) if offset == block_offset => block,
            _ => file
                .read(block_offset, cluster_size as usize)
                .map_err(RefcountError::Read)?,
        };
        let refcount = self.layout.refcount_in_block(&cached, index);
        self.cached = Some((block_offset, cached));
        Ok(refcount)
    }
}
