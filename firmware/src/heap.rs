//! The global allocator: a fixed, spin-locked heap in `.noinit`.
//!
//! Only the crate's zstd decoder (its window, bounded by the cluster size)
//! and the demo's working memory (the reader's cache, the read buffer)
//! come from here; the device driver's DMA memory does not (see
//! [`crate::hal`]). The heap is bounded: an allocation that does not fit
//! fails, and the `alloc` error handler turns that into a panic, which
//! prints `error:` and exits non-zero.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use linked_list_allocator::Heap;

/// Heap size. Opening a 2 MiB-cluster image with a backing image needs a
/// few cluster-sized buffers per image plus the zstd window; 32 MiB leaves
/// room and costs nothing until touched (the region is not zeroed).
pub const HEAP_SIZE: usize = 32 * 1024 * 1024;

#[repr(C, align(4096))]
struct HeapMemory(UnsafeCell<[MaybeUninit<u8>; HEAP_SIZE]>);

// SAFETY: the memory is only handed out through `ALLOCATOR`, whose lock
// serialises every access to the free list.
unsafe impl Sync for HeapMemory {}

// `.noinit` is NOLOAD and never zeroed: touching every page at boot would
// cost about a millisecond per page under a paravirtual KVM.
#[link_section = ".noinit.heap"]
static HEAP_MEMORY: HeapMemory = HeapMemory(UnsafeCell::new([MaybeUninit::uninit(); HEAP_SIZE]));

/// A [`Heap`] behind a spin lock.
struct LockedHeap(spin::Mutex<Heap>);

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap(spin::Mutex::new(Heap::empty()));

/// Hands the heap memory to the allocator; called once, first thing in
/// [`crate::main`].
pub fn init() {
    let mut heap = ALLOCATOR.0.lock();
    if heap.size() == 0 {
        // SAFETY: `HEAP_MEMORY` is used by nothing but this allocator, and
        // the `size() == 0` check makes sure it is given to it only once.
        unsafe { heap.init(HEAP_MEMORY.0.get().cast::<u8>(), HEAP_SIZE) };
    }
}

/// Bytes in use and total heap size, for the summary line.
pub fn usage() -> (usize, usize) {
    let heap = ALLOCATOR.0.lock();
    (heap.used(), heap.size())
}

// SAFETY: allocation and deallocation go through `Heap`, which returns
// blocks that fit the layout and do not overlap; the lock makes them
// exclusive.
unsafe impl GlobalAlloc for LockedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if let Some(pointer) = NonNull::new(pointer) {
            // SAFETY: the caller passes a block that `alloc` returned for
            // this layout (the `GlobalAlloc` contract).
            unsafe { self.0.lock().deallocate(pointer, layout) };
        }
    }
}
