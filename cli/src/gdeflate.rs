//! `dsr gdeflate compress|decompress IN OUT`: raw DirectStorage TileStream files, so dsr
//! interoperates with every other GDeflate tool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use dsr::viz::TraceRecorder;
use dsr::{HostBuffer, Request};
use dsr_gdeflate::{Encoder, Level, TileStream, TILE_SIZE};
use rayon::prelude::*;

use super::{CliError, CliResult, EngineArgs};

#[derive(Debug, Args)]
pub struct GdeflateArgs {
    #[command(subcommand)]
    command: Gdeflate,
}

#[derive(Debug, Subcommand)]
enum Gdeflate {
    /// Compress IN into a TileStream file OUT.
    Compress {
        /// The file to compress (not empty: a TileStream holds 1 to 65535 tiles).
        input: PathBuf,
        /// The TileStream to write.
        output: PathBuf,
        /// Level: 0 (stored) to 12 (smallest).
        #[arg(long, default_value_t = Level::DEFAULT.get(), value_parser = clap::value_parser!(u8).range(0..=12))]
        level: u8,
        /// Compression threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Write a timeline trace here: Chrome trace-event JSON, each tile's encode a span on
        /// its thread's track, and the read and the write.
        #[arg(long, value_name = "JSON")]
        trace: Option<PathBuf>,
    },
    /// Decompress the TileStream IN into OUT: through the engine (tile groups on every worker),
    /// or with `--decode gpu` through dsr's GPU decoder (every tile in one dispatch, read back).
    Decompress {
        /// The TileStream to decode.
        input: PathBuf,
        /// Where the decoded bytes go.
        output: PathBuf,
        /// Where to decode: cpu (the engine's workers) or gpu (dsr's shader on the Vulkan
        /// device DSR_VK_DEVICE names, or the first).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"])]
        decode: String,
        /// Write a timeline trace here: Chrome trace-event JSON, the engine's nodes on their
        /// workers (or the GPU's dispatch), and the read and the write.
        #[arg(long, value_name = "JSON")]
        trace: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// The reference codec file to file, single-threaded (the peer of `dsr bench
    /// gdeflate-files`; builds with `--features reference-codec` only).
    #[cfg(feature = "reference-codec")]
    #[command(hide = true)]
    Reference {
        /// compress or decompress.
        #[arg(value_parser = ["compress", "decompress"])]
        what: String,
        input: PathBuf,
        output: PathBuf,
        #[arg(long, default_value_t = Level::DEFAULT.get())]
        level: u8,
    },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))
}

fn write(path: &PathBuf, bytes: &[u8]) -> CliResult {
    std::fs::write(path, bytes).map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))
}

/// The trace recorder `--trace` asks for, and where to write it.
struct Trace(Option<(PathBuf, Arc<TraceRecorder>)>);

impl Trace {
    fn new(path: Option<PathBuf>, workers: usize) -> Trace {
        Trace(path.map(|path| (path, Arc::new(TraceRecorder::new(workers)))))
    }

    fn recorder(&self) -> Option<Arc<TraceRecorder>> {
        self.0.as_ref().map(|(_, recorder)| recorder.clone())
    }

    /// `name` on `track` from `start` until now.
    fn span(&self, track: &str, name: &str, start: Instant, args: serde_json::Value) {
        if let Some((_, recorder)) = &self.0 {
            recorder.span(track, name, start, Instant::now(), args);
        }
    }

    fn write(&self) -> CliResult {
        match &self.0 {
            Some((path, recorder)) => crate::output::write_trace(path, recorder, |_, _| None),
            None => Ok(()),
        }
    }
}

pub fn run(args: GdeflateArgs) -> CliResult {
    match args.command {
        #[cfg(feature = "reference-codec")]
        Gdeflate::Reference {
            what,
            input,
            output,
            level,
        } => reference(&what, &input, &output, level),
        Gdeflate::Compress {
            input,
            output,
            level,
            threads,
            trace,
        } => {
            // One engine worker (reads and writes), traced as such.
            let trace = Trace::new(trace, 1);
            compress_streaming(&input, &output, Level::new(level), threads, &trace)?;
            trace.write()
        }
        Gdeflate::Decompress {
            input,
            output,
            decode,
            trace,
            ..
        } if decode == "gpu" => {
            let trace = Trace::new(trace, 0);
            decompress_gpu(&input, &output, &trace)?;
            trace.write()
        }
        Gdeflate::Decompress {
            input,
            output,
            engine,
            trace,
            ..
        } => {
            let mut config = engine.config();
            config.scratch_budget = decompress_scratch(config.scratch_budget, config.workers);
            let trace = Trace::new(trace, config.workers);
            config.observer = trace.recorder().map(|r| r as Arc<dyn dsr::engine::Observer>);
            decompress_streaming(&input, &output, &engine, config)?;
            trace.write()
        }
    }
}

/// Output bytes of input a window of `dsr gdeflate compress` reads and encodes at once.
const COMPRESS_WINDOW: usize = 256 * TILE_SIZE;

/// `dsr gdeflate compress`: IN read through the engine a window at a time (the next window's
/// read in flight while this one encodes on every thread), each window's tiles written after
/// the ones before, the header and table last, so memory holds about three windows whatever
/// the file's size. Byte-identical to compressing the whole file at once.
fn compress_streaming(
    input: &PathBuf,
    output: &PathBuf,
    level: Level,
    threads: Option<usize>,
    trace: &Trace,
) -> CliResult {
    let start = Instant::now();
    let failed = |e: &dyn std::fmt::Display| CliError::failed(format!("{}: {e}", input.display()));
    let len = dsr::file_len(input)?;
    let tiles = len.div_ceil(TILE_SIZE as u64) as usize;
    if tiles == 0 || tiles > dsr_gdeflate::tilestream::MAX_TILES {
        return Err(failed(&format!(
            "a TileStream holds 1 to 65535 tiles of 64 KiB (up to 4 GiB); this file is {len} bytes"
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| CliError::failed(format!("cannot start compression threads: {e}")))?;
    refuse_same_file(input, output)?;
    // Written beside OUT and renamed over it at the end: a failure half way (say a stream whose
    // table overflows, found only at the end) leaves OUT as it was.
    let partial = partial_path(output);
    let out_file = std::fs::File::create(&partial)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", partial.display())))?;
    let result = compress_into(input, &partial, &out_file, level, len, tiles, pool, trace, start);
    drop(out_file);
    match result {
        Ok(()) => std::fs::rename(&partial, output).map_err(|e| {
            CliError::failed(format!(
                "cannot move {} to {}: {e}",
                partial.display(),
                output.display()
            ))
        }),
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// `path` with `.dsr-partial` added to its name: where a command writes before renaming.
fn partial_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".dsr-partial");
    path.with_file_name(name)
}

/// Refuses an output that is the input (its pages would be overwritten while they are read).
fn refuse_same_file(input: &PathBuf, output: &PathBuf) -> CliResult {
    let same = std::fs::canonicalize(input)
        .ok()
        .is_some_and(|i| std::fs::canonicalize(output).ok() == Some(i));
    match same {
        true => Err(CliError::usage(format!(
            "{} is both the input and the output",
            input.display()
        ))),
        false => Ok(()),
    }
}

/// The windows of `compress_streaming`, into `output` (a fresh file).
#[allow(clippy::too_many_arguments)]
fn compress_into(
    input: &PathBuf,
    output: &PathBuf,
    out_file: &std::fs::File,
    level: Level,
    len: u64,
    tiles: usize,
    pool: rayon::ThreadPool,
    trace: &Trace,
    start: Instant,
) -> CliResult {
    let failed = |e: &dyn std::fmt::Display| CliError::failed(format!("{}: {e}", input.display()));
    // The engine reads and writes; one worker is plenty for that.
    let (executor, _) = dsr::executor_with_io(
        dsr::ExecutorConfig {
            workers: 1,
            observer: trace.recorder().map(|r| r as Arc<dyn dsr::engine::Observer>),
            ..dsr::ExecutorConfig::default()
        },
        dsr::io_from_env(),
    )?;
    let windows = (len as usize).div_ceil(COMPRESS_WINDOW);
    let window_len = |k: usize| (len - (k * COMPRESS_WINDOW) as u64).min(COMPRESS_WINDOW as u64);
    let cap = (len as usize).min(COMPRESS_WINDOW);
    let mut buffers = [HostBuffer::new(cap), HostBuffer::new(cap)];
    let read = |k: usize, buffer: &HostBuffer| -> Result<dsr::Batch, CliError> {
        let mut batch = executor.batch();
        batch.push(Request::file(
            input,
            (k * COMPRESS_WINDOW) as u64,
            window_len(k),
            buffer,
            0,
        ))?;
        Ok(executor.submit(batch)?)
    };
    let mut reading = Some(read(0, &buffers[0])?);
    let mut writing: std::collections::VecDeque<dsr::Batch> = Default::default();
    let mut sizes: Vec<u64> = Vec::with_capacity(tiles);
    let mut at = dsr_gdeflate::tilestream::header_len(tiles) as u64;
    let finished = |batch: dsr::Batch, what: &str| -> CliResult {
        match batch.wait().first_failure() {
            Some((_, err)) => Err(CliError::failed(format!("{what}: {err}"))),
            None => Ok(()),
        }
    };
    for k in 0..windows {
        let began = Instant::now();
        finished(
            reading.take().expect("each window's read is submitted"),
            &input.display().to_string(),
        )?;
        trace.span(
            "main",
            "wait for the window's read",
            began,
            serde_json::json!({"window": k}),
        );
        if k + 1 < windows {
            reading = Some(read(k + 1, &buffers[(k + 1) % 2])?);
        }
        let bytes = buffers[k % 2]
            .as_slice()
            .ok_or_else(|| CliError::failed("a read window is still held by the engine"))?;
        let bytes = &bytes[..window_len(k) as usize];
        let first = k * COMPRESS_WINDOW / TILE_SIZE;
        let encoded: Vec<Vec<u8>> = pool.install(|| {
            bytes
                .par_chunks(TILE_SIZE)
                .enumerate()
                .map_init(
                    || Encoder::new(level),
                    |encoder, (i, tile)| {
                        let began = Instant::now();
                        let mut out = Vec::new();
                        encoder.encode_tile(tile, &mut out);
                        let thread = rayon::current_thread_index().unwrap_or(0);
                        trace.span(
                            &format!("encoder {thread}"),
                            "encode tile",
                            began,
                            serde_json::json!({"tile": first + i, "bytes": out.len()}),
                        );
                        out
                    },
                )
                .collect()
        });
        sizes.extend(encoded.iter().map(|t| t.len() as u64));
        let packed: Arc<[u8]> = encoded.concat().into();
        // At most two windows' writes in flight: memory stays bounded.
        if writing.len() == 2 {
            finished(
                writing.pop_front().expect("two in flight"),
                &output.display().to_string(),
            )?;
        }
        let mut batch = executor.batch();
        // Through the page cache, as `cp` writes (see `EngineArgs::file_to_file_policy`).
        batch.push(Request::write(packed.clone(), 0, packed.len() as u64, output, at).io(dsr::IoPolicy::Buffered))?;
        writing.push_back(executor.submit(batch)?);
        at += packed.len() as u64;
    }
    let mut header = Vec::new();
    dsr_gdeflate::tilestream::write_header(&sizes, len, &mut header).map_err(|e| failed(&e))?;
    let mut batch = executor.batch();
    batch.push(Request::write(
        Arc::<[u8]>::from(header),
        0,
        dsr_gdeflate::tilestream::header_len(tiles) as u64,
        output,
        0,
    ))?;
    writing.push_back(executor.submit(batch)?);
    for batch in writing {
        finished(batch, &output.display().to_string())?;
    }
    out_file
        .set_len(at)
        .map_err(|e| CliError::failed(format!("cannot size {}: {e}", output.display())))?;
    eprintln!(
        "{len} → {at} bytes ({:.1}%) in {:.2} s ({} window(s); peak memory {} MiB)",
        100.0 * at as f64 / len.max(1) as f64,
        start.elapsed().as_secs_f64(),
        windows,
        crate::output::peak_rss() >> 20
    );
    Ok(())
}

/// The tile table of the TileStream at `path`: where its data starts, each tile's end from
/// there, the uncompressed size. Reads the header and the table alone.
fn read_table(path: &PathBuf) -> Result<(u64, Vec<u64>, u64), CliError> {
    use std::os::unix::fs::FileExt;
    let failed = |e: &dyn std::fmt::Display| CliError::failed(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| failed(&e))?;
    let file_len = file.metadata().map_err(|e| failed(&e))?.len();
    let mut prefix = vec![0u8; 8];
    file.read_exact_at(&mut prefix, 0)
        .map_err(|_| failed(&"too short for a GDeflate TileStream's header"))?;
    let tiles = u16::from_le_bytes([prefix[2], prefix[3]]) as usize;
    prefix.resize(8 + 4 * tiles, 0);
    file.read_exact_at(&mut prefix[8..], 8)
        .map_err(|_| failed(&"too short for its GDeflate tile table"))?;
    let parsed = TileStream::parse_prefix(&prefix)
        .map_err(|e| failed(&e))?
        .ok_or_else(|| failed(&"too short for its GDeflate tile table"))?;
    parsed.check_order().map_err(|e| failed(&e))?;
    let data = prefix.len() as u64;
    let stream_len = parsed.stream_len().ok_or_else(|| failed(&"its tile table overflows"))? as u64;
    if stream_len != file_len {
        return Err(failed(&format!(
            "not a whole GDeflate TileStream: its tile table says it is {stream_len} bytes, the file is {file_len}"
        )));
    }
    let ends = (0..parsed.tiles()).map(|i| parsed.tile_end(i) as u64 - data).collect();
    Ok((data, ends, parsed.uncompressed_len()))
}

/// Tiles a window of the stream decodes at once (4 MiB of output), at most a quarter of the
/// scratch budget's worth, so that several windows are in flight.
fn window_tiles(scratch: u64) -> usize {
    ((scratch / 4 / TILE_SIZE as u64) as usize).clamp(1, 64)
}

/// The scratch a decompression holds at most: about three windows (decoded, and compressed at
/// worst as large) per worker, within the caller's budget. Enough to keep every worker decoding
/// while the next windows are read and the last written; more only made fresh memory to fault
/// in, which on the development VM made one run in three take 2–4 times as long
/// (docs/benchmarks.md, "Buffered writes on the workers").
fn decompress_scratch(budget: u64, workers: usize) -> u64 {
    let window = window_tiles(budget) as u64 * TILE_SIZE as u64;
    budget.min(workers.max(1) as u64 * 3 * 2 * window)
}

/// `dsr gdeflate decompress`: the stream decoded into OUT through the engine, window by window
/// (its table read once; each window's tiles read, decoded on every worker and written), so
/// memory stays within the scratch budget whatever the stream's size.
fn decompress_streaming(
    input: &PathBuf,
    output: &PathBuf,
    engine: &EngineArgs,
    config: dsr::ExecutorConfig,
) -> CliResult {
    let start = Instant::now();
    refuse_same_file(input, output)?;
    let (data, ends, len) = read_table(input)?;
    // Sized, not truncated first: an existing file's pages are overwritten in place rather
    // than freed and allocated again.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(output)
        .and_then(|f| f.set_len(len))
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", output.display())))?;
    let window = window_tiles(config.scratch_budget);
    let (executor, _) = engine.executor(config)?;
    let host = HostBuffer::new(0);
    let mut batch = executor.batch();
    let mut firsts = Vec::new();
    for first in (0..ends.len()).step_by(window) {
        let last = (first + window).min(ends.len());
        let from = if first == 0 { 0 } else { ends[first - 1] };
        let window_ends: Arc<[u64]> = ends[first..last].iter().map(|e| e - from).collect();
        let out_len = (last as u64 * TILE_SIZE as u64).min(len) - first as u64 * TILE_SIZE as u64;
        let request = Request::file(input, data + from, ends[last - 1] - from, &host, 0)
            .io(engine.file_to_file_policy())
            .gdeflate_tiles(out_len, window_ends)
            .to_file(dsr::FileSource::Path(output.clone()), first as u64 * TILE_SIZE as u64);
        batch.push(request)?;
        firsts.push(first);
    }
    let report = executor.submit(batch)?.wait();
    if let Some((id, err)) = report.first_failure() {
        // Tiles are numbered within their window: name them in the stream.
        let tile = err.tile().map(|t| firsts[id.index()] as u64 + t as u64);
        let at = tile.map_or(String::new(), |t| format!(" (tile {t} of the stream)"));
        return Err(CliError::failed(format!("{}: {err}{at}", input.display())));
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{} → {len} bytes in {:.2} ms ({:.0} MB/s, {} worker(s), {} window(s) of up to {} tiles; peak memory {} MiB)",
        data + ends.last().copied().unwrap_or(0),
        elapsed.as_secs_f64() * 1e3,
        len as f64 / elapsed.as_secs_f64() / 1e6,
        executor.workers(),
        firsts.len(),
        window,
        crate::output::peak_rss() >> 20
    );
    Ok(())
}

/// `dsr gdeflate decompress --decode gpu`: the whole stream staged on the device, every tile in
/// one dispatch of dsr's shader, statuses checked, the output read back.
fn decompress_gpu(input: &PathBuf, output: &PathBuf, trace: &Trace) -> CliResult {
    use dsr::gpu::{DecodeRun, GpuConfig, GpuContext, GpuDecoder, TileJob};
    let began = Instant::now();
    let stream = read(input)?;
    trace.span("main", "read", began, serde_json::json!({"bytes": stream.len()}));
    let failed = |e: &dyn std::fmt::Display| CliError::failed(format!("{}: {e}", input.display()));
    let parsed = TileStream::parse(&stream).map_err(|e| failed(&e))?;
    let mut jobs = Vec::with_capacity(parsed.tiles());
    for i in 0..parsed.tiles() {
        let (span, size) = parsed.tile_span(i).map_err(|e| failed(&e))?;
        jobs.push(TileJob {
            src_offset: span.start as u64,
            src_len: span.len() as u32,
            dst_offset: (i * TILE_SIZE) as u64,
            dst_len: size as u32,
        });
    }
    let len = parsed.uncompressed_len();
    let context = GpuContext::new(&GpuConfig::from_env())?;
    let decoder = GpuDecoder::new(&context, None)?;
    let start = Instant::now();
    let run = DecodeRun::new(&decoder, &stream, &jobs, len).map_err(|e| failed(&e))?;
    trace.span(
        "main",
        "stage on the GPU",
        start,
        serde_json::json!({"bytes": stream.len()}),
    );
    let began = Instant::now();
    let gpu = run.decode(1)?.first().copied().flatten();
    trace.span(
        "main",
        "decode on the GPU (submit and wait)",
        began,
        serde_json::json!({"tiles": jobs.len(), "gpu_ms": gpu.map(|t| t.as_secs_f64() * 1e3)}),
    );
    if let Some((tile, reason)) = run
        .statuses()
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.err().map(|r| (i, r)))
    {
        return Err(failed(&dsr_gdeflate::Error {
            reason,
            tile: Some(tile as u32),
        }));
    }
    let began = Instant::now();
    let bytes = run.read_output()?;
    trace.span("main", "read back", began, serde_json::json!({"bytes": len}));
    let elapsed = start.elapsed();
    let began = Instant::now();
    write(output, &bytes)?;
    trace.span("main", "write", began, serde_json::json!({"bytes": len}));
    eprintln!(
        "{} → {len} bytes on {} ({} decoder): {:.2} ms with staging and read-back{}",
        stream.len(),
        context.info().name,
        decoder.form().name(),
        elapsed.as_secs_f64() * 1e3,
        gpu.map_or(String::new(), |t| format!(
            ", {:.2} ms on the GPU ({:.2} GB/s)",
            t.as_secs_f64() * 1e3,
            len as f64 / t.as_secs_f64() / 1e9
        ))
    );
    Ok(())
}

/// The reference codec file to file: the whole input read, every tile coded on this thread, the
/// output written (a TileStream in dsr's layout, which is the reference writer's).
#[cfg(feature = "reference-codec")]
fn reference(what: &str, input: &PathBuf, output: &PathBuf, level: u8) -> CliResult {
    let bytes = read(input)?;
    let failed = |e: &dyn std::fmt::Display| CliError::failed(format!("{}: {e}", input.display()));
    let out = match what {
        "compress" => {
            let tiles = dsr_gdeflate_reference::compress_tiles(&bytes, level);
            let slices: Vec<&[u8]> = tiles.iter().map(Vec::as_slice).collect();
            let mut stream = Vec::new();
            dsr_gdeflate::tilestream::write(&slices, bytes.len() as u64, &mut stream).map_err(|e| failed(&e))?;
            stream
        }
        _ => {
            let stream = TileStream::parse(&bytes).map_err(|e| failed(&e))?;
            let mut out = vec![0u8; stream.uncompressed_len() as usize];
            let mut decoder = dsr_gdeflate_reference::Decompressor::new();
            for (i, chunk) in out.chunks_mut(TILE_SIZE).enumerate() {
                let (tile, _) = stream.tile(i).map_err(|e| failed(&e))?;
                // The tile is followed by the next one or the end of the file's bytes: the
                // reference's look-ahead stays inside `bytes` but for the last tile, which is
                // copied into padding.
                let result = match i + 1 == stream.tiles() {
                    true => decoder.decompress_tile(tile, chunk),
                    false => decoder.decompress_unpadded(tile, chunk),
                };
                result.map_err(|e| failed(&format!("the reference failed on tile {i}: {e:?}")))?;
            }
            out
        }
    };
    write(output, &out)
}
