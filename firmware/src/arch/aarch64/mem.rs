//! `memset` for QEMU TCG: 64 bytes per loop iteration through a NEON
//! register instead of `compiler_builtins`' 8 bytes.
//!
//! Under TCG each iteration of a guest loop costs a jump between
//! translated blocks besides its stores, so the generic `memset` (one
//! 8-byte store per iteration, which this weak symbol replaces) spends
//! most of its time on the loop. The qcow2 read zero-fills every zero and
//! unallocated cluster it reads (8 MiB of the 64 MiB demo disk), which
//! made that loop most of its gap to a raw read. `memcpy` stays the
//! generic one: the reads copy little (the disk writes into the caller's
//! buffer directly), and its shifting handles unaligned sources, which
//! fault here while the MMU is off.
//!
//! Hand-written because no crate provides memory routines for this
//! target other than `compiler_builtins` itself. The destination is
//! aligned to 16 bytes first, so every vector store is aligned, as memory
//! accesses must be before the MMU is on (see `mmu.rs`).

use core::arch::asm;

/// Bytes one loop iteration writes.
const BLOCK: usize = 64;

/// Fills `len` bytes at `dest` with the low byte of `byte`.
///
/// # Safety
/// `dest..dest + len` must be valid for writes (the C `memset` contract).
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, byte: i32, len: usize) -> *mut u8 {
    let value = byte as u8;
    let head = dest.align_offset(16).min(len);
    let bulk = (len - head) & !(BLOCK - 1);
    let tail = len - head - bulk;
    // SAFETY: the three loops write `head`, `bulk` and `tail` bytes in
    // order from `dest`, `head + bulk + tail == len`, so they stay inside
    // the range the caller promised writable; the vector stores start at
    // a 16-byte boundary (`head` reaches it) and move by 64 bytes.
    unsafe {
        asm!(
            "dup v0.16b, {value:w}",
            "cbz {head}, 2f",
            "1:",
            "strb {value:w}, [{dest}], #1",
            "subs {head}, {head}, #1",
            "b.ne 1b",
            "2:",
            "cbz {bulk}, 4f",
            "3:",
            "stp q0, q0, [{dest}]",
            "stp q0, q0, [{dest}, #32]",
            "add {dest}, {dest}, #64",
            "subs {bulk}, {bulk}, #64",
            "b.ne 3b",
            "4:",
            "cbz {tail}, 6f",
            "5:",
            "strb {value:w}, [{dest}], #1",
            "subs {tail}, {tail}, #1",
            "b.ne 5b",
            "6:",
            value = in(reg) u32::from(value),
            dest = inout(reg) dest => _,
            head = inout(reg) head => _,
            bulk = inout(reg) bulk => _,
            tail = inout(reg) tail => _,
            out("v0") _,
            options(nostack),
        );
    }
    dest
}
