//! Entry from QEMU's `-kernel` ELF loader on `virt`: EL1, MMU and caches
//! off, no stack, `x0` = 0 (the device tree is at the start of RAM).
//!
//! This code, in assembly because nothing can run before a stack exists:
//!
//! 1. enables FP/SIMD (the target's code uses NEON registers),
//! 2. sets the stack and zeroes `.bss`,
//! 3. installs exception vectors that report any exception and exit,
//! 4. calls [`aarch64_rust_entry`](super::aarch64_rust_entry), which turns
//!    the MMU on first ([`super::mmu`]).

use core::arch::global_asm;

/// Size of the boot (and only) stack.
pub const STACK_SIZE: usize = 1024 * 1024;

global_asm!(
    r#"
    /* ---- stack: NOLOAD, written before use ---- */
    .pushsection .noinit.boot, "aw", @nobits
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
boot_stack_top:
    .popsection

    .pushsection .text.boot, "ax"
    .global _start
_start:
    /* FP/SIMD: CPACR_EL1.FPEN = 0b11 */
    mov x9, #(3 << 20)
    msr cpacr_el1, x9
    isb

    ldr x9, =boot_stack_top
    mov sp, x9

    /* Zero .bss (small; big regions are in .noinit). */
    ldr x9, =__bss_start
    ldr x10, =__bss_end
1:  cmp x9, x10
    b.hs 2f
    str xzr, [x9], #8
    b 1b
2:
    ldr x9, =boot_vectors
    msr vbar_el1, x9

    bl aarch64_rust_entry
5:  wfe
    b 5b

    /* ---- exception vectors: 16 entries of 0x80 bytes ---- */
    .balign 0x800
boot_vectors:
    .rept 16
    .balign 0x80
    mrs x0, esr_el1
    mrs x1, elr_el1
    mrs x2, far_el1
    b aarch64_exception
    .endr
    .popsection
    "#,
    stack_size = const STACK_SIZE,
);
