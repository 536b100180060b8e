//! The runtime: DirectStorage's factory. It holds the configuration (staging size, workers,
//! GPU decompression, file buffering, debug flags), opens files and makes queues, and builds the
//! executor they share when the first of them is made. The configuration can change only while
//! no queue and no file of the runtime is alive, since the executor they run on was built with
//! it.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use dsr_engine::queue::{CompressionSupport, DebugFlags, Queue, QueueConfig};
use dsr_engine::{Error, ErrorKind, Executor, ExecutorConfig, FileSource, HostBuffer, IoPolicy, Request, Result};
use dsr_stages::io::{Backend, IoConfig};

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

/// The read backend: `DSR_IO_BACKEND=pread` (or `io_uring`) overrides the automatic choice,
/// for tools that cannot follow io_uring (valgrind does not see the kernel write memory through
/// it, and reports the bytes as uninitialised).
fn io_from_env() -> IoConfig {
    let backend = match std::env::var("DSR_IO_BACKEND").as_deref() {
        Ok("pread") => Backend::Pread,
        Ok("io_uring") => Backend::IoUring,
        _ => Backend::Auto,
    };
    IoConfig {
        backend,
        ..IoConfig::default()
    }
}

/// A file opened through the runtime: shared by the requests that read it. Dropping (or
/// closing) the handle does not wait for them; the descriptor closes when the last request that
/// reads it is done.
#[derive(Clone, Debug)]
pub struct RuntimeFile {
    file: Arc<File>,
    path: Arc<Path>,
    size: u64,
    /// Counted by the runtime while any handle lives (requests hold the file, not this).
    _alive: Arc<()>,
}

impl RuntimeFile {
    /// Its size in bytes, as of opening.
    pub fn size(&self) -> u64 {
        self.size
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
    executor: Option<Arc<Executor>>,
    queues: Vec<Weak<()>>,
    files: Vec<Weak<()>>,
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
#[derive(Clone, Debug)]
pub struct RuntimeQueue {
    queue: Queue,
    _alive: Arc<()>,
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
                executor: None,
                queues: Vec::new(),
                files: Vec::new(),
            }),
        }
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
        state.queues.retain(|q| q.strong_count() > 0);
        state.files.retain(|f| f.strong_count() > 0);
        if !state.queues.is_empty() || !state.files.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "the runtime's configuration cannot change while {} queues and {} files are open",
                    state.queues.len(),
                    state.files.len()
                ),
            ));
        }
        state.config = config;
        state.executor = None;
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
            ..ExecutorConfig::default()
        };
        if state.config.workers > 0 {
            config.workers = state.config.workers;
        }
        let (executor, _) = crate::executor_with_io(config, io_from_env())?;
        let executor = Arc::new(executor);
        state.executor = Some(executor.clone());
        Ok(executor)
    }

    /// Opens `path` for reading.
    pub fn open_file(&self, path: impl AsRef<Path>) -> Result<RuntimeFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::from_io(e, "cannot open the file").with_path(path))?;
        let size = file
            .metadata()
            .map_err(|e| Error::from_io(e, "cannot stat the file").with_path(path))?
            .len();
        let mut state = self.lock();
        Self::executor(&mut state)?;
        let alive = Arc::new(());
        state.files.push(Arc::downgrade(&alive));
        Ok(RuntimeFile {
            file: Arc::new(file),
            path: Arc::from(path),
            size,
            _alive: alive,
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
        let alive = Arc::new(());
        state.queues.push(Arc::downgrade(&alive));
        Ok(RuntimeQueue { queue, _alive: alive })
    }
}
