//! The C ABI's types, mirroring `include/dsr.h` field for field (`tests/c_api.rs` compares the
//! layouts with a C compiler's), and the mapping from dsr's errors to result codes.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

use dsr_facade::{Error, ErrorKind, RequestStatus};

/// `dsr_result`.
pub type dsr_result = i32;
/// Handles: 64-bit values checked against their tables (`handles.rs`).
pub type dsr_runtime = u64;
pub type dsr_file = u64;
pub type dsr_queue = u64;
pub type dsr_fence = u64;
pub type dsr_status_array = u64;
pub type dsr_buffer = u64;

pub const DSR_API_VERSION: u32 = 1;

pub const DSR_OK: dsr_result = 0;
pub const DSR_PENDING: dsr_result = 1;
pub const DSR_TIMEOUT: dsr_result = 2;
pub const DSR_E_INVALID_ARGUMENT: dsr_result = -1;
pub const DSR_E_INVALID_HANDLE: dsr_result = -2;
pub const DSR_E_VERSION: dsr_result = -3;
pub const DSR_E_WOULD_BLOCK: dsr_result = -4;
pub const DSR_E_CLOSED: dsr_result = -5;
pub const DSR_E_NOT_FOUND: dsr_result = -6;
pub const DSR_E_PERMISSION: dsr_result = -7;
pub const DSR_E_IO: dsr_result = -8;
pub const DSR_E_END_OF_FILE: dsr_result = -9;
pub const DSR_E_DESTINATION_TOO_SMALL: dsr_result = -10;
pub const DSR_E_OVERLAP: dsr_result = -11;
pub const DSR_E_OUT_OF_MEMORY: dsr_result = -12;
pub const DSR_E_DEVICE: dsr_result = -13;
pub const DSR_E_CORRUPT: dsr_result = -14;
pub const DSR_E_UNSUPPORTED: dsr_result = -15;
pub const DSR_E_CANCELLED: dsr_result = -16;
pub const DSR_E_INTERNAL: dsr_result = -17;
pub const DSR_E_BUSY: dsr_result = -18;

/// Every result code with its name, for `dsr_result_name` (NUL-terminated for C).
pub const RESULT_NAMES: &[(dsr_result, &str)] = &[
    (DSR_OK, "DSR_OK\0"),
    (DSR_PENDING, "DSR_PENDING\0"),
    (DSR_TIMEOUT, "DSR_TIMEOUT\0"),
    (DSR_E_INVALID_ARGUMENT, "DSR_E_INVALID_ARGUMENT\0"),
    (DSR_E_INVALID_HANDLE, "DSR_E_INVALID_HANDLE\0"),
    (DSR_E_VERSION, "DSR_E_VERSION\0"),
    (DSR_E_WOULD_BLOCK, "DSR_E_WOULD_BLOCK\0"),
    (DSR_E_CLOSED, "DSR_E_CLOSED\0"),
    (DSR_E_NOT_FOUND, "DSR_E_NOT_FOUND\0"),
    (DSR_E_PERMISSION, "DSR_E_PERMISSION\0"),
    (DSR_E_IO, "DSR_E_IO\0"),
    (DSR_E_END_OF_FILE, "DSR_E_END_OF_FILE\0"),
    (DSR_E_DESTINATION_TOO_SMALL, "DSR_E_DESTINATION_TOO_SMALL\0"),
    (DSR_E_OVERLAP, "DSR_E_OVERLAP\0"),
    (DSR_E_OUT_OF_MEMORY, "DSR_E_OUT_OF_MEMORY\0"),
    (DSR_E_DEVICE, "DSR_E_DEVICE\0"),
    (DSR_E_CORRUPT, "DSR_E_CORRUPT\0"),
    (DSR_E_UNSUPPORTED, "DSR_E_UNSUPPORTED\0"),
    (DSR_E_CANCELLED, "DSR_E_CANCELLED\0"),
    (DSR_E_INTERNAL, "DSR_E_INTERNAL\0"),
    (DSR_E_BUSY, "DSR_E_BUSY\0"),
];

pub const DSR_RUNTIME_DISABLE_GPU_DECOMPRESSION: u32 = 0x1;
pub const DSR_RUNTIME_FORCE_FILE_BUFFERING: u32 = 0x2;
pub const DSR_DEBUG_SHOW_ERRORS: u32 = 0x1;
pub const DSR_DEBUG_RECORD_NAMES: u32 = 0x4;
pub const DSR_SOURCE_FILE: u32 = 0;
pub const DSR_SOURCE_MEMORY: u32 = 1;
pub const DSR_QUEUE_TRACK_COMPLETIONS: u32 = 0x1;
pub const DSR_REQUEST_READ_FILE: u32 = 0;
pub const DSR_REQUEST_READ_MEMORY: u32 = 1;
pub const DSR_REQUEST_WRITE_FILE: u32 = 2;
pub const DSR_COMPRESSION_NONE: u32 = 0;
pub const DSR_COMPRESSION_GDEFLATE: u32 = 1;
pub const DSR_OPTION_SYNC: u32 = 0x1;
pub const DSR_OPTION_BUFFERED: u32 = 0x2;
pub const DSR_OPTION_DIRECT: u32 = 0x4;
pub const DSR_GDEFLATE_LEVEL_STORED: u32 = 0;
pub const DSR_GDEFLATE_LEVEL_FASTEST: u32 = 1;
pub const DSR_GDEFLATE_LEVEL_DEFAULT: u32 = 6;
pub const DSR_GDEFLATE_LEVEL_BEST: u32 = 12;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dsr_runtime_config {
    pub struct_size: u32,
    pub api_version: u32,
    pub staging_bytes: u64,
    pub workers: u32,
    pub flags: u32,
    pub debug_flags: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dsr_queue_desc {
    pub struct_size: u32,
    pub source_type: u32,
    pub capacity: u32,
    pub priority: i32,
    pub name: *const c_char,
    pub flags: u32,
    pub reserved: u32,
}

pub type dsr_request_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, result: dsr_result)>;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dsr_request {
    pub struct_size: u32,
    pub kind: u32,
    pub compression: u32,
    pub options: u32,
    pub file: u64,
    pub file_offset: u64,
    pub source: *const c_void,
    pub source_size: u64,
    pub destination: *mut c_void,
    pub destination_size: u64,
    pub tag: u64,
    pub name: *const c_char,
    pub callback: dsr_request_callback,
    pub user_data: *mut c_void,
    pub buffer: dsr_buffer,
    pub buffer_offset: u64,
}

pub type dsr_queue_lock_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;
pub type dsr_vk_void_function = Option<unsafe extern "system" fn()>;
pub type dsr_vk_get_instance_proc_addr =
    Option<unsafe extern "system" fn(instance: *mut c_void, name: *const c_char) -> dsr_vk_void_function>;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dsr_vulkan_device {
    pub struct_size: u32,
    pub reserved: u32,
    pub instance: *mut c_void,
    pub physical_device: *mut c_void,
    pub device: *mut c_void,
    pub get_instance_proc_addr: dsr_vk_get_instance_proc_addr,
    pub transfer_family: u32,
    pub transfer_index: u32,
    pub compute_family: u32,
    pub compute_index: u32,
    pub lock_queue: dsr_queue_lock_fn,
    pub unlock_queue: dsr_queue_lock_fn,
    pub lock_user_data: *mut c_void,
    pub transfer_queue: *mut c_void,
    pub compute_queue: *mut c_void,
}

/// `dsr_vulkan_device` as the first header had it (without the queue handles): still accepted.
pub const DSR_VULKAN_DEVICE_SIZE_V1: usize = std::mem::offset_of!(dsr_vulkan_device, transfer_queue);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dsr_queue_info {
    pub struct_size: u32,
    pub empty_slots: u32,
    pub until_auto_submit: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dsr_completion {
    pub user_data: *mut c_void,
    pub result: dsr_result,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct dsr_error_info {
    pub struct_size: u32,
    pub result: dsr_result,
    pub os_errno: i32,
    pub vk_result: i32,
    pub tile: u32,
    pub reserved: u32,
    pub offset: u64,
    pub stage: [c_char; 16],
    pub file: [c_char; 512],
    pub request_name: [c_char; 65],
    pub message: [c_char; 319],
}

pub type dsr_error_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, error: *const dsr_error_info)>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct dsr_error_record {
    pub struct_size: u32,
    pub failure_count: u32,
    pub first: dsr_error_info,
    pub request: dsr_request,
}

impl std::fmt::Debug for dsr_error_info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("dsr_error_info")
            .field("result", &self.result)
            .field("os_errno", &self.os_errno)
            .field("vk_result", &self.vk_result)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dsr_error_record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("dsr_error_record")
            .field("failure_count", &self.failure_count)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl dsr_error_info {
    /// An empty record (result `DSR_OK`, nothing known).
    pub fn empty() -> Self {
        dsr_error_info {
            struct_size: std::mem::size_of::<dsr_error_info>() as u32,
            result: DSR_OK,
            os_errno: 0,
            vk_result: 0,
            tile: u32::MAX,
            reserved: 0,
            offset: u64::MAX,
            stage: [0; 16],
            file: [0; 512],
            request_name: [0; 65],
            message: [0; 319],
        }
    }

    /// What `error` says, for a C caller; `name` is the request's.
    pub fn from_error(error: &Error, name: Option<&str>) -> Self {
        let mut info = dsr_error_info::empty();
        info.result = result_of(error);
        info.os_errno = error.errno().unwrap_or(0);
        info.vk_result = vk_result(error).unwrap_or(0);
        info.tile = error.tile().unwrap_or(u32::MAX);
        info.offset = error.offset().unwrap_or(u64::MAX);
        copy_str(&mut info.stage, error.stage().map_or("", |s| s.name()));
        copy_str(
            &mut info.file,
            &error.path().map(|p| p.display().to_string()).unwrap_or_default(),
        );
        copy_str(&mut info.request_name, name.unwrap_or(""));
        copy_str(&mut info.message, &error.to_string());
        info
    }
}

/// The `VkResult` a GPU error carries, if it does.
fn vk_result(error: &Error) -> Option<i32> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(result) = cause.downcast_ref::<ash::vk::Result>() {
            return Some(result.as_raw());
        }
        source = cause.source();
    }
    None
}

/// Copies `text` into a C string field, cut at a character boundary to leave room for the NUL.
pub fn copy_str(field: &mut [c_char], text: &str) {
    let mut end = text.len().min(field.len().saturating_sub(1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (dst, &src) in field.iter_mut().zip(&text.as_bytes()[..end]) {
        *dst = src as c_char;
    }
    if let Some(nul) = field.get_mut(end) {
        *nul = 0;
    }
}

/// The result code of an error.
pub fn result_of(error: &Error) -> dsr_result {
    match error.kind() {
        ErrorKind::InvalidRequest => DSR_E_INVALID_ARGUMENT,
        ErrorKind::DestinationTooSmall => DSR_E_DESTINATION_TOO_SMALL,
        ErrorKind::OverlappingDestinations => DSR_E_OVERLAP,
        ErrorKind::NotFound => DSR_E_NOT_FOUND,
        ErrorKind::PermissionDenied => DSR_E_PERMISSION,
        ErrorKind::UnexpectedEof => DSR_E_END_OF_FILE,
        ErrorKind::Io => DSR_E_IO,
        ErrorKind::OutOfMemory => DSR_E_OUT_OF_MEMORY,
        ErrorKind::Device => DSR_E_DEVICE,
        ErrorKind::Corrupt => DSR_E_CORRUPT,
        ErrorKind::Unsupported => DSR_E_UNSUPPORTED,
        ErrorKind::WouldBlock => DSR_E_WOULD_BLOCK,
        ErrorKind::Closed | ErrorKind::ShutDown => DSR_E_CLOSED,
        _ => DSR_E_INTERNAL,
    }
}

/// The result code a request ended with.
pub fn result_of_status(status: &RequestStatus) -> dsr_result {
    match status {
        RequestStatus::Done => DSR_OK,
        RequestStatus::Cancelled => DSR_E_CANCELLED,
        RequestStatus::Failed(error) => result_of(error),
    }
}
