//! Passes the architecture's linker script to the final link.
//!
//! Done here rather than in `.cargo/config.toml` so that the script's path
//! is absolute: the build then works from any directory and with
//! `--manifest-path`, whatever cargo's working directory is.

use std::env;

fn main() {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{manifest_dir}/linker/{arch}.ld");
    // Only bare-metal targets get the script; a host `cargo check` of the
    // package (which would fail to link anyway) is left alone.
    if os == "none" {
        println!("cargo:rustc-link-arg-bins=-T{script}");
    }
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");
}
