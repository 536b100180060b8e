//! # dsr: DirectStorage-class asset streaming for Linux
//!
//! Requests to read file ranges or memory blocks (optionally GDeflate-compressed) into host
//! memory are lowered into a DAG of typed stage nodes and run by a work-stealing executor. This
//! crate is the facade engines embed: it re-exports the engine's API, builds executors with the
//! stock stages, and reads and writes the archive format. It pulls in no command-line crates:
//! the `dsr` command and its benchmark harnesses live in `dsr-cli` (`cli/`).
//!
//! ```no_run
//! use std::time::Duration;
//! let executor = dsr::executor(dsr::ExecutorConfig::default())?;
//! let len = dsr::file_len("assets/level1.pak")?;
//! let dest = dsr::HostBuffer::new(len as usize);
//! let mut batch = executor.batch();
//! batch.push(dsr::Request::file("assets/level1.pak", 0, len, &dest, 0).name("level1"))?;
//! let report = executor.submit(batch)?.wait();
//! assert!(report.all_done());
//! # Ok::<(), dsr::Error>(())
//! ```
//!
//! Crates: [`engine`] (requests, graph, executor, the DirectStorage-shaped [`Queue`]),
//! [`stages`] (read, copy, decompress), [`gpu`] (Vulkan: GPU buffers, uploads), [`viz`] (DOT
//! pictures of batch graphs). [`Runtime`] is DirectStorage's factory: files and queues over one
//! executor.

pub mod archive;
pub mod runtime;

use std::path::Path;

pub use dsr_engine as engine;
pub use dsr_gpu as gpu;
pub use dsr_graph_viz as viz;
pub use dsr_stages as stages;

pub use dsr_stages::io::{Backend, IoConfig, IoInfo};

pub use dsr_engine::queue::{
    CommandKind, CompressionSupport, DebugFlags, ErrorRecord, FailureRecord, Fence, Queue, QueueConfig, QueueInfo,
    SourceType, StatusArray, StatusEntry,
};
pub use runtime::{Runtime, RuntimeConfig, RuntimeFile, RuntimeQueue};

pub use dsr_engine::{
    Batch, BatchBuilder, BatchReport, CancelTicket, CompiledBatch, Compression, DecodeRoute, DeviceBuffer, Error,
    ErrorKind, Executor, ExecutorBuilder, ExecutorConfig, FileSource, GpuSpan, HostBuffer, IoPolicy, LoweringConfig,
    MetricsSnapshot, NodeKind, Pages, Place, Priority, Request, RequestId, RequestRecord, RequestReport, RequestStatus,
    Result, SourceBytes,
};

/// The I/O configuration, with the read backend from `DSR_IO_BACKEND` (`pread` or `io_uring`;
/// anything else, or unset, chooses automatically): for tools that cannot follow io_uring
/// (valgrind does not see the kernel write memory through it, and reports the bytes as
/// uninitialised), and for comparing the backends in benchmarks.
pub fn io_from_env() -> IoConfig {
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

/// An executor with the stock stages, reading through io_uring where the kernel allows it.
pub fn executor(config: ExecutorConfig) -> Result<Executor> {
    executor_with_io(config, IoConfig::default()).map(|(executor, _)| executor)
}

/// An executor with the stock stages and the read backend `io` asks for; says which it chose.
pub fn executor_with_io(config: ExecutorConfig, io: IoConfig) -> Result<(Executor, IoInfo)> {
    let (builder, info) = dsr_stages::install_stages(Executor::builder().config(config), io)
        .map_err(|err| Error::from_io(err, "cannot set up io_uring"))?;
    Ok((builder.build()?, info))
}

/// An executor with the stock stages (reads as `io` asks) and the GPU stages on `gpu`, whose
/// staging budget `staging` shapes; says which read backend it chose, and hands back the
/// GPU transfer queue (its statistics, and the timeline a renderer can wait on).
pub fn executor_with_gpu(
    config: ExecutorConfig,
    io: IoConfig,
    gpu: &std::sync::Arc<dsr_gpu::GpuContext>,
    staging: dsr_gpu::StagingConfig,
) -> Result<(Executor, IoInfo, std::sync::Arc<dsr_gpu::Transfers>)> {
    let (builder, info) = dsr_stages::install_stages(Executor::builder().config(config), io)
        .map_err(|err| Error::from_io(err, "cannot set up io_uring"))?;
    let (builder, transfers) = dsr_gpu::install_gpu(builder, gpu, staging)?;
    Ok((builder.build()?, info, transfers))
}

/// A builder with the stock CPU stages and positioned reads, for callers that replace stages or
/// add reactors and observers of their own.
pub fn executor_builder(config: ExecutorConfig) -> ExecutorBuilder {
    dsr_stages::install_cpu_stages(Executor::builder().config(config))
}

/// The length of the file at `path`; errors name the path.
pub fn file_len(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|err| Error::from_io(err, "cannot stat the file").with_path(path))
}
