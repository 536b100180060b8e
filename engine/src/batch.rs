//! Batches: building one (lowering requests), the running batch's shared state, and what the
//! caller holds (`Batch`) to wait, poll an eventfd, cancel, and read the report.

use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use std::{io, mem};

use crate::balance::{DecodeBalance, Routing};
use crate::buffer::Reservation;
use crate::error::{Error, Result};
use crate::eventfd::EventFd;
use crate::executor::Sources;
use crate::file_ranges::FileRanges;
use crate::graph::{CompiledGraph, GraphBuilder, RequestId};
use crate::lower::{lower_routed, LoweringConfig};
use crate::request::Request;

/// Called once, on a worker thread, when a batch retires. Keep it short.
pub type CompletionCallback = Box<dyn FnOnce(&BatchReport) + Send>;

/// Called as each request of a batch finishes: its id and how it ended.
pub type RequestCallback = Box<dyn Fn(RequestId, &RequestStatus) + Send + Sync>;

/// A batch being built: requests are validated and lowered as they are pushed.
pub struct BatchBuilder {
    graph: GraphBuilder,
    lowering: LoweringConfig,
    /// Where `DecodeRoute::Auto` requests decode, when the executor can decode on the GPU.
    routing: Option<Routing>,
    callback: Option<CompletionCallback>,
    request_callback: Option<RequestCallback>,
    /// The file bytes its requests read and write, so a conflicting request is refused alone.
    files: FileRanges,
}

impl fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("graph", &self.graph)
            .field("lowering", &self.lowering)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl BatchBuilder {
    /// An empty batch lowered with `lowering`.
    pub fn new(lowering: LoweringConfig) -> Self {
        BatchBuilder {
            graph: GraphBuilder::new(),
            lowering,
            routing: None,
            callback: None,
            request_callback: None,
            files: FileRanges::default(),
        }
    }

    /// Validates `request` and lowers it into the batch. A refused request leaves the batch as
    /// it was; the error says why (destination too small, overlap with another request's bytes,
    /// empty stream…).
    pub fn push(&mut self, request: Request) -> Result<RequestId> {
        let index = self.graph.request_count() as u32;
        let accesses = self.files.check(&request).map_err(|err| err.for_request(index))?;
        let id = lower_routed(&mut self.graph, &self.lowering, self.routing.as_mut(), request)?;
        self.files.add(accesses);
        Ok(id)
    }

    /// Routes `DecodeRoute::Auto` requests by `balance` (the executor's, when it has a GPU
    /// decoder).
    pub(crate) fn routed_by(mut self, balance: Arc<DecodeBalance>) -> Self {
        self.routing = Some(Routing {
            balance,
            planned: [0; 2],
        });
        self
    }

    /// The graph under construction, for callers that build nodes themselves.
    pub fn graph_mut(&mut self) -> &mut GraphBuilder {
        &mut self.graph
    }

    /// Calls `callback` with the report when the batch retires. Several callbacks run in the
    /// order they were added; a batch that is never submitted drops them uncalled.
    pub fn on_complete(&mut self, callback: impl FnOnce(&BatchReport) + Send + 'static) {
        self.callback = Some(match self.callback.take() {
            None => Box::new(callback),
            Some(earlier) => Box::new(move |report: &BatchReport| {
                earlier(report);
                callback(report);
            }),
        });
    }

    /// Calls `callback` as each request finishes (nothing of it will touch its destination
    /// again), in the order they finish, on the thread that finished it (a worker, or a
    /// completion source's thread such as a blocking read's): keep it short. Replaces
    /// an earlier one. A panic in it is contained.
    pub fn on_request_complete(&mut self, callback: impl Fn(RequestId, &RequestStatus) + Send + Sync + 'static) {
        self.request_callback = Some(Box::new(callback));
    }

    /// Validates the graph and freezes it.
    pub fn compile(self) -> Result<CompiledBatch> {
        Ok(CompiledBatch {
            graph: self.graph.compile()?,
            callback: self.callback,
            request_callback: self.request_callback,
        })
    }
}

/// A compiled batch, ready to submit (or to draw).
pub struct CompiledBatch {
    pub(crate) graph: CompiledGraph,
    pub(crate) callback: Option<CompletionCallback>,
    pub(crate) request_callback: Option<RequestCallback>,
}

impl fmt::Debug for CompiledBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledBatch").field("graph", &self.graph).finish()
    }
}

impl CompiledBatch {
    /// The planned graph.
    pub fn graph(&self) -> &CompiledGraph {
        &self.graph
    }
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestStatus {
    /// Every byte landed.
    Done,
    /// It failed; nothing more of it will run.
    Failed(Error),
    /// It was cancelled before all its work ran; its destination is incomplete.
    Cancelled,
}

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct RequestReport {
    /// The request.
    pub id: RequestId,
    /// Its name, if it had one.
    pub name: Option<String>,
    /// How it ended.
    pub status: RequestStatus,
    /// Bytes its nodes produced in the destination.
    pub bytes: u64,
    /// From the batch's submission to the request's completion.
    pub latency: Duration,
}

/// Every request's outcome, in enqueue order.
#[derive(Clone, Debug)]
pub struct BatchReport {
    /// The batch (graph id).
    pub batch: u64,
    /// Per request, in enqueue order.
    pub requests: Vec<RequestReport>,
    /// From submission to retirement.
    pub elapsed: Duration,
}

impl BatchReport {
    /// The first failed request in enqueue order (not the first to fail in time), with its error.
    pub fn first_failure(&self) -> Option<(RequestId, &Error)> {
        self.requests.iter().find_map(|r| match &r.status {
            RequestStatus::Failed(err) => Some((r.id, err)),
            _ => None,
        })
    }
    /// Whether every request is done.
    pub fn all_done(&self) -> bool {
        self.requests.iter().all(|r| r.status == RequestStatus::Done)
    }
    /// How many requests were cancelled.
    pub fn cancelled(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.status == RequestStatus::Cancelled)
            .count()
    }
    /// Bytes delivered by all requests.
    pub fn bytes(&self) -> u64 {
        self.requests.iter().map(|r| r.bytes).sum()
    }
}

// Request flags.
/// Some node of the request was skipped or cut short by a cancellation.
const CANCELLED: u32 = 1;
/// Every sink of the request has finished: nothing of it will touch its destination again.
const FINISHED: u32 = 2;

#[derive(Debug)]
pub(crate) struct RequestState {
    /// Request sinks not yet finished; the request is finished at zero.
    pending_sinks: AtomicU32,
    flags: AtomicU32,
    /// The first error of this request in time.
    error: OnceLock<Error>,
    bytes: AtomicU64,
    finished_after_ns: AtomicU64,
}

#[derive(Default)]
struct CompletionState {
    report: Option<Arc<BatchReport>>,
    callback: Option<CompletionCallback>,
    eventfd: Option<EventFd>,
}

/// The state of a submitted batch, shared by the workers and the caller's [`Batch`].
pub(crate) struct BatchShared {
    pub(crate) graph: CompiledGraph,
    pub(crate) requests: Box<[RequestState]>,
    pending_requests: AtomicU32,
    submitted: Instant,
    /// Each request's destination ranges, by request (lowering adds them in request order),
    /// released when the request finishes: a caller told it is done may reuse its destination at
    /// once, in the next batch, while this one still runs. Each behind its own lock, which only
    /// the request's last sink takes: finishing requests do not contend.
    reservations: Box<[(u32, Mutex<Option<Reservation>>)]>,
    completion: Mutex<CompletionState>,
    completed: Condvar,
    /// Callers blocked in a cancellation acknowledgement; finishing requests notify only then.
    ack_waiters: AtomicUsize,
    /// The queues deferred nodes wait in, swept when requests of this batch are cancelled.
    sources: Arc<Sources>,
    request_callback: Option<RequestCallback>,
}

impl BatchShared {
    pub fn new(mut compiled: CompiledBatch, sources: Arc<Sources>) -> Self {
        let graph = &compiled.graph;
        let requests = (0..graph.requests().len() as u32)
            .map(|r| RequestState {
                pending_sinks: AtomicU32::new(graph.sinks(RequestId(r))),
                flags: AtomicU32::new(0),
                error: OnceLock::new(),
                bytes: AtomicU64::new(0),
                finished_after_ns: AtomicU64::new(0),
            })
            .collect::<Box<[_]>>();
        let reservations = mem::take(&mut compiled.graph.reservations)
            .into_iter()
            .map(|r| (r.request(), Mutex::new(Some(r))))
            .collect::<Box<[_]>>();
        debug_assert!(
            reservations.is_sorted_by_key(|(r, _)| *r),
            "lowering reserves in request order"
        );
        BatchShared {
            pending_requests: AtomicU32::new(requests.len() as u32),
            requests,
            submitted: Instant::now(),
            reservations,
            completion: Mutex::new(CompletionState {
                callback: compiled.callback,
                ..CompletionState::default()
            }),
            completed: Condvar::new(),
            ack_waiters: AtomicUsize::new(0),
            sources,
            request_callback: compiled.request_callback,
            graph: compiled.graph,
        }
    }

    pub fn id(&self) -> u64 {
        self.graph.id()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Lets nodes of this batch's cancelled requests out of the queues they wait in.
    pub fn sweep(&self) {
        self.sources.sweep();
    }

    /// Cancels `request`: tombstones every node of it that has not started. The request reports
    /// Cancelled once a tombstoned node has been skipped (or cut short); if every node had
    /// already run, it reports as it ended.
    pub fn cancel_request(&self, request: RequestId) {
        self.tombstone(request);
    }

    /// Tombstones the nodes of `request`, but for those that must run whatever became of it.
    fn tombstone(&self, request: RequestId) {
        for &node in self.graph.request_nodes(request) {
            if !self.graph.kind(node).survives_tombstones() {
                self.graph.state(node).tombstone();
            }
        }
    }

    /// Records `error` (if it is the request's first) and stops the rest of the request.
    pub fn fail(&self, request: RequestId, error: &Error) {
        self.requests[request.index()]
            .error
            .get_or_init(|| error.clone().for_request(request.0));
        self.tombstone(request);
    }

    pub fn add_bytes(&self, request: RequestId, bytes: u64) {
        if bytes != 0 {
            self.requests[request.index()].bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// A node of `request` was skipped or cut short by a cancellation.
    pub fn mark_cancelled(&self, request: RequestId) {
        self.requests[request.index()]
            .flags
            .fetch_or(CANCELLED, Ordering::Relaxed);
    }

    /// A request sink finished. Returns whether the whole batch has now finished; the caller
    /// that gets `true` must retire it.
    pub fn sink_finished(&self, request: RequestId) -> bool {
        let state = &self.requests[request.index()];
        if state.pending_sinks.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        let ns = self.submitted.elapsed().as_nanos() as u64;
        state.finished_after_ns.store(ns, Ordering::Relaxed);
        // Every node of the request has ended (each is a sink or precedes one on a CPU edge), so
        // nothing writes its destinations any more: hand them back before anyone hears of it.
        self.release(request);
        state.flags.fetch_or(FINISHED, Ordering::SeqCst);
        if let Some(callback) = &self.request_callback {
            let status = self.status(request);
            // The caller's callback runs on a worker; its panic must not take the worker down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(request, &status)));
        }
        if self.ack_waiters.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this notify after any waiter's check-then-wait.
            drop(self.completion.lock().unwrap_or_else(|p| p.into_inner()));
            self.completed.notify_all();
        }
        self.pending_requests.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Drops `request`'s reservations.
    fn release(&self, request: RequestId) {
        let start = self.reservations.partition_point(|(r, _)| *r < request.0);
        for (_, reservation) in self.reservations[start..].iter().take_while(|(r, _)| *r == request.0) {
            drop(reservation.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
    }

    /// How a finished request ended.
    fn status(&self, request: RequestId) -> RequestStatus {
        let state = &self.requests[request.index()];
        match state.error.get() {
            Some(err) => RequestStatus::Failed(err.clone()),
            None if state.flags.load(Ordering::Acquire) & CANCELLED != 0 => RequestStatus::Cancelled,
            None => RequestStatus::Done,
        }
    }

    fn is_finished(&self, request: RequestId) -> bool {
        self.requests[request.index()].flags.load(Ordering::SeqCst) & FINISHED != 0
    }

    /// Builds the report, releases the destinations, and signals every waiter. Runs once.
    pub fn publish(&self) {
        let requests = self
            .requests
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let id = RequestId(i as u32);
                RequestReport {
                    id,
                    name: self.graph.requests()[i].name.clone(),
                    status: self.status(id),
                    bytes: state.bytes.load(Ordering::Relaxed),
                    latency: Duration::from_nanos(state.finished_after_ns.load(Ordering::Relaxed)),
                }
            })
            .collect();
        let report = Arc::new(BatchReport {
            batch: self.id(),
            requests,
            elapsed: self.submitted.elapsed(),
        });
        // Every request has finished, so each handed its destinations back already.
        let callback = {
            let mut completion = self.completion.lock().unwrap_or_else(|p| p.into_inner());
            completion.report = Some(report.clone());
            if let Some(fd) = &completion.eventfd {
                fd.signal();
            }
            completion.callback.take()
        };
        self.completed.notify_all();
        if let Some(callback) = callback {
            // The caller's callback runs on a worker; its panic must not take the worker down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&report)));
        }
    }

    fn wait_until(&self, deadline: Option<Instant>, done: impl Fn(&CompletionState) -> bool) -> bool {
        let mut completion = self.completion.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(&completion) {
                return true;
            }
            completion = match deadline {
                None => self.completed.wait(completion).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.completed
                        .wait_timeout(completion, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    fn wait_finished(&self, request: RequestId, deadline: Option<Instant>) -> bool {
        if self.is_finished(request) {
            return true;
        }
        self.ack_waiters.fetch_add(1, Ordering::SeqCst);
        let finished = self.wait_until(deadline, |_| self.is_finished(request));
        self.ack_waiters.fetch_sub(1, Ordering::SeqCst);
        finished
    }
}

/// A submitted batch: wait for it, poll its eventfd, cancel it, read its report and graph.
#[derive(Clone)]
pub struct Batch {
    pub(crate) inner: Arc<BatchShared>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("id", &self.id())
            .field("requests", &self.inner.requests.len())
            .field("complete", &self.is_complete())
            .finish()
    }
}

impl Batch {
    /// The batch's id (its graph's).
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    /// The graph it runs; node states are live while it runs and final once it has retired.
    pub fn graph(&self) -> &CompiledGraph {
        &self.inner.graph
    }

    /// The report, if the batch has retired.
    pub fn report(&self) -> Option<Arc<BatchReport>> {
        self.inner
            .completion
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report
            .clone()
    }

    /// Whether every request has reported.
    pub fn is_complete(&self) -> bool {
        self.report().is_some()
    }

    /// Blocks until the batch retires.
    pub fn wait(&self) -> Arc<BatchReport> {
        self.inner.wait_until(None, |c| c.report.is_some());
        self.report().expect("a retired batch has a report")
    }

    /// Blocks until the batch retires or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Arc<BatchReport>> {
        let deadline = Instant::now() + timeout;
        self.inner
            .wait_until(Some(deadline), |c| c.report.is_some())
            .then(|| self.report())
            .flatten()
    }

    /// An eventfd that becomes readable when the batch retires, for poll loops. Created on
    /// first use; lives as long as the batch.
    pub fn eventfd(&self) -> io::Result<BorrowedFd<'_>> {
        let mut completion = self.inner.completion.lock().unwrap_or_else(|p| p.into_inner());
        if completion.eventfd.is_none() {
            let fd = EventFd::new()?;
            if completion.report.is_some() {
                fd.signal();
            }
            completion.eventfd = Some(fd);
        }
        let raw = completion.eventfd.as_ref().map(EventFd::raw).expect("created above");
        // SAFETY: the descriptor is owned by the batch state, never replaced or closed once set,
        // and that state outlives `&self`.
        Ok(unsafe { BorrowedFd::borrow_raw(raw) })
    }

    /// Cancels every request of the batch.
    pub fn cancel(&self) -> CancelTicket {
        let requests = (0..self.inner.requests.len() as u32).map(RequestId).collect::<Vec<_>>();
        for &r in &requests {
            self.inner.cancel_request(r);
        }
        self.inner.sweep();
        CancelTicket {
            requests: requests.into_iter().map(|r| (self.inner.clone(), r)).collect(),
        }
    }

    /// Cancels every request whose [`RequestInfo`](crate::graph::RequestInfo) `matches` says so,
    /// with one sweep of the queues deferred nodes wait in.
    pub fn cancel_where(&self, mut matches: impl FnMut(&crate::graph::RequestInfo) -> bool) -> CancelTicket {
        let requests: Vec<RequestId> = (0..self.inner.requests.len() as u32)
            .map(RequestId)
            .filter(|&r| matches(self.inner.graph.request_info(r)))
            .collect();
        for &r in &requests {
            self.inner.cancel_request(r);
        }
        if !requests.is_empty() {
            self.inner.sweep();
        }
        CancelTicket {
            requests: requests.into_iter().map(|r| (self.inner.clone(), r)).collect(),
        }
    }

    /// Cancels one request.
    pub fn cancel_request(&self, request: RequestId) -> CancelTicket {
        if request.index() >= self.inner.requests.len() {
            return CancelTicket { requests: Vec::new() };
        }
        self.inner.cancel_request(request);
        self.inner.sweep();
        CancelTicket {
            requests: vec![(self.inner.clone(), request)],
        }
    }
}

/// A cancellation in progress. Acknowledged once no node of a matched request will touch its
/// destination again: nodes that had not started are skipped, running ones have finished.
pub struct CancelTicket {
    pub(crate) requests: Vec<(Arc<BatchShared>, RequestId)>,
}

impl fmt::Debug for CancelTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelTicket")
            .field("requests", &self.requests.len())
            .finish()
    }
}

impl CancelTicket {
    /// How many requests the cancellation matched.
    pub fn matched(&self) -> usize {
        self.requests.len()
    }

    /// Whether every matched request has stopped touching its destination.
    pub fn is_acknowledged(&self) -> bool {
        self.requests.iter().all(|(batch, r)| batch.is_finished(*r))
    }

    /// Blocks until the cancellation is acknowledged.
    pub fn wait(&self) {
        for (batch, r) in &self.requests {
            batch.wait_finished(*r, None);
        }
    }

    /// Blocks until the cancellation is acknowledged or `timeout` passes; returns whether it was.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.requests
            .iter()
            .all(|(batch, r)| batch.wait_finished(*r, Some(deadline)))
    }
}
