//! Hand-made QCOW2 images for the hostile-input tests, and QEMU as the referee.
//!
//! [`Qcow2`] lays out a small valid image (header, refcount table, L1, L2
//! tables, data) that a test then breaks in one place. [`qemu`] runs the
//! installed `qemu-img` / `qemu-io` on the same bytes, so that each test can
//! check that QEMU agrees; without QEMU those checks are skipped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Byte offsets of header fields.
pub mod field {
    pub const VERSION: usize = 4;
    pub const BACKING_FILE_OFFSET: usize = 8;
    pub const BACKING_FILE_SIZE: usize = 16;
    pub const CLUSTER_BITS: usize = 20;
    pub const SIZE: usize = 24;
    pub const L1_SIZE: usize = 36;
    pub const L1_TABLE_OFFSET: usize = 40;
    pub const REFCOUNT_TABLE_OFFSET: usize = 48;
    pub const REFCOUNT_TABLE_CLUSTERS: usize = 56;
    pub const NB_SNAPSHOTS: usize = 60;
    pub const SNAPSHOTS_OFFSET: usize = 64;
    pub const INCOMPATIBLE_FEATURES: usize = 72;
    pub const HEADER_LENGTH: usize = 100;
    pub const COMPRESSION_TYPE: usize = 104;
}

pub const COPIED: u64 = 1 << 63;
pub const COMPRESSED: u64 = 1 << 62;
pub const ZERO: u64 = 1;

/// A small image under construction: everything is placed cluster by cluster.
#[derive(Clone)]
pub struct Qcow2 {
    pub bytes: Vec<u8>,
    pub cluster_bits: u32,
    pub extended_l2: bool,
    pub l1_offset: u64,
}

impl Qcow2 {
    /// A v3 (or v2) image of `size` bytes with nothing allocated: header in
    /// cluster 0, refcount table in cluster 1 (its contents do not matter for
    /// reading), L1 table from cluster 2.
    pub fn new(version: u32, cluster_bits: u32, size: u64) -> Self {
        Self::with_features(version, cluster_bits, size, 0)
    }

    /// As [`new`](Self::new), with incompatible feature bits (bit 4 = extended L2).
    pub fn with_features(version: u32, cluster_bits: u32, size: u64, incompatible: u64) -> Self {
        let cluster = 1u64 << cluster_bits;
        let extended_l2 = incompatible & (1 << 4) != 0;
        let entry_bytes = if extended_l2 { 16 } else { 8 };
        let per_l2 = cluster * (cluster / entry_bytes);
        let l1_entries = size.div_ceil(per_l2).max(1);
        let l1_clusters = (l1_entries * 8).div_ceil(cluster);
        let mut image = Self {
            bytes: vec![0; ((2 + l1_clusters) * cluster) as usize],
            cluster_bits,
            extended_l2,
            l1_offset: 2 * cluster,
        };
        image.put_u32(0, 0x5146_49fb);
        image.put_u32(field::VERSION, version);
        image.put_u32(field::CLUSTER_BITS, cluster_bits);
        image.put_u64(field::SIZE, size);
        image.put_u32(field::L1_SIZE, l1_entries as u32);
        image.put_u64(field::L1_TABLE_OFFSET, image.l1_offset);
        image.put_u64(field::REFCOUNT_TABLE_OFFSET, cluster);
        image.put_u32(field::REFCOUNT_TABLE_CLUSTERS, 1);
        if version >= 3 {
            image.put_u64(field::INCOMPATIBLE_FEATURES, incompatible);
            image.put_u32(96, 4); // refcount_order
            image.put_u32(field::HEADER_LENGTH, 112);
            if incompatible & (1 << 3) != 0 {
                image.bytes[field::COMPRESSION_TYPE] = 1;
            }
        }
        image
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn put_u32(&mut self, at: usize, value: u32) {
        self.grow(at + 4);
        self.bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    pub fn put_u64(&mut self, at: usize, value: u64) {
        self.grow(at + 8);
        self.bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
    }

    pub fn put_bytes(&mut self, at: usize, bytes: &[u8]) {
        self.grow(at + bytes.len());
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn grow(&mut self, len: usize) {
        if self.bytes.len() < len {
            self.bytes.resize(len, 0);
        }
    }

    /// Appends a zeroed cluster at the end (cluster aligned) and returns its offset.
    pub fn append_cluster(&mut self) -> u64 {
        let cluster = self.cluster_size() as usize;
        let offset = self.bytes.len().next_multiple_of(cluster);
        self.bytes.resize(offset + cluster, 0);
        offset as u64
    }

    /// Appends `bytes` unaligned at the very end of the file and returns their offset.
    pub fn append_unaligned(&mut self, bytes: &[u8]) -> u64 {
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(bytes);
        offset
    }

    fn l2_entry_bytes(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// The L2 table for guest cluster `cluster`, allocated on first use.
    pub fn l2_table(&mut self, cluster: u64) -> u64 {
        let per_l2 = self.cluster_size() / self.l2_entry_bytes();
        let l1_index = cluster / per_l2;
        let at = (self.l1_offset + 8 * l1_index) as usize;
        let entry = u64::from_be_bytes(self.bytes[at..at + 8].try_into().unwrap());
        if entry & 0x00ff_ffff_ffff_fe00 != 0 {
            return entry & 0x00ff_ffff_ffff_fe00;
        }
        let l2 = self.append_cluster();
        self.put_u64(at, COPIED | l2);
        l2
    }

    /// Sets the L2 entry (and, with extended L2, the bitmap) of guest cluster `cluster`.
    pub fn set_l2(&mut self, cluster: u64, entry: u64, bitmap: u64) {
        let per_l2 = self.cluster_size() / self.l2_entry_bytes();
        let l2 = self.l2_table(cluster);
        let at = (l2 + (cluster % per_l2) * self.l2_entry_bytes()) as usize;
        self.put_u64(at, entry);
        if self.extended_l2 {
            self.put_u64(at + 8, bitmap);
        }
    }

    /// Sets L1 entry `index` directly.
    pub fn set_l1(&mut self, index: u64, entry: u64) {
        let at = (self.l1_offset + 8 * index) as usize;
        self.put_u64(at, entry);
    }

    /// Stores one cluster of `data` for guest cluster `cluster`; returns the host offset.
    pub fn write_cluster(&mut self, cluster: u64, data: &[u8]) -> u64 {
        assert_eq!(data.len() as u64, self.cluster_size());
        self.l2_table(cluster);
        let host = self.append_cluster();
        self.put_bytes(host as usize, data);
        let bitmap = if self.extended_l2 { 0xffff_ffff } else { 0 };
        self.set_l2(cluster, COPIED | host, bitmap);
        host
    }

    /// A compressed L2 entry for `len` bytes of stream at `host` (QEMU's
    /// descriptor: offset bits, then sectors - 1).
    pub fn compressed_entry(&self, host: u64, len: u64) -> u64 {
        let offset_bits = 70 - self.cluster_bits;
        let sectors = ((host & 511) + len).div_ceil(512);
        let max_sectors = 1u64 << (self.cluster_bits - 8);
        assert!(sectors >= 1 && sectors <= max_sectors, "stream too long");
        COMPRESSED | ((sectors - 1) << offset_bits) | host
    }

    /// Appends a compressed stream for guest cluster `cluster` at the end of the file.
    pub fn write_compressed(&mut self, cluster: u64, stream: &[u8]) -> u64 {
        self.l2_table(cluster);
        let host = self.append_unaligned(stream);
        let entry = self.compressed_entry(host, stream.len() as u64);
        self.set_l2(cluster, entry, 0);
        host
    }

    /// Writes a header extension at `at` (type, length, data, padding to 8).
    pub fn put_extension(&mut self, at: usize, kind: u32, len: u32, data: &[u8]) -> usize {
        self.put_u32(at, kind);
        self.put_u32(at + 4, len);
        self.put_bytes(at + 8, data);
        at + 8 + data.len().next_multiple_of(8)
    }

    /// Points the snapshot table at a new cluster holding `entries` (already serialized).
    pub fn set_snapshots(&mut self, count: u32, table: &[u8]) -> u64 {
        let offset = self.append_cluster();
        self.put_bytes(offset as usize, table);
        self.put_u32(field::NB_SNAPSHOTS, count);
        self.put_u64(field::SNAPSHOTS_OFFSET, offset);
        offset
    }

    pub fn finish(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

/// One snapshot table entry: `l1_table_offset`, `l1_size`, `extra_data_size`
/// (extra data zeros), id and name.
pub fn snapshot_entry(l1_offset: u64, l1_size: u32, extra: u32, id: &[u8], name: &[u8]) -> Vec<u8> {
    let mut entry = Vec::new();
    entry.extend_from_slice(&l1_offset.to_be_bytes());
    entry.extend_from_slice(&l1_size.to_be_bytes());
    entry.extend_from_slice(&(id.len() as u16).to_be_bytes());
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(&[0; 4 + 4 + 8 + 4]); // date, vm clock, vm state size
    entry.extend_from_slice(&extra.to_be_bytes());
    entry.resize(entry.len() + extra as usize, 0);
    entry.extend_from_slice(id);
    entry.extend_from_slice(name);
    entry.resize(entry.len().next_multiple_of(8), 0);
    entry
}

/// A zstd frame without a content size: `window_log` gives the window, and
/// each block is (RLE byte, count) or raw bytes.
pub fn zstd_frame(window_log: u32, blocks: &[ZstdBlock]) -> Vec<u8> {
    let mut frame = 0xfd2f_b528u32.to_le_bytes().to_vec();
    frame.push(0x00); // no content size, not single segment, no checksum, no dictionary
    frame.push(((window_log - 10) << 3) as u8);
    for (i, block) in blocks.iter().enumerate() {
        let last = u32::from(i + 1 == blocks.len());
        let (kind, size, body): (u32, usize, Vec<u8>) = match block {
            ZstdBlock::Raw(bytes) => (0, bytes.len(), bytes.clone()),
            ZstdBlock::Rle(byte, count) => (1, *count, vec![*byte]),
            ZstdBlock::Compressed(body) => (2, body.len(), body.clone()),
        };
        let header = last | (kind << 1) | ((size as u32) << 3);
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(&body);
    }
    frame
}

/// A single-segment zstd frame whose content size (= window) is `content_size`.
pub fn zstd_single_segment(content_size: u32, blocks: &[ZstdBlock]) -> Vec<u8> {
    let mut frame = zstd_frame(10, blocks);
    // Replace descriptor and window byte with: single segment, 4-byte content size.
    let mut header = vec![0xa0];
    header.extend_from_slice(&content_size.to_le_bytes());
    frame.splice(4..6, header);
    frame
}

pub enum ZstdBlock {
    Raw(Vec<u8>),
    Rle(u8, usize),
    Compressed(Vec<u8>),
}

/// A compressed zstd block body holding `count` sequences, each a match of
/// 131074 bytes (match length code 52, all 16 extra bits set) at repeat
/// offset 4, with no literals: a few bytes that claim `count` x 128 KiB.
pub fn zstd_long_matches_block(count: usize) -> Vec<u8> {
    let mut body = zstd_sequences_header(count);
    // Literal length, offset and match length codes all in RLE mode: LL 0, OF 0, ML 52.
    body.extend_from_slice(&[0x54, 0, 0, 52]);
    body.extend(std::iter::repeat_n(0xff, 2 * count));
    body.push(0x01); // end-of-stream marker bit
    body
}

/// A compressed zstd block body holding `count` sequences, each a 3-byte
/// match (the shortest) at repeat offset 4, with no literals: nine bytes
/// that claim `3 x count`.
pub fn zstd_short_matches_block(count: usize) -> Vec<u8> {
    let mut body = zstd_sequences_header(count);
    // LL, OF and ML codes all in RLE mode, all 0: no extra bits, so the bit
    // stream is only its end marker.
    body.extend_from_slice(&[0x54, 0, 0, 0, 0x01]);
    body
}

/// An empty raw literals section, then the sequence count in its 1, 2 or 3-byte form.
fn zstd_sequences_header(count: usize) -> Vec<u8> {
    let mut body = vec![0x00];
    match count {
        0..=127 => body.push(count as u8),
        128..=0x7eff => body.extend_from_slice(&[((count >> 8) + 128) as u8, count as u8]),
        _ => {
            body.push(0xff);
            body.extend_from_slice(&((count - 0x7f00) as u16).to_le_bytes());
        }
    }
    body
}

/// Raw deflate of `data` (as QEMU writes compressed clusters).
pub fn deflate(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(data, 6)
}

/// The installed QEMU, run on temporary copies of test images.
pub mod qemu {
    use super::*;
    use qcow2_testkit::Qemu;

    fn available() -> bool {
        qcow2_testkit::installed("qemu-img")
    }

    fn temp_file(bytes: &[u8]) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "qcow2-hostile-{}-{}.qcow2",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `qemu-img info`: `Some(Ok(()))` if QEMU opens the image,
    /// `Some(Err(message))` if it refuses, `None` without QEMU.
    pub fn info(bytes: &[u8]) -> Option<Result<(), String>> {
        if !available() {
            return None;
        }
        let path = temp_file(bytes);
        let out = Qemu::img()
            .args(["info", "-f", "qcow2"])
            .arg(&path)
            .output();
        std::fs::remove_file(&path).ok();
        Some(if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        })
    }

    /// `qemu-img info --backing-chain` on a file: `Some(Err(message))` if QEMU refuses.
    pub fn info_chain(path: &std::path::Path) -> Option<Result<(), String>> {
        if !available() {
            return None;
        }
        let out = Qemu::img()
            .time_limit(20)
            .args(["info", "--backing-chain"])
            .arg(path)
            .output();
        Some(if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        })
    }

    /// The whole virtual disk as `qemu-img convert -O raw` reads it
    /// (`extra` are more convert arguments, e.g. `-l snapshot`).
    pub fn convert(bytes: &[u8], extra: &[&str]) -> Option<Result<Vec<u8>, String>> {
        if !available() {
            return None;
        }
        let path = temp_file(bytes);
        let raw = path.with_extension("raw");
        let out = Qemu::img()
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .args(extra)
            .arg(&path)
            .arg(&raw)
            .output();
        std::fs::remove_file(&path).ok();
        let result = if out.status.success() {
            Ok(std::fs::read(&raw).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        };
        std::fs::remove_file(&raw).ok();
        Some(result)
    }

    /// One read through `qemu-io -r`: `Some(Ok(bytes))`, `Some(Err(message))`, or `None`.
    pub fn read(bytes: &[u8], offset: u64, len: u64) -> Option<Result<Vec<u8>, String>> {
        if !available() {
            return None;
        }
        let path = temp_file(bytes);
        let out = Qemu::io()
            .args(["-r", "-f", "qcow2", "-c"])
            .arg(format!("read -v {offset} {len}"))
            .arg(&path)
            .output();
        std::fs::remove_file(&path).ok();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("read failed") || !out.status.success() {
            return Some(Err(text));
        }
        // `read -v` dumps 16 bytes a line: "00000000:  11 22 ...  text".
        let mut data = Vec::new();
        for line in text.lines() {
            let Some((address, rest)) = line.split_once(":  ") else {
                continue;
            };
            if u64::from_str_radix(address, 16).is_err() {
                continue;
            }
            for hex in rest.split_whitespace().take(16) {
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) if hex.len() == 2 => data.push(byte),
                    _ => break,
                }
            }
        }
        Some(Ok(data))
    }
}
