//! Structure-aware: an `arbitrary` description of an image (version, cluster
//! size, extended L2, codec, one entry per guest cluster: data, zero,
//! unallocated, deflate or zstd payloads, subcluster bitmaps, raw entries;
//! optionally a few raw header patches and a truncation) is serialized to a
//! valid-looking image, then read in full and in pieces.
//!
//! Besides "no panic" and the bounds of `check_read`, a model says what each
//! well-formed cluster must read as: a read that succeeds must return it, and
//! a read that touches only well-formed clusters must succeed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use qcow2_reader::Image;
use qcow2_reader_fuzz::{check_read, config_from, geometry, BackingKind, Role, Strict};

const MAX_CLUSTERS: usize = 40;

#[derive(Arbitrary, Debug)]
struct Description {
    version2: bool,
    cluster_choice: u8,
    extended_l2: bool,
    zstd: bool,
    clusters: Vec<Cluster>,
    /// Raw header patches: (byte offset in 0..112, value written as u32 or u64).
    patches: Vec<(u8, bool, u64)>,
    truncate: Option<u16>,
    config: u8,
    reads: Vec<(u16, u16)>,
}

#[derive(Arbitrary, Debug)]
enum Cluster {
    Unallocated,
    Zero,
    Data(u8),
    /// Deflate (or, in zstd images, hand-made frames) of `len_factor` clusters of data.
    Compressed {
        seed: u8,
        long: bool,
        corrupt: Option<(u16, u8)>,
    },
    /// zstd frames of RLE/raw blocks, only in zstd images.
    Frames {
        window_log: u8,
        single_segment: bool,
        blocks: Vec<(bool, u8, u16)>,
    },
    /// Extended L2 only: per-subcluster allocated and zero bits.
    Subclusters {
        seed: u8,
        allocated: u32,
        zero: u32,
    },
    Raw {
        entry: u64,
        bitmap: u64,
    },
}

/// What a guest cluster must read as, if the model knows.
#[derive(Clone)]
enum Expect {
    Bytes(Vec<u8>),
    MayFail,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

thread_local! {
    /// Deflated patterns by (length, seed): compressing them again for every
    /// input took most of this target's time. At most 14 lengths (7 cluster
    /// sizes, one or three clusters) x 256 seeds.
    static DEFLATED: std::cell::RefCell<std::collections::HashMap<(usize, u8), Vec<u8>>> =
        Default::default();
}

/// `pattern(len, seed)` deflated (level 1).
fn deflated_pattern(len: usize, seed: u8) -> Vec<u8> {
    DEFLATED.with_borrow_mut(|cache| {
        cache
            .entry((len, seed))
            .or_insert_with(|| miniz_oxide::deflate::compress_to_vec(&pattern(len, seed), 1))
            .clone()
    })
}

struct Writer {
    bytes: Vec<u8>,
    cluster: usize,
}

impl Writer {
    fn put(&mut self, at: usize, data: &[u8]) {
        if self.bytes.len() < at + data.len() {
            self.bytes.resize(at + data.len(), 0);
        }
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }

    /// Appends a compressed stream where the file ends (unaligned, as QEMU
    /// packs them): the L2 entry describing it, and whether its sector count
    /// fits the descriptor (else the entry claims fewer sectors).
    fn append_compressed(&mut self, stream: &[u8], cluster_bits: u32) -> (u64, bool) {
        let host = self.bytes.len();
        let sectors = ((host & 511) + stream.len()).div_ceil(512).max(1);
        let max_sectors = 1usize << (cluster_bits - 8);
        self.put(host, stream);
        let entry = (1 << 62)
            | (((sectors.min(max_sectors) - 1) as u64) << (70 - cluster_bits))
            | host as u64;
        (entry, sectors <= max_sectors)
    }

    fn append_cluster(&mut self) -> usize {
        let at = self.bytes.len().next_multiple_of(self.cluster);
        self.bytes.resize(at + self.cluster, 0);
        at
    }
}

/// A frame of RLE and raw blocks: the frame, its content, and its largest block.
fn zstd_frames(
    window_log: u8,
    single_segment: bool,
    blocks: &[(bool, u8, u16)],
) -> (Vec<u8>, Vec<u8>, usize) {
    let mut content = Vec::new();
    let mut largest_block = 0;
    let mut frame = 0xfd2f_b528u32.to_le_bytes().to_vec();
    let mut body = Vec::new();
    for (i, &(rle, byte, len)) in blocks.iter().take(24).enumerate() {
        let len = usize::from(len) % (128 << 10);
        largest_block = largest_block.max(len);
        let last = u32::from(i + 1 == blocks.len().min(24));
        let header = last | u32::from(rle) << 1 | (len as u32) << 3;
        body.extend_from_slice(&header.to_le_bytes()[..3]);
        if rle {
            body.push(byte);
            content.extend(std::iter::repeat_n(byte, len));
        } else {
            let raw = pattern(len, byte);
            body.extend_from_slice(&raw);
            content.extend(raw);
        }
    }
    if single_segment {
        frame.push(0xa0);
        frame.extend_from_slice(&(content.len() as u32).to_le_bytes());
    } else {
        frame.push(0);
        frame.push((window_log % 32) << 3);
    }
    frame.extend(body);
    (frame, content, largest_block)
}

fuzz_target!(|description: Description| {
    let Description {
        version2,
        cluster_choice,
        extended_l2,
        zstd,
        clusters,
        patches,
        truncate,
        config,
        reads,
    } = description;
    let extended_l2 = extended_l2 && !version2;
    let zstd = zstd && !version2;
    let cluster_bits = if extended_l2 {
        14 + u32::from(cluster_choice % 2)
    } else {
        9 + u32::from(cluster_choice % 5)
    };
    let cluster = 1usize << cluster_bits;
    let count = clusters.len().clamp(1, MAX_CLUSTERS);
    let size = (count * cluster) as u64;
    let entry_bytes = if extended_l2 { 16 } else { 8 };
    let per_l2 = cluster / entry_bytes;
    let l1_entries = count.div_ceil(per_l2);

    let mut out = Writer {
        bytes: vec![0; 3 * cluster],
        cluster,
    };
    let be32 = |v: u32| v.to_be_bytes();
    let be64 = |v: u64| v.to_be_bytes();
    out.put(0, &be32(0x5146_49fb));
    out.put(4, &be32(if version2 { 2 } else { 3 }));
    out.put(20, &be32(cluster_bits));
    out.put(24, &be64(size));
    out.put(36, &be32(l1_entries as u32));
    out.put(40, &be64(2 * cluster as u64));
    out.put(48, &be64(cluster as u64));
    out.put(56, &be32(1));
    if !version2 {
        let features = (u64::from(zstd) << 3) | (u64::from(extended_l2) << 4);
        out.put(72, &be64(features));
        out.put(96, &be32(4));
        out.put(100, &be32(112));
        out.put(104, &[u8::from(zstd)]);
    }
    // L2 tables right after the L1 table.
    let mut l2_tables = Vec::new();
    for l1_index in 0..l1_entries {
        let l2 = out.append_cluster();
        out.put(2 * cluster + 8 * l1_index, &be64((1 << 63) | l2 as u64));
        l2_tables.push(l2);
    }
    let sub = cluster / 32;
    let mut expect = Vec::new();
    for (guest, description) in clusters.iter().take(count).enumerate() {
        let at = l2_tables[guest / per_l2] + (guest % per_l2) * entry_bytes;
        let mut entry = 0u64;
        let mut bitmap = 0u64;
        let expected = match description {
            Cluster::Unallocated => Expect::Bytes(vec![0; cluster]),
            Cluster::Zero if extended_l2 => {
                bitmap = 0xffff_ffff << 32;
                Expect::Bytes(vec![0; cluster])
            }
            Cluster::Zero => {
                entry = 1;
                if version2 {
                    Expect::MayFail
                } else {
                    Expect::Bytes(vec![0; cluster])
                }
            }
            Cluster::Data(seed) => {
                let host = out.append_cluster();
                let data = pattern(cluster, *seed);
                out.put(host, &data);
                entry = (1 << 63) | host as u64;
                bitmap = 0xffff_ffff;
                Expect::Bytes(data)
            }
            Cluster::Subclusters {
                seed,
                allocated,
                zero,
            } => {
                let host = out.append_cluster();
                let data = pattern(cluster, *seed);
                out.put(host, &data);
                entry = (1 << 63) | host as u64;
                bitmap = u64::from(*allocated) | (u64::from(*zero) << 32);
                if !extended_l2 || allocated & zero != 0 {
                    Expect::MayFail
                } else {
                    let mut bytes = vec![0; cluster];
                    for i in 0..32 {
                        if zero >> i & 1 == 0 && allocated >> i & 1 != 0 {
                            bytes[i * sub..(i + 1) * sub]
                                .copy_from_slice(&data[i * sub..(i + 1) * sub]);
                        }
                    }
                    Expect::Bytes(bytes)
                }
            }
            Cluster::Compressed {
                seed,
                long,
                corrupt,
            } => {
                let data = pattern(if *long { 3 * cluster } else { cluster }, *seed);
                let (mut stream, expected) = if zstd {
                    // Whole-cluster frames only: a longer one is refused.
                    let blocks: Vec<_> = data[..cluster]
                        .chunks(128 << 10)
                        .map(|chunk| (false, *seed, chunk.len() as u16))
                        .collect();
                    let (frame, content, _) = zstd_frames(0, true, &blocks);
                    (frame, content)
                } else {
                    // Longer deflate streams are cut at the cluster, as in QEMU.
                    (
                        deflated_pattern(data.len(), *seed),
                        data[..cluster].to_vec(),
                    )
                };
                if let Some((at, xor)) = corrupt {
                    if !stream.is_empty() && *xor != 0 {
                        let at = usize::from(*at) % stream.len();
                        stream[at] ^= xor;
                    }
                }
                let fits;
                (entry, fits) = out.append_compressed(&stream, cluster_bits);
                if corrupt.is_some_and(|(_, xor)| xor != 0) || !fits || expected.len() != cluster {
                    Expect::MayFail
                } else {
                    Expect::Bytes(expected)
                }
            }
            Cluster::Frames {
                window_log,
                single_segment,
                blocks,
            } => {
                let (stream, content, largest_block) =
                    zstd_frames(*window_log, *single_segment, blocks);
                let fits;
                (entry, fits) = out.append_compressed(&stream, cluster_bits);
                let window = if *single_segment {
                    content.len()
                } else {
                    1usize << (10 + window_log % 32)
                };
                // A block may not exceed the window (RFC 8878 Block_Maximum_Size;
                // libzstd, and so QEMU, refuse it).
                if zstd
                    && fits
                    && content.len() == cluster
                    && window <= cluster
                    && largest_block <= window
                {
                    Expect::Bytes(content)
                } else {
                    Expect::MayFail
                }
            }
            Cluster::Raw {
                entry: raw,
                bitmap: raw_bitmap,
            } => {
                entry = *raw;
                bitmap = *raw_bitmap;
                Expect::MayFail
            }
        };
        out.put(at, &be64(entry));
        if extended_l2 {
            out.put(at + 8, &be64(bitmap));
        }
        expect.push(expected);
    }

    // Guest clusters the description leaves out are unallocated.
    expect.resize(count, Expect::Bytes(vec![0; cluster]));
    let mut model = true;
    for &(at, wide, value) in patches.iter().take(3) {
        let at = usize::from(at) % 112;
        if wide {
            out.put(at, &be64(value));
        } else {
            out.put(at, &be32(value as u32));
        }
        model = false;
    }
    if let Some(len) = truncate {
        let len = usize::from(len) * 16;
        if len < out.bytes.len() {
            out.bytes.truncate(len);
            model = false;
        }
    }

    let bytes = out.bytes;
    let storage = Strict(&bytes, Role::Top);
    let builder = match Image::builder(storage) {
        Ok(builder) => builder,
        Err(error) => {
            assert!(!model, "a well-formed image is refused: {error}");
            return;
        }
    };
    let mut config = config_from(config);
    config.compressed_clusters = config.compressed_clusters.max(1);
    let header = builder.header().clone();
    let Ok(image) = builder.open_alloc(&config) else {
        assert!(!model, "a well-formed image does not open");
        return;
    };
    let geometry = geometry(&header, &config, u64::from(header.l1_entries()));
    let mut ranges = vec![(0u64, size as usize)];
    for &(offset, len) in reads.iter().take(6) {
        ranges.push((u64::from(offset) * 7 % size, usize::from(len) * 3));
    }
    for &(offset, len) in &ranges {
        check_read(&image, geometry, BackingKind::None, offset, len);
        if !model {
            continue;
        }
        let len = len.min((size - offset) as usize);
        let mut buf = vec![0u8; len];
        let first = offset as usize / cluster;
        let last = (offset as usize + len.max(1) - 1) / cluster;
        let touched = &expect[first..=last.min(count - 1)];
        match image.read_at(offset, &mut buf) {
            Ok(()) => {
                for (i, &byte) in buf.iter().enumerate() {
                    let at = offset as usize + i;
                    if let Expect::Bytes(expected) = &expect[at / cluster] {
                        assert_eq!(byte, expected[at % cluster], "byte {at:#x}");
                    }
                }
            }
            Err(error) => assert!(
                touched.iter().any(|e| matches!(e, Expect::MayFail)),
                "read of well-formed clusters at {offset:#x} failed: {error}"
            ),
        }
    }
});
