//! Makes the disks of the file tests in a directory (see
//! [`qcow2_testkit::make_disks`]), or finds them up to date:
//! `cargo run -p qcow2-testkit --bin make-disks -- OUT_DIR`. The tests call
//! the library themselves ([`qcow2_testkit::made_disks`]).

use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out] = args.as_slice() else {
        eprintln!("make-disks: usage: make-disks OUT_DIR");
        std::process::exit(2);
    };
    if let Err(error) = qcow2_testkit::make_disks::make(out) {
        eprintln!("make-disks: {error}");
        std::process::exit(1);
    }
}
