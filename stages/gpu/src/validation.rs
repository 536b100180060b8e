//! The validation layer's messages, recorded: a `VK_EXT_debug_utils` messenger whose callback
//! appends each warning and error to a log the tests read ([`crate::GpuContext::validation_messages`])
//! and fail on.

use std::ffi::{c_void, CStr};
use std::sync::Mutex;

use ash::vk;
use dsr_engine::Result;

use crate::context::vk_error;

/// A messenger and the log it writes into. The log is boxed so its address, handed to the
/// driver as the callback's user data, stays put; it outlives the messenger (`destroy` first
/// destroys the messenger, then drops the log).
pub(crate) struct Validation {
    messenger: vk::DebugUtilsMessengerEXT,
    log: Box<Mutex<Vec<String>>>,
}

impl Validation {
    pub fn new(entry: &ash::Entry, instance: &ash::Instance) -> Result<Self> {
        let log: Box<Mutex<Vec<String>>> = Box::default();
        let info = vk::DebugUtilsMessengerCreateInfoEXT::default()
            .message_severity(
                vk::DebugUtilsMessageSeverityFlagsEXT::WARNING | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
            )
            .message_type(
                vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                    | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                    | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
            )
            .pfn_user_callback(Some(record))
            .user_data((&*log as *const Mutex<Vec<String>>).cast_mut().cast());
        let loader = ash::ext::debug_utils::Instance::new(entry, instance);
        // SAFETY: the instance was created with the debug-utils extension; the user data points
        // to the boxed log, which lives until after the messenger is destroyed.
        let messenger = unsafe { loader.create_debug_utils_messenger(&info, None) }
            .map_err(|r| vk_error(r, "cannot install the validation messenger"))?;
        Ok(Validation { messenger, log })
    }

    pub fn messages(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Destroys the messenger, then the log.
    ///
    /// # Safety
    /// `instance` must be the instance the messenger was made on, still alive.
    pub unsafe fn destroy(self, entry: &ash::Entry, instance: &ash::Instance) {
        let loader = ash::ext::debug_utils::Instance::new(entry, instance);
        // SAFETY: made on this instance by `new`, destroyed once (this consumes `self`).
        unsafe { loader.destroy_debug_utils_messenger(self.messenger, None) };
    }
}

/// The messenger's callback: appends the message to the log behind `user_data`.
unsafe extern "system" fn record(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    user_data: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: (1) `user_data` is the boxed log `Validation::new` registered, alive while the
    // messenger is; (2) the layer passes callback data valid for the call, whose message is
    // null or a NUL-terminated string.
    let (log, message) = unsafe {
        let log = &*(user_data as *const Mutex<Vec<String>>);
        let message = data
            .as_ref()
            .filter(|d| !d.p_message.is_null())
            .map(|d| CStr::from_ptr(d.p_message).to_string_lossy().into_owned())
            .unwrap_or_default();
        (log, message)
    };
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{severity:?}: {message}"));
    vk::FALSE
}
