//! The GPU stages: `Upload` (host bytes into a GPU buffer) and `Copy` where it touches GPU
//! memory (GPU buffer to GPU buffer, or read back into host memory). Each checks its node (the
//! buffers are this device's, the piece fits the staging budget) and hands it to the
//! [`Transfers`] queue with the timeline values it must wait for, which records, submits and
//! completes it.

use std::sync::Arc;

use dsr_engine::{DeviceRange, Error, ErrorKind, Input, NodeRef, Outcome, Stage};

use crate::buffer::GpuBuffer;
use crate::transfer::{Move, Piece, Transfers};

/// The `Upload` stage: a node's bytes into its GPU buffer range, through [`Transfers`].
#[derive(Debug)]
pub struct UploadStage {
    transfers: Arc<Transfers>,
}

impl UploadStage {
    /// A stage feeding `transfers` (which must also be the executor's reactor).
    pub fn new(transfers: Arc<Transfers>) -> Self {
        UploadStage { transfers }
    }
}

impl Stage for UploadStage {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let Input::Bytes(bytes) = node.input() else {
            return Outcome::Failed(invalid("an upload node needs its bytes in host memory"));
        };
        let Some(dst) = node.device_destination() else {
            return Outcome::Failed(invalid("an upload node needs a GPU destination"));
        };
        debug_assert_eq!(bytes.len() as u64, dst.len);
        let src = bytes.as_ptr();
        // Bytes in an imported scratch block are copied from there; others through staging.
        let imported = self.transfers.imports.as_ref().and_then(|i| i.lookup(src, dst.len));
        hand_over(&self.transfers, node, dst, |dst, dst_offset| match imported {
            Some((block, offset)) => Move::Imported {
                src: block,
                src_offset: offset,
                dst,
                dst_offset,
            },
            None => Move::Upload { src, dst, dst_offset },
        })
    }
}

/// The `Copy` stage where GPU memory is involved: GPU buffer → GPU buffer on the GPU, and GPU
/// buffer → host memory (read-back) through staging. Copies between host bytes go to the CPU
/// stage it wraps.
#[derive(Debug)]
pub struct GpuCopyStage {
    transfers: Arc<Transfers>,
    host: Option<Arc<dyn Stage>>,
}

impl GpuCopyStage {
    /// A stage feeding `transfers`, handing host-only copies to `host` (none: they fail as
    /// unsupported).
    pub fn new(transfers: Arc<Transfers>, host: Option<Arc<dyn Stage>>) -> Self {
        GpuCopyStage { transfers, host }
    }
}

impl Stage for GpuCopyStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let Some(src) = node.device_source() else {
            if node.device_destination().is_some() {
                return Outcome::Failed(invalid(
                    "a copy from host memory into a GPU buffer is an upload node's work",
                ));
            }
            return match &self.host {
                Some(host) => host.run(node),
                None => Outcome::Failed(Error::new(
                    ErrorKind::Unsupported,
                    "no stage copies between host buffers in this executor",
                )),
            };
        };
        let source = match self.buffer(src) {
            Ok(buffer) => buffer,
            Err(err) => return Outcome::Failed(err),
        };
        if let Some(dst) = node.device_destination() {
            return hand_over(&self.transfers, node, dst, |dst, dst_offset| Move::Copy {
                src: source,
                src_offset: src.offset,
                dst,
                dst_offset,
            });
        }
        // A read-back: the destination is host memory (reserved for this node until it
        // completes), reached through staging.
        let len = src.len;
        let Some(dst) = node.destination() else {
            return Outcome::Failed(invalid("a read-back node needs a host destination"));
        };
        debug_assert_eq!(dst.len() as u64, len);
        let dst = dst.as_mut_ptr();
        let what = Move::ReadBack {
            src: source,
            src_offset: src.offset,
            dst,
        };
        submit(&self.transfers, node, what, len)
    }
}

impl GpuCopyStage {
    fn buffer(&self, range: DeviceRange<'_>) -> Result<ash::vk::Buffer, Error> {
        GpuBuffer::of(range.buffer, &self.transfers.context).map(GpuBuffer::raw)
    }
}

/// Checks a node writing the GPU range `dst` and hands it over with the move `what` makes.
fn hand_over(
    transfers: &Arc<Transfers>,
    node: NodeRef<'_>,
    dst: DeviceRange<'_>,
    what: impl FnOnce(ash::vk::Buffer, u64) -> Move,
) -> Outcome {
    let gpu = match GpuBuffer::of(dst.buffer, &transfers.context) {
        Ok(gpu) => gpu,
        Err(err) => return Outcome::Failed(err),
    };
    submit(transfers, node, what(gpu.raw(), dst.offset), dst.len)
}

/// Hands `len` bytes of work to the queue, with the node's GPU waits, after the checks every
/// GPU node shares.
fn submit(transfers: &Arc<Transfers>, node: NodeRef<'_>, what: Move, len: u64) -> Outcome {
    if transfers.context.is_lost() {
        return Outcome::Failed(transfers.context.lost_error());
    }
    if len == 0 {
        return Outcome::Done { bytes: 0 };
    }
    let staged = matches!(what, Move::Upload { .. } | Move::ReadBack { .. });
    if staged && transfers.slots_for(len) > transfers.slots {
        return Outcome::Failed(invalid(format!(
            "a transfer of {len} bytes needs more staging than the whole budget ({} bytes); \
             raise the staging budget or lower the read chunk",
            transfers.slots as u64 * transfers.slot
        )));
    }
    let wait = node.gpu_waits().max().unwrap_or(0);
    let worker = node.worker();
    let (pending, outcome) = node.defer();
    transfers.start(pending, Piece { what, len, wait }, worker);
    outcome
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}
