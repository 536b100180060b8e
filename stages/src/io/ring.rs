//! The io_uring driver: one ring shared by the workers, and the engine's reactor for it.
//!
//! Workers running read nodes hand an `Op` (`op.rs`) here and return at once; submission is
//! batched (one `io_uring_enter` carries every SQE queued since the last one, submitted when a
//! batch fills or when a worker runs out of ready nodes and polls). Completions are reaped by
//! idle workers through [`Reactor::poll`]; one idle worker at a time blocks in `io_uring_enter`
//! until completions arrive ([`Reactor::wait`]). Reads that find no staging slot or no queue
//! room wait in the engine's [`WaitQueue`], in order.
//!
//! Ownership of memory the kernel writes: an operation owns its target (the destination range,
//! kept alive and exclusive by the engine until the node completes, or a staging slot) from
//! submission until its completion is reaped, whatever the completion says: success, error or
//! cancellation. Slots go back to the pool only then. Teardown keeps that promise explicitly:
//! [`Reactor::drain`] (the executor's shutdown) cancels every read in flight and reaps every
//! completion before it returns, and a ring is only dropped with no read left.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dsr_engine::{Completer, Error, ErrorKind, EventFd, NodeEnd, NodeKind, PendingNode, Reactor, WaitQueue, Waiter};
use io_uring::{opcode, squeue, types, IoUring};

use super::blocking::BlockingReads;
use super::config::{RingConfig, RingFeatures};
use super::faults::Rewritten;
use super::files::FileTable;
use super::op::{Op, Target};
use super::staging::{StagingPool, STAGING_ALIGN};

/// User data of cancel requests (their own completions are ignored).
const CANCEL_TAG: u64 = 1 << 63;
/// Registered-file table size.
const FILE_SLOTS: u32 = 256;
/// Buffered reads at least this large are queued to io_uring's workers (`IOSQE_ASYNC`).
const ASYNC_BUFFERED: usize = 256 << 10;

/// Counters of what the ring did, for `dsr info`, benchmarks and tests.
#[derive(Debug, Default)]
pub struct RingStats {
    /// `io_uring_enter` calls that submitted.
    pub submits: AtomicU64,
    /// Read SQEs submitted (first tries and resubmissions).
    pub sqes: AtomicU64,
    /// Short reads resubmitted for the rest.
    pub short_reads: AtomicU64,
    /// Write operations started.
    pub writes: AtomicU64,
    /// Of those, direct writes (`O_DIRECT`), from the node's bytes or a staging slot.
    pub direct_writes: AtomicU64,
    /// Of those, writes copied through a staging slot first (bytes not aligned in memory as the
    /// disk asks).
    pub staged_writes: AtomicU64,
    /// Short writes resubmitted for the rest.
    pub short_writes: AtomicU64,
    /// Reads retried after EINTR or EAGAIN.
    pub retries: AtomicU64,
    /// ASYNC_CANCEL requests sent for tombstoned reads.
    pub cancels_sent: AtomicU64,
    /// Reads that completed as cancelled.
    pub cancelled: AtomicU64,
    /// Reads that went through a staging slot.
    pub staged: AtomicU64,
    /// Reads that landed straight in the destination with direct I/O.
    pub direct_landed: AtomicU64,
    /// Buffered reads.
    pub buffered: AtomicU64,
    /// Of those, reads `IoPolicy::Auto` sent through the page cache because most of their range
    /// was already there.
    pub auto_cached: AtomicU64,
    /// Of those, reads `IoPolicy::Auto` sent through the page cache because their file is on a
    /// rotational disk (and their range was not mostly cached).
    pub auto_rotational: AtomicU64,
    /// Files opened (again) for direct I/O by reads: one per file that read directly, none
    /// for a file whose reads `Auto` sent through the cache.
    pub direct_opens: AtomicU64,
    /// Operations that waited for a staging slot or queue room (back-pressure).
    pub waited: AtomicU64,
    /// Buffered reads that found all their pages cached and were copied on the worker, without
    /// an SQE (counted in `buffered` too).
    pub resident_copies: AtomicU64,
    /// Buffered reads whose range (or its uncached rest) the blocking-read threads read
    /// (counted in `buffered` too).
    pub thread_reads: AtomicU64,
    /// Bytes copied from the page cache on the workers (whole reads, and the cached starts of
    /// reads whose rest went to the ring).
    pub resident_bytes: AtomicU64,
}

/// A read the kernel has: its node and its record.
struct InFlight {
    node: PendingNode,
    op: Op,
}

struct Inner {
    ring: IoUring,
    /// Reads in flight, by the id their SQEs carry as user data.
    ops: Vec<Option<InFlight>>,
    free_ids: Vec<u32>,
    /// Back-pressure: reads waiting for a staging slot or queue room, in arrival order.
    waiting: WaitQueue<Op>,
    /// Completions held back by injected delays: (due, op id, result).
    delayed: Vec<(Instant, u32, i32)>,
    unsubmitted: usize,
    submitted: usize,
    files: FileTable,
    /// Completions reaped by the current poll (kept to reuse its allocation).
    reaped: Vec<(u64, i32)>,
    /// Whether the staging slots are registered fixed buffers; `None` until the pool's first
    /// use makes its memory.
    fixed_buffers: Option<bool>,
}

/// Nodes whose reads ended under the lock, completed once it is released.
type Ended = Vec<(PendingNode, NodeEnd)>;

/// The io_uring driver. Field order is drop order: the ring (which holds registrations of the
/// staging memory) before the pool.
pub struct Ring {
    inner: Mutex<Inner>,
    staging: StagingPool,
    /// Signalled by the kernel for every completion posted, for a worker waiting on this ring
    /// and other sources at once (`Reactor::arm`); `None` where it could not be registered.
    ready: Option<EventFd>,
    /// Reads accepted and not yet completed (waiting or submitted).
    in_flight: AtomicUsize,
    config: RingConfig,
    stats: RingStats,
    features: RingFeatures,
    /// The threads that read what buffered reads find missing from the page cache (with
    /// [`RingConfig::blocking_threads`]); here so that a cancellation's sweep reaches them.
    threads: BlockingReads,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .field("staging", &self.staging)
            .field("features", &self.features)
            .finish()
    }
}

impl Ring {
    /// Sets up a ring, its staging pool (registered as fixed buffers) and a sparse
    /// registered-file table. Fails if io_uring itself is unavailable.
    pub fn new(config: RingConfig) -> std::io::Result<Arc<Ring>> {
        let ring = IoUring::builder().build(config.queue_depth.max(8))?;
        let staging = StagingPool::new(config.staging_budget, config.staging_slot);
        let mut probe = io_uring::Probe::new();
        let features = RingFeatures {
            // Known once the staging pool is first used (`register_staging`).
            fixed_buffers: false,
            registered_files: ring.submitter().register_files_sparse(FILE_SLOTS).is_ok(),
            async_cancel: ring.submitter().register_probe(&mut probe).is_ok()
                && probe.is_supported(opcode::AsyncCancel::CODE),
            sqpoll: false,
        };
        let ready = EventFd::new()
            .ok()
            .filter(|fd| ring.submitter().register_eventfd(fd.raw()).is_ok());
        Ok(Arc::new(Ring {
            ready,
            inner: Mutex::new(Inner {
                ring,
                ops: Vec::new(),
                free_ids: Vec::new(),
                waiting: WaitQueue::new(),
                delayed: Vec::new(),
                unsubmitted: 0,
                submitted: 0,
                reaped: Vec::with_capacity(config.queue_depth as usize),
                files: FileTable::new(features.registered_files, FILE_SLOTS),
                fixed_buffers: None,
            }),
            staging,
            in_flight: AtomicUsize::new(0),
            config,
            stats: RingStats::default(),
            features,
            threads: BlockingReads::for_this_machine(),
        }))
    }

    /// What the ring set up. Whether the staging slots are fixed buffers is known once the pool
    /// has been used ([`Ring::prepare_staging`] makes it so now).
    pub fn features(&self) -> RingFeatures {
        RingFeatures {
            fixed_buffers: self.lock().fixed_buffers == Some(true),
            ..self.features.clone()
        }
    }

    /// Makes the staging pool's memory and registers it with the kernel now, rather than when
    /// the first read that needs a slot comes.
    pub fn prepare_staging(&self) {
        let mut inner = self.lock();
        self.register_staging(&mut inner);
    }

    /// Registers the staging slots as fixed buffers on first call (making the pool's memory);
    /// whether the kernel took them.
    fn register_staging(&self, inner: &mut Inner) -> bool {
        *inner.fixed_buffers.get_or_insert_with(|| {
            // SAFETY: the iovecs describe the pool's memory, which outlives the ring (field order
            // in `Ring`), and nothing else writes a slot while an operation holds it.
            unsafe { inner.ring.submitter().register_buffers(&self.staging.iovecs()) }.is_ok()
        })
    }

    /// What it did so far.
    pub fn stats(&self) -> &RingStats {
        &self.stats
    }

    /// The staging pool.
    pub fn staging(&self) -> &StagingPool {
        &self.staging
    }

    /// Reads not yet completed (submitted or waiting).
    pub fn in_flight_ops(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Largest read a staging slot takes (with its alignment slack).
    pub(crate) fn staging_capacity(&self) -> usize {
        self.staging.slot_size()
    }

    /// Whether `Auto` reads files on rotational disks through the page cache
    /// ([`RingConfig::rotational_buffered`]).
    pub(crate) fn rotational_buffered(&self) -> bool {
        self.config.rotational_buffered
    }

    /// The blocking-read threads, where buffered reads read what the cache lacks
    /// ([`RingConfig::blocking_threads`]); `None` with them off.
    pub(crate) fn blocking_threads(&self) -> Option<&BlockingReads> {
        self.config.blocking_threads.then_some(&self.threads)
    }

    /// Whether the fault plan (tests) rewrites reads of `path`: those must reach the ring.
    pub(crate) fn injects_fault(&self, path: Option<&std::path::Path>) -> bool {
        self.config
            .faults
            .as_ref()
            .is_some_and(|plan| plan.fault_for(path).is_some())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts `node`'s read: starts it now if a slot and queue room are free, else queues it.
    pub(crate) fn start(&self, node: PendingNode, op: Op) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut inner = self.lock();
        let mut refused = None;
        let waiter = Waiter { node, item: op };
        let blocked = if inner.waiting.is_empty() {
            self.try_begin(&mut inner, waiter)
        } else {
            Some(waiter)
        };
        if let Some(waiter) = blocked {
            self.stats.waited.fetch_add(1, Ordering::Relaxed);
            refused = inner.waiting.push(waiter.node, waiter.item).err();
        }
        if inner.unsubmitted >= self.config.submit_batch {
            self.submit(&mut inner);
        }
        drop(inner);
        if let Some(waiter) = refused {
            // Cancelled as it was about to wait: it never reached the kernel.
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            waiter.node.cancel();
        }
    }

    /// Takes what the read needs (queue room, a staging slot) and queues its SQE; hands the
    /// read back if something is missing.
    fn try_begin(&self, inner: &mut Inner, mut waiter: Waiter<Op>) -> Option<Waiter<Op>> {
        if inner.submitted >= self.config.queue_depth as usize {
            return Some(waiter);
        }
        let op = &mut waiter.item;
        if let Target::Staged {
            slot: slot @ None,
            dst,
            dst_len,
            ..
        } = &mut op.target
        {
            let Some(taken) = self.staging.try_acquire() else {
                return Some(waiter);
            };
            *slot = Some(taken);
            self.register_staging(inner);
            if op.write {
                // SAFETY: (1) the slot is this op's alone from now until its completion is reaped,
                // and holds at least `dst_len` bytes (the stage checked it fits); (2) `dst` is the
                // node's source bytes, valid and unchanged until the node completes.
                unsafe { std::ptr::copy_nonoverlapping(*dst, self.staging.slot_ptr(taken), *dst_len) };
            }
        }
        if op.file_slot.is_none() {
            op.file_slot = inner.files.register(&inner.ring, op.fd);
        }
        let id = match inner.free_ids.pop() {
            Some(id) => id,
            None => {
                inner.ops.push(None);
                inner.ops.len() as u32 - 1
            }
        };
        inner.ops[id as usize] = Some(InFlight {
            node: waiter.node,
            op: waiter.item,
        });
        inner.submitted += 1;
        self.push_op(inner, id);
        None
    }

    /// Queues the SQE for the rest of op `id`.
    fn push_op(&self, inner: &mut Inner, id: u32) {
        let op = &inner.ops[id as usize].as_ref().expect("a live op").op;
        let start = op.buf(&self.staging).expect("a read in flight has its target");
        // SAFETY: `done < len` for an op with bytes left, so the pointer stays inside its target.
        let buf = unsafe { start.add(op.done) };
        let len = (op.len - op.done) as u32;
        let offset = op.offset + op.done as u64;
        let fixed_slot = op.slot().filter(|_| inner.fixed_buffers == Some(true));
        let entry = if op.write {
            match (op.file_slot, fixed_slot) {
                (Some(file), Some(slot)) => opcode::WriteFixed::new(types::Fixed(file), buf, len, slot)
                    .offset(offset)
                    .build(),
                (Some(file), None) => opcode::Write::new(types::Fixed(file), buf, len).offset(offset).build(),
                (None, Some(slot)) => opcode::WriteFixed::new(types::Fd(op.fd), buf, len, slot)
                    .offset(offset)
                    .build(),
                (None, None) => opcode::Write::new(types::Fd(op.fd), buf, len).offset(offset).build(),
            }
        } else {
            match (op.file_slot, fixed_slot) {
                (Some(file), Some(slot)) => opcode::ReadFixed::new(types::Fixed(file), buf, len, slot)
                    .offset(offset)
                    .build(),
                (Some(file), None) => opcode::Read::new(types::Fixed(file), buf, len).offset(offset).build(),
                (None, Some(slot)) => opcode::ReadFixed::new(types::Fd(op.fd), buf, len, slot)
                    .offset(offset)
                    .build(),
                (None, None) => opcode::Read::new(types::Fd(op.fd), buf, len).offset(offset).build(),
            }
        };
        // A buffered read of cached pages is a copy the kernel does inside io_uring_enter, on the
        // one thread that submits the batch; large ones go to io_uring's workers instead, so
        // several copies run at once.
        let entry = if !op.direct && len as usize >= ASYNC_BUFFERED {
            entry.flags(squeue::Flags::ASYNC)
        } else {
            entry
        };
        self.push(inner, entry.user_data(id as u64));
        self.stats.sqes.fetch_add(1, Ordering::Relaxed);
    }

    fn push(&self, inner: &mut Inner, entry: squeue::Entry) {
        loop {
            // SAFETY: the SQE's buffer is owned by its op until the matching CQE is reaped (see
            // the module docs); a cancel SQE carries no buffer.
            if unsafe { inner.ring.submission().push(&entry) }.is_ok() {
                inner.unsubmitted += 1;
                return;
            }
            // Queue full: hand what is queued to the kernel and try again.
            self.submit(inner);
        }
    }

    fn submit(&self, inner: &mut Inner) {
        if inner.unsubmitted == 0 {
            return;
        }
        loop {
            match inner.ring.submit() {
                // Interrupted: try again. A full completion queue (EBUSY, EAGAIN) is reaped by
                // the next poll, which submits again.
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
                _ => break,
            }
        }
        inner.unsubmitted = 0;
        self.stats.submits.fetch_add(1, Ordering::Relaxed);
    }

    /// Handles one read completion with result `res`: resubmits the rest of a short read, or
    /// ends the read into `ended`.
    fn complete_op(&self, inner: &mut Inner, id: u32, res: i32, ended: &mut Ended) {
        let Some(InFlight { op, .. }) = inner.ops[id as usize].as_mut() else {
            return;
        };
        let stage = if op.write { NodeKind::Write } else { NodeKind::Read };
        let located = |error: Error, at: u64| {
            let error = error.at_stage(stage).at_offset(at);
            match &op.path {
                Some(path) => error.with_path(path),
                None => error,
            }
        };
        let end = if res == -libc::EINTR || res == -libc::EAGAIN {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.push_op(inner, id);
            return;
        } else if res == -libc::ECANCELED {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            NodeEnd::Cancelled
        } else if res < 0 {
            let action = if op.write { "write failed" } else { "read failed" };
            let error = Error::from_io(std::io::Error::from_raw_os_error(-res), action);
            NodeEnd::Failed(located(error, op.offset + op.done as u64))
        } else if res == 0 && op.done < op.needed && op.write {
            let at = op.offset + op.done as u64;
            let error = Error::new(
                ErrorKind::Io,
                format!("the write stopped at byte {at}: the kernel took no more bytes (is the file system full?)"),
            );
            NodeEnd::Failed(located(error, at))
        } else if res == 0 && op.done < op.needed {
            let at = op.offset + op.done as u64;
            let error = Error::new(
                ErrorKind::UnexpectedEof,
                format!("the range runs past the end of the file, which ends at byte {at}; read a shorter range"),
            );
            NodeEnd::Failed(located(error, at))
        } else {
            op.done += res as usize;
            if op.done < op.needed {
                let counter = if op.write {
                    &self.stats.short_writes
                } else {
                    &self.stats.short_reads
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let next = op.offset + op.done as u64;
                if op.direct && (!next.is_multiple_of(STAGING_ALIGN as u64) || op.done % STAGING_ALIGN != 0) {
                    // Direct I/O cannot resume at an unaligned place: finish buffered.
                    if let Some(fd) = op.fallback_fd {
                        op.fd = fd;
                        op.direct = false;
                        if let Some(slot) = op.file_slot.take() {
                            inner.files.release(&inner.ring, slot);
                        }
                    }
                }
                self.push_op(inner, id);
                return;
            }
            let bytes = match op.target {
                // A staged write's bytes went from the slot; nothing comes back.
                Target::Staged { dst_len, .. } if op.write => dst_len as u64,
                Target::Staged {
                    slot: Some(slot),
                    skip,
                    dst,
                    dst_len,
                } => {
                    // SAFETY: (1) the slot holds `done >= skip + dst_len` bytes the kernel wrote
                    // and has finished with (its CQE is this one); (2) `dst` is the node's
                    // destination range, exclusive to this op until the node completes; (3) a
                    // slot and a destination never overlap.
                    unsafe { std::ptr::copy_nonoverlapping(self.staging.slot_ptr(slot).add(skip), dst, dst_len) };
                    dst_len as u64
                }
                Target::Staged { slot: None, .. } => unreachable!("a read in flight has its slot"),
                Target::Destination { .. } => op.needed as u64,
            };
            NodeEnd::Done {
                bytes: op.before + bytes,
            }
        };
        let InFlight { node, op } = inner.ops[id as usize].take().expect("a live op");
        inner.free_ids.push(id);
        inner.submitted -= 1;
        if let Some(slot) = op.slot() {
            // The CQE is in: the kernel is done with the slot, whatever the result.
            self.staging.release(slot);
        }
        if let Some(slot) = op.file_slot {
            inner.files.release(&inner.ring, slot);
        }
        ended.push((node, end));
    }

    /// Starts waiting reads while there is room; waiting reads whose request was cancelled end
    /// on the way.
    fn start_waiting(&self, inner: &mut Inner, ended: &mut Ended) {
        let mut cancelled = Vec::new();
        let mut waiting = std::mem::take(&mut inner.waiting);
        waiting.admit(|waiter| self.try_begin(inner, waiter), &mut cancelled);
        inner.waiting = waiting;
        ended.extend(cancelled.into_iter().map(|w| (w.node, NodeEnd::Cancelled)));
    }

    /// Asks the kernel to cancel every read in flight whose request was tombstoned (with
    /// `all`, every read): their buffers stay owned until their own completions arrive.
    fn cancel_in_flight(&self, inner: &mut Inner, all: bool) {
        if !self.features.async_cancel {
            return;
        }
        let mut cancels = Vec::new();
        for (id, read) in inner.ops.iter_mut().enumerate() {
            if let Some(InFlight { node, op }) = read {
                if !op.cancel_sent && (all || node.is_tombstoned()) {
                    op.cancel_sent = true;
                    cancels.push(id as u64);
                }
            }
        }
        for id in cancels {
            self.push(inner, opcode::AsyncCancel::new(id).build().user_data(CANCEL_TAG | id));
            self.stats.cancels_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reaps the completions the kernel has posted (and injected delays that are due) and
    /// handles each.
    fn reap(&self, inner: &mut Inner, ended: &mut Ended) {
        let mut reaped = std::mem::take(&mut inner.reaped);
        reaped.clear();
        reaped.extend(inner.ring.completion().map(|c| (c.user_data(), c.result())));
        if !inner.delayed.is_empty() {
            let now = Instant::now();
            inner.delayed.retain(|&(due, id, res)| {
                let keep = due > now;
                if !keep {
                    reaped.push((id as u64, res));
                }
                keep
            });
        }
        for &(user_data, res) in &reaped {
            if user_data & CANCEL_TAG != 0 {
                continue;
            }
            let id = user_data as u32;
            let mut res = res;
            if let (Some(faults), Some(Some(read))) = (&self.config.faults, inner.ops.get_mut(id as usize)) {
                match faults.rewrite(read.op.path.as_deref(), res, read.op.delayed) {
                    Rewritten::Now(rewritten) => res = rewritten,
                    Rewritten::Later(due) => {
                        read.op.delayed = true;
                        inner.delayed.push((due, id, res));
                        continue;
                    }
                }
            }
            self.complete_op(inner, id, res, ended);
        }
        inner.reaped = reaped;
    }

    fn poll_inner(&self, ended: &mut Ended) {
        // Consume the readiness before reaping: a completion posted after the reap leaves the
        // eventfd readable for the next wait.
        if let Some(ready) = &self.ready {
            ready.drain();
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        self.submit(inner);
        self.reap(inner, ended);
        // A failure elsewhere in a request tombstones its reads without a sweep: catch them here.
        self.cancel_in_flight(inner, false);
        self.start_waiting(inner, ended);
        self.submit(inner);
    }

    /// Completes nodes whose reads ended, outside the lock, through `finish`.
    fn finish_all(&self, ended: Ended, mut finish: impl FnMut(PendingNode, NodeEnd)) -> usize {
        let n = ended.len();
        for (node, end) in ended {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            finish(node, end);
        }
        n
    }
}

impl Reactor for Ring {
    fn poll(&self, completer: &mut Completer<'_>) -> usize {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut ended = Vec::new();
        self.poll_inner(&mut ended);
        // Complete outside the lock: completing runs successors, which may start more reads.
        self.finish_all(ended, |node, end| completer.finish(node, end))
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn wait(&self, timeout: Duration) {
        // One io_uring_enter submits what is queued and sleeps until a completion (or the
        // timeout): no separate submit, poll and eventfd read per I/O. The lock is held while
        // blocked; the other workers are idle then (they only need it to start reads).
        let mut inner = self.lock();
        if inner.ring.completion().is_empty() && inner.delayed.is_empty() {
            // With many reads in flight, wake for several completions at a time: a quarter of
            // the queue keeps the device busy while the wake-ups (and their CPU) drop.
            let want = (inner.submitted / 4).clamp(1, 8);
            let ts = types::Timespec::new()
                .sec(timeout.as_secs())
                .nsec(timeout.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = inner.ring.submitter().submit_with_args(want, &args);
            inner.unsubmitted = 0;
        }
    }

    fn arm(&self) -> Option<std::os::fd::RawFd> {
        let ready = self.ready.as_ref()?;
        let mut inner = self.lock();
        self.submit(&mut inner);
        if !inner.ring.completion().is_empty() || !inner.delayed.is_empty() {
            // Already something to reap, or an injected delay to time: do not sleep on it.
            ready.signal();
        }
        Some(ready.raw())
    }

    fn sweep(&self) {
        self.threads.sweep();
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut cancelled = Vec::new();
        {
            let mut inner = self.lock();
            inner.waiting.sweep(&mut cancelled);
            self.cancel_in_flight(&mut inner, false);
            self.submit(&mut inner);
        }
        let ended = cancelled.into_iter().map(|w| (w.node, NodeEnd::Cancelled)).collect();
        self.finish_all(ended, PendingNode::finish);
    }

    fn drain(&self) {
        let mut ended = Vec::new();
        {
            let mut inner = self.lock();
            let inner = &mut *inner;
            // Waiting reads never reached the kernel: they end now.
            ended.extend(inner.waiting.drain().map(|w| (w.node, NodeEnd::Cancelled)));
            // Reads in flight are asked to stop, and every completion is reaped: until then the
            // kernel may still write into their targets.
            self.cancel_in_flight(inner, true);
            while inner.submitted > 0 {
                self.submit(inner);
                // Held-back completions are due now.
                for (due, ..) in &mut inner.delayed {
                    *due = Instant::now();
                }
                if inner.ring.completion().is_empty() && inner.delayed.is_empty() {
                    let ts = types::Timespec::new().nsec(10_000_000);
                    let _ = inner
                        .ring
                        .submitter()
                        .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
                }
                self.reap(inner, &mut ended);
                self.cancel_in_flight(inner, true);
            }
        }
        self.finish_all(ended, PendingNode::finish);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // A read in flight holds its node, which holds the executor, which holds this ring: a
        // ring is only dropped once the executor's shutdown drained it. Drain again anyway, so
        // the staging pool (dropped next) can never be freed under a read the kernel still has.
        self.drain();
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        assert!(
            inner.submitted == 0 && inner.waiting.is_empty() && inner.ops.iter().all(Option::is_none),
            "the io_uring ring was dropped with reads in flight"
        );
    }
}
