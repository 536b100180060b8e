//! A worker thread: where it finds work, how it runs a node, and what it does when idle.
//!
//! A worker looks for work in this order, each step for a reason:
//! 1. its own deque, LIFO: the node it just released is hot in cache and belongs to the request
//!    it is finishing, which bounds bytes in flight;
//! 2. other workers' deques: finish started requests before starting new ones;
//! 3. the injectors, highest priority first: roots of newly submitted batches;
//! 4. the reactors: completions of I/O and GPU work release nodes, and the successors they
//!    release run inline, inside the poll, on this worker;
//! 5. with operations in flight, one worker blocks until a completion arrives or `reactor_wait`
//!    passes, and the others sleep on the parking condvar with the same timeout: spinning would
//!    only burn the CPU the I/O is meant to save. With one busy reactor the worker blocks in its
//!    `wait` (for the io_uring ring, `io_uring_enter`); with several, in `poll(2)` on the
//!    descriptor each offers (`Reactor::arm`: the ring's eventfd, the GPU timeline thread's),
//!    so it wakes for whichever completes first;
//! 6. otherwise spin a little, then park: a wake-up costs tens of microseconds, so parking is the
//!    last resort and producers only wake a worker when one is parked (`sleep.rs`).
//!
//! A panicking stage fails its node; a panicking reactor loses the nodes it was completing (they
//! fail as abandoned when their `PendingNode`s drop); neither takes the worker down.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::{Steal, Worker};

use super::complete::complete;
use super::{builtin, Shared, Task};
use crate::error::{Error, ErrorKind};
use crate::outcome::{NodeEnd, Outcome};
use crate::reactor::{Completer, Reactor};
use crate::request::Priority;
use crate::stage::NodeRef;
use crate::state::Start;

/// Rounds of fruitless searching before a worker parks.
const SPIN_ROUNDS: u32 = 64;
/// Of those, rounds that spin on the CPU before yielding it.
const BUSY_ROUNDS: u32 = 16;

/// What running a node came to, from the worker's side.
pub(super) enum Ran {
    /// It ended here.
    Ended(NodeEnd),
    /// A completion source (or a budget's wait queue) owns it now, and may already have
    /// completed it: the worker must not touch it again.
    Deferred,
}

thread_local! {
    /// Whether this thread is an executor's worker (of any executor).
    static ON_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is an executor's worker: code running here (a request's callback)
/// must not block on work that may need this very thread to finish.
pub(crate) fn on_worker() -> bool {
    ON_WORKER.with(|w| w.get())
}

/// A worker thread's own state.
pub(crate) struct WorkerCtx {
    pub index: usize,
    local: Worker<Task>,
    pub(crate) shared: Arc<Shared>,
}

impl WorkerCtx {
    pub(super) fn new(index: usize, local: Worker<Task>, shared: Arc<Shared>) -> Self {
        WorkerCtx { index, local, shared }
    }

    pub(super) fn run(self) {
        ON_WORKER.with(|w| w.set(true));
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
            if shared.drained() {
                return;
            }
            if let Some(reactor) = shared.sources.reactors.iter().find(|r| r.in_flight()) {
                // Operations are in flight: no spinning. One worker blocks where completions
                // arrive; the others sleep until work is pushed (or take over the waiting).
                idle_rounds = 0;
                if !shared.reactor_waiter.swap(true, Ordering::AcqRel) {
                    let waited = panic::catch_unwind(AssertUnwindSafe(|| self.wait_for_completions(&**reactor)));
                    shared.reactor_waiter.store(false, Ordering::Release);
                    if waited.is_err() {
                        // Nothing was handed over in a wait; sleep as the other workers do so a
                        // reactor that panics every time cannot spin this worker.
                        shared.sleep.sleep(|| shared.has_work(), Some(shared.reactor_wait));
                    }
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

    /// Blocks until a busy reactor has completions, or `reactor_wait` passes. One busy source is
    /// waited on its own way (`Reactor::wait`: for the ring, one `io_uring_enter` that submits
    /// and sleeps); with several, on all their descriptors at once, so a GPU completion never
    /// sits behind `io_uring_enter`. A busy source without a descriptor falls back to the first's
    /// own wait.
    fn wait_for_completions(&self, first: &dyn Reactor) {
        let shared = &*self.shared;
        let busy: Vec<&Arc<dyn Reactor>> = shared.sources.reactors.iter().filter(|r| r.in_flight()).collect();
        if busy.len() < 2 {
            return first.wait(shared.reactor_wait);
        }
        let armed: Option<Vec<libc::pollfd>> = busy
            .iter()
            .map(|r| {
                r.arm().map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
            })
            .collect();
        let Some(mut fds) = armed else {
            return first.wait(shared.reactor_wait);
        };
        let timeout_ms = shared.reactor_wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `fds.len()` pollfd entries; the descriptors belong to
        // the reactors, which outlive this call (the executor holds them). A failed or
        // interrupted poll only ends the wait early.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
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

    /// Polls every reactor; returns how many nodes they completed. A reactor that panics counts
    /// as having completed nothing.
    fn poll_reactors(&self) -> usize {
        let reactors = &self.shared.sources.reactors;
        if reactors.is_empty() {
            return 0;
        }
        let mut completer = Completer { worker: self };
        reactors
            .iter()
            .map(|r| panic::catch_unwind(AssertUnwindSafe(|| r.poll(&mut completer))).unwrap_or(0))
            .sum()
    }

    /// Runs `task` and then, while each run releases one, the successor it kept (already
    /// started by the fused release).
    fn run_chain(&self, task: Task) {
        // SAFETY: the task was ready and is now ours: it is unfinished.
        let start = unsafe { task.batch() }.graph.state(task.node).start();
        self.run_started(task, start);
    }

    /// Runs a node this worker has started, then every successor each run keeps for it.
    pub(super) fn run_started(&self, task: Task, start: Start) {
        let mut next = Some((task, start));
        while let Some((task, start)) = next {
            next = self.execute(task, start);
        }
    }

    /// Pushes a released node where thieves can find it.
    pub(super) fn push(&self, task: Task) {
        self.local.push(task);
    }

    /// Runs a started node's work (or skips it) and completes it; returns the successor it
    /// released and kept, already started.
    fn execute(&self, task: Task, start: Start) -> Option<(Task, Start)> {
        let shared = &*self.shared;
        if start == Start::Skip {
            return complete(shared, Some(self), task, NodeEnd::Skipped, None, false);
        }
        // SAFETY: the task was ready and is now ours to run: it is unfinished.
        let kind = unsafe { task.batch() }.graph.kind(task.node);
        let started = (shared.collect_metrics || shared.observer.is_some()).then(Instant::now);
        shared.observe(task, Some(self.index), |o, event| o.node_started(event));
        let ran = if kind.is_builtin() {
            builtin::run(self, task, kind)
        } else {
            self.run_stage(task)
        };
        match ran {
            Ran::Ended(end) => complete(shared, Some(self), task, end, started, false),
            Ran::Deferred => None,
        }
    }

    /// Runs the node's stage, containing a panic to the node.
    fn run_stage(&self, task: Task) -> Ran {
        // SAFETY: the node is running on this worker: it is unfinished.
        let graph = &unsafe { task.batch() }.graph;
        let kind = graph.kind(task.node);
        let Some(stage) = &self.shared.stages[kind.index()] else {
            return Ran::Ended(NodeEnd::Failed(Error::new(
                ErrorKind::Unsupported,
                format!("this runtime has no {kind} stage; build the executor with one"),
            )));
        };
        let deferred = std::cell::Cell::new(false);
        let node = NodeRef {
            graph,
            task,
            worker: self,
            destination_taken: false,
            deferred: &deferred,
        };
        match panic::catch_unwind(AssertUnwindSafe(|| stage.run(node))) {
            Ok(Outcome::Done { bytes }) => Ran::Ended(NodeEnd::Done { bytes }),
            Ok(Outcome::Failed(err)) => Ran::Ended(NodeEnd::Failed(err)),
            Ok(Outcome::Pending(_)) => Ran::Deferred,
            // The dropped `PendingNode` already completed it as abandoned.
            Err(_) if deferred.get() => Ran::Deferred,
            Err(payload) => Ran::Ended(NodeEnd::Failed(Error::new(
                ErrorKind::Internal,
                format!("the {kind} stage panicked: {}", panic_message(&*payload)),
            ))),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
