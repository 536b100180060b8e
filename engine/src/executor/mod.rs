//! The work-stealing executor: one LIFO crossbeam deque per worker, stealers for the others, an
//! injector per priority for new batches, and reactors polled before a worker parks.
//!
//! Rooms:
//! - `config.rs`: [`ExecutorConfig`] and [`ExecutorBuilder`], which starts the workers;
//! - `worker.rs`: the worker loop, where a worker finds work and what it does when idle;
//!   `sleep.rs` beside it parks idle workers without losing wake-ups;
//! - `builtin.rs`: the node kinds the executor runs itself (barrier, acquire, release);
//! - `complete.rs`: the completion protocol: a node ends, its successors are released, its
//!   request and batch finish;
//! - this file: what the workers share, the `Task` pointer they pass around, and the
//!   [`Executor`] handle (submit, cancel, metrics, shutdown).
//!
//! What keeps a `Task`'s batch pointer valid: `Shared::live` owns every submitted batch until
//! its last request sink completes, and a task exists only for an unfinished node.

mod builtin;
mod complete;
mod config;
mod sleep;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Stealer};
use crossbeam_utils::CachePadded;

pub(crate) use complete::complete_pending;
pub use config::{ExecutorBuilder, ExecutorConfig, DEFAULT_SCRATCH_BUDGET};
pub(crate) use worker::{on_worker, WorkerCtx};

use crate::balance::DecodeBalance;
use crate::batch::{Batch, BatchBuilder, BatchShared, CancelTicket, CompiledBatch};
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{MetricsSnapshot, WorkerMetrics};
use crate::observer::{NodeEvent, Observer};
use crate::outcome::NodeEnd;
use crate::reactor::Reactor;
use crate::request::Priority;
use crate::scratch::{ScratchPool, ScratchStats};
use crate::stage::Stage;
use crate::vocabulary::{NodeId, NodeKind, RequestId};
use sleep::Sleep;

/// A ready node: which batch, which node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Task {
    batch: NonNull<BatchShared>,
    pub node: NodeId,
}

// SAFETY: the batch behind the pointer is `Sync` and stays alive while any of its nodes is
// unfinished (the executor's `live` map owns it until it retires), so a task may move between
// threads like a `&BatchShared` could.
unsafe impl Send for Task {}

impl Task {
    /// # Safety
    /// The node must be unfinished (queued, running or pending), which keeps its batch alive.
    pub(crate) unsafe fn batch<'a>(self) -> &'a BatchShared {
        // SAFETY: by the caller's premise the batch is alive; it is never mutated through `&`.
        unsafe { self.batch.as_ref() }
    }

    /// The task of `node` in the same batch as this one.
    pub(crate) fn sibling(self, node: NodeId) -> Task {
        Task {
            batch: self.batch,
            node,
        }
    }
}

/// Where deferred nodes wait: the scratch budget and the completion sources. Batches hold it
/// too, so a cancellation from the caller's thread can sweep every queue its nodes may sit in.
#[derive(Debug)]
pub(crate) struct Sources {
    pub scratch: Arc<ScratchPool>,
    pub reactors: Box<[Arc<dyn Reactor>]>,
}

impl Sources {
    /// Lets tombstoned nodes out of every queue now, rather than when room comes back.
    pub fn sweep(&self) {
        self.scratch.sweep();
        for reactor in self.reactors.iter() {
            reactor.sweep();
        }
    }
}

/// What the workers share.
pub(crate) struct Shared {
    injectors: [Injector<Task>; Priority::COUNT],
    stealers: Box<[Stealer<Task>]>,
    sleep: Sleep,
    sources: Arc<Sources>,
    stages: [Option<Arc<dyn Stage>>; NodeKind::COUNT],
    /// Submitted batches not yet retired. Owning them here is what keeps `Task` pointers valid.
    live: Mutex<HashMap<u64, Arc<BatchShared>>>,
    live_count: AtomicUsize,
    shutdown: AtomicBool,
    metrics: Box<[CachePadded<Mutex<WorkerMetrics>>]>,
    collect_metrics: bool,
    observer: Option<Arc<dyn Observer>>,
    reactor_wait: Duration,
    /// Whether a worker is blocked in a reactor's wait (one at a time is enough).
    reactor_waiter: AtomicBool,
    /// Where `DecodeRoute::Auto` decodes, with a GPU decoder installed.
    pub(crate) balance: Option<Arc<DecodeBalance>>,
}

impl Shared {
    /// Whether per-stage latency histograms are kept.
    pub(crate) fn collects_metrics(&self) -> bool {
        self.collect_metrics
    }

    pub(crate) fn scratch(&self) -> &Arc<ScratchPool> {
        &self.sources.scratch
    }

    fn has_work(&self) -> bool {
        self.injectors.iter().any(|i| !i.is_empty()) || self.stealers.iter().any(|s| !s.is_empty()) || self.drained()
    }

    /// Shutting down, with every batch retired: the workers may exit.
    fn drained(&self) -> bool {
        self.shutdown.load(Ordering::Acquire) && self.live_count.load(Ordering::Acquire) == 0
    }

    /// Pushes a ready node from outside a worker.
    pub(crate) fn inject(&self, task: Task) {
        // SAFETY: the node is ready and unfinished.
        let batch = unsafe { task.batch() };
        let priority = batch.graph.request_info(batch.graph.request_of(task.node)).priority;
        self.injectors[priority.index()].push(task);
        self.sleep.notify(1);
    }

    /// Takes a finished batch out of the live set and publishes its report. The `Arc` held here
    /// keeps the batch alive through `publish`; nothing on the caller's stack may use the batch
    /// afterwards.
    fn retire(&self, batch_id: u64) {
        let batch = self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&batch_id);
        let Some(batch) = batch else {
            debug_assert!(false, "batch {batch_id} retired twice");
            return;
        };
        // Counted out before the report is published, so a caller woken by it finds the batch
        // gone from `live_batches` (the `Arc` here still keeps it alive through `publish`).
        let last = self.live_count.fetch_sub(1, Ordering::AcqRel) == 1;
        batch.publish();
        if let Some(observer) = &self.observer {
            observer.batch_retired(batch_id);
        }
        drop(batch);
        if last && self.shutdown.load(Ordering::Acquire) {
            self.sleep.notify_all();
        }
    }

    /// Tells the observer, if there is one, about `task`'s node.
    pub(crate) fn observe(&self, task: Task, worker: Option<usize>, tell: impl FnOnce(&dyn Observer, &NodeEvent)) {
        let Some(observer) = &self.observer else { return };
        // SAFETY: events are only raised for unfinished nodes (or, for `node_finished`, before
        // the completion releases anything), which keeps the batch alive.
        let batch = unsafe { task.batch() };
        let event = NodeEvent {
            batch: batch.id(),
            node: task.node,
            kind: batch.graph.kind(task.node),
            request: batch.graph.request_of(task.node),
            len: batch.graph.len(task.node),
            src_len: batch.graph.src_len(task.node),
            tile: batch.graph.tile(task.node),
            worker,
            at: Instant::now(),
        };
        tell(&**observer, &event);
    }

    fn record(&self, worker: Option<usize>, kind: NodeKind, started: Option<Instant>, end: &NodeEnd) {
        if !self.collect_metrics {
            return;
        }
        let mut metrics = self.metrics[worker.unwrap_or(0)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match (end, started) {
            (NodeEnd::Skipped | NodeEnd::Cancelled, _) => metrics.record_skip(kind),
            (NodeEnd::Done { bytes }, Some(t)) => metrics.record(kind, t.elapsed(), *bytes, false),
            (NodeEnd::Failed(_), Some(t)) => metrics.record(kind, t.elapsed(), 0, true),
            (_, None) => {}
        }
    }
}

/// The work-stealing executor. Dropping it cancels what is still running, waits for every batch
/// to drain, joins the workers, and has every completion source drain what it still holds.
pub struct Executor {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    config: ExecutorConfig,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.config)
            .field("live_batches", &self.shared.live_count.load(Ordering::Relaxed))
            .finish()
    }
}

impl Executor {
    /// A builder for an executor.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// How many workers run.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// An empty batch lowered with this executor's configuration.
    pub fn batch(&self) -> BatchBuilder {
        let batch = BatchBuilder::new(self.config.lowering);
        match &self.shared.balance {
            Some(balance) => batch.routed_by(balance.clone()),
            None => batch,
        }
    }

    /// The CPU/GPU decode balance `DecodeRoute::Auto` follows (with a GPU decoder installed).
    pub fn decode_balance(&self) -> Option<&Arc<DecodeBalance>> {
        self.shared.balance.as_ref()
    }

    /// Compiles and submits a batch.
    pub fn submit(&self, batch: BatchBuilder) -> Result<Batch> {
        self.submit_compiled(batch.compile()?)
    }

    /// Submits a compiled batch: its roots go to the injectors and idle workers wake.
    pub fn submit_compiled(&self, batch: CompiledBatch) -> Result<Batch> {
        let shared = &self.shared;
        if shared.shutdown.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::ShutDown, "the executor is shutting down"));
        }
        let batch = Arc::new(BatchShared::new(batch, shared.sources.clone()));
        let handle = Batch { inner: batch.clone() };
        if batch.is_empty() {
            batch.publish();
            return Ok(handle);
        }
        let ptr = NonNull::from(&*batch);
        shared.live_count.fetch_add(1, Ordering::AcqRel);
        shared
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(batch.id(), batch.clone());
        let graph = &batch.graph;
        if let Some(balance) = &shared.balance {
            balance.submitted(graph);
        }
        for &root in graph.roots() {
            let priority = graph.request_info(graph.request_of(root)).priority;
            shared.injectors[priority.index()].push(Task { batch: ptr, node: root });
        }
        shared.sleep.notify(graph.roots().len());
        Ok(handle)
    }

    /// Cancels every request, in every live batch, whose `tag & mask == value & mask`.
    pub fn cancel(&self, value: u64, mask: u64) -> CancelTicket {
        let live: Vec<Arc<BatchShared>> = self
            .shared
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut requests = Vec::new();
        for batch in live {
            for (i, info) in batch.graph.requests().iter().enumerate() {
                if info.tag & mask == value & mask {
                    let id = RequestId::from_index(i);
                    batch.cancel_request(id);
                    requests.push((batch.clone(), id));
                }
            }
        }
        // Nodes waiting for a budget leave their queues now, not when room comes back.
        self.shared.sources.sweep();
        CancelTicket { requests }
    }

    /// The scratch budget: what is held now, the peak, and how many acquisitions waited.
    pub fn scratch(&self) -> ScratchStats {
        self.shared.sources.scratch.stats()
    }

    /// Per-stage metrics since the start or the last reset.
    pub fn metrics(&self) -> MetricsSnapshot {
        let guards: Vec<_> = self
            .shared
            .metrics
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        MetricsSnapshot::merge(guards.iter().map(|g| &**g))
    }

    /// Clears the metrics.
    pub fn reset_metrics(&self) {
        for m in self.shared.metrics.iter() {
            m.lock().unwrap_or_else(|p| p.into_inner()).reset();
        }
    }

    /// Batches submitted and not yet retired.
    pub fn live_batches(&self) -> usize {
        self.shared.live_count.load(Ordering::Acquire)
    }
}

impl Drop for Executor {
    /// Cancels what runs, waits for every batch to drain, joins the workers, and has every
    /// completion source drain. The last handle can go on one of this executor's own workers, or
    /// on a completion source's thread while it completes a node (a completion callback held its
    /// owner, a queue, for a moment): that thread must return to finish the node it is
    /// completing before anything can drain, so the waiting then happens on a teardown thread
    /// of its own instead.
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.cancel(0, 0);
        self.shared.sleep.notify_all();
        let threads = std::mem::take(&mut self.threads);
        let shared = self.shared.clone();
        let me = std::thread::current().id();
        if complete::completing() || threads.iter().any(|t| t.thread().id() == me) {
            let spawned = std::thread::Builder::new()
                .name("dsr-teardown".into())
                .spawn(move || teardown(threads, &shared));
            // Without a thread to wait on, the workers still exit once drained; the sources
            // then keep what they hold until the process ends rather than hang this worker.
            drop(spawned);
            return;
        }
        teardown(threads, &shared);
    }
}

/// Joins the workers (they exit once every batch has retired), then has every completion source
/// drain: no source may keep an operation, and the memory it writes, alive past the executor.
fn teardown(threads: Vec<JoinHandle<()>>, shared: &Shared) {
    for thread in threads {
        // A worker that panicked already poisoned nothing we rely on; keep joining the rest.
        let _ = thread.join();
    }
    for reactor in shared.sources.reactors.iter() {
        reactor.drain();
    }
}
