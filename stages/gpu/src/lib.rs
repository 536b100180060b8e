//! # dsr-gpu: dsr's Vulkan stages
//!
//! Requests land in GPU buffers through this crate: a Vulkan context, GPU buffers as request
//! destinations, and the `Upload` stage with the timeline reactor that completes it. It is built
//! on ash (Vulkan) and vk-mem (memory); all `unsafe` lives in these small modules, each with
//! its invariants written where it is used:
//!
//! - [`context`]: the instance, device, queues and allocator, dsr's own ([`GpuContext::new`]) or
//!   the caller's ([`GpuContext::from_external`], for Proton), with the validation layer's
//!   messages recorded (`validation.rs`) and device loss tracked;
//! - [`buffer`]: device-local buffers dsr allocates, callers' buffers, and read-back;
//! - [`upload`]: the staging budget, batched copies, the timeline semaphore that says when the
//!   GPU is done, and the `Upload` stage; `timeline.rs`: the thread that turns the timeline into
//!   an eventfd for workers waiting on several sources; [`stage`]: the `Upload` stage itself.
//!
//! The design choice that shapes it: the GPU is a completion source like the io_uring ring. A
//! stage hands its node to the [`Uploader`], which submits many nodes' copies at once and
//! completes them, from an idle worker's poll, when the timeline passes their value.
//!
//! [`install_gpu`] adds the stage and the reactor to an executor builder.

pub mod buffer;
pub mod context;
pub mod stage;
mod timeline;
pub mod upload;
mod validation;

use std::sync::Arc;

use dsr_engine::{ExecutorBuilder, NodeKind, Result};

pub use buffer::{allocate_buffer, external_buffer, read_back, GpuBuffer};
pub use context::{DeviceInfo, ExternalDevice, GpuConfig, GpuContext, QueueRef};
pub use stage::UploadStage;
pub use upload::{StagingConfig, UploadStats, Uploader};

/// Adds the `Upload` stage and its reactor, on `context`, to `builder`; returns the uploader too
/// (its statistics, and the timeline a renderer can wait on).
pub fn install_gpu(
    builder: ExecutorBuilder,
    context: &Arc<GpuContext>,
    staging: StagingConfig,
) -> Result<(ExecutorBuilder, Arc<Uploader>)> {
    let uploader = Uploader::new(context, staging)?;
    let builder = builder
        .stage(NodeKind::Upload, Arc::new(UploadStage::new(uploader.clone())))
        .reactor(uploader.clone());
    Ok((builder, uploader))
}
