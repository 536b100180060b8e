//! CPU GDeflate benchmarks: dsr's decoder and encoder against the reference (NVIDIA libdeflate
//! GDeflate) on the same tiles of the same data, in the same run.
//!
//! Decoding: both decoders decode the same tiles (compressed by the reference at level 9, as a
//! shipped asset would be), one thread each, alternating runs; MB/s of output, medians. Scaling:
//! dsr decodes through the engine (tile-group nodes on the work-stealing executor) with 1..N
//! workers; the reference runs its tiles on N scoped threads.

use std::time::{Duration, Instant};

use dsr_gdeflate::{Decoder, Encoder, Level, TILE_SIZE};

#[cfg(feature = "reference-codec")]
use super::median;

/// Compressed tiles of one input, concatenated, with their bounds.
#[derive(Debug)]
pub struct Tiles {
    /// The tiles back to back, padded at the end (the reference decoder may look ahead).
    pub data: Vec<u8>,
    /// (start, end) of each tile in `data`.
    pub bounds: Vec<(usize, usize)>,
    /// Uncompressed bytes.
    pub uncompressed: usize,
}

impl Tiles {
    /// Tiles of `input` as `compress` produces them.
    pub fn new(input: &[u8], mut compress: impl FnMut(&[u8]) -> Vec<u8>) -> Tiles {
        let mut data = Vec::new();
        let mut bounds = Vec::new();
        for chunk in input.chunks(TILE_SIZE) {
            let start = data.len();
            data.extend_from_slice(&compress(chunk));
            bounds.push((start, data.len()));
        }
        data.resize(data.len() + 4096, 0);
        Tiles {
            data,
            bounds,
            uncompressed: input.len(),
        }
    }

    /// Compressed bytes (without the padding).
    pub fn compressed(&self) -> usize {
        self.bounds.last().map_or(0, |b| b.1)
    }

    fn tile(&self, i: usize) -> &[u8] {
        &self.data[self.bounds[i].0..self.bounds[i].1]
    }

    fn out_len(&self, i: usize) -> usize {
        (self.uncompressed - i * TILE_SIZE).min(TILE_SIZE)
    }
}

/// Decodes every tile with dsr on this thread into `out`.
pub fn dsr_decode(tiles: &Tiles, out: &mut [u8]) -> Result<Duration, dsr_gdeflate::Error> {
    let mut decoder = Decoder::new();
    let start = Instant::now();
    for (i, chunk) in out.chunks_mut(TILE_SIZE).enumerate() {
        decoder
            .decode_tile(tiles.tile(i), &mut chunk[..tiles.out_len(i)])
            .map_err(|reason| dsr_gdeflate::Error {
                reason,
                tile: Some(i as u32),
            })?;
    }
    super::trace::span("codec", "dsr decode (one thread)", start);
    Ok(start.elapsed())
}

/// Measures dsr's decoder and the reference's on the same tiles, `runs` alternating runs.
#[cfg(feature = "reference-codec")]
pub fn decode_vs_reference(input: &[u8], runs: usize) -> Result<(f64, f64), String> {
    use dsr_gdeflate_reference::{Compressor, Decompressor};
    let mut compressor = Compressor::new(9);
    let tiles = Tiles::new(input, |t| compressor.compress_tile(t));
    let mut out = vec![0u8; input.len()];
    let mut reference = Decompressor::new();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        ours.push(dsr_decode(&tiles, &mut out).map_err(|e| e.to_string())?);
        if out != input {
            return Err("dsr decoded wrong bytes".into());
        }
        let start = Instant::now();
        for (i, chunk) in out.chunks_mut(TILE_SIZE).enumerate() {
            let (s, e) = tiles.bounds[i];
            // The tile is followed by the next tile or the padding, so look-ahead stays in bounds.
            reference
                .decompress_unpadded(&tiles.data[s..e], &mut chunk[..tiles.out_len(i)])
                .map_err(|e| format!("the reference failed on tile {i}: {e:?}"))?;
        }
        super::trace::span("codec", "reference decode (one thread)", start);
        theirs.push(start.elapsed());
        if out != input {
            return Err("the reference decoded wrong bytes".into());
        }
    }
    let mbps = |d: Duration| input.len() as f64 / d.as_secs_f64() / 1e6;
    Ok((mbps(median(&mut ours)), mbps(median(&mut theirs))))
}

/// The reference's decode rate on `threads` scoped threads (tiles split in contiguous ranges).
#[cfg(feature = "reference-codec")]
pub fn reference_decode_threads(input: &[u8], threads: usize, runs: usize) -> f64 {
    use dsr_gdeflate_reference::{Compressor, Decompressor};
    let mut compressor = Compressor::new(9);
    let tiles = Tiles::new(input, |t| compressor.compress_tile(t));
    let mut out = vec![0u8; input.len()];
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let per = tiles.bounds.len().div_ceil(threads.max(1));
        let start = Instant::now();
        std::thread::scope(|scope| {
            for (t, part) in out.chunks_mut(per * TILE_SIZE).enumerate() {
                let tiles = &tiles;
                scope.spawn(move || {
                    let mut reference = Decompressor::new();
                    for (k, chunk) in part.chunks_mut(TILE_SIZE).enumerate() {
                        let i = t * per + k;
                        let (s, e) = tiles.bounds[i];
                        let _ = reference.decompress_unpadded(&tiles.data[s..e], &mut chunk[..tiles.out_len(i)]);
                    }
                });
            }
        });
        super::trace::span("codec", "reference decode (threads)", start);
        times.push(start.elapsed());
    }
    input.len() as f64 / median(&mut times).as_secs_f64() / 1e6
}

/// Compression size and speed of dsr at `level`: (compressed bytes, MB/s of input).
pub fn dsr_encode(input: &[u8], level: Level) -> (usize, f64) {
    let mut encoder = Encoder::new(level);
    let start = Instant::now();
    let mut out = Vec::with_capacity(input.len());
    for chunk in input.chunks(TILE_SIZE) {
        encoder.encode_tile(chunk, &mut out);
    }
    super::trace::span("codec", "dsr encode", start);
    (out.len(), input.len() as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Compression size and speed of the reference at `level`.
#[cfg(feature = "reference-codec")]
pub fn reference_encode(input: &[u8], level: u8) -> (usize, f64) {
    let mut compressor = dsr_gdeflate_reference::Compressor::new(level);
    let start = Instant::now();
    let size: usize = input.chunks(TILE_SIZE).map(|c| compressor.compress_tile(c).len()).sum();
    super::trace::span("codec", "reference encode", start);
    (size, input.len() as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// dsr decoding `stream` (a TileStream of `len` bytes) through the engine with `workers`
/// workers: one memory request, lowered to tile groups. MB/s of output, median of `runs`.
pub fn engine_decode(stream: &[u8], len: usize, workers: usize, runs: usize) -> Result<f64, String> {
    use std::sync::Arc;
    let stream: Arc<[u8]> = stream.into();
    let executor = dsr::executor(super::trace::observe(dsr::ExecutorConfig {
        workers,
        metrics: false,
        ..dsr::ExecutorConfig::default()
    }))
    .map_err(|e| e.to_string())?;
    let dest = dsr::HostBuffer::prefault(len);
    let mut times = Vec::new();
    for _ in 0..runs.max(1) + 1 {
        let mut batch = executor.batch();
        batch
            .push(dsr::Request::memory(stream.clone(), 0, stream.len() as u64, &dest, 0).gdeflate(len as u64))
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let report = executor.submit(batch).map_err(|e| e.to_string())?.wait();
        times.push(start.elapsed());
        if let Some((_, err)) = report.first_failure() {
            return Err(err.to_string());
        }
    }
    times.remove(0); // the first run warms the workers' decoders and the destination
    Ok(len as f64 / super::median(&mut times).as_secs_f64() / 1e6)
}

/// The TileStream of `tiles` around the uncompressed size.
pub fn tilestream_of(tiles: &Tiles) -> Vec<u8> {
    let slices: Vec<&[u8]> = tiles.bounds.iter().map(|&(s, e)| &tiles.data[s..e]).collect();
    let mut out = Vec::new();
    dsr_gdeflate::tilestream::write(&slices, tiles.uncompressed as u64, &mut out).expect("a valid tile list");
    out
}
