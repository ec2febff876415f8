//! Entry from QEMU's `-kernel` ELF loader on `virt`: EL1, MMU and caches
//! off, no stack, `x0` = 0 (the device tree is at the start of RAM).
//!
//! This code:
//!
//! 1. enables FP/SIMD (the target's code uses NEON registers),
//! 2. sets the stack and zeroes `.bss`,
//! 3. installs exception vectors that report any exception and exit,
//! 4. turns the MMU and caches on with an identity map (1 GiB blocks:
//!    the first GiB, all MMIO on `virt`, as Device-nGnRnE and never
//!    executable; the next three GiB, RAM, as normal write-back memory),
//! 5. calls [`aarch64_rust_entry`](super::aarch64_rust_entry).
//!
//! Why the MMU: with it off every data access is Device-nGnRnE, where an
//! unaligned access faults and exclusive loads/stores (the atomics behind
//! the spin locks) are not guaranteed to work. `+strict-align` (the
//! target's default) keeps the compiler from emitting unaligned accesses,
//! but normal cacheable memory is what Rust code assumes, and it is also
//! much faster on hardware.

use core::arch::global_asm;

/// Size of the boot (and only) stack.
pub const STACK_SIZE: usize = 1024 * 1024;

/// MAIR_EL1: attribute 0 = Device-nGnRnE, attribute 1 = Normal,
/// inner and outer write-back, read/write-allocate.
const MAIR: u64 = 0xff << 8;
/// Block descriptor bits for device memory: valid block, AttrIndx 0,
/// access flag, PXN and UXN.
const DEVICE_BLOCK: u64 = 0x1 | (1 << 10) | (1 << 53) | (1 << 54);
/// Block descriptor bits for RAM: valid block, AttrIndx 1, inner
/// shareable, access flag.
const NORMAL_BLOCK: u64 = 0x1 | (1 << 2) | (0b11 << 8) | (1 << 10);
/// TCR_EL1: 39-bit VA (T0SZ 25, so the walk starts at level 1 with 1 GiB
/// blocks), write-back inner/outer walks, inner shareable, 4 KiB granule,
/// TTBR1 walks disabled (EPD1), 40-bit physical addresses.
const TCR: u64 = 25 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (0b010 << 32);
/// SCTLR_EL1 bits set: M (MMU), C (data cache), I (instruction cache).
const SCTLR_SET: u64 = (1 << 0) | (1 << 2) | (1 << 12);
/// SCTLR_EL1 bits cleared: A (alignment checks; code is strict-align
/// anyway), WXN.
const SCTLR_CLEAR: u64 = (1 << 1) | (1 << 19);

global_asm!(
    r#"
    /* ---- level-1 table and stack: NOLOAD, written before use ---- */
    .pushsection .noinit.boot, "aw", @nobits
    .balign 4096
boot_l1_table:
    .skip 4096
    .balign 16
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

    /* Identity map: entry 0 device, entries 1-3 RAM, the rest invalid. */
    ldr x9, =boot_l1_table
    mov x10, #0
3:  str xzr, [x9, x10, lsl #3]
    add x10, x10, #1
    cmp x10, #512
    b.lo 3b
    ldr x10, ={device_block}
    str x10, [x9]
    ldr x11, ={normal_block}
    mov x12, #1
4:  orr x10, x11, x12, lsl #30
    str x10, [x9, x12, lsl #3]
    add x12, x12, #1
    cmp x12, #4
    b.lo 4b
    dsb ish

    ldr x10, ={mair}
    msr mair_el1, x10
    ldr x10, ={tcr}
    msr tcr_el1, x10
    msr ttbr0_el1, x9
    isb
    tlbi vmalle1
    dsb ish
    isb
    mrs x10, sctlr_el1
    ldr x11, ={sctlr_set}
    orr x10, x10, x11
    ldr x11, ={sctlr_clear}
    bic x10, x10, x11
    msr sctlr_el1, x10
    isb

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
    device_block = const DEVICE_BLOCK,
    normal_block = const NORMAL_BLOCK,
    mair = const MAIR,
    tcr = const TCR,
    sctlr_set = const SCTLR_SET,
    sctlr_clear = const SCTLR_CLEAR,
);
