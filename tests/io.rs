//! Reads through io_uring and through the positioned-read fallback (forced by configuration):
//! byte-exact at every size, offset and policy; EOF; thousands at once; back-pressure on a tiny
//! staging budget; in-flight cancellation; injected EIO, short reads and delays that fail or slow
//! only the affected request; compressed requests holding their scratch within a fixed budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dsr::stages::io::{Backend, Fault, FaultPlan, RingConfig};
use dsr::{ErrorKind, ExecutorConfig, HostBuffer, IoConfig, IoInfo, IoPolicy, NodeKind, Request, RequestStatus};

use crate::common::*;
use dsr::engine::scratch::block_size;

/// The backends to test: positioned reads always; io_uring where the kernel allows it. Where it
/// does not, the io_uring half says it skipped, or fails when `DSR_REQUIRE_TOOLS=1` (CI).
pub(crate) fn backends() -> Vec<Backend> {
    if io_uring_available() {
        vec![Backend::IoUring, Backend::Pread]
    } else {
        vec![Backend::Pread]
    }
}

pub(crate) fn io_uring_available() -> bool {
    let available = dsr::stages::io::Ring::new(RingConfig::default()).is_ok();
    if !available {
        if std::env::var("DSR_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("io_uring is required (DSR_REQUIRE_TOOLS=1) but cannot be set up here");
        }
        eprintln!("SKIPPED the io_uring half: io_uring cannot be set up on this kernel");
    }
    available
}

pub(crate) fn engine(backend: Backend, ring: RingConfig) -> (dsr::Executor, IoInfo) {
    engine_with(
        backend,
        ring,
        ExecutorConfig {
            workers: 2,
            ..ExecutorConfig::default()
        },
    )
}

/// An io_uring engine whose buffered reads of what the cache lacks go to the blocking-read
/// threads (`threads`) or to the ring, and its ring.
fn ring_engine(threads: bool) -> (dsr::Executor, Arc<dsr::stages::io::Ring>) {
    let config = RingConfig {
        blocking_threads: threads,
        ..RingConfig::default()
    };
    let (executor, info) = engine(Backend::IoUring, config);
    (executor, info.ring.expect("the ring backend"))
}

/// Leaves only `file`'s first `len` bytes in the page cache.
fn cache_only_head(file: &tempfile::NamedTempFile, len: usize) {
    evict(file);
    let mut head = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(file.as_file(), &mut head, 0).unwrap();
    evict_from(file, len as u64);
}

fn engine_with(backend: Backend, ring: RingConfig, config: ExecutorConfig) -> (dsr::Executor, IoInfo) {
    let (executor, info) = dsr::executor_with_io(config, IoConfig { backend, ring }).expect("executor starts");
    assert_eq!(info.backend, backend, "{:?}", info.reason);
    (executor, info)
}

/// Loads `ranges` of `path` into one buffer at unaligned slots; returns statuses and bytes.
fn load(
    executor: &dsr::Executor,
    path: &std::path::Path,
    ranges: &[(u64, u64)],
    policy: IoPolicy,
) -> (Vec<RequestStatus>, Vec<u8>) {
    let total: u64 = ranges.iter().map(|r| r.1 + 3).sum();
    let dest = HostBuffer::new(total as usize);
    let mut batch = executor.batch();
    let mut at = 1; // deliberately unaligned destinations
    for &(offset, len) in ranges {
        batch
            .push(Request::file(path, offset, len, &dest, at).io(policy))
            .unwrap();
        at += len + 3;
    }
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    for (request, &(offset, len)) in report.requests.iter().zip(ranges) {
        if request.status == RequestStatus::Done {
            assert_eq!(
                request.bytes, len,
                "the report of the read of {offset}+{len} counts its bytes"
            );
        }
    }
    let mut dest = dest;
    let bytes = dest.as_slice().unwrap().to_vec();
    (report.requests.iter().map(|r| r.status.clone()).collect(), bytes)
}

fn check(bytes: &[u8], data: &[u8], ranges: &[(u64, u64)]) {
    let mut at = 1usize;
    for &(offset, len) in ranges {
        let (offset, len) = (offset as usize, len as usize);
        assert!(
            bytes[at..at + len] == data[offset..offset + len],
            "range {offset}+{len}"
        );
        at += len + 3;
    }
}

#[test]
fn reads_are_byte_exact_at_every_size_offset_and_policy() {
    let data = pattern(3 << 20, 21);
    let file = temp_file(&data);
    let ranges: Vec<(u64, u64)> = [
        (0, 1),
        (1, 4095),
        (4095, 2),
        (4096, 4096),
        (4096, 8192),
        (12_345, 54_321),
        (0, 1 << 20),
        (1, 1 << 20),
        ((1 << 20) - 1, (1 << 20) + 2),
        ((3 << 20) - 5, 5),
        (0, 3 << 20),
    ]
    .into();
    for backend in backends() {
        let (executor, info) = engine(backend, RingConfig::default());
        for policy in [IoPolicy::Auto, IoPolicy::Direct, IoPolicy::Buffered] {
            let (statuses, bytes) = load(&executor, file.path(), &ranges, policy);
            assert!(
                statuses.iter().all(|s| *s == RequestStatus::Done),
                "{backend:?} {policy:?}: {statuses:?}"
            );
            check(&bytes, &data, &ranges);
        }
        // An aligned destination, offset and length: direct I/O lands in place.
        let dest = HostBuffer::new(1 << 20);
        let mut batch = executor.batch();
        batch
            .push(Request::file(file.path(), 1 << 20, 1 << 20, &dest, 0).io(IoPolicy::Direct))
            .unwrap();
        assert!(executor.submit(batch).unwrap().wait().all_done());
        let mut dest = dest;
        assert!(dest.as_slice().unwrap() == &data[1 << 20..2 << 20]);
        if let Some(ring) = &info.ring {
            let stats = ring.stats();
            assert!(
                stats.staged.load(Ordering::Relaxed) > 0,
                "unaligned direct reads go through staging"
            );
            assert!(
                stats.direct_landed.load(Ordering::Relaxed) > 0,
                "aligned direct reads land in place"
            );
            assert!(stats.buffered.load(Ordering::Relaxed) > 0);
            assert_eq!(
                ring.staging().free_slots(),
                ring.staging().slots(),
                "every slot came back"
            );
            assert_eq!(ring.in_flight_ops(), 0);
        }
    }
}

/// What direct I/O on `path` must align in memory and in the file, asked of the kernel here
/// (`statx` on an `O_DIRECT` descriptor); `None` where it does not say.
pub(crate) fn direct_needs(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    // SAFETY: the struct lives across the call, which writes it.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, an empty C string with AT_EMPTY_PATH, a writable struct.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut st,
        )
    };
    (rc == 0 && st.stx_mask & libc::STATX_DIOALIGN != 0 && st.stx_dio_mem_align > 0)
        .then(|| (u64::from(st.stx_dio_mem_align), u64::from(st.stx_dio_offset_align)))
}

#[test]
fn direct_reads_land_in_place_wherever_the_disk_can_take_them() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(1 << 20, 5);
    let file = temp_file(&data);
    let needs = direct_needs(file.path());
    eprintln!("direct I/O here needs (memory, file) alignment {needs:?}");
    // Destinations and file ranges aligned to 16 and to 512 bytes, never to a page: a Windows
    // title's heap under Wine, and a sector.
    for (at, offset, len) in [
        (16u64, 4096u64, 65_536u64),
        (512, 512, 65_536 + 512),
        (4096, 4096, 8192),
    ] {
        let (executor, info) = engine(Backend::IoUring, RingConfig::default());
        let dest = HostBuffer::new(1 << 18);
        let mut batch = executor.batch();
        batch
            .push(Request::file(file.path(), offset, len, &dest, at).io(IoPolicy::Direct))
            .unwrap();
        assert!(executor.submit(batch).unwrap().wait().all_done());
        let mut dest = dest;
        let (o, l, a) = (offset as usize, len as usize, at as usize);
        assert!(
            dest.as_slice().unwrap()[a..a + l] == data[o..o + l],
            "{at} {offset}+{len}"
        );
        let stats = info.ring.as_ref().expect("io_uring").stats();
        let (landed, staged) = (
            stats.direct_landed.load(Ordering::Relaxed),
            stats.staged.load(Ordering::Relaxed),
        );
        // The rule, asked of the kernel independently; a kernel that does not say gets a page.
        let (memory, file_align) = needs.unwrap_or((4096, 4096));
        let fits = at % memory == 0 && offset % file_align == 0 && len % file_align == 0;
        assert_eq!(
            (landed, staged),
            if fits { (1, 0) } else { (0, 1) },
            "destination at {at}, range {offset}+{len}, the disk needing {needs:?}"
        );
    }
}

#[test]
fn reading_past_the_end_of_the_file_fails_with_context() {
    let data = pattern(10_000, 2);
    let file = temp_file(&data);
    for backend in backends() {
        let (executor, _) = engine(backend, RingConfig::default());
        for policy in [IoPolicy::Auto, IoPolicy::Buffered] {
            let (statuses, _) = load(&executor, file.path(), &[(9_000, 2_000), (0, 10_000)], policy);
            let RequestStatus::Failed(err) = &statuses[0] else {
                panic!("{backend:?} {policy:?}: {:?}", statuses[0])
            };
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{backend:?} {policy:?}: {err}");
            assert_eq!(err.path(), Some(file.path()));
            assert_eq!(err.offset(), Some(10_000), "{err}");
            assert_eq!(statuses[1], RequestStatus::Done, "the other request is unaffected");
        }
    }
}

/// Cold buffered reads go to the blocking-read threads: one running past the end of its file
/// fails there with the same context as on the ring, and the other request is unaffected.
#[test]
fn cold_reads_past_the_end_fail_with_context_on_the_threads() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(300_000, 9);
    let file = disk_file(&data);
    let (executor, info) = engine(Backend::IoUring, RingConfig::default());
    let ring = info.ring.expect("io_uring");
    evict(&file);
    let (statuses, bytes) = load(
        &executor,
        file.path(),
        &[(250_000, 100_000), (0, 200_000)],
        IoPolicy::Buffered,
    );
    let RequestStatus::Failed(err) = &statuses[0] else {
        panic!("{:?}", statuses[0])
    };
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(err.path(), Some(file.path()));
    assert_eq!(err.offset(), Some(300_000), "{err}");
    assert_eq!(err.stage(), Some(NodeKind::Read));
    assert_eq!(statuses[1], RequestStatus::Done);
    let at = 1 + 100_000 + 3;
    assert!(bytes[at..at + 200_000] == data[..200_000]);
    assert!(
        ring.stats().thread_reads.load(Ordering::Relaxed) >= 1,
        "the threads read"
    );
}

/// A read whose head is cached and whose tail runs past the end of the file: the head is copied
/// on the worker, the rest read by the threads or the ring, and the error names the whole range
/// the caller asked for, not the rest.
#[test]
fn a_partly_cached_read_past_the_end_names_the_whole_range() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(300_000, 12);
    let file = disk_file(&data);
    for threads in [true, false] {
        let (executor, ring) = ring_engine(threads);
        cache_only_head(&file, 262_144);
        let copied_before = ring.stats().resident_bytes.load(Ordering::Relaxed);
        let (statuses, _) = load(&executor, file.path(), &[(200_000, 150_000)], IoPolicy::Buffered);
        assert_eq!(
            ring.stats().resident_bytes.load(Ordering::Relaxed) - copied_before,
            62_144,
            "threads {threads}: the cached head was copied on the worker"
        );
        let RequestStatus::Failed(err) = &statuses[0] else {
            panic!("threads {threads}: {:?}", statuses[0])
        };
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "threads {threads}: {err}");
        assert_eq!(err.offset(), Some(300_000), "threads {threads}: {err}");
        assert!(
            !err.to_string().contains("262144") && (!threads || err.to_string().contains("200000+150000")),
            "threads {threads}: the message names the range asked for, not the uncached rest: {err}"
        );
    }
}

/// Cancelling a batch of cold buffered reads: those the threads had not started end Cancelled,
/// the rest Done with every byte; none fails, and the executor takes the next batch.
#[test]
fn cancelled_cold_reads_on_the_threads_end_cancelled_or_whole() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(16 << 20, 10);
    let file = disk_file(&data);
    let (executor, info) = engine(Backend::IoUring, RingConfig::default());
    let ring = info.ring.expect("io_uring");
    evict(&file);
    let ranges: Vec<(u64, u64)> = (0..256).map(|i| (i * 65_536, 65_536)).collect();
    let dest = HostBuffer::new(16 << 20);
    let mut batch = executor.batch();
    for &(offset, len) in &ranges {
        batch
            .push(Request::file(file.path(), offset, len, &dest, offset).io(IoPolicy::Buffered))
            .unwrap();
    }
    let batch = executor.submit(batch).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while ring.stats().thread_reads.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "no read reached the threads");
        std::thread::yield_now();
    }
    assert!(
        batch.cancel().wait_timeout(PATIENCE),
        "the cancellation is acknowledged"
    );
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    let mut dest = dest;
    let landed = dest.as_slice().unwrap();
    let mut done = 0;
    for (request, &(offset, len)) in report.requests.iter().zip(&ranges) {
        let (o, l) = (offset as usize, len as usize);
        match &request.status {
            RequestStatus::Done => {
                done += 1;
                assert!(landed[o..o + l] == data[o..o + l], "range {offset}");
            }
            RequestStatus::Cancelled => {}
            other => panic!("range {offset}: {other:?}"),
        }
    }
    eprintln!("{done} of {} reads finished before the cancellation", ranges.len());
    let (statuses, bytes) = load(&executor, file.path(), &[(1 << 20, 1 << 20)], IoPolicy::Buffered);
    assert_eq!(statuses, [RequestStatus::Done]);
    check(&bytes, &data, &[(1 << 20, 1 << 20)]);
}

/// Regression: a request's callback that drops the executor's last handle, on the
/// blocking-read thread completing the request's cold read. Tearing down there waited for the
/// batch, which waited for that thread to return: a hang. The teardown now runs on a thread of
/// its own.
#[test]
fn regression_the_last_executor_handle_dropped_on_a_read_thread_returns() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(1 << 20, 12);
    let file = disk_file(&data);
    let (executor, info) = engine(Backend::IoUring, RingConfig::default());
    let ring = info.ring.expect("io_uring");
    let executor = Arc::new(executor);
    let holder = Arc::new(std::sync::Mutex::new(Some(executor.clone())));
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let dest = HostBuffer::new(1 << 20);
    evict(&file);
    let mut batch = executor.batch();
    batch
        .push(Request::file(file.path(), 0, 1 << 20, &dest, 0).io(IoPolicy::Buffered))
        .unwrap();
    let callback_holder = holder.clone();
    batch.on_request_complete(move |_, status| {
        let last = callback_holder.lock().unwrap().take();
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        drop(last);
        let _ = dropped_tx.send((thread, status.clone()));
    });
    let batch = executor.submit(batch).unwrap();
    drop(executor);
    let (thread, status) = dropped_rx
        .recv_timeout(PATIENCE)
        .expect("the callback dropped the executor and returned");
    assert_eq!(status, RequestStatus::Done);
    assert_eq!(thread, "dsr-read", "the cold read completed on a blocking-read thread");
    assert_eq!(ring.stats().thread_reads.load(Ordering::Relaxed), 1);
    assert!(batch.wait_timeout(PATIENCE).expect("retires").all_done());
    let mut dest = dest;
    assert!(dest.as_slice().unwrap() == &data[..]);
}

#[test]
fn stress_thousands_of_concurrent_requests() {
    let data = pattern(8 << 20, 3);
    // Out of the page cache, so the reads go to the kernel (cached ones are copied on the
    // workers without it): direct, through staging where unaligned.
    let file = disk_file(&data);
    let mut rng = fastrand::Rng::with_seed(4);
    let ranges: Vec<(u64, u64)> = (0..4000)
        .map(|_| (rng.u64(0..(8 << 20) - 70_000), rng.u64(1..65_536)))
        .collect();
    // Direct even where the build disk is rotational (where Auto would read through the cache).
    let config = RingConfig {
        rotational_buffered: false,
        ..RingConfig::default()
    };
    for backend in backends() {
        let (executor, info) = engine(backend, config.clone());
        evict(&file);
        let (statuses, bytes) = load(&executor, file.path(), &ranges, IoPolicy::Auto);
        assert!(statuses.iter().all(|s| *s == RequestStatus::Done), "{backend:?}");
        check(&bytes, &data, &ranges);
        if let Some(ring) = &info.ring {
            let (sqes, submits) = (
                ring.stats().sqes.load(Ordering::Relaxed),
                ring.stats().submits.load(Ordering::Relaxed),
            );
            assert!(sqes >= 4000);
            assert!(
                submits * 4 < sqes,
                "submissions are batched: {submits} enters for {sqes} reads"
            );
        }
    }
}

#[test]
fn a_tiny_staging_budget_applies_back_pressure_and_bounds_memory() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(4 << 20, 5);
    let file = temp_file(&data);
    let ring = RingConfig {
        staging_budget: 2 * ((1 << 20) + 8192),
        ..RingConfig::default()
    };
    let (executor, info) = engine(Backend::IoUring, ring);
    let ring = info.ring.expect("io_uring");
    assert_eq!(ring.staging().slots(), 2);
    // Reads through the page cache land in place: no staging memory is made for them.
    let ranges: Vec<(u64, u64)> = (0..4).map(|i| (i << 20, 1 << 20)).collect();
    let (statuses, bytes) = load(&executor, file.path(), &ranges, IoPolicy::Buffered);
    assert!(statuses.iter().all(|s| *s == RequestStatus::Done), "{statuses:?}");
    check(&bytes, &data, &ranges);
    assert!(!ring.staging().has_memory(), "staging is made on first use only");
    assert!(
        !ring.features().fixed_buffers,
        "nothing registered before the first use"
    );
    // Unaligned destinations force every direct read through a slot.
    let (statuses, bytes) = load(&executor, file.path(), &ranges, IoPolicy::Direct);
    assert!(statuses.iter().all(|s| *s == RequestStatus::Done), "{statuses:?}");
    check(&bytes, &data, &ranges);
    assert!(
        ring.stats().waited.load(Ordering::Relaxed) > 0,
        "reads waited for staging"
    );
    assert!(ring.staging().has_memory());
    assert!(
        ring.features().fixed_buffers,
        "the first staged read registered the slots"
    );
    assert_eq!(ring.staging().free_slots(), 2);
}

#[test]
fn injected_eio_fails_only_its_request_with_context() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-sector.bin");
    let good = dir.path().join("fine.bin");
    let data = pattern(200_000, 6);
    std::fs::write(&bad, &data).unwrap();
    std::fs::write(&good, &data).unwrap();
    let plan = Arc::new(FaultPlan::new("bad-sector", Fault::Eio));
    for backend in backends() {
        let (executor, _) = engine(
            backend,
            RingConfig {
                faults: Some(plan.clone()),
                ..RingConfig::default()
            },
        );
        let dest = HostBuffer::new(400_000);
        let mut batch = executor.batch();
        batch.push(Request::file(&bad, 4096, 100_000, &dest, 0)).unwrap();
        batch.push(Request::file(&good, 0, 200_000, &dest, 100_000)).unwrap();
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        let RequestStatus::Failed(err) = &report.requests[0].status else {
            panic!("{backend:?}: {:?}", report.requests[0].status)
        };
        assert_eq!(err.errno(), Some(libc::EIO), "{backend:?}: {err}");
        assert_eq!(err.path(), Some(bad.as_path()));
        assert!(err.offset().is_some_and(|o| o >= 4096), "{err}");
        assert_eq!(report.requests[1].status, RequestStatus::Done, "{backend:?}");
    }
}

#[test]
fn injected_short_reads_and_delays_still_deliver_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.bin");
    let slow = dir.path().join("slow.bin");
    let data = pattern(1 << 20, 7);
    std::fs::write(&short, &data).unwrap();
    std::fs::write(&slow, &data).unwrap();
    let plan =
        Arc::new(FaultPlan::new("short", Fault::Short(1000)).with("slow", Fault::Delay(Duration::from_millis(30))));
    let ranges = [(0u64, 1u64 << 20), (5, 300_000)];
    for backend in backends() {
        let (executor, info) = engine(
            backend,
            RingConfig {
                faults: Some(plan.clone()),
                ..RingConfig::default()
            },
        );
        for path in [&short, &slow] {
            for policy in [IoPolicy::Auto, IoPolicy::Buffered] {
                let (statuses, bytes) = load(&executor, path, &ranges, policy);
                assert!(
                    statuses.iter().all(|s| *s == RequestStatus::Done),
                    "{backend:?} {path:?}: {statuses:?}"
                );
                check(&bytes, &data, &ranges);
            }
        }
        if let Some(ring) = &info.ring {
            assert!(
                ring.stats().short_reads.load(Ordering::Relaxed) > 100,
                "short reads were resubmitted"
            );
        }
    }
}

#[test]
fn cancelling_an_in_flight_read_cancels_it_in_the_kernel() {
    if !io_uring_available() {
        return;
    }
    // A read from an empty pipe never completes on its own: only ASYNC_CANCEL ends it.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("never.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Hold the write end open (without writing) so opening the read end does not block.
    let _writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let (executor, info) = engine(Backend::IoUring, RingConfig::default());
    let ring = info.ring.expect("io_uring");
    let dest = HostBuffer::new(4096);
    let mut batch = executor.batch();
    batch
        .push(Request::file(&fifo, 0, 4096, &dest, 0).io(IoPolicy::Buffered))
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while ring.stats().sqes.load(Ordering::Relaxed) == 0 || ring.stats().submits.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the read was never submitted");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ring.in_flight_ops(), 1, "the read is in the kernel");
    let ticket = batch.cancel();
    assert!(ticket.wait_timeout(PATIENCE), "the cancellation is acknowledged");
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert_eq!(report.requests[0].status, RequestStatus::Cancelled);
    assert!(ring.stats().cancels_sent.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        ring.stats().cancelled.load(Ordering::Relaxed),
        1,
        "the kernel answered ECANCELED"
    );
    assert_eq!(ring.in_flight_ops(), 0);
}

/// A FIFO whose reads never complete on their own (its write end is held open, unwritten).
fn never_readable_fifo(dir: &std::path::Path) -> (std::path::PathBuf, std::fs::File) {
    let fifo = dir.join("never.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    (fifo, writer)
}

/// Waits until `reads` reads are in the ring and have been submitted.
fn wait_in_kernel(ring: &dsr::stages::io::Ring, reads: usize) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while ring.in_flight_ops() < reads || ring.stats().sqes.load(Ordering::Relaxed) < reads as u64 {
        assert!(std::time::Instant::now() < deadline, "the reads never reached the ring");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Idle workers submit what is queued when they poll.
    std::thread::sleep(Duration::from_millis(20));
    assert!(ring.stats().submits.load(Ordering::Relaxed) > 0);
}

/// What keeps a FIFO's reads pending: its directory and its open write end.
struct HeldFifo {
    _dir: tempfile::TempDir,
    _writer: std::fs::File,
}

/// An io_uring executor with `reads` buffered reads of a never-readable FIFO in the kernel.
fn reads_stuck_in_the_kernel(reads: u64) -> (dsr::Executor, Arc<dsr::stages::io::Ring>, dsr::Batch, HeldFifo) {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, writer) = never_readable_fifo(dir.path());
    let (executor, info) = engine(Backend::IoUring, RingConfig::default());
    let ring = info.ring.expect("io_uring");
    let dest = HostBuffer::new(reads as usize * 4096);
    let mut batch = executor.batch();
    for i in 0..reads {
        batch
            .push(Request::file(&fifo, 0, 4096, &dest, i * 4096).io(IoPolicy::Buffered))
            .unwrap();
    }
    let batch = executor.submit(batch).unwrap();
    wait_in_kernel(&ring, reads as usize);
    let held = HeldFifo {
        _dir: dir,
        _writer: writer,
    };
    (executor, ring, batch, held)
}

#[test]
fn draining_the_ring_cancels_and_reaps_every_read_before_it_returns() {
    if !io_uring_available() {
        return;
    }
    let (_executor, ring, batch, _fifo) = reads_stuck_in_the_kernel(3);

    // What the executor's shutdown calls: nothing was cancelled, yet every read ends.
    dsr::engine::Reactor::drain(&*ring);
    assert_eq!(
        ring.in_flight_ops(),
        0,
        "drain returns only once every completion is reaped"
    );
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert_eq!(report.cancelled(), 3, "{report:?}");
    assert_eq!(ring.staging().free_slots(), ring.staging().slots());
}

#[test]
fn regression_dropping_the_executor_with_a_read_in_the_kernel_returns() {
    if !io_uring_available() {
        return;
    }
    let (executor, ring, batch, _fifo) = reads_stuck_in_the_kernel(1);

    let (done, dropped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(executor);
        let _ = done.send(());
    });
    dropped
        .recv_timeout(PATIENCE)
        .expect("the executor's drop cancels the read and returns");
    assert_eq!(ring.in_flight_ops(), 0);
    assert_eq!(batch.wait_timeout(PATIENCE).expect("reported").cancelled(), 1);
    drop(batch);
    assert_eq!(
        Arc::strong_count(&ring),
        1,
        "no read keeps the ring alive past the executor"
    );
}

#[test]
fn delayed_completions_keep_their_staging_until_they_arrive() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(1 << 20, 8);
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow.bin");
    std::fs::write(&slow, &data).unwrap();
    // Long enough that a loaded machine still checks before the completion is let through.
    let plan = Arc::new(FaultPlan::new("slow", Fault::Delay(Duration::from_secs(2))));
    let (executor, info) = engine(
        Backend::IoUring,
        RingConfig {
            faults: Some(plan),
            ..RingConfig::default()
        },
    );
    let ring = info.ring.expect("io_uring");
    let slots = ring.staging().slots();
    let dest = HostBuffer::new(200_000);
    let mut batch = executor.batch();
    // Unaligned: direct reads through staging slots.
    batch
        .push(Request::file(&slow, 1, 100_000, &dest, 1).io(IoPolicy::Direct))
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let ticket = batch.cancel();
    assert!(
        !ticket.is_acknowledged(),
        "the read's completion has not been handled yet"
    );
    assert_eq!(
        ring.staging().free_slots(),
        slots - 1,
        "its slot is still owned by the read"
    );
    assert!(ticket.wait_timeout(PATIENCE));
    batch.wait_timeout(PATIENCE).expect("drains");
    assert_eq!(
        ring.staging().free_slots(),
        slots,
        "the slot came back with the completion"
    );
}

/// A compressible asset and its GDeflate stream.
fn compressed_asset(len: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let noise = pattern(len, seed);
    let data: Vec<u8> = (0..len)
        .map(|i| if i % 3 == 0 { noise[i] } else { b"scratch"[i % 7] })
        .collect();
    let stream = dsr_gdeflate::compress(&data, dsr_gdeflate::Level::FASTEST).unwrap();
    (data, stream)
}

fn with_scratch_budget(budget: u64) -> ExecutorConfig {
    ExecutorConfig {
        workers: 2,
        scratch_budget: budget,
        ..ExecutorConfig::default()
    }
}

#[test]
fn queued_compressed_requests_hold_scratch_within_the_budget() {
    let (data, stream) = compressed_asset(300_000, 31);
    let file = temp_file(&stream);
    let held = block_size(stream.len()) as u64;
    // Room for one request and a half: with two workers taking requests, one often waits.
    let budget = held + held / 2;
    for backend in backends() {
        let (executor, _) = engine_with(backend, RingConfig::default(), with_scratch_budget(budget));
        let count = 48;
        let dest = HostBuffer::new(count * data.len());
        let mut batch = executor.batch();
        for i in 0..count {
            batch
                .push(
                    Request::file(file.path(), 0, stream.len() as u64, &dest, (i * data.len()) as u64)
                        .gdeflate(data.len() as u64),
                )
                .unwrap();
        }
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        assert!(report.all_done(), "{backend:?}: {:?}", report.first_failure());
        let mut dest = dest;
        for (i, got) in dest.as_slice().unwrap().chunks(data.len()).enumerate() {
            assert!(got == data, "{backend:?}: request {i}");
        }
        let stats = executor.scratch();
        assert!(stats.peak <= budget, "{backend:?}: peak {} over {budget}", stats.peak);
        assert!(stats.peak >= held);
        assert!(
            stats.waits > 0,
            "{backend:?}: 48 requests on a one-request budget must queue"
        );
        assert_eq!(
            (stats.in_use, stats.waiting),
            (0, 0),
            "{backend:?}: everything came back"
        );
        assert!(stats.in_use + stats.cached <= budget);
        assert!(
            stats.allocations < count as u64,
            "{backend:?}: released blocks are reused ({} allocations)",
            stats.allocations
        );
    }
}

#[test]
fn a_stream_larger_than_the_budget_is_let_in_alone() {
    let (data, stream) = compressed_asset(200_000, 32);
    let file = temp_file(&stream);
    for backend in backends() {
        let (executor, _) = engine_with(backend, RingConfig::default(), with_scratch_budget(4096));
        let dest = HostBuffer::new(3 * data.len());
        let mut batch = executor.batch();
        for i in 0..3u64 {
            batch
                .push(
                    Request::file(file.path(), 0, stream.len() as u64, &dest, i * data.len() as u64)
                        .gdeflate(data.len() as u64),
                )
                .unwrap();
        }
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        assert!(report.all_done(), "{backend:?}: {:?}", report.first_failure());
        let stats = executor.scratch();
        assert_eq!(
            stats.peak,
            block_size(stream.len()) as u64,
            "{backend:?}: one at a time"
        );
        assert_eq!((stats.in_use, stats.cached), (0, 0), "an over-budget block is not kept");
    }
}

#[test]
fn requests_waiting_for_scratch_cancel_at_once_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (data, stream) = compressed_asset(200_000, 33);
    let slow = dir.path().join("slow.gdf");
    let fine = dir.path().join("fine.gdf");
    std::fs::write(&slow, &stream).unwrap();
    std::fs::write(&fine, &stream).unwrap();
    // Slow enough that the cancellation is acknowledged long before the holder finishes.
    let plan = Arc::new(FaultPlan::new("slow", Fault::Delay(Duration::from_millis(1500))));
    let held = stream.len() as u64;
    for backend in backends() {
        let ring = RingConfig {
            faults: Some(plan.clone()),
            ..RingConfig::default()
        };
        let (executor, _) = engine_with(backend, ring, with_scratch_budget(held));
        let dest = HostBuffer::new(3 * data.len());
        let request = |path: &std::path::Path, slot: u64| {
            Request::file(path, 0, held, &dest, slot * data.len() as u64).gdeflate(data.len() as u64)
        };
        let mut first = executor.batch();
        first.push(request(&slow, 0)).unwrap();
        let first = executor.submit(first).unwrap();
        let mut queued = executor.batch();
        queued.push(request(&fine, 1)).unwrap();
        queued.push(request(&fine, 2)).unwrap();
        let queued = executor.submit(queued).unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        while executor.scratch().waiting < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{backend:?}: {:?}",
                executor.scratch()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let ticket = queued.cancel_request(dsr::RequestId::from_index(0));
        assert!(
            ticket.wait_timeout(Duration::from_millis(1000)),
            "{backend:?}: a queued request leaves the queue when cancelled, not when scratch frees"
        );
        assert!(first.report().is_none(), "{backend:?}: the holder is still reading");
        assert_eq!(executor.scratch().waiting, 1);
        let first = first.wait_timeout(PATIENCE).expect("drains");
        let queued = queued.wait_timeout(PATIENCE).expect("drains");
        assert_eq!(first.requests[0].status, RequestStatus::Done, "{backend:?}");
        assert_eq!(queued.requests[0].status, RequestStatus::Cancelled, "{backend:?}");
        assert_eq!(queued.requests[1].status, RequestStatus::Done, "{backend:?}");
        let mut dest = dest;
        let bytes = dest.as_slice().unwrap();
        assert!(bytes[..data.len()] == data[..] && bytes[2 * data.len()..] == data[..]);
        let stats = executor.scratch();
        let block = block_size(stream.len()) as u64;
        assert_eq!((stats.in_use, stats.waiting, stats.peak), (0, 0, block), "{backend:?}");
    }
}

/// Loads all of `path` (`data`, a whole number of pages) into an aligned buffer with
/// `IoPolicy::Auto` and checks the bytes.
fn load_whole_with_auto(executor: &dsr::Executor, path: &std::path::Path, data: &[u8]) {
    let dest = HostBuffer::new(data.len());
    let mut batch = executor.batch();
    batch
        .push(Request::file(path, 0, data.len() as u64, &dest, 0).io(IoPolicy::Auto))
        .unwrap();
    assert!(executor.submit(batch).unwrap().wait().all_done());
    let mut dest = dest;
    assert!(dest.as_slice().unwrap() == data);
}

/// `IoPolicy::Auto` asks the page cache first: a range that is cached reads through the cache,
/// a cold one with direct I/O. A warm load does not open its file for direct I/O at all (one
/// descriptor a file, not two). The file lives on the build disk (`disk_file`).
#[test]
fn auto_reads_cached_ranges_through_the_cache_and_cold_ones_directly() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(4 << 20, 21);
    let file = disk_file(&data);
    // Whatever the build disk is: a rotational one would read cold files buffered (next test).
    let config = RingConfig {
        rotational_buffered: false,
        ..RingConfig::default()
    };
    let (executor, info) = engine(Backend::IoUring, config);
    let ring = info.ring.expect("the ring backend");
    let counts = || {
        let stats = ring.stats();
        (
            stats.auto_cached.load(Ordering::Relaxed),
            stats.direct_landed.load(Ordering::Relaxed),
            stats.direct_opens.load(Ordering::Relaxed),
        )
    };
    let load_aligned = || load_whole_with_auto(&executor, file.path(), &data);
    // Cold: dropped from the cache, so Auto reads it directly (four 1 MiB reads).
    evict(&file);
    let before = counts();
    load_aligned();
    let cold = counts();
    assert_eq!(cold.0, before.0, "no cold read went through the cache");
    assert_eq!(cold.1, before.1 + 4, "the cold reads landed directly");
    assert!(cold.2 > before.2, "the cold load opened its file for direct I/O");
    // Warm: read once through the cache, then Auto reads it through the cache too.
    let _ = std::fs::read(file.path()).unwrap();
    load_aligned();
    let warm = counts();
    assert_eq!(warm.0, cold.0 + 4, "the warm reads went through the cache");
    assert_eq!(warm.1, cold.1, "no warm read was direct");
    assert_eq!(warm.2, cold.2, "the warm load opened nothing for direct I/O");
    assert!(
        ["cachestat", "mincore"].contains(&dsr::stages::io::residency::probe().name()),
        "a probe is in use"
    );
}

/// By default `Auto` reads a cold file on a rotational disk through the page cache (readahead
/// gains more there than direct I/O saves), and opens nothing for direct I/O; on any other disk
/// it reads directly. The build disk decides which half runs; the disk's answer is checked
/// against sysfs by `residency`'s own test.
#[test]
fn auto_reads_cold_files_on_rotational_disks_through_the_cache() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(4 << 20, 23);
    let file = disk_file(&data);
    let rotational = {
        let f = std::fs::File::open(file.path()).unwrap();
        dsr::stages::io::residency::on_rotational_disk(std::os::fd::AsRawFd::as_raw_fd(&f))
    };
    eprintln!("the build disk is rotational: {rotational}");
    let (executor, info) = engine(Backend::IoUring, RingConfig::default());
    let ring = info.ring.expect("the ring backend");
    let counts = || {
        let stats = ring.stats();
        (
            stats.auto_rotational.load(Ordering::Relaxed) + stats.auto_cached.load(Ordering::Relaxed),
            stats.direct_landed.load(Ordering::Relaxed),
            stats.direct_opens.load(Ordering::Relaxed),
            stats.auto_rotational.load(Ordering::Relaxed),
        )
    };
    evict(&file);
    let before = counts();
    load_whole_with_auto(&executor, file.path(), &data);
    let after = counts();
    if rotational {
        // The first read is cold; the kernel's readahead may have cached the later ones' ranges
        // by the time they ask, which sends them through the cache as cached.
        assert!(after.3 > before.3, "the cold read went through the cache as rotational");
        assert_eq!(after.0, before.0 + 4, "all four 1 MiB reads went through the cache");
        assert_eq!(
            (after.1, after.2),
            (before.1, before.2),
            "nothing direct, nothing opened for it"
        );
    } else {
        assert_eq!(after.3, before.3, "no read counted as rotational");
        assert_eq!(after.1, before.1 + 4, "the cold reads landed directly");
    }
}

/// Installing the I/O stages grows the process's descriptor table, so a load's opens never
/// wait for it to grow (each growth in a threaded process waits out an RCU grace period):
/// afterwards the table has room for `RESERVED_DESCRIPTORS`, or the open-file limit. Either
/// backend; positioned reads here, which need nothing of the kernel.
#[test]
fn installing_io_grows_the_descriptor_table_before_any_load() {
    let (_executor, _info) = engine(Backend::Pread, RingConfig::default());
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the struct, which lives across the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    let wanted = limit.rlim_cur.min(dsr::stages::io::open::RESERVED_DESCRIPTORS);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let slots: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("FDSize:"))
        .expect("an FDSize line")
        .trim()
        .parse()
        .unwrap();
    assert!(slots >= wanted, "the table has {slots} slots, wanted {wanted}");
}

/// A buffered read whose pages are all cached is copied on the worker, with no SQE; one whose
/// pages are not goes to the blocking-read threads (or, with them off, to the ring); one cached in
/// part is copied as far as the cache holds it and the rest is read there. Every byte lands
/// either way.
#[test]
fn cached_pages_are_copied_on_the_worker_and_the_rest_read_by_threads_or_the_ring() {
    if !io_uring_available() {
        return;
    }
    let data = pattern(4 << 20, 22);
    let file = disk_file(&data);
    for threads in [true, false] {
        let (executor, ring) = ring_engine(threads);
        // (whole copies on the workers, reads of what the cache lacked, SQEs)
        let counts = || {
            let stats = ring.stats();
            let sqes = stats.sqes.load(Ordering::Relaxed);
            let rest = if threads {
                stats.thread_reads.load(Ordering::Relaxed)
            } else {
                sqes
            };
            (stats.resident_copies.load(Ordering::Relaxed), rest, sqes)
        };
        // One 3 MiB range at an unaligned offset and destination (three read nodes of 1 MiB).
        let range = [(12_345u64, 3u64 << 20)];
        let read = || {
            let (statuses, bytes) = load(&executor, file.path(), &range, IoPolicy::Buffered);
            assert_eq!(statuses, [RequestStatus::Done]);
            check(&bytes, &data, &range);
        };

        evict(&file);
        let before = counts();
        read();
        let cold = counts();
        // (The kernel's readahead for one read may cache a later one's pages before it runs.)
        assert!(
            cold.0 < before.0 + 3,
            "the reads of an evicted file were not all copied whole"
        );
        assert!(
            cold.1 > before.1,
            "threads {threads}: the evicted file was read: {before:?} -> {cold:?}"
        );
        if threads {
            assert_eq!(cold.2, before.2, "no SQE for a buffered read with the threads on");
        }

        read();
        let warm = counts();
        assert_eq!(warm.0, cold.0 + 3, "the cached reads were copied on the workers");
        assert_eq!(warm.1, cold.1, "and none was read elsewhere");

        // Cached in part: the first 2 MiB are read into the cache, and whatever readahead
        // brought in after them is dropped again. A 1 MiB read from 1.5 MiB copies the cached
        // half on its worker and leaves the other half to the threads or the ring.
        cache_only_head(&file, 2 << 20);
        let fd = std::os::fd::AsRawFd::as_raw_fd(file.as_file());
        assert_eq!(
            dsr::stages::io::residency::resident(fd, 0, 2 << 20),
            Some((512, 512)),
            "the head is cached"
        );
        let bytes_before = ring.stats().resident_bytes.load(Ordering::Relaxed);
        let straddling = [(3u64 << 19, 1u64 << 20)];
        let (statuses, bytes) = load(&executor, file.path(), &straddling, IoPolicy::Buffered);
        assert_eq!(statuses, [RequestStatus::Done]);
        check(&bytes, &data, &straddling);
        let half = counts();
        assert_eq!(
            ring.stats().resident_bytes.load(Ordering::Relaxed) - bytes_before,
            1 << 19,
            "the cached half was copied on the worker"
        );
        assert_eq!(half.0, warm.0, "the read was not copied whole");
        assert!(half.1 > warm.1, "threads {threads}: the other half was read");
    }
}
