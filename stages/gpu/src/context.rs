//! The Vulkan context: instance, physical device, device, the queues dsr submits to, and the
//! memory allocator, either created by dsr ([`GpuContext::new`]) or handed over by the caller
//! ([`GpuContext::from_external`], what Proton needs). dsr destroys only what it created.
//!
//! Every other module reaches Vulkan through a context; the few calls that need its
//! synchronisation (queue submission, device loss) go through the methods here.

use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ash::vk::{self, Handle};
use dsr_engine::{Error, ErrorKind, Result};

use crate::clock::GpuClock;
use crate::validation::Validation;

/// The validation layer's name.
const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// How dsr makes its own device.
#[derive(Clone, Debug, Default)]
pub struct GpuConfig {
    /// Which physical device: its index in enumeration order, or a substring of its name.
    /// `None` reads `DSR_VK_DEVICE`, and without it picks a discrete GPU first, then an
    /// integrated one, then any.
    pub device: Option<String>,
    /// Run with the Khronos validation layer, recording every message it sends (see
    /// [`GpuContext::validation_messages`]). Fails if the layer is not installed.
    pub validation: bool,
}

impl GpuConfig {
    /// The configuration the environment asks for: `DSR_VK_DEVICE` picks the device,
    /// `DSR_VK_VALIDATION=1` turns the validation layer on.
    pub fn from_env() -> Self {
        GpuConfig {
            device: std::env::var("DSR_VK_DEVICE").ok(),
            validation: std::env::var("DSR_VK_VALIDATION").as_deref() == Ok("1"),
        }
    }
}

/// A queue dsr submits to, with its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRef {
    /// The queue.
    pub queue: vk::Queue,
    /// Its family index.
    pub family: u32,
}

/// How dsr keeps a caller's queues to itself while it submits: Vulkan requires external
/// synchronisation of a queue, so a caller that submits to the queues it hands dsr takes the
/// same lock around its own submissions.
pub trait SubmitLock: Send + Sync {
    /// Runs `submit` while nobody else submits to the device's queues.
    fn with_lock(&self, submit: &mut dyn FnMut());
}

impl SubmitLock for Mutex<()> {
    fn with_lock(&self, submit: &mut dyn FnMut()) {
        let _guard = self.lock().unwrap_or_else(|p| p.into_inner());
        submit();
    }
}

/// A device the caller created and keeps: dsr uses it and destroys none of it.
///
/// # Safety
/// The handles must be valid and stay valid until the [`GpuContext`] made from them (and every
/// buffer made with it) is dropped. The device must have been created with Vulkan 1.2's
/// `timelineSemaphore` feature enabled. Every submission to these queues by anyone must hold
/// `queue_lock` (Vulkan requires external synchronisation of a queue).
#[derive(Clone)]
pub struct ExternalDevice {
    /// The caller's instance.
    pub instance: vk::Instance,
    /// The physical device the device was made from.
    pub physical_device: vk::PhysicalDevice,
    /// The caller's device.
    pub device: vk::Device,
    /// The queue uploads and copies go to.
    pub transfer: QueueRef,
    /// The queue compute work goes to (may be the same as `transfer`).
    pub compute: QueueRef,
    /// Taken around every `vkQueueSubmit` to those queues.
    pub queue_lock: Arc<dyn SubmitLock>,
    /// The `vkGetInstanceProcAddr` the instance was made with; `None` loads the system's
    /// Vulkan loader (a caller with a loader of its own, such as Wine's, passes its own).
    pub get_instance_proc_addr: Option<vk::PFN_vkGetInstanceProcAddr>,
}

impl ExternalDevice {
    /// The loader, instance and device functions of the caller's handles.
    ///
    /// # Safety
    /// The handles (and `get_instance_proc_addr`, if set) are valid, as the type's contract says.
    unsafe fn load(&self) -> Result<(ash::Entry, ash::Instance, ash::Device)> {
        let entry = match self.get_instance_proc_addr {
            Some(get_instance_proc_addr) => {
                // SAFETY: by the caller's contract, the loader entry point the instance was
                // made with; the static table is filled from it and nothing else.
                unsafe { ash::Entry::from_static_fn(ash::StaticFn { get_instance_proc_addr }) }
            }
            // SAFETY: as in `GpuContext::new`.
            None => unsafe { ash::Entry::load() }.map_err(|err| unsupported(format!("no Vulkan loader: {err}")))?,
        };
        // SAFETY: by the caller's contract the handles are valid; loading function pointers
        // from them creates nothing.
        let instance = unsafe { ash::Instance::load(entry.static_fn(), self.instance) };
        // SAFETY: as above.
        let device = unsafe { ash::Device::load(instance.fp_v1_0(), self.device) };
        Ok((entry, instance, device))
    }

    /// Refuses a queue family the physical device does not have.
    ///
    /// # Safety
    /// `instance` was loaded from this device's instance, and the physical device is valid.
    unsafe fn check_family(&self, instance: &ash::Instance, what: &str, family: u32) -> Result<()> {
        // SAFETY: by the caller's premises.
        let families = unsafe { instance.get_physical_device_queue_family_properties(self.physical_device) }.len();
        if family as usize >= families {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!("the {what} queue's family {family} is not one of the device's {families}"),
            ));
        }
        Ok(())
    }

    /// A queue of `family` of the caller's device, to fill in `transfer` and `compute`: `handle`
    /// when the caller knows its queue by handle (not null), else queue `index`
    /// (`vkGetDeviceQueue`), for callers that know their queues by number.
    ///
    /// # Safety
    /// The handles are valid (the type's contract); `handle` is null or a queue of `family`;
    /// when it is null, the device was created with at least `index + 1` queues of `family`.
    pub unsafe fn queue(&self, family: u32, index: u32, handle: *mut c_void) -> Result<QueueRef> {
        // SAFETY: by the caller's premises.
        let (_entry, instance, device) = unsafe { self.load() }?;
        // SAFETY: as above.
        unsafe { self.check_family(&instance, "requested", family) }?;
        let queue = if handle.is_null() {
            // SAFETY: by the caller's premises, the queue exists.
            unsafe { device.get_device_queue(family, index) }
        } else {
            vk::Queue::from_raw(handle as u64)
        };
        Ok(QueueRef { queue, family })
    }
}

impl fmt::Debug for ExternalDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalDevice")
            .field("device", &self.device)
            .field("transfer", &self.transfer)
            .field("compute", &self.compute)
            .finish()
    }
}

/// Features dsr enabled on a device it made (a caller's device has none of these for dsr).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Enabled {
    /// Buffer device addresses, 8-bit storage and integers, and 64-bit integers: what the GPU decoder needs.
    pub decoder: bool,
    /// `VK_NV_memory_decompression` with its `memoryDecompression` feature.
    pub nv_decompression: bool,
    /// `VK_EXT_calibrated_timestamps`, with the device and monotonic clocks.
    pub calibrated_timestamps: bool,
}

/// What `dsr info` and callers learn of the device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Its name.
    pub name: String,
    /// Discrete, integrated, CPU…
    pub kind: String,
    /// The driver's name and version string.
    pub driver: String,
    /// The Vulkan version it supports, as "major.minor.patch".
    pub api_version: String,
    /// Each queue family: its flags, as text, and how many queues.
    pub queue_families: Vec<(String, u32)>,
    /// The transfer and compute families dsr uses.
    pub transfer_family: u32,
    /// See `transfer_family`.
    pub compute_family: u32,
    /// Lanes of a subgroup.
    pub subgroup_size: u32,
    /// `VK_EXT_external_memory_host` (host memory imported as GPU-visible memory).
    pub external_memory_host: bool,
    /// `VK_NV_memory_decompression` or `VK_EXT_memory_decompression`, if either is present.
    pub memory_decompression: Option<String>,
    /// Whether dsr created the device (or the caller handed it over).
    pub owned: bool,
    /// Nanoseconds per timestamp tick and the valid bits of a timestamp, where the transfer
    /// queue's family writes timestamps and its queries can be reset (on the host, or in its
    /// command buffers).
    pub transfer_timestamps: Option<(f32, u32)>,
}

/// A Vulkan device dsr works on. Field order is drop order where it matters: everything made
/// from the device (allocator) before the device, the device before the instance; `Drop` does
/// the destruction explicitly, and only of what dsr created.
pub struct GpuContext {
    /// Memory allocations of this device; destroyed before the device.
    allocator: ManuallyDrop<vk_mem::Allocator>,
    device: ash::Device,
    instance: ash::Instance,
    /// Keeps the Vulkan loader loaded while any function pointer above is in use.
    entry: ash::Entry,
    physical_device: vk::PhysicalDevice,
    transfer: QueueRef,
    compute: QueueRef,
    queue_lock: Arc<dyn SubmitLock>,
    /// Present when validation is on; destroyed before the instance.
    validation: Option<Validation>,
    owned: bool,
    info: DeviceInfo,
    /// Whether `VK_EXT_external_memory_host` is enabled: on devices dsr made, where the driver
    /// has it (a caller's device may not have enabled it, so it is not used there).
    host_import: bool,
    /// Whether `hostQueryReset` is enabled (devices dsr made, where the driver has it).
    host_query_reset: bool,
    /// The decoder's features and the NV decompression extension, where dsr enabled them.
    enabled: Enabled,
    /// The device's clock calibrated against the CPU's, where dsr enabled that.
    clock: Option<GpuClock>,
    lost: AtomicBool,
    /// Test hook: the next submission reports `VK_ERROR_DEVICE_LOST` without reaching the driver.
    inject_loss: AtomicBool,
}

// SAFETY: Vulkan handles may be used from any thread; the calls that need external
// synchronisation (queue submission) take `queue_lock`, and the allocator is thread-safe (VMA
// without the externally-synchronised flag).
unsafe impl Send for GpuContext {}
// SAFETY: as above.
unsafe impl Sync for GpuContext {}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext")
            .field("device", &self.info.name)
            .field("owned", &self.owned)
            .field("transfer", &self.transfer)
            .field("compute", &self.compute)
            .finish()
    }
}

/// An error from a Vulkan call, carrying its result.
pub(crate) fn vk_error(result: vk::Result, action: &str) -> Error {
    let kind = match result {
        vk::Result::ERROR_OUT_OF_HOST_MEMORY | vk::Result::ERROR_OUT_OF_DEVICE_MEMORY => ErrorKind::OutOfMemory,
        vk::Result::ERROR_FEATURE_NOT_PRESENT
        | vk::Result::ERROR_EXTENSION_NOT_PRESENT
        | vk::Result::ERROR_LAYER_NOT_PRESENT
        | vk::Result::ERROR_INCOMPATIBLE_DRIVER => ErrorKind::Unsupported,
        _ => ErrorKind::Device,
    };
    Error::new(kind, format!("{action}: VkResult {result:?}")).with_source(result)
}

fn unsupported(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unsupported, message)
}

fn version_text(version: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(version),
        vk::api_version_minor(version),
        vk::api_version_patch(version)
    )
}

/// Reads a fixed-size, NUL-terminated Vulkan string.
fn vk_str(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl GpuContext {
    /// Creates an instance and a device of dsr's own on the device `config` picks.
    pub fn new(config: &GpuConfig) -> Result<Arc<GpuContext>> {
        // SAFETY: loading the system's Vulkan loader runs its initialisation, which is sound
        // to run at any time; the library stays loaded as long as `entry` (kept in the context).
        let entry = unsafe { ash::Entry::load() }
            .map_err(|err| unsupported(format!("no Vulkan loader: {err}; install libvulkan1 and a driver")))?;
        let mut layers: Vec<*const c_char> = Vec::new();
        let mut extensions: Vec<*const c_char> = Vec::new();
        if config.validation {
            // SAFETY: a plain query of the loader.
            let available = unsafe { entry.enumerate_instance_layer_properties() }
                .map_err(|r| vk_error(r, "cannot list Vulkan layers"))?;
            if !available
                .iter()
                .any(|l| vk_str(&l.layer_name) == "VK_LAYER_KHRONOS_validation")
            {
                return Err(unsupported(
                    "validation was asked for but VK_LAYER_KHRONOS_validation is not installed \
                     (apt-get install vulkan-validationlayers)",
                ));
            }
            layers.push(VALIDATION_LAYER.as_ptr());
            extensions.push(ash::ext::debug_utils::NAME.as_ptr());
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"dsr")
            .engine_name(c"dsr")
            .api_version(vk::API_VERSION_1_3);
        let create = vk::InstanceCreateInfo::default()
            .application_info(&app)
            .enabled_layer_names(&layers)
            .enabled_extension_names(&extensions);
        // SAFETY: the create info and everything it points to live across the call.
        let instance = unsafe { entry.create_instance(&create, None) }
            .map_err(|r| vk_error(r, "cannot create a Vulkan instance"))?;
        let validation = if config.validation {
            match Validation::new(&entry, &instance) {
                Ok(v) => Some(v),
                Err(err) => {
                    // SAFETY: nothing was made from the instance yet.
                    unsafe { instance.destroy_instance(None) };
                    return Err(err);
                }
            }
        } else {
            None
        };
        match Self::own_device(&entry, &instance, config) {
            Ok((physical_device, device, transfer, compute, enabled)) => Self::finish(
                entry,
                instance,
                physical_device,
                device,
                (transfer, compute),
                None,
                validation,
                Some(enabled),
            ),
            Err(err) => {
                // SAFETY: the messenger was made on this instance, and nothing else made from
                // the instance survives (the device was not made).
                unsafe {
                    if let Some(v) = validation {
                        v.destroy(&entry, &instance);
                    }
                    instance.destroy_instance(None);
                }
                Err(err)
            }
        }
    }

    /// Wraps a device the caller owns (see [`ExternalDevice`]'s safety contract). Dropping the
    /// context destroys what dsr made on it, never the device or the instance.
    ///
    /// # Safety
    /// `external` must satisfy the contract on [`ExternalDevice`].
    pub unsafe fn from_external(external: ExternalDevice) -> Result<Arc<GpuContext>> {
        // SAFETY: by the caller's contract.
        let (entry, instance, device) = unsafe { external.load() }?;
        for (what, queue) in [("transfer", external.transfer), ("compute", external.compute)] {
            // SAFETY: by the caller's contract.
            unsafe { external.check_family(&instance, what, queue.family) }?;
        }
        Self::finish(
            entry,
            instance,
            external.physical_device,
            device,
            (external.transfer, external.compute),
            Some(external.queue_lock),
            None,
            None,
        )
    }

    /// Picks a physical device and makes a device on it with the queues and features dsr uses.
    fn own_device(
        entry: &ash::Entry,
        instance: &ash::Instance,
        config: &GpuConfig,
    ) -> Result<(vk::PhysicalDevice, ash::Device, QueueRef, QueueRef, Enabled)> {
        // SAFETY: plain queries of a live instance.
        let devices =
            unsafe { instance.enumerate_physical_devices() }.map_err(|r| vk_error(r, "cannot list Vulkan devices"))?;
        let wanted = config.device.clone().or_else(|| std::env::var("DSR_VK_DEVICE").ok());
        let name_of = |pd: vk::PhysicalDevice| {
            // SAFETY: as above.
            let props = unsafe { instance.get_physical_device_properties(pd) };
            (vk_str(&props.device_name), props.device_type)
        };
        let physical_device = match &wanted {
            Some(want) => match want.parse::<usize>() {
                Ok(index) => devices.get(index).copied(),
                Err(_) => devices
                    .iter()
                    .copied()
                    .find(|&pd| name_of(pd).0.contains(want.as_str())),
            }
            .ok_or_else(|| {
                let names: Vec<String> = devices.iter().map(|&pd| name_of(pd).0).collect();
                unsupported(format!("no Vulkan device matches {want:?}; the devices are {names:?}"))
            })?,
            None => {
                let rank = |t: vk::PhysicalDeviceType| match t {
                    vk::PhysicalDeviceType::DISCRETE_GPU => 0,
                    vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
                    vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
                    _ => 3,
                };
                devices
                    .iter()
                    .copied()
                    .min_by_key(|&pd| rank(name_of(pd).1))
                    .ok_or_else(|| {
                        unsupported("no Vulkan device (install a driver: mesa-vulkan-drivers for lavapipe)")
                    })?
            }
        };
        // Timeline semaphores are the GPU edges: without them nothing here works.
        let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
        let shader_int64 = {
            let mut features = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12);
            // SAFETY: a query into structures that live across the call.
            unsafe { instance.get_physical_device_features2(physical_device, &mut features) };
            features.features.shader_int64 == vk::TRUE
        };
        if v12.timeline_semaphore == vk::FALSE {
            return Err(unsupported(format!(
                "the Vulkan device {} lacks timeline semaphores (Vulkan 1.2), which dsr's GPU stages need",
                name_of(physical_device).0
            )));
        }
        // SAFETY: a plain query.
        let families = unsafe { instance.get_physical_device_queue_family_properties(physical_device) };
        let has = |f: &vk::QueueFamilyProperties, flags| f.queue_flags.contains(flags) && f.queue_count > 0;
        let compute = families
            .iter()
            .position(|f| has(f, vk::QueueFlags::COMPUTE))
            .ok_or_else(|| unsupported("the Vulkan device has no compute queue"))? as u32;
        // A transfer-only family is the copy engine: uploads there overlap compute work.
        let transfer = families
            .iter()
            .position(|f| {
                has(f, vk::QueueFlags::TRANSFER)
                    && !f
                        .queue_flags
                        .intersects(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE)
            })
            .map_or(compute, |i| i as u32);
        let priorities = [1.0f32];
        let mut queue_infos = vec![vk::DeviceQueueCreateInfo::default()
            .queue_family_index(compute)
            .queue_priorities(&priorities)];
        if transfer != compute {
            queue_infos.push(
                vk::DeviceQueueCreateInfo::default()
                    .queue_family_index(transfer)
                    .queue_priorities(&priorities),
            );
        }
        // SAFETY: a plain query.
        let available = unsafe { instance.enumerate_device_extension_properties(physical_device) }
            .map_err(|r| vk_error(r, "cannot list device extensions"))?;
        let mut extensions: Vec<*const c_char> = Vec::new();
        if available
            .iter()
            .any(|e| vk_str(&e.extension_name) == "VK_EXT_external_memory_host")
        {
            extensions.push(ash::ext::external_memory_host::NAME.as_ptr());
        }
        // The GPU decoder reads tiles and writes bytes through buffer device addresses, with
        // 64-bit bit reservoirs and byte stores.
        let enabled_decoder =
            v12.buffer_device_address == vk::TRUE && v12.storage_buffer8_bit_access == vk::TRUE && shader_int64;
        // The driver's own GDeflate decoder, the peer of dsr's in `dsr bench decode-gpu`.
        let mut nv_features = vk::PhysicalDeviceMemoryDecompressionFeaturesNV::default();
        let nv_present = enabled_decoder
            && available
                .iter()
                .any(|e| vk_str(&e.extension_name) == "VK_NV_memory_decompression")
            && {
                let mut query = vk::PhysicalDeviceFeatures2::default().push_next(&mut nv_features);
                // SAFETY: a query into structures that live across the call.
                unsafe { instance.get_physical_device_features2(physical_device, &mut query) };
                nv_features.memory_decompression == vk::TRUE
            };
        if nv_present {
            extensions.push(ash::nv::memory_decompression::NAME.as_ptr());
        }
        // Subgroup clocks, for the decoder's profiling build (`DSR_GDEFLATE_SPIRV`).
        let clock = enabled_decoder
            && available
                .iter()
                .any(|e| vk_str(&e.extension_name) == "VK_KHR_shader_clock");
        if clock {
            extensions.push(c"VK_KHR_shader_clock".as_ptr());
        }
        // The device's clock against the CPU's, to place GPU work on a trace's timeline.
        let calibrated = GpuClock::supported(
            entry,
            instance,
            physical_device,
            available
                .iter()
                .any(|e| vk_str(&e.extension_name) == "VK_EXT_calibrated_timestamps"),
        );
        if calibrated {
            extensions.push(ash::ext::calibrated_timestamps::NAME.as_ptr());
        }
        let mut enable_clock = vk::PhysicalDeviceShaderClockFeaturesKHR::default().shader_subgroup_clock(true);
        // Host query reset lets the transfer queue's timestamp queries be reset from the CPU:
        // a transfer-only family may not reset queries in a command buffer.
        let mut enable12 = vk::PhysicalDeviceVulkan12Features::default()
            .timeline_semaphore(true)
            .host_query_reset(v12.host_query_reset == vk::TRUE)
            .buffer_device_address(enabled_decoder)
            .storage_buffer8_bit_access(enabled_decoder)
            .shader_int8(enabled_decoder);
        let enable10 = vk::PhysicalDeviceFeatures::default().shader_int64(enabled_decoder);
        let mut enable_nv = vk::PhysicalDeviceMemoryDecompressionFeaturesNV::default().memory_decompression(true);
        let mut create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queue_infos)
            .enabled_extension_names(&extensions)
            .enabled_features(&enable10)
            .push_next(&mut enable12);
        if nv_present {
            create = create.push_next(&mut enable_nv);
        }
        if clock {
            create = create.push_next(&mut enable_clock);
        }
        // SAFETY: the create info and everything it points to live across the call.
        let device = unsafe { instance.create_device(physical_device, &create, None) }
            .map_err(|r| vk_error(r, "cannot create the Vulkan device"))?;
        let queue = |family| QueueRef {
            // SAFETY: both families were created with one queue each.
            queue: unsafe { device.get_device_queue(family, 0) },
            family,
        };
        let (transfer, compute) = (queue(transfer), queue(compute));
        let enabled = Enabled {
            decoder: enabled_decoder,
            nv_decompression: nv_present,
            calibrated_timestamps: calibrated,
        };
        Ok((physical_device, device, transfer, compute, enabled))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        entry: ash::Entry,
        instance: ash::Instance,
        physical_device: vk::PhysicalDevice,
        device: ash::Device,
        (transfer, compute): (QueueRef, QueueRef),
        queue_lock: Option<Arc<dyn SubmitLock>>,
        validation: Option<Validation>,
        // What dsr enabled on a device of its own; `None` for a caller's device.
        own: Option<Enabled>,
    ) -> Result<Arc<GpuContext>> {
        let owned = own.is_some();
        let enabled = own.unwrap_or_default();
        // `own_device` enables host query reset wherever the device has it; a caller's device
        // may not have, so it is not used there.
        let host_query_reset = owned && supports_host_query_reset(&instance, physical_device);
        let info = describe(
            &instance,
            physical_device,
            transfer.family,
            compute.family,
            owned,
            host_query_reset,
        );
        let mut create = vk_mem::AllocatorCreateInfo::new(&instance, &device, physical_device);
        create.vulkan_api_version = vk::API_VERSION_1_2;
        if enabled.decoder {
            create.flags |= vk_mem::AllocatorCreateFlags::BUFFER_DEVICE_ADDRESS;
        }
        // SAFETY: the instance, device and physical device are valid and outlive the allocator
        // (it is destroyed first, in `Drop`).
        let allocator = match unsafe { vk_mem::Allocator::new(create) } {
            Ok(allocator) => allocator,
            Err(result) => {
                if owned {
                    // SAFETY: nothing else was made from the device or instance.
                    unsafe {
                        device.destroy_device(None);
                        if let Some(v) = validation {
                            v.destroy(&entry, &instance);
                        }
                        instance.destroy_instance(None);
                    }
                }
                return Err(vk_error(result, "cannot create the GPU memory allocator"));
            }
        };
        // SAFETY: a plain query.
        let period = unsafe { instance.get_physical_device_properties(physical_device) }
            .limits
            .timestamp_period;
        let clock = (enabled.calibrated_timestamps && period > 0.0).then(|| GpuClock::new(&instance, &device, period));
        Ok(Arc::new(GpuContext {
            clock,
            allocator: ManuallyDrop::new(allocator),
            device,
            instance,
            entry,
            physical_device,
            transfer,
            compute,
            queue_lock: queue_lock.unwrap_or_else(|| Arc::new(Mutex::new(()))),
            validation,
            owned,
            host_import: owned && info.external_memory_host,
            host_query_reset,
            enabled,
            info,
            lost: AtomicBool::new(false),
            inject_loss: AtomicBool::new(false),
        }))
    }

    /// What the device is.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The device's function table.
    pub fn device(&self) -> &ash::Device {
        &self.device
    }

    /// The instance's function table.
    pub fn instance(&self) -> &ash::Instance {
        &self.instance
    }

    /// The physical device.
    pub fn physical_device(&self) -> vk::PhysicalDevice {
        self.physical_device
    }

    /// Whether host memory can be imported (`VK_EXT_external_memory_host` enabled).
    pub fn host_import(&self) -> bool {
        self.host_import
    }

    /// Whether buffer device addresses, 8-bit storage and integers, and 64-bit integers are enabled: what
    /// the GPU decoder needs (devices dsr made, where the driver has them).
    pub fn device_address(&self) -> bool {
        self.enabled.decoder
    }

    /// The CPU-clock moment of a timestamp query's `ticks` (valid bits `mask`), where the
    /// device's clock is calibrated against the CPU's (`VK_EXT_calibrated_timestamps`, on
    /// devices dsr made where the driver has it).
    pub fn gpu_instant(&self, ticks: u64, mask: u64) -> Option<std::time::Instant> {
        self.clock.as_ref()?.instant(ticks, mask)
    }

    /// Whether the device's clock is calibrated against the CPU's (see [`GpuContext::gpu_instant`]).
    pub fn calibrated_timestamps(&self) -> bool {
        self.clock.is_some()
    }

    /// Whether `VK_NV_memory_decompression` is enabled (devices dsr made, where the driver has
    /// it).
    pub fn nv_decompression(&self) -> bool {
        self.enabled.nv_decompression
    }

    /// Whether queries may be reset from the host (`vkResetQueryPool`, Vulkan 1.2's
    /// `hostQueryReset`): enabled on devices dsr made wherever the driver has it.
    pub fn host_query_reset(&self) -> bool {
        self.host_query_reset
    }

    /// The memory allocator.
    pub fn allocator(&self) -> &vk_mem::Allocator {
        &self.allocator
    }

    /// The queue uploads and copies go to.
    pub fn transfer_queue(&self) -> QueueRef {
        self.transfer
    }

    /// The queue compute work goes to.
    pub fn compute_queue(&self) -> QueueRef {
        self.compute
    }

    /// Whether the device was lost: every later GPU request fails at once.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Records the result of a call that may report the device lost.
    pub(crate) fn check(&self, result: vk::Result, action: &str) -> Error {
        if result == vk::Result::ERROR_DEVICE_LOST {
            self.lost.store(true, Ordering::Release);
        }
        vk_error(result, action)
    }

    /// The error every GPU request gets once the device is lost.
    pub(crate) fn lost_error(&self) -> Error {
        vk_error(
            vk::Result::ERROR_DEVICE_LOST,
            "the GPU device was lost earlier; GPU requests cannot run",
        )
    }

    /// Submits to `queue` under the queue lock (shared with the caller's renderer for a device
    /// handed over). A loss is recorded, and injected losses (tests) are reported here.
    ///
    /// # Safety
    /// `queue` must be one of this context's queues, and the submit infos must describe valid
    /// work of this device whose resources stay alive until it completes (`vkQueueSubmit`'s
    /// rules); `fence`, if not null, must be unsignalled and not in use.
    pub unsafe fn submit(&self, queue: QueueRef, submits: &[vk::SubmitInfo<'_>], fence: vk::Fence) -> Result<()> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        if self.inject_loss.swap(false, Ordering::AcqRel) {
            return Err(self.check(vk::Result::ERROR_DEVICE_LOST, "cannot submit GPU work"));
        }
        let mut submitted = Ok(());
        self.queue_lock.with_lock(&mut || {
            // SAFETY: by the caller's premises, and the queue's use is synchronised by the lock.
            submitted = unsafe { self.device.queue_submit(queue.queue, submits, fence) };
        });
        submitted.map_err(|r| self.check(r, "cannot submit GPU work"))
    }

    /// Test hook: the next submission fails with `VK_ERROR_DEVICE_LOST`, and the context counts
    /// the device as lost from then on, as after a real loss.
    pub fn inject_device_loss(&self) {
        self.inject_loss.store(true, Ordering::Release);
    }

    /// Messages the validation layer sent (empty when validation is off).
    pub fn validation_messages(&self) -> Vec<String> {
        self.validation.as_ref().map(Validation::messages).unwrap_or_default()
    }

    /// Whether the validation layer is on.
    pub fn validating(&self) -> bool {
        self.validation.is_some()
    }
}

impl Drop for GpuContext {
    fn drop(&mut self) {
        // SAFETY: (1) every buffer, staging pool and submission holds an `Arc` of this context,
        // so none is alive: the allocator has no allocation left, and waiting for the queues to
        // go idle lets any work they submitted finish; (2) the allocator is destroyed before the
        // device, the device before the messenger and the instance; (3) only what dsr created
        // is destroyed.
        unsafe {
            if self.owned {
                let _ = self.device.device_wait_idle();
            } else {
                // A caller's device: others submit to its queues all along (vkd3d-proton under
                // the Wine DLL), and vkDeviceWaitIdle would need every queue of the device held.
                // dsr's own queues, under the caller's lock, are what its work ran on.
                let (device, queues) = (&self.device, [self.transfer.queue, self.compute.queue]);
                self.queue_lock.with_lock(&mut || {
                    for (i, &queue) in queues.iter().enumerate() {
                        if !queues[..i].contains(&queue) {
                            let _ = device.queue_wait_idle(queue);
                        }
                    }
                });
            }
            ManuallyDrop::drop(&mut self.allocator);
            if self.owned {
                self.device.destroy_device(None);
                if let Some(validation) = self.validation.take() {
                    validation.destroy(&self.entry, &self.instance);
                }
                self.instance.destroy_instance(None);
            }
        }
    }
}

fn supports_host_query_reset(instance: &ash::Instance, pd: vk::PhysicalDevice) -> bool {
    let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut features = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12);
    // SAFETY: a query into structures that live across the call.
    unsafe { instance.get_physical_device_features2(pd, &mut features) };
    v12.host_query_reset == vk::TRUE
}

fn describe(
    instance: &ash::Instance,
    pd: vk::PhysicalDevice,
    transfer: u32,
    compute: u32,
    owned: bool,
    host_query_reset: bool,
) -> DeviceInfo {
    let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
    let mut driver = vk::PhysicalDeviceDriverProperties::default();
    let mut props = vk::PhysicalDeviceProperties2::default()
        .push_next(&mut subgroup)
        .push_next(&mut driver);
    // SAFETY: queries into structures that live across the calls.
    unsafe { instance.get_physical_device_properties2(pd, &mut props) };
    let base = props.properties;
    // SAFETY: as above.
    let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
    // SAFETY: as above.
    let extensions: Vec<String> = unsafe { instance.enumerate_device_extension_properties(pd) }
        .unwrap_or_default()
        .iter()
        .map(|e| vk_str(&e.extension_name))
        .collect();
    let has = |name: &str| extensions.iter().any(|e| e == name);
    DeviceInfo {
        name: vk_str(&base.device_name),
        kind: format!("{:?}", base.device_type),
        driver: format!("{} {}", vk_str(&driver.driver_name), vk_str(&driver.driver_info)),
        api_version: version_text(base.api_version),
        queue_families: families
            .iter()
            .map(|f| (format!("{:?}", f.queue_flags), f.queue_count))
            .collect(),
        transfer_family: transfer,
        compute_family: compute,
        subgroup_size: subgroup.subgroup_size,
        external_memory_host: has("VK_EXT_external_memory_host"),
        memory_decompression: ["VK_NV_memory_decompression", "VK_EXT_memory_decompression"]
            .into_iter()
            .find(|e| has(e))
            .map(str::to_owned),
        owned,
        transfer_timestamps: families
            .get(transfer as usize)
            .filter(|f| f.timestamp_valid_bits > 0 && base.limits.timestamp_period > 0.0)
            // Queries are reset on the host, or in the family's command buffers, which only
            // graphics and compute families may do (a transfer-only family may not).
            .filter(|f| {
                host_query_reset
                    || f.queue_flags
                        .intersects(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE)
            })
            .map(|f| (base.limits.timestamp_period, f.timestamp_valid_bits)),
    }
}
