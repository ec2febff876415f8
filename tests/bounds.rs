//! The documented resource bounds hold: storage reads per request, and memory.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use qcow2_reader::crypto::UnlockLimits;
use qcow2_reader::{BlockRead, Config, Image, READS_PER_UNIT};

/// Counts the reads that reach the storage.
struct Counting<R> {
    inner: R,
    reads: AtomicU64,
}

impl<R: BlockRead> BlockRead for Counting<R> {
    type Error = R::Error;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_at(offset, buf)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        self.inner.size()
    }
}

/// qemu-io commands that alternate data, zeros, compressed clusters and
/// holes so that no run merges.
fn scattered_writes() -> Vec<String> {
    (0..64u64)
        .map(|i| {
            let offset = i * 96 * 1024;
            match i % 4 {
                0 => format!("write -P 0x{:02x} {offset} 3k", i + 1),
                1 => format!("write -z {offset} 5k"),
                2 => format!("write -c -P 0x{:02x} {} 64k", i + 1, offset & !0xffff),
                _ => format!("discard {offset} 4k"),
            }
        })
        .collect()
}

/// The smallest caches: one table slice, one decompressed cluster.
fn smallest_caches() -> Config {
    Config::default()
        .with_table_slice_bytes(512)
        .with_table_cache_bytes(512)
        .with_compressed_clusters(1)
}

/// Reads 2000 pseudo-random ranges of `opened` and checks each against
/// `expected` and its storage reads against `max_storage_reads`.
fn assert_reads_within_bound<R: BlockRead>(
    opened: &Image<'_, &Counting<R>>,
    storage: &Counting<R>,
    expected: &[u8],
    what: &str,
) where
    R::Error: core::fmt::Debug,
{
    let mut state = 7u64;
    for _ in 0..2000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = (state >> 20) % expected.len() as u64;
        let len = ((state >> 4) % 200_000)
            .min(expected.len() as u64 - offset)
            .max(1);
        let mut buf = vec![0u8; len as usize];
        let before = storage.reads.load(Ordering::Relaxed);
        opened.read_at(offset, &mut buf).unwrap();
        let reads = storage.reads.load(Ordering::Relaxed) - before;
        let bound = opened.max_storage_reads(offset, len);
        assert!(
            reads <= bound,
            "{what}: {reads} reads for {len} bytes at {offset:#x}, bound {bound}"
        );
        assert!(buf == expected[offset as usize..(offset + len) as usize]);
    }
}

#[test]
fn storage_reads_per_request_stay_within_the_documented_bound() {
    let scratch = Scratch::new();
    for options in [
        "cluster_size=4k",
        "cluster_size=64k,extended_l2=on",
        "cluster_size=512",
    ] {
        let image = scratch.path("image.qcow2");
        create(&image, options, "8M");
        let commands = scattered_writes();
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        qemu_io(&image, &commands);
        let expected = qemu_raw(&scratch, &image, &[]);
        let bytes = std::fs::read(&image).unwrap();
        let storage = Counting {
            inner: bytes.as_slice(),
            reads: AtomicU64::new(0),
        };
        let opened = Image::builder(&storage)
            .unwrap()
            .open_alloc(&smallest_caches())
            .unwrap();
        assert_reads_within_bound(&opened, &storage, &expected, options);
    }
}

/// An encrypted image reads a partial first or last sector on its own:
/// the bound counts those two reads, and unaligned reads of every kind of
/// cluster stay within it.
#[test]
fn encrypted_reads_stay_within_the_documented_bound() {
    let scratch = Scratch::new();
    for options in ["cluster_size=4k", "cluster_size=64k,extended_l2=on"] {
        let image = scratch.path("image.qcow2");
        create_luks(&image, options, "8M");
        let commands = scattered_writes();
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        qemu_io_encrypted(&image, &commands);
        let expected = qemu_raw_encrypted(&scratch, &image);
        let bytes = std::fs::read(&image).unwrap();
        let storage = Counting {
            inner: bytes.as_slice(),
            reads: AtomicU64::new(0),
        };
        let opened = Image::builder(&storage)
            .unwrap()
            .passphrase(PASSPHRASE.as_bytes(), &UnlockLimits::default())
            .unwrap()
            .open_alloc(&smallest_caches())
            .unwrap();
        // The unlock read the key material; count the data reads only.
        storage.reads.store(0, Ordering::Relaxed);
        assert_eq!(opened.max_storage_reads(1, 1), READS_PER_UNIT + 2);
        assert_reads_within_bound(&opened, &storage, &expected, options);
    }
}

#[test]
fn contiguous_clusters_are_one_read() {
    let scratch = Scratch::new();
    let image = scratch.path("image.qcow2");
    create(&image, "cluster_size=4k", "8M");
    qemu_io(&image, &["write -P 0x3c 0 4M"]);
    let bytes = std::fs::read(&image).unwrap();
    let storage = Counting {
        inner: bytes.as_slice(),
        reads: AtomicU64::new(0),
    };
    let opened = Image::builder(&storage)
        .unwrap()
        .open_alloc(&Config::default())
        .unwrap();
    // The physically contiguous runs, as the extents say.
    let mut runs = 0;
    let mut offset = 0;
    while offset < 4 << 20 {
        offset += opened.extent(offset, (4 << 20) - offset).unwrap().len;
        runs += 1;
    }
    // QEMU put the second L2 table between data clusters: two runs.
    assert!(runs <= 2, "{runs} runs");
    let mut buf = vec![0u8; 4 << 20];
    let before = storage.reads.load(Ordering::Relaxed);
    opened.read_at(0, &mut buf).unwrap();
    let reads = storage.reads.load(Ordering::Relaxed) - before;
    // The walk above cached the tables: 1024 clusters cost one read per run.
    assert_eq!(reads, runs);
    assert!(buf.iter().all(|&b| b == 0x3c));
}

/// The chain walk counts each zstd layer's decoder in its memory budget
/// (allocated at the layer's first compressed cluster, not at open), and a
/// deflate layer's as nothing (or libdeflate's tables, with
/// `deflate-c-nostd`): a budget that holds the caches alone refuses a zstd
/// chain by name, before anything is allocated.
#[test]
fn chain_budget_counts_the_zstd_decoders() {
    use qcow2_reader::chain::{walk, Files, WalkError, WalkOptions};
    use qcow2_reader::follow::FollowPolicy;
    use qcow2_reader::{decoder_memory_bytes, CompressionType};

    let scratch = Scratch::new();
    for (codec, compression) in [
        (CompressionType::Zstd, "zstd"),
        (CompressionType::Deflate, "zlib"),
    ] {
        let base = scratch.path(&format!("base-{compression}.qcow2"));
        let top = scratch.path(&format!("top-{compression}.qcow2"));
        let options = format!("cluster_size=64k,compression_type={compression}");
        create(&base, &options, "4M");
        qemu_io(&base, &["write -c -P 0x5a 0 64k"]);
        create(
            &top,
            &format!(
                "{options},backing_file={},backing_fmt=qcow2",
                base.display()
            ),
            "4M",
        );
        let bytes = std::fs::read(&top).unwrap();
        let builder = Image::builder(bytes.as_slice()).unwrap();
        let caches = builder
            .memory_bytes(&WalkOptions::default().config)
            .unwrap();
        let decoder = decoder_memory_bytes(codec, 64 << 10);
        assert_eq!(builder.decoder_bytes(), decoder, "{compression}");
        // Deflate's decoder takes memory only with libdeflate (its tables).
        let no_decoder_memory =
            codec == CompressionType::Deflate && !cfg!(feature = "deflate-c-nostd");
        assert_eq!(decoder == 0, no_decoder_memory, "{compression}");
        let layer = caches + decoder;
        let open = |max_memory: usize| {
            let mut options = WalkOptions::default();
            options.max_memory = max_memory;
            let mut files = Files::new(FollowPolicy::Any);
            let found = files.open_top(&top).unwrap();
            walk(&mut files, found, &options).map_err(Box::new)
        };

        let walked = open(2 * layer).unwrap_or_else(|_| panic!("{compression}: refused"));
        assert_eq!(walked.memory_bytes(), 2 * layer, "{compression}");
        let mut cluster = vec![0u8; 64 << 10];
        walked.disk.read_at(0, &mut cluster).unwrap();
        assert!(cluster.iter().all(|&b| b == 0x5a), "{compression}");

        match open(2 * caches + decoder) {
            Ok(_) => assert_eq!(decoder, 0, "{compression}: a chain over budget opened"),
            Err(error) => {
                assert!(decoder > 0, "{compression}: refused");
                assert!(
                    matches!(*error, WalkError::OverBudget { needed, .. } if needed == 2 * layer),
                    "{compression}: {error:?}"
                );
            }
        }
    }
}
