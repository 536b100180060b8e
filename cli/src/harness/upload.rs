//! GPU upload benchmarks, each against a peer in the same run on the same device:
//!
//! - **upload**: `total` bytes of host memory into a device-local buffer through dsr's upload
//!   path (memory requests lowered into `Upload` nodes of `region` bytes, staged and batched by
//!   the uploader), against a bare `vkCmdCopyBuffer` loop: the same staging budget, already
//!   filled, copied in regions of the same size, one submission per budget's worth and a fence
//!   wait, so the peer is the copy engine's own rate with nothing on the CPU in the way;
//! - **file**: a file (warm in the page cache) into a device-local buffer end to end, dsr
//!   (reads, uploads) against a naive loop: `pread` into mapped staging, one copy, one fence
//!   wait per request, which is how the seed's Vulkan backend did it; and against its two
//!   halves alone, measured in the same runs: *read-alone* (dsr reading the file into host
//!   memory) and *copy-alone* (the bare copy loop over the same bytes). A pipeline at its best
//!   runs at the slower half's rate.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ash::vk;
use dsr::gpu::{GpuContext, HostVisible, StagingConfig};
use dsr::{DeviceBuffer, Error, ErrorKind, ExecutorConfig, Request, Result};

use super::median;

/// The staging budget both sides use.
pub const STAGING: u64 = 64 << 20;

/// One case's medians.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UploadCase {
    /// "upload" or "file".
    pub case: &'static str,
    /// Bytes per copy region (and per upload node).
    pub region_bytes: u64,
    /// Bytes moved per run.
    pub bytes: u64,
    /// dsr, GB/s (median).
    pub dsr_gbps: f64,
    /// The bare copy loop, GB/s (median), for "upload".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare_copy_gbps: Option<f64>,
    /// The naive loop, GB/s (median), for "file".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub naive_gbps: Option<f64>,
    /// The file read into host memory alone, GB/s (median), for "file".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_alone_gbps: Option<f64>,
    /// The bare copy loop alone over the same bytes, GB/s (median), for "file".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_alone_gbps: Option<f64>,
    /// dsr / peer (the bare copy for "upload", the naive loop for "file").
    pub ratio: f64,
    /// dsr / the slower of read-alone and copy-alone, for "file".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_vs_slower_half: Option<f64>,
}

fn gbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e9
}

fn failed(what: &str, result: vk::Result) -> Error {
    Error::new(ErrorKind::Device, format!("{what}: VkResult {result:?}")).with_source(result)
}

/// A mapped, host-visible buffer the peers copy from: dsr's own staging allocation, pre-faulted
/// as dsr's staging is, freed when the peer is done.
struct Staging<'a> {
    context: &'a GpuContext,
    memory: Option<HostVisible>,
}

impl<'a> Staging<'a> {
    fn new(context: &'a GpuContext, len: u64) -> Result<Self> {
        let memory = HostVisible::new(context, len)?;
        for page in (0..len).step_by(4096) {
            // SAFETY: inside the mapping just made, which nothing else uses yet.
            unsafe { memory.ptr.add(page as usize).write_volatile(1) };
        }
        Ok(Staging {
            context,
            memory: Some(memory),
        })
    }

    fn memory(&self) -> &HostVisible {
        self.memory.as_ref().expect("present until dropped")
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            // SAFETY: every copy from it was waited for before the peers return, and the
            // context is the one that made it.
            unsafe { memory.destroy(self.context) };
        }
    }
}

/// A command pool, one command buffer and a fence on the transfer queue, for the peers' loops.
struct Submitter<'a> {
    context: &'a GpuContext,
    pool: vk::CommandPool,
    cb: vk::CommandBuffer,
    fence: vk::Fence,
}

impl<'a> Submitter<'a> {
    fn new(context: &'a GpuContext) -> Result<Self> {
        let device = context.device();
        let pool_info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(context.transfer_queue().family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: objects made here and destroyed in `Drop`, used by this thread only.
        unsafe {
            let pool = device
                .create_command_pool(&pool_info, None)
                .map_err(|r| failed("cannot create a command pool", r))?;
            let alloc = vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .command_buffer_count(1);
            let cb = device
                .allocate_command_buffers(&alloc)
                .map_err(|r| failed("cannot allocate a command buffer", r))?[0];
            let fence = device
                .create_fence(&vk::FenceCreateInfo::default(), None)
                .map_err(|r| failed("cannot create a fence", r))?;
            Ok(Submitter {
                context,
                pool,
                cb,
                fence,
            })
        }
    }

    /// Records `regions` from `src` to `dst`, submits, and waits for the fence.
    fn copy_and_wait(&self, src: vk::Buffer, dst: vk::Buffer, regions: &[vk::BufferCopy]) -> Result<()> {
        let device = self.context.device();
        // SAFETY: the command buffer and fence are idle (the last use was waited for); the
        // buffers are alive for the call, which waits for the copy.
        unsafe {
            device
                .reset_command_buffer(self.cb, vk::CommandBufferResetFlags::empty())
                .map_err(|r| failed("cannot reset", r))?;
            let begin = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            device
                .begin_command_buffer(self.cb, &begin)
                .map_err(|r| failed("cannot record", r))?;
            device.cmd_copy_buffer(self.cb, src, dst, regions);
            device
                .end_command_buffer(self.cb)
                .map_err(|r| failed("cannot record", r))?;
            device
                .reset_fences(&[self.fence])
                .map_err(|r| failed("cannot reset a fence", r))?;
            let cbs = [self.cb];
            let submit = vk::SubmitInfo::default().command_buffers(&cbs);
            self.context
                .submit(self.context.transfer_queue(), &[submit], self.fence)?;
            device
                .wait_for_fences(&[self.fence], true, u64::MAX)
                .map_err(|r| failed("the copy did not finish", r))
        }
    }
}

impl Drop for Submitter<'_> {
    fn drop(&mut self) {
        // SAFETY: idle (every submission was waited for); destroyed once.
        unsafe {
            self.context.device().destroy_fence(self.fence, None);
            self.context.device().destroy_command_pool(self.pool, None);
        }
    }
}

fn executor(context: &Arc<GpuContext>, region: u64) -> Result<dsr::Executor> {
    let mut config = ExecutorConfig {
        metrics: false,
        ..ExecutorConfig::default()
    };
    config.lowering.read_chunk = region;
    config.scratch_budget = 1 << 30;
    let staging = StagingConfig {
        budget: STAGING.max(region),
        slot: region,
    };
    let (executor, _, _) = dsr::executor_with_gpu(super::trace::observe(config), dsr::io_from_env(), context, staging)?;
    Ok(executor)
}

/// Runs `request` alone through `executor`: the time from submission to its report.
fn timed(executor: &dsr::Executor, request: Request) -> Result<Duration> {
    let start = Instant::now();
    let mut batch = executor.batch();
    batch.push(request)?;
    let report = executor.submit(batch)?.wait();
    match report.first_failure() {
        Some((_, err)) => Err(err.clone()),
        None => Ok(start.elapsed()),
    }
}

fn raw(buffer: &DeviceBuffer) -> vk::Buffer {
    buffer
        .handle()
        .downcast_ref::<dsr::gpu::GpuBuffer>()
        .expect("a dsr GPU buffer")
        .raw()
}

/// dsr's upload path against the bare copy loop, `runs` alternating runs each.
pub fn upload_vs_bare(context: &Arc<GpuContext>, total: u64, region: u64, runs: usize) -> Result<UploadCase> {
    let source: Arc<[u8]> = Arc::from(vec![0x5a_u8; total as usize]);
    let dest = dsr::gpu::allocate_buffer(context, total)?;
    let executor = executor(context, region)?;
    let staging = Staging::new(context, STAGING.max(region))?;
    let submitter = Submitter::new(context)?;
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        ours.push(timed(
            &executor,
            Request::memory_to_device(source.clone(), 0, total, &dest, 0),
        )?);
        bare.push(bare_copy(&submitter, &staging, &dest, total, region)?);
    }
    let (dsr_gbps, peer) = (gbps(total, median(&mut ours)), gbps(total, median(&mut bare)));
    Ok(UploadCase {
        case: "upload",
        region_bytes: region,
        bytes: total,
        dsr_gbps,
        bare_copy_gbps: Some(peer),
        naive_gbps: None,
        read_alone_gbps: None,
        copy_alone_gbps: None,
        ratio: dsr_gbps / peer,
        ratio_vs_slower_half: None,
    })
}

/// The bare copy loop: `total` bytes from `staging` (already filled, `STAGING` bytes or one
/// region) into `dest` in regions of `region`, a budget's worth per submission, each waited for.
fn bare_copy(
    submitter: &Submitter<'_>,
    staging: &Staging<'_>,
    dest: &DeviceBuffer,
    total: u64,
    region: u64,
) -> Result<Duration> {
    let per_submit = (STAGING.max(region) / region).max(1);
    let start = Instant::now();
    let mut at = 0;
    while at < total {
        let regions: Vec<vk::BufferCopy> = (0..per_submit)
            .map(|i| at + i * region)
            .take_while(|&offset| offset < total)
            .enumerate()
            .map(|(i, offset)| vk::BufferCopy {
                src_offset: i as u64 * region,
                dst_offset: offset,
                size: region.min(total - offset),
            })
            .collect();
        at += regions.iter().map(|r| r.size).sum::<u64>();
        submitter.copy_and_wait(staging.memory().buffer, raw(dest), &regions)?;
    }
    super::trace::span("peer", "bare vkCmdCopyBuffer", start);
    Ok(start.elapsed())
}

/// A warm file into a GPU buffer: dsr against the naive loop, `runs` alternating runs each.
pub fn file_vs_naive(context: &Arc<GpuContext>, path: &Path, region: u64, runs: usize) -> Result<UploadCase> {
    let file = std::fs::File::open(path).map_err(|e| Error::from_io(e, "cannot open the file").with_path(path))?;
    let total = file
        .metadata()
        .map_err(|e| Error::from_io(e, "cannot stat the file").with_path(path))?
        .len();
    if total == 0 {
        return Err(Error::new(ErrorKind::InvalidRequest, "the file is empty"));
    }
    // Warm the page cache: both sides then measure memory → GPU, not the disk.
    let _ = std::fs::read(path);
    let dest = dsr::gpu::allocate_buffer(context, total)?;
    let executor = executor(context, region)?;
    let staging = Staging::new(context, region)?;
    let budget = Staging::new(context, STAGING.max(region))?;
    let submitter = Submitter::new(context)?;
    let host = dsr::HostBuffer::prefault(total as usize);
    let (mut ours, mut naive, mut read_alone, mut copy_alone) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let request = Request::file_to_device(path, 0, total, &dest, 0).io(dsr::IoPolicy::Buffered);
        ours.push(timed(&executor, request)?);
        let request = Request::file(path, 0, total, &host, 0).io(dsr::IoPolicy::Buffered);
        read_alone.push(timed(&executor, request)?);
        copy_alone.push(bare_copy(&submitter, &budget, &dest, total, region)?);

        let start = Instant::now();
        let mut at = 0;
        while at < total {
            let len = region.min(total - at);
            // SAFETY: the staging mapping holds `region` bytes, idle (the last copy was waited for).
            let bytes = unsafe { std::slice::from_raw_parts_mut(staging.memory().ptr, len as usize) };
            file.read_exact_at(bytes, at)
                .map_err(|e| Error::from_io(e, "read failed").with_path(path))?;
            let region = vk::BufferCopy {
                src_offset: 0,
                dst_offset: at,
                size: len,
            };
            submitter.copy_and_wait(staging.memory().buffer, raw(&dest), &[region])?;
            at += len;
        }
        naive.push(start.elapsed());
    }
    let (dsr_gbps, peer) = (gbps(total, median(&mut ours)), gbps(total, median(&mut naive)));
    let (read, copy) = (
        gbps(total, median(&mut read_alone)),
        gbps(total, median(&mut copy_alone)),
    );
    Ok(UploadCase {
        case: "file",
        region_bytes: region,
        bytes: total,
        dsr_gbps,
        bare_copy_gbps: None,
        naive_gbps: Some(peer),
        read_alone_gbps: Some(read),
        copy_alone_gbps: Some(copy),
        ratio: dsr_gbps / peer,
        ratio_vs_slower_half: Some(dsr_gbps / read.min(copy)),
    })
}
