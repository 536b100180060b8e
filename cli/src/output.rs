//! What the commands print: human summaries, JSON documents, and the progress bar.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use dsr::engine::{LatencySummary, NodeEnd, NodeEvent, Observer};
use dsr::viz::dot::human_bytes;
use dsr::MetricsSnapshot;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// GB/s (decimal) for `bytes` in `elapsed`.
pub fn gbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e9
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn latency_json(l: &LatencySummary) -> Value {
    json!({
        "count": l.count,
        "p50_us": micros(l.p50),
        "p99_us": micros(l.p99),
        "p999_us": micros(l.p999),
        "max_us": micros(l.max),
        "mean_us": micros(l.mean),
    })
}

pub fn latency_line(label: &str, l: &LatencySummary) -> String {
    format!(
        "{label:<22} p50 {:>9.1} µs   p99 {:>9.1} µs   p99.9 {:>9.1} µs   max {:>9.1} µs   (n={})",
        micros(l.p50),
        micros(l.p99),
        micros(l.p999),
        micros(l.max),
        l.count
    )
}

pub fn stages_json(metrics: &MetricsSnapshot) -> Value {
    Value::Array(
        metrics
            .stages
            .iter()
            .map(|s| {
                json!({
                    "stage": s.kind.name(),
                    "bytes": s.bytes,
                    "failed": s.failed,
                    "skipped": s.skipped,
                    "latency": latency_json(&s.latency),
                })
            })
            .collect(),
    )
}

pub fn print_stages(metrics: &MetricsSnapshot) {
    for s in &metrics.stages {
        println!(
            "{}   {}",
            latency_line(&format!("  {} node", s.kind), &s.latency),
            human_bytes(s.bytes)
        );
    }
}

/// A progress bar over bytes, fed by node events; hidden for JSON output and non-terminals.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

/// A bar over `total_bytes`, drawn only when `visible` and stderr is a terminal.
pub fn bytes_bar(total_bytes: u64, visible: bool) -> ProgressBar {
    if !visible || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

impl Progress {
    pub fn new(total_bytes: u64, visible: bool) -> Arc<Self> {
        Arc::new(Progress {
            bar: bytes_bar(total_bytes, visible),
        })
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn node_started(&self, _event: &NodeEvent) {}
    fn node_finished(&self, _event: &NodeEvent, end: &NodeEnd) {
        if let NodeEnd::Done { bytes } = end {
            self.bar.inc(*bytes);
        }
    }
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

/// Writes `recorder`'s trace to `path` (`name` gives a request's name from its batch and
/// index, where known).
pub fn write_trace(
    path: &std::path::Path,
    recorder: &dsr::viz::TraceRecorder,
    name: impl Fn(u64, u32) -> Option<String>,
) -> crate::CliResult {
    std::fs::write(path, recorder.chrome_json(name).to_string())
        .map_err(|e| crate::CliError::failed(format!("cannot write {}: {e}", path.display())))
}

/// Fans node events out to several observers.
#[derive(Debug)]
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn node_started(&self, event: &NodeEvent) {
        for o in &self.0 {
            o.node_started(event);
        }
    }
    fn node_deferred(&self, event: &NodeEvent) {
        for o in &self.0 {
            o.node_deferred(event);
        }
    }
    fn node_submitted(&self, event: &NodeEvent, value: u64) {
        for o in &self.0 {
            o.node_submitted(event, value);
        }
    }
    fn node_gpu_time(&self, event: &NodeEvent, gpu: &dsr::GpuSpan) {
        for o in &self.0 {
            o.node_gpu_time(event, gpu);
        }
    }
    fn node_finished(&self, event: &NodeEvent, end: &NodeEnd) {
        for o in &self.0 {
            o.node_finished(event, end);
        }
    }
    fn batch_retired(&self, batch: u64) {
        for o in &self.0 {
            o.batch_retired(batch);
        }
    }
}
