//! Helpers shared by the test modules: executors, test stages, observers, files.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dsr::engine::{GraphBuilder, NodeEnd, NodeEvent, NodeId, NodeRef, NodeSpec, Observer, Outcome, RequestInfo, Stage};
use dsr::{Executor, ExecutorConfig, NodeKind};

/// Generous bound for anything that should finish promptly: a hang fails instead of hanging CI.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn executor(workers: usize) -> Executor {
    dsr::executor(ExecutorConfig {
        workers,
        ..ExecutorConfig::default()
    })
    .expect("executor starts")
}

/// Deterministic bytes that differ at every offset and between seeds.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    bytes
}

pub fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(bytes).expect("write temp file");
    file.flush().expect("flush temp file");
    file
}

/// A gate stages can wait on: closed until `open`, counting who reached it.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    arrived: AtomicUsize,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Gate::default())
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn pass(&self) {
        // Count the arrival under the lock: a waiter that has just checked the count is then
        // already waiting when the notification comes.
        let mut open = self.lock();
        self.arrived.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_all();
        while !*open {
            open = self.changed.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
    pub fn open(&self) {
        *self.lock() = true;
        self.changed.notify_all();
    }
    /// Blocks until `n` callers have reached the gate; fails the test (with the gate opened, so
    /// the executor can still drain) after [`PATIENCE`].
    pub fn wait_arrivals(&self, n: usize) {
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut open = self.lock();
        while self.arrived.load(Ordering::SeqCst) < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                *open = true;
                self.changed.notify_all();
                drop(open);
                panic!("nobody reached the gate");
            }
            open = self
                .changed
                .wait_timeout(open, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Runs `inner`, but nodes of requests whose tag has bit 63 set wait at the gate first.
#[derive(Debug)]
pub struct Gated {
    pub inner: Arc<dyn Stage>,
    pub gate: Arc<Gate>,
}

pub const GATED: u64 = 1 << 63;

impl Stage for Gated {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        if node.request_info().tag & GATED != 0 {
            self.gate.pass();
        }
        self.inner.run(node)
    }
}

/// An executor whose copy and read stages wait at `gate` for requests tagged [`GATED`].
pub fn gated_executor(workers: usize, gate: &Arc<Gate>) -> Executor {
    let copy: Arc<dyn Stage> = Arc::new(Gated {
        inner: Arc::new(dsr::stages::CopyStage),
        gate: gate.clone(),
    });
    let read: Arc<dyn Stage> = Arc::new(Gated {
        inner: Arc::new(dsr::stages::PreadStage::default()),
        gate: gate.clone(),
    });
    dsr::executor_builder(ExecutorConfig::default())
        .workers(workers)
        .stage(NodeKind::Copy, copy)
        .stage(NodeKind::Read, read)
        .build()
        .expect("executor starts")
}

/// Counts node events per (batch, node), to prove nothing is reported twice.
#[derive(Debug, Default)]
pub struct Counting {
    pub started: Mutex<HashMap<(u64, NodeId), usize>>,
    pub deferred: Mutex<HashMap<(u64, NodeId), usize>>,
    pub finished: Mutex<HashMap<(u64, NodeId), (usize, NodeEnd)>>,
    /// The timeline value each node was submitted with, and how often.
    pub submitted: Mutex<HashMap<(u64, NodeId), (usize, u64)>>,
}

impl Observer for Counting {
    fn node_started(&self, event: &NodeEvent) {
        *self
            .started
            .lock()
            .unwrap()
            .entry((event.batch, event.node))
            .or_default() += 1;
    }
    fn node_deferred(&self, event: &NodeEvent) {
        *self
            .deferred
            .lock()
            .unwrap()
            .entry((event.batch, event.node))
            .or_default() += 1;
    }
    fn node_submitted(&self, event: &NodeEvent, value: u64) {
        let mut submitted = self.submitted.lock().unwrap();
        let entry = submitted.entry((event.batch, event.node)).or_insert((0, value));
        entry.0 += 1;
    }
    fn node_finished(&self, event: &NodeEvent, end: &NodeEnd) {
        let mut finished = self.finished.lock().unwrap();
        let entry = finished.entry((event.batch, event.node)).or_insert((0, end.clone()));
        entry.0 += 1;
        entry.1 = end.clone();
    }
}

impl Counting {
    /// Every node of `batch` (of `nodes` nodes) finished exactly once.
    pub fn assert_each_finished_once(&self, batch: u64, nodes: usize) {
        let finished = self.finished.lock().unwrap();
        for n in 0..nodes {
            let count = finished.get(&(batch, NodeId::from_index(n))).map_or(0, |e| e.0);
            assert_eq!(count, 1, "node {n} of batch {batch} finished {count} times");
        }
        let started = self.started.lock().unwrap();
        assert!(started.values().all(|&c| c == 1), "a node started twice");
    }
}

/// A graph of `chain` nodes in a line, in one request tagged `tag`.
pub fn chain_graph(graph: &mut GraphBuilder, len: usize, tag: u64) -> Vec<NodeId> {
    let request = graph.add_request(RequestInfo {
        tag,
        ..RequestInfo::default()
    });
    let nodes: Vec<NodeId> = (0..len)
        .map(|_| graph.add_node(NodeSpec::bare(NodeKind::Copy, request)))
        .collect();
    for pair in nodes.windows(2) {
        graph.add_edge(pair[0], pair[1], dsr::engine::EdgeKind::Cpu);
    }
    nodes
}

/// Does nothing but count, and wait at the gate for [`GATED`] requests.
#[derive(Debug, Default)]
pub struct Noop {
    pub runs: AtomicUsize,
    pub gate: Option<Arc<Gate>>,
}

impl Stage for Noop {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        if let Some(gate) = &self.gate {
            if node.request_info().tag & GATED != 0 {
                gate.pass();
            }
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
        Outcome::Done { bytes: 0 }
    }
}

/// An executor whose `Copy` stage is `stage`, observed by `observer`.
pub fn custom_executor(workers: usize, stage: Arc<dyn Stage>, observer: Option<Arc<dyn Observer>>) -> Executor {
    let mut builder = Executor::builder().workers(workers).stage(NodeKind::Copy, stage);
    if let Some(observer) = observer {
        builder = builder.observer(observer);
    }
    builder.build().expect("executor starts")
}

/// An executor with the stock stages, two workers, watched by `observer`.
pub fn observed_executor(observer: Arc<dyn Observer>) -> Executor {
    dsr::executor_builder(ExecutorConfig::default())
        .workers(2)
        .observer(observer)
        .build()
        .expect("executor starts")
}

/// Polls `done` every millisecond until it holds; fails the test after [`PATIENCE`].
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Submits `batch` and waits for it; fails the test unless every request is done.
pub fn run_all(executor: &Executor, batch: dsr::BatchBuilder) -> Arc<dsr::BatchReport> {
    let report = executor
        .submit(batch)
        .expect("the batch compiles")
        .wait_timeout(PATIENCE)
        .expect("drains");
    assert!(report.all_done(), "{report:?}");
    report
}

/// A file of `data` on the build disk (the system's temporary directory may be tmpfs, which has
/// no direct I/O and whose pages cannot be dropped), written through to it.
pub fn disk_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::io::Write::write_all(&mut file, data).unwrap();
    file.as_file().sync_all().unwrap();
    file
}

/// Drops `file`'s pages from the page cache, and checks that they went.
pub fn evict(file: &tempfile::NamedTempFile) {
    evict_from(file, 0);
}

/// Drops `file`'s pages from `offset` on from the page cache, and checks that they went (pages
/// still being read ahead stay: the advice is repeated until none is left).
pub fn evict_from(file: &tempfile::NamedTempFile, offset: u64) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file.as_file());
    let len = file.as_file().metadata().unwrap().len() - offset;
    for _ in 0..200 {
        // SAFETY: advice on the file's own descriptor.
        unsafe { libc::posix_fadvise(fd, offset as i64, 0, libc::POSIX_FADV_DONTNEED) };
        let (cached, _) = dsr::stages::io::residency::resident(fd, offset, len).expect("a residency probe answers");
        if cached == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the file's pages from {offset} on did not leave the page cache");
}
