//! L1 and L2 table entries, and what one cluster or subcluster maps to.
//!
//! Pure functions over entry values: no I/O, no caching. The order of the
//! checks is QEMU's (`qcow2_get_cluster_type`, `qcow2_get_subcluster_type`,
//! `qcow2_get_host_offset`).

use crate::error::CorruptError;

/// Bits 9..=55 of an L1 or L2 entry: a cluster offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62.
pub const COMPRESSED: u64 = 1 << 62;
/// L1/L2 entry bit 63: refcount is exactly one.
pub const COPIED: u64 = 1 << 63;
/// Standard L2 entry bit 0: reads as zeros (v3).
pub const ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;

/// What one guest cluster or subcluster reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Data at this host offset: of the unit's first byte for a unit's mapping, of the
    /// run's first byte for an [`Extent`](crate::Extent).
    Data {
        /// Host offset in the image file, or in the external data file.
        host_offset: u64,
    },
    /// Reads as zeros; never falls through to a backing file.
    Zero,
    /// Not allocated: reads from the backing file, else zeros.
    Unallocated,
    /// A compressed cluster.
    Compressed(CompressedDescriptor),
}

/// Where a compressed cluster's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedDescriptor {
    /// First byte of the compressed stream.
    pub host_offset: u64,
    /// Bytes to read: an upper bound at 512-byte granularity, at most two clusters.
    pub len: u64,
    /// The entry's descriptor bits, which identify the compressed cluster (the cache key).
    pub key: u64,
}

impl CompressedDescriptor {
    /// Decodes a compressed L2 entry (`x = 70 - cluster_bits` offset bits, then a sector count).
    pub fn decode(entry: u64, cluster_bits: u32) -> Self {
        let offset_bits = 70 - cluster_bits;
        let host_offset = entry & ((1u64 << offset_bits) - 1);
        let sectors = ((entry >> offset_bits) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
        Self {
            host_offset,
            len: sectors * 512 - (host_offset & 511),
            key: entry,
        }
    }
}

/// The facts about an image that classification depends on.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// 2 or 3.
    pub version: u32,
    /// 128-bit L2 entries.
    pub extended_l2: bool,
    /// Guest data lives in an external data file.
    pub data_file: bool,
}

impl Layout {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes per L2 entry.
    pub fn l2_entry_bytes(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_bytes()
    }

    /// log2 of the bytes one mapping unit covers: a subcluster with extended L2, else a cluster.
    pub fn unit_bits(&self) -> u32 {
        if self.extended_l2 {
            self.cluster_bits - 5
        } else {
            self.cluster_bits
        }
    }

    /// The L1 index and L2 index of a guest offset.
    pub fn indexes(&self, guest_offset: u64) -> (u64, u64) {
        let cluster = guest_offset >> self.cluster_bits;
        (cluster / self.l2_entries(), cluster % self.l2_entries())
    }
}

/// The L2 table offset of an L1 entry, `None` when unallocated.
pub fn l2_table_offset(
    entry: u64,
    l1_index: u64,
    layout: &Layout,
) -> Result<Option<u64>, CorruptError> {
    let l2_offset = entry & OFFSET_MASK;
    if l2_offset == 0 {
        return Ok(None);
    }
    if !l2_offset.is_multiple_of(layout.cluster_size()) {
        return Err(CorruptError::L2OffsetUnaligned {
            l2_offset,
            l1_index,
        });
    }
    Ok(Some(l2_offset))
}

/// Where an L2 entry sits, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct EntryPlace {
    /// The L2 table offset.
    pub l2_offset: u64,
    /// The index in that table.
    pub l2_index: u64,
}

/// Classifies the (sub)cluster at `guest_offset` from its L2 entry.
///
/// `bitmap` is the second word of an extended entry (ignored otherwise).
/// The returned data offset is that of the unit containing `guest_offset`.
pub fn classify(
    entry: u64,
    bitmap: u64,
    guest_offset: u64,
    place: EntryPlace,
    layout: &Layout,
) -> Result<Mapping, CorruptError> {
    let EntryPlace {
        l2_offset,
        l2_index,
    } = place;
    if entry & COMPRESSED != 0 {
        if layout.data_file {
            return Err(CorruptError::CompressedWithDataFile {
                l2_offset,
                l2_index,
            });
        }
        return Ok(Mapping::Compressed(CompressedDescriptor::decode(
            entry & !(COPIED | COMPRESSED),
            layout.cluster_bits,
        )));
    }
    let cluster_offset = entry & OFFSET_MASK;
    // Offset 0 is a real data offset in an external data file when COPIED says so.
    let allocated = cluster_offset != 0 || (layout.data_file && entry & COPIED != 0);
    let unit_state = if layout.extended_l2 {
        subcluster_state(bitmap, allocated, guest_offset, layout).map_err(|()| {
            CorruptError::InvalidSubclusterBitmap {
                bitmap,
                l2_offset,
                l2_index,
            }
        })?
    } else if entry & ZERO != 0 {
        if layout.version < 3 {
            return Err(CorruptError::ZeroInVersion2 {
                l2_offset,
                l2_index,
            });
        }
        UnitState::Zero
    } else if allocated {
        UnitState::Data
    } else {
        UnitState::Unallocated
    };
    if !allocated {
        return Ok(match unit_state {
            UnitState::Zero => Mapping::Zero,
            _ => Mapping::Unallocated,
        });
    }
    // An allocated entry's offset is checked whatever the unit reads as, as in QEMU.
    if !cluster_offset.is_multiple_of(layout.cluster_size()) {
        return Err(CorruptError::DataOffsetUnaligned {
            host_offset: cluster_offset,
            l2_offset,
            l2_index,
        });
    }
    let offset_in_cluster = guest_offset & (layout.cluster_size() - 1);
    let unit_in_cluster = offset_in_cluster & !((1u64 << layout.unit_bits()) - 1);
    let host_offset = cluster_offset + unit_in_cluster;
    if layout.data_file {
        let guest_unit = guest_offset & !((1u64 << layout.unit_bits()) - 1);
        if host_offset != guest_unit {
            return Err(CorruptError::DataFileOffsetMismatch {
                host_offset,
                guest_offset: guest_unit,
                l2_index,
            });
        }
    }
    Ok(match unit_state {
        UnitState::Data => Mapping::Data { host_offset },
        UnitState::Zero => Mapping::Zero,
        UnitState::Unallocated => Mapping::Unallocated,
    })
}

enum UnitState {
    Data,
    Zero,
    Unallocated,
}

/// The state of one subcluster from an extended L2 bitmap (bits 0..32 allocated, 32..64 zero).
fn subcluster_state(
    bitmap: u64,
    allocated: bool,
    guest_offset: u64,
    layout: &Layout,
) -> Result<UnitState, ()> {
    let alloc_bits = bitmap & 0xffff_ffff;
    let zero_bits = bitmap >> 32;
    // Any subcluster both allocated and zero invalidates the whole entry, and an
    // unallocated cluster cannot have allocated subclusters.
    if alloc_bits & zero_bits != 0 || (!allocated && alloc_bits != 0) {
        return Err(());
    }
    let index = (guest_offset >> layout.unit_bits()) & u64::from(SUBCLUSTERS - 1);
    Ok(if zero_bits >> index & 1 != 0 {
        UnitState::Zero
    } else if alloc_bits >> index & 1 != 0 {
        UnitState::Data
    } else {
        UnitState::Unallocated
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Layout = Layout {
        cluster_bits: 16,
        version: 3,
        extended_l2: false,
        data_file: false,
    };
    const EXTENDED: Layout = Layout {
        cluster_bits: 16,
        version: 3,
        extended_l2: true,
        data_file: false,
    };
    const PLACE: EntryPlace = EntryPlace {
        l2_offset: 0x30000,
        l2_index: 7,
    };

    fn classify_standard(entry: u64, layout: &Layout) -> Result<Mapping, CorruptError> {
        classify(entry, 0, 0x1234, PLACE, layout)
    }

    #[test]
    fn standard_entries() {
        assert_eq!(classify_standard(0, &STANDARD), Ok(Mapping::Unallocated));
        assert_eq!(
            classify_standard(COPIED | 0x50000, &STANDARD),
            Ok(Mapping::Data {
                host_offset: 0x50000
            })
        );
        assert_eq!(classify_standard(ZERO, &STANDARD), Ok(Mapping::Zero));
        assert_eq!(
            classify_standard(ZERO | 0x50000, &STANDARD),
            Ok(Mapping::Zero)
        );
        assert_eq!(
            classify_standard(ZERO | 0x50200, &STANDARD),
            Err(CorruptError::DataOffsetUnaligned {
                host_offset: 0x50200,
                l2_offset: 0x30000,
                l2_index: 7
            })
        );
        assert_eq!(
            classify_standard(0x50200, &STANDARD),
            Err(CorruptError::DataOffsetUnaligned {
                host_offset: 0x50200,
                l2_offset: 0x30000,
                l2_index: 7
            })
        );
        let v2 = Layout {
            version: 2,
            ..STANDARD
        };
        assert_eq!(
            classify_standard(ZERO, &v2),
            Err(CorruptError::ZeroInVersion2 {
                l2_offset: 0x30000,
                l2_index: 7
            })
        );
    }

    #[test]
    fn compressed_descriptor_bits() {
        // 64 KiB clusters: 54 offset bits, then 8 bits of sector count.
        let entry = COMPRESSED | (3u64 << 54) | 0x12345;
        let Ok(Mapping::Compressed(descriptor)) = classify_standard(entry, &STANDARD) else {
            panic!("not compressed")
        };
        assert_eq!(descriptor.host_offset, 0x12345);
        assert_eq!(descriptor.len, 4 * 512 - 0x145);
        let with_data_file = Layout {
            data_file: true,
            ..STANDARD
        };
        assert_eq!(
            classify_standard(entry, &with_data_file),
            Err(CorruptError::CompressedWithDataFile {
                l2_offset: 0x30000,
                l2_index: 7
            })
        );
    }

    #[test]
    fn extended_subclusters() {
        let sub = 1u64 << EXTENDED.unit_bits();
        let bitmap = 0b01 | (0b10 << 32); // subcluster 0 allocated, 1 zero, rest unallocated
        let entry = 0x80000;
        assert_eq!(
            classify(entry, bitmap, 0, PLACE, &EXTENDED),
            Ok(Mapping::Data {
                host_offset: 0x80000
            })
        );
        assert_eq!(
            classify(entry, bitmap, sub, PLACE, &EXTENDED),
            Ok(Mapping::Zero)
        );
        assert_eq!(
            classify(entry, bitmap, 2 * sub + 5, PLACE, &EXTENDED),
            Ok(Mapping::Unallocated)
        );
        assert_eq!(
            classify(0, 0b100 << 32, 2 * sub, PLACE, &EXTENDED),
            Ok(Mapping::Zero)
        );
        assert_eq!(
            classify(0, 0, 2 * sub, PLACE, &EXTENDED),
            Ok(Mapping::Unallocated)
        );
        let both = 0b100 | (0b100 << 32);
        assert!(matches!(
            classify(entry, both, 0, PLACE, &EXTENDED),
            Err(CorruptError::InvalidSubclusterBitmap { .. })
        ));
        assert!(matches!(
            classify(0, 1, 0, PLACE, &EXTENDED),
            Err(CorruptError::InvalidSubclusterBitmap { .. })
        ));
        // Bit 0 of word 0 is not a ZERO flag with extended entries.
        assert_eq!(
            classify(ZERO, 0, 0, PLACE, &EXTENDED),
            Ok(Mapping::Unallocated)
        );
        // The data offset is that of the subcluster holding the guest offset.
        assert_eq!(
            classify(entry, 0b1000, 3 * sub + 9, PLACE, &EXTENDED),
            Ok(Mapping::Data {
                host_offset: 0x80000 + 3 * sub
            })
        );
    }

    #[test]
    fn external_data_file_offsets() {
        let layout = Layout {
            data_file: true,
            ..STANDARD
        };
        assert_eq!(
            classify(COPIED, 0, 0x100, PLACE, &layout),
            Ok(Mapping::Data { host_offset: 0 })
        );
        assert_eq!(
            classify(0, 0, 0x100, PLACE, &layout),
            Ok(Mapping::Unallocated)
        );
        assert!(matches!(
            classify(COPIED | 0x20000, 0, 0x10000, PLACE, &layout),
            Err(CorruptError::DataFileOffsetMismatch { .. })
        ));
    }

    #[test]
    fn l1_entries() {
        assert_eq!(l2_table_offset(0, 3, &STANDARD), Ok(None));
        assert_eq!(
            l2_table_offset(COPIED | 0x30000, 3, &STANDARD),
            Ok(Some(0x30000))
        );
        assert_eq!(
            l2_table_offset(0x30200, 3, &STANDARD),
            Err(CorruptError::L2OffsetUnaligned {
                l2_offset: 0x30200,
                l1_index: 3
            })
        );
    }
}
