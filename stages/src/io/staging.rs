//! The staging pool: one page-aligned, pre-faulted allocation cut into equal slots, registered
//! with io_uring as fixed buffers. Reads that cannot land in their destination (direct I/O into
//! an unaligned place) borrow a slot; when none is free the read waits. The pool never grows:
//! the budget is what the caller gave, however many requests are queued.
//!
//! The memory is made on first use, not with the pool: a load from the page cache, or direct
//! reads that land in place, never need a slot, and faulting in the default 64 MiB up front was
//! most of a small load's whole-process time (docs/benchmarks.md, "Staging on first use").

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

/// Alignment of the pool and of every slot (direct I/O needs the logical block size; 4 KiB
/// covers every common device).
pub const STAGING_ALIGN: usize = 4096;

/// A fixed budget of staging memory.
pub struct StagingPool {
    memory: OnceLock<Memory>,
    slot_size: usize,
    slots: usize,
    free: Mutex<Vec<u16>>,
}

/// The pool's allocation, once made.
struct Memory(NonNull<u8>);

// SAFETY: a plain address of memory the pool owns; what may be done through it is the pool's
// business (below).
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

// SAFETY: the pool owns its allocation; a slot's bytes are only reached by the one operation that
// holds the slot (the free list hands each index to one holder at a time).
unsafe impl Send for StagingPool {}
// SAFETY: as above: shared access hands out disjoint slots.
unsafe impl Sync for StagingPool {}

impl fmt::Debug for StagingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagingPool")
            .field("slots", &self.slots)
            .field("slot_size", &self.slot_size)
            .field("free", &self.free_slots())
            .finish()
    }
}

impl StagingPool {
    /// A pool of `budget` bytes in slots of `slot_size` (both rounded up to 4 KiB; at least one
    /// slot, at most 65535). No memory is taken until [`StagingPool::memory`] is first called.
    pub fn new(budget: usize, slot_size: usize) -> Self {
        let slot_size = slot_size.max(STAGING_ALIGN).div_ceil(STAGING_ALIGN) * STAGING_ALIGN;
        let slots = budget.div_ceil(slot_size).clamp(1, u16::MAX as usize);
        StagingPool {
            memory: OnceLock::new(),
            slot_size,
            slots,
            free: Mutex::new((0..slots as u16).rev().collect()),
        }
    }

    fn layout(&self) -> Layout {
        Layout::from_size_align(self.slots * self.slot_size, STAGING_ALIGN).expect("staging layout")
    }

    /// The pool's memory: made, and every page touched so no read pays a first-touch fault, on
    /// the first call.
    pub fn memory(&self) -> NonNull<u8> {
        self.memory
            .get_or_init(|| {
                let layout = self.layout();
                // SAFETY: the layout has a non-zero size.
                let raw = unsafe { alloc::alloc(layout) };
                let base = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
                for page in (0..layout.size()).step_by(STAGING_ALIGN) {
                    // SAFETY: `page` is inside the allocation just made, which nothing else
                    // references yet.
                    unsafe { base.as_ptr().add(page).write_volatile(0) };
                }
                Memory(base)
            })
            .0
    }

    /// Whether the memory has been made.
    pub fn has_memory(&self) -> bool {
        self.memory.get().is_some()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// How many slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slots not held by any operation.
    pub fn free_slots(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Takes a free slot, if there is one.
    pub fn try_acquire(&self) -> Option<u16> {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Returns a slot. Only its holder may, once, after the kernel is done with it.
    pub fn release(&self, slot: u16) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        debug_assert!(!free.contains(&slot), "staging slot {slot} released twice");
        free.push(slot);
    }

    /// Start of slot `slot`.
    pub fn slot_ptr(&self, slot: u16) -> *mut u8 {
        debug_assert!((slot as usize) < self.slots);
        // SAFETY: `slot < slots`, so the offset stays inside the allocation.
        unsafe { self.memory().as_ptr().add(slot as usize * self.slot_size) }
    }

    /// The slots as iovecs, for `io_uring_register_buffers` (index = slot); makes the memory.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.slots as u16)
            .map(|slot| libc::iovec {
                iov_base: self.slot_ptr(slot).cast(),
                iov_len: self.slot_size,
            })
            .collect()
    }
}

impl Drop for StagingPool {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.get() {
            // SAFETY: allocated in `memory` with this layout; the ring that registered it is
            // dropped first (it is declared before the pool in `Ring`).
            unsafe { alloc::dealloc(memory.0.as_ptr(), self.layout()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_and_handed_out_once() {
        let pool = StagingPool::new(40_000, 10_000);
        assert!(!pool.has_memory(), "the memory is made on first use");
        assert_eq!(pool.slot_size(), 12_288);
        assert_eq!(pool.slots(), 4);
        let taken: Vec<_> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
        assert!(pool.try_acquire().is_none(), "the budget is fixed");
        for &s in &taken {
            assert_eq!(pool.slot_ptr(s) as usize % STAGING_ALIGN, 0);
        }
        assert!(pool.has_memory());
        pool.release(taken[2]);
        assert_eq!(pool.try_acquire(), Some(taken[2]));
    }
}
