//! The `Verify` stage: bytes that landed in host memory as they were stored (an archive's raw
//! assets, read straight into the destination) checked against their tiles' hashes, so a damaged
//! raw asset is an error, as a damaged compressed one is.

use dsr_engine::{Error, ErrorKind, NodeRef, Outcome, Stage};
use dsr_gdeflate::TILE_SIZE;

use crate::decompress_cpu::tile_hash;

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
        for (i, tile) in bytes.chunks(TILE_SIZE).enumerate() {
            let at = first + i;
            if hashes.get(at) != Some(&tile_hash(tile)) {
                return Outcome::Failed(
                    Error::new(
                        ErrorKind::Corrupt,
                        "the stored tile does not match its hash: the asset is damaged, repack it",
                    )
                    .at_tile(at as u32),
                );
            }
        }
        Outcome::Done { bytes: 0 }
    }
}
