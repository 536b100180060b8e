//! DOT pictures of plans and runs; Graphviz renders them.

use std::process::Command;
use std::sync::Arc;

use dsr::viz::{plan_dot, run_dot, RunRecorder, TraceRecorder};
use dsr::{HostBuffer, Request};

use crate::common::*;

/// Renders `dot` with Graphviz. Fails when `DSR_REQUIRE_TOOLS=1` (CI) and Graphviz is missing;
/// otherwise says it skipped.
fn assert_renders(dot: &str) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), dot).unwrap();
    match Command::new("dot").arg("-Tsvg").arg(tmp.path()).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "dot failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
        }
        Err(err) if std::env::var("DSR_REQUIRE_TOOLS").as_deref() == Ok("1") => {
            panic!("Graphviz `dot` is required (DSR_REQUIRE_TOOLS=1) but cannot run: {err}")
        }
        Err(err) => eprintln!("SKIPPED rendering check: Graphviz `dot` cannot run ({err}); install graphviz"),
    }
}

#[test]
fn the_plan_has_a_cluster_per_request_and_a_shape_per_kind() {
    let dest = HostBuffer::new(1 << 20);
    let mut batch = dsr::BatchBuilder::new(dsr::LoweringConfig {
        read_chunk: 100,
        ..dsr::LoweringConfig::default()
    });
    batch
        .push(Request::file("/a \"quoted\".bin", 0, 250, &dest, 0).name("level \"one\""))
        .unwrap();
    batch
        .push(Request::file("/b", 0, 150, &dest, 1000).gdeflate(4000).tag(0x42))
        .unwrap();
    batch
        .push(Request::memory(Arc::from(vec![0u8; 10]), 0, 10, &dest, 9000))
        .unwrap();
    let compiled = batch.compile().unwrap();
    let dot = plan_dot(compiled.graph());
    assert_eq!(dot.matches("subgraph cluster_r").count(), 3);
    assert!(dot.contains("shape=box"), "reads are boxes");
    assert!(dot.contains("shape=hexagon"), "CPU decodes are hexagons");
    assert!(dot.contains("shape=ellipse"), "copies are ellipses");
    assert!(dot.contains("level \\\"one\\\""), "names are escaped");
    assert!(dot.contains("tag 0x42"));
    assert!(
        dot.contains("shape=cds") && dot.contains("shape=larrow"),
        "scratch is acquired and released"
    );
    assert_eq!(
        dot.matches(" -> ").count(),
        5,
        "acquire feeds two reads, which feed the decode, which feeds the release"
    );
    assert_renders(&dot);
}

#[test]
fn the_run_is_coloured_by_outcome_with_durations() {
    let data = pattern(10_000, 1);
    let file = temp_file(&data);
    let recorder = Arc::new(RunRecorder::new());
    let executor = observed_executor(recorder.clone());
    let dest = HostBuffer::new(50_000);
    let mut batch = executor.batch();
    batch
        .push(Request::file(file.path(), 0, 10_000, &dest, 0).name("ok"))
        .unwrap();
    batch
        .push(Request::file("/nonexistent/x", 0, 10, &dest, 10_000).name("missing"))
        .unwrap();
    batch
        .push(
            Request::file(file.path(), 0, 5000, &dest, 20_000)
                .gdeflate(20_000)
                .name("gdeflate"),
        )
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    batch.wait();
    let dot = run_dot(batch.graph(), Some(&recorder));
    assert!(dot.contains("#a6dba0"), "done nodes are green");
    assert!(dot.contains("#f4a6a6"), "failed nodes are red");
    assert!(dot.contains("done in"), "durations are shown");
    assert!(dot.contains("9.8 KiB"), "bytes are shown");
    assert_renders(&dot);
}

/// A run's timeline trace (io_uring reads, CPU decodes, copies, a failing request) is Chrome
/// trace-event JSON in which every node that ran appears once as a span on its worker's track,
/// the spans of a track never overlap, every wait on a completion source opens and closes, all
/// of it inside the run, and the failure is an instant event naming the request and the error.
#[test]
fn a_trace_shows_every_node_once_on_tracks_that_nest() {
    let data = pattern(300_000, 5);
    // On the disk and out of the page cache, so its reads wait on io_uring (cached pages would
    // be copied on the workers).
    let file = disk_file(&data);
    evict(&file);
    let packed = dsr_gdeflate::compress(&data, dsr_gdeflate::Level::new(4)).unwrap();
    let packed_file = temp_file(&packed);
    let recorder = Arc::new(TraceRecorder::new(2));
    let config = dsr::ExecutorConfig {
        workers: 2,
        observer: Some(recorder.clone()),
        lowering: dsr::LoweringConfig {
            read_chunk: 64 << 10,
            ..dsr::LoweringConfig::default()
        },
        ..dsr::ExecutorConfig::default()
    };
    let (builder, _) =
        dsr::stages::install_stages(dsr::Executor::builder().config(config), dsr::IoConfig::default()).unwrap();
    let executor = builder.build().unwrap();
    let dest = HostBuffer::new(1 << 20);
    let mut batch = executor.batch();
    batch
        .push(Request::file(file.path(), 0, 300_000, &dest, 0).name("plain"))
        .unwrap();
    batch
        .push(
            Request::file(packed_file.path(), 0, packed.len() as u64, &dest, 300_000)
                .gdeflate(300_000)
                .name("packed"),
        )
        .unwrap();
    batch
        .push(Request::memory(Arc::from(&data[..1000]), 0, 1000, &dest, 600_000).name("copy"))
        .unwrap();
    batch
        .push(Request::file("/nonexistent/level.bin", 0, 10, &dest, 700_000).name("missing"))
        .unwrap();
    let started = std::time::Instant::now();
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait();
    let run_us = started.elapsed().as_secs_f64() * 1e6;
    let nodes = batch.graph().node_count();
    let names = ["plain", "packed", "copy", "missing"];
    let doc = recorder.chrome_json(|_, request| names.get(request as usize).map(|n| n.to_string()));
    // It survives a trip through text, as a viewer reads it.
    let doc: serde_json::Value = serde_json::from_str(&doc.to_string()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let of = |ph: &'static str| events.iter().filter(move |e| e["ph"] == ph);
    // Every node that ran is one span on a worker track; the nodes that did not run were
    // skipped after the failed read, and say so.
    let spans: Vec<_> = of("X").filter(|e| e["pid"] == 1).collect();
    let mut seen: Vec<u64> = spans.iter().map(|e| e["args"]["node"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    assert_eq!(before, seen.len(), "a node appears once");
    let skipped = of("i")
        .filter(|e| e["name"].as_str().unwrap().ends_with("skipped"))
        .count();
    assert_eq!(seen.len() + skipped, nodes, "every node of the run is in the trace");
    assert_eq!(report.requests.len(), 4);
    // Durations are non-negative, everything lies inside the run (the recorder started first).
    let origin_slack = run_us + 1e6;
    for e in events.iter().filter(|e| e["ph"] != "M") {
        let ts = e["ts"].as_f64().unwrap();
        assert!((0.0..origin_slack).contains(&ts), "{e}");
        if let Some(dur) = e["dur"].as_f64() {
            assert!(dur >= 0.0, "{e}");
        }
    }
    // Spans on one worker's track follow one another.
    let mut by_track: std::collections::HashMap<u64, Vec<(f64, f64)>> = Default::default();
    for e in &spans {
        let ts = e["ts"].as_f64().unwrap();
        by_track
            .entry(e["tid"].as_u64().unwrap())
            .or_default()
            .push((ts, ts + e["dur"].as_f64().unwrap()));
    }
    for (track, mut spans) in by_track {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0 + 1.0, "worker {track}: {pair:?} overlap");
        }
    }
    // The reads waited on io_uring: their async spans pair up.
    let begins: Vec<_> = of("b").collect();
    assert!(
        begins.iter().any(|e| e["cat"] == "io_uring"),
        "io_uring waits are in the trace"
    );
    for b in &begins {
        let end = of("e").find(|e| e["id"] == b["id"]).expect("every wait ends");
        assert!(end["ts"].as_f64() >= b["ts"].as_f64(), "{b} {end}");
    }
    assert_eq!(begins.len(), of("e").count());
    // The failure names its request and the error.
    let failed = of("i")
        .find(|e| e["name"].as_str().unwrap().ends_with("failed"))
        .expect("the failed read");
    assert_eq!(failed["args"]["name"], "missing");
    assert!(
        failed["args"]["error"].as_str().unwrap().contains("nonexistent"),
        "{failed}"
    );
    let decode = spans
        .iter()
        .find(|e| e["name"] == "decompress-cpu" && e["args"]["name"] == "packed")
        .expect("the decode's span");
    assert!(
        decode["args"]["tiles"].as_str().is_some_and(|t| t.starts_with("0..")),
        "{decode}"
    );
    // Counters: each ends where it started, and the ones that move did move.
    for (name, key) in [
        ("nodes waiting on completion sources", "nodes"),
        ("scratch bytes held", "bytes"),
        ("requests in flight", "requests"),
    ] {
        let values: Vec<i64> = of("C")
            .filter(|e| e["name"] == name)
            .map(|e| e["args"][key].as_i64().unwrap())
            .collect();
        assert_eq!(values.last(), Some(&0), "{name} ends at zero: {values:?}");
        assert!(values.iter().all(|&v| v >= 0), "{name} never negative: {values:?}");
        assert!(values.iter().max() > Some(&0), "{name} moved: {values:?}");
    }
    let scratch_peak = of("C")
        .filter(|e| e["name"] == "scratch bytes held")
        .map(|e| e["args"]["bytes"].as_i64().unwrap())
        .max();
    assert!(
        scratch_peak >= Some(packed.len() as i64),
        "the packed stream's scratch is counted"
    );
}
