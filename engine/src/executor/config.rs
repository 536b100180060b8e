//! Configuring and starting an executor: [`ExecutorConfig`] (workers, lowering, metrics,
//! observer, waiting, the scratch budget) and [`ExecutorBuilder`], which also takes the stage for
//! each node kind and the completion sources ([`Reactor`]s).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_deque::Worker;
use crossbeam_utils::CachePadded;

use super::sleep::Sleep;
use super::worker::WorkerCtx;
use super::{Executor, Shared, Sources};
use crate::error::{Error, ErrorKind, Result};
use crate::lower::LoweringConfig;
use crate::metrics::WorkerMetrics;
use crate::observer::Observer;
use crate::reactor::Reactor;
use crate::scratch::{ScratchHooks, ScratchPool};
use crate::stage::Stage;
use crate::vocabulary::NodeKind;

/// The default scratch budget: compressed bytes in flight between reads and decodes.
pub const DEFAULT_SCRATCH_BUDGET: u64 = 256 << 20;

/// Configuration of an executor.
#[derive(Clone)]
pub struct ExecutorConfig {
    /// Worker threads.
    pub workers: usize,
    /// How batches built by [`Executor::batch`] are lowered.
    pub lowering: LoweringConfig,
    /// Record per-stage latency histograms (two clock reads per node).
    pub metrics: bool,
    /// Node events go here.
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
    /// Kinds given a stage that the executor runs itself: `build` refuses them.
    builtin_stages: Vec<NodeKind>,
    reactors: Vec<Arc<dyn Reactor>>,
    scratch_hooks: Option<Arc<dyn ScratchHooks>>,
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
    /// The executor's own kinds (barrier, acquire, release) take no stage: [`build`] refuses one.
    ///
    /// [`build`]: ExecutorBuilder::build
    pub fn stage(mut self, kind: NodeKind, stage: Arc<dyn Stage>) -> Self {
        if kind.is_builtin() {
            self.builtin_stages.push(kind);
        } else {
            self.stages[kind.index()] = Some(stage);
        }
        self
    }
    /// The configuration so far (the worker count, for sources that keep per-worker state).
    pub fn configured(&self) -> &ExecutorConfig {
        &self.config
    }
    /// The stage set for `kind`, if any: for a stage that wraps it.
    pub fn stage_for(&self, kind: NodeKind) -> Option<Arc<dyn Stage>> {
        self.stages[kind.index()].clone()
    }
    /// Watches the scratch pool's blocks come and go (a GPU backend importing them).
    pub fn scratch_hooks(mut self, hooks: Arc<dyn ScratchHooks>) -> Self {
        self.scratch_hooks = Some(hooks);
        self
    }
    /// Adds a completion source.
    pub fn reactor(mut self, reactor: Arc<dyn Reactor>) -> Self {
        self.reactors.push(reactor);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Executor> {
        if let Some(kind) = self.builtin_stages.first() {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!("{kind} nodes are run by the executor itself; no stage can replace it"),
            ));
        }
        let workers = self.config.workers.max(1);
        let locals: Vec<Worker<super::Task>> = (0..workers).map(|_| Worker::new_lifo()).collect();
        let shared = Arc::new(Shared {
            injectors: Default::default(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleep: Sleep::default(),
            sources: Arc::new(Sources {
                scratch: ScratchPool::new(self.config.scratch_budget, self.scratch_hooks),
                reactors: self.reactors.into_boxed_slice(),
            }),
            stages: self.stages,
            live: Mutex::new(Default::default()),
            live_count: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            metrics: (0..workers)
                .map(|_| CachePadded::new(Mutex::new(WorkerMetrics::new())))
                .collect(),
            collect_metrics: self.config.metrics,
            observer: self.config.observer.clone(),
            reactor_wait: self.config.reactor_wait,
            reactor_waiter: AtomicBool::new(false),
            balance: self
                .config
                .lowering
                .gpu_decode
                .then(|| Arc::new(crate::balance::DecodeBalance::default())),
        });
        let mut executor = Executor {
            shared: shared.clone(),
            threads: Vec::with_capacity(workers),
            config: self.config,
        };
        for (index, local) in locals.into_iter().enumerate() {
            let worker = WorkerCtx::new(index, local, shared.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("dsr-worker-{index}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => executor.threads.push(handle),
                // Dropping the executor stops the workers already started.
                Err(err) => return Err(Error::from_io(err, "cannot start a worker thread")),
            }
        }
        Ok(executor)
    }
}
