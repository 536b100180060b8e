//! The `dsr` command as a user runs it: every subcommand through the built binary, its exit
//! codes, and its `--json` documents.

use std::io::Write;
use std::process::{Command, Output};

/// Deterministic bytes that differ at every offset and between seeds.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    bytes
}

/// A temporary file holding `bytes`.
fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(bytes).expect("the temporary file takes the bytes");
    file
}

fn dsr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsr"))
        .args(args)
        // GPU work runs under the validation layer, and the command fails on any message.
        .env("DSR_VK_VALIDATION", "1")
        .output()
        .expect("dsr runs")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "dsr failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

#[test]
fn demo_verifies_every_byte() {
    let doc = json(&dsr(&["demo", "--json"]));
    assert_eq!(doc["verified"], true, "{doc}");
    assert!(doc["requests"].as_u64().unwrap() >= 40);
    assert!(doc["gbps"].as_f64().unwrap() > 0.0);
    assert!(doc["missing_file_error"].as_str().unwrap().contains("exist.pak"));
    assert!(doc["request_latency"]["p99_us"].as_f64().unwrap() > 0.0);
    assert!(
        doc["archive"]["ratio"].as_f64().unwrap() < 0.6,
        "the sample assets compress"
    );
    assert!(doc["archive"]["gbps"].as_f64().unwrap() > 0.0);
}

/// `--plot` draws a bench's cases as an SVG bar chart that a browser renders: headless Chromium
/// (Debian's package; CI installs it) takes a screenshot, which must show the bars of dsr's series
/// and its peer's, not a blank page.
#[test]
fn bench_plots_render_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("exec.svg");
    dsr(&[
        "bench",
        "exec",
        "--nodes",
        "2000",
        "--runs",
        "1",
        "--workers",
        "1",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
        "{text:.200}"
    );
    for label in ["dsr", "rayon spawn", "chains, 1 workers", "ns per node"] {
        assert!(text.contains(label), "the chart names {label:?}");
    }
    let png = dir.path().join("exec.png");
    let shot = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,560"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", svg.display()))
        .output();
    match shot {
        Ok(out) => assert!(png.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr)),
        Err(err) if std::env::var("DSR_REQUIRE_TOOLS").as_deref() == Ok("1") => {
            panic!("DSR_REQUIRE_TOOLS=1 but chromium cannot run: {err}")
        }
        Err(err) => {
            eprintln!("skipped the render check: chromium cannot run ({err}); apt-get install chromium");
            return;
        }
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let colour = |rgb: [u8; 3]| {
        pixels[..info.buffer_size()]
            .chunks(channels)
            .filter(|p| p[..3] == rgb)
            .count()
    };
    let total = (info.width * info.height) as usize;
    // dsr's bars (the first series' blue) and rayon's (orange) cover a visible share of the page.
    assert!(colour([0x1f, 0x77, 0xb4]) > total / 100, "dsr's bars are drawn");
    assert!(colour([0xff, 0x7f, 0x0e]) > total / 100, "the peer's bars are drawn");
}

/// `--trace` writes Chrome trace-event JSON: worker tracks named, node spans named by kind and
/// request, the demo's missing file as a failure event.
#[test]
fn demo_and_load_write_timeline_traces() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("demo.json");
    let doc = json(&dsr(&["demo", "--json", "--trace", trace.to_str().unwrap()]));
    assert_eq!(doc["verified"], true, "{doc}");
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == "worker 0"));
    let spans: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert!(spans.len() >= 40, "{} spans", spans.len());
    assert!(spans
        .iter()
        .all(|e| e["dur"].as_f64() >= Some(0.0) && e["args"]["name"].is_string()));
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "i" && e["args"]["error"].as_str().is_some_and(|m| m.contains("exist.pak"))),
        "the missing file is a failure event"
    );
    let file = temp_file(&pattern(3 << 20, 2));
    let trace = dir.path().join("load.json");
    dsr(&[
        "load",
        file.path().to_str().unwrap(),
        "--repeat",
        "2",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let reads = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "read")
        .count();
    assert_eq!(reads, 2 * 3, "three 1 MiB reads a run, two runs");
}

/// `--trace` on `dsr gdeflate` and the benches: compression draws each tile's encode on its
/// thread's track; decompression the engine's decode nodes, covering every tile once; a bench
/// its engine runs node by node.
#[test]
fn gdeflate_and_benches_write_timeline_traces() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(5 * 65536 + 1234, 8);
    let input = temp_file(&data);
    let stream = dir.path().join("data.gdf");
    let events = |path: &std::path::Path| -> Vec<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        doc["traceEvents"].as_array().unwrap().clone()
    };
    let trace = dir.path().join("compress.json");
    dsr(&[
        "gdeflate",
        "compress",
        input.path().to_str().unwrap(),
        stream.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let compress = events(&trace);
    let mut tiles: Vec<u64> = compress
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "encode tile")
        .map(|e| e["args"]["tile"].as_u64().unwrap())
        .collect();
    tiles.sort_unstable();
    assert_eq!(tiles, (0..6).collect::<Vec<u64>>(), "each tile's encode once");
    assert!(compress
        .iter()
        .any(|e| e["ph"] == "M" && e["args"]["name"].as_str().is_some_and(|n| n.starts_with("encoder"))));
    for name in ["read", "write"] {
        assert!(compress.iter().any(|e| e["ph"] == "X" && e["name"] == name), "{name}");
    }

    let out = dir.path().join("data.out");
    let trace = dir.path().join("decompress.json");
    dsr(&[
        "gdeflate",
        "decompress",
        stream.to_str().unwrap(),
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out).unwrap() == data);
    let decode: u64 = events(&trace)
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "decompress-cpu")
        .map(|e| e["args"]["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(decode, data.len() as u64, "the decode nodes cover the output once");

    let trace = dir.path().join("bench.json");
    dsr(&[
        "bench",
        "exec",
        "--nodes",
        "500",
        "--runs",
        "1",
        "--workers",
        "1",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let spans = events(&trace)
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "node")
        .count();
    assert!(spans >= 500, "{spans} node spans");
}

/// `dsr gdeflate decompress` streams: a 2 GiB TileStream (32,768 tiles) decodes into its file
/// window by window under a 64 MiB scratch budget, the process's peak memory staying far below
/// the stream's size, every tile byte-exact.
#[test]
fn gdeflate_decompress_streams_a_multi_gib_stream_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let tile: Vec<u8> = (0..65536u32)
        .map(|i| b"a tile of a large stream, "[(i % 26) as usize] ^ (i % 331 == 0) as u8)
        .collect();
    let packed = dsr_gdeflate::compress(&tile, dsr_gdeflate::Level::new(4)).unwrap();
    let one = dsr_gdeflate::TileStream::parse(&packed)
        .unwrap()
        .tile(0)
        .unwrap()
        .0
        .to_vec();
    let tiles = 32768usize;
    let slices = vec![one.as_slice(); tiles];
    let mut stream = Vec::new();
    dsr_gdeflate::tilestream::write(&slices, (tiles * 65536) as u64, &mut stream).unwrap();
    let input = dir.path().join("big.gdf");
    std::fs::write(&input, &stream).unwrap();
    drop(stream);
    let output = dir.path().join("big.out");
    let out = dsr(&[
        "gdeflate",
        "decompress",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--scratch",
        "64M",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let peak: u64 = stderr
        .split("peak memory ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in {stderr}"));
    assert!(
        peak < 256,
        "peak memory {peak} MiB decoding a 2 GiB stream under a 64 MiB budget"
    );
    use std::io::Read;
    let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&output).unwrap());
    let mut got = vec![0u8; 65536];
    for i in 0..tiles {
        file.read_exact(&mut got).unwrap();
        assert!(got == tile, "tile {i}");
    }
    assert_eq!(file.read(&mut got).unwrap(), 0, "nothing after the last tile");
}

/// `dsr gdeflate compress` streams too: a 40 MiB file (three windows) compresses byte-identical
/// to the whole file compressed at once, in memory well below the file's size, and decodes back.
#[test]
fn gdeflate_compress_streams_in_windows_byte_identical_to_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(12);
    let data: Vec<u8> = (0..(40 << 20) + 999)
        .map(|i: usize| {
            if (i >> 14).is_multiple_of(5) {
                rng.u8(..)
            } else {
                b"streamed windows "[i % 17]
            }
        })
        .collect();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).unwrap();
    let stream = dir.path().join("in.gdf");
    let out = dsr(&[
        "gdeflate",
        "compress",
        input.to_str().unwrap(),
        stream.to_str().unwrap(),
        "--level",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 window(s)"), "{stderr}");
    let expected = dsr_gdeflate::compress(&data, dsr_gdeflate::Level::new(2)).unwrap();
    assert!(
        std::fs::read(&stream).unwrap() == expected,
        "byte-identical to one pass"
    );
    assert!(
        !dir.path().join("in.gdf.dsr-partial").exists(),
        "the partial file was renamed"
    );
    // The input as its own output is refused before anything is written.
    for command in ["compress", "decompress"] {
        let path = if command == "compress" { &input } else { &stream };
        let out = dsr(&["gdeflate", command, path.to_str().unwrap(), path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("both the input and the output"));
    }
    assert!(std::fs::read(&stream).unwrap() == expected, "left as it was");
    let back = dir.path().join("back.bin");
    let out = dsr(&[
        "gdeflate",
        "decompress",
        stream.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&back).unwrap() == data);
}

#[test]
fn load_reports_throughput_and_writes_the_run_graph() {
    let file = temp_file(&pattern(3 << 20, 1));
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("run.dot");
    let path = file.path().to_str().unwrap();
    let doc = json(&dsr(&[
        "load",
        path,
        "--json",
        "--repeat",
        "2",
        "--dot",
        dot.to_str().unwrap(),
    ]));
    assert_eq!(doc["bytes"], 3 << 20);
    assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
    assert!(doc["median_gbps"].as_f64().unwrap() > 0.0);
    let runs: f64 = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["elapsed_s"].as_f64().unwrap())
        .sum();
    assert!(
        doc["process_s"].as_f64().is_some_and(|p| p >= runs),
        "whole-process time covers the runs: {doc}"
    );
    assert_eq!(doc["stages"][0]["stage"], "read");
    assert!(std::fs::read_to_string(&dot).unwrap().starts_with("digraph"));

    let ranged = json(&dsr(&["load", path, "--range", "1K:64K", "--json"]));
    assert_eq!(ranged["bytes"], 64 << 10);
}

#[test]
fn load_of_a_missing_file_fails_naming_it() {
    let out = dsr(&["load", "/nonexistent/dsr-cli/asset.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/dsr-cli/asset.bin"), "{stderr}");

    let file = temp_file(&[1, 2, 3]);
    for range in ["2:10", "0:1G", "18446744073709551615:2"] {
        let out = dsr(&["load", file.path().to_str().unwrap(), "--range", range]);
        assert_eq!(out.status.code(), Some(1), "{range}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("past the end"), "{range}");
    }
}

#[test]
fn dot_writes_the_plan_without_running() {
    let file = temp_file(&pattern(5 << 20, 2));
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("plan.dot");
    let out = dsr(&["dot", file.path().to_str().unwrap(), "-o", out_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dot = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(dot.matches("shape=box").count(), 5, "5 MiB in 1 MiB reads");
    assert!(dot.contains("(plan)"));
}

#[test]
fn bench_exec_reports_both_sides() {
    let doc = json(&dsr(&[
        "bench",
        "exec",
        "--nodes",
        "3000",
        "--runs",
        "1",
        "--workers",
        "1,2",
        "--json",
    ]));
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for r in results {
        for key in ["dsr_ns_per_node", "rayon_ns_per_task", "workers"] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key} in {r}");
        }
    }
}

/// libdsr.so beside the `dsr` under test, built if it is not (`cargo test` builds no cdylib).
fn libdsr() -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_dsr"));
    let dir = bin.parent().expect("the binary's directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "-p", "dsr-capi", "--target-dir"])
        .arg(dir.parent().expect("the target directory"));
    if dir.file_name().is_some_and(|d| d == "release") {
        cargo.arg("--release");
    }
    assert!(
        cargo.status().expect("cargo runs").success(),
        "cargo build -p dsr-capi failed"
    );
    dir.join("libdsr.so")
}

/// A short soak (the long one is `dsr bench soak --seconds 1800`, docs/reliability.md): random
/// requests through the batch API, the Rust queue and the C ABI, under EIO, short reads, late
/// completions, cancel storms and (with a GPU, which CI has: lavapipe) device losses, with no
/// promise broken.
#[test]
fn a_short_soak_breaks_no_promise() {
    let library = libdsr();
    let out = dsr(&[
        "bench",
        "soak",
        "--seconds",
        "8",
        "--seed",
        "7",
        "--library",
        library.to_str().unwrap(),
        "--json",
    ]);
    let report = json(&out);
    assert_eq!(report["violations"], 0, "{report}");
    let count = |key: &str| report[key].as_u64().unwrap_or_else(|| panic!("no {key} in {report}"));
    assert!(count("requests") > 200, "{report}");
    for key in ["done", "failed", "cancelled", "faults_injected", "cancel_storms"] {
        assert!(count(key) > 0, "no {key}: {report}");
    }
    for path in ["batch", "queue", "c_abi"] {
        assert!(
            report["paths"][path].as_u64().unwrap() > 0,
            "no {path} requests: {report}"
        );
    }
    let gpu = !report["gpu"].is_null();
    if std::env::var("DSR_REQUIRE_VULKAN").as_deref() == Ok("1") {
        assert!(gpu, "DSR_REQUIRE_VULKAN=1 but the soak ran without a GPU: {report}");
    }
    if gpu {
        assert!(count("device_losses") > 0, "{report}");
    } else {
        eprintln!("the soak ran without a GPU (no validating Vulkan device): no GPU landings or device losses");
    }
}

#[test]
fn bench_submit_measures_the_rust_queue_and_the_c_abi_against_the_batch_api() {
    let library = libdsr();
    let doc = json(&dsr(&[
        "bench",
        "submit",
        "--requests",
        "2000",
        "--runs",
        "1",
        "--workers",
        "2",
        "--library",
        library.to_str().unwrap(),
        "--json",
    ]));
    for key in [
        "batch_req_per_s",
        "rust_req_per_s",
        "c_req_per_s",
        "submit_cpu_ns_per_req",
        "c_submit_cpu_ns_per_req",
        "rust_distinct_req_per_s",
        "rust_distinct_submit_cpu_ns_per_req",
    ] {
        assert!(doc[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {doc}");
    }
    assert!(doc["c_error"].is_null(), "{doc}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["demo", "--help"],
        &["load", "--help"],
        &["dot", "--help"],
        &["bench", "--help"],
        &["bench", "exec", "--help"],
        &["pack", "--help"],
        &["gdeflate", "--help"],
        &["gdeflate", "compress", "--help"],
        &["gdeflate", "decompress", "--help"],
        &["info", "--help"],
        &["bench", "read", "--help"],
        &["bench", "submit", "--help"],
        &["bench", "decode-cpu", "--help"],
    ] {
        let out = dsr(args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn pack_then_load_an_archive_by_name_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("sub")).unwrap();
    let text: Vec<u8> = b"pack me ".iter().cycle().take(200_000).copied().collect();
    std::fs::write(assets.join("a.txt"), &text).unwrap();
    std::fs::write(assets.join("sub/b.bin"), pattern(100_000, 3)).unwrap();
    let archive = dir.path().join("x.pak");
    let packed = json(&dsr(&[
        "pack",
        assets.to_str().unwrap(),
        "-o",
        archive.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(packed["assets"], 2);
    assert!(packed["ratio"].as_f64().unwrap() < 0.8);

    let all = json(&dsr(&["load", archive.to_str().unwrap(), "--json", "--threads", "2"]));
    assert_eq!(all["assets"], 2);
    assert_eq!(all["bytes"], 300_000);
    assert_eq!(all["verified"], true);
    let one = json(&dsr(&[
        "load",
        archive.to_str().unwrap(),
        "sub/b.bin",
        "--json",
        "--no-verify",
    ]));
    assert_eq!(one["bytes"], 100_000);
    assert_eq!(one["verified"], false);

    let missing = dsr(&["load", archive.to_str().unwrap(), "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no asset named"));
}

/// `dsr pack` streams: a 1 GiB file (sparse, with text in places) and 24 MiB of noise pack in
/// memory far below their size, and unpack back byte-exact.
#[test]
fn pack_streams_large_files_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let big = assets.join("big.bin");
    let file = std::fs::File::create(&big).unwrap();
    let len = 1024u64 << 20;
    file.set_len(len).unwrap();
    use std::os::unix::fs::FileExt;
    for k in 0..32u64 {
        file.write_all_at(
            format!("text at window {k} ").repeat(100).as_bytes(),
            k * (32 << 20) + k * 977,
        )
        .unwrap();
    }
    drop(file);
    std::fs::write(assets.join("noise.bin"), pattern(24 << 20, 9)).unwrap();
    let archive = dir.path().join("x.pak");
    let packed = json(&dsr(&[
        "pack",
        assets.to_str().unwrap(),
        "-o",
        archive.to_str().unwrap(),
        "--level",
        "1",
        "--json",
    ]));
    assert_eq!(packed["assets"], 2);
    assert_eq!(packed["raw_assets"], 1, "the noise is stored raw");
    let peak = packed["peak_rss_bytes"].as_u64().unwrap() >> 20;
    assert!(peak < 512, "peak memory {peak} MiB packing 1 GiB");
    let out = dir.path().join("out");
    let unpacked = dsr(&["load", archive.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(
        unpacked.status.success(),
        "{}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
    for name in ["big.bin", "noise.bin"] {
        use std::io::Read;
        let open =
            |path: std::path::PathBuf| std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
        let (mut want, mut got) = (open(assets.join(name)), open(out.join(name)));
        let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut at = 0u64;
        loop {
            let n = want.read(&mut a).unwrap();
            got.read_exact(&mut b[..n]).unwrap();
            assert!(a[..n] == b[..n], "{name} differs in the MiB at {at}");
            at += n as u64;
            if n == 0 {
                break;
            }
        }
        assert_eq!(got.read(&mut b).unwrap(), 0, "{name}: nothing after its end");
    }
}

/// `dsr load --output`: an archive unpacks into a directory (nested names as directories,
/// every tile hash checked), a plain file copies to a file, both through the engine within the
/// scratch budget; a damaged archive fails naming the asset.
#[test]
fn load_output_unpacks_archives_and_copies_files() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("sub/deeper")).unwrap();
    let text: Vec<u8> = b"unpack me ".iter().cycle().take(3_000_000).copied().collect();
    let noise = pattern(2_500_000, 4);
    std::fs::write(assets.join("a.txt"), &text).unwrap();
    std::fs::write(assets.join("sub/deeper/b.bin"), &noise).unwrap();
    std::fs::write(assets.join("empty"), b"").unwrap();
    let archive = dir.path().join("x.pak");
    dsr(&["pack", assets.to_str().unwrap(), "-o", archive.to_str().unwrap()]);
    let out = dir.path().join("unpacked");
    let doc = json(&dsr(&[
        "load",
        archive.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--scratch",
        "4M",
        "--json",
    ]));
    assert_eq!(doc["bytes"], 5_500_000, "{doc}");
    assert_eq!(doc["verified"], true);
    assert!(doc["requests"].as_u64().unwrap() > 3, "windows of 1 MiB: {doc}");
    assert!(std::fs::read(out.join("a.txt")).unwrap() == text);
    assert!(std::fs::read(out.join("sub/deeper/b.bin")).unwrap() == noise);
    assert_eq!(std::fs::read(out.join("empty")).unwrap().len(), 0);

    let copy = dir.path().join("copy.bin");
    let doc = json(&dsr(&[
        "load",
        assets.join("sub/deeper/b.bin").to_str().unwrap(),
        "--output",
        copy.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(doc["bytes"], 2_500_000);
    assert!(std::fs::read(&copy).unwrap() == noise);

    let mut bytes = std::fs::read(&archive).unwrap();
    let len = bytes.len();
    // Somewhere in the data area (the table of contents is at the end): a stored or coded byte.
    for at in (4096..len / 2).step_by(4099) {
        bytes[at] ^= 0x21;
    }
    std::fs::write(&archive, &bytes).unwrap();
    let out = dsr(&[
        "load",
        archive.to_str().unwrap(),
        "--output",
        dir.path().join("again").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Named by asset (and window, where a tile fails its hash or its decode; by its table,
    // where that is what the flips hit).
    assert!(
        (stderr.contains("a.txt") || stderr.contains("b.bin")) && stderr.contains("tile"),
        "{stderr}"
    );
}

#[test]
fn load_through_the_queue_lands_the_same_bytes_and_reports_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..40)
        .map(|i| {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, pattern(10_000 + i * 777, 40 + i as u64)).unwrap();
            path.to_str().unwrap().to_owned()
        })
        .collect();
    let mut args: Vec<&str> = vec!["load", "--via", "queue", "--verify", "--json", "--repeat", "3"];
    args.extend(files.iter().map(String::as_str));
    let doc = json(&dsr(&args));
    assert_eq!(doc["via"], "queue");
    assert_eq!(doc["files"], 40);
    assert_eq!(doc["runs"].as_array().unwrap().len(), 3);
    assert_eq!(doc["failures"].as_array().unwrap().len(), 0);

    // An archive whose stored bytes were damaged: the tile hash check fails the asset, and the
    // queue's status entry and error record say which.
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("good.bin"), pattern(70_000, 7)).unwrap();
    std::fs::write(assets.join("bad.bin"), pattern(90_000, 8)).unwrap();
    let archive = dir.path().join("x.pak");
    json(&dsr(&[
        "pack",
        assets.to_str().unwrap(),
        "-o",
        archive.to_str().unwrap(),
        "--json",
    ]));
    let bad = dsr::archive::Archive::open(&archive)
        .unwrap()
        .find("bad.bin")
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[(bad.offset + bad.stored_len / 2) as usize] ^= 0x5a;
    std::fs::write(&archive, bytes).unwrap();
    let out = dsr(&["load", archive.to_str().unwrap(), "--via", "queue"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("error: bad.bin"), "{stdout}");
    assert!(!stdout.contains("good.bin"), "{stdout}");
}

#[test]
fn gdeflate_compress_and_decompress_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i / 7 % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let stream = dir.path().join("in.gdf");
    let back = dir.path().join("back.bin");
    let out = dsr(&[
        "gdeflate",
        "compress",
        input.to_str().unwrap(),
        stream.to_str().unwrap(),
        "--level",
        "6",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let header = std::fs::read(&stream).unwrap();
    assert_eq!(&header[..2], &[4, 0xFB], "a DirectStorage TileStream");
    let out = dsr(&[
        "gdeflate",
        "decompress",
        stream.to_str().unwrap(),
        back.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&back).unwrap() == data);

    std::fs::write(&stream, &header[..header.len() - 8]).unwrap();
    let out = dsr(&[
        "gdeflate",
        "decompress",
        stream.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GDeflate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn info_names_the_backend_and_probes_direct_io() {
    let doc = json(&dsr(&["info", "--json"]));
    assert!(
        ["io_uring", "pread"].contains(&doc["backend"].as_str().unwrap()),
        "{doc}"
    );
    assert!(!doc["direct_io"].as_array().unwrap().is_empty());
    assert!(doc["kernel"].as_str().unwrap().len() > 1);
    let forced = json(&dsr(&["info", "--json", "--io-backend", "pread"]));
    assert_eq!(forced["backend"], "pread");
    assert!(forced["io_uring"].is_null());
    assert!(
        ["cachestat", "mincore"].contains(&doc["page_cache_probe"].as_str().unwrap_or_default()),
        "the page-cache probe is named"
    );
}

#[test]
fn bench_read_measures_dsr_and_fio_in_the_same_run() {
    let file = temp_file(&pattern(4 << 20, 9));
    let doc = json(&dsr(&[
        "bench",
        "read",
        file.path().to_str().unwrap(),
        "--runs",
        "1",
        "--modes",
        "warm-seq-1m,direct-rand-64k",
        "--json",
    ]));
    let modes = doc["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2);
    for m in modes {
        assert!(m["dsr_gbps"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["dsr_cpu_pct"].as_f64().is_some(), "{m}");
    }
    assert!(modes[1]["dsr_iops"].as_f64().unwrap() > 0.0);
    let require = std::env::var("DSR_REQUIRE_TOOLS").as_deref() == Ok("1");
    if doc["fio"] == true {
        assert!(modes[0]["fio_gbps"].as_f64().unwrap() > 0.0, "{doc}");
    } else if require {
        panic!("fio is required (DSR_REQUIRE_TOOLS=1) but is not installed");
    } else {
        eprintln!("SKIPPED the fio half: fio is not installed (apt-get install fio)");
    }
}

#[test]
fn load_reports_its_backend_and_takes_io_policies() {
    let file = temp_file(&pattern(2 << 20, 10));
    // Auto falls back to pread where io_uring cannot be set up; then only pread can be forced.
    let uring = json(&dsr(&["info", "--json"]))["backend"] == "io_uring";
    if !uring {
        assert_ne!(
            std::env::var("DSR_REQUIRE_TOOLS").as_deref(),
            Ok("1"),
            "io_uring is required here"
        );
        eprintln!("SKIPPED --io-backend io-uring: io_uring cannot be set up on this kernel");
    }
    let backends: &[&str] = if uring { &["io-uring", "pread"] } else { &["pread"] };
    for io in ["auto", "direct", "buffered"] {
        for &backend in backends {
            let doc = json(&dsr(&[
                "load",
                file.path().to_str().unwrap(),
                "--io",
                io,
                "--io-backend",
                backend,
                "--json",
            ]));
            assert_eq!(doc["bytes"], 2 << 20);
            assert_eq!(doc["backend"], if backend == "pread" { "pread" } else { "io_uring" });
        }
    }
}

/// Whether a Vulkan device is here (per `dsr info`); with `DSR_REQUIRE_VULKAN=1` its absence
/// fails the test instead.
fn vulkan_here(info: &serde_json::Value) -> bool {
    if !info["vulkan"].is_null() {
        return true;
    }
    assert!(
        std::env::var("DSR_REQUIRE_VULKAN").as_deref() != Ok("1"),
        "DSR_REQUIRE_VULKAN=1 but dsr info found no Vulkan device: {}",
        info["vulkan_error"]
    );
    eprintln!("skipped: no Vulkan device ({})", info["vulkan_error"]);
    false
}

#[test]
fn info_describes_the_vulkan_device() {
    let info = json(&dsr(&["info", "--json"]));
    if !vulkan_here(&info) {
        return;
    }
    let vulkan = &info["vulkan"];
    for key in [
        "device",
        "driver",
        "api_version",
        "queue_families",
        "subgroup_size",
        "external_memory_host",
    ] {
        assert!(!vulkan[key].is_null(), "{key} missing: {vulkan}");
    }
    assert!(vulkan["subgroup_size"].as_u64().unwrap() >= 1);
    assert!(
        vulkan.get("memory_decompression").is_some(),
        "null when absent, but present: {vulkan}"
    );
    assert!(
        vulkan["gdeflate_decoder"]
            .as_str()
            .is_some_and(|d| d.starts_with("dsr shader")),
        "dsr's own devices run its GPU decoder: {vulkan}"
    );
}

/// `dsr bench decode-gpu` on this machine's device: every byte of both batch sizes verified
/// (the command fails otherwise), the figures and keys the issue names.
#[test]
fn bench_decode_gpu_verifies_and_reports_each_batch() {
    let info = json(&dsr(&["info", "--json"]));
    if !vulkan_here(&info) {
        return;
    }
    let doc = json(&dsr(&[
        "bench",
        "decode-gpu",
        "--size-mib",
        "1",
        "--batch-mib",
        "1,2",
        "--runs",
        "1",
        "--workers",
        "2",
        "--json",
    ]));
    for key in ["dsr_gbps", "cpu_gbps", "e2e_gbps"] {
        assert!(doc[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {doc}");
    }
    assert!(doc["e2e"]["read_gbps"].as_f64().is_some_and(|v| v > 0.0), "{doc}");
    assert_eq!(doc["tiles"], 16, "{doc}");
    assert!(
        doc.get("nv_gbps").is_some(),
        "null without the extension, but present: {doc}"
    );
    let batches = doc["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(
        batches[1]["tiles"], 32,
        "the 2 MiB batch repeats the corpus's tiles: {doc}"
    );
}

/// An archive into a GPU buffer on each decode route lands the same bytes, with or without tile
/// hashes checked on the way (and against them after reading back); a damaged asset fails on
/// the GPU route as on the CPU route, naming its tile.
#[test]
fn load_decodes_archives_into_gpu_buffers_on_either_route() {
    let info = json(&dsr(&["info", "--json"]));
    if !vulkan_here(&info) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    let text: Vec<u8> = (0..400_000u32)
        .map(|i| b"level 3 door spawn "[(i % 19) as usize])
        .collect();
    std::fs::write(assets.join("text.lua"), &text).unwrap();
    std::fs::write(assets.join("noise.bin"), pattern(150_000, 9)).unwrap();
    let archive = dir.path().join("game.dsrpak");
    let out = dsr(&["pack", assets.to_str().unwrap(), "-o", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for route in ["gpu", "cpu", "auto"] {
        for hashes in [&["--no-verify"][..], &[]] {
            let mut args = vec![
                "load",
                archive.to_str().unwrap(),
                "--dest",
                "gpu",
                "--decode",
                route,
                "--verify",
                "--json",
            ];
            args.extend(hashes);
            let doc = json(&dsr(&args));
            assert!(doc["failures"].as_array().is_some_and(Vec::is_empty), "{route}: {doc}");
            let decoded_on_gpu = doc["stages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["stage"] == "decompress-gpu" && s["bytes"].as_u64() > Some(0));
            // Auto takes the shader on a real GPU, and leaves decoding to the workers on a device
            // that is the CPU itself (lavapipe).
            let real_gpu = info["vulkan"]["type"] != "CPU";
            assert_eq!(
                decoded_on_gpu,
                route == "gpu" || (route == "auto" && real_gpu),
                "{route} {hashes:?}: {doc}"
            );
        }
    }
    // A flipped byte in the compressed asset's stream fails it on either route, naming a tile:
    // the first from the stream's middle on that changes what it decodes to (a tile this
    // repetitive leaves many bits of its lanes unused).
    let asset = dsr::archive::Archive::open(&archive)
        .unwrap()
        .find("text.lua")
        .unwrap()
        .clone();
    assert_eq!(asset.codec, dsr::archive::Codec::GDeflate);
    let mut bytes = std::fs::read(&archive).unwrap();
    let stream = asset.offset as usize..(asset.offset + asset.stored_len) as usize;
    let flip = (stream.start + stream.len() / 2..stream.end)
        .find(|&at| {
            let mut damaged = bytes[stream.clone()].to_vec();
            damaged[at - stream.start] ^= 0x10;
            let mut out = vec![0u8; text.len()];
            dsr_gdeflate::decompress(&damaged, &mut out).map_or(true, |()| out != text)
        })
        .expect("some flip changes the stream");
    bytes[flip] ^= 0x10;
    std::fs::write(&archive, &bytes).unwrap();
    for route in ["gpu", "cpu"] {
        let out = dsr(&["load", archive.to_str().unwrap(), "--dest", "gpu", "--decode", route]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{route}: {stderr}");
        assert!(stderr.contains("tile"), "{route}: {stderr}");
    }
}

/// `dsr gdeflate decompress --decode gpu` lands the same bytes as the CPU, and names the tile a
/// damaged stream breaks, as the CPU does.
#[test]
fn gdeflate_decompress_on_the_gpu_matches_the_cpu() {
    let info = json(&dsr(&["info", "--json"]));
    if !vulkan_here(&info) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    // Compressible with some noise: Huffman blocks with matches, which damage breaks.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i / 7 % 251) as u8 ^ if i % 13 == 0 { (i % 256) as u8 } else { 0 })
        .collect();
    std::fs::write(&input, &data).unwrap();
    let stream = dir.path().join("in.gdf");
    let out = dsr(&[
        "gdeflate",
        "compress",
        input.to_str().unwrap(),
        stream.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = dir.path().join("back.bin");
    let decompress = |stream: &std::path::Path, decode: &str| {
        dsr(&[
            "gdeflate",
            "decompress",
            stream.to_str().unwrap(),
            back.to_str().unwrap(),
            "--decode",
            decode,
        ])
    };
    let out = decompress(&stream, "gpu");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&back).unwrap() == data);

    let mut damaged = std::fs::read(&stream).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle..middle + 64].fill(0xff);
    std::fs::write(&stream, &damaged).unwrap();
    let (gpu, cpu) = (decompress(&stream, "gpu"), decompress(&stream, "cpu"));
    assert_eq!(gpu.status.code(), Some(1));
    assert_eq!(cpu.status.code(), Some(1));
    let tile_of = |out: &Output| {
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let at = text
            .find("GDeflate tile ")
            .unwrap_or_else(|| panic!("no tile named: {text}"));
        text[at..].split(':').next().unwrap().to_owned()
    };
    assert_eq!(tile_of(&gpu), tile_of(&cpu));
}

#[test]
fn load_lands_files_and_archives_in_gpu_memory_and_verifies_them() {
    if !vulkan_here(&json(&dsr(&["info", "--json"]))) {
        return;
    }
    let a = temp_file(&pattern(3_000_001, 1));
    let b = temp_file(&pattern(4097, 2));
    let doc = json(&dsr(&[
        "load",
        a.path().to_str().unwrap(),
        b.path().to_str().unwrap(),
        "--dest",
        "gpu",
        "--verify",
        "--json",
    ]));
    assert_eq!(doc["dest"], "gpu", "{doc}");
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["bytes"], 3_000_001 + 4097);
    assert!(doc["failures"].as_array().unwrap().is_empty(), "{doc}");
    assert!(
        doc["stages"].as_array().unwrap().iter().any(|s| s["stage"] == "upload"),
        "the bytes went through upload nodes: {doc}"
    );

    let dir = tempfile::tempdir().unwrap();
    let pak = dir.path().join("gpu.dsrpak");
    let out = dsr(&[
        "pack",
        a.path().to_str().unwrap(),
        "-o",
        pak.to_str().unwrap(),
        "--level",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json(&dsr(&[
        "load",
        pak.to_str().unwrap(),
        "--dest",
        "gpu",
        "--verify",
        "--json",
    ]));
    assert_eq!(doc["dest"], "gpu", "{doc}");
    assert!(doc["failures"].as_array().unwrap().is_empty(), "{doc}");
}
