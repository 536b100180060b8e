//! Reads: dsr against fio on the same file, same block size and queue depth, in the same run.
//!
//! Four modes: warm page cache and O_DIRECT, each as 1 MiB sequential reads of the whole file and
//! 64 KiB random reads (as many bytes as the file) at depth 32. dsr submits one batch of read
//! requests; its ring keeps at most 32 in flight. fio runs its io_uring engine with the same
//! settings. CPU is the whole process's user + system time (dsr: getrusage of itself over the
//! run; fio: getrusage of the finished child, less its start-up measured in the same run), as a
//! percentage of one core over the run and per GB read. fio's own report counts only its job
//! thread, which would hide the work its other threads do.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use dsr::{Backend, ExecutorConfig, HostBuffer, IoConfig, IoPolicy, Request};

/// One mode's settings.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Name in reports.
    pub name: &'static str,
    /// O_DIRECT (or the page cache).
    pub direct: bool,
    /// Block size.
    pub block: u64,
    /// Random (or sequential) offsets.
    pub random: bool,
}

/// The four modes.
pub const MODES: [Mode; 4] = [
    Mode {
        name: "warm-seq-1m",
        direct: false,
        block: 1 << 20,
        random: false,
    },
    Mode {
        name: "direct-seq-1m",
        direct: true,
        block: 1 << 20,
        random: false,
    },
    Mode {
        name: "warm-rand-64k",
        direct: false,
        block: 64 << 10,
        random: true,
    },
    Mode {
        name: "direct-rand-64k",
        direct: true,
        block: 64 << 10,
        random: true,
    },
];

/// Queue depth on both sides.
pub const DEPTH: u32 = 32;

/// One measurement: throughput and CPU.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// GB/s (decimal).
    pub gbps: f64,
    /// Reads per second.
    pub iops: f64,
    /// CPU time as a percentage of one core over the run.
    pub cpu_pct: f64,
    /// CPU seconds per GB read.
    pub cpu_s_per_gb: f64,
}

fn cpu_time() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// User + system time of `who` (this process, or its waited-for children).
fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a live rusage.
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The offsets a mode reads, in order.
pub fn offsets(mode: Mode, file_len: u64, seed: u64) -> Vec<u64> {
    let blocks = file_len / mode.block;
    if mode.random {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..blocks).map(|_| rng.u64(0..blocks) * mode.block).collect()
    } else {
        (0..blocks).map(|b| b * mode.block).collect()
    }
}

/// dsr reading `offsets` of `path`, `mode.block` each, through the engine.
pub fn run_dsr(path: &Path, mode: Mode, offsets: &[u64], dest: &HostBuffer) -> dsr::Result<Sample> {
    let (executor, info) = dsr::executor_with_io(
        super::trace::observe(ExecutorConfig {
            metrics: false,
            ..ExecutorConfig::default()
        }),
        IoConfig {
            backend: Backend::Auto,
            ring: dsr::stages::io::RingConfig {
                queue_depth: DEPTH,
                ..Default::default()
            },
        },
    )?;
    let _ = info;
    let policy = if mode.direct {
        IoPolicy::Direct
    } else {
        IoPolicy::Buffered
    };
    let file = std::sync::Arc::new(
        std::fs::File::open(path).map_err(|e| dsr::Error::from_io(e, "cannot open the file").with_path(path))?,
    );
    let mut batch = executor.batch();
    for (i, &offset) in offsets.iter().enumerate() {
        let request = Request::open_file(file.clone(), offset, mode.block, dest, i as u64 * mode.block).io(policy);
        batch.push(request)?;
    }
    let cpu = cpu_time();
    let start = Instant::now();
    let report = executor.submit(batch)?.wait();
    let wall = start.elapsed();
    let cpu = cpu_time() - cpu;
    if let Some((_, err)) = report.first_failure() {
        return Err(err.clone());
    }
    Ok(sample(
        offsets.len() as u64 * mode.block,
        offsets.len() as u64,
        wall,
        cpu,
    ))
}

fn sample(bytes: u64, ios: u64, wall: Duration, cpu: Duration) -> Sample {
    let gb = bytes as f64 / 1e9;
    Sample {
        gbps: gb / wall.as_secs_f64(),
        iops: ios as f64 / wall.as_secs_f64(),
        cpu_pct: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu_s_per_gb: cpu.as_secs_f64() / gb,
    }
}

/// Whether fio can run.
pub fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// fio with the same settings (its io_uring engine, depth 32). Its CPU is the whole process's
/// (all its threads, from the kernel's accounting of the finished child), as dsr's is, minus
/// fio's start-up, measured in the same run as the same job over 1 MiB; never less than what
/// its job thread reported.
pub fn run_fio(path: &Path, mode: Mode, file_len: u64) -> Result<Sample, String> {
    let startup = fio_once(path, mode, mode.block.max(1 << 20))?.1;
    let start = std::time::Instant::now();
    let (doc, cpu) = fio_once(path, mode, file_len / mode.block * mode.block)?;
    super::trace::span("peer", "fio (whole process)", start);
    let job = &doc["jobs"][0];
    let read = &job["read"];
    let bytes = read["io_bytes"].as_u64().unwrap_or(0);
    let ios = read["total_ios"].as_u64().unwrap_or(0);
    let runtime = Duration::from_millis(read["runtime"].as_u64().unwrap_or(1).max(1));
    let job_cpu =
        runtime.mul_f64((job["usr_cpu"].as_f64().unwrap_or(0.0) + job["sys_cpu"].as_f64().unwrap_or(0.0)) / 100.0);
    let cpu = cpu.saturating_sub(startup).max(job_cpu);
    Ok(sample(bytes, ios, runtime, cpu))
}

/// One fio run over `size` bytes: its JSON and the process's CPU time.
fn fio_once(path: &Path, mode: Mode, size: u64) -> Result<(serde_json::Value, Duration), String> {
    let children_before = rusage(libc::RUSAGE_CHILDREN);
    let out = Command::new("fio")
        .args([
            "--name=dsr-peer",
            &format!("--filename={}", path.display()),
            if mode.random { "--rw=randread" } else { "--rw=read" },
            &format!("--bs={}", mode.block),
            "--ioengine=io_uring",
            &format!("--iodepth={DEPTH}"),
            &format!("--direct={}", mode.direct as u8),
            &format!("--size={size}"),
            "--norandommap",
            "--randrepeat=1",
            "--invalidate=0",
            "--disk_util=0",
            "--output-format=json",
        ])
        .output()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    let cpu = rusage(libc::RUSAGE_CHILDREN) - children_before;
    if !out.status.success() {
        return Err(format!("fio failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let doc = serde_json::from_slice(&out.stdout).map_err(|e| format!("cannot read fio's JSON: {e}"))?;
    Ok((doc, cpu))
}
