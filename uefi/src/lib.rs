//! The parts of the `qcow2.efi` driver that need no firmware.
//!
//! Everything here is plain `no_std` Rust over byte slices and closures, so
//! it builds and is unit-tested on the host (`cargo test --target
//! x86_64-unknown-linux-gnu` from `uefi/`) and a fuzz target can reach it:
//! the checks on a `ReadBlocks` request, reading a virtual disk in whole
//! blocks, short-read loops over file reads, the `\qcow2.cfg` syntax, the
//! driver's load options (URLs in that syntax), how a backing file name
//! becomes a path, building the child's device path, the
//! `qcow2root=efi` variable's value, the boot measurements' read counts,
//! the passphrase prompt's line editing and tries, and finding and reading
//! the firmware's stack for the driver's stack line.
//! The UEFI glue (`src/driver/`) calls these and only translates results
//! into `EFI_STATUS` values and console lines.
//!
//! Hand-written rather than taken from a crate: the `uefi` crate consumes
//! `EFI_BLOCK_IO_PROTOCOL` but does not help produce one, and the rules
//! here (the UEFI specification's `ReadBlocks` error order, QEMU's backing
//! name resolution restricted to one directory) are this driver's own.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod blocks;
pub mod budget;
pub mod config;
pub mod device_path;
pub mod handoff;
pub mod http;
pub mod load_options;
pub mod passphrase;
pub mod path;
pub mod read_stats;
pub mod short_read;
pub mod stack;
