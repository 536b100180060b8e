//! The engine's vocabulary: what a node is (its kind), how nodes depend on each other (edge
//! kinds), the typed ids of nodes, requests and resources, and spans of bytes. A leaf module:
//! it imports nothing from the rest of the crate, so every other module can name these words
//! without reaching into the graph, the executor or the stages.

use std::fmt;

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
    /// Bytes in memory written to a file range.
    Write,
    /// A file's written bytes made durable (`fdatasync`), after a request's writes.
    Sync,
    /// Bytes that landed in host memory checked against their tiles' hashes (stored assets of
    /// an archive, read as they are): reads its destination range after the nodes that wrote it.
    Verify,
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
    pub const ALL: [NodeKind; 11] = [
        NodeKind::Read,
        NodeKind::DecompressCpu,
        NodeKind::Upload,
        NodeKind::DecompressGpu,
        NodeKind::Copy,
        NodeKind::Write,
        NodeKind::Sync,
        NodeKind::Verify,
        NodeKind::Barrier,
        NodeKind::Acquire,
        NodeKind::Release,
    ];
    /// How many kinds there are.
    pub const COUNT: usize = Self::ALL.len();

    /// Whether the executor runs this kind itself (`executor/builtin.rs`): no stage implements it,
    /// and an executor builder refuses a stage for it.
    pub fn is_builtin(self) -> bool {
        matches!(self, NodeKind::Barrier | NodeKind::Acquire | NodeKind::Release)
    }

    /// Whether a cancellation or failure of its request leaves this node alone: a `Release` hands
    /// back what its request holds, so it must run whatever became of the request.
    pub fn survives_tombstones(self) -> bool {
        self == NodeKind::Release
    }

    /// Whether the kind's work may run on the GPU, so that it may stand at either end of a GPU
    /// edge: uploads and GPU decoding always do, a copy when it reads or writes a GPU buffer.
    pub fn may_run_on_gpu(self) -> bool {
        matches!(self, NodeKind::Upload | NodeKind::DecompressGpu | NodeKind::Copy)
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
            NodeKind::Write => "write",
            NodeKind::Sync => "sync",
            NodeKind::Verify => "verify",
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
///
/// A deferred GPU node has two moments: *submitted* (its work is on a GPU queue and will be done
/// when a timeline reaches the value it carries) and *completed* (the timeline got there). A CPU
/// edge releases its successor at the second, a GPU edge at the first: the successor is then
/// submitted too, with its predecessors' values as GPU-side waits, so a chain of GPU nodes
/// never waits for the CPU in between. Compile lists a node's GPU successors before its CPU
/// ones, so each release is one slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    /// The successor may be submitted once the predecessor is; the GPU waits on the
    /// predecessor's timeline value. Only between nodes whose work runs on the GPU.
    Gpu,
    /// The successor runs once the predecessor has completed.
    Cpu,
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

pub(crate) const NO_RESOURCE: ResourceId = ResourceId(u32::MAX);
pub(crate) const NO_SPAN: Span = Span {
    resource: NO_RESOURCE,
    offset: 0,
};

pub(crate) fn span_opt(span: Span) -> Option<Span> {
    (span.resource != NO_RESOURCE).then_some(span)
}
