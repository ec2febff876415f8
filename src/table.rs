//! L1 and L2 table entries, and what one cluster or subcluster maps to.
//!
//! The only owner of entry semantics: the bits of an entry, QEMU's cluster
//! types, the host offset an entry keeps, the subcluster bitmap, and the
//! table bounds. Pure functions over entry values and table bytes: no I/O,
//! no caching. The order of the checks is QEMU's (`qcow2_get_cluster_type`,
//! `qcow2_get_subcluster_type`, `qcow2_get_host_offset`).

use crate::error::CorruptError;

/// Bits 9..=55 of an L1 or L2 entry: a cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62.
const COMPRESSED: u64 = 1 << 62;
/// L1/L2 entry bit 63: refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// Standard L2 entry bit 0: reads as zeros (v3).
const ZERO: u64 = 1;
/// Reserved bits of an L1 entry (QEMU's `L1E_RESERVED_MASK`).
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Reserved bits of a standard, uncompressed L2 entry (QEMU's `L2E_STD_RESERVED_MASK`).
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;
/// QEMU's limit on an L1 table (`QCOW_MAX_L1_SIZE`), active or of a snapshot.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Bytes of one L1 entry.
pub const L1_ENTRY_BYTES: u64 = 8;

/// What a run of the virtual disk (an [`Extent`](crate::Extent)) reads as.
///
/// Host offsets are those of the run's first byte. Zero and unallocated
/// runs carry the offset their entries keep, if any (QEMU's `ZERO_ALLOC`
/// and `UNALLOCATED_ALLOC`), which `qemu-img map` prints: a run's kept
/// offsets are contiguous, as its data offsets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Data at this host offset.
    Data {
        /// Host offset in the image file, or in the external data file.
        host_offset: u64,
    },
    /// Reads as zeros; never falls through to a backing file.
    Zero {
        /// The host offset the entry keeps allocated, if any.
        kept_offset: Option<u64>,
    },
    /// Not allocated: reads from the backing file, else zeros.
    Unallocated {
        /// The host offset the entry keeps allocated, if any (an allocated
        /// cluster's unallocated subclusters).
        kept_offset: Option<u64>,
    },
    /// A compressed cluster.
    Compressed(CompressedDescriptor),
}

impl Mapping {
    /// The same mapping `bytes` further into the run: host offsets move along.
    pub(crate) fn advanced(self, bytes: u64) -> Self {
        let kept = |offset: Option<u64>| offset.map(|offset| offset + bytes);
        match self {
            Mapping::Data { host_offset } => Mapping::Data {
                host_offset: host_offset + bytes,
            },
            Mapping::Zero { kept_offset } => Mapping::Zero {
                kept_offset: kept(kept_offset),
            },
            Mapping::Unallocated { kept_offset } => Mapping::Unallocated {
                kept_offset: kept(kept_offset),
            },
            compressed @ Mapping::Compressed(_) => compressed,
        }
    }

    /// Whether `next`, starting `len` bytes after `self`, continues the same
    /// run: the same kind, and contiguous host offsets where there are any
    /// (`qemu-img map`'s merge rule). Compressed clusters never merge.
    pub(crate) fn continued_by(self, len: u64, next: Mapping) -> bool {
        let contiguous = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.checked_add(len) == Some(b),
            _ => false,
        };
        match (self, next) {
            (Mapping::Data { host_offset: a }, Mapping::Data { host_offset: b }) => {
                contiguous(Some(a), Some(b))
            }
            (Mapping::Zero { kept_offset: a }, Mapping::Zero { kept_offset: b })
            | (Mapping::Unallocated { kept_offset: a }, Mapping::Unallocated { kept_offset: b }) => {
                contiguous(a, b)
            }
            _ => false,
        }
    }
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
    /// Decodes the descriptor bits of a compressed L2 entry (`x = 70 -
    /// cluster_bits` offset bits, then a sector count).
    fn decode(descriptor: u64, cluster_bits: u32) -> Self {
        let offset_bits = 70 - cluster_bits;
        let host_offset = descriptor & ((1u64 << offset_bits) - 1);
        let sectors = ((descriptor >> offset_bits) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
        Self {
            host_offset,
            len: sectors * 512 - (host_offset & 511),
            key: descriptor,
        }
    }
}

/// The facts about an image that entry semantics depend on, settled at open.
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

    /// Guest bytes one L1 entry covers (one whole L2 table).
    pub fn l1_entry_span(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
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

    /// The L2 entries of one L2 table's bytes (a short tail is ignored).
    pub fn l2_entries_of<'t>(&self, table: &'t [u8]) -> impl Iterator<Item = L2Entry> + 't {
        let extended = self.extended_l2;
        table
            .chunks_exact(self.l2_entry_bytes() as usize)
            .map(move |bytes| L2Entry::from_bytes(bytes, extended))
    }
}

/// Whether an L1 table of `entries` entries is within QEMU's limit.
pub fn l1_table_fits(entries: u32) -> bool {
    u64::from(entries) * L1_ENTRY_BYTES <= MAX_L1_BYTES
}

/// The big-endian word at the start of `bytes` (at least 8 bytes long).
fn word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

/// One L1 table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Entry(u64);

impl L1Entry {
    /// The entry with this raw value.
    pub fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The entries of an L1 table's bytes (a short tail is ignored).
    pub fn table(bytes: &[u8]) -> impl Iterator<Item = L1Entry> + '_ {
        bytes
            .chunks_exact(L1_ENTRY_BYTES as usize)
            .map(|bytes| Self(word(bytes)))
    }

    /// The raw value.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// Whether the COPIED flag (refcount exactly one) is set.
    pub fn copied(self) -> bool {
        self.0 & COPIED != 0
    }

    /// Reserved bits that are set (none in a valid entry).
    pub fn reserved_bits(self) -> u64 {
        self.0 & L1_RESERVED
    }

    /// The L2 table offset the entry holds, unchecked; 0 when it maps none.
    pub fn l2_offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    /// The L2 table offset, `None` when the entry maps no table; an
    /// unaligned table is corrupt.
    pub fn l2_table_offset(
        self,
        l1_index: u64,
        layout: &Layout,
    ) -> Result<Option<u64>, CorruptError> {
        let l2_offset = self.l2_offset();
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
}

/// QEMU's cluster types (`QCow2ClusterType`): how an L2 entry's cluster is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterType {
    /// No host cluster: reads from the backing file.
    Unallocated,
    /// Reads as zeros, no host cluster (v3 standard entries).
    ZeroPlain,
    /// Reads as zeros, keeps a host cluster allocated.
    ZeroAlloc,
    /// Data in a host cluster (with extended L2, per the bitmap).
    Normal,
    /// A compressed cluster.
    Compressed,
}

/// Where an L2 entry sits, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryPlace {
    /// The L2 table offset.
    pub l2_offset: u64,
    /// The index in that table.
    pub l2_index: u64,
}

/// One L2 table entry: the descriptor word and, with extended L2 entries,
/// the subcluster bitmap (0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Entry {
    descriptor: u64,
    bitmap: u64,
}

impl L2Entry {
    /// The entry with these raw words.
    pub fn new(descriptor: u64, bitmap: u64) -> Self {
        Self { descriptor, bitmap }
    }

    /// The entry in `bytes` (8 bytes, or 16 when `extended`).
    pub fn from_bytes(bytes: &[u8], extended: bool) -> Self {
        let bitmap = if extended { word(&bytes[8..]) } else { 0 };
        Self::new(word(bytes), bitmap)
    }

    /// The descriptor word.
    pub fn raw(self) -> u64 {
        self.descriptor
    }

    /// The subcluster bitmap: bits 0..32 allocated, 32..64 reads as zeros.
    pub fn bitmap(self) -> u64 {
        self.bitmap
    }

    /// Subclusters marked allocated.
    pub fn allocated_subclusters(self) -> u32 {
        self.bitmap as u32
    }

    /// Subclusters marked as reading zeros.
    pub fn zero_subclusters(self) -> u32 {
        (self.bitmap >> 32) as u32
    }

    /// Whether the COPIED flag (refcount exactly one) is set.
    pub fn copied(self) -> bool {
        self.descriptor & COPIED != 0
    }

    /// Reserved bits that are set (none in a valid entry; compressed
    /// entries have no reserved bits).
    pub fn reserved_bits(self) -> u64 {
        if self.descriptor & COMPRESSED != 0 {
            0
        } else {
            self.descriptor & L2_RESERVED
        }
    }

    /// The host cluster offset an uncompressed entry holds, unchecked.
    pub fn host_cluster_offset(self) -> u64 {
        self.descriptor & OFFSET_MASK
    }

    /// Where the compressed stream is, for a compressed entry.
    pub fn compressed(self, cluster_bits: u32) -> Option<CompressedDescriptor> {
        (self.descriptor & COMPRESSED != 0).then(|| {
            CompressedDescriptor::decode(self.descriptor & !(COPIED | COMPRESSED), cluster_bits)
        })
    }

    /// Whether the entry owns a host cluster. Offset 0 is a real data
    /// offset in an external data file when COPIED says so.
    fn allocated(self, layout: &Layout) -> bool {
        self.host_cluster_offset() != 0 || (layout.data_file && self.copied())
    }

    /// QEMU's type of the entry's cluster (`qcow2_get_cluster_type`; the
    /// ZERO flag is not one with extended entries, whose bitmap says it).
    pub fn cluster_type(self, layout: &Layout) -> ClusterType {
        if self.descriptor & COMPRESSED != 0 {
            ClusterType::Compressed
        } else if self.descriptor & ZERO != 0 && !layout.extended_l2 {
            if self.host_cluster_offset() != 0 {
                ClusterType::ZeroAlloc
            } else {
                ClusterType::ZeroPlain
            }
        } else if self.allocated(layout) {
            ClusterType::Normal
        } else {
            ClusterType::Unallocated
        }
    }

    /// What the (sub)cluster at `guest_offset` reads as; host offsets are
    /// those of the unit (cluster or subcluster) holding `guest_offset`.
    pub(crate) fn mapping(
        self,
        guest_offset: u64,
        place: EntryPlace,
        layout: &Layout,
    ) -> Result<Mapping, CorruptError> {
        let EntryPlace {
            l2_offset,
            l2_index,
        } = place;
        if let Some(descriptor) = self.compressed(layout.cluster_bits) {
            if layout.data_file {
                return Err(CorruptError::CompressedWithDataFile {
                    l2_offset,
                    l2_index,
                });
            }
            return Ok(Mapping::Compressed(descriptor));
        }
        let allocated = self.allocated(layout);
        let unit_state = if layout.extended_l2 {
            self.subcluster_state(allocated, guest_offset, layout)
                .ok_or(CorruptError::InvalidSubclusterBitmap {
                    bitmap: self.bitmap,
                    l2_offset,
                    l2_index,
                })?
        } else if self.descriptor & ZERO != 0 {
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
                UnitState::Zero => Mapping::Zero { kept_offset: None },
                _ => Mapping::Unallocated { kept_offset: None },
            });
        }
        // An allocated entry's offset is checked whatever the unit reads as, as in QEMU.
        let cluster_offset = self.host_cluster_offset();
        if !cluster_offset.is_multiple_of(layout.cluster_size()) {
            return Err(CorruptError::DataOffsetUnaligned {
                host_offset: cluster_offset,
                l2_offset,
                l2_index,
            });
        }
        let unit_mask = (1u64 << layout.unit_bits()) - 1;
        let offset_in_cluster = guest_offset & (layout.cluster_size() - 1);
        let host_offset = cluster_offset + (offset_in_cluster & !unit_mask);
        if layout.data_file {
            let guest_unit = guest_offset & !unit_mask;
            if host_offset != guest_unit {
                return Err(CorruptError::DataFileOffsetMismatch {
                    host_offset,
                    guest_offset: guest_unit,
                    l2_index,
                });
            }
        }
        let kept_offset = Some(host_offset);
        Ok(match unit_state {
            UnitState::Data => Mapping::Data { host_offset },
            UnitState::Zero => Mapping::Zero { kept_offset },
            UnitState::Unallocated => Mapping::Unallocated { kept_offset },
        })
    }

    /// The state of the subcluster holding `guest_offset`, `None` when the
    /// bitmap is invalid: a subcluster both allocated and zero invalidates
    /// the whole entry, and an unallocated cluster cannot have allocated
    /// subclusters.
    fn subcluster_state(
        self,
        allocated: bool,
        guest_offset: u64,
        layout: &Layout,
    ) -> Option<UnitState> {
        let (alloc_bits, zero_bits) = (self.allocated_subclusters(), self.zero_subclusters());
        if alloc_bits & zero_bits != 0 || (!allocated && alloc_bits != 0) {
            return None;
        }
        let index = (guest_offset >> layout.unit_bits()) & u64::from(SUBCLUSTERS - 1);
        Some(if zero_bits >> index & 1 != 0 {
            UnitState::Zero
        } else if alloc_bits >> index & 1 != 0 {
            UnitState::Data
        } else {
            UnitState::Unallocated
        })
    }
}

enum UnitState {
    Data,
    Zero,
    Unallocated,
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

    fn classify(
        entry: u64,
        bitmap: u64,
        guest_offset: u64,
        place: EntryPlace,
        layout: &Layout,
    ) -> Result<Mapping, CorruptError> {
        L2Entry::new(entry, bitmap).mapping(guest_offset, place, layout)
    }

    fn classify_standard(entry: u64, layout: &Layout) -> Result<Mapping, CorruptError> {
        classify(entry, 0, 0x1234, PLACE, layout)
    }

    fn l2_table_offset(
        entry: u64,
        l1_index: u64,
        layout: &Layout,
    ) -> Result<Option<u64>, CorruptError> {
        L1Entry::new(entry).l2_table_offset(l1_index, layout)
    }

    const ZERO_NONE: Mapping = Mapping::Zero { kept_offset: None };
    const UNALLOCATED_NONE: Mapping = Mapping::Unallocated { kept_offset: None };

    #[test]
    fn standard_entries() {
        assert_eq!(classify_standard(0, &STANDARD), Ok(UNALLOCATED_NONE));
        assert_eq!(
            classify_standard(COPIED | 0x50000, &STANDARD),
            Ok(Mapping::Data {
                host_offset: 0x50000
            })
        );
        assert_eq!(classify_standard(ZERO, &STANDARD), Ok(ZERO_NONE));
        assert_eq!(
            classify_standard(ZERO | 0x50000, &STANDARD),
            Ok(Mapping::Zero {
                kept_offset: Some(0x50000)
            })
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
            Ok(Mapping::Zero {
                kept_offset: Some(0x80000 + sub)
            })
        );
        assert_eq!(
            classify(entry, bitmap, 2 * sub + 5, PLACE, &EXTENDED),
            Ok(Mapping::Unallocated {
                kept_offset: Some(0x80000 + 2 * sub)
            })
        );
        assert_eq!(
            classify(0, 0b100 << 32, 2 * sub, PLACE, &EXTENDED),
            Ok(ZERO_NONE)
        );
        assert_eq!(
            classify(0, 0, 2 * sub, PLACE, &EXTENDED),
            Ok(UNALLOCATED_NONE)
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
        assert_eq!(classify(ZERO, 0, 0, PLACE, &EXTENDED), Ok(UNALLOCATED_NONE));
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
        assert_eq!(classify(0, 0, 0x100, PLACE, &layout), Ok(UNALLOCATED_NONE));
        assert!(matches!(
            classify(COPIED | 0x20000, 0, 0x10000, PLACE, &layout),
            Err(CorruptError::DataFileOffsetMismatch { .. })
        ));
    }

    #[test]
    fn cluster_types_are_qemus() {
        let types = |entry: u64, layout: &Layout| L2Entry::new(entry, 0).cluster_type(layout);
        assert_eq!(types(0, &STANDARD), ClusterType::Unallocated);
        assert_eq!(types(ZERO, &STANDARD), ClusterType::ZeroPlain);
        assert_eq!(types(ZERO | 0x50000, &STANDARD), ClusterType::ZeroAlloc);
        assert_eq!(types(0x50000, &STANDARD), ClusterType::Normal);
        assert_eq!(
            types(COMPRESSED | 0x50000, &STANDARD),
            ClusterType::Compressed
        );
        // With extended entries bit 0 is reserved, not ZERO.
        assert_eq!(types(ZERO, &EXTENDED), ClusterType::Unallocated);
        let data_file = Layout {
            data_file: true,
            ..STANDARD
        };
        assert_eq!(types(COPIED, &data_file), ClusterType::Normal);
        assert_eq!(types(COPIED, &STANDARD), ClusterType::Unallocated);
    }

    #[test]
    fn reserved_bits() {
        assert_eq!(L1Entry::new(COPIED | 0x30000 | 1).reserved_bits(), 1);
        assert_eq!(L2Entry::new(0x50000 | 2, 0).reserved_bits(), 2);
        // Compressed entries use those bits for the descriptor.
        assert_eq!(L2Entry::new(COMPRESSED | 0x3f, 0).reserved_bits(), 0);
    }

    #[test]
    fn runs_merge_on_contiguous_kept_offsets() {
        let zero_at = |offset| Mapping::Zero {
            kept_offset: Some(offset),
        };
        assert!(zero_at(0x10000).continued_by(0x10000, zero_at(0x20000)));
        assert!(!zero_at(0x10000).continued_by(0x10000, zero_at(0x30000)));
        assert!(!zero_at(0x10000).continued_by(0x10000, ZERO_NONE));
        assert!(ZERO_NONE.continued_by(0x10000, ZERO_NONE));
        assert!(!ZERO_NONE.continued_by(0x10000, UNALLOCATED_NONE));
        assert_eq!(zero_at(0x10000).advanced(5), zero_at(0x10005));
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
