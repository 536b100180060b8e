//! dsr's GPU GDeflate decoder: the compute pipeline of `shaders/gdeflate.comp` (one workgroup of
//! 32 lanes per tile, many tiles per dispatch, outputs straight into their destination ranges),
//! and [`DecodeRun`], which stages a set of tiles on the device, decodes them with dsr's shader
//! or the driver's `VK_NV_memory_decompression`, times the GPU work with timestamps and reads
//! the results back: what the tests, `dsr gdeflate decompress --decode gpu` and
//! `dsr bench decode-gpu` use.
//!
//! The shader is safe on hostile tiles by construction (every read bounded by the tile's size,
//! every write by its output size, every loop by a bound; see the shader's header). What the host
//! must guarantee, and [`DecodeRun::new`] checks: every tile's input lies inside the input
//! buffer at a 4-byte-aligned offset, every output range inside the output buffer, and no two
//! output ranges overlap.

use std::sync::Arc;
use std::time::Duration;

use ash::vk;
use dsr_engine::{DeviceBuffer, Error, ErrorKind, Result};
use dsr_gdeflate::Reason;

use crate::buffer::{allocate_buffer, device_address, GpuBuffer, HostVisible};
use crate::context::{vk_error, GpuContext};

/// The shader with shared-memory cross-lane steps: any device.
const SPIRV_SHARED: &[u8] = include_bytes!("../../../shaders/gdeflate.spv");
/// The shader with subgroup operations: devices whose subgroups are exactly 32 lanes.
const SPIRV_WAVE32: &[u8] = include_bytes!("../../../shaders/gdeflate-wave32.spv");
/// The tile hash check (`shaders/tilehash.comp`): XXH3-64 of tiles in GPU memory against
/// expected values.
const SPIRV_TILEHASH: &[u8] = include_bytes!("../../../shaders/tilehash.spv");

/// Words after the statuses where the shader's profiling build sums its counters.
pub const PROFILE_WORDS: usize = 8;

/// How long a decode may take before dsr calls the GPU stuck (a bound, not an expectation: the
/// shader's loops are bounded, so only a broken driver gets here).
const GPU_TIMEOUT: Duration = Duration::from_secs(120);

/// Which build of the shader runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Cross-lane steps through shared memory and barriers (any subgroup size).
    Shared,
    /// Cross-lane steps as subgroup operations (subgroups of exactly 32).
    Wave32,
}

impl Form {
    /// The form's name, as `dsr info` and the benches print it.
    pub fn name(self) -> &'static str {
        match self {
            Form::Shared => "shared-memory",
            Form::Wave32 => "wave32",
        }
    }
}

/// One tile as the shader reads it (`struct Tile` in the shader, std430).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileDesc {
    pub src: u64,
    pub dst: u64,
    pub src_bytes: u32,
    pub dst_bytes: u32,
}

/// One tile as the hash check reads it (`struct Tile` in `tilehash.comp`, std430).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct HashDesc {
    pub addr: u64,
    pub len: u32,
    pub pad: u32,
    pub expected: u64,
}

/// The shaders' push constants (both have this shape).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Push {
    tiles: u64,
    status: u64,
    count: u32,
    pad: u32,
}

/// The shader's status words back as results: 0 is success, then `Reason`'s order.
pub fn status_result(code: u32) -> std::result::Result<(), Reason> {
    const REASONS: [Reason; 14] = [
        Reason::Truncated,
        Reason::Misaligned,
        Reason::TrailingData,
        Reason::BadBlockType,
        Reason::OversubscribedCode,
        Reason::InvalidCode,
        Reason::BadRepeat,
        Reason::NoEndOfBlock,
        Reason::BadLengthSymbol,
        Reason::DistanceTooFar,
        Reason::OutputOverflow,
        Reason::OutputShort,
        Reason::SizeMismatch,
        Reason::StepLimit,
    ];
    match code {
        0 => Ok(()),
        c => Err(REASONS.get(c as usize - 1).copied().unwrap_or(Reason::StepLimit)),
    }
}

/// The decoder's pipeline on one device.
pub struct GpuDecoder {
    context: Arc<GpuContext>,
    decode: Pipeline,
    hash: Pipeline,
    form: Form,
}

/// A compute pipeline and what it is made of.
struct Pipeline {
    module: vk::ShaderModule,
    layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
}

impl Pipeline {
    /// The pipeline of SPIR-V `code`, with the push constants of [`Push`].
    fn new(device: &ash::Device, code: &[u8], what: &str) -> Result<Pipeline> {
        let words: Vec<u32> = code
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        // SAFETY: SPIR-V compiled from our shaders (validated by glslc and the test that
        // rebuilds it); every object made here is destroyed in `destroy`, or below on failure.
        unsafe {
            let module = device
                .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)
                .map_err(|r| vk_error(r, &format!("cannot create the {what} shader module")))?;
            let ranges = [vk::PushConstantRange::default()
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
                .size(std::mem::size_of::<Push>() as u32)];
            let layout = match device.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().push_constant_ranges(&ranges),
                None,
            ) {
                Ok(layout) => layout,
                Err(r) => {
                    device.destroy_shader_module(module, None);
                    return Err(vk_error(r, &format!("cannot create the {what} pipeline layout")));
                }
            };
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(c"main");
            let info = vk::ComputePipelineCreateInfo::default().stage(stage).layout(layout);
            match device.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) {
                Ok(pipelines) => Ok(Pipeline {
                    module,
                    layout,
                    pipeline: pipelines[0],
                }),
                Err((_, r)) => {
                    device.destroy_pipeline_layout(layout, None);
                    device.destroy_shader_module(module, None);
                    Err(vk_error(r, &format!("cannot create the {what} pipeline")))
                }
            }
        }
    }

    /// Records a dispatch of a workgroup per item (looping past the dispatch limit) with the
    /// push constants `tiles`, `status`, `count`.
    ///
    /// # Safety
    /// `cb` is recording, on a queue family with compute; the addresses hold what the shader
    /// expects until the work completes.
    unsafe fn record(&self, device: &ash::Device, cb: vk::CommandBuffer, tiles: u64, status: u64, count: u32) {
        let push = Push {
            tiles,
            status,
            count,
            pad: 0,
        };
        // SAFETY: plain-old-data of the declared push-constant size.
        let bytes =
            unsafe { std::slice::from_raw_parts((&push as *const Push).cast::<u8>(), std::mem::size_of::<Push>()) };
        let groups = count.clamp(1, 65_535);
        // SAFETY: by the caller's premises.
        unsafe {
            device.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, self.pipeline);
            device.cmd_push_constants(cb, self.layout, vk::ShaderStageFlags::COMPUTE, 0, bytes);
            device.cmd_dispatch(cb, groups, 1, 1);
        }
    }

    /// # Safety
    /// No work recorded with it is pending.
    unsafe fn destroy(&self, device: &ash::Device) {
        // SAFETY: by the caller's premise.
        unsafe {
            device.destroy_pipeline(self.pipeline, None);
            device.destroy_pipeline_layout(self.layout, None);
            device.destroy_shader_module(self.module, None);
        }
    }
}

impl std::fmt::Debug for GpuDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDecoder").field("form", &self.form).finish()
    }
}

fn unsupported(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unsupported, message)
}

impl GpuDecoder {
    /// The decoder on `context`'s device, in the form the device suits best, or `form`.
    /// Unsupported where dsr did not enable buffer device addresses, 8-bit storage and 64-bit
    /// integers (a caller's device), or for `Form::Wave32` where subgroups are not 32 lanes with
    /// ballot, arithmetic and shuffle operations in compute shaders.
    pub fn new(context: &Arc<GpuContext>, form: Option<Form>) -> Result<GpuDecoder> {
        if !context.device_address() {
            return Err(unsupported(
                "the GPU decoder needs buffer device addresses, 8-bit storage and integers, and 64-bit integers, \
                 which this device lacks or dsr did not enable (a caller's device)",
            ));
        }
        let wave32_ok = wave32_supported(context);
        let form = match form {
            Some(Form::Wave32) if !wave32_ok => {
                return Err(unsupported(format!(
                    "the wave32 decoder needs subgroups of exactly 32 lanes with ballot, arithmetic \
                     and shuffle in compute shaders; this device's are {} lanes",
                    context.info().subgroup_size
                )))
            }
            Some(form) => form,
            None if wave32_ok => Form::Wave32,
            None => Form::Shared,
        };
        // A development hook: another build of the shader (the profiling one, see
        // `DecodeRun::profile`), same interface.
        let custom = match std::env::var_os("DSR_GDEFLATE_SPIRV") {
            Some(path) => Some(std::fs::read(&path).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidRequest,
                    format!("cannot read DSR_GDEFLATE_SPIRV {}: {e}", path.to_string_lossy()),
                )
            })?),
            None => None,
        };
        let code = match (&custom, form) {
            (Some(code), _) => &code[..],
            (None, Form::Shared) => SPIRV_SHARED,
            (None, Form::Wave32) => SPIRV_WAVE32,
        };
        let device = context.device();
        let decode = Pipeline::new(device, code, "GDeflate")?;
        let hash = match Pipeline::new(device, SPIRV_TILEHASH, "tile hash") {
            Ok(hash) => hash,
            Err(err) => {
                // SAFETY: just made, never used.
                unsafe { decode.destroy(device) };
                return Err(err);
            }
        };
        Ok(GpuDecoder {
            context: context.clone(),
            decode,
            hash,
            form,
        })
    }

    /// The form that runs.
    pub fn form(&self) -> Form {
        self.form
    }

    /// The context it runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.context
    }

    /// Records the decode of `count` tiles described at `tiles` (an array of the shader's
    /// `Tile`), statuses to `status` (one `u32` per tile).
    ///
    /// # Safety
    /// `cb` is recording, on a queue family with compute; the addresses point at live buffers
    /// holding what the shader expects, whose tiles satisfy the module comment's rules, until
    /// the work completes.
    pub(crate) unsafe fn record(&self, cb: vk::CommandBuffer, tiles: u64, status: u64, count: u32) {
        // SAFETY: by the caller's premises.
        unsafe { self.decode.record(self.context.device(), cb, tiles, status, count) }
    }

    /// Records the hash check of `count` tiles described at `tiles` (an array of
    /// [`HashDesc`]): each status word at `status` ends 0 where the tile's XXH3-64 is the
    /// expected one, 1 where not.
    ///
    /// # Safety
    /// As for [`GpuDecoder::record`]; every tile's range lies in a live buffer.
    pub(crate) unsafe fn record_hash(&self, cb: vk::CommandBuffer, tiles: u64, status: u64, count: u32) {
        // SAFETY: by the caller's premises.
        unsafe { self.hash.record(self.context.device(), cb, tiles, status, count) }
    }

    /// Checks XXH3-64 hashes of ranges of `buffer` (offset, length, expected hash) on the GPU,
    /// and waits: whether each matches. For tests and tools; the `DecompressGpu` stage checks
    /// tiles in its own submissions.
    pub fn check_hashes(&self, buffer: &DeviceBuffer, ranges: &[(u64, u32, u64)]) -> Result<Vec<bool>> {
        let context = &self.context;
        let gpu = GpuBuffer::of(buffer, context)?;
        if !buffer.decodable() {
            return Err(unsupported("the buffer was made without device addresses"));
        }
        if let Some(&(at, len, _)) = ranges
            .iter()
            .find(|&&(at, len, _)| at.checked_add(len as u64).is_none_or(|end| end > buffer.len()))
        {
            return Err(invalid(format!("the range {at}+{len} runs past the buffer")));
        }
        let base = device_address(context, gpu.raw());
        let descs: Vec<HashDesc> = ranges
            .iter()
            .map(|&(at, len, expected)| HashDesc {
                addr: base + at,
                len,
                pad: 0,
                expected,
            })
            .collect();
        let desc_bytes = std::mem::size_of_val(&descs[..]) as u64;
        let list = HostVisible::new(context, desc_bytes + 4 * ranges.len() as u64)?;
        // SAFETY: the mapping holds the descriptors and statuses; no GPU work uses it yet.
        unsafe {
            std::ptr::copy_nonoverlapping(descs.as_ptr().cast::<u8>(), list.ptr, desc_bytes as usize);
            std::ptr::write_bytes(list.ptr.add(desc_bytes as usize), 0xff, 4 * ranges.len());
        }
        let addr = device_address(context, list.buffer);
        let done = one_shot(context, |device, cb| {
            // SAFETY: the list and buffer live until `one_shot` has waited; the ranges were
            // checked against the buffer above.
            unsafe {
                self.record_hash(cb, addr, addr + desc_bytes, ranges.len() as u32);
                barrier(
                    device,
                    cb,
                    (vk::PipelineStageFlags::COMPUTE_SHADER, vk::AccessFlags::SHADER_WRITE),
                    (vk::PipelineStageFlags::HOST, vk::AccessFlags::HOST_READ),
                );
            }
        });
        // SAFETY: the statuses follow the descriptors; the work writing them is done (or
        // failed, and the words are not read).
        let matches = done.map(|()| unsafe {
            std::slice::from_raw_parts(list.ptr.add(desc_bytes as usize).cast::<u32>(), ranges.len())
                .iter()
                .map(|&w| w == 0)
                .collect()
        });
        // On a failed wait the GPU may still hold the list: leak it then.
        if matches.is_ok() {
            // SAFETY: the work using it was waited for above.
            unsafe { list.destroy(context) };
        }
        matches
    }
}

impl Drop for GpuDecoder {
    fn drop(&mut self) {
        let device = self.context.device();
        // SAFETY: made in `new`; work recorded with them was waited for by its `DecodeRun`
        // (which borrows the decoder) or its stage.
        unsafe {
            self.decode.destroy(device);
            self.hash.destroy(device);
        }
    }
}

fn wave32_supported(context: &GpuContext) -> bool {
    let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
    let mut control = vk::PhysicalDeviceSubgroupSizeControlProperties::default();
    let mut props = vk::PhysicalDeviceProperties2::default()
        .push_next(&mut subgroup)
        .push_next(&mut control);
    // SAFETY: a query into structures that live across the call.
    unsafe {
        context
            .instance()
            .get_physical_device_properties2(context.physical_device(), &mut props)
    };
    let ops =
        vk::SubgroupFeatureFlags::BALLOT | vk::SubgroupFeatureFlags::ARITHMETIC | vk::SubgroupFeatureFlags::SHUFFLE;
    // A workgroup of 32 is one subgroup only where the size is 32 and cannot vary.
    let fixed = control.min_subgroup_size == 0 || control.min_subgroup_size == control.max_subgroup_size;
    subgroup.subgroup_size == 32
        && fixed
        && subgroup.supported_stages.contains(vk::ShaderStageFlags::COMPUTE)
        && subgroup.supported_operations.contains(ops)
}

/// One tile of a [`DecodeRun`]: its compressed bytes in the input, its output range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileJob {
    /// Byte offset of the tile in the input (a multiple of 4).
    pub src_offset: u64,
    /// Its compressed size.
    pub src_len: u32,
    /// Where its bytes go in the output.
    pub dst_offset: u64,
    /// Its uncompressed size (≤ 65536).
    pub dst_len: u32,
}

/// A set of tiles staged on the device (input and output in device-local memory, the tile list
/// and statuses host-visible), to decode once or many times.
pub struct DecodeRun<'a> {
    decoder: &'a GpuDecoder,
    input: DeviceBuffer,
    output: DeviceBuffer,
    descs: Option<HostVisible>,
    status: Option<HostVisible>,
    tiles: Vec<TileJob>,
    output_len: u64,
}

impl std::fmt::Debug for DecodeRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeRun")
            .field("tiles", &self.tiles.len())
            .field("output_len", &self.output_len)
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}

/// Checks the host's side of the shader's contract (see the module comment).
fn check_jobs(input_len: u64, tiles: &[TileJob], output_len: u64) -> Result<()> {
    if tiles.is_empty() || tiles.len() > u32::MAX as usize {
        return Err(invalid(format!(
            "a GPU decode takes 1 to 2^32-1 tiles, not {}",
            tiles.len()
        )));
    }
    for (i, t) in tiles.iter().enumerate() {
        let src_end = t.src_offset.checked_add(t.src_len as u64);
        if !t.src_offset.is_multiple_of(4) || src_end.is_none_or(|end| end > input_len) {
            return Err(invalid(format!(
                "tile {i}'s input ({} bytes at {}) is not a 4-byte-aligned range of the {input_len}-byte input",
                t.src_len, t.src_offset
            )));
        }
        let dst_end = t.dst_offset.checked_add(t.dst_len as u64);
        if dst_end.is_none_or(|end| end > output_len) {
            return Err(invalid(format!(
                "tile {i}'s output ({} bytes at {}) lies outside the {output_len}-byte output",
                t.dst_len, t.dst_offset
            )));
        }
    }
    let mut ranges: Vec<(u64, u64)> = tiles
        .iter()
        .map(|t| (t.dst_offset, t.dst_offset + t.dst_len as u64))
        .collect();
    ranges.sort_unstable();
    if let Some(pair) = ranges.windows(2).find(|w| w[0].1 > w[1].0) {
        return Err(invalid(format!(
            "two tiles' outputs overlap ({}..{} and {}..{})",
            pair[0].0, pair[0].1, pair[1].0, pair[1].1
        )));
    }
    Ok(())
}

impl<'a> DecodeRun<'a> {
    /// Stages `input` (tiles back to back, or a whole TileStream) and an output of
    /// `output_len` bytes on the device for `tiles`.
    pub fn new(decoder: &'a GpuDecoder, input: &[u8], tiles: &[TileJob], output_len: u64) -> Result<DecodeRun<'a>> {
        check_jobs(input.len() as u64, tiles, output_len)?;
        let context = &decoder.context;
        let input_buffer = allocate_buffer(context, (input.len() as u64).max(4))?;
        let output = allocate_buffer(context, output_len.max(4))?;
        let mut run = DecodeRun {
            decoder,
            input: input_buffer,
            output,
            descs: None,
            status: None,
            tiles: tiles.to_vec(),
            output_len,
        };
        let (src_base, dst_base) = (run.address(&run.input), run.address(&run.output));
        let descs = HostVisible::new(context, (tiles.len() * std::mem::size_of::<TileDesc>()) as u64)?;
        run.descs = Some(descs);
        let status = HostVisible::new(context, 4 * (tiles.len() + PROFILE_WORDS) as u64)?;
        run.status = Some(status);
        let table: Vec<TileDesc> = tiles
            .iter()
            .map(|t| TileDesc {
                src: src_base + t.src_offset,
                dst: dst_base + t.dst_offset,
                src_bytes: t.src_len,
                dst_bytes: t.dst_len,
            })
            .collect();
        let descs = run.descs.as_ref().expect("made above");
        // SAFETY: the mapping holds `tiles.len()` descriptors (made for exactly that), and
        // nothing on the GPU uses it yet.
        unsafe {
            std::ptr::copy_nonoverlapping(
                table.as_ptr().cast::<u8>(),
                descs.ptr,
                std::mem::size_of_val(&table[..]),
            )
        };
        // The input through a staging copy into device-local memory.
        let staging = HostVisible::new(context, input.len() as u64)?;
        // SAFETY: the staging mapping holds `input.len()` bytes and is not in use.
        unsafe { std::ptr::copy_nonoverlapping(input.as_ptr(), staging.ptr, input.len()) };
        let input_raw = run.raw(&run.input);
        let copied = one_shot(context, |device, cb| {
            if !input.is_empty() {
                let region = [vk::BufferCopy::default().size(input.len() as u64)];
                // SAFETY: both buffers are live and large enough; `cb` is recording.
                unsafe { device.cmd_copy_buffer(cb, staging.buffer, input_raw, &region) };
            }
        });
        // SAFETY: the copy finished (or never ran: `one_shot` waits or fails before submitting).
        unsafe { staging.destroy(context) };
        copied?;
        Ok(run)
    }

    fn raw(&self, buffer: &DeviceBuffer) -> vk::Buffer {
        GpuBuffer::of(buffer, &self.decoder.context)
            .expect("allocated on this context")
            .raw()
    }

    fn address(&self, buffer: &DeviceBuffer) -> u64 {
        device_address(&self.decoder.context, self.raw(buffer))
    }

    /// The tiles.
    pub fn tiles(&self) -> &[TileJob] {
        &self.tiles
    }

    /// Decodes every tile with dsr's shader `repeats` times (the output cleared first); returns
    /// each repeat's GPU time from timestamps, or `None`s where the queue has no timestamps.
    pub fn decode(&self, repeats: u32) -> Result<Vec<Option<Duration>>> {
        let descs = self.descs.as_ref().expect("made in new").buffer;
        let status = self.status.as_ref().expect("made in new").buffer;
        let context = &self.decoder.context;
        let (tiles, status) = (device_address(context, descs), device_address(context, status));
        let count = self.tiles.len() as u32;
        let words = self.status.as_ref().expect("made in new").ptr.cast::<u32>();
        // SAFETY: the profile words after the statuses, in a mapping no GPU work uses now.
        unsafe { std::ptr::write_bytes(words.add(self.tiles.len()), 0, PROFILE_WORDS) };
        self.timed(repeats, |cb| {
            // SAFETY: the descriptors and statuses are live host-visible buffers of this run,
            // the tiles were checked in `new`; `cb` is recording on the compute family.
            unsafe { self.decoder.record(cb, tiles, status, count) }
        })
    }

    /// The same tiles through `VK_NV_memory_decompression` (one region per tile), `repeats`
    /// times, timed like [`DecodeRun::decode`]. Unsupported where the device lacks it.
    pub fn decode_nv(&self, repeats: u32) -> Result<Vec<Option<Duration>>> {
        let context = &self.decoder.context;
        if !context.nv_decompression() {
            return Err(unsupported("the device has no VK_NV_memory_decompression"));
        }
        if let Some((i, _)) = self
            .tiles
            .iter()
            .enumerate()
            .find(|(_, t)| !t.dst_offset.is_multiple_of(4) || t.src_len == 0 || t.dst_len == 0)
        {
            return Err(invalid(format!(
                "tile {i} breaks VK_NV_memory_decompression's rules (4-byte-aligned output, non-empty ranges)"
            )));
        }
        let nv = ash::nv::memory_decompression::Device::new(context.instance(), context.device());
        let (src_base, dst_base) = (self.address(&self.input), self.address(&self.output));
        let regions: Vec<vk::DecompressMemoryRegionNV> = self
            .tiles
            .iter()
            .map(|t| {
                vk::DecompressMemoryRegionNV::default()
                    .src_address(src_base + t.src_offset)
                    .dst_address(dst_base + t.dst_offset)
                    .compressed_size(t.src_len as u64)
                    .decompressed_size(t.dst_len as u64)
                    .decompression_method(vk::MemoryDecompressionMethodFlagsNV::GDEFLATE_1_0)
            })
            .collect();
        self.timed(repeats, |cb| {
            // SAFETY: the regions lie inside the run's live buffers (checked in `new` and above).
            unsafe { nv.cmd_decompress_memory(cb, &regions) }
        })
    }

    /// Clears the output, then records `work` `repeats` times with timestamps around each and
    /// barriers between, submits, waits.
    fn timed(&self, repeats: u32, work: impl Fn(vk::CommandBuffer)) -> Result<Vec<Option<Duration>>> {
        let context = &self.decoder.context;
        let family = context.compute_queue().family;
        let period = timestamp_period(context, family);
        let repeats = repeats.max(1);
        let pool = match period {
            Some(_) => {
                let info = vk::QueryPoolCreateInfo::default()
                    .query_type(vk::QueryType::TIMESTAMP)
                    .query_count(2 * repeats);
                // SAFETY: a valid create info; destroyed below.
                Some(
                    unsafe { context.device().create_query_pool(&info, None) }
                        .map_err(|r| vk_error(r, "cannot create a timestamp query pool"))?,
                )
            }
            None => None,
        };
        let output = self.raw(&self.output);
        let done = one_shot(context, |device, cb| {
            // SAFETY: `cb` is recording on the compute family; every buffer and the pool are live.
            unsafe {
                if let Some(pool) = pool {
                    device.cmd_reset_query_pool(cb, pool, 0, 2 * repeats);
                }
                device.cmd_fill_buffer(cb, output, 0, vk::WHOLE_SIZE, 0);
                for i in 0..repeats {
                    barrier(
                        device,
                        cb,
                        (
                            vk::PipelineStageFlags::TRANSFER | vk::PipelineStageFlags::COMPUTE_SHADER,
                            vk::AccessFlags::TRANSFER_WRITE | vk::AccessFlags::SHADER_WRITE,
                        ),
                        (
                            vk::PipelineStageFlags::COMPUTE_SHADER,
                            vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE,
                        ),
                    );
                    if let Some(pool) = pool {
                        device.cmd_write_timestamp(cb, vk::PipelineStageFlags::TOP_OF_PIPE, pool, 2 * i);
                    }
                    work(cb);
                    if let Some(pool) = pool {
                        device.cmd_write_timestamp(cb, vk::PipelineStageFlags::BOTTOM_OF_PIPE, pool, 2 * i + 1);
                    }
                }
            }
        });
        let times = match (done, pool, period) {
            (Ok(()), Some(pool), Some(period)) => {
                let mut stamps = vec![0u64; 2 * repeats as usize];
                // SAFETY: the pool's queries were written by the work that just completed.
                let read = unsafe {
                    context
                        .device()
                        .get_query_pool_results(pool, 0, &mut stamps, vk::QueryResultFlags::TYPE_64)
                };
                read.map(|()| {
                    stamps
                        .chunks_exact(2)
                        .map(|s| {
                            Some(Duration::from_nanos(
                                (s[1].wrapping_sub(s[0]) as f64 * period as f64) as u64,
                            ))
                        })
                        .collect()
                })
                .map_err(|r| vk_error(r, "cannot read the decode's timestamps"))
            }
            (Ok(()), _, _) => Ok(vec![None; repeats as usize]),
            (Err(err), _, _) => Err(err),
        };
        if let Some(pool) = pool {
            // SAFETY: the work using it completed (or was never submitted).
            unsafe { context.device().destroy_query_pool(pool, None) };
        }
        times
    }

    /// Each tile's result from the last decode by dsr's shader.
    pub fn statuses(&self) -> Vec<std::result::Result<(), Reason>> {
        let status = self.status.as_ref().expect("made in new");
        // SAFETY: the mapping holds one u32 per tile; the GPU work writing it has completed.
        let words = unsafe { std::slice::from_raw_parts(status.ptr.cast::<u32>(), self.tiles.len()) };
        words.iter().map(|&w| status_result(w)).collect()
    }

    /// What the shader's profiling build (`glslc -DPROFILE=1`, loaded through
    /// `DSR_GDEFLATE_SPIRV`) counted over the last decode, summed over the tiles: cycles per
    /// phase (subgroup clock) in units of 256, and rounds; zeros from the normal build. The
    /// words follow the statuses in their buffer.
    pub fn profile(&self) -> [u32; PROFILE_WORDS] {
        let status = self.status.as_ref().expect("made in new");
        let mut words = [0u32; PROFILE_WORDS];
        // SAFETY: the mapping holds the statuses and then PROFILE_WORDS words; the GPU work
        // writing it has completed.
        let all = unsafe { std::slice::from_raw_parts(status.ptr.cast::<u32>(), self.tiles.len() + PROFILE_WORDS) };
        words.copy_from_slice(&all[self.tiles.len()..]);
        words
    }

    /// The output buffer (where the tiles decode to).
    pub fn output(&self) -> &DeviceBuffer {
        &self.output
    }

    /// The output buffer's bytes, read back.
    pub fn read_output(&self) -> Result<Vec<u8>> {
        let context = &self.decoder.context;
        let staging = HostVisible::new(context, self.output_len)?;
        let output = self.raw(&self.output);
        let len = self.output_len;
        let copied = one_shot(context, |device, cb| {
            if len > 0 {
                let region = [vk::BufferCopy::default().size(len)];
                // SAFETY: both buffers are live and hold `len` bytes; `cb` is recording.
                unsafe { device.cmd_copy_buffer(cb, output, staging.buffer, &region) };
            }
        });
        let bytes = copied.map(|()| {
            // SAFETY: the copy into the mapping completed; it holds `len` bytes.
            unsafe { std::slice::from_raw_parts(staging.ptr, len as usize) }.to_vec()
        });
        // SAFETY: the copy completed (or never ran).
        unsafe { staging.destroy(context) };
        bytes
    }
}

impl Drop for DecodeRun<'_> {
    fn drop(&mut self) {
        let context = &self.decoder.context;
        // SAFETY: every submission of this run was waited for before its call returned.
        unsafe {
            if let Some(descs) = self.descs.take() {
                descs.destroy(context);
            }
            if let Some(status) = self.status.take() {
                status.destroy(context);
            }
        }
    }
}

/// Nanoseconds per tick where `family` writes timestamps.
fn timestamp_period(context: &GpuContext, family: u32) -> Option<f32> {
    // SAFETY: plain queries.
    let (props, families) = unsafe {
        (
            context
                .instance()
                .get_physical_device_properties(context.physical_device()),
            context
                .instance()
                .get_physical_device_queue_family_properties(context.physical_device()),
        )
    };
    let bits = families.get(family as usize)?.timestamp_valid_bits;
    (bits > 0 && props.limits.timestamp_period > 0.0).then_some(props.limits.timestamp_period)
}

/// A submission on the compute queue: its command pool and the fence it signals.
pub(crate) struct Submitted {
    pool: vk::CommandPool,
    fence: vk::Fence,
}

impl Submitted {
    /// Waits up to [`GPU_TIMEOUT`] for the GPU; then destroys the pool and fence. On a timeout
    /// they are leaked (the work may still use them) and the call fails.
    pub(crate) fn wait(self, context: &GpuContext) -> Result<()> {
        let device = context.device();
        // SAFETY: the fence and pool are this submission's; they are destroyed only once the
        // fence has signalled.
        unsafe {
            match device.wait_for_fences(&[self.fence], true, GPU_TIMEOUT.as_nanos() as u64) {
                Ok(()) => {
                    device.destroy_fence(self.fence, None);
                    device.destroy_command_pool(self.pool, None);
                    Ok(())
                }
                Err(vk::Result::TIMEOUT) => Err(Error::new(
                    ErrorKind::Device,
                    format!("the GPU did not finish within {} s", GPU_TIMEOUT.as_secs()),
                )),
                Err(r) => Err(context.check(r, "cannot wait for the GPU")),
            }
        }
    }
}

/// Records `record` into a fresh command buffer on the compute queue and submits it.
pub(crate) fn submit_once(
    context: &GpuContext,
    record: impl FnOnce(&ash::Device, vk::CommandBuffer),
) -> Result<Submitted> {
    let device = context.device();
    let queue = context.compute_queue();
    let pool_info = vk::CommandPoolCreateInfo::default()
        .queue_family_index(queue.family)
        .flags(vk::CommandPoolCreateFlags::TRANSIENT);
    // SAFETY: valid create infos; on failure everything made here is destroyed before returning,
    // on success the objects go to the caller with the work.
    unsafe {
        let pool = device
            .create_command_pool(&pool_info, None)
            .map_err(|r| vk_error(r, "cannot create a command pool"))?;
        let destroy = |fence: vk::Fence| {
            if fence != vk::Fence::null() {
                device.destroy_fence(fence, None);
            }
            device.destroy_command_pool(pool, None);
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        let cb = match device.allocate_command_buffers(&alloc) {
            Ok(cbs) => cbs[0],
            Err(r) => {
                destroy(vk::Fence::null());
                return Err(vk_error(r, "cannot allocate a command buffer"));
            }
        };
        let begin = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        if let Err(r) = device.begin_command_buffer(cb, &begin) {
            destroy(vk::Fence::null());
            return Err(vk_error(r, "cannot begin a command buffer"));
        }
        record(device, cb);
        if let Err(r) = device.end_command_buffer(cb) {
            destroy(vk::Fence::null());
            return Err(vk_error(r, "cannot record the GPU decode"));
        }
        let fence = match device.create_fence(&vk::FenceCreateInfo::default(), None) {
            Ok(fence) => fence,
            Err(r) => {
                destroy(vk::Fence::null());
                return Err(vk_error(r, "cannot create a fence"));
            }
        };
        let cbs = [cb];
        let submit = vk::SubmitInfo::default().command_buffers(&cbs);
        if let Err(err) = context.submit(queue, &[submit], fence) {
            destroy(fence);
            return Err(err);
        }
        Ok(Submitted { pool, fence })
    }
}

/// Records a global memory barrier: `src` accesses in `src_stages` before `dst` accesses in
/// `dst_stages`.
///
/// # Safety
/// `cb` is recording.
pub(crate) unsafe fn barrier(
    device: &ash::Device,
    cb: vk::CommandBuffer,
    (src_stages, src): (vk::PipelineStageFlags, vk::AccessFlags),
    (dst_stages, dst): (vk::PipelineStageFlags, vk::AccessFlags),
) {
    let barrier = [vk::MemoryBarrier::default().src_access_mask(src).dst_access_mask(dst)];
    // SAFETY: by the caller's premise.
    unsafe {
        device.cmd_pipeline_barrier(
            cb,
            src_stages,
            dst_stages,
            vk::DependencyFlags::empty(),
            &barrier,
            &[],
            &[],
        )
    };
}

/// Records `record`, submits it on the compute queue and waits (see [`Submitted::wait`]).
fn one_shot(context: &GpuContext, record: impl FnOnce(&ash::Device, vk::CommandBuffer)) -> Result<()> {
    submit_once(context, record)?.wait(context)
}
