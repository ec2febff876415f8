//! `--follow any|same-dir|none`: every subcommand takes it, and it decides
//! which files an image may make the tool open.

mod common;

use common::*;

/// `images/top.qcow2` over `images/base.qcow2`, and `images/evil.qcow2`
/// whose backing file is a symlink in `images/` to `private/secret.qcow2`.
struct Tree {
    scratch: Scratch,
}

impl Tree {
    fn new() -> Self {
        let scratch = Scratch::new();
        std::fs::create_dir(scratch.path("images")).unwrap();
        std::fs::create_dir(scratch.path("private")).unwrap();
        let secret = scratch.create("private/secret.qcow2", "1M", "");
        qemu_io(&secret, &["write -P 0x55 0 1M"]);
        let base = scratch.create("images/base.qcow2", "1M", "");
        qemu_io(&base, &["write -P 0x11 0 1M"]);
        let top = scratch.create_on("images/top.qcow2", "base.qcow2", "qcow2");
        qemu_io(&top, &["write -P 0x22 0 64k"]);
        std::os::unix::fs::symlink("../private/secret.qcow2", scratch.path("images/link.qcow2"))
            .unwrap();
        let evil = scratch.create_on("images/evil.qcow2", "link.qcow2", "qcow2");
        qemu_io(&evil, &["write -P 0x22 0 64k"]);
        Self { scratch }
    }

    fn path(&self, name: &str) -> String {
        text(&self.scratch.path(name)).to_string()
    }
}

/// Every subcommand's arguments for `image`, with `--follow` placed at both ends.
fn every_subcommand(tree: &Tree, image: &str, follow: &str) -> Vec<Vec<String>> {
    let out = tree.path("out.raw");
    let commands: [&[&str]; 6] = [
        &["info", image],
        &["map", image],
        &["cat", image],
        &["convert", image, &out],
        &["check", image],
        &["bench", "-c", "10", image],
    ];
    commands
        .iter()
        .enumerate()
        .map(|(i, command)| {
            let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
            // After the subcommand and before it: the flag is global.
            let at = if i % 2 == 0 { 1 } else { 0 };
            args.insert(at, format!("--follow={follow}"));
            args
        })
        .collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn every_subcommand_takes_follow() {
    let tree = Tree::new();
    let top = tree.path("images/top.qcow2");
    for follow in ["any", "same-dir", "none"] {
        for args in every_subcommand(&tree, &top, follow) {
            qcow_ok(&strs(&args));
        }
    }
    let help = String::from_utf8(qcow_ok(&["cat", "--help"])).unwrap();
    assert!(
        help.contains("--follow") && help.contains("same-dir"),
        "{help}"
    );
    let output = qcow(&["cat", "--follow", "sideways", &top]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a bad value is a usage error"
    );
}

#[test]
fn same_dir_refuses_a_symlink_out_in_every_subcommand_that_reads() {
    let tree = Tree::new();
    let evil = tree.path("images/evil.qcow2");
    let mut refused = 0;
    for args in every_subcommand(&tree, &evil, "same-dir") {
        let output = qcow(&strs(&args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        // The image is named once, at the start.
        assert!(
            stderr.starts_with(&format!(
                "qcow: {evil}: names the backing file \"link.qcow2\""
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains("names the backing file \"link.qcow2\"")
                && stderr.contains("follow policy same-dir")
                && stderr.contains("secret.qcow2, outside"),
            "{args:?}: {stderr}"
        );
        refused += 1;
    }
    // check too: like `qemu-img check` it opens the chain first.
    assert_eq!(refused, 6);
    assert!(
        !tree.scratch.path("out.raw").exists(),
        "convert wrote nothing"
    );
}

#[test]
fn cat_reads_what_qemu_reads_under_each_policy() {
    let tree = Tree::new();
    let top = tree.scratch.path("images/top.qcow2");
    let evil = tree.scratch.path("images/evil.qcow2");
    // any and same-dir read the whole chain, as QEMU does.
    let chain = qemu_raw(&tree.scratch, &top, &[]);
    for follow in ["any", "same-dir"] {
        assert_eq!(qcow_ok(&["cat", "--follow", follow, text(&top)]), chain);
    }
    // any follows the symlink out, as QEMU does.
    assert_eq!(
        qcow_ok(&["cat", text(&evil)]),
        qemu_raw(&tree.scratch, &evil, &[]),
        "default"
    );
    // none reads the image alone, as QEMU with `"backing": null`.
    let alone = tree.scratch.path("alone.raw");
    let spec = format!(
        r#"json:{{"driver":"qcow2","file":{{"driver":"file","filename":"{}"}},"backing":null}}"#,
        text(&evil)
    );
    qemu_img(&["convert", "-O", "raw", &spec, text(&alone)]);
    let bytes = qcow_ok(&["cat", "--follow", "none", text(&evil)]);
    assert_eq!(bytes, std::fs::read(&alone).unwrap());
    assert!(!bytes.contains(&0x55), "the secret is not read");
}

#[test]
fn info_under_none_lists_the_image_alone() {
    let tree = Tree::new();
    let top = tree.path("images/top.qcow2");
    let json = |follow: &str| -> serde_json::Value {
        let out = qcow_ok(&["info", "--json", "--follow", follow, &top]);
        serde_json::from_slice(&out).unwrap()
    };
    assert_eq!(json("any").as_array().unwrap().len(), 2);
    let alone = json("none");
    let alone = alone.as_array().unwrap();
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0]["backing-filename"], "base.qcow2");
}
