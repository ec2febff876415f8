//! Where an image's metadata lies, and corrupting one structure at a time.
//!
//! The structures are found by a walk written here from the format
//! specification, independently of the crate under test: header, header
//! extensions, backing file name, L1 and L2 tables (active and of each
//! snapshot), refcount table and blocks, snapshot table, compressed streams.

use std::fmt;

/// A metadata structure of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Structure {
    Header,
    Extensions,
    BackingName,
    L1,
    L2,
    RefcountTable,
    RefcountBlock,
    SnapshotTable,
    SnapshotL1,
    Compressed,
}

/// One structure's bytes in the file.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub structure: Structure,
    pub start: usize,
    pub end: usize,
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes(b.try_into().unwrap()))
}

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;

/// The layout of a pristine image, as QEMU wrote it.
pub struct Layout {
    pub regions: Vec<Region>,
    pub cluster_size: u64,
    pub file_len: u64,
}

impl Layout {
    /// Walks a valid image made by QEMU.
    pub fn of(image: &[u8]) -> Self {
        let file_len = image.len();
        let mut regions = Vec::new();
        let mut add = |structure, start: u64, len: u64| {
            let start = start as usize;
            let end = (start + len as usize).min(file_len);
            if start < end {
                regions.push(Region {
                    structure,
                    start,
                    end,
                });
            }
        };
        let version = be32(image, 4);
        let cluster_bits = be32(image, 20);
        let cluster_size = 1u64 << cluster_bits;
        let header_len = if version >= 3 {
            u64::from(be32(image, 100))
        } else {
            72
        };
        add(Structure::Header, 0, header_len);
        if version >= 3 {
            let mut at = header_len as usize;
            while at + 8 <= cluster_size as usize {
                let (kind, len) = (be32(image, at), be32(image, at + 4) as usize);
                let total = 8 + len.div_ceil(8) * 8;
                add(Structure::Extensions, at as u64, total as u64);
                if kind == 0 {
                    break;
                }
                at += total;
            }
        }
        let backing_offset = be64(image, 8);
        if backing_offset != 0 {
            add(
                Structure::BackingName,
                backing_offset,
                u64::from(be32(image, 16)),
            );
        }
        let extended = version >= 3 && be64(image, 72) & (1 << 4) != 0;
        let mut l1_tables = vec![(be64(image, 40), u64::from(be32(image, 36)))];
        let snapshots = be32(image, 60);
        let mut at = be64(image, 64) as usize;
        for _ in 0..snapshots {
            let start = at;
            let id_len = be16(image, at + 12) as usize;
            let name_len = be16(image, at + 14) as usize;
            let extra = be32(image, at + 36) as usize;
            l1_tables.push((be64(image, at), u64::from(be32(image, at + 8))));
            at += (40 + extra + id_len + name_len).div_ceil(8) * 8;
            add(Structure::SnapshotTable, start as u64, (at - start) as u64);
        }
        let mut l2_tables = Vec::new();
        for (index, &(offset, entries)) in l1_tables.iter().enumerate() {
            let structure = if index == 0 {
                Structure::L1
            } else {
                Structure::SnapshotL1
            };
            add(structure, offset, entries * 8);
            for i in 0..entries {
                let l2 = be64(image, (offset + i * 8) as usize) & OFFSET_MASK;
                if l2 != 0 && !l2_tables.contains(&l2) {
                    l2_tables.push(l2);
                }
            }
        }
        let entry_bytes = if extended { 16 } else { 8 };
        let offset_bits = 70 - cluster_bits;
        let mut streams = Vec::new();
        for &l2 in &l2_tables {
            add(Structure::L2, l2, cluster_size);
            for i in 0..cluster_size / entry_bytes {
                let entry = be64(image, (l2 + i * entry_bytes) as usize);
                if entry & COMPRESSED == 0 {
                    continue;
                }
                let offset = entry & ((1u64 << offset_bits) - 1);
                let sectors = ((entry >> offset_bits) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
                if !streams.contains(&offset) {
                    streams.push(offset);
                    // The descriptor's length is a bound; the stream may be shorter.
                    add(
                        Structure::Compressed,
                        offset,
                        sectors * 512 - (offset & 511),
                    );
                }
            }
        }
        let refcount_table = be64(image, 48);
        let refcount_clusters = u64::from(be32(image, 56));
        add(
            Structure::RefcountTable,
            refcount_table,
            refcount_clusters * cluster_size,
        );
        for i in 0..refcount_clusters * cluster_size / 8 {
            let block = be64(image, (refcount_table + i * 8) as usize) & !0x1ff;
            if block != 0 {
                add(Structure::RefcountBlock, block, cluster_size);
            }
        }
        Self {
            regions,
            cluster_size,
            file_len: file_len as u64,
        }
    }

    /// The structures present, each once.
    pub fn structures(&self) -> Vec<Structure> {
        let mut all: Vec<_> = self.regions.iter().map(|r| r.structure).collect();
        all.sort();
        all.dedup();
        all
    }
}

/// A deterministic generator (xorshift64*), so a seed names a run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What was changed, for the report.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub structure: Structure,
    pub what: String,
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.structure, self.what)
    }
}

/// 64-bit values that sit on the edges of what a reader checks.
fn chosen_u64(layout: &Layout, old: u64, rng: &mut Rng) -> u64 {
    let cluster = layout.cluster_size;
    let end = layout.file_len;
    let candidates = [
        0,
        1,
        u64::MAX,
        1 << 63,
        1 << 62,
        (1 << 63) | (1 << 62),
        OFFSET_MASK,
        1 << 56,
        1 << 55,
        end,
        end.div_ceil(cluster) * cluster,
        end.div_ceil(cluster) * cluster + cluster,
        end + 512,
        cluster,
        cluster - 1,
        512,
        old ^ 1,
        old ^ (1 << 62),
        old ^ (1 << 63),
        old.wrapping_add(cluster),
        old.wrapping_sub(cluster),
        old.wrapping_add(512),
        old.wrapping_add(1),
        old & !(1 << 63),
        old | OFFSET_MASK,
        old.wrapping_mul(2),
        rng.next(),
    ];
    *rng.pick(&candidates)
}

/// 32-bit values: counts, sizes, lengths.
fn chosen_u32(old: u32, rng: &mut Rng) -> u32 {
    let candidates = [
        0,
        1,
        2,
        7,
        8,
        9,
        16,
        31,
        32,
        63,
        64,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        u32::MAX,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_mul(2),
        old.wrapping_add(8),
        rng.next() as u32,
    ];
    *rng.pick(&candidates)
}

/// Corrupts one structure of `image` (a copy of the pristine bytes).
pub fn mutate(image: &mut [u8], layout: &Layout, rng: &mut Rng) -> Mutation {
    let structures = layout.structures();
    let structure = *rng.pick(&structures);
    let regions: Vec<&Region> = layout
        .regions
        .iter()
        .filter(|region| region.structure == structure)
        .collect();
    let region = **rng.pick(&regions);
    let len = (region.end - region.start) as u64;
    let at = region.start + rng.below(len) as usize;
    // Compressed streams get byte-level damage; tables and headers also get chosen values.
    let ops = if structure == Structure::Compressed {
        4
    } else {
        7
    };
    let what = match rng.below(ops) {
        0 => {
            let bit = rng.below(8);
            image[at] ^= 1 << bit;
            format!("flip bit {bit} of byte {at:#x}")
        }
        1 => {
            let flips = 2 + rng.below(6);
            for _ in 0..flips {
                let at = region.start + rng.below(len) as usize;
                image[at] ^= 1 << rng.below(8);
            }
            format!(
                "{flips} bit flips in {:#x}..{:#x}",
                region.start, region.end
            )
        }
        2 => {
            let value = rng.next() as u8;
            image[at] = value;
            format!("byte {at:#x} = {value:#04x}")
        }
        3 => {
            // Zero a short run (a torn write).
            let run = (1 + rng.below(64)) as usize;
            let end = (at + run).min(region.end);
            image[at..end].fill(0);
            format!("zero {at:#x}..{end:#x}")
        }
        4 | 5 => {
            let at = region.start + (rng.below(len.max(8) / 8) * 8) as usize;
            let Some(word) = image.get_mut(at..at + 8) else {
                return mutate(image, layout, rng);
            };
            let old = u64::from_be_bytes(word.try_into().unwrap());
            let value = chosen_u64(layout, old, rng);
            word.copy_from_slice(&value.to_be_bytes());
            format!("u64 at {at:#x}: {old:#x} -> {value:#x}")
        }
        _ => {
            let at = region.start + (rng.below(len.max(4) / 4) * 4) as usize;
            let Some(word) = image.get_mut(at..at + 4) else {
                return mutate(image, layout, rng);
            };
            let old = u32::from_be_bytes(word.try_into().unwrap());
            let value = chosen_u32(old, rng);
            word.copy_from_slice(&value.to_be_bytes());
            format!("u32 at {at:#x}: {old:#x} -> {value:#x}")
        }
    };
    Mutation { structure, what }
}
