//! Where `DecodeRoute::Auto` decodes a GDeflate request bound for a GPU buffer: on the CPU
//! workers or on the GPU decoder, whichever would finish it first.
//!
//! Each side is a lane with a backlog (bytes of output submitted to it and not yet decoded:
//! `DecompressCpu` nodes, and `DecompressGpu` streams, counted when their batch is submitted
//! and settled when their node ends, however it ends) and a drain rate measured while it is
//! busy (bytes decoded over the time the lane had work, decayed over about a second, so it
//! follows the machine: the CPU's rate falls when its workers are busy reading, the GPU's
//! when its submissions are small). A request goes where `(backlog + planned + its bytes) /
//! rate` is smaller, `planned` being what its own batch has sent each way so far.
//!
//! Until both lanes have a rate, the GPU takes the work (measured 2.7x the CPU route on an
//! H100 with an archive of small assets) except for about one byte in [`LEARN_SHARE`], which
//! goes to the CPU so that its rate gets measured too.

use std::sync::Mutex;
use std::time::Instant;

use crate::graph::CompiledGraph;
use crate::vocabulary::{NodeId, NodeKind};

/// A decoding side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeSite {
    /// The executor's workers (`DecompressCpu`).
    Cpu,
    /// The GPU decoder (`DecompressGpu`).
    Gpu,
}

/// While a lane has no rate, this share of the work goes to it to measure one (1 in N bytes).
pub const LEARN_SHARE: u64 = 16;
/// Bytes a lane must have drained before its rate is trusted.
const MIN_BYTES: f64 = (1 << 20) as f64;
/// Time constant of the rate's decay, in seconds.
const TAU: f64 = 1.0;

#[derive(Debug, Default)]
struct Lane {
    backlog: u64,
    /// The last completion, or when the backlog last became non-zero; `None` while idle.
    since: Option<Instant>,
    /// Decayed sums of bytes drained and seconds busy.
    bytes: f64,
    busy: f64,
}

impl Lane {
    fn rate(&self) -> Option<f64> {
        (self.bytes >= MIN_BYTES && self.busy > 0.0).then(|| self.bytes / self.busy)
    }

    fn add(&mut self, bytes: u64, now: Instant) {
        if bytes == 0 {
            return;
        }
        if self.backlog == 0 {
            self.since = Some(now);
        }
        self.backlog = self.backlog.saturating_add(bytes);
    }

    fn drained(&mut self, decoded: u64, settled: u64, now: Instant) {
        if let Some(since) = self.since {
            let dt = now.saturating_duration_since(since).as_secs_f64();
            let keep = (-dt / TAU).exp();
            self.bytes = self.bytes * keep + decoded as f64;
            self.busy = self.busy * keep + dt;
        }
        self.backlog = self.backlog.saturating_sub(settled);
        self.since = (self.backlog > 0).then_some(now);
    }
}

/// The two lanes (see the module comment). One per executor.
#[derive(Debug, Default)]
pub struct DecodeBalance {
    lanes: [Mutex<Lane>; 2],
}

fn lane(site: DecodeSite) -> usize {
    site as usize
}

impl DecodeBalance {
    fn lane(&self, site: DecodeSite) -> std::sync::MutexGuard<'_, Lane> {
        self.lanes[lane(site)].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a request of `bytes` of output should decode, its batch having planned
    /// `planned` (CPU, GPU) bytes so far.
    pub fn choose(&self, bytes: u64, planned: [u64; 2]) -> DecodeSite {
        let (cpu_backlog, cpu_rate) = {
            let cpu = self.lane(DecodeSite::Cpu);
            (cpu.backlog, cpu.rate())
        };
        let (gpu_backlog, gpu_rate) = {
            let gpu = self.lane(DecodeSite::Gpu);
            (gpu.backlog, gpu.rate())
        };
        match (cpu_rate, gpu_rate) {
            (Some(cpu), Some(gpu)) => {
                let cpu_eta = (cpu_backlog + planned[0] + bytes) as f64 / cpu;
                let gpu_eta = (gpu_backlog + planned[1] + bytes) as f64 / gpu;
                if cpu_eta < gpu_eta {
                    DecodeSite::Cpu
                } else {
                    DecodeSite::Gpu
                }
            }
            // Learning the CPU's rate: a small share of the bytes goes there.
            (None, _) if (planned[0] + bytes) * LEARN_SHARE <= planned[1] + bytes => DecodeSite::Cpu,
            _ => DecodeSite::Gpu,
        }
    }

    /// A batch was submitted: its decode work joins the backlogs.
    pub(crate) fn submitted(&self, graph: &CompiledGraph) {
        let mut work = [0u64; 2];
        for node in 0..graph.node_count() as u32 {
            let node = NodeId(node);
            if let Some((site, bytes)) = counted(graph, node) {
                work[lane(site)] += bytes;
            }
        }
        let now = Instant::now();
        for site in [DecodeSite::Cpu, DecodeSite::Gpu] {
            self.lane(site).add(work[lane(site)], now);
        }
    }

    /// A decode node ended (`decoded` bytes of output, 0 unless it succeeded).
    pub(crate) fn ended(&self, graph: &CompiledGraph, node: NodeId, decoded: u64) {
        let site = match graph.kind(node) {
            NodeKind::DecompressCpu => DecodeSite::Cpu,
            NodeKind::DecompressGpu => DecodeSite::Gpu,
            _ => return,
        };
        let settled = counted(graph, node).map_or(0, |(_, bytes)| bytes);
        self.lane(site).drained(decoded, settled, Instant::now());
    }

    /// The measured drain rates, bytes per second (CPU, GPU), where known.
    pub fn rates(&self) -> (Option<f64>, Option<f64>) {
        (self.lane(DecodeSite::Cpu).rate(), self.lane(DecodeSite::Gpu).rate())
    }
}

/// A batch's view of the balance while it is lowered: what it has sent each way so far.
#[derive(Debug)]
pub(crate) struct Routing {
    pub(crate) balance: std::sync::Arc<DecodeBalance>,
    pub(crate) planned: [u64; 2],
}

impl Routing {
    pub(crate) fn choose(&self, bytes: u64) -> DecodeSite {
        self.balance.choose(bytes, self.planned)
    }

    pub(crate) fn plan(&mut self, site: DecodeSite, bytes: u64) {
        self.planned[lane(site)] = self.planned[lane(site)].saturating_add(bytes);
    }
}

/// The backlog a node stands for: a `DecompressCpu` node its output; a GPU stream's output
/// once, on the piece that ends it (`tile` 1).
fn counted(graph: &CompiledGraph, node: NodeId) -> Option<(DecodeSite, u64)> {
    match graph.kind(node) {
        NodeKind::DecompressCpu => Some((DecodeSite::Cpu, graph.len(node))),
        NodeKind::DecompressGpu if graph.tile(node) == 1 => Some((DecodeSite::Gpu, graph.len(node))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Drains `lane` at `rate` bytes per second for `secs`, in steps.
    fn drain(balance: &DecodeBalance, site: DecodeSite, rate: f64, secs: f64, start: Instant) -> Instant {
        let mut lane = balance.lane(site);
        lane.add(u64::MAX / 4, start);
        let step = 0.01;
        let mut now = start;
        for _ in 0..(secs / step) as usize {
            now += Duration::from_secs_f64(step);
            lane.drained((rate * step) as u64, 0, now);
        }
        lane.backlog = 0;
        lane.since = None;
        now
    }

    #[test]
    fn unmeasured_it_sends_the_gpu_most_and_the_cpu_a_share_to_learn() {
        let balance = DecodeBalance::default();
        let mut planned = [0u64; 2];
        for _ in 0..1000 {
            let site = balance.choose(1 << 16, planned);
            planned[lane(site)] += 1 << 16;
        }
        let share = planned[0] as f64 / (planned[0] + planned[1]) as f64;
        assert!(share > 0.03 && share < 0.1, "CPU share {share}");
    }

    #[test]
    fn measured_it_splits_a_batch_so_both_finish_together() {
        let balance = DecodeBalance::default();
        let now = drain(&balance, DecodeSite::Cpu, 1e9, 0.5, Instant::now());
        drain(&balance, DecodeSite::Gpu, 3e9, 0.5, now);
        let (cpu, gpu) = balance.rates();
        assert!((cpu.unwrap() / 1e9 - 1.0).abs() < 0.05, "{cpu:?}");
        assert!((gpu.unwrap() / 3e9 - 1.0).abs() < 0.05, "{gpu:?}");
        let mut planned = [0u64; 2];
        for _ in 0..4000 {
            let site = balance.choose(1 << 16, planned);
            planned[lane(site)] += 1 << 16;
        }
        let share = planned[0] as f64 / (planned[0] + planned[1]) as f64;
        assert!((share - 0.25).abs() < 0.01, "CPU share {share}");
    }

    #[test]
    fn a_backlog_on_one_side_sends_new_work_to_the_other() {
        let balance = DecodeBalance::default();
        let now = drain(&balance, DecodeSite::Cpu, 1e9, 0.5, Instant::now());
        let now = drain(&balance, DecodeSite::Gpu, 3e9, 0.5, now);
        assert_eq!(balance.choose(1 << 20, [0, 0]), DecodeSite::Gpu);
        // A second of GPU work queued: the next request finishes sooner on the CPU.
        balance.lane(DecodeSite::Gpu).add(3_000_000_000, now);
        assert_eq!(balance.choose(1 << 20, [0, 0]), DecodeSite::Cpu);
        // Settled, the GPU is first again.
        balance.lane(DecodeSite::Gpu).drained(0, 3_000_000_000, now);
        assert_eq!(balance.choose(1 << 20, [0, 0]), DecodeSite::Gpu);
    }
}
