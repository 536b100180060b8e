//! The wait queue: nodes deferred until a fixed budget has room for them.
//!
//! Every budget dsr keeps (request scratch here, the io_uring ring's staging slots and queue
//! room, GPU staging next) makes nodes that find it used up wait, deferred rather than holding
//! a worker, and lets them in first come, first served as room comes back. One queue type
//! serves them all, so they share one admission order and one tombstone sweep:
//!
//! - [`WaitQueue::push`] refuses a node whose request is already tombstoned. The queue's owner
//!   holds its lock around the push, and a cancellation tombstones before it sweeps under that
//!   same lock, so a node either sees its tombstone here or is found by the sweep: none waits
//!   forever for a request that no longer wants it.
//! - [`WaitQueue::admit`] takes waiters off the front while the budget takes them; the first that
//!   does not fit stops it (a large waiter is not overtaken forever by small ones).
//! - [`WaitQueue::sweep`] takes every tombstoned waiter out, wherever it stands.
//!
//! The queue completes nothing itself: waiters it gives back are completed by the owner after it
//! has released its lock (completing a node may run its successors, which may come back to the
//! same budget).

use std::collections::VecDeque;
use std::fmt;

use crate::stage::PendingNode;

/// A deferred node and what it waits with (its share of the budget, an operation to start).
#[derive(Debug)]
pub struct Waiter<T> {
    /// The node, completed by whoever takes the waiter out of the queue.
    pub node: PendingNode,
    /// What the node brings: what it needs of the budget, or the work it starts once admitted.
    pub item: T,
}

/// A first-come, first-served queue of nodes waiting for a budget.
pub struct WaitQueue<T> {
    waiters: VecDeque<Waiter<T>>,
    /// Nodes that have waited here, in all.
    waits: u64,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue {
            waiters: VecDeque::new(),
            waits: 0,
        }
    }
}

impl<T> fmt::Debug for WaitQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitQueue")
            .field("waiting", &self.waiters.len())
            .field("waits", &self.waits)
            .finish()
    }
}

impl<T> WaitQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nodes waiting now.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether no node waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Nodes that have waited here since the queue was made.
    pub fn waits(&self) -> u64 {
        self.waits
    }

    /// Queues `node` behind the others. Hands it back (`Err`) if its request has already been
    /// tombstoned: the caller then completes it as cancelled. Call with the budget's lock held
    /// (see the module docs).
    pub fn push(&mut self, node: PendingNode, item: T) -> Result<(), Waiter<T>> {
        let waiter = Waiter { node, item };
        if waiter.node.is_tombstoned() {
            return Err(waiter);
        }
        self.waits += 1;
        self.waiters.push_back(waiter);
        Ok(())
    }

    /// Admits waiters in arrival order: `admit` takes the front waiter, or hands it back
    /// (`Some`) when the budget has no room for it yet, which ends the admission. Tombstoned
    /// waiters met on the way are moved to `cancelled` instead.
    pub fn admit(&mut self, mut admit: impl FnMut(Waiter<T>) -> Option<Waiter<T>>, cancelled: &mut Vec<Waiter<T>>) {
        while let Some(waiter) = self.waiters.pop_front() {
            if waiter.node.is_tombstoned() {
                cancelled.push(waiter);
                continue;
            }
            if let Some(waiter) = admit(waiter) {
                self.waiters.push_front(waiter);
                return;
            }
        }
    }

    /// The tombstone sweep: moves every waiter whose request was cancelled (or failed) to
    /// `cancelled`, wherever it stands in the queue.
    pub fn sweep(&mut self, cancelled: &mut Vec<Waiter<T>>) {
        if !self.waiters.iter().any(|w| w.node.is_tombstoned()) {
            return;
        }
        let (gone, kept): (VecDeque<_>, VecDeque<_>) = self.waiters.drain(..).partition(|w| w.node.is_tombstoned());
        self.waiters = kept;
        cancelled.extend(gone);
    }

    /// Takes every waiter out, in order (for a budget that is shutting down).
    pub fn drain(&mut self) -> impl Iterator<Item = Waiter<T>> + '_ {
        self.waiters.drain(..)
    }
}
