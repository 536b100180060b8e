//! The batch graph: typed stage nodes and the edges between them.
//!
//! A graph moves through typestates, each step taking `self`: a [`GraphBuilder`] grows rows in
//! plain vectors while requests are lowered; [`GraphBuilder::compile`] validates it (ranges,
//! acyclicity, disjoint destinations), computes pending counts, and freezes the rows as
//! struct-of-arrays columns in one bumpalo arena per batch ([`CompiledGraph`]); the executor then
//! runs it (`Batch`) and keeps it, read-only, for views once it retires.
//!
//! Rooms, in that order:
//! - `resource.rs`: what nodes read from and write to (files, memory, host destinations,
//!   scratch);
//! - `builder.rs`: [`GraphBuilder`], [`NodeSpec`], [`RequestInfo`];
//! - `compile.rs`: validation and the freeze;
//! - `compiled.rs`: [`CompiledGraph`], its columns, hot-path accessors and [`NodeView`]s.
//!
//! The words nodes are described in (kinds, ids, spans) live in `crate::vocabulary`, and are
//! re-exported here.

mod builder;
mod compile;
mod compiled;
mod resource;

pub use crate::vocabulary::{EdgeKind, NodeId, NodeKind, RequestId, ResourceId, Span};
pub use builder::{GraphBuilder, NodeSpec, RequestInfo};
pub use compiled::{CompiledGraph, NodeView};
pub(crate) use resource::Resource;
pub use resource::{DirectAlignment, FileSlot, FileSource, ResourceKind};
