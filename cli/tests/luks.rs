//! `qcow` on encrypted images made by `qemu-img`: `convert` and `cat` with
//! `--passphrase-file` against QEMU's decryption with the same file, a
//! wrong passphrase and a missing one refused by name, `info` showing the
//! encryption fields as `qemu-img info` does without a key; `parts`, `ls`
//! and `get` of a GPT disk re-encrypted by `qemu-img convert` giving what
//! they give for the plain disk.
//!
//! Each LUKS image costs `qemu-img create` a PBKDF2 calibration: five
//! images (aes-256-xts, aes-128-cbc-essiv, legacy AES, a plain overlay over
//! the first, the encrypted GPT disk), made once per build directory under
//! `CARGO_TARGET_TMPDIR` and shared by the tests.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

/// The passphrase, as the file holds it (no newline).
const PASSPHRASE: &str = "secret pass 18";
/// Changing how images are made must not reuse old cached ones.
const CACHE_VERSION: u32 = 1;

/// The images, the passphrase files and QEMU's decryption of each image.
struct Images {
    dir: PathBuf,
    xts: PathBuf,
    cbc_essiv: PathBuf,
    aes: PathBuf,
    overlay: PathBuf,
}

impl Images {
    fn get() -> &'static Images {
        static IMAGES: OnceLock<Images> = OnceLock::new();
        IMAGES.get_or_init(Images::make)
    }

    fn make() -> Images {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-luks-v{CACHE_VERSION}"));
        std::fs::create_dir_all(&dir).expect("cache directory");
        std::fs::write(dir.join("pass"), PASSPHRASE).expect("passphrase file");
        std::fs::write(dir.join("pass-newline"), format!("{PASSPHRASE}\n")).expect("file");
        std::fs::write(dir.join("wrong"), "not the passphrase").expect("file");
        let images = Images {
            xts: dir.join("xts.qcow2"),
            cbc_essiv: dir.join("cbc-essiv.qcow2"),
            aes: dir.join("aes.qcow2"),
            overlay: dir.join("overlay.qcow2"),
            dir,
        };
        images.create(&images.xts, LUKS);
        let essiv = format!(
            "{LUKS},encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256"
        );
        images.create(&images.cbc_essiv, &essiv);
        images.create(&images.aes, "encrypt.format=aes");
        if !images.overlay.exists() {
            let partial = images.dir.join("overlay.partial");
            Create::new(&partial)
                .unsafe_backing()
                .backing(text(&images.xts), "qcow2")
                .size("8M")
                .run();
            images.write(&partial, 1, &["write -P 0x77 1M 64k"]);
            std::fs::rename(&partial, &images.overlay).expect("rename");
        }
        images
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn secret(&self) -> QemuSecret {
        QemuSecret::File(self.file("pass"))
    }

    /// An encrypted image made by `qemu-img create -o options` (keyed by
    /// the passphrase file), with data
    /// written by `qemu-io`: whole clusters, one compressed (stored in the
    /// clear), and partial ones at odd sectors.
    fn create(&self, path: &Path, options: &str) {
        if path.exists() {
            return;
        }
        let partial = path.with_extension("partial");
        Create::new(&partial)
            .secret(&self.secret())
            .options(options)
            .size("8M")
            .run();
        self.write(
            &partial,
            0,
            &[
                "write -P 0x11 0 128k",
                "write -c -P 0x22 256k 64k",
                "write -P 0x33 1049088 3k",
                "write -P 0x44 7M 512",
            ],
        );
        std::fs::rename(&partial, path).expect("rename");
    }

    /// `qemu-io` writes through `--image-opts`, the key given to the
    /// layer `keyed` (0 the image, 1 its backing file).
    fn write(&self, path: &Path, keyed: usize, commands: &[&str]) {
        qemu_io_keyed(
            &self.secret(),
            &image_opts("qcow2", path, &[keyed]),
            commands,
        );
    }

    /// What `qemu-img convert` decrypts from `image` with the passphrase
    /// file (every encrypted layer given the same secret).
    fn qemu_decrypted(&self, image: &Path) -> Vec<u8> {
        let out = self.dir.join(format!(
            "{}.qemu-{}.raw",
            image.file_name().unwrap().to_str().unwrap(),
            std::process::id()
        ));
        let keyed = if image == self.overlay { 1 } else { 0 };
        let opts = image_opts("qcow2", image, &[keyed]);
        let object = self.secret().object();
        convert_raw(&["--object", &object, "--image-opts", &opts], &out)
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn convert_and_cat_decrypt_like_qemu_with_the_same_file() {
    let images = Images::get();
    let pass = images.file("pass");
    for image in [&images.xts, &images.cbc_essiv, &images.aes, &images.overlay] {
        let expected = images.qemu_decrypted(image);
        assert_eq!(expected[0], 0x11, "{image:?}: QEMU read the data");
        assert_eq!(expected[7 << 20], 0x44, "{image:?}");
        let out = images.dir.join(format!("ours-{}.raw", std::process::id()));
        qcow_ok(&[
            "convert",
            "--passphrase-file",
            text(&pass),
            text(image),
            text(&out),
        ]);
        let converted = std::fs::read(&out).expect("converted");
        std::fs::remove_file(&out).expect("remove");
        assert!(
            converted == expected,
            "qcow convert of {image:?} differs from qemu-img's"
        );
        let catted = qcow_ok(&["cat", "--passphrase-file", text(&pass), text(image)]);
        assert!(
            catted == expected,
            "qcow cat of {image:?} differs from qemu-img's"
        );
        let part = qcow_ok(&[
            "cat",
            "--passphrase-file",
            text(&pass),
            "--offset",
            "1049000",
            "--length",
            "5000",
            text(image),
        ]);
        assert_eq!(
            part,
            expected[1049000..1054000],
            "{image:?}: cat of a range"
        );
    }
    assert_eq!(
        images.qemu_decrypted(&images.overlay)[1 << 20],
        0x77,
        "the overlay's own data"
    );
}

#[test]
fn a_wrong_passphrase_file_is_refused_as_wrong() {
    let images = Images::get();
    for image in [&images.xts, &images.cbc_essiv, &images.overlay] {
        let output = qcow(&[
            "convert",
            "--passphrase-file",
            text(&images.file("wrong")),
            text(image),
            "/dev/null",
        ]);
        assert!(!output.status.success(), "{image:?}");
        let message = stderr(&output);
        assert!(
            message.contains("invalid passphrase"),
            "{image:?}: {message}"
        );
        assert!(!message.contains("ends with a newline"), "{message}");
    }
    // The file's bytes are the passphrase, newline included, as for QEMU:
    // both refuse the file with a newline, and qcow says why it may be.
    let newline = images.file("pass-newline");
    let output = qcow(&[
        "cat",
        "--passphrase-file",
        text(&newline),
        text(&images.xts),
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("invalid passphrase"), "{message}");
    assert!(message.contains("ends with a newline"), "{message}");
    let qemu = Qemu::img()
        .arg("convert")
        .secret(&QemuSecret::File(newline))
        .arg("--image-opts")
        .arg(encrypted_image_opts(&images.xts))
        .args(["-O", "raw", "/dev/null"])
        .output();
    assert!(!qemu.status.success());
    assert!(
        stderr(&qemu).contains("Invalid password"),
        "{}",
        stderr(&qemu)
    );
}

#[test]
fn no_passphrase_and_no_terminal_is_refused_by_name() {
    let images = Images::get();
    // `qcow` runs with standard input from /dev/null (common::qcow).
    for command in ["cat", "map", "parts", "bench"] {
        let output = qcow(&[command, text(&images.xts)]);
        assert!(!output.status.success(), "{command}");
        let message = stderr(&output);
        assert!(message.contains("NeedsKey"), "{command}: {message}");
        assert!(
            message.contains("--passphrase-file"),
            "{command}: {message}"
        );
        assert!(message.contains("LUKS"), "{command}: {message}");
    }
    let output = qcow(&["cat", text(&images.aes)]);
    assert!(
        stderr(&output).contains("AES-128-CBC"),
        "{}",
        stderr(&output)
    );
    // A plain overlay over an encrypted base: the base is named.
    let output = qcow(&["convert", text(&images.overlay), "/dev/null"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("NeedsKey"), "{message}");
    assert!(message.contains("backing image 1"), "{message}");
    assert!(message.contains(text(&images.xts)), "{message}");
}

#[test]
fn the_iteration_limit_refuses_before_unlocking() {
    let images = Images::get();
    let output = qcow(&[
        "cat",
        "--passphrase-file",
        text(&images.file("pass")),
        "--iteration-limit",
        "100",
        text(&images.xts),
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("beyond the limit of 100"), "{message}");
}

#[test]
fn map_and_check_read_encrypted_metadata() {
    let images = Images::get();
    let pass = images.file("pass");
    // A plain overlay's runs from the encrypted base have no offsets either.
    for (image, keyed) in [(&images.xts, 0), (&images.overlay, 1)] {
        let ours = qcow_ok(&[
            "map",
            "--json",
            "--passphrase-file",
            text(&pass),
            text(image),
        ]);
        let opts = image_opts("qcow2", image, &[keyed]);
        let qemu = qemu_img(&[
            "map",
            "--output=json",
            "--object",
            &images.secret().object(),
            "--image-opts",
            &opts,
        ]);
        let ours: Value = serde_json::from_slice(&ours).expect("JSON");
        let qemu: Value = serde_json::from_slice(&qemu).expect("JSON");
        assert_eq!(
            ours, qemu,
            "qcow map --json against qemu-img map of {image:?}"
        );
    }
    // check reads metadata only: no passphrase needed, the LUKS area counted.
    let checked = qcow(&["check", text(&images.xts)]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("No errors were found"));
}

/// `qemu-img info` of `image`, JSON or text: it needs no key.
fn qemu_info(image: &Path, json: bool) -> Vec<u8> {
    let mut args = vec!["info"];
    if json {
        args.push("--output=json");
    }
    args.push(text(image));
    qemu_img(&args)
}

#[test]
fn info_shows_the_encryption_like_qemu_without_a_key() {
    let images = Images::get();
    for (image, format) in [
        (&images.xts, "luks"),
        (&images.cbc_essiv, "luks"),
        (&images.aes, "aes"),
    ] {
        let ours: Value = serde_json::from_slice(&qcow_ok(&[
            "info",
            "--json",
            "--no-backing-chain",
            text(image),
        ]))
        .expect("JSON");
        let qemu: Value = serde_json::from_slice(&qemu_info(image, true)).expect("JSON");
        assert_eq!(qemu["encrypted"], Value::Bool(true));
        assert_eq!(ours["encrypted"], qemu["encrypted"], "{image:?}");
        let encrypt = &qemu["format-specific"]["data"]["encrypt"];
        assert_eq!(encrypt["format"], format, "{image:?}");
        assert_eq!(
            &ours["format-specific"]["data"]["encrypt"], encrypt,
            "{image:?}"
        );
        // The text is qemu-img's, then the feature names qcow adds.
        let ours =
            String::from_utf8(qcow_ok(&["info", "--no-backing-chain", text(image)])).unwrap();
        let qemu = String::from_utf8(qemu_info(image, false)).unwrap();
        assert!(qemu.contains("encrypted: yes\n"), "{qemu}");
        assert!(
            ours.starts_with(&qemu),
            "{image:?}:\nours:\n{ours}\nqemu:\n{qemu}"
        );
    }
    let essiv: Value = serde_json::from_slice(&qemu_info(&images.cbc_essiv, true)).unwrap();
    let encrypt = &essiv["format-specific"]["data"]["encrypt"];
    assert_eq!(encrypt["cipher-mode"], "cbc");
    assert_eq!(encrypt["ivgen-hash-alg"], "sha256");
    assert_eq!(encrypt["slots"][0]["active"], true);
    // The chain of the overlay lists the encrypted base, still without a key.
    let ours: Value =
        serde_json::from_slice(&qcow_ok(&["info", "--json", text(&images.overlay)])).expect("JSON");
    assert_eq!(ours.as_array().map(Vec::len), Some(2));
    assert!(ours[0].get("encrypted").is_none());
    assert_eq!(ours[1]["encrypted"], true);
    assert_eq!(
        ours[1]["format-specific"]["data"]["encrypt"]["format"],
        "luks"
    );
}

/// Runs `qcow ARGS` on a pseudo-terminal made by util-linux's `script`,
/// typing `typed` into it; standard output goes to `out`.
fn qcow_on_terminal(args: &str, out: &Path, typed: &str) -> std::process::Output {
    use std::io::Write;
    let command = format!("{} {args} > {}", env!("CARGO_BIN_EXE_qcow"), text(out));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run script (install util-linux: apt-get install -y util-linux)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(typed.as_bytes()).expect("type");
    drop(stdin);
    child.wait_with_output().expect("script")
}

#[test]
fn a_terminal_prompts_for_the_passphrase() {
    let images = Images::get();
    let out = images
        .dir
        .join(format!("prompted-{}.raw", std::process::id()));
    let image = text(&images.cbc_essiv);
    let output = qcow_on_terminal(&format!("cat {image}"), &out, &format!("{PASSPHRASE}\n"));
    let terminal = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{terminal}");
    assert!(
        terminal.contains(&format!("Passphrase for {image}: ")),
        "{terminal}"
    );
    let catted = std::fs::read(&out).expect("output");
    assert!(
        catted == images.qemu_decrypted(&images.cbc_essiv),
        "prompted cat differs"
    );
    // A wrong typed passphrase is refused like a wrong file.
    let output = qcow_on_terminal(&format!("cat {image}"), &out, "wrong\n");
    std::fs::remove_file(&out).expect("remove");
    let terminal = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "{terminal}");
    assert!(terminal.contains("invalid passphrase"), "{terminal}");
}

#[test]
fn files_inside_an_encrypted_disk_read_like_the_plain_disk() {
    let images = Images::get();
    let disks = qcow2_testkit::made_disks();
    let plain = disks.join("gpt-base.qcow2");
    // The GPT disk (FAT32 + ext4) re-encrypted by qemu-img with LUKS.
    let encrypted = images.dir.join("gpt-luks.qcow2");
    if !encrypted.exists() {
        let partial = images.dir.join("gpt-luks.partial");
        Qemu::img()
            .args(["convert", "-O", "qcow2"])
            .secret(&images.secret())
            .arg("-o")
            .arg(format!("{LUKS},encrypt.key-secret={SECRET_ID}"))
            .args([&plain, &partial])
            .run();
        std::fs::rename(&partial, &encrypted).expect("rename");
    }
    let pass = images.file("pass");
    // `ARGS` with IMAGE replaced, and the passphrase file after the subcommand if given.
    let run = |args: &[&str], image: &Path, key: Option<&Path>| -> Vec<u8> {
        let mut all: Vec<&str> = args
            .iter()
            .map(|arg| if *arg == "IMAGE" { text(image) } else { arg })
            .collect();
        if let Some(key) = key {
            all.splice(1..1, ["--passphrase-file", text(key)]);
        }
        qcow_ok(&all)
    };
    for args in [
        &["parts", "--json", "IMAGE"][..],
        &["ls", "-R", "--json", "IMAGE", "1:/"],
        &["ls", "-R", "--json", "IMAGE", "2:/"],
        &["get", "IMAGE", "2:/big.bin"],
    ] {
        let expected = run(args, &plain, None);
        assert!(!expected.is_empty(), "{args:?}");
        let actual = run(args, &encrypted, Some(&pass));
        // `parts --json` names no image; listings and files are the disk's.
        assert!(
            actual == expected,
            "qcow {args:?} differs on the encrypted disk"
        );
    }
    let big = run(&["get", "IMAGE", "2:/big.bin"], &encrypted, Some(&pass));
    let tree = std::fs::read(disks.join("tree-ext-v1/big.bin")).expect("tree file");
    assert!(big == tree, "2:/big.bin differs from the file mkfs wrote");
}
