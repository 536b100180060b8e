//! Scratch: the intermediate memory a request needs between two stages (the compressed bytes of
//! a GDeflate file request, between its reads and its decodes), taken from one fixed budget per
//! executor.
//!
//! Lowering sizes a request's scratch but allocates nothing. The request's `Acquire` node takes
//! a block from the `ScratchPool` when it runs, or waits in the pool's queue (deferred, not
//! holding a worker) while the budget is used up; its `Release` node, which runs whether the
//! request succeeded, failed or was cancelled, hands the block back and lets the next waiters
//! in. So however many compressed requests are queued, the memory held for them stays within
//! the budget. One exception keeps every request possible: a request larger than the whole
//! budget is let in alone, when nothing else holds scratch.
//!
//! Blocks come in size classes (four per doubling, so at most a quarter is slack) and go back
//! to a cache when released: a steady stream of loads reuses the same blocks, already mapped,
//! and allocates nothing. Blocks in use plus blocks cached never exceed the budget; the oldest
//! cached blocks are unmapped first when a new class needs room.
//!
//! A GPU backend may watch blocks come and go ([`ScratchHooks`]): it imports a block into the GPU
//! (`VK_EXT_external_memory_host`) so uploads copy straight from where reads landed, and must
//! let go of it before the block is unmapped.
//!
//! Waiters sit in a [`WaitQueue`] (`crate::wait`): served first come, first served (a large
//! request at the head is not overtaken forever by small ones), and a waiter whose request is
//! cancelled leaves the queue at once, since every cancellation entry point sweeps it
//! (`ScratchPool::sweep`).

use std::collections::VecDeque;
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::buffer::RawBytes;
use crate::error::{Error, ErrorKind, Result};
use crate::memory::PAGE;
use crate::stage::PendingNode;
use crate::wait::{WaitQueue, Waiter};

/// What the pool holds and has held (see [`crate::Executor::scratch`]). Sizes are of blocks,
/// each a request's compressed size rounded up to its class ([`block_size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchStats {
    /// The budget, bytes.
    pub budget: u64,
    /// Bytes of blocks held by requests now.
    pub in_use: u64,
    /// The most bytes held at once since the executor started.
    pub peak: u64,
    /// Bytes of released blocks kept for reuse.
    pub cached: u64,
    /// Blocks allocated (the rest of the acquisitions reused a cached one).
    pub allocations: u64,
    /// Acquisitions that had to wait for bytes to come back.
    pub waits: u64,
    /// Requests waiting now.
    pub waiting: usize,
}

/// The block a request of `len` bytes of scratch takes: a page at least, then four classes per
/// doubling (so at most 25% more than asked).
pub fn block_size(len: usize) -> usize {
    if len <= PAGE {
        return PAGE;
    }
    let top = usize::BITS - 1 - (len - 1).leading_zeros();
    let step = 1usize << top.saturating_sub(2).max(PAGE.trailing_zeros());
    len.div_ceil(step) * step
}

/// How an acquisition went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The bytes are allocated; the node is done.
    Now,
    /// The node is deferred: it waits in the queue, or its request was cancelled as it was
    /// about to; the pool has it and completes it.
    Deferred,
}

/// Told when the scratch pool maps a block and before it unmaps one: blocks are page-aligned,
/// a whole number of pages, and live from one call to the other (reused, in between, by any
/// number of requests, each between its `Acquire` and `Release`). Called on worker threads,
/// outside the pool's lock; keep it short and do not panic.
pub trait ScratchHooks: Send + Sync + fmt::Debug {
    /// `len` bytes at `ptr` are a new block.
    fn mapped(&self, ptr: NonNull<u8>, len: usize);
    /// The block at `ptr` is about to be unmapped: nothing may touch it afterwards. No request
    /// holds it (every node that used it has completed).
    fn unmapping(&self, ptr: NonNull<u8>, len: usize);
}

/// Zeroed-at-birth, page-aligned memory of one size class.
struct Block {
    ptr: NonNull<u8>,
    size: usize,
    hooks: Option<Arc<dyn ScratchHooks>>,
}

// SAFETY: a block is an owned allocation, like a `Box<[u8]>`.
unsafe impl Send for Block {}

impl Block {
    fn allocate(size: usize, hooks: &Option<Arc<dyn ScratchHooks>>) -> Option<Block> {
        let ptr = crate::memory::allocate_zeroed(size, crate::memory::Pages::Huge)?;
        if let Some(hooks) = hooks {
            hooks.mapped(ptr, size);
        }
        Some(Block {
            ptr,
            size,
            hooks: hooks.clone(),
        })
    }

    /// The block's memory, handed over unfreed (a held `Scratch` keeps the address, and its
    /// `release` rebuilds the block). Its reference to the hooks goes now: forgetting the block
    /// whole leaked one per acquisition, which kept the hooks' owner (a GPU context and its
    /// memory) alive after its executor had gone.
    fn into_raw(self) -> NonNull<u8> {
        let mut block = std::mem::ManuallyDrop::new(self);
        block.hooks = None;
        block.ptr
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(hooks) = &self.hooks {
            hooks.unmapping(self.ptr, self.size);
        }
        // SAFETY: allocated by `allocate_zeroed(self.size)`; dropping the block is the only free.
        unsafe { crate::memory::free(self.ptr, self.size) };
    }
}

/// The scratch a waiting `Acquire` node asks for.
struct Wanted(NonNull<Scratch>);

// SAFETY: the scratch is a resource of the waiting node's batch, which stays alive while the
// node is unfinished (its pending node in the same waiter is that guarantee); `Scratch` is `Sync`.
unsafe impl Send for Wanted {}

impl Wanted {
    fn scratch(&self) -> &Scratch {
        // SAFETY: see the `Send` impl: the waiter's node is unfinished while this is queued or
        // being admitted, which keeps the batch, and so this resource of it, alive.
        unsafe { self.0.as_ref() }
    }
}

#[derive(Default)]
struct PoolState {
    budget: Budget,
    waiters: WaitQueue<Wanted>,
}

/// The bytes held and cached against the budget.
#[derive(Default)]
struct Budget {
    stats: ScratchStats,
    /// Released blocks, oldest first.
    cache: VecDeque<Block>,
}

impl Budget {
    /// Whether a block of `size` may be held now: within the budget, or alone.
    fn admits(&self, size: usize) -> bool {
        self.stats.in_use == 0 || self.stats.in_use + size as u64 <= self.stats.budget
    }

    /// Counts a block of `size` as held and finds one: a cached block of its class, or `None`
    /// (allocate one) after moving into `evicted` the oldest cached blocks that no longer fit
    /// beside it.
    fn admit(&mut self, size: usize, evicted: &mut Vec<Block>) -> Option<Block> {
        self.stats.in_use += size as u64;
        self.stats.peak = self.stats.peak.max(self.stats.in_use);
        if let Some(at) = self.cache.iter().position(|b| b.size == size) {
            let block = self.cache.remove(at).expect("position is in range");
            self.stats.cached -= size as u64;
            return Some(block);
        }
        while self.stats.in_use + self.stats.cached > self.stats.budget {
            let Some(old) = self.cache.pop_front() else { break };
            self.stats.cached -= old.size as u64;
            evicted.push(old);
        }
        self.stats.allocations += 1;
        None
    }
}

/// The executor's scratch budget, its cache of blocks, and the requests waiting on it.
pub(crate) struct ScratchPool {
    state: Mutex<PoolState>,
    hooks: Option<Arc<dyn ScratchHooks>>,
}

impl fmt::Debug for ScratchPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchPool").field("stats", &self.stats()).finish()
    }
}

impl ScratchPool {
    pub fn new(budget: u64, hooks: Option<Arc<dyn ScratchHooks>>) -> Arc<Self> {
        Arc::new(ScratchPool {
            hooks,
            state: Mutex::new(PoolState {
                budget: Budget {
                    stats: ScratchStats {
                        budget,
                        ..ScratchStats::default()
                    },
                    ..Budget::default()
                },
                ..PoolState::default()
            }),
        })
    }

    pub fn stats(&self) -> ScratchStats {
        let state = self.lock();
        ScratchStats {
            waits: state.waiters.waits(),
            waiting: state.waiters.len(),
            ..state.budget.stats
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a block for `scratch` for the `Acquire` node running now. Returns
    /// [`Acquired::Now`] with the block installed, or [`Acquired::Deferred`] after handing the
    /// node (made by `defer`) to the queue, which completes it when bytes come back, or cancels
    /// it if its request is cancelled first.
    ///
    /// `scratch` must belong to the node's batch, so it lives while the node is unfinished.
    pub fn acquire(self: &Arc<Self>, scratch: &Scratch, defer: impl FnOnce() -> PendingNode) -> Result<Acquired> {
        let size = scratch.block_size();
        let mut state = self.lock();
        if state.waiters.is_empty() && state.budget.admits(size) {
            let mut evicted = Vec::new();
            let cached = state.budget.admit(size, &mut evicted);
            drop(state);
            drop(evicted);
            self.install(scratch, cached)?;
            return Ok(Acquired::Now);
        }
        let refused = state.waiters.push(defer(), Wanted(NonNull::from(scratch)));
        drop(state);
        if let Err(waiter) = refused {
            // Cancelled as it was about to wait: it ends here, outside the lock.
            waiter.node.cancel();
        }
        Ok(Acquired::Deferred)
    }

    /// Gives `scratch` its block: `cached`, or a new one. On failure the block's bytes go back
    /// to the budget.
    fn install(self: &Arc<Self>, scratch: &Scratch, cached: Option<Block>) -> Result<()> {
        let size = scratch.block_size();
        let block = match cached.or_else(|| Block::allocate(size, &self.hooks)) {
            Some(block) => block,
            None => {
                self.give_back(None, size);
                return Err(Error::new(
                    ErrorKind::OutOfMemory,
                    format!("cannot allocate {size} bytes of scratch; lower the scratch budget or the request's size"),
                ));
            }
        };
        scratch.install(self, block);
        Ok(())
    }

    /// Returns a block of `size` (or, with `None`, the count of one that could not be
    /// allocated) to the budget, caches it, and admits the waiters that now fit.
    fn give_back(self: &Arc<Self>, block: Option<Block>, size: usize) {
        let mut evicted = Vec::new();
        let (admitted, cancelled) = {
            let mut state = self.lock();
            let budget = &mut state.budget;
            budget.stats.in_use -= size as u64;
            if let Some(block) = block {
                // An over-budget block is not worth keeping: it would hold the whole budget.
                if (size as u64) <= budget.stats.budget {
                    budget.stats.cached += size as u64;
                    budget.cache.push_back(block);
                } else {
                    evicted.push(block);
                }
            }
            state.admit_waiters(&mut evicted, Vec::new())
        };
        drop(evicted);
        self.finish(admitted, cancelled);
    }

    /// Cancels every queued waiter whose request has been cancelled, and admits those behind
    /// them that now fit.
    pub fn sweep(self: &Arc<Self>) {
        let mut evicted = Vec::new();
        let (admitted, cancelled) = {
            let mut state = self.lock();
            let mut cancelled = Vec::new();
            state.waiters.sweep(&mut cancelled);
            state.admit_waiters(&mut evicted, cancelled)
        };
        drop(evicted);
        self.finish(admitted, cancelled);
    }

    /// Outside the lock (completing releases successors; the bytes are already counted):
    /// installs every admitted waiter's block, then completes them, and cancels the cancelled.
    /// Installing first means a completion that panics cannot strand a counted block: the rest
    /// of the waiters then drop as abandoned, and their `Release` nodes give the blocks back.
    fn finish(self: &Arc<Self>, admitted: Vec<(Waiter<Wanted>, Option<Block>)>, cancelled: Vec<Waiter<Wanted>>) {
        let results: Vec<(Waiter<Wanted>, Result<u64>)> = admitted
            .into_iter()
            .map(|(waiter, cached)| {
                let result = self.install(waiter.item.scratch(), cached).map(|()| 0);
                (waiter, result)
            })
            .collect();
        for (waiter, result) in results {
            waiter.node.complete(result);
        }
        for waiter in cancelled {
            waiter.node.cancel();
        }
    }
}

impl PoolState {
    /// Takes the waiters that now fit off the front of the queue, in order, each with its
    /// cached block if there is one; cancelled ones met on the way join `cancelled`.
    #[allow(clippy::type_complexity)]
    fn admit_waiters(
        &mut self,
        evicted: &mut Vec<Block>,
        mut cancelled: Vec<Waiter<Wanted>>,
    ) -> (Vec<(Waiter<Wanted>, Option<Block>)>, Vec<Waiter<Wanted>>) {
        let mut admitted = Vec::new();
        let budget = &mut self.budget;
        self.waiters.admit(
            |waiter| {
                let need = waiter.item.scratch().block_size();
                if !budget.admits(need) {
                    return Some(waiter);
                }
                let cached = budget.admit(need, evicted);
                admitted.push((waiter, cached));
                None
            },
            &mut cancelled,
        );
        (admitted, cancelled)
    }
}

/// One request's scratch: a size from lowering, and a block while it holds one.
pub(crate) struct Scratch {
    len: usize,
    /// The block's address while held (its size is `block_size(len)`).
    ptr: AtomicPtr<u8>,
    pool: OnceLock<Arc<ScratchPool>>,
}

impl Scratch {
    pub fn new(len: usize) -> Self {
        Scratch {
            len,
            ptr: AtomicPtr::new(ptr::null_mut()),
            pool: OnceLock::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn block_size(&self) -> usize {
        block_size(self.len)
    }

    /// The bytes, while held. The `Acquire` node that installed them is a predecessor of every
    /// node that asks (lowering's shape), and its completion publishes the pointer.
    pub fn bytes(&self) -> Option<RawBytes> {
        NonNull::new(self.ptr.load(Ordering::Acquire)).map(|ptr| RawBytes { ptr, len: self.len })
    }

    fn install(&self, pool: &Arc<ScratchPool>, block: Block) {
        debug_assert_eq!(block.size, self.block_size());
        let _ = self.pool.set(pool.clone());
        // The scratch owns the block now; `release` rebuilds it.
        let previous = self.ptr.swap(block.into_raw().as_ptr(), Ordering::AcqRel);
        debug_assert!(previous.is_null(), "scratch acquired twice");
    }

    /// Hands the block back to the pool, if held. The `Release` node calls this after every
    /// node that touches the bytes; dropping the batch calls it again, harmlessly.
    pub fn release(&self) {
        let Some(ptr) = NonNull::new(self.ptr.swap(ptr::null_mut(), Ordering::AcqRel)) else {
            return;
        };
        let block = Block {
            ptr,
            size: self.block_size(),
            hooks: self.pool.get().and_then(|pool| pool.hooks.clone()),
        };
        match self.pool.get() {
            Some(pool) => pool.give_back(Some(block), self.block_size()),
            None => drop(block),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scratch")
            .field("len", &self.len)
            .field("held", &!self.ptr.load(Ordering::Relaxed).is_null())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_pages_then_four_classes_per_doubling() {
        assert_eq!(block_size(0), PAGE);
        assert_eq!(block_size(PAGE), PAGE);
        assert_eq!(block_size(PAGE + 1), 2 * PAGE);
        for len in [5000, 65_536, 65_537, 100_000, 999_999, 1 << 20, (1 << 20) + 1, 3 << 29] {
            let size = block_size(len);
            assert!(size >= len && size.is_multiple_of(PAGE), "{len} -> {size}");
            assert!(size as f64 <= len as f64 * 1.25 + PAGE as f64, "{len} -> {size}");
        }
        assert_eq!(block_size((1 << 20) + 1), (1 << 20) + (1 << 18));
    }

    fn held(pool: &Arc<ScratchPool>, len: usize) -> Scratch {
        let scratch = Scratch::new(len);
        let mut state = pool.lock();
        assert!(state.budget.admits(scratch.block_size()));
        let mut evicted = Vec::new();
        let cached = state.budget.admit(scratch.block_size(), &mut evicted);
        drop(state);
        pool.install(&scratch, cached).unwrap();
        scratch
    }

    #[test]
    fn blocks_are_reused_and_returned_once() {
        let pool = ScratchPool::new(1 << 20, None);
        for len in [1, 4096 * 3, 300 << 10] {
            let scratch = held(&pool, len);
            let bytes = scratch.bytes().unwrap();
            assert_eq!(bytes.len, len);
            assert_eq!(bytes.ptr.as_ptr() as usize % PAGE, 0);
            // SAFETY: held, and nothing else uses it.
            unsafe { std::slice::from_raw_parts_mut(bytes.ptr.as_ptr(), len) }.fill(7);
            scratch.release();
            assert!(scratch.bytes().is_none());
            scratch.release();
        }
        let again = held(&pool, 300 << 10);
        let stats = pool.stats();
        assert_eq!(stats.allocations, 3, "the same class comes from the cache");
        assert_eq!(stats.in_use, block_size(300 << 10) as u64);
        assert_eq!(stats.cached, (PAGE + 3 * PAGE) as u64);
        drop(again);
        assert_eq!(pool.stats().in_use, 0);
    }

    /// Records the blocks the hooks hear of, mapped and not yet unmapped.
    #[derive(Debug, Default)]
    struct Watching {
        live: Mutex<Vec<(usize, usize)>>,
        mapped: std::sync::atomic::AtomicUsize,
    }

    impl ScratchHooks for Watching {
        fn mapped(&self, ptr: NonNull<u8>, len: usize) {
            self.mapped.fetch_add(1, Ordering::SeqCst);
            self.live.lock().unwrap().push((ptr.as_ptr() as usize, len));
        }
        fn unmapping(&self, ptr: NonNull<u8>, len: usize) {
            let mut live = self.live.lock().unwrap();
            let at = live.iter().position(|&b| b == (ptr.as_ptr() as usize, len));
            live.remove(at.expect("unmapping a block that was mapped, once"));
        }
    }

    #[test]
    fn hooks_hear_of_every_block_mapped_and_unmapped_once() {
        let watching = Arc::new(Watching::default());
        let pool = ScratchPool::new(1 << 20, Some(watching.clone()));
        for len in [600 << 10, 300 << 10, 600 << 10, 700 << 10, 3 << 20] {
            let scratch = held(&pool, len);
            let bytes = scratch.bytes().unwrap();
            let live = watching.live.lock().unwrap().clone();
            assert!(
                live.contains(&(bytes.ptr.as_ptr() as usize, block_size(len))),
                "a held block is one the hooks know"
            );
            drop(scratch);
        }
        assert!(
            watching.mapped.load(Ordering::SeqCst) < 5,
            "cached blocks are reused, not mapped again"
        );
        let cached = pool.stats().cached as usize;
        let live: usize = watching.live.lock().unwrap().iter().map(|b| b.1).sum();
        assert_eq!(live, cached, "evicted and over-budget blocks were unmapped");
        drop(pool);
        assert!(
            watching.live.lock().unwrap().is_empty(),
            "dropping the pool unmaps the cache"
        );
        assert_eq!(
            Arc::strong_count(&watching),
            1,
            "no block, held or cached, keeps the hooks once the pool has gone"
        );
    }

    #[test]
    fn cached_and_held_blocks_stay_within_the_budget() {
        let pool = ScratchPool::new(1 << 20, None);
        for len in [600 << 10, 300 << 10, 500 << 10, 700 << 10] {
            drop(held(&pool, len));
            let stats = pool.stats();
            assert!(stats.in_use + stats.cached <= 1 << 20, "{stats:?}");
        }
        // Alone and over budget: let in, then not cached.
        drop(held(&pool, 3 << 20));
        let stats = pool.stats();
        assert_eq!((stats.in_use, stats.peak), (0, 3 << 20));
        assert!(stats.cached <= 1 << 20);
    }
}
