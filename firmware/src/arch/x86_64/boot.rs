//! PVH entry: from 32-bit protected mode to 64-bit Rust.
//!
//! QEMU's PVH loader (used for `-kernel` on `-M microvm`, `pc` and `q35`)
//! finds the `XEN_ELFNOTE_PHYS32_ENTRY` note, loads the ELF segments and
//! jumps to that address in 32-bit protected mode with paging off and
//! `ebx` holding the physical address of `hvm_start_info`. No stack is
//! promised. This code:
//!
//! 1. builds page tables that identity-map 0..4 GiB with 2 MiB pages (the
//!    top GiB, which holds the LAPIC/IOAPIC and the virtio-mmio windows, is
//!    mapped uncached),
//! 2. makes write-back the default memory type (the MTRRs are still in
//!    their reset state, "all uncacheable", as no BIOS ran),
//! 3. enables PAE, SSE (for code that uses SSE after a CPUID check), long
//!    mode and paging, loads a GDT with a 64-bit code segment and far-jumps
//!    into it,
//! 4. sets the data segments and the stack, zeroes `.bss` and calls
//!    [`x86_64_rust_entry`](super::x86_64_rust_entry) with the start-info
//!    address.
//!
//! The page tables and the stack live in `.noinit` (NOLOAD, not zeroed):
//! every page-table entry that the MMU can reach is written here, and the
//! stack needs no initial contents.
//!
//! Hand-written because no crate does this job: the `x86_64` crate's
//! register and page-table types need long mode and a running Rust, and
//! this code runs before either exists (32-bit, no stack).

use core::arch::global_asm;

/// Size of the boot (and only) stack.
pub const STACK_SIZE: usize = 1024 * 1024;

global_asm!(
    r#"
    /* ---- PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (18), 8-byte address ---- */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                     /* name size: "Xen\0" */
    .long 8                     /* descriptor size */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4
    .popsection

    /* ---- page tables and stack: NOLOAD, never zeroed as a whole ---- */
    .pushsection .noinit.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096              /* 4 x 512 entries x 2 MiB = 4 GiB */
    .balign 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
    .popsection

    /* ---- GDT: null, 64-bit code (0x08), data (0x10) ---- */
    .pushsection .rodata.boot, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .popsection

    /* ---- 32-bit entry ---- */
    .pushsection .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %esi             /* keep hvm_start_info across the set-up */

    /* Zero the PML4 and the PDPT (2 pages). */
    movl $boot_pml4, %edi
    xorl %eax, %eax
    movl $(2 * 4096 / 4), %ecx
    rep stosl

    /* PML4[0] -> PDPT */
    movl $boot_pdpt, %eax
    orl $0x3, %eax              /* present | writable */
    movl %eax, boot_pml4

    /* PDPT[0..4] -> the four page directories */
    movl $boot_pd, %eax
    orl $0x3, %eax
    movl $boot_pdpt, %edi
    movl $4, %ecx
1:
    movl %eax, (%edi)
    movl $0, 4(%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 1b

    /* 2048 page-directory entries, 2 MiB each, identity-mapped */
    movl $boot_pd, %edi
    movl $0x83, %eax            /* present | writable | 2 MiB page */
    movl $2048, %ecx
2:
    movl %eax, (%edi)
    movl $0, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 2b

    /* The top GiB (MMIO) uncached: PCD | PWT on the last 512 entries. */
    movl $(boot_pd + 3 * 4096), %edi
    movl $512, %ecx
3:
    orl $0x18, (%edi)
    addl $8, %edi
    loop 3b

    /* Memory type: with no BIOS, the MTRRs are still in their reset
     * state (disabled, so all memory is uncacheable). Under KVM that is
     * honoured, and every guest memory access bypasses the cache: make
     * the default type write-back. The MMIO GiB stays uncached through
     * PCD | PWT in its page-table entries. Only if CPUID.1:EDX.MTRR. */
    movl $1, %eax
    cpuid
    testl $(1 << 12), %edx
    jz 5f
    movl $0x2ff, %ecx           /* IA32_MTRR_DEF_TYPE */
    rdmsr
    andl $~0xcff, %eax
    orl $((1 << 11) | 6), %eax  /* E (enable) | type 6 (write-back) */
    wrmsr
5:

    /* CR4: PAE (5), OSFXSR (9), OSXMMEXCPT (10) */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4

    movl $boot_pml4, %eax
    movl %eax, %cr3

    /* EFER.LME */
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr

    /* CR0: PG (31), MP (1), PE (0); clear EM (2) */
    movl %cr0, %eax
    andl $~(1 << 2), %eax
    orl $((1 << 31) | (1 << 1) | 1), %eax
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $pvh_start64

    /* ---- 64-bit ---- */
    .code64
pvh_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp

    /* Zero .bss (small; the big regions are in .noinit). */
    movq $__bss_start, %rdi
    movq $__bss_end, %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb

    movl %esi, %edi             /* first argument: hvm_start_info address */
    xorl %ebp, %ebp
    call x86_64_rust_entry
4:
    cli
    hlt
    jmp 4b
    .popsection
    "#,
    stack_size = const STACK_SIZE,
    options(att_syntax)
);
