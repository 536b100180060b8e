//! `dsr demo`: the main job on any machine. Writes a sample asset set, streams it through the
//! engine (whole files, sub-ranges, memory sources, mixed priorities), packs it into a GDeflate
//! archive and streams that back (tile groups decoded on every worker, tile hashes verified),
//! verifies every byte, checks that a bad request fails cleanly without disturbing the others,
//! and reports throughput and latency. Exits 0 only if everything verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use dsr::engine::LatencySummary;
use dsr::viz::dot::human_bytes;
use dsr::{ErrorKind, HostBuffer, Priority, Request, RequestStatus};
use serde_json::json;

use super::output::{self, Progress};
use super::{CliError, CliResult, EngineArgs};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Write the sample assets here (kept) instead of a temporary directory (removed).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Seed of the generated assets.
    #[arg(long, default_value_t = 0xd5a)]
    seed: u64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Write a timeline trace of the run: Chrome trace-event JSON (open it in Perfetto UI or
    /// chrome://tracing).
    #[arg(long, value_name = "PATH")]
    trace: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// One generated asset.
struct Asset {
    path: PathBuf,
    bytes: Vec<u8>,
    priority: Priority,
}

/// Content that looks a little like game data: runs of structure, text, and noise.
fn asset_bytes(rng: &mut fastrand::Rng, len: usize, kind: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        let run = rng.usize(64..4096).min(len - bytes.len());
        match (kind + rng.usize(0..3)) % 4 {
            0 => {
                // Vertex-like: little-endian floats on a grid.
                let base = rng.f32();
                bytes.extend((0..run).map(|i| (base * 1000.0 + i as f32).to_bits().to_le_bytes()[i % 4]));
            }
            1 => {
                const WORDS: [&str; 8] = ["spawn ", "light ", "mesh ", "door ", "0.5 ", "true ", "{ ", "}\n"];
                while bytes.len() < len && run > 0 {
                    bytes.extend_from_slice(WORDS[rng.usize(0..WORDS.len())].as_bytes());
                    if bytes.len() % 4096 < 8 {
                        break;
                    }
                }
                bytes.truncate(len);
            }
            2 => bytes.resize(bytes.len() + run, 0),
            _ => bytes.extend((0..run).map(|_| rng.u8(..))),
        }
    }
    bytes.truncate(len);
    bytes
}

fn generate(dir: &Path, seed: u64) -> Result<Vec<Asset>, CliError> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sizes: Vec<(String, usize, Priority)> = vec![
        ("config/empty.cfg".into(), 0, Priority::Normal),
        ("config/flag.bin".into(), 1, Priority::Normal),
    ];
    for i in 0..24 {
        sizes.push((
            format!("textures/small_{i:02}.tex"),
            rng.usize(4 << 10..256 << 10),
            Priority::High,
        ));
    }
    for i in 0..12 {
        sizes.push((
            format!("meshes/mesh_{i:02}.msh"),
            rng.usize(512 << 10..4 << 20),
            Priority::Normal,
        ));
    }
    for i in 0..4 {
        sizes.push((
            format!("audio/stream_{i}.snd"),
            rng.usize(8 << 20..16 << 20),
            Priority::Low,
        ));
    }
    let mut assets = Vec::with_capacity(sizes.len());
    for (kind, (name, len, priority)) in sizes.into_iter().enumerate() {
        let path = dir.join(&name);
        let bytes = asset_bytes(&mut rng, len, kind);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::failed(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, &bytes).map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
        assets.push(Asset { path, bytes, priority });
    }
    Ok(assets)
}

/// What one request should land, and where.
struct Expectation {
    name: String,
    slot: usize,
    bytes: Arc<[u8]>,
}

pub fn run(args: DemoArgs) -> CliResult {
    let temp;
    let dir = match &args.keep {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("dsr-demo-")
                .tempdir()
                .map_err(|e| CliError::failed(format!("cannot create a temporary directory: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    let assets = generate(&dir, args.seed)?;

    // Whole files, an unaligned sub-range of every large one, and a few memory sources (a pack
    // already in RAM): every request shape that does not need the codec or a GPU.
    let mut plan: Vec<(Request, Expectation)> = Vec::new();
    let total: usize = assets.iter().map(|a| a.bytes.len() * 2 + 8192).sum();
    let dest = HostBuffer::new(total);
    let mut at = 0usize;
    let mut take = |len: usize| {
        let slot = at;
        at += len.div_ceil(4096) * 4096;
        slot
    };
    for asset in &assets {
        let len = asset.bytes.len();
        let slot = take(len);
        let name = asset
            .path
            .strip_prefix(&dir)
            .unwrap_or(&asset.path)
            .display()
            .to_string();
        plan.push((
            Request::file(&asset.path, 0, len as u64, &dest, slot as u64)
                .name(name.clone())
                .priority(asset.priority),
            Expectation {
                name,
                slot,
                bytes: asset.bytes.clone().into(),
            },
        ));
    }
    for asset in assets.iter().filter(|a| a.bytes.len() >= 8 << 20) {
        let (offset, len) = (asset.bytes.len() / 3 + 123, (1 << 20) + 4567);
        let slot = take(len);
        let name = format!("{} [{offset}+{len}]", asset.path.display());
        plan.push((
            Request::file(&asset.path, offset as u64, len as u64, &dest, slot as u64).name(name.clone()),
            Expectation {
                name,
                slot,
                bytes: asset.bytes[offset..offset + len].into(),
            },
        ));
    }
    for asset in assets
        .iter()
        .filter(|a| a.path.to_string_lossy().contains("mesh_0"))
        .take(4)
    {
        let bytes: Arc<[u8]> = asset.bytes.clone().into();
        let slot = take(bytes.len());
        let name = format!("memory:{}", asset.path.display());
        plan.push((
            Request::memory(bytes.clone(), 0, bytes.len() as u64, &dest, slot as u64)
                .name(name.clone())
                .priority(Priority::Realtime),
            Expectation { name, slot, bytes },
        ));
    }

    let bytes_total: u64 = plan.iter().map(|(_, e)| e.bytes.len() as u64).sum();
    let progress = Progress::new(bytes_total, !args.json);
    let mut config = args.engine.config();
    let trace = args
        .trace
        .as_ref()
        .map(|_| Arc::new(dsr::viz::TraceRecorder::new(config.workers)));
    config.observer = Some(match &trace {
        Some(trace) => Arc::new(crate::output::Observers(vec![progress.clone(), trace.clone()])),
        None => progress.clone(),
    });
    let (executor, _) = args.engine.executor(config)?;

    let start = Instant::now();
    let mut batch = executor.batch();
    let mut expectations = Vec::with_capacity(plan.len());
    for (request, expectation) in plan {
        batch.push(request)?;
        expectations.push(expectation);
    }
    let batch = executor.submit(batch)?;
    let report = batch.wait();
    let elapsed = start.elapsed();
    progress.finish();

    // Verify every byte. The batch has retired, so the buffer is ours again.
    let mut dest = dest;
    let landed = dest
        .as_slice()
        .ok_or_else(|| CliError::failed("the destination is still held by the engine after its batch retired"))?;
    let mut problems = Vec::new();
    for (request, expect) in report.requests.iter().zip(&expectations) {
        match &request.status {
            RequestStatus::Done => {
                if landed[expect.slot..expect.slot + expect.bytes.len()] != *expect.bytes {
                    problems.push(format!("{}: bytes differ from the source", expect.name));
                }
            }
            other => problems.push(format!("{}: {other:?}", expect.name)),
        }
    }

    // A bad request fails alone, with a message that names the file.
    let missing = dir.join("does/not/exist.pak");
    let side = HostBuffer::new(8192);
    let mut bad = executor.batch();
    bad.push(Request::file(&missing, 0, 4096, &side, 0).name("missing"))?;
    bad.push(Request::file(&assets[2].path, 0, 1, &side, 4096).name("fine"))?;
    let bad = executor.submit(bad)?;
    let bad_report = bad.wait();
    if let (Some(path), Some(trace)) = (&args.trace, &trace) {
        let names: std::collections::HashMap<u64, Vec<Option<String>>> = [batch.graph(), bad.graph()]
            .into_iter()
            .map(|g| (g.id(), g.requests().iter().map(|r| r.name.clone()).collect()))
            .collect();
        crate::output::write_trace(path, trace, |batch, request| {
            names.get(&batch)?.get(request as usize).cloned().flatten()
        })?;
    }
    let error_text = match (&bad_report.requests[0].status, &bad_report.requests[1].status) {
        (RequestStatus::Failed(err), RequestStatus::Done)
            if err.kind() == ErrorKind::NotFound && err.path() == Some(missing.as_path()) =>
        {
            err.to_string()
        }
        other => {
            problems.push(format!("a missing file should fail alone with NotFound, got {other:?}"));
            String::new()
        }
    };

    // Compressed: pack every asset into an archive and stream it back, verified.
    let packed = pack_and_load(&executor, &dir, &assets, &mut problems)?;

    let latency = LatencySummary::from_durations(report.requests.iter().map(|r| r.latency));
    let metrics = executor.metrics();
    let verified = problems.is_empty();
    if args.json {
        let doc = json!({
            "verified": verified,
            "requests": report.requests.len(),
            "bytes": bytes_total,
            "elapsed_s": elapsed.as_secs_f64(),
            "gbps": output::gbps(bytes_total, elapsed),
            "workers": executor.workers(),
            "request_latency": output::latency_json(&latency),
            "stages": output::stages_json(&metrics),
            "missing_file_error": error_text,
            "archive": {
                "assets": assets.len(),
                "bytes": packed.bytes,
                "stored_bytes": packed.stored,
                "ratio": packed.stored as f64 / packed.bytes.max(1) as f64,
                "pack_s": packed.pack.as_secs_f64(),
                "load_s": packed.load.as_secs_f64(),
                "gbps": output::gbps(packed.bytes, packed.load),
            },
            "problems": problems,
            "asset_dir": dir,
        });
        println!("{doc}");
    } else {
        println!("dsr demo: {} assets written to {}", assets.len(), dir.display());
        println!(
            "loaded {} requests ({}) in {:.2} ms: {:.2} GB/s with {} worker(s)",
            report.requests.len(),
            human_bytes(bytes_total),
            elapsed.as_secs_f64() * 1e3,
            output::gbps(bytes_total, elapsed),
            executor.workers()
        );
        println!("{}", output::latency_line("request latency", &latency));
        output::print_stages(&metrics);
        println!(
            "packed them into a GDeflate archive: {} → {} ({:.1}%) in {:.2} s; loaded it back, decoded and \
             hash-verified, in {:.2} ms: {:.2} GB/s",
            human_bytes(packed.bytes),
            human_bytes(packed.stored),
            100.0 * packed.stored as f64 / packed.bytes.max(1) as f64,
            packed.pack.as_secs_f64(),
            packed.load.as_secs_f64() * 1e3,
            output::gbps(packed.bytes, packed.load)
        );
        println!("a missing file fails alone: {error_text}");
        if verified {
            println!(
                "verified: every byte of all {} requests matches its source",
                report.requests.len()
            );
        }
        for p in &problems {
            println!("problem: {p}");
        }
    }
    if verified {
        Ok(())
    } else {
        Err(CliError::failed(format!("{} problem(s) found", problems.len())))
    }
}

/// What packing and reloading the assets measured.
struct Packed {
    bytes: u64,
    stored: u64,
    pack: std::time::Duration,
    load: std::time::Duration,
}

/// Packs `assets` into an archive beside them, loads it back through the engine with tile
/// hashes verified, and compares every byte.
fn pack_and_load(
    executor: &dsr::Executor,
    dir: &Path,
    assets: &[Asset],
    problems: &mut Vec<String>,
) -> Result<Packed, CliError> {
    use dsr::archive::{Archive, ArchiveWriter};
    let path = dir.join("assets.dsrpak");
    let start = Instant::now();
    // The demo shows the decoders at work, so it compresses every asset GDeflate shrinks by a
    // tenth (the packer's default, 50%, suits CPU loads of already-compressed media: see
    // `archive::DEFAULT_MIN_GAIN`).
    let mut writer = ArchiveWriter::create(&path, dsr_gdeflate::Level::DEFAULT)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", path.display())))?
        .min_gain(0.10);
    for (i, asset) in assets.iter().enumerate() {
        writer
            .add(&format!("asset-{i:02}"), &asset.bytes)
            .map_err(|e| CliError::failed(format!("cannot pack {}: {e}", asset.path.display())))?;
    }
    writer
        .finish()
        .map_err(|e| CliError::failed(format!("cannot finish {}: {e}", path.display())))?;
    let pack = start.elapsed();

    let archive = Archive::open(&path)?;
    let entries: Vec<_> = archive.assets.iter().collect();
    let mut slots = Vec::with_capacity(entries.len());
    let mut at = 0u64;
    for e in &entries {
        slots.push(at);
        at += e.len.div_ceil(4096) * 4096;
    }
    let dest = HostBuffer::prefault(at as usize);
    let start = Instant::now();
    let mut batch = executor.batch();
    for request in dsr::archive::requests(&archive, &entries, &dest, &slots, true) {
        batch.push(request)?;
    }
    let report = executor.submit(batch)?.wait();
    let load = start.elapsed();
    let mut dest = dest;
    let landed = dest
        .as_slice()
        .ok_or_else(|| CliError::failed("the destination is still held by the engine after its batch retired"))?;
    for ((request, asset), &slot) in report.requests.iter().zip(assets).zip(&slots) {
        let slot = slot as usize;
        match &request.status {
            RequestStatus::Done if landed[slot..slot + asset.bytes.len()] == asset.bytes[..] => {}
            RequestStatus::Done => problems.push(format!("archive: {} decoded to other bytes", asset.path.display())),
            other => problems.push(format!("archive: {}: {other:?}", asset.path.display())),
        }
    }
    Ok(Packed {
        bytes: entries.iter().map(|e| e.len).sum(),
        stored: entries.iter().map(|e| e.stored_len).sum(),
        pack,
        load,
    })
}
