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
//! - [`buffer`]: device-local buffers dsr allocates, callers' buffers, host-visible staging;
//! - [`import`]: the executor's scratch blocks imported into Vulkan where
//!   `VK_EXT_external_memory_host` allows, so uploads copy from where reads landed;
//! - [`transfer`]: the GPU transfer queue: the staging budget, batched copies (uploads, GPU
//!   copies, read-backs) recorded on per-worker command pools, and the timeline semaphore that
//!   says when the GPU is done and carries GPU edges; `timeline.rs`: the thread that turns the
//!   timeline into an eventfd for workers waiting on several sources;
//! - [`stage`]: the `Upload` stage and the GPU side of the `Copy` stage;
//! - [`decode`]: dsr's GDeflate decoder (`shaders/gdeflate.comp`) as a compute pipeline, and the
//!   runs that decode staged tiles with it or with `VK_NV_memory_decompression`.
//!
//! The design choice that shapes it: the GPU is a completion source like the io_uring ring. A
//! stage hands its node to [`Transfers`], which submits many nodes' copies at once, marks them
//! submitted (releasing the nodes behind GPU edges, which wait on the GPU), and completes them,
//! from an idle worker's poll, when the timeline passes their value.
//!
//! [`install_gpu`] adds the stages and the reactor to an executor builder.

pub mod buffer;
pub mod choose;
mod clock;
pub mod context;
pub mod decode;
pub mod decode_stage;
pub mod import;
pub mod stage;
mod timeline;
mod timestamps;
pub mod transfer;
mod validation;

use std::sync::Arc;

use dsr_engine::{ExecutorBuilder, NodeKind, Result};

pub use ash;
pub use buffer::{allocate_buffer, external_buffer, GpuBuffer, HostVisible};
pub use choose::DecodeBackend;
pub use context::{DeviceInfo, ExternalDevice, GpuConfig, GpuContext, QueueRef, SubmitLock};
pub use decode::{DecodeRun, Form, GpuDecoder, TileJob};
pub use decode_stage::{DecodeInput, DecompressGpuStage, GpuDecodeConfig};
pub use import::HostImports;
pub use stage::{GpuCopyStage, UploadStage};
pub use transfer::{BatchSignal, StagingConfig, TransferStats, Transfers};

/// Adds the `Upload` stage, the GPU side of the `Copy` stage (wrapping the host copy stage
/// already set, if any), the `DecompressGpu` stage where the device runs dsr's GPU decoder, and
/// their reactor, on `context`, to `builder`; returns the transfer
/// queue too (its statistics, and the timeline a renderer can wait on). Call it after the host
/// stages are set and the worker count is final: it keeps a command pool per worker.
pub fn install_gpu(
    builder: ExecutorBuilder,
    context: &Arc<GpuContext>,
    staging: StagingConfig,
) -> Result<(ExecutorBuilder, Arc<Transfers>)> {
    install_gpu_with(builder, context, staging, GpuDecodeConfig::from_env())
}

/// [`install_gpu`] with the GPU decoder's knobs given.
pub fn install_gpu_with(
    builder: ExecutorBuilder,
    context: &Arc<GpuContext>,
    staging: StagingConfig,
    decode: GpuDecodeConfig,
) -> Result<(ExecutorBuilder, Arc<Transfers>)> {
    let imports = HostImports::new(context);
    let transfers = Transfers::new(context, staging, builder.configured().workers, imports.clone())?;
    let host_copy = builder.stage_for(NodeKind::Copy);
    let builder = match imports.clone() {
        Some(imports) => builder.scratch_hooks(imports),
        None => builder,
    };
    // The GPU decoder where the device runs it: GDeflate requests into GPU buffers may then
    // decode there (see `DecodeRoute`).
    let builder = match GpuDecoder::new(context, None).map(|decoder| DecompressGpuStage::new(decoder, imports, decode))
    {
        Ok(Ok(stage)) => {
            // `Auto` sends every GDeflate request into a GPU buffer to a real GPU's decoder
            // (its submissions batch small assets with large ones; measured on an H100, an
            // archive of 394 assets loaded 2.7x faster than through the CPU route), and none
            // to a device that is the CPU itself (lavapipe), where decoding on the workers is
            // faster.
            let emulated = context.info().kind == format!("{:?}", ash::vk::PhysicalDeviceType::CPU);
            let lowering = dsr_engine::LoweringConfig {
                gpu_decode: true,
                gpu_decode_min_bytes: if emulated { u64::MAX } else { 0 },
                ..builder.configured().lowering
            };
            builder
                .stage(NodeKind::DecompressGpu, Arc::new(stage))
                .lowering(lowering)
        }
        Ok(Err(err)) => return Err(dsr_engine::Error::from_io(err, "cannot start the GPU decoder's thread")),
        Err(_) => builder,
    };
    let builder = builder
        .stage(NodeKind::Upload, Arc::new(UploadStage::new(transfers.clone())))
        .stage(
            NodeKind::Copy,
            Arc::new(GpuCopyStage::new(transfers.clone(), host_copy)),
        )
        .reactor(transfers.clone());
    Ok((builder, transfers))
}
