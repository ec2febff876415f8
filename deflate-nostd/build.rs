//! Compiles the vendored libdeflate decompressor (`libdeflate/`, libdeflate
//! 1.26) for the target, freestanding (`FREESTANDING`: no libc headers,
//! no default allocator).
//!
//! Host targets use the compiler `cc` picks; the firmware and UEFI targets
//! (`target_os` `none` or `uefi`) use clang, which cross-compiles to all
//! four without a cross toolchain (`cc` gives it `--target`, mapping the
//! UEFI targets to `*-windows-gnu` for PE/COFF objects with the Microsoft
//! ABI, which is UEFI's). `CC_<target>` still overrides it. The same
//! choices as `zstd-nostd/build.rs`.

use std::env;
use std::path::PathBuf;

/// The translation units: the decompressor (through `nostd.c`, which adds
/// what a freestanding build leaves out) and x86's CPU feature detection,
/// which picks the BMI2 decoder at run time (empty on other architectures).
const SOURCES: &[&str] = &["nostd.c", "libdeflate/lib/x86/cpu_features.c"];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let target = env::var("TARGET").expect("set by cargo");
    let os = env::var("CARGO_CFG_TARGET_OS").expect("set by cargo");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("set by cargo");
    let freestanding = os == "none" || os == "uefi";
    // cargo-fuzz builds with `--cfg fuzzing` and maybe a sanitizer: the C
    // code then gets libFuzzer's coverage (and the sanitizer) too, which
    // takes clang.
    let fuzzing = env::var_os("CARGO_CFG_FUZZING").is_some();
    let sanitizers = env::var("CARGO_CFG_SANITIZE").unwrap_or_default();

    let mut build = cc::Build::new();
    for source in SOURCES {
        build.file(root.join(source));
    }
    println!("cargo:rerun-if-changed=nostd.c");
    println!("cargo:rerun-if-changed=libdeflate");
    println!("cargo:rerun-if-changed=namespace.h");
    let cc_override = env::var_os(format!("CC_{target}"))
        .or_else(|| env::var_os(format!("CC_{}", target.replace('-', "_"))));
    if (freestanding || fuzzing) && cc_override.is_none() {
        build.compiler("clang");
    }
    if fuzzing {
        build.flag("-fsanitize=fuzzer-no-link");
    }
    if sanitizers.split(',').any(|s| s == "address") {
        build.flag("-fsanitize=address");
    }
    build
        .include(root.join("libdeflate"))
        .include(root.join("libdeflate/lib"))
        // libdeflate 1.26 needs C11.
        .std("c11")
        .opt_level(3)
        .warnings(false)
        // The prefix of every external symbol (see namespace.h).
        .flag("-include")
        .flag(root.join("namespace.h").to_str().expect("UTF-8 path"))
        // libdeflate's own freestanding mode: <string.h> and <stdlib.h>
        // are not included, mem* calls become compiler built-ins.
        .define("FREESTANDING", None)
        // Only the compiler's freestanding headers (stdbool.h, stddef.h,
        // stdint.h, and immintrin.h for the BMI2 decoder on x86).
        .flag("-ffreestanding")
        .flag_if_supported("-nostdlibinc")
        .flag_if_supported("-fno-stack-protector");
    if freestanding {
        if arch == "x86_64" {
            // Rust's x86_64 -none and -uefi targets are soft-float: no SSE
            // state is assumed to be enabled or saved. No red zone:
            // interrupt handlers may use the stack.
            build.flag("-mgeneral-regs-only").flag("-mno-red-zone");
        }
        if os == "uefi" {
            // No __chkstk calls in big stack frames: UEFI images have no
            // runtime library to provide them.
            build.flag_if_supported("-mno-stack-arg-probe");
        }
    }
    build.compile("qcow2_deflate_nostd");
}
