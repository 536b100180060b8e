//! dsr's GPU GDeflate decoder on a real Vulkan device (lavapipe in CI, where
//! `DSR_REQUIRE_VULKAN=1` makes a missing device a failure), under the validation layer (any
//! message fails): the committed SPIR-V is the shader's; every tile of dsr's encoder and the
//! reference encoder, at every level and on the format's edge cases, decodes byte-exact with the
//! CPU decoder, many tiles per dispatch; hostile tiles (bit flips, truncations, hand-made bad
//! streams) fail exactly where the CPU decoder fails, without touching their neighbours' bytes;
//! the host refuses tile lists that break the shader's contract.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use dsr_gdeflate::{Decoder, Encoder, Level, Reason};
use dsr_gdeflate_reference as reference;
use dsr_gpu::{DecodeRun, Form, GpuConfig, GpuContext, GpuDecoder, TileJob};

/// A validating context on the default device, or `None` (with the reason) when no Vulkan
/// device is here, unless `DSR_REQUIRE_VULKAN=1` makes that a failure.
fn context() -> Option<Arc<GpuContext>> {
    let config = GpuConfig {
        validation: true,
        ..GpuConfig::default()
    };
    match GpuContext::new(&config) {
        Ok(context) => Some(context),
        Err(err) if std::env::var("DSR_REQUIRE_VULKAN").as_deref() == Ok("1") => {
            panic!("DSR_REQUIRE_VULKAN=1 but no validating Vulkan device: {err}")
        }
        Err(err) => {
            eprintln!(
                "skipped: no validating Vulkan device ({err}); install mesa-vulkan-drivers and vulkan-validationlayers"
            );
            None
        }
    }
}

fn assert_valid(context: &GpuContext) {
    let messages = context.validation_messages();
    assert!(messages.is_empty(), "validation messages:\n{}", messages.join("\n"));
}

/// Every form this device runs: the shared-memory one always, wave32 where subgroups are 32.
fn decoders(context: &Arc<GpuContext>) -> Vec<GpuDecoder> {
    let mut decoders =
        vec![GpuDecoder::new(context, Some(Form::Shared)).expect("the shared-memory decoder runs anywhere")];
    match GpuDecoder::new(context, Some(Form::Wave32)) {
        Ok(decoder) => decoders.push(decoder),
        Err(err) => eprintln!("wave32 form not tested on this device: {err}"),
    }
    decoders
}

/// Tiles back to back (each padded to its 4-byte multiple already) with their jobs; outputs
/// back to back too, each at a 4-byte-aligned offset.
struct Set {
    input: Vec<u8>,
    jobs: Vec<TileJob>,
    expected: Vec<Vec<u8>>,
    output_len: u64,
}

impl Set {
    fn new() -> Set {
        Set {
            input: Vec::new(),
            jobs: Vec::new(),
            expected: Vec::new(),
            output_len: 0,
        }
    }

    /// Adds a tile whose output is `dst_len` bytes; `expected` is the CPU decoder's verdict.
    fn push(&mut self, tile: &[u8], dst_len: usize, expected: Vec<u8>) {
        let src_offset = self.input.len() as u64;
        self.input.extend_from_slice(tile);
        while !self.input.len().is_multiple_of(4) {
            self.input.push(0);
        }
        self.jobs.push(TileJob {
            src_offset,
            src_len: tile.len() as u32,
            dst_offset: self.output_len,
            dst_len: dst_len as u32,
        });
        self.output_len += (dst_len as u64).next_multiple_of(4).max(4);
        self.expected.push(expected);
    }
}

/// Decodes `set` with `decoder`; compares with the CPU decoder's verdicts (`cpu`): the same
/// success or failure per tile, the same bytes where both succeed, and the output of a failed
/// tile's neighbours untouched. Returns how many tiles failed.
fn check_against_cpu(decoder: &GpuDecoder, set: &Set, cpu: &[Result<(), Reason>], what: &str) -> usize {
    let run = DecodeRun::new(decoder, &set.input, &set.jobs, set.output_len).expect("the tiles stage");
    run.decode(1).expect("the decode runs");
    let statuses = run.statuses();
    let output = run.read_output().expect("the output reads back");
    let mut failed = 0;
    for (i, ((job, expected), (gpu, cpu))) in set
        .jobs
        .iter()
        .zip(&set.expected)
        .zip(statuses.iter().zip(cpu))
        .enumerate()
    {
        assert_eq!(
            gpu.is_ok(),
            cpu.is_ok(),
            "{what} ({:?}), tile {i}: GPU {gpu:?}, CPU {cpu:?}",
            decoder.form()
        );
        let range = job.dst_offset as usize..(job.dst_offset + job.dst_len as u64) as usize;
        if gpu.is_ok() {
            assert!(
                output[range.clone()] == expected[..],
                "{what} ({:?}), tile {i}: wrong bytes (first difference at {:?} of {})",
                decoder.form(),
                output[range.clone()]
                    .iter()
                    .zip(expected)
                    .position(|(a, b)| a != b)
                    .map(|p| (p, output[range.start + p], expected[p])),
                expected.len()
            );
        } else {
            failed += 1;
        }
    }
    failed
}

/// Inputs on the format's edges (FORMAT.md §6) and ordinary data.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(0x91);
    let mut random = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.u8(..)).collect() };
    let text: Vec<u8> = b"The GPU decodes thirty-two lanes at once; copies wait a round. 0123456789\n"
        .iter()
        .cycle()
        .take(65536)
        .copied()
        .collect();
    let mut noisy = text.clone();
    for (i, b) in noisy.iter_mut().enumerate() {
        if i % 7 == 3 {
            *b = b"etaoinshrdlu"[(i * 31 + i / 5) % 12];
        }
    }
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [1usize, 2, 3, 31, 32, 33, 64, 65, 1000, 4097] {
        inputs.push((format!("random {n}"), random(n)));
        inputs.push((format!("text {n}"), text[..n].to_vec()));
    }
    inputs.push(("zeros 65536".into(), vec![0; 65536]));
    inputs.push(("random 65536".into(), random(65536)));
    inputs.push(("random 65535".into(), random(65535)));
    inputs.push(("text 65536".into(), text.clone()));
    inputs.push(("noisy text 65536".into(), noisy));
    inputs.push(("period 3".into(), (0..65536).map(|i| [1u8, 2, 3][i % 3]).collect()));
    for distance in [32769usize, 49153, 65000] {
        let head = random(distance);
        let mut v = head.clone();
        v.extend_from_slice(&head[..65536 - distance]);
        inputs.push((format!("repeat at {distance}"), v));
    }
    let mut mixed = random(20_000);
    mixed.extend_from_slice(&text[..25_000]);
    mixed.extend(std::iter::repeat_n(9u8, 20_536));
    inputs.push(("random then text then run".into(), mixed));
    // A match of 40,000 bytes, then matches whose sources lie inside it, near and far (this tile
    // broke an experiment that kept recent output in shared memory, whose slots the long copy
    // wrote more than once).
    let period = random(200);
    let mut long_then_near: Vec<u8> = period.iter().cycle().take(40_000).copied().collect();
    while long_then_near.len() < 65_536 {
        let back = 100 + long_then_near.len() % 7_000;
        let start = long_then_near.len() - back;
        long_then_near.extend_from_within(start..start + 40);
        long_then_near.extend(random(9));
    }
    long_then_near.truncate(65_536);
    inputs.push(("a long match, then matches into it".into(), long_then_near));
    // Vertices (position, a wave, texture coordinates: five floats on a grid): short matches at
    // distances of 4, 20 and a row, many copies per round reading each other's output. Tiles of
    // such data decoded wrongly, or wrote far outside their output, on lavapipe with the copy
    // loops of an earlier shader (docs/gpu-decoder.md).
    let vertices: Vec<u8> = (0..65_536 / 20)
        .flat_map(|i| {
            let (x, y) = (i % 120, i / 120);
            [
                x as f32 * 0.25,
                y as f32 * 0.25,
                ((x * y) % 7) as f32 * 0.125,
                x as f32 / 119.0,
                y as f32 / 119.0,
            ]
        })
        .flat_map(f32::to_le_bytes)
        .collect();
    inputs.push(("vertex data".into(), vertices));
    let mut matches = random(300);
    matches.extend_from_within(0..258);
    matches.extend_from_within(0..259);
    inputs.push(("matches of 258 and 259".into(), matches));
    inputs
}

#[test]
fn the_committed_spirv_is_the_shaders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (shader, define, committed) in [
        ("gdeflate.comp", "WAVE32=0", "gdeflate.spv"),
        ("gdeflate.comp", "WAVE32=1", "gdeflate-wave32.spv"),
        ("tilehash.comp", "UNUSED=0", "tilehash.spv"),
    ] {
        let source = root.join("shaders").join(shader);
        let out = tempfile::NamedTempFile::new().unwrap();
        let status = Command::new("glslc")
            .args(["--target-env=vulkan1.2", "-O", &format!("-D{define}")])
            .arg(&source)
            .arg("-o")
            .arg(out.path())
            .status();
        match status {
            Ok(status) => assert!(status.success(), "glslc failed on {}", source.display()),
            Err(err) if std::env::var("DSR_REQUIRE_TOOLS").as_deref() == Ok("1") => {
                panic!("DSR_REQUIRE_TOOLS=1 but glslc cannot run: {err}")
            }
            Err(err) => {
                eprintln!("skipped: glslc cannot run ({err}); apt-get install glslc");
                return;
            }
        }
        let fresh = std::fs::read(out.path()).unwrap();
        let old = std::fs::read(root.join("shaders").join(committed)).unwrap();
        assert!(
            fresh == old,
            "shaders/{committed} is stale: rebuild it with `glslc --target-env=vulkan1.2 -O -D{define} shaders/{shader} -o shaders/{committed}`"
        );
    }
}

/// The hash check the GPU route runs on decoded tiles is XXH3-64 (what archives store): every
/// length XXH3 treats apart (0–300 bytes one by one, then around its 64-byte stripes and 1 KiB
/// blocks, up to a whole tile), at aligned and odd addresses; a wrong expected hash never matches.
#[test]
fn tile_hashes_checked_on_the_gpu_are_xxh3() {
    let Some(context) = context() else { return };
    let decoder = GpuDecoder::new(&context, Some(Form::Shared)).unwrap();
    // Random bytes put on the GPU by decoding them (stored blocks).
    let mut rng = fastrand::Rng::with_seed(0x4a5);
    let data: Vec<u8> = (0..3 * 65536 + 1000).map(|_| rng.u8(..)).collect();
    let mut set = Set::new();
    let mut encoder = Encoder::new(Level::new(1));
    for tile in data.chunks(65536) {
        let mut packed = Vec::new();
        encoder.encode_tile(tile, &mut packed);
        set.push(&packed, tile.len(), tile.to_vec());
    }
    let run = DecodeRun::new(&decoder, &set.input, &set.jobs, set.output_len).unwrap();
    run.decode(1).unwrap();
    assert!(run.statuses().iter().all(Result::is_ok));
    let lens = (0..=300).chain([511, 512, 1023, 1024, 1025, 1088, 4095, 4096, 4097, 65535, 65536]);
    let mut ranges = Vec::new();
    for len in lens {
        for at in [0usize, 8, 3, 65536 + 5] {
            if at + len <= data.len() {
                let hash = xxhash_rust::xxh3::xxh3_64(&data[at..at + len]);
                ranges.push((at as u64, len as u32, hash));
                ranges.push((at as u64, len as u32, hash ^ 1 << (len % 64)));
            }
        }
    }
    let matches = decoder.check_hashes(run.output(), &ranges).unwrap();
    for (i, (&(at, len, _), matched)) in ranges.iter().zip(matches).enumerate() {
        assert_eq!(
            matched,
            i % 2 == 0,
            "{len} bytes at {at} (expected hash {})",
            if i % 2 == 0 { "right" } else { "wrong" }
        );
    }
    assert!(
        decoder
            .check_hashes(run.output(), &[(data.len() as u64, 1, 0)])
            .is_err(),
        "past the end"
    );
    assert_valid(&context);
}

#[test]
fn every_tile_of_both_encoders_decodes_byte_exact() {
    let Some(context) = context() else { return };
    let mut set = Set::new();
    for (_, input) in inputs() {
        for level in [0u8, 1, 4, 9, 12] {
            let mut tile = Vec::new();
            Encoder::new(Level::new(level)).encode_tile(&input, &mut tile);
            set.push(&tile, input.len(), input.clone());
        }
        for level in [0u8, 1, 6, 9, 12] {
            let tile = reference::Compressor::new(level).compress_tile(&input);
            set.push(&tile, input.len(), input.clone());
        }
    }
    let ok = vec![Ok(()); set.jobs.len()];
    for decoder in decoders(&context) {
        let failed = check_against_cpu(&decoder, &set, &ok, "clean tiles");
        assert_eq!(failed, 0);
    }
    assert_valid(&context);
}

/// Damaged tiles among good ones, in one dispatch: each fails where the CPU decoder fails (and
/// decodes to its bytes where it does not), and the good tiles around them are intact.
#[test]
fn hostile_tiles_fail_as_on_the_cpu_and_alone() {
    let Some(context) = context() else { return };
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut cpu = Decoder::new();
    let mut set = Set::new();
    let mut verdicts = Vec::new();
    let mut push = |set: &mut Set, tile: &[u8], dst_len: usize| {
        let mut out = vec![0u8; dst_len];
        let verdict = cpu.decode_tile(tile, &mut out);
        set.push(tile, dst_len, if verdict.is_ok() { out } else { Vec::new() });
        verdicts.push(verdict);
    };
    let sources: Vec<(Vec<u8>, Vec<u8>)> = inputs()
        .into_iter()
        .filter(|(_, input)| input.len() >= 1000)
        .flat_map(|(_, input)| {
            let mut ours = Vec::new();
            Encoder::new(Level::new(6)).encode_tile(&input, &mut ours);
            let theirs = reference::Compressor::new(9).compress_tile(&input);
            [(ours, input.clone()), (theirs, input)]
        })
        .collect();
    for (tile, input) in &sources {
        // A good tile first: its neighbours' faults must leave it intact.
        push(&mut set, tile, input.len());
        for _ in 0..6 {
            let mut bad = tile.clone();
            for _ in 0..1 + rng.usize(..3) {
                let bit = rng.usize(..8 * bad.len());
                bad[bit / 8] ^= 1 << (bit % 8);
            }
            push(&mut set, &bad, input.len());
        }
        for cut in [4usize, 128, tile.len() / 2, tile.len() - 4] {
            let cut = cut.min(tile.len()) & !3;
            push(&mut set, &tile[..cut], input.len());
        }
        // Wrong output sizes: one byte short and one over.
        push(&mut set, tile, input.len() - 1);
        push(&mut set, tile, (input.len() + 1).min(65536));
    }
    // Hand-made streams: BTYPE 3; a dynamic header whose first code length repeats; all
    // zeros; all ones; a tile not a multiple of 4; an empty tile.
    let mut bad_type = vec![0u8; 128];
    bad_type[0] = 0b111;
    push(&mut set, &bad_type, 100);
    let mut repeat_first = vec![0u8; 256];
    repeat_first[0] = 0b101;
    push(&mut set, &repeat_first, 100);
    push(&mut set, &[0u8; 512], 1000);
    push(&mut set, &[0xffu8; 512], 1000);
    push(&mut set, &[0u8; 130], 10);
    push(&mut set, &[], 10);
    let failures = verdicts.iter().filter(|v| v.is_err()).count();
    assert!(
        failures > set.jobs.len() / 3,
        "the damage made failures ({failures} of {})",
        set.jobs.len()
    );
    for decoder in decoders(&context) {
        let failed = check_against_cpu(&decoder, &set, &verdicts, "hostile tiles");
        assert_eq!(failed, failures);
    }
    assert_valid(&context);
}

#[test]
fn tile_lists_that_break_the_contract_are_refused() {
    let Some(context) = context() else { return };
    let decoder = GpuDecoder::new(&context, None).unwrap();
    let input = vec![0u8; 256];
    let job = |src_offset, src_len, dst_offset, dst_len| TileJob {
        src_offset,
        src_len,
        dst_offset,
        dst_len,
    };
    let cases = [
        (vec![], "no tiles"),
        (vec![job(2, 128, 0, 10)], "a misaligned input"),
        (vec![job(128, 132, 0, 10)], "input past the end"),
        (vec![job(0, 128, 60, 10)], "output past the end"),
        (vec![job(0, 128, 0, 10), job(128, 128, 8, 10)], "overlapping outputs"),
        (vec![job(u64::MAX - 3, 128, 0, 10)], "an input offset that wraps"),
    ];
    for (jobs, what) in cases {
        let err = DecodeRun::new(&decoder, &input, &jobs, 64).expect_err(what);
        assert_eq!(err.kind(), dsr_engine::ErrorKind::InvalidRequest, "{what}: {err}");
    }
    assert_valid(&context);
}
