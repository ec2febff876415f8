//! What the demo prints: the boot banner, an image's header, the
//! measurements, and the small formatters they use.

use crate::measure::{Comparison, Hashed};
use crate::{arch, print, println};
use core::fmt;
use qcow2_reader::feature::FeatureKind;
use qcow2_reader::{BlockRead, Encryption, Header};

/// Prints what the loader said about the machine and the counter.
pub fn print_boot(info: &crate::boot_info::BootInfo) {
    let (first, last) = crate::footprint();
    match info.ram_bytes {
        Some(ram) => println!("boot: {}, {} MiB RAM", info.loader, ram >> 20),
        None => println!("boot: {}", info.loader),
    }
    let placement = match info.footprint_in_ram {
        Some(true) => "inside RAM",
        Some(false) => "NOT inside RAM of the loader's map",
        None => "RAM map unknown",
    };
    println!("firmware: {first:#x}..{last:#x} ({placement})");
    match arch::counter_frequency() {
        Some((hz, source)) => println!("counter: {} kHz ({source})", hz / 1000),
        None => println!("counter: frequency unknown, throughput in ticks"),
    }
}

/// Prints the header of the image on disk `disk`; `storage` is read
/// only for the image's own feature names.
pub fn print_header<S: BlockRead>(disk: usize, header: &Header, storage: &S) {
    println!("disk {disk}: qcow2 image");
    println!("  version: {}", header.version());
    println!(
        "  virtual size: {} bytes ({})",
        header.virtual_size(),
        Size(header.virtual_size())
    );
    println!("  cluster size: {} bytes", header.cluster_size());
    println!("  compression type: {}", header.compression_type().name());
    println!("  encryption: {}", EncryptionSummary(header));
    for kind in FeatureKind::ALL {
        print!("  {} features:", kind.name());
        let mut bits = header.feature_bits(kind).peekable();
        if bits.peek().is_none() {
            print!(" none");
        }
        for bit in bits {
            print!(" [{}]", header.feature_label(storage, kind, bit));
        }
        println!();
    }
    match header.backing_file() {
        Some(name) => {
            println!("  backing file: {name}");
            match header.backing_format_name() {
                Some(format) => println!("  backing format: {format}"),
                None => println!("  backing format: not recorded (probed)"),
            }
        }
        None => println!("  backing file: none"),
    }
}

/// Prints how long unlocking the image on disk `disk` took (PBKDF2 and the
/// key material, in the guest).
pub fn print_unlock(disk: usize, ticks: u64) {
    let hz = arch::counter_frequency().map(|(hz, _)| hz);
    println!("disk {disk}: unlock: {}", Duration { ticks, hz });
}

/// Prints the hashing pass alone, for a run whose throughput comparison
/// is skipped: `read` says what the pass did (`read and decrypt`), `why`
/// why there is no comparison.
pub fn print_read_without_comparison(size: u64, hashed: &Hashed, read: &str, why: fmt::Arguments) {
    let hz = arch::counter_frequency().map(|(hz, _)| hz);
    let (heap_used, heap_size) = crate::heap::usage();
    println!(
        "memory: heap {} KiB of {} KiB in use",
        heap_used / 1024,
        heap_size / 1024
    );
    println!(
        "hashing pass: {read} {}, SHA-256 {}",
        Rate {
            bytes: size,
            ticks: hashed.read_ticks,
            hz
        },
        Duration {
            ticks: hashed.hash_ticks,
            hz
        }
    );
    println!("throughput comparison: skipped, {why}");
}

/// What [`print_measurements`] reports.
pub struct Measurements {
    /// Virtual disk size.
    pub size: u64,
    /// Bytes per read.
    pub chunk: usize,
    /// Timed passes of each kind at each depth.
    pub passes: usize,
    /// Bytes one timed pass reads (the virtual disk, repeated).
    pub pass_bytes: u64,
    /// The hashing pass.
    pub hashed: Hashed,
    /// The passes with one request in flight.
    pub depth1: Comparison,
    /// The passes at the chosen queue depth.
    pub queued: Comparison,
    /// Chunks per window of the queued passes.
    pub window_chunks: usize,
    /// Counter ticks of the check that the queued read reads what
    /// `read_at` does ([`crate::measure::verify_queued`]).
    pub verify_ticks: u64,
}

/// Prints memory use, the hashing pass and the throughput comparison.
pub fn print_measurements(m: &Measurements) {
    let hz = arch::counter_frequency().map(|(hz, _)| hz);
    let size = m.size;
    let (heap_used, heap_size) = crate::heap::usage();
    let (dma_used, dma_pages) = crate::hal::pages_used();
    println!(
        "memory: heap {} KiB of {} KiB in use, DMA pool {dma_used} of {dma_pages} pages",
        heap_used / 1024,
        heap_size / 1024
    );
    println!(
        "hashing pass: read {}, SHA-256 {}",
        Rate {
            bytes: size,
            ticks: m.hashed.read_ticks,
            hz
        },
        Duration {
            ticks: m.hashed.hash_ticks,
            hz
        }
    );
    println!(
        "queued read: same bytes as read_at over {} bytes (checked in {})",
        size,
        Duration {
            ticks: m.verify_ticks,
            hz
        }
    );
    println!(
        "throughput of {} bytes per pass from disk 0 in {} KiB reads ({} alternating passes each, best shown; queued: raw {} reads at a time, qcow2 windows of {} reads):",
        m.pass_bytes,
        m.chunk / 1024,
        m.passes,
        m.queued.depth,
        m.window_chunks
    );
    for comparison in [&m.depth1, &m.queued] {
        print_comparison(comparison, m.pass_bytes, hz);
    }
    // The median of the per-pass ratios at the chosen depth: steadier than
    // the ratio of the best passes, which one lucky pass decides.
    let hundredths = m.queued.ratios.median();
    println!(
        "  qcow2/raw throughput ratio: {}.{:02}",
        hundredths / 100,
        hundredths % 100
    );
}

/// Prints the line of one requested file: `file-sha256: N:/PATH <hex>`, then its size and time.
pub fn print_file_digest(location: &str, file: &crate::files::FileDigest) {
    let hz = arch::counter_frequency().map(|(hz, _)| hz);
    println!(
        "file-sha256: {location} {} ({} bytes, {})",
        Hex(&file.digest),
        file.bytes,
        Rate {
            bytes: file.bytes,
            ticks: file.ticks,
            hz
        }
    );
}

/// Prints one queue depth's best passes and the spread of its ratios.
fn print_comparison(c: &Comparison, bytes: u64, hz: Option<u64>) {
    println!("  queue depth {}:", c.depth);
    println!(
        "    qcow2 read: {} ({} device requests)",
        Rate {
            bytes,
            ticks: c.qcow2.ticks,
            hz
        },
        c.qcow2.requests
    );
    println!(
        "    raw read:   {} ({} device requests)",
        Rate {
            bytes,
            ticks: c.raw.ticks,
            hz
        },
        c.raw.requests
    );
    let hundredths = |value: u64| Hundredths(value);
    println!(
        "    qcow2/raw per pass: median {}, spread {} to {}",
        hundredths(c.ratios.median()),
        hundredths(c.ratios.min()),
        hundredths(c.ratios.max())
    );
}

/// A ratio kept in hundredths, printed as `1.07`.
struct Hundredths(u64);

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Prints the digest line the tests compare with `qemu-img convert`.
pub fn print_digest(hashed: &Hashed) {
    println!("virtual-disk-sha256: {}", Hex(&hashed.digest));
}

/// Lowercase hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// How an image is encrypted, as QEMU names it: `none`, `aes` (legacy,
/// crypt_method 1), or `luks (<cipher>-<mode>-<ivgen>[:<hash>], <hash>)`.
struct EncryptionSummary<'h>(&'h Header);

impl fmt::Display for EncryptionSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Encryption::of(self.0) {
            None => f.write_str("none"),
            Some(Encryption::Aes) => f.write_str("aes (legacy, aes-128-cbc)"),
            Some(Encryption::Luks(luks)) => {
                let spec = luks.spec();
                write!(
                    f,
                    "luks ({}-{}-{}",
                    spec.cipher.name(),
                    spec.mode.name(),
                    spec.ivgen.name()
                )?;
                if let Some(hash) = spec.ivgen_hash {
                    write!(f, ":{}", hash.name())?;
                }
                write!(f, ", {})", spec.hash.name())
            }
        }
    }
}

/// A byte count in binary units.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut unit = 0;
        let mut value = self.0;
        while value >= 1024 && value.is_multiple_of(1024) && unit + 1 < UNITS.len() {
            value /= 1024;
            unit += 1;
        }
        write!(f, "{value} {}", UNITS[unit])
    }
}

/// Counter ticks as milliseconds, or raw ticks without a frequency.
struct Duration {
    ticks: u64,
    hz: Option<u64>,
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hz {
            Some(hz) => {
                let micros = u128::from(self.ticks) * 1_000_000 / u128::from(hz);
                write!(f, "{}.{:03} ms", micros / 1000, micros % 1000)
            }
            None => write!(f, "{} ticks", self.ticks),
        }
    }
}

/// Bytes over ticks as MB/s (10^6 bytes per second), with the duration.
struct Rate {
    bytes: u64,
    ticks: u64,
    hz: Option<u64>,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration = Duration {
            ticks: self.ticks,
            hz: self.hz,
        };
        match self.hz {
            Some(hz) if self.ticks > 0 => {
                let rate =
                    u128::from(self.bytes) * u128::from(hz) / u128::from(self.ticks) / 1_000_000;
                write!(f, "{rate} MB/s in {duration}")
            }
            _ => write!(f, "{} bytes in {duration}", self.bytes),
        }
    }
}
