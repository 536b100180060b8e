//! DOT pictures of plans and runs; Graphviz renders them.

use std::process::Command;
use std::sync::Arc;

use dsr::viz::{plan_dot, run_dot, RunRecorder};
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
