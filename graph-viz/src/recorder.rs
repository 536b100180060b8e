//! An observer that records each node's start, end and bytes, for run pictures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dsr_engine::{GpuSpan, NodeEnd, NodeEvent, NodeId, Observer};

/// What the recorder saw of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRun {
    /// When its stage started (none if it was skipped or completed off a worker).
    pub started: Option<Instant>,
    /// When its stage handed the work to a completion source (io_uring, a budget's queue), if
    /// it did.
    pub deferred: Option<Instant>,
    /// When it finished.
    pub finished: Instant,
    /// How it ended.
    pub end: NodeEnd,
    /// The worker that finished it.
    pub worker: Option<usize>,
    /// The GPU time of the submission that carried its work, from timestamp queries.
    pub gpu: Option<Duration>,
}

impl NodeRun {
    /// Time from start to finish, if it started on a worker.
    pub fn duration(&self) -> Option<Duration> {
        self.started.map(|s| self.finished.saturating_duration_since(s))
    }
}

/// Records node events of every batch it observes. Meant for runs that will be drawn: it takes a
/// lock per event.
#[derive(Debug, Default)]
pub struct RunRecorder {
    runs: Mutex<HashMap<(u64, NodeId), NodeRun>>,
    starts: Mutex<HashMap<(u64, NodeId), Running>>,
}

/// A node between its start and its end.
#[derive(Debug, Clone, Copy)]
struct Running {
    started: Instant,
    deferred: Option<Instant>,
    gpu: Option<Duration>,
}

impl RunRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// What was recorded of `node` in `batch`.
    pub fn get(&self, batch: u64, node: NodeId) -> Option<NodeRun> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(batch, node))
            .cloned()
    }

    /// How many node ends were recorded.
    pub fn len(&self) -> usize {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Observer for RunRecorder {
    fn node_started(&self, event: &NodeEvent) {
        self.starts.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (event.batch, event.node),
            Running {
                started: event.at,
                deferred: None,
                gpu: None,
            },
        );
    }

    fn node_deferred(&self, event: &NodeEvent) {
        if let Some(start) = self
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(event.batch, event.node))
        {
            start.deferred = Some(event.at);
        }
    }

    fn node_gpu_time(&self, event: &NodeEvent, gpu: &GpuSpan) {
        if let Some(start) = self
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(event.batch, event.node))
        {
            start.gpu = Some(gpu.duration);
        }
    }

    fn node_finished(&self, event: &NodeEvent, end: &NodeEnd) {
        let start = self
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(event.batch, event.node));
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (event.batch, event.node),
            NodeRun {
                started: start.map(|s| s.started),
                deferred: start.and_then(|s| s.deferred),
                finished: event.at,
                end: end.clone(),
                worker: event.worker,
                gpu: start.and_then(|s| s.gpu),
            },
        );
    }
}
