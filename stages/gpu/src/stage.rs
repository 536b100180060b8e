//! The `Upload` stage: checks an upload node (its bytes in host memory, its destination a GPU
//! buffer of this device, the piece within the staging budget) and hands it to the
//! [`Uploader`], which stages, submits and completes it.

use std::sync::Arc;

use dsr_engine::{Error, ErrorKind, Input, NodeRef, Outcome, Stage};

use crate::buffer::GpuBuffer;
use crate::upload::{Piece, Uploader};

/// The `Upload` stage: a node's bytes into its GPU buffer range, through the [`Uploader`].
#[derive(Debug)]
pub struct UploadStage {
    uploader: Arc<Uploader>,
}

impl UploadStage {
    /// A stage feeding `uploader` (which must also be the executor's reactor).
    pub fn new(uploader: Arc<Uploader>) -> Self {
        UploadStage { uploader }
    }
}

impl Stage for UploadStage {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let Input::Bytes(bytes) = node.input() else {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                "an upload node needs its bytes in host memory",
            ));
        };
        let Some(dst) = node.device_destination() else {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                "an upload node needs a GPU destination",
            ));
        };
        let uploader = &self.uploader;
        let gpu = match GpuBuffer::of(dst.buffer, &uploader.context) {
            Ok(gpu) => gpu,
            Err(err) => return Outcome::Failed(err),
        };
        if uploader.context.is_lost() {
            return Outcome::Failed(uploader.context.lost_error());
        }
        debug_assert_eq!(bytes.len() as u64, dst.len);
        if dst.len == 0 {
            return Outcome::Done { bytes: 0 };
        }
        if uploader.slots_for(dst.len) > uploader.slots {
            return Outcome::Failed(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "an upload piece of {} bytes needs more staging than the whole budget ({} bytes); \
                     raise the staging budget or lower the read chunk",
                    dst.len,
                    uploader.slots as u64 * uploader.slot
                ),
            ));
        }
        let piece = Piece {
            src: bytes.as_ptr(),
            len: dst.len,
            dst: gpu.raw(),
            dst_offset: dst.offset,
        };
        let (pending, outcome) = node.defer();
        uploader.start(pending, piece);
        outcome
    }
}
