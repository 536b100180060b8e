//! The seam between the engine and the stages: the [`Stage`] trait, the [`NodeRef`] a stage
//! runs against, and [`PendingNode`] for work a completion source finishes later.
//!
//! What a stage may touch: its node's input ([`NodeRef::input`]) and, once, its destination
//! ([`NodeRef::destination`]); nothing else of the batch. A stage runs on a worker and must not
//! block for long: slow work goes to a completion source through [`NodeRef::defer`], which hands
//! back a [`PendingNode`] the source finishes later, from any thread. Where that happens decides
//! where the node's successors run: finished inside a reactor's poll (through a
//! [`crate::Completer`]), they run inline there, on the polling worker; finished anywhere else,
//! they go to the injectors. Either way a source must not hold a lock of its own while it
//! finishes a node, since the successors it releases may come straight back to it.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::DeviceBuffer;
use crate::error::{Error, ErrorKind};
use crate::executor::{complete_pending, Shared, Task, WorkerCtx};
use crate::graph::{CompiledGraph, FileSlot, RequestInfo, Resource};
use crate::outcome::{Deferred, NodeEnd, Outcome};
use crate::state::TOMBSTONE;
use crate::vocabulary::{NodeId, NodeKind, RequestId};

/// One stage implementation: the work of one node kind.
pub trait Stage: Send + Sync + fmt::Debug {
    /// Runs one node. Called once per node, on a worker thread; must not block for long (hand
    /// slow work to a completion source with [`NodeRef::defer`]).
    fn run(&self, node: NodeRef<'_>) -> Outcome;
}

/// Where a node's input bytes are.
#[derive(Debug)]
pub enum Input<'a> {
    /// A byte range of a file: `len` bytes at `offset`.
    File {
        /// The file, opened at most once per batch.
        file: &'a FileSlot,
        /// First byte.
        offset: u64,
        /// Bytes to read.
        len: u64,
    },
    /// Bytes in memory (a caller's source, or what an earlier node produced).
    Bytes(&'a [u8]),
    /// The node has no input (or its scratch is not held: a hand-built graph that reads
    /// scratch outside its request's `Acquire`/`Release` pair).
    None,
}

/// A range of a GPU buffer a node writes.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRange<'a> {
    /// The buffer.
    pub buffer: &'a DeviceBuffer,
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// The node a stage is running: what it is, where its bytes come from and go to.
pub struct NodeRef<'a> {
    pub(crate) graph: &'a CompiledGraph,
    pub(crate) task: Task,
    /// The worker running the node.
    pub(crate) worker: &'a WorkerCtx,
    pub(crate) destination_taken: bool,
    /// Set by `defer`, so the executor knows a completion source owns the node even if the stage
    /// panics afterwards.
    pub(crate) deferred: &'a Cell<bool>,
}

impl fmt::Debug for NodeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRef")
            .field("graph", &self.graph.id())
            .field("node", &self.task.node)
            .field("kind", &self.kind())
            .finish()
    }
}

impl<'a> NodeRef<'a> {
    /// The node's id in its graph.
    pub fn id(&self) -> NodeId {
        self.task.node
    }
    /// What kind of node this is.
    pub fn kind(&self) -> NodeKind {
        self.graph.kind(self.task.node)
    }
    /// The request it belongs to.
    pub fn request(&self) -> RequestId {
        self.graph.request_of(self.task.node)
    }
    /// What the graph knows of that request.
    pub fn request_info(&self) -> &'a RequestInfo {
        self.graph.request_info(self.request())
    }
    /// For decode nodes, the first compressed tile the node decodes.
    pub fn tile(&self) -> u32 {
        self.graph.tile(self.task.node)
    }
    /// For `DecompressGpu` nodes, where its part of the stream starts: it takes the tiles whose
    /// compressed bytes end after this offset of its input (see `NodeSpec::from`).
    pub fn from(&self) -> u64 {
        self.graph.from(self.task.node)
    }
    /// Bytes the node produces at its destination.
    pub fn len(&self) -> u64 {
        self.graph.len(self.task.node)
    }
    /// Whether the node produces nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the worker running the node, below the executor's worker count: the key
    /// for per-worker state (a command pool, a decoder's tables).
    pub fn worker(&self) -> usize {
        self.worker.index
    }

    /// The node's input.
    pub fn input(&self) -> Input<'a> {
        let Some(src) = self.graph.src(self.task.node) else {
            return Input::None;
        };
        let len = self.graph.src_len(self.task.node);
        match self.graph.resource(src.resource) {
            Resource::File(file) => Input::File {
                file,
                offset: src.offset,
                len,
            },
            // `compile` checked offset + len against the resource's length for both of these.
            Resource::Memory(bytes) => Input::Bytes(&bytes[src.offset as usize..(src.offset + len) as usize]),
            Resource::Scratch(scratch) => {
                let Some(raw) = scratch.bytes() else {
                    return Input::None;
                };
                // SAFETY: (1) `compile` checked the span lies inside the scratch, and the bytes
                // are held from the request's `Acquire` node (a predecessor of this one) to its
                // `Release` node (a successor); (2) scratch is written only by the nodes that
                // lowering makes this node's predecessors, and their releases (AcqRel on this
                // node's state word) happen before this run, so no write is in progress or
                // unpublished; (3) only lowering creates scratch and the nodes that name it (`compile`
                // refuses any other), so no other writer exists.
                Input::Bytes(unsafe {
                    std::slice::from_raw_parts(raw.ptr.as_ptr().add(src.offset as usize), len as usize)
                })
            }
            // GPU memory is reached through `device_source`.
            Resource::Device(_) => Input::None,
            Resource::Host(_) => unreachable!("compile refuses nodes that read a host destination"),
        }
    }

    /// The bytes the node must fill, once per run: `None` if the node has no destination or it
    /// was already taken.
    pub fn destination(&mut self) -> Option<&mut [u8]> {
        if self.destination_taken {
            return None;
        }
        let dst = self.graph.dst(self.task.node)?;
        let len = self.len() as usize;
        let raw = match self.graph.resource(dst.resource) {
            Resource::Host(raw) => *raw,
            // Not held: a graph whose scratch user does not follow its `Acquire`.
            Resource::Scratch(scratch) => scratch.bytes()?,
            // GPU memory is reached through `device_destination`, files through
            // `file_destination`.
            Resource::Device(_) | Resource::File(_) => return None,
            Resource::Memory(_) => unreachable!("compile refuses nodes that write into a source"),
        };
        self.destination_taken = true;
        // SAFETY: (1) `compile` checked the span lies inside the resource; (2) a host resource is
        // kept alive by the batch's reservation until the batch retires, which cannot happen
        // before this node finishes, and scratch between its request's `Acquire` and `Release`
        // nodes, which lowering places before and after every node that touches it; (3) no other node of any
        // in-flight batch writes these bytes: `compile` refuses overlapping node writes and
        // reservations refuse overlap across batches; (4) nothing reads them while this node
        // runs (host bytes are never read by stages; scratch readers are successors);
        // (5) `destination_taken` makes this the only borrow this run hands out.
        Some(unsafe { std::slice::from_raw_parts_mut(raw.ptr.as_ptr().add(dst.offset as usize), len) })
    }

    /// The GPU buffer range the node writes, if its destination is one: the buffer (whose
    /// handle the GPU stages downcast), the first byte, and the length. `compile` checked the
    /// range lies inside the buffer, and the request's reservation keeps any other request in
    /// flight off it.
    pub fn device_destination(&self) -> Option<DeviceRange<'a>> {
        let dst = self.graph.dst(self.task.node)?;
        match self.graph.resource(dst.resource) {
            Resource::Device(buffer) => Some(DeviceRange {
                buffer,
                offset: dst.offset,
                len: self.len(),
            }),
            _ => None,
        }
    }

    /// The timeline values this node's GPU work must wait for on the GPU: those its predecessors
    /// behind GPU edges were submitted with ([`PendingNode::submitted`]). Empty for a node with
    /// no GPU predecessor, or whose GPU predecessors never reached the GPU (they completed
    /// without it, so nothing is left to wait for).
    pub fn gpu_waits(&self) -> impl Iterator<Item = u64> + 'a {
        self.graph.gpu_waits(self.task.node)
    }

    /// The GPU buffer range the node reads, if its source is one (a GPU copy or read-back):
    /// `compile` checked the range lies inside the buffer.
    pub fn device_source(&self) -> Option<DeviceRange<'a>> {
        let src = self.graph.src(self.task.node)?;
        match self.graph.resource(src.resource) {
            Resource::Device(buffer) => Some(DeviceRange {
                buffer,
                offset: src.offset,
                len: self.graph.src_len(self.task.node),
            }),
            _ => None,
        }
    }

    /// The file and offset a write (or sync) node writes at, if its destination is a file.
    pub fn file_destination(&self) -> Option<(&'a FileSlot, u64)> {
        let dst = self.graph.dst(self.task.node)?;
        match self.graph.resource(dst.resource) {
            Resource::File(slot) => Some((slot, dst.offset)),
            _ => None,
        }
    }

    /// Hands the node to a completion source: the stage returns the [`Outcome`] this gives, and
    /// the source later calls [`PendingNode::complete`]. The node's buffers stay valid until then.
    pub fn defer(self) -> (PendingNode, Outcome) {
        self.deferred.set(true);
        let pending = PendingNode::new(self.task, &self.worker.shared, Some(self.worker.index));
        (pending, Outcome::Pending(Deferred(())))
    }
}

/// A node whose work a completion source (io_uring, a GPU timeline) will finish. Completing it
/// releases its successors; dropping it without completing fails the node as abandoned, so a
/// lost operation can never hang its batch.
pub struct PendingNode {
    task: Option<Task>,
    shared: Arc<Shared>,
    /// When the stage handed it over, if metrics are kept: its latency runs from here.
    started: Option<Instant>,
    /// Whether [`PendingNode::submitted`] released the successors behind GPU edges.
    gpu_released: bool,
}

// SAFETY: a `Task` is a pointer to a batch the executor keeps alive while the node is pending,
// plus an index; completing it from another thread is what the executor's atomics are for.
unsafe impl Send for PendingNode {}

impl fmt::Debug for PendingNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingNode")
            .field("node", &self.task.map(|t| t.node))
            .finish()
    }
}

impl PendingNode {
    /// The node of `task`, handed over by a stage on `worker` (or by a built-in node): the
    /// observer hears that it was deferred.
    pub(crate) fn new(task: Task, shared: &Arc<Shared>, worker: Option<usize>) -> Self {
        shared.observe(task, worker, |o, event| o.node_deferred(event));
        PendingNode {
            task: Some(task),
            shared: shared.clone(),
            // The clock only feeds the latency histograms; skip it when they are off.
            started: shared.collects_metrics().then(Instant::now),
            gpu_released: false,
        }
    }

    /// Marks the node's GPU work as submitted: the GPU is done with it when the completion
    /// source's timeline reaches `value` (non-zero). Its successors behind GPU edges are released
    /// now, to be submitted with `value` among their [`NodeRef::gpu_waits`]; those behind CPU
    /// edges wait for [`PendingNode::complete`] as before. Once per node; later calls do nothing.
    ///
    /// Released successors go to the injectors and nothing runs inline, so a source may call this
    /// under its own lock, right after its `vkQueueSubmit`.
    pub fn submitted(&mut self, value: u64) {
        debug_assert!(value != 0, "timeline value 0 means not submitted");
        let Some(task) = self.task else { return };
        if self.gpu_released || value == 0 {
            return;
        }
        self.gpu_released = true;
        // SAFETY: a pending node is unfinished, which keeps its batch alive; and the batch cannot
        // retire while this node is unfinished, whatever its released successors do (a node is
        // a request sink, or reaches one, through CPU edges alone: see `compile`).
        let graph = &unsafe { task.batch() }.graph;
        graph.set_submitted(task.node, value);
        self.shared
            .observe(task, None, |o, event| o.node_submitted(event, value));
        for &successor in graph.split_successors(task.node).0 {
            if graph.state(successor).release() {
                self.shared.inject(task.sibling(successor));
            }
        }
    }

    /// Tells observers the GPU time the node's submission took (see
    /// [`crate::Observer::node_gpu_time`]); call it before completing the node.
    pub fn gpu_time(&self, gpu: &crate::observer::GpuSpan) {
        if let Some(task) = self.task {
            self.shared.observe(task, None, |o, event| o.node_gpu_time(event, gpu));
        }
    }

    /// Completes the node with `bytes` produced, or with an error. Successors it releases go to
    /// the injectors; from inside a reactor's poll, finish it through the [`crate::Completer`]
    /// instead, so they run on the polling worker.
    pub fn complete(self, result: Result<u64, Error>) {
        self.finish(result.into());
    }

    /// Completes the node as cancelled: its request was cancelled and the operation was cut
    /// short (an io_uring read answered `ECANCELED`, a wait for a budget was abandoned). The
    /// request reports Cancelled, not failed.
    pub fn cancel(self) {
        self.finish(NodeEnd::Cancelled);
    }

    /// Completes the node with `end`.
    pub fn finish(mut self, end: NodeEnd) {
        if let Some(task) = self.task.take() {
            complete_pending(&self.shared, task, end, self.started, self.gpu_released, None);
        }
    }

    /// Whether the node's request has been cancelled (or has failed) since it was deferred: a
    /// completion source should then cancel the operation if it can.
    pub fn is_tombstoned(&self) -> bool {
        self.task.is_some_and(|task| {
            // SAFETY: a pending node is unfinished, which keeps its batch alive.
            let batch = unsafe { task.batch() };
            batch.graph.state(task.node).load().has(TOMBSTONE)
        })
    }

    pub(crate) fn take(mut self) -> (Task, Arc<Shared>, Option<Instant>, bool) {
        let task = self.task.take().expect("a pending node is taken once");
        (task, self.shared.clone(), self.started, self.gpu_released)
    }
}

impl Drop for PendingNode {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let error = Error::new(
                ErrorKind::Abandoned,
                "the completion source dropped this operation without completing it",
            );
            complete_pending(
                &self.shared,
                task,
                NodeEnd::Failed(error),
                self.started,
                self.gpu_released,
                None,
            );
        }
    }
}
