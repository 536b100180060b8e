//! The observer hook: node events for whoever watches a run (the CLI's progress bar,
//! graph-viz's run recorder, traces). The engine never formats output itself.
//!
//! A node that runs is `started`, then either `finished` by its stage, or `deferred` to a
//! completion source (io_uring, the scratch budget, a GPU timeline) and `finished` when that
//! source completes it. A node tombstoned before it started is only `finished`, with
//! [`NodeEnd::Skipped`]; a deferred node whose request was cancelled ends
//! [`NodeEnd::Cancelled`]. A deferred GPU node is also `submitted`, between the two, when its
//! work reaches a GPU queue.

use std::fmt;
use std::time::Instant;

use crate::outcome::NodeEnd;
use crate::vocabulary::{NodeId, NodeKind, RequestId};

/// One node event.
#[derive(Clone, Copy, Debug)]
pub struct NodeEvent {
    /// The batch (graph id).
    pub batch: u64,
    /// The node.
    pub node: NodeId,
    /// Its kind.
    pub kind: NodeKind,
    /// Its request.
    pub request: RequestId,
    /// Bytes it produces at its destination.
    pub len: u64,
    /// Bytes it consumes (for `Acquire` and `Release`, the request's scratch).
    pub src_len: u64,
    /// For decode nodes, the first tile it decodes (see `NodeSpec::tile`).
    pub tile: u32,
    /// The worker it happened on (`None` when a completion source finished the node off a
    /// worker, or a caller's cancellation did).
    pub worker: Option<usize>,
    /// When it happened.
    pub at: Instant,
}

/// A GPU submission's work, from its timestamp queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuSpan {
    /// The queue it ran on (`"transfer"`, `"compute"`).
    pub queue: &'static str,
    /// When the GPU started it, on the CPU's clock, where the device's clock is calibrated
    /// against it (`VK_EXT_calibrated_timestamps`); `None` where it is not.
    pub start: Option<Instant>,
    /// How long the GPU spent on it.
    pub duration: std::time::Duration,
}

/// Watches node events. Called on worker threads (and on the threads completion sources
/// complete from): keep it cheap, and do not panic.
pub trait Observer: Send + Sync + fmt::Debug {
    /// A node is about to run its stage.
    fn node_started(&self, event: &NodeEvent);
    /// A node's stage handed its work to a completion source; it finishes later, off this call.
    fn node_deferred(&self, _event: &NodeEvent) {}
    /// A deferred node's GPU work was submitted; the GPU is done with it when its timeline
    /// reaches `value`. Its successors behind GPU edges are released now.
    fn node_submitted(&self, _event: &NodeEvent, _value: u64) {}
    /// The GPU work of the submission that carried this deferred node's work (measured with
    /// timestamp queries; every node of one submission hears the same span). Comes before the
    /// node's `finished`.
    fn node_gpu_time(&self, _event: &NodeEvent, _gpu: &GpuSpan) {}
    /// A node ended (see [`NodeEnd`]).
    fn node_finished(&self, event: &NodeEvent, end: &NodeEnd);
    /// A batch retired: every request reported.
    fn batch_retired(&self, _batch: u64) {}
}
