//! The ring's knobs ([`RingConfig`]) and what it could set up on this kernel
//! ([`RingFeatures`]).

use std::sync::Arc;

use super::faults::FaultPlan;
use super::staging::STAGING_ALIGN;

/// Knobs of the ring.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Submission queue entries; also the most reads in flight at once.
    pub queue_depth: u32,
    /// Submit as soon as this many SQEs are queued (otherwise when a worker polls).
    pub submit_batch: usize,
    /// Staging budget in bytes (direct reads into unaligned destinations).
    pub staging_budget: usize,
    /// Bytes per staging slot: at least the largest read plus alignment slack.
    pub staging_slot: usize,
    /// Whether `IoPolicy::Auto` reads files on rotational disks through the page cache, cold
    /// or not (`residency::on_rotational_disk`); otherwise only ranges mostly cached.
    pub rotational_buffered: bool,
    /// Whether buffered reads read what the page cache lacks on threads of their own with
    /// blocking `pread`s (`blocking::BlockingReads`); otherwise on the ring, through io_uring's
    /// workers, which stalled for seconds cold on the GPU machine's VM.
    pub blocking_threads: bool,
    /// Injected faults, for tests.
    pub faults: Option<Arc<FaultPlan>>,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            queue_depth: 128,
            submit_batch: 32,
            staging_budget: 64 << 20,
            staging_slot: (1 << 20) + 2 * STAGING_ALIGN,
            rotational_buffered: true,
            blocking_threads: true,
            faults: None,
        }
    }
}

/// What the ring could set up.
#[derive(Clone, Debug, Default)]
pub struct RingFeatures {
    /// Staging slots are registered as fixed buffers (known once the pool is first used).
    pub fixed_buffers: bool,
    /// A sparse registered-file table exists.
    pub registered_files: bool,
    /// The kernel supports IORING_OP_ASYNC_CANCEL.
    pub async_cancel: bool,
    /// Submission-queue polling (not used: it spends a core spinning).
    pub sqpoll: bool,
}
