//! Real files: sizes from empty to 64 MiB, ranges at many offsets, open descriptors, and every
//! way a file request can fail, each failing alone with the file, offset and errno named.

use std::sync::Arc;

use dsr::{ErrorKind, ExecutorConfig, HostBuffer, LoweringConfig, NodeKind, Request, RequestStatus};

use crate::common::*;

fn load(executor: &dsr::Executor, path: &std::path::Path, offset: u64, len: u64) -> (RequestStatus, Vec<u8>) {
    let dest = HostBuffer::new(len as usize);
    let mut batch = executor.batch();
    batch.push(Request::file(path, offset, len, &dest, 0)).unwrap();
    let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
    let mut dest = dest;
    (report.requests[0].status.clone(), dest.as_slice().unwrap().to_vec())
}

#[test]
fn an_empty_file_loads_as_zero_bytes() {
    let file = temp_file(&[]);
    let (status, bytes) = load(&executor(1), file.path(), 0, 0);
    assert_eq!(status, RequestStatus::Done);
    assert!(bytes.is_empty());
}

#[test]
fn a_one_byte_file_loads() {
    let file = temp_file(&[0xA5]);
    let (status, bytes) = load(&executor(1), file.path(), 0, 1);
    assert_eq!(status, RequestStatus::Done);
    assert_eq!(bytes, [0xA5]);
}

#[test]
fn a_64_mib_file_loads_byte_exact_on_every_worker() {
    let data = pattern(64 << 20, 64);
    let file = temp_file(&data);
    let executor = executor(2);
    let (status, bytes) = load(&executor, file.path(), 0, data.len() as u64);
    assert_eq!(status, RequestStatus::Done);
    assert!(bytes == data, "64 MiB differ");
    assert_eq!(executor.metrics().stage(NodeKind::Read).unwrap().latency.count, 64);
}

#[test]
fn ranges_at_many_offsets_and_lengths_are_exact() {
    let data = pattern(300_000, 9);
    let file = temp_file(&data);
    // Small chunks so ranges straddle chunk boundaries.
    let executor = dsr::executor(ExecutorConfig {
        workers: 2,
        lowering: LoweringConfig {
            read_chunk: 4096,
            ..dsr::LoweringConfig::default()
        },
        ..ExecutorConfig::default()
    })
    .unwrap();
    let cases: &[(u64, u64)] = &[
        (0, 1),
        (1, 4095),
        (4095, 2),
        (4096, 4096),
        (12_345, 54_321),
        (299_999, 1),
        (0, 300_000),
        (150_000, 150_000),
        (7, 8193),
    ];
    // All at once in one batch, each into its own slot.
    let total: u64 = cases.iter().map(|c| c.1).sum();
    let dest = HostBuffer::new(total as usize);
    let mut batch = executor.batch();
    let mut at = 0;
    for &(offset, len) in cases {
        batch.push(Request::file(file.path(), offset, len, &dest, at)).unwrap();
        at += len;
    }
    let report = executor.submit(batch).unwrap().wait();
    assert!(report.all_done(), "{:?}", report.first_failure());
    let mut dest = dest;
    let bytes = dest.as_slice().unwrap();
    let mut at = 0usize;
    for &(offset, len) in cases {
        let (offset, len) = (offset as usize, len as usize);
        assert_eq!(
            &bytes[at..at + len],
            &data[offset..offset + len],
            "range {offset}+{len}"
        );
        at += len;
    }
}

#[test]
fn a_range_past_eof_fails_naming_the_file_and_where_it_ends() {
    let data = pattern(10_000, 2);
    let file = temp_file(&data);
    let (status, _) = load(&executor(1), file.path(), 9_000, 2_000);
    let RequestStatus::Failed(err) = status else {
        panic!("{status:?}")
    };
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(err.path(), Some(file.path()));
    assert_eq!(err.offset(), Some(10_000));
    assert_eq!(err.stage(), Some(NodeKind::Read));
    assert!(err.to_string().contains("runs past the end of the file"), "{err}");
}

#[test]
fn a_missing_file_fails_alone_naming_its_path() {
    let data = pattern(5000, 3);
    let file = temp_file(&data);
    let missing = std::path::Path::new("/nonexistent/dsr-test/level9.pak");
    let executor = executor(2);
    let dest = HostBuffer::new(10_000);
    let mut batch = executor.batch();
    batch.push(Request::file(file.path(), 0, 5000, &dest, 0)).unwrap();
    batch.push(Request::file(missing, 0, 100, &dest, 5000)).unwrap();
    batch.push(Request::file(missing, 100, 100, &dest, 5100)).unwrap();
    let report = executor.submit(batch).unwrap().wait();
    assert_eq!(report.requests[0].status, RequestStatus::Done);
    for r in &report.requests[1..] {
        let RequestStatus::Failed(err) = &r.status else {
            panic!("{:?}", r.status)
        };
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert_eq!(err.path(), Some(missing));
        assert!(err.to_string().contains("level9.pak"), "{err}");
    }
    assert_eq!(report.first_failure().unwrap().0.index(), 1);
    let mut dest = dest;
    assert_eq!(&dest.as_slice().unwrap()[..5000], &data[..]);
}

#[test]
fn an_already_open_file_is_read_through_its_descriptor() {
    let data = pattern(50_000, 4);
    let file = temp_file(&data);
    let open = Arc::new(std::fs::File::open(file.path()).unwrap());
    let executor = executor(2);
    let dest = HostBuffer::new(20_000);
    let mut batch = executor.batch();
    batch
        .push(Request::open_file(open.clone(), 1000, 10_000, &dest, 0))
        .unwrap();
    batch
        .push(Request::open_file(open, 30_000, 10_000, &dest, 10_000))
        .unwrap();
    assert!(executor.submit(batch).unwrap().wait().all_done());
    let mut dest = dest;
    let bytes = dest.as_slice().unwrap();
    assert_eq!(&bytes[..10_000], &data[1000..11_000]);
    assert_eq!(&bytes[10_000..], &data[30_000..40_000]);
}

#[test]
fn a_directory_is_an_io_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _) = load(&executor(1), dir.path(), 0, 10);
    let RequestStatus::Failed(err) = status else {
        panic!("{status:?}")
    };
    assert_eq!(err.errno(), Some(libc::EISDIR));
    assert_eq!(err.path(), Some(dir.path()));
}

#[test]
fn many_requests_on_one_file_open_it_once_and_all_land() {
    let data = pattern(1 << 20, 6);
    let file = temp_file(&data);
    let executor = executor(2);
    let dest = HostBuffer::new(1 << 20);
    let mut batch = executor.batch();
    for i in 0..256u64 {
        batch
            .push(Request::file(file.path(), i * 4096, 4096, &dest, i * 4096))
            .unwrap();
    }
    let batch = executor.submit(batch).unwrap();
    assert!(batch.wait().all_done());
    let files: std::collections::HashSet<_> = batch.graph().nodes().map(|n| n.src.unwrap().resource).collect();
    assert_eq!(files.len(), 1, "one path is one resource, opened once");
    let mut dest = dest;
    assert!(dest.as_slice().unwrap() == data);
}
