//! The CPU decompression stage: one node decodes one group of GDeflate tiles straight into its
//! slice of the destination, and verifies each tile's hash when the request carries them.

use std::cell::RefCell;

use dsr_engine::{Error, ErrorKind, Input, NodeRef, Outcome, Stage};
use dsr_gdeflate::{Decoder, TileStream, TILE_SIZE};

thread_local! {
    /// One decoder per worker: its tables are reused across nodes.
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::new());
}

/// Decodes a node's tile group of a GDeflate TileStream.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecompressCpuStage;

/// The hash tiles are verified with (xxh3, 64 bits).
pub fn tile_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Checks `bytes`, tiles `first..` of a request's output, against its tile `hashes`; the first
/// tile that differs fails it, named (`what` the bytes are: "decoded", "stored").
pub(crate) fn check_tiles(first: usize, bytes: &[u8], hashes: &[u64], what: &str) -> Result<(), Error> {
    for (i, tile) in bytes.chunks(TILE_SIZE).enumerate() {
        let at = first + i;
        if hashes.get(at) != Some(&tile_hash(tile)) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("the {what} tile does not match its hash: the asset is damaged, repack it"),
            )
            .at_tile(at as u32));
        }
    }
    Ok(())
}

impl Stage for DecompressCpuStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let Input::Bytes(stream) = node.input() else {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                "a decode node needs its stream in memory",
            ));
        };
        let first = node.tile() as usize;
        let expected_total = node.request_info().bytes;
        let hashes = node.request_info().tile_hashes.clone();
        let table = node.request_info().tile_ends.clone();
        let Some(out) = node.destination() else {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                "a decode node needs a destination",
            ));
        };
        let corrupt = |err: dsr_gdeflate::Error| {
            let error = Error::new(ErrorKind::Corrupt, format!("{err}; the asset is damaged, repack it"));
            let error = match err.tile {
                Some(tile) => error.at_tile(tile),
                None => error,
            };
            // The codec's typed reason stays reachable as the source, for bindings that map it.
            error.with_source(err)
        };
        let tiles = first..first + out.len().div_ceil(TILE_SIZE);
        if let Some(ends) = table {
            // Tiles without their TileStream: the table came with the request.
            let decoded = DECODER.with(|decoder| decode_table(&mut decoder.borrow_mut(), stream, &ends, tiles, out));
            if let Err(err) = decoded {
                return Outcome::Failed(corrupt(err));
            }
            if let Some(hashes) = hashes {
                if let Err(err) = check_tiles(first, out, &hashes, "decoded") {
                    return Outcome::Failed(err);
                }
            }
            return Outcome::Done {
                bytes: out.len() as u64,
            };
        }
        let stream = match TileStream::parse(stream) {
            Ok(stream) => stream,
            Err(err) => return Outcome::Failed(corrupt(err)),
        };
        if stream.uncompressed_len() != expected_total {
            return Outcome::Failed(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the stream decodes to {} bytes but the request expects {expected_total}",
                    stream.uncompressed_len()
                ),
            ));
        }
        let decoded = DECODER.with(|decoder| stream.decode_tiles(&mut decoder.borrow_mut(), tiles.clone(), out));
        if let Err(err) = decoded {
            return Outcome::Failed(corrupt(err));
        }
        if let Some(hashes) = hashes {
            if let Err(err) = check_tiles(first, out, &hashes, "decoded") {
                return Outcome::Failed(err);
            }
        }
        Outcome::Done {
            bytes: out.len() as u64,
        }
    }
}

/// Decodes `tiles` of bytes whose table is `ends` (tile `i` ends `ends[i]` bytes into `data`)
/// into `out`, which holds exactly their output (every tile 64 KiB but the request's last).
fn decode_table(
    decoder: &mut Decoder,
    data: &[u8],
    ends: &[u64],
    tiles: std::ops::Range<usize>,
    out: &mut [u8],
) -> Result<(), dsr_gdeflate::Error> {
    let mut at = 0usize;
    for i in tiles {
        let bad = |reason| dsr_gdeflate::Error {
            reason,
            tile: Some(i as u32),
        };
        let start = if i == 0 { Some(0) } else { ends.get(i - 1).copied() };
        let src = start
            .and_then(|start| usize::try_from(start).ok())
            .zip(ends.get(i).and_then(|&end| usize::try_from(end).ok()))
            .and_then(|(start, end)| data.get(start..end))
            .ok_or(bad(dsr_gdeflate::Reason::BadTileTable))?;
        let size = (out.len() - at).min(TILE_SIZE);
        decoder.decode_tile(src, &mut out[at..at + size]).map_err(bad)?;
        at += size;
    }
    Ok(())
}
