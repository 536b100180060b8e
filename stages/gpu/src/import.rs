//! Scratch blocks imported into Vulkan (`VK_EXT_external_memory_host`), so a file → GPU upload
//! copies straight from the scratch its read landed in: no copy into staging on the CPU.
//!
//! The engine's scratch pool tells [`HostImports`] (as its [`ScratchHooks`]) of every block it
//! maps and before it unmaps one. A block is imported lazily, the first time an upload reads
//! from it, as one `VkDeviceMemory` over the block's pages and a `VkBuffer` bound to it; the
//! import lives as long as the block, which the pool keeps cached for reuse, so a steady stream
//! of loads imports each block once. Before the pool unmaps a block the import is destroyed;
//! the GPU is done with it by then, since a block is unmapped only when no request holds it and
//! a request lets its scratch go only after its uploads have completed.
//!
//! Only blocks of [`MIN_IMPORT`] bytes or more are imported (smaller pieces are cheap to stage,
//! and every import is a device allocation), at most [`MAX_IMPORTS`] at once; a block that
//! cannot be imported is remembered as such and its uploads go through staging.

use std::collections::BTreeMap;
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use ash::vk;
use dsr_engine::ScratchHooks;

use crate::context::GpuContext;

/// The smallest block worth importing.
pub const MIN_IMPORT: usize = 256 << 10;
/// The most blocks imported at once (each is a device allocation).
pub const MAX_IMPORTS: usize = 1024;

/// One scratch block the pool has mapped.
struct Block {
    len: usize,
    import: Import,
}

enum Import {
    /// Not tried yet.
    Untried,
    /// The block as a GPU buffer.
    Done {
        buffer: vk::Buffer,
        memory: vk::DeviceMemory,
    },
    /// The driver refused it (or the block is too small): stage its uploads.
    Refused,
}

/// The scratch blocks the pool has mapped, by address, and their imports.
pub struct HostImports {
    context: Arc<GpuContext>,
    ext: ash::ext::external_memory_host::Device,
    /// `minImportedHostPointerAlignment`: block addresses and lengths must be multiples.
    alignment: usize,
    blocks: Mutex<Blocks>,
}

/// The blocks by address, and how many of them are imported (kept, not counted per lookup: a
/// lookup is on every upload's path).
#[derive(Default)]
struct Blocks {
    by_address: BTreeMap<usize, Block>,
    imported: usize,
}

impl fmt::Debug for HostImports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blocks = self.lock();
        f.debug_struct("HostImports")
            .field("blocks", &blocks.by_address.len())
            .field("imported", &blocks.imported)
            .field("alignment", &self.alignment)
            .finish()
    }
}

// SAFETY: the Vulkan handles are used under the `blocks` lock, or (a buffer handed to an upload)
// while the engine guarantees its block stays mapped.
unsafe impl Send for HostImports {}
// SAFETY: as above.
unsafe impl Sync for HostImports {}

impl HostImports {
    /// Imports for `context`, or `None` where it cannot import host memory.
    pub fn new(context: &Arc<GpuContext>) -> Option<Arc<HostImports>> {
        if !context.host_import() {
            return None;
        }
        let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut host);
        // SAFETY: a plain query of a live physical device, whose extension is enabled.
        unsafe {
            context
                .instance()
                .get_physical_device_properties2(context.physical_device(), &mut props)
        };
        let alignment = usize::try_from(host.min_imported_host_pointer_alignment).ok()?;
        if alignment == 0 || !alignment.is_power_of_two() {
            return None;
        }
        Some(Arc::new(HostImports {
            ext: ash::ext::external_memory_host::Device::new(context.instance(), context.device()),
            context: context.clone(),
            alignment,
            blocks: Mutex::new(Blocks::default()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many blocks are imported now.
    pub fn imported(&self) -> usize {
        self.lock().imported
    }

    /// The GPU buffer over the scratch block holding `len` bytes at `ptr`, and their offset in
    /// it, importing the block now if it was not yet; `None` if the bytes are not in a block
    /// that is (or can be) imported.
    ///
    /// The buffer is valid while the block stays mapped: for an upload reading the bytes, until
    /// its node completes (its request holds the block until then).
    pub(crate) fn lookup(&self, ptr: *const u8, len: u64) -> Option<(vk::Buffer, u64)> {
        let at = ptr as usize;
        let mut guard = self.lock();
        let blocks = &mut *guard;
        let (&base, block) = blocks.by_address.range_mut(..=at).next_back()?;
        let offset = at - base;
        if offset.checked_add(usize::try_from(len).ok()?)? > block.len {
            return None;
        }
        if matches!(block.import, Import::Untried) {
            block.import = if blocks.imported < MAX_IMPORTS {
                self.import(base, block.len).unwrap_or(Import::Refused)
            } else {
                Import::Refused
            };
            if matches!(block.import, Import::Done { .. }) {
                blocks.imported += 1;
            }
        }
        match block.import {
            Import::Done { buffer, .. } => Some((buffer, offset as u64)),
            _ => None,
        }
    }

    /// Imports `len` bytes at `base` as device memory and a transfer-source buffer over them.
    fn import(&self, base: usize, len: usize) -> Option<Import> {
        if len < MIN_IMPORT || !base.is_multiple_of(self.alignment) || !len.is_multiple_of(self.alignment) {
            return None;
        }
        let device = self.context.device();
        let handle_type = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
        let mut host_props = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: `base` is a live mapping of `len` bytes (the pool said so and has not unmapped
        // it: we hold the table's lock, which `unmapping` takes first).
        let queried = unsafe {
            (self.ext.fp().get_memory_host_pointer_properties_ext)(
                device.handle(),
                handle_type,
                base as *const std::ffi::c_void,
                &mut host_props,
            )
        };
        if queried != vk::Result::SUCCESS {
            return None;
        }
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle_type);
        // Uploads copy from it on the transfer queue, GPU decodes on the compute queue.
        let families = [
            self.context.transfer_queue().family,
            self.context.compute_queue().family,
        ];
        // Where shaders take device addresses, the GPU decoder reads compressed bytes straight
        // from the block.
        let addressable = self.context.device_address();
        let usage = match addressable {
            true => vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS,
            false => vk::BufferUsageFlags::TRANSFER_SRC,
        };
        let info = vk::BufferCreateInfo::default()
            .size(len as u64)
            .usage(usage)
            .push_next(&mut external);
        let info = if families[0] != families[1] {
            info.sharing_mode(vk::SharingMode::CONCURRENT)
                .queue_family_indices(&families)
        } else {
            info.sharing_mode(vk::SharingMode::EXCLUSIVE)
        };
        // SAFETY: a valid create info; destroyed below on failure, or in `unmapping`.
        let buffer = unsafe { device.create_buffer(&info, None) }.ok()?;
        // SAFETY: a plain query of the buffer just made.
        let needs = unsafe { device.get_buffer_memory_requirements(buffer) };
        // SAFETY: a plain query.
        let types = unsafe {
            self.context
                .instance()
                .get_physical_device_memory_properties(self.context.physical_device())
        };
        let wanted = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let usable = host_props.memory_type_bits & needs.memory_type_bits;
        let memory_type = (0..types.memory_type_count)
            .find(|&i| usable & (1 << i) != 0 && types.memory_types[i as usize].property_flags.contains(wanted));
        let imported = memory_type.and_then(|memory_type| {
            let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
                .handle_type(handle_type)
                .host_pointer(base as *mut std::ffi::c_void);
            let mut flags = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS);
            let alloc = vk::MemoryAllocateInfo::default()
                .allocation_size(len as u64)
                .memory_type_index(memory_type)
                .push_next(&mut import);
            let alloc = match addressable {
                true => alloc.push_next(&mut flags),
                false => alloc,
            };
            // SAFETY: `base` is a live, aligned mapping of `len` bytes (checked above), which
            // stays mapped until `unmapping` frees this memory first.
            let memory = unsafe { device.allocate_memory(&alloc, None) }.ok()?;
            // SAFETY: the buffer is unbound, the memory is as large as the buffer and of a type
            // the buffer allows.
            match unsafe { device.bind_buffer_memory(buffer, memory, 0) } {
                Ok(()) => Some(memory),
                Err(_) => {
                    // SAFETY: unused.
                    unsafe { device.free_memory(memory, None) };
                    None
                }
            }
        });
        match imported {
            Some(memory) => Some(Import::Done { buffer, memory }),
            None => {
                // SAFETY: unused.
                unsafe { device.destroy_buffer(buffer, None) };
                None
            }
        }
    }
}

impl ScratchHooks for HostImports {
    fn mapped(&self, ptr: NonNull<u8>, len: usize) {
        let import = if len >= MIN_IMPORT {
            Import::Untried
        } else {
            Import::Refused
        };
        self.lock()
            .by_address
            .insert(ptr.as_ptr() as usize, Block { len, import });
    }

    fn unmapping(&self, ptr: NonNull<u8>, _len: usize) {
        let block = {
            let mut blocks = self.lock();
            let Some(block) = blocks.by_address.remove(&(ptr.as_ptr() as usize)) else {
                return;
            };
            if matches!(block.import, Import::Done { .. }) {
                blocks.imported -= 1;
            }
            block
        };
        if let Import::Done { buffer, memory } = block.import {
            let device = self.context.device();
            // SAFETY: no request holds the block (the pool's contract), so no GPU work reads the
            // buffer: every upload from it completed before its request let the block go.
            unsafe {
                device.destroy_buffer(buffer, None);
                device.free_memory(memory, None);
            }
        }
    }
}

impl Drop for HostImports {
    fn drop(&mut self) {
        // The pool unmaps every block before it goes (it holds this through its hooks), so
        // nothing is left; should a block be left, its import is freed with the context.
        let device = self.context.device();
        for (_, block) in std::mem::take(&mut self.lock().by_address) {
            if let Import::Done { buffer, memory } = block.import {
                // SAFETY: as in `unmapping`: the hooks' owner, the pool, is gone, so no request
                // holds a block.
                unsafe {
                    device.destroy_buffer(buffer, None);
                    device.free_memory(memory, None);
                }
            }
        }
    }
}
