//! `dsr load FILE... [--range OFFSET:LEN] [--dest host|gpu] [--verify]`: files (or an archive's
//! assets) into host memory or a GPU buffer through the engine.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use dsr::engine::{LatencySummary, Observer};
use dsr::gpu::GpuContext;
use dsr::viz::RunRecorder;
use dsr::{Batch, BatchReport, DeviceBuffer, HostBuffer, IoPolicy, Pages, Request, RequestStatus};
use serde_json::json;

use super::output::{self, Observers, Progress};
use super::{parse_range, resolve_files, CliError, CliResult, EngineArgs, Range};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Files to load; or a dsr archive followed by the names of the assets to load from it (all
    /// of them when none is named).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Archives: skip checking each decoded tile against its hash (faster, but a damaged archive
    /// then yields wrong bytes instead of an error).
    #[arg(long)]
    no_verify: bool,
    /// Load only this range of each file, OFFSET:LEN (suffixes K, M, G accepted).
    #[arg(long, value_parser = parse_range)]
    range: Option<Range>,
    /// Write the last run's graph, coloured by outcome with durations and bytes, as DOT.
    #[arg(long, value_name = "PATH")]
    dot: Option<PathBuf>,
    /// Write a timeline trace of every run: Chrome trace-event JSON (open it in Perfetto UI or
    /// chrome://tracing): a track per worker, waits on io_uring and the GPU, failures.
    #[arg(long, value_name = "PATH")]
    trace: Option<PathBuf>,
    /// Load this many times into the same memory; report every run and the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Where the bytes land: host memory, or a device-local buffer on the GPU (`DSR_VK_DEVICE`
    /// picks the device by index or name).
    #[arg(long, value_enum, default_value_t = Dest::Host)]
    dest: Dest,
    /// After loading, check every byte: plain files against the file, archive assets against
    /// their tile hashes (reading GPU buffers back first).
    #[arg(long)]
    verify: bool,
    /// With `--dest gpu`, where compressed assets decode: auto (on a real GPU, each asset where
    /// it would finish first by the CPU's and the GPU's backlogs and measured rates; the
    /// workers on a device that is the CPU itself, such as lavapipe), cpu (decoded by the
    /// workers, then uploaded) or gpu (decoded on the GPU, tile hashes checked there too;
    /// refused where it cannot run).
    #[arg(long, value_enum, default_value_t = Decode::Auto)]
    decode: Decode,
    /// Write what is loaded to files instead of memory, through the engine (read, decode where
    /// compressed, check tile hashes, write; memory bounded by the scratch budget): an
    /// archive's assets into the directory PATH by name, plain files into the directory PATH
    /// by file name, or one plain file to the file PATH.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["dot", "repeat", "via"])]
    output: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// How the requests reach the engine: one batch, or a DirectStorage-shaped queue (each
    /// request enqueued, then a status entry and a fence signal, then submit; the run ends when
    /// the fence reaches its value). Alternating the two measures what the queue costs.
    #[arg(long, value_enum, default_value_t = Via::Batch, conflicts_with = "dot")]
    via: Via,
    #[command(flatten)]
    engine: EngineArgs,
}

/// `--via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    Batch,
    Queue,
}

/// `--decode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Decode {
    Auto,
    Cpu,
    Gpu,
}

impl Decode {
    fn route(self) -> dsr::DecodeRoute {
        match self {
            Decode::Auto => dsr::DecodeRoute::Auto,
            Decode::Cpu => dsr::DecodeRoute::Cpu,
            Decode::Gpu => dsr::DecodeRoute::Gpu,
        }
    }
}

/// `--dest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Dest {
    Host,
    Gpu,
}

/// A host destination of `len` bytes, its pages left for the loads to touch: with the pages
/// following the reads ([`destination_pages`]), that was the fastest on a machine whose memory
/// is full of page cache, warm and cold, and as steady as touching them first on every core
/// (`MADV_POPULATE_WRITE` too), which only paid while huge pages were used for every load
/// (docs/benchmarks.md, "Huge pages or not"). `DSR_DEST_TOUCH=upfront|parallel` measures the others.
fn host_destination(len: usize, pages: Pages) -> HostBuffer {
    match std::env::var("DSR_DEST_TOUCH").as_deref() {
        Ok("upfront") => HostBuffer::prefault_on(len, 1, pages),
        Ok("parallel") => {
            HostBuffer::prefault_on(len, std::thread::available_parallelism().map_or(1, |n| n.get()), pages)
        }
        _ => HostBuffer::with_pages(len, pages),
    }
}

/// The pages a host destination asks for: huge (the kernel faults and pins them per 2 MiB:
/// a warm 1 GiB load ran 1.6× faster into them on the GPU machine), except on a VM whose
/// balloon hands free memory back to the host, where first touches of huge pages stalled for
/// seconds: there only where most of the bytes come by direct I/O (`--io direct`, or `auto` on
/// files mostly outside the page cache), which gains most from them ([`Pages`],
/// docs/benchmarks.md). `DSR_DEST_PAGES=huge|small` overrides, for measuring.
fn destination_pages<'a>(policy: IoPolicy, reads: impl IntoIterator<Item = (&'a Path, u64, u64)>) -> Pages {
    match std::env::var("DSR_DEST_PAGES").as_deref() {
        Ok("huge") => return Pages::Huge,
        Ok("small") => return Pages::Small,
        _ => {}
    }
    if !dsr::engine::free_pages_go_to_the_host() {
        return Pages::Huge;
    }
    pages_for_reads(policy, reads)
}

/// Huge pages where most of the bytes come by direct I/O, small where they are copied in.
fn pages_for_reads<'a>(policy: IoPolicy, reads: impl IntoIterator<Item = (&'a Path, u64, u64)>) -> Pages {
    match policy {
        IoPolicy::Direct => Pages::Huge,
        IoPolicy::Buffered => Pages::Small,
        IoPolicy::Auto => {
            let (mut cached, mut pages) = (0u64, 0u64);
            // A sample decides for thousands of loose files (each probe opens its file).
            for (path, offset, len) in reads.into_iter().take(256) {
                let Ok(file) = std::fs::File::open(path) else { continue };
                if let Some((c, p)) = dsr::stages::io::residency::resident(file.as_raw_fd(), offset, len) {
                    // Auto reads files on rotational disks through the cache, cold or not.
                    let rotational = dsr::stages::io::residency::on_rotational_disk(file.as_raw_fd());
                    cached += if rotational { p } else { c };
                    pages += p;
                }
            }
            if 2 * cached >= pages {
                Pages::Small
            } else {
                Pages::Huge
            }
        }
    }
}

/// The memory a load lands in.
enum Landing {
    Host(HostBuffer),
    Gpu(DeviceBuffer),
}

impl Landing {
    /// `total` bytes where `engine` puts them (in host memory, with `pages`).
    fn new(engine: &Engine, total: u64, pages: Pages) -> Result<Landing, CliError> {
        match &engine.gpu {
            None => {
                let len = usize::try_from(total).map_err(|_| {
                    CliError::failed(format!("{total} bytes do not fit in this machine's address space"))
                })?;
                Ok(Landing::Host(host_destination(len, pages)))
            }
            Some(context) => Ok(Landing::Gpu(dsr::gpu::allocate_buffer(context, total.max(1))?)),
        }
    }

    /// `request`, which lands in a host buffer at `slot`, redirected here.
    fn place(&self, request: Request, slot: u64) -> Request {
        match self {
            Landing::Host(_) => request,
            // Tile hashes are checked on the way: raw assets in scratch before their upload,
            // compressed ones after decoding (on the CPU, or on the GPU in the decode's own
            // submission).
            Landing::Gpu(buffer) => request.on_device(buffer, slot),
        }
    }

    /// The host buffer requests are made against (a placeholder for the GPU).
    fn host(&self) -> HostBuffer {
        match self {
            Landing::Host(buffer) => buffer.clone(),
            Landing::Gpu(_) => HostBuffer::new(0),
        }
    }

    /// `len` bytes at `at`, as they landed; GPU bytes are read back through `executor` (a
    /// `Copy` node into host memory).
    fn bytes(&mut self, executor: &dsr::Executor, at: u64, len: u64) -> Result<Vec<u8>, CliError> {
        match self {
            Landing::Host(buffer) => {
                let bytes = buffer
                    .as_slice()
                    .ok_or_else(|| CliError::failed("the destination is still in use"))?;
                Ok(bytes[at as usize..(at + len) as usize].to_vec())
            }
            Landing::Gpu(buffer) => {
                let mut host = HostBuffer::new(len as usize);
                let mut batch = executor.batch();
                batch.push(Request::device_to_host(buffer, at, len, &host, 0).name("read-back"))?;
                let report = executor.submit(batch)?.wait();
                if let Some((_, err)) = report.first_failure() {
                    return Err(CliError::failed(format!("cannot read the GPU buffer back: {err}")));
                }
                let bytes = host
                    .as_slice()
                    .ok_or_else(|| CliError::failed("the read-back buffer is still in use"))?;
                Ok(bytes.to_vec())
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Landing::Host(_) => "host",
            Landing::Gpu(_) => "gpu",
        }
    }
}

/// Where each file lands in the one destination buffer: page-aligned slots.
pub struct Layout {
    pub files: Vec<(PathBuf, u64, u64)>,
    pub slots: Vec<u64>,
    pub total: u64,
}

impl Layout {
    pub fn new(files: Vec<(PathBuf, u64, u64)>) -> Self {
        let mut slots = Vec::with_capacity(files.len());
        let mut at = 0u64;
        for (_, _, len) in &files {
            slots.push(at);
            at += len.div_ceil(4096) * 4096;
        }
        Layout {
            files,
            slots,
            total: at,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, _, len)| len).sum()
    }

    /// A request per file, landing in its slot.
    fn requests(&self, landing: &Landing, io: dsr::IoPolicy) -> Vec<Request> {
        let host = landing.host();
        self.files
            .iter()
            .zip(&self.slots)
            .map(|((path, offset, len), slot)| {
                let request = Request::file(path.clone(), *offset, *len, &host, *slot)
                    .name(path.display().to_string())
                    .io(io);
                landing.place(request, *slot)
            })
            .collect()
    }

    /// Compares what landed with the files.
    fn verify(&self, executor: &dsr::Executor, landing: &mut Landing) -> Result<(), CliError> {
        use std::os::unix::fs::FileExt;
        for ((path, offset, len), slot) in self.files.iter().zip(&self.slots) {
            let mut want = vec![0u8; *len as usize];
            std::fs::File::open(path)
                .and_then(|f| f.read_exact_at(&mut want, *offset))
                .map_err(|e| CliError::failed(format!("cannot read {} to verify it: {e}", path.display())))?;
            if landing.bytes(executor, *slot, *len)? != want {
                return Err(CliError::failed(format!(
                    "verification failed: the bytes that landed for {} differ from the file",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

pub fn failures(report: &BatchReport) -> Vec<String> {
    report
        .requests
        .iter()
        .filter_map(|r| match &r.status {
            RequestStatus::Failed(err) => Some(err.to_string()),
            RequestStatus::Cancelled => Some(format!("request {} was cancelled", r.id.index())),
            RequestStatus::Done => None,
        })
        .collect()
}

/// The executor for a load, with the progress bar and, if a run graph is wanted, a recorder.
struct Engine {
    executor: Arc<dsr::Executor>,
    io: dsr::IoInfo,
    /// The GPU context, for `--dest gpu`.
    gpu: Option<Arc<GpuContext>>,
    progress: Arc<Progress>,
    recorder: Option<Arc<RunRecorder>>,
    trace: Option<Arc<dsr::viz::TraceRecorder>>,
}

fn engine(args: &LoadArgs, total_bytes: u64) -> Result<Engine, CliError> {
    let progress = Progress::new(total_bytes * args.repeat.max(1) as u64, !args.json);
    let recorder = args.dot.as_ref().map(|_| Arc::new(RunRecorder::new()));
    let mut observers: Vec<Arc<dyn Observer>> = vec![progress.clone()];
    if let Some(recorder) = &recorder {
        observers.push(recorder.clone());
    }
    let mut config = args.engine.config();
    let trace = args
        .trace
        .as_ref()
        .map(|_| Arc::new(dsr::viz::TraceRecorder::new(config.workers)));
    if let Some(trace) = &trace {
        observers.push(trace.clone());
    }
    config.observer = Some(Arc::new(Observers(observers)));
    let (executor, io, gpu) = match args.dest {
        Dest::Host => {
            let (executor, io) = args.engine.executor(config)?;
            (executor, io, None)
        }
        Dest::Gpu => {
            let context = GpuContext::new(&dsr::gpu::GpuConfig::from_env())?;
            let io = dsr::IoConfig {
                backend: args.engine.io_backend.into(),
                ..dsr::IoConfig::default()
            };
            let (executor, io, _) = dsr::executor_with_gpu(config, io, &context, dsr::gpu::StagingConfig::default())?;
            (executor, io, Some(context))
        }
    };
    Ok(Engine {
        executor: Arc::new(executor),
        io,
        gpu,
        progress,
        recorder,
        trace,
    })
}

/// What a load measured.
struct Loaded {
    bytes: u64,
    runs: Vec<Duration>,
    /// Requests per run.
    requests: usize,
    /// The last run's batch and report (`--via batch`).
    batch: Option<(Batch, Arc<BatchReport>)>,
    /// What failed in the last run.
    failures: Vec<String>,
}

impl Loaded {
    fn all_done(&self) -> bool {
        self.failures.is_empty() && self.batch.as_ref().is_none_or(|(_, report)| report.all_done())
    }
}

/// A queue for `--via queue`, with the status array and fence that end each run.
struct QueueRun {
    queue: dsr::Queue,
    status: Arc<dsr::StatusArray>,
    fence: Arc<dsr::Fence>,
}

impl QueueRun {
    fn new(engine: &Engine, requests: usize) -> Result<QueueRun, CliError> {
        // Room for a run's requests plus its status and signal entries, within the queue's
        // limits: larger loads block in `enqueue` until slots free up, as an engine's would.
        let capacity = (requests + 3).clamp(
            dsr::engine::queue::MIN_CAPACITY as usize,
            dsr::engine::queue::MAX_CAPACITY as usize,
        );
        let config = dsr::QueueConfig {
            capacity: capacity as u32,
            name: "dsr load".into(),
            ..dsr::QueueConfig::default()
        };
        Ok(QueueRun {
            queue: dsr::Queue::new(engine.executor.clone(), config)?,
            status: dsr::StatusArray::new(1),
            fence: dsr::Fence::new().map_err(|e| CliError::failed(format!("cannot create a fence: {e}")))?,
        })
    }

    /// Enqueues `requests`, a status entry and the fence's signal to `value`, submits, and
    /// waits for the fence; returns what failed.
    fn run(&self, requests: Vec<Request>, value: u64) -> Result<Vec<String>, CliError> {
        for request in requests {
            self.queue.enqueue(request)?;
        }
        self.queue.enqueue_status(&self.status, 0)?;
        self.queue.enqueue_signal(&self.fence, value)?;
        self.queue.submit()?;
        self.fence.wait(value);
        let record = self.queue.retrieve_error_record();
        Ok(match (self.status.get(0), record.first_failure) {
            (dsr::StatusEntry::Ok, _) => Vec::new(),
            (_, Some(first)) => {
                let mut failures = vec![match first.name {
                    Some(name) => format!("{name}: {}", first.error),
                    None => first.error.to_string(),
                }];
                if record.failure_count > 1 {
                    failures.push(format!("and {} more", record.failure_count - 1));
                }
                failures
            }
            (entry, None) => vec![format!("the status entry says {entry:?}")],
        })
    }
}

/// Loads `requests()` (`count` of them) `--repeat` times, through one batch or the queue
/// (`--via`), timing each run from its first request to its report (batch) or fence (queue).
fn repeat(
    args: &LoadArgs,
    engine: &Engine,
    bytes: u64,
    count: usize,
    mut requests: impl FnMut() -> Vec<Request>,
) -> Result<Loaded, CliError> {
    let queue = match args.via {
        Via::Batch => None,
        Via::Queue => Some(QueueRun::new(engine, count)?),
    };
    let mut loaded = Loaded {
        bytes,
        runs: Vec::new(),
        requests: count,
        batch: None,
        failures: Vec::new(),
    };
    for run in 0..args.repeat.max(1) {
        engine.executor.reset_metrics();
        let start = Instant::now();
        let requests = requests();
        match &queue {
            None => {
                let mut batch = engine.executor.batch();
                for request in requests {
                    batch.push(request)?;
                }
                let batch = engine.executor.submit(batch)?;
                let report = batch.wait();
                loaded.runs.push(start.elapsed());
                loaded.failures = failures(&report);
                loaded.batch = Some((batch, report));
            }
            Some(queue) => {
                loaded.failures = queue.run(requests, run as u64 + 1)?;
                loaded.runs.push(start.elapsed());
            }
        }
    }
    engine.progress.finish();
    Ok(loaded)
}

/// Prints a load's results (text after `header`, or JSON with `doc`'s fields added), writes the
/// run graph if asked, and fails if any request did.
fn report(args: &LoadArgs, engine: &Engine, loaded: Loaded, header: String, mut doc: serde_json::Value) -> CliResult {
    let Loaded {
        bytes,
        runs,
        requests,
        batch,
        failures: failed,
    } = loaded;
    if let (Some(path), Some(recorder), Some((batch, _))) = (&args.dot, &engine.recorder, &batch) {
        let dot = dsr::viz::run_dot(batch.graph(), Some(recorder));
        std::fs::write(path, dot).map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    }
    if let (Some(path), Some(trace)) = (&args.trace, &engine.trace) {
        // Every run's requests are the same, in the same order: the last batch names them.
        let names: Vec<Option<String>> = batch
            .as_ref()
            .map(|(batch, _)| batch.graph().requests().iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        crate::output::write_trace(path, trace, |_, request| names.get(request as usize).cloned().flatten())?;
    }
    let metrics = engine.executor.metrics();
    // Request latency is the batch report's; through the queue only the run's time is known.
    let latency = batch
        .as_ref()
        .map(|(_, report)| LatencySummary::from_durations(report.requests.iter().map(|r| r.latency)));
    let mut sorted = runs.clone();
    let median = dsr_cli::harness::median(&mut sorted);
    if args.json {
        doc["bytes"] = json!(bytes);
        doc["workers"] = json!(engine.executor.workers());
        doc["backend"] = json!(super::backend_name(&engine.io));
        doc["runs"] = runs
            .iter()
            .map(|d| json!({"elapsed_s": d.as_secs_f64(), "gbps": output::gbps(bytes, *d)}))
            .collect();
        doc["median_gbps"] = json!(output::gbps(bytes, median));
        doc["process_s"] = json!(process_seconds());
        doc["via"] = json!(format!("{:?}", args.via).to_lowercase());
        doc["request_latency"] = latency.as_ref().map_or(serde_json::Value::Null, output::latency_json);
        doc["stages"] = output::stages_json(&metrics);
        let scratch = engine.executor.scratch();
        doc["scratch"] = json!({
            "budget": scratch.budget,
            "peak": scratch.peak,
            "waits": scratch.waits,
            "allocations": scratch.allocations,
        });
        doc["failures"] = json!(failed);
        if let Some(balance) = engine.executor.decode_balance() {
            // Which GPU decoder ran the submissions, and the rates `--decode auto` weighs.
            let (shader, nv) = dsr::gpu::decode_stage::submissions();
            let (cpu, gpu) = balance.rates();
            doc["gpu_decode"] = json!({
                "shader_submissions": shader,
                "nv_submissions": nv,
                "cpu_rate_gbps": cpu.map(|r| r / 1e9),
                "gpu_rate_gbps": gpu.map(|r| r / 1e9),
            });
        }
        println!("{doc}");
    } else {
        println!("{header}");
        for (i, d) in runs.iter().enumerate() {
            println!(
                "  run {:>2}: {:>8.2} ms  {:>7.2} GB/s",
                i + 1,
                d.as_secs_f64() * 1e3,
                output::gbps(bytes, *d)
            );
        }
        if runs.len() > 1 {
            println!(
                "  median:  {:>8.2} ms  {:>7.2} GB/s",
                median.as_secs_f64() * 1e3,
                output::gbps(bytes, median)
            );
        }
        println!(
            "  whole process so far: {:.2} ms (start-up, the destination's first touch, every run)",
            process_seconds() * 1e3
        );
        if let Some(latency) = &latency {
            println!("{}", output::latency_line("request latency", latency));
        }
        output::print_stages(&metrics);
        let scratch = engine.executor.scratch();
        if scratch.peak > 0 {
            println!(
                "scratch: peak {} of a {} budget, {} waits",
                dsr::viz::dot::human_bytes(scratch.peak),
                dsr::viz::dot::human_bytes(scratch.budget),
                scratch.waits
            );
        }
        for f in &failed {
            println!("error: {f}");
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "request(s) of the {requests} failed: {}",
            failed.join("; ")
        )))
    }
}

pub fn run(args: LoadArgs) -> CliResult {
    if let Some(output) = args.output.clone() {
        return run_output(&args, &output);
    }
    let gpu = std::cell::OnceCell::new();
    let result = if args.files.first().is_some_and(|f| dsr::archive::is_archive(f)) {
        run_archive(args, &gpu)
    } else {
        run_files(args, &gpu)
    };
    // With DSR_VK_VALIDATION=1, anything the validation layer said is a failure.
    if let Some(context) = gpu.get().filter(|c: &&Arc<GpuContext>| c.validating()) {
        let messages = context.validation_messages();
        if !messages.is_empty() {
            return Err(CliError::failed(format!(
                "the Vulkan validation layer reported:\n{}",
                messages.join("\n")
            )));
        }
    }
    result
}

fn run_files(args: LoadArgs, gpu: &std::cell::OnceCell<Arc<GpuContext>>) -> CliResult {
    let layout = Layout::new(resolve_files(&args.files, args.range)?);
    let engine = engine(&args, layout.bytes())?;
    if let Some(context) = &engine.gpu {
        let _ = gpu.set(context.clone());
    }
    let policy = args.engine.policy();
    let pages = destination_pages(policy, layout.files.iter().map(|(p, o, l)| (p.as_path(), *o, *l)));
    let mut landing = Landing::new(&engine, layout.total, pages)?;
    let loaded = repeat(&args, &engine, layout.bytes(), layout.files.len(), || {
        layout.requests(&landing, policy)
    })?;
    let header = format!(
        "loaded {} in {} file(s) into {} memory with {} worker(s), {} reads ({:?} I/O)",
        dsr::viz::dot::human_bytes(layout.bytes()),
        layout.files.len(),
        landing.name(),
        engine.executor.workers(),
        super::backend_name(&engine.io),
        args.engine.io
    );
    let doc = json!({
        "files": layout.files.len(),
        "io": format!("{:?}", args.engine.io).to_lowercase(),
        "dest": landing.name(),
        "verified": args.verify,
    });
    let done = loaded.all_done();
    report(&args, &engine, loaded, header, doc)?;
    if args.verify && done {
        layout.verify(&engine.executor, &mut landing)?;
        if !args.json {
            println!("verified: every byte matches the files");
        }
    }
    Ok(())
}

/// The assets `dsr load ARCHIVE [NAME...]` names: all of them when it names none.
fn chosen_assets<'a>(
    archive: &'a dsr::archive::Archive,
    args: &LoadArgs,
) -> Result<Vec<&'a dsr::archive::Asset>, CliError> {
    let path = &args.files[0];
    if args.files.len() == 1 {
        return Ok(archive.assets.iter().collect());
    }
    args.files[1..]
        .iter()
        .map(|name| {
            let name = name.to_string_lossy();
            archive.find(&name).ok_or_else(|| {
                CliError::usage(format!(
                    "{} has no asset named {name:?} (it has {} assets; `dsr load {}` loads them all)",
                    path.display(),
                    archive.assets.len(),
                    path.display()
                ))
            })
        })
        .collect()
}

/// `dsr load ARCHIVE [NAME...]`: assets decoded on every worker, tile hashes verified.
fn run_archive(args: LoadArgs, gpu: &std::cell::OnceCell<Arc<GpuContext>>) -> CliResult {
    if args.range.is_some() {
        return Err(CliError::usage("--range applies to plain files, not to archives"));
    }
    let path = &args.files[0];
    let archive = dsr::archive::Archive::open(path)?;
    let assets = chosen_assets(&archive, &args)?;
    let mut slots = Vec::with_capacity(assets.len());
    let mut total = 0u64;
    for asset in &assets {
        slots.push(total);
        total += asset.len.div_ceil(4096) * 4096;
    }
    let bytes: u64 = assets.iter().map(|a| a.len).sum();
    let stored: u64 = assets.iter().map(|a| a.stored_len).sum();
    let engine = engine(&args, bytes)?;
    if let Some(context) = &engine.gpu {
        let _ = gpu.set(context.clone());
    }
    let policy = args.engine.policy();
    let archive_len = std::fs::metadata(path).map_or(0, |m| m.len());
    let pages = destination_pages(policy, [(path.as_path(), 0, archive_len)]);
    let mut landing = Landing::new(&engine, total, pages)?;
    let host = landing.host();
    let loaded = repeat(&args, &engine, bytes, assets.len(), || {
        dsr::archive::requests(&archive, &assets, &host, &slots, !args.no_verify)
            .zip(&slots)
            .map(|(request, &slot)| landing.place(request.io(policy).decode_on(args.decode.route()), slot))
            .collect()
    })?;
    let header = format!(
        "loaded {} asset(s) from {} into {} memory: {} decoded from {} read, {} worker(s), {} reads, tile hashes {}",
        assets.len(),
        path.display(),
        landing.name(),
        dsr::viz::dot::human_bytes(bytes),
        dsr::viz::dot::human_bytes(stored),
        engine.executor.workers(),
        super::backend_name(&engine.io),
        if args.no_verify { "not checked" } else { "verified" }
    );
    let doc = json!({
        "archive": path,
        "assets": assets.len(),
        "stored_bytes": stored,
        "dest": landing.name(),
        "verified": !args.no_verify || args.verify,
    });
    let done = loaded.all_done();
    report(&args, &engine, loaded, header, doc)?;
    drop(host);
    if args.verify && done {
        // Every tile against its hash, as it sits in the destination.
        for (asset, &slot) in assets.iter().zip(&slots) {
            let bytes = landing.bytes(&engine.executor, slot, asset.len)?;
            let intact = bytes
                .chunks(dsr_gdeflate::TILE_SIZE)
                .zip(asset.tile_hashes.iter())
                .all(|(tile, &hash)| dsr::stages::tile_hash(tile) == hash);
            if !intact {
                return Err(CliError::failed(format!(
                    "verification failed: asset {:?} differs from its tile hashes where it landed",
                    asset.name
                )));
            }
        }
        if !args.json {
            println!("verified: every tile matches its hash");
        }
    }
    Ok(())
}

/// Seconds since the process started (whole-process time, up to the report).
fn process_seconds() -> f64 {
    dsr_cli::STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// Output a window of `--output` holds at once: 16 MiB, or a quarter of the scratch budget.
fn output_window(scratch: u64) -> u64 {
    (scratch / 4).clamp(dsr_gdeflate::TILE_SIZE as u64, 16 << 20) / dsr_gdeflate::TILE_SIZE as u64
        * dsr_gdeflate::TILE_SIZE as u64
}

/// `dsr load ... --output PATH`: the requests land in files (see `LoadArgs::output`).
fn run_output(args: &LoadArgs, output: &std::path::Path) -> CliResult {
    if args.dest == Dest::Gpu {
        return Err(CliError::usage("--output writes files; it does not take --dest gpu"));
    }
    let window = output_window(args.engine.scratch);
    let none = HostBuffer::new(0);
    let policy = args.engine.file_to_file_policy();
    let (requests, bytes, what) = if args.files.first().is_some_and(|f| dsr::archive::is_archive(f)) {
        if args.range.is_some() {
            return Err(CliError::usage("--range applies to plain files, not to archives"));
        }
        let archive = dsr::archive::Archive::open(&args.files[0])?;
        let assets = chosen_assets(&archive, args)?;
        std::fs::create_dir_all(output)
            .map_err(|e| CliError::failed(format!("cannot make {}: {e}", output.display())))?;
        let requests = dsr::archive::unpack_requests(&archive, &assets, output, !args.no_verify, window)?;
        let bytes: u64 = assets.iter().map(|a| a.len).sum();
        (requests, bytes, format!("{} asset(s)", assets.len()))
    } else {
        let files = resolve_files(&args.files, args.range)?;
        let into_dir = output.is_dir() || files.len() > 1;
        if into_dir {
            std::fs::create_dir_all(output)
                .map_err(|e| CliError::failed(format!("cannot make {}: {e}", output.display())))?;
        }
        let mut requests = Vec::new();
        for (path, offset, len) in &files {
            let target = match into_dir {
                true => output.join(path.file_name().unwrap_or(path.as_os_str())),
                false => output.to_path_buf(),
            };
            if target.exists() && std::fs::canonicalize(&target).ok() == std::fs::canonicalize(path).ok() {
                return Err(CliError::usage(format!(
                    "{} would be copied onto itself",
                    path.display()
                )));
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&target)
                .and_then(|f| f.set_len(*len))
                .map_err(|e| CliError::failed(format!("cannot make {}: {e}", target.display())))?;
            for at in (0..*len).step_by(window as usize) {
                let piece = window.min(len - at);
                requests.push(
                    Request::file(path, offset + at, piece, &none, 0)
                        .name(format!("{}@{at}", path.display()))
                        .to_file(dsr::FileSource::Path(target.clone()), at),
                );
            }
        }
        let bytes = files.iter().map(|f| f.2).sum();
        (requests, bytes, format!("{} file(s)", files.len()))
    };
    let mut config = args.engine.config();
    let trace = args
        .trace
        .as_ref()
        .map(|_| Arc::new(dsr::viz::TraceRecorder::new(config.workers)));
    let progress = Progress::new(bytes, !args.json);
    let mut observers: Vec<Arc<dyn Observer>> = vec![progress.clone()];
    if let Some(trace) = &trace {
        observers.push(trace.clone());
    }
    config.observer = Some(Arc::new(Observers(observers)));
    let (executor, io) = args.engine.executor(config)?;
    let start = Instant::now();
    let mut batch = executor.batch();
    let count = requests.len();
    for request in requests {
        batch.push(request.io(policy))?;
    }
    let report = executor.submit(batch)?.wait();
    let elapsed = start.elapsed();
    progress.finish();
    if let (Some(path), Some(trace)) = (&args.trace, &trace) {
        output::write_trace(path, trace, |_, _| None)?;
    }
    if let Some((id, err)) = report.first_failure() {
        let name = report.requests[id.index()].name.clone().unwrap_or_default();
        // Archive windows are named ASSET@FIRST_TILE, their tiles counted from there.
        let place = match (name.rsplit_once('@'), err.tile(), what.ends_with("asset(s)")) {
            (Some((asset, first)), Some(tile), true) => first
                .parse::<u64>()
                .map(|first| format!("asset {asset:?}, tile {} of the asset", first + tile as u64))
                .unwrap_or(name.clone()),
            _ => name.clone(),
        };
        return Err(CliError::failed(format!("{place}: {err}")));
    }
    let peak = output::peak_rss();
    if args.json {
        let doc = json!({
            "output": output,
            "what": what,
            "bytes": bytes,
            "requests": count,
            "elapsed_s": elapsed.as_secs_f64(),
            "gbps": output::gbps(bytes, elapsed),
            "process_s": process_seconds(),
            "peak_rss_bytes": peak,
            "workers": executor.workers(),
            "backend": super::backend_name(&io),
            "verified": !args.no_verify,
        });
        println!("{doc}");
    } else {
        println!(
            "wrote {what} ({}) to {} in {:.2} ms ({:.2} GB/s, {} worker(s), {} reads; {count} window(s) of up to {} MiB; peak memory {} MiB; whole process {:.2} ms)",
            dsr::viz::dot::human_bytes(bytes),
            output.display(),
            elapsed.as_secs_f64() * 1e3,
            output::gbps(bytes, elapsed),
            executor.workers(),
            super::backend_name(&io),
            window >> 20,
            peak >> 20,
            process_seconds() * 1e3
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn where_huge_pages_stall_destinations_take_them_only_for_direct_reads() {
        // In the checkout rather than /tmp, which may be tmpfs (whose pages cannot be dropped).
        let mut file = tempfile::NamedTempFile::new_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        file.as_file().sync_all().unwrap();
        let read = [(file.path(), 0u64, 1u64 << 20)];
        assert_eq!(pages_for_reads(IoPolicy::Direct, read), Pages::Huge);
        assert_eq!(pages_for_reads(IoPolicy::Buffered, read), Pages::Small);
        // Just written: in the page cache, so `auto` copies it and wants small pages.
        assert_eq!(pages_for_reads(IoPolicy::Auto, read), Pages::Small);
        // Clean pages dropped from the cache: `auto` reads directly into huge pages, unless the
        // disk is rotational, where it reads through the cache still.
        // SAFETY: an advisory call on an open descriptor; it changes no memory of ours.
        let dropped = unsafe { libc::posix_fadvise(file.as_file().as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(dropped, 0);
        let rotational = dsr::stages::io::residency::on_rotational_disk(file.as_file().as_raw_fd());
        let cold = if rotational { Pages::Small } else { Pages::Huge };
        assert_eq!(pages_for_reads(IoPolicy::Auto, read), cold, "rotational: {rotational}");
    }
}
