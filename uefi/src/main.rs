//! `qcow2.efi`: see the crate README. The driver lives in `driver/`.
#![cfg_attr(target_os = "uefi", no_std)]
#![cfg_attr(target_os = "uefi", no_main)]

#[cfg(target_os = "uefi")]
extern crate alloc;

#[cfg(target_os = "uefi")]
mod driver;

#[cfg(not(target_os = "uefi"))]
fn main() {
    eprintln!("qcow2.efi is a UEFI driver: build it with --target x86_64-unknown-uefi or aarch64-unknown-uefi");
    std::process::exit(2);
}
