//! Building a graph: requests, resources and nodes grow as rows in plain vectors while requests
//! are lowered (or while a caller builds nodes by hand); [`GraphBuilder::compile`]
//! (`compile.rs`) then validates and freezes them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::resource::{FileSlot, FileSource, Resource, ResourceKind};
use crate::buffer::{DeviceBuffer, RawBytes, Reservation, SourceBytes};
use crate::error::{Error, ErrorKind, Result};
use crate::request::Priority;
use crate::scratch::Scratch;
use crate::vocabulary::{EdgeKind, NodeId, NodeKind, RequestId, ResourceId, Span, NO_SPAN};

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
    /// Where each GDeflate tile's bytes end, when the source is tiles without their
    /// TileStream's header and table ([`crate::Request::gdeflate_tiles`]).
    pub tile_ends: Option<Arc<[u64]>>,
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
    /// For `DecompressCpu` nodes, the first compressed tile it decodes (its group runs from there
    /// for `len` bytes of output); for `DecompressGpu` nodes, 1 where its input ends with the
    /// stream (it takes the stream's last tile); 0 otherwise.
    pub tile: u32,
    /// For `DecompressGpu` nodes: the tiles whose compressed bytes end at or before this offset
    /// of its input were taken by an earlier node of the request (a stream read in pieces
    /// decodes piece by piece; see `lower`); 0 otherwise.
    pub from: u64,
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
            from: 0,
        }
    }
}

static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// A graph under construction.
#[derive(Debug)]
pub struct GraphBuilder {
    pub(super) id: u64,
    pub(super) requests: Vec<RequestInfo>,
    pub(super) resources: Vec<Resource>,
    pub(super) files: HashMap<PathBuf, ResourceId>,
    /// Open-file sources by the address of their `Arc<File>`.
    pub(super) open_files: HashMap<usize, ResourceId>,
    /// Files written, by path or open-file address.
    pub(super) write_files: HashMap<WriteKey, ResourceId>,
    pub(super) kind: Vec<NodeKind>,
    pub(super) request: Vec<RequestId>,
    pub(super) src: Vec<Span>,
    pub(super) dst: Vec<Span>,
    pub(super) len: Vec<u64>,
    pub(super) src_len: Vec<u64>,
    pub(super) tile: Vec<u32>,
    pub(super) from: Vec<u64>,
    pub(super) edges: Vec<(NodeId, NodeId, EdgeKind)>,
    /// Per node: whether lowering added it.
    pub(super) lowered: Vec<bool>,
    pub(crate) reservations: Vec<Reservation>,
}

/// How write destinations are told apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum WriteKey {
    Path(PathBuf),
    Open(usize),
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
            write_files: HashMap::new(),
            kind: Vec::new(),
            request: Vec::new(),
            src: Vec::new(),
            dst: Vec::new(),
            len: Vec::new(),
            src_len: Vec::new(),
            tile: Vec::new(),
            from: Vec::new(),
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
        self.from.reserve(nodes);
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
                direct_alignment: OnceLock::new(),
                writable: false,
            })));
            self.files.insert(path.clone(), id);
            return id;
        }
        // The same open file (one `Arc`) is one resource too: its direct-I/O descriptor and its
        // ring registration are made once per batch, not once per request. The resource holds a
        // clone, so the address cannot be reused by another file while the builder lives.
        let (FileSource::Open(file) | FileSource::Named(file, _)) = &source else {
            unreachable!("paths returned above")
        };
        let key = Arc::as_ptr(file) as usize;
        if let Some(&id) = self.open_files.get(&key) {
            return id;
        }
        let id = self.push_resource(Resource::File(Box::new(FileSlot {
            shared_path: match &source {
                FileSource::Named(_, path) => Some(path.clone()),
                _ => None,
            },
            source,
            opened: OnceLock::new(),
            direct: OnceLock::new(),
            direct_alignment: OnceLock::new(),
            writable: false,
        })));
        self.open_files.insert(key, id);
        id
    }

    /// Adds a file that nodes write: one resource per path (or open file) among the batch's
    /// write destinations, apart from the resources reads use.
    pub fn add_file_for_write(&mut self, source: FileSource) -> ResourceId {
        let key = match &source {
            FileSource::Path(path) => WriteKey::Path(path.clone()),
            FileSource::Open(file) | FileSource::Named(file, _) => WriteKey::Open(Arc::as_ptr(file) as usize),
        };
        if let Some(&id) = self.write_files.get(&key) {
            return id;
        }
        let id = self.push_resource(Resource::File(Box::new(FileSlot {
            shared_path: match &source {
                FileSource::Path(path) => Some(Arc::from(path.as_path())),
                FileSource::Named(_, path) => Some(path.clone()),
                FileSource::Open(_) => None,
            },
            source,
            opened: OnceLock::new(),
            direct: OnceLock::new(),
            direct_alignment: OnceLock::new(),
            writable: true,
        })));
        self.write_files.insert(key, id);
        id
    }

    /// What resource `id` is, if it exists.
    pub fn resource_kind(&self, id: ResourceId) -> Option<ResourceKind> {
        self.resources.get(id.index()).map(Resource::kind)
    }

    /// A memory source.
    pub fn add_memory(&mut self, bytes: SourceBytes) -> ResourceId {
        self.push_resource(Resource::Memory(bytes))
    }

    /// Adds a GPU buffer that nodes read (a GPU copy's source); nothing is reserved, since
    /// reading does not exclude other readers.
    pub fn add_device_source(&mut self, buffer: DeviceBuffer) -> ResourceId {
        self.push_resource(Resource::Device(buffer))
    }

    pub(crate) fn add_host(&mut self, raw: RawBytes, reservation: Reservation) -> ResourceId {
        self.reservations.push(reservation);
        self.push_resource(Resource::Host(raw))
    }

    pub(crate) fn add_device(&mut self, buffer: DeviceBuffer, reservation: Reservation) -> ResourceId {
        self.reservations.push(reservation);
        self.push_resource(Resource::Device(buffer))
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
        self.from.push(spec.from);
        NodeId(self.kind.len() as u32 - 1)
    }

    /// The destination span of `node` (if it has one) and the bytes it writes there.
    pub(crate) fn node_dst(&self, node: NodeId) -> (Option<Span>, u64) {
        let i = node.0 as usize;
        let dst = self.dst[i];
        ((dst != NO_SPAN).then_some(dst), self.len[i])
    }

    /// Makes `to` wait for `from`.
    pub fn add_edge(&mut self, from: NodeId, to: NodeId, kind: EdgeKind) {
        self.edges.push((from, to, kind));
    }
}
