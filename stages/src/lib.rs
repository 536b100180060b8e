//! # dsr-stages: the stages of dsr's job graph
//!
//! One stage = one file implementing `dsr_engine::Stage` for one node kind:
//! - [`io`]: file bytes into memory, through io_uring (a shared ring with registered staging
//!   buffers and files, batched submission, short reads resubmitted, cancellation in the kernel,
//!   direct I/O where it works, a fixed staging budget with back-pressure), or through positioned
//!   reads, the fallback where io_uring is missing (`io::pread`); and memory into files (writes,
//!   on the ring or with positioned writes, with an optional `fdatasync`);
//! - [`copy`]: memory sources into their destination.
//! - [`decompress_cpu`]: GDeflate on the CPU, one node per group of tiles, each writing straight
//!   into its slice of the destination and verifying tile hashes when the request has them.
//!
//! [`install_cpu_stages`] hands all of them to an executor builder:
//!
//! ```
//! use std::sync::Arc;
//! use dsr_engine::{Executor, HostBuffer, Request, RequestStatus};
//!
//! let executor = dsr_stages::install_cpu_stages(Executor::builder().workers(1)).build()?;
//! let dest = HostBuffer::new(5);
//! let mut batch = executor.batch();
//! batch.push(Request::memory(Arc::from(&b"hello"[..]), 0, 5, &dest, 0))?;
//! let report = executor.submit(batch)?.wait();
//! assert_eq!(report.requests[0].status, RequestStatus::Done);
//! drop(report);
//! let mut dest = dest;
//! assert_eq!(dest.as_slice(), Some(&b"hello"[..]));
//! # Ok::<(), dsr_engine::Error>(())
//! ```

pub mod copy;
pub mod decompress_cpu;
pub mod io;
pub mod verify;

use std::sync::Arc;

use dsr_engine::{ExecutorBuilder, NodeKind};

pub use copy::CopyStage;
pub use decompress_cpu::{tile_hash, DecompressCpuStage};
pub use io::{PreadStage, PwriteStage, SyncStage};
pub use verify::VerifyStage;

/// Adds every CPU stage to `builder`, with positioned reads and writes.
pub fn install_cpu_stages(builder: ExecutorBuilder) -> ExecutorBuilder {
    builder
        .stage(NodeKind::Read, Arc::new(PreadStage::default()))
        .stage(NodeKind::Write, Arc::new(PwriteStage::default()))
        .stage(NodeKind::Sync, Arc::new(SyncStage))
        .stage(NodeKind::Copy, Arc::new(CopyStage))
        .stage(NodeKind::DecompressCpu, Arc::new(DecompressCpuStage))
        .stage(NodeKind::Verify, Arc::new(VerifyStage))
}

/// Adds every CPU stage to `builder`, with the read backend `io` chooses (io_uring when it is
/// available), and says which it chose.
pub fn install_stages(builder: ExecutorBuilder, io: io::IoConfig) -> std::io::Result<(ExecutorBuilder, io::IoInfo)> {
    let builder = install_cpu_stages(builder);
    io::install_io(builder, io)
}
