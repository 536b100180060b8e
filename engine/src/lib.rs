//! # dsr-engine: the job-graph engine of dsr
//!
//! Requests (read a file range or a memory block, maybe GDeflate-compressed, into a destination)
//! are **lowered** into a DAG of typed stage nodes, **compiled** into struct-of-arrays columns
//! in a per-batch arena, and **run** by a work-stealing executor. This crate knows stage *kinds*
//! and the [`Stage`] trait, never an implementation: `dsr-stages` hands the stages (and the
//! completion sources, as [`Reactor`]s) to the executor when it is built. No io_uring, no Vulkan
//! here: everything is pure and testable with loom and miri.
//!
//! The design choice that shapes it: a node is a row, and its whole life is one atomic state
//! word (`state.rs`). Releasing a successor is one `fetch_sub`; cancelling is setting a
//! tombstone bit, after which the node still completes (skipping its work) so the graph always
//! drains and every request reports exactly once.
//!
//! Modules, in the order data flows through them:
//! - [`request`]: what a caller asks for; [`buffer`]: host memory it lands in;
//! - [`lower`]: requests → nodes; [`graph`]: the builder and the compiled graph (`arena.rs`);
//! - [`executor`]: workers, deques, injectors, parking (`sleep.rs`); [`state`]: the state word;
//! - [`stage`] and [`reactor`]: the seams to the stages and the completion sources;
//! - [`batch`]: waiting, callbacks, eventfds, reports, cancellation tickets;
//! - [`metrics`] and [`observer`]: what introspection reads; [`error`]: what failures carry.

#![warn(missing_docs)]

mod arena;
pub mod batch;
pub mod buffer;
pub mod error;
pub mod executor;
pub mod graph;
pub mod lower;
mod memory;
pub mod metrics;
pub mod observer;
pub mod reactor;
pub mod request;
pub mod scratch;
mod sleep;
pub mod stage;
pub mod state;
mod sync;
mod vocabulary;

pub use batch::{Batch, BatchBuilder, BatchReport, CancelTicket, CompiledBatch, RequestReport, RequestStatus};
pub use buffer::HostBuffer;
pub use error::{Error, ErrorKind, Result};
pub use executor::{Executor, ExecutorBuilder, ExecutorConfig};
pub use graph::{
    CompiledGraph, EdgeKind, FileSlot, FileSource, GraphBuilder, NodeId, NodeKind, NodeSpec, NodeView, RequestId,
    RequestInfo, ResourceId, ResourceKind, Span,
};
pub use lower::LoweringConfig;
pub use metrics::{LatencySummary, MetricsSnapshot, StageMetrics};
pub use observer::{NodeEnd, NodeEvent, Observer};
pub use reactor::{Completer, Reactor};
pub use request::{Compression, Destination, IoPolicy, Priority, Request, Source};
pub use scratch::ScratchStats;
pub use stage::{Input, NodeRef, Outcome, PendingNode, Stage};
pub use state::NodeState;
