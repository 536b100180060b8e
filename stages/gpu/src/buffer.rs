//! GPU buffers as request destinations: ones dsr allocates in device-local memory
//! ([`allocate_buffer`]), and callers' own `VkBuffer`s ([`external_buffer`]), both handed to the
//! engine as a [`DeviceBuffer`] whose handle is a [`GpuBuffer`]; and the host-visible memory
//! the transfer queue stages through.

use std::sync::Arc;

use ash::vk;
use dsr_engine::{DeviceBuffer, Error, ErrorKind, Result};
use vk_mem::Alloc;

use crate::context::{vk_error, GpuContext};

/// The GPU side of a [`DeviceBuffer`]: the Vulkan buffer, the context it belongs to, and its
/// memory when dsr allocated it (freed with the last handle; a caller's buffer is never
/// destroyed).
pub struct GpuBuffer {
    context: Arc<GpuContext>,
    buffer: vk::Buffer,
    /// dsr's allocation; `None` for a caller's buffer.
    allocation: Option<vk_mem::Allocation>,
}

// SAFETY: a Vulkan buffer handle may be used from any thread; the allocation is only touched by
// `Drop`, which has `&mut`.
unsafe impl Send for GpuBuffer {}
// SAFETY: as above: shared access only reads the handle.
unsafe impl Sync for GpuBuffer {}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBuffer")
            .field("buffer", &self.buffer)
            .field("owned", &self.allocation.is_some())
            .finish()
    }
}

impl GpuBuffer {
    /// The Vulkan buffer.
    pub fn raw(&self) -> vk::Buffer {
        self.buffer
    }

    /// The context it belongs to.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.context
    }

    /// The GPU side of `buffer`, if it is a buffer of `context`'s device.
    pub(crate) fn of<'a>(buffer: &'a DeviceBuffer, context: &GpuContext) -> Result<&'a GpuBuffer> {
        let gpu = buffer
            .handle()
            .downcast_ref::<GpuBuffer>()
            .ok_or_else(|| Error::new(ErrorKind::InvalidRequest, "the destination is not a dsr GPU buffer"))?;
        if !std::ptr::eq(&*gpu.context, context) {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "the destination buffer belongs to another GPU context than the executor's",
            ));
        }
        Ok(gpu)
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(mut allocation) = self.allocation.take() {
            // SAFETY: made together by `allocate_buffer` with this allocator; a batch writing
            // into the buffer holds a handle until its GPU work is complete, so no work uses it.
            unsafe { self.context.allocator().destroy_buffer(self.buffer, &mut allocation) };
        }
    }
}

/// The usages dsr's own buffers get: copy targets and sources (uploads, GPU copies, read-back)
/// and storage (the GPU decoder), with device addresses (the decoder's tile lists point into
/// them) where the device has them enabled.
fn usage(context: &GpuContext) -> vk::BufferUsageFlags {
    let usage =
        vk::BufferUsageFlags::TRANSFER_DST | vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::STORAGE_BUFFER;
    if context.device_address() {
        usage | vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS
    } else {
        usage
    }
}

/// The device address of `buffer`, a buffer of `context`'s made with [`usage`].
pub(crate) fn device_address(context: &GpuContext, buffer: vk::Buffer) -> vk::DeviceAddress {
    debug_assert!(context.device_address());
    // SAFETY: a live buffer of this device, made with SHADER_DEVICE_ADDRESS usage (checked by
    // the callers through `device_address()`).
    unsafe {
        context
            .device()
            .get_buffer_device_address(&vk::BufferDeviceAddressInfo::default().buffer(buffer))
    }
}

/// A device-local buffer of `len` bytes, allocated by dsr.
pub fn allocate_buffer(context: &Arc<GpuContext>, len: u64) -> Result<DeviceBuffer> {
    if len == 0 {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            "a GPU buffer needs at least one byte",
        ));
    }
    // Uploads and copies run on the transfer queue, the GPU decoder on the compute queue: where
    // those are different families, both use the buffer without ownership transfers.
    let families = [context.transfer_queue().family, context.compute_queue().family];
    let info = vk::BufferCreateInfo::default().size(len).usage(usage(context));
    let info = if families[0] != families[1] {
        info.sharing_mode(vk::SharingMode::CONCURRENT)
            .queue_family_indices(&families)
    } else {
        info.sharing_mode(vk::SharingMode::EXCLUSIVE)
    };
    let alloc = vk_mem::AllocationCreateInfo {
        usage: vk_mem::MemoryUsage::AutoPreferDevice,
        ..Default::default()
    };
    // SAFETY: the create infos are valid; the buffer and allocation are destroyed together in
    // `GpuBuffer::drop`, with the allocator that made them.
    let (buffer, allocation) = unsafe { context.allocator().create_buffer(&info, &alloc) }
        .map_err(|r| vk_error(r, &format!("cannot allocate a {len}-byte GPU buffer")))?;
    let gpu = GpuBuffer {
        context: context.clone(),
        buffer,
        allocation: Some(allocation),
    };
    // With device addresses, the GPU decoder can write into it.
    Ok(if context.device_address() {
        DeviceBuffer::new_decodable(len, gpu)
    } else {
        DeviceBuffer::new(len, gpu)
    })
}

/// A caller's `VkBuffer` of `len` bytes as a destination. dsr never destroys it.
///
/// # Safety
/// `buffer` must be a buffer of `context`'s device, at least `len` bytes, created with
/// `TRANSFER_DST` usage (and exclusive to the transfer queue family or concurrent), and stay
/// valid until every batch writing into it has completed and the returned handle is dropped.
pub unsafe fn external_buffer(context: &Arc<GpuContext>, buffer: vk::Buffer, len: u64) -> DeviceBuffer {
    DeviceBuffer::new(
        len,
        GpuBuffer {
            context: context.clone(),
            buffer,
            allocation: None,
        },
    )
}

/// A host-visible buffer, mapped, for moving bytes between the host and the GPU: the transfer
/// queue's staging, and the staging the upload benchmark's peers copy from (the same memory).
#[derive(Debug)]
pub struct HostVisible {
    pub buffer: vk::Buffer,
    allocation: vk_mem::Allocation,
    pub ptr: *mut u8,
    pub len: u64,
}

impl HostVisible {
    /// `len` bytes of staging. Uploads, the hot path, write it sequentially (it may be
    /// write-combined memory); read-backs read it once per byte.
    pub fn new(context: &GpuContext, len: u64) -> Result<Self> {
        Self::with_access(
            context,
            len,
            vk_mem::AllocationCreateFlags::HOST_ACCESS_SEQUENTIAL_WRITE,
        )
    }

    /// `len` bytes the host reads as well as writes (GPU results, read word by word): cached
    /// memory where the device has it, never write-combined.
    pub fn readable(context: &GpuContext, len: u64) -> Result<Self> {
        Self::with_access(context, len, vk_mem::AllocationCreateFlags::HOST_ACCESS_RANDOM)
    }

    fn with_access(context: &GpuContext, len: u64, access: vk_mem::AllocationCreateFlags) -> Result<Self> {
        let info = vk::BufferCreateInfo::default()
            .size(len.max(1))
            .usage(usage(context))
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        let alloc = vk_mem::AllocationCreateInfo {
            usage: vk_mem::MemoryUsage::AutoPreferHost,
            flags: access | vk_mem::AllocationCreateFlags::MAPPED,
            required_flags: vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT,
            ..Default::default()
        };
        // SAFETY: valid create infos; destroyed in `destroy` with the same allocator.
        let (buffer, allocation) = unsafe { context.allocator().create_buffer(&info, &alloc) }
            .map_err(|r| vk_error(r, &format!("cannot allocate {len} bytes of host-visible GPU memory")))?;
        let ptr = context
            .allocator()
            .get_allocation_info(&allocation)
            .mapped_data
            .cast::<u8>();
        if ptr.is_null() {
            let mut allocation = allocation;
            // SAFETY: just made, unused.
            unsafe { context.allocator().destroy_buffer(buffer, &mut allocation) };
            return Err(Error::new(
                ErrorKind::Device,
                "host-visible GPU memory could not be mapped",
            ));
        }
        Ok(HostVisible {
            buffer,
            allocation,
            ptr,
            len,
        })
    }

    /// Frees it.
    ///
    /// # Safety
    /// No GPU work may use the buffer any more, and `context` must be the one that made it.
    pub unsafe fn destroy(mut self, context: &GpuContext) {
        // SAFETY: by the caller's premise.
        unsafe { context.allocator().destroy_buffer(self.buffer, &mut self.allocation) };
    }
}
