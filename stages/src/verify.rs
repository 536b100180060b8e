//! The `Verify` stage: bytes that landed in host memory as they were stored (an archive's raw
//! assets, read straight into the destination) checked against their tiles' hashes, so a damaged
//! raw asset is an error, as a damaged compressed one is.

use dsr_engine::{Error, ErrorKind, NodeRef, Outcome, Stage};

use crate::decompress_cpu::check_tiles;

/// The `Verify` stage (see the module comment).
#[derive(Debug, Default)]
pub struct VerifyStage;

impl Stage for VerifyStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let first = node.tile() as usize;
        let hashes = node.request_info().tile_hashes.clone();
        let Some(hashes) = hashes else {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                "a verify node needs its request's tile hashes",
            ));
        };
        let Some(bytes) = node.destination() else {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                "a verify node needs the bytes it checks",
            ));
        };
        if let Err(err) = check_tiles(first, bytes, &hashes, "stored") {
            return Outcome::Failed(err);
        }
        Outcome::Done { bytes: 0 }
    }
}
