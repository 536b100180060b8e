//! The per-batch bumpalo arena that holds a compiled graph's columns, and the one small unsafe
//! wrapper that lets the graph own both the arena and slices into it.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;

use bumpalo::Bump;

/// A bump arena that is only allocated from while a graph compiles, then only dropped.
pub(crate) struct Arena(Bump);

// SAFETY: `Bump` is not `Sync` because allocating through `&Bump` mutates it. An `Arena` is only
// allocated from by `GraphBuilder::compile`, through the `&self` it holds before the graph is
// shared; afterwards nothing calls into the `Bump` but `Drop` (which has `&mut`).
unsafe impl Sync for Arena {}

impl Arena {
    pub fn new() -> Self {
        Arena(Bump::new())
    }

    pub fn allocated_bytes(&self) -> usize {
        self.0.allocated_bytes()
    }

    /// Copies `items` into the arena.
    pub fn copy_slice<T: Copy>(&self, items: &[T]) -> ArenaSlice<T> {
        if items.is_empty() {
            return ArenaSlice::empty();
        }
        ArenaSlice::new(self.0.alloc_slice_copy(items))
    }

    /// `len` items made by `make`, in the arena. `T` must not need dropping: the arena never
    /// runs destructors.
    pub fn fill_with<T>(&self, len: usize, make: impl FnMut(usize) -> T) -> ArenaSlice<T> {
        const { assert!(!std::mem::needs_drop::<T>(), "arena columns are never dropped") };
        if len == 0 {
            return ArenaSlice::empty();
        }
        ArenaSlice::new(self.0.alloc_slice_fill_with(len, make))
    }
}

/// A slice living in an [`Arena`] owned by the same struct, declared before the arena so it is
/// dropped first. Read-only after construction.
pub(crate) struct ArenaSlice<T> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: an `ArenaSlice<T>` is a shared `&[T]` in disguise: sending or sharing it is sound when
// sharing `&[T]` is, i.e. when `T: Sync`.
unsafe impl<T: Sync> Send for ArenaSlice<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for ArenaSlice<T> {}

impl<T> ArenaSlice<T> {
    /// No items, and no allocation: an empty `Bump` hands out zero-sized allocations from one
    /// static chunk shared by every arena, whose pointer it rewrites, so arenas compiling on two
    /// threads at once raced there (ThreadSanitizer, session 10; graphs of a batch of entries
    /// only have empty columns).
    fn empty() -> Self {
        ArenaSlice {
            ptr: NonNull::dangling(),
            len: 0,
        }
    }

    fn new(slice: &mut [T]) -> Self {
        ArenaSlice {
            len: slice.len(),
            ptr: NonNull::from(slice).cast(),
        }
    }
}

impl<T> Deref for ArenaSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: (1) `ptr`/`len` came from a live slice the arena allocated, or are a dangling,
        // aligned pointer with no items (valid for an empty slice); (2) the arena lives
        // in the same owner and outlives this slice (field order); (3) the arena never moves or
        // frees its chunks before it drops, and nothing writes the slice after construction.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: fmt::Debug> fmt::Debug for ArenaSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
