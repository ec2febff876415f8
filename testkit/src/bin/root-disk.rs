//! Builds (or finds up to date) the Debian disk of the root boot test and
//! prints its path, the only line on stdout (see
//! [`qcow2_testkit::root_disk`]):
//! `cargo run -p qcow2-testkit --bin root-disk -- PACKAGE.deb STICK_LABEL IMAGE_NAME [ARCH]`
//! (ARCH `x86_64`, the default, or `aarch64`, with a package of that
//! architecture).

use qcow2_testkit::boot_disk::Arch;
use std::path::Path;

const USAGE: &str = "usage: root-disk PACKAGE.deb STICK_LABEL IMAGE_NAME [x86_64|aarch64]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (deb, stick_label, image_name, arch) = match args.as_slice() {
        [deb, stick, image] => (deb, stick, image, "x86_64"),
        [deb, stick, image, arch] => (deb, stick, image, arch.as_str()),
        _ => {
            eprintln!("root-disk: error: {USAGE}");
            std::process::exit(2);
        }
    };
    let arch = Arch::from_name(arch).unwrap_or_else(|error| {
        eprintln!("root-disk: error: {error}; {USAGE}");
        std::process::exit(2);
    });
    let out = qcow2_testkit::root_disk::cache_dir(arch);
    match qcow2_testkit::root_disk::build(&out, arch, Path::new(deb), stick_label, image_name) {
        Ok(image) => println!("{}", image.display()),
        Err(error) => {
            eprintln!("root-disk: error: {error}");
            std::process::exit(1);
        }
    }
}
