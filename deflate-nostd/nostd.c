/*
 * The decompressor's translation unit: libdeflate's deflate_decompress.c
 * (vendored unchanged), plus what a FREESTANDING build leaves to the
 * program. Compiled by build.rs with namespace.h force-included.
 *
 * Not compiled: libdeflate's utils.c. Under FREESTANDING it defines weak
 * byte-at-a-time memset, memcpy, memmove and memcmp, which in a host
 * program would take the place of libc's for the whole executable; the
 * program's own (libc, or compiler_builtins on the -none and -uefi
 * targets) serve the calls the compiler emits instead. Of the rest of
 * utils.c the decompressor needs only the two default allocator pointers,
 * which are NULL here: the Rust side always passes its own allocator in
 * libdeflate_options, so they are never called.
 */
#include "lib/deflate_decompress.c"

malloc_func_t libdeflate_default_malloc_func = NULL;
free_func_t libdeflate_default_free_func = NULL;

/*
 * The bytes libdeflate_alloc_decompressor_ex asks its malloc_func for: the
 * whole of the decompressor's memory, so that the reader can state its
 * bound before the first cluster.
 */
size_t
libdeflate_decompressor_size(void)
{
	return sizeof(struct libdeflate_decompressor);
}
