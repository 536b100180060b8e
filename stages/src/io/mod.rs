//! File reads and writes: io_uring when the kernel allows it, positioned reads and writes
//! otherwise. The stages live here, with what they drive:
//!
//! - [`uring_read`]: the read stage on the ring, with [`blocking`], the threads that read what the
//!   page cache lacks; [`pread`]: the read stage on positioned reads;
//! - [`uring_write`]: the write stage on the ring; [`write`]: the positioned write stage, and the
//!   sync stage both backends use;
//! - [`ring`]: the io_uring driver and reactor (submission, reaping, short reads, cancellation,
//!   teardown), with its rooms beside it: `op.rs` (the record of one read and where the kernel
//!   writes), `files.rs` (the registered-file table), [`config`] (its knobs and what the kernel
//!   allowed), [`staging`] (its fixed-buffer budget);
//! - [`open`]: buffered and direct opens, and the direct-I/O probe;
//! - [`residency`]: how much of a range is in the page cache (`cachestat`, or `mincore`), which
//!   `IoPolicy::Auto` asks before it reads with direct I/O;
//! - [`faults`]: the fault plan tests inject through either stage, and how it rewrites the ring's
//!   completions.
//!
//! [`install_io`] probes at start-up, installs the read stage of the backend in use (and the
//! ring as a reactor), and says which it chose and why in an [`IoInfo`].

pub mod blocking;
pub mod config;
pub mod faults;
mod files;
mod op;
pub mod open;
pub mod pread;
pub mod residency;
pub mod ring;
pub mod staging;
pub mod uring_read;
pub mod uring_write;
pub mod write;

use std::sync::Arc;

use dsr_engine::{ExecutorBuilder, NodeKind};

pub use config::{RingConfig, RingFeatures};
pub use faults::{Fault, FaultPlan};
pub use pread::PreadStage;
pub use ring::{Ring, RingStats};
pub use write::{PwriteStage, SyncStage};

/// Which read backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// io_uring if it can be set up, positioned reads otherwise.
    #[default]
    Auto,
    /// io_uring, or fail.
    IoUring,
    /// Positioned reads (`pread`), always.
    Pread,
}

/// How reads are done.
#[derive(Clone, Debug, Default)]
pub struct IoConfig {
    /// The backend.
    pub backend: Backend,
    /// The ring's knobs (ignored by the positioned-read backend, except `faults`).
    pub ring: RingConfig,
}

/// What [`install_io`] chose.
#[derive(Clone, Debug)]
pub struct IoInfo {
    /// The backend in use.
    pub backend: Backend,
    /// Why, when it is not what was asked for.
    pub reason: Option<String>,
    /// The ring, when io_uring is in use.
    pub ring: Option<Arc<Ring>>,
}

/// Installs the read stage of the chosen backend (the ring as a reactor too) on `builder`,
/// having grown the process's descriptor table for the files its loads will open
/// ([`open::reserve_descriptors`]).
pub fn install_io(builder: ExecutorBuilder, config: IoConfig) -> std::io::Result<(ExecutorBuilder, IoInfo)> {
    open::reserve_descriptors();
    let pread = |builder: ExecutorBuilder, reason: Option<String>| {
        let stage = PreadStage::with_faults(config.ring.faults.clone());
        let write = PwriteStage::with_faults(config.ring.faults.clone());
        (
            builder
                .stage(NodeKind::Read, Arc::new(stage))
                .stage(NodeKind::Write, Arc::new(write))
                .stage(NodeKind::Sync, Arc::new(SyncStage)),
            IoInfo {
                backend: Backend::Pread,
                reason,
                ring: None,
            },
        )
    };
    if config.backend == Backend::Pread {
        return Ok(pread(builder, None));
    }
    match Ring::new(config.ring.clone()) {
        Ok(ring) => {
            let builder = builder
                .stage(NodeKind::Read, Arc::new(uring_read::UringReadStage::new(ring.clone())))
                .stage(
                    NodeKind::Write,
                    Arc::new(uring_write::UringWriteStage::new(
                        ring.clone(),
                        PwriteStage::with_faults(config.ring.faults.clone()),
                    )),
                )
                .stage(NodeKind::Sync, Arc::new(SyncStage))
                .reactor(ring.clone());
            Ok((
                builder,
                IoInfo {
                    backend: Backend::IoUring,
                    reason: None,
                    ring: Some(ring),
                },
            ))
        }
        Err(err) if config.backend == Backend::Auto => Ok(pread(
            builder,
            Some(format!("io_uring is not available ({err}); using positioned reads")),
        )),
        Err(err) => Err(err),
    }
}
