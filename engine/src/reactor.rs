//! Completion sources. A reactor owns operations that finish outside the workers (io_uring
//! completions, GPU timeline values) and, when polled by an idle worker, completes the nodes whose
//! operations have finished.

use std::fmt;
use std::time::Duration;

use crate::error::Error;
use crate::executor::WorkerCtx;
use crate::stage::PendingNode;

/// A source of completions the workers poll when they run out of ready nodes.
pub trait Reactor: Send + Sync + fmt::Debug {
    /// Completes every node whose operation has finished, through `completer`. Returns how many.
    fn poll(&self, completer: &mut Completer<'_>) -> usize;

    /// Whether operations are in flight. Idle workers wait in [`Reactor::wait`] rather than
    /// sleeping indefinitely while this is true.
    fn in_flight(&self) -> bool;

    /// Blocks up to `timeout` for a completion to become pollable. The default sleeps: a source
    /// with a blocking wait (io_uring's `GETEVENTS`, `vkWaitSemaphores`) should use it.
    fn wait(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
}

/// Hands completed nodes back to the executor from inside [`Reactor::poll`]; the successors they
/// release go to the polling worker's own deque.
pub struct Completer<'a> {
    pub(crate) worker: &'a WorkerCtx,
}

impl fmt::Debug for Completer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").field("worker", &self.worker.index).finish()
    }
}

impl Completer<'_> {
    /// Completes `node` with the bytes it produced, or an error.
    pub fn complete(&mut self, node: PendingNode, result: Result<u64, Error>) {
        let (task, shared, started) = node.take();
        crate::executor::complete_pending(&shared, task, result.into(), started, Some(self.worker));
    }

    /// Completes `node` as skipped because its request was cancelled (see
    /// [`PendingNode::cancel`]).
    pub fn cancel(&mut self, node: PendingNode) {
        let (task, shared, started) = node.take();
        crate::executor::complete_pending(
            &shared,
            task,
            crate::executor::Finished::Cancelled,
            started,
            Some(self.worker),
        );
    }
}
