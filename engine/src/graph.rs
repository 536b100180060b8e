//! The batch graph: typed stage nodes and the edges between them.
//!
//! A graph moves through typestates, each step taking `self`: a [`GraphBuilder`] grows rows in
//! plain vectors while requests are lowered; [`GraphBuilder::compile`] validates it (ranges,
//! acyclicity, disjoint destinations), computes pending counts, and freezes the rows as
//! struct-of-arrays columns in one bumpalo arena per batch ([`CompiledGraph`]); the executor then
//! runs it (`Batch`) and keeps it, read-only, for views once it retires.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::arena::{Arena, ArenaSlice};
use crate::buffer::{RawBytes, Reservation};
use crate::error::{Error, ErrorKind, Result};
use crate::request::Priority;
use crate::scratch::Scratch;
use crate::state::{NodeState, StateWord, MAX_PREDECESSORS};

/// What a node does. The engine names kinds; `dsr-stages` implements them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum NodeKind {
    /// File bytes into memory (a destination, or staging for a later stage).
    Read,
    /// GDeflate tiles decoded on the CPU.
    DecompressCpu,
    /// Host staging copied into a GPU buffer.
    Upload,
    /// GDeflate tiles decoded by a compute shader.
    DecompressGpu,
    /// Bytes moved from one place to another (memory sources, GPU-to-GPU).
    Copy,
    /// A status or fence entry: completes when everything before it has.
    Barrier,
    /// Takes a request's scratch (its `src` span) from the executor's budget; waits, deferred,
    /// while the budget is used up.
    Acquire,
    /// Hands a request's scratch back. Runs even when its request failed or was cancelled.
    Release,
}

impl NodeKind {
    /// Every kind, in discriminant order.
    pub const ALL: [NodeKind; 8] = [
        NodeKind::Read,
        NodeKind::DecompressCpu,
        NodeKind::Upload,
        NodeKind::DecompressGpu,
        NodeKind::Copy,
        NodeKind::Barrier,
        NodeKind::Acquire,
        NodeKind::Release,
    ];
    /// How many kinds there are.
    pub const COUNT: usize = Self::ALL.len();

    /// Whether the executor runs this kind itself (no stage implements it).
    pub fn is_builtin(self) -> bool {
        matches!(self, NodeKind::Barrier | NodeKind::Acquire | NodeKind::Release)
    }

    /// The kind's index, for per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, as used in messages, DOT and JSON.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Read => "read",
            NodeKind::DecompressCpu => "decompress-cpu",
            NodeKind::Upload => "upload",
            NodeKind::DecompressGpu => "decompress-gpu",
            NodeKind::Copy => "copy",
            NodeKind::Barrier => "barrier",
            NodeKind::Acquire => "acquire",
            NodeKind::Release => "release",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a successor depends on its predecessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// The successor runs once the predecessor has completed on the CPU.
    Cpu,
    /// The successor may be submitted once the predecessor is submitted; the GPU waits on a
    /// timeline value. Until the GPU stages exist the executor treats it as a CPU edge.
    Gpu,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) u32);

        impl $name {
            /// The index this id stands for.
            pub fn index(self) -> usize {
                self.0 as usize
            }
            /// The id of index `index` (ids are dense indices in their graph).
            pub fn from_index(index: usize) -> Self {
                $name(index as u32)
            }
        }
    };
}

id_type!(
    /// A node of one batch graph.
    NodeId
);
id_type!(
    /// A request of one batch (its enqueue order).
    RequestId
);
id_type!(
    /// A resource (file, memory, destination, scratch) of one batch graph.
    ResourceId
);

/// A place bytes come from or go to: a resource and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The resource.
    pub resource: ResourceId,
    /// Byte offset in the resource.
    pub offset: u64,
}

const NO_RESOURCE: ResourceId = ResourceId(u32::MAX);
const NO_SPAN: Span = Span {
    resource: NO_RESOURCE,
    offset: 0,
};

fn span_opt(span: Span) -> Option<Span> {
    (span.resource != NO_RESOURCE).then_some(span)
}

/// Where a file source comes from.
#[derive(Clone, Debug)]
pub enum FileSource {
    /// A path, opened by the read stage on first use (once per batch).
    Path(PathBuf),
    /// A file the caller has already opened.
    Open(Arc<File>),
}

/// A source file of a batch, opened at most once, by whichever read gets there first.
#[derive(Debug)]
pub struct FileSlot {
    source: FileSource,
    /// The path, shared, so completion sources can name the file in errors without an
    /// allocation per read.
    shared_path: Option<Arc<std::path::Path>>,
    opened: OnceLock<Result<Arc<File>>>,
    /// The same file opened for direct I/O, when a read asks for it.
    direct: OnceLock<Result<Arc<File>>>,
}

impl FileSlot {
    /// The source as the request gave it.
    pub fn source(&self) -> &FileSource {
        &self.source
    }

    /// The path, if the source is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.shared_path.as_deref()
    }

    /// The path as a shared handle (a reference count, not an allocation).
    pub fn shared_path(&self) -> Option<Arc<std::path::Path>> {
        self.shared_path.clone()
    }

    /// The open file, opening a path with `open` the first time. A failed open is remembered, so
    /// every request of the batch that needs the file reports the same error.
    pub fn get_or_open(&self, open: impl FnOnce(&std::path::Path) -> Result<File>) -> Result<&File> {
        let opened = self.opened.get_or_init(|| match &self.source {
            FileSource::Open(file) => Ok(file.clone()),
            FileSource::Path(path) => open(path).map(Arc::new),
        });
        match opened {
            Ok(file) => Ok(file),
            Err(err) => Err(err.clone()),
        }
    }

    /// The file opened for direct I/O (`O_DIRECT`), opened with `open` the first time; a failed
    /// open (a file system without direct I/O) is remembered like [`FileSlot::get_or_open`]'s.
    pub fn get_or_open_direct(&self, open: impl FnOnce(&FileSource) -> Result<File>) -> Result<&File> {
        match self.direct.get_or_init(|| open(&self.source).map(Arc::new)) {
            Ok(file) => Ok(file),
            Err(err) => Err(err.clone()),
        }
    }
}

/// What a resource of a graph is, for views and validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A source file.
    File,
    /// A caller's source bytes in memory.
    Memory,
    /// A caller's host destination.
    Host,
    /// Batch-owned intermediate bytes.
    Scratch,
}

pub(crate) enum Resource {
    /// Boxed: a slot holds two lazily opened descriptors and their errors.
    File(Box<FileSlot>),
    Memory(Arc<[u8]>),
    /// Kept alive by the batch's reservations until it retires.
    Host(RawBytes),
    Scratch(Scratch),
}

impl Resource {
    pub(crate) fn kind(&self) -> ResourceKind {
        match self {
            Resource::File(_) => ResourceKind::File,
            Resource::Memory(_) => ResourceKind::Memory,
            Resource::Host(_) => ResourceKind::Host,
            Resource::Scratch(_) => ResourceKind::Scratch,
        }
    }

    /// Length in bytes; files have none known to the graph.
    fn len(&self) -> Option<u64> {
        match self {
            Resource::File(_) => None,
            Resource::Memory(bytes) => Some(bytes.len() as u64),
            Resource::Host(raw) => Some(raw.len as u64),
            Resource::Scratch(scratch) => Some(scratch.len() as u64),
        }
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::File(slot) => f.debug_tuple("File").field(&slot.source).finish(),
            Resource::Memory(bytes) => write!(f, "Memory({} bytes)", bytes.len()),
            Resource::Host(raw) => write!(f, "Host({} bytes)", raw.len),
            Resource::Scratch(s) => write!(f, "Scratch({} bytes)", s.len()),
        }
    }
}

/// What a request is, as the graph and its views know it.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    /// The caller's name for it.
    pub name: Option<String>,
    /// The cancellation tag.
    pub tag: u64,
    /// Its priority.
    pub priority: Priority,
    /// Bytes it delivers to its destination when it succeeds.
    pub bytes: u64,
    /// Expected hash (xxh3-64) of each decoded 64 KiB tile, when the request asks for its data
    /// to be verified.
    pub tile_hashes: Option<Arc<[u64]>>,
    /// How its file bytes are read.
    pub io: crate::request::IoPolicy,
}

/// One node as a builder takes it.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec {
    /// What it does.
    pub kind: NodeKind,
    /// The request it belongs to.
    pub request: RequestId,
    /// Where its bytes come from, if anywhere.
    pub src: Option<Span>,
    /// Where its bytes go, if anywhere.
    pub dst: Option<Span>,
    /// How many bytes it produces at `dst`.
    pub len: u64,
    /// How many bytes it consumes at `src` (equal to `len` for reads and copies).
    pub src_len: u64,
    /// For decode nodes, the first compressed tile it decodes (its group runs from there for
    /// `len` bytes of output); 0 otherwise.
    pub tile: u32,
}

impl NodeSpec {
    /// A node that moves no bytes: for graphs whose stages do their own work (benches, tests,
    /// barriers).
    pub fn bare(kind: NodeKind, request: RequestId) -> Self {
        NodeSpec {
            kind,
            request,
            src: None,
            dst: None,
            len: 0,
            src_len: 0,
            tile: 0,
        }
    }
}

static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// A graph under construction.
#[derive(Debug)]
pub struct GraphBuilder {
    id: u64,
    requests: Vec<RequestInfo>,
    resources: Vec<Resource>,
    files: HashMap<PathBuf, ResourceId>,
    /// Open-file sources by the address of their `Arc<File>`.
    open_files: HashMap<usize, ResourceId>,
    kind: Vec<NodeKind>,
    request: Vec<RequestId>,
    src: Vec<Span>,
    dst: Vec<Span>,
    len: Vec<u64>,
    src_len: Vec<u64>,
    tile: Vec<u32>,
    edges: Vec<(NodeId, NodeId, EdgeKind)>,
    /// Per node: whether lowering added it.
    lowered: Vec<bool>,
    pub(crate) reservations: Vec<Reservation>,
}

impl Default for GraphBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GraphBuilder {
    /// An empty graph with a fresh id.
    pub fn new() -> Self {
        GraphBuilder {
            id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
            requests: Vec::new(),
            resources: Vec::new(),
            files: HashMap::new(),
            lowered: Vec::new(),
            open_files: HashMap::new(),
            kind: Vec::new(),
            request: Vec::new(),
            src: Vec::new(),
            dst: Vec::new(),
            len: Vec::new(),
            src_len: Vec::new(),
            tile: Vec::new(),
            edges: Vec::new(),
            reservations: Vec::new(),
        }
    }

    /// The graph's id (unique in this process); batches and observers use it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Adds a request; nodes name it.
    pub fn add_request(&mut self, info: RequestInfo) -> RequestId {
        self.requests.push(info);
        RequestId(self.requests.len() as u32 - 1)
    }

    /// How many requests the graph has.
    pub fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// How many nodes the graph has.
    pub fn node_count(&self) -> usize {
        self.kind.len()
    }

    /// Reserves room for `nodes` more nodes and `edges` more edges.
    pub fn reserve(&mut self, nodes: usize, edges: usize) {
        self.kind.reserve(nodes);
        self.request.reserve(nodes);
        self.src.reserve(nodes);
        self.dst.reserve(nodes);
        self.len.reserve(nodes);
        self.src_len.reserve(nodes);
        self.tile.reserve(nodes);
        self.lowered.reserve(nodes);
        self.edges.reserve(edges);
    }

    /// A file source; the same path, or the same open file (`Arc`), in one batch is one
    /// resource, opened once.
    pub fn add_file(&mut self, source: FileSource) -> ResourceId {
        if let FileSource::Path(path) = &source {
            if let Some(&id) = self.files.get(path) {
                return id;
            }
            let id = self.push_resource(Resource::File(Box::new(FileSlot {
                shared_path: Some(Arc::from(path.as_path())),
                source: source.clone(),
                opened: OnceLock::new(),
                direct: OnceLock::new(),
            })));
            self.files.insert(path.clone(), id);
            return id;
        }
        // The same open file (one `Arc`) is one resource too: its direct-I/O descriptor and its
        // ring registration are made once per batch, not once per request. The resource holds a
        // clone, so the address cannot be reused by another file while the builder lives.
        let FileSource::Open(file) = &source else {
            unreachable!("paths returned above")
        };
        let key = Arc::as_ptr(file) as usize;
        if let Some(&id) = self.open_files.get(&key) {
            return id;
        }
        let id = self.push_resource(Resource::File(Box::new(FileSlot {
            shared_path: None,
            source,
            opened: OnceLock::new(),
            direct: OnceLock::new(),
        })));
        self.open_files.insert(key, id);
        id
    }

    /// What resource `id` is, if it exists.
    pub fn resource_kind(&self, id: ResourceId) -> Option<ResourceKind> {
        self.resources.get(id.index()).map(Resource::kind)
    }

    /// A memory source.
    pub fn add_memory(&mut self, bytes: Arc<[u8]>) -> ResourceId {
        self.push_resource(Resource::Memory(bytes))
    }

    pub(crate) fn add_host(&mut self, raw: RawBytes, reservation: Reservation) -> ResourceId {
        self.reservations.push(reservation);
        self.push_resource(Resource::Host(raw))
    }

    pub(crate) fn add_scratch(&mut self, len: u64) -> Result<ResourceId> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= isize::MAX as usize - 4096)
            .ok_or_else(|| Error::new(ErrorKind::InvalidRequest, "the compressed stream is larger than memory"))?;
        Ok(self.push_resource(Resource::Scratch(Scratch::new(len))))
    }

    fn push_resource(&mut self, resource: Resource) -> ResourceId {
        self.resources.push(resource);
        ResourceId(self.resources.len() as u32 - 1)
    }

    /// Adds a node.
    pub fn add_node(&mut self, spec: NodeSpec) -> NodeId {
        self.push_node(spec, false)
    }

    /// Adds a node that lowering made: only these may touch a request's scratch or be its
    /// `Acquire`/`Release`, because lowering is what orders every scratch user between the two.
    pub(crate) fn add_lowered_node(&mut self, spec: NodeSpec) -> NodeId {
        self.push_node(spec, true)
    }

    fn push_node(&mut self, spec: NodeSpec, lowered: bool) -> NodeId {
        self.lowered.push(lowered);
        self.kind.push(spec.kind);
        self.request.push(spec.request);
        self.src.push(spec.src.unwrap_or(NO_SPAN));
        self.dst.push(spec.dst.unwrap_or(NO_SPAN));
        self.len.push(spec.len);
        self.src_len.push(spec.src_len);
        self.tile.push(spec.tile);
        NodeId(self.kind.len() as u32 - 1)
    }

    /// Makes `to` wait for `from`.
    pub fn add_edge(&mut self, from: NodeId, to: NodeId, kind: EdgeKind) {
        self.edges.push((from, to, kind));
    }

    /// Validates the graph and freezes it for execution. Refuses dangling ids, cycles, nodes
    /// with too many predecessors, spans outside their resource, sources a node kind cannot read
    /// from, and two nodes writing the same bytes.
    pub fn compile(self) -> Result<CompiledGraph> {
        let n = self.kind.len();
        if n >= u32::MAX as usize {
            return Err(invalid("a batch graph holds at most 2^32 - 1 nodes"));
        }
        self.check_nodes()?;

        // In-degrees, and successors as compressed sparse rows.
        let mut preds = vec![0u32; n];
        let mut succ_offsets = vec![0u32; n + 1];
        for &(from, to, _) in &self.edges {
            if from.index() >= n || to.index() >= n {
                return Err(invalid(format!(
                    "edge {from:?} -> {to:?} names a node that does not exist"
                )));
            }
            if from == to {
                return Err(invalid(format!("node {} depends on itself", from.0)));
            }
            preds[to.index()] += 1;
            if preds[to.index()] > MAX_PREDECESSORS {
                return Err(invalid(format!(
                    "node {} has more than {MAX_PREDECESSORS} predecessors",
                    to.0
                )));
            }
            succ_offsets[from.index() + 1] += 1;
        }
        for i in 0..n {
            succ_offsets[i + 1] += succ_offsets[i];
        }
        let mut fill = succ_offsets.clone();
        let mut succ = vec![NodeId(0); self.edges.len()];
        let mut succ_kind = vec![EdgeKind::Cpu; self.edges.len()];
        for &(from, to, kind) in &self.edges {
            let at = &mut fill[from.index()];
            succ[*at as usize] = to;
            succ_kind[*at as usize] = kind;
            *at += 1;
        }
        check_acyclic(&preds, &succ_offsets, &succ)?;

        // Per request: its nodes (CSR) and how many of them are sinks.
        let r = self.requests.len();
        let mut req_offsets = vec![0u32; r + 1];
        for &req in &self.request {
            if req.index() >= r {
                return Err(invalid(format!("a node names request {} that does not exist", req.0)));
            }
            req_offsets[req.index() + 1] += 1;
        }
        for i in 0..r {
            if req_offsets[i + 1] == 0 {
                return Err(invalid(format!("request {i} has no nodes")));
            }
            req_offsets[i + 1] += req_offsets[i];
        }
        // A request sink has no successor in its own request. Every node of a request reaches
        // one of its sinks through the request's own edges, so the request has finished (no node
        // of it will touch its destination again) exactly when all its sinks have.
        let mut req_fill = req_offsets.clone();
        let mut req_nodes = vec![NodeId(0); n];
        let mut req_sinks = vec![0u32; r];
        let mut is_sink = vec![false; n];
        for (i, &req) in self.request.iter().enumerate() {
            let at = &mut req_fill[req.index()];
            req_nodes[*at as usize] = NodeId(i as u32);
            *at += 1;
            let own = &succ[succ_offsets[i] as usize..succ_offsets[i + 1] as usize];
            if own.iter().all(|s| self.request[s.index()] != req) {
                is_sink[i] = true;
                req_sinks[req.index()] += 1;
            }
        }

        let roots: Vec<NodeId> = (0..n as u32).filter(|&i| preds[i as usize] == 0).map(NodeId).collect();

        let arena = Arena::new();
        let columns = Columns {
            kind: arena.copy_slice(&self.kind),
            request: arena.copy_slice(&self.request),
            src: arena.copy_slice(&self.src),
            dst: arena.copy_slice(&self.dst),
            len: arena.copy_slice(&self.len),
            src_len: arena.copy_slice(&self.src_len),
            tile: arena.copy_slice(&self.tile),
            preds: arena.copy_slice(&preds),
            state: arena.fill_with(n, |i| StateWord::new(preds[i])),
            succ_offsets: arena.copy_slice(&succ_offsets),
            succ: arena.copy_slice(&succ),
            succ_kind: arena.copy_slice(&succ_kind),
            req_offsets: arena.copy_slice(&req_offsets),
            req_nodes: arena.copy_slice(&req_nodes),
            is_sink: arena.copy_slice(&is_sink),
            roots: arena.copy_slice(&roots),
        };
        Ok(CompiledGraph {
            id: self.id,
            columns,
            arena,
            requests: self.requests.into_boxed_slice(),
            req_sinks: req_sinks.into_boxed_slice(),
            resources: self.resources.into_boxed_slice(),
            reservations: self.reservations,
        })
    }

    fn check_nodes(&self) -> Result<()> {
        let mut writes: Vec<(ResourceId, u64, u64, usize)> = Vec::new();
        for i in 0..self.kind.len() {
            let (kind, len) = (self.kind[i], self.len[i]);
            let names_scratch = [self.src[i], self.dst[i]]
                .into_iter()
                .filter_map(span_opt)
                .any(|span| matches!(self.resources.get(span.resource.index()), Some(Resource::Scratch(_))));
            if (names_scratch || matches!(kind, NodeKind::Acquire | NodeKind::Release)) && !self.lowered[i] {
                return Err(invalid(format!(
                    "{kind} node {i} touches a request's scratch or holds it; only lowering makes such nodes"
                )));
            }
            if let Some(src) = span_opt(self.src[i]) {
                let resource = self.resource(src, i)?;
                if matches!(resource.kind(), ResourceKind::Host) {
                    return Err(invalid(format!("{kind} node {i} reads from a host destination")));
                }
                // File lengths are only known when read; memory and scratch are checked here.
                if let Some(limit) = resource.len() {
                    if src.offset.checked_add(self.src_len[i]).is_none_or(|end| end > limit) {
                        return Err(invalid(format!("{kind} node {i} reads past the end of its source")));
                    }
                }
            }
            if let Some(dst) = span_opt(self.dst[i]) {
                let resource = self.resource(dst, i)?;
                if matches!(resource.kind(), ResourceKind::File | ResourceKind::Memory) {
                    return Err(invalid(format!("{kind} node {i} writes into a source")));
                }
                let end = dst.offset.checked_add(len);
                let limit = resource.len().unwrap_or(0);
                if end.is_none_or(|end| end > limit) {
                    return Err(Error::new(
                        ErrorKind::DestinationTooSmall,
                        format!("{kind} node {i} writes past the end of its destination"),
                    ));
                }
                if len > 0 {
                    writes.push((dst.resource, dst.offset, dst.offset + len, i));
                }
            }
        }
        writes.sort_unstable();
        for pair in writes.windows(2) {
            let ((ra, _, end_a, a), (rb, start_b, _, b)) = (pair[0], pair[1]);
            if ra == rb && start_b < end_a {
                return Err(Error::new(
                    ErrorKind::OverlappingDestinations,
                    format!("nodes {a} and {b} write overlapping bytes of resource {}", ra.0),
                ));
            }
        }
        Ok(())
    }

    fn resource(&self, span: Span, node: usize) -> Result<&Resource> {
        self.resources.get(span.resource.index()).ok_or_else(|| {
            invalid(format!(
                "node {node} names resource {} that does not exist",
                span.resource.0
            ))
        })
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}

/// Kahn's algorithm: a graph is acyclic iff repeatedly removing in-degree-zero nodes removes all.
fn check_acyclic(preds: &[u32], succ_offsets: &[u32], succ: &[NodeId]) -> Result<()> {
    let mut remaining = preds.to_vec();
    let mut ready: Vec<u32> = (0..preds.len() as u32).filter(|&i| preds[i as usize] == 0).collect();
    let mut removed = 0usize;
    while let Some(node) = ready.pop() {
        removed += 1;
        let range = succ_offsets[node as usize] as usize..succ_offsets[node as usize + 1] as usize;
        for next in &succ[range] {
            remaining[next.index()] -= 1;
            if remaining[next.index()] == 0 {
                ready.push(next.0);
            }
        }
    }
    if removed == preds.len() {
        return Ok(());
    }
    let stuck = remaining.iter().position(|&r| r > 0).unwrap_or(0);
    Err(invalid(format!("the graph has a cycle through node {stuck}")))
}

/// The frozen rows of a graph, as columns living in the batch's arena.
struct Columns {
    kind: ArenaSlice<NodeKind>,
    request: ArenaSlice<RequestId>,
    src: ArenaSlice<Span>,
    dst: ArenaSlice<Span>,
    len: ArenaSlice<u64>,
    src_len: ArenaSlice<u64>,
    tile: ArenaSlice<u32>,
    preds: ArenaSlice<u32>,
    state: ArenaSlice<StateWord>,
    succ_offsets: ArenaSlice<u32>,
    succ: ArenaSlice<NodeId>,
    succ_kind: ArenaSlice<EdgeKind>,
    req_offsets: ArenaSlice<u32>,
    req_nodes: ArenaSlice<NodeId>,
    is_sink: ArenaSlice<bool>,
    roots: ArenaSlice<NodeId>,
}

/// A validated graph, ready to run, and read-only afterwards.
pub struct CompiledGraph {
    id: u64,
    // Drop order: the columns point into the arena, so they are declared (and dropped) first.
    columns: Columns,
    arena: Arena,
    requests: Box<[RequestInfo]>,
    req_sinks: Box<[u32]>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(request: RequestId) -> NodeSpec {
        NodeSpec::bare(NodeKind::Copy, request)
    }

    #[test]
    fn pending_counts_are_in_degrees() {
        let mut g = GraphBuilder::new();
        let r = g.add_request(RequestInfo::default());
        let [a, b, c, d] = [0; 4].map(|_| g.add_node(spec(r)));
        g.add_edge(a, b, EdgeKind::Cpu);
        g.add_edge(a, c, EdgeKind::Cpu);
        g.add_edge(b, d, EdgeKind::Cpu);
        g.add_edge(c, d, EdgeKind::Gpu);
        let g = g.compile().unwrap();
        let pending: Vec<u32> = g.nodes().map(|n| n.state.pending()).collect();
        assert_eq!(pending, [0, 1, 1, 2]);
        assert_eq!(g.roots(), &[a]);
        assert_eq!(g.sinks(r), 1);
        assert_eq!(g.edges().count(), 4);
        assert_eq!(g.successors(a), &[b, c]);
    }

    #[test]
    fn cycles_are_refused() {
        let mut g = GraphBuilder::new();
        let r = g.add_request(RequestInfo::default());
        let [a, b, c] = [0; 3].map(|_| g.add_node(spec(r)));
        g.add_edge(a, b, EdgeKind::Cpu);
        g.add_edge(b, c, EdgeKind::Cpu);
        g.add_edge(c, b, EdgeKind::Cpu);
        let err = g.compile().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert!(err.message().contains("cycle"), "{err}");
    }

    #[test]
    fn dangling_edges_and_empty_requests_are_refused() {
        let mut g = GraphBuilder::new();
        let r = g.add_request(RequestInfo::default());
        let a = g.add_node(spec(r));
        g.add_edge(a, NodeId(9), EdgeKind::Cpu);
        assert!(g.compile().unwrap_err().message().contains("does not exist"));

        let mut g = GraphBuilder::new();
        g.add_request(RequestInfo::default());
        assert!(g.compile().unwrap_err().message().contains("no nodes"));
    }

    #[test]
    fn overlapping_node_writes_are_refused() {
        let mut g = GraphBuilder::new();
        let r = g.add_request(RequestInfo::default());
        let scratch = g.add_scratch(16).unwrap();
        for offset in [0, 7] {
            g.add_lowered_node(NodeSpec {
                dst: Some(Span {
                    resource: scratch,
                    offset,
                }),
                len: 8,
                ..spec(r)
            });
        }
        assert_eq!(g.compile().unwrap_err().kind(), ErrorKind::OverlappingDestinations);
    }

    #[test]
    fn writes_into_sources_are_refused() {
        let mut g = GraphBuilder::new();
        let r = g.add_request(RequestInfo::default());
        let memory = g.add_memory(Arc::from(vec![0u8; 4]));
        g.add_node(NodeSpec {
            dst: Some(Span {
                resource: memory,
                offset: 0,
            }),
            len: 4,
            ..spec(r)
        });
        assert!(g.compile().unwrap_err().message().contains("writes into a source"));
    }
}
