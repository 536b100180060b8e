//! # dsr-engine: the job-graph engine of dsr
//!
//! Requests (read a file range or a memory block, maybe GDeflate-compressed, into a destination)
//! are **lowered** into a DAG of typed stage nodes, **compiled** into struct-of-arrays columns
//! in a per-batch arena, and **run** by a work-stealing executor. This crate knows stage *kinds*
//! and the [`Stage`] trait, never an implementation: `dsr-stages` hands the stages (and the
//! completion sources, as [`Reactor`]s) to the executor when it is built. No io_uring, no Vulkan
//! here. The only system calls are for memory (`mmap` for large destinations and scratch) and
//! the eventfds batches signal; the state word and the parking protocol are checked with loom.
//!
//! The design choice that shapes it: a node is a row, and its whole life is one atomic state
//! word (`state.rs`). Releasing a successor is one `fetch_sub`; cancelling is setting a
//! tombstone bit, after which the node still completes (skipping its work) so the graph always
//! drains and every request reports exactly once.
//!
//! Modules, in the order data flows through them:
//! - `vocabulary.rs`: node kinds, edge kinds, ids, spans: the words every other module uses (a
//!   leaf: it imports nothing of the crate);
//! - [`request`]: what a caller asks for; [`buffer`]: host memory it lands in;
//! - [`lower`]: requests → nodes; [`graph`]: the builder, compile, and the compiled graph in its
//!   arena (`arena.rs`);
//! - [`executor`]: workers, deques, injectors, parking, built-in nodes, the completion protocol;
//!   [`state`]: the node state word;
//! - [`stage`] and [`reactor`]: the seams to the stages and the completion sources; [`outcome`]:
//!   how a node's work comes out and how it ended;
//! - [`scratch`]: the scratch budget; [`wait`]: the queue nodes wait in for any budget;
//! - [`batch`]: waiting, callbacks, eventfds, reports, cancellation tickets; [`queue`]: the
//!   DirectStorage-shaped queue over batches (slots, status, signal and event entries, errors);
//! - [`metrics`] and [`observer`]: what introspection reads; [`error`]: what failures carry.
//!
//! What you may touch: stages and completion sources see only [`NodeRef`], [`PendingNode`],
//! [`Completer`] and [`WaitQueue`]; everything that owns the batch (state words, the live set,
//! the arena) stays inside `executor` and `batch`.

#![warn(missing_docs)]

mod arena;
pub mod balance;
mod batch;
pub mod buffer;
pub mod error;
pub mod eventfd;
pub mod executor;
mod file_ranges;
pub mod graph;
pub mod lower;
mod memory;
pub mod metrics;
pub mod observer;
pub mod outcome;
pub mod queue;
pub mod reactor;
pub mod request;
pub mod scratch;
pub mod stage;
pub mod state;
mod sync;
mod vocabulary;
pub mod wait;

pub use balance::{DecodeBalance, DecodeSite};
pub use batch::{Batch, BatchBuilder, BatchReport, CancelTicket, CompiledBatch, RequestReport, RequestStatus};
pub use buffer::{DeviceBuffer, HostBuffer, SourceBytes};
pub use error::{Error, ErrorKind, Result};
pub use eventfd::EventFd;
pub use executor::{Executor, ExecutorBuilder, ExecutorConfig};
pub use graph::{
    CompiledGraph, DirectAlignment, EdgeKind, FileSlot, FileSource, GraphBuilder, NodeId, NodeKind, NodeSpec, NodeView,
    RequestId, RequestInfo, ResourceId, ResourceKind, Span,
};
pub use lower::LoweringConfig;
pub use memory::{free_pages_go_to_the_host, Pages};
pub use metrics::{LatencySummary, MetricsSnapshot, StageMetrics};
pub use observer::{GpuSpan, NodeEvent, Observer};
pub use outcome::{NodeEnd, Outcome};
pub use queue::{
    CommandKind, CompressionSupport, DebugFlags, ErrorRecord, FailureRecord, Fence, Queue, QueueConfig, QueueInfo,
    RequestDone, SourceType, StatusArray, StatusEntry,
};
pub use reactor::{Completer, Reactor};
pub use request::{Compression, DecodeRoute, Destination, IoPolicy, Place, Priority, Request, RequestRecord, Source};
pub use scratch::{ScratchHooks, ScratchStats};
pub use stage::{DeviceRange, Input, NodeRef, PendingNode, Stage};
pub use state::NodeState;
pub use wait::{WaitQueue, Waiter};
