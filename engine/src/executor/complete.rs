//! The completion protocol: how a node ends, and everything its end sets off.
//!
//! In order: the request's report takes the end (bytes, or its first error, or that it was
//! cancelled); the node's state word becomes DONE (with FAILED); metrics and the observer see it;
//! each successor is released with one `fetch_sub` on its state word; and if the node was one of
//! its request's sinks, the request finishes, and with its batch's last request the batch
//! retires.
//!
//! Who completes: the worker that ran the node ([`complete`], which keeps the first successor it
//! readies to run next), or, for a deferred node, whoever finishes its `PendingNode`
//! ([`complete_pending`]): a reactor inside its poll (successors then go to the polling worker,
//! and the kept one runs inline, there), or any other thread (successors go to the injectors).

use std::sync::Arc;
use std::time::Instant;

use super::worker::WorkerCtx;
use super::{Shared, Task};
use crate::outcome::NodeEnd;
use crate::state::Start;

/// Finishes a node: records its end, releases its successors (those behind CPU edges only, when
/// `gpu_released` says its submission already released the others), finishes its request and
/// retires its batch when it was the last. Returns one released successor, already started, for
/// the calling worker to run next. After the last release (or sink count) this function touches
/// nothing of the batch, because another thread may retire it at any moment from then on.
pub(super) fn complete(
    shared: &Shared,
    worker: Option<&WorkerCtx>,
    task: Task,
    end: NodeEnd,
    started: Option<Instant>,
    gpu_released: bool,
) -> Option<(Task, Start)> {
    // SAFETY: the node is unfinished until `finish` below, and the batch cannot retire before
    // this node's request sink count drops, which happens last.
    let batch = unsafe { task.batch() };
    let graph = &batch.graph;
    let node = task.node;
    let (kind, request) = (graph.kind(node), graph.request_of(node));
    let end = match end {
        NodeEnd::Done { bytes } => {
            batch.add_bytes(request, bytes);
            NodeEnd::Done { bytes }
        }
        NodeEnd::Failed(err) => {
            let err = err.at_stage(kind);
            batch.fail(request, &err);
            NodeEnd::Failed(err)
        }
        NodeEnd::Skipped | NodeEnd::Cancelled => {
            batch.mark_cancelled(request);
            end
        }
    };
    if let Some(balance) = &shared.balance {
        let decoded = match end {
            NodeEnd::Done { bytes } => bytes,
            _ => 0,
        };
        balance.ended(graph, node, decoded);
    }
    graph.state(node).finish(matches!(end, NodeEnd::Failed(_)));
    let worker_index = worker.map(|w| w.index);
    shared.record(worker_index, kind, started, &end);
    shared.observe(task, worker_index, |o, event| o.node_finished(event, &end));

    let is_sink = graph.is_request_sink(node);
    let batch_id = batch.id();
    let mut next = None;
    let mut pushed = false;
    let successors = if gpu_released {
        graph.split_successors(node).1
    } else {
        graph.successors(node)
    };
    for &successor in successors {
        let ready = task.sibling(successor);
        let state = graph.state(successor);
        if next.is_none() && worker.is_some() {
            // The first successor this node readies runs next on this worker: release and start
            // it in one atomic step.
            next = state.release_and_start().map(|start| (ready, start));
        } else if state.release() {
            match worker {
                Some(worker) => {
                    worker.push(ready);
                    pushed = true;
                }
                None => shared.inject(ready),
            }
        }
    }
    if pushed {
        shared.sleep.notify(1);
    }
    // Releases may have let other threads finish the rest of a non-sink's request; only a
    // request sink still holds the batch open here.
    if is_sink && batch.sink_finished(request) {
        shared.retire(batch_id);
    }
    next
}

/// Completes a deferred node that a completion source (or a dropped `PendingNode`) finished.
/// From inside a reactor's poll (`worker` is the polling one) the successor it keeps runs here,
/// inline; from any other thread the successors go to the injectors.
pub(crate) fn complete_pending(
    shared: &Arc<Shared>,
    task: Task,
    end: NodeEnd,
    started: Option<Instant>,
    gpu_released: bool,
    worker: Option<&WorkerCtx>,
) {
    // Completing may run a request's callback, which may drop the executor's last handle here;
    // `Executor::drop` must then not wait on this thread (see `completing`).
    let _completing = Completing::enter();
    // The latency of deferred work runs from the hand-off to now.
    if let Some((next, start)) = complete(shared, worker, task, end, started, gpu_released) {
        if let Some(worker) = worker {
            worker.run_started(next, start);
        }
    }
}

thread_local! {
    /// How many node completions this thread is inside of (a completion source's thread:
    /// io_uring's reactor, a blocking-read thread, a GPU source's).
    static COMPLETING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this thread is completing a node: an executor dropped here (its last handle held
/// by a request's callback) cannot wait for its batches, which need this very completion to
/// return before they can retire.
pub(crate) fn completing() -> bool {
    COMPLETING.with(|c| c.get() > 0)
}

struct Completing;

impl Completing {
    fn enter() -> Self {
        COMPLETING.with(|c| c.set(c.get() + 1));
        Completing
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        COMPLETING.with(|c| c.set(c.get() - 1));
    }
}
