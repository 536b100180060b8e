//! The upload stage and the GPU timeline reactor: host bytes into GPU buffers.
//!
//! An `Upload` node copies its bytes (in scratch, or a caller's memory) into staging slots of a
//! fixed, host-visible budget and hands the node to the [`Uploader`]. Staged pieces are batched:
//! one command buffer records every piece ready when a worker polls (or when enough are ready),
//! one `vkCmdCopyBuffer` per destination buffer with a region per slot, and one submission
//! signals the uploader's timeline semaphore with the batch's value. Idle workers poll the
//! semaphore's counter; one of them blocks in `vkWaitSemaphores` for the oldest value in
//! flight ([`Reactor::wait`]). When the GPU passes a value, its nodes complete and their staging
//! slots go back to the budget: on success, failure and cancellation alike, staging is reused
//! only once the GPU is done with it. Uploads that find no free slot wait in the engine's
//! [`WaitQueue`], first come, first served; nothing grows with the number of requests.
//!
//! A lost device (a submission or a wait reports `VK_ERROR_DEVICE_LOST`) fails every upload in
//! flight and every later one with an error carrying the `VkResult`; host requests go on.
//!
//! For a worker that waits on the ring and the GPU at once, a timeline thread blocks in
//! `vkWaitSemaphores` for the oldest value in flight and signals an eventfd when the GPU reaches
//! it ([`Reactor::arm`]), so GPU completions never sit behind `io_uring_enter`.

use std::collections::VecDeque;
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use ash::vk;
use dsr_engine::{Completer, Error, EventFd, NodeEnd, PendingNode, Reactor, Result, WaitQueue};

use crate::buffer::HostVisible;
use crate::context::{vk_error, GpuContext};
use crate::timeline::{watch_timeline, Watch};

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

/// Counters of what the uploader did.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Submissions (each one command buffer, one timeline value).
    pub submits: AtomicU64,
    /// Copy regions recorded.
    pub regions: AtomicU64,
    /// Bytes uploaded.
    pub bytes: AtomicU64,
    /// Uploads that waited for staging.
    pub waited: AtomicU64,
    /// The most staging slots held at once.
    pub peak_slots: AtomicUsize,
}

/// One upload's bytes and where they go.
pub(crate) struct Piece {
    /// The bytes: the node's input, valid until the node completes.
    pub src: *const u8,
    pub len: u64,
    pub dst: vk::Buffer,
    pub dst_offset: u64,
}

// SAFETY: `src` points at bytes the engine keeps alive and unchanged until the piece's node
// completes (scratch between its request's acquire and release, or a caller's memory source);
// the piece travels with its node.
unsafe impl Send for Piece {}

/// A piece copied into its slots, waiting for a submission.
struct Staged {
    node: PendingNode,
    piece: Piece,
    slots: Vec<u32>,
}

/// A submitted command buffer and what completes when the timeline reaches `value`.
struct Submission {
    value: u64,
    cb: vk::CommandBuffer,
    nodes: Vec<(PendingNode, u64)>,
    slots: Vec<u32>,
}

struct State {
    free: Vec<u32>,
    waiting: WaitQueue<Piece>,
    staged: Vec<Staged>,
    staged_bytes: u64,
    submitted: VecDeque<Submission>,
    /// The value the next submission signals.
    next_value: u64,
    pool: vk::CommandPool,
    spare: Vec<vk::CommandBuffer>,
}

/// The staging budget, the uploads in it, and the timeline that says when the GPU is done.
/// Shared by the [`UploadStage`](crate::UploadStage) and the executor (as a reactor).
pub struct Uploader {
    pub(crate) context: Arc<GpuContext>,
    /// Destroyed in `Drop`, once the GPU is done with it.
    staging: ManuallyDrop<HostVisible>,
    pub(crate) slot: u64,
    pub(crate) slots: usize,
    timeline: vk::Semaphore,
    state: Mutex<State>,
    /// Upload nodes accepted and not completed.
    in_flight: AtomicUsize,
    stats: UploadStats,
    /// Signalled by the timeline thread when the GPU reaches the oldest value in flight.
    ready: Arc<EventFd>,
    watch: Arc<Watch>,
    /// The timeline thread; joined in `Drop` before the semaphore goes.
    watcher: Option<JoinHandle<()>>,
}

// SAFETY: the staging memory's pointer is only written through slots a single piece holds (the
// free list hands each slot to one holder at a time), and the Vulkan handles are used under
// `state`'s lock or from calls Vulkan allows on any thread.
unsafe impl Send for Uploader {}
// SAFETY: as above.
unsafe impl Sync for Uploader {}

impl fmt::Debug for Uploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uploader")
            .field("slots", &self.slots)
            .field("slot", &self.slot)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl Uploader {
    /// Allocates the staging budget (host-visible, mapped, every page touched now), a timeline
    /// semaphore and a command pool on the transfer queue's family.
    pub fn new(context: &Arc<GpuContext>, config: StagingConfig) -> Result<Arc<Uploader>> {
        let slot = config.slot.max(4096).next_multiple_of(4096);
        let slots = config.budget.div_ceil(slot).clamp(1, u32::MAX as u64) as usize;
        let staging = HostVisible::new(context, slots as u64 * slot, false)?;
        // Pre-fault: a first touch of fresh memory runs at 1-2 GB/s here, and is not upload time.
        for page in (0..staging.len).step_by(4096) {
            // SAFETY: inside the mapping just made, which nothing else uses yet.
            unsafe { staging.ptr.add(page as usize).write_volatile(0) };
        }
        let device = context.device();
        let mut kind = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(0);
        let pool_info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(context.transfer_queue().family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: valid create infos; both are destroyed in `Drop`, after the GPU is done.
        let made = unsafe {
            device
                .create_semaphore(&vk::SemaphoreCreateInfo::default().push_next(&mut kind), None)
                .and_then(|timeline| match device.create_command_pool(&pool_info, None) {
                    Ok(pool) => Ok((timeline, pool)),
                    Err(r) => {
                        device.destroy_semaphore(timeline, None);
                        Err(r)
                    }
                })
        };
        let (timeline, pool) = match made {
            Ok(made) => made,
            Err(r) => {
                // SAFETY: unused.
                unsafe { staging.destroy(context) };
                return Err(vk_error(r, "cannot create the upload timeline"));
            }
        };
        let ready = match EventFd::new() {
            Ok(fd) => Arc::new(fd),
            Err(err) => {
                // SAFETY: unused, made above.
                unsafe {
                    device.destroy_command_pool(pool, None);
                    device.destroy_semaphore(timeline, None);
                    staging.destroy(context);
                }
                return Err(Error::from_io(err, "cannot create the upload timeline's eventfd"));
            }
        };
        let watch = Arc::new(Watch::default());
        let watcher = {
            let (context, watch, ready) = (context.clone(), watch.clone(), ready.clone());
            std::thread::Builder::new()
                .name("dsr-gpu-timeline".into())
                .spawn(move || watch_timeline(context, timeline, watch, ready))
        };
        let watcher = match watcher {
            Ok(handle) => handle,
            Err(err) => {
                // SAFETY: unused, made above; no thread runs.
                unsafe {
                    device.destroy_command_pool(pool, None);
                    device.destroy_semaphore(timeline, None);
                    staging.destroy(context);
                }
                return Err(Error::from_io(err, "cannot start the upload timeline thread"));
            }
        };
        Ok(Arc::new(Uploader {
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
                pool,
                spare: Vec::new(),
            }),
            in_flight: AtomicUsize::new(0),
            stats: UploadStats::default(),
        }))
    }

    /// What it did so far.
    pub fn stats(&self) -> &UploadStats {
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

    /// The timeline semaphore uploads signal, and the value the last submission will signal:
    /// a renderer that waits for it on the GPU sees every upload submitted so far.
    pub fn timeline(&self) -> (vk::Semaphore, u64) {
        (self.timeline, self.lock().next_value - 1)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn slots_for(&self, len: u64) -> usize {
        len.div_ceil(self.slot) as usize
    }

    /// Accepts an upload: stages it now if slots are free, else queues it.
    pub(crate) fn start(&self, node: PendingNode, piece: Piece) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let need = self.slots_for(piece.len);
        let mut state = self.lock();
        if state.waiting.is_empty() && state.free.len() >= need {
            let slots = self.take_slots(&mut state, need);
            drop(state);
            self.stage(Staged { node, piece, slots });
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

    /// Copies a piece into its slots (outside the lock: this is the memcpy), then queues it for
    /// the next submission, submitting now if enough is staged.
    fn stage(&self, staged: Staged) {
        let mut done = 0u64;
        for &slot in &staged.slots {
            let this = (staged.piece.len - done).min(self.slot);
            // SAFETY: (1) the slot is this piece's alone until its submission completes; (2) the
            // source holds `len` bytes valid while the node is unfinished; (3) staging and
            // sources never overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    staged.piece.src.add(done as usize),
                    self.staging.ptr.add((slot as u64 * self.slot) as usize),
                    this as usize,
                )
            };
            done += this;
        }
        let failed = {
            let mut state = self.lock();
            state.staged_bytes += staged.piece.len;
            state.staged.push(staged);
            if state.staged_bytes >= SUBMIT_BYTES {
                self.submit(&mut state)
            } else {
                Vec::new()
            }
        };
        self.finish_all(failed, |node, end| node.finish(end));
    }

    /// Records every staged piece into one command buffer and submits it, signalling the next
    /// timeline value. Returns the nodes that failed (with the slots already back).
    fn submit(&self, state: &mut State) -> Vec<(PendingNode, NodeEnd)> {
        if state.staged.is_empty() {
            return Vec::new();
        }
        let mut staged = std::mem::take(&mut state.staged);
        state.staged_bytes = 0;
        match self.record_and_submit(state, &mut staged) {
            Ok(submission) => {
                state.submitted.push_back(submission);
                self.watch.set(state.submitted.front().map(|s| s.value));
                Vec::new()
            }
            Err(err) => {
                let mut failed = Vec::new();
                for s in staged {
                    state.free.extend(&s.slots);
                    failed.push((s.node, NodeEnd::Failed(err.clone())));
                }
                failed
            }
        }
    }

    fn record_and_submit(&self, state: &mut State, staged: &mut Vec<Staged>) -> Result<Submission> {
        let device = self.context.device();
        let cb = match state.spare.pop() {
            Some(cb) => cb,
            None => {
                let alloc = vk::CommandBufferAllocateInfo::default()
                    .command_pool(state.pool)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(1);
                // SAFETY: the pool is used under the state lock only, which the caller holds.
                unsafe { device.allocate_command_buffers(&alloc) }
                    .map_err(|r| vk_error(r, "cannot allocate an upload command buffer"))?[0]
            }
        };
        // One copy command per destination buffer: sort the pieces by it.
        staged.sort_by_key(|s| s.piece.dst);
        let mut regions = Vec::new();
        let begin = vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: (1) the command buffer is this uploader's, not in flight (spare ones were
        // returned only after their submission completed), recorded under the state lock;
        // (2) every destination buffer is alive (its handle is held by a batch until the node
        // completes) and the regions lie inside it (`compile` checked the node's range).
        unsafe {
            device
                .begin_command_buffer(cb, &begin)
                .map_err(|r| vk_error(r, "cannot record uploads"))?;
            let mut at = 0;
            while at < staged.len() {
                let dst = staged[at].piece.dst;
                regions.clear();
                while at < staged.len() && staged[at].piece.dst == dst {
                    let piece = &staged[at].piece;
                    let mut done = 0;
                    for &slot in &staged[at].slots {
                        let size = (piece.len - done).min(self.slot);
                        regions.push(vk::BufferCopy {
                            src_offset: slot as u64 * self.slot,
                            dst_offset: piece.dst_offset + done,
                            size,
                        });
                        done += size;
                    }
                    at += 1;
                }
                device.cmd_copy_buffer(cb, self.staging.buffer, dst, &regions);
                self.stats.regions.fetch_add(regions.len() as u64, Ordering::Relaxed);
            }
            device
                .end_command_buffer(cb)
                .map_err(|r| vk_error(r, "cannot record uploads"))?;
        }
        let value = state.next_value;
        let values = [value];
        let semaphores = [self.timeline];
        let cbs = [cb];
        let mut timeline = vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&values);
        let submit = vk::SubmitInfo::default()
            .command_buffers(&cbs)
            .signal_semaphores(&semaphores)
            .push_next(&mut timeline);
        // SAFETY: the command buffer copies from this uploader's staging into destinations kept
        // alive until the submission completes (their batches hold them); no fence.
        let submitted = unsafe {
            self.context
                .submit(self.context.transfer_queue(), &[submit], vk::Fence::null())
        };
        if let Err(err) = submitted {
            // Never submitted: the command buffer can be reused.
            state.spare.push(cb);
            return Err(err);
        }
        state.next_value += 1;
        self.stats.submits.fetch_add(1, Ordering::Relaxed);
        let mut nodes = Vec::with_capacity(staged.len());
        let mut slots = Vec::new();
        for s in staged.drain(..) {
            self.stats.bytes.fetch_add(s.piece.len, Ordering::Relaxed);
            slots.extend(s.slots);
            nodes.push((s.node, s.piece.len));
        }
        Ok(Submission {
            value,
            cb,
            nodes,
            slots,
        })
    }

    /// The value the GPU has reached, or the loss that stops it.
    fn reached(&self) -> Result<u64> {
        // SAFETY: the semaphore is this uploader's and alive.
        unsafe { self.context.device().get_semaphore_counter_value(self.timeline) }
            .map_err(|r| self.context.check(r, "cannot read the upload timeline"))
    }

    /// Retires every submission the GPU has finished (or all of them, failed, if the device was
    /// lost), admits waiting uploads into the freed slots, and submits what is staged. Returns
    /// the nodes to complete and the uploads admitted (to stage outside the lock).
    fn advance(&self, state: &mut State, ended: &mut Vec<(PendingNode, NodeEnd)>) -> Vec<Staged> {
        let reached = if self.context.is_lost() {
            Err(self.context.lost_error())
        } else {
            self.reached()
        };
        while let Some(front) = state.submitted.front() {
            let end = match &reached {
                Ok(value) if front.value <= *value => None,
                Ok(_) => break,
                Err(err) => Some(err.clone()),
            };
            let submission = state.submitted.pop_front().expect("front exists");
            // The GPU is done with the slots and the command buffer (or will never run them).
            state.free.extend(&submission.slots);
            state.spare.push(submission.cb);
            for (node, len) in submission.nodes {
                let node_end = match &end {
                    None => NodeEnd::Done { bytes: len },
                    Some(err) => NodeEnd::Failed(err.clone()),
                };
                ended.push((node, node_end));
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
        ended.extend(self.submit(state));
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

    fn poll_with(&self, mut finish: impl FnMut(PendingNode, NodeEnd)) -> usize {
        // Consume the readiness before reading the timeline: a value reached after the read
        // leaves the eventfd readable for the next wait.
        self.ready.drain();
        let mut ended = Vec::new();
        let admitted = {
            let mut state = self.lock();
            self.advance(&mut state, &mut ended)
        };
        let n = self.finish_all(ended, &mut finish);
        for staged in admitted {
            self.stage(staged);
        }
        n
    }
}

impl Reactor for Uploader {
    fn poll(&self, completer: &mut Completer<'_>) -> usize {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.poll_with(|node, end| completer.finish(node, end))
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn wait(&self, timeout: Duration) {
        let oldest = {
            let mut state = self.lock();
            let failed = self.submit(&mut state);
            if !failed.is_empty() {
                drop(state);
                self.finish_all(failed, |node, end| node.finish(end));
                return;
            }
            state.submitted.front().map(|s| s.value)
        };
        let Some(value) = oldest else {
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
                self.context.check(r, "cannot wait for the upload timeline");
            }
        }
    }

    fn arm(&self) -> Option<std::os::fd::RawFd> {
        let failed = {
            let mut state = self.lock();
            let failed = self.submit(&mut state);
            if state.submitted.is_empty() && !state.staged.is_empty() {
                // Nothing reached the GPU to wait for: let the worker come back at once.
                self.ready.signal();
            }
            failed
        };
        if !failed.is_empty() {
            self.ready.signal();
            self.finish_all(failed, |node, end| node.finish(end));
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
            // Staged but not submitted: the GPU never saw them; their slots come back now.
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
                    self.context.check(r, "cannot wait for the upload timeline");
                }
            }
            let admitted = self.advance(&mut state, &mut ended);
            debug_assert!(admitted.is_empty(), "nothing waits after the queue was drained");
        }
        self.finish_all(ended, |node, end| node.finish(end));
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.drain();
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        assert!(
            state.submitted.is_empty() && state.staged.is_empty() && state.waiting.is_empty(),
            "the uploader was dropped with uploads in flight"
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
            device.destroy_command_pool(state.pool, None);
            device.destroy_semaphore(self.timeline, None);
            ManuallyDrop::take(&mut self.staging).destroy(&self.context);
        }
    }
}
