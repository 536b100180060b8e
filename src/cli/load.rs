//! `dsr load FILE... [--range OFFSET:LEN]`: files into host memory through the engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use dsr::engine::{LatencySummary, Observer};
use dsr::viz::RunRecorder;
use dsr::{Batch, BatchReport, HostBuffer, Request, RequestStatus};
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
    /// Load this many times into the same memory; report every run and the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
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

    pub fn destination(&self) -> Result<HostBuffer, CliError> {
        let len = usize::try_from(self.total).map_err(|_| {
            CliError::failed(format!(
                "{} bytes do not fit in this machine's address space",
                self.total
            ))
        })?;
        Ok(HostBuffer::prefault(len))
    }

    pub fn submit(&self, executor: &dsr::Executor, dest: &HostBuffer, io: dsr::IoPolicy) -> Result<Batch, CliError> {
        let mut batch = executor.batch();
        for ((path, offset, len), slot) in self.files.iter().zip(&self.slots) {
            let request = Request::file(path.clone(), *offset, *len, dest, *slot)
                .name(path.display().to_string())
                .io(io);
            batch.push(request)?;
        }
        Ok(executor.submit(batch)?)
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

pub fn run(args: LoadArgs) -> CliResult {
    if args.files.first().is_some_and(|f| dsr::archive::is_archive(f)) {
        return run_archive(args);
    }
    let layout = Layout::new(resolve_files(&args.files, args.range)?);
    let dest = layout.destination()?;
    let progress = Progress::new(layout.bytes() * args.repeat.max(1) as u64, !args.json);
    let recorder = args.dot.as_ref().map(|_| Arc::new(RunRecorder::new()));
    let mut observers: Vec<Arc<dyn Observer>> = vec![progress.clone()];
    if let Some(recorder) = &recorder {
        observers.push(recorder.clone());
    }
    let mut config = args.engine.config();
    config.observer = Some(Arc::new(Observers(observers)));
    let (executor, io) = args.engine.executor(config)?;

    let mut runs: Vec<Duration> = Vec::new();
    let mut last = None;
    for _ in 0..args.repeat.max(1) {
        executor.reset_metrics();
        let start = Instant::now();
        let batch = layout.submit(&executor, &dest, args.engine.policy())?;
        let report = batch.wait();
        runs.push(start.elapsed());
        last = Some((batch, report));
    }
    progress.finish();
    let (batch, report) = last.expect("at least one run");
    let metrics = executor.metrics();
    let latency = LatencySummary::from_durations(report.requests.iter().map(|r| r.latency));
    let failed = failures(&report);
    let bytes = layout.bytes();
    let mut sorted = runs.clone();
    let median = dsr::bench::median(&mut sorted);

    if let (Some(path), Some(recorder)) = (&args.dot, &recorder) {
        let dot = dsr::viz::run_dot(batch.graph(), Some(recorder));
        std::fs::write(path, dot).map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    }

    if args.json {
        let doc = json!({
            "files": layout.files.len(),
            "bytes": bytes,
            "workers": executor.workers(),
            "backend": super::backend_name(&io),
            "io": format!("{:?}", args.engine.io).to_lowercase(),
            "runs": runs.iter().map(|d| json!({"elapsed_s": d.as_secs_f64(), "gbps": output::gbps(bytes, *d)})).collect::<Vec<_>>(),
            "median_gbps": output::gbps(bytes, median),
            "request_latency": output::latency_json(&latency),
            "stages": output::stages_json(&metrics),
            "failures": failed,
        });
        println!("{doc}");
    } else {
        println!(
            "loaded {} in {} file(s) with {} worker(s), {} reads ({:?} I/O)",
            dsr::viz::dot::human_bytes(bytes),
            layout.files.len(),
            executor.workers(),
            super::backend_name(&io),
            args.engine.io
        );
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
        println!("{}", output::latency_line("request latency", &latency));
        output::print_stages(&metrics);
        for f in &failed {
            println!("error: {f}");
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} of {} request(s) failed",
            failed.len(),
            report.requests.len()
        )))
    }
}

/// `dsr load ARCHIVE [NAME...]`: assets decoded on every worker, tile hashes verified.
fn run_archive(args: LoadArgs) -> CliResult {
    if args.range.is_some() {
        return Err(CliError::usage("--range applies to plain files, not to archives"));
    }
    let path = &args.files[0];
    let archive = dsr::archive::Archive::open(path)?;
    let assets: Vec<&dsr::archive::Asset> = if args.files.len() == 1 {
        archive.assets.iter().collect()
    } else {
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
            .collect::<Result<_, _>>()?
    };
    let mut slots = Vec::with_capacity(assets.len());
    let mut total = 0u64;
    for asset in &assets {
        slots.push(total);
        total += asset.len.div_ceil(4096) * 4096;
    }
    let bytes: u64 = assets.iter().map(|a| a.len).sum();
    let stored: u64 = assets.iter().map(|a| a.stored_len).sum();
    let dest = dsr::HostBuffer::prefault(
        usize::try_from(total).map_err(|_| CliError::failed("the assets do not fit in this machine's memory"))?,
    );
    let progress = Progress::new(bytes * args.repeat.max(1) as u64, !args.json);
    let recorder = args.dot.as_ref().map(|_| Arc::new(RunRecorder::new()));
    let mut observers: Vec<Arc<dyn Observer>> = vec![progress.clone()];
    if let Some(recorder) = &recorder {
        observers.push(recorder.clone());
    }
    let mut config = args.engine.config();
    config.observer = Some(Arc::new(Observers(observers)));
    let (executor, io) = args.engine.executor(config)?;
    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..args.repeat.max(1) {
        executor.reset_metrics();
        let start = Instant::now();
        let mut batch = executor.batch();
        for request in dsr::archive::requests(&archive, &assets, &dest, &slots, !args.no_verify) {
            batch.push(request.io(args.engine.policy()))?;
        }
        let batch = executor.submit(batch)?;
        let report = batch.wait();
        runs.push(start.elapsed());
        last = Some((batch, report));
    }
    progress.finish();
    let (batch, report) = last.expect("at least one run");
    if let (Some(dot), Some(recorder)) = (&args.dot, &recorder) {
        std::fs::write(dot, dsr::viz::run_dot(batch.graph(), Some(recorder)))
            .map_err(|e| CliError::failed(format!("cannot write {}: {e}", dot.display())))?;
    }
    let metrics = executor.metrics();
    let latency = LatencySummary::from_durations(report.requests.iter().map(|r| r.latency));
    let failed = failures(&report);
    let mut sorted = runs.clone();
    let median = dsr::bench::median(&mut sorted);
    if args.json {
        let doc = json!({
            "archive": path,
            "assets": assets.len(),
            "bytes": bytes,
            "stored_bytes": stored,
            "verified": !args.no_verify,
            "workers": executor.workers(),
            "backend": super::backend_name(&io),
            "runs": runs.iter().map(|d| json!({"elapsed_s": d.as_secs_f64(), "gbps": output::gbps(bytes, *d)})).collect::<Vec<_>>(),
            "median_gbps": output::gbps(bytes, median),
            "request_latency": output::latency_json(&latency),
            "stages": output::stages_json(&metrics),
            "failures": failed,
        });
        println!("{doc}");
    } else {
        println!(
            "loaded {} asset(s) from {}: {} decoded from {} read, {} worker(s), tile hashes {}",
            assets.len(),
            path.display(),
            dsr::viz::dot::human_bytes(bytes),
            dsr::viz::dot::human_bytes(stored),
            executor.workers(),
            if args.no_verify { "not checked" } else { "verified" }
        );
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
        println!("{}", output::latency_line("request latency", &latency));
        output::print_stages(&metrics);
        for f in &failed {
            println!("error: {f}");
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} of {} asset(s) failed",
            failed.len(),
            report.requests.len()
        )))
    }
}
