//! The io_uring driver: one ring shared by the workers, and the engine's reactor for it.
//!
//! Workers running read nodes queue operations here and return at once; submission is batched
//! (one `io_uring_enter` carries every SQE queued since the last one, submitted when a batch fills
//! or when a worker runs out of ready nodes and polls). Completions are reaped by idle workers
//! through [`Reactor::poll`]; one idle worker at a time blocks in `io_uring_enter` until
//! completions arrive ([`Reactor::wait`]).
//!
//! Ownership of memory the kernel writes: an operation owns its target (the destination range,
//! kept alive and exclusive by the engine until the node completes, or a staging slot) from
//! submission until its completion is reaped, whatever the completion says: success, error or
//! cancellation. Slots go back to the pool only then.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dsr_engine::{Completer, Error, ErrorKind, NodeKind, PendingNode, Reactor};
use io_uring::{opcode, squeue, types, IoUring};

use super::faults::{Fault, FaultPlan};
use super::staging::{StagingPool, STAGING_ALIGN};

/// User data of cancel requests (their own completions are ignored).
const CANCEL_TAG: u64 = 1 << 63;
/// Registered-file table size.
const FILE_SLOTS: u32 = 256;
/// Buffered reads at least this large are queued to io_uring's workers (`IOSQE_ASYNC`).
const ASYNC_BUFFERED: usize = 256 << 10;

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
            faults: None,
        }
    }
}

/// Counters of what the ring did, for `dsr info`, benchmarks and tests.
#[derive(Debug, Default)]
pub struct RingStats {
    /// `io_uring_enter` calls that submitted.
    pub submits: AtomicU64,
    /// Read SQEs submitted (first tries and resubmissions).
    pub sqes: AtomicU64,
    /// Short reads resubmitted for the rest.
    pub short_reads: AtomicU64,
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
    /// Operations that waited for a staging slot or queue room (back-pressure).
    pub waited: AtomicU64,
}

/// Where a read's bytes go when they arrive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Staged {
    /// Bytes of the slot before the wanted range (the aligned read starts earlier).
    pub skip: usize,
    /// The wanted range's destination.
    pub dst: *mut u8,
    pub dst_len: usize,
}

/// One read in flight (or waiting to start).
pub(crate) struct Op {
    pub node: PendingNode,
    pub fd: RawFd,
    /// A buffered descriptor to finish a direct read whose short read ended unaligned.
    pub fallback_fd: Option<RawFd>,
    /// File offset of the first byte of `buf`.
    pub offset: u64,
    /// Where the kernel writes: the destination, or (staged) set when a slot is taken.
    pub buf: *mut u8,
    pub len: usize,
    /// Bytes that must arrive for the node to be done (staged direct reads may stop short of
    /// `len` at the end of the file).
    pub needed: usize,
    pub done: usize,
    pub staged: Option<Staged>,
    pub slot: Option<u16>,
    pub direct: bool,
    pub path: Option<Arc<Path>>,
    /// Index in the registered-file table, while registered.
    pub file_slot: Option<u32>,
    pub cancel_sent: bool,
    pub delayed: bool,
}

// SAFETY: an `Op`'s raw pointers point at memory the operation owns exclusively until it
// completes (a destination range the engine reserved for this node, or a staging slot it holds),
// so moving the op between threads moves that ownership with it.
unsafe impl Send for Op {}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("fd", &self.fd)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("done", &self.done)
            .field("direct", &self.direct)
            .field("slot", &self.slot)
            .finish()
    }
}

/// Registered files: fd → table slot, with the number of reads using each.
#[derive(Debug, Default)]
struct FileTable {
    enabled: bool,
    entries: Vec<(RawFd, u32, usize)>,
    free: Vec<u32>,
}

struct Inner {
    ring: IoUring,
    ops: Vec<Option<Op>>,
    free_ids: Vec<u32>,
    /// Back-pressure: reads waiting for a staging slot or queue room, in arrival order.
    waiting: VecDeque<Op>,
    /// Completions held back by injected delays: (due, op id, result).
    delayed: Vec<(Instant, u32, i32)>,
    unsubmitted: usize,
    submitted: usize,
    files: FileTable,
    /// Completions reaped by the current poll (kept to reuse its allocation).
    reaped: Vec<(u64, i32)>,
}

/// How an operation ended, to report after the ring's lock is released.
enum Ending {
    Done(u64),
    Failed(Error),
    Cancelled,
}

/// The io_uring driver. Field order is drop order: the ring (which holds registrations of the
/// staging memory) before the pool.
pub struct Ring {
    inner: Mutex<Inner>,
    staging: StagingPool,
    in_flight: AtomicUsize,
    config: RingConfig,
    stats: RingStats,
    features: RingFeatures,
}

/// What the ring could set up.
#[derive(Clone, Debug, Default)]
pub struct RingFeatures {
    /// Staging slots are registered as fixed buffers.
    pub fixed_buffers: bool,
    /// A sparse registered-file table exists.
    pub registered_files: bool,
    /// The kernel supports IORING_OP_ASYNC_CANCEL.
    pub async_cancel: bool,
    /// Submission-queue polling (not used: it spends a core spinning).
    pub sqpoll: bool,
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
            // SAFETY: the iovecs describe the pool's memory, which outlives the ring (field
            // order in `Ring`), and nothing else writes a slot while an operation holds it.
            fixed_buffers: unsafe { ring.submitter().register_buffers(&staging.iovecs()) }.is_ok(),
            registered_files: ring.submitter().register_files_sparse(FILE_SLOTS).is_ok(),
            async_cancel: ring.submitter().register_probe(&mut probe).is_ok()
                && probe.is_supported(opcode::AsyncCancel::CODE),
            sqpoll: false,
        };
        Ok(Arc::new(Ring {
            inner: Mutex::new(Inner {
                ring,
                ops: Vec::new(),
                free_ids: Vec::new(),
                waiting: VecDeque::new(),
                delayed: Vec::new(),
                unsubmitted: 0,
                submitted: 0,
                reaped: Vec::with_capacity(config.queue_depth as usize),
                files: FileTable {
                    enabled: features.registered_files,
                    entries: Vec::new(),
                    free: (0..FILE_SLOTS).rev().collect(),
                },
            }),
            staging,
            in_flight: AtomicUsize::new(0),
            config,
            stats: RingStats::default(),
            features,
        }))
    }

    /// What the ring set up.
    pub fn features(&self) -> &RingFeatures {
        &self.features
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

    /// Accepts a read: starts it now if a slot and queue room are free, else queues it.
    pub(crate) fn start(&self, op: Op) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut inner = self.lock();
        if inner.waiting.is_empty() {
            if let Some(op) = self.try_begin(&mut inner, op) {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                inner.waiting.push_back(op);
            }
        } else {
            self.stats.waited.fetch_add(1, Ordering::Relaxed);
            inner.waiting.push_back(op);
        }
        if inner.unsubmitted >= self.config.submit_batch {
            self.submit(&mut inner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what `op` needs (queue room, a staging slot) and queues its SQE; gives `op` back
    /// if something is missing.
    fn try_begin(&self, inner: &mut Inner, mut op: Op) -> Option<Op> {
        if inner.submitted >= self.config.queue_depth as usize {
            return Some(op);
        }
        if op.staged.is_some() && op.slot.is_none() {
            let Some(slot) = self.staging.try_acquire() else {
                return Some(op);
            };
            op.slot = Some(slot);
            op.buf = self.staging.slot_ptr(slot);
        }
        if inner.files.enabled && op.file_slot.is_none() {
            op.file_slot = register_file(inner, op.fd);
        }
        let id = match inner.free_ids.pop() {
            Some(id) => id,
            None => {
                inner.ops.push(None);
                inner.ops.len() as u32 - 1
            }
        };
        inner.ops[id as usize] = Some(op);
        inner.submitted += 1;
        self.push_read(inner, id);
        None
    }

    /// Queues the SQE for the rest of op `id`.
    fn push_read(&self, inner: &mut Inner, id: u32) {
        let op = inner.ops[id as usize].as_ref().expect("a live op");
        // SAFETY: `done < len` for an op with bytes left, so the pointer stays inside its target.
        let buf = unsafe { op.buf.add(op.done) };
        let len = (op.len - op.done) as u32;
        let offset = op.offset + op.done as u64;
        let entry = match (op.file_slot, op.slot.filter(|_| self.features.fixed_buffers)) {
            (Some(file), Some(slot)) => opcode::ReadFixed::new(types::Fixed(file), buf, len, slot)
                .offset(offset)
                .build(),
            (Some(file), None) => opcode::Read::new(types::Fixed(file), buf, len).offset(offset).build(),
            (None, Some(slot)) => opcode::ReadFixed::new(types::Fd(op.fd), buf, len, slot)
                .offset(offset)
                .build(),
            (None, None) => opcode::Read::new(types::Fd(op.fd), buf, len).offset(offset).build(),
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
                Ok(_) => break,
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) =>
                {
                    // Interrupted, or the completion queue is full: reap what is there first.
                    if err.raw_os_error() != Some(libc::EINTR) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        inner.unsubmitted = 0;
        self.stats.submits.fetch_add(1, Ordering::Relaxed);
    }

    /// Handles one read completion with result `res`; returns the node to complete if the read
    /// is over.
    fn complete_read(&self, inner: &mut Inner, id: u32, res: i32, ended: &mut Vec<(PendingNode, Ending)>) {
        let Some(op) = inner.ops[id as usize].as_mut() else {
            return;
        };
        let ending = if res == -libc::EINTR || res == -libc::EAGAIN {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.push_read(inner, id);
            return;
        } else if res == -libc::ECANCELED {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            Ending::Cancelled
        } else if res < 0 {
            let at = op.offset + op.done as u64;
            let mut error = Error::from_io(std::io::Error::from_raw_os_error(-res), "read failed")
                .at_stage(NodeKind::Read)
                .at_offset(at);
            if let Some(path) = &op.path {
                error = error.with_path(path);
            }
            Ending::Failed(error)
        } else if res == 0 && op.done < op.needed {
            let at = op.offset + op.done as u64;
            let mut error = Error::new(
                ErrorKind::UnexpectedEof,
                format!("the range runs past the end of the file, which ends at byte {at}; read a shorter range"),
            )
            .at_stage(NodeKind::Read)
            .at_offset(at);
            if let Some(path) = &op.path {
                error = error.with_path(path);
            }
            Ending::Failed(error)
        } else {
            op.done += res as usize;
            if op.done < op.needed {
                self.stats.short_reads.fetch_add(1, Ordering::Relaxed);
                let next = op.offset + op.done as u64;
                if op.direct && (!next.is_multiple_of(STAGING_ALIGN as u64) || op.done % STAGING_ALIGN != 0) {
                    // Direct I/O cannot resume at an unaligned place: finish buffered.
                    if let Some(fd) = op.fallback_fd {
                        op.fd = fd;
                        op.direct = false;
                        if let Some(slot) = op.file_slot.take() {
                            release_file(&mut inner.files, &inner.ring, slot);
                        }
                    }
                }
                self.push_read(inner, id);
                return;
            }
            let bytes = match op.staged {
                Some(staged) => {
                    // SAFETY: (1) the slot holds `done >= skip + dst_len` bytes the kernel wrote
                    // and has finished with (its CQE is this one); (2) `dst` is the node's
                    // destination range, exclusive to this op until the node completes; (3) a
                    // slot and a destination never overlap.
                    unsafe { std::ptr::copy_nonoverlapping(op.buf.add(staged.skip), staged.dst, staged.dst_len) };
                    staged.dst_len as u64
                }
                None => op.needed as u64,
            };
            Ending::Done(bytes)
        };
        let op = inner.ops[id as usize].take().expect("a live op");
        inner.free_ids.push(id);
        inner.submitted -= 1;
        if let Some(slot) = op.slot {
            // The CQE is in: the kernel is done with the slot, whatever the result.
            self.staging.release(slot);
        }
        if let Some(slot) = op.file_slot {
            release_file(&mut inner.files, &inner.ring, slot);
        }
        ended.push((op.node, ending));
    }

    /// Starts waiting reads while there is room; waiting reads whose request was cancelled end
    /// at once.
    fn start_waiting(&self, inner: &mut Inner, ended: &mut Vec<(PendingNode, Ending)>) {
        while let Some(op) = inner.waiting.pop_front() {
            if op.node.is_tombstoned() {
                ended.push((op.node, Ending::Cancelled));
                continue;
            }
            if let Some(op) = self.try_begin(inner, op) {
                inner.waiting.push_front(op);
                break;
            }
        }
    }

    fn poll_inner(&self, ended: &mut Vec<(PendingNode, Ending)>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        self.submit(inner);
        let mut reaped = std::mem::take(&mut inner.reaped);
        reaped.clear();
        reaped.extend(inner.ring.completion().map(|c| (c.user_data(), c.result())));
        // Only fault injection delays completions: read the clock only then.
        let now = if inner.delayed.is_empty() && self.config.faults.is_none() {
            None
        } else {
            Some(Instant::now())
        };
        if let Some(now) = now {
            inner.delayed.retain(|&(due, id, res)| {
                if due <= now {
                    reaped.push((id as u64, res));
                    false
                } else {
                    true
                }
            });
        }
        for &(user_data, res) in &reaped {
            let mut res = res;
            if user_data & CANCEL_TAG != 0 {
                continue;
            }
            let id = user_data as u32;
            if let Some(op) = inner.ops.get_mut(id as usize).and_then(Option::as_mut) {
                match self
                    .config
                    .faults
                    .as_ref()
                    .and_then(|f| f.fault_for(op.path.as_deref()))
                {
                    Some(Fault::Eio) if res >= 0 => res = -libc::EIO,
                    Some(Fault::Short(max)) if res > max.max(1) as i32 => res = max.max(1) as i32,
                    Some(Fault::Delay(delay)) if !op.delayed => {
                        op.delayed = true;
                        inner.delayed.push((now.unwrap_or_else(Instant::now) + delay, id, res));
                        continue;
                    }
                    _ => {}
                }
            }
            self.complete_read(inner, id, res, ended);
        }
        // Tombstoned reads in flight: ask the kernel to cancel them (their buffers stay owned
        // until their own completion arrives).
        if self.features.async_cancel {
            let mut cancels = Vec::new();
            for (id, op) in inner.ops.iter_mut().enumerate() {
                if let Some(op) = op {
                    if !op.cancel_sent && op.node.is_tombstoned() {
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
        inner.reaped = reaped;
        self.start_waiting(inner, ended);
        self.submit(inner);
    }
}

fn register_file(inner: &mut Inner, fd: RawFd) -> Option<u32> {
    if let Some(entry) = inner.files.entries.iter_mut().find(|e| e.0 == fd) {
        entry.2 += 1;
        return Some(entry.1);
    }
    let slot = inner.files.free.pop()?;
    if inner.ring.submitter().register_files_update(slot, &[fd]).is_err() {
        inner.files.free.push(slot);
        return None;
    }
    inner.files.entries.push((fd, slot, 1));
    Some(slot)
}

/// Drops a read's use of a registered file; the last user unregisters it, so a closed and
/// reused descriptor number can never reach a stale registration.
fn release_file(files: &mut FileTable, ring: &IoUring, slot: u32) {
    if let Some(at) = files.entries.iter().position(|e| e.1 == slot) {
        files.entries[at].2 -= 1;
        if files.entries[at].2 == 0 {
            files.entries.swap_remove(at);
            let _ = ring.submitter().register_files_update(slot, &[-1]);
            files.free.push(slot);
        }
    }
}

impl Reactor for Ring {
    fn poll(&self, completer: &mut Completer<'_>) -> usize {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut ended = Vec::new();
        self.poll_inner(&mut ended);
        let n = ended.len();
        // Complete outside the lock: completing runs successors, which may start more reads.
        for (node, ending) in ended {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            match ending {
                Ending::Done(bytes) => completer.complete(node, Ok(bytes)),
                Ending::Failed(err) => completer.complete(node, Err(err)),
                Ending::Cancelled => completer.cancel(node),
            }
        }
        n
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
}
