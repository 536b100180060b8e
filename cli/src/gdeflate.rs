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
        Gdeflate::Compress {
            input,
            output,
            level,
            threads,
            trace,
        } => {
            let trace = Trace::new(trace, 0);
            let began = Instant::now();
            let bytes = read(&input)?;
            trace.span("main", "read", began, serde_json::json!({"bytes": bytes.len()}));
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads.unwrap_or(0))
                .build()
                .map_err(|e| CliError::failed(format!("cannot start compression threads: {e}")))?;
            let start = Instant::now();
            let tiles: Vec<Vec<u8>> = pool.install(|| {
                bytes
                    .par_chunks(TILE_SIZE)
                    .enumerate()
                    .map_init(
                        || Encoder::new(Level::new(level)),
                        |encoder, (i, tile)| {
                            let began = Instant::now();
                            let mut out = Vec::new();
                            encoder.encode_tile(tile, &mut out);
                            let thread = rayon::current_thread_index().unwrap_or(0);
                            trace.span(
                                &format!("encoder {thread}"),
                                "encode tile",
                                began,
                                serde_json::json!({"tile": i, "bytes": out.len()}),
                            );
                            out
                        },
                    )
                    .collect()
            });
            let slices: Vec<&[u8]> = tiles.iter().map(Vec::as_slice).collect();
            let mut stream = Vec::new();
            dsr_gdeflate::tilestream::write(&slices, bytes.len() as u64, &mut stream)
                .map_err(|e| CliError::failed(format!("{}: {e}", input.display())))?;
            let began = Instant::now();
            write(&output, &stream)?;
            trace.span("main", "write", began, serde_json::json!({"bytes": stream.len()}));
            trace.write()?;
            eprintln!(
                "{} → {} bytes ({:.1}%) in {:.2} s",
                bytes.len(),
                stream.len(),
                100.0 * stream.len() as f64 / bytes.len().max(1) as f64,
                start.elapsed().as_secs_f64()
            );
            Ok(())
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
            let trace = Trace::new(trace, config.workers);
            config.observer = trace.recorder().map(|r| r as Arc<dyn dsr::engine::Observer>);
            decompress_streaming(&input, &output, &engine, config)?;
            trace.write()
        }
    }
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

/// Tiles a window of the stream decodes at once (16 MiB of output), at most a quarter of the
/// scratch budget's worth, so that several windows are in flight.
fn window_tiles(scratch: u64) -> usize {
    ((scratch / 4 / TILE_SIZE as u64) as usize).clamp(1, 256)
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
    let (data, ends, len) = read_table(input)?;
    let out = std::fs::File::create(output)
        .and_then(|f| f.set_len(len).map(|()| f))
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", output.display())))?;
    drop(out);
    let (executor, _) = engine.executor(config)?;
    let window = window_tiles(engine.scratch);
    let host = HostBuffer::new(0);
    let mut batch = executor.batch();
    let mut firsts = Vec::new();
    for first in (0..ends.len()).step_by(window) {
        let last = (first + window).min(ends.len());
        let from = if first == 0 { 0 } else { ends[first - 1] };
        let window_ends: Arc<[u64]> = ends[first..last].iter().map(|e| e - from).collect();
        let out_len = (last as u64 * TILE_SIZE as u64).min(len) - first as u64 * TILE_SIZE as u64;
        let request = Request::file(input, data + from, ends[last - 1] - from, &host, 0)
            .io(engine.policy())
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
        peak_rss() >> 20
    );
    Ok(())
}

/// This process's peak resident memory, in bytes.
pub fn peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss as u64 * 1024
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
