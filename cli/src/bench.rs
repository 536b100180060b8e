//! `dsr bench ...`: benchmarks, each measuring dsr and a peer in the same run.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use crate::plot::{bars, Case};

use dsr_cli::harness::exec::{self, Shape};

use super::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    bench: Bench,
    /// Also draw the cases as an SVG bar chart here, dsr beside its peers.
    #[arg(long, global = true, value_name = "SVG")]
    plot: Option<PathBuf>,
    /// Also write a timeline trace of the whole bench here: Chrome trace-event JSON (Perfetto
    /// UI, chrome://tracing) with dsr's engine runs node by node and the codecs' and peers'
    /// runs as spans.
    #[arg(long, global = true, value_name = "JSON")]
    trace: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Executor overhead per node on large DAGs of tiny nodes (chains, fan-out/fan-in, a random
    /// DAG), against rayon running the same graphs with the same threads in the same run.
    Exec(ExecArgs),
    /// GDeflate decoding on the CPU, dsr against the reference decoder on the same tiles in the
    /// same run (the reference is linked only in builds with `--features reference-codec`).
    DecodeCpu(CodecArgs),
    /// GDeflate compression ratio and speed, dsr's levels against the reference's.
    EncodeCpu(CodecArgs),
    /// GDeflate decoding on the GPU: dsr's shader against the driver's
    /// VK_NV_memory_decompression (where the device has it) on the same tiles, by batch size,
    /// GB/s of output from GPU timestamps, every byte verified; and dsr's CPU decoder on all
    /// workers, in the same run.
    DecodeGpu(DecodeGpuArgs),
    /// File reads, dsr against fio with the same settings in the same run: warm page cache and
    /// O_DIRECT, 1 MiB sequential and 64 KiB random at depth 32.
    Read(ReadArgs),
    /// Host memory and files into GPU buffers: dsr's upload path against a bare vkCmdCopyBuffer
    /// loop (same staging, same regions), and a warm file end to end against a naive
    /// pread-copy-wait loop, at 64 KiB, 1 MiB and 16 MiB regions.
    Upload(UploadArgs),
    /// The submit path: small memory requests through the Rust queue and through the C ABI
    /// (libdsr.so beside this binary), against the engine's batch API in the same run: requests
    /// per second end to end, and submitting-thread CPU per request.
    Submit(SubmitArgs),
    /// `dsr gdeflate compress|decompress` file to file, whole process, against the reference
    /// codec doing the same file to file on one thread (`dsr gdeflate reference`), alternating:
    /// needs a build with `--features reference-codec`.
    GdeflateFiles(CodecArgs),
    /// An archive's assets against the loose files it was packed from, whole process: `dsr
    /// load ARCHIVE` (every tile hash verified) against this binary reading every file under
    /// DIR into memory of its own, one after another, as a game without DirectStorage does;
    /// alternating runs, warm (and cold, after dropping the page cache, with `--cold`).
    LooseFiles(LooseArgs),
    /// Not a speed bench: rounds of random requests (files and memory, plain and GDeflate, into
    /// host memory, GPU buffers and files) through the batch API, the Rust queue and the C ABI,
    /// under injected EIO, short reads, late completions, device losses and cancel storms, with
    /// every promise checked (exactly one report per request, verified bytes, nothing written
    /// after an acknowledged cancellation or outside a destination, budgets and handles back);
    /// fails if any is broken. See docs/reliability.md.
    Soak(SoakArgs),
    /// (The peer of `loose-files`: read every file under DIR into memory, keep it, exit.)
    #[command(hide = true)]
    ReadLoose { dir: PathBuf },
}

#[derive(Debug, Args)]
struct SoakArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seed of every random choice (default: from the clock; the report says which).
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// The engine's scratch budget: small, so requests wait for it (suffixes K, M, G).
    #[arg(long, default_value = "4M", value_parser = super::parse_size)]
    scratch: u64,
    /// Leave the GPU out (by default its destinations and device losses are soaked on the
    /// `DSR_VK_DEVICE` device under the validation layer, when there is one).
    #[arg(long)]
    no_gpu: bool,
    /// libdsr.so for the C ABI's rounds (default: beside this binary).
    #[arg(long)]
    library: Option<PathBuf>,
    /// A round that loses the GPU device every this many rounds (0: none).
    #[arg(long, default_value_t = 8)]
    device_loss_every: u64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LooseArgs {
    /// The directory of loose files.
    dir: PathBuf,
    /// The archive packed from it.
    archive: PathBuf,
    /// Alternating runs per side.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also measure with the page cache dropped before each run (needs root).
    #[arg(long)]
    cold: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// Requests per run.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Alternating runs per side; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// libdsr.so to load for the C side (default: beside this binary).
    #[arg(long)]
    library: Option<std::path::PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct UploadArgs {
    /// The file for the end-to-end case (default: a generated one of --size-mib in the
    /// temporary directory).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Bytes per run, in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Region sizes (suffixes K, M, G accepted).
    #[arg(long, value_delimiter = ',', default_value = "64K,1M,16M", value_parser = super::parse_size)]
    regions: Vec<u64>,
    /// Alternating runs per side; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReadArgs {
    /// The file to read (on a file system with direct I/O for the O_DIRECT modes).
    file: std::path::PathBuf,
    /// Alternating runs per side; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these modes (warm-seq-1m, direct-seq-1m, warm-rand-64k, direct-rand-64k).
    #[arg(long, value_delimiter = ',')]
    modes: Vec<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CodecArgs {
    /// Data to use (default: a generated mixed corpus: text, executables, compressed files,
    /// random bytes and zeros; see src/bench/corpus.rs).
    file: Option<std::path::PathBuf>,
    /// Size of the generated corpus, in MiB.
    #[arg(long, default_value_t = 64)]
    size_mib: usize,
    /// Thread counts to measure decoding with (both sides).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Levels to measure compression at (both sides).
    #[arg(long, value_delimiter = ',', default_value = "1,6,9,12")]
    levels: Vec<u8>,
    /// Alternating runs per side; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

impl CodecArgs {
    fn data(&self) -> Result<(Vec<u8>, String), CliError> {
        match &self.file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))?;
                if bytes.is_empty() {
                    return Err(CliError::usage("the benchmark file is empty"));
                }
                Ok((bytes, format!("file {}", path.display())))
            }
            None => Ok((
                dsr_cli::harness::corpus::mixed(self.size_mib.max(1) << 20, 0xc0de),
                format!(
                    "mixed corpus, {} MiB: 30% text, 30% executables, 15% compressed files, 10% random, 15% zeros",
                    self.size_mib.max(1)
                ),
            )),
        }
    }
}

#[derive(Debug, Args)]
struct DecodeGpuArgs {
    /// Data to use (default: the generated mixed corpus of --size-mib).
    file: Option<std::path::PathBuf>,
    /// Size of the generated corpus, in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: usize,
    /// Output per submission, in MiB (the corpus's tiles repeat to fill a larger batch).
    #[arg(long, value_delimiter = ',', default_value = "8,32,128,512")]
    batch_mib: Vec<u64>,
    /// Compression level of the tiles (dsr's encoder).
    #[arg(long, default_value_t = 9)]
    level: u8,
    /// Timed decodes per side per round (two rounds, alternating); medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// CPU workers for the CPU decoder's side (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// The shader's form: auto (wave32 where subgroups are 32 lanes), shared or wave32.
    #[arg(long, default_value = "auto")]
    form: String,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Nodes per graph.
    #[arg(long, default_value_t = 1_000_000)]
    nodes: u32,
    /// Worker counts to measure (both sides use the same).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Alternating runs per side; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> CliResult {
    let plot = args.plot.as_deref();
    let recorder = args.trace.as_ref().map(|_| dsr_cli::harness::trace::install());
    let result = match args.bench {
        Bench::Exec(args) => run_exec(args, plot),
        Bench::DecodeCpu(args) => run_decode(args, plot),
        Bench::EncodeCpu(args) => run_encode(args, plot),
        Bench::DecodeGpu(args) => run_decode_gpu(args, plot),
        Bench::Read(args) => run_read(args, plot),
        Bench::Upload(args) => run_upload(args, plot),
        Bench::Submit(args) => run_submit(args, plot),
        Bench::GdeflateFiles(args) => run_gdeflate_files(args, plot),
        Bench::LooseFiles(args) => run_loose_files(args, plot),
        Bench::Soak(args) => run_soak(args),
        Bench::ReadLoose { dir } => read_loose(&dir),
    };
    if let (Some(path), Some(recorder)) = (&args.trace, recorder) {
        crate::output::write_trace(path, &recorder, |_, _| None)?;
    }
    result
}

/// Draws `cases` to `plot`, if asked.
fn plot_to(plot: Option<&Path>, title: &str, unit: &str, cases: &[Case]) -> CliResult {
    match plot {
        Some(path) => bars(path, title, unit, cases),
        None => Ok(()),
    }
}

fn run_decode_gpu(args: DecodeGpuArgs, plot: Option<&Path>) -> CliResult {
    use dsr_cli::harness::{codec, decode_gpu};
    let form = match args.form.as_str() {
        "auto" => None,
        "shared" => Some(dsr::gpu::Form::Shared),
        "wave32" => Some(dsr::gpu::Form::Wave32),
        other => {
            return Err(CliError::usage(format!(
                "--form is auto, shared or wave32, not {other:?}"
            )))
        }
    };
    if args.batch_mib.is_empty() || args.batch_mib.contains(&0) {
        return Err(CliError::usage("--batch-mib takes sizes of at least 1 MiB"));
    }
    let codec_args = CodecArgs {
        file: args.file.clone(),
        size_mib: args.size_mib,
        threads: Vec::new(),
        levels: Vec::new(),
        runs: 1,
        json: false,
    };
    let (data, what) = codec_args.data()?;
    let level = dsr_gdeflate::Level::new(args.level.min(12));
    let mut encoder = dsr_gdeflate::Encoder::new(level);
    let tiles = codec::Tiles::new(&data, |t| {
        let mut out = Vec::new();
        encoder.encode_tile(t, &mut out);
        out
    });
    let context = dsr::gpu::GpuContext::new(&dsr::gpu::GpuConfig::from_env())?;
    let batches: Vec<u64> = args.batch_mib.iter().map(|&m| m << 20).collect();
    let result =
        decode_gpu::measure(&context, &data, &tiles, &batches, args.runs.max(1), form).map_err(CliError::failed)?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let stream = codec::tilestream_of(&tiles);
    let cpu_gbps =
        codec::engine_decode(&stream, data.len(), workers, args.runs.max(1) as usize).map_err(CliError::failed)? / 1e3;
    let largest = result.batches.last().expect("at least one batch");
    // End to end: the corpus's TileStream as a warm file into a GPU buffer on the GPU route;
    // the decode alone is the batch closest in size to the corpus.
    let alone = result
        .batches
        .iter()
        .min_by_key(|b| b.output_bytes.abs_diff(data.len() as u64))
        .expect("at least one batch");
    let e2e = decode_gpu::end_to_end(
        &context,
        &stream,
        data.len() as u64,
        alone.dsr_gbps,
        args.runs.max(1) as usize,
    )
    .map_err(CliError::failed)?;
    let info = context.info();
    let mut plotted: Vec<Case> = result
        .batches
        .iter()
        .map(|b| {
            Case::new(
                format!("{} per submission", dsr::viz::dot::human_bytes(b.output_bytes)),
                [
                    ("dsr shader", Some(b.dsr_gbps)),
                    ("VK_NV_memory_decompression", b.nv_gbps),
                ],
            )
        })
        .collect();
    plotted.push(Case::new("CPU decoder, all workers", [("dsr CPU", Some(cpu_gbps))]));
    plotted.push(Case::new(
        "warm file → GPU buffer",
        [
            ("end to end", Some(e2e.e2e_gbps)),
            ("read alone", Some(e2e.read_gbps)),
            ("decode alone", Some(e2e.decode_gbps)),
        ],
    ));
    plot_to(
        plot,
        &format!("GDeflate on the GPU: {}", info.name),
        "GB/s of output",
        &plotted,
    )?;
    if args.json {
        let doc = json!({
            "bench": "decode-gpu",
            "device": info.name,
            "driver": info.driver,
            "data": what,
            "level": level.get(),
            "form": result.form.name(),
            "tiles": tiles.bounds.len(),
            "uncompressed_bytes": data.len(),
            "compressed_bytes": tiles.compressed(),
            "dsr_gbps": largest.dsr_gbps,
            "nv_gbps": largest.nv_gbps,
            "nv_missing": result.nv_missing,
            "cpu_gbps": cpu_gbps,
            "cpu_workers": workers,
            "e2e_gbps": e2e.e2e_gbps,
            "e2e": e2e,
            "runs": args.runs,
            "batches": result.batches,
        });
        println!("{doc}");
        return Ok(());
    }
    println!(
        "{} ({}), {what}, level {}: {} tiles, ratio {:.3}, shader form {}",
        info.name,
        info.driver,
        level.get(),
        tiles.bounds.len(),
        tiles.compressed() as f64 / data.len() as f64,
        result.form.name()
    );
    for case in &result.batches {
        let nv = case.nv_gbps.map_or("n/a".to_owned(), |nv| {
            format!("{nv:.2} GB/s ({:.2}x)", case.dsr_gbps / nv)
        });
        println!(
            "batch {:>9} ({:>5} tiles)   dsr shader {:>7.2} GB/s   VK_NV_memory_decompression {nv}",
            dsr::viz::dot::human_bytes(case.output_bytes),
            case.tiles,
            case.dsr_gbps
        );
    }
    if let Some(why) = &result.nv_missing {
        println!("VK_NV_memory_decompression not measured: {why}");
    }
    println!("CPU decoder, {workers} workers: {cpu_gbps:.2} GB/s");
    println!(
        "warm file → GPU buffer, decoded on the GPU: {:.2} GB/s (read alone {:.2} GB/s, decode alone {:.2} GB/s: {:.2}x the slower); \
         with tile hashes checked on the GPU {:.2} GB/s",
        e2e.e2e_gbps, e2e.read_gbps, e2e.decode_gbps, e2e.ratio_vs_slower, e2e.e2e_verified_gbps
    );
    Ok(())
}

fn run_upload(args: UploadArgs, plot: Option<&Path>) -> CliResult {
    use dsr_cli::harness::upload;
    let context = dsr::gpu::GpuContext::new(&dsr::gpu::GpuConfig::from_env())?;
    let total = args.size_mib.max(1) << 20;
    let generated;
    let file = match &args.file {
        Some(file) => file.clone(),
        None => {
            generated = tempfile::NamedTempFile::new()
                .map_err(|e| CliError::failed(format!("cannot create a temporary file: {e}")))?;
            let chunk: Vec<u8> = (0..1u32 << 20)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect();
            let mut out = std::io::BufWriter::new(generated.as_file());
            for _ in 0..args.size_mib.max(1) {
                std::io::Write::write_all(&mut out, &chunk)
                    .map_err(|e| CliError::failed(format!("cannot write the temporary file: {e}")))?;
            }
            drop(out);
            generated.path().to_path_buf()
        }
    };
    let mut cases = Vec::new();
    for &region in &args.regions {
        for case in [
            upload::upload_vs_bare(&context, total, region.max(4096), args.runs)?,
            upload::file_vs_naive(&context, &file, region.max(4096), args.runs)?,
        ] {
            if !args.json {
                let (peer, name) = match (case.bare_copy_gbps, case.naive_gbps) {
                    (Some(bare), _) => (bare, "bare vkCmdCopyBuffer"),
                    (_, Some(naive)) => (naive, "naive loop"),
                    _ => (f64::NAN, "?"),
                };
                println!(
                    "{:<7} regions {:>9}   dsr {:>7.2} GB/s   {name} {:>7.2} GB/s   ({:.2}x)",
                    case.case,
                    dsr::viz::dot::human_bytes(case.region_bytes),
                    case.dsr_gbps,
                    peer,
                    case.ratio
                );
                if let (Some(read), Some(copy), Some(ratio)) =
                    (case.read_alone_gbps, case.copy_alone_gbps, case.ratio_vs_slower_half)
                {
                    println!(
                        "{:<7} {:>19}   read alone {read:.2} GB/s, copy alone {copy:.2} GB/s   ({ratio:.2}x the slower)",
                        "", ""
                    );
                }
            }
            cases.push(case);
        }
    }
    let plotted: Vec<Case> = cases
        .iter()
        .map(|c| {
            Case::new(
                format!("{} {}", c.case, dsr::viz::dot::human_bytes(c.region_bytes)),
                [
                    ("dsr", Some(c.dsr_gbps)),
                    ("bare vkCmdCopyBuffer", c.bare_copy_gbps),
                    ("naive loop", c.naive_gbps),
                ],
            )
        })
        .collect();
    plot_to(plot, "Into GPU buffers", "GB/s", &plotted)?;
    if args.json {
        let info = context.info();
        let doc = json!({
            "bench": "upload",
            "device": info.name,
            "driver": info.driver,
            "bytes": total,
            "runs": args.runs,
            "staging_bytes": upload::STAGING,
            "cases": cases,
        });
        println!("{doc}");
    }
    Ok(())
}

fn run_submit(args: SubmitArgs, plot: Option<&Path>) -> CliResult {
    use dsr_cli::harness::submit;
    if args.requests == 0 {
        return Err(CliError::usage("--requests must be at least 1"));
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let library = args.library.clone().or_else(submit::default_library);
    let result = submit::measure(args.requests, args.runs, workers, library.as_deref())?;
    let c_run = result.c.as_ref().ok();
    plot_to(
        plot,
        &format!("The submit path, {workers} workers"),
        "ns of submitting-thread CPU per request",
        &[Case::new(
            format!("{} requests", args.requests),
            [
                ("batch API", Some(result.batch.submit_cpu_ns_per_req)),
                ("Rust queue", Some(result.rust.submit_cpu_ns_per_req)),
                (
                    "Rust queue, per-request buffers",
                    Some(result.rust_distinct.submit_cpu_ns_per_req),
                ),
                ("C ABI", c_run.map(|c| c.submit_cpu_ns_per_req)),
            ],
        )],
    )?;
    if args.json {
        let doc = json!({
            "bench": "submit",
            "requests": args.requests,
            "request_bytes": submit::REQUEST_BYTES,
            "runs": args.runs,
            "workers": workers,
            "batch_req_per_s": result.batch.req_per_s,
            "batch_submit_cpu_ns_per_req": result.batch.submit_cpu_ns_per_req,
            "rust_req_per_s": result.rust.req_per_s,
            "c_req_per_s": c_run.map(|c| c.req_per_s),
            "submit_cpu_ns_per_req": result.rust.submit_cpu_ns_per_req,
            "rust_distinct_req_per_s": result.rust_distinct.req_per_s,
            "rust_distinct_submit_cpu_ns_per_req": result.rust_distinct.submit_cpu_ns_per_req,
            "c_submit_cpu_ns_per_req": c_run.map(|c| c.submit_cpu_ns_per_req),
            "c_error": result.c.as_ref().err(),
        });
        println!("{doc}");
        return Ok(());
    }
    let line = |name: &str, run: &submit::SubmitRun| {
        println!(
            "{name:<12} {:>10.0} requests/s   {:>7.0} ns of submitting-thread CPU per request   ({:.2}x the batch API's rate)",
            run.req_per_s,
            run.submit_cpu_ns_per_req,
            run.req_per_s / result.batch.req_per_s
        );
    };
    line("batch API", &result.batch);
    line("Rust queue", &result.rust);
    line("  (distinct)", &result.rust_distinct);
    match &result.c {
        Ok(run) => line("C ABI", run),
        Err(reason) => println!("C ABI        not measured: {reason}"),
    }
    Ok(())
}

fn run_exec(args: ExecArgs, plot: Option<&Path>) -> CliResult {
    if args.nodes < 2 {
        return Err(CliError::usage("--nodes must be at least 2"));
    }
    let mut results = Vec::new();
    for &workers in &args.workers {
        for shape in Shape::standard(args.nodes) {
            let result = exec::measure(shape, workers.max(1), args.runs)?;
            if !args.json {
                println!(
                    "{:<11} workers {}  nodes {:>8}   dsr {:>6.1} ns/node   rayon spawn {:>6.1} ns/task ({:.2}x)   rayon inline {:>6.1} ns/task ({:.2}x)   compile {:.0} ns/node",
                    result.shape,
                    result.workers,
                    result.nodes,
                    result.dsr_ns_per_node,
                    result.rayon_ns_per_task,
                    result.ratio,
                    result.rayon_inline_ns_per_task,
                    result.ratio_inline,
                    result.dsr_compile_ns_per_node
                );
            }
            results.push(result);
        }
    }
    let plotted: Vec<Case> = results
        .iter()
        .map(|r| {
            Case::new(
                format!("{}, {} workers", r.shape, r.workers),
                [
                    ("dsr", Some(r.dsr_ns_per_node)),
                    ("rayon spawn", Some(r.rayon_ns_per_task)),
                    ("rayon inline", Some(r.rayon_inline_ns_per_task)),
                ],
            )
        })
        .collect();
    plot_to(plot, "Executor overhead", "ns per node (lower is better)", &plotted)?;
    if args.json {
        let doc = json!({ "bench": "exec", "runs": args.runs, "results": results });
        println!("{doc}");
    }
    Ok(())
}

const NO_REFERENCE: &str = "the reference codec is not built in: run `cargo run --release --features \
                            reference-codec -- bench ...` to measure it beside dsr";

fn run_decode(args: CodecArgs, plot: Option<&Path>) -> CliResult {
    use dsr_cli::harness::codec;
    let (data, what) = args.data()?;
    // The same tiles for both sides: compressed as a shipped asset would be. With the reference
    // built in, by the reference at level 9; otherwise by dsr at its default level.
    #[cfg(feature = "reference-codec")]
    let tiles = {
        let mut compressor = dsr_gdeflate_reference::Compressor::new(9);
        codec::Tiles::new(&data, |t| compressor.compress_tile(t))
    };
    #[cfg(not(feature = "reference-codec"))]
    let tiles = {
        let mut encoder = dsr_gdeflate::Encoder::new(dsr_gdeflate::Level::DEFAULT);
        codec::Tiles::new(&data, |t| {
            let mut out = Vec::new();
            encoder.encode_tile(t, &mut out);
            out
        })
    };
    let stream = codec::tilestream_of(&tiles);
    let mut results = Vec::new();
    for &threads in &args.threads {
        let threads = threads.max(1);
        let dsr_mbps = codec::engine_decode(&stream, data.len(), threads, args.runs).map_err(CliError::failed)?;
        #[cfg(feature = "reference-codec")]
        let reference_mbps = Some(if threads == 1 {
            codec::decode_vs_reference(&data, args.runs)
                .map_err(CliError::failed)?
                .1
        } else {
            codec::reference_decode_threads(&data, threads, args.runs)
        });
        #[cfg(not(feature = "reference-codec"))]
        let reference_mbps: Option<f64> = None;
        results.push(json!({
            "threads": threads,
            "dsr_mbps": dsr_mbps,
            "reference_mbps": reference_mbps,
            "ratio": reference_mbps.map(|r| dsr_mbps / r),
        }));
    }
    // The bare decoder on one thread, without the engine around it.
    let mut out = vec![0u8; data.len()];
    let mut bare = Vec::new();
    for _ in 0..args.runs.max(1) {
        bare.push(codec::dsr_decode(&tiles, &mut out).map_err(|e| CliError::failed(e.to_string()))?);
    }
    if out != data {
        return Err(CliError::failed("dsr decoded wrong bytes"));
    }
    let bare_mbps = data.len() as f64 / dsr_cli::harness::median(&mut bare).as_secs_f64() / 1e6;
    let compressed = tiles.compressed();
    let plotted: Vec<Case> = results
        .iter()
        .map(|r| {
            Case::new(
                format!("{} thread(s)", r["threads"]),
                [
                    ("dsr", r["dsr_mbps"].as_f64()),
                    ("reference", r["reference_mbps"].as_f64()),
                ],
            )
        })
        .collect();
    plot_to(
        plot,
        &format!("GDeflate decoding on the CPU: {what}"),
        "MB/s of output",
        &plotted,
    )?;
    if args.json {
        let doc = json!({
            "bench": "decode-cpu",
            "data": what,
            "bytes": data.len(),
            "compressed_bytes": compressed,
            "runs": args.runs,
            "dsr_decoder_1t_mbps": bare_mbps,
            "results": results,
            "reference": cfg!(feature = "reference-codec"),
        });
        println!("{doc}");
    } else {
        println!("{what}: {} bytes, {} compressed", data.len(), compressed);
        println!("dsr decoder alone, 1 thread: {bare_mbps:.0} MB/s");
        for r in &results {
            match r["reference_mbps"].as_f64() {
                Some(reference) => println!(
                    "threads {}: dsr {:.0} MB/s, reference {:.0} MB/s, dsr / reference {:.2}",
                    r["threads"],
                    r["dsr_mbps"].as_f64().unwrap_or(0.0),
                    reference,
                    r["ratio"].as_f64().unwrap_or(0.0)
                ),
                None => println!(
                    "threads {}: dsr {:.0} MB/s",
                    r["threads"],
                    r["dsr_mbps"].as_f64().unwrap_or(0.0)
                ),
            }
        }
        if !cfg!(feature = "reference-codec") {
            println!("{NO_REFERENCE}");
        }
    }
    Ok(())
}

fn run_encode(args: CodecArgs, plot: Option<&Path>) -> CliResult {
    use dsr_cli::harness::codec;
    let (data, what) = args.data()?;
    let mut rows = Vec::new();
    for &level in &args.levels {
        let (size, mbps) = codec::dsr_encode(&data, dsr_gdeflate::Level::new(level));
        rows.push(json!({"codec": "dsr", "level": level, "ratio": size as f64 / data.len() as f64, "mbps": mbps}));
        #[cfg(feature = "reference-codec")]
        {
            let (size, mbps) = codec::reference_encode(&data, level);
            rows.push(
                json!({"codec": "reference", "level": level, "ratio": size as f64 / data.len() as f64, "mbps": mbps}),
            );
        }
    }
    let plotted: Vec<Case> = args
        .levels
        .iter()
        .map(|&level| {
            let mbps = |codec: &str| {
                rows.iter()
                    .find(|r| r["codec"] == codec && r["level"] == level)
                    .and_then(|r| r["mbps"].as_f64())
            };
            Case::new(
                format!("level {level}"),
                [("dsr", mbps("dsr")), ("reference", mbps("reference"))],
            )
        })
        .collect();
    plot_to(
        plot,
        &format!("GDeflate compression: {what}"),
        "MB/s of input",
        &plotted,
    )?;
    if args.json {
        println!(
            "{}",
            json!({"bench": "encode-cpu", "data": what, "bytes": data.len(), "results": rows})
        );
    } else {
        println!("{what}");
        for r in &rows {
            println!(
                "{:<9} level {:>2}: ratio {:.4}  {:>6.1} MB/s",
                r["codec"].as_str().unwrap_or("?"),
                r["level"],
                r["ratio"].as_f64().unwrap_or(0.0),
                r["mbps"].as_f64().unwrap_or(0.0)
            );
        }
        if !cfg!(feature = "reference-codec") {
            println!("{NO_REFERENCE}");
        }
    }
    Ok(())
}

fn run_read(args: ReadArgs, plot: Option<&Path>) -> CliResult {
    use dsr_cli::harness::read;
    let file_len = dsr::file_len(&args.file)?;
    if file_len < 1 << 20 {
        return Err(CliError::usage("the file must hold at least 1 MiB"));
    }
    let fio = read::fio_available();
    let mut modes = Vec::new();
    let mut plotted = Vec::new();
    for mode in read::MODES {
        if !args.modes.is_empty() && !args.modes.iter().any(|m| m == mode.name) {
            continue;
        }
        let offsets = read::offsets(mode, file_len, 42);
        let dest = dsr::HostBuffer::prefault((offsets.len() as u64 * mode.block) as usize);
        if !mode.direct {
            // Warm the page cache for both sides.
            let _ = std::fs::read(&args.file);
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            ours.push(read::run_dsr(&args.file, mode, &offsets, &dest)?);
            if fio {
                theirs.push(read::run_fio(&args.file, mode, file_len).map_err(CliError::failed)?);
            }
        }
        let med = |samples: &mut Vec<read::Sample>, f: fn(&read::Sample) -> f64| -> Option<f64> {
            if samples.is_empty() {
                return None;
            }
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            Some(v[v.len() / 2])
        };
        let d = (
            med(&mut ours, |s| s.gbps),
            med(&mut ours, |s| s.iops),
            med(&mut ours, |s| s.cpu_pct),
            med(&mut ours, |s| s.cpu_s_per_gb),
        );
        let f = (
            med(&mut theirs, |s| s.gbps),
            med(&mut theirs, |s| s.iops),
            med(&mut theirs, |s| s.cpu_pct),
            med(&mut theirs, |s| s.cpu_s_per_gb),
        );
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        let mut row = json!({
            "mode": mode.name,
            "dsr_gbps": d.0, "fio_gbps": f.0, "gbps_ratio": ratio(d.0, f.0),
            "dsr_cpu_pct": d.2, "fio_cpu_pct": f.2,
            "dsr_cpu_s_per_gb": d.3, "fio_cpu_s_per_gb": f.3, "cpu_per_gb_ratio": ratio(d.3, f.3),
        });
        if mode.random {
            row["dsr_iops"] = json!(d.1);
            row["fio_iops"] = json!(f.1);
        }
        if !args.json {
            let fio_text = match f.0 {
                Some(g) => format!(
                    "fio {g:.2} GB/s ({:.0}% CPU) → dsr/fio {:.2}×, CPU per GB {:.2}×",
                    f.2.unwrap_or(0.0),
                    d.0.unwrap_or(0.0) / g,
                    ratio(d.3, f.3).unwrap_or(0.0)
                ),
                None => "fio not installed (apt-get install fio)".into(),
            };
            println!(
                "{:<16} dsr {:.2} GB/s ({:.0}% CPU{})   {fio_text}",
                mode.name,
                d.0.unwrap_or(0.0),
                d.2.unwrap_or(0.0),
                if mode.random {
                    format!(", {:.0} IOPS", d.1.unwrap_or(0.0))
                } else {
                    String::new()
                }
            );
        }
        plotted.push(Case::new(mode.name, [("dsr", d.0), ("fio", f.0)]));
        modes.push(row);
    }
    plot_to(plot, "File reads", "GB/s", &plotted)?;
    if args.json {
        println!(
            "{}",
            json!({"bench": "read", "file": args.file, "bytes": file_len, "depth": read::DEPTH, "runs": args.runs, "fio": fio, "modes": modes})
        );
    } else if !fio {
        println!("fio is not installed: install it (apt-get install fio) to measure the peer in the same run");
    }
    Ok(())
}

/// `dsr bench gdeflate-files`: whole-process file-to-file times of `dsr gdeflate` and the
/// reference codec (this binary's hidden `gdeflate reference`), alternating, medians.
fn run_gdeflate_files(args: CodecArgs, plot: Option<&Path>) -> CliResult {
    if !cfg!(feature = "reference-codec") {
        return Err(CliError::usage(
            "the reference codec is not in this build: cargo build --release --features reference-codec",
        ));
    }
    let (data, what) = args.data()?;
    let dir = tempfile::tempdir().map_err(|e| CliError::failed(format!("cannot make a temporary directory: {e}")))?;
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("in.bin"), &data).map_err(|e| CliError::failed(format!("cannot write the input: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| CliError::failed(format!("cannot find this binary: {e}")))?;
    let level = dsr_gdeflate::Level::DEFAULT.get().to_string();
    // Each case: dsr's command and the reference's, as arguments of this binary.
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let (input, stream, ref_stream, out) = (
        s(path("in.bin")),
        s(path("s.gdf")),
        s(path("r.gdf")),
        s(path("out.bin")),
    );
    let compress_dsr = vec![
        "gdeflate".into(),
        "compress".into(),
        input.clone(),
        stream.clone(),
        "--level".into(),
        level.clone(),
    ];
    let compress_ref = vec![
        "gdeflate".into(),
        "reference".into(),
        "compress".into(),
        input.clone(),
        ref_stream.clone(),
        "--level".into(),
        level.clone(),
    ];
    let mut cases: Vec<(String, Vec<String>, Vec<String>)> =
        vec![(format!("compress, level {level}"), compress_dsr.clone(), compress_ref)];
    for &threads in &args.threads {
        cases.push((
            format!("decompress, {threads} thread(s)"),
            vec![
                "gdeflate".into(),
                "decompress".into(),
                stream.clone(),
                out.clone(),
                "--threads".into(),
                threads.to_string(),
            ],
            vec![
                "gdeflate".into(),
                "reference".into(),
                "decompress".into(),
                stream.clone(),
                out.clone(),
            ],
        ));
    }
    let run = |argv: &[String]| -> Result<std::time::Duration, CliError> {
        let start = std::time::Instant::now();
        let result = std::process::Command::new(&exe)
            .args(argv)
            .stdout(std::process::Stdio::null())
            .output()
            .map_err(|e| CliError::failed(format!("cannot run {}: {e}", exe.display())))?;
        let elapsed = start.elapsed();
        if !result.status.success() {
            return Err(CliError::failed(format!(
                "{argv:?} failed: {}",
                String::from_utf8_lossy(&result.stderr)
            )));
        }
        Ok(elapsed)
    };
    // The stream the decompressions read, and a warm input.
    run(&compress_dsr)?;
    let mut results = Vec::new();
    for (name, ours, theirs) in &cases {
        let (mut dsr_times, mut ref_times) = (Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            dsr_times.push(run(ours)?);
            ref_times.push(run(theirs)?);
        }
        if name.starts_with("decompress") && std::fs::read(path("out.bin")).ok().as_deref() != Some(&data[..]) {
            return Err(CliError::failed(format!("{name}: the output differs from the input")));
        }
        let (dsr_s, ref_s) = (
            dsr_cli::harness::median(&mut dsr_times).as_secs_f64(),
            dsr_cli::harness::median(&mut ref_times).as_secs_f64(),
        );
        results.push((name.clone(), dsr_s, ref_s));
    }
    if args.json {
        let doc = serde_json::json!({
            "bench": "gdeflate-files",
            "data": what,
            "bytes": data.len(),
            "runs": args.runs,
            "results": results.iter().map(|(name, d, r)| serde_json::json!({
                "case": name, "dsr_s": d, "reference_s": r, "speedup": r / d,
            })).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        println!(
            "{what}: {} bytes, whole process, file to file, medians of {} alternating runs",
            data.len(),
            args.runs
        );
        for (name, d, r) in &results {
            println!(
                "{name:<26} dsr {:>8.1} ms   reference (1 thread) {:>8.1} ms   {:.2}x",
                d * 1e3,
                r * 1e3,
                r / d
            );
        }
    }
    let cases: Vec<Case> = results
        .iter()
        .map(|(name, d, r)| {
            let mbps = |t: f64| data.len() as f64 / t / 1e6;
            Case::new(
                name.clone(),
                [("dsr", Some(mbps(*d))), ("reference codec", Some(mbps(*r)))],
            )
        })
        .collect();
    plot_to(plot, "GDeflate file to file, whole process", "MB/s of input", &cases)
}

/// The loose-files peer: every file under `dir` read into memory of its own (kept until exit).
fn read_loose(dir: &Path) -> CliResult {
    let files = crate::pack::collect_inputs(&[dir.to_path_buf()])?;
    let mut kept = Vec::with_capacity(files.len());
    let mut bytes = 0usize;
    for (_, path) in &files {
        let data = std::fs::read(path).map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))?;
        bytes += data.len();
        kept.push(data);
    }
    println!("{} files, {bytes} bytes", kept.len());
    Ok(())
}

/// Reads `path` once through the page cache, leaving it there.
fn warm_file(path: &Path) -> CliResult {
    let mut file =
        std::fs::File::open(path).map_err(|e| CliError::failed(format!("cannot open {}: {e}", path.display())))?;
    std::io::copy(&mut file, &mut std::io::sink())
        .map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))?;
    Ok(())
}

/// `dsr bench loose-files`: whole-process `dsr load ARCHIVE` against the loose-files peer.
fn run_loose_files(args: LooseArgs, plot: Option<&Path>) -> CliResult {
    let exe = std::env::current_exe().map_err(|e| CliError::failed(format!("cannot find this binary: {e}")))?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let ours = vec!["load".to_string(), s(&args.archive)];
    let peer = vec!["bench".to_string(), "read-loose".to_string(), s(&args.dir)];
    let run = |argv: &[String], cold: bool| -> Result<f64, CliError> {
        if cold {
            std::fs::write("/proc/sys/vm/drop_caches", "3")
                .map_err(|e| CliError::failed(format!("cannot drop the page cache (run as root): {e}")))?;
        }
        let start = std::time::Instant::now();
        let out = std::process::Command::new(&exe)
            .args(argv)
            .output()
            .map_err(|e| CliError::failed(format!("cannot run {}: {e}", exe.display())))?;
        if !out.status.success() {
            return Err(CliError::failed(format!(
                "{argv:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let mut modes = vec![("warm", false)];
    if args.cold {
        modes.push(("cold", true));
    }
    // Warm the cache (and the binary) once. `dsr load` itself would not: with the archive out of
    // the page cache, `--io auto` reads it directly, past the cache.
    warm_file(&args.archive)?;
    run(&ours, false)?;
    run(&peer, false)?;
    let mut results = Vec::new();
    for (mode, cold) in modes {
        let (mut d, mut p) = (Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            d.push(run(&ours, cold)?);
            p.push(run(&peer, cold)?);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        results.push((mode, median(&mut d), median(&mut p), d, p));
    }
    if args.json {
        let doc = serde_json::json!({
            "bench": "loose-files",
            "dir": args.dir,
            "archive": args.archive,
            "results": results.iter().map(|(mode, d, p, ds, ps)| serde_json::json!({
                "mode": mode, "dsr_s": d, "loose_s": p, "speedup": p / d, "dsr_runs": ds, "loose_runs": ps,
            })).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        for (mode, d, p, _, _) in &results {
            println!(
                "{mode}: dsr load {:.3} s, loose files read into memory {:.3} s (medians of {}, whole process): {:.2}x",
                d,
                p,
                args.runs,
                p / d
            );
        }
    }
    let cases: Vec<Case> = results
        .iter()
        .map(|(mode, d, p, _, _)| Case::new(*mode, [("dsr", Some(1.0 / d)), ("loose files", Some(1.0 / p))]))
        .collect();
    plot_to(
        plot,
        "An archive against its loose files, whole process",
        "loads per second",
        &cases,
    )
}

/// `dsr bench soak`.
fn run_soak(args: SoakArgs) -> CliResult {
    use dsr_cli::harness::soak;
    let gpu = match args.no_gpu {
        true => None,
        false => {
            let config = dsr::gpu::GpuConfig {
                validation: true,
                ..dsr::gpu::GpuConfig::from_env()
            };
            match dsr::gpu::GpuContext::new(&config) {
                Ok(_) => Some(config),
                Err(err) if std::env::var("DSR_REQUIRE_VULKAN").as_deref() == Ok("1") => {
                    return Err(CliError::failed(format!(
                        "DSR_REQUIRE_VULKAN=1 but no validating Vulkan device: {err}"
                    )))
                }
                Err(err) => {
                    eprintln!("soaking without the GPU: no validating Vulkan device ({err})");
                    None
                }
            }
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let config = soak::SoakConfig {
        duration: std::time::Duration::from_secs_f64(args.seconds.max(0.0)),
        seed,
        workers: args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        scratch_budget: args.scratch,
        gpu,
        library: args.library.or_else(dsr_cli::harness::submit::default_library),
        device_loss_every: args.device_loss_every,
    };
    let report = soak::run(&config)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| CliError::failed(e.to_string()))?
        );
    } else {
        let r = &report;
        println!(
            "soaked {:.1} s (seed {}): {} rounds ({} cold), {} requests ({} batch, {} queue, {} C ABI): {} done, {} failed, {} cancelled in {} cancel storms; {} faults injected ({} device losses); GPU: {}",
            r.seconds,
            r.seed,
            r.rounds,
            r.cold_rounds,
            r.requests,
            r.paths.batch,
            r.paths.queue,
            r.paths.c_abi,
            r.done,
            r.failed,
            r.cancelled,
            r.cancel_storms,
            r.faults_injected,
            r.device_losses,
            r.gpu.as_deref().unwrap_or("none"),
        );
        println!(
            "growth, last fifth of the rounds against the first: RSS {} KiB after a warm-up of {} KiB (against the second fifth), descriptors {}, Vulkan allocations {}; scratch peak {} of {} bytes, {} waits",
            r.rss_growth_bytes / 1024,
            r.rss_warmup_bytes / 1024,
            r.fd_growth,
            r.vk_allocation_growth,
            r.scratch_peak_bytes,
            r.scratch_budget_bytes,
            r.scratch_waits
        );
        if let Some(why) = &r.c_abi_skipped {
            println!("the C ABI's rounds did not run: {why}");
        }
        println!("violations: {}", r.violations);
        for v in &r.violation_examples {
            println!("  {v}");
        }
    }
    match report.violations {
        0 => Ok(()),
        n => Err(CliError::failed(format!("the soak found {n} violation(s)"))),
    }
}
