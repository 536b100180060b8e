//! The soak: rounds of random requests under injected faults and cancel storms, through the
//! engine's batch API, the DirectStorage-shaped Rust queue and the C ABI (`libdsr.so`), with
//! dsr's promises checked as it goes (`docs/reliability.md`):
//!
//! - every request reports exactly once, and the batch report agrees with its callback;
//! - every request that reports done has exactly its bytes in its destination (host memory, a
//!   GPU buffer read back, or a file range);
//! - a request fails only where a fault was injected into its file (`EIO`), and never reports
//!   done there; short reads and late completions are absorbed;
//! - once a cancellation is acknowledged (a batch's cancel ticket, or the request's own
//!   callback on the queues), its destination does not change again;
//! - nothing is written outside a destination range (canary bytes around every host and GPU
//!   range, zero holes between the ranges of an output file);
//! - scratch, staging and queue slots are all back at the end of each round, and file
//!   descriptors and Vulkan allocations return to where they were (sampled between rounds,
//!   with RSS, and compared between the first and the last fifth of the run);
//! - a GPU device lost part way through a batch fails its GPU requests alone, without a hang.
//!
//! A hang is a violation too: every wait is bounded.

use std::ffi::{c_void, CString};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dsr::gpu::{GpuConfig, GpuContext, StagingConfig};
use dsr::stages::io::{Fault, FaultPlan};
use dsr::{
    DeviceBuffer, ErrorKind, Executor, ExecutorConfig, FileSource, HostBuffer, IoConfig, Request, RequestStatus,
};

use super::libdsr::{c, c_check, Libdsr};

/// Bytes of canary before and after every destination range.
const CANARY: usize = 64;
/// Longest any wait may take before it counts as a hang.
const PATIENCE: Duration = Duration::from_secs(60);
/// Tags are drawn from this many values, so cancelling one hits several requests.
const TAGS: u64 = 8;

/// What to soak.
#[derive(Debug)]
pub struct SoakConfig {
    /// How long to run.
    pub duration: Duration,
    /// Seed of every random choice (a run can be repeated).
    pub seed: u64,
    /// Worker threads of the engine.
    pub workers: usize,
    /// A scratch budget small enough that requests wait for it.
    pub scratch_budget: u64,
    /// GPU destinations and device losses on this device (`None`: host and files only).
    pub gpu: Option<GpuConfig>,
    /// `libdsr.so`, for the C ABI's rounds (`None`: not run, and said so in the report).
    pub library: Option<PathBuf>,
    /// A device-loss round every this many rounds (with a GPU; 0: none).
    pub device_loss_every: u64,
}

/// Requests by how they were submitted.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PathCounts {
    pub batch: u64,
    pub queue: u64,
    pub c_abi: u64,
}

/// What a soak did and found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub seed: u64,
    pub rounds: u64,
    pub requests: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Requests that ran into an injected fault (EIO, short reads, late completions), plus
    /// device losses.
    pub faults_injected: u64,
    pub device_losses: u64,
    pub cancel_storms: u64,
    /// Rounds run with the source files dropped from the page cache first (every other one).
    pub cold_rounds: u64,
    /// Broken promises: must be 0.
    pub violations: u64,
    /// The first few, described.
    pub violation_examples: Vec<String>,
    /// RSS of the last fifth of the rounds against the second (the lowest of each): growth after
    /// the warm-up. Descriptors and Vulkan allocations against the first fifth (after the first
    /// three rounds); those two are violations when the last fifth's lowest is above the first
    /// fifth's highest.
    pub rss_growth_bytes: i64,
    /// RSS of the second fifth against the first (the lowest of each): the warm-up. Allocators
    /// and the driver keep memory over the first few dozen device losses, then hold
    /// (docs/reliability.md).
    pub rss_warmup_bytes: i64,
    pub fd_growth: i64,
    pub vk_allocation_growth: i64,
    pub paths: PathCounts,
    pub gpu: Option<String>,
    /// Why the C ABI's rounds did not run, if they did not.
    pub c_abi_skipped: Option<String>,
    pub scratch_budget_bytes: u64,
    pub scratch_peak_bytes: u64,
    pub scratch_waits: u64,
}

impl SoakReport {
    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.violation_examples.len() < 20 {
            self.violation_examples.push(what);
        }
    }
}

/// A source the requests read: a file (maybe with a fault injected into its reads) or memory,
/// plain or GDeflate.
struct Source {
    name: String,
    path: Option<PathBuf>,
    stored: Arc<[u8]>,
    decoded: Arc<[u8]>,
    compressed: bool,
    fault: Option<Fault>,
}

/// The sources and the fault plan over them.
struct World {
    dir: tempfile::TempDir,
    sources: Vec<Source>,
    faults: FaultPlan,
}

impl World {
    fn new(rng: &mut fastrand::Rng) -> std::io::Result<World> {
        let dir = tempfile::tempdir()?;
        let text = |len: usize, rng: &mut fastrand::Rng| -> Vec<u8> {
            let words: [&[u8]; 6] = [b"stream ", b"asset ", b"tile ", b"texture ", b"mesh ", b"level "];
            let mut out = Vec::with_capacity(len + 16);
            while out.len() < len {
                out.extend_from_slice(words[rng.usize(..words.len())]);
                if rng.u8(..) == 0 {
                    out.push(rng.u8(..));
                }
            }
            out.truncate(len);
            out
        };
        let mut noise = vec![0u8; 700 << 10];
        rng.fill(&mut noise);
        let data: Vec<Vec<u8>> = vec![noise, text(900 << 10, rng), text(150 << 10, rng), text(3_001, rng)];
        let faults = FaultPlan::new("eio-", Fault::Eio)
            .with("short-", Fault::Short(3001))
            .with("slow-", Fault::Delay(Duration::from_millis(3)));
        let mut sources = Vec::new();
        for (i, bytes) in data.iter().enumerate() {
            let decoded: Arc<[u8]> = bytes.as_slice().into();
            let packed: Arc<[u8]> = dsr_gdeflate::compress(bytes, dsr_gdeflate::Level::new(1))
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .into();
            for (compressed, stored) in [(false, decoded.clone()), (true, packed)] {
                let kind = if compressed { "gdf" } else { "raw" };
                sources.push(Source {
                    name: format!("memory-{kind}-{i}"),
                    path: None,
                    stored: stored.clone(),
                    decoded: decoded.clone(),
                    compressed,
                    fault: None,
                });
                for prefix in ["", "eio-", "short-", "slow-"] {
                    let name = format!("{prefix}file-{kind}-{i}");
                    let path = dir.path().join(&name);
                    // On the disk, not only in the cache, so that `evict` can drop its pages.
                    let mut file = std::fs::File::create(&path)?;
                    std::io::Write::write_all(&mut file, &stored)?;
                    file.sync_all()?;
                    sources.push(Source {
                        fault: faults.fault_for(Some(&path)),
                        name,
                        path: Some(path),
                        stored: stored.clone(),
                        decoded: decoded.clone(),
                        compressed,
                    });
                }
            }
        }
        Ok(World { dir, sources, faults })
    }

    /// Drops the source files' pages from the page cache, so the next round's reads of them go
    /// to the disk (through the blocking-read threads, or the ring for faulted files).
    fn evict(&self) {
        for path in self.sources.iter().filter_map(|s| s.path.as_ref()) {
            if let Ok(file) = std::fs::File::open(path) {
                // SAFETY: advice on a descriptor this function owns.
                unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, libc::POSIX_FADV_DONTNEED) };
            }
        }
    }
}

/// Where a request lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landing {
    /// Host memory, at this offset of the round's host block.
    Host(usize),
    /// The round's GPU buffer, at this offset.
    Gpu(u64),
    /// The round's output file, at this offset.
    File(u64),
}

/// One planned request.
struct Planned {
    source: usize,
    /// The stored bytes read (the whole stream for GDeflate).
    offset: u64,
    len: u64,
    /// What lands: `decoded[at..at + out_len]` of the source.
    at: usize,
    out_len: usize,
    landing: Landing,
    tag: u64,
}

impl Planned {
    fn expected<'a>(&self, world: &'a World) -> &'a [u8] {
        &world.sources[self.source].decoded[self.at..self.at + self.out_len]
    }
}

/// The canary byte at `offset` of a block: varies with the offset, so a shifted write shows.
fn canary(offset: usize) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8)) as u8 | 1
}

/// Host memory the soak owns and lends to the engine (`HostBuffer::from_raw`), so it can read
/// ranges while requests write others.
struct HostBlock {
    bytes: Box<[u8]>,
}

impl HostBlock {
    fn new(len: usize) -> HostBlock {
        HostBlock {
            bytes: (0..len).map(canary).collect(),
        }
    }

    fn buffer(&mut self) -> HostBuffer {
        let ptr = std::ptr::NonNull::new(self.bytes.as_mut_ptr()).expect("a boxed slice is not null");
        // SAFETY: the block outlives every request of its round (the round waits for all of
        // them before dropping it), and the soak only reads ranges no request is writing,
        // unless a promise is broken, which is what it looks for.
        unsafe { HostBuffer::from_raw(ptr, self.bytes.len()) }
    }

    /// A copy of `len` bytes at `at`, read while the engine may write elsewhere.
    fn read(&self, at: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        // SAFETY: inside the block; volatile-free copies of bytes no promise lets anyone write.
        unsafe { std::ptr::copy_nonoverlapping(self.bytes.as_ptr().add(at), out.as_mut_ptr(), len) };
        out
    }
}

/// A plan's layout: the host block's, GPU buffer's and output file's sizes.
#[derive(Default)]
struct Layout {
    host: usize,
    gpu: u64,
    file: u64,
}

/// What is sampled between rounds for the leak checks: RSS bytes, open descriptors, live
/// Vulkan allocations.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss: i64,
    fds: i64,
    vk: i64,
}

/// One measure of a sample.
type Pick = fn(&Sample) -> i64;

/// The soak's round-level state: the report, the RNG, and the samples for leak checks.
struct Soak {
    world: World,
    rng: fastrand::Rng,
    report: SoakReport,
    samples: Vec<Sample>,
    round: u64,
}

/// How a round submits its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path3 {
    Batch,
    Queue,
    CAbi,
}

impl Soak {
    /// Plans `count` requests: sources and ranges, landings laid out with canaries between them.
    fn plan(&mut self, count: usize, gpu: bool, files: bool, c_abi: bool) -> (Vec<Planned>, Layout) {
        let mut layout = Layout {
            host: CANARY,
            gpu: CANARY as u64,
            file: 4096,
        };
        let mut planned = Vec::with_capacity(count);
        while planned.len() < count {
            let source = self.rng.usize(..self.world.sources.len());
            let s = &self.world.sources[source];
            // The C ABI's runtime has no fault plan: its rounds use clean files and memory.
            if c_abi && s.fault.is_some() {
                continue;
            }
            let (offset, len, at, out_len) = if s.compressed {
                (0, s.stored.len() as u64, 0, s.decoded.len())
            } else {
                let len = self.rng.usize(1..=s.stored.len().min(256 << 10));
                let offset = self.rng.usize(..=s.stored.len() - len);
                (offset as u64, len as u64, offset, len)
            };
            let roll = self.rng.u8(..10);
            let landing = if gpu && roll < 3 && !c_abi {
                let at = layout.gpu;
                layout.gpu += out_len as u64 + CANARY as u64;
                Landing::Gpu(at)
            } else if files && roll >= 8 && !c_abi {
                let at = layout.file;
                // A hole after each range: it must still read as zeros.
                layout.file += (out_len as u64).div_ceil(4096) * 4096 + 4096;
                Landing::File(at)
            } else {
                let at = layout.host;
                layout.host += out_len + CANARY;
                Landing::Host(at)
            };
            planned.push(Planned {
                source,
                offset,
                len,
                at,
                out_len,
                landing,
                tag: self.rng.u64(..TAGS),
            });
        }
        (planned, layout)
    }

    /// The request for `p`.
    fn request(&self, p: &Planned, host: &HostBuffer, gpu: Option<&DeviceBuffer>, out: &Path) -> Request {
        let s = &self.world.sources[p.source];
        let host_at = match p.landing {
            Landing::Host(at) => at as u64,
            _ => 0,
        };
        let read = match &s.path {
            Some(path) => Request::file(path, p.offset, p.len, host, host_at),
            None => Request::memory(s.stored.clone(), p.offset, p.len, host, host_at),
        };
        let read = if s.compressed {
            read.gdeflate(s.decoded.len() as u64)
        } else {
            read
        };
        let request = match p.landing {
            Landing::Host(_) => read,
            Landing::Gpu(at) => read.on_device(gpu.expect("GPU landings only with a GPU buffer"), at),
            Landing::File(at) => read.to_file(FileSource::Path(out.to_path_buf()), at),
        };
        request.tag(p.tag).name(format!("{}#{}", s.name, p.at))
    }

    /// Checks one request's outcome: its status against its source's fault, and a done
    /// request's bytes.
    fn check_outcome(&mut self, what: &str, p: &Planned, status: &RequestStatus, landed: Option<&[u8]>) {
        let s = &self.world.sources[p.source];
        let eio = s.fault == Some(Fault::Eio);
        if s.fault.is_some() {
            self.report.faults_injected += 1;
        }
        match status {
            RequestStatus::Done => {
                self.report.done += 1;
                if eio {
                    self.report
                        .violation(format!("{what}: a read of {} (EIO injected) reported done", s.name));
                } else if landed.is_some_and(|landed| landed != p.expected(&self.world)) {
                    self.report.violation(format!(
                        "{what}: {} ({:?}) reported done with other bytes than its source's",
                        s.name, p.landing
                    ));
                }
            }
            RequestStatus::Failed(err) => {
                self.report.failed += 1;
                if !eio {
                    self.report
                        .violation(format!("{what}: {} failed with no fault injected: {err}", s.name));
                } else if err.kind() != ErrorKind::Io {
                    self.report.violation(format!(
                        "{what}: {} (EIO injected) failed as {:?}: {err}",
                        s.name,
                        err.kind()
                    ));
                }
            }
            RequestStatus::Cancelled => self.report.cancelled += 1,
        }
    }

    /// Bytes outside every landing of `block` that are not canaries: each a violation.
    fn check_canaries(&mut self, what: &str, block: &[u8], ranges: impl Iterator<Item = (usize, usize)>) {
        let mut ranges: Vec<_> = ranges.collect();
        ranges.sort_unstable();
        let mut at = 0;
        for (start, len) in ranges.into_iter().chain(std::iter::once((block.len(), 0))) {
            if let Some(bad) = (at..start).find(|&i| block[i] != canary(i)) {
                self.report.violation(format!(
                    "{what}: byte {bad} outside every destination range was written"
                ));
                return;
            }
            at = start + len;
        }
    }

    /// Samples what must not leak, with everything of the round dropped.
    fn sample(&mut self, gpu: Option<&Arc<GpuContext>>) {
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        let rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<i64>().ok()))
            .map_or(0, |pages| pages * 4096);
        let vk = gpu
            .and_then(|g| g.allocator().calculate_statistics().ok())
            .map_or(0, |s| s.total.statistics.allocationCount as i64);
        self.samples.push(Sample { rss, fds, vk });
        if std::env::var_os("DSR_SOAK_SAMPLES").is_some() {
            eprintln!("round {}: rss {rss} fds {fds} vk {vk}", self.round);
        }
    }
}

/// Runs a soak.
pub fn run(config: &SoakConfig) -> dsr::Result<SoakReport> {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let world = World::new(&mut rng).map_err(|e| dsr::Error::from_io(e, "cannot make the soak's files"))?;
    let io = IoConfig {
        ring: dsr::stages::io::RingConfig {
            faults: Some(Arc::new(world.faults.clone())),
            ..Default::default()
        },
        ..dsr::io_from_env()
    };
    let executor_config = || ExecutorConfig {
        workers: config.workers,
        scratch_budget: config.scratch_budget,
        ..ExecutorConfig::default()
    };
    let gpu = match &config.gpu {
        Some(gpu) => Some(GpuContext::new(gpu)?),
        None => None,
    };
    let (executor, transfers) = match &gpu {
        Some(context) => {
            let (executor, _, transfers) =
                dsr::executor_with_gpu(executor_config(), io.clone(), context, StagingConfig::default())?;
            (Arc::new(executor), Some(transfers))
        }
        None => (Arc::new(dsr::executor_with_io(executor_config(), io.clone())?.0), None),
    };
    let lib = config.library.as_deref().map(Libdsr::load);
    let mut soak = Soak {
        world,
        rng,
        report: SoakReport {
            seed: config.seed,
            gpu: gpu.as_ref().map(|g| g.info().name.clone()),
            scratch_budget_bytes: config.scratch_budget,
            ..SoakReport::default()
        },
        samples: Vec::new(),
        round: 0,
    };
    let c_runtime = match &lib {
        None => {
            soak.report.c_abi_skipped = Some("no libdsr.so given".into());
            None
        }
        Some(Err(e)) => {
            soak.report.c_abi_skipped = Some(e.clone());
            None
        }
        Some(Ok(lib)) => Some(CRuntime::new(lib, config.workers, &soak.world)?),
    };
    let start = Instant::now();
    while start.elapsed() < config.duration {
        let path = match soak.round % 3 {
            0 => Path3::Batch,
            1 => Path3::Queue,
            _ if c_runtime.is_some() => Path3::CAbi,
            _ => Path3::Batch,
        };
        if soak.round % 2 == 1 {
            soak.world.evict();
            soak.report.cold_rounds += 1;
        }
        let out = soak.world.dir.path().join(format!("out-{}", soak.round));
        match path {
            Path3::Batch => batch_round(&mut soak, &executor, gpu.as_ref(), &out)?,
            Path3::Queue => queue_round(&mut soak, &executor, gpu.as_ref(), &out)?,
            Path3::CAbi => c_round(&mut soak, c_runtime.as_ref().expect("chosen only with a runtime"))?,
        }
        let _ = std::fs::remove_file(&out);
        // Everything of the round is back: scratch, staging, the queues' slots (checked there).
        let scratch = executor.scratch();
        if scratch.in_use != 0 {
            soak.report.violation(format!(
                "round {}: {} bytes of scratch still held after it",
                soak.round, scratch.in_use
            ));
        }
        if let Some(transfers) = transfers.as_ref().filter(|t| t.free_slots() != t.staging_shape().0) {
            soak.report.violation(format!(
                "round {}: {} of {} staging slots free after it",
                soak.round,
                transfers.free_slots(),
                transfers.staging_shape().0
            ));
        }
        let every = config.device_loss_every;
        if let Some(config) = config
            .gpu
            .as_ref()
            .filter(|_| every > 0 && soak.round % every == every - 1)
        {
            device_loss_round(&mut soak, config, &io, executor_config())?;
        }
        soak.sample(gpu.as_ref());
        soak.round += 1;
    }
    drop(c_runtime);
    let scratch = executor.scratch();
    soak.report.scratch_peak_bytes = scratch.peak;
    soak.report.scratch_waits = scratch.waits;
    // Larger than the budget only when one block is (let in alone); the soak's are smaller.
    if scratch.peak > config.scratch_budget {
        soak.report.violation(format!(
            "scratch peaked at {} bytes over its budget of {}",
            scratch.peak, config.scratch_budget
        ));
    }
    if let Some(context) = &gpu {
        for message in context.validation_messages() {
            soak.report.violation(format!("Vulkan validation: {message}"));
        }
    }
    soak.report.seconds = start.elapsed().as_secs_f64();
    soak.report.rounds = soak.round;
    // Floors, not medians: what a round holds while it runs varies with its kind (a queue
    // keeps its last batch's files open until its next), and what leaks raises the floor. The
    // first cycle of rounds makes what is made once (lazily). A leak is a floor at the end above
    // everything seen in the first two fifths: a short soak (the test suite's 8 s, 24-32 rounds
    // in a debug build) has only a few rounds a fifth, whose mix of round kinds decides their
    // descriptors (seen: a last fifth's floor one above a first fifth's ceiling of five
    // rounds, where 30 s of the same seed grew by none). RSS warms up for longer (the allocators' and the driver's
    // retained memory grows over the first few dozen device losses, then holds), so its growth
    // is judged after the first fifth.
    let samples = std::mem::take(&mut soak.samples);
    let samples = samples.get(3..).filter(|s| !s.is_empty()).unwrap_or(&samples);
    let fifth = (samples.len() / 5).max(1);
    let window = |k: usize| &samples[(k * fifth).min(samples.len() - 1)..((k + 1) * fifth).min(samples.len())];
    let (first, second, last) = (window(0), window(1), &samples[samples.len() - fifth..]);
    let start = &samples[..(2 * fifth).min(samples.len())];
    let floor = |part: &[Sample], pick: Pick| part.iter().map(pick).min().unwrap_or(0);
    let ceiling = |part: &[Sample], pick: Pick| part.iter().map(pick).max().unwrap_or(0);
    let rss: Pick = |s| s.rss;
    soak.report.rss_warmup_bytes = floor(second, rss) - floor(first, rss);
    soak.report.rss_growth_bytes = floor(last, rss) - floor(second, rss);
    let picks: [(Pick, &str); 2] = [(|s| s.fds, "file descriptors"), (|s| s.vk, "Vulkan allocations")];
    for (k, (pick, what)) in picks.into_iter().enumerate() {
        let growth = floor(last, pick) - floor(first, pick);
        match k {
            0 => soak.report.fd_growth = growth,
            _ => soak.report.vk_allocation_growth = growth,
        }
        if floor(last, pick) > ceiling(start, pick) {
            soak.report.violation(format!(
                "{what}: at least {} at the end, at most {} in the first two fifths (a leak)",
                floor(last, pick),
                ceiling(start, pick)
            ));
        }
    }
    Ok(soak.report)
}

/// The round's destinations: host block, GPU buffer (canary-filled), output file.
struct Landings {
    host: HostBlock,
    host_buffer: HostBuffer,
    gpu: Option<DeviceBuffer>,
    gpu_len: u64,
}

impl Landings {
    fn new(executor: &Executor, gpu: Option<&Arc<GpuContext>>, layout: &Layout, out: &Path) -> dsr::Result<Landings> {
        let mut host = HostBlock::new(layout.host);
        let host_buffer = host.buffer();
        File::create(out).map_err(|e| dsr::Error::from_io(e, "cannot make the soak's output").with_path(out))?;
        let gpu = match gpu {
            Some(context) if layout.gpu > CANARY as u64 => {
                let buffer = dsr::gpu::allocate_buffer(context, layout.gpu)?;
                let canaries: Arc<[u8]> = (0..layout.gpu as usize).map(canary).collect();
                let mut batch = executor.batch();
                batch.push(Request::memory_to_device(canaries, 0, layout.gpu, &buffer, 0))?;
                let report = executor.submit(batch)?.wait();
                if let Some((_, err)) = report.first_failure() {
                    return Err(err.clone());
                }
                Some(buffer)
            }
            _ => None,
        };
        Ok(Landings {
            host,
            host_buffer,
            gpu,
            gpu_len: layout.gpu,
        })
    }

    /// The GPU buffer read back whole.
    fn read_gpu(&self, executor: &Executor) -> dsr::Result<Option<Vec<u8>>> {
        let Some(gpu) = &self.gpu else { return Ok(None) };
        let mut back = HostBuffer::new(self.gpu_len as usize);
        let mut batch = executor.batch();
        batch.push(Request::device_to_host(gpu, 0, self.gpu_len, &back, 0))?;
        let report = executor.submit(batch)?.wait();
        if let Some((_, err)) = report.first_failure() {
            return Err(err.clone());
        }
        Ok(back.as_slice().map(<[u8]>::to_vec))
    }
}

/// What landed for `p`, read now.
fn landed(p: &Planned, landings: &Landings, gpu_back: Option<&[u8]>, out: &File) -> Option<Vec<u8>> {
    match p.landing {
        Landing::Host(at) => Some(landings.host.read(at, p.out_len)),
        Landing::Gpu(at) => gpu_back.map(|b| b[at as usize..at as usize + p.out_len].to_vec()),
        Landing::File(at) => {
            let mut bytes = vec![0u8; p.out_len];
            out.read_exact_at(&mut bytes, at).ok().map(|()| bytes)
        }
    }
}

/// Checks the canaries of the host block and GPU buffer, and the holes of the output file.
fn check_landings(
    soak: &mut Soak,
    what: &str,
    planned: &[Planned],
    landings: &Landings,
    gpu_back: Option<&[u8]>,
    out: &File,
) {
    let host = landings.host.read(0, landings.host.bytes.len());
    soak.check_canaries(
        &format!("{what}, host"),
        &host,
        planned.iter().filter_map(|p| match p.landing {
            Landing::Host(at) => Some((at, p.out_len)),
            _ => None,
        }),
    );
    if let Some(back) = gpu_back {
        soak.check_canaries(
            &format!("{what}, GPU"),
            back,
            planned.iter().filter_map(|p| match p.landing {
                Landing::Gpu(at) => Some((at as usize, p.out_len)),
                _ => None,
            }),
        );
    }
    let len = out.metadata().map_or(0, |m| m.len());
    let mut ranges: Vec<(u64, u64)> = planned
        .iter()
        .filter_map(|p| match p.landing {
            Landing::File(at) => Some((at, p.out_len as u64)),
            _ => None,
        })
        .collect();
    ranges.sort_unstable();
    let mut at = 0;
    for (start, n) in ranges.into_iter().chain(std::iter::once((len, 0))) {
        if start > at {
            let mut hole = vec![0u8; (start - at) as usize];
            if out.read_exact_at(&mut hole, at).is_ok() && hole.iter().any(|&b| b != 0) {
                soak.report.violation(format!(
                    "{what}: the output file was written outside every range (near {at})"
                ));
                return;
            }
        }
        at = at.max(start + n);
    }
}

/// A round through the batch API: a batch, maybe a cancel storm (by tag across the executor or
/// by request), the ticket's acknowledgment, then every request checked.
fn batch_round(soak: &mut Soak, executor: &Executor, gpu: Option<&Arc<GpuContext>>, out: &Path) -> dsr::Result<()> {
    let count = soak.rng.usize(4..48);
    let (planned, layout) = soak.plan(count, gpu.is_some(), true, false);
    let landings = Landings::new(executor, gpu, &layout, out)?;
    let calls: Arc<Vec<AtomicU32>> = Arc::new((0..count).map(|_| AtomicU32::new(0)).collect());
    let mut batch = executor.batch();
    let mut ids = Vec::with_capacity(count);
    for p in &planned {
        ids.push(batch.push(soak.request(p, &landings.host_buffer, landings.gpu.as_ref(), out))?);
    }
    let counted = calls.clone();
    batch.on_request_complete(move |id, _| {
        counted[id.index()].fetch_add(1, Ordering::SeqCst);
    });
    let batch = executor.submit(batch)?;
    soak.report.requests += count as u64;
    soak.report.paths.batch += count as u64;
    // The cancelled requests' ranges as they were when the cancellation was acknowledged:
    // whether they had finished by then or not, nothing of them may touch them again.
    let mut frozen: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    if soak.rng.bool() {
        soak.report.cancel_storms += 1;
        std::thread::sleep(Duration::from_micros(soak.rng.u64(..2000)));
        let (matched, tickets): (Vec<usize>, Vec<_>) = if soak.rng.bool() {
            let tag = soak.rng.u64(..TAGS);
            let matched = (0..count).filter(|&i| planned[i].tag == tag).collect();
            (matched, vec![executor.cancel(tag, u64::MAX)])
        } else {
            let matched: Vec<usize> = (0..count).filter(|_| soak.rng.u8(..3) == 0).collect();
            let tickets = matched.iter().map(|&i| batch.cancel_request(ids[i])).collect();
            (matched, tickets)
        };
        if !tickets.iter().all(|t| t.wait_timeout(PATIENCE)) {
            soak.report.violation(format!(
                "round {}: a cancellation was not acknowledged in {PATIENCE:?}",
                soak.round
            ));
        }
        let file = File::open(out).ok();
        for i in matched {
            // GPU ranges are read back once, at the end: their canaries are checked there.
            if let (false, Some(file)) = (matches!(planned[i].landing, Landing::Gpu(_)), &file) {
                frozen.push((i, landed(&planned[i], &landings, None, file)));
            }
        }
    }
    let Some(report) = batch.wait_timeout(PATIENCE) else {
        soak.report.violation(format!(
            "round {}: a batch did not retire in {PATIENCE:?} (hang)",
            soak.round
        ));
        // Its memory may still be written: leak it rather than free it under the engine.
        std::mem::forget(landings);
        return Ok(());
    };
    let file = File::open(out).map_err(|e| dsr::Error::from_io(e, "cannot open the soak's output"))?;
    let gpu_back = landings.read_gpu(executor)?;
    let what = format!("round {} (batch)", soak.round);
    for (i, p) in planned.iter().enumerate() {
        let n = calls[i].load(Ordering::SeqCst);
        if n != 1 {
            soak.report
                .violation(format!("{what}: request {i} reported {n} times to its callback"));
        }
        let status = &report.requests[i].status;
        let now = landed(p, &landings, gpu_back.as_deref(), &file);
        soak.check_outcome(&what, p, status, now.as_deref());
    }
    for (i, then) in frozen {
        let now = landed(&planned[i], &landings, gpu_back.as_deref(), &file);
        if then.is_some() && now != then {
            soak.report.violation(format!(
                "{what}: request {i}'s destination changed after it had finished and a cancellation was acknowledged"
            ));
        }
    }
    check_landings(soak, &what, &planned, &landings, gpu_back.as_deref(), &file);
    Ok(())
}

/// A round through the Rust queues (one for files, one for memory): every request with a
/// completion callback, a cancel storm by tag part way through enqueueing, fences after.
fn queue_round(
    soak: &mut Soak,
    executor: &Arc<Executor>,
    gpu: Option<&Arc<GpuContext>>,
    out: &Path,
) -> dsr::Result<()> {
    let count = soak.rng.usize(4..48);
    let (planned, layout) = soak.plan(count, gpu.is_some(), true, false);
    let landings = Landings::new(executor, gpu, &layout, out)?;
    let queue = |source| {
        dsr::Queue::new(
            executor.clone(),
            dsr::QueueConfig {
                source,
                capacity: 0x80,
                name: format!("soak {source:?}"),
                ..dsr::QueueConfig::default()
            },
        )
    };
    let queues = [queue(dsr::SourceType::File)?, queue(dsr::SourceType::Memory)?];
    // Per request: how many times its callback ran, its status, and (host landings) its bytes
    // when it reported cancelled.
    type Seen = (u32, Option<RequestStatus>, Option<Vec<u8>>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new((0..count).map(|_| (0, None, None)).collect()));
    let host_ptr = landings.host.bytes.as_ptr() as usize;
    let storm_at = soak.rng.bool().then(|| soak.rng.usize(..count));
    for (i, p) in planned.iter().enumerate() {
        if storm_at == Some(i) {
            soak.report.cancel_storms += 1;
            let tag = soak.rng.u64(..TAGS);
            for q in &queues {
                q.submit()?;
                q.cancel_requests_with_tag(u64::MAX, tag)?;
            }
        }
        let request = soak.request(p, &landings.host_buffer, landings.gpu.as_ref(), out);
        let q = &queues[usize::from(soak.world.sources[p.source].path.is_none())];
        let seen = seen.clone();
        let host_range = match p.landing {
            Landing::Host(at) => Some((host_ptr + at, p.out_len)),
            _ => None,
        };
        q.enqueue_with(
            request,
            Box::new(move |status: &RequestStatus| {
                let frozen = match (status, host_range) {
                    (RequestStatus::Cancelled, Some((ptr, len))) => {
                        // SAFETY: the round's host block outlives the queue's fences; this
                        // request's range is no one's to write any more.
                        Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }.to_vec())
                    }
                    _ => None,
                };
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen[i].0 += 1;
                seen[i].1 = Some(status.clone());
                seen[i].2 = frozen;
            }),
            true,
        )?;
    }
    soak.report.requests += count as u64;
    soak.report.paths.queue += count as u64;
    let mut hung = false;
    for q in &queues {
        let fence = dsr::Fence::new().map_err(|e| dsr::Error::from_io(e, "cannot make a fence"))?;
        q.enqueue_signal(&fence, 1)?;
        q.submit()?;
        if !fence.wait_timeout(1, PATIENCE) {
            hung = true;
        }
    }
    if hung {
        soak.report.violation(format!(
            "round {}: a queue's fence was not reached in {PATIENCE:?} (hang)",
            soak.round
        ));
        std::mem::forget(landings);
        return Ok(());
    }
    for q in &queues {
        let info = q.query();
        if info.empty_slots + 1 != q.config().capacity {
            soak.report.violation(format!(
                "round {}: a drained queue has {} of {} slots free",
                soak.round,
                info.empty_slots,
                q.config().capacity - 1
            ));
        }
    }
    let file = File::open(out).map_err(|e| dsr::Error::from_io(e, "cannot open the soak's output"))?;
    let gpu_back = landings.read_gpu(executor)?;
    let what = format!("round {} (queue)", soak.round);
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    for (i, (p, (n, status, frozen))) in planned.iter().zip(seen).enumerate() {
        if n != 1 {
            soak.report
                .violation(format!("{what}: request {i} reported {n} times to its callback"));
        }
        let Some(status) = status else { continue };
        let now = landed(p, &landings, gpu_back.as_deref(), &file);
        soak.check_outcome(&what, p, &status, now.as_deref());
        if frozen.is_some() && now != frozen {
            soak.report.violation(format!(
                "{what}: request {i}'s destination changed after it reported cancelled"
            ));
        }
    }
    check_landings(soak, &what, &planned, &landings, gpu_back.as_deref(), &file);
    Ok(())
}

/// The C ABI's side: a runtime and two queues in `libdsr.so`, and the soak's files opened
/// there.
struct CRuntime<'a> {
    lib: &'a Libdsr,
    runtime: u64,
    queues: [u64; 2],
    files: Vec<u64>,
}

impl<'a> CRuntime<'a> {
    fn new(lib: &'a Libdsr, workers: usize, world: &World) -> dsr::Result<CRuntime<'a>> {
        let runtime = lib.create_runtime(workers)?;
        let mut this = CRuntime {
            lib,
            runtime,
            queues: [0; 2],
            files: vec![0; world.sources.len()],
        };
        for (source_type, queue) in this.queues.iter_mut().enumerate() {
            *queue = lib.create_queue(runtime, source_type as u32, 0x80)?;
        }
        for (i, source) in world.sources.iter().enumerate() {
            if let Some(path) = &source.path {
                let name = CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|_| dsr::Error::new(ErrorKind::InvalidRequest, "a soak path with a NUL"))?;
                let mut size = 0u64;
                // SAFETY: a NUL-terminated path and out-pointers.
                c_check("dsr_file_open", unsafe {
                    (lib.file_open)(runtime, name.as_ptr(), &mut this.files[i], &mut size)
                })?;
            }
        }
        Ok(this)
    }
}

impl Drop for CRuntime<'_> {
    fn drop(&mut self) {
        // SAFETY: live handles, each destroyed once.
        unsafe {
            for &file in self.files.iter().filter(|&&f| f != 0) {
                (self.lib.file_close)(file);
            }
            for &queue in &self.queues {
                (self.lib.queue_destroy)(queue);
            }
            (self.lib.runtime_destroy)(self.runtime);
        }
    }
}

/// One C request's record, written by its callback on a dsr thread.
struct CSlot {
    calls: AtomicU32,
    result: AtomicI32,
    /// The bytes of its range when it reported cancelled (a hash: 0 when it did not).
    frozen: AtomicU64,
    range: (usize, usize),
}

unsafe extern "C" fn on_c_request(user_data: *mut c_void, result: i32) {
    // SAFETY: `user_data` is a `CSlot` of the round, alive until its fences are reached.
    let slot = unsafe { &*(user_data as *const CSlot) };
    if result == -16 {
        let (ptr, len) = slot.range;
        // SAFETY: the round's host block; this range is no one's to write any more.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        slot.frozen.store(dsr::stages::tile_hash(bytes) | 1, Ordering::SeqCst);
    }
    slot.result.store(result, Ordering::SeqCst);
    slot.calls.fetch_add(1, Ordering::SeqCst);
}

/// A round through the C ABI: host landings only (the runtime has no GPU here), clean sources
/// (it has no fault plan), a cancel by tag part way through, fences after.
fn c_round(soak: &mut Soak, rt: &CRuntime<'_>) -> dsr::Result<()> {
    let count = soak.rng.usize(4..48);
    let (planned, layout) = soak.plan(count, false, false, true);
    let mut host = HostBlock::new(layout.host);
    let base = host.bytes.as_mut_ptr() as usize;
    let slots: Box<[CSlot]> = planned
        .iter()
        .map(|p| CSlot {
            calls: AtomicU32::new(0),
            result: AtomicI32::new(1),
            frozen: AtomicU64::new(0),
            range: match p.landing {
                Landing::Host(at) => (base + at, p.out_len),
                _ => unreachable!("C rounds land in host memory"),
            },
        })
        .collect();
    let lib = rt.lib;
    let storm_at = soak.rng.bool().then(|| soak.rng.usize(..count));
    for (i, p) in planned.iter().enumerate() {
        if storm_at == Some(i) {
            soak.report.cancel_storms += 1;
            let tag = soak.rng.u64(..TAGS);
            for &queue in &rt.queues {
                // SAFETY: a live queue.
                c_check("dsr_queue_submit", unsafe { (lib.submit)(queue) })?;
                // SAFETY: as above.
                c_check("dsr_queue_cancel", unsafe { (lib.cancel)(queue, u64::MAX, tag) })?;
            }
        }
        let s = &soak.world.sources[p.source];
        let request = c::Request {
            struct_size: std::mem::size_of::<c::Request>() as u32,
            kind: if s.path.is_some() { 0 } else { 1 },
            compression: u32::from(s.compressed),
            options: 0,
            file: rt.files[p.source],
            file_offset: if s.path.is_some() { p.offset } else { 0 },
            source: if s.path.is_some() {
                std::ptr::null()
            } else {
                // SAFETY: inside the source's bytes, which the world keeps alive.
                unsafe { s.stored.as_ptr().add(p.offset as usize) }.cast()
            },
            source_size: p.len,
            destination: slots[i].range.0 as *mut c_void,
            destination_size: p.out_len as u64,
            tag: p.tag,
            name: std::ptr::null(),
            callback: Some(on_c_request),
            user_data: (&slots[i] as *const CSlot).cast_mut().cast(),
            buffer: 0,
            buffer_offset: 0,
        };
        let queue = rt.queues[usize::from(s.path.is_none())];
        // SAFETY: a valid request whose memory (source, destination, slot) outlives its
        // completion: the round waits for both fences, or leaks them on a hang.
        c_check("dsr_queue_enqueue", unsafe { (lib.enqueue)(queue, &request) })?;
    }
    soak.report.requests += count as u64;
    soak.report.paths.c_abi += count as u64;
    let mut hung = false;
    for &queue in &rt.queues {
        let mut fence = 0u64;
        // SAFETY: out-pointer, then live handles.
        unsafe {
            c_check("dsr_fence_create", (lib.fence_create)(&mut fence))?;
            c_check("dsr_queue_enqueue_signal", (lib.enqueue_signal)(queue, fence, 1))?;
            c_check("dsr_queue_submit", (lib.submit)(queue))?;
            if (lib.fence_wait)(fence, 1, PATIENCE.as_millis() as u32) != 0 {
                hung = true;
            }
            (lib.fence_destroy)(fence);
        }
    }
    if hung {
        soak.report.violation(format!(
            "round {}: a C queue's fence was not reached in {PATIENCE:?} (hang)",
            soak.round
        ));
        std::mem::forget(host);
        std::mem::forget(slots);
        return Ok(());
    }
    let what = format!("round {} (C ABI)", soak.round);
    for (i, p) in planned.iter().enumerate() {
        let slot = &slots[i];
        let n = slot.calls.load(Ordering::SeqCst);
        if n != 1 {
            soak.report
                .violation(format!("{what}: request {i} called back {n} times"));
            continue;
        }
        let status = match slot.result.load(Ordering::SeqCst) {
            0 => RequestStatus::Done,
            -16 => RequestStatus::Cancelled,
            code => RequestStatus::Failed(dsr::Error::new(ErrorKind::Internal, format!("C result {code}"))),
        };
        let Landing::Host(at) = p.landing else { continue };
        let now = host.read(at, p.out_len);
        soak.check_outcome(&what, p, &status, Some(&now));
        let frozen = slot.frozen.load(Ordering::SeqCst);
        if frozen != 0 && dsr::stages::tile_hash(&now) | 1 != frozen {
            soak.report.violation(format!(
                "{what}: request {i}'s destination changed after it reported cancelled"
            ));
        }
    }
    let block = host.read(0, host.bytes.len());
    soak.check_canaries(
        &what,
        &block,
        planned.iter().filter_map(|p| match p.landing {
            Landing::Host(at) => Some((at, p.out_len)),
            _ => None,
        }),
    );
    Ok(())
}

/// A device lost part way through a batch of GPU and host requests, on a context of its own:
/// the GPU requests fail (or had finished), the host ones are unaffected, nothing hangs.
fn device_loss_round(
    soak: &mut Soak,
    config: &GpuConfig,
    io: &IoConfig,
    executor_config: ExecutorConfig,
) -> dsr::Result<()> {
    let context = GpuContext::new(config)?;
    let (executor, _, _) = dsr::executor_with_gpu(executor_config, io.clone(), &context, StagingConfig::default())?;
    let count = soak.rng.usize(8..32);
    let (planned, layout) = soak.plan(count, true, false, false);
    let out = soak.world.dir.path().join("out-device-loss");
    let landings = Landings::new(&executor, Some(&context), &layout, &out)?;
    let mut batch = executor.batch();
    for p in &planned {
        batch.push(soak.request(p, &landings.host_buffer, landings.gpu.as_ref(), &out))?;
    }
    let batch = executor.submit(batch)?;
    std::thread::sleep(Duration::from_micros(soak.rng.u64(..1500)));
    context.inject_device_loss();
    soak.report.device_losses += 1;
    soak.report.faults_injected += 1;
    soak.report.requests += count as u64;
    soak.report.paths.batch += count as u64;
    let what = format!("round {} (device loss)", soak.round);
    let Some(report) = batch.wait_timeout(PATIENCE) else {
        soak.report.violation(format!(
            "{what}: the batch did not retire in {PATIENCE:?} after the device was lost"
        ));
        std::mem::forget(landings);
        return Ok(());
    };
    for (p, r) in planned.iter().zip(&report.requests) {
        match (&r.status, p.landing) {
            (RequestStatus::Failed(err), Landing::Gpu(_)) if err.kind() == ErrorKind::Device => {
                soak.report.failed += 1;
            }
            // Done GPU requests are not read back: the device is gone.
            (status, Landing::Gpu(_)) => soak.check_outcome(&what, p, status, None),
            (status, _) => {
                let now = match p.landing {
                    Landing::Host(at) => Some(landings.host.read(at, p.out_len)),
                    _ => None,
                };
                soak.check_outcome(&what, p, status, now.as_deref());
            }
        }
    }
    drop((batch, landings, executor));
    // Everything of the lost device goes with its executor (a leak here once kept ~150 MB per
    // context).
    if Arc::strong_count(&context) != 1 {
        soak.report.violation(format!(
            "{what}: the lost context is still held after its executor was dropped"
        ));
    }
    let _ = std::fs::remove_file(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak() -> Soak {
        let mut rng = fastrand::Rng::with_seed(5);
        Soak {
            world: World::new(&mut rng).unwrap(),
            rng,
            report: SoakReport::default(),
            samples: Vec::new(),
            round: 0,
        }
    }

    fn find(soak: &Soak, name: &str) -> usize {
        soak.world.sources.iter().position(|s| s.name == name).unwrap()
    }

    /// The checks catch what they are for: a done request with other bytes, a done request
    /// whose file had EIO injected, a failure with no fault, and a failure of the wrong kind.
    #[test]
    fn outcomes_that_break_a_promise_are_violations() {
        let mut soak = soak();
        let clean = find(&soak, "file-raw-1");
        let eio = find(&soak, "eio-file-raw-1");
        let plan = |source| Planned {
            source,
            offset: 10,
            len: 100,
            at: 10,
            out_len: 100,
            landing: Landing::Host(CANARY),
            tag: 0,
        };
        let right = plan(clean).expected(&soak.world).to_vec();
        let mut wrong = right.clone();
        wrong[50] ^= 1;
        soak.check_outcome("t", &plan(clean), &RequestStatus::Done, Some(&right));
        soak.check_outcome("t", &plan(clean), &RequestStatus::Cancelled, None);
        let io = dsr::Error::new(ErrorKind::Io, "injected");
        soak.check_outcome("t", &plan(eio), &RequestStatus::Failed(io.clone()), None);
        assert_eq!(soak.report.violations, 0, "{:?}", soak.report.violation_examples);
        soak.check_outcome("t", &plan(clean), &RequestStatus::Done, Some(&wrong));
        soak.check_outcome("t", &plan(eio), &RequestStatus::Done, Some(&right));
        soak.check_outcome("t", &plan(clean), &RequestStatus::Failed(io), None);
        let corrupt = dsr::Error::new(ErrorKind::Corrupt, "not what EIO gives");
        soak.check_outcome("t", &plan(eio), &RequestStatus::Failed(corrupt), None);
        assert_eq!(soak.report.violations, 4, "{:?}", soak.report.violation_examples);
        assert_eq!((soak.report.done, soak.report.failed, soak.report.cancelled), (3, 3, 1));
    }

    /// A byte written just outside a destination range is found, on either side.
    #[test]
    fn writes_outside_every_range_are_violations() {
        let mut soak = soak();
        let block: Vec<u8> = (0..1000).map(canary).collect();
        soak.check_canaries("t", &block, [(100, 50), (300, 10)].into_iter());
        assert_eq!(soak.report.violations, 0);
        for bad in [99, 150, 310, 999] {
            let mut block = block.clone();
            block[bad] = !block[bad];
            soak.check_canaries("t", &block, [(100, 50), (300, 10)].into_iter());
        }
        assert_eq!(soak.report.violations, 4, "{:?}", soak.report.violation_examples);
    }
}
