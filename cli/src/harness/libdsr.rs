//! `libdsr.so` loaded with `dlopen`, as a C program would use it: the C ABI's types as
//! `include/dsr.h` lays them out and the entry points the harnesses call (the submit bench, the
//! soak). The library refuses a struct whose `struct_size` it does not know, so a drift fails
//! loudly.

use std::ffi::{c_void, CString};
use std::path::Path;

use dsr::{Error, ErrorKind, Result};

/// The C ABI's types.
pub mod c {
    use std::ffi::{c_char, c_void};

    #[derive(Debug)]
    #[repr(C)]
    pub struct RuntimeConfig {
        pub struct_size: u32,
        pub api_version: u32,
        pub staging_bytes: u64,
        pub workers: u32,
        pub flags: u32,
        pub debug_flags: u32,
        pub reserved: u32,
    }

    #[derive(Debug)]
    #[repr(C)]
    pub struct QueueDesc {
        pub struct_size: u32,
        pub source_type: u32,
        pub capacity: u32,
        pub priority: i32,
        pub name: *const c_char,
        pub flags: u32,
        pub reserved: u32,
    }

    #[derive(Debug)]
    #[repr(C)]
    pub struct Request {
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
        pub callback: Option<unsafe extern "C" fn(*mut c_void, i32)>,
        pub user_data: *mut c_void,
        pub buffer: u64,
        pub buffer_offset: u64,
    }
}

type Create<T> = unsafe extern "C" fn(*const T, *mut u64) -> i32;
type HandleFn = unsafe extern "C" fn(u64) -> i32;
type QueueCreate = unsafe extern "C" fn(u64, *const c::QueueDesc, *mut u64) -> i32;
type Enqueue = unsafe extern "C" fn(u64, *const c::Request) -> i32;
type Signal = unsafe extern "C" fn(u64, u64, u64) -> i32;
type FenceCreate = unsafe extern "C" fn(*mut u64) -> i32;
type FenceWait = unsafe extern "C" fn(u64, u64, u32) -> i32;
type Cancel = unsafe extern "C" fn(u64, u64, u64) -> i32;
type FileOpen = unsafe extern "C" fn(u64, *const std::ffi::c_char, *mut u64, *mut u64) -> i32;

/// The C ABI's entry points the harnesses call, looked up in a loaded `libdsr.so`.
pub struct Libdsr {
    handle: *mut c_void,
    pub runtime_create: Create<c::RuntimeConfig>,
    pub runtime_destroy: HandleFn,
    pub queue_create: QueueCreate,
    pub queue_destroy: HandleFn,
    pub queue_close: HandleFn,
    pub enqueue: Enqueue,
    pub enqueue_signal: Signal,
    pub submit: HandleFn,
    pub cancel: Cancel,
    pub file_open: FileOpen,
    pub file_close: HandleFn,
    pub fence_create: FenceCreate,
    pub fence_destroy: HandleFn,
    pub fence_wait: FenceWait,
}

impl std::fmt::Debug for Libdsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libdsr")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Drop for Libdsr {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen; nothing of the library is used afterwards.
        unsafe { libc::dlclose(self.handle) };
    }
}

impl Libdsr {
    /// Loads `path` and looks up the entry points.
    pub fn load(path: &Path) -> std::result::Result<Libdsr, String> {
        let name = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path; the library's initialisers are Rust's, which run nothing
        // of ours.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot load {}", path.display()));
        }
        let symbol = |name: &str| -> std::result::Result<*mut c_void, String> {
            let c_name = CString::new(name).expect("no NUL in a symbol name");
            // SAFETY: a live handle and a NUL-terminated name.
            let found = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
            if found.is_null() {
                Err(format!("{} has no {name}", path.display()))
            } else {
                Ok(found)
            }
        };
        macro_rules! bind {
            ($name:literal, $ty:ty) => {
                // SAFETY: the symbol is the C ABI function of that name, whose signature
                // include/dsr.h declares and `$ty` repeats.
                unsafe { std::mem::transmute::<*mut c_void, $ty>(symbol($name)?) }
            };
        }
        Ok(Libdsr {
            runtime_create: bind!("dsr_runtime_create", Create<c::RuntimeConfig>),
            runtime_destroy: bind!("dsr_runtime_destroy", HandleFn),
            queue_create: bind!("dsr_queue_create", QueueCreate),
            queue_destroy: bind!("dsr_queue_destroy", HandleFn),
            queue_close: bind!("dsr_queue_close", HandleFn),
            enqueue: bind!("dsr_queue_enqueue", Enqueue),
            enqueue_signal: bind!("dsr_queue_enqueue_signal", Signal),
            submit: bind!("dsr_queue_submit", HandleFn),
            cancel: bind!("dsr_queue_cancel", Cancel),
            file_open: bind!("dsr_file_open", FileOpen),
            file_close: bind!("dsr_file_close", HandleFn),
            fence_create: bind!("dsr_fence_create", FenceCreate),
            fence_destroy: bind!("dsr_fence_destroy", HandleFn),
            fence_wait: bind!("dsr_fence_wait", FenceWait),
            handle,
        })
    }
}

impl Libdsr {
    /// A host runtime with `workers` workers (0: one per core).
    pub fn create_runtime(&self, workers: usize) -> Result<u64> {
        let config = c::RuntimeConfig {
            struct_size: std::mem::size_of::<c::RuntimeConfig>() as u32,
            api_version: 1,
            staging_bytes: 0,
            workers: workers as u32,
            flags: 0,
            debug_flags: 0,
            reserved: 0,
        };
        let mut runtime = 0u64;
        // SAFETY: a valid struct and out-pointer.
        c_check("dsr_runtime_create", unsafe {
            (self.runtime_create)(&config, &mut runtime)
        })?;
        Ok(runtime)
    }

    /// A queue on `runtime` taking `source_type` requests (0 files, 1 memory), `capacity`
    /// slots.
    pub fn create_queue(&self, runtime: u64, source_type: u32, capacity: u32) -> Result<u64> {
        let desc = c::QueueDesc {
            struct_size: std::mem::size_of::<c::QueueDesc>() as u32,
            source_type,
            capacity,
            priority: 0,
            name: std::ptr::null(),
            flags: 0,
            reserved: 0,
        };
        let mut queue = 0u64;
        // SAFETY: a valid struct and out-pointer; the runtime handle is checked by the library.
        c_check("dsr_queue_create", unsafe {
            (self.queue_create)(runtime, &desc, &mut queue)
        })?;
        Ok(queue)
    }
}

/// A C ABI result as a `Result`, naming the call.
pub fn c_check(what: &str, code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Internal,
            format!("{what} returned {code} through the C ABI"),
        ))
    }
}
