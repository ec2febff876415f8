//! The follow policy of the chain opener: which backing and data files an
//! image may make it open. Images are made by `qemu-img`; whatever is read
//! is compared with QEMU's reading of the same chain.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use qcow2_reader::chain::{open_chain, Chain, ChainError, ChainOptions};
use qcow2_reader::follow::{FollowPolicy, NamedFile, Reason, Refusal};

/// A directory of images (`images/`) next to one that holds the victim's files (`private/`).
struct Tree {
    scratch: Scratch,
}

impl Tree {
    fn new() -> Self {
        let scratch = Scratch::new();
        std::fs::create_dir(scratch.path("images")).unwrap();
        std::fs::create_dir(scratch.path("private")).unwrap();
        Self { scratch }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path(name)
    }

    /// A QCOW2 image of 1 MiB, filled with `fill` unless it is 0.
    fn image(&self, name: &str, options: &str, fill: u8) -> PathBuf {
        let path = self.path(name);
        create_in(&self.path("images"), &path, options, "1M");
        if fill != 0 {
            qemu_io(&path, &[&format!("write -P {fill:#x} 0 1M")]);
        }
        path
    }

    /// An overlay of `backing` (the name as the image stores it) writing 64 KiB of 0x22.
    fn overlay(&self, name: &str, backing: &str) -> PathBuf {
        let options = format!("backing_file={backing},backing_fmt=qcow2");
        let path = self.path(name);
        create_in(&self.path("images"), &path, &options, "1M");
        qemu_io(&path, &["write -P 0x22 0 64k"]);
        path
    }

    fn symlink(&self, target: &str, name: &str) {
        std::os::unix::fs::symlink(target, self.path(name)).unwrap();
    }
}

/// QEMU's bytes of `image` read alone: `"backing": null`, no file but the image.
fn qemu_raw_alone(scratch: &Scratch, image: &Path) -> Vec<u8> {
    let spec = format!(
        r#"json:{{"driver":"qcow2","file":{{"driver":"file","filename":"{}"}},"backing":null}}"#,
        image.display()
    );
    let out = scratch.path("alone.raw");
    qemu_img(&["convert", "-O", "raw", &spec, out.to_str().unwrap()]);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

fn open(image: &Path, follow: FollowPolicy) -> Result<Chain, ChainError> {
    let options = ChainOptions {
        follow,
        ..ChainOptions::default()
    };
    open_chain(image, &options)
}

/// Opens `image` under `follow` and compares every byte with QEMU's reading of its whole chain.
fn assert_opens_like_qemu(tree: &Tree, image: &Path, follow: FollowPolicy) -> Chain {
    let chain = open(image, follow).unwrap_or_else(|error| panic!("{follow}: {error}"));
    let expected = qemu_raw(&tree.scratch, image, &[]);
    assert_same(&expected, &crate_read(&*chain.top, 1 << 16), follow.name());
    chain
}

/// Opens `image` under `follow`, which must refuse; returns the refusal.
fn refusal(image: &Path, follow: FollowPolicy) -> Refusal {
    match open(image, follow) {
        Err(ChainError::Refused(refusal)) => refusal,
        Err(other) => panic!("{follow}: expected a refusal, got: {other}"),
        Ok(_) => panic!("{follow}: {} opened", image.display()),
    }
}

/// The refusal's message names the image, the name it stores and the policy.
fn assert_names_everything(refusal: &Refusal, image: &Path, name: &str, policy: &str) {
    let message = refusal.to_string();
    assert!(message.contains(image.to_str().unwrap()), "{message}");
    assert!(message.contains(&format!("{name:?}")), "{message}");
    assert!(
        message.contains(&format!("follow policy {policy}")),
        "{message}"
    );
}

#[test]
fn any_follows_every_path_like_qemu() {
    let tree = Tree::new();
    let secret = tree.image("private/secret.qcow2", "", 0x55);
    let absolute = tree.overlay("images/absolute.qcow2", secret.to_str().unwrap());
    let dotdot = tree.overlay("images/dotdot.qcow2", "../private/secret.qcow2");
    tree.symlink("../private/secret.qcow2", "images/link.qcow2");
    let symlinked = tree.overlay("images/symlinked.qcow2", "link.qcow2");
    for image in [absolute, dotdot, symlinked] {
        let chain = assert_opens_like_qemu(&tree, &image, FollowPolicy::Any);
        assert_eq!(chain.layers.len(), 2);
    }
    assert_eq!(ChainOptions::default().follow, FollowPolicy::Any);
}

#[test]
fn same_dir_reads_chains_inside_the_directory() {
    let tree = Tree::new();
    std::fs::create_dir(tree.path("images/layers")).unwrap();
    tree.image("images/layers/base.qcow2", "", 0x11);
    let middle = tree.overlay("images/layers/middle.qcow2", "base.qcow2");
    qemu_io(&middle, &["write -P 0x33 512k 64k"]);
    let top = tree.overlay("images/top.qcow2", "layers/middle.qcow2");
    let chain = assert_opens_like_qemu(&tree, &top, FollowPolicy::SameDir);
    assert_eq!(chain.layers.len(), 3);
    // A symlink that stays inside the directory is followed.
    tree.symlink("layers/base.qcow2", "images/alias.qcow2");
    let aliased = tree.overlay("images/aliased.qcow2", "./alias.qcow2");
    let chain = assert_opens_like_qemu(&tree, &aliased, FollowPolicy::SameDir);
    assert_eq!(chain.layers.len(), 2);
}

#[test]
fn same_dir_refuses_absolute_parent_and_outward_symlink() {
    let tree = Tree::new();
    let secret = tree.image("private/secret.qcow2", "", 0x55);
    let secret_name = secret.to_str().unwrap();
    let absolute = tree.overlay("images/absolute.qcow2", secret_name);
    let refused = refusal(&absolute, FollowPolicy::SameDir);
    assert!(matches!(refused.reason, Reason::Absolute), "{refused}");
    assert_eq!(refused.kind, NamedFile::Backing);
    assert_names_everything(&refused, &absolute, secret_name, "same-dir");

    // An absolute name is refused even when it points into the directory.
    tree.image("images/base.qcow2", "", 0x11);
    let inside = tree.path("images/base.qcow2");
    let absolute_inside = tree.overlay("images/absolute-inside.qcow2", inside.to_str().unwrap());
    let refused = refusal(&absolute_inside, FollowPolicy::SameDir);
    assert!(matches!(refused.reason, Reason::Absolute), "{refused}");

    let dotdot = tree.overlay("images/dotdot.qcow2", "../private/secret.qcow2");
    let refused = refusal(&dotdot, FollowPolicy::SameDir);
    assert!(
        matches!(refused.reason, Reason::ParentComponent),
        "{refused}"
    );
    assert_names_everything(&refused, &dotdot, "../private/secret.qcow2", "same-dir");

    // A symlink in the directory leading out of it, directly or through a
    // symlinked subdirectory.
    tree.symlink("../private/secret.qcow2", "images/link.qcow2");
    tree.symlink("../private", "images/escape");
    let canonical_secret = std::fs::canonicalize(&secret).unwrap();
    for (image, name) in [
        ("images/symlinked.qcow2", "link.qcow2"),
        ("images/via-dir.qcow2", "escape/secret.qcow2"),
    ] {
        let image = tree.overlay(image, name);
        let refused = refusal(&image, FollowPolicy::SameDir);
        match &refused.reason {
            Reason::Outside { target, directory } => {
                assert_eq!(target, &canonical_secret);
                assert!(directory.ends_with("images"), "{refused}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_names_everything(&refused, &image, name, "same-dir");
        let message = refused.to_string();
        assert!(message.contains("secret.qcow2, outside"), "{message}");
    }
}

#[test]
fn same_dir_checks_every_layer_and_names_the_one_that_asks() {
    let tree = Tree::new();
    tree.image("private/secret.qcow2", "", 0x55);
    tree.symlink("../private/secret.qcow2", "images/link.qcow2");
    let middle = tree.overlay("images/middle.qcow2", "link.qcow2");
    let top = tree.overlay("images/top.qcow2", "middle.qcow2");
    let refused = refusal(&top, FollowPolicy::SameDir);
    assert_eq!(refused.image, tree.path("images/middle.qcow2"));
    assert_names_everything(&refused, &middle, "link.qcow2", "same-dir");
}

#[test]
fn same_dir_applies_to_data_files() {
    let tree = Tree::new();
    // qemu-img stores the data file name as given; relative names here.
    let images = tree.path("images");
    let image = tree.image("images/inside.qcow2", "data_file=inside.data", 0);
    let image_name = image.to_str().unwrap();
    qemu_io_in(&images, &image, &["write -P 0x44 0 128k"]);
    let chain = open(&image, FollowPolicy::SameDir).unwrap();
    let bytes = crate_read(&*chain.top, 1 << 16);
    Qemu::img()
        .args(["convert", "-O", "raw", image_name, "q.raw"])
        .dir(&images)
        .run();
    assert_same(
        &std::fs::read(images.join("q.raw")).unwrap(),
        &bytes,
        "data file",
    );
    assert!(bytes[..128 << 10].iter().all(|&b| b == 0x44));

    let private = tree.path("private/private.data");
    std::fs::write(&private, vec![0x66u8; 1 << 20]).unwrap();
    let absolute = tree.image(
        "images/absolute.qcow2",
        &format!("data_file={},data_file_raw=on", private.display()),
        0,
    );
    let refused = refusal(&absolute, FollowPolicy::SameDir);
    assert_eq!(refused.kind, NamedFile::DataFile);
    assert!(matches!(refused.reason, Reason::Absolute), "{refused}");
    assert_names_everything(&refused, &absolute, private.to_str().unwrap(), "same-dir");
    assert!(refused.to_string().contains("names the data file"));

    tree.symlink("../private/private.data", "images/link.data");
    let linked = tree.image("images/linked.qcow2", "data_file=link.data", 0);
    let refused = refusal(&linked, FollowPolicy::SameDir);
    assert!(
        matches!(refused.reason, Reason::Outside { .. }),
        "{refused}"
    );
    assert_names_everything(&refused, &linked, "link.data", "same-dir");
    // Under `any` the same image reads the private file, as QEMU would.
    let chain = open(&linked, FollowPolicy::Any).unwrap();
    assert_eq!(chain.top.size().unwrap(), 1 << 20);
}

#[test]
fn same_dir_refuses_a_missing_file_without_opening_anything() {
    let tree = Tree::new();
    tree.image("images/gone.qcow2", "", 0);
    let top = tree.overlay("images/top.qcow2", "gone.qcow2");
    std::fs::remove_file(tree.path("images/gone.qcow2")).unwrap();
    let refused = refusal(&top, FollowPolicy::SameDir);
    assert!(
        matches!(refused.reason, Reason::Unresolvable { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("cannot resolve"), "{refused}");
}

#[test]
fn none_reads_the_image_alone_like_qemu_without_backing() {
    let tree = Tree::new();
    let secret = tree.image("private/secret.qcow2", "", 0x55);
    let top = tree.overlay("images/top.qcow2", secret.to_str().unwrap());
    let chain = open(&top, FollowPolicy::None).unwrap();
    assert_eq!(chain.layers.len(), 1);
    let bytes = crate_read(&*chain.top, 1 << 16);
    assert_same(&qemu_raw_alone(&tree.scratch, &top), &bytes, "none");
    assert!(bytes[..64 << 10].iter().all(|&b| b == 0x22));
    assert!(
        bytes[64 << 10..].iter().all(|&b| b == 0),
        "backing not read"
    );
    // Even a backing file that does not exist is no obstacle.
    tree.image("images/missing.qcow2", "", 0);
    let dangling = tree.overlay("images/dangling.qcow2", "missing.qcow2");
    std::fs::remove_file(tree.path("images/missing.qcow2")).unwrap();
    assert_eq!(open(&dangling, FollowPolicy::None).unwrap().layers.len(), 1);
}

#[test]
fn none_refuses_an_image_whose_data_lives_in_a_data_file() {
    let tree = Tree::new();
    let image = tree.image("images/image.qcow2", "data_file=image.data", 0);
    let refused = refusal(&image, FollowPolicy::None);
    assert_eq!(refused.kind, NamedFile::DataFile);
    assert!(matches!(refused.reason, Reason::NothingFollowed));
    assert_names_everything(&refused, &image, "image.data", "none");
}

/// The refusal of `open`, which must refuse; panics with what it opened otherwise.
fn open_refusal(checked: qcow2_reader::follow::Checked) -> Refusal {
    match checked.open() {
        Err(ChainError::Refused(refusal)) => refusal,
        Err(other) => panic!("expected a refusal, got: {other}"),
        Ok((_, path)) => panic!("{} opened", path.display()),
    }
}

#[test]
fn same_dir_race_a_symlink_swapped_after_the_check_is_not_followed_out() {
    let tree = Tree::new();
    std::fs::write(tree.path("private/secret"), b"secret").unwrap();
    std::fs::write(tree.path("images/base"), b"base").unwrap();
    tree.symlink("base", "images/link");
    let top = tree.path("images/top.qcow2");
    let policy = FollowPolicy::SameDir;

    // Untouched between check and open: the checked file is opened.
    let checked = policy
        .check(&top, &top, NamedFile::Backing, "link")
        .unwrap();
    let (file, path) = checked.open().unwrap();
    assert_eq!(path, tree.path("images/link"));
    assert_eq!(std::io::read_to_string(file).unwrap(), "base");

    // The check passes, then the symlink is swapped to lead outside: the
    // open refuses (openat2 sees the path leave the directory; without it,
    // the file opened is not the file checked).
    let checked = policy
        .check(&top, &top, NamedFile::Backing, "link")
        .unwrap();
    std::fs::remove_file(tree.path("images/link")).unwrap();
    tree.symlink("../private/secret", "images/link");
    let refused = open_refusal(checked);
    assert!(
        matches!(
            refused.reason,
            Reason::Escapes { .. } | Reason::Changed { .. }
        ),
        "{refused}"
    );
    assert_names_everything(&refused, &top, "link", "same-dir");

    // Swapped to another file of the directory: not the file checked either.
    std::fs::write(tree.path("images/other"), b"other").unwrap();
    let checked = policy
        .check(&top, &top, NamedFile::Backing, "base")
        .unwrap();
    std::fs::rename(tree.path("images/other"), tree.path("images/base")).unwrap();
    let refused = open_refusal(checked);
    assert!(
        matches!(&refused.reason, Reason::Changed { target } if target.ends_with("images/base")),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("changed in between"),
        "{refused}"
    );
}

#[test]
fn same_dir_race_a_subdirectory_swapped_between_layers_is_not_followed_out() {
    // The top image names `sub/middle`, which names `base`: if `sub` is
    // replaced by a symlink to the private directory once `middle` is
    // open, `base` must not be taken from there, though the check against
    // `middle`'s (now private) directory alone would pass.
    let tree = Tree::new();
    std::fs::create_dir(tree.path("images/sub")).unwrap();
    std::fs::write(tree.path("images/sub/base"), b"base").unwrap();
    std::fs::write(tree.path("private/base"), b"secret").unwrap();
    let top = tree.path("images/top.qcow2");
    let middle = tree.path("images/sub/middle");
    std::fs::rename(tree.path("images/sub"), tree.path("images/old-sub")).unwrap();
    tree.symlink("../private", "images/sub");
    let checked = FollowPolicy::SameDir.check(&top, &middle, NamedFile::Backing, "base");
    match checked {
        Err(refusal) => assert!(
            matches!(refusal.reason, Reason::Outside { .. }),
            "{refusal}"
        ),
        Ok(checked) => panic!("checked: {}", checked.path().display()),
    }
    // Swapped after the check: refused at the open.
    std::fs::remove_file(tree.path("images/sub")).unwrap();
    std::fs::rename(tree.path("images/old-sub"), tree.path("images/sub")).unwrap();
    let checked = FollowPolicy::SameDir
        .check(&top, &middle, NamedFile::Backing, "base")
        .unwrap();
    std::fs::rename(tree.path("images/sub"), tree.path("images/old-sub")).unwrap();
    tree.symlink("../private", "images/sub");
    let refused = open_refusal(checked);
    assert!(
        matches!(
            refused.reason,
            Reason::Escapes { .. } | Reason::Changed { .. }
        ),
        "{refused}"
    );
}
