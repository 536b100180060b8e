//! The `DecompressGpu` stage: a whole GDeflate stream (read into scratch, or the caller's bytes)
//! uploaded and decoded by dsr's shader straight into the request's GPU buffer range, in one
//! submission on the compute queue. A waiter thread takes the submissions in order, checks every
//! tile's status when the GPU is done, and completes the node: a bad tile fails its request
//! with the tile named, as the CPU route does; other requests are untouched.
//!
//! What it allocates per node (outside the staging budget, for now): the compressed bytes twice
//! (host-visible staging and a device-local copy the shader reads), and the tile list and
//! statuses.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ash::vk;
use dsr_engine::{DeviceBuffer, Error, ErrorKind, Input, NodeRef, Outcome, PendingNode, Stage};
use dsr_gdeflate::{TileStream, TILE_SIZE};

use crate::buffer::{allocate_buffer, device_address, GpuBuffer, HostVisible};
use crate::context::GpuContext;
use crate::decode::{status_result, submit_once, GpuDecoder, Submitted, TileDesc, PROFILE_WORDS};

/// A node's work on the GPU, and what it holds until the GPU is done.
struct InFlight {
    pending: PendingNode,
    submitted: Submitted,
    /// The device-local copy of the stream (freed with the last handle).
    input: DeviceBuffer,
    staging: HostVisible,
    descs: HostVisible,
    status: HostVisible,
    tiles: usize,
    bytes: u64,
}

// SAFETY: the mappings' pointers are process memory, valid from any thread; an `InFlight` is
// owned by one thread at a time (the stage's worker, then the waiter), which alone touches them.
unsafe impl Send for InFlight {}

/// The `DecompressGpu` stage (see the module comment).
pub struct DecompressGpuStage {
    decoder: Arc<GpuDecoder>,
    waiter: Mutex<Option<mpsc::Sender<Box<InFlight>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DecompressGpuStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecompressGpuStage")
            .field("form", &self.decoder.form())
            .finish()
    }
}

fn corrupt(err: dsr_gdeflate::Error) -> Error {
    let error = Error::new(ErrorKind::Corrupt, format!("{err}; the asset is damaged, repack it"));
    let error = match err.tile {
        Some(tile) => error.at_tile(tile),
        None => error,
    };
    error.with_source(err)
}

impl DecompressGpuStage {
    /// The stage on `decoder`'s device, with its waiter thread.
    pub fn new(decoder: GpuDecoder) -> std::io::Result<DecompressGpuStage> {
        let decoder = Arc::new(decoder);
        let (tx, rx) = mpsc::channel::<Box<InFlight>>();
        let context = decoder.context().clone();
        let thread = std::thread::Builder::new()
            .name("dsr-gpu-decode".into())
            .spawn(move || {
                for job in rx {
                    finish(&context, *job);
                }
            })?;
        Ok(DecompressGpuStage {
            decoder,
            waiter: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn start(&self, node: &mut NodeRef<'_>) -> Result<(Submitted, DeviceBuffer, [HostVisible; 3], usize, u64), Error> {
        let context = self.decoder.context();
        if context.is_lost() {
            return Err(context.lost_error());
        }
        let Input::Bytes(bytes) = node.input() else {
            return Err(invalid("a GPU decode node needs its stream in host memory"));
        };
        let Some(dst) = node.device_destination() else {
            return Err(invalid("a GPU decode node needs a GPU destination"));
        };
        let target = GpuBuffer::of(dst.buffer, context)?;
        if !dst.buffer.decodable() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the GPU decoder cannot write into this buffer (made without device addresses)",
            ));
        }
        let stream = TileStream::parse(bytes).map_err(corrupt)?;
        if stream.uncompressed_len() != dst.len {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the stream decodes to {} bytes but the request expects {}",
                    stream.uncompressed_len(),
                    dst.len
                ),
            ));
        }
        // The stream is copied to offset 0 of the device copy, so tiles keep their places in
        // it; the shader reads words, so every tile must start 4-byte aligned.
        let input_len = (bytes.len() as u64).next_multiple_of(4).max(4);
        let input = allocate_buffer(context, input_len)?;
        let input_raw = GpuBuffer::of(&input, context)?.raw();
        let (src_base, dst_base) = (
            device_address(context, input_raw),
            device_address(context, target.raw()) + dst.offset,
        );
        let mut table = Vec::with_capacity(stream.tiles());
        for i in 0..stream.tiles() {
            let (span, size) = stream.tile_span(i).map_err(corrupt)?;
            if span.start % 4 != 0 {
                return Err(corrupt(dsr_gdeflate::Error {
                    reason: dsr_gdeflate::Reason::Misaligned,
                    tile: Some(i as u32),
                }));
            }
            table.push(TileDesc {
                src: src_base + span.start as u64,
                dst: dst_base + (i * TILE_SIZE) as u64,
                src_bytes: span.len() as u32,
                dst_bytes: size as u32,
            });
        }
        let staging = HostVisible::new(context, input_len)?;
        let descs = HostVisible::new(context, std::mem::size_of_val(&table[..]) as u64);
        let status = HostVisible::new(context, 4 * (table.len() + PROFILE_WORDS) as u64);
        let (descs, status) = match (descs, status) {
            (Ok(descs), Ok(status)) => (descs, status),
            (descs, status) => {
                // SAFETY: made just now, never used by the GPU.
                unsafe {
                    staging.destroy(context);
                    for made in [descs.ok(), status.ok()].into_iter().flatten() {
                        made.destroy(context);
                    }
                }
                return Err(Error::new(
                    ErrorKind::OutOfMemory,
                    "cannot allocate the GPU decode's buffers",
                ));
            }
        };
        // SAFETY: each mapping holds what is copied into it (made for exactly these sizes),
        // and no GPU work uses them yet.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), staging.ptr, bytes.len());
            std::ptr::copy_nonoverlapping(
                table.as_ptr().cast::<u8>(),
                descs.ptr,
                std::mem::size_of_val(&table[..]),
            );
        }
        let (tiles_addr, status_addr) = (
            device_address(context, descs.buffer),
            device_address(context, status.buffer),
        );
        let count = table.len() as u32;
        let staging_buffer = staging.buffer;
        let decoder = &self.decoder;
        let submitted = submit_once(context, |device, cb| {
            let region = [vk::BufferCopy::default().size(input_len)];
            let to_shader = [vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(vk::AccessFlags::SHADER_READ)];
            let after = [vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::SHADER_WRITE)
                .dst_access_mask(
                    vk::AccessFlags::SHADER_READ
                        | vk::AccessFlags::TRANSFER_READ
                        | vk::AccessFlags::TRANSFER_WRITE
                        | vk::AccessFlags::HOST_READ,
                )];
            // SAFETY: `cb` is recording on the compute family; every buffer lives until the
            // waiter has seen the fence; the tile list was checked above (inputs inside the
            // device copy at aligned offsets, outputs inside the reserved destination range,
            // one 64 KiB slot each, so no two overlap).
            unsafe {
                device.cmd_copy_buffer(cb, staging_buffer, input_raw, &region);
                device.cmd_pipeline_barrier(
                    cb,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::DependencyFlags::empty(),
                    &to_shader,
                    &[],
                    &[],
                );
                decoder.record(cb, tiles_addr, status_addr, count);
                device.cmd_pipeline_barrier(
                    cb,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::PipelineStageFlags::ALL_COMMANDS | vk::PipelineStageFlags::HOST,
                    vk::DependencyFlags::empty(),
                    &after,
                    &[],
                    &[],
                );
            }
        });
        let submitted = match submitted {
            Ok(submitted) => submitted,
            Err(err) => {
                // SAFETY: the submission failed, so no GPU work uses them.
                unsafe {
                    staging.destroy(context);
                    descs.destroy(context);
                    status.destroy(context);
                }
                return Err(err);
            }
        };
        Ok((submitted, input, [staging, descs, status], table.len(), dst.len))
    }
}

impl Stage for DecompressGpuStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let started = self.start(&mut node);
        let (submitted, input, [staging, descs, status], tiles, bytes) = match started {
            Ok(started) => started,
            Err(err) => return Outcome::Failed(err),
        };
        let (pending, outcome) = node.defer();
        let job = Box::new(InFlight {
            pending,
            submitted,
            input,
            staging,
            descs,
            status,
            tiles,
            bytes,
        });
        let waiter = self.waiter.lock().unwrap_or_else(|p| p.into_inner());
        match waiter.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => {}
            // The waiter is gone (the stage is shutting down): wait here instead.
            Some(Err(mpsc::SendError(job))) => finish(self.decoder.context(), *job),
            None => unreachable!("the sender lives as long as the stage"),
        }
        outcome
    }
}

impl Drop for DecompressGpuStage {
    fn drop(&mut self) {
        // Closing the channel ends the waiter once it has finished what was submitted.
        self.waiter.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// Waits for one submission, checks its tiles, frees its buffers and completes its node.
fn finish(context: &Arc<GpuContext>, job: InFlight) {
    let InFlight {
        pending,
        submitted,
        input,
        staging,
        descs,
        status,
        tiles,
        bytes,
    } = job;
    if let Err(err) = submitted.wait(context) {
        // The buffers may still be in use: leak them rather than free them under the GPU.
        std::mem::forget((staging, descs, status, input));
        pending.complete(Err(err));
        return;
    }
    // SAFETY: the statuses mapping holds one word per tile, written by the work just waited for.
    let words = unsafe { std::slice::from_raw_parts(status.ptr.cast::<u32>(), tiles) };
    let failure = words
        .iter()
        .enumerate()
        .find_map(|(i, &w)| status_result(w).err().map(|reason| (i, reason)));
    // SAFETY: the GPU work using them has completed.
    unsafe {
        staging.destroy(context);
        descs.destroy(context);
        status.destroy(context);
    }
    drop(input);
    pending.complete(match failure {
        None => Ok(bytes),
        Some((tile, reason)) => Err(corrupt(dsr_gdeflate::Error {
            reason,
            tile: Some(tile as u32),
        })),
    });
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}
