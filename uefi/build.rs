//! Links the UEFI binary as a boot-service driver (PE subsystem 11).
//!
//! Done here rather than with rustflags in `.cargo/config.toml`: a
//! `RUSTFLAGS` variable in the environment, even an empty one, replaces
//! those flags silently and the result is an application, which the shell
//! refuses to load as a driver. rust-lld takes the last `/SUBSYSTEM`.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("uefi") {
        println!("cargo::rustc-link-arg-bins=/SUBSYSTEM:EFI_BOOT_SERVICE_DRIVER");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
