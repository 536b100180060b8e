//! Compiling a graph: validation (ids, acyclicity, predecessor counts, spans inside their
//! resources, what each node may read and write, disjoint destinations), pending counts,
//! successor lists, per-request sinks, and the freeze into arena columns.

use super::builder::GraphBuilder;
use super::compiled::{Columns, CompiledGraph};
use super::resource::{Resource, ResourceKind};
use crate::arena::Arena;
use crate::error::{Error, ErrorKind, Result};
use crate::state::{StateWord, MAX_PREDECESSORS};
use crate::sync::AtomicU64;
use crate::vocabulary::{span_opt, EdgeKind, NodeId, NodeKind, ResourceId, Span};

impl GraphBuilder {
    /// Validates the graph and freezes it for execution. Refuses dangling ids, cycles, nodes
    /// with too many predecessors, spans outside their resource, sources a node kind cannot read
    /// from, and two nodes writing the same bytes.
    pub fn compile(self) -> Result<CompiledGraph> {
        let n = self.kind.len();
        if n >= u32::MAX as usize {
            return Err(invalid("a batch graph holds at most 2^32 - 1 nodes"));
        }
        self.check_nodes()?;

        // In-degrees, and successors as compressed sparse rows, each node's GPU successors first.
        // Graphs without GPU edges (all of the CPU's) pay for none of the GPU bookkeeping.
        let has_gpu_edges = self.edges.iter().any(|e| e.2 == EdgeKind::Gpu);
        let gpu_len = if has_gpu_edges { n } else { 0 };
        let mut preds = vec![0u32; n];
        let mut succ_offsets = vec![0u32; n + 1];
        let mut gpu_succ = vec![0u32; gpu_len];
        let mut gpu_preds = vec![0u32; gpu_len];
        for &(from, to, kind) in &self.edges {
            if from.index() >= n || to.index() >= n {
                return Err(invalid(format!(
                    "edge {from:?} -> {to:?} names a node that does not exist"
                )));
            }
            if from == to {
                return Err(invalid(format!("node {} depends on itself", from.0)));
            }
            if kind == EdgeKind::Gpu {
                for end in [from, to] {
                    if !self.runs_on_gpu(end.index()) {
                        return Err(invalid(format!(
                            "a GPU edge {} -> {} ends at node {}, a {} whose work does not run on the GPU",
                            from.0,
                            to.0,
                            end.0,
                            self.kind[end.index()]
                        )));
                    }
                }
                gpu_succ[from.index()] += 1;
                gpu_preds[to.index()] += 1;
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
        // GPU edges first, then CPU edges (one pass when there are no GPU edges); within a
        // kind, successors keep the order they were added in.
        let mut fill = succ_offsets.clone();
        let mut succ = vec![NodeId(0); self.edges.len()];
        let mut succ_kind = vec![EdgeKind::Cpu; self.edges.len()];
        let passes: &[EdgeKind] = if has_gpu_edges {
            &[EdgeKind::Gpu, EdgeKind::Cpu]
        } else {
            &[EdgeKind::Cpu]
        };
        for &pass in passes {
            for &(from, to, kind) in self.edges.iter().filter(|e| e.2 == pass) {
                let at = &mut fill[from.index()];
                succ[*at as usize] = to;
                succ_kind[*at as usize] = kind;
                *at += 1;
            }
        }
        check_acyclic(&preds, &succ_offsets, &succ)?;

        // GPU predecessors (compressed sparse rows), whose timeline values a node waits on; and
        // a slot per node for the value it is submitted with. Both empty without GPU edges.
        let (gpu_pred_offsets, gpu_pred) = if has_gpu_edges {
            let mut offsets = vec![0u32; n + 1];
            for i in 0..n {
                offsets[i + 1] = offsets[i] + gpu_preds[i];
            }
            let mut fill = offsets.clone();
            let mut list = vec![NodeId(0); offsets[n] as usize];
            for &(from, to, _) in self.edges.iter().filter(|e| e.2 == EdgeKind::Gpu) {
                list[fill[to.index()] as usize] = from;
                fill[to.index()] += 1;
            }
            (offsets, list)
        } else {
            (Vec::new(), Vec::new())
        };

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
        // A request sink has no successor in its own request behind a CPU edge. A node finishes
        // only after its CPU predecessors have (a GPU edge releases its successor earlier, at
        // the predecessor's submission, so a successor may finish first), and every node of a
        // request reaches one of its sinks through the request's own CPU edges; so the request
        // has finished (no node of it will touch its destination again) exactly when all its
        // sinks have.
        let mut req_fill = req_offsets.clone();
        let mut req_nodes = vec![NodeId(0); n];
        let mut req_sinks = vec![0u32; r];
        let mut is_sink = vec![false; n];
        for (i, &req) in self.request.iter().enumerate() {
            let at = &mut req_fill[req.index()];
            req_nodes[*at as usize] = NodeId(i as u32);
            *at += 1;
            let range = succ_offsets[i] as usize..succ_offsets[i + 1] as usize;
            let own_cpu = succ[range.clone()]
                .iter()
                .zip(&succ_kind[range])
                .any(|(s, &kind)| kind == EdgeKind::Cpu && self.request[s.index()] == req);
            if !own_cpu {
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
            from: arena.copy_slice(&self.from),
            preds: arena.copy_slice(&preds),
            state: arena.fill_with(n, |i| StateWord::new(preds[i])),
            succ_offsets: arena.copy_slice(&succ_offsets),
            succ: arena.copy_slice(&succ),
            succ_kind: arena.copy_slice(&succ_kind),
            gpu_succ: arena.copy_slice(&gpu_succ),
            gpu_pred_offsets: arena.copy_slice(&gpu_pred_offsets),
            gpu_pred: arena.copy_slice(&gpu_pred),
            submitted: arena.fill_with(if has_gpu_edges { n } else { 0 }, |_| AtomicU64::new(0)),
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

    /// Whether node `i`'s work runs on the GPU: an upload or a GPU decode, or a copy that reads
    /// or writes a GPU buffer.
    fn runs_on_gpu(&self, i: usize) -> bool {
        let kind = self.kind[i];
        if kind != NodeKind::Copy {
            return kind.may_run_on_gpu();
        }
        [self.src[i], self.dst[i]].into_iter().filter_map(span_opt).any(|span| {
            self.resources
                .get(span.resource.index())
                .is_some_and(|r| r.kind() == ResourceKind::Device)
        })
    }

    fn check_nodes(&self) -> Result<()> {
        let mut writes: Vec<(ResourceId, u64, u64, usize)> = Vec::new();
        // File ranges read and written, by file identity, to refuse a read and a write of the
        // same bytes in one batch (they would race).
        let mut file_ranges = Vec::new();
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
                match resource.kind() {
                    ResourceKind::Host => {
                        return Err(invalid(format!("{kind} node {i} reads from a host destination")));
                    }
                    // Only a GPU copy can read GPU memory.
                    ResourceKind::Device if kind != NodeKind::Copy => {
                        return Err(invalid(format!("{kind} node {i} reads from a GPU buffer")));
                    }
                    ResourceKind::File if kind != NodeKind::Read => {
                        return Err(invalid(format!("a {kind} node (node {i}) cannot read a file")));
                    }
                    ResourceKind::Memory | ResourceKind::Scratch | ResourceKind::Device
                        if matches!(kind, NodeKind::Read | NodeKind::Sync) =>
                    {
                        return Err(invalid(format!("a {kind} node (node {i}) reads a file, not memory")));
                    }
                    _ => {}
                }
                if let Resource::File(slot) = resource {
                    if slot.is_writable() {
                        return Err(invalid(format!("{kind} node {i} reads a file opened for writing")));
                    }
                    let end = src.offset.saturating_add(self.src_len[i]);
                    file_ranges.push((slot.identity(), src.offset, end, false, i));
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
                let file_writer = matches!(kind, NodeKind::Write | NodeKind::Sync);
                match resource {
                    Resource::File(slot) if file_writer && slot.is_writable() => {
                        let end = dst
                            .offset
                            .checked_add(len)
                            .ok_or_else(|| invalid(format!("{kind} node {i} writes past the largest file offset")))?;
                        if len > 0 {
                            writes.push((dst.resource, dst.offset, end, i));
                            file_ranges.push((slot.identity(), dst.offset, end, true, i));
                        }
                        continue;
                    }
                    Resource::File(_) | Resource::Memory(_) => {
                        return Err(invalid(format!("{kind} node {i} writes into a source")));
                    }
                    _ if file_writer => {
                        return Err(invalid(format!("a {kind} node (node {i}) writes a file, not memory")));
                    }
                    _ => {}
                }
                // GPU memory is written by the GPU stages alone, and they write nothing else.
                let gpu_writer = matches!(kind, NodeKind::Upload | NodeKind::DecompressGpu | NodeKind::Copy);
                if resource.kind() == ResourceKind::Device && !gpu_writer {
                    return Err(invalid(format!("a {kind} node (node {i}) cannot write a GPU buffer")));
                }
                if resource.kind() != ResourceKind::Device && matches!(kind, NodeKind::Upload | NodeKind::DecompressGpu)
                {
                    return Err(invalid(format!(
                        "a {kind} node (node {i}) writes a GPU buffer, not host memory"
                    )));
                }
                let end = dst.offset.checked_add(len);
                let limit = resource.len().unwrap_or(0);
                if end.is_none_or(|end| end > limit) {
                    return Err(Error::new(
                        ErrorKind::DestinationTooSmall,
                        format!("{kind} node {i} writes past the end of its destination"),
                    ));
                }
                // A `Verify` node reads its destination range after the nodes that wrote it
                // (edges order them) and writes nothing: it takes no part in the overlap check.
                // Neither do the later pieces of a stream decoded on the GPU piece by piece: each
                // names the request's whole output and writes the tiles of its part, and the first
                // piece stands for them all.
                let later_piece = kind == NodeKind::DecompressGpu && self.from[i] > 0 && self.lowered[i];
                if len > 0 && kind != NodeKind::Verify && !later_piece {
                    writes.push((dst.resource, dst.offset, dst.offset + len, i));
                }
            }
        }
        file_ranges.sort_unstable();
        for (at, &(file, start, end, write, a)) in file_ranges.iter().enumerate() {
            let overlapping = file_ranges[at + 1..]
                .iter()
                .take_while(|other| other.0 == file && other.1 < end)
                .find(|other| other.3 != write);
            if let Some(&(_, _, _, _, b)) = overlapping {
                return Err(invalid(format!(
                    "nodes {a} and {b} read and write overlapping bytes of one file ({}+{}) in one batch; \
                     put the write and the read in batches one after the other",
                    start,
                    end - start
                )));
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

#[cfg(test)]
mod tests {

    use super::*;
    use crate::graph::{NodeSpec, RequestInfo};
    use crate::vocabulary::RequestId;

    fn spec(request: RequestId) -> NodeSpec {
        NodeSpec::bare(NodeKind::Copy, request)
    }

    #[test]
    fn pending_counts_are_in_degrees() {
        let mut g = GraphBuilder::new();
        let r = g.add_request(RequestInfo::default());
        let [a, b] = [0; 2].map(|_| g.add_node(spec(r)));
        let [c, d] = [0; 2].map(|_| g.add_node(NodeSpec::bare(NodeKind::Upload, r)));
        g.add_edge(a, b, EdgeKind::Cpu);
        g.add_edge(a, c, EdgeKind::Cpu);
        g.add_edge(b, d, EdgeKind::Cpu);
        g.add_edge(c, d, EdgeKind::Gpu);
        let g = g.compile().unwrap();
        let pending: Vec<u32> = g.nodes().map(|n| n.state.pending()).collect();
        assert_eq!(pending, [0, 1, 1, 2]);
        assert_eq!(g.roots(), &[a]);
        assert_eq!(g.sinks(r), 2);
        assert_eq!(g.edges().count(), 4);
        assert_eq!(g.successors(a), &[b, c]);
        assert_eq!(g.split_successors(c), (&[d][..], &[][..]));
        // `c` reaches `d` only through a GPU edge, so it is a sink of its own: the request ends
        // when both have.
        assert!(g.is_request_sink(c) && g.is_request_sink(d));
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
        let memory = g.add_memory(vec![0u8; 4].into());
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
