//! The mutable half of an opened image: its caches, and the walk from a guest
//! offset to an extent of the virtual disk.
//!
//! Everything here runs under the image's lock, as a [`Walk`]: the state
//! borrowed with the storage and geometry of one request. The walk takes
//! units (clusters, or subclusters with extended L2 entries) one by one and
//! merges neighbours that read the same way, so that physically contiguous
//! data is fetched with one underlying read. What an entry means is
//! [`crate::table`]'s.

use crate::block::{read_located, BlockRead};
use crate::cache::SlotCache;
use crate::codec::{CodecError, Decompressor};
use crate::config::MemoryPlan;
use crate::error::{Error, Storage, Unsupported};
use crate::header::CompressionType;
use crate::table::{
    CompressedDescriptor, EntryPlace, L1Entry, L2Entry, Layout, Mapping, L1_ENTRY_BYTES,
};

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

/// A run of the virtual disk that reads one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset of its first byte.
    pub guest_offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// How it reads; host offsets are those of its first byte.
    pub kind: Mapping,
}

/// What one unit (cluster, or subcluster with extended L2) maps to, and
/// the guest range the answer holds for: `start..end` is the unit, or for a
/// hole in the L1 table all that the L1 entry covers.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: u64,
    end: u64,
    /// Host offsets of the unit's first byte.
    mapping: Mapping,
}

pub(crate) struct State<'m> {
    memory: Memory<'m>,
    plan: MemoryPlan,
    tables: SlotCache,
    clusters: SlotCache,
    /// The last L1 entry read: sequential reads stay in one L1 entry for a long time.
    l1_memo: Option<(u64, L1Entry)>,
    /// The last unit looked up: the one that ended a run starts the next.
    unit_memo: Option<Unit>,
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
            unit_memo: None,
            decompressor: Decompressor::new(),
        }
    }

    /// The state with what one request needs: the storage and the geometry.
    pub(crate) fn walk<'w, R: BlockRead + ?Sized>(
        &'w mut self,
        storage: &'w R,
        geometry: &'w Geometry,
    ) -> Walk<'w, 'm, R> {
        Walk {
            state: self,
            storage,
            geometry,
        }
    }
}

/// One request's walk over the tables: the image's state, its storage and
/// its geometry, borrowed together for the request.
pub(crate) struct Walk<'w, 'm, R: ?Sized> {
    state: &'w mut State<'m>,
    storage: &'w R,
    geometry: &'w Geometry,
}

impl<R: BlockRead + ?Sized> Walk<'_, '_, R> {
    fn table_slice(&mut self, slice_offset: u64) -> Result<&[u8], Error<R::Error>> {
        let (storage, file_size) = (self.storage, self.geometry.file_size);
        let state = &mut *self.state;
        let region = &mut state.memory.bytes()[..state.plan.table_region];
        // Tables past the end of the file read as zeros (all unallocated), as in QEMU.
        let slice = state.tables.get_or_load(region, slice_offset, |buf| {
            read_located(storage, Storage::Image, file_size, slice_offset, buf)
        })?;
        Ok(slice)
    }

    /// The `len` bytes of a table entry at `entry_offset` (entries never
    /// straddle a slice: slices and entry sizes are powers of two).
    fn table_entry(&mut self, entry_offset: u64, len: u64) -> Result<&[u8], Error<R::Error>> {
        let slice_mask = self.state.plan.slice_bytes as u64 - 1;
        let slice = self.table_slice(entry_offset & !slice_mask)?;
        let at = (entry_offset & slice_mask) as usize;
        Ok(&slice[at..at + len as usize])
    }

    fn l1_entry(&mut self, l1_index: u64) -> Result<L1Entry, Error<R::Error>> {
        if let Some((index, entry)) = self.state.l1_memo {
            if index == l1_index {
                return Ok(entry);
            }
        }
        let entry_offset = self.geometry.l1_offset + L1_ENTRY_BYTES * l1_index;
        let entry = L1Entry::table(self.table_entry(entry_offset, L1_ENTRY_BYTES)?)
            .next()
            .expect("one whole entry");
        self.state.l1_memo = Some((l1_index, entry));
        Ok(entry)
    }

    /// The unit holding `guest_offset`, from the memo when it was the last
    /// one looked up.
    fn unit(&mut self, guest_offset: u64) -> Result<Unit, Error<R::Error>> {
        match self.state.unit_memo {
            Some(unit) if (unit.start..unit.end).contains(&guest_offset) => Ok(unit),
            _ => {
                let unit = self.look_up(guest_offset)?;
                self.state.unit_memo = Some(unit);
                Ok(unit)
            }
        }
    }

    /// Reads the tables for the unit holding `guest_offset`. A hole in the
    /// L1 table answers for all that the L1 entry covers, so that walking a
    /// sparse disk costs one lookup per L1 entry rather than one per cluster.
    fn look_up(&mut self, guest_offset: u64) -> Result<Unit, Error<R::Error>> {
        let layout = self.geometry.layout;
        let (l1_index, l2_index) = layout.indexes(guest_offset);
        let unit_mask = (1u64 << layout.unit_bits()) - 1;
        let unit_start = guest_offset & !unit_mask;
        let unit_end = (guest_offset | unit_mask).saturating_add(1);
        let unallocated = Mapping::Unallocated { kept_offset: None };
        // A snapshot's L1 table may be shorter than the current disk.
        if l1_index >= self.geometry.l1_entries {
            return Ok(Unit {
                start: unit_start,
                end: u64::MAX,
                mapping: unallocated,
            });
        }
        let Some(l2_offset) = self
            .l1_entry(l1_index)?
            .l2_table_offset(l1_index, &layout)?
        else {
            let span = layout.l1_entry_span();
            return Ok(Unit {
                start: l1_index.saturating_mul(span),
                end: (l1_index + 1).saturating_mul(span),
                mapping: unallocated,
            });
        };
        let entry_bytes = layout.l2_entry_bytes();
        let bytes = self.table_entry(l2_offset + l2_index * entry_bytes, entry_bytes)?;
        let entry = L2Entry::from_bytes(bytes, layout.extended_l2);
        let place = EntryPlace {
            l2_offset,
            l2_index,
        };
        Ok(Unit {
            start: unit_start,
            end: unit_end,
            mapping: entry.mapping(guest_offset, place, &layout)?,
        })
    }

    /// The longest run from `guest_offset`, at most `max_len` bytes, that
    /// reads one way; neighbours merge by [`Mapping::continued_by`].
    pub(crate) fn extent(
        &mut self,
        guest_offset: u64,
        max_len: u64,
    ) -> Result<Extent, Error<R::Error>> {
        let first = self.unit(guest_offset)?;
        if let Mapping::Compressed(descriptor) = first.mapping {
            let cluster = self.geometry.layout.cluster_size();
            let len = (cluster - (guest_offset & (cluster - 1))).min(max_len);
            return Ok(Extent {
                guest_offset,
                len,
                kind: Mapping::Compressed(descriptor),
            });
        }
        let kind = first.mapping.advanced(guest_offset - first.start);
        let mut len = (first.end - guest_offset).min(max_len);
        while len < max_len {
            let next = self.unit(guest_offset + len)?;
            // A unit's mapping is of its first byte, where this run goes on.
            let next_mapping = next.mapping.advanced(guest_offset + len - next.start);
            if !kind.continued_by(len, next_mapping) {
                break;
            }
            len = (next.end - guest_offset).min(max_len);
        }
        Ok(Extent {
            guest_offset,
            len,
            kind,
        })
    }

    /// Copies `buf.len()` bytes of a compressed cluster, starting `offset_in_cluster` bytes in.
    pub(crate) fn read_compressed(
        &mut self,
        descriptor: CompressedDescriptor,
        guest_offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error<R::Error>> {
        let (storage, geometry) = (self.storage, self.geometry);
        let state = &mut *self.state;
        if state.plan.cluster_slots == 0 {
            return Err(Unsupported::NoDecompressionMemory.into());
        }
        let plan = state.plan;
        let cluster_size = geometry.layout.cluster_size() as usize;
        let bytes = state.memory.bytes();
        let (_, rest) = bytes.split_at_mut(plan.table_region);
        let (cluster_region, input_region) = rest.split_at_mut(plan.cluster_region);
        let decompressor = &mut state.decompressor;
        let CompressedDescriptor {
            host_offset, len, ..
        } = descriptor;
        let cluster = state
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
