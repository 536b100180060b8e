//! Executor overhead: dsr against rayon running the same DAGs of tiny nodes.
//!
//! Both sides run identical graphs (same CSR successor lists, same per-node work, same atomic
//! pending counts) with the same number of threads. dsr runs them as one batch. rayon runs them
//! in a `scope` two ways:
//! - **spawn**: every node whose last predecessor finished is `spawn`ed: the plain way to run a
//!   DAG on rayon, and the peer the overhead goal is stated against;
//! - **inline**: like dsr, the first ready successor runs inline and only the others are
//!   spawned, so a chain costs one atomic per node: a stronger peer than rayon's own idiom, kept
//!   to show where dsr's per-node bookkeeping (state word, request accounting) costs.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsr::engine::{EdgeKind, Executor, GraphBuilder, NodeId, NodeKind, NodeRef, NodeSpec, Outcome, RequestInfo, Stage};

use super::median;

/// A graph shape to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `chains` independent chains of `length` nodes.
    Chains {
        /// How many chains.
        chains: u32,
        /// Nodes per chain.
        length: u32,
    },
    /// One root, `width` nodes depending on it, one sink depending on them all.
    FanOutIn {
        /// Nodes in the middle.
        width: u32,
    },
    /// `nodes` nodes, each depending on up to `max_preds` random earlier nodes within `window`.
    Random {
        /// How many nodes.
        nodes: u32,
        /// Most predecessors per node.
        max_preds: u32,
        /// How far back predecessors are drawn from.
        window: u32,
        /// Random seed.
        seed: u64,
    },
}

impl Shape {
    /// The three standard shapes at about `nodes` nodes each.
    pub fn standard(nodes: u32) -> [Shape; 3] {
        let chains = (nodes / 1000).max(1);
        [
            Shape::Chains {
                chains,
                length: nodes / chains,
            },
            Shape::FanOutIn { width: nodes },
            Shape::Random {
                nodes,
                max_preds: 3,
                window: 256,
                seed: 0x5eed,
            },
        ]
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Shape::Chains { .. } => "chains",
            Shape::FanOutIn { .. } => "fan-out-in",
            Shape::Random { .. } => "random-dag",
        }
    }
}

/// A DAG as successor lists, shared by both sides.
#[derive(Debug)]
pub struct Dag {
    succ_offsets: Vec<u32>,
    succ: Vec<u32>,
    preds: Vec<u32>,
}

impl Dag {
    /// Builds the DAG of `shape`.
    pub fn new(shape: Shape) -> Dag {
        let mut edges: Vec<(u32, u32)> = Vec::new();
        let n = match shape {
            Shape::Chains { chains, length } => {
                for c in 0..chains {
                    let base = c * length;
                    edges.extend((1..length).map(|i| (base + i - 1, base + i)));
                }
                chains * length
            }
            Shape::FanOutIn { width } => {
                edges.extend((1..=width).map(|i| (0, i)));
                edges.extend((1..=width).map(|i| (i, width + 1)));
                width + 2
            }
            Shape::Random {
                nodes,
                max_preds,
                window,
                seed,
            } => {
                let mut rng = fastrand::Rng::with_seed(seed);
                for i in 1..nodes {
                    let preds = rng.u32(0..=max_preds);
                    let lo = i.saturating_sub(window);
                    let mut chosen: Vec<u32> = (0..preds).map(|_| rng.u32(lo..i)).collect();
                    chosen.sort_unstable();
                    chosen.dedup();
                    edges.extend(chosen.into_iter().map(|p| (p, i)));
                }
                nodes
            }
        } as usize;
        let mut succ_offsets = vec![0u32; n + 1];
        let mut preds = vec![0u32; n];
        for &(from, to) in &edges {
            succ_offsets[from as usize + 1] += 1;
            preds[to as usize] += 1;
        }
        for i in 0..n {
            succ_offsets[i + 1] += succ_offsets[i];
        }
        let mut fill = succ_offsets.clone();
        let mut succ = vec![0u32; edges.len()];
        for &(from, to) in &edges {
            succ[fill[from as usize] as usize] = to;
            fill[from as usize] += 1;
        }
        Dag {
            succ_offsets,
            succ,
            preds,
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.preds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.preds.is_empty()
    }

    fn successors(&self, node: u32) -> &[u32] {
        &self.succ[self.succ_offsets[node as usize] as usize..self.succ_offsets[node as usize + 1] as usize]
    }
}

/// The work each node does on both sides: a few dependent multiplies, kept by `black_box`.
#[inline]
pub fn tiny_work(node: u32) -> u64 {
    let mut x = black_box(node as u64) | 1;
    for _ in 0..4 {
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    }
    black_box(x)
}

#[derive(Debug)]
struct TinyStage;

impl Stage for TinyStage {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        tiny_work(node.id().index() as u32);
        Outcome::Done { bytes: 0 }
    }
}

/// Builds `dag` as a one-request dsr graph of `Copy` nodes (which the bench executor runs with
/// [`tiny_work`]).
pub fn dsr_graph(dag: &Dag) -> GraphBuilder {
    let mut graph = GraphBuilder::new();
    graph.reserve(dag.len(), dag.succ.len());
    let request = graph.add_request(RequestInfo {
        name: Some("bench".into()),
        ..RequestInfo::default()
    });
    for _ in 0..dag.len() {
        graph.add_node(NodeSpec::bare(NodeKind::Copy, request));
    }
    for from in 0..dag.len() as u32 {
        for &to in dag.successors(from) {
            graph.add_edge(
                NodeId::from_index(from as usize),
                NodeId::from_index(to as usize),
                EdgeKind::Cpu,
            );
        }
    }
    graph
}

/// An executor of `workers` threads whose `Copy` stage is [`tiny_work`], metrics off.
pub fn bench_executor(workers: usize) -> dsr::engine::Result<Executor> {
    Executor::builder()
        .config(super::trace::observe(dsr::ExecutorConfig::default()))
        .workers(workers)
        .metrics(false)
        .stage(NodeKind::Copy, Arc::new(TinyStage))
        .build()
}

/// Runs `dag` once on dsr; returns the time from submission to the report.
pub fn run_dsr(executor: &Executor, dag: &Dag) -> dsr::engine::Result<Duration> {
    let mut batch = executor.batch();
    *batch.graph_mut() = dsr_graph(dag);
    let compiled = batch.compile()?;
    let start = Instant::now();
    let batch = executor.submit_compiled(compiled)?;
    let report = batch.wait();
    let elapsed = start.elapsed();
    // Freeing the graph's arena is not scheduling overhead: drop it outside the timed region.
    drop(batch);
    if !report.all_done() {
        return Err(dsr::engine::Error::new(
            dsr::engine::ErrorKind::InvalidRequest,
            format!("bench graph did not complete: {:?}", report.first_failure()),
        ));
    }
    Ok(elapsed)
}

/// Runs `dag` once on rayon; returns the time the scope took. `inline` runs the first ready
/// successor of each node inline instead of spawning it.
pub fn run_rayon(pool: &rayon::ThreadPool, dag: &Dag, inline: bool) -> Duration {
    let pending: Vec<AtomicU32> = dag.preds.iter().map(|&p| AtomicU32::new(p)).collect();
    let roots: Vec<u32> = (0..dag.len() as u32).filter(|&i| dag.preds[i as usize] == 0).collect();
    let start = Instant::now();
    pool.scope(|scope| {
        for &root in &roots {
            let pending = &pending;
            scope.spawn(move |scope| rayon_node(scope, dag, pending, root, inline));
        }
    });
    start.elapsed()
}

fn rayon_node<'s>(scope: &rayon::Scope<'s>, dag: &'s Dag, pending: &'s [AtomicU32], node: u32, inline: bool) {
    let mut next = Some(node);
    while let Some(node) = next.take() {
        tiny_work(node);
        for &s in dag.successors(node) {
            if pending[s as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                if inline && next.is_none() {
                    next = Some(s);
                } else {
                    scope.spawn(move |scope| rayon_node(scope, dag, pending, s, inline));
                }
            }
        }
    }
}

/// One measured configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExecResult {
    /// The shape's name.
    pub shape: &'static str,
    /// Threads on both sides.
    pub workers: usize,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Median dsr time per node, in nanoseconds.
    pub dsr_ns_per_node: f64,
    /// Median rayon time per task, spawning every ready node, in nanoseconds.
    pub rayon_ns_per_task: f64,
    /// dsr / rayon (spawn): below 1.0 means dsr's overhead is lower.
    pub ratio: f64,
    /// Median rayon time per task, running the first ready successor inline, in nanoseconds.
    pub rayon_inline_ns_per_task: f64,
    /// dsr / rayon (inline).
    pub ratio_inline: f64,
    /// Median time to lower and compile the dsr graph, per node (not in `dsr_ns_per_node`).
    pub dsr_compile_ns_per_node: f64,
    /// Runs each side made (alternating).
    pub runs: usize,
}

/// Measures `shape` with `workers` threads, `runs` alternating runs per side.
pub fn measure(shape: Shape, workers: usize, runs: usize) -> dsr::engine::Result<ExecResult> {
    let dag = Dag::new(shape);
    let executor = bench_executor(workers)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .map_err(|e| dsr::engine::Error::new(dsr::engine::ErrorKind::Io, format!("cannot build rayon's pool: {e}")))?;
    // One warm-up each: first-touch of fresh memory and thread start-up are not overhead.
    run_dsr(&executor, &dag)?;
    run_rayon(&pool, &dag, false);
    run_rayon(&pool, &dag, true);
    let (mut dsr, mut spawn, mut inline, mut compile) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let compiled = dsr_graph(&dag).compile()?;
        compile.push(start.elapsed());
        drop(compiled);
        dsr.push(run_dsr(&executor, &dag)?);
        spawn.push(run_rayon(&pool, &dag, false));
        inline.push(run_rayon(&pool, &dag, true));
    }
    let per_node = |d: Duration| d.as_secs_f64() * 1e9 / dag.len() as f64;
    let d = per_node(median(&mut dsr));
    let (r, ri) = (per_node(median(&mut spawn)), per_node(median(&mut inline)));
    Ok(ExecResult {
        shape: shape.name(),
        workers,
        nodes: dag.len(),
        dsr_ns_per_node: d,
        rayon_ns_per_task: r,
        ratio: d / r,
        rayon_inline_ns_per_task: ri,
        ratio_inline: d / ri,
        dsr_compile_ns_per_node: per_node(median(&mut compile)),
        runs: runs.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_expected_edges() {
        let chains = Dag::new(Shape::Chains { chains: 3, length: 4 });
        assert_eq!((chains.len(), chains.succ.len()), (12, 9));
        let fan = Dag::new(Shape::FanOutIn { width: 5 });
        assert_eq!((fan.len(), fan.succ.len(), fan.preds[6]), (7, 10, 5));
        let random = Dag::new(Shape::Random {
            nodes: 1000,
            max_preds: 3,
            window: 16,
            seed: 1,
        });
        assert!(random.succ.iter().all(|&to| to < 1000));
        for from in 0..1000u32 {
            assert!(random.successors(from).iter().all(|&to| to > from), "edges go forward");
        }
    }

    #[test]
    fn both_sides_run_every_shape() {
        for shape in Shape::standard(2000) {
            let result = measure(shape, 2, 1).unwrap();
            assert!(result.dsr_ns_per_node > 0.0 && result.rayon_ns_per_task > 0.0);
        }
    }
}
