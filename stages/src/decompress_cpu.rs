//! The CPU decompression stage. The GDeflate codec is its own piece of work; until it lands this
//! stage fails each node with an explicit error, so a compressed request never reports success
//! with undecoded bytes in its destination.

use dsr_engine::{Error, ErrorKind, NodeRef, Outcome, Stage};

/// Decodes GDeflate on the CPU (not yet: see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct DecompressCpuStage;

impl Stage for DecompressCpuStage {
    fn run(&self, _node: NodeRef<'_>) -> Outcome {
        Outcome::Failed(Error::new(
            ErrorKind::Unsupported,
            "GDeflate codec not available in this build of dsr; load uncompressed assets for now",
        ))
    }
}
