//! The DirectStorage-shaped queue: enqueue, then submit; a fixed capacity of slots; status,
//! signal and event entries that complete after everything enqueued before them; cancellation by
//! tag; an error record. Built on batches: each submission is one batch of the requests enqueued
//! since the last.
//!
//! **The ledger.** Every operation enqueued takes a slot and a sequence number, in enqueue order,
//! in one ordered ledger per queue. A request's slot comes back when it finishes (the batch tells
//! the queue as each request finishes, in any order). Status, signal and event entries are not
//! graph nodes: an entry fires when everything before it in the ledger has finished and it has
//! been submitted, so it never delays later work, and it also waits for requests of batches
//! still in flight, which a barrier node inside one batch's graph could not see without
//! cross-batch edges. The ledger pops finished operations off its front in enqueue order; a
//! status entry reports the first failure popped since the previous status entry, which is the
//! first failure in enqueue order. Entries fire under the ledger's lock, so what they signal is
//! seen in enqueue order: a caller woken by a fence finds every earlier status complete.
//!
//! **Finishing without the lock.** The thread that enqueues and the workers that finish requests
//! would otherwise meet on the ledger's lock once per request each, and on a many-core machine
//! the enqueuing thread spends its time waiting there. So a request that finishes well only sets
//! its flag in its batch's [`Track`] and gives its slot back (an atomic count). It takes the lock
//! only when a submitted status, signal, event or notify entry is waiting (it may be what that
//! entry waits for) or a full queue has an enqueuer waiting; otherwise the enqueuing thread pops
//! finished requests as it enqueues. Each handshake is a store, a sequentially consistent fence
//! and a load on each side: a finisher sets its flag, then reads how many entries wait; a
//! submission counts its entries, then reads the flags at the front. One of them sees the other,
//! so no entry is left waiting for a request that finished; the same holds between a finisher
//! giving its slot back and an enqueuer about to sleep. Loom models at the end of this file
//! check both on the real code. Failures take the lock, to be recorded in order.
//!
//! **Slots.** A queue of capacity C holds at most C − 1 operations (DirectStorage's ring with one
//! reserved slot). `enqueue` blocks while the queue is full and `try_enqueue` returns
//! [`ErrorKind::WouldBlock`]; operations start at [`Queue::submit`] or once half the capacity is
//! waiting to be submitted (auto-submit), so a full queue always has submitted work to wait for.
//!
//! **Early start.** A title opens files and enqueues requests one by one before its `Submit`; on
//! a machine of many cores the workers would idle through that loop. So once a group of
//! [`QueueConfig::early_start`] operations waits, it starts at once if fewer of the queue's
//! operations are in flight than the executor has workers. Each group that starts doubles the
//! next one until the caller submits: a long loop of tiny requests makes a few batches, not one
//! per group (a batch costs more than a request). Entries in a group fire as they would after a
//! submit (everything before them finished); a group's order against later ones is the
//! ledger's, as between submits. DirectStorage promises nothing more: its queues submit on their
//! own too, and `Submit` only guarantees a start.
//!
//! **Close.** [`Queue::close`] cancels what is in flight, waits until none of it touches its
//! destination again, drops what was not submitted, and completes nothing afterwards (no status,
//! signal or event fires); every later call fails with [`ErrorKind::Closed`]. On an executor's
//! worker or in a request's callback it cannot wait (what is in flight may need that thread):
//! there it cancels and returns, and a close from another thread afterwards waits. Dropping the
//! last handle closes the queue too, without waiting (the batches keep the memory they write
//! alive until they retire).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bitflags::bitflags;
use crossbeam_utils::CachePadded;

use crate::batch::{Batch, BatchBuilder, RequestStatus};
use crate::error::{Error, ErrorKind, Result};
use crate::eventfd::EventFd;
use crate::executor::Executor;
use crate::request::{IoPolicy, Priority, Request, RequestRecord, Source};
use crate::sync::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The fewest slots a queue may have.
pub const MIN_CAPACITY: u32 = 0x80;
/// The most slots a queue may have.
pub const MAX_CAPACITY: u32 = 0x2000;
/// [`QueueConfig::early_start`]'s default: small enough to start a 16-core machine's workers early
/// in a title's loop (groups double from there).
pub const DEFAULT_EARLY_START: u32 = 16;
/// The longest request name an error record keeps, in characters.
pub const MAX_RECORDED_NAME: usize = 64;

/// The kind of source a queue takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceType {
    /// File ranges.
    #[default]
    File,
    /// Memory blocks (and GPU buffers, which dsr reads like memory).
    Memory,
}

bitflags! {
    /// Where compressed data can be decoded (DirectStorage's `DSTORAGE_COMPRESSION_SUPPORT`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct CompressionSupport: u32 {
        /// A GPU decoder tuned for the device.
        const GPU_OPTIMIZED = 0x1;
        /// A GPU decoder that works on any device.
        const GPU_FALLBACK = 0x2;
        /// The CPU decoder.
        const CPU_FALLBACK = 0x4;
    }
}

bitflags! {
    /// What a queue does besides its work, for debugging (DirectStorage's debug flags).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct DebugFlags: u32 {
        /// Print every failure to standard error as it happens.
        const SHOW_ERRORS = 0x1;
        /// Keep request names for error records (without it, records carry no request name).
        const RECORD_NAMES = 0x4;
    }
}

/// How a queue is made.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// The kind of source every request must have.
    pub source: SourceType,
    /// Slots: operations (requests, statuses, signals, events) held at once, plus one.
    pub capacity: u32,
    /// The priority every request of the queue runs at.
    pub priority: Priority,
    /// A name for messages.
    pub name: String,
    /// When set, every file request of the queue reads this way (DirectStorage's
    /// `ForceFileBuffering` is `Some(Buffered)`).
    pub io: Option<IoPolicy>,
    /// What the queue does for debugging.
    pub debug: DebugFlags,
    /// Early start: once this many operations wait to be submitted, they start at once if fewer
    /// of the queue's operations are in flight than the executor has workers, and the next group
    /// is twice as large, until [`Queue::submit`] (0: only submit and auto-submit start them). A
    /// title's loop of `OpenFile` and `EnqueueRequest` before its `Submit` then overlaps with the
    /// loads it enqueues.
    pub early_start: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            source: SourceType::File,
            capacity: 0x400,
            priority: Priority::Normal,
            name: String::new(),
            io: None,
            debug: DebugFlags::RECORD_NAMES,
            early_start: DEFAULT_EARLY_START,
        }
    }
}

/// What one status entry says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusEntry {
    /// Never enqueued.
    Unused,
    /// Enqueued; some operation before it has not finished.
    Pending,
    /// Every request since the previous status entry finished without failing (cancelled
    /// requests are not failures).
    Ok,
    /// The first request since the previous status entry that failed, in enqueue order.
    Failed(Error),
}

/// An array of status entries a queue writes (DirectStorage's status array).
#[derive(Debug)]
pub struct StatusArray {
    entries: Mutex<Vec<StatusEntry>>,
}

impl StatusArray {
    /// `len` unused entries.
    pub fn new(len: usize) -> Arc<StatusArray> {
        Arc::new(StatusArray {
            entries: Mutex::new(vec![StatusEntry::Unused; len]),
        })
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `index` now (`Unused` past the end).
    pub fn get(&self, index: usize) -> StatusEntry {
        self.lock().get(index).cloned().unwrap_or(StatusEntry::Unused)
    }

    /// Whether entry `index` has completed (Ok or Failed).
    pub fn is_complete(&self, index: usize) -> bool {
        matches!(self.get(index), StatusEntry::Ok | StatusEntry::Failed(_))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<StatusEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks entry `index` pending, unless it is pending already (or does not exist).
    /// Marks entry `index` pending for a new use; what it held before, to put back if the
    /// queue refuses the entry after all.
    fn claim(&self, index: usize) -> Result<StatusEntry> {
        let mut entries = self.lock();
        let len = entries.len();
        match entries.get_mut(index) {
            None => Err(invalid(format!("status entry {index} of an array of {len}"))),
            Some(StatusEntry::Pending) => Err(invalid(format!(
                "status entry {index} is still pending; enqueue it again once it has completed"
            ))),
            Some(entry) => Ok(std::mem::replace(entry, StatusEntry::Pending)),
        }
    }

    fn set(&self, index: usize, entry: StatusEntry) {
        if let Some(slot) = self.lock().get_mut(index) {
            *slot = entry;
        }
    }
}

/// A 64-bit value queues set when signal entries complete (DirectStorage's fence): wait for a
/// value, poll its eventfd, or read it.
#[derive(Debug)]
pub struct Fence {
    value: Mutex<u64>,
    changed: Condvar,
    eventfd: EventFd,
}

impl Fence {
    /// A fence at 0.
    pub fn new() -> io::Result<Arc<Fence>> {
        Ok(Arc::new(Fence {
            value: Mutex::new(0),
            changed: Condvar::new(),
            eventfd: EventFd::new()?,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value now.
    pub fn value(&self) -> u64 {
        *self.lock()
    }

    /// Sets the value (queues do this when a signal entry completes), wakes waiters and makes
    /// the eventfd readable.
    pub fn signal(&self, value: u64) {
        *self.lock() = value;
        self.eventfd.signal();
        self.changed.notify_all();
    }

    /// Blocks until the value is at least `value`.
    pub fn wait(&self, value: u64) {
        let mut now = self.lock();
        while *now < value {
            now = self.changed.wait(now).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks until the value is at least `value` or `timeout` passes; returns whether it got
    /// there.
    pub fn wait_timeout(&self, value: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut now = self.lock();
        while *now < value {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            now = self
                .changed
                .wait_timeout(now, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// An eventfd that becomes readable whenever the value is set (read it to re-arm).
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is owned by this fence and closed only when it drops.
        unsafe { BorrowedFd::borrow_raw(self.eventfd.raw()) }
    }
}

/// What kind of operation a failure record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// A request.
    Request,
    /// A status entry.
    Status,
    /// A signal entry.
    Signal,
    /// An event entry.
    Event,
}

/// The first failure a queue saw, in enqueue order, since its error record was last retrieved.
#[derive(Clone, Debug)]
pub struct FailureRecord {
    /// What failed.
    pub command: CommandKind,
    /// The error: its kind (the result code), errno or `VkResult` (its source), path, offset,
    /// stage and tile.
    pub error: Error,
    /// The file the request read, if it named one by path.
    pub file: Option<PathBuf>,
    /// The request's name, at most [`MAX_RECORDED_NAME`] characters.
    pub name: Option<String>,
    /// A copy of the request, without its buffers.
    pub request: RequestRecord,
}

/// A queue's error record (DirectStorage's `RetrieveErrorRecord`).
#[derive(Clone, Debug, Default)]
pub struct ErrorRecord {
    /// Failures since the record was last retrieved.
    pub failure_count: u32,
    /// The first of them in enqueue order.
    pub first_failure: Option<FailureRecord>,
}

/// What [`Queue::query`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    /// Slots free: capacity − 1 when the queue is empty.
    pub empty_slots: u32,
    /// Operations that may still be enqueued before the queue submits on its own.
    pub until_auto_submit: u32,
}

/// Called once when a request enqueued with [`Queue::enqueue_with`] finishes, off the queue's
/// lock, on the thread that finished it.
pub type RequestDone = Box<dyn FnOnce(&RequestStatus) + Send>;

/// The requests of one submitted batch, as its workers report them (see the module docs).
struct Track {
    /// Each request's sequence number, by its index in the batch.
    seqs: Box<[u64]>,
    /// Each request's callback and record (for the error record), taken by the worker that
    /// finishes it.
    finish: Box<[Mutex<Finish>]>,
    /// Set once the request finished without failing.
    finished: Box<[AtomicBool]>,
}

/// What a request's finisher takes: its callback and the request's record.
type Finish = (Option<RequestDone>, Option<RequestRecord>);

/// One operation in the ledger.
enum Entry {
    Request {
        /// Its batch's track and its index there, once submitted.
        track: Option<(Arc<Track>, usize)>,
        /// Set, under the lock, when it failed (which finishes it too).
        failure: Option<Error>,
    },
    Status(Arc<StatusArray>, usize),
    Signal(Arc<Fence>, u64),
    Event(Arc<EventFd>),
    Notify(Notify),
}

/// What a notify entry runs: once, with the queue's ledger held, so it must be short (signal
/// something and return).
pub type Notify = Box<dyn FnOnce() + Send>;

struct Ledger {
    /// Operations not yet popped, in enqueue order; the front's sequence number is `front`.
    entries: VecDeque<Entry>,
    front: u64,
    /// Operations with a lower sequence number have been submitted.
    submitted: u64,
    /// The requests enqueued since the last submission, their sequence numbers, callbacks and
    /// copies.
    pending: Option<BatchBuilder>,
    pending_seqs: Vec<u64>,
    pending_finish: Vec<Finish>,
    /// Operations enqueued since the last submission (auto-submit counts them).
    pending_ops: u32,
    /// Entries (not requests) among them.
    pending_entries: u64,
    /// How many operations must wait before they start early: `early_start`, doubled by each
    /// group that did, back at `early_start` on submit (see `Shared::starts_early`).
    early_group: u32,
    /// Slots ever taken; `Shared::returned` counts those given back.
    taken: u64,
    /// The last value of `Shared::returned` read.
    returned_seen: u64,
    /// Submitted batches, to cancel by tag; pruned as they retire. After a close that could not
    /// wait (on a worker, or in a request's callback), the batches it cancelled, for a later
    /// close from elsewhere to wait for.
    in_flight: Vec<Batch>,
    /// The first failure popped since the last status entry fired.
    since_status: Option<Error>,
    errors: ErrorRecord,
    /// The sequence number of `errors.first_failure`.
    first_failure_seq: u64,
    closed: bool,
}

/// What a finisher checks before it may skip the ledger's lock.
struct FinisherFlags {
    /// Enqueuers waiting for a slot.
    waiters: AtomicU32,
    /// The count of slots given back at which finishers wake them (see `Shared::slot`).
    wake_at: AtomicU64,
    /// Submitted status, signal, event and notify entries that have not fired.
    waiting: AtomicU64,
    /// The ledger's `closed`.
    closed: AtomicBool,
}

/// The atomics finishers and the ledger's holders meet on (see the module docs). Each handshake
/// is a store then a load on each side, with a sequentially consistent fence between them: two
/// such fences are ordered, so one side's load sees the other's store. (Sequentially consistent
/// accesses alone would do in the C++ model, but loom does not model them for this pattern, and
/// the fences are what its models below check.)
struct Handshake {
    /// Slots given back, by finishers (without the lock) and by entries as they fire; slots
    /// held are the ledger's `taken` less this. On a line of its own: finishers write it, the
    /// enqueuing thread reads it only when the queue looks full.
    returned: CachePadded<AtomicU64>,
    /// What finishers read on every request, written rarely; on a line of its own.
    flags: CachePadded<FinisherFlags>,
}

/// What a request that finished well must do beyond its flag and its slot.
#[derive(Debug, PartialEq, Eq)]
struct AfterFinish {
    /// Wake the enqueuers waiting for slots (enough came back).
    wake_enqueuers: bool,
    /// Take the lock and advance the ledger (an entry waits, perhaps for this request).
    advance: bool,
}

impl Handshake {
    fn new() -> Handshake {
        Handshake {
            returned: CachePadded::new(AtomicU64::new(0)),
            flags: CachePadded::new(FinisherFlags {
                waiters: AtomicU32::new(0),
                wake_at: AtomicU64::new(0),
                waiting: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// A request finished well: sets its `flag`, gives its slot back, and says what else to do.
    fn finished_well(&self, flag: &AtomicBool) -> AfterFinish {
        flag.store(true, Ordering::SeqCst);
        let returned = self.give_back();
        fence(Ordering::SeqCst);
        AfterFinish {
            wake_enqueuers: self.flags.waiters.load(Ordering::SeqCst) > 0
                && returned >= self.flags.wake_at.load(Ordering::SeqCst),
            advance: self.flags.waiting.load(Ordering::SeqCst) > 0,
        }
    }

    /// Counts a slot given back; returns the count of those given back.
    fn give_back(&self) -> u64 {
        self.returned.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Slots given back so far.
    fn returned(&self) -> u64 {
        self.returned.load(Ordering::SeqCst)
    }

    /// `entries` (not requests) were submitted: finishers must advance until they fire. Called
    /// with the ledger locked, before it looks at the flags.
    fn entries_submitted(&self, entries: u64) {
        self.flags.waiting.fetch_add(entries, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// A submitted entry fired (with the ledger locked): one less waits, its slot is back.
    fn entry_fired(&self) {
        self.flags.waiting.fetch_sub(1, Ordering::SeqCst);
        self.give_back();
    }

    /// An enqueuer is about to wait for slots (with the ledger locked): finishers wake it once
    /// `batch` more have come back. It must look at the slots once more before it sleeps.
    fn enqueuer_waits(&self, batch: u64) {
        self.flags.waiters.fetch_add(1, Ordering::SeqCst);
        let returned = self.returned();
        self.flags.wake_at.store(returned + batch, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The enqueuer woke up (or did not need to sleep).
    fn enqueuer_woke(&self) {
        self.flags.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    fn close(&self) {
        self.flags.closed.store(true, Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.flags.closed.load(Ordering::SeqCst)
    }
}

struct Shared {
    executor: Arc<Executor>,
    config: QueueConfig,
    ledger: Mutex<Ledger>,
    /// Where finishers and lock holders meet without the lock.
    handshake: Handshake,
    /// Signalled when slots come back or the queue closes.
    space: Condvar,
    error_event: EventFd,
    /// Requests' own callbacks running now: closing waits for them, since nothing completes
    /// after a close (a caller frees what its callbacks touch once it has closed).
    calling: AtomicUsize,
}

thread_local! {
    /// The queue whose request callback this thread is running, if any: a close from inside a
    /// callback must not wait (for the callback itself, or for work that needs this thread).
    static CALLING: std::cell::Cell<*const Shared> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// A DirectStorage-shaped queue over an executor. Clones are handles to the same queue; it is
/// safe to use from several threads at once.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.shared.config.name)
            .field("capacity", &self.shared.config.capacity)
            .field("info", &self.query())
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the queue is closed")
}

impl Queue {
    /// A queue feeding `executor`. Refuses a capacity outside
    /// [`MIN_CAPACITY`]..=[`MAX_CAPACITY`].
    pub fn new(executor: Arc<Executor>, config: QueueConfig) -> Result<Queue> {
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&config.capacity) {
            return Err(invalid(format!(
                "a queue's capacity is {MIN_CAPACITY}..={MAX_CAPACITY} slots, not {}",
                config.capacity
            )));
        }
        let error_event = EventFd::new().map_err(|e| Error::from_io(e, "cannot create the queue's error event"))?;
        let early_group = config.early_start;
        Ok(Queue {
            shared: Arc::new(Shared {
                executor,
                config,
                ledger: Mutex::new(Ledger {
                    entries: VecDeque::new(),
                    front: 0,
                    submitted: 0,
                    pending: None,
                    pending_seqs: Vec::new(),
                    pending_finish: Vec::new(),
                    pending_ops: 0,
                    pending_entries: 0,
                    early_group,
                    taken: 0,
                    returned_seen: 0,
                    in_flight: Vec::new(),
                    since_status: None,
                    errors: ErrorRecord::default(),
                    first_failure_seq: 0,
                    closed: false,
                }),
                handshake: Handshake::new(),
                space: Condvar::new(),
                error_event,
                calling: AtomicUsize::new(0),
            }),
        })
    }

    /// How it was made.
    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Enqueues a request, waiting for a free slot while the queue is full. Refuses a request
    /// whose source is not of the queue's type, and anything lowering refuses (ranges, an
    /// overlapping destination), without taking a slot.
    pub fn enqueue(&self, request: Request) -> Result<()> {
        self.shared.enqueue_request(request, None, true)
    }

    /// [`Queue::enqueue`], but a full queue returns [`ErrorKind::WouldBlock`] at once.
    pub fn try_enqueue(&self, request: Request) -> Result<()> {
        self.shared.enqueue_request(request, None, false)
    }

    /// [`Queue::enqueue`] (or, without `wait`, [`Queue::try_enqueue`]) with `done` called once
    /// the request finishes, however it ends (not if the queue is closed first). Dropped
    /// uncalled when the enqueue is refused.
    pub fn enqueue_with(&self, request: Request, done: RequestDone, wait: bool) -> Result<()> {
        self.shared.enqueue_request(request, Some(done), wait)
    }

    /// Enqueues a status entry: entry `index` of `array` becomes pending, then Ok or the first
    /// failure (in enqueue order) among the requests enqueued since the previous status entry,
    /// once everything enqueued before it has finished. Refuses an entry still pending.
    pub fn enqueue_status(&self, array: &Arc<StatusArray>, index: usize) -> Result<()> {
        let before = array.claim(index)?;
        let entered = self.shared.enqueue_entry(Entry::Status(array.clone(), index), true);
        if entered.is_err() {
            // Refused (a closed queue): the entry keeps what it said, which may be another
            // queue's result the caller has not read yet. Nothing else writes an entry that is
            // pending without an owner.
            array.set(index, before);
        }
        entered
    }

    /// Enqueues a signal entry: `fence` is set to `value` once everything enqueued before it
    /// has finished.
    pub fn enqueue_signal(&self, fence: &Arc<Fence>, value: u64) -> Result<()> {
        self.shared.enqueue_entry(Entry::Signal(fence.clone(), value), true)
    }

    /// Enqueues an event entry: `event` is signalled once everything enqueued before it has
    /// finished.
    pub fn enqueue_event(&self, event: &Arc<EventFd>) -> Result<()> {
        self.shared.enqueue_entry(Entry::Event(event.clone()), true)
    }

    /// Enqueues a notify entry: `notify` runs once everything enqueued before it has finished,
    /// as a signal entry would be set (the GPU stages signal Vulkan timeline semaphores this
    /// way). It runs on whichever thread finishes the last of those, under the queue's lock:
    /// keep it short, and do not call back into the queue. Dropped unrun if the queue closes
    /// first.
    pub fn enqueue_notify(&self, notify: Notify) -> Result<()> {
        self.shared.enqueue_entry(Entry::Notify(notify), true)
    }

    /// Starts everything enqueued so far.
    pub fn submit(&self) -> Result<()> {
        let shared = &self.shared;
        let mut ledger = shared.lock();
        if ledger.closed {
            return Err(closed());
        }
        ledger.early_group = shared.config.early_start;
        shared.submit_locked(&mut ledger)
    }

    /// Cancels the requests of this queue whose `tag & mask == value`, best effort: those not
    /// yet started are skipped, those running finish. Cancelled requests are not failures, and
    /// status, signal and event entries still complete. Submits what was waiting first.
    pub fn cancel_requests_with_tag(&self, mask: u64, value: u64) -> Result<()> {
        let shared = &self.shared;
        let batches = {
            let mut ledger = shared.lock();
            if ledger.closed {
                return Err(closed());
            }
            shared.submit_locked(&mut ledger)?;
            ledger.in_flight.clone()
        };
        for batch in batches {
            batch.cancel_where(|info| info.tag & mask == value);
        }
        Ok(())
    }

    /// Free slots, and operations until the queue submits on its own.
    pub fn query(&self) -> QueueInfo {
        let ledger = self.shared.lock();
        let half = self.shared.config.capacity / 2;
        QueueInfo {
            empty_slots: (self.shared.config.capacity - 1)
                .saturating_sub(ledger.taken.saturating_sub(self.shared.handshake.returned()) as u32),
            until_auto_submit: half.saturating_sub(ledger.pending_ops),
        }
    }

    /// An eventfd that becomes readable when a request fails (DirectStorage's error event).
    pub fn error_event(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is owned by the queue and closed only when it drops.
        unsafe { BorrowedFd::borrow_raw(self.shared.error_event.raw()) }
    }

    /// Takes the error record: the failures since the last call, and the first of them in
    /// enqueue order.
    pub fn retrieve_error_record(&self) -> ErrorRecord {
        let mut ledger = self.shared.lock();
        ledger.first_failure_seq = 0;
        std::mem::take(&mut ledger.errors)
    }

    /// Closes the queue (see the module docs): nothing completes afterwards, and once it
    /// returns nothing in flight touches its destinations. Idempotent. Called on an executor's
    /// worker or from a request's callback, it cancels what is in flight without waiting for it
    /// (that thread may be what it needs to finish); a later close from another thread waits.
    pub fn close(&self) {
        self.shared.close(true);
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots held, as of the last read of the count given back (`fresh`: read it now).
    fn used(&self, ledger: &mut Ledger, fresh: bool) -> u32 {
        if fresh {
            ledger.returned_seen = self.handshake.returned();
        }
        ledger.taken.saturating_sub(ledger.returned_seen) as u32
    }

    /// Waits (or, without `wait`, refuses) until a slot is free; returns the ledger locked.
    fn slot(self: &Arc<Self>, wait: bool) -> Result<MutexGuard<'_, Ledger>> {
        let usable = self.config.capacity - 1;
        let mut ledger = self.lock();
        loop {
            if ledger.closed {
                return Err(closed());
            }
            // Slots come back only: a stale count of those returned errs on the full side, so
            // the shared counter is read only when the queue looks full.
            if self.used(&mut ledger, false) < usable || self.used(&mut ledger, true) < usable {
                return Ok(ledger);
            }
            if !wait {
                return Err(Error::new(
                    ErrorKind::WouldBlock,
                    format!("the queue's {usable} slots are all in use"),
                ));
            }
            // What waits to be submitted holds slots too: start it, so slots come back.
            self.submit_locked(&mut ledger)?;
            // Count this waiter before looking once more: a finisher gives its slot back, then
            // looks for waiters, so one of the two sees the other (see `release_slot`). Finishers
            // wake it once an eighth of the queue has come back, not for every slot: waking an
            // enqueuer costs more than the enqueue (entries that fire, failures and a close wake
            // it at once).
            self.handshake
                .enqueuer_waits(u64::from(self.config.capacity / 8).max(1));
            if self.used(&mut ledger, true) >= usable {
                ledger = self.space.wait(ledger).unwrap_or_else(|p| p.into_inner());
            }
            self.handshake.enqueuer_woke();
        }
    }

    fn enqueue_request(self: &Arc<Self>, mut request: Request, done: Option<RequestDone>, wait: bool) -> Result<()> {
        let fits = matches!(
            (&request.source, self.config.source),
            (Source::File { .. }, SourceType::File)
                | (Source::Memory { .. } | Source::Device { .. }, SourceType::Memory)
        );
        if !fits {
            return Err(invalid(format!(
                "a {:?} queue takes {} requests",
                self.config.source,
                match self.config.source {
                    SourceType::File => "file",
                    SourceType::Memory => "memory",
                }
            )));
        }
        request.priority = self.config.priority;
        if let Some(io) = self.config.io {
            request.io = io;
        }
        if !self.config.debug.contains(DebugFlags::RECORD_NAMES) {
            request.name = None;
        }
        let copy = request.record(MAX_RECORDED_NAME);
        let mut ledger = self.slot(wait)?;
        let executor = &self.executor;
        let batch = ledger.pending.get_or_insert_with(|| executor.batch());
        batch.push(request)?;
        let seq = ledger.front + ledger.entries.len() as u64;
        ledger.pending_seqs.push(seq);
        ledger.pending_finish.push((done, Some(copy)));
        ledger.entries.push_back(Entry::Request {
            track: None,
            failure: None,
        });
        self.entered(&mut ledger)
    }

    fn enqueue_entry(self: &Arc<Self>, entry: Entry, wait: bool) -> Result<()> {
        let mut ledger = self.slot(wait)?;
        ledger.entries.push_back(entry);
        ledger.pending_entries += 1;
        self.entered(&mut ledger)
    }

    /// Counts an operation just added to the ledger; submits when half the queue waits, or
    /// early (see [`QueueConfig::early_start`]). Pops the requests that finished meanwhile
    /// (nobody else does while no entry waits).
    fn entered(self: &Arc<Self>, ledger: &mut Ledger) -> Result<()> {
        self.advance(ledger);
        ledger.taken += 1;
        ledger.pending_ops += 1;
        if ledger.pending_ops >= self.config.capacity / 2 || self.starts_early(ledger) {
            self.submit_locked(ledger)?;
        }
        Ok(())
    }

    /// Whether the operations waiting to be submitted start now: a whole group of them waits
    /// and workers would otherwise idle. The next group is then twice as large. Reads the count
    /// of slots given back (a line finishers write) once a group, not once an operation.
    fn starts_early(&self, ledger: &mut Ledger) -> bool {
        let group = ledger.early_group;
        if group == 0 || !ledger.pending_ops.is_multiple_of(group) {
            return false;
        }
        let held = u64::from(self.used(ledger, true));
        let in_flight = held.saturating_sub(u64::from(ledger.pending_ops));
        if in_flight >= self.executor.workers() as u64 {
            return false;
        }
        ledger.early_group = group.saturating_mul(2);
        true
    }

    /// Submits the pending requests as one batch and lets the entries enqueued so far fire
    /// once what is before them has finished.
    fn submit_locked(self: &Arc<Self>, ledger: &mut Ledger) -> Result<()> {
        ledger.pending_ops = 0;
        ledger.submitted = ledger.front + ledger.entries.len() as u64;
        // Counted before `advance` looks at the flags (see the module docs).
        let entries = std::mem::take(&mut ledger.pending_entries);
        self.handshake.entries_submitted(entries);
        if let Some(mut batch) = ledger.pending.take() {
            let finish = std::mem::take(&mut ledger.pending_finish);
            let track = Arc::new(Track {
                finished: finish.iter().map(|_| AtomicBool::new(false)).collect(),
                finish: finish.into_iter().map(Mutex::new).collect(),
                seqs: std::mem::take(&mut ledger.pending_seqs).into(),
            });
            let front = ledger.front;
            for (index, seq) in track.seqs.iter().enumerate() {
                if let Some(Entry::Request { track: slot, .. }) = ledger.entries.get_mut((seq - front) as usize) {
                    *slot = Some((track.clone(), index));
                }
            }
            let queue = Arc::downgrade(self);
            batch.on_request_complete(move |request, status| {
                if let Some(queue) = Weak::upgrade(&queue) {
                    queue.finished(&track, request.index(), status);
                }
            });
            ledger.in_flight.retain(|b| !b.is_complete());
            match self.executor.submit(batch) {
                Ok(batch) => ledger.in_flight.push(batch),
                // Lowering checked every request, so only a shutting-down executor gets here:
                // the queue can do nothing more.
                Err(err) => {
                    ledger.closed = true;
                    self.handshake.close();
                    self.space.notify_all();
                    return Err(err);
                }
            }
        }
        self.advance(ledger);
        Ok(())
    }

    /// A request finished (on a worker).
    ///
    /// The request's own callback runs first, off the lock (it may call into the queue), and
    /// before the ledger learns of the request: so it has returned by the time any status,
    /// signal or event entry after the request fires. A request that finished well then only
    /// sets its flag and gives its slot back (see the module docs); a failure is recorded under
    /// the lock.
    fn finished(&self, track: &Track, index: usize, status: &RequestStatus) {
        if self.handshake.is_closed() {
            return;
        }
        let (done, copy) = std::mem::take(&mut *track.finish[index].lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(done) = done {
            // Counted before the closed check that decides it runs, so a close either sees it
            // and waits, or is seen and the callback does not run (both sequentially consistent).
            self.calling.fetch_add(1, Ordering::SeqCst);
            if !self.handshake.is_closed() {
                let outer = CALLING.with(|c| c.replace(self));
                // The caller's callback; its panic must not take the worker down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(status)));
                CALLING.with(|c| c.set(outer));
            }
            self.calling.fetch_sub(1, Ordering::SeqCst);
        }
        let seq = track.seqs[index];
        if let RequestStatus::Failed(error) = status {
            self.record_failure(seq, error, copy);
            return;
        }
        drop(copy);
        let after = self.handshake.finished_well(&track.finished[index]);
        if after.wake_enqueuers {
            // Taking the lock orders this notify after the waiter's check-then-wait.
            drop(self.lock());
            self.space.notify_all();
        }
        if after.advance {
            // An entry waits, perhaps for this request: pop what finished, fire what is uncovered.
            let mut ledger = self.lock();
            if !ledger.closed {
                self.advance(&mut ledger);
            }
        }
    }

    /// Records a failed request in the ledger (its error record, in enqueue order) and fires
    /// what that uncovers.
    fn record_failure(&self, seq: u64, error: &Error, copy: Option<RequestRecord>) {
        let mut guard = self.lock();
        let ledger = &mut *guard;
        if ledger.closed || seq < ledger.front {
            return;
        }
        let at = (seq - ledger.front) as usize;
        let Some(Entry::Request { failure, .. }) = ledger.entries.get_mut(at) else {
            debug_assert!(false, "sequence {seq} is not a request");
            return;
        };
        *failure = Some(error.clone());
        self.handshake.give_back();
        if self.config.debug.contains(DebugFlags::SHOW_ERRORS) {
            eprintln!("dsr queue {:?}: {error}", self.config.name);
        }
        let errors = &mut ledger.errors;
        errors.failure_count = errors.failure_count.saturating_add(1);
        if let Some(request) = copy {
            if errors.first_failure.is_none() || seq < ledger.first_failure_seq {
                ledger.first_failure_seq = seq;
                ledger.errors.first_failure = Some(FailureRecord {
                    command: CommandKind::Request,
                    file: request.file.as_deref().or(error.path()).map(|path| path.to_path_buf()),
                    name: request.name.clone(),
                    error: error.clone(),
                    request,
                });
            }
        }
        self.error_event.signal();
        self.advance(ledger);
        self.space.notify_all();
    }

    /// Pops finished requests off the front, in enqueue order, and fires the submitted entries
    /// they uncover.
    fn advance(&self, ledger: &mut Ledger) {
        let mut freed = false;
        while let Some(front) = ledger.entries.front() {
            match front {
                Entry::Request { track, failure, .. } if !finished(track, failure) => break,
                Entry::Request { .. } => {}
                _ if ledger.front >= ledger.submitted => break,
                _ => {}
            }
            let entry = ledger.entries.pop_front().expect("front exists");
            ledger.front += 1;
            // Requests gave their slots back as they finished; the other entries give
            // theirs back now.
            let fired = match entry {
                Entry::Request { failure, .. } => {
                    if ledger.since_status.is_none() {
                        ledger.since_status = failure;
                    }
                    false
                }
                Entry::Status(array, index) => {
                    let entry = match ledger.since_status.take() {
                        None => StatusEntry::Ok,
                        Some(err) => StatusEntry::Failed(err),
                    };
                    array.set(index, entry);
                    true
                }
                Entry::Signal(fence, value) => {
                    fence.signal(value);
                    true
                }
                Entry::Event(event) => {
                    event.signal();
                    true
                }
                Entry::Notify(notify) => {
                    notify();
                    true
                }
            };
            if fired {
                self.handshake.entry_fired();
                freed = true;
            }
        }
        if freed {
            self.space.notify_all();
        }
    }

    /// Closes the queue; with `wait`, returns once nothing in flight touches its destination.
    ///
    /// Except on an executor's worker or inside a request's callback: the requests still in
    /// flight may need that very thread to finish, so a close there cancels them and returns at
    /// once (waiting would hang a one-worker executor, or two callbacks closing each other's
    /// queues). A close from elsewhere afterwards waits for them (the last handle's drop
    /// never waits).
    fn close(&self, wait: bool) {
        let wait = wait && !crate::executor::on_worker() && CALLING.with(|c| c.get().is_null());
        let (batches, first) = {
            let mut ledger = self.lock();
            if ledger.closed {
                let unwaited = match wait {
                    true => std::mem::take(&mut ledger.in_flight),
                    false => Vec::new(),
                };
                (unwaited, false)
            } else {
                ledger.closed = true;
                self.handshake.close();
                // Never submitted: dropping the builder hands its destinations back.
                ledger.pending = None;
                ledger.pending_seqs.clear();
                ledger.pending_finish.clear();
                for entry in ledger.entries.drain(..) {
                    if let Entry::Status(array, index) = entry {
                        array.set(index, StatusEntry::Unused);
                    }
                }
                // Nothing holds a slot any more; later finishers may count past `taken`.
                ledger.taken = self.handshake.returned();
                let batches = match wait {
                    true => std::mem::take(&mut ledger.in_flight),
                    false => ledger.in_flight.clone(),
                };
                (batches, true)
            }
        };
        if first {
            self.space.notify_all();
        }
        for batch in batches {
            if first {
                let ticket = batch.cancel();
                if wait {
                    ticket.wait();
                }
            } else {
                // Cancelled by the close that could not wait: it retires promptly.
                batch.wait();
            }
        }
        if wait {
            // And the callbacks already running return: the soak's C ABI fuzzing freed a
            // callback's memory after the close returned, while a worker was still in the
            // callback. (This thread runs none: it would not wait.)
            while self.calling.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }
}

/// Whether a request entry has finished: failed (recorded under the lock) or done well (its
/// flag).
fn finished(track: &Option<(Arc<Track>, usize)>, failure: &Option<Error>) -> bool {
    failure.is_some()
        || track
            .as_ref()
            .is_some_and(|(track, index)| track.finished[*index].load(Ordering::SeqCst))
}

impl Drop for Shared {
    /// The last handle may go on a worker (a finishing request's callback holds one for a
    /// moment), which must not wait for its own batch: cancel, and let the batches hold the
    /// memory they write until they retire.
    fn drop(&mut self) {
        self.close(false);
    }
}

/// The handshakes of the module docs, on the real [`Handshake`], every interleaving explored
/// (`RUSTFLAGS="--cfg loom" cargo test -p dsr-engine --release --lib loom_models`). The ledger
/// is modelled by what the handshakes need of it: a lock over "submitted", "fired" and the slots
/// taken, and the condition variable enqueuers sleep on.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    #[derive(Default)]
    struct Ledger {
        submitted: bool,
        fired: bool,
        taken: u64,
    }

    /// What `Shared::advance` does for the model: fire the submitted entry once the request
    /// before it has finished.
    fn advance(ledger: &mut Ledger, handshake: &Handshake, flag: &AtomicBool) {
        if ledger.submitted && !ledger.fired && flag.load(Ordering::SeqCst) {
            ledger.fired = true;
            handshake.entry_fired();
        }
    }

    /// A request finishing (without the lock) races the submission of the signal entry after
    /// it: the entry fires either way, exactly once.
    #[test]
    fn an_entry_never_waits_for_a_request_that_finished() {
        loom::model(|| {
            let handshake = Arc::new(Handshake::new());
            let flag = Arc::new(AtomicBool::new(false));
            let ledger = Arc::new(Mutex::new(Ledger::default()));
            let finisher = {
                let (handshake, flag, ledger) = (handshake.clone(), flag.clone(), ledger.clone());
                thread::spawn(move || {
                    if handshake.finished_well(&flag).advance {
                        advance(&mut ledger.lock().unwrap(), &handshake, &flag);
                    }
                })
            };
            {
                let mut ledger = ledger.lock().unwrap();
                ledger.submitted = true;
                handshake.entries_submitted(1);
                advance(&mut ledger, &handshake, &flag);
            }
            finisher.join().unwrap();
            assert!(ledger.lock().unwrap().fired, "the entry fired");
            assert_eq!(handshake.flags.waiting.load(Ordering::SeqCst), 0);
        });
    }

    /// An enqueuer finds the queue full (one usable slot, taken) and sleeps; the request holding
    /// the slot finishes without the lock. The enqueuer is woken (loom fails a model that
    /// sleeps forever) and takes the slot.
    #[test]
    fn a_blocked_enqueuer_is_woken_when_its_slot_comes_back() {
        loom::model(|| {
            let handshake = Arc::new(Handshake::new());
            let ledger = Arc::new((
                Mutex::new(Ledger {
                    taken: 1,
                    ..Ledger::default()
                }),
                Condvar::new(),
            ));
            let usable = 1;
            let finisher = {
                let (handshake, ledger) = (handshake.clone(), ledger.clone());
                thread::spawn(move || {
                    let flag = AtomicBool::new(false);
                    if handshake.finished_well(&flag).wake_enqueuers {
                        drop(ledger.0.lock().unwrap());
                        ledger.1.notify_all();
                    }
                })
            };
            let (lock, space) = &*ledger;
            let mut guard = lock.lock().unwrap();
            loop {
                if guard.taken - handshake.returned() < usable {
                    guard.taken += 1;
                    break;
                }
                handshake.enqueuer_waits(1);
                if guard.taken - handshake.returned() >= usable {
                    guard = space.wait(guard).unwrap();
                }
                handshake.enqueuer_woke();
            }
            drop(guard);
            finisher.join().unwrap();
            assert_eq!(handshake.flags.waiters.load(Ordering::SeqCst), 0);
        });
    }
}
