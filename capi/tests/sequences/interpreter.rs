//! The C ABI sequence interpreter shared by `tests/sequences.rs` and the `capi_sequences` fuzz
//! target: bytes in, calls out. Each operation takes a byte for what to call and more for its
//! arguments; handles are picked from those made so far, or stale (destroyed), forged, or 0.
//! Memory handed to the library (sources, destinations, callback records) stays alive until
//! every queue is destroyed, which by the ABI's contract ends everything in flight.

// Arguments are picked by remainders of bytes: `b % 7 == 0` reads as the choice it is.
#![allow(clippy::manual_is_multiple_of)]

use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// Every code `include/dsr.h` defines.
const CODES: std::ops::RangeInclusive<i32> = -18..=2;
const E_CLOSED: i32 = -5;

#[repr(C)]
struct RuntimeConfig {
    struct_size: u32,
    api_version: u32,
    staging_bytes: u64,
    workers: u32,
    flags: u32,
    debug_flags: u32,
    reserved: u32,
}

#[repr(C)]
struct QueueDesc {
    struct_size: u32,
    source_type: u32,
    capacity: u32,
    priority: i32,
    name: *const c_char,
    flags: u32,
    reserved: u32,
}

#[repr(C)]
struct Request {
    struct_size: u32,
    kind: u32,
    compression: u32,
    options: u32,
    file: u64,
    file_offset: u64,
    source: *const c_void,
    source_size: u64,
    destination: *mut c_void,
    destination_size: u64,
    tag: u64,
    name: *const c_char,
    callback: Option<unsafe extern "C" fn(*mut c_void, i32)>,
    user_data: *mut c_void,
    buffer: u64,
    buffer_offset: u64,
}

#[repr(C)]
#[derive(Default)]
struct QueueInfo {
    struct_size: u32,
    empty_slots: u32,
    until_auto_submit: u32,
    reserved: u32,
}

#[repr(C)]
struct Completion {
    user_data: *mut c_void,
    result: i32,
    reserved: u32,
}

type H = u64;

/// The entry points, looked up in a loaded `libdsr.so`.
pub struct Library {
    handle: *mut c_void,
    runtime_create: unsafe extern "C" fn(*const RuntimeConfig, *mut H) -> i32,
    runtime_destroy: unsafe extern "C" fn(H) -> i32,
    file_open: unsafe extern "C" fn(H, *const c_char, *mut H, *mut u64) -> i32,
    file_close: unsafe extern "C" fn(H) -> i32,
    queue_create: unsafe extern "C" fn(H, *const QueueDesc, *mut H) -> i32,
    queue_destroy: unsafe extern "C" fn(H) -> i32,
    queue_close: unsafe extern "C" fn(H) -> i32,
    enqueue: unsafe extern "C" fn(H, *const Request) -> i32,
    try_enqueue: unsafe extern "C" fn(H, *const Request) -> i32,
    enqueue_status: unsafe extern "C" fn(H, H, u32) -> i32,
    enqueue_signal: unsafe extern "C" fn(H, H, u64) -> i32,
    submit: unsafe extern "C" fn(H) -> i32,
    cancel: unsafe extern "C" fn(H, u64, u64) -> i32,
    query: unsafe extern "C" fn(H, *mut QueueInfo) -> i32,
    take_completed: unsafe extern "C" fn(H, *mut Completion, usize, *mut usize) -> i32,
    fence_create: unsafe extern "C" fn(*mut H) -> i32,
    fence_destroy: unsafe extern "C" fn(H) -> i32,
    fence_value: unsafe extern "C" fn(H, *mut u64) -> i32,
    fence_wait: unsafe extern "C" fn(H, u64, u32) -> i32,
    status_create: unsafe extern "C" fn(u32, *mut H) -> i32,
    status_destroy: unsafe extern "C" fn(H) -> i32,
    status_get: unsafe extern "C" fn(H, u32, *mut i32) -> i32,
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: from dlopen; nothing of the library is used afterwards.
        unsafe { libc::dlclose(self.handle) };
    }
}

impl Library {
    // Each transmute's target is the type of the field it initialises.
    #[allow(clippy::missing_transmute_annotations)]
    pub fn load(path: &Path) -> Result<Library, String> {
        let name = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot load {}", path.display()));
        }
        let symbol = |name: &str| -> Result<*mut c_void, String> {
            let c_name = CString::new(name).expect("no NUL in a symbol name");
            // SAFETY: a live handle and a NUL-terminated name.
            let found = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
            match found.is_null() {
                true => Err(format!("no {name} in {}", path.display())),
                false => Ok(found),
            }
        };
        macro_rules! bind {
            ($name:literal) => {
                // SAFETY: the symbol is the function of that name, with the signature `dsr.h`
                // declares and the field repeats (the field's type is the transmute's target).
                unsafe { std::mem::transmute::<*mut c_void, _>(symbol($name)?) }
            };
        }
        Ok(Library {
            runtime_create: bind!("dsr_runtime_create"),
            runtime_destroy: bind!("dsr_runtime_destroy"),
            file_open: bind!("dsr_file_open"),
            file_close: bind!("dsr_file_close"),
            queue_create: bind!("dsr_queue_create"),
            queue_destroy: bind!("dsr_queue_destroy"),
            queue_close: bind!("dsr_queue_close"),
            enqueue: bind!("dsr_queue_enqueue"),
            try_enqueue: bind!("dsr_queue_try_enqueue"),
            enqueue_status: bind!("dsr_queue_enqueue_status"),
            enqueue_signal: bind!("dsr_queue_enqueue_signal"),
            submit: bind!("dsr_queue_submit"),
            cancel: bind!("dsr_queue_cancel"),
            query: bind!("dsr_queue_query"),
            take_completed: bind!("dsr_queue_take_completed"),
            fence_create: bind!("dsr_fence_create"),
            fence_destroy: bind!("dsr_fence_destroy"),
            fence_value: bind!("dsr_fence_value"),
            fence_wait: bind!("dsr_fence_wait"),
            status_create: bind!("dsr_status_array_create"),
            status_destroy: bind!("dsr_status_array_destroy"),
            status_get: bind!("dsr_status_array_get"),
            handle,
        })
    }
}

/// Counts over many sequences.
#[derive(Debug, Default)]
pub struct Totals {
    pub calls: u64,
    pub refused: u64,
    pub accepted_requests: u64,
    pub callbacks: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.calls += other.calls;
        self.refused += other.refused;
        self.accepted_requests += other.accepted_requests;
        self.callbacks += other.callbacks;
    }
}

/// A request the library accepted: its callback's count, and whether its queue closed before
/// it could complete.
struct Accepted {
    calls: Box<AtomicU32>,
    queue: H,
}

unsafe extern "C" fn count_call(user_data: *mut c_void, _result: i32) {
    // SAFETY: `user_data` is an `Accepted`'s counter, alive until the machine finishes.
    unsafe { &*(user_data as *const AtomicU32) }.fetch_add(1, Ordering::SeqCst);
}

/// One sequence's state: the handles made (live and dead), and the memory lent to the library.
pub struct Machine<'a> {
    lib: &'a Library,
    path: CString,
    runtimes: Vec<H>,
    files: Vec<H>,
    queues: Vec<(H, bool)>,
    fences: Vec<H>,
    statuses: Vec<H>,
    dead: Vec<H>,
    closed: Vec<H>,
    lent: Vec<Box<[u8]>>,
    accepted: Vec<Accepted>,
    totals: Totals,
}

impl<'a> Machine<'a> {
    pub fn new(lib: &'a Library, file: &Path) -> Machine<'a> {
        Machine {
            lib,
            path: CString::new(file.as_os_str().as_encoded_bytes()).expect("no NUL in a temp path"),
            runtimes: Vec::new(),
            files: Vec::new(),
            queues: Vec::new(),
            fences: Vec::new(),
            statuses: Vec::new(),
            dead: Vec::new(),
            closed: Vec::new(),
            lent: Vec::new(),
            accepted: Vec::new(),
            totals: Totals::default(),
        }
    }

    /// A code from a call: one of the ABI's, or the sequence is broken.
    fn code(&mut self, what: &str, code: i32) -> Result<i32, String> {
        self.totals.calls += 1;
        if code < 0 {
            self.totals.refused += 1;
        }
        match CODES.contains(&code) {
            true => Ok(code),
            false => Err(format!("{what} returned {code}, not a dsr_result")),
        }
    }

    /// A handle: one of `live`, a destroyed one, a forged one, or 0.
    fn pick(&self, live: &[H], b: u8) -> H {
        match b % 8 {
            0 => 0,
            1 => 0xdead_beef_0000_0000 | u64::from(b),
            2 => self
                .dead
                .get(usize::from(b) % self.dead.len().max(1))
                .copied()
                .unwrap_or(7),
            _ => live.get(usize::from(b) % live.len().max(1)).copied().unwrap_or(0),
        }
    }

    /// Lends `len` bytes (kept until the machine finishes).
    fn lend(&mut self, len: usize, fill: u8) -> *mut u8 {
        let mut block = vec![fill; len.max(1)].into_boxed_slice();
        let ptr = block.as_mut_ptr();
        self.lent.push(block);
        ptr
    }

    /// A start that makes a runtime, opens the file, makes a file queue and a memory queue and
    /// a fence, so random operations after it reach deep states often.
    pub const PROLOGUE: [u8; 20] = [0, 1, 0, 1, 2, 3, 2, 1, 4, 3, 3, 0, 4, 3, 1, 0, 12, 0, 0, 0];

    /// Runs the operations `bytes` encode.
    pub fn run(&mut self, bytes: &[u8]) -> Result<(), String> {
        for op in bytes.chunks(4) {
            let byte = |i: usize| op.get(i).copied().unwrap_or(0);
            self.step(byte(0), byte(1), byte(2), byte(3))?;
        }
        Ok(())
    }

    fn step(&mut self, op: u8, a: u8, b: u8, c: u8) -> Result<(), String> {
        let lib = self.lib;
        // SAFETY: every call below passes live pointers to structs of this file, lent memory
        // that outlives the library's use, or null; handles may be anything, which the ABI
        // promises to check.
        unsafe {
            match op % 16 {
                0 => {
                    let config = RuntimeConfig {
                        struct_size: if a % 5 == 0 {
                            3
                        } else {
                            std::mem::size_of::<RuntimeConfig>() as u32
                        },
                        api_version: if a % 7 == 0 { 9 } else { 1 },
                        staging_bytes: u64::from(b % 3) << 20,
                        workers: u32::from(c % 3),
                        flags: u32::from(b >> 6),
                        debug_flags: 0,
                        reserved: u32::from(a % 11 == 0),
                    };
                    let mut out = 0;
                    let config_ptr = if a % 13 == 0 { std::ptr::null() } else { &config };
                    if self.code("runtime_create", (lib.runtime_create)(config_ptr, &mut out))? == 0 {
                        self.runtimes.push(out);
                    }
                }
                1 => {
                    let runtime = self.pick(&self.runtimes.clone(), a);
                    if self.code("runtime_destroy", (lib.runtime_destroy)(runtime))? == 0 {
                        self.runtimes.retain(|&r| r != runtime);
                        self.dead.push(runtime);
                    }
                }
                2 => {
                    let runtime = self.pick(&self.runtimes.clone(), a);
                    let missing = CString::new("/nonexistent/dsr/file").expect("no NUL");
                    let path = match b % 4 {
                        0 => std::ptr::null(),
                        1 => missing.as_ptr(),
                        _ => self.path.as_ptr(),
                    };
                    let (mut out, mut size) = (0, 0);
                    let size_ptr = if c % 2 == 0 { std::ptr::null_mut() } else { &mut size };
                    if self.code("file_open", (lib.file_open)(runtime, path, &mut out, size_ptr))? == 0 {
                        self.files.push(out);
                    }
                }
                3 => {
                    let file = self.pick(&self.files.clone(), a);
                    if self.code("file_close", (lib.file_close)(file))? == 0 {
                        self.files.retain(|&f| f != file);
                        self.dead.push(file);
                    }
                }
                4 => {
                    let runtime = self.pick(&self.runtimes.clone(), a);
                    let desc = QueueDesc {
                        struct_size: if b % 9 == 0 {
                            1
                        } else {
                            std::mem::size_of::<QueueDesc>() as u32
                        },
                        source_type: u32::from(b % 3),
                        capacity: [0x80, 0x100, 0x7f, 0x2001, 0][usize::from(c % 5)],
                        priority: i32::from(c % 5) - 1,
                        name: std::ptr::null(),
                        flags: u32::from(a % 2),
                        reserved: 0,
                    };
                    let mut out = 0;
                    if self.code("queue_create", (lib.queue_create)(runtime, &desc, &mut out))? == 0 {
                        self.queues.push((out, b % 3 == 1));
                    }
                }
                5 | 6 => {
                    let queues: Vec<H> = self.queues.iter().map(|q| q.0).collect();
                    let queue = self.pick(&queues, a);
                    if op % 16 == 5 {
                        if self.code("queue_destroy", (lib.queue_destroy)(queue))? == 0 {
                            self.queues.retain(|q| q.0 != queue);
                            self.dead.push(queue);
                            self.closed.push(queue);
                        }
                    } else if self.code("queue_close", (lib.queue_close)(queue))? == 0 {
                        self.closed.push(queue);
                    }
                }
                7 | 8 => self.enqueue(op % 16 == 8, a, b, c)?,
                9 => {
                    let queues: Vec<H> = self.queues.iter().map(|q| q.0).collect();
                    let (queue, fence) = (self.pick(&queues, a), self.pick(&self.fences.clone(), b));
                    self.code("enqueue_signal", (lib.enqueue_signal)(queue, fence, u64::from(c % 4)))?;
                }
                10 => {
                    let queues: Vec<H> = self.queues.iter().map(|q| q.0).collect();
                    let queue = self.pick(&queues, a);
                    self.code("submit", (lib.submit)(queue))?;
                    if b % 2 == 0 {
                        self.code("cancel", (lib.cancel)(queue, u64::from(c), u64::from(b)))?;
                    }
                }
                11 => {
                    let queues: Vec<H> = self.queues.iter().map(|q| q.0).collect();
                    let queue = self.pick(&queues, a);
                    let mut info = QueueInfo {
                        struct_size: if c % 4 == 0 {
                            2
                        } else {
                            std::mem::size_of::<QueueInfo>() as u32
                        },
                        ..QueueInfo::default()
                    };
                    let info_ptr = if b % 3 == 0 { std::ptr::null_mut() } else { &mut info };
                    self.code("query", (lib.query)(queue, info_ptr))?;
                    let mut done: [Completion; 4] = std::array::from_fn(|_| Completion {
                        user_data: std::ptr::null_mut(),
                        result: 0,
                        reserved: 0,
                    });
                    let mut count = 0;
                    let (out, capacity) = match c % 3 {
                        0 => (std::ptr::null_mut(), 4),
                        1 => (done.as_mut_ptr(), 0),
                        _ => (done.as_mut_ptr(), 4),
                    };
                    self.code("take_completed", (lib.take_completed)(queue, out, capacity, &mut count))?;
                    if count > capacity {
                        return Err(format!("take_completed reported {count} into room for {capacity}"));
                    }
                }
                12 => {
                    let mut out = 0;
                    if self.code("fence_create", (lib.fence_create)(&mut out))? == 0 {
                        self.fences.push(out);
                    }
                }
                13 => {
                    let fence = self.pick(&self.fences.clone(), a);
                    match b % 3 {
                        0 => {
                            if self.code("fence_destroy", (lib.fence_destroy)(fence))? == 0 {
                                self.fences.retain(|&f| f != fence);
                                self.dead.push(fence);
                            }
                        }
                        1 => {
                            let mut value = 0;
                            self.code("fence_value", (lib.fence_value)(fence, &mut value))?;
                        }
                        _ => {
                            self.code(
                                "fence_wait",
                                (lib.fence_wait)(fence, u64::from(c % 3), u32::from(c % 4)),
                            )?;
                        }
                    }
                }
                14 => {
                    let mut out = 0;
                    if self.code("status_create", (lib.status_create)(u32::from(a % 6), &mut out))? == 0 {
                        self.statuses.push(out);
                    }
                    let queues: Vec<H> = self.queues.iter().map(|q| q.0).collect();
                    let (queue, array) = (self.pick(&queues, b), self.pick(&self.statuses.clone(), c));
                    self.code("enqueue_status", (lib.enqueue_status)(queue, array, u32::from(a % 8)))?;
                    let mut result = 0;
                    let result_ptr = if a % 4 == 0 { std::ptr::null_mut() } else { &mut result };
                    self.code("status_get", (lib.status_get)(array, u32::from(b % 8), result_ptr))?;
                }
                _ => {
                    let array = self.pick(&self.statuses.clone(), a);
                    if self.code("status_destroy", (lib.status_destroy)(array))? == 0 {
                        self.statuses.retain(|&s| s != array);
                        self.dead.push(array);
                    }
                }
            }
        }
        Ok(())
    }

    /// A request, sound or not in the ways the ABI checks: kinds, struct sizes, null pointers,
    /// zero and huge sizes, stale files, ranges past the file's end, garbage GDeflate.
    fn enqueue(&mut self, try_only: bool, a: u8, b: u8, c: u8) -> Result<(), String> {
        let queues: Vec<H> = self.queues.iter().map(|q| q.0).collect();
        let queue = self.pick(&queues, a);
        let len = [0u64, 1, 100, 4096, 70_000][usize::from(b % 5)];
        let compressed = c % 5 == 0;
        let out_len = if compressed { len * 2 } else { len };
        let source = self.lend(len as usize, b);
        // As large as the request says: a destination smaller than its size is a lie the ABI
        // cannot see through (C has no bounds), not a hostile argument it must catch.
        let destination = self.lend(out_len as usize, 0);
        let counter = Box::new(AtomicU32::new(0));
        // Mostly the kind the queue takes (file reads on file queues, memory reads on memory
        // queues), sometimes a write, sometimes nonsense.
        let memory_queue = self.queues.iter().find(|q| q.0 == queue).is_some_and(|q| q.1);
        let kind = match a % 6 {
            0..=3 => u32::from(memory_queue),
            4 => 2,
            _ => u32::from(a),
        };
        let request = Request {
            struct_size: if c % 17 == 0 {
                8
            } else {
                std::mem::size_of::<Request>() as u32
            },
            kind,
            compression: u32::from(compressed) + u32::from(c % 23 == 0) * 5,
            options: if b % 4 == 0 { u32::from(b >> 5) } else { 0 },
            file: self.pick(&self.files.clone(), c),
            file_offset: [0u64, 1000, 199_999, 1 << 40][usize::from(a / 4 % 4)],
            source: if b % 7 == 0 { std::ptr::null() } else { source.cast() },
            source_size: len,
            destination: if c % 11 == 0 {
                std::ptr::null_mut()
            } else {
                destination.cast()
            },
            destination_size: out_len,
            tag: u64::from(a),
            name: std::ptr::null(),
            callback: if b % 3 == 0 { None } else { Some(count_call) },
            user_data: (&*counter as *const AtomicU32).cast_mut().cast(),
            buffer: u64::from(c % 29 == 0) * 3,
            buffer_offset: 0,
        };
        let lib = self.lib;
        // SAFETY: see `step`: the request's memory is lent until the machine finishes.
        let code = unsafe {
            match try_only {
                true => (lib.try_enqueue)(queue, &request),
                false => (lib.enqueue)(queue, &request),
            }
        };
        let code = self.code("enqueue", code)?;
        if code == 0 {
            self.totals.accepted_requests += 1;
            if request.callback.is_some() {
                self.accepted.push(Accepted { calls: counter, queue });
            }
        } else if code == E_CLOSED && !self.closed.contains(&queue) {
            return Err("an open queue refused a request as closed".into());
        }
        Ok(())
    }

    /// Ends everything (queues destroyed, which waits for what they hold; then the rest), then
    /// checks the callbacks: exactly one for requests of queues that were never closed before
    /// the end, at most one for the rest.
    pub fn finish(mut self) -> Result<Totals, String> {
        let lib = self.lib;
        let early_closed = self.closed.clone();
        // SAFETY: live handles, each destroyed once.
        unsafe {
            for (queue, _) in std::mem::take(&mut self.queues) {
                // An open queue takes its submit; one a request's failure refused is not lost.
                let submitted = (lib.submit)(queue);
                if submitted != 0 && !early_closed.contains(&queue) {
                    return Err(format!("an open queue's submit failed at the end: {submitted}"));
                }
                let fence = {
                    let mut f = 0;
                    (lib.fence_create)(&mut f);
                    f
                };
                // A closed queue takes no signal; an open one drains within the bound.
                if (lib.enqueue_signal)(queue, fence, 1) == 0 {
                    (lib.submit)(queue);
                    if (lib.fence_wait)(fence, 1, 30_000) != 0 {
                        return Err(format!("queue {queue:#x} did not drain in 30 s"));
                    }
                }
                (lib.fence_destroy)(fence);
                let code = (lib.queue_destroy)(queue);
                self.code("queue_destroy", code)?;
            }
            for file in std::mem::take(&mut self.files) {
                (lib.file_close)(file);
            }
            for fence in std::mem::take(&mut self.fences) {
                (lib.fence_destroy)(fence);
            }
            for array in std::mem::take(&mut self.statuses) {
                (lib.status_destroy)(array);
            }
            for runtime in std::mem::take(&mut self.runtimes) {
                let code = (lib.runtime_destroy)(runtime);
                self.code("runtime_destroy", code)?;
            }
        }
        for a in &self.accepted {
            let n = a.calls.load(Ordering::SeqCst);
            self.totals.callbacks += u64::from(n);
            let closed_early = early_closed.contains(&a.queue);
            if n > 1 || (n == 0 && !closed_early) {
                return Err(format!(
                    "a request accepted by queue {:#x} called back {n} times (closed before the end: {closed_early})",
                    a.queue
                ));
            }
        }
        Ok(self.totals)
    }
}
