//! The identity map and the MMU switch-on, the first thing Rust does on
//! aarch64.
//!
//! Why the MMU at all: with it off every data access is Device-nGnRnE,
//! where an unaligned access faults and exclusive loads/stores (the atomics
//! behind the spin locks) are not guaranteed to work. `+strict-align` (the
//! target's default) keeps the compiler from emitting unaligned accesses,
//! which is what lets this code run before the switch, but normal cacheable
//! memory is what Rust code assumes, and it is much faster on hardware.
//!
//! The system registers are written through `aarch64-cpu`'s typed fields.
//! The translation-table descriptors are built here: they are four 1 GiB
//! blocks, and a page-table crate (`aarch64-paging`) would bring an
//! allocator-backed mapping API for what is one array.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ReadWriteable, Writeable, MAIR_EL1, SCTLR_EL1, TCR_EL1, TTBR0_EL1};
use core::cell::UnsafeCell;

/// Entries of a level-1 table with a 4 KiB granule.
const ENTRIES: usize = 512;
/// Bytes mapped by one level-1 block.
const BLOCK_BYTES: u64 = 1 << 30;
/// Blocks mapped: the first GiB (all MMIO on `virt`) and three of RAM.
const MAPPED_BLOCKS: usize = 4;

/// Block descriptor: valid, block (not table), access flag set.
const BLOCK_VALID: u64 = 0b01 | (1 << 10);
/// AttrIndx 0 (device, see `MAIR_EL1` below), never executable (PXN, UXN).
const BLOCK_DEVICE: u64 = BLOCK_VALID | (1 << 53) | (1 << 54);
/// AttrIndx 1 (normal write-back), inner shareable.
const BLOCK_NORMAL: u64 = BLOCK_VALID | (1 << 2) | (0b11 << 8);

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; ENTRIES]>);

// SAFETY: the table is written once, by `enable` on the only CPU before
// the MMU reads it, and never again.
unsafe impl Sync for Table {}

// `.noinit`: written whole by `enable`, so it needs no zeroing at boot.
#[link_section = ".noinit.boot"]
static LEVEL1: Table = Table(UnsafeCell::new([0; ENTRIES]));

/// Builds the identity map (GiB 0 device memory, GiB 1-3 normal RAM) and
/// turns the MMU and caches on.
///
/// # Safety
/// Call once, first thing, on the boot CPU with the MMU off: the map must
/// cover everything the firmware touches (its image, stack, heap and the
/// MMIO of `virt`), which it does for `virt` with up to 3 GiB of RAM.
pub unsafe fn enable() {
    // SAFETY: nothing else references the table yet (the caller calls this
    // once, before anything else runs), and the MMU does not read it until
    // TTBR0_EL1 is set below.
    let table = unsafe { &mut *LEVEL1.0.get() };
    for (index, entry) in table.iter_mut().enumerate() {
        let address = index as u64 * BLOCK_BYTES;
        *entry = match index {
            0 => address | BLOCK_DEVICE,
            1..MAPPED_BLOCKS => address | BLOCK_NORMAL,
            _ => 0,
        };
    }
    barrier::dsb(barrier::ISH);

    MAIR_EL1.write(
        MAIR_EL1::Attr0_Device::nonGathering_nonReordering_noEarlyWriteAck
            + MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    // 39-bit virtual addresses (T0SZ 25) so the walk starts at level 1 with
    // 1 GiB blocks; TTBR1 walks off; 40-bit physical addresses.
    TCR_EL1.write(
        TCR_EL1::T0SZ.val(25)
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::SH0::Inner
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::IPS::Bits_40,
    );
    TTBR0_EL1.set_baddr(table.as_ptr() as u64);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating the EL1 TLB only drops cached translations,
    // which there are none of before the MMU is on.
    unsafe { core::arch::asm!("tlbi vmalle1", options(nostack, preserves_flags)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    // Alignment checks off (the code is strict-align anyway), WXN off.
    SCTLR_EL1.modify(
        SCTLR_EL1::M::Enable
            + SCTLR_EL1::C::Cacheable
            + SCTLR_EL1::I::Cacheable
            + SCTLR_EL1::A::Disable
            + SCTLR_EL1::WXN::Disable,
    );
    barrier::isb(barrier::SY);
}
