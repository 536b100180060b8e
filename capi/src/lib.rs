//! # libdsr: dsr's C ABI
//!
//! `include/dsr.h` declares it; this crate builds it as `libdsr.so` and `libdsr.a` over the
//! runtime and queue of the `dsr` crate. Every entry point:
//! - catches panics (`DSR_E_INTERNAL`), so nothing unwinds into C;
//! - checks every pointer for null and every struct for its `struct_size` (and the runtime
//!   config for `DSR_API_VERSION`) before reading it;
//! - resolves handles through generation-checked tables (`handles.rs`), so a stale, destroyed or
//!   forged handle is `DSR_E_INVALID_HANDLE`.
//!
//! What stays the caller's duty (C cannot be checked for it): pointers that are not null point
//! at what the header says, Vulkan handles are of the runtime's device, and a read's destination
//! and a memory source stay valid until the request completes (sources are borrowed, not
//! copied, as DirectStorage's are).
//!
//! Rooms: `types.rs` (the header's types and the error → result mapping), `handles.rs` (the
//! tables), `trace.rs` (`DSR_TRACE`), this file (the entry points, in the header's order).

mod handles;
mod trace;

/// mimalloc, for libdsr's own allocations: requests are allocated on the caller's thread and
/// freed on dsr's workers, which glibc's allocator serialises on the caller's arena lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub mod types;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ash::vk::{self, Handle};
use dsr_facade::engine::{DeviceBuffer, EventFd};
use dsr_facade::gpu::{ExternalDevice, GpuBuffer, GpuContext, QueueRef, SubmitLock};
use dsr_facade::{
    DebugFlags, Fence, HostBuffer, IoPolicy, Priority, QueueConfig, Request, RequestStatus, Runtime, RuntimeConfig,
    RuntimeFile, RuntimeQueue, SourceBytes, SourceType, StatusArray, StatusEntry,
};

use handles::Table;
use types::*;

type Outcome = Result<(), dsr_result>;

/// Runs an entry point: its error code, or `DSR_E_INTERNAL` if it panicked.
fn guard(body: impl FnOnce() -> Outcome) -> dsr_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => DSR_OK,
        Ok(Err(code)) => code,
        Err(_) => DSR_E_INTERNAL,
    }
}

/// Reads a caller's struct whose first field is its `struct_size`, refusing null and sizes this
/// version does not know.
///
/// # Safety
/// `ptr`, if not null, points at readable memory of at least 4 bytes, and of `size_of::<T>()`
/// bytes when it says that is its size.
unsafe fn read_struct<T: Copy>(ptr: *const T) -> Result<T, dsr_result> {
    if ptr.is_null() {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    // SAFETY: by the caller's premise the first 4 bytes are readable.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() };
    if size as usize != std::mem::size_of::<T>() {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    // SAFETY: the struct says it is whole.
    Ok(unsafe { ptr.read_unaligned() })
}

/// Writes `value` to a caller's out-pointer, refusing null.
///
/// # Safety
/// `out`, if not null, points at writable memory for a `T`.
unsafe fn write_out<T>(out: *mut T, value: T) -> Outcome {
    if out.is_null() {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    // SAFETY: by the caller's premise.
    unsafe { out.write_unaligned(value) };
    Ok(())
}

/// Reads a caller's struct that has grown since the first header: `older` lists the sizes older
/// headers gave it (each a prefix of today's fields), and the fields they lack read as zero.
///
/// # Safety
/// As [`read_struct`], for any of the sizes; and all-zero bytes are a valid `T` (null
/// pointers, `None` functions, zero numbers).
unsafe fn read_grown_struct<T: Copy>(ptr: *const T, older: &[usize]) -> Result<T, dsr_result> {
    if ptr.is_null() {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    // SAFETY: by the caller's premise the first 4 bytes are readable.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
    if size != std::mem::size_of::<T>() && !older.contains(&size) {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: `size` readable bytes (the caller's premise), at most `T`'s size (checked above,
    // the older sizes being prefixes); the rest stays zero, which is a valid `T`.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), value.as_mut_ptr().cast::<u8>(), size);
        Ok(value.assume_init())
    }
}

/// A caller's optional C string, as text.
///
/// # Safety
/// `ptr`, if not null, points at a NUL-terminated string.
unsafe fn text(ptr: *const c_char) -> Option<String> {
    // SAFETY: by the caller's premise.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
}

fn check<T>(found: Option<T>) -> Result<T, dsr_result> {
    found.ok_or(DSR_E_INVALID_HANDLE)
}

fn failed(error: &dsr_facade::Error) -> dsr_result {
    result_of(error)
}

/// A pointer a callback carries to whichever thread finishes its request.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: the pointer is the C caller's, opaque to dsr, handed back to the caller's callback;
// the header tells the caller callbacks run on dsr's threads.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

/// A request struct copied for the error record.
#[derive(Clone, Copy)]
struct RequestCopy(dsr_request);
// SAFETY: a plain copy of the caller's struct: dsr never dereferences its pointers after enqueue.
unsafe impl Send for RequestCopy {}
// SAFETY: as above.
unsafe impl Sync for RequestCopy {}

struct CRuntime {
    runtime: Runtime,
    error_callback: Mutex<Option<(unsafe extern "C" fn(*mut c_void, *const dsr_error_info), UserData)>>,
    /// Cloned by every queue and GPU buffer of the runtime: a Vulkan runtime is not destroyed
    /// while any is alive, since they use the caller's device.
    users: Arc<()>,
}

impl CRuntime {
    fn new(runtime: Runtime) -> CRuntime {
        trace::observe(&runtime);
        CRuntime {
            runtime,
            error_callback: Mutex::new(None),
            users: Arc::new(()),
        }
    }
}

struct CFile {
    file: RuntimeFile,
}

/// The C side of a queue: what the C ABI adds to the Rust queue (callbacks, taken completions,
/// the error record with a copy of the C request).
struct CQueue {
    queue: RuntimeQueue,
    runtime: Arc<CRuntime>,
    /// Counts the queue among the runtime's users.
    _user: Arc<()>,
    track: bool,
    completed: Mutex<Vec<dsr_completion>>,
    errors: Mutex<CErrors>,
    /// Enqueue order of requests, for "the first failure".
    next: AtomicU64,
}

// SAFETY: `dsr_completion` holds the caller's opaque `user_data`, only handed back to it.
unsafe impl Send for CQueue {}
// SAFETY: as above; every field is behind a lock or atomic.
unsafe impl Sync for CQueue {}

#[derive(Default)]
struct CErrors {
    count: u32,
    first: Option<(u64, dsr_error_info, RequestCopy)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

struct StatusHandle(Arc<StatusArray>);
struct FenceHandle(Arc<Fence>);
/// A caller's `VkBuffer`, imported into a Vulkan runtime.
struct BufferHandle {
    buffer: DeviceBuffer,
    _user: Arc<()>,
}

/// The caller's queue lock, taken around dsr's submissions to the caller's queues.
struct CallerLock {
    lock: unsafe extern "C" fn(*mut c_void),
    unlock: unsafe extern "C" fn(*mut c_void),
    user: UserData,
}

impl SubmitLock for CallerLock {
    fn with_lock(&self, submit: &mut dyn FnMut()) {
        /// Unlocks however `submit` ends.
        struct Unlock<'a>(&'a CallerLock);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                // SAFETY: the caller's unlock function and user data, paired with the lock below.
                unsafe { (self.0.unlock)(self.0.user.0) };
            }
        }
        // SAFETY: the caller's lock function and user data, callable from any thread (`dsr.h`).
        unsafe { (self.lock)(self.user.0) };
        let _unlock = Unlock(self);
        submit();
    }
}

static RUNTIMES: Table<CRuntime> = Table::new(1);
static FILES: Table<CFile> = Table::new(2);
static QUEUES: Table<CQueue> = Table::new(3);
static FENCES: Table<FenceHandle> = Table::new(4);
static STATUS_ARRAYS: Table<StatusHandle> = Table::new(5);
static BUFFERS: Table<BufferHandle> = Table::new(6);

fn runtime_config(config: &dsr_runtime_config) -> Result<RuntimeConfig, dsr_result> {
    if config.api_version != DSR_API_VERSION {
        return Err(DSR_E_VERSION);
    }
    let known_flags = DSR_RUNTIME_DISABLE_GPU_DECOMPRESSION | DSR_RUNTIME_FORCE_FILE_BUFFERING;
    let known_debug = DSR_DEBUG_SHOW_ERRORS | DSR_DEBUG_RECORD_NAMES;
    if config.flags & !known_flags != 0 || config.debug_flags & !known_debug != 0 || config.reserved != 0 {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    let defaults = RuntimeConfig::default();
    Ok(RuntimeConfig {
        staging_bytes: if config.staging_bytes == 0 {
            defaults.staging_bytes
        } else {
            config.staging_bytes
        },
        workers: config.workers as usize,
        disable_gpu_decompression: config.flags & DSR_RUNTIME_DISABLE_GPU_DECOMPRESSION != 0,
        force_file_buffering: config.flags & DSR_RUNTIME_FORCE_FILE_BUFFERING != 0,
        debug: DebugFlags::from_bits_truncate(config.debug_flags),
    })
}

// ---- the runtime -------------------------------------------------------------------------

/// # Safety
/// See `dsr.h`: `config` and `out` point at what their types say, or are null.
#[no_mangle]
pub unsafe extern "C" fn dsr_runtime_create(config: *const dsr_runtime_config, out: *mut dsr_runtime) -> dsr_result {
    guard(|| {
        // SAFETY: the caller's pointer, checked for null and size.
        let config = runtime_config(&unsafe { read_struct(config) }?)?;
        if out.is_null() {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let handle = RUNTIMES.insert(CRuntime::new(Runtime::new(config)));
        // SAFETY: checked for null above.
        unsafe { write_out(out, handle) }
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_runtime_destroy(runtime: dsr_runtime) -> dsr_result {
    guard(|| {
        let Some(device) = check(RUNTIMES.get(runtime))?.runtime.device() else {
            // A host runtime lives on in its queues until they are destroyed.
            let removed = check(RUNTIMES.remove(runtime)).map(drop);
            trace::write();
            return removed;
        };
        // A Vulkan runtime: once this returns, the caller may destroy its device, so dsr must
        // have let go of it. Its queues and buffers would still use it: refuse while any lives.
        if Arc::strong_count(&check(RUNTIMES.get(runtime))?.users) > 1 {
            return Err(DSR_E_BUSY);
        }
        let device = {
            let strong = device;
            Arc::downgrade(&strong)
        };
        drop(check(RUNTIMES.remove(runtime))?);
        // The executor joined its workers as the runtime dropped; a caller thread inside another
        // call on this runtime may hold it a moment longer.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while device.strong_count() > 0 {
            if std::time::Instant::now() > deadline {
                return Err(DSR_E_INTERNAL);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        trace::write();
        Ok(())
    })
}

/// # Safety
/// See `dsr.h`: `config` points at a config, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_runtime_set_config(runtime: dsr_runtime, config: *const dsr_runtime_config) -> dsr_result {
    guard(|| {
        let runtime = check(RUNTIMES.get(runtime))?;
        // SAFETY: the caller's pointer, checked for null and size.
        let config = runtime_config(&unsafe { read_struct(config) }?)?;
        runtime.runtime.set_config(config).map_err(|_| DSR_E_BUSY)
    })
}

/// # Safety
/// `callback`, if set, is callable from any thread with `user_data` until it is replaced.
#[no_mangle]
pub unsafe extern "C" fn dsr_runtime_set_error_callback(
    runtime: dsr_runtime,
    callback: dsr_error_callback,
    user_data: *mut c_void,
) -> dsr_result {
    guard(|| {
        let runtime = check(RUNTIMES.get(runtime))?;
        *lock(&runtime.error_callback) = callback.map(|f| (f, UserData(user_data)));
        Ok(())
    })
}

/// # Safety
/// See `dsr.h`: `config`, `device` and `out` point at what their types say, or are null; the
/// device's handles are valid and outlive the runtime.
#[no_mangle]
pub unsafe extern "C" fn dsr_runtime_create_vulkan(
    config: *const dsr_runtime_config,
    device: *const dsr_vulkan_device,
    out: *mut dsr_runtime,
) -> dsr_result {
    guard(|| {
        // SAFETY: the caller's pointers, checked for null and size.
        let config = runtime_config(&unsafe { read_struct(config) }?)?;
        // SAFETY: as above; a header older than the queue handles gives them as null.
        let desc = unsafe { read_grown_struct(device, &[DSR_VULKAN_DEVICE_SIZE_V1]) }?;
        if desc.reserved != 0
            || desc.instance.is_null()
            || desc.physical_device.is_null()
            || desc.device.is_null()
            || desc.lock_queue.is_some() != desc.unlock_queue.is_some()
            || out.is_null()
        {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let queue_lock: Arc<dyn SubmitLock> = match (desc.lock_queue, desc.unlock_queue) {
            (Some(lock), Some(unlock)) => Arc::new(CallerLock {
                lock,
                unlock,
                user: UserData(desc.lock_user_data),
            }),
            _ => Arc::new(Mutex::new(())),
        };
        let placeholder = |family| QueueRef {
            queue: vk::Queue::null(),
            family,
        };
        let mut external = ExternalDevice {
            instance: vk::Instance::from_raw(desc.instance as u64),
            physical_device: vk::PhysicalDevice::from_raw(desc.physical_device as u64),
            device: vk::Device::from_raw(desc.device as u64),
            transfer: placeholder(desc.transfer_family),
            compute: placeholder(desc.compute_family),
            queue_lock,
            // SAFETY: the same function type, with `VkInstance` (a pointer) spelled `void *`.
            get_instance_proc_addr: desc.get_instance_proc_addr.map(|f| unsafe {
                std::mem::transmute::<
                    unsafe extern "system" fn(*mut c_void, *const c_char) -> dsr_vk_void_function,
                    vk::PFN_vkGetInstanceProcAddr,
                >(f)
            }),
        };
        // SAFETY: the caller's handles (the header's contract); the families are checked
        // against the device's, the indices are the caller's word.
        // A queue given by handle (a caller that knows its queue but not the index it was made
        // with, such as a D3D12 translation layer) is taken as it is, its family checked.
        unsafe {
            external.transfer = external
                .queue(desc.transfer_family, desc.transfer_index, desc.transfer_queue)
                .map_err(|e| failed(&e))?;
            external.compute = external
                .queue(desc.compute_family, desc.compute_index, desc.compute_queue)
                .map_err(|e| failed(&e))?;
        }
        // SAFETY: as above; the caller keeps the device alive and takes the lock it gave dsr
        // around its own submissions.
        let context = unsafe { GpuContext::from_external(external) }.map_err(|e| failed(&e))?;
        let handle = RUNTIMES.insert(CRuntime::new(Runtime::on_device(config, &context)));
        // SAFETY: checked for null above.
        unsafe { write_out(out, handle) }
    })
}

// ---- GPU buffers --------------------------------------------------------------------------

/// # Safety
/// See `dsr.h`: `vk_buffer` is a buffer of the runtime's device as described there; `out`
/// points at a writable handle, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_buffer_import(
    runtime: dsr_runtime,
    vk_buffer: u64,
    size: u64,
    out: *mut dsr_buffer,
) -> dsr_result {
    guard(|| {
        let runtime = check(RUNTIMES.get(runtime))?;
        let context = runtime.runtime.device().ok_or(DSR_E_UNSUPPORTED)?;
        if vk_buffer == 0 || size == 0 || out.is_null() {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        // SAFETY: the caller's buffer of this device, alive while requests use it (`dsr.h`).
        let buffer = unsafe { dsr_facade::gpu::external_buffer(&context, vk::Buffer::from_raw(vk_buffer), size) };
        let handle = BUFFERS.insert(BufferHandle {
            buffer,
            _user: runtime.users.clone(),
        });
        // SAFETY: checked for null above.
        unsafe { write_out(out, handle) }
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_buffer_release(buffer: dsr_buffer) -> dsr_result {
    guard(|| check(BUFFERS.remove(buffer)).map(drop))
}

// ---- files -------------------------------------------------------------------------------

/// # Safety
/// See `dsr.h`: `path` is a NUL-terminated string or null; `out` and `size_out` point at
/// writable values or are null (`size_out` may be null).
#[no_mangle]
pub unsafe extern "C" fn dsr_file_open(
    runtime: dsr_runtime,
    path: *const c_char,
    out: *mut dsr_file,
    size_out: *mut u64,
) -> dsr_result {
    guard(|| {
        let runtime = check(RUNTIMES.get(runtime))?;
        // SAFETY: the caller's string, checked for null.
        let path = unsafe { text(path) }.ok_or(DSR_E_INVALID_ARGUMENT)?;
        if out.is_null() {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let file = runtime.runtime.open_file(&path).map_err(|e| failed(&e))?;
        // The size is asked of the kernel only for a caller that wants it.
        let size = match size_out.is_null() {
            true => None,
            false => Some(file.size().map_err(|e| failed(&e))?),
        };
        let handle = FILES.insert(CFile { file });
        if let Some(size) = size {
            // SAFETY: checked for null.
            unsafe { size_out.write_unaligned(size) };
        }
        // SAFETY: checked for null above.
        unsafe { write_out(out, handle) }
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_file_close(file: dsr_file) -> dsr_result {
    guard(|| check(FILES.remove(file)).map(drop))
}

// ---- queues ------------------------------------------------------------------------------

/// # Safety
/// See `dsr.h`: `desc` and `out` point at what their types say, or are null.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_create(
    runtime: dsr_runtime,
    desc: *const dsr_queue_desc,
    out: *mut dsr_queue,
) -> dsr_result {
    guard(|| {
        let runtime = check(RUNTIMES.get(runtime))?;
        // SAFETY: the caller's pointer, checked for null and size.
        let desc = unsafe { read_struct(desc) }?;
        let source = match desc.source_type {
            DSR_SOURCE_FILE => SourceType::File,
            DSR_SOURCE_MEMORY => SourceType::Memory,
            _ => return Err(DSR_E_INVALID_ARGUMENT),
        };
        let priority = match desc.priority {
            -1 => Priority::Low,
            0 => Priority::Normal,
            1 => Priority::High,
            2 => Priority::Realtime,
            _ => return Err(DSR_E_INVALID_ARGUMENT),
        };
        if desc.flags & !DSR_QUEUE_TRACK_COMPLETIONS != 0 || desc.reserved != 0 || out.is_null() {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let config = QueueConfig {
            source,
            capacity: desc.capacity,
            priority,
            // SAFETY: the caller's string, or null.
            name: unsafe { text(desc.name) }.unwrap_or_default(),
            ..QueueConfig::default()
        };
        let queue = runtime.runtime.create_queue(config).map_err(|e| failed(&e))?;
        let handle = QUEUES.insert(CQueue {
            queue,
            runtime: runtime.clone(),
            _user: runtime.users.clone(),
            track: desc.flags & DSR_QUEUE_TRACK_COMPLETIONS != 0,
            completed: Mutex::new(Vec::new()),
            errors: Mutex::new(CErrors::default()),
            next: AtomicU64::new(0),
        });
        // SAFETY: checked for null above.
        unsafe { write_out(out, handle) }
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_destroy(queue: dsr_queue) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.remove(queue))?;
        queue.queue.close();
        trace::write();
        Ok(())
    })
}

/// The GPU buffer a request names, checked to belong to `runtime`'s device.
fn buffer_of(runtime: &CRuntime, handle: dsr_buffer) -> Result<DeviceBuffer, dsr_result> {
    let buffer = check(BUFFERS.get(handle))?.buffer.clone();
    let device = runtime.runtime.device().ok_or(DSR_E_UNSUPPORTED)?;
    match buffer.handle().downcast_ref::<GpuBuffer>() {
        Some(gpu) if Arc::ptr_eq(gpu.context(), &device) => Ok(buffer),
        _ => Err(DSR_E_INVALID_ARGUMENT),
    }
}

/// The Rust request a C request describes (memory sources borrowed), on `runtime`.
///
/// # Safety
/// The request's pointers point at what `dsr.h` says (or are null where it allows).
unsafe fn request_of(runtime: &CRuntime, request: &dsr_request) -> Result<Request, dsr_result> {
    let known_options = DSR_OPTION_SYNC | DSR_OPTION_BUFFERED | DSR_OPTION_DIRECT;
    if request.options & !known_options != 0
        || request.options & (DSR_OPTION_BUFFERED | DSR_OPTION_DIRECT) == (DSR_OPTION_BUFFERED | DSR_OPTION_DIRECT)
        || request.compression > DSR_COMPRESSION_GDEFLATE
    {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    let too_big = |len: u64| len > isize::MAX as u64;
    let source_bytes = || -> Result<SourceBytes, dsr_result> {
        if too_big(request.source_size) || (request.source.is_null() && request.source_size > 0) {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let ptr = NonNull::new(request.source.cast::<u8>().cast_mut()).unwrap_or(NonNull::dangling());
        // SAFETY: by the caller's premise (`dsr.h`), `source_size` readable bytes that stay valid
        // and unchanged until the request completes (null only when empty).
        Ok(unsafe { SourceBytes::borrowed(ptr, request.source_size as usize) })
    };
    let destination = || -> Result<HostBuffer, dsr_result> {
        let len = request.destination_size;
        if too_big(len) || (request.destination.is_null() && len > 0) {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let ptr = NonNull::new(request.destination.cast::<u8>()).unwrap_or(NonNull::dangling());
        // SAFETY: by the caller's premise (`dsr.h`), `destination_size` writable bytes that stay
        // valid and untouched until the request completes; dsr frees nothing of them.
        Ok(unsafe { HostBuffer::from_raw(ptr, len as usize) })
    };
    let file = || check(FILES.get(request.file)).map(|f| f.file.clone());
    let gpu = match request.buffer {
        0 if request.buffer_offset != 0 => return Err(DSR_E_INVALID_ARGUMENT),
        0 => None,
        handle => Some(buffer_of(runtime, handle)?),
    };
    // A read into a GPU buffer: the bytes land at `buffer_offset`, and the destination pointer
    // must be null; the engine checks the range against the buffer's size.
    let gpu_read = |host: Request| -> Result<Request, dsr_result> {
        let Some(buffer) = &gpu else { return Ok(host) };
        if !request.destination.is_null() {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        if request.compression == DSR_COMPRESSION_NONE && request.source_size > request.destination_size {
            return Err(DSR_E_DESTINATION_TOO_SMALL);
        }
        Ok(host.on_device(buffer, request.buffer_offset))
    };
    let read_destination = || match gpu {
        Some(_) => Ok(HostBuffer::new(0)),
        None => destination(),
    };
    let mut built = match request.kind {
        DSR_REQUEST_READ_FILE => {
            let dest = read_destination()?;
            gpu_read(file()?.request(request.file_offset, request.source_size, &dest, 0))?
        }
        DSR_REQUEST_READ_MEMORY => {
            let dest = read_destination()?;
            gpu_read(Request::memory(source_bytes()?, 0, request.source_size, &dest, 0))?
        }
        DSR_REQUEST_WRITE_FILE => {
            if request.compression != DSR_COMPRESSION_NONE {
                return Err(DSR_E_UNSUPPORTED);
            }
            let target = file()?;
            let write = match &gpu {
                Some(_) if !request.source.is_null() => return Err(DSR_E_INVALID_ARGUMENT),
                Some(buffer) => Request::device_to_file(
                    buffer,
                    request.buffer_offset,
                    request.source_size,
                    target.path(),
                    request.file_offset,
                ),
                None => Request::write(
                    source_bytes()?,
                    0,
                    request.source_size,
                    target.path(),
                    request.file_offset,
                ),
            };
            if request.options & DSR_OPTION_SYNC != 0 {
                write.sync()
            } else {
                write
            }
        }
        _ => return Err(DSR_E_INVALID_ARGUMENT),
    };
    if request.compression == DSR_COMPRESSION_GDEFLATE {
        built = built.gdeflate(request.destination_size);
    }
    if request.options & DSR_OPTION_BUFFERED != 0 {
        built = built.io(IoPolicy::Buffered);
    } else if request.options & DSR_OPTION_DIRECT != 0 {
        built = built.io(IoPolicy::Direct);
    }
    // SAFETY: the caller's string, or null.
    if let Some(name) = unsafe { text(request.name) } {
        built = built.name(name);
    }
    Ok(built.tag(request.tag))
}

impl CQueue {
    /// A request enqueued `seq`-th ended: the error record, the runtime's error callback, the
    /// completion list; the request's own callback is the caller's (below).
    fn finished(&self, seq: u64, copy: &RequestCopy, status: &RequestStatus, result: dsr_result) {
        if let RequestStatus::Failed(error) = status {
            // SAFETY: the copy's name is the caller's string, valid until the request completes.
            let name = unsafe { text(copy.0.name) };
            let info = dsr_error_info::from_error(error, name.as_deref());
            {
                let mut errors = lock(&self.errors);
                errors.count = errors.count.saturating_add(1);
                if errors.first.as_ref().is_none_or(|(first, _, _)| seq < *first) {
                    errors.first = Some((seq, info, *copy));
                }
            }
            if let Some((callback, user)) = *lock(&self.runtime.error_callback) {
                // SAFETY: the caller registered it for this (see `dsr_runtime_set_error_callback`).
                unsafe { callback(user.0, &info) };
            }
        }
        if self.track {
            lock(&self.completed).push(dsr_completion {
                user_data: copy.0.user_data,
                result,
                reserved: 0,
            });
        }
    }
}

fn enqueue(handle: dsr_queue, request: *const dsr_request, wait: bool) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(handle))?;
        // SAFETY: the caller's pointer, checked for null and size.
        let c_request = unsafe { read_struct(request) }?;
        // SAFETY: the request's pointers are the caller's, as the header describes them.
        let built = unsafe { request_of(&queue.runtime, &c_request) }?;
        let seq = queue.next.fetch_add(1, Ordering::Relaxed);
        let copy = RequestCopy(c_request);
        let track = queue.track;
        // The closure names its queue by handle, not by a reference count: a request that
        // simply finishes touches nothing the submitting thread and the other finishing
        // workers share (a `Weak` per request cost two atomic operations on the queue's one
        // counter, from both sides).
        let done = Box::new(move |status: &RequestStatus| {
            let copy = copy;
            let result = result_of_status(status);
            // The queue's records change only for a failure or when completions are tracked;
            // a queue destroyed meanwhile keeps no records.
            let records = track || matches!(status, RequestStatus::Failed(_));
            if let Some(queue) = records.then(|| QUEUES.get(handle)).flatten() {
                queue.finished(seq, &copy, status, result);
            }
            if let Some(callback) = copy.0.callback {
                // SAFETY: the caller's callback and its user data, called once as promised.
                unsafe { callback(copy.0.user_data, result) };
            }
        });
        queue.queue.enqueue_with(built, done, wait).map_err(|e| failed(&e))
    })
}

/// # Safety
/// See `dsr.h`: `request` points at a request (whose pointers are as described) or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_enqueue(queue: dsr_queue, request: *const dsr_request) -> dsr_result {
    enqueue(queue, request, true)
}

/// # Safety
/// As [`dsr_queue_enqueue`].
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_try_enqueue(queue: dsr_queue, request: *const dsr_request) -> dsr_result {
    enqueue(queue, request, false)
}

/// # Safety
/// Any values are accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_enqueue_status(queue: dsr_queue, array: dsr_status_array, index: u32) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        let array = check(STATUS_ARRAYS.get(array))?;
        queue
            .queue
            .enqueue_status(&array.0, index as usize)
            .map_err(|e| failed(&e))
    })
}

/// # Safety
/// Any values are accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_enqueue_signal(queue: dsr_queue, fence: dsr_fence, value: u64) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        let fence = check(FENCES.get(fence))?;
        queue.queue.enqueue_signal(&fence.0, value).map_err(|e| failed(&e))
    })
}

/// # Safety
/// See `dsr.h`: `vk_semaphore` is a timeline semaphore of the runtime's device, alive until it
/// is signalled (any other value may be undefined behaviour in the Vulkan driver).
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_enqueue_vulkan_signal(
    queue: dsr_queue,
    vk_semaphore: u64,
    value: u64,
) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        if vk_semaphore == 0 {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        // SAFETY: the caller's semaphore, as the header describes it.
        unsafe {
            queue
                .queue
                .enqueue_vulkan_signal(vk::Semaphore::from_raw(vk_semaphore), value)
        }
        .map_err(|e| failed(&e))
    })
}

/// # Safety
/// Any values are accepted: `eventfd` is duplicated, and a descriptor that cannot be is refused.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_enqueue_event(queue: dsr_queue, eventfd: c_int) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        if eventfd < 0 {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        // SAFETY: plain syscall on a caller's descriptor number; the result is checked.
        let dup = unsafe { libc::fcntl(eventfd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        // SAFETY: `dup` is a fresh descriptor nobody else owns.
        let event = Arc::new(EventFd::from_owned(unsafe { OwnedFd::from_raw_fd(dup) }));
        queue.queue.enqueue_event(&event).map_err(|e| failed(&e))
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_submit(queue: dsr_queue) -> dsr_result {
    guard(|| check(QUEUES.get(queue))?.queue.submit().map_err(|e| failed(&e)))
}

/// # Safety
/// Any values are accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_cancel(queue: dsr_queue, mask: u64, value: u64) -> dsr_result {
    guard(|| {
        check(QUEUES.get(queue))?
            .queue
            .cancel_requests_with_tag(mask, value)
            .map_err(|e| failed(&e))
    })
}

/// # Safety
/// See `dsr.h`: `out` points at a `dsr_queue_info` with its `struct_size` set, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_query(queue: dsr_queue, out: *mut dsr_queue_info) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        // SAFETY: the caller's pointer, checked for null and size.
        unsafe { read_struct(out.cast_const()) }?;
        let info = queue.queue.query();
        let value = dsr_queue_info {
            struct_size: std::mem::size_of::<dsr_queue_info>() as u32,
            empty_slots: info.empty_slots,
            until_auto_submit: info.until_auto_submit,
            reserved: 0,
        };
        // SAFETY: checked above.
        unsafe { write_out(out, value) }
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_close(queue: dsr_queue) -> dsr_result {
    guard(|| {
        check(QUEUES.get(queue))?.queue.close();
        Ok(())
    })
}

/// # Safety
/// `fd_out` points at a writable `int`, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_error_event(queue: dsr_queue, fd_out: *mut c_int) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        let fd = queue.queue.error_event().as_raw_fd();
        // SAFETY: the caller's pointer, checked for null.
        unsafe { write_out(fd_out, fd) }
    })
}

/// # Safety
/// `out` points at a `dsr_error_record` with its `struct_size` set, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_retrieve_error_record(queue: dsr_queue, out: *mut dsr_error_record) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        // SAFETY: the caller's pointer, checked for null and size.
        unsafe { read_struct(out.cast_const()) }?;
        let CErrors { count, first } = std::mem::take(&mut *lock(&queue.errors));
        let (first, request) = match first {
            Some((_, info, copy)) => (info, copy.0),
            None => (
                dsr_error_info::empty(),
                // SAFETY: an all-zero `dsr_request` is valid: integers, null pointers, no callback.
                unsafe { std::mem::zeroed() },
            ),
        };
        let record = dsr_error_record {
            struct_size: std::mem::size_of::<dsr_error_record>() as u32,
            failure_count: count,
            first,
            request,
        };
        // SAFETY: checked above.
        unsafe { write_out(out, record) }
    })
}

/// # Safety
/// `out` points at `capacity` writable completions (or is null with `capacity` 0); `count_out`
/// at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn dsr_queue_take_completed(
    queue: dsr_queue,
    out: *mut dsr_completion,
    capacity: usize,
    count_out: *mut usize,
) -> dsr_result {
    guard(|| {
        let queue = check(QUEUES.get(queue))?;
        if count_out.is_null() || (out.is_null() && capacity > 0) {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let taken: Vec<dsr_completion> = {
            let mut completed = lock(&queue.completed);
            let n = capacity.min(completed.len());
            completed.drain(..n).collect()
        };
        for (i, completion) in taken.iter().enumerate() {
            // SAFETY: `i < capacity` writable entries, by the caller's premise.
            unsafe { out.add(i).write_unaligned(*completion) };
        }
        // SAFETY: checked for null above.
        unsafe { write_out(count_out, taken.len()) }
    })
}

// ---- fences ------------------------------------------------------------------------------

/// # Safety
/// `out` points at a writable handle, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_fence_create(out: *mut dsr_fence) -> dsr_result {
    guard(|| {
        if out.is_null() {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let fence = Fence::new().map_err(|_| DSR_E_OUT_OF_MEMORY)?;
        // SAFETY: checked for null.
        unsafe { write_out(out, FENCES.insert(FenceHandle(fence))) }
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_fence_destroy(fence: dsr_fence) -> dsr_result {
    guard(|| check(FENCES.remove(fence)).map(drop))
}

/// # Safety
/// `value_out` points at a writable `uint64_t`, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_fence_value(fence: dsr_fence, value_out: *mut u64) -> dsr_result {
    guard(|| {
        let fence = check(FENCES.get(fence))?;
        // SAFETY: the caller's pointer, checked for null.
        unsafe { write_out(value_out, fence.0.value()) }
    })
}

/// # Safety
/// Any values are accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_fence_wait(fence: dsr_fence, value: u64, timeout_ms: u32) -> dsr_result {
    let fence = match catch_unwind(|| FENCES.get(fence)) {
        Ok(Some(fence)) => fence,
        Ok(None) => return DSR_E_INVALID_HANDLE,
        Err(_) => return DSR_E_INTERNAL,
    };
    match catch_unwind(AssertUnwindSafe(|| {
        fence
            .0
            .wait_timeout(value, Duration::from_millis(u64::from(timeout_ms)))
    })) {
        Ok(true) => DSR_OK,
        Ok(false) => DSR_TIMEOUT,
        Err(_) => DSR_E_INTERNAL,
    }
}

/// # Safety
/// `fd_out` points at a writable `int`, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_fence_eventfd(fence: dsr_fence, fd_out: *mut c_int) -> dsr_result {
    guard(|| {
        let fence = check(FENCES.get(fence))?;
        // SAFETY: the caller's pointer, checked for null.
        unsafe { write_out(fd_out, fence.0.eventfd().as_raw_fd()) }
    })
}

// ---- status arrays -----------------------------------------------------------------------

/// # Safety
/// `out` points at a writable handle, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_status_array_create(length: u32, out: *mut dsr_status_array) -> dsr_result {
    guard(|| {
        if out.is_null() || length == 0 || length > 1 << 20 {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let handle = STATUS_ARRAYS.insert(StatusHandle(StatusArray::new(length as usize)));
        // SAFETY: checked for null.
        unsafe { write_out(out, handle) }
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_status_array_destroy(array: dsr_status_array) -> dsr_result {
    guard(|| check(STATUS_ARRAYS.remove(array)).map(drop))
}

/// # Safety
/// `result_out` points at a writable `dsr_result`, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_status_array_get(
    array: dsr_status_array,
    index: u32,
    result_out: *mut dsr_result,
) -> dsr_result {
    guard(|| {
        let array = check(STATUS_ARRAYS.get(array))?;
        if index as usize >= array.0.len() {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        let result = match array.0.get(index as usize) {
            StatusEntry::Pending => DSR_PENDING,
            StatusEntry::Ok | StatusEntry::Unused => DSR_OK,
            StatusEntry::Failed(error) => result_of(&error),
        };
        // SAFETY: the caller's pointer, checked for null.
        unsafe { write_out(result_out, result) }
    })
}

// ---- GDeflate ------------------------------------------------------------------------------

/// # Safety
/// `bound_out` points at a writable `uint64_t`, or is null.
#[no_mangle]
pub unsafe extern "C" fn dsr_gdeflate_compress_bound(size: u64, bound_out: *mut u64) -> dsr_result {
    guard(|| {
        let bound = dsr_gdeflate::compress_bound(size).ok_or(DSR_E_UNSUPPORTED)?;
        // SAFETY: the caller's pointer, checked for null.
        unsafe { write_out(bound_out, bound) }
    })
}

/// A caller's byte range, refusing null with a non-zero length and lengths past `isize::MAX`.
///
/// # Safety
/// `ptr`, if not null, points at `len` readable bytes.
unsafe fn bytes<'a>(ptr: *const c_void, len: u64) -> Result<&'a [u8], dsr_result> {
    if len > isize::MAX as u64 || (ptr.is_null() && len > 0) {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: by the caller's premise.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize) })
}

/// [`bytes`], writable.
///
/// # Safety
/// `ptr`, if not null, points at `len` writable bytes nothing else uses during the call.
unsafe fn bytes_mut<'a>(ptr: *mut c_void, len: u64) -> Result<&'a mut [u8], dsr_result> {
    if len > isize::MAX as u64 || (ptr.is_null() && len > 0) {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: by the caller's premise.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len as usize) })
}

/// The codec calls' arguments as slices, refusing a null `written_out`.
///
/// # Safety
/// As [`dsr_gdeflate_compress`].
unsafe fn codec_args<'a>(
    source: *const c_void,
    source_size: u64,
    destination: *mut c_void,
    destination_capacity: u64,
    written_out: *mut u64,
) -> Result<(&'a [u8], &'a mut [u8]), dsr_result> {
    if written_out.is_null() {
        return Err(DSR_E_INVALID_ARGUMENT);
    }
    // SAFETY: the caller's ranges, as the header describes them.
    unsafe {
        Ok((
            bytes(source, source_size)?,
            bytes_mut(destination, destination_capacity)?,
        ))
    }
}

/// # Safety
/// `source` points at `source_size` readable bytes, `destination` at `destination_capacity`
/// writable ones (or either is null when its size is 0); `written_out` at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn dsr_gdeflate_compress(
    source: *const c_void,
    source_size: u64,
    level: u32,
    destination: *mut c_void,
    destination_capacity: u64,
    written_out: *mut u64,
) -> dsr_result {
    guard(|| {
        // SAFETY: the caller's pointers, as the header describes them.
        let (input, output) =
            unsafe { codec_args(source, source_size, destination, destination_capacity, written_out) }?;
        if level > DSR_GDEFLATE_LEVEL_BEST {
            return Err(DSR_E_INVALID_ARGUMENT);
        }
        if input.is_empty() {
            return Err(DSR_E_UNSUPPORTED);
        }
        let stream =
            dsr_gdeflate::compress(input, dsr_gdeflate::Level::new(level as u8)).map_err(|_| DSR_E_UNSUPPORTED)?;
        // SAFETY: checked for null above.
        unsafe { write_out(written_out, stream.len() as u64) }?;
        let fits = output.get_mut(..stream.len()).ok_or(DSR_E_DESTINATION_TOO_SMALL)?;
        fits.copy_from_slice(&stream);
        Ok(())
    })
}

/// # Safety
/// As [`dsr_gdeflate_compress`].
#[no_mangle]
pub unsafe extern "C" fn dsr_gdeflate_decompress(
    source: *const c_void,
    source_size: u64,
    destination: *mut c_void,
    destination_capacity: u64,
    written_out: *mut u64,
) -> dsr_result {
    guard(|| {
        // SAFETY: the caller's pointers, as the header describes them.
        let (input, output) =
            unsafe { codec_args(source, source_size, destination, destination_capacity, written_out) }?;
        let stream = dsr_gdeflate::TileStream::parse(input).map_err(|_| DSR_E_CORRUPT)?;
        let len = stream.uncompressed_len();
        // SAFETY: checked for null above.
        unsafe { write_out(written_out, len) }?;
        let out = usize::try_from(len)
            .ok()
            .and_then(|len| output.get_mut(..len))
            .ok_or(DSR_E_DESTINATION_TOO_SMALL)?;
        dsr_gdeflate::decompress(input, out).map_err(|_| DSR_E_CORRUPT)
    })
}

/// # Safety
/// Any value is accepted.
#[no_mangle]
pub unsafe extern "C" fn dsr_result_name(result: dsr_result) -> *const c_char {
    RESULT_NAMES
        .iter()
        .find(|(code, _)| *code == result)
        .map_or(c"DSR_UNKNOWN_RESULT".as_ptr(), |(_, name)| name.as_ptr().cast())
}

/// The header against the Rust definitions: every function declared is exported and the other
/// way round, every constant has the same value, and every struct has the same size and field
/// offsets as a C compiler lays it out.
#[cfg(test)]
mod header {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;

    use super::types::*;

    fn read(path: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Identifiers following `marker` on each line of `text`.
    fn names_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.lines()
            .filter_map(|line| line.split_once(marker))
            .map(|(_, rest)| {
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or("")
            })
            .filter(|name| name.starts_with("dsr_"))
            .collect()
    }

    #[test]
    fn every_declared_function_is_exported_and_no_other() {
        let header = read("../include/dsr.h");
        let mut declared: Vec<&str> = header
            .lines()
            .filter(|l| l.starts_with("dsr_result dsr_") || l.starts_with("const char *dsr_"))
            .map(|l| l.split('(').next().unwrap().rsplit([' ', '*']).next().unwrap())
            .collect();
        let source = read("src/lib.rs");
        let mut exported = names_after(&source, "pub unsafe extern \"C\" fn ");
        declared.sort_unstable();
        exported.sort_unstable();
        assert_eq!(declared, exported);
    }

    fn constants(text: &str, marker: &str) -> BTreeMap<String, i64> {
        text.lines()
            .filter_map(|line| {
                let rest = line.trim_start().strip_prefix(marker)?;
                let (name, value) = if marker == "#define " {
                    let mut words = rest.split_whitespace();
                    (words.next()?, words.next()?)
                } else {
                    let (name, value) = rest.split_once(':')?;
                    (name, value.split_once('=')?.1.trim().trim_end_matches(';'))
                };
                let value = value.trim_end_matches('u');
                let parsed = match value.strip_prefix("0x") {
                    Some(hex) => i64::from_str_radix(hex, 16).ok()?,
                    None => value.parse().ok()?,
                };
                name.starts_with("DSR_").then(|| (name.to_owned(), parsed))
            })
            .collect()
    }

    #[test]
    fn every_constant_has_the_same_value_in_c_and_rust() {
        let c = constants(&read("../include/dsr.h"), "#define ");
        let mut rust = constants(&read("src/types.rs"), "pub const ");
        // Queue bounds live in the engine.
        rust.insert(
            "DSR_MIN_QUEUE_CAPACITY".into(),
            i64::from(dsr_facade::engine::queue::MIN_CAPACITY),
        );
        rust.insert(
            "DSR_MAX_QUEUE_CAPACITY".into(),
            i64::from(dsr_facade::engine::queue::MAX_CAPACITY),
        );
        rust.insert("DSR_PRIORITY_LOW".into(), -1);
        rust.insert("DSR_PRIORITY_NORMAL".into(), 0);
        rust.insert("DSR_PRIORITY_HIGH".into(), 1);
        rust.insert("DSR_PRIORITY_REALTIME".into(), 2);
        assert_eq!(c, rust);
        assert_eq!(
            RESULT_NAMES.len(),
            c.keys().filter(|k| k.starts_with("DSR_E_")).count() + 3
        );
    }

    macro_rules! layouts {
        ($($ty:ident { $($field:ident),* $(,)? })*) => {
            /// (C expression, Rust value) pairs: sizes, then each field's offset.
            fn layout_pairs() -> Vec<(String, usize)> {
                let mut pairs = Vec::new();
                $(
                    pairs.push((format!("sizeof({})", stringify!($ty)), std::mem::size_of::<$ty>()));
                    $(pairs.push((
                        format!("offsetof({}, {})", stringify!($ty), stringify!($field)),
                        std::mem::offset_of!($ty, $field),
                    ));)*
                )*
                pairs
            }
        };
    }

    layouts! {
        dsr_runtime_config { struct_size, api_version, staging_bytes, workers, flags, debug_flags, reserved }
        dsr_queue_desc { struct_size, source_type, capacity, priority, name, flags, reserved }
        dsr_request {
            struct_size, kind, compression, options, file, file_offset, source, source_size,
            destination, destination_size, tag, name, callback, user_data, buffer, buffer_offset,
        }
        dsr_vulkan_device {
            struct_size, reserved, instance, physical_device, device, get_instance_proc_addr,
            transfer_family, transfer_index, compute_family, compute_index, lock_queue,
            unlock_queue, lock_user_data, transfer_queue, compute_queue,
        }
        dsr_queue_info { struct_size, empty_slots, until_auto_submit, reserved }
        dsr_completion { user_data, result, reserved }
        dsr_error_info {
            struct_size, result, os_errno, vk_result, tile, reserved, offset, stage, file,
            request_name, message,
        }
        dsr_error_record { struct_size, failure_count, first, request }
    }

    #[test]
    fn every_struct_has_the_c_compilers_layout() {
        let pairs = layout_pairs();
        let dir = tempfile::tempdir().unwrap();
        let mut program =
            String::from("#include <stddef.h>\n#include <stdio.h>\n#include \"dsr.h\"\nint main(void) {\n");
        for (expr, _) in &pairs {
            program.push_str(&format!("    printf(\"%zu\\n\", (size_t){expr});\n"));
        }
        program.push_str("    return 0;\n}\n");
        let source = dir.path().join("layout.c");
        std::fs::write(&source, program).unwrap();
        let exe = dir.path().join("layout");
        let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let built = match Command::new(&cc)
            .args(["-std=c11", "-Wall", "-Werror", "-I"])
            .arg(&include)
            .arg(&source)
            .arg("-o")
            .arg(&exe)
            .status()
        {
            Ok(status) => status,
            Err(err) if std::env::var("DSR_REQUIRE_TOOLS").as_deref() != Ok("1") => {
                eprintln!("skipped: no C compiler ({cc}: {err})");
                return;
            }
            Err(err) => panic!("DSR_REQUIRE_TOOLS=1 but {cc} cannot run: {err}"),
        };
        assert!(built.success(), "the layout program does not compile");
        let output = Command::new(&exe).output().unwrap();
        let c: Vec<usize> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        for ((expr, rust), c) in pairs.iter().zip(&c) {
            assert_eq!(rust, c, "{expr}: Rust says {rust}, C says {c}");
        }
        assert_eq!(c.len(), pairs.len());
    }
}
