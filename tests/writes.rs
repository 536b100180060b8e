//! Write requests: memory (and, in `gpu`, GPU buffers) into file ranges, on both backends and
//! under every I/O policy; short writes resubmitted; injected errors; syncs; files that do not
//! exist; reads and writes of one file in one batch; writes through a queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use dsr::stages::io::{Backend, Fault, FaultPlan, RingConfig};
use dsr::{ErrorKind, HostBuffer, IoPolicy, NodeKind, Request, RequestStatus};

use crate::common::*;
use crate::io::{backends, engine};

/// An existing file of `len` zero bytes.
fn blank(dir: &std::path::Path, name: &str, len: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![0u8; len]).unwrap();
    path
}

#[test]
fn memory_lands_in_files_byte_exact_on_every_backend_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let data: Arc<[u8]> = Arc::from(pattern(3 << 20, 11));
    // (source offset, length, file offset): aligned ones go direct; odd ones buffered; one
    // extends the file past its end; one spans several chunks.
    let cases: &[(u64, u64, u64)] = &[
        (0, 4096, 0),
        (7, 8192, 8192),
        (1, 5000, 20_001),
        (4096, (2 << 20) + 4096, 1 << 20),
        (100, 0, 50_000),
        (0, 12_288, (4 << 20) - 4096),
    ];
    for backend in backends() {
        for policy in [IoPolicy::Auto, IoPolicy::Buffered, IoPolicy::Direct] {
            let (executor, info) = engine(backend, RingConfig::default());
            let path = blank(dir.path(), &format!("out-{backend:?}-{policy:?}.bin"), 4 << 20);
            let mut batch = executor.batch();
            let mut expected = vec![0u8; (4 << 20) + 8192];
            for &(offset, len, at) in cases {
                let direct_ok = at % 4096 == 0 && len % 4096 == 0;
                if policy == IoPolicy::Direct && !direct_ok {
                    continue;
                }
                batch
                    .push(Request::write(data.clone(), offset, len, &path, at).io(policy))
                    .unwrap();
                expected[at as usize..(at + len) as usize]
                    .copy_from_slice(&data[offset as usize..(offset + len) as usize]);
            }
            let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
            assert!(report.all_done(), "{backend:?} {policy:?}: {report:?}");
            let written = std::fs::read(&path).unwrap();
            assert_eq!(
                written.len(),
                expected.len(),
                "{backend:?} {policy:?}: the last write extended the file"
            );
            assert!(written[..] == expected[..], "{backend:?} {policy:?}: the file's bytes");
            if let Some(ring) = &info.ring {
                let stats = ring.stats();
                assert!(stats.writes.load(Ordering::Relaxed) > 0, "the ring wrote");
                let direct = stats.direct_writes.load(Ordering::Relaxed);
                match policy {
                    IoPolicy::Buffered => assert_eq!(direct, 0),
                    // Aligned in the file, not in memory: through a staging slot, directly.
                    _ => assert!(direct > 0, "{policy:?}: aligned ranges were written directly"),
                }
            }
        }
    }
}

#[test]
fn direct_writes_refuse_unaligned_file_ranges_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = blank(dir.path(), "direct.bin", 8192);
    let data: Arc<[u8]> = Arc::from(pattern(5000, 12));
    let (executor, _) = engine(Backend::IoUring, RingConfig::default());
    let mut batch = executor.batch();
    batch
        .push(Request::write(data, 0, 5000, &path, 10).io(IoPolicy::Direct))
        .unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("{:?}", report.requests[0].status)
    };
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.message().contains("aligned"), "{err}");
    assert_eq!(err.stage(), Some(NodeKind::Write));
}

#[test]
fn direct_writes_take_ranges_and_memory_as_the_disk_aligns_them() {
    if !crate::io::io_uring_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = blank(dir.path(), "sectors.bin", 16 << 10);
    let needs = crate::io::direct_needs(&path);
    eprintln!("direct I/O here needs (memory, file) alignment {needs:?}");
    let (memory, file_align) = needs.unwrap_or((4096, 4096));
    let data: Arc<[u8]> = Arc::from(pattern(32 << 10, 14));
    let base = data.as_ptr() as u64;
    // The source offset putting the bytes at `at` modulo a page.
    let source_at = |at: u64| (at + 4096 - base % 4096) % 4096;
    // (bytes in memory at, file offset, length): sector-aligned ranges from a title's 16-byte
    // heap and from a sector, and a page-aligned one for the kernel that does not say.
    for (at, offset, len) in [(16u64, 512u64, 1536u64), (512, 1024, 2048), (0, 4096, 8192)] {
        for policy in [IoPolicy::Auto, IoPolicy::Direct] {
            let (executor, info) = engine(Backend::IoUring, RingConfig::default());
            let ring = info.ring.as_ref().expect("io_uring");
            let mut batch = executor.batch();
            let from = source_at(at);
            batch
                .push(Request::write(data.clone(), from, len, &path, offset).io(policy))
                .unwrap();
            let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
            let fits = offset % file_align == 0 && len % file_align == 0;
            let case = format!("{policy:?}: bytes at {at}, range {offset}+{len}, the disk needing {needs:?}");
            if policy == IoPolicy::Direct && !fits {
                let RequestStatus::Failed(err) = &report.requests[0].status else {
                    panic!("{case}: {:?}", report.requests[0].status)
                };
                assert!(
                    err.message().contains(&format!("aligned to {file_align} bytes")),
                    "{err}"
                );
                continue;
            }
            assert!(report.all_done(), "{case}: {report:?}");
            let written = std::fs::read(&path).unwrap();
            let (o, l, f) = (offset as usize, len as usize, from as usize);
            assert!(written[o..o + l] == data[f..f + l], "{case}");
            let stats = ring.stats();
            let (direct, staged) = (
                stats.direct_writes.load(Ordering::Relaxed),
                stats.staged_writes.load(Ordering::Relaxed),
            );
            let expected = match (fits, at % memory == 0) {
                (false, _) => (0, 0),
                (true, true) => (1, 0),
                (true, false) => (1, 1),
            };
            assert_eq!((direct, staged), expected, "{case}: (direct, staged)");
        }
    }
}

#[test]
fn short_writes_are_resubmitted_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(FaultPlan::new("short", Fault::Short(1000)).with("broken", Fault::Eio));
    let data: Arc<[u8]> = Arc::from(pattern(1 << 20, 13));
    for backend in backends() {
        let (executor, info) = engine(
            backend,
            RingConfig {
                faults: Some(plan.clone()),
                ..RingConfig::default()
            },
        );
        let short = blank(dir.path(), &format!("short-{backend:?}.bin"), 0);
        let short_direct = blank(dir.path(), &format!("short-direct-{backend:?}.bin"), 0);
        let broken = blank(dir.path(), &format!("broken-{backend:?}.bin"), 0);
        let mut batch = executor.batch();
        // Buffered writes are `pwrite`s on the workers with either backend; direct ones go on the
        // ring where there is one.
        batch
            .push(Request::write(data.clone(), 0, 1 << 20, &short, 3).io(IoPolicy::Buffered))
            .unwrap();
        batch.push(Request::write(data.clone(), 0, 70_000, &broken, 0)).unwrap();
        batch
            .push(Request::write(data.clone(), 0, 1 << 20, &short_direct, 0).io(IoPolicy::Direct))
            .unwrap();
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        assert_eq!(report.requests[0].status, RequestStatus::Done, "{backend:?}");
        assert_eq!(report.requests[2].status, RequestStatus::Done, "{backend:?}");
        let written = std::fs::read(&short).unwrap();
        assert!(
            written[3..] == data[..] && written.len() == 3 + (1 << 20),
            "{backend:?}"
        );
        assert!(std::fs::read(&short_direct).unwrap() == data[..], "{backend:?}");
        let RequestStatus::Failed(err) = &report.requests[1].status else {
            panic!("{backend:?}: {:?}", report.requests[1].status)
        };
        assert_eq!(err.errno(), Some(libc::EIO), "{backend:?}: {err}");
        assert_eq!(err.path(), Some(broken.as_path()));
        assert_eq!(err.stage(), Some(NodeKind::Write));
        if let Some(ring) = &info.ring {
            assert!(
                ring.stats().short_writes.load(Ordering::Relaxed) > 100,
                "short writes were resubmitted"
            );
        }
    }
}

#[test]
fn writes_never_create_files_and_syncs_run_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.bin");
    let path = blank(dir.path(), "synced.bin", 0);
    let data: Arc<[u8]> = Arc::from(pattern(3 << 20, 14));
    let executor = executor(2);
    let mut batch = executor.batch();
    batch.push(Request::write(data.clone(), 0, 10, &missing, 0)).unwrap();
    batch
        .push(Request::write(data.clone(), 0, 3 << 20, &path, 0).sync())
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("{:?}", report.requests[0].status)
    };
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!missing.exists(), "a write does not create its file");
    assert_eq!(report.requests[1].status, RequestStatus::Done);
    assert!(std::fs::read(&path).unwrap() == data[..]);
    let graph = batch.graph();
    let sync = graph.nodes().find(|n| n.kind == NodeKind::Sync).expect("a sync node");
    assert!(sync.state.is_done());
    let writes = graph
        .nodes()
        .filter(|n| n.kind == NodeKind::Write && n.request == sync.request)
        .count();
    assert_eq!(writes, 3, "three 1 MiB writes");
    assert_eq!(sync.predecessors, 3, "after every write");
}

/// A request that would write bytes another request of its batch reads or writes is refused
/// when it is pushed, alone: the batch keeps the rest and runs. (Refusing at submit failed the
/// whole batch, and through a queue closed the queue with every request in it; the C ABI
/// sequence test found that.)
#[test]
fn a_read_and_a_write_of_the_same_bytes_in_one_batch_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = blank(dir.path(), "shared.bin", 100_000);
    let data: Arc<[u8]> = Arc::from(pattern(10_000, 15));
    let executor = executor(1);
    let dest = HostBuffer::new(10_000);
    let mut batch = executor.batch();
    batch.push(Request::file(&path, 5000, 10_000, &dest, 0)).unwrap();
    let err = batch
        .push(Request::write(data.clone(), 0, 10_000, &path, 14_000))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OverlappingDestinations);
    assert!(err.message().contains("writes bytes another request reads"), "{err}");
    let report = executor.submit(batch).unwrap().wait();
    assert_eq!(report.requests.len(), 1, "the read alone");
    assert!(report.all_done(), "{:?}", report.first_failure());

    let mut batch = executor.batch();
    batch.push(Request::write(data.clone(), 0, 10_000, &path, 0)).unwrap();
    let err = batch
        .push(Request::write(data.clone(), 0, 10_000, &path, 9_999))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::OverlappingDestinations,
        "two writes of the same bytes"
    );
    let err = batch.push(Request::file(&path, 9_000, 10, &dest, 0)).unwrap_err();
    assert!(err.message().contains("reads bytes another request writes"), "{err}");
    assert!(executor.submit(batch).unwrap().wait().all_done());
    let mut back = vec![0u8; 10_000];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&path).unwrap().read_exact_at(&mut back, 0).unwrap();
    assert!(back[..] == data[..], "the first write landed");

    // Side by side, they run.
    let mut batch = executor.batch();
    batch.push(Request::file(&path, 0, 10_000, &dest, 0)).unwrap();
    batch
        .push(Request::write(data.clone(), 0, 10_000, &path, 10_000))
        .unwrap();
    run_all(&executor, batch);
}

#[test]
fn writes_go_through_a_memory_queue_with_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = blank(dir.path(), "queued.bin", 0);
    let data: Arc<[u8]> = Arc::from(pattern(64 << 10, 16));
    let queue = dsr::Queue::new(
        Arc::new(executor(2)),
        dsr::QueueConfig {
            source: dsr::SourceType::Memory,
            ..dsr::QueueConfig::default()
        },
    )
    .unwrap();
    for i in 0..16u64 {
        queue
            .enqueue(Request::write(data.clone(), i * 4096, 4096, &path, i * 4096))
            .unwrap();
    }
    let statuses = dsr::StatusArray::new(1);
    queue.enqueue_status(&statuses, 0).unwrap();
    let fence = dsr::Fence::new().unwrap();
    queue.enqueue_signal(&fence, 1).unwrap();
    queue.submit().unwrap();
    assert!(fence.wait_timeout(1, PATIENCE));
    assert_eq!(statuses.get(0), dsr::StatusEntry::Ok);
    assert!(std::fs::read(&path).unwrap() == data[..]);
}

/// A TileStream's tiles and table: the data's offset in the stream, and each tile's end
/// (relative to the data's start).
fn table_of(stream: &[u8]) -> (u64, Vec<u64>) {
    let parsed = dsr_gdeflate::TileStream::parse(stream).unwrap();
    let data = parsed.tile_span(0).unwrap().0.start as u64;
    let ends = (0..parsed.tiles())
        .map(|i| parsed.tile_span(i).unwrap().0.end as u64 - data)
        .collect();
    (data, ends)
}

/// GDeflate decodes on the way to a file: a whole TileStream (from a file and from memory), and
/// a stream in windows of a few tiles each, read with its table kept apart
/// (`Request::gdeflate_tiles`), tile hashes checked; every output byte-exact, on both backends.
#[test]
fn compressed_files_decode_into_files_whole_and_in_windows() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(11 << 16) + 4321u32)
        .map(|i| b"windows of a stream "[(i % 20) as usize] ^ (i % 1013 == 0) as u8)
        .collect();
    let stream = dsr_gdeflate::compress(&data, dsr_gdeflate::Level::new(4)).unwrap();
    let stream_file = temp_file(&stream);
    let (data_at, ends) = table_of(&stream);
    let hashes: Vec<u64> = data.chunks(65536).map(dsr::stages::tile_hash).collect();
    for backend in backends() {
        let (executor, _) = engine(backend, RingConfig::default());
        let whole = blank(dir.path(), &format!("whole-{backend:?}"), 0);
        let from_memory = blank(dir.path(), &format!("memory-{backend:?}"), 0);
        let windows = blank(dir.path(), &format!("windows-{backend:?}"), 0);
        let mut batch = executor.batch();
        let len = data.len() as u64;
        let host = HostBuffer::new(0);
        batch
            .push(
                Request::file(stream_file.path(), 0, stream.len() as u64, &host, 0)
                    .gdeflate(len)
                    .to_file(dsr::FileSource::Path(whole.clone()), 0),
            )
            .unwrap();
        batch
            .push(Request::write(Arc::<[u8]>::from(&stream[..]), 0, stream.len() as u64, &from_memory, 0).gdeflate(len))
            .unwrap();
        // Windows of 3 tiles: each reads only its tiles' bytes.
        for first in (0..ends.len()).step_by(3) {
            let last = (first + 3).min(ends.len());
            let start = if first == 0 { 0 } else { ends[first - 1] };
            let window_ends: Vec<u64> = ends[first..last].iter().map(|e| e - start).collect();
            let out = ((last * 65536).min(data.len()) - first * 65536) as u64;
            let request = Request::file(stream_file.path(), data_at + start, ends[last - 1] - start, &host, 0)
                .gdeflate_tiles(out, window_ends.into())
                .verify_tiles(hashes[first..last].into())
                .to_file(dsr::FileSource::Path(windows.clone()), first as u64 * 65536);
            batch.push(request).unwrap();
        }
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        assert!(report.all_done(), "{backend:?}: {report:?}");
        for path in [&whole, &from_memory, &windows] {
            assert!(std::fs::read(path).unwrap() == data, "{backend:?}: {}", path.display());
        }
    }
}

/// A window whose tile is damaged fails naming the tile (by its place in the window, found by
/// its hash: the flipped byte lies in a stored block), its neighbours land; a table that does not fit its bytes is refused as corrupt before anything
/// runs; a tile table on a GPU-decoded request is refused with the reason.
#[test]
fn damaged_windows_fail_alone_and_bad_tables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(6 << 16, 3);
    let mut stream = dsr_gdeflate::compress(&data, dsr_gdeflate::Level::new(2)).unwrap();
    let (data_at, ends) = table_of(&stream);
    let hashes: Vec<u64> = data.chunks(65536).map(dsr::stages::tile_hash).collect();
    // Damage the middle of tile 4.
    let mid = data_at + (ends[3] + ends[4]) / 2;
    stream[mid as usize] ^= 0x5a;
    let stream_file = temp_file(&stream);
    let (executor, _) = engine(Backend::Pread, RingConfig::default());
    let out = blank(dir.path(), "out", 0);
    let host = HostBuffer::new(0);
    let window = |first: usize, last: usize| {
        let start = if first == 0 { 0 } else { ends[first - 1] };
        let window_ends: Vec<u64> = ends[first..last].iter().map(|e| e - start).collect();
        Request::file(stream_file.path(), data_at + start, ends[last - 1] - start, &host, 0)
            .gdeflate_tiles((last - first) as u64 * 65536, window_ends.into())
            .verify_tiles(hashes[first..last].into())
            .to_file(dsr::FileSource::Path(out.clone()), first as u64 * 65536)
    };
    let mut batch = executor.batch();
    batch.push(window(0, 3)).unwrap();
    batch.push(window(3, 6)).unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    assert_eq!(report.requests[0].status, RequestStatus::Done);
    let RequestStatus::Failed(err) = &report.requests[1].status else {
        panic!("the damaged window decoded: {report:?}")
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.tile(), Some(1), "tile 4 is the window's second: {err}");
    assert!(std::fs::read(&out).unwrap()[..3 << 16] == data[..3 << 16]);

    let mut batch = executor.batch();
    let bad = Request::file(stream_file.path(), data_at, ends[2], &host, 0)
        .gdeflate_tiles(3 << 16, vec![ends[1], ends[0], ends[2]].into())
        .to_file(dsr::FileSource::Path(out.clone()), 0);
    let err = batch.push(bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let short = Request::file(stream_file.path(), data_at, ends[1], &host, 0)
        .gdeflate_tiles(3 << 16, ends[..3].to_vec().into())
        .to_file(dsr::FileSource::Path(out.clone()), 0);
    let err = batch.push(short).unwrap_err();
    assert!(err.to_string().contains("tile table"), "{err}");
    let too_few = Request::file(stream_file.path(), data_at, ends[2], &host, 0)
        .gdeflate_tiles(3 << 16, ends[..2].to_vec().into());
    let err = batch.push(too_few).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
}
