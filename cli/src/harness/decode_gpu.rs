//! GDeflate decoding on the GPU: dsr's shader against the driver's `VK_NV_memory_decompression`
//! on the same tiles in the same device buffers, and dsr's CPU decoder on all workers, in the
//! same run.
//!
//! For each batch size (output bytes per submission) the batch's tiles are staged once in
//! device-local memory (tiles of the corpus, repeated to fill large batches); each side decodes
//! them `runs` times, the two sides alternating twice; GB/s of output from GPU timestamps around
//! each dispatch, medians. Every side's output is read back and compared byte for byte with the
//! corpus, and every tile's status checked, before its figures count.

use std::time::Duration;

use dsr::gpu::{DecodeRun, Form, GpuContext, GpuDecoder, TileJob};
use dsr_gdeflate::TILE_SIZE;

use super::codec::Tiles;

/// One batch size's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BatchCase {
    /// Output bytes per submission.
    pub output_bytes: u64,
    /// Tiles per submission.
    pub tiles: usize,
    /// dsr's shader, GB/s of output (median).
    pub dsr_gbps: f64,
    /// `VK_NV_memory_decompression`, GB/s of output (median); `None` without the extension.
    pub nv_gbps: Option<f64>,
    /// With the shader's profiling build (`DSR_GDEFLATE_SPIRV`), per tile: cycles in each
    /// phase (tile, Huffman symbols, copies, refills, stored blocks, dynamic headers, fixed
    /// tables) and rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<f64>>,
}

/// The whole run.
#[derive(Debug)]
pub struct DecodeGpu {
    /// The shader form that ran.
    pub form: Form,
    /// Per batch size.
    pub batches: Vec<BatchCase>,
    /// Why the NV side did not run, where it did not.
    pub nv_missing: Option<String>,
}

fn gbps(bytes: u64, times: &mut [Duration]) -> f64 {
    bytes as f64 / super::median(times).as_secs_f64().max(1e-12) / 1e9
}

/// The batch of `output_bytes` (rounded up to whole tiles) from `tiles`, repeated as needed:
/// the input (tiles back to back, 4-byte aligned), the jobs (output tile i at i × 64 KiB), and
/// each job's expected bytes' place in `data`.
fn batch(tiles: &Tiles, data: &[u8], output_bytes: u64) -> (Vec<u8>, Vec<TileJob>, Vec<(usize, usize)>) {
    let count = output_bytes.div_ceil(TILE_SIZE as u64).max(1) as usize;
    let (mut input, mut jobs, mut expected) = (Vec::new(), Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let t = i % tiles.bounds.len();
        let (start, end) = tiles.bounds[t];
        let src_offset = input.len() as u64;
        input.extend_from_slice(&tiles.data[start..end]);
        input.resize(input.len().next_multiple_of(4), 0);
        let plain = t * TILE_SIZE..(t * TILE_SIZE + TILE_SIZE).min(data.len());
        jobs.push(TileJob {
            src_offset,
            src_len: (end - start) as u32,
            dst_offset: (i * TILE_SIZE) as u64,
            dst_len: plain.len() as u32,
        });
        expected.push((plain.start, plain.end));
    }
    (input, jobs, expected)
}

/// Checks a run's output against the corpus.
fn verify(run: &DecodeRun<'_>, data: &[u8], expected: &[(usize, usize)], side: &str) -> Result<(), String> {
    let output = run.read_output().map_err(|e| e.to_string())?;
    for (i, (job, &(start, end))) in run.tiles().iter().zip(expected).enumerate() {
        let at = job.dst_offset as usize;
        if output[at..at + job.dst_len as usize] != data[start..end] {
            return Err(format!("{side} decoded tile {i} of the batch wrong"));
        }
    }
    Ok(())
}

/// Measures each batch size; `form` forces the shader's form.
pub fn measure(
    context: &std::sync::Arc<GpuContext>,
    data: &[u8],
    tiles: &Tiles,
    batch_bytes: &[u64],
    runs: u32,
    form: Option<Form>,
) -> Result<DecodeGpu, String> {
    let decoder = GpuDecoder::new(context, form).map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    let mut nv_missing =
        (!context.nv_decompression()).then(|| "the device has no VK_NV_memory_decompression".to_owned());
    for &bytes in batch_bytes {
        let (input, jobs, expected) = batch(tiles, data, bytes);
        let output_len = (jobs.len() * TILE_SIZE) as u64;
        let out_bytes: u64 = jobs.iter().map(|j| j.dst_len as u64).sum();
        let run = DecodeRun::new(&decoder, &input, &jobs, output_len).map_err(|e| e.to_string())?;
        let (mut dsr_times, mut nv_times) = (Vec::new(), Vec::new());
        let mut profile = None;
        for round in 0..2 {
            let times = run.decode(runs).map_err(|e| e.to_string())?;
            if let Some((i, err)) = run
                .statuses()
                .iter()
                .enumerate()
                .find_map(|(i, s)| s.err().map(|e| (i, e)))
            {
                return Err(format!("dsr's shader failed tile {i} of the batch: {}", err.describe()));
            }
            if round == 0 {
                verify(&run, data, &expected, "dsr's shader")?;
                let words = run.profile();
                if words.iter().any(|&w| w != 0) {
                    let per_tile = (jobs.len() as f64) * runs as f64;
                    let mut figures: Vec<f64> = words[..7].iter().map(|&w| w as f64 * 256.0 / per_tile).collect();
                    figures.push(words[7] as f64 / per_tile);
                    profile = Some(figures);
                }
            }
            dsr_times.extend(times.into_iter().flatten());
            if nv_missing.is_none() {
                match run.decode_nv(runs) {
                    Ok(times) => {
                        if round == 0 {
                            verify(&run, data, &expected, "VK_NV_memory_decompression")?;
                        }
                        nv_times.extend(times.into_iter().flatten());
                    }
                    Err(err) => nv_missing = Some(err.to_string()),
                }
            }
        }
        if dsr_times.is_empty() {
            return Err("the compute queue has no timestamps: GPU times cannot be measured".into());
        }
        batches.push(BatchCase {
            output_bytes: out_bytes,
            tiles: jobs.len(),
            dsr_gbps: gbps(out_bytes, &mut dsr_times),
            nv_gbps: (!nv_times.is_empty()).then(|| gbps(out_bytes, &mut nv_times)),
            profile,
        });
    }
    Ok(DecodeGpu {
        form: decoder.form(),
        batches,
        nv_missing,
    })
}

/// Warm file → GDeflate → device-local buffer through the engine's GPU route, against the two
/// halves alone in the same run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndToEnd {
    /// The whole request (read, upload, decode on the GPU), GB/s of output, wall clock (median).
    pub e2e_gbps: f64,
    /// The same file read alone into host memory through the engine, GB/s of file bytes.
    pub read_gbps: f64,
    /// The same tiles decoded alone by the shader in one submission, GB/s of output (GPU time).
    pub decode_gbps: f64,
    /// e2e against the slower of the two halves, each as the time its part of the request takes.
    pub ratio_vs_slower: f64,
    /// The whole request again with its tile hashes checked on the GPU (as an archive's are),
    /// GB/s of output.
    pub e2e_verified_gbps: f64,
}

/// `stream` (a TileStream of `len` bytes) written to a file in the temporary directory, warmed,
/// then loaded into a GPU buffer on the GPU route `runs` times; the read alone and the decode alone
/// measured beside it.
pub fn end_to_end(
    context: &std::sync::Arc<GpuContext>,
    stream: &[u8],
    len: u64,
    decode_gbps: f64,
    runs: usize,
) -> Result<EndToEnd, String> {
    use std::time::Instant;
    let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(file.path(), stream).map_err(|e| e.to_string())?;
    let _ = std::fs::read(file.path()).map_err(|e| e.to_string())?; // warm
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = dsr::ExecutorConfig {
        workers,
        metrics: false,
        ..dsr::ExecutorConfig::default()
    };
    let (executor, _, _) = dsr::executor_with_gpu(
        super::trace::observe(config),
        dsr::io_from_env(),
        context,
        dsr::gpu::StagingConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    let gpu = dsr::gpu::allocate_buffer(context, len).map_err(|e| e.to_string())?;
    let host = dsr::HostBuffer::prefault(stream.len());
    let once = |request: dsr::Request| -> Result<std::time::Duration, String> {
        let mut batch = executor.batch();
        batch.push(request).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let report = executor.submit(batch).map_err(|e| e.to_string())?.wait();
        let elapsed = start.elapsed();
        match report.first_failure() {
            Some((_, err)) => Err(err.to_string()),
            None => Ok(elapsed),
        }
    };
    let mut plain = vec![0u8; len as usize];
    dsr_gdeflate::decompress(stream, &mut plain).map_err(|e| e.to_string())?;
    let hashes: std::sync::Arc<[u64]> = plain.chunks(65536).map(dsr::stages::tile_hash).collect();
    drop(plain);
    let to_gpu = || {
        dsr::Request::file_to_device(file.path(), 0, stream.len() as u64, &gpu, 0)
            .gdeflate(len)
            .decode_on(dsr::DecodeRoute::Gpu)
    };
    let (mut e2e, mut read, mut verified) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) + 1 {
        e2e.push(once(to_gpu())?);
        read.push(once(dsr::Request::file(file.path(), 0, stream.len() as u64, &host, 0))?);
        verified.push(once(to_gpu().verify_tiles(hashes.clone()))?);
    }
    // The first run of each warms the executor, the device's allocations and the destination.
    e2e.remove(0);
    read.remove(0);
    verified.remove(0);
    let e2e_gbps = len as f64 / super::median(&mut e2e).as_secs_f64() / 1e9;
    let read_gbps = stream.len() as f64 / super::median(&mut read).as_secs_f64() / 1e9;
    // Each half's time for this request; the slower bounds the whole.
    let read_time = stream.len() as f64 / (read_gbps * 1e9);
    let decode_time = len as f64 / (decode_gbps * 1e9);
    let slower_gbps = len as f64 / read_time.max(decode_time) / 1e9;
    Ok(EndToEnd {
        e2e_gbps,
        read_gbps,
        decode_gbps,
        ratio_vs_slower: e2e_gbps / slower_gbps,
        e2e_verified_gbps: len as f64 / super::median(&mut verified).as_secs_f64() / 1e9,
    })
}
