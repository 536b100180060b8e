//! Per-stage metrics: latency histograms (hdrhistogram) and byte counts, kept per worker so the
//! hot path never contends, merged when someone asks.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::vocabulary::NodeKind;

/// Latencies up to this are recorded exactly to 3 significant figures; longer ones saturate.
const MAX_TRACKED_NS: u64 = 600_000_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("static histogram bounds are valid")
}

#[derive(Debug)]
struct StageCounters {
    latency: Histogram<u64>,
    bytes: u64,
    failed: u64,
    skipped: u64,
}

/// One worker's counters.
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    stages: Vec<StageCounters>,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        WorkerMetrics {
            stages: NodeKind::ALL
                .iter()
                .map(|_| StageCounters {
                    latency: histogram(),
                    bytes: 0,
                    failed: 0,
                    skipped: 0,
                })
                .collect(),
        }
    }

    pub fn record(&mut self, kind: NodeKind, elapsed: Duration, bytes: u64, failed: bool) {
        let stage = &mut self.stages[kind.index()];
        stage.latency.saturating_record((elapsed.as_nanos() as u64).max(1));
        stage.bytes += bytes;
        stage.failed += failed as u64;
    }

    pub fn record_skip(&mut self, kind: NodeKind) {
        self.stages[kind.index()].skipped += 1;
    }

    pub fn reset(&mut self) {
        *self = WorkerMetrics::new();
    }
}

/// Percentiles of a latency distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// How many samples.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

impl LatencySummary {
    /// Summarises a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ns = Duration::from_nanos;
        LatencySummary {
            count: h.len(),
            p50: ns(h.value_at_quantile(0.5)),
            p99: ns(h.value_at_quantile(0.99)),
            p999: ns(h.value_at_quantile(0.999)),
            max: ns(h.max()),
            mean: ns(h.mean() as u64),
        }
    }

    /// Summarises durations.
    pub fn from_durations(durations: impl IntoIterator<Item = Duration>) -> Self {
        let mut h = histogram();
        for d in durations {
            h.saturating_record((d.as_nanos() as u64).max(1));
        }
        Self::from_histogram(&h)
    }
}

/// What one stage did since the last reset.
#[derive(Clone, Debug, PartialEq)]
pub struct StageMetrics {
    /// The stage.
    pub kind: NodeKind,
    /// Bytes its nodes produced.
    pub bytes: u64,
    /// Nodes that failed.
    pub failed: u64,
    /// Nodes skipped by a tombstone.
    pub skipped: u64,
    /// Latency of the nodes that ran (start of `Stage::run` to completion).
    pub latency: LatencySummary,
}

/// Every stage's metrics, merged over the workers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Stages that ran or skipped at least one node.
    pub stages: Vec<StageMetrics>,
}

impl MetricsSnapshot {
    pub(crate) fn merge<'a>(workers: impl IntoIterator<Item = &'a WorkerMetrics>) -> Self {
        let mut merged = WorkerMetrics::new();
        for worker in workers {
            for (into, from) in merged.stages.iter_mut().zip(&worker.stages) {
                into.latency.add(&from.latency).expect("histograms share bounds");
                into.bytes += from.bytes;
                into.failed += from.failed;
                into.skipped += from.skipped;
            }
        }
        let stages = NodeKind::ALL
            .iter()
            .zip(&merged.stages)
            .filter(|(_, s)| !s.latency.is_empty() || s.skipped > 0)
            .map(|(&kind, s)| StageMetrics {
                kind,
                bytes: s.bytes,
                failed: s.failed,
                skipped: s.skipped,
                latency: LatencySummary::from_histogram(&s.latency),
            })
            .collect();
        MetricsSnapshot { stages }
    }

    /// The metrics of one stage, if it ran.
    pub fn stage(&self, kind: NodeKind) -> Option<&StageMetrics> {
        self.stages.iter().find(|s| s.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_workers_up() {
        let mut a = WorkerMetrics::new();
        let mut b = WorkerMetrics::new();
        a.record(NodeKind::Read, Duration::from_micros(10), 100, false);
        b.record(NodeKind::Read, Duration::from_micros(30), 50, true);
        b.record_skip(NodeKind::Copy);
        let snap = MetricsSnapshot::merge([&a, &b]);
        let read = snap.stage(NodeKind::Read).unwrap();
        assert_eq!((read.bytes, read.failed, read.latency.count), (150, 1, 2));
        assert!(read.latency.max >= Duration::from_micros(29));
        assert_eq!(snap.stage(NodeKind::Copy).unwrap().skipped, 1);
        assert!(snap.stage(NodeKind::Upload).is_none());
    }
}
