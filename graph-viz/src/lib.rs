//! # dsr-graph-viz: pictures of dsr batch graphs
//!
//! Renders a compiled batch graph as Graphviz DOT: the **plan** (what will run: a shape per node
//! kind, a style per edge kind, a cluster per request) and the **run** (the same graph coloured by
//! how each node ended, with its duration and bytes). It reads the engine's read-only views and
//! its observer hook, and nothing else; the engine itself never formats output.
//!
//! - [`dot`]: the DOT writer;
//! - [`recorder`]: [`RunRecorder`], an observer that remembers when each node ran;
//! - `trace` (feature `trace`): `TraceRecorder`, an observer whose record is a timeline trace
//!   (Chrome trace-event JSON, for Perfetto UI and `chrome://tracing`).

pub mod dot;
pub mod recorder;
#[cfg(feature = "trace")]
pub mod trace;

pub use dot::{plan_dot, run_dot};
pub use recorder::{NodeRun, RunRecorder};
#[cfg(feature = "trace")]
pub use trace::TraceRecorder;
