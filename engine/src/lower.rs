//! Lowering: each request becomes a small DAG of typed stage nodes in a batch's graph.
//!
//! | request shape                 | nodes                                             |
//! |-------------------------------|---------------------------------------------------|
//! | file, uncompressed → host     | `Read` × ⌈len / chunk⌉, straight into the destination |
//! | file, GDeflate → host         | `Acquire` → `Read` × chunks into scratch → `Barrier` → `DecompressCpu` × groups → `Release` |
//! | memory, uncompressed → host   | `Copy`                                            |
//! | memory, GDeflate → host       | `DecompressCpu` × groups, from the caller's bytes |
//! | file, uncompressed → GPU      | `Acquire` → `Read` × chunks into scratch, each → its `Upload` → `Release` |
//! | file, GDeflate → GPU          | `Acquire` → `Read` × chunks → `Barrier` → `DecompressCpu` × groups into scratch, each → its `Upload` → `Release` |
//! | memory, uncompressed → GPU    | `Upload` × chunks, from the caller's bytes        |
//! | memory, GDeflate → GPU        | `Acquire` → `DecompressCpu` × groups into scratch, each → its `Upload` → `Release` |
//! | file, GDeflate → GPU, decoded there | `Acquire` → `Read` × chunks into scratch, each → a `DecompressGpu` piece (after the reads before it) → `Release` |
//! | memory, GDeflate → GPU, decoded there | `DecompressGpu`, from the caller's bytes |
//! | GPU buffer → GPU or host      | `Copy` × chunks, on the GPU (a read-back lands through staging) |
//! | memory → file (a write)       | `Write` × chunks [→ `Sync`]                        |
//! | file → file (a copy)          | `Acquire` → `Read` × chunks into scratch [→ `Verify`], each → its `Write` [→ `Sync`] → `Release` |
//! | file, GDeflate → file         | `Acquire` → `Read` × chunks into scratch → `Barrier` → `DecompressCpu` × groups into scratch, each → its `Write` [→ `Sync`] → `Release` |
//! | memory, GDeflate → file       | `Acquire` → `DecompressCpu` × groups into scratch, each → its `Write` [→ `Sync`] → `Release` |
//! | GPU buffer → file             | `Acquire` → `Copy` × chunks into scratch, each → its `Write` [→ `Sync`] → `Release` |
//!
//! Splitting large reads into chunks lets several workers copy one asset at once and bounds the
//! bytes one node holds. Decoding splits at tile-group boundaries (every tile but the last is
//! 64 KiB of output, so the groups are known from the uncompressed size alone), each group
//! writing straight into its slice of the destination. A barrier joins the reads to the groups
//! so the graph has R + G edges rather than R × G. The scratch between reads and decodes is
//! sized here but held only from `Acquire` to `Release`, within the executor's scratch budget
//! (`crate::scratch`). A GPU destination is reached through `Upload` nodes from host memory
//! (scratch, or the caller's bytes), each following the node that filled its piece, so pieces
//! go to the GPU while later ones are still being read or decoded. A GDeflate stream may instead
//! decode on the GPU (`DecodeRoute`): one `DecompressGpu` node takes the whole compressed stream
//! and writes every tile into the destination. A GDeflate source may also be bare tiles with
//! their table given apart (`Request::gdeflate_tiles`: a window of a large stream whose table
//! was read once), decoded on the CPU.

use crate::balance::{DecodeSite, Routing};
use crate::buffer::ReservationOwner;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{EdgeKind, GraphBuilder, NodeId, NodeKind, NodeSpec, RequestId, RequestInfo, ResourceKind, Span};
use crate::request::{Compression, DecodeRoute, Destination, Request, Source};

/// Knobs of lowering.
#[derive(Clone, Copy, Debug)]
pub struct LoweringConfig {
    /// Largest byte count one `Read` node reads; larger reads split.
    pub read_chunk: u64,
    /// 64 KiB tiles one `DecompressCpu` node decodes; larger streams split into groups.
    pub decode_group_tiles: u32,
    /// Whether the executor runs `DecompressGpu` nodes (the GPU decoder is installed): GDeflate
    /// requests into GPU buffers may then decode there.
    pub gpu_decode: bool,
    /// `DecodeRoute::Auto` sends a request to the GPU only from this many bytes of output.
    /// `dsr_gpu::install_gpu` sets it for its device: 0 on a GPU (its decoder batches small
    /// assets with others), never on a device that is the CPU itself (lavapipe).
    pub gpu_decode_min_bytes: u64,
}

impl Default for LoweringConfig {
    fn default() -> Self {
        LoweringConfig {
            read_chunk: 1 << 20,
            decode_group_tiles: 8,
            gpu_decode: false,
            gpu_decode_min_bytes: 16 << 20,
        }
    }
}

/// Bytes of output per compressed tile (GDeflate's tile size).
pub const TILE_BYTES: u64 = 65536;

/// Validates `request` and adds its nodes to `graph`. On error nothing is added except, at
/// worst, a resource no node uses.
pub fn lower(graph: &mut GraphBuilder, config: &LoweringConfig, request: Request) -> Result<RequestId> {
    lower_routed(graph, config, None, request)
}

/// [`lower`], `DecodeRoute::Auto` choosing between the CPU and the GPU by `routing`'s balance
/// (see [`crate::balance`]) where the GPU could take the request; the decode work it plans is
/// counted in `routing`.
pub(crate) fn lower_routed(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    mut routing: Option<&mut Routing>,
    request: Request,
) -> Result<RequestId> {
    let index = graph.request_count() as u32;
    let mut planned = None;
    let id =
        lower_inner(graph, config, routing.as_deref(), &mut planned, request).map_err(|err| err.for_request(index))?;
    if let (Some(routing), Some((site, bytes))) = (routing.as_mut(), planned) {
        routing.plan(site, bytes);
    }
    Ok(id)
}

fn lower_inner(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    routing: Option<&Routing>,
    planned: &mut Option<(DecodeSite, u64)>,
    request: Request,
) -> Result<RequestId> {
    let out_len = request.output_len();
    let src_len = request.source.len();
    if let Compression::GDeflate { uncompressed_len } = request.compression {
        if src_len == 0 || uncompressed_len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "a GDeflate request needs a non-empty stream and a non-zero uncompressed size",
            ));
        }
        if uncompressed_len.div_ceil(TILE_BYTES) > 65535 {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "a GDeflate stream holds at most 65535 tiles (4 GiB); split the asset",
            ));
        }
    }
    if let Some(ends) = &request.tile_ends {
        let Compression::GDeflate { uncompressed_len } = request.compression else {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "a tile table goes with GDeflate tiles (Request::gdeflate_tiles)",
            ));
        };
        let tiles = uncompressed_len.div_ceil(TILE_BYTES);
        if ends.len() as u64 != tiles {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!("{} tile ends given for {tiles} tiles of output", ends.len()),
            ));
        }
        if ends.windows(2).any(|w| w[0] >= w[1]) || ends.first() == Some(&0) || ends.last() > Some(&src_len) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the tile table does not fit the {src_len} source bytes (its ends must rise, from above 0 to at most the source's length)"
                ),
            ));
        }
    }
    if let Some(hashes) = &request.verify {
        if hashes.len() as u64 != out_len.div_ceil(TILE_BYTES) {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "{} tile hashes given for {} tiles of output",
                    hashes.len(),
                    out_len.div_ceil(TILE_BYTES)
                ),
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
        Source::Device { buffer, offset, len } if offset.checked_add(*len).is_none_or(|end| end > buffer.len()) => {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "the GPU buffer range {offset}+{len} runs past the end of the {}-byte buffer",
                    buffer.len()
                ),
            ));
        }
        Source::Device { .. } if request.compression != Compression::None => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "decoding GDeflate from a GPU buffer needs the GPU decoder, which this build does not have",
            ));
        }
        _ => {}
    }
    if let Destination::File { .. } = request.destination {
        return lower_write(graph, config, request);
    }
    if let (
        Source::Device { buffer, offset, len },
        Destination::Device {
            buffer: dst,
            offset: at,
        },
    ) = (&request.source, &request.destination)
    {
        // One vkCmdCopyBuffer may not read and write the same bytes.
        if buffer.same_buffer(dst) && *offset < at.saturating_add(*len) && *at < offset.saturating_add(*len) {
            return Err(Error::new(
                ErrorKind::OverlappingDestinations,
                "a GPU copy within one buffer needs disjoint source and destination ranges",
            ));
        }
    }

    let (dst_offset, dst_len) = match &request.destination {
        Destination::Host { offset, .. } | Destination::Device { offset, .. } => (*offset, out_len),
        Destination::File { .. } => unreachable!("writes are lowered above"),
    };
    let dst_end = dst_offset.checked_add(dst_len).ok_or_else(|| {
        Error::new(
            ErrorKind::DestinationTooSmall,
            "the destination range overflows a 64-bit offset",
        )
    })?;
    let on_device = matches!(request.destination, Destination::Device { .. });
    let gpu_decode = decodes_on_gpu(config, routing, &request)?;
    if let Compression::GDeflate { uncompressed_len } = request.compression {
        let site = if gpu_decode { DecodeSite::Gpu } else { DecodeSite::Cpu };
        *planned = Some((site, uncompressed_len));
    }
    // Tile hashes of bytes stored as they are (an archive's raw assets) are checked in host
    // memory, where they land.
    // (Into a GPU buffer, they are checked in scratch before they are uploaded.)
    let verify_raw = request.verify.is_some() && request.compression == Compression::None;
    if verify_raw && !matches!(request.source, Source::File { .. }) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "tile hashes of uncompressed bytes are checked as a file's bytes land: verify the \
             file, not a copy in memory",
        ));
    }
    // Scratch: compressed file bytes between reads and decodes, and (for a GPU destination
    // decoded on the CPU) the bytes uploads copy from, after the compressed ones. Sized before
    // anything is added, so a refusal leaves the graph as it was.
    let src_len = request.source.len();
    let scratch_len = match (&request.source, request.compression, on_device) {
        (Source::File { .. }, Compression::GDeflate { .. }, true) if gpu_decode => Some(src_len),
        (Source::Memory { .. }, Compression::GDeflate { .. }, true) if gpu_decode => None,
        (Source::File { .. }, Compression::None, false)
        | (Source::Memory { .. } | Source::Device { .. }, Compression::None, _) => None,
        (Source::File { .. }, Compression::None, true) => Some(src_len),
        (Source::File { .. }, Compression::GDeflate { .. }, false) => Some(src_len),
        (Source::File { .. }, Compression::GDeflate { uncompressed_len }, true) => {
            Some(src_len.checked_add(uncompressed_len).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidRequest,
                    "the stream and its output overflow a 64-bit size",
                )
            })?)
        }
        (Source::Memory { .. }, Compression::GDeflate { .. }, false) => None,
        (Source::Memory { .. }, Compression::GDeflate { uncompressed_len }, true) => Some(uncompressed_len),
        (Source::Device { .. }, Compression::GDeflate { .. }, _) => unreachable!("refused above"),
    };
    let owner = ReservationOwner {
        batch: graph.id(),
        request: graph.request_count() as u32,
    };
    // The request's handles move into the reservation and the graph: no reference counted
    // twice on the enqueuing thread.
    let dst = match request.destination {
        Destination::Host { buffer, .. } => {
            let raw = buffer.raw();
            let reservation = buffer.into_reservation(owner, dst_offset..dst_end)?;
            graph.add_host(raw, reservation)
        }
        Destination::Device { buffer, .. } => {
            let reservation = buffer.reserve(owner, dst_offset..dst_end)?;
            graph.add_device(buffer, reservation)
        }
        Destination::File { .. } => unreachable!("writes are lowered above"),
    };
    let dst = Span {
        resource: dst,
        offset: dst_offset,
    };
    // Resources in a fixed order (destination, source, scratch), all before the request: a
    // refusal here leaves at worst resources no node uses.
    let (source, memory) = match request.source {
        Source::File { file, offset, len } => (Some((graph.add_file(file), offset, len)), None),
        Source::Memory { bytes, offset, len } => (None, Some((graph.add_memory(bytes), offset, len))),
        Source::Device { buffer, offset, len } => (None, Some((graph.add_device_source(buffer), offset, len))),
    };
    let scratch = scratch_len.map(|len| graph.add_scratch(len)).transpose()?;

    let id = graph.add_request(RequestInfo {
        name: request.name,
        tag: request.tag,
        priority: request.priority,
        bytes: out_len,
        tile_hashes: request.verify,
        io: request.io,
        tile_ends: request.tile_ends,
    });
    // A request that holds scratch takes it first and hands it back last.
    let hold_spec = |resource, kind| NodeSpec {
        src: Some(Span { resource, offset: 0 }),
        src_len: scratch_len.unwrap_or(0),
        ..NodeSpec::bare(kind, id)
    };
    let hold = scratch.map(|resource| {
        let acquire = graph.add_lowered_node(hold_spec(resource, NodeKind::Acquire));
        (Span { resource, offset: 0 }, acquire)
    });

    // The nodes that produce the output, and, for each, the node whose end lets it go on.
    let sinks: Vec<NodeId> = match (source, memory, request.compression, hold) {
        // Decoded on the GPU: the compressed stream read into scratch goes to the GPU piece by
        // piece, each piece's tiles decoded as soon as the reads before it are in.
        (Some((file, offset, len)), _, Compression::GDeflate { uncompressed_len }, Some((staged, acquire)))
            if gpu_decode =>
        {
            let reads = add_reads(graph, config, id, Span { resource: file, offset }, staged, len);
            join(graph, id, &[acquire], &reads);
            add_gpu_decode_pieces(graph, config, id, &reads, staged, len, dst, uncompressed_len)
        }
        (_, Some((memory, offset, len)), Compression::GDeflate { uncompressed_len }, None) if gpu_decode => {
            let src = Span {
                resource: memory,
                offset,
            };
            vec![add_gpu_decode(graph, id, src, len, dst, uncompressed_len)]
        }
        (Some((file, offset, len)), _, Compression::None, None) => {
            add_reads(graph, config, id, Span { resource: file, offset }, dst, len)
        }
        (Some((file, offset, len)), _, Compression::None, Some((staged, acquire))) => {
            let reads = add_reads(graph, config, id, Span { resource: file, offset }, staged, len);
            join(graph, id, &[acquire], &reads);
            let ready = match verify_raw {
                true => add_verifies(graph, config, id, &reads, staged.offset, staged, len),
                false => reads,
            };
            chase(graph, id, &ready, staged, dst, len, config.read_chunk)
        }
        (Some((file, offset, len)), _, Compression::GDeflate { uncompressed_len }, Some((staged, acquire))) => {
            let reads = add_reads(graph, config, id, Span { resource: file, offset }, staged, len);
            join(graph, id, &[acquire], &reads);
            let decoded = Span { offset: len, ..staged };
            let decode_dst = if on_device { decoded } else { dst };
            let decodes = add_decodes(graph, config, id, staged, len, decode_dst, uncompressed_len);
            join(graph, id, &reads, &decodes);
            if on_device {
                let group = config.decode_group_tiles.max(1) as u64 * TILE_BYTES;
                chase(graph, id, &decodes, decoded, dst, uncompressed_len, group)
            } else {
                decodes
            }
        }
        (_, Some((memory, offset, len)), Compression::None, None) => {
            let src = Span {
                resource: memory,
                offset,
            };
            let from_gpu = graph.resource_kind(memory) == Some(ResourceKind::Device);
            if from_gpu {
                // Pieces bound what one read-back holds of the staging budget.
                add_pieces(graph, NodeKind::Copy, id, src, dst, len, config.read_chunk)
            } else if on_device {
                add_pieces(graph, NodeKind::Upload, id, src, dst, len, config.read_chunk)
            } else {
                vec![graph.add_lowered_node(NodeSpec {
                    src: Some(src),
                    dst: Some(dst),
                    len,
                    src_len: len,
                    ..NodeSpec::bare(NodeKind::Copy, id)
                })]
            }
        }
        (_, Some((memory, offset, len)), Compression::GDeflate { uncompressed_len }, hold) => {
            let src = Span {
                resource: memory,
                offset,
            };
            match hold {
                None => add_decodes(graph, config, id, src, len, dst, uncompressed_len),
                Some((decoded, acquire)) => {
                    let decodes = add_decodes(graph, config, id, src, len, decoded, uncompressed_len);
                    join(graph, id, &[acquire], &decodes);
                    let group = config.decode_group_tiles.max(1) as u64 * TILE_BYTES;
                    chase(graph, id, &decodes, decoded, dst, uncompressed_len, group)
                }
            }
        }
        (_, _, _, hold) => unreachable!("scratch is sized above for every shape (held: {})", hold.is_some()),
    };
    // Tile hashes on bytes stored as they are (an archive's raw assets) are checked where they
    // land, each piece after the node that wrote it (into a GPU buffer: in scratch, above).
    let sinks = if verify_raw && !on_device {
        let mut verifies = add_verifies(graph, config, id, &sinks, dst_offset, dst, dst_len);
        verifies.dedup();
        verifies
    } else {
        sinks
    };
    if let Some((held, _)) = hold {
        let release = graph.add_lowered_node(hold_spec(held.resource, NodeKind::Release));
        join(graph, id, &sinks, &[release]);
    }
    Ok(id)
}

/// `Verify` nodes checking the tile hashes of `len` bytes at `whole` (tile 0 at offset `base`
/// of its resource), written in order by `writers` in pieces of `read_chunk`: one after each
/// writer where pieces start on tile boundaries, else one after them all. One node per writer
/// is returned (the same one repeated in the second case), for what follows each piece.
fn add_verifies(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    request: RequestId,
    writers: &[NodeId],
    base: u64,
    whole: Span,
    len: u64,
) -> Vec<NodeId> {
    if !config.read_chunk.is_multiple_of(TILE_BYTES) {
        let verify = graph.add_lowered_node(NodeSpec {
            dst: Some(whole),
            len,
            ..NodeSpec::bare(NodeKind::Verify, request)
        });
        join(graph, request, writers, &[verify]);
        return vec![verify; writers.len()];
    }
    writers
        .iter()
        .map(|&writer| {
            let (dst, len) = graph.node_dst(writer);
            let verify = graph.add_lowered_node(NodeSpec {
                dst,
                len,
                tile: dst.map_or(0, |d| ((d.offset - base) / TILE_BYTES) as u32),
                ..NodeSpec::bare(NodeKind::Verify, request)
            });
            graph.add_edge(writer, verify, EdgeKind::Cpu);
            verify
        })
        .collect()
}

/// Whether `request` decodes on the GPU: a GDeflate stream into a GPU buffer, on the route it
/// asks for. `Auto` takes the GPU where the executor has the decoder, the destination can be
/// written by it, the output is large enough (`gpu_decode_min_bytes`) and the balance (where
/// there is one) says the GPU would finish it first; `Gpu` is refused where either of the first
/// two is missing. Tile hashes are checked on either route (on the GPU, by the decode's own
/// submission).
fn decodes_on_gpu(config: &LoweringConfig, routing: Option<&Routing>, request: &Request) -> Result<bool> {
    let Destination::Device { buffer, .. } = &request.destination else {
        return Ok(false);
    };
    if request.compression == Compression::None {
        return Ok(false);
    }
    let Compression::GDeflate { uncompressed_len } = request.compression else {
        return Ok(false);
    };
    let refusal = if request.tile_ends.is_some() {
        Some("its tiles come without their TileStream's table (Request::gdeflate_tiles), which the CPU route decodes")
    } else if !config.gpu_decode {
        Some("the executor has no GPU decoder (no Vulkan device with buffer device addresses and 8-bit storage, or a caller's device)")
    } else if !buffer.decodable() {
        Some("the GPU decoder cannot write into this buffer (a caller's buffer, made without device addresses)")
    } else {
        None
    };
    match (request.decode, refusal) {
        (DecodeRoute::Cpu, _) => Ok(false),
        (DecodeRoute::Auto, refusal) => Ok(refusal.is_none()
            && uncompressed_len >= config.gpu_decode_min_bytes
            && routing.is_none_or(|r| r.choose(uncompressed_len) == DecodeSite::Gpu)),
        (DecodeRoute::Gpu, None) => Ok(true),
        (DecodeRoute::Gpu, Some(why)) => Err(Error::new(
            ErrorKind::Unsupported,
            format!("this request cannot decode on the GPU: {why}"),
        )),
    }
}

/// The `DecompressGpu` node of a whole stream: `src_len` compressed bytes at `src` into
/// `uncompressed_len` bytes at `dst` (a GPU buffer).
fn add_gpu_decode(
    graph: &mut GraphBuilder,
    request: RequestId,
    src: Span,
    src_len: u64,
    dst: Span,
    uncompressed_len: u64,
) -> NodeId {
    graph.add_lowered_node(NodeSpec {
        src: Some(src),
        dst: Some(dst),
        len: uncompressed_len,
        src_len,
        tile: 1,
        ..NodeSpec::bare(NodeKind::DecompressGpu, request)
    })
}

/// `DecompressGpu` pieces of a stream that `reads` bring into `staged` in order (`len` bytes,
/// `read_chunk` each): piece k sees the stream up to the end of read k and takes the tiles
/// whose compressed bytes end within read k (`NodeSpec::from`), the last piece every tile left.
/// So tiles go to the GPU while later ones are still being read. Piece k waits for reads
/// 0..=k through a chain of barriers (three edges a piece, not k).
#[allow(clippy::too_many_arguments)]
fn add_gpu_decode_pieces(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    request: RequestId,
    reads: &[NodeId],
    staged: Span,
    len: u64,
    dst: Span,
    uncompressed_len: u64,
) -> Vec<NodeId> {
    let chunk = config.read_chunk.max(1);
    let mut gate: Option<NodeId> = None;
    let mut pieces = Vec::with_capacity(reads.len());
    for (k, &read) in reads.iter().enumerate() {
        let from = k as u64 * chunk;
        let last = k + 1 == reads.len();
        let piece = graph.add_lowered_node(NodeSpec {
            src: Some(staged),
            src_len: if last { len } else { from + chunk },
            dst: Some(dst),
            len: uncompressed_len,
            tile: u32::from(last),
            from,
            ..NodeSpec::bare(NodeKind::DecompressGpu, request)
        });
        let ready = match gate {
            None => read,
            Some(before) => {
                let barrier = graph.add_lowered_node(NodeSpec::bare(NodeKind::Barrier, request));
                graph.add_edge(before, barrier, EdgeKind::Cpu);
                graph.add_edge(read, barrier, EdgeKind::Cpu);
                barrier
            }
        };
        graph.add_edge(ready, piece, EdgeKind::Cpu);
        gate = Some(ready);
        pieces.push(piece);
    }
    pieces
}

/// A write request: memory (or a GPU buffer, read back into scratch first) into a file range,
/// in pieces of at most `read_chunk`, then a `Sync` when asked. A GDeflate source (a file's
/// or memory's) is decoded on the way: `Acquire` → `Read` × chunks into scratch → `Barrier` →
/// `DecompressCpu` × groups into scratch, each → its `Write` [→ `Sync`] → `Release`, so a file
/// decodes into another through at most its request's scratch.
fn lower_write(graph: &mut GraphBuilder, config: &LoweringConfig, request: Request) -> Result<RequestId> {
    let Destination::File { file, offset: at, sync } = request.destination else {
        unreachable!("only writes come here")
    };
    let src_len = request.source.len();
    let decoded = match request.compression {
        Compression::None => None,
        Compression::GDeflate { uncompressed_len } => Some(uncompressed_len),
    };
    let len = decoded.unwrap_or(src_len);
    if at.checked_add(len).is_none() {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            "the file range overflows a 64-bit offset",
        ));
    }
    let from_file = matches!(request.source, Source::File { .. });
    if request.verify.is_some() && decoded.is_none() && !from_file {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "tile hashes of stored bytes are checked as a file's bytes land: a write from memory has none to check",
        ));
    }
    let verify_raw = request.verify.is_some() && decoded.is_none();
    // Resources first (source, destination, scratch), then the request: a refusal leaves at
    // worst resources no node uses.
    enum From {
        Memory(Span),
        Gpu(Span),
        File(Span),
    }
    let from = match request.source {
        Source::Memory { bytes, offset, len: _ } => From::Memory(Span {
            resource: graph.add_memory(bytes),
            offset,
        }),
        Source::Device { buffer, offset, len: _ } => From::Gpu(Span {
            resource: graph.add_device_source(buffer),
            offset,
        }),
        Source::File { file, offset, len: _ } => From::File(Span {
            resource: graph.add_file(file),
            offset,
        }),
    };
    let dst = Span {
        resource: graph.add_file_for_write(file),
        offset: at,
    };
    // Scratch holds a GPU buffer's bytes read back, or a file's bytes on their way, or a
    // stream read from a file and its decoded output after it, or decoded output alone.
    let scratch_len = match (&from, decoded) {
        (From::Gpu(_), _) | (From::File(_), None) => Some(len),
        (From::File(_), Some(out)) => Some(src_len.checked_add(out).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidRequest,
                "the stream and its output overflow a 64-bit size",
            )
        })?),
        (From::Memory(_), Some(out)) => Some(out),
        _ => None,
    };
    let scratch = scratch_len.map(|len| graph.add_scratch(len)).transpose()?;
    let id = graph.add_request(RequestInfo {
        name: request.name,
        tag: request.tag,
        priority: request.priority,
        bytes: len,
        tile_hashes: request.verify,
        io: request.io,
        tile_ends: request.tile_ends,
    });
    let hold_spec = |resource, kind| NodeSpec {
        src: Some(Span { resource, offset: 0 }),
        src_len: scratch_len.unwrap_or(0),
        ..NodeSpec::bare(kind, id)
    };
    let hold = scratch.map(|resource| {
        let acquire = graph.add_lowered_node(hold_spec(resource, NodeKind::Acquire));
        (Span { resource, offset: 0 }, acquire)
    });
    let writes = match (from, hold) {
        (From::Memory(src), None) => add_pieces(graph, NodeKind::Write, id, src, dst, len, config.read_chunk),
        (From::Gpu(src), Some((staged, acquire))) => {
            let copies = add_pieces(graph, NodeKind::Copy, id, src, staged, len, config.read_chunk);
            join(graph, id, &[acquire], &copies);
            let writes = add_pieces(graph, NodeKind::Write, id, staged, dst, len, config.read_chunk);
            for (&copy, &write) in copies.iter().zip(&writes) {
                graph.add_edge(copy, write, EdgeKind::Cpu);
            }
            writes
        }
        (From::File(src), Some((staged, acquire))) if decoded.is_none() => {
            // A copy: each piece written once it is read (and its tiles checked).
            let reads = add_reads(graph, config, id, src, staged, len);
            join(graph, id, &[acquire], &reads);
            let ready = match verify_raw {
                true => add_verifies(graph, config, id, &reads, staged.offset, staged, len),
                false => reads,
            };
            let writes = add_pieces(graph, NodeKind::Write, id, staged, dst, len, config.read_chunk);
            for (&ready, &write) in ready.iter().zip(&writes) {
                graph.add_edge(ready, write, EdgeKind::Cpu);
            }
            writes
        }
        (From::File(src), Some((staged, acquire))) => {
            let reads = add_reads(graph, config, id, src, staged, src_len);
            join(graph, id, &[acquire], &reads);
            let out = Span {
                offset: src_len,
                ..staged
            };
            let decodes = add_decodes(graph, config, id, staged, src_len, out, len);
            join(graph, id, &reads, &decodes);
            write_groups(graph, config, id, &decodes, out, dst, len)
        }
        (From::Memory(src), Some((staged, acquire))) => {
            let decodes = add_decodes(graph, config, id, src, src_len, staged, len);
            join(graph, id, &[acquire], &decodes);
            write_groups(graph, config, id, &decodes, staged, dst, len)
        }
        _ => unreachable!("scratch is sized for every source that needs it"),
    };
    let mut ends = writes;
    if sync {
        let flush = graph.add_lowered_node(NodeSpec {
            dst: Some(dst),
            ..NodeSpec::bare(NodeKind::Sync, id)
        });
        join(graph, id, &ends, &[flush]);
        ends = vec![flush];
    }
    if let Some((staged, _)) = hold {
        let release = graph.add_lowered_node(hold_spec(staged.resource, NodeKind::Release));
        join(graph, id, &ends, &[release]);
    }
    Ok(id)
}

/// A `Write` of each decode group's output (`len` bytes at `src`, in groups) to `dst`, after its
/// group.
fn write_groups(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    request: RequestId,
    decodes: &[NodeId],
    src: Span,
    dst: Span,
    len: u64,
) -> Vec<NodeId> {
    let group = config.decode_group_tiles.max(1) as u64 * TILE_BYTES;
    let writes = add_pieces(graph, NodeKind::Write, request, src, dst, len, group);
    debug_assert_eq!(writes.len(), decodes.len(), "one write per group");
    for (&decode, &write) in decodes.iter().zip(&writes) {
        graph.add_edge(decode, write, EdgeKind::Cpu);
    }
    writes
}

/// Nodes of `kind` moving `len` bytes from `src` to `dst` in pieces of at most `chunk`, in order.
/// A zero-length move is still one node, so (for a read) a missing file is reported rather than
/// silently "read".
fn add_pieces(
    graph: &mut GraphBuilder,
    kind: NodeKind,
    request: RequestId,
    src: Span,
    dst: Span,
    len: u64,
    chunk: u64,
) -> Vec<NodeId> {
    let chunk = chunk.max(1);
    (0..len.div_ceil(chunk).max(1))
        .map(|i| {
            let at = i * chunk;
            let this = chunk.min(len - at.min(len));
            graph.add_lowered_node(NodeSpec {
                src: Some(Span {
                    offset: src.offset + at,
                    ..src
                }),
                dst: Some(Span {
                    offset: dst.offset + at,
                    ..dst
                }),
                len: this,
                src_len: this,
                ..NodeSpec::bare(kind, request)
            })
        })
        .collect()
}

/// Uploads that follow `producers` (which wrote `len` bytes at `src` in pieces of `chunk`, in
/// order) piece by piece: each piece goes to the GPU as soon as it is in memory.
fn chase(
    graph: &mut GraphBuilder,
    request: RequestId,
    producers: &[NodeId],
    src: Span,
    dst: Span,
    len: u64,
    chunk: u64,
) -> Vec<NodeId> {
    let uploads = add_pieces(graph, NodeKind::Upload, request, src, dst, len, chunk);
    debug_assert_eq!(uploads.len(), producers.len(), "one upload per piece");
    for (&producer, &upload) in producers.iter().zip(&uploads) {
        graph.add_edge(producer, upload, EdgeKind::Cpu);
    }
    uploads
}

/// `DecompressCpu` nodes for groups of `decode_group_tiles` tiles of a stream at `src` (all of
/// it, `src_len` bytes: each group finds its tiles through the stream's table) decoding into
/// consecutive slices of `dst`.
fn add_decodes(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    request: RequestId,
    src: Span,
    src_len: u64,
    dst: Span,
    out_len: u64,
) -> Vec<NodeId> {
    let group = config.decode_group_tiles.max(1) as u64 * TILE_BYTES;
    let groups = out_len.div_ceil(group);
    (0..groups)
        .map(|g| {
            graph.add_lowered_node(NodeSpec {
                src: Some(src),
                src_len,
                dst: Some(Span {
                    offset: dst.offset + g * group,
                    ..dst
                }),
                len: group.min(out_len - g * group),
                tile: (g * group / TILE_BYTES) as u32,
                ..NodeSpec::bare(NodeKind::DecompressCpu, request)
            })
        })
        .collect()
}

/// Makes every node of `after` wait for every node of `before`: directly when either side is a
/// single node, through a barrier otherwise.
fn join(graph: &mut GraphBuilder, request: RequestId, before: &[NodeId], after: &[NodeId]) {
    if before.len() == 1 || after.len() == 1 {
        for &b in before {
            for &a in after {
                graph.add_edge(b, a, EdgeKind::Cpu);
            }
        }
        return;
    }
    let barrier = graph.add_lowered_node(NodeSpec::bare(NodeKind::Barrier, request));
    for &b in before {
        graph.add_edge(b, barrier, EdgeKind::Cpu);
    }
    for &a in after {
        graph.add_edge(barrier, a, EdgeKind::Cpu);
    }
}

/// `Read` nodes covering `len` bytes from `src` to `dst`, at most `read_chunk` each.
fn add_reads(
    graph: &mut GraphBuilder,
    config: &LoweringConfig,
    request: RequestId,
    src: Span,
    dst: Span,
    len: u64,
) -> Vec<NodeId> {
    add_pieces(graph, NodeKind::Read, request, src, dst, len, config.read_chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::HostBuffer;
    use std::sync::Arc;

    fn config() -> LoweringConfig {
        LoweringConfig {
            read_chunk: 100,
            decode_group_tiles: 2,
            gpu_decode: false,
            gpu_decode_min_bytes: 1000,
        }
    }

    fn kinds_of(config: &LoweringConfig, request: Request) -> Result<Vec<NodeKind>> {
        let mut g = GraphBuilder::new();
        lower(&mut g, config, request)?;
        Ok(g.compile().unwrap().nodes().map(|n| n.kind).collect())
    }

    #[test]
    fn raw_bytes_with_tile_hashes_are_checked_after_each_piece_lands() {
        use NodeKind::*;
        let dest = HostBuffer::new(300_000);
        let hashes: Arc<[u64]> = Arc::from(vec![0u64; 4]);
        let tiles = LoweringConfig {
            read_chunk: 2 * TILE_BYTES,
            ..config()
        };
        let mut g = GraphBuilder::new();
        let request = Request::file("/a", 0, 200_000, &dest, 4096).verify_tiles(hashes.clone());
        lower(&mut g, &tiles, request).unwrap();
        let g = g.compile().unwrap();
        let nodes: Vec<_> = g.nodes().collect();
        let kinds: Vec<_> = nodes.iter().map(|n| n.kind).collect();
        assert_eq!(kinds, [Read, Read, Verify, Verify]);
        let verifies: Vec<_> = nodes.iter().filter(|n| n.kind == Verify).collect();
        assert_eq!(verifies.iter().map(|n| n.tile).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(verifies.iter().map(|n| n.len).collect::<Vec<_>>(), [131_072, 68_928]);
        assert!(verifies.iter().all(|n| n.predecessors == 1));
        // Pieces off tile boundaries: one check after all of them.
        let kinds = kinds_of(
            &config(),
            Request::file("/a", 0, 250, &dest, 0).verify_tiles(Arc::from(vec![0u64])),
        );
        assert_eq!(kinds.unwrap(), [Read, Read, Read, Verify]);
        // Into GPU memory: checked in scratch, each piece before its upload.
        let gpu = crate::buffer::DeviceBuffer::new(300_000, ());
        let kinds = kinds_of(
            &tiles,
            Request::file_to_device("/a", 0, 200_000, &gpu, 0).verify_tiles(hashes.clone()),
        );
        assert_eq!(
            kinds.unwrap(),
            [Acquire, Read, Read, Verify, Verify, Upload, Upload, Release]
        );
        // Not from memory: only a file's bytes are checked as they land.
        let err = kinds_of(
            &config(),
            Request::memory_to_device(vec![0u8; 100], 0, 100, &gpu, 0).verify_tiles(Arc::from(vec![0u64])),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn gdeflate_into_gpu_buffers_decodes_on_the_route_it_may_take() {
        use crate::buffer::DeviceBuffer;
        use NodeKind::*;
        let gpu = LoweringConfig {
            gpu_decode: true,
            ..config()
        };
        let decodable = DeviceBuffer::new_decodable(1000, ());
        let callers = DeviceBuffer::new(1000, ());
        let file = |buffer: &DeviceBuffer| Request::file_to_device("/a", 0, 150, buffer, 0).gdeflate(1000);
        let memory =
            |buffer: &DeviceBuffer| Request::memory_to_device(vec![0u8; 150], 0, 150, buffer, 0).gdeflate(1000);
        let cpu_file = [Acquire, Read, Read, DecompressCpu, Upload, Release];
        // Auto: the GPU where the executor decodes there and the buffer allows it.
        let pieces = [Acquire, Read, Read, DecompressGpu, DecompressGpu, Barrier, Release];
        assert_eq!(kinds_of(&gpu, file(&decodable)).unwrap(), pieces);
        {
            // Piece k sees the stream up to the end of read k, takes what ends after read k-1,
            // and waits for both reads (the second through a barrier over the first and read 1).
            let mut g = GraphBuilder::new();
            lower(&mut g, &gpu, file(&decodable)).unwrap();
            let g = g.compile().unwrap();
            let decodes: Vec<_> = g.nodes().filter(|n| n.kind == DecompressGpu).collect();
            let window: Vec<_> = decodes.iter().map(|n| (n.from, n.src_len, n.tile, n.len)).collect();
            assert_eq!(window, [(0, 100, 0, 1000), (100, 150, 1, 1000)]);
            assert!(decodes.iter().all(|n| n.predecessors == 1));
            let barrier = g.nodes().find(|n| n.kind == Barrier).unwrap();
            assert_eq!(barrier.predecessors, 2);
        }
        assert_eq!(kinds_of(&gpu, memory(&decodable)).unwrap(), [DecompressGpu]);
        assert_eq!(kinds_of(&config(), file(&decodable)).unwrap(), cpu_file);
        assert_eq!(kinds_of(&gpu, file(&callers)).unwrap(), cpu_file);
        let hashed = file(&decodable).verify_tiles(Arc::from(vec![0u64; 1]));
        assert_eq!(
            kinds_of(&gpu, hashed).unwrap(),
            pieces,
            "tile hashes are checked on the GPU too"
        );
        // Forced routes.
        assert_eq!(
            kinds_of(&gpu, file(&decodable).decode_on(DecodeRoute::Cpu)).unwrap(),
            cpu_file
        );
        for (config, buffer, why) in [
            (&config(), &decodable, "no GPU decoder"),
            (&gpu, &callers, "a caller's buffer"),
        ] {
            let err = kinds_of(config, file(buffer).decode_on(DecodeRoute::Gpu)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{why}: {err}");
        }
        // Host destinations decode on the CPU whatever the route says.
        let host = HostBuffer::new(1000);
        let to_host = Request::file("/a", 0, 150, &host, 0)
            .gdeflate(1000)
            .decode_on(DecodeRoute::Gpu);
        assert_eq!(
            kinds_of(&gpu, to_host).unwrap(),
            [Acquire, Read, Read, DecompressCpu, Release]
        );
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
        use NodeKind::*;
        assert_eq!(kinds, [Acquire, Read, Read, DecompressCpu, Release]);
        assert_eq!(g.node(NodeId(1)).predecessors, 1, "reads wait for the scratch");
        assert_eq!(g.node(NodeId(3)).predecessors, 2);
        assert_eq!(g.node(NodeId(3)).len, 1000);
        assert_eq!(g.node(NodeId(4)).predecessors, 1, "the release waits for the decode");
        assert_eq!(g.roots(), [NodeId(0)]);
    }

    #[test]
    fn large_gdeflate_streams_decode_in_tile_groups_behind_a_barrier() {
        // 5 tiles of output in groups of 2: 3 decode nodes; 250 compressed bytes: 3 reads.
        let out = 4 * TILE_BYTES + 10;
        let dest = HostBuffer::new(out as usize);
        let mut g = GraphBuilder::new();
        lower(&mut g, &config(), Request::file("/a", 0, 250, &dest, 0).gdeflate(out)).unwrap();
        let g = g.compile().unwrap();
        let kinds: Vec<_> = g.nodes().map(|n| n.kind).collect();
        use NodeKind::*;
        assert_eq!(
            kinds,
            [
                Acquire,
                Read,
                Read,
                Read,
                DecompressCpu,
                DecompressCpu,
                DecompressCpu,
                Barrier,
                Release
            ]
        );
        let decodes: Vec<_> = g.nodes().filter(|n| n.kind == DecompressCpu).collect();
        assert_eq!(decodes.iter().map(|n| n.tile).collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(
            decodes.iter().map(|n| n.len).collect::<Vec<_>>(),
            [2 * TILE_BYTES, 2 * TILE_BYTES, 10]
        );
        assert!(decodes.iter().all(|n| n.predecessors == 1 && n.src_len == 250));
        assert_eq!(
            g.edge_count(),
            3 + (3 + 3) + 3,
            "acquire -> reads -> barrier -> decodes -> release, not reads x decodes"
        );
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
