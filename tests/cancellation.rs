//! Cancellation: tombstones before and while nodes run, tag masks, acknowledgement, and a stress
//! test of many threads submitting and cancelling at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dsr::engine::NodeKind;
use dsr::{HostBuffer, Request, RequestStatus};

use crate::common::*;

#[test]
fn cancel_before_running_skips_every_node_and_reports_cancelled() {
    let gate = Gate::new();
    let counting = Arc::new(Counting::default());
    let copy = Arc::new(dsr::stages::CopyStage);
    let executor = dsr::Executor::builder()
        .workers(1)
        .stage(
            NodeKind::Copy,
            Arc::new(Gated {
                inner: copy,
                gate: gate.clone(),
            }),
        )
        .observer(counting.clone())
        .build()
        .unwrap();
    let dest = HostBuffer::new(50 * 100 + 8);

    // The only worker is stuck in this batch, so nothing of the next one has started.
    let mut blocker = executor.batch();
    blocker
        .push(Request::memory(Arc::from(vec![1u8; 8]), 0, 8, &dest, 5000).tag(GATED))
        .unwrap();
    let blocker = executor.submit(blocker).unwrap();
    gate.wait_arrivals(1);

    let mut batch = executor.batch();
    for i in 0..50u64 {
        batch
            .push(Request::memory(pattern(100, i), 0, 100, &dest, i * 100).tag(0x70 + i % 2))
            .unwrap();
    }
    let batch = executor.submit(batch).unwrap();
    let ticket = executor.cancel(0x70, !1); // both tags 0x70 and 0x71
    assert_eq!(ticket.matched(), 50);
    gate.open();
    assert!(ticket.wait_timeout(PATIENCE), "the cancellation is acknowledged");

    let report = batch.wait_timeout(PATIENCE).expect("the batch drains");
    assert_eq!(report.cancelled(), 50);
    assert_eq!(report.bytes(), 0);
    assert!(batch.graph().nodes().all(|n| n.state.skipped()));
    assert!(blocker.wait().all_done());
    counting.assert_each_finished_once(batch.id(), 50);
    assert!(
        counting.started.lock().unwrap().keys().all(|(b, _)| *b != batch.id()),
        "no stage ran for a cancelled node"
    );
    let mut dest = dest;
    assert!(
        dest.as_slice().unwrap()[..5000].iter().all(|&b| b == 0),
        "no cancelled bytes landed"
    );
}

#[test]
fn cancel_while_running_waits_for_the_running_node_then_skips_the_rest() {
    let gate = Gate::new();
    let noop = Arc::new(Noop {
        gate: Some(gate.clone()),
        ..Noop::default()
    });
    let executor = custom_executor(2, noop.clone(), None);
    let mut batch = executor.batch();
    chain_graph(batch.graph_mut(), 5, GATED);
    let batch = executor.submit(batch).unwrap();
    gate.wait_arrivals(1);

    let ticket = batch.cancel_request(dsr::RequestId::from_index(0));
    assert!(!ticket.is_acknowledged(), "the first node is still running");
    assert!(!ticket.wait_timeout(Duration::from_millis(20)));
    gate.open();
    assert!(ticket.wait_timeout(PATIENCE));
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert_eq!(report.requests[0].status, RequestStatus::Cancelled);
    let nodes: Vec<_> = batch.graph().nodes().collect();
    assert!(nodes[0].state.is_done(), "the running node finished its work");
    assert!(nodes[1..].iter().all(|n| n.state.skipped()));
    assert_eq!(noop.runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_cancel_that_comes_too_late_leaves_the_request_done() {
    let executor = executor(1);
    let dest = HostBuffer::new(16);
    let mut batch = executor.batch();
    batch
        .push(Request::memory(Arc::from(vec![3u8; 16]), 0, 16, &dest, 0).tag(5))
        .unwrap();
    let batch = executor.submit(batch).unwrap();
    batch.wait();
    let ticket = batch.cancel();
    assert!(ticket.is_acknowledged());
    assert!(batch.wait().all_done(), "the report does not change after the fact");
}

#[test]
fn the_tag_mask_cancels_only_matching_requests() {
    let gate = Gate::new();
    let executor = gated_executor(1, &gate);
    let dest = HostBuffer::new(300);
    let mut blocker = executor.batch();
    blocker
        .push(Request::memory(Arc::from(vec![0u8; 1]), 0, 1, &dest, 299).tag(GATED))
        .unwrap();
    let blocker = executor.submit(blocker).unwrap();
    gate.wait_arrivals(1);
    let mut batch = executor.batch();
    for (i, tag) in [0x1_10u64, 0x2_11, 0x1_20].into_iter().enumerate() {
        batch
            .push(Request::memory(Arc::from(vec![9u8; 50]), 0, 50, &dest, i as u64 * 50).tag(tag))
            .unwrap();
    }
    let batch = executor.submit(batch).unwrap();
    let ticket = executor.cancel(0x10, 0xF0);
    assert_eq!(ticket.matched(), 2);
    gate.open();
    blocker.wait();
    let statuses: Vec<_> = batch.wait().requests.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        [RequestStatus::Cancelled, RequestStatus::Cancelled, RequestStatus::Done]
    );
}

#[test]
fn stress_many_threads_submit_and_cancel() {
    let executor = Arc::new(executor(2));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let canceller = {
        let (executor, stop) = (executor.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(7);
            let mut cancelled = 0;
            while !stop.load(Ordering::Relaxed) {
                cancelled += executor.cancel(rng.u64(0..4), 3).matched();
                std::thread::yield_now();
            }
            cancelled
        })
    };
    let submitters: Vec<_> = (0..4u64)
        .map(|t| {
            let executor = executor.clone();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let (mut done, mut cancelled) = (0, 0);
                for _ in 0..40 {
                    let sources: Vec<Arc<[u8]>> = (0..20)
                        .map(|_| pattern(rng.usize(1..5000), rng.u64(..)).into())
                        .collect();
                    let total = sources.iter().map(|s| s.len()).sum();
                    let dest = HostBuffer::new(total);
                    let mut batch = executor.batch();
                    let mut at = 0;
                    for (i, s) in sources.iter().enumerate() {
                        let request = Request::memory(s.clone(), 0, s.len() as u64, &dest, at as u64).tag(i as u64);
                        batch.push(request).unwrap();
                        at += s.len();
                    }
                    let report = executor
                        .submit(batch)
                        .unwrap()
                        .wait_timeout(PATIENCE)
                        .expect("every batch drains");
                    let mut dest = dest;
                    let bytes = dest.as_slice().expect("the engine let go of the destination");
                    let mut at = 0;
                    for (r, s) in report.requests.iter().zip(&sources) {
                        match &r.status {
                            RequestStatus::Done => {
                                assert_eq!(&bytes[at..at + s.len()], &s[..]);
                                done += 1;
                            }
                            RequestStatus::Cancelled => cancelled += 1,
                            RequestStatus::Failed(err) => panic!("unexpected failure: {err}"),
                        }
                        at += s.len();
                    }
                }
                (done, cancelled)
            })
        })
        .collect();
    let (mut done, mut cancelled) = (0, 0);
    for s in submitters {
        let (d, c) = s.join().unwrap();
        done += d;
        cancelled += c;
    }
    stop.store(true, Ordering::Relaxed);
    canceller.join().unwrap();
    assert_eq!(done + cancelled, 4 * 40 * 20);
    assert_eq!(executor.live_batches(), 0);
}

#[test]
fn destructors_dropping_the_executor_drains_live_batches() {
    let gate = Gate::new();
    let noop = Arc::new(Noop {
        gate: Some(gate.clone()),
        ..Noop::default()
    });
    let executor = custom_executor(2, noop, None);
    let mut batch = executor.batch();
    chain_graph(batch.graph_mut(), 100, GATED);
    let batch = executor.submit(batch).unwrap();
    gate.wait_arrivals(1);
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            gate.open();
        })
    };
    drop(executor); // cancels, waits for the gated node, joins the workers
    opener.join().unwrap();
    let report = batch
        .wait_timeout(PATIENCE)
        .expect("a dropped executor still drains its batches");
    assert_eq!(report.requests[0].status, RequestStatus::Cancelled);
}
