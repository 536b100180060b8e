//! # dsr-stages: the stages of dsr's job graph
//!
//! One stage = one file implementing `dsr_engine::Stage` for one node kind:
//! - [`read`]: file bytes into memory with positioned reads (short reads and `EINTR` handled).
//!   io_uring takes over in its own issue behind the same `Stage` boundary; this stays as the
//!   fallback where io_uring is missing.
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
pub mod read;

use std::sync::Arc;

use dsr_engine::{ExecutorBuilder, NodeKind};

pub use copy::CopyStage;
pub use decompress_cpu::{tile_hash, DecompressCpuStage};
pub use read::PreadStage;

/// Adds every CPU stage to `builder`.
pub fn install_cpu_stages(builder: ExecutorBuilder) -> ExecutorBuilder {
    builder
        .stage(NodeKind::Read, Arc::new(PreadStage))
        .stage(NodeKind::Copy, Arc::new(CopyStage))
        .stage(NodeKind::DecompressCpu, Arc::new(DecompressCpuStage))
}
