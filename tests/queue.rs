//! The DirectStorage-shaped queue: statuses report the first failure in enqueue order, entries
//! wait for everything before them (batches in flight included) without delaying later work, a
//! full queue blocks (and `try` says would-block), cancellation by tag is not a failure, error
//! records, close, refusals, many threads at once; and the runtime (factory) around it.

use std::sync::Arc;
use std::time::Duration;

use dsr::{
    ErrorKind, Fence, HostBuffer, Queue, QueueConfig, Request, Runtime, RuntimeConfig, SourceType, StatusArray,
    StatusEntry,
};

use crate::common::*;

fn memory_queue(executor: dsr::Executor, capacity: u32) -> Queue {
    let config = QueueConfig {
        source: SourceType::Memory,
        capacity,
        ..QueueConfig::default()
    };
    Queue::new(Arc::new(executor), config).unwrap()
}

/// 64 bytes of `bytes` into `dest` at `slot * 64`.
fn copy_request(bytes: &Arc<[u8]>, dest: &HostBuffer, slot: u64, tag: u64) -> Request {
    Request::memory(bytes.clone(), 0, 64, dest, slot * 64).tag(tag)
}

fn signalled(queue: &Queue) -> Arc<Fence> {
    let fence = Fence::new().unwrap();
    queue.enqueue_signal(&fence, 1).unwrap();
    queue.submit().unwrap();
    fence
}

/// Waits until `dest` is ours alone again and returns its bytes.
fn landed(dest: &mut HostBuffer) -> Vec<u8> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(bytes) = dest.as_slice() {
            return bytes.to_vec();
        }
        assert!(std::time::Instant::now() < deadline, "the destination never came back");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn statuses_report_the_first_failure_in_enqueue_order() {
    let runtime = Runtime::default();
    let queue = runtime.create_queue(QueueConfig::default()).unwrap();
    let data = pattern(4096, 1);
    let file = temp_file(&data);
    let dir = tempfile::tempdir().unwrap();
    let [missing_a, missing_b] = ["a.pak", "b.pak"].map(|n| dir.path().join(n));
    let mut dest = HostBuffer::new(5 * 4096);
    let statuses = StatusArray::new(2);
    let long_name = "x".repeat(100);
    queue.enqueue(Request::file(file.path(), 0, 4096, &dest, 0)).unwrap();
    queue
        .enqueue(Request::file(&missing_a, 0, 4096, &dest, 4096).name(long_name.clone()))
        .unwrap();
    queue.enqueue(Request::file(&missing_b, 0, 4096, &dest, 8192)).unwrap();
    queue.enqueue_status(&statuses, 0).unwrap();
    assert_eq!(statuses.get(0), StatusEntry::Pending);
    queue
        .enqueue(Request::file(file.path(), 0, 4096, &dest, 12288))
        .unwrap();
    queue.enqueue_status(&statuses, 1).unwrap();
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE), "the signal after everything fired");

    let StatusEntry::Failed(err) = statuses.get(0) else {
        panic!("{:?}", statuses.get(0))
    };
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.path(),
        Some(missing_a.as_path()),
        "the first failure in enqueue order: {err}"
    );
    assert_eq!(
        statuses.get(1),
        StatusEntry::Ok,
        "a status reports only what came after the last"
    );
    assert!(poll_readable(queue.error_event(), 0), "the error event fired");

    let record = queue.retrieve_error_record();
    assert_eq!(record.failure_count, 2);
    let first = record.first_failure.expect("a first failure");
    assert_eq!(first.command, dsr::CommandKind::Request);
    assert_eq!(first.file.as_deref(), Some(missing_a.as_path()));
    assert_eq!(
        first.name.as_deref(),
        Some(&long_name[..64]),
        "names are cut to 64 characters"
    );
    assert_eq!(first.error.kind(), ErrorKind::NotFound);
    drop(first);
    assert_eq!(
        queue.retrieve_error_record().failure_count,
        0,
        "retrieving resets the record"
    );
    let bytes = landed(&mut dest);
    assert!(bytes[..4096] == data[..] && bytes[12288..16384] == data[..]);
}

fn poll_readable(fd: std::os::fd::BorrowedFd<'_>, timeout_ms: i32) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) == 1 }
}

#[test]
fn entries_wait_for_batches_in_flight_but_never_delay_later_work() {
    let gate = Gate::new();
    let queue = memory_queue(gated_executor(2, &gate), 128);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 2));
    let dest = HostBuffer::new(64);
    let mut later = HostBuffer::new(64);
    // A request held at the gate, in a batch of its own.
    queue.enqueue(copy_request(&bytes, &dest, 0, GATED)).unwrap();
    queue.submit().unwrap();
    gate.wait_arrivals(1);
    let statuses = StatusArray::new(1);
    queue.enqueue_status(&statuses, 0).unwrap();
    let notified = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = notified.clone();
    queue
        .enqueue_notify(Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)))
        .unwrap();
    let fence = signalled(&queue);
    // Work enqueued after the entries runs while they wait.
    queue.enqueue(copy_request(&bytes, &later, 0, 0)).unwrap();
    queue.submit().unwrap();
    assert!(
        landed(&mut later) == bytes[..],
        "later work ran past the waiting entries"
    );
    assert_eq!(
        fence.value(),
        0,
        "the signal waits for the held request in the earlier batch"
    );
    assert_eq!(statuses.get(0), StatusEntry::Pending);
    assert!(
        !notified.load(std::sync::atomic::Ordering::SeqCst),
        "the notify entry ran early"
    );
    gate.open();
    assert!(fence.wait_timeout(1, PATIENCE));
    assert!(
        notified.load(std::sync::atomic::Ordering::SeqCst),
        "the notify entry, enqueued before the signal, ran before it"
    );
    assert_eq!(
        statuses.get(0),
        StatusEntry::Ok,
        "the status fired before the later signal"
    );
    assert!(poll_readable(fence.eventfd(), 0));
}

#[test]
fn a_full_queue_blocks_and_try_says_would_block() {
    let gate = Gate::new();
    let queue = memory_queue(gated_executor(2, &gate), 128);
    assert_eq!(queue.query().empty_slots, 127, "a ring with one reserved slot");
    assert_eq!(queue.query().until_auto_submit, 64);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 3));
    let dest = HostBuffer::new(200 * 64);
    for slot in 0..127 {
        queue.enqueue(copy_request(&bytes, &dest, slot, GATED)).unwrap();
    }
    assert_eq!(queue.query().empty_slots, 0);
    let err = queue.try_enqueue(copy_request(&bytes, &dest, 127, GATED)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    let blocked = {
        let (queue, bytes, dest) = (queue.clone(), bytes.clone(), dest.clone());
        std::thread::spawn(move || queue.enqueue(copy_request(&bytes, &dest, 128, GATED)))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!blocked.is_finished(), "enqueue waits for a slot");
    gate.open();
    blocked.join().unwrap().unwrap();
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE));
    wait_until("every slot is back", || queue.query().empty_slots == 127);
}

#[test]
fn a_blocked_enqueue_wakes_when_entries_free_the_queue() {
    // Finishing requests wake a blocked enqueuer only once an eighth of the queue is back; here
    // one request holds a slot and status entries hold the rest, so the wake-up must come from
    // the entries as they fire.
    let gate = Gate::new();
    let queue = memory_queue(gated_executor(2, &gate), 128);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 4));
    let dest = HostBuffer::new(2 * 64);
    queue.enqueue(copy_request(&bytes, &dest, 0, GATED)).unwrap();
    let statuses = StatusArray::new(126);
    for index in 0..126 {
        queue.enqueue_status(&statuses, index).unwrap();
    }
    assert_eq!(queue.query().empty_slots, 0);
    let blocked = {
        let (queue, bytes, dest) = (queue.clone(), bytes.clone(), dest.clone());
        std::thread::spawn(move || queue.enqueue(copy_request(&bytes, &dest, 1, 0)))
    };
    gate.wait_arrivals(1);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!blocked.is_finished(), "enqueue waits for a slot");
    gate.open();
    wait_until("the blocked enqueue returns", || blocked.is_finished());
    blocked.join().unwrap().unwrap();
    assert!(signalled(&queue).wait_timeout(1, PATIENCE));
    assert!((0..126).all(|i| statuses.get(i) == StatusEntry::Ok));
}

#[test]
fn cancelling_by_tag_is_not_a_failure() {
    let gate = Gate::new();
    let queue = memory_queue(gated_executor(2, &gate), 256);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 4));
    let mut dest = HostBuffer::new(40 * 64);
    for slot in 0..40 {
        let tag = GATED | if slot % 2 == 0 { 0x10 } else { 0x20 };
        queue.enqueue(copy_request(&bytes, &dest, slot, tag)).unwrap();
    }
    let statuses = StatusArray::new(1);
    queue.enqueue_status(&statuses, 0).unwrap();
    queue.submit().unwrap();
    gate.wait_arrivals(2);
    queue.cancel_requests_with_tag(0xff, 0x10).unwrap();
    gate.open();
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE));
    assert_eq!(statuses.get(0), StatusEntry::Ok, "cancelled requests are not failures");
    assert_eq!(queue.retrieve_error_record().failure_count, 0);
    let landed = landed(&mut dest);
    let slot = |i: usize| &landed[i * 64..(i + 1) * 64];
    assert!(
        (0..40).filter(|i| i % 2 == 1).all(|i| slot(i) == &bytes[..]),
        "the other tag ran"
    );
    let skipped = (0..40)
        .filter(|i| i % 2 == 0)
        .filter(|&i| slot(i).iter().all(|&b| b == 0))
        .count();
    assert!(
        skipped >= 18,
        "the matched requests that had not started were skipped ({skipped})"
    );
}

#[test]
fn a_closed_queue_completes_nothing_and_refuses_everything() {
    let gate = Gate::new();
    let queue = memory_queue(gated_executor(2, &gate), 128);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 5));
    let dest = HostBuffer::new(10 * 64);
    queue.enqueue(copy_request(&bytes, &dest, 0, GATED)).unwrap();
    queue.submit().unwrap();
    gate.wait_arrivals(1);
    queue.enqueue(copy_request(&bytes, &dest, 1, 0)).unwrap();
    let statuses = StatusArray::new(1);
    queue.enqueue_status(&statuses, 0).unwrap();
    let fence = Fence::new().unwrap();
    queue.enqueue_signal(&fence, 7).unwrap();
    let closing = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.close())
    };
    std::thread::sleep(Duration::from_millis(20));
    gate.open();
    closing.join().unwrap();
    assert!(queue.is_closed());
    queue.close();
    assert_eq!(fence.value(), 0, "nothing completes after close");
    assert!(!statuses.is_complete(0));
    for err in [
        queue.enqueue(copy_request(&bytes, &dest, 2, 0)).unwrap_err(),
        queue.submit().unwrap_err(),
        queue.enqueue_signal(&fence, 8).unwrap_err(),
        queue.cancel_requests_with_tag(0, 0).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Closed);
    }
}

/// Regression (found by the `queue_sequences` fuzz target): a status entry refused by a closed
/// queue was left `Unused`, wiping another queue's result the caller had not read yet.
#[test]
fn a_refused_status_entry_keeps_the_result_it_held() {
    let executor = Arc::new(executor(1));
    let config = QueueConfig {
        source: SourceType::Memory,
        capacity: 128,
        ..QueueConfig::default()
    };
    let done = Queue::new(executor.clone(), config.clone()).unwrap();
    let closed = Queue::new(executor, config).unwrap();
    closed.close();
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 9));
    let dest = HostBuffer::new(64);
    let statuses = StatusArray::new(1);
    done.enqueue(copy_request(&bytes, &dest, 0, 0)).unwrap();
    done.enqueue_status(&statuses, 0).unwrap();
    assert!(signalled(&done).wait_timeout(1, PATIENCE));
    assert_eq!(statuses.get(0), StatusEntry::Ok);
    let err = closed.enqueue_status(&statuses, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(statuses.get(0), StatusEntry::Ok, "a refusal changes nothing");
}

#[test]
fn queues_refuse_what_does_not_fit_them() {
    let executor = Arc::new(executor(1));
    for capacity in [0, 127, 0x2001] {
        let config = QueueConfig {
            capacity,
            ..QueueConfig::default()
        };
        let err = Queue::new(executor.clone(), config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    }
    let file_queue = Queue::new(executor.clone(), QueueConfig::default()).unwrap();
    let dest = HostBuffer::new(64);
    let bytes: Arc<[u8]> = Arc::from(vec![1u8; 64]);
    let err = file_queue
        .enqueue(Request::memory(bytes.clone(), 0, 64, &dest, 0))
        .unwrap_err();
    assert!(err.message().contains("file requests"), "{err}");
    let err = file_queue
        .enqueue(Request::file("/nowhere", 0, 64, &dest, 32))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::DestinationTooSmall,
        "lowering's refusals come through"
    );
    assert_eq!(
        file_queue.query().empty_slots,
        file_queue.config().capacity - 1,
        "no slot taken"
    );
    let statuses = StatusArray::new(1);
    file_queue.enqueue_status(&statuses, 0).unwrap();
    assert!(
        file_queue.enqueue_status(&statuses, 0).is_err(),
        "a pending entry is not enqueued twice"
    );
    assert!(file_queue.enqueue_status(&statuses, 1).is_err(), "no such entry");
    let fence = signalled(&file_queue);
    assert!(fence.wait_timeout(1, PATIENCE));
    assert_eq!(statuses.get(0), StatusEntry::Ok);
    file_queue.enqueue_status(&statuses, 0).unwrap();
    assert!(
        signalled(&file_queue).wait_timeout(1, PATIENCE),
        "a completed entry may be enqueued again"
    );
}

#[test]
fn stress_many_threads_share_one_queue() {
    let queue = memory_queue(executor(2), 512);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 6));
    let threads = 4;
    let per_thread = 1000u64;
    let dest = HostBuffer::new((threads as u64 * per_thread * 64) as usize);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (queue, bytes, dest) = (queue.clone(), bytes.clone(), dest.clone());
            std::thread::spawn(move || {
                let statuses = StatusArray::new(10);
                for i in 0..per_thread {
                    queue
                        .enqueue(copy_request(&bytes, &dest, t as u64 * per_thread + i, 0))
                        .unwrap();
                    if i % 100 == 99 {
                        queue.enqueue_status(&statuses, (i / 100) as usize).unwrap();
                    }
                }
                let fence = signalled(&queue);
                assert!(fence.wait_timeout(1, PATIENCE));
                (0..10).all(|i| statuses.get(i) == StatusEntry::Ok)
            })
        })
        .collect();
    for handle in handles {
        assert!(handle.join().unwrap(), "every status came back Ok");
    }
    let mut dest = dest;
    let landed = landed(&mut dest);
    assert!(landed.chunks(64).all(|c| c == &bytes[..]), "every request landed");
    assert_eq!(queue.query().empty_slots, 511);
}

/// A copy stage that fails the requests tagged [`FAILS`], naming the rest of the tag.
#[derive(Debug)]
struct Failing;

const FAILS: u64 = 1 << 62;

impl dsr::engine::Stage for Failing {
    fn run(&self, node: dsr::engine::NodeRef<'_>) -> dsr::engine::Outcome {
        if node.request_info().tag & FAILS != 0 {
            let tag = node.request_info().tag & !FAILS;
            return dsr::engine::Outcome::Failed(dsr::Error::new(ErrorKind::Io, format!("injected into {tag}")));
        }
        dsr::stages::CopyStage.run(node)
    }
}

#[test]
fn stress_finishers_without_the_lock_keep_enqueue_order_slots_and_callbacks() {
    // More workers than cores and a small queue: enqueues block on slots that finishers give
    // back without the ledger's lock, and fronts move under racing finishers.
    let executor = dsr::executor_builder(dsr::ExecutorConfig::default())
        .workers(6)
        .stage(dsr::NodeKind::Copy, Arc::new(Failing))
        .build()
        .unwrap();
    let queue = memory_queue(executor, 128);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 9));
    let requests = 20_000u64;
    let segment = 97;
    let dest = HostBuffer::new((requests * 64) as usize);
    let statuses = StatusArray::new((requests / segment + 1) as usize);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Request i fails when i % 13 == 5: each segment's first failure is known in advance.
    let fails = |i: u64| i % 13 == 5;
    let mut expected = Vec::new();
    let mut first: Option<u64> = None;
    for i in 0..requests {
        let tag = i | if fails(i) { FAILS } else { 0 };
        let counter = calls.clone();
        queue
            .enqueue_with(
                copy_request(&bytes, &dest, i, tag).name(format!("request {i}")),
                Box::new(move |_| {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }),
                true,
            )
            .unwrap();
        if fails(i) && first.is_none() {
            first = Some(i);
        }
        if i % segment == segment - 1 {
            queue.enqueue_status(&statuses, expected.len()).unwrap();
            expected.push(first.take());
        }
    }
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE), "the last signal fired");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        requests,
        "each callback ran once"
    );
    for (index, first) in expected.iter().enumerate() {
        match (statuses.get(index), first) {
            (StatusEntry::Ok, None) => {}
            (StatusEntry::Failed(error), Some(i)) => {
                assert!(
                    error.to_string().contains(&format!("injected into {i}")),
                    "status {index}: {error}, expected request {i}'s failure"
                );
            }
            (got, want) => panic!("status {index}: {got:?}, expected the first failure {want:?}"),
        }
    }
    let record = queue.retrieve_error_record();
    assert_eq!(
        u64::from(record.failure_count),
        (0..requests).filter(|&i| fails(i)).count() as u64
    );
    let first = record.first_failure.expect("a first failure");
    assert_eq!(
        first.name.as_deref(),
        Some("request 5"),
        "the first failure in enqueue order"
    );
    assert_eq!(first.request.tag, 5 | FAILS, "the record describes the request");
    assert_eq!(first.request.destination_offset, 5 * 64);
    assert_eq!(queue.query().empty_slots, 127, "every slot came back");
    // The record holds no buffer: the destination is the caller's alone again.
    let mut dest = dest;
    let landed = landed(&mut dest);
    for (i, chunk) in landed.chunks(64).enumerate() {
        assert_eq!(chunk == &bytes[..], !fails(i as u64), "request {i}");
    }
    drop(first);
}

#[test]
fn the_runtime_configures_until_a_queue_or_file_exists() {
    let runtime = Runtime::new(RuntimeConfig {
        workers: 2,
        ..RuntimeConfig::default()
    });
    assert!(runtime
        .compression_support()
        .contains(dsr::CompressionSupport::CPU_FALLBACK));
    let data = pattern(10_000, 7);
    let file = temp_file(&data);
    let opened = runtime.open_file(file.path()).unwrap();
    assert_eq!(opened.size().unwrap(), 10_000);
    let err = runtime
        .set_config(RuntimeConfig {
            force_file_buffering: true,
            ..RuntimeConfig::default()
        })
        .unwrap_err();
    assert!(err.message().contains("cannot change"), "{err}");
    let queue = runtime.create_queue(QueueConfig::default()).unwrap();
    let mut dest = HostBuffer::new(10_000);
    queue.enqueue(opened.request(0, 10_000, &dest, 0)).unwrap();
    opened.close();
    assert!(
        signalled(&queue).wait_timeout(1, PATIENCE),
        "a closed file handle's request still reads"
    );
    assert!(landed(&mut dest) == data);
    drop(queue);
    runtime
        .set_config(RuntimeConfig {
            force_file_buffering: true,
            ..RuntimeConfig::default()
        })
        .unwrap();
    let queue = runtime.create_queue(QueueConfig::default()).unwrap();
    assert_eq!(
        queue.config().io,
        Some(dsr::IoPolicy::Buffered),
        "the new configuration applies"
    );
}

#[test]
fn a_requests_callback_has_returned_before_any_later_entry_fires() {
    let queue = memory_queue(executor(2), 1024);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 8));
    let dest = HostBuffer::new(500 * 64);
    let called = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for slot in 0..500 {
        let called = called.clone();
        let done: dsr::engine::RequestDone = Box::new(move |status| {
            assert_eq!(*status, dsr::RequestStatus::Done);
            // Slow enough that a signal racing the callback would be seen first.
            std::thread::sleep(Duration::from_micros(50));
            called.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        queue
            .enqueue_with(copy_request(&bytes, &dest, slot, 0), done, true)
            .unwrap();
    }
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE));
    assert_eq!(called.load(std::sync::atomic::Ordering::SeqCst), 500);
}

#[test]
fn regression_the_last_handle_dropped_on_a_worker_tears_down_without_deadlock() {
    // The queue owns the executor, and the only handle left when the request finishes is the
    // one its callback holds: dropping it drops the executor on one of its own workers.
    let gate = Gate::new();
    let queue = memory_queue(gated_executor(2, &gate), 128);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 9));
    let mut dest = HostBuffer::new(64);
    let last = queue.clone();
    let done: dsr::engine::RequestDone = Box::new(move |_| drop(last));
    queue
        .enqueue_with(copy_request(&bytes, &dest, 0, GATED), done, true)
        .unwrap();
    queue.submit().unwrap();
    gate.wait_arrivals(1);
    drop(queue);
    gate.open();
    // The batch retires (and hands the destination back) only if the worker that dropped the
    // executor was let go to finish its node.
    assert!(landed(&mut dest) == bytes[..]);
}

#[test]
fn regression_a_finished_requests_destination_is_free_while_its_batch_still_runs() {
    // A load through the queue, repeated into the same memory as soon as its fence fired, was
    // refused as overlapping: destinations were held until the whole batch retired.
    let gate = Gate::new();
    let queue = memory_queue(gated_executor(2, &gate), 128);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 9));
    let dest = HostBuffer::new(128);
    queue.enqueue(copy_request(&bytes, &dest, 0, 0)).unwrap();
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE));
    // Then a batch of a held request and a quick one into the same range as before.
    queue.enqueue(copy_request(&bytes, &dest, 1, GATED)).unwrap();
    queue.enqueue(copy_request(&bytes, &dest, 0, 0)).unwrap();
    let statuses = StatusArray::new(1);
    queue.enqueue_status(&statuses, 0).unwrap();
    queue.submit().unwrap();
    gate.wait_arrivals(1);
    // The quick request of the held batch is done: its range is the caller's again.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match queue.try_enqueue(copy_request(&bytes, &dest, 0, 0)) {
            Ok(()) => break,
            Err(err) if err.kind() == ErrorKind::OverlappingDestinations || err.kind() == ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the finished request's range stayed reserved: {err}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("{err}"),
        }
    }
    queue.submit().unwrap();
    gate.open();
    let done = signalled(&queue);
    assert!(done.wait_timeout(1, PATIENCE));
    assert_eq!(statuses.get(0), StatusEntry::Ok);
}

/// Two writes of the same file bytes enqueued together: the second is refused at enqueue with
/// the reason, and the queue goes on (it used to submit them as one batch, which the compile
/// check refused whole: the queue closed and every request in it was lost without a word).
#[test]
fn a_request_conflicting_with_its_batch_is_refused_alone_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let queue = memory_queue(executor(2), 0x80);
    let bytes: Arc<[u8]> = Arc::from(pattern(1000, 3));
    queue.enqueue(Request::write(bytes.clone(), 0, 1000, &path, 0)).unwrap();
    let err = queue
        .enqueue(Request::write(bytes.clone(), 0, 1000, &path, 500))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OverlappingDestinations, "{err}");
    let mut dest = HostBuffer::new(64);
    queue.enqueue(copy_request(&bytes, &dest, 0, 0)).unwrap();
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE), "the queue drained");
    assert!(!queue.is_closed());
    assert_eq!(landed(&mut dest), bytes[..64].to_vec());
    assert!(
        std::fs::read(&path).unwrap()[..1000] == bytes[..],
        "the first write landed"
    );
    // The same bytes again in the next batch are fine.
    queue
        .enqueue(Request::write(bytes.clone(), 0, 1000, &path, 500))
        .unwrap();
    assert!(signalled(&queue).wait_timeout(1, PATIENCE));
    assert!(std::fs::read(&path).unwrap()[500..1500] == bytes[..]);
}

/// Nothing completes after a close: a request's callback already running when the queue is
/// closed has returned by the time `close` does (a C caller frees what its callbacks touch once
/// it has closed; the C ABI sequence fuzzer corrupted the heap that way).
#[test]
fn close_returns_after_the_callbacks_already_running() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let queue = memory_queue(executor(2), 0x80);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 9));
    let dest = HostBuffer::new(64);
    let (entered, left) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (e, l) = (entered.clone(), left.clone());
    queue
        .enqueue_with(
            copy_request(&bytes, &dest, 0, 0),
            Box::new(move |_| {
                e.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                l.store(true, Ordering::SeqCst);
            }),
            true,
        )
        .unwrap();
    queue.submit().unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !entered.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the callback never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    queue.close();
    assert!(
        left.load(Ordering::SeqCst),
        "close returned while the callback still ran"
    );
}

/// A callback may close its own queue: the close does not wait for that callback.
#[test]
fn a_callback_may_close_its_own_queue() {
    let queue = memory_queue(executor(2), 0x80);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 10));
    let dest = HostBuffer::new(64);
    let (tx, rx) = std::sync::mpsc::channel();
    let inner = queue.clone();
    queue
        .enqueue_with(
            copy_request(&bytes, &dest, 0, 0),
            Box::new(move |_| {
                inner.close();
                let _ = tx.send(());
            }),
            true,
        )
        .unwrap();
    queue.submit().unwrap();
    rx.recv_timeout(PATIENCE)
        .expect("the callback closed its queue and went on");
    assert!(queue.is_closed());
}

/// The `queue_sequences` fuzzer's hang: on a one-worker executor, the first request's callback
/// closed its queue, and the close waited for the batch's other requests, which needed the
/// worker the callback held. A close from a callback cancels without waiting; a close from
/// outside afterwards waits, and the destination comes back.
#[test]
fn a_callback_closing_its_queue_on_a_one_worker_executor_does_not_wait_for_its_batch() {
    // Nothing starts before the submit: the close comes from inside the one batch.
    let config = QueueConfig {
        source: SourceType::Memory,
        capacity: 0x100,
        early_start: 0,
        ..QueueConfig::default()
    };
    let queue = Queue::new(Arc::new(executor(1)), config).unwrap();
    let bytes: Arc<[u8]> = Arc::from(pattern(64 * 64, 11));
    let mut dest = HostBuffer::new(64 * 64);
    let (tx, rx) = std::sync::mpsc::channel();
    let closed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for slot in 0..64 {
        let (inner, tx, closed_once) = (queue.clone(), tx.clone(), closed_once.clone());
        let request = Request::memory(bytes.clone(), slot * 64, 64, &dest, slot * 64);
        let done: dsr::engine::queue::RequestDone = Box::new(move |_| {
            if !closed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                inner.close();
                let _ = tx.send(());
            }
        });
        queue.enqueue_with(request, done, true).unwrap();
    }
    queue.submit().unwrap();
    rx.recv_timeout(PATIENCE)
        .expect("the first callback closed its queue and went on");
    queue.close();
    assert!(queue.is_closed());
    landed(&mut dest);
}

/// A memory queue of 0x100 slots with early start in groups of `group`.
fn early_queue(workers: usize, group: u32) -> Queue {
    let config = QueueConfig {
        source: SourceType::Memory,
        capacity: 0x100,
        early_start: group,
        ..QueueConfig::default()
    };
    Queue::new(Arc::new(executor(workers)), config).unwrap()
}

/// Enqueues requests `slots` (64 bytes each), each telling `tx` its slot when it finishes.
fn enqueue_told(
    queue: &Queue,
    bytes: &Arc<[u8]>,
    dest: &HostBuffer,
    slots: std::ops::Range<u64>,
    tx: &std::sync::mpsc::Sender<u64>,
) {
    for slot in slots {
        let tx = tx.clone();
        let done: dsr::engine::queue::RequestDone = Box::new(move |_| {
            let _ = tx.send(slot);
        });
        queue
            .enqueue_with(copy_request(bytes, dest, slot, 0), done, true)
            .unwrap();
    }
}

/// How long a test watches for work that must not start.
const QUIET: Duration = Duration::from_millis(200);

#[test]
fn a_group_of_enqueued_requests_starts_before_submit_while_workers_idle() {
    let queue = early_queue(2, 16);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 21));
    let dest = HostBuffer::new(64 * 64);
    let (tx, rx) = std::sync::mpsc::channel();
    enqueue_told(&queue, &bytes, &dest, 0..16, &tx);
    let mut started: Vec<u64> = (0..16)
        .map(|_| rx.recv_timeout(PATIENCE).expect("the group ran unsubmitted"))
        .collect();
    started.sort_unstable();
    assert_eq!(started, (0..16).collect::<Vec<_>>());
    // Less than a group waits for the submit.
    enqueue_told(&queue, &bytes, &dest, 16..31, &tx);
    assert!(
        rx.recv_timeout(QUIET).is_err(),
        "a part of a group started before the submit"
    );
    let status = StatusArray::new(1);
    queue.enqueue_status(&status, 0).unwrap();
    assert_eq!(status.get(0), StatusEntry::Pending, "an entry fired before its submit");
    let fence = signalled(&queue);
    assert!(fence.wait_timeout(1, PATIENCE));
    assert_eq!(status.get(0), StatusEntry::Ok);
    assert_eq!(rx.try_iter().count(), 15);
}

#[test]
fn without_early_start_nothing_starts_before_submit() {
    let queue = early_queue(2, 0);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 22));
    let dest = HostBuffer::new(64 * 64);
    let (tx, rx) = std::sync::mpsc::channel();
    enqueue_told(&queue, &bytes, &dest, 0..64, &tx);
    assert!(rx.recv_timeout(QUIET).is_err(), "a request started before the submit");
    assert!(signalled(&queue).wait_timeout(1, PATIENCE));
    assert_eq!(rx.try_iter().count(), 64);
}

#[test]
fn a_group_waits_for_the_submit_while_the_workers_are_busy_with_the_queue() {
    // One worker, held by the first request's callback: the first group is in flight, so the
    // second does not start early (it would only queue behind the first).
    let queue = early_queue(1, 16);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 23));
    let dest = HostBuffer::new(64 * 64);
    let (tx, rx) = std::sync::mpsc::channel();
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (held_tx, held) = std::sync::mpsc::channel();
    let done: dsr::engine::queue::RequestDone = Box::new(move |_| {
        let _ = held_tx.send(());
        let _ = hold.recv_timeout(PATIENCE);
    });
    queue
        .enqueue_with(copy_request(&bytes, &dest, 0, 0), done, true)
        .unwrap();
    enqueue_told(&queue, &bytes, &dest, 1..16, &tx);
    held.recv_timeout(PATIENCE)
        .expect("the first group started before the submit");
    // The next group is twice as large.
    enqueue_told(&queue, &bytes, &dest, 16..48, &tx);
    release.send(()).unwrap();
    let mut first: Vec<u64> = (1..16)
        .map(|_| rx.recv_timeout(PATIENCE).expect("the first group finished"))
        .collect();
    first.sort_unstable();
    assert_eq!(first, (1..16).collect::<Vec<_>>());
    assert!(
        rx.recv_timeout(QUIET).is_err(),
        "the second group started while the worker was busy"
    );
    assert!(signalled(&queue).wait_timeout(1, PATIENCE));
    let mut second: Vec<u64> = rx.try_iter().collect();
    second.sort_unstable();
    assert_eq!(second, (16..48).collect::<Vec<_>>());
}

/// Receives `n` slots from `rx`, sorted.
fn told(rx: &std::sync::mpsc::Receiver<u64>, n: usize, what: &str) -> Vec<u64> {
    let mut slots: Vec<u64> = (0..n).map(|_| rx.recv_timeout(PATIENCE).expect(what)).collect();
    slots.sort_unstable();
    slots
}

#[test]
fn early_groups_double_until_the_submit() {
    let queue = early_queue(2, 16);
    let bytes: Arc<[u8]> = Arc::from(pattern(64, 24));
    let dest = HostBuffer::new(64 * 128);
    let (tx, rx) = std::sync::mpsc::channel();
    enqueue_told(&queue, &bytes, &dest, 0..16, &tx);
    assert_eq!(told(&rx, 16, "the first group of 16 ran"), (0..16).collect::<Vec<_>>());
    enqueue_told(&queue, &bytes, &dest, 16..32, &tx);
    assert!(
        rx.recv_timeout(QUIET).is_err(),
        "16 started after a group of 16: the next is 32"
    );
    enqueue_told(&queue, &bytes, &dest, 32..48, &tx);
    assert_eq!(told(&rx, 32, "the group of 32 ran"), (16..48).collect::<Vec<_>>());
    enqueue_told(&queue, &bytes, &dest, 48..96, &tx);
    assert!(
        rx.recv_timeout(QUIET).is_err(),
        "48 started after a group of 32: the next is 64"
    );
    // A submit starts them and the groups begin again at 16.
    queue.submit().unwrap();
    assert_eq!(
        told(&rx, 48, "the submit started the rest"),
        (48..96).collect::<Vec<_>>()
    );
    enqueue_told(&queue, &bytes, &dest, 96..112, &tx);
    assert_eq!(
        told(&rx, 16, "a group of 16 after the submit ran"),
        (96..112).collect::<Vec<_>>()
    );
    assert!(signalled(&queue).wait_timeout(1, PATIENCE));
}
