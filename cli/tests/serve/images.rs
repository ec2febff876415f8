//! The images served, made once per build directory by `qemu-img` and
//! `qemu-io`, and their raw conversions by `qemu-img`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use qcow2_testkit::{
    cached, create_in, create_luks, qemu_img, qemu_io, qemu_io_encrypted, Scratch,
};

/// Changing how images are made must not reuse old cached ones.
const CACHE_VERSION: u32 = 1;

/// The images of the tests.
pub struct Images {
    /// 64 MiB with data, partial clusters, zero clusters, a discard and a
    /// cluster of written zeros.
    pub plain: PathBuf,
    /// `plain` converted with zstd compression.
    pub compressed: PathBuf,
    /// 64 MiB over a 48 MiB base: its own data, zeros over the base's data,
    /// data past the base's end, the base showing through elsewhere.
    pub overlay: PathBuf,
    /// 32 MiB over a sparse raw base: its own data and zeros, the raw
    /// file's data and holes showing through.
    pub raw_overlay: PathBuf,
    /// LUKS (aes-256-xts), keyed by `qcow2_testkit::PASSPHRASE`.
    pub luks: PathBuf,
    /// The passphrase file of `luks` (no newline).
    pub passphrase: PathBuf,
    /// Written, snapshot `snap1` taken, written again.
    pub snapshot: PathBuf,
    references: Mutex<BTreeMap<PathBuf, Vec<u8>>>,
}

impl Images {
    /// The images, made on first use.
    pub fn get() -> &'static Images {
        static IMAGES: OnceLock<Images> = OnceLock::new();
        IMAGES.get_or_init(Images::make)
    }

    fn make() -> Images {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-v{CACHE_VERSION}"));
        let text = |path: &Path| path.to_str().expect("UTF-8 path").to_string();
        let plain = cached(&dir, "plain.qcow2", |path| {
            create_in(&dir, path, "cluster_size=65536", "64M");
            qemu_io(
                path,
                &[
                    "write -P 0x11 0 1M",
                    "write -P 0x22 3M 100k",
                    "write -z 8M 2M",
                    "write -P 0x33 20M 4M",
                    "discard 21M 1M",
                    "write -P 0 30M 64k",
                    "write -P 0x44 63M 1M",
                ],
            );
        });
        let compressed = cached(&dir, "compressed.qcow2", |path| {
            qemu_img(&[
                "convert",
                "-q",
                "-c",
                "-O",
                "qcow2",
                "-o",
                "compression_type=zstd",
                &text(&plain),
                &text(path),
            ]);
        });
        let base = cached(&dir, "base.qcow2", |path| {
            create_in(&dir, path, "", "48M");
            qemu_io(path, &["write -P 0xaa 0 16M", "write -P 0xbb 30M 8M"]);
        });
        let overlay = cached(&dir, "overlay.qcow2", |path| {
            let backing = format!("backing_file={},backing_fmt=qcow2", text(&base));
            create_in(&dir, path, &backing, "64M");
            qemu_io(
                path,
                &[
                    "write -P 0xcc 1M 1M",
                    "write -z 4M 2M",
                    "write -P 0xdd 40M 1M",
                ],
            );
        });
        let raw_base = cached(&dir, "base.raw", |path| {
            qemu_img(&["create", "-q", "-f", "raw", &text(path), "32M"]);
            let path_text = text(path);
            let args = [
                "-f",
                "raw",
                "-c",
                "write -P 0x77 1M 2M",
                "-c",
                "write -P 0x78 20M 64k",
            ];
            qcow2_testkit::run("qemu-io", &[&args[..], &[path_text.as_str()]].concat());
        });
        let raw_overlay = cached(&dir, "raw-overlay.qcow2", |path| {
            let backing = format!("backing_file={},backing_fmt=raw", text(&raw_base));
            create_in(&dir, path, &backing, "32M");
            qemu_io(path, &["write -P 0x79 2M 64k", "write -z 20M 64k"]);
        });
        let passphrase = dir.join("passphrase");
        std::fs::write(&passphrase, qcow2_testkit::PASSPHRASE).expect("passphrase file");
        let luks = cached(&dir, "luks.qcow2", |path| {
            create_luks(path, "", "16M");
            qemu_io_encrypted(path, &["write -P 0x5a 0 1M", "write -P 0xa5 5M 3M"]);
        });
        let snapshot = cached(&dir, "snapshot.qcow2", |path| {
            create_in(&dir, path, "", "16M");
            qemu_io(path, &["write -P 0x01 0 4M"]);
            qemu_img(&["snapshot", "-c", "snap1", &text(path)]);
            qemu_io(path, &["write -P 0x02 2M 4M"]);
        });
        Images {
            plain,
            compressed,
            overlay,
            raw_overlay,
            luks,
            passphrase,
            snapshot,
            references: Mutex::new(BTreeMap::new()),
        }
    }

    /// `qemu-img convert -O raw` of `image` (not for encrypted images), made once.
    pub fn reference(&self, image: &Path) -> Vec<u8> {
        let mut references = self.references.lock().unwrap_or_else(|p| p.into_inner());
        references
            .entry(image.to_path_buf())
            .or_insert_with(|| qcow2_testkit::qemu_raw(&Scratch::new(), image, &[]))
            .clone()
    }
}
