//! GPU edges in the engine, without a GPU: a scripted timeline stands in for a queue, so each
//! test decides when work is submitted and when the "GPU" reaches a value. What must hold: a
//! successor behind a GPU edge is released when its predecessor is submitted (and waits on its
//! value), one behind a CPU edge only when it completes; a tombstone skips GPU nodes not yet
//! submitted; a batch never retires while submitted work is out; every node ends once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dsr::engine::{
    Completer, EdgeKind, NodeEnd, NodeId, NodeRef, NodeSpec, Outcome, PendingNode, Reactor, RequestInfo, Stage,
};
use dsr::{ErrorKind, NodeKind, RequestStatus};

use crate::common::*;

/// A pretend GPU queue with one timeline. Stages hand it nodes (`staged`); `submit` gives each a
/// value and marks it submitted; polls complete what the timeline (`reached`) has passed.
#[derive(Debug, Default)]
struct Timeline {
    state: Mutex<TimelineState>,
    reached: AtomicU64,
    /// Submit as soon as a node is staged, rather than when the test says.
    eager: std::sync::atomic::AtomicBool,
    /// What each node waited on when it was submitted, by node.
    waits: Mutex<HashMap<NodeId, Vec<u64>>>,
}

#[derive(Debug, Default)]
struct TimelineState {
    next: u64,
    staged: Vec<(PendingNode, NodeId, Vec<u64>)>,
    submitted: Vec<(PendingNode, u64)>,
}

impl Timeline {
    /// Submits everything staged, in order, each with the next value. `submitted` is called under
    /// the queue's lock, as a real GPU source does right after `vkQueueSubmit`.
    fn submit(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        for (mut node, id, waits) in std::mem::take(&mut state.staged) {
            state.next += 1;
            let value = state.next;
            assert!(waits.iter().all(|&w| w < value), "a wait on a value not yet submitted");
            self.waits.lock().unwrap().insert(id, waits);
            node.submitted(value);
            state.submitted.push((node, value));
        }
        state.next
    }

    fn staged(&self) -> usize {
        self.state.lock().unwrap().staged.len()
    }
}

impl Reactor for Timeline {
    fn poll(&self, completer: &mut Completer<'_>) -> usize {
        let reached = self.reached.load(Ordering::SeqCst);
        let done: Vec<_> = {
            let mut state = self.state.lock().unwrap();
            let (done, out) = state.submitted.drain(..).partition(|(_, v)| *v <= reached);
            state.submitted = out;
            done
        };
        let n = done.len();
        for (node, _) in done {
            completer.complete(node, Ok(0));
        }
        n
    }
    fn in_flight(&self) -> bool {
        let state = self.state.lock().unwrap();
        !state.staged.is_empty() || !state.submitted.is_empty()
    }
    fn sweep(&self) {
        // Tombstoned nodes the GPU never saw are cut short; submitted ones run out.
        let gone: Vec<_> = {
            let mut state = self.state.lock().unwrap();
            let (gone, kept) = state.staged.drain(..).partition(|(node, _, _)| node.is_tombstoned());
            state.staged = kept;
            gone
        };
        for (node, _, _) in gone {
            node.cancel();
        }
    }
}

/// Runs an upload (or GPU copy) node by staging it on the timeline with its GPU waits.
#[derive(Debug)]
struct OnTimeline(Arc<Timeline>);

impl Stage for OnTimeline {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let waits: Vec<u64> = node.gpu_waits().collect();
        let id = node.id();
        let (pending, outcome) = node.defer();
        self.0.state.lock().unwrap().staged.push((pending, id, waits));
        if self.0.eager.load(Ordering::SeqCst) {
            self.0.submit();
        }
        outcome
    }
}

fn timeline_executor(timeline: &Arc<Timeline>, counting: &Arc<Counting>) -> dsr::Executor {
    dsr::Executor::builder()
        .workers(2)
        .stage(NodeKind::Upload, Arc::new(OnTimeline(timeline.clone())))
        .stage(NodeKind::Read, Arc::new(Noop::default()))
        .reactor(timeline.clone())
        .observer(counting.clone())
        .build()
        .unwrap()
}

fn finished(counting: &Counting, batch: u64, node: NodeId) -> Option<NodeEnd> {
    counting
        .finished
        .lock()
        .unwrap()
        .get(&(batch, node))
        .map(|(_, end)| end.clone())
}

#[test]
fn a_gpu_chain_is_submitted_before_any_of_it_completes() {
    let timeline = Arc::new(Timeline::default());
    timeline.eager.store(true, Ordering::SeqCst);
    let counting = Arc::new(Counting::default());
    let executor = timeline_executor(&timeline, &counting);
    let mut batch = executor.batch();
    let graph = batch.graph_mut();
    let request = graph.add_request(RequestInfo::default());
    let chain: Vec<NodeId> = (0..4)
        .map(|_| graph.add_node(NodeSpec::bare(NodeKind::Upload, request)))
        .collect();
    for pair in chain.windows(2) {
        graph.add_edge(pair[0], pair[1], EdgeKind::Gpu);
    }
    // A CPU node after the chain's end: released by completion alone.
    let after = graph.add_node(NodeSpec::bare(NodeKind::Read, request));
    graph.add_edge(chain[3], after, EdgeKind::Cpu);
    let batch = executor.submit(batch).unwrap();

    wait_until("the whole chain is submitted", || {
        counting.submitted.lock().unwrap().len() == 4
    });
    // The GPU has reached nothing: no node of the chain has completed, and the CPU node waits.
    assert!(chain.iter().all(|&n| finished(&counting, batch.id(), n).is_none()));
    assert!(!counting.started.lock().unwrap().contains_key(&(batch.id(), after)));
    assert!(!batch.is_complete());
    let waits = timeline.waits.lock().unwrap().clone();
    let value = |n: NodeId| counting.submitted.lock().unwrap()[&(batch.id(), n)].1;
    assert_eq!(waits[&chain[0]], Vec::<u64>::new(), "the head waits on nothing");
    for pair in chain.windows(2) {
        assert_eq!(
            waits[&pair[1]],
            vec![value(pair[0])],
            "each link waits on its predecessor's value"
        );
        assert_eq!(batch.graph().submitted_value(pair[0]), Some(value(pair[0])));
    }

    timeline.reached.store(u64::MAX, Ordering::SeqCst);
    let report = batch.wait_timeout(PATIENCE).expect("drains once the GPU gets there");
    assert!(report.all_done(), "{report:?}");
    counting.assert_each_finished_once(batch.id(), 5);
    assert!(counting
        .submitted
        .lock()
        .unwrap()
        .values()
        .all(|&(times, _)| times == 1));
}

#[test]
fn a_batch_waits_for_submitted_work_even_when_its_successors_end_first() {
    let timeline = Arc::new(Timeline::default());
    let counting = Arc::new(Counting::default());
    let executor = timeline_executor(&timeline, &counting);
    let mut batch = executor.batch();
    let graph = batch.graph_mut();
    let request = graph.add_request(RequestInfo::default());
    let [head, tail] = [0; 2].map(|_| graph.add_node(NodeSpec::bare(NodeKind::Upload, request)));
    graph.add_edge(head, tail, EdgeKind::Gpu);
    let batch = executor.submit(batch).unwrap();
    wait_until("the head is staged", || timeline.staged() == 1);
    timeline.submit();
    wait_until("the tail is staged", || timeline.staged() == 1);

    // The cancel's sweep cuts the tail short (the GPU never saw it): it ends at once, and it is
    // a sink of the request. The head's work is out on the "GPU": the batch must stay.
    let ticket = batch.cancel();
    assert_eq!(finished(&counting, batch.id(), tail), Some(NodeEnd::Cancelled));
    assert!(!batch.is_complete(), "the head's GPU work is still out");
    assert!(!ticket.is_acknowledged());

    timeline.reached.store(u64::MAX, Ordering::SeqCst);
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert_eq!(report.requests[0].status, RequestStatus::Cancelled);
    assert!(ticket.wait_timeout(PATIENCE));
    assert_eq!(
        finished(&counting, batch.id(), head),
        Some(NodeEnd::Done { bytes: 0 }),
        "submitted work runs out"
    );
    counting.assert_each_finished_once(batch.id(), 2);
}

#[test]
fn a_cancel_skips_gpu_nodes_not_yet_submitted() {
    let timeline = Arc::new(Timeline::default());
    let counting = Arc::new(Counting::default());
    let executor = timeline_executor(&timeline, &counting);
    let mut batch = executor.batch();
    let chains: Vec<Vec<NodeId>> = (0..8)
        .map(|_| {
            let graph = batch.graph_mut();
            let request = graph.add_request(RequestInfo::default());
            let chain: Vec<NodeId> = (0..3)
                .map(|_| graph.add_node(NodeSpec::bare(NodeKind::Upload, request)))
                .collect();
            graph.add_edge(chain[0], chain[1], EdgeKind::Gpu);
            graph.add_edge(chain[1], chain[2], EdgeKind::Cpu);
            chain
        })
        .collect();
    let batch = executor.submit(batch).unwrap();
    wait_until("every head is staged", || timeline.staged() == 8);
    // Half the heads reach the GPU; then everything is cancelled.
    {
        let mut state = timeline.state.lock().unwrap();
        let rest = state.staged.split_off(4);
        let first = std::mem::replace(&mut state.staged, rest);
        drop(state);
        let waiting = Timeline::default();
        waiting.state.lock().unwrap().staged = first;
        waiting.submit();
        let mut moved = std::mem::take(&mut waiting.state.lock().unwrap().submitted);
        timeline.state.lock().unwrap().submitted.append(&mut moved);
    }
    wait_until("the submitted heads' successors are staged", || timeline.staged() == 8);
    let ticket = batch.cancel();
    // The sweep cut the staged nodes short: 4 heads never submitted and 4 second links.
    assert_eq!(timeline.staged(), 0);
    timeline.reached.store(u64::MAX, Ordering::SeqCst);
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert!(ticket.wait_timeout(PATIENCE));
    assert!(
        report.requests.iter().all(|r| r.status == RequestStatus::Cancelled),
        "{report:?}"
    );
    let ends: Vec<Vec<NodeEnd>> = chains
        .iter()
        .map(|c| c.iter().map(|&n| finished(&counting, batch.id(), n).unwrap()).collect())
        .collect();
    let done = NodeEnd::Done { bytes: 0 };
    assert_eq!(
        ends.iter()
            .filter(|e| **e == [done.clone(), NodeEnd::Cancelled, NodeEnd::Skipped])
            .count(),
        4,
        "{ends:?}"
    );
    assert_eq!(
        ends.iter()
            .filter(|e| **e == [NodeEnd::Cancelled, NodeEnd::Skipped, NodeEnd::Skipped])
            .count(),
        4,
        "{ends:?}"
    );
    counting.assert_each_finished_once(batch.id(), 24);
}

#[test]
fn gpu_edges_only_join_gpu_work_and_come_first_in_successor_lists() {
    let executor = crate::common::executor(1);
    let mut batch = executor.batch();
    let graph = batch.graph_mut();
    let request = graph.add_request(RequestInfo::default());
    let read = graph.add_node(NodeSpec::bare(NodeKind::Read, request));
    let upload = graph.add_node(NodeSpec::bare(NodeKind::Upload, request));
    graph.add_edge(read, upload, EdgeKind::Gpu);
    let err = batch.compile().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.message().contains("does not run on the GPU"), "{err}");

    // A copy between host bytes is CPU work too.
    let mut batch = executor.batch();
    let graph = batch.graph_mut();
    let request = graph.add_request(RequestInfo::default());
    let [upload, copy] = [NodeKind::Upload, NodeKind::Copy].map(|k| graph.add_node(NodeSpec::bare(k, request)));
    graph.add_edge(upload, copy, EdgeKind::Gpu);
    assert!(batch.compile().unwrap_err().message().contains("a copy whose work"));

    let mut batch = executor.batch();
    let graph = batch.graph_mut();
    let request = graph.add_request(RequestInfo::default());
    let [a, b, c, d] = [0; 4].map(|_| graph.add_node(NodeSpec::bare(NodeKind::Upload, request)));
    graph.add_edge(a, b, EdgeKind::Cpu);
    graph.add_edge(a, c, EdgeKind::Gpu);
    graph.add_edge(a, d, EdgeKind::Cpu);
    let compiled = batch.compile().unwrap();
    let edges: Vec<_> = compiled.graph().edges().collect();
    assert_eq!(
        edges,
        [(a, c, EdgeKind::Gpu), (a, b, EdgeKind::Cpu), (a, d, EdgeKind::Cpu)]
    );
}

/// Stamps node events with a global sequence number.
#[derive(Debug, Default)]
struct Sequence {
    clock: AtomicU64,
    started: Mutex<HashMap<NodeId, u64>>,
    finished: Mutex<HashMap<NodeId, u64>>,
}

impl dsr::engine::Observer for Sequence {
    fn node_started(&self, event: &dsr::engine::NodeEvent) {
        let at = self.clock.fetch_add(1, Ordering::SeqCst);
        assert!(
            self.started.lock().unwrap().insert(event.node, at).is_none(),
            "started twice"
        );
    }
    fn node_finished(&self, event: &dsr::engine::NodeEvent, end: &NodeEnd) {
        assert_eq!(*end, NodeEnd::Done { bytes: 0 });
        let at = self.clock.fetch_add(1, Ordering::SeqCst);
        assert!(
            self.finished.lock().unwrap().insert(event.node, at).is_none(),
            "finished twice"
        );
    }
}

#[test]
fn stress_random_graphs_of_gpu_and_cpu_edges_keep_both_orders() {
    let timeline = Arc::new(Timeline::default());
    timeline.eager.store(true, Ordering::SeqCst);
    let sequence = Arc::new(Sequence::default());
    let executor = dsr::Executor::builder()
        .workers(2)
        .stage(NodeKind::Upload, Arc::new(OnTimeline(timeline.clone())))
        .stage(NodeKind::Read, Arc::new(Noop::default()))
        .reactor(timeline.clone())
        .observer(sequence.clone())
        .build()
        .unwrap();
    // The "GPU" creeps forward on its own thread.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gpu = {
        let (timeline, stop) = (timeline.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                timeline.reached.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        })
    };
    let n: usize = 3000;
    let mut rng = fastrand::Rng::with_seed(13);
    let mut batch = executor.batch();
    let graph = batch.graph_mut();
    let requests: Vec<_> = (0..6).map(|_| graph.add_request(RequestInfo::default())).collect();
    let kinds: Vec<NodeKind> = (0..n)
        .map(|_| {
            if rng.u8(0..4) == 0 {
                NodeKind::Read
            } else {
                NodeKind::Upload
            }
        })
        .collect();
    let nodes: Vec<NodeId> = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| graph.add_node(NodeSpec::bare(kind, requests[i % 6])))
        .collect();
    let mut edges = Vec::new();
    for i in 1..n {
        for _ in 0..rng.usize(0..3) {
            let from = rng.usize(i.saturating_sub(50)..i);
            let gpu = kinds[from] == NodeKind::Upload && kinds[i] == NodeKind::Upload && rng.bool();
            let kind = if gpu { EdgeKind::Gpu } else { EdgeKind::Cpu };
            graph.add_edge(nodes[from], nodes[i], kind);
            edges.push((nodes[from], nodes[i], kind));
        }
    }
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    stop.store(true, Ordering::SeqCst);
    gpu.join().unwrap();
    assert!(report.all_done(), "{report:?}");
    let started = sequence.started.lock().unwrap();
    let finished = sequence.finished.lock().unwrap();
    let waits = timeline.waits.lock().unwrap();
    let value = |node: NodeId| batch.graph().submitted_value(node);
    assert_eq!(finished.len(), n, "every node finished once");
    for (from, to, kind) in edges {
        match kind {
            EdgeKind::Cpu => assert!(
                finished[&from] < started[&to],
                "{to:?} started before its CPU predecessor {from:?} finished"
            ),
            EdgeKind::Gpu => {
                let (a, b) = (value(from).expect("submitted"), value(to).expect("submitted"));
                assert!(a < b, "{to:?} was submitted before its GPU predecessor {from:?}");
                assert!(
                    waits[&to].iter().any(|&w| w >= a),
                    "{to:?} does not wait on {from:?}'s value {a}: {:?}",
                    waits[&to]
                );
            }
        }
    }
}
