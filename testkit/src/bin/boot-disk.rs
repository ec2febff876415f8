//! Builds (or finds up to date) the boot disk of the UEFI boot tests for
//! one architecture and prints its path, the only line on stdout; progress
//! and errors go to stderr. See [`qcow2_testkit::boot_disk`].
//!
//! `cargo run -p qcow2-testkit --bin boot-disk -- x86_64|aarch64`
//! (`scripts/boot-disk.sh ARCH` runs this).

use qcow2_testkit::boot_disk::{build, cache_dir, Arch};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [arch] = args.as_slice() else {
        eprintln!("boot-disk: error: usage: boot-disk x86_64|aarch64");
        std::process::exit(2);
    };
    let built = Arch::from_name(arch).and_then(|arch| build(&cache_dir(), arch));
    match built {
        Ok(disk) => println!("{}", disk.path.display()),
        Err(error) => {
            eprintln!("boot-disk: error: {error}");
            std::process::exit(1);
        }
    }
}
