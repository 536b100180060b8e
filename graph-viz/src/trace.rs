//! Timeline traces: an observer that records node events per worker, written out as Chrome
//! trace-event JSON, which Perfetto UI and `chrome://tracing` open as it is.
//!
//! What a trace shows:
//! - a track per worker (`tid` = worker index), each node's run of its stage as a span (`X`)
//!   named by its kind, with its batch, request, node and bytes (and the request's name, where
//!   the caller gives names) as arguments; a track for completions off the workers;
//! - each deferred node's wait on its completion source as an async span (`b`/`e`) from the
//!   hand-over to its end, in the source's category: `io_uring` (the engine's one ring: an
//!   operation from its queueing to its completion; positioned reads run on the worker, inside
//!   their node's span), `gpu`, `scratch budget`;
//! - each GPU submission (timestamp queries) as a span on a "GPU" process's track for its queue
//!   (transfer, compute), placed on the CPU's clock where the device's clock is calibrated
//!   against it (`VK_EXT_calibrated_timestamps`; `calibrated` in its arguments), otherwise
//!   ending where its first node ended;
//! - counters: nodes waiting on completion sources, scratch bytes held, bytes uploading to the
//!   GPU (handed to the transfer queue, not yet landed), requests in flight;
//! - failures, cancellations and skips as instant events naming the request (and the error).
//!
//! Recording takes one uncontended lock per event (each worker has its own buffer); a recorder
//! that is not installed costs nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use dsr_engine::{GpuSpan, NodeEnd, NodeEvent, NodeKind, Observer};
use serde_json::{json, Value};

/// What happened to a node.
#[derive(Clone, Debug)]
enum What {
    Started,
    Deferred,
    Submitted(u64),
    GpuTime(GpuSpan),
    Finished(End),
}

/// How a node ended, as the trace tells it.
#[derive(Clone, Debug)]
enum End {
    Done(u64),
    Failed(String),
    Skipped,
    Cancelled,
}

#[derive(Clone, Debug)]
struct Raw {
    what: What,
    batch: u64,
    node: u32,
    kind: NodeKind,
    request: u32,
    len: u64,
    src_len: u64,
    tile: u32,
    worker: Option<usize>,
    at: Instant,
}

/// A GPU submission in the trace: whether its start is calibrated, its nodes' kinds and count.
type Submission = (bool, Vec<&'static str>, u32);

/// Work outside the engine, as a span on a named track.
#[derive(Clone, Debug)]
struct Outside {
    track: String,
    name: String,
    start: Instant,
    end: Instant,
    args: Value,
}

/// Records node events for a timeline trace (see the module comment).
#[derive(Debug)]
pub struct TraceRecorder {
    origin: Instant,
    /// One buffer per worker, and a last one for events off the workers.
    shards: Box<[Mutex<Vec<Raw>>]>,
    outside: Mutex<Vec<Outside>>,
}

impl TraceRecorder {
    /// A recorder for an executor of `workers` workers; times count from now.
    pub fn new(workers: usize) -> Self {
        TraceRecorder {
            origin: Instant::now(),
            shards: (0..=workers).map(|_| Mutex::new(Vec::new())).collect(),
            outside: Mutex::new(Vec::new()),
        }
    }

    /// Records work done outside the engine (a codec's tiles on a thread pool, a bench's run,
    /// a whole GPU dispatch) as a span named `name` on the track named `track`, with `args`.
    pub fn span(&self, track: &str, name: &str, start: Instant, end: Instant, args: Value) {
        let span = Outside {
            track: track.to_owned(),
            name: name.to_owned(),
            start,
            end: end.max(start),
            args,
        };
        self.outside.lock().unwrap_or_else(|p| p.into_inner()).push(span);
    }

    fn record(&self, event: &NodeEvent, what: What) {
        let shard = event.worker.unwrap_or(usize::MAX).min(self.shards.len() - 1);
        let raw = Raw {
            what,
            batch: event.batch,
            node: event.node.index() as u32,
            kind: event.kind,
            request: event.request.index() as u32,
            len: event.len,
            src_len: event.src_len,
            tile: event.tile,
            worker: event.worker,
            at: event.at,
        };
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner()).push(raw);
    }

    /// Microseconds from the recorder's start.
    fn us(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64() * 1e6
    }

    /// The trace as Chrome trace-event JSON (`{"traceEvents": [...]}`); `name` gives a
    /// request's name from its batch and index, where known.
    pub fn chrome_json(&self, name: impl Fn(u64, u32) -> Option<String>) -> Value {
        let mut raws: Vec<Raw> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        raws.sort_by_key(|r| (r.batch, r.node, r.at));
        let off_worker = self.shards.len() - 1;
        let mut events = vec![
            json!({"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "dsr"}}),
            json!({"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "GPU"}}),
            json!({"ph": "M", "pid": 2, "tid": 0, "name": "thread_name", "args": {"name": "transfer queue"}}),
            json!({"ph": "M", "pid": 2, "tid": 1, "name": "thread_name", "args": {"name": "compute queue"}}),
            json!({"ph": "M", "pid": 1, "tid": off_worker, "name": "thread_name", "args": {"name": "completions off the workers"}}),
        ];
        for w in 0..off_worker {
            events.push(
                json!({"ph": "M", "pid": 1, "tid": w, "name": "thread_name", "args": {"name": format!("worker {w}")}}),
            );
        }
        // The counters' steps, as (time, change): waits on completion sources, scratch bytes
        // held (from each `Acquire`'s end to its `Release`'s), requests in flight (from their
        // first event to their last).
        let mut waits: Vec<(Instant, i64)> = Vec::new();
        let mut scratch: Vec<(Instant, i64)> = Vec::new();
        let mut to_gpu: Vec<(Instant, i64)> = Vec::new();
        let mut requests: HashMap<(u64, u32), (Instant, Instant)> = HashMap::new();
        let mut names: HashMap<(u64, u32), Option<String>> = HashMap::new();
        // GPU submissions, once each (every node of one hears the same span): by queue, start
        // and length, with the kinds and count of their nodes.
        let mut submissions: HashMap<(&'static str, u64, u64), Submission> = HashMap::new();
        for node in raws.chunk_by(|a, b| (a.batch, a.node) == (b.batch, b.node)) {
            let first = &node[0];
            let request = names
                .entry((first.batch, first.request))
                .or_insert_with(|| name(first.batch, first.request))
                .clone();
            let mut args = json!({
                "batch": first.batch,
                "request": first.request,
                "node": first.node,
            });
            if let Some(request) = &request {
                args["name"] = json!(request);
            }
            if first.kind == NodeKind::DecompressCpu && first.len > 0 {
                let tiles = first.len.div_ceil(65536) as u32;
                args["tiles"] = json!(format!("{}..{}", first.tile, first.tile + tiles));
            }
            let find = |f: fn(&What) -> bool| node.iter().find(|r| f(&r.what));
            let started = find(|w| matches!(w, What::Started));
            let deferred = find(|w| matches!(w, What::Deferred));
            let finished = find(|w| matches!(w, What::Finished(_)));
            let (Some(finished), kind) = (finished, first.kind.name()) else {
                continue;
            };
            let What::Finished(end) = &finished.what else {
                unreachable!("found as finished")
            };
            let span = requests
                .entry((first.batch, first.request))
                .or_insert((first.at, finished.at));
            span.0 = span.0.min(first.at);
            span.1 = span.1.max(finished.at);
            match (first.kind, end) {
                (NodeKind::Acquire, End::Done(_)) => scratch.push((finished.at, first.src_len as i64)),
                (NodeKind::Release, End::Done(_)) => scratch.push((finished.at, -(first.src_len as i64))),
                _ => {}
            }
            if let End::Done(bytes) = end {
                args["bytes"] = json!(bytes);
            }
            if let Some(started) = started {
                let until = deferred.map_or(finished.at, |d| d.at);
                events.push(json!({
                    "ph": "X", "pid": 1, "tid": started.worker.unwrap_or(off_worker), "name": kind, "cat": "node",
                    "ts": self.us(started.at), "dur": self.us(until) - self.us(started.at), "args": args,
                }));
            }
            if let Some(deferred) = deferred {
                let id = format!("{:x}.{:x}", first.batch, first.node);
                let cat = source(first.kind);
                events.push(json!({"ph": "b", "pid": 1, "id": id, "cat": cat, "name": kind, "ts": self.us(deferred.at), "args": args}));
                events.push(json!({"ph": "e", "pid": 1, "id": id, "cat": cat, "name": kind, "ts": self.us(finished.at.max(deferred.at))}));
                waits.push((deferred.at, 1));
                waits.push((finished.at.max(deferred.at), -1));
                if first.kind == NodeKind::Upload {
                    // Bytes on their way to GPU memory (in staging or read in place).
                    to_gpu.push((deferred.at, first.len as i64));
                    to_gpu.push((finished.at.max(deferred.at), -(first.len as i64)));
                }
            }
            for raw in node {
                match &raw.what {
                    What::GpuTime(gpu) => {
                        // On the CPU's clock where the device's is calibrated; otherwise placed
                        // to end where the node ended.
                        let dur = gpu.duration.as_secs_f64() * 1e6;
                        let (ts, calibrated) = match gpu.start {
                            Some(start) => (self.us(start), true),
                            None => ((self.us(finished.at) - dur).max(0.0), false),
                        };
                        let key = (gpu.queue, (ts * 1e3) as u64, (dur * 1e3) as u64);
                        let entry = submissions.entry(key).or_insert((calibrated, Vec::new(), 0));
                        if !entry.1.contains(&kind) {
                            entry.1.push(kind);
                        }
                        entry.2 += 1;
                    }
                    What::Submitted(value) => {
                        events.push(json!({"ph": "i", "s": "t", "pid": 1, "tid": raw.worker.unwrap_or(off_worker), "name": "submitted", "cat": "gpu", "ts": self.us(raw.at), "args": {"timeline": value, "node": first.node}}));
                    }
                    _ => {}
                }
            }
            let mark = match end {
                End::Done(_) => None,
                End::Failed(error) => Some(("failed", Some(error.as_str()))),
                End::Skipped => Some(("skipped", None)),
                End::Cancelled => Some(("cancelled", None)),
            };
            if let Some((what, error)) = mark {
                let mut args = args.clone();
                if let Some(error) = error {
                    args["error"] = json!(error);
                }
                events.push(json!({
                    "ph": "i", "s": "t", "pid": 1, "tid": finished.worker.unwrap_or(off_worker),
                    "name": format!("{kind} {what}"), "cat": "outcome", "ts": self.us(finished.at), "args": args,
                }));
            }
        }
        // Work outside the engine: a track per name, after the workers' and completions'.
        let mut tracks: Vec<String> = Vec::new();
        for span in self.outside.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let index = match tracks.iter().position(|t| *t == span.track) {
                Some(i) => i,
                None => {
                    tracks.push(span.track.clone());
                    let tid = off_worker + tracks.len();
                    events.push(
                        json!({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": span.track}}),
                    );
                    tracks.len() - 1
                }
            };
            events.push(json!({
                "ph": "X", "pid": 1, "tid": off_worker + 1 + index, "name": span.name, "cat": "outside",
                "ts": self.us(span.start), "dur": self.us(span.end) - self.us(span.start), "args": span.args,
            }));
        }
        for ((queue, ts, dur), (calibrated, kinds, nodes)) in submissions {
            let tid = if queue == "transfer" { 0 } else { 1 };
            events.push(json!({
                "ph": "X", "pid": 2, "tid": tid, "name": kinds.join(" + "), "cat": "gpu",
                "ts": ts as f64 / 1e3, "dur": dur as f64 / 1e3,
                "args": {"queue": queue, "nodes": nodes, "calibrated": calibrated},
            }));
        }
        let in_flight: Vec<(Instant, i64)> = requests
            .values()
            .flat_map(|&(from, to)| [(from, 1), (to, -1)])
            .collect();
        for (name, key, steps) in [
            ("nodes waiting on completion sources", "nodes", waits),
            ("scratch bytes held", "bytes", scratch),
            ("bytes uploading to the GPU", "bytes", to_gpu),
            ("requests in flight", "requests", in_flight),
        ] {
            events.extend(self.counter(name, key, steps));
        }
        json!({ "traceEvents": events, "displayTimeUnit": "ms" })
    }
}

impl TraceRecorder {
    /// A counter's events: its running total after each step, in time order (decreases first
    /// at equal times, so a total never shows a step that did not happen).
    fn counter(&self, name: &str, key: &str, mut steps: Vec<(Instant, i64)>) -> Vec<Value> {
        steps.sort_by_key(|&(at, delta)| (at, delta));
        let mut total = 0i64;
        steps
            .into_iter()
            .map(|(at, delta)| {
                total += delta;
                json!({"ph": "C", "pid": 1, "name": name, "ts": self.us(at), "args": {key: total}})
            })
            .collect()
    }
}

/// The completion source a deferred node of `kind` waits on, as the trace's category.
fn source(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Read | NodeKind::Write | NodeKind::Sync => "io_uring",
        NodeKind::Upload | NodeKind::Copy | NodeKind::DecompressGpu => "gpu",
        NodeKind::Acquire => "scratch budget",
        _ => "other",
    }
}

impl Observer for TraceRecorder {
    fn node_started(&self, event: &NodeEvent) {
        self.record(event, What::Started);
    }
    fn node_deferred(&self, event: &NodeEvent) {
        self.record(event, What::Deferred);
    }
    fn node_submitted(&self, event: &NodeEvent, value: u64) {
        self.record(event, What::Submitted(value));
    }
    fn node_gpu_time(&self, event: &NodeEvent, gpu: &GpuSpan) {
        self.record(event, What::GpuTime(*gpu));
    }
    fn node_finished(&self, event: &NodeEvent, end: &NodeEnd) {
        let end = match end {
            NodeEnd::Done { bytes } => End::Done(*bytes),
            NodeEnd::Failed(error) => End::Failed(error.to_string()),
            NodeEnd::Skipped => End::Skipped,
            NodeEnd::Cancelled => End::Cancelled,
        };
        self.record(event, What::Finished(end));
    }
}
