//! Builds (or finds up to date) the Debian disk of the root boot test and
//! prints its path, the only line on stdout (see
//! [`qcow2_testkit::root_disk`]):
//! `cargo run -p qcow2-testkit --bin root-disk -- PACKAGE.deb STICK_LABEL IMAGE_NAME`.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [deb, stick_label, image_name] = args.as_slice() else {
        eprintln!("root-disk: error: usage: root-disk PACKAGE.deb STICK_LABEL IMAGE_NAME");
        std::process::exit(2);
    };
    let root = qcow2_testkit::workspace_root();
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let out = root.join("target/root-disk/x86_64");
    match qcow2_testkit::root_disk::build(&out, Path::new(deb), stick_label, image_name) {
        Ok(image) => println!("{}", image.display()),
        Err(error) => {
            eprintln!("root-disk: error: {error}");
            std::process::exit(1);
        }
    }
}
