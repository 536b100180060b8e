//! Request shapes lower to the graphs the architecture names, with the right pending counts.

use dsr::engine::{EdgeKind, NodeKind, ResourceKind};
use dsr::{BatchBuilder, HostBuffer, LoweringConfig, Request};
use std::sync::Arc;

fn builder(chunk: u64) -> BatchBuilder {
    BatchBuilder::new(LoweringConfig {
        read_chunk: chunk,
        ..dsr::LoweringConfig::default()
    })
}

#[test]
fn uncompressed_file_reads_land_in_the_destination_in_chunks() {
    let dest = HostBuffer::new(10 << 20);
    let mut batch = builder(1 << 20);
    batch
        .push(Request::file("/assets/a", 4096, (3 << 20) + 1, &dest, 0))
        .unwrap();
    let compiled = batch.compile().unwrap();
    let graph = compiled.graph();
    assert_eq!(graph.node_count(), 4);
    assert_eq!(graph.edge_count(), 0);
    for node in graph.nodes() {
        assert_eq!(node.kind, NodeKind::Read);
        assert_eq!(node.state.pending(), 0);
        assert_eq!(
            graph.resource_kind(node.dst.unwrap().resource),
            Some(ResourceKind::Host)
        );
    }
    assert_eq!(graph.nodes().map(|n| n.len).sum::<u64>(), (3 << 20) + 1);
    assert_eq!(graph.roots().len(), 4);
}

#[test]
fn gdeflate_file_reads_into_staging_then_decodes_into_the_destination() {
    let dest = HostBuffer::new(1 << 20);
    let mut batch = builder(64 << 10);
    batch
        .push(Request::file("/assets/c", 0, 200 << 10, &dest, 0).gdeflate(1 << 20))
        .unwrap();
    let compiled = batch.compile().unwrap();
    let graph = compiled.graph();
    let kinds: Vec<_> = graph.nodes().map(|n| n.kind).collect();
    use NodeKind::{Acquire, Barrier, DecompressCpu, Read, Release};
    assert_eq!(
        kinds,
        [
            Acquire,
            Read,
            Read,
            Read,
            Read,
            DecompressCpu,
            DecompressCpu,
            Barrier,
            Release
        ]
    );
    let barrier = graph.nodes().find(|n| n.kind == Barrier).unwrap();
    assert_eq!(barrier.state.pending(), 4, "the barrier waits for every read");
    let decodes: Vec<_> = graph.nodes().filter(|n| n.kind == DecompressCpu).collect();
    for (g, decode) in decodes.iter().enumerate() {
        assert_eq!(decode.state.pending(), 1, "each group waits for the barrier only");
        assert_eq!(decode.tile, 8 * g as u32);
        assert_eq!(decode.len, 512 << 10);
        assert_eq!(decode.dst.unwrap().offset, g as u64 * (512 << 10));
        assert_eq!(
            graph.resource_kind(decode.src.unwrap().resource),
            Some(ResourceKind::Scratch)
        );
        assert_eq!(
            graph.resource_kind(decode.dst.unwrap().resource),
            Some(ResourceKind::Host)
        );
    }
    assert!(graph.edges().all(|(_, _, kind)| kind == EdgeKind::Cpu));
    // acquire → reads, reads → barrier → decodes, decodes → release.
    assert_eq!(graph.edge_count(), 4 + 4 + 2 + 2);
}

#[test]
fn memory_sources_need_no_read() {
    let dest = HostBuffer::new(100);
    let bytes: Arc<[u8]> = Arc::from(vec![1u8; 50]);
    let mut batch = builder(1 << 20);
    batch.push(Request::memory(bytes.clone(), 10, 40, &dest, 0)).unwrap();
    batch
        .push(Request::memory(bytes, 0, 20, &dest, 40).gdeflate(60))
        .unwrap();
    let compiled = batch.compile().unwrap();
    let kinds: Vec<_> = compiled.graph().nodes().map(|n| n.kind).collect();
    assert_eq!(kinds, [NodeKind::Copy, NodeKind::DecompressCpu]);
}

#[test]
fn pending_counts_match_in_degrees_across_requests() {
    let dest = HostBuffer::new(1 << 20);
    let mut batch = builder(100);
    batch
        .push(Request::file("/x", 0, 250, &dest, 0).gdeflate(1000))
        .unwrap();
    batch.push(Request::file("/y", 0, 50, &dest, 1000)).unwrap();
    let compiled = batch.compile().unwrap();
    let graph = compiled.graph();
    let mut in_degree = vec![0u32; graph.node_count()];
    for (_, to, _) in graph.edges() {
        in_degree[to.index()] += 1;
    }
    for node in graph.nodes() {
        assert_eq!(node.state.pending(), in_degree[node.id.index()]);
        assert_eq!(node.predecessors, in_degree[node.id.index()]);
    }
    // acquire, three reads, a decode, release.
    assert_eq!(graph.request_nodes(dsr::RequestId::from_index(0)).len(), 6);
    assert_eq!(graph.request_nodes(dsr::RequestId::from_index(1)).len(), 1);
}

#[test]
fn refused_requests_leave_the_batch_usable() {
    let dest = HostBuffer::new(100);
    let mut batch = builder(1 << 20);
    batch.push(Request::file("/a", 0, 60, &dest, 0)).unwrap();
    let overlap = batch.push(Request::file("/b", 0, 60, &dest, 40)).unwrap_err();
    assert_eq!(overlap.kind(), dsr::ErrorKind::OverlappingDestinations);
    let too_small = batch.push(Request::file("/b", 0, 60, &dest, 60)).unwrap_err();
    assert_eq!(too_small.kind(), dsr::ErrorKind::DestinationTooSmall);
    assert!(too_small.to_string().contains("request 1"), "{too_small}");
    batch.push(Request::file("/b", 0, 40, &dest, 60)).unwrap();
    assert_eq!(batch.compile().unwrap().graph().requests().len(), 2);
}

#[test]
fn destinations_stay_reserved_across_batches_until_they_retire() {
    let dest = HostBuffer::new(100);
    let mut first = builder(1 << 20);
    first.push(Request::file("/a", 0, 100, &dest, 0)).unwrap();
    let mut second = builder(1 << 20);
    let err = second.push(Request::file("/a", 0, 10, &dest, 50)).unwrap_err();
    assert_eq!(err.kind(), dsr::ErrorKind::OverlappingDestinations);
    drop(first);
    second.push(Request::file("/a", 0, 10, &dest, 50)).unwrap();
}

#[test]
fn one_path_or_one_open_file_is_one_resource_per_batch() {
    let dest = HostBuffer::new(1 << 20);
    let file = Arc::new(tempfile::tempfile().unwrap());
    let other = Arc::new(tempfile::tempfile().unwrap());
    let mut batch = builder(1 << 20);
    for i in 0..4 {
        batch
            .push(Request::open_file(file.clone(), 0, 10, &dest, i * 10))
            .unwrap();
        batch
            .push(Request::file("/assets/a", 0, 10, &dest, 100 + i * 10))
            .unwrap();
    }
    batch.push(Request::open_file(other, 0, 10, &dest, 200)).unwrap();
    let compiled = batch.compile().unwrap();
    let graph = compiled.graph();
    let mut files: Vec<_> = graph.nodes().map(|n| n.src.unwrap().resource).collect();
    files.sort_unstable_by_key(|r| r.index());
    files.dedup();
    // One per open file, one for the path: a direct-I/O reopen and a ring registration each,
    // not one per request.
    assert_eq!(files.len(), 3);
}

#[test]
fn hand_built_nodes_cannot_touch_or_hold_a_requests_scratch() {
    use dsr::engine::{NodeSpec, ResourceId, Span};
    let dest = HostBuffer::new(1 << 20);
    // Resources of a GDeflate file request, in lowering's order: destination, file, scratch.
    let scratch = Span {
        resource: ResourceId::from_index(2),
        offset: 0,
    };
    let hand_built = [
        // Would hand the block back while the reads still write it.
        NodeSpec {
            src: Some(scratch),
            src_len: 100,
            ..NodeSpec::bare(NodeKind::Release, dsr::RequestId::from_index(0))
        },
        // Would install a second block over the first.
        NodeSpec::bare(NodeKind::Acquire, dsr::RequestId::from_index(0)),
        // Would read scratch outside the acquire/release pair.
        NodeSpec {
            src: Some(scratch),
            src_len: 10,
            dst: Some(Span {
                resource: ResourceId::from_index(0),
                offset: 500_000,
            }),
            len: 10,
            ..NodeSpec::bare(NodeKind::Copy, dsr::RequestId::from_index(0))
        },
    ];
    for spec in hand_built {
        let mut batch = builder(1 << 20);
        batch
            .push(Request::file("/assets/c", 0, 100, &dest, 0).gdeflate(1000))
            .unwrap();
        assert_eq!(
            batch.graph_mut().resource_kind(ResourceId::from_index(2)),
            Some(ResourceKind::Scratch)
        );
        batch.graph_mut().add_node(spec);
        let err = batch.compile().unwrap_err();
        assert_eq!(err.kind(), dsr::ErrorKind::InvalidRequest);
        assert!(err.message().contains("only lowering"), "{err}");
    }
}

/// A GPU buffer as the engine sees it: a length and an opaque handle.
fn device(len: u64) -> dsr::engine::DeviceBuffer {
    dsr::engine::DeviceBuffer::new(len, ())
}

#[test]
fn file_to_gpu_reads_into_scratch_and_uploads_each_piece_as_it_lands() {
    let gpu = device(4 << 20);
    let mut batch = builder(1 << 20);
    batch
        .push(Request::file_to_device("/assets/t", 0, (2 << 20) + 5, &gpu, 4096))
        .unwrap();
    let compiled = batch.compile().unwrap();
    let graph = compiled.graph();
    use NodeKind::{Acquire, Read, Release, Upload};
    let kinds: Vec<_> = graph.nodes().map(|n| n.kind).collect();
    assert_eq!(kinds, [Acquire, Read, Read, Read, Upload, Upload, Upload, Release]);
    let reads: Vec<_> = graph.nodes().filter(|n| n.kind == Read).collect();
    let uploads: Vec<_> = graph.nodes().filter(|n| n.kind == Upload).collect();
    for (read, upload) in reads.iter().zip(&uploads) {
        assert_eq!(
            graph.resource_kind(read.dst.unwrap().resource),
            Some(ResourceKind::Scratch)
        );
        assert_eq!(
            upload.src.unwrap(),
            read.dst.unwrap(),
            "each upload copies what its read wrote"
        );
        assert_eq!(upload.len, read.len);
        assert_eq!(
            graph.resource_kind(upload.dst.unwrap().resource),
            Some(ResourceKind::Device)
        );
        assert_eq!(upload.dst.unwrap().offset, 4096 + read.src.unwrap().offset);
        assert!(graph.edges().any(|(from, to, _)| from == read.id && to == upload.id));
        assert_eq!(upload.state.pending(), 1, "an upload waits for its own read only");
    }
    let release = graph.nodes().last().unwrap();
    assert_eq!(release.state.pending(), 3, "the scratch goes back after every upload");
}

#[test]
fn memory_and_compressed_sources_reach_the_gpu_through_uploads() {
    let gpu = device(1 << 20);
    let bytes: Arc<[u8]> = Arc::from(vec![7u8; 3000]);
    let mut batch = builder(1 << 20);
    batch
        .push(Request::memory_to_device(bytes.clone(), 0, 3000, &gpu, 0))
        .unwrap();
    batch
        .push(
            Request::memory(bytes, 0, 100, &HostBuffer::new(0), 0)
                .gdeflate(70_000)
                .on_device(&gpu, 8192),
        )
        .unwrap();
    batch
        .push(Request::file_to_device("/assets/c", 0, 500, &gpu, 200_000).gdeflate(100))
        .unwrap();
    let compiled = batch.compile().unwrap();
    let graph = compiled.graph();
    let by_request = |r: usize| -> Vec<NodeKind> {
        graph
            .request_nodes(dsr::RequestId::from_index(r))
            .iter()
            .map(|&n| graph.node(n).kind)
            .collect()
    };
    use NodeKind::{Acquire, DecompressCpu, Read, Release, Upload};
    assert_eq!(by_request(0), [Upload], "memory needs no scratch");
    assert_eq!(by_request(1), [Acquire, DecompressCpu, Upload, Release]);
    assert_eq!(by_request(2), [Acquire, Read, DecompressCpu, Upload, Release]);
    let decode = graph
        .nodes()
        .find(|n| n.kind == DecompressCpu && n.request.index() == 2)
        .unwrap();
    assert_eq!(
        graph.resource_kind(decode.dst.unwrap().resource),
        Some(ResourceKind::Scratch)
    );
    assert_eq!(
        decode.dst.unwrap().offset,
        500,
        "decoded bytes sit after the compressed ones"
    );
}

#[test]
fn gpu_destinations_are_reserved_and_only_gpu_stages_write_them() {
    let gpu = device(1000);
    let mut batch = builder(1 << 20);
    let err = batch
        .push(Request::file_to_device("/assets/t", 0, 600, &gpu, 500))
        .unwrap_err();
    assert_eq!(err.kind(), dsr::ErrorKind::DestinationTooSmall);
    batch
        .push(Request::file_to_device("/assets/t", 0, 600, &gpu, 0))
        .unwrap();
    let err = batch
        .push(Request::file_to_device("/assets/u", 0, 10, &gpu, 599))
        .unwrap_err();
    assert_eq!(err.kind(), dsr::ErrorKind::OverlappingDestinations);

    // A hand-built node of a CPU kind cannot write the GPU buffer, nor read it.
    use dsr::engine::{NodeSpec, ResourceId, Span};
    for (src, dst, kind) in [(false, true, NodeKind::DecompressCpu), (true, false, NodeKind::Read)] {
        let mut batch = builder(1 << 20);
        let r = batch.graph_mut().add_request(dsr::engine::RequestInfo::default());
        batch
            .push(Request::memory_to_device(Arc::from(vec![1u8; 8]), 0, 8, &device(8), 0))
            .unwrap();
        let gpu_span = Span {
            resource: ResourceId::from_index(0),
            offset: 0,
        };
        batch.graph_mut().add_node(NodeSpec {
            src: src.then_some(gpu_span),
            dst: dst.then_some(gpu_span),
            len: 4,
            src_len: 4,
            ..NodeSpec::bare(kind, r)
        });
        let err = batch.compile().unwrap_err();
        assert_eq!(err.kind(), dsr::ErrorKind::InvalidRequest);
        assert!(err.message().contains("GPU buffer"), "{err}");
    }
}

#[test]
fn writes_lower_to_write_pieces_and_gpu_writes_stage_through_scratch() {
    let bytes: Arc<[u8]> = Arc::from(vec![3u8; 3 << 20]);
    let gpu = device(4 << 20);
    let mut batch = builder(1 << 20);
    batch
        .push(Request::write(bytes.clone(), 5, (2 << 20) + 1, "/out/a", 100).sync())
        .unwrap();
    batch
        .push(Request::device_to_file(&gpu, 0, (1 << 20) + 1, "/out/b", 0))
        .unwrap();
    // A compressed write decodes on the way, through scratch; a GPU buffer's stream cannot.
    batch
        .push(Request::write(bytes.clone(), 0, 10, "/out/c", 0).gdeflate(100))
        .unwrap();
    let err = batch
        .push(Request::device_to_file(&gpu, 0, 10, "/out/a", 0).gdeflate(100))
        .unwrap_err();
    assert_eq!(err.kind(), dsr::ErrorKind::Unsupported, "{err}");
    let compiled = batch.compile().unwrap();
    let graph = compiled.graph();
    use NodeKind::{Acquire, Copy, DecompressCpu, Release, Sync, Write};
    let kinds = |r: usize| -> Vec<NodeKind> {
        graph
            .request_nodes(dsr::RequestId::from_index(r))
            .iter()
            .map(|&n| graph.node(n).kind)
            .collect()
    };
    assert_eq!(kinds(0), [Write, Write, Write, Sync]);
    assert_eq!(kinds(1), [Acquire, Copy, Copy, Write, Write, Release]);
    assert_eq!(kinds(2), [Acquire, DecompressCpu, Write, Release]);
    let writes: Vec<_> = graph.nodes().filter(|n| n.kind == Write).collect();
    assert_eq!(
        graph.resource_kind(writes[0].dst.unwrap().resource),
        Some(ResourceKind::File)
    );
    assert_eq!((writes[0].src.unwrap().offset, writes[0].dst.unwrap().offset), (5, 100));
    assert_eq!(writes[2].len, 1, "the last piece is what is left");
    let sync = graph.nodes().find(|n| n.kind == Sync).unwrap();
    assert_eq!(sync.state.pending(), 3, "the sync waits for every write");
    // The GPU write: each write follows the copy that filled its piece of scratch.
    let copies: Vec<_> = graph.nodes().filter(|n| n.kind == Copy).collect();
    for (copy, write) in copies.iter().zip(&writes[3..5]) {
        assert_eq!(
            graph.resource_kind(copy.dst.unwrap().resource),
            Some(ResourceKind::Scratch)
        );
        assert_eq!(write.src.unwrap(), copy.dst.unwrap());
        assert!(graph
            .edges()
            .any(|(from, to, kind)| from == copy.id && to == write.id && kind == EdgeKind::Cpu));
    }
}
