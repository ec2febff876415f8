//! Compiles the vendored libzstd decompressor (`libzstd/`, zstd 1.5.4, the
//! version Debian 12's QEMU links) for the target, freestanding.
//!
//! Host targets use the compiler `cc` picks; the firmware and UEFI targets
//! (`target_os` `none` or `uefi`) use clang, which cross-compiles to all
//! four without a cross toolchain (`cc` gives it `--target`, mapping the
//! UEFI targets to `*-windows-gnu` for PE/COFF objects with the Microsoft
//! ABI, which is UEFI's). `CC_<target>` still overrides it.

use std::env;
use std::path::PathBuf;

/// The decoder's sources: the frame and block decoder, its entropy decoders
/// (FSE, Huffman), the checksum (XXH64) and the error strings.
const SOURCES: &[&str] = &[
    "common/debug.c",
    "common/entropy_common.c",
    "common/error_private.c",
    "common/fse_decompress.c",
    "common/xxhash.c",
    "common/zstd_common.c",
    "decompress/huf_decompress.c",
    "decompress/zstd_ddict.c",
    "decompress/zstd_decompress.c",
    "decompress/zstd_decompress_block.c",
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let lib = root.join("libzstd/lib");
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
        build.file(lib.join(source));
        println!("cargo:rerun-if-changed={}", lib.join(source).display());
    }
    println!("cargo:rerun-if-changed=libzstd");
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
        .include(&lib)
        // C99, not the compiler's default C11, whose static_assert would
        // pull in <assert.h>, which a freestanding build does not have.
        .std("c99")
        .opt_level(3)
        .warnings(false)
        // The prefix of every external symbol (see namespace.h).
        .flag("-include")
        .flag(root.join("namespace.h").to_str().expect("UTF-8 path"))
        // Decoder only: no legacy formats (the crate refuses their magic
        // numbers before libzstd sees a frame), no tracing hooks, no
        // assembly (huf_decompress_amd64.S is System V ELF only), no
        // debug output.
        .define("ZSTD_LEGACY_SUPPORT", "0")
        .define("ZSTD_TRACE", "0")
        .define("ZSTD_DISABLE_ASM", "1")
        .define("DEBUGLEVEL", "0")
        .define("XXH_NAMESPACE", "ZSTD_")
        // Only the compiler's freestanding headers (limits.h, stddef.h,
        // stdint.h): zstd_deps.h is replaced by one without libc.
        .flag("-ffreestanding")
        .flag_if_supported("-nostdlibinc")
        .flag_if_supported("-fno-stack-protector");
    if freestanding {
        if arch == "x86_64" {
            // Rust's x86_64 -none and -uefi targets are soft-float: no SSE
            // state is assumed to be enabled or saved. (The decoder has no
            // floating point, only SIMD copies, which then become integer
            // moves.) No red zone: interrupt handlers may use the stack.
            build.flag("-mgeneral-regs-only").flag("-mno-red-zone");
        }
        if os == "uefi" {
            // No __chkstk calls in big stack frames: UEFI images have no
            // runtime library to provide them.
            build.flag_if_supported("-mno-stack-arg-probe");
        }
    }
    build.compile("qcow2_zstd_nostd");
}
