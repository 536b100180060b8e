//! The compiled graph: a batch's rows frozen as struct-of-arrays columns in one bumpalo arena,
//! the executor's hot-path accessors, and the read-only views (nodes, edges, requests) that
//! DOT, traces and tests read while a batch runs and after it retires.

use std::fmt;

use super::builder::RequestInfo;
use super::resource::{FileSlot, Resource, ResourceKind};
use crate::arena::{Arena, ArenaSlice};
use crate::buffer::Reservation;
use crate::state::{NodeState, StateWord};
use crate::sync::{AtomicU64, Ordering};
use crate::vocabulary::{span_opt, EdgeKind, NodeId, NodeKind, RequestId, ResourceId, Span};

/// The frozen rows of a graph, as columns living in the batch's arena.
pub(super) struct Columns {
    pub(super) kind: ArenaSlice<NodeKind>,
    pub(super) request: ArenaSlice<RequestId>,
    pub(super) src: ArenaSlice<Span>,
    pub(super) dst: ArenaSlice<Span>,
    pub(super) len: ArenaSlice<u64>,
    pub(super) src_len: ArenaSlice<u64>,
    pub(super) tile: ArenaSlice<u32>,
    pub(super) from: ArenaSlice<u64>,
    pub(super) preds: ArenaSlice<u32>,
    pub(super) state: ArenaSlice<StateWord>,
    pub(super) succ_offsets: ArenaSlice<u32>,
    pub(super) succ: ArenaSlice<NodeId>,
    pub(super) succ_kind: ArenaSlice<EdgeKind>,
    /// How many of a node's successors (the first ones in its list) are behind GPU edges; empty
    /// when the graph has no GPU edge.
    pub(super) gpu_succ: ArenaSlice<u32>,
    /// Each node's predecessors behind GPU edges, as compressed sparse rows; empty when the graph
    /// has no GPU edge.
    pub(super) gpu_pred_offsets: ArenaSlice<u32>,
    pub(super) gpu_pred: ArenaSlice<NodeId>,
    /// The timeline value each node was submitted with (0: not submitted); empty when the graph
    /// has no GPU edge, since nothing would read it.
    pub(super) submitted: ArenaSlice<AtomicU64>,
    pub(super) req_offsets: ArenaSlice<u32>,
    pub(super) req_nodes: ArenaSlice<NodeId>,
    pub(super) is_sink: ArenaSlice<bool>,
    pub(super) roots: ArenaSlice<NodeId>,
}

/// A validated graph, ready to run, and read-only afterwards.
pub struct CompiledGraph {
    pub(super) id: u64,
    // Drop order: the columns point into the arena, so they are declared (and dropped) first.
    pub(super) columns: Columns,
    pub(super) arena: Arena,
    pub(super) requests: Box<[RequestInfo]>,
    pub(super) req_sinks: Box<[u32]>,
    pub(crate) resources: Box<[Resource]>,
    pub(crate) reservations: Vec<Reservation>,
}

impl fmt::Debug for CompiledGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledGraph")
            .field("id", &self.id)
            .field("nodes", &self.node_count())
            .field("edges", &self.edge_count())
            .field("requests", &self.requests.len())
            .field("arena_bytes", &self.arena.allocated_bytes())
            .finish()
    }
}

/// A read-only view of one node.
#[derive(Clone, Copy, Debug)]
pub struct NodeView {
    /// Its id.
    pub id: NodeId,
    /// What it does.
    pub kind: NodeKind,
    /// Its request.
    pub request: RequestId,
    /// Where its bytes come from.
    pub src: Option<Span>,
    /// Where its bytes go.
    pub dst: Option<Span>,
    /// Bytes it produces.
    pub len: u64,
    /// Bytes it consumes.
    pub src_len: u64,
    /// First tile it decodes (decode nodes).
    pub tile: u32,
    /// Where its part of a stream starts (`DecompressGpu` nodes; see `NodeSpec::from`).
    pub from: u64,
    /// How many predecessors it has.
    pub predecessors: u32,
    /// Its state word now.
    pub state: NodeState,
}

impl CompiledGraph {
    /// The graph's id.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// How many nodes.
    pub fn node_count(&self) -> usize {
        self.columns.kind.len()
    }
    /// How many edges.
    pub fn edge_count(&self) -> usize {
        self.columns.succ.len()
    }
    /// The requests, in enqueue order.
    pub fn requests(&self) -> &[RequestInfo] {
        &self.requests
    }
    /// What resource `id` is.
    pub fn resource_kind(&self, id: ResourceId) -> Option<ResourceKind> {
        self.resources.get(id.index()).map(Resource::kind)
    }
    /// The file behind a resource, if it is one.
    pub fn file(&self, id: ResourceId) -> Option<&FileSlot> {
        match self.resources.get(id.index()) {
            Some(Resource::File(slot)) => Some(slot),
            _ => None,
        }
    }
    /// One node.
    pub fn node(&self, id: NodeId) -> NodeView {
        let i = id.index();
        let c = &self.columns;
        NodeView {
            id,
            kind: c.kind[i],
            request: c.request[i],
            src: span_opt(c.src[i]),
            dst: span_opt(c.dst[i]),
            len: c.len[i],
            src_len: c.src_len[i],
            tile: c.tile[i],
            from: c.from[i],
            predecessors: c.preds[i],
            state: c.state[i].load(),
        }
    }
    /// Every node, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeView> + '_ {
        (0..self.node_count() as u32).map(|i| self.node(NodeId(i)))
    }
    /// Every edge, grouped by predecessor.
    pub fn edges(&self) -> impl Iterator<Item = (NodeId, NodeId, EdgeKind)> + '_ {
        (0..self.node_count()).flat_map(move |i| {
            let range = self.succ_range(i);
            let from = NodeId(i as u32);
            self.columns.succ[range.clone()]
                .iter()
                .zip(&self.columns.succ_kind[range])
                .map(move |(&to, &kind)| (from, to, kind))
        })
    }
    /// The nodes of a request.
    pub fn request_nodes(&self, request: RequestId) -> &[NodeId] {
        let c = &self.columns;
        &c.req_nodes[c.req_offsets[request.index()] as usize..c.req_offsets[request.index() + 1] as usize]
    }
    /// Nodes with no predecessors.
    pub fn roots(&self) -> &[NodeId] {
        &self.columns.roots
    }

    // Hot-path accessors for the executor.
    pub(crate) fn kind(&self, node: NodeId) -> NodeKind {
        self.columns.kind[node.index()]
    }
    pub(crate) fn request_of(&self, node: NodeId) -> RequestId {
        self.columns.request[node.index()]
    }
    pub(crate) fn state(&self, node: NodeId) -> &StateWord {
        &self.columns.state[node.index()]
    }
    pub(crate) fn successors(&self, node: NodeId) -> &[NodeId] {
        &self.columns.succ[self.succ_range(node.index())]
    }
    /// The successors behind GPU edges, released when the node is submitted, and those behind
    /// CPU edges, released when it completes.
    pub(crate) fn split_successors(&self, node: NodeId) -> (&[NodeId], &[NodeId]) {
        let all = self.successors(node);
        let gpu = self.columns.gpu_succ.get(node.index()).map_or(0, |&g| g as usize);
        all.split_at(gpu)
    }
    /// Records the timeline value `node`'s GPU work was submitted with, for its GPU successors to
    /// wait on. Release: a successor that sees its release sees the value.
    pub(crate) fn set_submitted(&self, node: NodeId, value: u64) {
        if let Some(slot) = self.columns.submitted.get(node.index()) {
            slot.store(value, Ordering::Release);
        }
    }
    /// The timeline values of `node`'s GPU predecessors that were submitted (a predecessor that
    /// completed without reaching the GPU, or was skipped, has none).
    pub(crate) fn gpu_waits(&self, node: NodeId) -> impl Iterator<Item = u64> + '_ {
        let c = &self.columns;
        let range = match c.gpu_pred_offsets.get(node.index()..node.index() + 2) {
            Some(&[start, end]) => start as usize..end as usize,
            _ => 0..0,
        };
        c.gpu_pred[range]
            .iter()
            .map(|p| c.submitted[p.index()].load(Ordering::Acquire))
            .filter(|&value| value != 0)
    }
    /// The timeline value `node` was submitted with, if it was.
    pub fn submitted_value(&self, node: NodeId) -> Option<u64> {
        let value = self.columns.submitted.get(node.index())?.load(Ordering::Acquire);
        (value != 0).then_some(value)
    }
    pub(crate) fn is_request_sink(&self, node: NodeId) -> bool {
        self.columns.is_sink[node.index()]
    }
    pub(crate) fn sinks(&self, request: RequestId) -> u32 {
        self.req_sinks[request.index()]
    }
    pub(crate) fn src(&self, node: NodeId) -> Option<Span> {
        span_opt(self.columns.src[node.index()])
    }
    pub(crate) fn dst(&self, node: NodeId) -> Option<Span> {
        span_opt(self.columns.dst[node.index()])
    }
    pub(crate) fn len(&self, node: NodeId) -> u64 {
        self.columns.len[node.index()]
    }
    pub(crate) fn tile(&self, node: NodeId) -> u32 {
        self.columns.tile[node.index()]
    }
    pub(crate) fn from(&self, node: NodeId) -> u64 {
        self.columns.from[node.index()]
    }
    pub(crate) fn src_len(&self, node: NodeId) -> u64 {
        self.columns.src_len[node.index()]
    }
    pub(crate) fn request_info(&self, request: RequestId) -> &RequestInfo {
        &self.requests[request.index()]
    }
    pub(crate) fn resource(&self, id: ResourceId) -> &Resource {
        &self.resources[id.index()]
    }
    fn succ_range(&self, i: usize) -> std::ops::Range<usize> {
        self.columns.succ_offsets[i] as usize..self.columns.succ_offsets[i + 1] as usize
    }
}
