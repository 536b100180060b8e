//! Running graphs: dependencies hold, failures propagate and report in enqueue order, every
//! completion signal fires, completion sources (reactors) release nodes, priorities order new
//! work, metrics and observers see every node.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use dsr::engine::{
    Completer, EdgeKind, NodeEnd, NodeId, NodeRef, NodeSpec, Outcome, PendingNode, Reactor, RequestInfo, Stage,
};
use dsr::{ErrorKind, HostBuffer, NodeKind, Priority, Request, RequestStatus};

use crate::common::*;

/// Stamps each node's start and end with a global sequence number.
#[derive(Debug)]
struct Trace {
    clock: AtomicU64,
    stamps: Vec<(AtomicU64, AtomicU64)>,
}

impl Stage for Trace {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let (start, end) = &self.stamps[node.id().index()];
        start.store(self.clock.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        std::hint::black_box((0..node.id().index() % 50).sum::<usize>());
        end.store(self.clock.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        Outcome::Done { bytes: 0 }
    }
}

#[test]
fn stress_every_edge_is_respected_in_a_random_dag() {
    let n = 20_000;
    let trace = Arc::new(Trace {
        clock: AtomicU64::new(0),
        stamps: (0..n).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
    });
    let executor = custom_executor(2, trace.clone(), None);
    let mut batch = executor.batch();
    let graph = batch.graph_mut();
    let mut rng = fastrand::Rng::with_seed(42);
    let requests: Vec<_> = (0..8).map(|_| graph.add_request(RequestInfo::default())).collect();
    let nodes: Vec<NodeId> = (0..n)
        .map(|i| graph.add_node(NodeSpec::bare(NodeKind::Copy, requests[i % 8])))
        .collect();
    let mut edges = Vec::new();
    for i in 1..n {
        for _ in 0..rng.usize(0..4) {
            let from = rng.usize(i.saturating_sub(100)..i);
            graph.add_edge(nodes[from], nodes[i], EdgeKind::Cpu);
            edges.push((from, i));
        }
    }
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done());
    for (from, to) in edges {
        let end = trace.stamps[from].1.load(Ordering::SeqCst);
        let start = trace.stamps[to].0.load(Ordering::SeqCst);
        assert!(
            end != 0 && end < start,
            "node {to} started before its predecessor {from} ended"
        );
    }
}

#[test]
fn smoke_memory_copies_land() {
    let executor = executor(2);
    let sources: Vec<Arc<[u8]>> = (0..64).map(|i| pattern(1000 + i * 37, i as u64).into()).collect();
    let total: usize = sources.iter().map(|s| s.len()).sum();
    let dest = HostBuffer::new(total);
    let mut batch = executor.batch();
    let mut at = 0;
    for source in &sources {
        batch
            .push(Request::memory(
                source.clone(),
                0,
                source.len() as u64,
                &dest,
                at as u64,
            ))
            .unwrap();
        at += source.len();
    }
    let report = executor.submit(batch).unwrap().wait();
    assert!(report.all_done());
    assert_eq!(report.bytes(), total as u64);
    let mut dest = dest;
    assert_eq!(dest.as_slice().unwrap(), sources.concat().as_slice());
}

#[test]
fn a_failed_decode_fails_its_request_with_the_stage_named() {
    // Random bytes are no GDeflate stream: the read succeeds, the decode fails.
    let data = pattern(5000, 1);
    let file = temp_file(&data);
    let executor = executor(2);
    let dest = HostBuffer::new(20_000);
    let mut batch = executor.batch();
    batch
        .push(Request::file(file.path(), 0, 5000, &dest, 0).gdeflate(20_000))
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait();
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("expected a failure, got {:?}", report.requests[0].status);
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert_eq!(err.stage(), Some(NodeKind::DecompressCpu));
    assert!(err.to_string().contains("TileStream header"), "{err}");
    let states: Vec<_> = batch
        .graph()
        .nodes()
        .map(|n| (n.kind, n.state.is_done(), n.state.is_failed()))
        .collect();
    assert_eq!(
        states,
        [
            (NodeKind::Acquire, true, false),
            (NodeKind::Read, true, false),
            (NodeKind::DecompressCpu, false, true),
            // A failure never tombstones a release: it ran, and the scratch went back.
            (NodeKind::Release, true, false),
        ]
    );
    assert_eq!(executor.scratch().in_use, 0, "a failed request hands its scratch back");
}

#[test]
fn a_failed_read_skips_its_successors_and_reports_failed_not_cancelled() {
    let executor = executor(2);
    let dest = HostBuffer::new(1 << 20);
    let mut batch = executor.batch();
    batch
        .push(Request::file("/nonexistent/dsr/x.gdf", 0, 300, &dest, 0).gdeflate(1 << 20))
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait();
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("expected a failure, got {:?}", report.requests[0].status);
    };
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let decodes: Vec<_> = batch
        .graph()
        .nodes()
        .filter(|n| n.kind == NodeKind::DecompressCpu)
        .collect();
    assert!(!decodes.is_empty());
    assert!(
        decodes.iter().all(|n| n.state.skipped()),
        "the decode must not run after its read failed"
    );
    let release = batch.graph().nodes().last().unwrap();
    assert_eq!(release.kind, NodeKind::Release);
    assert!(
        release.state.is_done(),
        "the release runs whatever became of its request"
    );
}

/// Succeeds, or fails after a delay, by request tag: 1 = fail slowly, 2 = fail at once.
#[derive(Debug)]
struct Scripted;

impl Stage for Scripted {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        match node.request_info().tag {
            1 => {
                // Long enough that request 2 fails first in time even on a loaded machine.
                std::thread::sleep(Duration::from_millis(300));
                Outcome::Failed(dsr::Error::new(ErrorKind::Io, "slow failure"))
            }
            2 => Outcome::Failed(dsr::Error::new(ErrorKind::Io, "fast failure")),
            _ => Outcome::Done { bytes: 0 },
        }
    }
}

#[test]
fn the_first_failure_is_the_first_in_enqueue_order() {
    let executor = custom_executor(2, Arc::new(Scripted), None);
    let mut batch = executor.batch();
    for tag in [0, 1, 2, 0] {
        let graph = batch.graph_mut();
        let request = graph.add_request(RequestInfo {
            tag,
            ..RequestInfo::default()
        });
        graph.add_node(NodeSpec::bare(NodeKind::Copy, request));
    }
    let report = executor.submit(batch).unwrap().wait();
    let (first, err) = report.first_failure().expect("two requests failed");
    assert_eq!(first.index(), 1);
    assert_eq!(err.message(), "slow failure");
    assert!(
        report.requests[2].latency < report.requests[1].latency,
        "request 2 failed first in time"
    );
    assert_eq!(report.requests[0].status, RequestStatus::Done);
    assert_eq!(report.requests[3].status, RequestStatus::Done);
}

#[test]
fn callback_eventfd_and_wait_all_see_the_same_completion() {
    let gate = Gate::new();
    let executor = gated_executor(1, &gate);
    let dest = HostBuffer::new(64);
    let mut batch = executor.batch();
    batch
        .push(Request::memory(pattern(64, 3), 0, 64, &dest, 0).tag(GATED))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    batch.on_complete(move |report| tx.send(report.all_done()).unwrap());
    let batch = executor.submit(batch).unwrap();
    let fd = batch.eventfd().unwrap();
    gate.wait_arrivals(1);

    assert!(
        batch.wait_timeout(Duration::from_millis(20)).is_none(),
        "still blocked at the gate"
    );
    assert!(!poll_readable(&fd, 0), "the eventfd fires only at completion");
    gate.open();
    assert!(batch.wait_timeout(PATIENCE).expect("completes").all_done());
    assert!(rx.recv_timeout(PATIENCE).unwrap(), "the callback ran with the report");
    assert!(poll_readable(&fd, 1000), "the eventfd fired");
    // An eventfd asked for after completion is readable at once.
    let late = batch.eventfd().unwrap();
    assert!(poll_readable(&late, 0));
}

fn poll_readable(fd: &std::os::fd::BorrowedFd<'_>, timeout_ms: i32) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    n == 1 && pfd.revents & libc::POLLIN != 0
}

#[test]
fn an_empty_batch_completes_at_once() {
    let executor = executor(1);
    let report = executor
        .submit(executor.batch())
        .unwrap()
        .wait_timeout(PATIENCE)
        .unwrap();
    assert!(report.requests.is_empty() && report.all_done());
}

#[test]
fn a_kind_without_a_stage_fails_clearly() {
    let executor = dsr::Executor::builder().workers(1).build().unwrap();
    let dest = HostBuffer::new(8);
    let mut batch = executor.batch();
    batch
        .push(Request::memory(Arc::from(vec![1u8; 8]), 0, 8, &dest, 0))
        .unwrap();
    let report = executor.submit(batch).unwrap().wait();
    let (_, err) = report.first_failure().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("no copy stage"), "{err}");
}

/// A completion source that finishes deferred nodes after a delay, when polled.
#[derive(Debug, Default)]
struct Delayed {
    pending: Mutex<Vec<(PendingNode, Instant)>>,
    completed: AtomicUsize,
}

impl Reactor for Delayed {
    fn poll(&self, completer: &mut Completer<'_>) -> usize {
        let now = Instant::now();
        let due: Vec<_> = {
            let mut pending = self.pending.lock().unwrap();
            let (due, later) = pending.drain(..).partition(|(_, at)| *at <= now);
            *pending = later;
            due
        };
        let n = due.len();
        for (node, _) in due {
            // Count first: the last completion may retire the batch and wake the test.
            self.completed.fetch_add(1, Ordering::SeqCst);
            completer.complete(node, Ok(0));
        }
        n
    }
    fn in_flight(&self) -> bool {
        !self.pending.lock().unwrap().is_empty()
    }
}

/// Defers every node to the reactor; tag 9 drops the pending node instead.
#[derive(Debug)]
struct Defer(Arc<Delayed>);

impl Stage for Defer {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let drop_it = node.request_info().tag == 9;
        let (pending, outcome) = node.defer();
        if drop_it {
            drop(pending);
        } else {
            let due = Instant::now() + Duration::from_micros(200);
            self.0.pending.lock().unwrap().push((pending, due));
        }
        outcome
    }
}

#[test]
fn a_reactor_completes_deferred_nodes_and_releases_their_successors() {
    let reactor = Arc::new(Delayed::default());
    let executor = dsr::Executor::builder()
        .workers(2)
        .stage(NodeKind::Copy, Arc::new(Defer(reactor.clone())))
        .reactor(reactor.clone())
        .build()
        .unwrap();
    let mut batch = executor.batch();
    chain_graph(batch.graph_mut(), 50, 0);
    chain_graph(batch.graph_mut(), 50, 0);
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{report:?}");
    assert_eq!(reactor.completed.load(Ordering::SeqCst), 100);
    assert!(batch.graph().nodes().all(|n| n.state.is_done()));
}

#[test]
fn a_dropped_pending_node_fails_as_abandoned_instead_of_hanging() {
    let reactor = Arc::new(Delayed::default());
    let executor = dsr::Executor::builder()
        .workers(1)
        .stage(NodeKind::Copy, Arc::new(Defer(reactor.clone())))
        .reactor(reactor)
        .build()
        .unwrap();
    let mut batch = executor.batch();
    chain_graph(batch.graph_mut(), 3, 9);
    chain_graph(batch.graph_mut(), 3, 0);
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("{:?}", report.requests[0].status)
    };
    assert_eq!(err.kind(), ErrorKind::Abandoned);
    assert_eq!(report.requests[1].status, RequestStatus::Done);
}

/// A completion source that holds deferred nodes until a cancellation sweeps them, and can be
/// told to panic in its next poll (dropping what it holds).
#[derive(Debug, Default)]
struct Held {
    pending: Mutex<Vec<PendingNode>>,
    panic_in_poll: std::sync::atomic::AtomicBool,
}

impl Reactor for Held {
    fn poll(&self, _completer: &mut Completer<'_>) -> usize {
        if self.panic_in_poll.swap(false, Ordering::SeqCst) {
            let lost = std::mem::take(&mut *self.pending.lock().unwrap());
            panic!("a reactor bug, holding {} nodes", lost.len());
        }
        0
    }
    fn in_flight(&self) -> bool {
        !self.pending.lock().unwrap().is_empty()
    }
    fn sweep(&self) {
        let cancelled: Vec<PendingNode> = {
            let mut pending = self.pending.lock().unwrap();
            let (cancelled, kept) = pending.drain(..).partition(PendingNode::is_tombstoned);
            *pending = kept;
            cancelled
        };
        // Outside the lock, as every completion source must.
        for node in cancelled {
            node.cancel();
        }
    }
}

#[derive(Debug)]
struct Hold(Arc<Held>);

impl Stage for Hold {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let (pending, outcome) = node.defer();
        self.0.pending.lock().unwrap().push(pending);
        outcome
    }
}

fn held_executor(workers: usize, held: &Arc<Held>, observer: Arc<dyn dsr::engine::Observer>) -> dsr::Executor {
    dsr::Executor::builder()
        .workers(workers)
        .stage(NodeKind::Copy, Arc::new(Hold(held.clone())))
        .reactor(held.clone())
        .observer(observer)
        .build()
        .unwrap()
}

#[test]
fn a_cancel_sweeps_deferred_nodes_and_observers_tell_cut_short_from_skipped() {
    let held = Arc::new(Held::default());
    let counting = Arc::new(Counting::default());
    let executor = held_executor(2, &held, counting.clone());
    let mut batch = executor.batch();
    let chain = chain_graph(batch.graph_mut(), 3, 0);
    let batch = executor.submit(batch).unwrap();
    wait_until("the first node is deferred", || held.in_flight());

    let ticket = batch.cancel();
    assert!(ticket.wait_timeout(PATIENCE), "the sweep completed the held node");
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert_eq!(report.requests[0].status, RequestStatus::Cancelled);
    assert!(!held.in_flight());

    let key = |n: NodeId| (batch.id(), n);
    let deferred = counting.deferred.lock().unwrap();
    let finished = counting.finished.lock().unwrap();
    assert_eq!(
        deferred.get(&key(chain[0])),
        Some(&1),
        "the first node was deferred once"
    );
    assert_eq!(
        finished[&key(chain[0])],
        (1, NodeEnd::Cancelled),
        "cut short after submission"
    );
    for &node in &chain[1..] {
        assert_eq!(finished[&key(node)], (1, NodeEnd::Skipped), "skipped before it started");
        assert!(!deferred.contains_key(&key(node)));
    }
    assert!(
        counting.started.lock().unwrap().len() == 1,
        "only the first node started"
    );
}

#[test]
fn regression_a_panicking_reactor_fails_its_nodes_and_the_worker_survives() {
    let held = Arc::new(Held::default());
    let counting = Arc::new(Counting::default());
    // One worker: if the panic took it down, nothing would run the second batch.
    let executor = held_executor(1, &held, counting);
    let mut batch = executor.batch();
    chain_graph(batch.graph_mut(), 2, 0);
    let batch = executor.submit(batch).unwrap();
    wait_until("the first node is deferred", || held.in_flight());
    held.panic_in_poll.store(true, Ordering::SeqCst);

    let report = batch.wait_timeout(PATIENCE).expect("drains");
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("{:?}", report.requests[0].status)
    };
    assert_eq!(err.kind(), ErrorKind::Abandoned, "{err}");

    // The worker is still there: a two-node chain defers, is cancelled and drains again.
    let mut batch = executor.batch();
    chain_graph(batch.graph_mut(), 2, 0);
    let batch = executor.submit(batch).unwrap();
    wait_until("the next batch's first node is deferred", || held.in_flight());
    assert!(batch.cancel().wait_timeout(PATIENCE));
    assert_eq!(batch.wait_timeout(PATIENCE).expect("drains").cancelled(), 1);
}

/// A completion source that never completes on its own, and whose `wait` records whether it
/// was called while another source had completions coming: it stands for io_uring with a slow
/// read in flight, whose `io_uring_enter` would not wake for a GPU completion.
#[derive(Debug)]
struct Stubborn {
    pending: Mutex<Vec<PendingNode>>,
    other: Arc<Prompt>,
    waits_while_other_busy: AtomicUsize,
    ready: dsr::engine::EventFd,
}

impl Reactor for Stubborn {
    fn poll(&self, _completer: &mut Completer<'_>) -> usize {
        self.ready.drain();
        0
    }
    fn in_flight(&self) -> bool {
        !self.pending.lock().unwrap().is_empty()
    }
    fn wait(&self, timeout: Duration) {
        if self.other.in_flight() {
            self.waits_while_other_busy.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(timeout);
    }
    fn arm(&self) -> Option<std::os::fd::RawFd> {
        Some(self.ready.raw())
    }
}

/// A completion source that finishes its nodes from a thread of its own, 2 ms later, and
/// signals its eventfd.
#[derive(Debug)]
struct Prompt {
    done: Mutex<Vec<PendingNode>>,
    outstanding: AtomicUsize,
    ready: dsr::engine::EventFd,
}

impl Reactor for Prompt {
    fn poll(&self, completer: &mut Completer<'_>) -> usize {
        self.ready.drain();
        let done = std::mem::take(&mut *self.done.lock().unwrap());
        let n = done.len();
        for node in done {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            completer.complete(node, Ok(0));
        }
        n
    }
    fn in_flight(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) > 0
    }
    fn arm(&self) -> Option<std::os::fd::RawFd> {
        Some(self.ready.raw())
    }
}

/// Tag 1 defers to the stubborn source, anything else to the prompt one.
#[derive(Debug)]
struct Split(Arc<Stubborn>, Arc<Prompt>);

impl Stage for Split {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let stubborn = node.request_info().tag == 1;
        let (pending, outcome) = node.defer();
        if stubborn {
            self.0.pending.lock().unwrap().push(pending);
        } else {
            let prompt = self.1.clone();
            prompt.outstanding.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                prompt.done.lock().unwrap().push(pending);
                prompt.ready.signal();
            });
        }
        outcome
    }
}

#[test]
fn regression_a_waiting_worker_waits_on_every_busy_source_at_once() {
    let prompt = Arc::new(Prompt {
        done: Mutex::default(),
        outstanding: AtomicUsize::new(0),
        ready: dsr::engine::EventFd::new().unwrap(),
    });
    let stubborn = Arc::new(Stubborn {
        pending: Mutex::default(),
        other: prompt.clone(),
        waits_while_other_busy: AtomicUsize::new(0),
        ready: dsr::engine::EventFd::new().unwrap(),
    });
    // One worker, and the stubborn source first in line: blocking in its `wait` while the
    // prompt source has completions coming is the bug.
    let executor = dsr::Executor::builder()
        .workers(1)
        .stage(NodeKind::Copy, Arc::new(Split(stubborn.clone(), prompt.clone())))
        .reactor(stubborn.clone())
        .reactor(prompt.clone())
        .build()
        .unwrap();
    let mut slow = executor.batch();
    chain_graph(slow.graph_mut(), 1, 1);
    let slow = executor.submit(slow).unwrap();
    wait_until("the slow node is deferred", || stubborn.in_flight());
    let mut quick = executor.batch();
    chain_graph(quick.graph_mut(), 20, 2);
    let report = executor
        .submit(quick)
        .unwrap()
        .wait_timeout(PATIENCE)
        .expect("the prompt source's chain completes while the other source is busy");
    let waits_while_other_busy = stubborn.waits_while_other_busy.load(Ordering::SeqCst);
    // Release the stubborn source before asserting, so a failure cannot hang the teardown.
    for node in stubborn.pending.lock().unwrap().drain(..) {
        node.complete(Ok(0));
    }
    assert!(slow.wait_timeout(PATIENCE).expect("drains").all_done());
    assert!(report.all_done());
    assert_eq!(
        waits_while_other_busy, 0,
        "the worker blocked in one source's wait while another had completions coming"
    );
}

#[test]
fn a_stage_for_a_built_in_kind_is_refused() {
    for kind in [NodeKind::Barrier, NodeKind::Acquire, NodeKind::Release] {
        let err = dsr::Executor::builder()
            .workers(1)
            .stage(kind, Arc::new(Noop::default()))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert!(err.to_string().contains(kind.name()), "{err}");
    }
}

/// Records the order requests ran in.
#[derive(Debug)]
struct Order {
    gate: Arc<Gate>,
    ran: Mutex<Vec<u64>>,
}

impl Stage for Order {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let tag = node.request_info().tag;
        if tag & GATED != 0 {
            self.gate.pass();
        }
        self.ran.lock().unwrap().push(tag);
        Outcome::Done { bytes: 0 }
    }
}

#[test]
fn new_work_is_taken_highest_priority_first() {
    let gate = Gate::new();
    let order = Arc::new(Order {
        gate: gate.clone(),
        ran: Mutex::new(Vec::new()),
    });
    let executor = custom_executor(1, order.clone(), None);
    let submit = |tag: u64, priority: Priority| {
        let mut batch = executor.batch();
        let graph = batch.graph_mut();
        let request = graph.add_request(RequestInfo {
            tag,
            priority,
            ..RequestInfo::default()
        });
        graph.add_node(NodeSpec::bare(NodeKind::Copy, request));
        executor.submit(batch).unwrap()
    };
    let blocker = submit(GATED, Priority::Normal);
    gate.wait_arrivals(1);
    let batches = [
        submit(1, Priority::Low),
        submit(2, Priority::Normal),
        submit(3, Priority::Realtime),
        submit(4, Priority::High),
    ];
    gate.open();
    blocker.wait();
    for b in &batches {
        b.wait();
    }
    assert_eq!(*order.ran.lock().unwrap(), [GATED, 3, 4, 2, 1]);
}

#[test]
fn metrics_and_observers_see_every_node() {
    let data = pattern(3 << 20, 5);
    let file = temp_file(&data);
    let counting = Arc::new(Counting::default());
    let executor = observed_executor(counting.clone());
    let dest = HostBuffer::new(data.len());
    let mut batch = executor.batch();
    batch
        .push(Request::file(file.path(), 0, data.len() as u64, &dest, 0))
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    assert!(batch.wait().all_done());
    let metrics = executor.metrics();
    let read = metrics.stage(NodeKind::Read).expect("reads ran");
    assert_eq!(read.bytes, data.len() as u64);
    assert_eq!(read.latency.count, 3);
    assert!(read.latency.p50 > Duration::ZERO && read.latency.p999 >= read.latency.p50);
    counting.assert_each_finished_once(batch.id(), 3);
    let ends: Vec<NodeEnd> = counting
        .finished
        .lock()
        .unwrap()
        .values()
        .map(|e| e.1.clone())
        .collect();
    assert!(ends.iter().all(|e| *e == NodeEnd::Done { bytes: 1 << 20 }));
    executor.reset_metrics();
    assert!(executor.metrics().stages.is_empty());
}

/// Panics for requests tagged 13.
#[derive(Debug)]
struct Panicky;

impl Stage for Panicky {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        if node.request_info().tag == 13 {
            panic!("stage bug for the test");
        }
        Outcome::Done { bytes: 0 }
    }
}

#[test]
fn regression_a_panicking_stage_fails_its_node_and_the_worker_survives() {
    let executor = custom_executor(1, Arc::new(Panicky), None);
    for _ in 0..3 {
        let mut batch = executor.batch();
        chain_graph(batch.graph_mut(), 3, 13);
        chain_graph(batch.graph_mut(), 3, 0);
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        let RequestStatus::Failed(err) = &report.requests[0].status else {
            panic!("{:?}", report.requests[0].status)
        };
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains("stage bug for the test"), "{err}");
        assert_eq!(
            report.requests[1].status,
            RequestStatus::Done,
            "other requests keep going"
        );
    }
}
