/*
 * Gives every external symbol of the vendored decompressor the prefix
 * `qcow2_`, so that a program linking this copy and another libdeflate
 * (a system library, or the `libdeflate-sys` crate) gets two distinct
 * decompressors instead of a duplicate-symbol error or one silently
 * replacing the other. Passed to the compiler with `-include` by build.rs.
 *
 * Generated from the global symbols of the objects built for the four
 * firmware targets (x86_64/aarch64, -none and -uefi) and the host:
 *   llvm-nm -g --defined-only *.o | awk 'NF==3 {print $3}' | sort -u
 * (memcmp, memcpy and memset are the program's: undefined, not renamed.)
 *
 * Regenerate it (same command, over the targets' objects) whenever the
 * vendored sources change.
 */
#ifndef QCOW2_DEFLATE_NAMESPACE_H
#define QCOW2_DEFLATE_NAMESPACE_H
#define libdeflate_alloc_decompressor qcow2_libdeflate_alloc_decompressor
#define libdeflate_alloc_decompressor_ex qcow2_libdeflate_alloc_decompressor_ex
#define libdeflate_decompressor_size qcow2_libdeflate_decompressor_size
#define libdeflate_default_free_func qcow2_libdeflate_default_free_func
#define libdeflate_default_malloc_func qcow2_libdeflate_default_malloc_func
#define libdeflate_deflate_decompress qcow2_libdeflate_deflate_decompress
#define libdeflate_deflate_decompress_ex qcow2_libdeflate_deflate_decompress_ex
#define libdeflate_free_decompressor qcow2_libdeflate_free_decompressor
#define libdeflate_init_x86_cpu_features qcow2_libdeflate_init_x86_cpu_features
#define libdeflate_x86_cpu_features qcow2_libdeflate_x86_cpu_features
#endif
