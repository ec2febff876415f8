//! The follow policy (`qcow2_reader::follow`) on arbitrary names, as an
//! image would store them for its backing or data file, against a fixed
//! tree: `root/images/` (the image's directory, with a file, a subdirectory,
//! a symlink inside and symlinks leading out) next to `root/private/`.
//!
//! Checks: `any` never refuses; `none` always refuses; `same-dir` either
//! refuses, or gives a path whose canonical form is inside the image's
//! directory; a refusal's message names the image, the name and the policy.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qcow2_reader::follow::{FollowPolicy, NamedFile};

/// The tree, made once per fuzzing process.
fn tree() -> &'static (PathBuf, PathBuf) {
    static TREE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("qcow2-follow-fuzz-{}", std::process::id()));
        let images = root.join("images");
        let private = root.join("private");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::create_dir_all(&private).unwrap();
        for file in [
            images.join("base"),
            images.join("sub/base"),
            private.join("secret"),
        ] {
            std::fs::write(file, b"x").unwrap();
        }
        let links = [
            ("base", "inside"),
            ("sub/base", "deeper"),
            ("../private/secret", "out"),
            ("../private", "outdir"),
            ("/", "rootlink"),
            ("loop", "loop"),
        ];
        for (target, name) in links {
            let _ = std::os::unix::fs::symlink(target, images.join(name));
        }
        let image = images.join("top.qcow2");
        std::fs::write(&image, b"").unwrap();
        (image, std::fs::canonicalize(&images).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    // Names are read as the chain opener reads them (lossy UTF-8), at most
    // as long as QEMU allows (1023 bytes).
    if data.len() > 1023 {
        return;
    }
    let name = String::from_utf8_lossy(data);
    let (image, directory) = tree();
    let kind = if data.first().is_some_and(|b| b & 1 == 1) {
        NamedFile::DataFile
    } else {
        NamedFile::Backing
    };
    assert!(FollowPolicy::Any.resolve(image, kind, &name).is_ok());
    let refusal = FollowPolicy::None.resolve(image, kind, &name).unwrap_err();
    assert!(refusal.to_string().contains("follow policy none"));
    match FollowPolicy::SameDir.resolve(image, kind, &name) {
        Ok(path) => {
            let canonical = std::fs::canonicalize(&path).expect("an accepted name exists");
            assert!(
                canonical.starts_with(directory),
                "{name:?} accepted but leads to {}",
                canonical.display()
            );
            assert!(!Path::new(&*name).is_absolute());
        }
        Err(refusal) => {
            let message = refusal.to_string();
            assert!(message.contains(&image.display().to_string()), "{message}");
            assert!(message.contains(&format!("{:?}", &*name)), "{message}");
            assert!(message.contains("follow policy same-dir"), "{message}");
        }
    }
});
