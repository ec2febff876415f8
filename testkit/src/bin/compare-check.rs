//! Compares `qcow check` and `qcow info` with `qemu-img check` and
//! `qemu-img info` on every `*.qcow2` file of the directories given, and
//! prints each disagreement: the exit status and the JSON counters of
//! `check`, and whether `info` opens the image.
//!
//! Made for images nobody here wrote, such as those of QEMU's image fuzzer
//! (`tests/image-fuzzer`, see docs/check.md): run it after `cargo build -p
//! qcow2-cli`, as `cargo run -p qcow2-testkit --bin compare-check -- DIR...`.
//! It exits with 1 when an image disagrees.

use std::path::PathBuf;

use qcow2_testkit::check_compare::compare_with_qemu;
use qcow2_testkit::workspace_root;

fn main() {
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        eprintln!("usage: compare-check DIR...");
        std::process::exit(2);
    }
    let qcow = std::env::var_os("QCOW")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/qcow"));
    let mut images = Vec::new();
    for dir in &dirs {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{dir:?}: {error}"));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|ext| ext == "qcow2") {
                images.push(path);
            }
        }
    }
    images.sort();
    let mut disagreements = 0;
    for image in &images {
        let differences = compare_with_qemu(&qcow, image);
        for difference in &differences {
            println!("{}: {difference}", image.display());
        }
        disagreements += usize::from(!differences.is_empty());
    }
    println!(
        "{} images, {} agree, {} disagree",
        images.len(),
        images.len() - disagreements,
        disagreements
    );
    std::process::exit(i32::from(disagreements > 0));
}
