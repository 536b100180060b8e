//! The node kinds the executor runs itself, with no stage: all three in one place.
//!
//! - `Barrier`: a status or fence entry, and the join between a request's reads and its decodes.
//!   It orders its predecessors before its successors and does nothing else.
//! - `Acquire`: takes its request's scratch from the executor's budget (`crate::scratch`), or
//!   waits for it in the budget's queue, deferred, holding no worker.
//! - `Release`: hands the scratch back. Its request's cancellation or failure never tombstones
//!   it (`NodeKind::survives_tombstones`), so it runs whatever became of the request.

use super::worker::{Ran, WorkerCtx};
use super::Task;
use crate::error::{Error, ErrorKind};
use crate::graph::{CompiledGraph, Resource};
use crate::outcome::NodeEnd;
use crate::scratch::{Acquired, Scratch};
use crate::stage::PendingNode;
use crate::vocabulary::{NodeId, NodeKind};

/// Runs a built-in node on `worker`.
pub(super) fn run(worker: &WorkerCtx, task: Task, kind: NodeKind) -> Ran {
    // SAFETY: the node is running on this worker: it is unfinished.
    let graph = &unsafe { task.batch() }.graph;
    let done = Ran::Ended(NodeEnd::Done { bytes: 0 });
    match kind {
        NodeKind::Barrier => done,
        NodeKind::Release => {
            if let Some(scratch) = scratch_of(graph, task.node) {
                scratch.release();
            }
            done
        }
        NodeKind::Acquire => {
            let Some(scratch) = scratch_of(graph, task.node) else {
                return Ran::Ended(NodeEnd::Failed(Error::new(
                    ErrorKind::InvalidRequest,
                    "an acquire node needs a scratch span as its source",
                )));
            };
            let shared = &worker.shared;
            match shared
                .scratch()
                .acquire(scratch, || PendingNode::new(task, shared, Some(worker.index)))
            {
                Ok(Acquired::Now) => done,
                // The pool completes it when bytes come back, or cancels it.
                Ok(Acquired::Deferred) => Ran::Deferred,
                Err(err) => Ran::Ended(NodeEnd::Failed(err)),
            }
        }
        NodeKind::Read
        | NodeKind::DecompressCpu
        | NodeKind::Upload
        | NodeKind::DecompressGpu
        | NodeKind::Copy
        | NodeKind::Write
        | NodeKind::Sync
        | NodeKind::Verify => {
            unreachable!("{kind} nodes run a stage")
        }
    }
}

/// The scratch an `Acquire` or `Release` node names, if it names one.
fn scratch_of(graph: &CompiledGraph, node: NodeId) -> Option<&Scratch> {
    match graph.resource(graph.src(node)?.resource) {
        Resource::Scratch(scratch) => Some(scratch),
        _ => None,
    }
}
