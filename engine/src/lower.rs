//! Lowering: each request becomes a small DAG of typed stage nodes in a batch's graph.
//!
//! | request shape                 | nodes                                             |
//! |-------------------------------|---------------------------------------------------|
//! | file, uncompressed → host     | `Read` × ⌈len / chunk⌉, straight into the destination |
//! | file, GDeflate → host         | `Read` × chunks into scratch → `DecompressCpu`     |
//! | memory, uncompressed → host   | `Copy`                                            |
//! | memory, GDeflate → host       | `DecompressCpu` from the caller's bytes           |
//!
//! Splitting large reads into chunks lets several workers copy one asset at once and bounds the
//! bytes one node holds. Decoding is one node per request until the codec lands and can split
//! at tile-group boundaries.

use crate::buffer::ReservationOwner;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{EdgeKind, GraphBuilder, NodeId, NodeKind, NodeSpec, RequestId, RequestInfo, Span};
use crate::request::{Compression, Destination, Request, Source};

/// Knobs of lowering.
#[derive(Clone, Copy, Debug)]
pub struct LoweringConfig {
    /// Largest byte count one `Read` node reads; larger reads split.
    pub read_chunk: u64,
}

impl Default for LoweringConfig {
    fn default() -> Self {
        LoweringConfig { read_chunk: 1 << 20 }
    }
}

/// Validates `request` and adds its nodes to `graph`. On error nothing is added except, at
/// worst, a resource no node uses.
pub fn lower(graph: &mut GraphBuilder, config: &LoweringConfig, request: Request) -> Result<RequestId> {
    let index = graph.request_count() as u32;
    lower_inner(graph, config, request).map_err(|err| err.for_request(index))
}

fn lower_inner(graph: &mut GraphBuilder, config: &LoweringConfig, request: Request) -> Result<RequestId> {
    let out_len = request.output_len();
    let src_len = request.source.len();
    if let Compression::GDeflate { uncompressed_len } = request.compression {
        if src_len == 0 || uncompressed_len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "a GDeflate request needs a non-empty stream and a non-zero uncompressed size",
            ));
        }
    }
    match &request.source {
        Source::File { offset, len, .. } if offset.checked_add(*len).is_none() => {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "the file range overflows a 64-bit offset",
            ));
        }
        Source::Memory { bytes, offset, len }
            if offset.checked_add(*len).is_none_or(|end| end > bytes.len() as u64) =>
        {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "the memory range {offset}+{len} runs past the end of the {}-byte source",
                    bytes.len()
                ),
            ));
        }
        _ => {}
    }

    let Destination::Host {
        buffer,
        offset: dst_offset,
    } = &request.destination;
    let dst_end = dst_offset.checked_add(out_len).ok_or_else(|| {
        Error::new(
            ErrorKind::DestinationTooSmall,
            "the destination range overflows a 64-bit offset",
        )
    })?;
    let owner = ReservationOwner {
        batch: graph.id(),
        request: graph.request_count() as u32,
    };
    let reservation = buffer.reserve(owner, *dst_offset..dst_end)?;
    let host = graph.add_host(buffer.raw(), reservation);
    let dst = Span {
        resource: host,
        offset: *dst_offset,
    };

    let id = graph.add_request(RequestInfo {
        name: request.name,
        tag: request.tag,
        priority: request.priority,
        bytes: out_len,
    });
    let node = |kind, src, src_len, dst, len| NodeSpec {
        kind,
        request: id,
        src: Some(src),
        dst: Some(dst),
        len,
        src_len,
    };

    match (request.source, request.compression) {
        (Source::File { file, offset, len }, Compression::None) => {
            let file = graph.add_file(file);
            add_reads(graph, config, id, Span { resource: file, offset }, dst, len);
        }
        (Source::File { file, offset, len }, Compression::GDeflate { uncompressed_len }) => {
            let file = graph.add_file(file);
            let scratch = graph.add_scratch(len)?;
            let staged = Span {
                resource: scratch,
                offset: 0,
            };
            let reads = add_reads(graph, config, id, Span { resource: file, offset }, staged, len);
            let decode = graph.add_node(node(NodeKind::DecompressCpu, staged, len, dst, uncompressed_len));
            for read in reads {
                graph.add_edge(read, decode, EdgeKind::Cpu);
            }
        }
        (Source::Memory { bytes, offset, len }, compression) => {
            let memory = graph.add_memory(bytes);
            let src = Span {
                resource: memory,
                offset,
            };
            match compression {
                Compression::None => graph.add_node(node(NodeKind::Copy, src, len, dst, len)),
                Compression::GDeflate { uncompressed_len } => {
                    graph.add_node(node(NodeKind::DecompressCpu, src, len, dst, uncompressed_len))
                }
            };
        }
    }
    Ok(id)
}

/// `Read` nodes covering `len` bytes from `src` to `dst`, at most `read_chunk` each. A zero-length
/// read is still one node, so a missing file is reported rather than silently "read".
fn add_reads(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    request: RequestId,
    src: Span,
    dst: Span,
    len: u64,
) -> Vec<NodeId> {
    let chunk = config.read_chunk.max(1);
    let mut reads = Vec::with_capacity(len.div_ceil(chunk).max(1) as usize);
    let mut done = 0;
    loop {
        let this = (len - done).min(chunk);
        reads.push(graph.add_node(NodeSpec {
            kind: NodeKind::Read,
            request,
            src: Some(Span {
                offset: src.offset + done,
                ..src
            }),
            dst: Some(Span {
                offset: dst.offset + done,
                ..dst
            }),
            len: this,
            src_len: this,
        }));
        done += this;
        if done >= len {
            return reads;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::HostBuffer;
    use std::sync::Arc;

    fn config() -> LoweringConfig {
        LoweringConfig { read_chunk: 100 }
    }

    #[test]
    fn uncompressed_file_reads_in_chunks_straight_into_the_destination() {
        let dest = HostBuffer::new(250);
        let mut g = GraphBuilder::new();
        lower(&mut g, &config(), Request::file("/a", 10, 250, &dest, 0)).unwrap();
        let g = g.compile().unwrap();
        let nodes: Vec<_> = g.nodes().collect();
        assert_eq!(nodes.len(), 3);
        assert!(nodes.iter().all(|n| n.kind == NodeKind::Read && n.predecessors == 0));
        assert_eq!(nodes.iter().map(|n| n.len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(
            nodes.iter().map(|n| n.src.unwrap().offset).collect::<Vec<_>>(),
            [10, 110, 210]
        );
        assert_eq!(
            nodes.iter().map(|n| n.dst.unwrap().offset).collect::<Vec<_>>(),
            [0, 100, 200]
        );
        assert_eq!(g.edge_count(), 0);
    }

    #[test]
    fn gdeflate_file_reads_then_decodes() {
        let dest = HostBuffer::new(1000);
        let mut g = GraphBuilder::new();
        lower(&mut g, &config(), Request::file("/a", 0, 150, &dest, 0).gdeflate(1000)).unwrap();
        let g = g.compile().unwrap();
        let kinds: Vec<_> = g.nodes().map(|n| n.kind).collect();
        assert_eq!(kinds, [NodeKind::Read, NodeKind::Read, NodeKind::DecompressCpu]);
        assert_eq!(g.node(NodeId(2)).predecessors, 2);
        assert_eq!(g.node(NodeId(2)).len, 1000);
    }

    #[test]
    fn memory_sources_copy_or_decode_without_a_read() {
        let dest = HostBuffer::new(64);
        let bytes: Arc<[u8]> = Arc::from(vec![7u8; 32]);
        let mut g = GraphBuilder::new();
        lower(&mut g, &config(), Request::memory(bytes.clone(), 0, 32, &dest, 0)).unwrap();
        lower(&mut g, &config(), Request::memory(bytes, 0, 16, &dest, 32).gdeflate(32)).unwrap();
        let g = g.compile().unwrap();
        let kinds: Vec<_> = g.nodes().map(|n| n.kind).collect();
        assert_eq!(kinds, [NodeKind::Copy, NodeKind::DecompressCpu]);
    }

    #[test]
    fn one_path_is_one_file_resource() {
        let dest = HostBuffer::new(20);
        let mut g = GraphBuilder::new();
        lower(&mut g, &config(), Request::file("/a", 0, 10, &dest, 0)).unwrap();
        lower(&mut g, &config(), Request::file("/a", 10, 10, &dest, 10)).unwrap();
        let g = g.compile().unwrap();
        let srcs: Vec<_> = g.nodes().map(|n| n.src.unwrap().resource).collect();
        assert_eq!(srcs[0], srcs[1]);
    }

    #[test]
    fn validation_errors_name_the_request() {
        let dest = HostBuffer::new(10);
        let mut g = GraphBuilder::new();
        lower(&mut g, &config(), Request::file("/a", 0, 5, &dest, 0)).unwrap();
        let too_small = lower(&mut g, &config(), Request::file("/a", 0, 11, &dest, 0)).unwrap_err();
        assert_eq!(too_small.kind(), ErrorKind::DestinationTooSmall);
        assert_eq!(too_small.request(), Some(1));
        let overlap = lower(&mut g, &config(), Request::file("/b", 0, 2, &dest, 4)).unwrap_err();
        assert_eq!(overlap.kind(), ErrorKind::OverlappingDestinations);
        let empty = lower(&mut g, &config(), Request::file("/a", 0, 0, &dest, 8).gdeflate(0)).unwrap_err();
        assert_eq!(empty.kind(), ErrorKind::InvalidRequest);
        let past = lower(
            &mut g,
            &config(),
            Request::memory(Arc::from(vec![0u8; 4]), 2, 3, &dest, 6),
        )
        .unwrap_err();
        assert_eq!(past.kind(), ErrorKind::InvalidRequest);
        // The refused requests left nothing behind: the batch still compiles with one request.
        assert_eq!(g.compile().unwrap().requests().len(), 1);
    }

    #[test]
    fn zero_length_reads_are_one_node() {
        let dest = HostBuffer::new(0);
        let mut g = GraphBuilder::new();
        lower(&mut g, &config(), Request::file("/empty", 0, 0, &dest, 0)).unwrap();
        assert_eq!(g.compile().unwrap().node_count(), 1);
    }
}
