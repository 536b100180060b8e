//! The submit path: small memory-source requests (64 bytes each) through the DirectStorage-shaped
//! queue, from Rust (`dsr::Queue`) and through the C ABI (`libdsr.so`, loaded with `dlopen` from
//! beside the `dsr` binary, as a C program would link it), against the engine's own batch API
//! doing the same copies in the same run. For each: requests per second end to end (first
//! enqueue to the fence after the last), and CPU time per request on the submitting thread
//! (`CLOCK_THREAD_CPUTIME_ID` around the enqueue loop and the submit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsr::{Error, ErrorKind, HostBuffer, Request, Result};

use super::libdsr::{c, c_check, Libdsr};
use super::median;

/// Bytes per request.
pub const REQUEST_BYTES: u64 = 64;

/// One side's medians.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct SubmitRun {
    /// Requests per second, end to end.
    pub req_per_s: f64,
    /// Submitting-thread CPU nanoseconds per request.
    pub submit_cpu_ns_per_req: f64,
}

fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn summarize(requests: u64, walls: &mut [Duration], cpus: &mut [Duration]) -> SubmitRun {
    SubmitRun {
        req_per_s: requests as f64 / median(walls).as_secs_f64(),
        submit_cpu_ns_per_req: median(cpus).as_nanos() as f64 / requests as f64,
    }
}

/// The engine's batch API: one batch of `requests` copies, submitted and waited for.
fn batch_once(executor: &dsr::Executor, source: &Arc<[u8]>, requests: u64) -> Result<(Duration, Duration)> {
    let dest = HostBuffer::new((requests * REQUEST_BYTES) as usize);
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut batch = executor.batch();
    for i in 0..requests {
        batch.push(Request::memory(
            source.clone(),
            0,
            REQUEST_BYTES,
            &dest,
            i * REQUEST_BYTES,
        ))?;
    }
    let batch = executor.submit(batch)?;
    let cpu = thread_cpu() - cpu;
    let report = batch.wait();
    let wall = start.elapsed();
    if !report.all_done() {
        return Err(Error::new(ErrorKind::Internal, "a benchmark copy failed"));
    }
    Ok((wall, cpu))
}

/// The Rust queue: `requests` copies enqueued, submitted, and a fence after them.
fn queue_once(queue: &dsr::Queue, source: &Arc<[u8]>, requests: u64) -> Result<(Duration, Duration)> {
    let dest = HostBuffer::new((requests * REQUEST_BYTES) as usize);
    let fence = dsr::Fence::new().map_err(|e| Error::from_io(e, "cannot make a fence"))?;
    let (start, cpu) = (Instant::now(), thread_cpu());
    for i in 0..requests {
        queue.enqueue(Request::memory(
            source.clone(),
            0,
            REQUEST_BYTES,
            &dest,
            i * REQUEST_BYTES,
        ))?;
    }
    queue.enqueue_signal(&fence, 1)?;
    queue.submit()?;
    let cpu = thread_cpu() - cpu;
    fence.wait(1);
    Ok((start.elapsed(), cpu))
}

/// The Rust queue with the C side's shape: every request its own source bytes and its own
/// destination (made inside the clock, as the C ABI makes its handle per request), so nothing a
/// request touches is shared with the other requests in flight. The shared case above counts
/// references and reserves ranges on one source and one destination that every finishing worker
/// also writes; this one shows what the queue itself costs.
fn queue_distinct_once(queue: &dsr::Queue, requests: u64) -> Result<(Duration, Duration)> {
    let fence = dsr::Fence::new().map_err(|e| Error::from_io(e, "cannot make a fence"))?;
    let mut dests = Vec::with_capacity(requests as usize);
    let (start, cpu) = (Instant::now(), thread_cpu());
    for i in 0..requests {
        let dest = HostBuffer::new(REQUEST_BYTES as usize);
        let source = vec![(i % 251) as u8; REQUEST_BYTES as usize];
        queue.enqueue(Request::memory(source, 0, REQUEST_BYTES, &dest, 0))?;
        dests.push(dest);
    }
    queue.enqueue_signal(&fence, 1)?;
    queue.submit()?;
    let cpu = thread_cpu() - cpu;
    fence.wait(1);
    let wall = start.elapsed();
    for (i, dest) in dests.iter_mut().enumerate() {
        let expected = (i as u64 % 251) as u8;
        if dest.as_slice().is_none_or(|bytes| bytes.iter().any(|&b| b != expected)) {
            return Err(Error::new(
                ErrorKind::Internal,
                "a copy through the Rust queue landed wrong bytes",
            ));
        }
    }
    Ok((wall, cpu))
}

/// A C queue over the loaded library.
struct CQueue<'a> {
    lib: &'a Libdsr,
    runtime: u64,
    queue: u64,
}

impl<'a> CQueue<'a> {
    fn new(lib: &'a Libdsr, workers: usize) -> Result<Self> {
        let runtime = lib.create_runtime(workers)?;
        let queue = lib.create_queue(runtime, 1, 0x2000)?;
        Ok(CQueue { lib, runtime, queue })
    }

    fn once(&self, source: &[u8], requests: u64) -> Result<(Duration, Duration)> {
        let lib = self.lib;
        let mut dest = vec![0u8; (requests * REQUEST_BYTES) as usize];
        let mut fence = 0u64;
        // SAFETY: an out-pointer for the call.
        c_check("dsr_fence_create", unsafe { (lib.fence_create)(&mut fence) })?;
        let (start, cpu) = (Instant::now(), thread_cpu());
        for i in 0..requests {
            let request = c::Request {
                struct_size: std::mem::size_of::<c::Request>() as u32,
                kind: 1,
                compression: 0,
                options: 0,
                file: 0,
                file_offset: 0,
                source: source.as_ptr().cast(),
                source_size: REQUEST_BYTES,
                // SAFETY: inside `dest`, which outlives the fence wait below.
                destination: unsafe { dest.as_mut_ptr().add((i * REQUEST_BYTES) as usize) }.cast(),
                destination_size: REQUEST_BYTES,
                tag: 0,
                name: std::ptr::null(),
                callback: None,
                user_data: std::ptr::null_mut(),
                buffer: 0,
                buffer_offset: 0,
            };
            // SAFETY: a valid request whose memory outlives its completion (the fence wait).
            c_check("dsr_queue_enqueue", unsafe { (lib.enqueue)(self.queue, &request) })?;
        }
        // SAFETY: live handles.
        unsafe {
            c_check("dsr_queue_enqueue_signal", (lib.enqueue_signal)(self.queue, fence, 1))?;
            c_check("dsr_queue_submit", (lib.submit)(self.queue))?;
        }
        let cpu = thread_cpu() - cpu;
        // SAFETY: a live fence.
        c_check("dsr_fence_wait", unsafe { (lib.fence_wait)(fence, 1, 600_000) })?;
        let wall = start.elapsed();
        // SAFETY: a live fence, destroyed once.
        unsafe { (lib.fence_destroy)(fence) };
        if dest.chunks(REQUEST_BYTES as usize).any(|c| c != source) {
            return Err(Error::new(
                ErrorKind::Internal,
                "a copy through the C ABI landed wrong bytes",
            ));
        }
        Ok((wall, cpu))
    }
}

impl Drop for CQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: live handles, destroyed once.
        unsafe {
            (self.lib.queue_destroy)(self.queue);
            (self.lib.runtime_destroy)(self.runtime);
        }
    }
}

/// Where `libdsr.so` is expected: beside the running `dsr` (as `cargo build` leaves them).
pub fn default_library() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(|dir| dir.join("libdsr.so"))
}

/// The three sides' medians: the batch API (the peer), the Rust queue, and the C ABI (`None`,
/// with the reason, when `libdsr.so` cannot be loaded).
#[derive(Debug)]
pub struct SubmitResult {
    pub batch: SubmitRun,
    pub rust: SubmitRun,
    /// The Rust queue, each request with its own source and destination.
    pub rust_distinct: SubmitRun,
    pub c: std::result::Result<SubmitRun, String>,
}

/// Measures `requests` copies per run, `runs` alternating runs per side, on `workers` workers.
pub fn measure(requests: u64, runs: usize, workers: usize, library: Option<&Path>) -> Result<SubmitResult> {
    let config = dsr::ExecutorConfig {
        workers,
        metrics: false,
        ..dsr::ExecutorConfig::default()
    };
    let executor = Arc::new(dsr::executor(super::trace::observe(config))?);
    let queue = dsr::Queue::new(
        executor.clone(),
        dsr::QueueConfig {
            source: dsr::SourceType::Memory,
            capacity: 0x2000,
            ..dsr::QueueConfig::default()
        },
    )?;
    let source: Arc<[u8]> = Arc::from(vec![0x3c_u8; REQUEST_BYTES as usize]);
    let lib = library
        .map(Libdsr::load)
        .unwrap_or_else(|| Err("no libdsr.so path".into()));
    let c_queue = match &lib {
        Ok(lib) => CQueue::new(lib, workers).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let mut samples: [(Vec<Duration>, Vec<Duration>); 4] = Default::default();
    for _ in 0..runs.max(1) {
        let (wall, cpu) = batch_once(&executor, &source, requests)?;
        samples[0].0.push(wall);
        samples[0].1.push(cpu);
        let (wall, cpu) = queue_once(&queue, &source, requests)?;
        samples[1].0.push(wall);
        samples[1].1.push(cpu);
        if let Ok(c_queue) = &c_queue {
            let (wall, cpu) = c_queue.once(&source, requests)?;
            samples[2].0.push(wall);
            samples[2].1.push(cpu);
        }
        let (wall, cpu) = queue_distinct_once(&queue, requests)?;
        samples[3].0.push(wall);
        samples[3].1.push(cpu);
    }
    let [(mut batch_walls, mut batch_cpus), (mut rust_walls, mut rust_cpus), (mut c_walls, mut c_cpus), (mut distinct_walls, mut distinct_cpus)] =
        samples;
    let c_result = match c_queue {
        Ok(_) => Ok(summarize(requests, &mut c_walls, &mut c_cpus)),
        Err(reason) => Err(reason),
    };
    Ok(SubmitResult {
        batch: summarize(requests, &mut batch_walls, &mut batch_cpus),
        rust: summarize(requests, &mut rust_walls, &mut rust_cpus),
        rust_distinct: summarize(requests, &mut distinct_walls, &mut distinct_cpus),
        c: c_result,
    })
}
