//! Scratch: the intermediate memory a request needs between two stages (the compressed bytes of
//! a GDeflate file request, between its reads and its decodes), taken from one fixed budget per
//! executor.
//!
//! Lowering sizes a request's scratch but allocates nothing. The request's `Acquire` node takes
//! the bytes from the [`ScratchPool`] when it runs, or waits in the pool's queue (deferred, not
//! holding a worker) while the budget is used up; its `Release` node, which runs whether the
//! request succeeded, failed or was cancelled, hands them back and lets the next waiters in. So
//! however many compressed requests are queued, the compressed bytes held at once stay within
//! the budget. One exception keeps every request possible: a request larger than the whole
//! budget is let in alone, when nothing else holds scratch.
//!
//! Waiters are served first come, first served (a large request at the head is not overtaken
//! forever by small ones). A waiter whose request is cancelled leaves the queue at once: every
//! cancellation entry point sweeps it (`ScratchPool::sweep`).

use std::collections::VecDeque;
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::buffer::RawBytes;
use crate::error::{Error, ErrorKind, Result};
use crate::stage::PendingNode;

/// What the pool holds and has held (see [`crate::Executor::scratch`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchStats {
    /// The budget, bytes.
    pub budget: u64,
    /// Bytes held by requests now.
    pub in_use: u64,
    /// The most bytes held at once since the executor started.
    pub peak: u64,
    /// Acquisitions that had to wait for bytes to come back.
    pub waits: u64,
    /// Requests waiting now.
    pub waiting: usize,
}

/// How an acquisition went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The bytes are allocated; the node is done.
    Now,
    /// The node waits in the queue (or was cancelled there); the pool completes it.
    Queued,
}

struct Waiter {
    node: PendingNode,
    scratch: NonNull<Scratch>,
}

// SAFETY: the scratch pointer is to a resource of the waiting node's batch, which stays alive
// while the node is unfinished (the pending node is that guarantee); `Scratch` is `Sync`.
unsafe impl Send for Waiter {}

#[derive(Default)]
struct PoolState {
    stats: ScratchStats,
    waiters: VecDeque<Waiter>,
}

/// The executor's scratch budget and the requests waiting on it.
pub(crate) struct ScratchPool {
    state: Mutex<PoolState>,
}

impl fmt::Debug for ScratchPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchPool").field("stats", &self.stats()).finish()
    }
}

impl ScratchPool {
    pub fn new(budget: u64) -> Arc<Self> {
        Arc::new(ScratchPool {
            state: Mutex::new(PoolState {
                stats: ScratchStats {
                    budget,
                    ..ScratchStats::default()
                },
                waiters: VecDeque::new(),
            }),
        })
    }

    pub fn stats(&self) -> ScratchStats {
        let state = self.lock();
        ScratchStats {
            waiting: state.waiters.len(),
            ..state.stats
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `scratch`'s bytes from the budget for the `Acquire` node running now. Returns
    /// [`Acquired::Now`] with the bytes allocated, or [`Acquired::Queued`] after handing the node
    /// (made by `defer`) to the queue, which completes it when bytes come back, or cancels it if
    /// its request is cancelled first.
    ///
    /// `scratch` must belong to the node's batch, so it lives while the node is unfinished.
    pub fn acquire(self: &Arc<Self>, scratch: &Scratch, defer: impl FnOnce() -> PendingNode) -> Result<Acquired> {
        let len = scratch.len as u64;
        let mut state = self.lock();
        if state.waiters.is_empty() && state.stats.admits(len) {
            state.stats.take(len);
            drop(state);
            scratch.fill(self)?;
            return Ok(Acquired::Now);
        }
        let node = defer();
        // Checked under the lock: a cancellation tombstones before it sweeps under this lock,
        // so either its tombstone is visible here or its sweep will find the node queued.
        if node.is_tombstoned() {
            drop(state);
            node.cancel();
            return Ok(Acquired::Queued);
        }
        state.stats.waits += 1;
        state.waiters.push_back(Waiter {
            node,
            scratch: NonNull::from(scratch),
        });
        Ok(Acquired::Queued)
    }

    /// Returns `len` bytes to the budget and admits the waiters that now fit, in order.
    fn give_back(self: &Arc<Self>, len: u64) {
        let admitted = {
            let mut state = self.lock();
            state.stats.in_use -= len;
            let mut admitted = Vec::new();
            while let Some(front) = state.waiters.front() {
                // SAFETY: a queued waiter's node is unfinished, which keeps its batch (and this
                // scratch resource of it) alive.
                let need = unsafe { front.scratch.as_ref() }.len as u64;
                if !state.stats.admits(need) {
                    break;
                }
                state.stats.take(need);
                admitted.push(state.waiters.pop_front().expect("front exists"));
            }
            admitted
        };
        // Allocate and complete outside the lock: completing releases successors, and the
        // bytes are already counted.
        for waiter in admitted {
            // SAFETY: as above; the node is still unfinished until completed here.
            let result = unsafe { waiter.scratch.as_ref() }.fill(self).map(|()| 0);
            waiter.node.complete(result);
        }
    }

    /// Cancels every queued waiter whose request has been cancelled.
    pub fn sweep(&self) {
        let cancelled: VecDeque<Waiter> = {
            let mut state = self.lock();
            let (gone, kept) = state.waiters.drain(..).partition(|w| w.node.is_tombstoned());
            state.waiters = kept;
            gone
        };
        for waiter in cancelled {
            waiter.node.cancel();
        }
    }
}

impl ScratchStats {
    /// Whether `len` more bytes may be held: within the budget, or alone.
    fn admits(&self, len: u64) -> bool {
        self.in_use == 0 || self.in_use + len <= self.budget
    }

    fn take(&mut self, len: u64) {
        self.in_use += len;
        self.peak = self.peak.max(self.in_use);
    }
}

/// One request's scratch: a size from lowering, and bytes while it holds them.
pub(crate) struct Scratch {
    len: usize,
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

    /// The bytes, while held. The `Acquire` node that filled them is a predecessor of every
    /// node that asks (lowering's shape), and its completion publishes the pointer.
    pub fn bytes(&self) -> Option<RawBytes> {
        if self.len == 0 {
            return Some(RawBytes {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        NonNull::new(self.ptr.load(Ordering::Acquire)).map(|ptr| RawBytes { ptr, len: self.len })
    }

    /// Allocates the bytes the pool has already counted for this scratch.
    fn fill(&self, pool: &Arc<ScratchPool>) -> Result<()> {
        let _ = self.pool.set(pool.clone());
        if self.len == 0 {
            return Ok(());
        }
        let Some(raw) = crate::memory::allocate_zeroed(self.len) else {
            pool.give_back(self.len as u64);
            return Err(Error::new(
                ErrorKind::Io,
                format!("cannot allocate {} bytes of scratch", self.len),
            ));
        };
        let previous = self.ptr.swap(raw.as_ptr(), Ordering::AcqRel);
        debug_assert!(previous.is_null(), "scratch acquired twice");
        Ok(())
    }

    /// Frees the bytes, if held, and returns them to the pool. The `Release` node calls this
    /// after every node that touches them; dropping the batch calls it again, harmlessly.
    pub fn release(&self) {
        let Some(raw) = NonNull::new(self.ptr.swap(ptr::null_mut(), Ordering::AcqRel)) else {
            return;
        };
        // SAFETY: allocated by `allocate_zeroed(self.len)` in `fill`; the swap made this the
        // only free.
        unsafe { crate::memory::free(raw, self.len) };
        if let Some(pool) = self.pool.get() {
            pool.give_back(self.len as u64);
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
    fn the_budget_admits_within_it_or_alone() {
        let mut stats = ScratchStats {
            budget: 100,
            ..ScratchStats::default()
        };
        assert!(stats.admits(1000), "an oversized request is let in alone");
        stats.take(60);
        assert!(stats.admits(40));
        assert!(!stats.admits(41));
        stats.take(40);
        assert_eq!((stats.in_use, stats.peak), (100, 100));
    }

    #[test]
    fn release_returns_bytes_once() {
        for len in [1, 4096 * 3, 300 << 10] {
            let pool = ScratchPool::new(1 << 20);
            let scratch = Scratch::new(len);
            pool.lock().stats.take(len as u64);
            scratch.fill(&pool).unwrap();
            let bytes = scratch.bytes().unwrap();
            assert_eq!(bytes.len, len);
            assert_eq!(bytes.ptr.as_ptr() as usize % crate::memory::PAGE, 0);
            // SAFETY: held, and nothing else uses it.
            let slice = unsafe { std::slice::from_raw_parts_mut(bytes.ptr.as_ptr(), len) };
            assert!(slice.iter().all(|&b| b == 0), "scratch starts zeroed");
            slice.fill(7);
            scratch.release();
            assert!(scratch.bytes().is_none());
            scratch.release();
            drop(scratch);
            let stats = pool.stats();
            assert_eq!((stats.in_use, stats.peak), (0, len as u64));
        }
    }
}
