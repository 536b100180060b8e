//! Completion sources. A reactor owns operations that finish outside the workers (io_uring
//! completions, GPU timeline values) and, when polled by an idle worker, completes the nodes whose
//! operations have finished.
//!
//! Where successors run: a node completed through the [`Completer`] inside [`Reactor::poll`]
//! releases its successors onto the polling worker, and the first one it readies runs inline,
//! inside that call to `poll`, with all the successors that one keeps after it. So a reactor
//! never holds its own lock while it completes nodes: collect what finished under the lock,
//! release it, then complete (a released successor may start an operation on the same source).

use std::fmt;
use std::time::Duration;

use crate::error::Error;
use crate::executor::{complete_pending, WorkerCtx};
use crate::outcome::NodeEnd;
use crate::stage::PendingNode;

/// A source of completions the workers poll when they run out of ready nodes.
pub trait Reactor: Send + Sync + fmt::Debug {
    /// Completes every node whose operation has finished, through `completer`. Returns how many.
    /// A panic here is contained: the nodes being completed fail as abandoned, the worker goes
    /// on.
    fn poll(&self, completer: &mut Completer<'_>) -> usize;

    /// Whether operations are in flight. Idle workers wait in [`Reactor::wait`] rather than
    /// sleeping indefinitely while this is true.
    fn in_flight(&self) -> bool;

    /// Blocks up to `timeout` for a completion to become pollable. The default sleeps: a source
    /// with a blocking wait (io_uring's `GETEVENTS`, `vkWaitSemaphores`) should use it.
    fn wait(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    /// For a worker about to wait on several busy sources at once: submit what is queued, and
    /// return a descriptor that becomes readable when a completion is pollable (an eventfd the
    /// source signals). `poll` must consume the readiness (read the eventfd) *before* it reaps,
    /// so a completion that lands in between leaves the descriptor readable. `None`, the
    /// default, makes the worker fall back to one source's `wait`.
    fn arm(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Requests were cancelled (their nodes tombstoned): let nodes that wait in this source's
    /// queues and belong to them go now, and cut short what can be cut short, rather than at the
    /// next poll. Called from the cancelling thread; complete nodes outside any lock (see the
    /// module docs). The default does nothing.
    fn sweep(&self) {}

    /// The executor is shutting down and its workers have stopped: finish or cut short every
    /// operation still held, completing its node, and return only when the source touches no
    /// memory of any node any more. Called once, last. The default does nothing: a source with
    /// operations in flight must implement it.
    fn drain(&self) {}
}

/// Hands completed nodes back to the executor from inside [`Reactor::poll`]; the successors they
/// release go to the polling worker's own deque, and the first runs inline (see the module docs).
pub struct Completer<'a> {
    pub(crate) worker: &'a WorkerCtx,
}

impl fmt::Debug for Completer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").field("worker", &self.worker.index).finish()
    }
}

impl Completer<'_> {
    /// The index of the polling worker (see [`crate::NodeRef::worker`]).
    pub fn worker(&self) -> usize {
        self.worker.index
    }

    /// Completes `node` with the bytes it produced, or an error.
    pub fn complete(&mut self, node: PendingNode, result: Result<u64, Error>) {
        self.finish(node, result.into());
    }

    /// Completes `node` as cancelled (see [`PendingNode::cancel`]).
    pub fn cancel(&mut self, node: PendingNode) {
        self.finish(node, NodeEnd::Cancelled);
    }

    /// Completes `node` with `end`.
    pub fn finish(&mut self, node: PendingNode, end: NodeEnd) {
        let (task, shared, started, gpu_released) = node.take();
        complete_pending(&shared, task, end, started, gpu_released, Some(self.worker));
    }
}
