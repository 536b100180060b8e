//! GPU destinations on a real Vulkan device (lavapipe in CI, with `DSR_REQUIRE_VULKAN=1` so a
//! missing device fails instead of skipping): byte-exact uploads read back, scale, the staging
//! budget under load, cancel storms with GPU work in flight, a caller's own device, ranges out
//! of bounds, and an injected device loss. Every test runs with the validation layer and fails
//! on any message it sends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dsr::gpu::{GpuConfig, GpuContext, StagingConfig, Transfers};
use dsr::{DecodeRoute, DeviceBuffer, ErrorKind, ExecutorConfig, HostBuffer, IoConfig, Request, RequestStatus};

use crate::common::*;

/// A validating context on the default device, or `None` (with the reason on stderr) when no
/// Vulkan device is here, unless `DSR_REQUIRE_VULKAN=1` makes that a failure.
fn context() -> Option<Arc<GpuContext>> {
    let config = GpuConfig {
        validation: true,
        ..GpuConfig::default()
    };
    match GpuContext::new(&config) {
        Ok(context) => {
            static WARM: std::sync::Once = std::sync::Once::new();
            WARM.call_once(|| warm_the_gpu_decoder(&context));
            Some(context)
        }
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

/// Decodes one small stream on the GPU, hashes checked, with all the time it needs. lavapipe
/// compiles a shader with LLVM at its first dispatch, which for the decoder took 30–50 s on the
/// 2-core development VM while Mesa's shader cache was empty (a fresh machine, a CI run):
/// longer than any one test's patience. Done once per test process, before the first test gets
/// its context; later devices find the compiled shaders in Mesa's cache.
fn warm_the_gpu_decoder(context: &Arc<GpuContext>) {
    let (executor, _) = gpu_executor(context, 2, StagingConfig::default());
    let text: Vec<u8> = (0..100_000u32)
        .map(|i| b"warm up the decoder "[(i % 20) as usize])
        .collect();
    let packed = dsr_gdeflate::compress(&text, dsr_gdeflate::Level::new(6)).unwrap();
    let hashes: Vec<u64> = text.chunks(65536).map(dsr::stages::tile_hash).collect();
    let gpu = dsr::gpu::allocate_buffer(context, 1 << 20).unwrap();
    let mut batch = executor.batch();
    batch
        .push(
            Request::memory_to_device(packed.clone(), 0, packed.len() as u64, &gpu, 0)
                .gdeflate(text.len() as u64)
                .verify_tiles(Arc::from(hashes))
                .decode_on(DecodeRoute::Gpu),
        )
        .unwrap();
    let report = executor
        .submit(batch)
        .unwrap()
        .wait_timeout(Duration::from_secs(600))
        .expect("the first GPU decode finishes");
    assert!(report.all_done(), "{report:?}");
}

/// Fails the test on any message the validation layer sent.
fn assert_valid(context: &GpuContext) {
    let messages = context.validation_messages();
    assert!(messages.is_empty(), "validation messages:\n{}", messages.join("\n"));
}

fn gpu_executor(context: &Arc<GpuContext>, workers: usize, staging: StagingConfig) -> (dsr::Executor, Arc<Transfers>) {
    let config = ExecutorConfig {
        workers,
        ..ExecutorConfig::default()
    };
    let (executor, _, transfers) =
        dsr::executor_with_gpu(config, IoConfig::default(), context, staging).expect("a GPU executor starts");
    (executor, transfers)
}

/// A builder with the stock stages and the GPU's, its decoder configured by `decode`, not yet
/// built (callers adjust its lowering).
fn gpu_builder(
    context: &Arc<GpuContext>,
    config: ExecutorConfig,
    decode: dsr::gpu::GpuDecodeConfig,
) -> dsr::ExecutorBuilder {
    let (builder, _) =
        dsr::stages::install_stages(dsr::Executor::builder().config(config), IoConfig::default()).unwrap();
    dsr::gpu::install_gpu_with(builder, context, StagingConfig::default(), decode)
        .unwrap()
        .0
}

/// Every staging slot is back in the budget.
fn assert_staging_back(transfers: &Transfers) {
    assert_eq!(
        transfers.free_slots(),
        transfers.staging_shape().0,
        "all staging came back"
    );
}

/// Uploads `bytes` into `buffer` at `at` through the executor, and waits.
fn upload(executor: &dsr::Executor, bytes: &[u8], buffer: &DeviceBuffer, at: u64) {
    let mut batch = executor.batch();
    batch
        .push(Request::memory_to_device(
            Arc::from(bytes),
            0,
            bytes.len() as u64,
            buffer,
            at,
        ))
        .unwrap();
    run_all(executor, batch);
}

/// Reads `len` bytes at `offset` of `buffer` back into host memory through the executor (a
/// `Copy` node from the GPU buffer into a host destination).
fn read_back(executor: &dsr::Executor, buffer: &DeviceBuffer, offset: u64, len: u64) -> Vec<u8> {
    // Requests of 256 KiB: a read-back piece must fit the staging budget of the smallest test.
    const PIECE: u64 = 256 << 10;
    let mut host = HostBuffer::new(len as usize);
    let mut batch = executor.batch();
    for at in (0..len).step_by(PIECE as usize) {
        let this = PIECE.min(len - at);
        batch
            .push(Request::device_to_host(buffer, offset + at, this, &host, at))
            .expect("a read-back request");
    }
    let report = executor
        .submit(batch)
        .unwrap()
        .wait_timeout(PATIENCE)
        .expect("read-back drains");
    assert!(report.all_done(), "read back: {report:?}");
    host.as_slice().expect("the batch retired").to_vec()
}

#[test]
fn files_land_byte_exact_in_gpu_buffers_at_every_size_and_offset() {
    let Some(context) = context() else { return };
    let data = pattern((3 << 20) + 777, 41);
    let file = temp_file(&data);
    let (executor, transfers) = gpu_executor(&context, 2, StagingConfig::default());
    let gpu = dsr::gpu::allocate_buffer(&context, 16 << 20).unwrap();
    // (file offset, length, buffer offset): unaligned everywhere, across slot and chunk edges.
    let cases: &[(u64, u64, u64)] = &[
        (0, 1, 0),
        (1, 4095, 5),
        (4096, 4096, 8192),
        (13, (1 << 20) + 3, 20_000),
        (777, 3 << 20, (5 << 20) + 1),
        (0, 0, 9 << 20),
    ];
    let mut batch = executor.batch();
    for &(offset, len, at) in cases {
        batch
            .push(Request::file_to_device(file.path(), offset, len, &gpu, at))
            .unwrap();
    }
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{report:?}");
    for &(offset, len, at) in cases {
        let got = read_back(&executor, &gpu, at, len);
        assert!(
            got == data[offset as usize..(offset + len) as usize],
            "file bytes {offset}+{len} at GPU offset {at}"
        );
    }
    assert!(transfers.stats().submits.load(Ordering::Relaxed) >= 1);
    if context.host_import() {
        assert!(
            transfers.stats().imported.load(Ordering::Relaxed) >= 3 << 20,
            "large reads are uploaded straight from imported scratch"
        );
    } else {
        eprintln!("note: this device cannot import host memory; every upload was staged");
    }
    assert_staging_back(&transfers);
    drop(executor);
    assert_valid(&context);
}

#[test]
fn memory_and_compressed_assets_reach_the_gpu() {
    let Some(context) = context() else { return };
    let (executor, _) = gpu_executor(&context, 2, StagingConfig::default());
    let plain = pattern(200_001, 3);
    let text: Vec<u8> = (0..300_000u32)
        .map(|i| b"dsr streams assets "[(i % 19) as usize])
        .collect();
    let packed = dsr_gdeflate::compress(&text, dsr_gdeflate::Level::DEFAULT).unwrap();
    let packed_file = temp_file(&packed);
    let gpu = dsr::gpu::allocate_buffer(&context, 1 << 20).unwrap();
    let mut batch = executor.batch();
    batch
        .push(Request::memory_to_device(
            Arc::from(plain.clone()),
            0,
            plain.len() as u64,
            &gpu,
            3,
        ))
        .unwrap();
    batch
        .push(
            Request::file_to_device(packed_file.path(), 0, packed.len() as u64, &gpu, 300_000)
                .gdeflate(text.len() as u64),
        )
        .unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{report:?}");
    assert!(read_back(&executor, &gpu, 3, plain.len() as u64) == plain);
    assert!(read_back(&executor, &gpu, 300_000, text.len() as u64) == text);
    drop(executor);
    assert_valid(&context);
}

/// GDeflate assets decoded by the GPU decoder straight into GPU buffers (the `DecompressGpu`
/// route), files and memory, many tiles and a partial last one, beside the same asset on the
/// automatic route and a damaged stream that fails alone, naming its tile; then tile hashes
/// checked on the GPU route, a wrong one failing its request with the tile named.
#[test]
fn compressed_assets_decode_on_the_gpu_and_a_damaged_one_fails_alone() {
    let Some(context) = context() else { return };
    let (executor, _) = gpu_executor(&context, 2, StagingConfig::default());
    let text: Vec<u8> = (0..700_001u32)
        .map(|i| b"the decoder runs on the GPU; "[(i % 29) as usize] ^ (i % 97 == 0) as u8)
        .collect();
    let packed = dsr_gdeflate::compress(&text, dsr_gdeflate::Level::new(6)).unwrap();
    let packed_file = temp_file(&packed);
    let mut damaged = packed.clone();
    let middle = damaged.len() / 2;
    damaged[middle..middle + 64].fill(0xff);
    let gpu = dsr::gpu::allocate_buffer(&context, 4 << 20).unwrap();
    let requests = [
        Request::file_to_device(packed_file.path(), 0, packed.len() as u64, &gpu, 0)
            .gdeflate(text.len() as u64)
            .decode_on(DecodeRoute::Gpu),
        Request::memory_to_device(packed.clone(), 0, packed.len() as u64, &gpu, 1 << 20)
            .gdeflate(text.len() as u64)
            .decode_on(DecodeRoute::Gpu),
        Request::memory_to_device(damaged, 0, packed.len() as u64, &gpu, 2 << 20)
            .gdeflate(text.len() as u64)
            .decode_on(DecodeRoute::Gpu),
        Request::memory_to_device(packed.clone(), 0, packed.len() as u64, &gpu, 3 << 20).gdeflate(text.len() as u64),
    ];
    let mut batch = executor.batch();
    for request in requests {
        batch.push(request).unwrap();
    }
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(matches!(report.requests[0].status, RequestStatus::Done), "{report:?}");
    assert!(matches!(report.requests[1].status, RequestStatus::Done), "{report:?}");
    let RequestStatus::Failed(err) = &report.requests[2].status else {
        panic!("the damaged stream decoded: {report:?}")
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("GDeflate tile"), "names the tile: {err}");
    assert!(matches!(report.requests[3].status, RequestStatus::Done), "{report:?}");
    for at in [0, 1 << 20, 3 << 20] {
        assert!(read_back(&executor, &gpu, at, text.len() as u64) == text, "at {at}");
    }

    // Tile hashes are checked on the GPU route too: the right ones pass, one wrong hash fails
    // its request naming the tile, whichever source the stream comes from.
    let hashes: Vec<u64> = text.chunks(65536).map(dsr::stages::tile_hash).collect();
    let mut wrong = hashes.clone();
    wrong[7] ^= 1;
    let mut batch = executor.batch();
    for (at, hashes) in [(0, &hashes), (1 << 20, &wrong)] {
        batch
            .push(
                Request::file_to_device(packed_file.path(), 0, packed.len() as u64, &gpu, at)
                    .gdeflate(text.len() as u64)
                    .verify_tiles(Arc::from(hashes.clone()))
                    .decode_on(DecodeRoute::Gpu),
            )
            .unwrap();
    }
    batch
        .push(
            Request::memory_to_device(packed.clone(), 0, packed.len() as u64, &gpu, 2 << 20)
                .gdeflate(text.len() as u64)
                .verify_tiles(Arc::from(wrong))
                .decode_on(DecodeRoute::Gpu),
        )
        .unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(matches!(report.requests[0].status, RequestStatus::Done), "{report:?}");
    for failed in &report.requests[1..] {
        let RequestStatus::Failed(err) = &failed.status else {
            panic!("a wrong tile hash passed: {report:?}")
        };
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert_eq!(err.tile(), Some(7), "names the tile: {err}");
    }
    assert!(read_back(&executor, &gpu, 0, text.len() as u64) == text);
    drop(executor);
    assert_valid(&context);
}

/// A stream read in small pieces decodes on the GPU piece by piece (each piece's tiles as soon as
/// the reads before it are in), many requests' pieces sharing submissions; a stream cut short and
/// one whose tile table is out of order fail, naming the problem, and their neighbours land; in
/// both ways compressed bytes can reach the shader (copied to the device, or read where they lie).
#[test]
fn streams_read_in_pieces_decode_on_the_gpu_as_they_arrive() {
    let Some(context) = context() else { return };
    for input in [dsr::gpu::DecodeInput::Copy, dsr::gpu::DecodeInput::Direct] {
        pieces_decode_as_they_arrive(&context, input);
    }
    assert_valid(&context);
}

fn pieces_decode_as_they_arrive(context: &Arc<GpuContext>, input: dsr::gpu::DecodeInput) {
    let config = ExecutorConfig {
        workers: 2,
        lowering: dsr::LoweringConfig {
            read_chunk: 40_000,
            ..dsr::LoweringConfig::default()
        },
        ..ExecutorConfig::default()
    };
    let decode = dsr::gpu::GpuDecodeConfig {
        input,
        ..dsr::gpu::GpuDecodeConfig::default()
    };
    let executor = gpu_builder(context, config, decode).build().unwrap();
    let mut rng = fastrand::Rng::with_seed(41);
    // Text with random runs: tiles of very different compressed sizes.
    let data: Vec<u8> = (0..(3 << 20) + 777)
        .map(|i: usize| {
            if (i / 5000).is_multiple_of(3) {
                rng.u8(..)
            } else {
                b"pieces of a stream "[i % 19]
            }
        })
        .collect();
    let packed = dsr_gdeflate::compress(&data, dsr_gdeflate::Level::new(6)).unwrap();
    let whole = temp_file(&packed);
    let cut = temp_file(&packed[..packed.len() - 100]);
    let mut shuffled = packed.clone();
    shuffled[8 + 4 * 20..8 + 4 * 21].copy_from_slice(&1u32.to_le_bytes());
    let shuffled = temp_file(&shuffled);
    let small: Vec<_> = (0..12)
        .map(|i| {
            let asset = &data[i * 100_000..i * 100_000 + 70_000 + i * 3000];
            (
                asset,
                temp_file(&dsr_gdeflate::compress(asset, dsr_gdeflate::Level::new(4)).unwrap()),
            )
        })
        .collect();
    let gpu = dsr::gpu::allocate_buffer(context, 16 << 20).unwrap();
    let len = data.len() as u64;
    let file = |path: &std::path::Path, bytes: u64, at: u64| {
        Request::file_to_device(path, 0, bytes, &gpu, at)
            .gdeflate(len)
            .decode_on(DecodeRoute::Gpu)
    };
    let mut batch = executor.batch();
    batch.push(file(whole.path(), packed.len() as u64, 0)).unwrap();
    batch
        .push(file(cut.path(), packed.len() as u64 - 100, 4 << 20))
        .unwrap();
    batch.push(file(shuffled.path(), packed.len() as u64, 8 << 20)).unwrap();
    for (i, (asset, path)) in small.iter().enumerate() {
        let bytes = std::fs::metadata(path.path()).unwrap().len();
        batch
            .push(
                Request::file_to_device(path.path(), 0, bytes, &gpu, (12 << 20) + i as u64 * 65536 * 2)
                    .gdeflate(asset.len() as u64)
                    .decode_on(DecodeRoute::Gpu),
            )
            .unwrap();
    }
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(matches!(report.requests[0].status, RequestStatus::Done), "{report:?}");
    for (i, what) in [(1, "cut short"), (2, "table out of order")] {
        let RequestStatus::Failed(err) = &report.requests[i].status else {
            panic!("the stream {what} decoded: {:?}", report.requests[i])
        };
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
        assert!(err.to_string().contains("tile table"), "{what}: {err}");
    }
    assert!(read_back(&executor, &gpu, 0, len) == data, "the whole stream");
    for (i, (asset, _)) in small.iter().enumerate() {
        assert_eq!(report.requests[3 + i].status, RequestStatus::Done, "small asset {i}");
        let at = (12 << 20) + i as u64 * 65536 * 2;
        assert!(
            read_back(&executor, &gpu, at, asset.len() as u64) == *asset,
            "small asset {i}"
        );
    }
}

/// An archive loaded into GPU memory is checked against its tile hashes on every route: a raw
/// asset in scratch before its upload, a compressed one after decoding (on the GPU in the
/// decode's own submission, or on the CPU). A flipped byte fails its asset, naming the tile; the
/// others land; without verification the raw asset loads as stored.
#[test]
fn archives_loaded_into_gpu_memory_are_checked_against_their_tile_hashes() {
    let Some(context) = context() else { return };
    let (executor, _) = gpu_executor(&context, 2, StagingConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("game.dsrpak");
    let mut rng = fastrand::Rng::with_seed(77);
    let noise: Vec<u8> = (0..300_000).map(|_| rng.u8(..)).collect();
    let text: Vec<u8> = (0..400_000u32)
        .map(|i| b"spawn(player, level) "[(i % 21) as usize])
        .collect();
    let mut writer = dsr::archive::ArchiveWriter::create(&path, dsr_gdeflate::Level::new(4)).unwrap();
    for (name, bytes) in [("noise", &noise), ("text", &text), ("noise2", &noise), ("text2", &text)] {
        writer.add(name, bytes).unwrap();
    }
    writer.finish().unwrap();
    // Damage the second copy of each: a byte in the third tile of the raw one; in the compressed
    // one, the first byte from its middle on whose flip changes what it decodes to (some bits
    // of a stream are padding).
    let archive = dsr::archive::Archive::open(&path).unwrap();
    let (noise2, text2) = (archive.find("noise2").unwrap(), archive.find("text2").unwrap());
    assert_eq!(noise2.codec, dsr::archive::Codec::Raw);
    assert_eq!(text2.codec, dsr::archive::Codec::GDeflate);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(noise2.offset + 2 * 65536 + 17) as usize] ^= 0x40;
    let stream = (text2.offset as usize)..(text2.offset + text2.stored_len) as usize;
    let flip = (stream.start + stream.len() / 2..stream.end)
        .find(|&at| {
            let mut damaged = bytes[stream.clone()].to_vec();
            damaged[at - stream.start] ^= 0x08;
            let mut out = vec![0u8; text.len()];
            dsr_gdeflate::decompress(&damaged, &mut out).map_or(true, |()| out != text)
        })
        .expect("some flip changes the stream");
    bytes[flip] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let archive = dsr::archive::Archive::open(&path).unwrap();
    let gpu = dsr::gpu::allocate_buffer(&context, 2 << 20).unwrap();
    let host = HostBuffer::new(0);
    let assets: Vec<_> = ["noise", "text", "noise2", "text2"]
        .iter()
        .map(|n| archive.find(n).unwrap())
        .collect();
    let slots = [0u64, 512 << 10, 1 << 20, 1536 << 10];
    for route in [DecodeRoute::Gpu, DecodeRoute::Cpu] {
        for verify in [true, false] {
            let mut batch = executor.batch();
            for (request, &slot) in dsr::archive::requests(&archive, &assets, &host, &slots, verify).zip(&slots) {
                batch.push(request.on_device(&gpu, slot).decode_on(route)).unwrap();
            }
            let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
            let what = format!("{route:?}, verify {verify}");
            assert_eq!(report.requests[0].status, RequestStatus::Done, "{what}");
            assert_eq!(report.requests[1].status, RequestStatus::Done, "{what}");
            assert!(read_back(&executor, &gpu, 0, noise.len() as u64) == noise, "{what}");
            assert!(
                read_back(&executor, &gpu, 512 << 10, text.len() as u64) == text,
                "{what}"
            );
            match &report.requests[2].status {
                RequestStatus::Failed(err) if verify => {
                    assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
                    assert_eq!(err.tile(), Some(2), "{what}: {err}");
                }
                RequestStatus::Done if !verify => {}
                other => panic!("{what}: the damaged raw asset ended {other:?}"),
            }
            if verify {
                let RequestStatus::Failed(err) = &report.requests[3].status else {
                    panic!("{what}: the damaged compressed asset loaded")
                };
                assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
            }
        }
    }
    drop(executor);
    assert_valid(&context);
}

/// The driver's `VK_NV_memory_decompression` as the route's decoder (forced, where the device
/// has it): hashed archive tiles decode byte-exact through it, three rounds, and the driver's
/// decoder really ran. It is given intact tiles only: on an H100 (driver 580.159.04) garbage
/// tiles lost the device and zeroed ones hung it (docs/benchmarks.md), which is why dsr never
/// chooses it by default. `DSR_NV_DAMAGE=flipped,garbage,zeros` adds damaged assets, to probe a
/// driver (each must fail by its hash, and the device live on). Skipped, saying so, on devices
/// without the extension (lavapipe); `DSR_REQUIRE_NV=1` makes that a failure.
#[test]
fn the_drivers_decoder_decodes_hashed_tiles_when_forced() {
    let Some(context) = context() else { return };
    if !context.nv_decompression() {
        assert!(
            std::env::var("DSR_REQUIRE_NV").as_deref() != Ok("1"),
            "DSR_REQUIRE_NV=1 but the device has no VK_NV_memory_decompression"
        );
        eprintln!("skipped: the device has no VK_NV_memory_decompression");
        return;
    }
    let decode = dsr::gpu::GpuDecodeConfig {
        decoder: Some(dsr::gpu::DecodeBackend::Nv),
        ..dsr::gpu::GpuDecodeConfig::default()
    };
    let two = ExecutorConfig {
        workers: 2,
        ..ExecutorConfig::default()
    };
    let executor = gpu_builder(&context, two, decode).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("game.dsrpak");
    let text: Vec<u8> = (0..300_000u32)
        .map(|i| b"spawn(player, level) "[(i % 21) as usize])
        .collect();
    let names = ["good", "flipped", "garbage", "zeros", "good2"];
    let mut writer = dsr::archive::ArchiveWriter::create(&path, dsr_gdeflate::Level::new(4)).unwrap();
    for name in names {
        writer.add(name, &text).unwrap();
    }
    writer.finish().unwrap();
    let archive = dsr::archive::Archive::open(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    // `DSR_NV_DAMAGE=flipped,zeros` (say) damages only those, to find which the driver survives.
    let chosen = std::env::var("DSR_NV_DAMAGE").unwrap_or_default();
    let damaged = |name: &str| chosen.split(',').any(|c| c == name);
    for (name, damage) in [("flipped", 0), ("garbage", 1), ("zeros", 2)] {
        if !damaged(name) {
            continue;
        }
        let asset = archive.find(name).unwrap();
        let stream = asset.offset as usize..(asset.offset + asset.stored_len) as usize;
        let tiles = dsr_gdeflate::TileStream::parse(&bytes[stream.clone()]).unwrap();
        let data = stream.start + tiles.tile_span(0).unwrap().0.start..stream.end;
        match damage {
            0 => bytes[data.start + data.len() / 2] ^= 0x10,
            1 => bytes[data].iter_mut().for_each(|b| *b = rng.u8(..)),
            _ => bytes[data].fill(0),
        }
    }
    std::fs::write(&path, &bytes).unwrap();
    let archive = dsr::archive::Archive::open(&path).unwrap();
    let assets: Vec<_> = names.iter().map(|n| archive.find(n).unwrap()).collect();
    let gpu = dsr::gpu::allocate_buffer(&context, 2 << 20).unwrap();
    let host = HostBuffer::new(0);
    let slots: Vec<u64> = (0..names.len() as u64).map(|i| i * (384 << 10)).collect();
    let before = dsr::gpu::decode_stage::submissions().1;
    for round in 0..3 {
        let mut batch = executor.batch();
        for (request, &slot) in dsr::archive::requests(&archive, &assets, &host, &slots, true).zip(&slots) {
            batch
                .push(request.on_device(&gpu, slot).decode_on(DecodeRoute::Gpu))
                .unwrap();
        }
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        for (i, name) in names.iter().enumerate() {
            let what = format!("round {round}, {name}");
            match &report.requests[i].status {
                RequestStatus::Done if !damaged(name) => {
                    assert!(
                        read_back(&executor, &gpu, slots[i], text.len() as u64) == text,
                        "{what}"
                    );
                }
                RequestStatus::Failed(err) if damaged(name) => {
                    assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
                    assert!(err.tile().is_some(), "{what}: {err}");
                }
                other => panic!("{what}: ended {other:?}"),
            }
        }
        assert!(!context.is_lost(), "round {round}: the device was lost");
    }
    assert!(
        dsr::gpu::decode_stage::submissions().1 > before,
        "the driver's decoder ran no submission"
    );
    drop(executor);
    assert_valid(&context);
}

/// `DecodeRoute::Auto` weighs the two decoders by their backlogs and measured rates: with
/// nothing measured it sends most of a batch to the GPU and a share to the CPU workers, learns
/// both rates from the batch, and every asset lands byte-exact whichever way it went. (Run here
/// with the size threshold that keeps lavapipe off the GPU route lifted.)
#[test]
fn auto_splits_work_between_cpu_and_gpu_decoders_and_learns_their_rates() {
    let Some(context) = context() else { return };
    let two = ExecutorConfig {
        workers: 2,
        ..ExecutorConfig::default()
    };
    let builder = gpu_builder(&context, two, dsr::gpu::GpuDecodeConfig::default());
    let lowering = dsr::LoweringConfig {
        gpu_decode_min_bytes: 0,
        ..builder.configured().lowering
    };
    let executor = builder.lowering(lowering).build().unwrap();
    let text: Vec<u8> = (0..200_000u32)
        .map(|i| b"balanced between two decoders "[(i % 30) as usize] ^ (i % 89 == 0) as u8)
        .collect();
    let packed = dsr_gdeflate::compress(&text, dsr_gdeflate::Level::new(4)).unwrap();
    let packed_file = temp_file(&packed);
    let assets = 40u64;
    let slot = 256 << 10;
    let gpu = dsr::gpu::allocate_buffer(&context, assets * slot).unwrap();
    let balance = executor.decode_balance().expect("a GPU decoder is installed").clone();
    assert_eq!(balance.rates(), (None, None));
    // A few batches at most until both rates are known.
    for round in 0..8 {
        if round >= 2 && balance.rates().0.is_some() && balance.rates().1.is_some() {
            break;
        }
        let mut batch = executor.batch();
        for i in 0..assets {
            let request = Request::file_to_device(packed_file.path(), 0, packed.len() as u64, &gpu, i * slot)
                .gdeflate(text.len() as u64);
            batch.push(request).unwrap();
        }
        let compiled = batch.compile().unwrap();
        let count = |kind| compiled.graph().nodes().filter(|n| n.kind == kind).count();
        let (cpu, gpu_nodes) = (count(dsr::NodeKind::DecompressCpu), count(dsr::NodeKind::DecompressGpu));
        if round == 0 {
            assert!(
                cpu > 0 && gpu_nodes > 0,
                "round 0 split: {cpu} CPU, {gpu_nodes} GPU decode nodes"
            );
        }
        let report = executor
            .submit_compiled(compiled)
            .unwrap()
            .wait_timeout(PATIENCE)
            .expect("drains");
        assert!(
            report.requests.iter().all(|r| r.status == RequestStatus::Done),
            "{report:?}"
        );
        for i in 0..assets {
            assert!(
                read_back(&executor, &gpu, i * slot, text.len() as u64) == text,
                "round {round}, asset {i}"
            );
        }
    }
    let (cpu_rate, gpu_rate) = balance.rates();
    assert!(cpu_rate.is_some_and(|r| r > 0.0), "{cpu_rate:?}");
    assert!(gpu_rate.is_some_and(|r| r > 0.0), "{gpu_rate:?}");
    drop(executor);
    assert_valid(&context);
}

/// A timeline trace of GPU work: each submission once, on its queue's track (uploads on the
/// transfer queue, decodes on the compute queue), placed on the CPU's clock where the device's
/// is calibrated (lavapipe's and NVIDIA's are), inside the run, after the node that handed it
/// over was deferred.
#[test]
fn a_trace_places_gpu_submissions_on_their_queues_on_the_cpu_clock() {
    let Some(context) = context() else { return };
    // The trace's times count from the recorder's start.
    let origin = std::time::Instant::now();
    let recorder = Arc::new(dsr::viz::TraceRecorder::new(2));
    let config = ExecutorConfig {
        workers: 2,
        observer: Some(recorder.clone()),
        ..ExecutorConfig::default()
    };
    let (executor, _, _) =
        dsr::executor_with_gpu(config, IoConfig::default(), &context, StagingConfig::default()).unwrap();
    let data = pattern(700_000, 9);
    let packed = dsr_gdeflate::compress(&data, dsr_gdeflate::Level::new(4)).unwrap();
    let (file, packed_file) = (temp_file(&data), temp_file(&packed));
    let gpu = dsr::gpu::allocate_buffer(&context, 2 << 20).unwrap();
    let mut batch = executor.batch();
    batch
        .push(Request::file_to_device(file.path(), 0, data.len() as u64, &gpu, 0))
        .unwrap();
    batch
        .push(
            Request::file_to_device(packed_file.path(), 0, packed.len() as u64, &gpu, 1 << 20)
                .gdeflate(data.len() as u64)
                .decode_on(DecodeRoute::Gpu),
        )
        .unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    let run_us = origin.elapsed().as_secs_f64() * 1e6;
    assert!(
        report.requests.iter().all(|r| r.status == RequestStatus::Done),
        "{report:?}"
    );
    let doc: serde_json::Value = serde_json::from_str(&recorder.chrome_json(|_, _| None).to_string()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let gpu_spans: Vec<_> = events.iter().filter(|e| e["ph"] == "X" && e["pid"] == 2).collect();
    let on = |queue: &str| gpu_spans.iter().filter(|e| e["args"]["queue"] == queue).count();
    assert!(on("transfer") >= 1, "uploads on the transfer queue: {gpu_spans:?}");
    assert_eq!(on("compute"), 1, "one decode submission: {gpu_spans:?}");
    let first_deferral = events
        .iter()
        .filter(|e| e["ph"] == "b")
        .filter_map(|e| e["ts"].as_f64())
        .fold(f64::MAX, f64::min);
    for span in &gpu_spans {
        assert_eq!(span["args"]["calibrated"], context.calibrated_timestamps(), "{span}");
        let (ts, dur) = (span["ts"].as_f64().unwrap(), span["dur"].as_f64().unwrap());
        assert!(
            dur >= 0.0 && ts >= 0.0 && ts + dur <= run_us + 1e3,
            "{span} outside the run of {run_us} us"
        );
        if context.calibrated_timestamps() {
            // Allow the calibration's error (a few microseconds) and the timer's resolution.
            assert!(
                ts + 50.0 >= first_deferral,
                "{span} starts before anything was handed to the GPU"
            );
        }
        let tid = if span["args"]["queue"] == "transfer" { 0 } else { 1 };
        assert_eq!(span["tid"], tid, "{span}");
    }
    // The upload counter rises with the upload and ends at zero.
    let uploading: Vec<i64> = events
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "bytes uploading to the GPU")
        .map(|e| e["args"]["bytes"].as_i64().unwrap())
        .collect();
    assert_eq!(uploading.last(), Some(&0), "{uploading:?}");
    assert!(
        uploading.iter().max() >= Some(&(data.len() as i64 / 2)),
        "{uploading:?}"
    );
    drop(executor);
    assert_valid(&context);
}

#[test]
fn gpu_copies_and_read_backs_land_byte_exact() {
    let Some(context) = context() else { return };
    let (executor, transfers) = gpu_executor(&context, 2, StagingConfig::default());
    let data = pattern((2 << 20) + 4321, 17);
    let a = dsr::gpu::allocate_buffer(&context, 4 << 20).unwrap();
    let b = dsr::gpu::allocate_buffer(&context, 4 << 20).unwrap();
    upload(&executor, &data, &a, 7);
    // GPU to GPU: another buffer at an odd offset, and a disjoint range of the same buffer.
    let mut batch = executor.batch();
    batch
        .push(Request::device_to_device(&a, 7, data.len() as u64, &b, 1001))
        .unwrap();
    batch.push(Request::device_to_device(&a, 7, 5000, &a, 3 << 20)).unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{report:?}");
    assert!(read_back(&executor, &b, 1001, data.len() as u64) == data);
    assert!(read_back(&executor, &a, 3 << 20, 5000) == data[..5000]);
    assert!(read_back(&executor, &b, 1002, 1) == data[1..2], "a one-byte read-back");
    let stats = transfers.stats();
    assert_eq!(stats.copied.load(Ordering::Relaxed), data.len() as u64 + 5000);
    assert_eq!(stats.read_back.load(Ordering::Relaxed), data.len() as u64 + 5001);
    assert_staging_back(&transfers);
    drop(executor);
    assert_valid(&context);
}

#[test]
fn an_upload_copy_read_back_chain_waits_on_the_gpu_not_the_cpu() {
    let Some(context) = context() else { return };
    let counting = Arc::new(Counting::default());
    let config = ExecutorConfig {
        workers: 2,
        observer: Some(counting.clone()),
        ..ExecutorConfig::default()
    };
    let (executor, _, transfers) =
        dsr::executor_with_gpu(config, IoConfig::default(), &context, StagingConfig::default()).unwrap();
    let a = dsr::gpu::allocate_buffer(&context, 1 << 20).unwrap();
    let b = dsr::gpu::allocate_buffer(&context, 1 << 20).unwrap();
    let chains = 16u64;
    let len = 60_000u64;
    let data = pattern((chains * len) as usize, 23);
    let source: Arc<[u8]> = Arc::from(data.clone());
    let mut host = HostBuffer::new(data.len());
    let mut batch = executor.batch();
    let mut links = Vec::new();
    for i in 0..chains {
        let at = i * len;
        // Three requests, one node each, joined by GPU edges: upload → copy → read-back.
        let first = batch.graph_mut().node_count();
        batch
            .push(Request::memory_to_device(source.clone(), at, len, &a, at))
            .unwrap();
        batch.push(Request::device_to_device(&a, at, len, &b, at)).unwrap();
        batch.push(Request::device_to_host(&b, at, len, &host, at)).unwrap();
        let [upload, copy, back] = [0, 1, 2].map(|k| dsr::engine::NodeId::from_index(first + k));
        let graph = batch.graph_mut();
        graph.add_edge(upload, copy, dsr::engine::EdgeKind::Gpu);
        graph.add_edge(copy, back, dsr::engine::EdgeKind::Gpu);
        links.push([upload, copy, back]);
    }
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{report:?}");
    assert!(host.as_slice().unwrap() == data, "the chain's bytes came back intact");
    // Every link was submitted behind its predecessor's timeline value.
    let submitted = counting.submitted.lock().unwrap();
    for chain in &links {
        let values: Vec<u64> = chain.iter().map(|&n| submitted[&(batch.id(), n)].1).collect();
        assert!(values[0] < values[1] && values[1] < values[2], "{values:?}");
    }
    drop(submitted);
    assert!(
        transfers.stats().gpu_waits.load(Ordering::Relaxed) >= 2,
        "submissions waited on the GPU for their predecessors"
    );
    counting.assert_each_finished_once(batch.id(), batch.graph().node_count());
    drop(executor);
    assert_valid(&context);
}

#[test]
fn stress_thousands_of_uploads_in_one_batch_within_a_small_staging_budget() {
    let Some(context) = context() else { return };
    // Eight 64 KiB slots for 3000 requests: most wait for staging.
    let staging = StagingConfig {
        budget: 8 << 16,
        slot: 1 << 16,
    };
    let (executor, transfers) = gpu_executor(&context, 2, staging);
    let data = pattern(3000 * 700, 9);
    let file = temp_file(&data);
    let gpu = dsr::gpu::allocate_buffer(&context, data.len() as u64).unwrap();
    let source: Arc<[u8]> = Arc::from(data.clone());
    let mut batch = executor.batch();
    for i in 0..3000u64 {
        let (at, len) = (i * 700, 700);
        let request = if i % 2 == 0 {
            Request::file_to_device(file.path(), at, len, &gpu, at)
        } else {
            Request::memory_to_device(source.clone(), at, len, &gpu, at)
        };
        batch.push(request).unwrap();
    }
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{:?}", report.first_failure());
    assert!(read_back(&executor, &gpu, 0, data.len() as u64) == data);
    let stats = transfers.stats();
    let peak = stats.peak_slots.load(Ordering::Relaxed);
    assert!(peak <= 8, "staging held {peak} slots of a budget of 8");
    assert!(
        stats.waited.load(Ordering::Relaxed) > 0,
        "the budget applied back-pressure"
    );
    assert!(
        stats.submits.load(Ordering::Relaxed) < 3000,
        "copies are batched into fewer submissions than requests"
    );
    drop(executor);
    assert_valid(&context);
}

#[test]
fn stress_cancel_storms_with_gpu_work_in_flight_report_each_request_once() {
    let Some(context) = context() else { return };
    let counting = Arc::new(Counting::default());
    let staging = StagingConfig {
        budget: 4 << 16,
        slot: 1 << 16,
    };
    let config = ExecutorConfig {
        workers: 2,
        observer: Some(counting.clone()),
        ..ExecutorConfig::default()
    };
    let (executor, _, transfers) = dsr::executor_with_gpu(config, IoConfig::default(), &context, staging).unwrap();
    let data: Arc<[u8]> = Arc::from(pattern(1 << 20, 5));
    let file = temp_file(&data);
    let gpu = dsr::gpu::allocate_buffer(&context, 64 << 20).unwrap();
    let host = HostBuffer::new(40 * (200 << 10));
    let mut rng = fastrand::Rng::with_seed(77);
    let mut cancelled = 0;
    for round in 0..20u64 {
        let mut batch = executor.batch();
        for i in 0..40u64 {
            let at = ((round * 40 + i) % 64) << 20;
            let len = rng.u64(1..(200 << 10));
            let request = if i % 5 == 4 {
                // Read-backs hold staging while the GPU fills it: cancelled, they must not
                // give it back early either.
                Request::device_to_host(&gpu, at, len, &host, i * (200 << 10))
            } else if i % 3 == 0 {
                Request::memory_to_device(data.clone(), 0, len, &gpu, at)
            } else {
                Request::file_to_device(file.path(), 0, len, &gpu, at)
            };
            batch.push(request.tag(i % 4)).unwrap();
        }
        let batch = executor.submit(batch).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(rng.u64(0..3000)));
        let ticket = executor.cancel(rng.u64(0..4), 3);
        assert!(
            ticket.wait_timeout(PATIENCE),
            "round {round}: the cancellation is acknowledged"
        );
        let report = batch.wait_timeout(PATIENCE).expect("drains");
        assert_eq!(report.requests.len(), 40);
        assert!(report.first_failure().is_none(), "{:?}", report.first_failure());
        counting.assert_each_finished_once(batch.id(), batch.graph().node_count());
        cancelled += report.cancelled();
    }
    assert!(cancelled > 0, "the storm cancelled work");
    drop(executor);
    assert_eq!(
        transfers.free_slots(),
        transfers.staging_shape().0,
        "every slot came back, none early: the GPU finished before each was freed"
    );
    assert_valid(&context);
}

#[test]
fn the_validation_layer_is_listening() {
    let Some(context) = context() else { return };
    use ash::vk;
    // A zero-sized buffer is invalid usage: the layer must say so, or the other tests' silence
    // proves nothing.
    let info = vk::BufferCreateInfo::default()
        .size(0)
        .usage(vk::BufferUsageFlags::TRANSFER_DST);
    // SAFETY: deliberately invalid parameters for the layer to catch; whatever the driver makes
    // is destroyed at once.
    unsafe {
        if let Ok(buffer) = context.device().create_buffer(&info, None) {
            context.device().destroy_buffer(buffer, None);
        }
    }
    let messages = context.validation_messages();
    assert!(
        messages.iter().any(|m| m.contains("size")),
        "the layer reported nothing: {messages:?}"
    );
}

#[test]
fn a_destination_out_of_range_is_refused_before_any_gpu_work() {
    let Some(context) = context() else { return };
    let (executor, transfers) = gpu_executor(&context, 1, StagingConfig::default());
    let gpu = dsr::gpu::allocate_buffer(&context, 1000).unwrap();
    let mut batch = executor.batch();
    let err = batch
        .push(Request::memory_to_device(Arc::from(vec![1u8; 600]), 0, 600, &gpu, 500))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DestinationTooSmall, "{err}");
    let host = HostBuffer::new(200);
    let err = batch
        .push(Request::device_to_host(&gpu, 900, 200, &host, 0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    let err = batch
        .push(Request::device_to_device(&gpu, 0, 200, &gpu, 100))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OverlappingDestinations, "{err}");
    assert_eq!(transfers.stats().submits.load(Ordering::Relaxed), 0);
    drop(executor);
    assert_valid(&context);
}

/// An executor's GPU side goes with it: after file reads into GPU memory (through scratch blocks
/// the device imports), dropping the executor and the buffers leaves the context with its
/// creator alone. (Each scratch acquisition used to leak a reference to the import hooks, so
/// the context, its staging and the device's memory outlived every GPU executor; the soak's
/// RSS samples found it.)
#[test]
fn a_dropped_gpu_executor_lets_its_context_go() {
    let Some(context) = context() else { return };
    let data = pattern(3 << 20, 41);
    let file = temp_file(&data);
    {
        let (executor, transfers) = gpu_executor(&context, 2, StagingConfig::default());
        let buffer = dsr::gpu::allocate_buffer(&context, data.len() as u64).unwrap();
        for _ in 0..3 {
            let mut batch = executor.batch();
            let none = HostBuffer::new(0);
            batch
                .push(Request::file(file.path(), 0, data.len() as u64, &none, 0).on_device(&buffer, 0))
                .unwrap();
            let report = executor.submit(batch).unwrap().wait();
            assert!(report.all_done(), "{:?}", report.first_failure());
        }
        drop((executor, transfers, buffer));
    }
    assert_valid(&context);
    assert_eq!(
        Arc::strong_count(&context),
        1,
        "something of a dropped executor still holds the GPU context"
    );
}

#[test]
fn an_injected_device_loss_fails_only_the_gpu_requests() {
    let Some(context) = context() else { return };
    let (executor, _) = gpu_executor(&context, 2, StagingConfig::default());
    let gpu = dsr::gpu::allocate_buffer(&context, 1 << 20).unwrap();
    let host = dsr::HostBuffer::new(1 << 20);
    let bytes: Arc<[u8]> = Arc::from(pattern(4096, 1));
    context.inject_device_loss();
    let mut batch = executor.batch();
    batch
        .push(Request::memory_to_device(bytes.clone(), 0, 4096, &gpu, 0))
        .unwrap();
    batch.push(Request::memory(bytes.clone(), 0, 4096, &host, 0)).unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("the GPU request must fail: {:?}", report.requests[0].status)
    };
    assert_eq!(err.kind(), ErrorKind::Device, "{err}");
    assert!(err.to_string().contains("ERROR_DEVICE_LOST"), "{err}");
    assert_eq!(report.requests[1].status, RequestStatus::Done, "host requests go on");
    assert!(context.is_lost());
    // Later GPU requests fail at once; host ones still run.
    let mut batch = executor.batch();
    batch
        .push(Request::memory_to_device(bytes.clone(), 0, 4096, &gpu, 8192))
        .unwrap();
    batch.push(Request::memory(bytes, 0, 4096, &host, 8192)).unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(matches!(&report.requests[0].status, RequestStatus::Failed(e) if e.kind() == ErrorKind::Device));
    assert_eq!(report.requests[1].status, RequestStatus::Done);
}

/// A loss reported while earlier transfers still run (an injected loss fails the next
/// submission; lavapipe finishes the ones before it) must not hand their memory back under
/// them: file reads land in scratch blocks the device reads through imports, the budget is
/// small so released blocks are unmapped at once, and losses land at random moments. Before
/// the fix, lavapipe's thread read an unmapped block now and then (the soak's segfault).
#[test]
fn memory_the_gpu_still_reads_outlives_an_injected_loss() {
    let Some(first) = context() else { return };
    let data: Arc<[u8]> = Arc::from(pattern(8 << 20, 43));
    let mut context = Some(first);
    let mut rng = fastrand::Rng::with_seed(44);
    for round in 0..6 {
        let context = context
            .take()
            .unwrap_or_else(|| self::context().expect("the device was there a moment ago"));
        let config = ExecutorConfig {
            workers: 2,
            ..ExecutorConfig::default()
        };
        let (executor, _, _) =
            dsr::executor_with_gpu(config, IoConfig::default(), &context, StagingConfig::default()).unwrap();
        let gpu = dsr::gpu::allocate_buffer(&context, 12 * data.len() as u64).unwrap();
        let mut batch = executor.batch();
        for i in 0..12u64 {
            let at = i * data.len() as u64;
            batch
                .push(Request::memory_to_device(data.clone(), 0, data.len() as u64, &gpu, at))
                .unwrap();
        }
        let batch = executor.submit(batch).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(rng.u64(..3000)));
        context.inject_device_loss();
        let report = batch.wait_timeout(PATIENCE).expect("the batch retires after the loss");
        for r in &report.requests {
            match &r.status {
                RequestStatus::Done => {}
                RequestStatus::Failed(err) => assert_eq!(err.kind(), ErrorKind::Device, "round {round}: {err}"),
                other => panic!("round {round}: {other:?}"),
            }
        }
        // At once: the staging memory goes with the executor.
        drop((batch, executor, gpu));
    }
}

/// A device the test makes itself with ash, as a renderer (or Proton) would.
struct CallersDevice {
    entry: ash::Entry,
    instance: ash::Instance,
    physical_device: ash::vk::PhysicalDevice,
    device: ash::Device,
    family: u32,
    queue: ash::vk::Queue,
}

impl CallersDevice {
    fn new() -> Self {
        use ash::vk;
        // SAFETY: the test makes and destroys these objects in order, on one thread.
        unsafe {
            let entry = ash::Entry::load().expect("a Vulkan loader");
            let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
            let instance = entry
                .create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None)
                .unwrap();
            let physical_device = instance.enumerate_physical_devices().unwrap()[0];
            let family = instance
                .get_physical_device_queue_family_properties(physical_device)
                .iter()
                .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
                .unwrap() as u32;
            let priorities = [1.0];
            let queues = [vk::DeviceQueueCreateInfo::default()
                .queue_family_index(family)
                .queue_priorities(&priorities)];
            let mut v12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
            let create = vk::DeviceCreateInfo::default()
                .queue_create_infos(&queues)
                .push_next(&mut v12);
            let device = instance.create_device(physical_device, &create, None).unwrap();
            let queue = device.get_device_queue(family, 0);
            CallersDevice {
                entry,
                instance,
                physical_device,
                device,
                family,
                queue,
            }
        }
    }

    /// Fills a buffer on the GPU and waits: proof the device still works.
    fn still_works(&self) {
        use ash::vk;
        // SAFETY: objects made and destroyed here, after the fence says the GPU is done.
        unsafe {
            let d = &self.device;
            let buffer = d
                .create_buffer(
                    &vk::BufferCreateInfo::default()
                        .size(256)
                        .usage(vk::BufferUsageFlags::TRANSFER_DST),
                    None,
                )
                .unwrap();
            let req = d.get_buffer_memory_requirements(buffer);
            let memory = d
                .allocate_memory(
                    &vk::MemoryAllocateInfo::default()
                        .allocation_size(req.size)
                        .memory_type_index(req.memory_type_bits.trailing_zeros()),
                    None,
                )
                .unwrap();
            d.bind_buffer_memory(buffer, memory, 0).unwrap();
            let pool = d
                .create_command_pool(
                    &vk::CommandPoolCreateInfo::default().queue_family_index(self.family),
                    None,
                )
                .unwrap();
            let cb = d
                .allocate_command_buffers(
                    &vk::CommandBufferAllocateInfo::default()
                        .command_pool(pool)
                        .command_buffer_count(1),
                )
                .unwrap()[0];
            d.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default())
                .unwrap();
            d.cmd_fill_buffer(cb, buffer, 0, 256, 7);
            d.end_command_buffer(cb).unwrap();
            let fence = d.create_fence(&vk::FenceCreateInfo::default(), None).unwrap();
            let cbs = [cb];
            d.queue_submit(self.queue, &[vk::SubmitInfo::default().command_buffers(&cbs)], fence)
                .unwrap();
            d.wait_for_fences(&[fence], true, u64::MAX).unwrap();
            d.destroy_fence(fence, None);
            d.destroy_command_pool(pool, None);
            d.destroy_buffer(buffer, None);
            d.free_memory(memory, None);
        }
    }
}

impl Drop for CallersDevice {
    fn drop(&mut self) {
        // SAFETY: the test's own objects, idle, destroyed once in order.
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

#[test]
fn a_callers_device_is_used_and_left_usable() {
    // Checks for a device the same way the other tests do, then makes the caller's own.
    let Some(probe) = context() else { return };
    drop(probe);
    let callers = CallersDevice::new();
    let queue = dsr::gpu::QueueRef {
        queue: callers.queue,
        family: callers.family,
    };
    let external = dsr::gpu::ExternalDevice {
        instance: callers.instance.handle(),
        physical_device: callers.physical_device,
        device: callers.device.handle(),
        transfer: queue,
        compute: queue,
        queue_lock: Arc::new(std::sync::Mutex::new(())),
        get_instance_proc_addr: Some(callers.entry.static_fn().get_instance_proc_addr),
    };
    {
        // SAFETY: the handles outlive the context (dropped at the end of this block), the
        // device has timeline semaphores, and nothing else submits to the queue meanwhile.
        let context = unsafe { GpuContext::from_external(external) }.unwrap();
        assert!(!context.info().owned);
        let (executor, _) = gpu_executor(&context, 2, StagingConfig::default());
        let gpu = dsr::gpu::allocate_buffer(&context, 1 << 16).unwrap();
        let bytes: Arc<[u8]> = Arc::from(pattern(1 << 16, 2));
        let mut batch = executor.batch();
        batch
            .push(Request::memory_to_device(bytes.clone(), 0, 1 << 16, &gpu, 0))
            .unwrap();
        run_all(&executor, batch);
        assert!(read_back(&executor, &gpu, 0, 1 << 16) == *bytes);
    }
    // dsr destroyed only what it made: the caller's device still runs work.
    callers.still_works();
}

/// The completion timeline's value now.
fn reached(context: &GpuContext, semaphore: ash::vk::Semaphore) -> u64 {
    // SAFETY: the semaphore belongs to a transfer queue alive in the caller.
    unsafe { context.device().get_semaphore_counter_value(semaphore) }.expect("semaphore value")
}

#[test]
fn batch_signals_reach_the_gpu_in_the_order_they_were_handed_out() {
    let Some(context) = context() else { return };
    let (executor, transfers) = gpu_executor(&context, 2, StagingConfig::default());
    let gpu = dsr::gpu::allocate_buffer(&context, 1 << 20).unwrap();
    let bytes: Arc<[u8]> = Arc::from(pattern(1 << 16, 8));
    // The first batch reads a FIFO nobody has written yet: it cannot retire until the test
    // writes it. The second retires at once, but its value must wait for the first's.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("held.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();

    let mut held = executor.batch();
    held.push(Request::file_to_device(&fifo, 0, 4096, &gpu, 0).io(dsr::IoPolicy::Buffered))
        .unwrap();
    let first = transfers.signal_on_completion(&mut held);
    let held = executor.submit(held).unwrap();
    let mut quick = executor.batch();
    quick
        .push(Request::memory_to_device(
            bytes.clone(),
            0,
            bytes.len() as u64,
            &gpu,
            8192,
        ))
        .unwrap();
    let second = transfers.signal_on_completion(&mut quick);
    assert_eq!(first.semaphore, second.semaphore);
    assert!(second.value > first.value);
    run_all(&executor, quick);
    // A batch handed a value but dropped unsubmitted does not hold later ones up.
    let mut dropped = executor.batch();
    let third = transfers.signal_on_completion(&mut dropped);
    drop(dropped);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        reached(&context, first.semaphore) < first.value,
        "nothing is signalled while the first batch is out"
    );

    std::io::Write::write_all(&mut writer, &[7u8; 4096]).unwrap();
    assert!(held.wait_timeout(PATIENCE).expect("drains").all_done());
    let info_values = [third.value];
    let semaphores = [third.semaphore];
    let wait = ash::vk::SemaphoreWaitInfo::default()
        .semaphores(&semaphores)
        .values(&info_values);
    // SAFETY: the semaphore is alive (the executor and its queue are); the wait is bounded.
    unsafe { context.device().wait_semaphores(&wait, 10_000_000_000) }.expect("every value is reached");
    assert_eq!(reached(&context, first.semaphore), third.value);
    assert!(read_back(&executor, &gpu, 0, 4096) == [7u8; 4096]);
    drop(executor);
    assert_valid(&context);
}

#[test]
fn imported_scratch_is_copied_from_and_let_go_cleanly_as_blocks_come_and_go() {
    let Some(context) = context() else { return };
    if !context.host_import() {
        assert!(
            std::env::var("DSR_REQUIRE_VULKAN").as_deref() != Ok("1"),
            "lavapipe has VK_EXT_external_memory_host; this device should too"
        );
        eprintln!("skipped: the device cannot import host memory");
        return;
    }
    // A scratch budget of 3 MiB for requests of many size classes: blocks are evicted (and
    // their imports destroyed) while later loads import new ones.
    let config = ExecutorConfig {
        workers: 2,
        scratch_budget: 3 << 20,
        ..ExecutorConfig::default()
    };
    let (executor, _, transfers) =
        dsr::executor_with_gpu(config, IoConfig::default(), &context, StagingConfig::default()).unwrap();
    let data = pattern(8 << 20, 31);
    let file = temp_file(&data);
    let gpu = dsr::gpu::allocate_buffer(&context, 8 << 20).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    for round in 0..6 {
        let mut batch = executor.batch();
        let mut at = 0u64;
        let mut cases = Vec::new();
        while at < (6 << 20) {
            let len = rng.u64((300 << 10)..(1600 << 10));
            let offset = rng.u64(0..(data.len() as u64 - len));
            batch
                .push(Request::file_to_device(file.path(), offset, len, &gpu, at))
                .unwrap();
            cases.push((offset, len, at));
            at += len;
        }
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        assert!(report.all_done(), "round {round}: {report:?}");
        for (offset, len, at) in cases {
            assert!(
                read_back(&executor, &gpu, at, len) == data[offset as usize..(offset + len) as usize],
                "round {round}: file bytes {offset}+{len} at GPU offset {at}"
            );
        }
    }
    let stats = transfers.stats();
    let (imported, uploaded) = (
        stats.imported.load(Ordering::Relaxed),
        stats.uploaded.load(Ordering::Relaxed),
    );
    assert!(
        imported > uploaded / 2,
        "most bytes skipped staging: {imported} of {uploaded}"
    );
    let scratch = executor.scratch();
    assert!(
        scratch.allocations > 6,
        "blocks were evicted and mapped again: {scratch:?}"
    );
    drop(executor);
    assert_valid(&context);
}

#[test]
fn the_run_picture_shows_gpu_time_from_timestamp_queries_and_gpu_edges_in_their_style() {
    let Some(context) = context() else { return };
    let recorder = Arc::new(dsr::viz::RunRecorder::new());
    let config = ExecutorConfig {
        workers: 2,
        observer: Some(recorder.clone()),
        ..ExecutorConfig::default()
    };
    let (executor, _, _) =
        dsr::executor_with_gpu(config, IoConfig::default(), &context, StagingConfig::default()).unwrap();
    let a = dsr::gpu::allocate_buffer(&context, 1 << 20).unwrap();
    let b = dsr::gpu::allocate_buffer(&context, 1 << 20).unwrap();
    let bytes: Arc<[u8]> = Arc::from(pattern(300_000, 4));
    let mut batch = executor.batch();
    batch.push(Request::memory_to_device(bytes, 0, 300_000, &a, 0)).unwrap();
    batch.push(Request::device_to_device(&a, 0, 300_000, &b, 0)).unwrap();
    let [upload, copy] = [0, 1].map(dsr::engine::NodeId::from_index);
    batch.graph_mut().add_edge(upload, copy, dsr::engine::EdgeKind::Gpu);
    let batch = executor.submit(batch).unwrap();
    assert!(batch.wait_timeout(PATIENCE).expect("drains").all_done());
    let timestamps = context.info().transfer_timestamps.is_some();
    for node in [upload, copy] {
        let run = recorder.get(batch.id(), node).expect("recorded");
        assert_eq!(run.gpu.is_some(), timestamps, "node {node:?}: {run:?}");
    }
    let dot = dsr::viz::dot::run_dot(batch.graph(), Some(&recorder));
    if timestamps {
        assert!(dot.contains("\\nGPU "), "{dot}");
    }
    assert!(
        dot.contains("n0 -> n1 [style=dashed"),
        "the GPU edge has its own style: {dot}"
    );
    drop(executor);
    assert_valid(&context);
}

#[test]
fn gpu_buffers_are_written_to_files_through_staging() {
    let Some(context) = context() else { return };
    let (executor, _) = gpu_executor(&context, 2, StagingConfig::default());
    let data = pattern((2 << 20) + 999, 29);
    let gpu = dsr::gpu::allocate_buffer(&context, 4 << 20).unwrap();
    upload(&executor, &data, &gpu, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from-gpu.bin");
    std::fs::write(&path, b"").unwrap();
    let mut batch = executor.batch();
    batch
        .push(Request::device_to_file(&gpu, 5, data.len() as u64, &path, 100).sync())
        .unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{report:?}");
    let written = std::fs::read(&path).unwrap();
    assert!(
        written.len() == 100 + data.len() && written[100..] == data[..],
        "the GPU's bytes reached the file"
    );
    drop(executor);
    assert_valid(&context);
}

#[test]
fn a_runtime_on_a_device_queues_gpu_requests_and_signals_a_vulkan_timeline() {
    let Some(context) = context() else { return };
    let config = dsr::RuntimeConfig {
        staging_bytes: 8 << 20,
        workers: 2,
        ..dsr::RuntimeConfig::default()
    };
    let runtime = dsr::Runtime::on_device(config, &context);
    let queue = runtime.create_queue(dsr::QueueConfig::default()).unwrap();
    let gpu = dsr::gpu::allocate_buffer(&context, 4 << 20).unwrap();
    let data = pattern((3 << 20) + 123, 31);
    let file = temp_file(&data);
    // The caller's timeline semaphore, as a renderer would wait on it.
    let mut kind = ash::vk::SemaphoreTypeCreateInfo::default()
        .semaphore_type(ash::vk::SemaphoreType::TIMELINE)
        .initial_value(0);
    // SAFETY: a valid create info; destroyed at the end, after the runtime is gone.
    let semaphore = unsafe {
        context
            .device()
            .create_semaphore(&ash::vk::SemaphoreCreateInfo::default().push_next(&mut kind), None)
    }
    .unwrap();
    // A request held on a FIFO keeps the signal back until the test writes it.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("held.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    queue
        .enqueue(Request::file_to_device(&fifo, 0, 4096, &gpu, 0).io(dsr::IoPolicy::Buffered))
        .unwrap();
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        let at = (i as u64) << 20;
        queue
            .enqueue(Request::file_to_device(
                file.path(),
                at,
                piece.len() as u64,
                &gpu,
                4096 + at,
            ))
            .unwrap();
    }
    // SAFETY: a live timeline semaphore of the runtime's device, destroyed after the runtime.
    unsafe { queue.enqueue_vulkan_signal(semaphore, 1) }.unwrap();
    queue.submit().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(reached(&context, semaphore), 0, "the signal waits for the held request");
    std::io::Write::write_all(&mut writer, &[9u8; 4096]).unwrap();
    let (values, semaphores) = ([1u64], [semaphore]);
    let wait = ash::vk::SemaphoreWaitInfo::default()
        .semaphores(&semaphores)
        .values(&values);
    // SAFETY: the semaphore is alive; the wait is bounded.
    unsafe { context.device().wait_semaphores(&wait, 10_000_000_000) }.expect("the queue signals the timeline");
    let (executor, _) = gpu_executor(&context, 1, StagingConfig::default());
    assert!(read_back(&executor, &gpu, 0, 4096) == [9u8; 4096]);
    assert!(read_back(&executor, &gpu, 4096, data.len() as u64) == data);

    // Refusals: a value the semaphore has reached; a runtime without a device.
    // SAFETY: as above.
    let err = unsafe { queue.enqueue_vulkan_signal(semaphore, 1) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    let host_only = dsr::Runtime::default();
    let host_queue = host_only.create_queue(dsr::QueueConfig::default()).unwrap();
    // SAFETY: refused before the semaphore is touched.
    let err = unsafe { host_queue.enqueue_vulkan_signal(semaphore, 2) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    drop((queue, runtime, executor));
    // SAFETY: nothing uses the semaphore any more (its signal was waited for; the runtime is gone).
    unsafe { context.device().destroy_semaphore(semaphore, None) };
    assert_valid(&context);
}
