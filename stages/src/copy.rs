//! The copy stage: a memory source into its destination.

use dsr_engine::{Error, ErrorKind, Input, NodeRef, Outcome, Stage};

/// Copies a node's input bytes into its destination.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyStage;

impl Stage for CopyStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let Input::Bytes(src) = node.input() else {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                "a copy node needs bytes in memory as input",
            ));
        };
        let Some(dst) = node.destination() else {
            return Outcome::Failed(Error::new(ErrorKind::InvalidRequest, "a copy node needs a destination"));
        };
        if src.len() != dst.len() {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                format!("a copy node moves {} bytes into {} bytes", src.len(), dst.len()),
            ));
        }
        dst.copy_from_slice(src);
        Outcome::Done {
            bytes: dst.len() as u64,
        }
    }
}
