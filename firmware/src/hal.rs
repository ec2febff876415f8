//! `virtio_drivers::Hal` over a static DMA pool, for identity-mapped memory.
//!
//! Both architectures run with virtual address == physical address, so
//! sharing a buffer with the device is just taking its address, and the
//! pool needs no translation. The pool only serves the virtqueues (two
//! pages per block device for a 16-entry queue); data buffers are the
//! caller's own memory, passed through [`PoolHal::share`]. Devices live
//! until the machine stops, so the allocator is a bump pointer that never
//! frees.
//!
//! Hand-written because the pool is this firmware's own memory layout (a
//! NOLOAD section, identity-mapped): the `Hal` trait exists precisely so
//! that each user supplies it, and `virtio-drivers` ships no implementation.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Pages in the pool: room for the queues of 16 block devices.
const POOL_PAGES: usize = 32;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; POOL_PAGES * PAGE_SIZE]>);

// SAFETY: pages of the pool are handed out at most once (`NEXT_PAGE` only
// grows), so no two users ever share a page.
unsafe impl Sync for Pool {}

// In `.noinit` (not zeroed at boot); `dma_alloc` zeroes what it hands out.
#[link_section = ".noinit.dma"]
static POOL: Pool = Pool(UnsafeCell::new([0; POOL_PAGES * PAGE_SIZE]));

/// Index of the first page not yet handed out.
static NEXT_PAGE: AtomicUsize = AtomicUsize::new(0);

/// The firmware's [`Hal`]: static pool, identity mapping.
pub struct PoolHal;

/// Pages of the pool handed out so far, for the summary line.
pub fn pages_used() -> (usize, usize) {
    (
        NEXT_PAGE.load(Ordering::Relaxed).min(POOL_PAGES),
        POOL_PAGES,
    )
}

// SAFETY: `dma_alloc` returns page-aligned, zeroed, never-aliased pages
// of a static (so always valid) pool, or paddr 0 when the pool is
// exhausted, which the driver reports as `Error::DmaError`. Addresses are
// identity-mapped, so `share` returning the buffer's address is what the
// device needs.
unsafe impl Hal for PoolHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let claimed = NEXT_PAGE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |first| {
            first.checked_add(pages).filter(|&end| end <= POOL_PAGES)
        });
        let Ok(first) = claimed else {
            return (0, NonNull::dangling());
        };
        // SAFETY: `first + pages <= POOL_PAGES`, so the range lies inside
        // the pool; the fetch_update above gave these pages to this call
        // alone, so writing them cannot race with anything.
        let start = unsafe {
            let start = POOL.0.get().cast::<u8>().add(first * PAGE_SIZE);
            start.write_bytes(0, pages * PAGE_SIZE);
            start
        };
        let pointer = NonNull::new(start).expect("static pool has a non-null address");
        (start as PhysAddr, pointer)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // Queues are never torn down while the firmware runs; returning 0
        // matters, as the driver panics on anything else.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Only used for PCI BARs, which this firmware does not use; the
        // identity mapping would make it correct anyway.
        NonNull::new(paddr as *mut u8).expect("MMIO address is not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity-mapped, and QEMU's virtio devices see guest RAM
        // coherently: no bounce copy and no cache maintenance needed.
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
