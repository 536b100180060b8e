//! GDeflate through the engine: tile-group decode nodes in parallel, straight into the
//! destination, with tile hashes verified; corruption is an error naming the tile.

use std::sync::Arc;

use dsr::engine::NodeKind;
use dsr::{ErrorKind, HostBuffer, Request, RequestStatus};
use dsr_gdeflate::{compress, Level, TILE_SIZE};

use crate::common::*;

fn hashes(data: &[u8]) -> Arc<[u64]> {
    data.chunks(TILE_SIZE).map(dsr::stages::tile_hash).collect()
}

/// Text-like data with some noise: compresses, but not to nothing.
fn asset(len: usize, seed: u64) -> Vec<u8> {
    let noise = pattern(len, seed);
    (0..len)
        .map(|i| if i % 7 == 0 { noise[i] } else { b"tile group "[i % 11] })
        .collect()
}

#[test]
fn a_large_asset_decodes_in_tile_groups_byte_exact() {
    let data = asset(40 * TILE_SIZE + 1234, 1);
    let stream = compress(&data, Level::DEFAULT).unwrap();
    let file = temp_file(&stream);
    let counting = Arc::new(Counting::default());
    let executor = observed_executor(counting.clone());
    let dest = HostBuffer::new(data.len());
    let mut batch = executor.batch();
    let request = Request::file(file.path(), 0, stream.len() as u64, &dest, 0)
        .gdeflate(data.len() as u64)
        .verify_tiles(hashes(&data));
    batch.push(request).unwrap();
    let batch = executor.submit(batch).unwrap();
    let report = batch.wait_timeout(PATIENCE).expect("drains");
    assert!(report.all_done(), "{:?}", report.first_failure());
    let mut dest = dest;
    assert!(dest.as_slice().unwrap() == data);
    let decodes = batch
        .graph()
        .nodes()
        .filter(|n| n.kind == NodeKind::DecompressCpu)
        .count();
    assert_eq!(decodes, 6, "41 tiles in groups of 8");
    // Every group ran once, on whichever worker took it (how they spread is the scaling
    // benchmark's business, not a test's).
    let finished = counting.finished.lock().unwrap();
    for node in batch.graph().nodes().filter(|n| n.kind == NodeKind::DecompressCpu) {
        assert_eq!(finished.get(&(batch.id(), node.id)).map(|e| e.0), Some(1));
    }
}

#[test]
fn memory_streams_decode_too() {
    let data = asset(3 * TILE_SIZE, 2);
    let stream: Arc<[u8]> = compress(&data, Level::FASTEST).unwrap().into();
    let executor = executor(2);
    let dest = HostBuffer::new(data.len());
    let mut batch = executor.batch();
    batch
        .push(Request::memory(stream.clone(), 0, stream.len() as u64, &dest, 0).gdeflate(data.len() as u64))
        .unwrap();
    assert!(executor.submit(batch).unwrap().wait().all_done());
    let mut dest = dest;
    assert!(dest.as_slice().unwrap() == data);
}

#[test]
fn a_flipped_bit_is_an_error_naming_the_tile_never_wrong_data() {
    let data = asset(10 * TILE_SIZE, 3);
    let clean = compress(&data, Level::DEFAULT).unwrap();
    let executor = executor(2);
    let mut rng = fastrand::Rng::with_seed(9);
    let header = 8 + 4 * 10;
    for _ in 0..40 {
        let mut stream = clean.clone();
        let at = rng.usize(header..stream.len());
        stream[at] ^= 1 << rng.u32(0..8);
        let stream: Arc<[u8]> = stream.into();
        let dest = HostBuffer::new(data.len());
        let mut batch = executor.batch();
        let request = Request::memory(stream.clone(), 0, stream.len() as u64, &dest, 0)
            .gdeflate(data.len() as u64)
            .verify_tiles(hashes(&data));
        batch.push(request).unwrap();
        let report = executor.submit(batch).unwrap().wait_timeout(PATIENCE).expect("drains");
        match &report.requests[0].status {
            RequestStatus::Failed(err) => {
                assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
                assert!(err.tile().is_some(), "the error names the tile: {err}");
            }
            RequestStatus::Done => {
                // A flip in padding bits changes nothing: then the bytes must be right.
                let mut dest = dest;
                assert!(
                    dest.as_slice().unwrap() == data,
                    "a verified request delivered wrong data"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_stream_of_the_wrong_size_is_refused() {
    let data = asset(2 * TILE_SIZE, 4);
    let stream: Arc<[u8]> = compress(&data, Level::FASTEST).unwrap().into();
    let executor = executor(1);
    let dest = HostBuffer::new(3 * TILE_SIZE);
    let mut batch = executor.batch();
    batch
        .push(Request::memory(stream.clone(), 0, stream.len() as u64, &dest, 0).gdeflate(3 * TILE_SIZE as u64))
        .unwrap();
    let report = executor.submit(batch).unwrap().wait();
    let (_, err) = report.first_failure().expect("fails");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("expects"), "{err}");
}
