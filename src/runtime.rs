//! The runtime: DirectStorage's factory. It holds the configuration (staging size, workers,
//! GPU decompression, file buffering, debug flags), opens files and makes queues, and builds the
//! executor they share when the first of them is made. The configuration can change only while
//! no queue and no file of the runtime is alive, since the executor they run on was built with
//! it. A runtime made [`Runtime::on_device`] runs on a Vulkan device: its queues take GPU
//! destinations and sources, and signal Vulkan timeline semaphores
//! ([`RuntimeQueue::enqueue_vulkan_signal`]).

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use dsr_engine::observer::Observer;
use dsr_engine::queue::{CompressionSupport, DebugFlags, Queue, QueueConfig};
use dsr_engine::{Error, ErrorKind, Executor, ExecutorConfig, FileSource, HostBuffer, IoPolicy, Request, Result};
use dsr_gpu::ash::vk;
use dsr_gpu::{GpuContext, StagingConfig, Transfers};

/// The runtime's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Bytes of staging: the scratch budget compressed requests decode through, and the GPU
    /// staging budget.
    pub staging_bytes: u64,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Decode GDeflate on the CPU even where a GPU decoder exists.
    pub disable_gpu_decompression: bool,
    /// Read every file through the page cache.
    pub force_file_buffering: bool,
    /// Debug behaviour of every queue.
    pub debug: DebugFlags,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            staging_bytes: dsr_engine::executor::DEFAULT_SCRATCH_BUDGET,
            workers: 0,
            disable_gpu_decompression: false,
            force_file_buffering: false,
            debug: DebugFlags::RECORD_NAMES,
        }
    }
}

/// A file opened through the runtime: shared by the requests that read it. Dropping (or
/// closing) the handle does not wait for them; the descriptor closes when the last request that
/// reads it is done.
#[derive(Clone, Debug)]
pub struct RuntimeFile {
    file: Arc<File>,
    path: Arc<Path>,
    /// Asked of the kernel the first time it is wanted: a title opening hundreds of files before
    /// its first `Submit` rarely asks (the Wine DLL never does), and a `statx` a file is a fifth
    /// of what opening costs.
    size: Arc<OnceLock<u64>>,
    /// Counted by the runtime while any handle lives (requests hold the file, not this).
    _alive: Arc<()>,
}

impl RuntimeFile {
    /// Its size in bytes, as of the first time it was asked.
    pub fn size(&self) -> Result<u64> {
        if let Some(&size) = self.size.get() {
            return Ok(size);
        }
        let size = self
            .file
            .metadata()
            .map_err(|e| Error::from_io(e, "cannot stat the file").with_path(&self.path))?
            .len();
        Ok(*self.size.get_or_init(|| size))
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A request reading `len` bytes at `offset` into `buffer` at `dst_offset` (its errors name
    /// the file's path).
    pub fn request(&self, offset: u64, len: u64, buffer: &HostBuffer, dst_offset: u64) -> Request {
        let mut request = Request::open_file(self.file.clone(), offset, len, buffer, dst_offset);
        if let dsr_engine::Source::File { file, .. } = &mut request.source {
            *file = FileSource::Named(self.file.clone(), self.path.clone());
        }
        request
    }

    /// Closes the handle; requests already made keep the file open until they are done.
    pub fn close(self) {}
}

struct State {
    config: RuntimeConfig,
    /// The device GPU requests run on, if any.
    device: Option<Arc<GpuContext>>,
    executor: Option<Arc<Executor>>,
    /// The device's transfer queue, once the executor is built on it.
    transfers: Option<Arc<Transfers>>,
    /// Cloned into every queue and every file the runtime makes: one strong count each beyond
    /// the runtime's own (a count, not a list, so a title opening files for hours keeps nothing
    /// of the closed ones).
    queues: Arc<()>,
    files: Arc<()>,
    /// Told of every node the executor runs (a trace recorder), once it is built.
    observer: Option<Arc<dyn Observer>>,
}

/// DirectStorage's factory: configuration, files and queues over one shared executor.
pub struct Runtime {
    state: Mutex<State>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Runtime")
            .field("config", &state.config)
            .field("device", &state.device.as_ref().map(|d| d.info().name.clone()))
            .field("started", &state.executor.is_some())
            .finish()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new(RuntimeConfig::default())
    }
}

/// A queue made by a [`Runtime`]: the engine's queue, with a token the runtime counts.
#[derive(Clone)]
pub struct RuntimeQueue {
    queue: Queue,
    /// The runtime's device's transfer queue (runtimes made `on_device`).
    transfers: Option<Arc<Transfers>>,
    _alive: Arc<()>,
}

impl fmt::Debug for RuntimeQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeQueue")
            .field("queue", &self.queue)
            .field("gpu", &self.transfers.is_some())
            .finish()
    }
}

impl RuntimeQueue {
    /// Enqueues a Vulkan signal entry: once everything enqueued before it has finished, the
    /// timeline semaphore `semaphore` is signalled to `value` on the GPU, after the transfers
    /// that wrote those requests' GPU destinations (DirectStorage's `EnqueueSignal`, with a
    /// timeline semaphore for its D3D12 fence). Wait for it on the GPU, as a render submission's
    /// wait, or with `vkWaitSemaphores`.
    ///
    /// Refused on a runtime without a device, and for a value the semaphore has reached. The
    /// signal itself cannot report failure (the device was lost, or the value was overtaken in
    /// the meantime): it is then skipped, and a device loss shows in the waiter's own wait.
    ///
    /// # Safety
    /// `semaphore` must be a timeline semaphore of the runtime's device, alive until the signal
    /// has happened, and each value signalled on it must exceed the ones before.
    pub unsafe fn enqueue_vulkan_signal(&self, semaphore: vk::Semaphore, value: u64) -> Result<()> {
        let transfers = self.transfers.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "this queue's runtime has no Vulkan device (make it with Runtime::on_device)",
            )
        })?;
        transfers.check_signal(semaphore, value)?;
        self.queue.enqueue_notify(Box::new(move || {
            let _ = transfers.signal_timeline(semaphore, value);
        }))
    }
}

impl std::ops::Deref for RuntimeQueue {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl Runtime {
    /// A runtime with `config`; nothing starts until the first file or queue.
    pub fn new(config: RuntimeConfig) -> Runtime {
        Runtime {
            state: Mutex::new(State {
                config,
                device: None,
                executor: None,
                transfers: None,
                queues: Arc::new(()),
                files: Arc::new(()),
                observer: None,
            }),
        }
    }

    /// A runtime whose requests may read and write GPU buffers of `device` (made by or
    /// imported into it), and whose queues signal its timeline semaphores.
    pub fn on_device(config: RuntimeConfig, device: &Arc<GpuContext>) -> Runtime {
        let runtime = Runtime::new(config);
        runtime.lock().device = Some(device.clone());
        runtime
    }

    /// Has the executor this runtime builds tell `observer` of every node it runs (a
    /// `dsr::viz::TraceRecorder`, say). Refused, as [`Runtime::set_config`] is, while a queue or
    /// a file of this runtime is alive; takes effect with the next one.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) -> Result<()> {
        let mut state = self.lock();
        Self::idle(&mut state)?;
        state.observer = Some(observer);
        Ok(())
    }

    /// The device it runs GPU requests on, if any.
    pub fn device(&self) -> Option<Arc<GpuContext>> {
        self.lock().device.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> RuntimeConfig {
        self.lock().config.clone()
    }

    /// Replaces the configuration: refused while a queue or a file of this runtime is alive.
    pub fn set_config(&self, config: RuntimeConfig) -> Result<()> {
        let mut state = self.lock();
        Self::idle(&mut state)?;
        state.config = config;
        Ok(())
    }

    /// Lets go of the executor, which the next queue or file builds anew, or refuses while a
    /// queue or a file of the runtime is alive (they run on it).
    fn idle(state: &mut State) -> Result<()> {
        let queues = Arc::strong_count(&state.queues) - 1;
        let files = Arc::strong_count(&state.files) - 1;
        if queues > 0 || files > 0 {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "the runtime's configuration cannot change while its queues or files are open ({queues} queue and {files} file handles)"
                ),
            ));
        }
        state.executor = None;
        state.transfers = None;
        Ok(())
    }

    /// Where this runtime can decode GDeflate.
    pub fn compression_support(&self) -> CompressionSupport {
        CompressionSupport::CPU_FALLBACK
    }

    fn executor(state: &mut State) -> Result<Arc<Executor>> {
        if let Some(executor) = &state.executor {
            return Ok(executor.clone());
        }
        let mut config = ExecutorConfig {
            scratch_budget: state.config.staging_bytes,
            observer: state.observer.clone(),
            ..ExecutorConfig::default()
        };
        if state.config.workers > 0 {
            config.workers = state.config.workers;
        }
        let executor = match &state.device {
            None => crate::executor_with_io(config, crate::io_from_env())?.0,
            Some(device) => {
                // GPU staging: the runtime's staging size, as DirectStorage's staging buffer.
                let staging = StagingConfig {
                    budget: state.config.staging_bytes.max(StagingConfig::default().slot),
                    ..StagingConfig::default()
                };
                let (executor, _, transfers) = crate::executor_with_gpu(config, crate::io_from_env(), device, staging)?;
                state.transfers = Some(transfers);
                executor
            }
        };
        let executor = Arc::new(executor);
        state.executor = Some(executor.clone());
        Ok(executor)
    }

    /// Opens `path` for reading.
    pub fn open_file(&self, path: impl AsRef<Path>) -> Result<RuntimeFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::from_io(e, "cannot open the file").with_path(path))?;
        let mut state = self.lock();
        Self::executor(&mut state)?;
        Ok(RuntimeFile {
            file: Arc::new(file),
            path: Arc::from(path),
            size: Arc::new(OnceLock::new()),
            _alive: state.files.clone(),
        })
    }

    /// Makes a queue (see [`Queue`]); the runtime's file-buffering and debug settings replace
    /// the config's.
    pub fn create_queue(&self, mut config: QueueConfig) -> Result<RuntimeQueue> {
        let mut state = self.lock();
        let executor = Self::executor(&mut state)?;
        if state.config.force_file_buffering {
            config.io = Some(IoPolicy::Buffered);
        }
        config.debug = state.config.debug;
        let queue = Queue::new(executor, config)?;
        Ok(RuntimeQueue {
            queue,
            transfers: state.transfers.clone(),
            _alive: state.queues.clone(),
        })
    }
}
