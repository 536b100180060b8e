//! The work-stealing executor: one LIFO crossbeam deque per worker, stealers for the others, an
//! injector per priority for new batches, and reactors polled before a worker parks.
//!
//! A worker looks for work in this order, each step for a reason:
//! 1. its own deque, LIFO: the node it just released is hot in cache and belongs to the request
//!    it is finishing, which bounds bytes in flight;
//! 2. other workers' deques: finish started requests before starting new ones;
//! 3. the injectors, highest priority first: roots of newly submitted batches;
//! 4. the reactors: completions of I/O and GPU work release nodes;
//! 5. with operations in flight, one worker blocks where their completions arrive (an eventfd)
//!    and the others sleep: spinning would only burn the CPU the I/O is meant to save;
//! 6. otherwise spin a little, then park: a wake-up costs tens of microseconds, so parking is the
//!    last resort and producers only wake a worker when one is parked (see `sleep.rs`).
//!
//! Completing a node releases its successors with one `fetch_sub` each; the worker that brings
//! a successor to zero keeps the first such successor to run next (no queue round trip for a
//! chain) and pushes the rest onto its own deque for thieves.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::CachePadded;

use crate::batch::{Batch, BatchBuilder, BatchShared, CancelTicket, CompiledBatch};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{CompiledGraph, NodeId, NodeKind, Resource};
use crate::lower::LoweringConfig;
use crate::metrics::{MetricsSnapshot, WorkerMetrics};
use crate::observer::{NodeEnd, NodeEvent, Observer};
use crate::reactor::{Completer, Reactor};
use crate::request::Priority;
use crate::scratch::{Acquired, Scratch, ScratchPool, ScratchStats};
use crate::sleep::Sleep;
use crate::stage::{NodeRef, Outcome, PendingNode, Stage};
use crate::state::Start;

/// Rounds of fruitless searching before a worker parks.
const SPIN_ROUNDS: u32 = 64;
/// Of those, rounds that spin on the CPU before yielding it.
const BUSY_ROUNDS: u32 = 16;

/// The default scratch budget: compressed bytes in flight between reads and decodes.
pub const DEFAULT_SCRATCH_BUDGET: u64 = 256 << 20;

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
}

/// Configuration of an executor.
#[derive(Clone)]
pub struct ExecutorConfig {
    /// Worker threads.
    pub workers: usize,
    /// How batches built by [`Executor::batch`] are lowered.
    pub lowering: LoweringConfig,
    /// Record per-stage latency histograms (two clock reads per node).
    pub metrics: bool,
    /// Node start/end events go here.
    pub observer: Option<Arc<dyn Observer>>,
    /// How long an idle worker blocks on a busy reactor (a completion ends the wait sooner)
    /// before looking at the queues again.
    pub reactor_wait: Duration,
    /// Bytes of scratch (compressed bytes between reads and decodes) all requests may hold at
    /// once; compressed requests beyond it wait (see [`crate::scratch`]).
    pub scratch_budget: u64,
}

impl fmt::Debug for ExecutorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorConfig")
            .field("workers", &self.workers)
            .field("lowering", &self.lowering)
            .field("metrics", &self.metrics)
            .field("observer", &self.observer.is_some())
            .field("reactor_wait", &self.reactor_wait)
            .field("scratch_budget", &self.scratch_budget)
            .finish()
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lowering: LoweringConfig::default(),
            metrics: true,
            observer: None,
            reactor_wait: Duration::from_millis(1),
            scratch_budget: DEFAULT_SCRATCH_BUDGET,
        }
    }
}

/// Builds an [`Executor`]: configuration, the stage for each node kind, completion sources.
#[derive(Debug, Default)]
pub struct ExecutorBuilder {
    config: ExecutorConfig,
    stages: [Option<Arc<dyn Stage>>; NodeKind::COUNT],
    reactors: Vec<Arc<dyn Reactor>>,
}

impl ExecutorBuilder {
    /// Replaces the configuration.
    pub fn config(mut self, config: ExecutorConfig) -> Self {
        self.config = config;
        self
    }
    /// Sets the number of worker threads (at least one).
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers.max(1);
        self
    }
    /// Turns latency histograms on or off.
    pub fn metrics(mut self, on: bool) -> Self {
        self.config.metrics = on;
        self
    }
    /// Watches node events.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.config.observer = Some(observer);
        self
    }
    /// Sets the lowering configuration.
    pub fn lowering(mut self, lowering: LoweringConfig) -> Self {
        self.config.lowering = lowering;
        self
    }
    /// Runs nodes of `kind` with `stage`. Nodes of a kind with no stage fail as unsupported.
    pub fn stage(mut self, kind: NodeKind, stage: Arc<dyn Stage>) -> Self {
        self.stages[kind.index()] = Some(stage);
        self
    }
    /// Adds a completion source.
    pub fn reactor(mut self, reactor: Arc<dyn Reactor>) -> Self {
        self.reactors.push(reactor);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Executor> {
        let workers = self.config.workers.max(1);
        let locals: Vec<Worker<Task>> = (0..workers).map(|_| Worker::new_lifo()).collect();
        let shared = Arc::new(Shared {
            injectors: Default::default(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleep: Sleep::default(),
            reactors: self.reactors.into_boxed_slice(),
            stages: self.stages,
            live: Mutex::new(HashMap::new()),
            live_count: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            metrics: (0..workers)
                .map(|_| CachePadded::new(Mutex::new(WorkerMetrics::new())))
                .collect(),
            collect_metrics: self.config.metrics,
            observer: self.config.observer.clone(),
            reactor_wait: self.config.reactor_wait,
            reactor_waiter: AtomicBool::new(false),
            scratch: ScratchPool::new(self.config.scratch_budget),
        });
        let mut threads = Vec::with_capacity(workers);
        for (index, local) in locals.into_iter().enumerate() {
            let ctx = WorkerCtx {
                index,
                local,
                shared: shared.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("dsr-worker-{index}"))
                .spawn(move || ctx.run());
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(err) => {
                    let executor = Executor {
                        shared,
                        threads,
                        config: self.config,
                    };
                    drop(executor);
                    return Err(Error::from_io(&err, "cannot start a worker thread"));
                }
            }
        }
        Ok(Executor {
            shared,
            threads,
            config: self.config,
        })
    }
}

/// What the workers share.
pub(crate) struct Shared {
    injectors: [Injector<Task>; Priority::COUNT],
    stealers: Box<[Stealer<Task>]>,
    sleep: Sleep,
    reactors: Box<[Arc<dyn Reactor>]>,
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
    pub(crate) scratch: Arc<ScratchPool>,
}

impl Shared {
    /// Whether per-stage latency histograms are kept.
    pub(crate) fn collects_metrics(&self) -> bool {
        self.collect_metrics
    }

    fn has_work(&self) -> bool {
        self.injectors.iter().any(|i| !i.is_empty())
            || self.stealers.iter().any(|s| !s.is_empty())
            || (self.shutdown.load(Ordering::Acquire) && self.live_count.load(Ordering::Acquire) == 0)
    }

    /// Pushes a ready node from outside a worker.
    fn inject(&self, task: Task) {
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
        batch.publish();
        if let Some(observer) = &self.observer {
            observer.batch_retired(batch_id);
        }
        drop(batch);
        if self.live_count.fetch_sub(1, Ordering::AcqRel) == 1 && self.shutdown.load(Ordering::Acquire) {
            self.sleep.notify_all();
        }
    }

    fn record(&self, worker: Option<usize>, kind: NodeKind, started: Option<Instant>, end: NodeEnd) {
        if !self.collect_metrics {
            return;
        }
        let mut metrics = self.metrics[worker.unwrap_or(0)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match (end, started) {
            (NodeEnd::Skipped, _) => metrics.record_skip(kind),
            (NodeEnd::Done { bytes }, Some(t)) => metrics.record(kind, t.elapsed(), bytes, false),
            (NodeEnd::Failed, Some(t)) => metrics.record(kind, t.elapsed(), 0, true),
            (_, None) => {}
        }
    }
}

/// A worker thread's own state.
pub(crate) struct WorkerCtx {
    pub index: usize,
    local: Worker<Task>,
    shared: Arc<Shared>,
}

impl WorkerCtx {
    fn run(self) {
        let shared = &*self.shared;
        let mut idle_rounds = 0;
        loop {
            if let Some(task) = self.find_work() {
                self.run_chain(task);
                idle_rounds = 0;
                continue;
            }
            if self.poll_reactors() > 0 {
                idle_rounds = 0;
                continue;
            }
            if shared.shutdown.load(Ordering::Acquire) && shared.live_count.load(Ordering::Acquire) == 0 {
                return;
            }
            if let Some(reactor) = shared.reactors.iter().find(|r| r.in_flight()) {
                // Operations are in flight: no spinning. One worker blocks where completions
                // arrive; the others sleep until work is pushed (or take over the waiting).
                idle_rounds = 0;
                if !shared.reactor_waiter.swap(true, Ordering::AcqRel) {
                    reactor.wait(shared.reactor_wait);
                    shared.reactor_waiter.store(false, Ordering::Release);
                } else {
                    shared.sleep.sleep(|| shared.has_work(), Some(shared.reactor_wait));
                }
                continue;
            }
            if idle_rounds < SPIN_ROUNDS {
                idle_rounds += 1;
                if idle_rounds <= BUSY_ROUNDS {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            idle_rounds = 0;
            shared.sleep.sleep(|| shared.has_work(), None);
        }
    }

    /// Local deque, then the other workers', then the injectors by priority.
    fn find_work(&self) -> Option<Task> {
        if let Some(task) = self.local.pop() {
            return Some(task);
        }
        let shared = &*self.shared;
        let n = shared.stealers.len();
        loop {
            let mut retry = false;
            for i in 1..n {
                match shared.stealers[(self.index + i) % n].steal_batch_and_pop(&self.local) {
                    Steal::Success(task) => return Some(task),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            for priority in Priority::HIGHEST_FIRST {
                match shared.injectors[priority.index()].steal_batch_and_pop(&self.local) {
                    Steal::Success(task) => return Some(task),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    fn poll_reactors(&self) -> usize {
        if self.shared.reactors.is_empty() {
            return 0;
        }
        let mut completer = Completer { worker: self };
        self.shared.reactors.iter().map(|r| r.poll(&mut completer)).sum()
    }

    /// Runs `task` and then, while each run releases one, the successor it kept (already
    /// started by the fused release).
    fn run_chain(&self, task: Task) {
        // SAFETY: the task was ready and is now ours: it is unfinished.
        let start = unsafe { task.batch() }.graph.state(task.node).start();
        let mut next = Some((task, start));
        while let Some((task, start)) = next {
            next = self.execute(task, start);
        }
    }

    /// Pushes a released node where thieves can find it.
    pub(crate) fn push(&self, task: Task) {
        self.local.push(task);
    }

    /// Runs a started node's stage (or skips it) and completes it.
    fn execute(&self, task: Task, start: Start) -> Option<(Task, Start)> {
        let shared = &self.shared;
        // SAFETY: the task was ready and is now ours to run: it is unfinished.
        let batch = unsafe { task.batch() };
        let graph = &batch.graph;
        let kind = graph.kind(task.node);
        if kind == NodeKind::Release {
            // Runs skipped or not: a failed or cancelled request hands its scratch back too.
            if let Some(scratch) = scratch_of(graph, task.node) {
                scratch.release();
            }
        }
        if start == Start::Skip {
            return complete(shared, Some(self), task, Ended::Skipped, None);
        }
        let watch = shared.collect_metrics || shared.observer.is_some();
        let started = watch.then(Instant::now);
        if let (Some(observer), Some(at)) = (&shared.observer, started) {
            observer.node_started(&event(batch, task.node, Some(self.index), at));
        }
        let deferred = Cell::new(false);
        let outcome = match &shared.stages[kind.index()] {
            // A barrier orders its predecessors before its successors and does nothing else.
            _ if matches!(kind, NodeKind::Barrier | NodeKind::Release) => Outcome::Done { bytes: 0 },
            _ if kind == NodeKind::Acquire => match scratch_of(graph, task.node) {
                Some(scratch) => match shared.scratch.acquire(scratch, || PendingNode::new(task, shared)) {
                    Ok(Acquired::Now) => Outcome::Done { bytes: 0 },
                    // The pool completes it when bytes come back.
                    Ok(Acquired::Queued) => return None,
                    Ok(Acquired::Skipped) => return complete(shared, Some(self), task, Ended::Skipped, started),
                    Err(err) => Outcome::Failed(err),
                },
                None => Outcome::Failed(Error::new(
                    ErrorKind::InvalidRequest,
                    "an acquire node needs a scratch span as its source",
                )),
            },
            Some(stage) => {
                let node = NodeRef {
                    graph,
                    task,
                    shared,
                    destination_taken: false,
                    deferred: &deferred,
                };
                // A panicking stage fails its node, not the worker: other requests keep going.
                match panic::catch_unwind(AssertUnwindSafe(|| stage.run(node))) {
                    Ok(outcome) => outcome,
                    // The dropped `PendingNode` already completed it as abandoned.
                    Err(_) if deferred.get() => return None,
                    Err(payload) => Outcome::Failed(Error::new(
                        ErrorKind::Internal,
                        format!("the {kind} stage panicked: {}", panic_message(&*payload)),
                    )),
                }
            }
            None => Outcome::Failed(Error::new(
                ErrorKind::Unsupported,
                format!("this runtime has no {kind} stage; build the executor with one"),
            )),
        };
        let ended = match outcome {
            Outcome::Done { bytes } => Ended::Done(bytes),
            Outcome::Failed(err) => Ended::Failed(err),
            // The completion source owns the node now; it may already have completed it.
            Outcome::Pending(_) => return None,
        };
        complete(shared, Some(self), task, ended, started)
    }
}

/// The scratch an `Acquire` or `Release` node names, if it names one.
fn scratch_of(graph: &CompiledGraph, node: NodeId) -> Option<&Scratch> {
    match graph.resource(graph.src(node)?.resource) {
        Resource::Scratch(scratch) => Some(scratch),
        _ => None,
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn event(batch: &BatchShared, node: NodeId, worker: Option<usize>, at: Instant) -> NodeEvent {
    NodeEvent {
        batch: batch.id(),
        node,
        kind: batch.graph.kind(node),
        request: batch.graph.request_of(node),
        worker,
        at,
    }
}

/// How a node's work ended.
enum Ended {
    Done(u64),
    Failed(Error),
    Skipped,
}

/// How a completion source finished a deferred node.
#[derive(Debug)]
pub(crate) enum Finished {
    Done(u64),
    Failed(Error),
    /// Cut short because its request was cancelled.
    Cancelled,
}

impl From<Result<u64, Error>> for Finished {
    fn from(result: Result<u64, Error>) -> Self {
        match result {
            Ok(bytes) => Finished::Done(bytes),
            Err(err) => Finished::Failed(err),
        }
    }
}

/// Finishes a node: records its outcome, releases its successors, finishes its request and
/// retires its batch when it was the last. Returns one released successor, already started, for
/// the caller to run next. After the last release (or sink count) this function touches nothing
/// of the batch, because another thread may retire it at any moment from then on.
fn complete(
    shared: &Shared,
    worker: Option<&WorkerCtx>,
    task: Task,
    ended: Ended,
    started: Option<Instant>,
) -> Option<(Task, Start)> {
    // SAFETY: the node is unfinished until `finish` below, and the batch cannot retire before
    // this node's request sink count drops, which happens last.
    let batch = unsafe { task.batch() };
    let graph = &batch.graph;
    let node = task.node;
    let (kind, request) = (graph.kind(node), graph.request_of(node));
    let end = match ended {
        Ended::Done(bytes) => {
            batch.add_bytes(request, bytes);
            NodeEnd::Done { bytes }
        }
        Ended::Failed(err) => {
            let err = err.at_stage(kind);
            batch.fail(request, err);
            NodeEnd::Failed
        }
        Ended::Skipped => {
            batch.mark_skipped(request);
            NodeEnd::Skipped
        }
    };
    graph.state(node).finish(end == NodeEnd::Failed);
    let worker_index = worker.map(|w| w.index);
    shared.record(worker_index, kind, started, end);
    if let Some(observer) = &shared.observer {
        observer.node_finished(&event(batch, node, worker_index, Instant::now()), end);
    }

    let is_sink = graph.is_request_sink(node);
    let batch_id = batch.id();
    let mut next = None;
    let mut pushed = false;
    for &successor in graph.successors(node) {
        let ready = Task {
            batch: task.batch,
            node: successor,
        };
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

/// Completes a node a reactor (or a dropped `PendingNode`) finished.
pub(crate) fn complete_pending(
    shared: &Arc<Shared>,
    task: Task,
    finished: Finished,
    started: Option<Instant>,
    worker: Option<&WorkerCtx>,
) {
    let ended = match finished {
        Finished::Done(bytes) => Ended::Done(bytes),
        Finished::Failed(err) => Ended::Failed(err),
        Finished::Cancelled => Ended::Skipped,
    };
    // The latency of deferred work runs from the hand-off to now.
    if let Some((next, start)) = complete(shared, worker, task, ended, started) {
        if let Some(worker) = worker {
            // Already started by the fused release: run it here, in the reactor's poll.
            let mut next = Some((next, start));
            while let Some((task, start)) = next {
                next = worker.execute(task, start);
            }
        }
    }
}

/// The work-stealing executor. Dropping it cancels what is still running, waits for every batch
/// to drain, and joins the workers.
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
        BatchBuilder::new(self.config.lowering)
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
        let batch = Arc::new(BatchShared::new(batch, shared.scratch.clone()));
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
                    let id = crate::graph::RequestId(i as u32);
                    batch.cancel_request(id);
                    requests.push((batch.clone(), id));
                }
            }
        }
        // Requests queued for scratch leave the queue now, not when bytes come back.
        self.shared.scratch.sweep();
        CancelTicket { requests }
    }

    /// The scratch budget: what is held now, the peak, and how many acquisitions waited.
    pub fn scratch(&self) -> ScratchStats {
        self.shared.scratch.stats()
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
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.cancel(0, 0);
        self.shared.sleep.notify_all();
        for thread in self.threads.drain(..) {
            // A worker that panicked already poisoned nothing we rely on; keep joining the rest.
            let _ = thread.join();
        }
    }
}
