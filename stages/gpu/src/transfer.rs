//! The GPU transfer queue: host bytes into GPU buffers (uploads), GPU buffers into each other
//! (copies) and back into host memory (read-backs), completed by one timeline semaphore.
//!
//! A stage hands its node to [`Transfers`] as a [`Piece`]. Pieces that touch the host go through
//! slots of a fixed, host-visible staging budget: an upload's bytes are copied into its slots
//! when it is accepted, a read-back's land there and are copied out when the GPU is done. Pieces
//! are batched: one command buffer records every piece ready when a worker polls (or when
//! enough are staged), one `vkCmdCopyBuffer` per (source, destination) pair with a region per
//! slot, and one submission signals the timeline with the batch's value. Recording happens on
//! the recording worker's own command pool, outside the queue's lock; only the submission, which
//! fixes the value order, is under it.
//!
//! **GPU edges.** Right after a submission every node in it is marked *submitted* with its
//! value, which releases its successors behind GPU edges: they arrive here at once, and their
//! submission waits on the GPU for the values they depend on ([`dsr_engine::NodeRef::gpu_waits`]),
//! so an upload → copy → read-back chain never waits for the CPU in between.
//!
//! **Completion.** Idle workers poll the semaphore's counter; one of them blocks in
//! `vkWaitSemaphores` for the oldest value in flight ([`Reactor::wait`]); a timeline thread turns
//! the same wait into an eventfd for a worker waiting on several sources ([`Reactor::arm`]). When
//! the GPU passes a value, its nodes complete and their staging slots go back to the budget: on
//! success, failure and cancellation alike, staging is reused only once the GPU is done with it.
//! Pieces that find no free slot wait in the engine's [`WaitQueue`], first come, first served;
//! nothing grows with the number of requests. Tombstoned pieces not yet recorded are cut short;
//! recorded work runs out.
//!
//! A lost device (a submission or a wait reports `VK_ERROR_DEVICE_LOST`) fails every piece in
//! flight and every later one with an error carrying the `VkResult`; host requests go on.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ash::vk;
use dsr_engine::{BatchBuilder, Completer, Error, EventFd, GpuSpan, NodeEnd, PendingNode, Reactor, Result, WaitQueue};

use crate::buffer::HostVisible;
use crate::context::{vk_error, GpuContext};
use crate::import::HostImports;
use crate::timeline::{watch_timeline, Watch};
use crate::timestamps::{Pair, QueryPairs};

/// How long a lost device is given to stop using the memory of work it was given.
const SETTLE_NS: u64 = 30_000_000_000;
/// Submit at once, rather than at the next poll, when this many bytes are staged.
const SUBMIT_BYTES: u64 = 16 << 20;

/// The staging budget's shape.
#[derive(Clone, Copy, Debug)]
pub struct StagingConfig {
    /// Bytes of host-visible memory, allocated once.
    pub budget: u64,
    /// Bytes per slot: a piece larger than a slot takes several.
    pub slot: u64,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            budget: 64 << 20,
            slot: 1 << 20,
        }
    }
}

/// Counters of what the queue did.
#[derive(Debug, Default)]
pub struct TransferStats {
    /// Submissions (each one command buffer, one timeline value).
    pub submits: AtomicU64,
    /// Submissions that waited on the GPU for an earlier one (behind GPU edges).
    pub gpu_waits: AtomicU64,
    /// Copy regions recorded.
    pub regions: AtomicU64,
    /// Bytes uploaded from host memory.
    pub uploaded: AtomicU64,
    /// Of those, bytes copied straight from imported scratch (no copy into staging).
    pub imported: AtomicU64,
    /// Bytes copied from one GPU buffer to another.
    pub copied: AtomicU64,
    /// Bytes read back into host memory.
    pub read_back: AtomicU64,
    /// Pieces that waited for staging.
    pub waited: AtomicU64,
    /// The most staging slots held at once.
    pub peak_slots: AtomicUsize,
}

/// What one piece moves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Move {
    /// Host bytes into a GPU buffer, through staging.
    Upload {
        src: *const u8,
        dst: vk::Buffer,
        dst_offset: u64,
    },
    /// Host bytes into a GPU buffer straight from the scratch block they are in, imported
    /// into Vulkan (`src` is the block's buffer): no staging.
    Imported {
        src: vk::Buffer,
        src_offset: u64,
        dst: vk::Buffer,
        dst_offset: u64,
    },
    /// A GPU buffer range into another, on the GPU alone.
    Copy {
        src: vk::Buffer,
        src_offset: u64,
        dst: vk::Buffer,
        dst_offset: u64,
    },
    /// A GPU buffer range into host memory, through staging.
    ReadBack {
        src: vk::Buffer,
        src_offset: u64,
        dst: *mut u8,
    },
}

/// One node's transfer.
pub(crate) struct Piece {
    pub what: Move,
    /// Bytes moved (non-zero: stages complete empty nodes themselves).
    pub len: u64,
    /// The timeline value the GPU must reach before this piece runs (0: none).
    pub wait: u64,
}

// SAFETY: the host pointers point at bytes the engine keeps alive and reserved for the piece's
// node until it completes (an upload's source in scratch or a caller's memory; a read-back's
// destination in a caller's buffer, which no other node writes); the piece travels with its node.
unsafe impl Send for Piece {}

impl Piece {
    /// Whether the piece goes through staging slots.
    fn staged(&self) -> bool {
        matches!(self.what, Move::Upload { .. } | Move::ReadBack { .. })
    }

    /// The buffers its copy reads and writes.
    fn buffers(&self, staging: vk::Buffer) -> (vk::Buffer, vk::Buffer) {
        match self.what {
            Move::Upload { dst, .. } => (staging, dst),
            Move::Imported { src, dst, .. } | Move::Copy { src, dst, .. } => (src, dst),
            Move::ReadBack { src, .. } => (src, staging),
        }
    }

    /// Its copy regions, given its staging slots of `slot` bytes each.
    fn regions(&self, slots: &[u32], slot: u64, out: &mut Vec<vk::BufferCopy>) {
        let chunks = slots.iter().enumerate().map(|(i, &s)| {
            let done = i as u64 * slot;
            (s as u64 * slot, done, (self.len - done).min(slot))
        });
        match self.what {
            Move::Imported {
                src_offset, dst_offset, ..
            }
            | Move::Copy {
                src_offset, dst_offset, ..
            } => out.push(vk::BufferCopy {
                src_offset,
                dst_offset,
                size: self.len,
            }),
            Move::Upload { dst_offset, .. } => out.extend(chunks.map(|(at, done, size)| vk::BufferCopy {
                src_offset: at,
                dst_offset: dst_offset + done,
                size,
            })),
            Move::ReadBack { src_offset, .. } => out.extend(chunks.map(|(at, done, size)| vk::BufferCopy {
                src_offset: src_offset + done,
                dst_offset: at,
                size,
            })),
        }
    }
}

/// A piece with its slots, waiting for a submission or in one.
struct Staged {
    node: PendingNode,
    piece: Piece,
    slots: Vec<u32>,
}

/// A submitted command buffer and what completes when the timeline reaches `value`.
struct Submission {
    value: u64,
    /// None for a submission of signals alone (a batch's completion).
    cb: Option<vk::CommandBuffer>,
    /// The timestamp query pair around its commands, if it is timed.
    timed: Option<Pair>,
    /// The command pool (index into `Transfers::pools`) the buffer came from.
    pool: usize,
    pieces: Vec<Staged>,
}

struct State {
    free: Vec<u32>,
    waiting: WaitQueue<Piece>,
    staged: Vec<Staged>,
    staged_bytes: u64,
    submitted: VecDeque<Submission>,
    /// The value the next submission signals.
    next_value: u64,
}

/// The completion timeline's bookkeeping: values are handed out in order and signalled in
/// order, so a value is reached only when its batch and every batch given a lower value retired.
#[derive(Default)]
struct Signals {
    /// The last value handed out.
    handed_out: u64,
    /// Retired batches' values above `signalled`.
    retired: BTreeSet<u64>,
    /// The last value submitted for signalling.
    signalled: u64,
}

/// Where a renderer waits for a batch (DirectStorage's `EnqueueSignal`): the value the semaphore
/// reaches, on the GPU, once everything in the batch has landed (or failed, or was cancelled)
/// and every batch given a lower value has too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSignal {
    /// A timeline semaphore of the transfer queue's device, alive as long as the queue.
    pub semaphore: vk::Semaphore,
    /// The value to wait for.
    pub value: u64,
}

/// A handed-out completion value: signalled when dropped, which the batch's completion callback
/// does (or the batch, dropped unsubmitted, so later values are not held up).
struct SignalOnDrop {
    transfers: Weak<Transfers>,
    value: u64,
}

impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        if let Some(transfers) = self.transfers.upgrade() {
            transfers.retire_signal(self.value);
        }
    }
}

/// Query pairs: submissions timed at once (later ones go untimed while all are held).
const TIMED_SUBMISSIONS: u32 = 256;

/// A command pool and its idle command buffers: one per worker (and one for other threads), so
/// recording never contends.
struct Pool {
    pool: vk::CommandPool,
    spare: Vec<vk::CommandBuffer>,
}

/// The staging budget, the transfers in flight, and the timeline that says when the GPU is
/// done. Shared by the GPU stages and the executor (as a reactor).
pub struct Transfers {
    pub(crate) context: Arc<GpuContext>,
    /// Destroyed in `Drop`, once the GPU is done with it.
    staging: ManuallyDrop<HostVisible>,
    pub(crate) slot: u64,
    pub(crate) slots: usize,
    timeline: vk::Semaphore,
    state: Mutex<State>,
    /// Locked in the order state → pool, never the other way.
    pools: Box<[Mutex<Pool>]>,
    /// Timestamp queries around each submission (for the GPU time observers hear), where the
    /// transfer queue writes timestamps; dropped after the GPU is idle.
    timestamps: Option<QueryPairs>,
    /// Scratch blocks imported into Vulkan, where the device allows it.
    pub(crate) imports: Option<Arc<HostImports>>,
    /// Batch completion signals for renderers: a second timeline, and the values handed out.
    completion: vk::Semaphore,
    signals: Mutex<Signals>,
    /// Pieces accepted and not completed.
    in_flight: AtomicUsize,
    stats: TransferStats,
    /// Signalled by the timeline thread when the GPU reaches the oldest value in flight.
    ready: Arc<EventFd>,
    watch: Arc<Watch>,
    /// The timeline thread; joined in `Drop` before the semaphore goes.
    watcher: Option<JoinHandle<()>>,
}

// SAFETY: the staging memory's pointer is only written through slots a single piece holds (the
// free list hands each slot to one holder at a time); each command pool is used under its own
// lock; the other Vulkan handles are used under `state`'s lock or from calls Vulkan allows on
// any thread.
unsafe impl Send for Transfers {}
// SAFETY: as above.
unsafe impl Sync for Transfers {}

impl fmt::Debug for Transfers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfers")
            .field("slots", &self.slots)
            .field("slot", &self.slot)
            .field("pools", &self.pools.len())
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

/// What `Transfers::new` made so far, destroyed if a later step fails.
struct Parts<'a> {
    context: &'a GpuContext,
    staging: Option<HostVisible>,
    timeline: vk::Semaphore,
    completion: vk::Semaphore,
    pools: Vec<vk::CommandPool>,
}

impl Drop for Parts<'_> {
    fn drop(&mut self) {
        let device = self.context.device();
        // SAFETY: made by `Transfers::new` and never used by the GPU; null handles are ignored.
        unsafe {
            for &pool in &self.pools {
                device.destroy_command_pool(pool, None);
            }
            device.destroy_semaphore(self.timeline, None);
            device.destroy_semaphore(self.completion, None);
            if let Some(staging) = self.staging.take() {
                staging.destroy(self.context);
            }
        }
    }
}

impl Transfers {
    /// Allocates the staging budget (host-visible, mapped, every page touched now), a timeline
    /// semaphore, and a command pool per worker (`workers`, plus one for other threads) on the
    /// transfer queue's family.
    pub fn new(
        context: &Arc<GpuContext>,
        config: StagingConfig,
        workers: usize,
        imports: Option<Arc<HostImports>>,
    ) -> Result<Arc<Transfers>> {
        let slot = config.slot.max(4096).next_multiple_of(4096);
        let slots = config.budget.div_ceil(slot).clamp(1, u32::MAX as u64) as usize;
        let device = context.device();
        let mut parts = Parts {
            context,
            staging: Some(HostVisible::new(context, slots as u64 * slot)?),
            timeline: vk::Semaphore::null(),
            completion: vk::Semaphore::null(),
            pools: Vec::new(),
        };
        let staging = parts.staging.as_ref().expect("made above");
        // Pre-fault: a first touch of fresh memory runs at 1-2 GB/s here, and is not upload time.
        for page in (0..staging.len).step_by(4096) {
            // SAFETY: inside the mapping just made, which nothing else uses yet.
            unsafe { staging.ptr.add(page as usize).write_volatile(0) };
        }
        for semaphore in [&mut parts.timeline, &mut parts.completion] {
            let mut kind = vk::SemaphoreTypeCreateInfo::default()
                .semaphore_type(vk::SemaphoreType::TIMELINE)
                .initial_value(0);
            // SAFETY: a valid create info; destroyed in `Drop` (or by `parts`).
            *semaphore =
                unsafe { device.create_semaphore(&vk::SemaphoreCreateInfo::default().push_next(&mut kind), None) }
                    .map_err(|r| vk_error(r, "cannot create a transfer timeline"))?;
        }
        let timestamps = QueryPairs::new(context, context.transfer_queue().family, TIMED_SUBMISSIONS)?;
        let pool_info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(context.transfer_queue().family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        for _ in 0..workers.max(1) + 1 {
            // SAFETY: a valid create info; destroyed in `Drop` (or by `parts`).
            let pool = unsafe { device.create_command_pool(&pool_info, None) }
                .map_err(|r| vk_error(r, "cannot create a transfer command pool"))?;
            parts.pools.push(pool);
        }
        let ready = Arc::new(
            EventFd::new().map_err(|err| Error::from_io(err, "cannot create the transfer timeline's eventfd"))?,
        );
        let watch = Arc::new(Watch::default());
        let watcher = {
            let (context, timeline, watch, ready) = (context.clone(), parts.timeline, watch.clone(), ready.clone());
            std::thread::Builder::new()
                .name("dsr-gpu-timeline".into())
                .spawn(move || watch_timeline(context, timeline, watch, ready))
                .map_err(|err| Error::from_io(err, "cannot start the transfer timeline thread"))?
        };
        let staging = parts.staging.take().expect("made above");
        let timeline = std::mem::replace(&mut parts.timeline, vk::Semaphore::null());
        let completion = std::mem::replace(&mut parts.completion, vk::Semaphore::null());
        let pools = std::mem::take(&mut parts.pools)
            .into_iter()
            .map(|pool| {
                Mutex::new(Pool {
                    pool,
                    spare: Vec::new(),
                })
            })
            .collect();
        Ok(Arc::new(Transfers {
            ready,
            watch,
            watcher: Some(watcher),
            context: context.clone(),
            staging: ManuallyDrop::new(staging),
            slot,
            slots,
            timeline,
            state: Mutex::new(State {
                free: (0..slots as u32).rev().collect(),
                waiting: WaitQueue::new(),
                staged: Vec::new(),
                staged_bytes: 0,
                submitted: VecDeque::new(),
                next_value: 1,
            }),
            pools,
            timestamps,
            imports,
            completion,
            signals: Mutex::new(Signals::default()),
            in_flight: AtomicUsize::new(0),
            stats: TransferStats::default(),
        }))
    }

    /// The device it runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.context
    }

    /// What it did so far.
    pub fn stats(&self) -> &TransferStats {
        &self.stats
    }

    /// Staging slots and their size.
    pub fn staging_shape(&self) -> (usize, u64) {
        (self.slots, self.slot)
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.lock().free.len()
    }

    /// The timeline semaphore transfers signal, and the value the last submission will signal:
    /// a renderer that waits for it on the GPU sees every transfer submitted so far.
    pub fn timeline(&self) -> (vk::Semaphore, u64) {
        (self.timeline, self.lock().next_value - 1)
    }

    /// A point on the completion timeline that `batch` signals, on the GPU, when it retires
    /// (DirectStorage's `EnqueueSignal`): a renderer waits for it before it touches what the
    /// batch loaded. Values are handed out and reached in the order of these calls, whatever
    /// order the batches retire in; a batch that fails or is cancelled still signals, and one
    /// dropped without being submitted lets later values through.
    pub fn signal_on_completion(self: &Arc<Self>, batch: &mut BatchBuilder) -> BatchSignal {
        let value = {
            let mut signals = self.signals.lock().unwrap_or_else(|p| p.into_inner());
            signals.handed_out += 1;
            signals.handed_out
        };
        let guard = SignalOnDrop {
            transfers: Arc::downgrade(self),
            value,
        };
        batch.on_complete(move |_| drop(guard));
        BatchSignal {
            semaphore: self.completion,
            value,
        }
    }

    /// A batch given `value` retired: signal every value up to the first still outstanding,
    /// with a submission of signals alone after everything submitted so far, so the transfers'
    /// writes are available to whoever waits.
    fn retire_signal(&self, value: u64) {
        let mut signals = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        signals.retired.insert(value);
        let mut reach = signals.signalled;
        while signals.retired.remove(&(reach + 1)) {
            reach += 1;
        }
        if reach == signals.signalled {
            return;
        }
        signals.signalled = reach;
        // Under the signals lock, so reaches are submitted in order. On an error the device is
        // lost (or out of memory): requests fail anyway, and a renderer waiting on the device
        // gets the loss from its own wait.
        let _ = self.signal_after_transfers(self.completion, reach);
    }

    /// Signals the timeline semaphore `semaphore` of this device to `value` once everything
    /// submitted to the transfer queue so far has finished, so what those transfers wrote is
    /// available to whoever waits on it: DirectStorage's `EnqueueSignal` with a Vulkan timeline
    /// in place of a D3D12 fence (see `dsr::RuntimeQueue::enqueue_vulkan_signal`). Refuses a
    /// value the semaphore has already reached ([`Transfers::check_signal`]).
    pub fn signal_timeline(&self, semaphore: vk::Semaphore, value: u64) -> Result<()> {
        self.check_signal(semaphore, value)?;
        self.signal_after_transfers(semaphore, value)
    }

    /// Whether signalling `semaphore` to `value` would raise it: an error saying where it is,
    /// if not. The caller vouches `semaphore` is a live timeline semaphore of this device.
    pub fn check_signal(&self, semaphore: vk::Semaphore, value: u64) -> Result<()> {
        // SAFETY: a plain query of a live timeline semaphore of this device (the caller's word).
        let now = unsafe { self.context.device().get_semaphore_counter_value(semaphore) }
            .map_err(|r| vk_error(r, "cannot read the timeline semaphore to signal"))?;
        if now >= value {
            return Err(Error::new(
                dsr_engine::ErrorKind::InvalidRequest,
                format!("the timeline semaphore is at {now} already; a signal must raise it (asked for {value})"),
            ));
        }
        Ok(())
    }

    /// An empty submission on the transfer queue that signals `semaphore` to `value` and the
    /// transfer timeline to its next value (the completion reactor counts it like any other).
    fn signal_after_transfers(&self, semaphore: vk::Semaphore, value: u64) -> Result<()> {
        let mut state = self.lock();
        let own = state.next_value;
        let semaphores = [self.timeline, semaphore];
        let values = [own, value];
        let mut timeline = vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&values);
        let submit = vk::SubmitInfo::default()
            .signal_semaphores(&semaphores)
            .push_next(&mut timeline);
        // SAFETY: no command buffers; both semaphores are of this device and alive (the
        // transfer timeline is ours; the other is ours, or the caller's as vouched); `own` is
        // the next transfer value (under the state lock), and `value` rises past the other's
        // earlier signals (the caller's promise, or the signals lock for the completion one).
        unsafe {
            self.context
                .submit(self.context.transfer_queue(), &[submit], vk::Fence::null())
        }?;
        state.next_value += 1;
        state.submitted.push_back(Submission {
            value: own,
            timed: None,
            cb: None,
            pool: 0,
            pieces: Vec::new(),
        });
        self.watch.set(state.submitted.front().map(|s| s.value));
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool(&self, index: usize) -> MutexGuard<'_, Pool> {
        self.pools[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The command pool of `worker` (the last one for calls off a worker).
    fn pool_for(&self, worker: Option<usize>) -> usize {
        let workers = self.pools.len() - 1;
        worker.map_or(workers, |w| w % workers)
    }

    pub(crate) fn slots_for(&self, len: u64) -> usize {
        len.div_ceil(self.slot) as usize
    }

    /// Accepts a piece from a stage running on `worker`: stages it now if it needs no staging or
    /// slots are free, else queues it.
    pub(crate) fn start(&self, node: PendingNode, piece: Piece, worker: usize) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let need = if piece.staged() { self.slots_for(piece.len) } else { 0 };
        let mut state = self.lock();
        if need == 0 || (state.waiting.is_empty() && state.free.len() >= need) {
            let slots = self.take_slots(&mut state, need);
            drop(state);
            self.stage(Staged { node, piece, slots }, Some(worker));
            return;
        }
        self.stats.waited.fetch_add(1, Ordering::Relaxed);
        let refused = state.waiting.push(node, piece).err();
        drop(state);
        if let Some(waiter) = refused {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            waiter.node.cancel();
        }
    }

    fn take_slots(&self, state: &mut State, need: usize) -> Vec<u32> {
        let at = state.free.len() - need;
        let slots = state.free.split_off(at);
        let held = self.slots - state.free.len();
        self.stats.peak_slots.fetch_max(held, Ordering::Relaxed);
        slots
    }

    fn slot_ptr(&self, slot: u32) -> *mut u8 {
        // SAFETY: every slot index is below `slots`, so the offset is inside the mapping.
        unsafe { self.staging.ptr.add((slot as u64 * self.slot) as usize) }
    }

    /// Copies an upload into its slots (outside the lock: this is the memcpy), then queues the
    /// piece for the next submission, submitting now if enough is staged.
    fn stage(&self, staged: Staged, worker: Option<usize>) {
        if let Move::Upload { src, .. } = staged.piece.what {
            for (i, &slot) in staged.slots.iter().enumerate() {
                let done = i as u64 * self.slot;
                let this = (staged.piece.len - done).min(self.slot);
                // SAFETY: (1) the slot is this piece's alone until its submission completes;
                // (2) the source holds `len` bytes valid while the node is unfinished; (3)
                // staging and sources never overlap.
                unsafe { std::ptr::copy_nonoverlapping(src.add(done as usize), self.slot_ptr(slot), this as usize) };
            }
        }
        let full = {
            let mut state = self.lock();
            state.staged_bytes += staged.piece.len;
            state.staged.push(staged);
            state.staged_bytes >= SUBMIT_BYTES
        };
        if full {
            let failed = self.flush(worker);
            self.finish_all(failed, |node, end| node.finish(end));
        }
    }

    /// Records every staged piece into one command buffer of `worker`'s pool (outside the
    /// queue's lock) and submits it under the lock, signalling the next timeline value; then
    /// marks its nodes submitted, which releases their successors behind GPU edges. Returns the
    /// nodes that failed (their slots already back).
    fn flush(&self, worker: Option<usize>) -> Vec<(PendingNode, NodeEnd)> {
        let mut pieces = {
            let mut state = self.lock();
            state.staged_bytes = 0;
            std::mem::take(&mut state.staged)
        };
        if pieces.is_empty() {
            return Vec::new();
        }
        let pool = self.pool_for(worker);
        let (cb, timed) = match self.record(pool, &mut pieces) {
            Ok(recorded) => recorded,
            Err(err) => return self.fail(pieces, &err),
        };
        let wait = pieces.iter().map(|s| s.piece.wait).max().unwrap_or(0);
        let mut state = self.lock();
        let value = state.next_value;
        // SAFETY: the command buffer reads and writes staging and buffers kept alive until the
        // submission completes (their batches hold them); `wait` was signalled-to by an earlier
        // submission (a predecessor's), so it is below `value`.
        if let Err(err) = unsafe { self.submit(cb, value, wait) } {
            drop(state);
            // Never submitted: the command buffer and its queries can be reused.
            self.pool(pool).spare.push(cb);
            self.untime(timed);
            return self.fail(pieces, &err);
        }
        state.next_value += 1;
        self.stats.submits.fetch_add(1, Ordering::Relaxed);
        if wait > 0 {
            self.stats.gpu_waits.fetch_add(1, Ordering::Relaxed);
        }
        for s in &mut pieces {
            let counter = match s.piece.what {
                Move::Upload { .. } => &self.stats.uploaded,
                Move::Imported { .. } => {
                    self.stats.imported.fetch_add(s.piece.len, Ordering::Relaxed);
                    &self.stats.uploaded
                }
                Move::Copy { .. } => &self.stats.copied,
                Move::ReadBack { .. } => &self.stats.read_back,
            };
            counter.fetch_add(s.piece.len, Ordering::Relaxed);
            s.node.submitted(value);
        }
        state.submitted.push_back(Submission {
            value,
            timed,
            cb: Some(cb),
            pool,
            pieces,
        });
        self.watch.set(state.submitted.front().map(|s| s.value));
        Vec::new()
    }

    /// Gives the pieces' slots back and fails their nodes with `err`.
    fn fail(&self, pieces: Vec<Staged>, err: &Error) -> Vec<(PendingNode, NodeEnd)> {
        let mut state = self.lock();
        pieces
            .into_iter()
            .map(|s| {
                state.free.extend(&s.slots);
                (s.node, NodeEnd::Failed(err.clone()))
            })
            .collect()
    }

    /// Records `pieces` into a command buffer of pool `pool`: one `vkCmdCopyBuffer` per
    /// (source, destination) pair, behind a barrier over earlier transfers when a piece reads a
    /// GPU buffer, and ahead of one that makes read-backs visible to the host.
    fn record(&self, pool: usize, pieces: &mut [Staged]) -> Result<(vk::CommandBuffer, Option<Pair>)> {
        let device = self.context.device();
        let mut pool = self.pool(pool);
        let cb = match pool.spare.pop() {
            Some(cb) => cb,
            None => {
                let alloc = vk::CommandBufferAllocateInfo::default()
                    .command_pool(pool.pool)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(1);
                // SAFETY: the pool is used under its lock only, which is held.
                unsafe { device.allocate_command_buffers(&alloc) }
                    .map_err(|r| vk_error(r, "cannot allocate a transfer command buffer"))?[0]
            }
        };
        let staging = self.staging.buffer;
        pieces.sort_by_key(|s| s.piece.buffers(staging));
        let reads_gpu = pieces
            .iter()
            .any(|s| matches!(s.piece.what, Move::Copy { .. } | Move::ReadBack { .. }));
        let reads_back = pieces.iter().any(|s| matches!(s.piece.what, Move::ReadBack { .. }));
        let mut regions = Vec::new();
        let timed = self.timestamps.as_ref().and_then(QueryPairs::take);
        let begin = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: (1) the command buffer belongs to this pool, whose lock is held, and is not in
        // flight (spare buffers come back only after their submission completed); (2) every
        // buffer is alive (held by a batch until the node completes, or the staging buffer) and
        // every region lies inside its buffers (`compile` checked the node's ranges; slots are
        // inside staging).
        let recorded = unsafe {
            device.begin_command_buffer(cb, &begin).and_then(|()| {
                // The pair is this submission's alone until it retires.
                if let (Some(timestamps), Some(pair)) = (&self.timestamps, timed) {
                    timestamps.start(cb, pair);
                }
                if reads_gpu {
                    // What earlier submissions to this queue wrote (uploads a copy depends on
                    // through a CPU edge) is visible to this one's reads and writes.
                    let barrier = vk::MemoryBarrier::default()
                        .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
                        .dst_access_mask(vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::TRANSFER_WRITE);
                    device.cmd_pipeline_barrier(
                        cb,
                        vk::PipelineStageFlags::ALL_COMMANDS,
                        vk::PipelineStageFlags::TRANSFER,
                        vk::DependencyFlags::empty(),
                        &[barrier],
                        &[],
                        &[],
                    );
                }
                for group in pieces.chunk_by(|a, b| a.piece.buffers(staging) == b.piece.buffers(staging)) {
                    regions.clear();
                    for s in group {
                        s.piece.regions(&s.slots, self.slot, &mut regions);
                    }
                    let (src, dst) = group[0].piece.buffers(staging);
                    device.cmd_copy_buffer(cb, src, dst, &regions);
                    self.stats.regions.fetch_add(regions.len() as u64, Ordering::Relaxed);
                }
                if reads_back {
                    let barrier = vk::MemoryBarrier::default()
                        .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                        .dst_access_mask(vk::AccessFlags::HOST_READ);
                    device.cmd_pipeline_barrier(
                        cb,
                        vk::PipelineStageFlags::TRANSFER,
                        vk::PipelineStageFlags::HOST,
                        vk::DependencyFlags::empty(),
                        &[barrier],
                        &[],
                        &[],
                    );
                }
                if let (Some(timestamps), Some(pair)) = (&self.timestamps, timed) {
                    timestamps.end(cb, pair);
                }
                device.end_command_buffer(cb)
            })
        };
        if let Err(r) = recorded {
            // Beginning it again resets it (the pool allows resets).
            pool.spare.push(cb);
            self.untime(timed);
            return Err(vk_error(r, "cannot record transfers"));
        }
        Ok((cb, timed))
    }

    /// Hands a submission's query pair back (it never ran, or failed).
    fn untime(&self, timed: Option<Pair>) {
        if let (Some(timestamps), Some(pair)) = (&self.timestamps, timed) {
            timestamps.finish(pair, false);
        }
    }

    /// The GPU work between a retired submission's two timestamps.
    fn gpu_time(&self, pair: Pair) -> Option<GpuSpan> {
        let timestamps = self.timestamps.as_ref()?;
        let ticks = timestamps.finish(pair, true)?;
        Some(timestamps.span(ticks, "transfer"))
    }

    /// Submits `cb` to the transfer queue, signalling `value` on the timeline after waiting on
    /// the GPU for `wait` (0: no wait).
    ///
    /// # Safety
    /// As for [`GpuContext::submit`]; `value` must be the next value, submitted under the state
    /// lock, and `wait` below it.
    unsafe fn submit(&self, cb: vk::CommandBuffer, value: u64, wait: u64) -> Result<()> {
        let (cbs, semaphores) = ([cb], [self.timeline]);
        let (signal_values, wait_values) = ([value], [wait]);
        let stages = [vk::PipelineStageFlags::TRANSFER];
        let mut timeline = vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&signal_values);
        let mut submit = vk::SubmitInfo::default()
            .command_buffers(&cbs)
            .signal_semaphores(&semaphores);
        if wait > 0 {
            timeline = timeline.wait_semaphore_values(&wait_values);
            submit = submit.wait_semaphores(&semaphores).wait_dst_stage_mask(&stages);
        }
        let submit = submit.push_next(&mut timeline);
        // SAFETY: by the caller's premise; no fence.
        unsafe {
            self.context
                .submit(self.context.transfer_queue(), &[submit], vk::Fence::null())
        }
    }

    /// After a loss, before the submitted work's memory goes back (staging slots, and the
    /// scratch blocks its requests hold, which the device may read through imports): waits,
    /// boundedly, until the GPU has stopped with it. A device that is really lost answers at
    /// once; one whose loss was reported for a later submission (an injected loss, or one queue
    /// of several) finishes what it started, and freeing that memory under it faulted (the
    /// soak found it: lavapipe's thread read an unmapped scratch block).
    fn settle(&self, last: u64) {
        let semaphores = [self.timeline];
        let values = [last];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&semaphores).values(&values);
        // SAFETY: the semaphore is this queue's and alive.
        let waited = unsafe { self.context.device().wait_semaphores(&info, SETTLE_NS) };
        if waited == Err(vk::Result::TIMEOUT) {
            eprintln!(
                "dsr: the lost GPU had not finished its transfers after {} s",
                SETTLE_NS / 1_000_000_000
            );
        }
    }

    /// The value the GPU has reached, or the loss that stops it.
    fn reached(&self) -> Result<u64> {
        // SAFETY: the semaphore is this queue's and alive.
        unsafe { self.context.device().get_semaphore_counter_value(self.timeline) }
            .map_err(|r| self.context.check(r, "cannot read the transfer timeline"))
    }

    /// Retires every submission the GPU has finished (or all of them, failed, if the device was
    /// lost): read-backs land in host memory, command buffers and slots come back. Then admits
    /// waiting pieces into the freed slots. Returns the nodes to complete (through `ended`) and
    /// the pieces admitted (to stage outside the lock).
    fn advance(&self, state: &mut State, ended: &mut Vec<(PendingNode, NodeEnd)>) -> Vec<Staged> {
        let reached = if self.context.is_lost() {
            if let Some(last) = state.submitted.back().map(|s| s.value) {
                self.settle(last);
            }
            Err(self.context.lost_error())
        } else {
            self.reached()
        };
        while let Some(front) = state.submitted.front() {
            let failure = match &reached {
                Ok(value) if front.value <= *value => None,
                Ok(_) => break,
                Err(err) => Some(err.clone()),
            };
            let submission = state.submitted.pop_front().expect("front exists");
            // The GPU is done with the command buffer and the slots (or will never run them).
            if let Some(cb) = submission.cb {
                self.pool(submission.pool).spare.push(cb);
            }
            let gpu = match (&failure, submission.timed) {
                (None, Some(pair)) => self.gpu_time(pair),
                (_, timed) => {
                    self.untime(timed);
                    None
                }
            };
            for s in submission.pieces {
                if let (None, Move::ReadBack { dst, .. }) = (&failure, s.piece.what) {
                    for (i, &slot) in s.slots.iter().enumerate() {
                        let done = i as u64 * self.slot;
                        let this = (s.piece.len - done).min(self.slot);
                        // SAFETY: (1) the GPU has passed the value of the copy that filled the
                        // slot, and its barrier made the bytes visible to the host (the memory
                        // is coherent); (2) `dst` holds `len` bytes reserved for this node,
                        // which is unfinished; (3) staging and host buffers never overlap.
                        unsafe {
                            std::ptr::copy_nonoverlapping(self.slot_ptr(slot), dst.add(done as usize), this as usize)
                        };
                    }
                }
                state.free.extend(&s.slots);
                if let Some(gpu) = gpu {
                    s.node.gpu_time(&gpu);
                }
                let end = match &failure {
                    None => NodeEnd::Done { bytes: s.piece.len },
                    Some(err) => NodeEnd::Failed(err.clone()),
                };
                ended.push((s.node, end));
            }
        }
        if self.context.is_lost() {
            let err = self.context.lost_error();
            for s in std::mem::take(&mut state.staged) {
                state.free.extend(&s.slots);
                ended.push((s.node, NodeEnd::Failed(err.clone())));
            }
            state.staged_bytes = 0;
            ended.extend(state.waiting.drain().map(|w| (w.node, NodeEnd::Failed(err.clone()))));
            return Vec::new();
        }
        let mut admitted = Vec::new();
        let mut cancelled = Vec::new();
        let mut waiting = std::mem::take(&mut state.waiting);
        waiting.admit(
            |waiter| {
                let need = self.slots_for(waiter.item.len);
                if state.free.len() < need {
                    return Some(waiter);
                }
                let slots = self.take_slots(state, need);
                admitted.push(Staged {
                    node: waiter.node,
                    piece: waiter.item,
                    slots,
                });
                None
            },
            &mut cancelled,
        );
        state.waiting = waiting;
        ended.extend(cancelled.into_iter().map(|w| (w.node, NodeEnd::Cancelled)));
        self.watch.set(state.submitted.front().map(|s| s.value));
        admitted
    }

    /// Completes nodes outside the lock, through `finish`.
    fn finish_all(&self, ended: Vec<(PendingNode, NodeEnd)>, mut finish: impl FnMut(PendingNode, NodeEnd)) -> usize {
        let n = ended.len();
        for (node, end) in ended {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            finish(node, end);
        }
        n
    }

    /// Retires what the GPU finished, stages what that admitted, and submits what is staged.
    fn poll_with(&self, worker: Option<usize>, mut finish: impl FnMut(PendingNode, NodeEnd)) -> usize {
        // Consume the readiness before reading the timeline: a value reached after the read
        // leaves the eventfd readable for the next wait.
        self.ready.drain();
        let mut ended = Vec::new();
        let admitted = {
            let mut state = self.lock();
            self.advance(&mut state, &mut ended)
        };
        let mut n = self.finish_all(ended, &mut finish);
        for staged in admitted {
            self.stage(staged, worker);
        }
        n += self.finish_all(self.flush(worker), &mut finish);
        n
    }
}

impl Reactor for Transfers {
    fn poll(&self, completer: &mut Completer<'_>) -> usize {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let worker = completer.worker();
        self.poll_with(Some(worker), |node, end| completer.finish(node, end))
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn wait(&self, timeout: Duration) {
        let failed = self.flush(None);
        if !failed.is_empty() {
            self.finish_all(failed, |node, end| node.finish(end));
            return;
        }
        let Some(value) = self.lock().submitted.front().map(|s| s.value) else {
            std::thread::sleep(timeout);
            return;
        };
        let semaphores = [self.timeline];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&semaphores).values(&values);
        // SAFETY: the semaphore is alive; the value was submitted, so the wait ends by the
        // timeout at worst.
        if let Err(r) = unsafe { self.context.device().wait_semaphores(&info, timeout.as_nanos() as u64) } {
            if r != vk::Result::TIMEOUT {
                self.context.check(r, "cannot wait for the transfer timeline");
            }
        }
    }

    fn arm(&self) -> Option<std::os::fd::RawFd> {
        let failed = self.flush(None);
        if !failed.is_empty() {
            self.ready.signal();
            self.finish_all(failed, |node, end| node.finish(end));
        } else {
            let state = self.lock();
            if state.submitted.is_empty() && !state.staged.is_empty() {
                // Nothing reached the GPU to wait for: let the worker come back at once.
                self.ready.signal();
            }
        }
        Some(self.ready.raw())
    }

    fn sweep(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut ended = Vec::new();
        {
            let mut state = self.lock();
            let mut cancelled = Vec::new();
            state.waiting.sweep(&mut cancelled);
            ended.extend(cancelled.into_iter().map(|w| (w.node, NodeEnd::Cancelled)));
            // Staged but not recorded: the GPU never saw them; their slots come back now.
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.staged)
                .into_iter()
                .partition(|s| s.node.is_tombstoned());
            state.staged_bytes = kept.iter().map(|s| s.piece.len).sum();
            state.staged = kept;
            for s in gone {
                state.free.extend(&s.slots);
                ended.push((s.node, NodeEnd::Cancelled));
            }
        }
        self.finish_all(ended, |node, end| node.finish(end));
    }

    fn drain(&self) {
        let mut ended = Vec::new();
        {
            let mut state = self.lock();
            ended.extend(state.waiting.drain().map(|w| (w.node, NodeEnd::Cancelled)));
            for s in std::mem::take(&mut state.staged) {
                state.free.extend(&s.slots);
                ended.push((s.node, NodeEnd::Cancelled));
            }
            state.staged_bytes = 0;
            // Work already submitted runs out: wait for the last value (or the loss).
            if let Some(last) = state.submitted.back().map(|s| s.value) {
                let semaphores = [self.timeline];
                let values = [last];
                let info = vk::SemaphoreWaitInfo::default().semaphores(&semaphores).values(&values);
                // SAFETY: as in `wait`.
                if let Err(r) = unsafe { self.context.device().wait_semaphores(&info, u64::MAX) } {
                    self.context.check(r, "cannot wait for the transfer timeline");
                }
            }
            let admitted = self.advance(&mut state, &mut ended);
            debug_assert!(admitted.is_empty(), "nothing waits after the queue was drained");
        }
        self.finish_all(ended, |node, end| node.finish(end));
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.drain();
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        assert!(
            state.submitted.is_empty() && state.staged.is_empty() && state.waiting.is_empty(),
            "the transfer queue was dropped with transfers in flight"
        );
        {
            let mut watch = self.watch.state.lock().unwrap_or_else(|p| p.into_inner());
            watch.shutdown = true;
        }
        self.watch.changed.notify_one();
        if let Some(watcher) = self.watcher.take() {
            // It ends within one bounded wait; a panic there changes nothing we free below.
            let _ = watcher.join();
        }
        let device = self.context.device();
        // SAFETY: `drain` waited for every submission (or the device is lost), and the timeline
        // thread has stopped, so nothing uses the command buffers, the semaphore or the staging
        // memory; each is destroyed once, here.
        unsafe {
            for pool in self.pools.iter_mut() {
                let pool = pool.get_mut().unwrap_or_else(|p| p.into_inner());
                device.destroy_command_pool(pool.pool, None);
            }
            device.destroy_semaphore(self.timeline, None);
            device.destroy_semaphore(self.completion, None);
            ManuallyDrop::take(&mut self.staging).destroy(&self.context);
        }
    }
}
