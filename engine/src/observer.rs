//! The observer hook: node start and end events for whoever wants to watch a run (the CLI's
//! progress bar, graph-viz's run recorder). The engine never formats output itself.

use std::fmt;
use std::time::Instant;

use crate::vocabulary::{NodeId, NodeKind, RequestId};

/// How a node ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeEnd {
    /// It produced `bytes`.
    Done {
        /// Bytes produced.
        bytes: u64,
    },
    /// It failed.
    Failed,
    /// It was tombstoned before it started and skipped its work.
    Skipped,
}

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
    /// The worker that ran it (`None` when a completion source finished it off a worker).
    pub worker: Option<usize>,
    /// When it happened.
    pub at: Instant,
}

/// Watches node starts and ends. Called on worker threads: keep it cheap.
pub trait Observer: Send + Sync + fmt::Debug {
    /// A node is about to run its stage.
    fn node_started(&self, event: &NodeEvent);
    /// A node finished (or was skipped).
    fn node_finished(&self, event: &NodeEvent, end: NodeEnd);
    /// A batch retired: every request reported.
    fn batch_retired(&self, _batch: u64) {}
}
