//! The mutable half of an opened image: its caches, and the walk from a guest
//! offset to an extent of the virtual disk.
//!
//! Everything here runs under the image's lock. The walk takes units
//! (clusters, or subclusters with extended L2 entries) one by one and merges
//! neighbours that read the same way, so that physically contiguous data is
//! fetched with one underlying read.

use crate::block::{read_located, BlockRead};
use crate::cache::SlotCache;
use crate::codec::{CodecError, Decompressor};
use crate::config::MemoryPlan;
use crate::error::{Error, Storage, Unsupported};
use crate::header::CompressionType;
use crate::table::{classify, l2_table_offset, CompressedDescriptor, EntryPlace, Layout, Mapping};

/// The memory an image works in: the caller's, or allocated once at open.
pub(crate) enum Memory<'m> {
    Borrowed(&'m mut [u8]),
    #[cfg(feature = "alloc")]
    Owned(alloc::boxed::Box<[u8]>),
}

impl Memory<'_> {
    fn bytes(&mut self) -> &mut [u8] {
        match self {
            Memory::Borrowed(bytes) => bytes,
            #[cfg(feature = "alloc")]
            Memory::Owned(bytes) => bytes,
        }
    }
}

/// The fixed facts a lookup needs, settled at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub layout: Layout,
    pub l1_offset: u64,
    pub l1_entries: u64,
    pub file_size: u64,
    pub compression: CompressionType,
}

/// What a run of the virtual disk reads as: the same states as one unit's
/// [`Mapping`], with a data offset that points at the run's first byte.
pub use crate::table::Mapping as ExtentKind;

/// A run of the virtual disk that reads one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset of its first byte.
    pub guest_offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// How it reads.
    pub kind: ExtentKind,
}

pub(crate) struct State<'m> {
    memory: Memory<'m>,
    plan: MemoryPlan,
    tables: SlotCache,
    clusters: SlotCache,
    /// The last L1 entry read: sequential reads stay in one L1 entry for a long time.
    l1_memo: Option<(u64, u64)>,
    decompressor: Decompressor,
}

impl<'m> State<'m> {
    pub(crate) fn new(mut memory: Memory<'m>, plan: MemoryPlan) -> Self {
        let bytes = memory.bytes();
        let (table_region, rest) = bytes.split_at_mut(plan.table_region);
        let tables = SlotCache::new(table_region, plan.table_slots, plan.slice_bytes);
        let clusters = SlotCache::new(
            &mut rest[..plan.cluster_region],
            plan.cluster_slots,
            plan.cluster_size,
        );
        Self {
            memory,
            plan,
            tables,
            clusters,
            l1_memo: None,
            decompressor: Decompressor::new(),
        }
    }

    fn table_slice<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
        geometry: &Geometry,
        slice_offset: u64,
    ) -> Result<&[u8], Error<R::Error>> {
        let region = &mut self.memory.bytes()[..self.plan.table_region];
        // Tables past the end of the file read as zeros (all unallocated), as in QEMU.
        let slice = self.tables.get_or_load(region, slice_offset, |buf| {
            read_located(
                storage,
                Storage::Image,
                geometry.file_size,
                slice_offset,
                buf,
            )
        })?;
        Ok(slice)
    }

    fn table_entry<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
        geometry: &Geometry,
        entry_offset: u64,
        words: usize,
    ) -> Result<[u64; 2], Error<R::Error>> {
        let slice_mask = self.plan.slice_bytes as u64 - 1;
        let slice = self.table_slice(storage, geometry, entry_offset & !slice_mask)?;
        let at = (entry_offset & slice_mask) as usize;
        let word = |i: usize| {
            u64::from_be_bytes(
                slice[at + 8 * i..at + 8 * i + 8]
                    .try_into()
                    .expect("8 bytes"),
            )
        };
        Ok([word(0), if words == 2 { word(1) } else { 0 }])
    }

    fn l1_entry<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
        geometry: &Geometry,
        l1_index: u64,
    ) -> Result<u64, Error<R::Error>> {
        if let Some((index, entry)) = self.l1_memo {
            if index == l1_index {
                return Ok(entry);
            }
        }
        let [entry, _] =
            self.table_entry(storage, geometry, geometry.l1_offset + 8 * l1_index, 1)?;
        self.l1_memo = Some((l1_index, entry));
        Ok(entry)
    }

    /// What the unit holding `guest_offset` maps to, and where that mapping
    /// surely ends: the unit's end, or for a hole in the L1 table the end of
    /// all that the L1 entry covers, so that walking a sparse disk costs one
    /// lookup per L1 entry rather than one per cluster.
    pub(crate) fn mapping<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
        geometry: &Geometry,
        guest_offset: u64,
    ) -> Result<(Mapping, u64), Error<R::Error>> {
        let layout = &geometry.layout;
        let (l1_index, l2_index) = layout.indexes(guest_offset);
        let unit_mask = (1u64 << layout.unit_bits()) - 1;
        let unit_end = (guest_offset | unit_mask).saturating_add(1);
        // A snapshot's L1 table may be shorter than the current disk.
        if l1_index >= geometry.l1_entries {
            return Ok((Mapping::Unallocated, u64::MAX));
        }
        let l1_entry = self.l1_entry(storage, geometry, l1_index)?;
        let Some(l2_offset) = l2_table_offset(l1_entry, l1_index, layout)? else {
            let l1_span = layout.cluster_size() * layout.l2_entries();
            let l1_end = (l1_index + 1).saturating_mul(l1_span);
            return Ok((Mapping::Unallocated, l1_end));
        };
        let entry_bytes = layout.l2_entry_bytes();
        let words = (entry_bytes / 8) as usize;
        let [entry, bitmap] =
            self.table_entry(storage, geometry, l2_offset + l2_index * entry_bytes, words)?;
        let place = EntryPlace {
            l2_offset,
            l2_index,
        };
        Ok((
            classify(entry, bitmap, guest_offset, place, layout)?,
            unit_end,
        ))
    }

    /// The longest run from `guest_offset`, at most `max_len` bytes, that reads one way.
    pub(crate) fn extent<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
        geometry: &Geometry,
        guest_offset: u64,
        max_len: u64,
    ) -> Result<Extent, Error<R::Error>> {
        let unit = 1u64 << geometry.layout.unit_bits();
        let (first, first_end) = self.mapping(storage, geometry, guest_offset)?;
        let mut len = (first_end - guest_offset).min(max_len);
        let kind = match first {
            Mapping::Data { host_offset } => ExtentKind::Data {
                host_offset: host_offset + (guest_offset & (unit - 1)),
            },
            Mapping::Compressed(descriptor) => {
                let cluster = geometry.layout.cluster_size();
                let len = (cluster - (guest_offset & (cluster - 1))).min(max_len);
                return Ok(Extent {
                    guest_offset,
                    len,
                    kind: ExtentKind::Compressed(descriptor),
                });
            }
            other => other,
        };
        while len < max_len {
            let (next, next_end) = self.mapping(storage, geometry, guest_offset + len)?;
            let continues = match (kind, next) {
                (
                    ExtentKind::Data { host_offset },
                    Mapping::Data {
                        host_offset: next_host,
                    },
                ) => next_host == host_offset + len,
                (ExtentKind::Zero, Mapping::Zero)
                | (ExtentKind::Unallocated, Mapping::Unallocated) => true,
                _ => false,
            };
            if !continues {
                break;
            }
            len = (next_end - guest_offset).min(max_len);
        }
        Ok(Extent {
            guest_offset,
            len,
            kind,
        })
    }

    /// Copies `buf.len()` bytes of a compressed cluster, starting `offset_in_cluster` bytes in.
    pub(crate) fn read_compressed<R: BlockRead + ?Sized>(
        &mut self,
        storage: &R,
        geometry: &Geometry,
        descriptor: CompressedDescriptor,
        guest_offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error<R::Error>> {
        if self.plan.cluster_slots == 0 {
            return Err(Unsupported::NoDecompressionMemory.into());
        }
        let plan = self.plan;
        let cluster_size = geometry.layout.cluster_size() as usize;
        let bytes = self.memory.bytes();
        let (_, rest) = bytes.split_at_mut(plan.table_region);
        let (cluster_region, input_region) = rest.split_at_mut(plan.cluster_region);
        let decompressor = &mut self.decompressor;
        let CompressedDescriptor {
            host_offset, len, ..
        } = descriptor;
        let cluster = self
            .clusters
            .get_or_load(cluster_region, descriptor.key, |out| {
                // The length is at most two clusters by construction of the descriptor.
                let input = &mut input_region[..len as usize];
                read_located(
                    storage,
                    Storage::Image,
                    geometry.file_size,
                    host_offset,
                    input,
                )?;
                decompressor
                    .decompress(geometry.compression, input, out)
                    .map_err(|error| match error {
                        CodecError::Decode(error) => Error::Decode {
                            error,
                            host_offset,
                            guest_offset,
                        },
                        CodecError::Unsupported(error) => Error::Unsupported(error),
                    })
            })?;
        let start = (guest_offset as usize) & (cluster_size - 1);
        buf.copy_from_slice(&cluster[start..start + buf.len()]);
        Ok(())
    }
}
