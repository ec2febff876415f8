/*
 * Freestanding replacement of libzstd's zstd_deps.h, written for qcow2-reader
 * (upstream's file says it exists to be replaced "to compile zstd without
 * libc support"; the Linux kernel replaces it the same way).
 *
 * Only compiler-provided freestanding headers are used. memcpy, memmove and
 * memset are the compiler's builtins; calls that remain resolve to the
 * firmware's or compiler_builtins' symbols. There is no allocator: every
 * context is static (ZSTD_initStaticDCtx over caller memory), so
 * ZSTD_malloc and ZSTD_calloc fail and ZSTD_free does nothing.
 */
#ifndef ZSTD_DEPS_COMMON
#define ZSTD_DEPS_COMMON

#include <limits.h>
#include <stddef.h>

#define ZSTD_memcpy(d,s,l) __builtin_memcpy((d),(s),(l))
#define ZSTD_memmove(d,s,l) __builtin_memmove((d),(s),(l))
#define ZSTD_memset(p,v,l) __builtin_memset((p),(v),(l))

#endif /* ZSTD_DEPS_COMMON */

#ifdef ZSTD_DEPS_NEED_MALLOC
#ifndef ZSTD_DEPS_MALLOC
#define ZSTD_DEPS_MALLOC

#define ZSTD_malloc(s) ((void)(s), (void*)0)
#define ZSTD_calloc(n,s) ((void)(n), (void)(s), (void*)0)
#define ZSTD_free(p) ((void)(p))

#endif /* ZSTD_DEPS_MALLOC */
#endif /* ZSTD_DEPS_NEED_MALLOC */

#ifdef ZSTD_DEPS_NEED_MATH64
#ifndef ZSTD_DEPS_MATH64
#define ZSTD_DEPS_MATH64

#define ZSTD_div64(dividend, divisor) ((dividend) / (divisor))

#endif /* ZSTD_DEPS_MATH64 */
#endif /* ZSTD_DEPS_NEED_MATH64 */

#ifdef ZSTD_DEPS_NEED_ASSERT
#ifndef ZSTD_DEPS_ASSERT
#define ZSTD_DEPS_ASSERT

/* Built with DEBUGLEVEL 0: assertions compile to nothing. */
#define assert(condition) ((void)0)

#endif /* ZSTD_DEPS_ASSERT */
#endif /* ZSTD_DEPS_NEED_ASSERT */

#ifdef ZSTD_DEPS_NEED_IO
#ifndef ZSTD_DEPS_IO
#define ZSTD_DEPS_IO

#define ZSTD_DEBUG_PRINT(...) ((void)0)

#endif /* ZSTD_DEPS_IO */
#endif /* ZSTD_DEPS_NEED_IO */

#ifdef ZSTD_DEPS_NEED_STDINT
#ifndef ZSTD_DEPS_STDINT
#define ZSTD_DEPS_STDINT

#include <stdint.h>

#endif /* ZSTD_DEPS_STDINT */
#endif /* ZSTD_DEPS_NEED_STDINT */
