//! The Rust queue sequence interpreter shared by `tests/queue_sequences.rs` and the
//! `queue_sequences` fuzz target: bytes in, calls on [`Runtime`]s and their queues out, in any
//! order. Each operation takes a byte for what to do and three for its arguments: runtimes made
//! and dropped (with their queues alive), queues made with sound and unsound configurations,
//! closed, dropped with work in flight; requests sound and hostile (ranges past the end,
//! destinations out of range, the wrong source for the queue, garbage and truncated GDeflate,
//! a destination shared with the request before), with and without callbacks, blocking and not;
//! status, signal and event entries; submits, cancellations by tag, queries, error records; and
//! callbacks that call back in (close their own queue, enqueue into another, cancel, submit).
//!
//! What must hold, checked when the sequence ends: nothing panics or hangs; a sound request is
//! accepted (unless its queue is closed, or full for `try`), and a hostile one is refused or
//! fails, never done; every accepted request's callback runs exactly once (at most once where
//! its queue closed before the end); a done request's bytes are its source's; no byte lands
//! outside a destination (canaries); every destination comes back to its owner; status entries
//! agree with the requests before them.

// Arguments are picked by remainders of bytes: `b % 7 == 0` reads as the choice it is.
#![allow(clippy::manual_is_multiple_of)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dsr::engine::queue::{RequestDone, MAX_CAPACITY, MIN_CAPACITY};
use dsr::engine::EventFd;
use dsr::{
    ErrorKind, Fence, HostBuffer, QueueConfig, Request, RequestStatus, Runtime, RuntimeConfig, RuntimeFile,
    RuntimeQueue, SourceType, StatusArray, StatusEntry,
};

/// How long the end waits for a queue to drain, or a destination to come back.
const PATIENCE: Duration = Duration::from_secs(30);
/// Canary bytes on each side of every host destination.
const GUARD: usize = 64;
/// Bytes each write owns in the output file.
const WRITE_SLOT: u64 = 80_000;
/// Runtimes alive at once (each starts workers and a ring on its first queue).
const MAX_RUNTIMES: usize = 3;

/// The files and bytes sequences read: made once, shared by every sequence.
#[derive(Debug)]
pub struct World {
    /// Plain bytes, and the file holding them.
    pub data: Arc<[u8]>,
    pub data_path: PathBuf,
    /// A GDeflate stream of `plain`, and the file holding it.
    pub packed: Arc<[u8]>,
    pub plain: Arc<[u8]>,
    pub packed_path: PathBuf,
    /// Where writes go (one file per sequence).
    pub dir: PathBuf,
}

impl World {
    /// Makes the files under `dir`.
    pub fn new(dir: &Path) -> std::io::Result<World> {
        let data: Arc<[u8]> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let plain: Arc<[u8]> = (0..150_000u32)
            .map(|i| b"a queue of sequences, "[(i % 22) as usize] ^ ((i % 101 == 0) as u8))
            .collect();
        let packed: Arc<[u8]> = dsr_gdeflate::compress(&plain, dsr_gdeflate::Level::new(4))
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .into();
        let (data_path, packed_path) = (dir.join("data.bin"), dir.join("packed.gdf"));
        std::fs::write(&data_path, &data)?;
        std::fs::write(&packed_path, &packed)?;
        Ok(World {
            data,
            data_path,
            packed,
            plain,
            packed_path,
            dir: dir.to_path_buf(),
        })
    }
}

/// Counts over many sequences.
#[derive(Debug, Default)]
pub struct Totals {
    pub operations: u64,
    pub refused: u64,
    pub accepted: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.operations += other.operations;
        self.refused += other.refused;
        self.accepted += other.accepted;
        self.done += other.done;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }
}

/// What a request must come to.
#[derive(Clone, Debug)]
enum Expect {
    /// Accepted, then done with these bytes (or cancelled).
    Bytes { source: Arc<[u8]>, start: usize },
    /// Accepted, then done with these bytes at `offset` of the output file (or cancelled).
    Write {
        source: Arc<[u8]>,
        start: usize,
        offset: u64,
    },
    /// Refused, or accepted and then failed (or cancelled): never done.
    Fails,
    /// Refused at once.
    Refused,
}

/// A queue of the sequence, and what the end needs to know of it.
struct Q {
    id: usize,
    queue: Option<RuntimeQueue>,
    source: SourceType,
    /// Closed (or dropped) before the end, by the sequence or by a callback.
    closed: Arc<AtomicBool>,
    /// Requests (by index into `requests`) and status entries, in enqueue order.
    order: Vec<Op>,
}

#[derive(Clone)]
enum Op {
    Request(usize),
    /// The array, the entry, and when (the sequence's operation count): an entry may be used
    /// again, on any queue, once it has completed, and only its last use is checked.
    Status(Arc<StatusArray>, usize, u64),
}

/// A request the sequence made, accepted or not.
struct Tracked {
    queue: usize,
    expect: Expect,
    len: usize,
    /// Its destination (host requests), with `GUARD` canary bytes on each side of the range.
    dest: Option<HostBuffer>,
    /// What its callback reported, when it has one.
    outcomes: Option<Arc<Mutex<Vec<RequestStatus>>>>,
}

/// A callback's way back into the sequence's queues: taken (and emptied) before the end drains.
type Slot = Arc<Mutex<Option<(RuntimeQueue, Arc<AtomicBool>)>>>;

/// One sequence's state.
pub struct Machine<'w> {
    world: &'w World,
    out: PathBuf,
    runtimes: Vec<Runtime>,
    files: Vec<RuntimeFile>,
    queues: Vec<Q>,
    fences: Vec<Arc<Fence>>,
    statuses: Vec<Arc<StatusArray>>,
    events: Vec<Arc<EventFd>>,
    requests: Vec<Tracked>,
    /// Requests callbacks enqueued: each with its own outcomes, checked like the others.
    late: Arc<Mutex<Vec<Tracked>>>,
    slots: Vec<Slot>,
    writes: u64,
    totals: Totals,
}

/// Canary byte at `i` of a destination's guard.
fn canary(i: usize) -> u8 {
    0xa5 ^ (i as u8).wrapping_mul(29)
}

/// A destination of `len` bytes between guards.
fn guarded(len: usize) -> HostBuffer {
    let mut buffer = HostBuffer::new(len + 2 * GUARD);
    let bytes = buffer.as_mut_slice().expect("a new buffer is ours");
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = canary(i);
    }
    buffer
}

fn recorder() -> (Arc<Mutex<Vec<RequestStatus>>>, RequestDone) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let record = outcomes.clone();
    let done: RequestDone = Box::new(move |status: &RequestStatus| {
        record.lock().unwrap_or_else(|p| p.into_inner()).push(status.clone());
    });
    (outcomes, done)
}

impl<'w> Machine<'w> {
    /// A sequence over `world`; `name` keeps its output file apart from other sequences'.
    pub fn new(world: &'w World, name: &str) -> Machine<'w> {
        // Writes go to a file that exists, as a game's save does.
        let out = world.dir.join(format!("out-{name}"));
        std::fs::write(&out, b"").expect("the sequence's output file");
        Machine {
            world,
            out,
            runtimes: Vec::new(),
            files: Vec::new(),
            queues: Vec::new(),
            fences: Vec::new(),
            statuses: Vec::new(),
            events: Vec::new(),
            requests: Vec::new(),
            late: Arc::new(Mutex::new(Vec::new())),
            slots: Vec::new(),
            writes: 0,
            totals: Totals::default(),
        }
    }

    /// A start that makes a runtime, a file queue and a memory queue, so random operations
    /// after it reach deep states often.
    pub const PROLOGUE: [u8; 12] = [0, 1, 0, 0, 2, 0, 0, 1, 2, 0, 1, 1];

    /// Runs the operations `bytes` encode.
    pub fn run(&mut self, bytes: &[u8]) -> Result<(), String> {
        for op in bytes.chunks(4) {
            let byte = |i: usize| op.get(i).copied().unwrap_or(0);
            self.totals.operations += 1;
            self.step(byte(0), byte(1), byte(2), byte(3))?;
        }
        Ok(())
    }

    /// The live queue `b` picks, if any.
    fn pick_queue(&self, b: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.queues.len())
            .filter(|&i| self.queues[i].queue.is_some())
            .collect();
        live.get(usize::from(b) % live.len().max(1)).copied()
    }

    /// A refusal: counted, and never a kind that means a bug.
    fn refused(&mut self, what: &str, err: &dsr::Error) -> Result<(), String> {
        self.totals.refused += 1;
        match err.kind() {
            ErrorKind::Internal => Err(format!("{what} refused with an internal error: {err}")),
            _ => Ok(()),
        }
    }

    /// A refusal of something sound: only a closed queue (or a full one, not waiting) may.
    fn sound_refused(&mut self, what: &str, q: usize, err: &dsr::Error, waited: bool) -> Result<(), String> {
        self.refused(what, err)?;
        let closed = self.queues[q].closed.load(Ordering::SeqCst);
        match err.kind() {
            ErrorKind::Closed if closed => Ok(()),
            ErrorKind::WouldBlock if !waited => Ok(()),
            _ => Err(format!(
                "{what} refused on queue {} ({:?}, closed: {closed}): {err:?}",
                self.queues[q].id, self.queues[q].source
            )),
        }
    }

    fn step(&mut self, op: u8, a: u8, b: u8, c: u8) -> Result<(), String> {
        match op % 16 {
            0 => {
                if self.runtimes.len() < MAX_RUNTIMES {
                    self.runtimes.push(Runtime::new(runtime_config(a, b)));
                }
            }
            1 => {
                let at = usize::from(a) % self.runtimes.len().max(1);
                if at < self.runtimes.len() {
                    match b % 2 {
                        // Its queues and files keep what they need.
                        0 => drop(self.runtimes.swap_remove(at)),
                        _ => {
                            // Refused while a queue or file of it lives.
                            if let Err(err) = self.runtimes[at].set_config(runtime_config(b, c)) {
                                self.refused("set_config", &err)?;
                            }
                        }
                    }
                }
            }
            2 => {
                let Some(runtime) = self.runtimes.get(usize::from(a) % self.runtimes.len().max(1)) else {
                    return Ok(());
                };
                let source = if b % 2 == 0 {
                    SourceType::File
                } else {
                    SourceType::Memory
                };
                let config = QueueConfig {
                    source,
                    capacity: [0x80, 0x100, 0x7f, 0x2001, 0x2000][usize::from(c % 5)],
                    priority: [dsr::Priority::Low, dsr::Priority::Normal, dsr::Priority::High][usize::from(b / 2 % 3)],
                    name: format!("sequence queue {}", self.queues.len()),
                    ..QueueConfig::default()
                };
                let sound = (MIN_CAPACITY..=MAX_CAPACITY).contains(&config.capacity);
                match runtime.create_queue(config) {
                    Ok(queue) => {
                        if !sound {
                            return Err("a queue was made with a capacity out of range".into());
                        }
                        self.queues.push(Q {
                            id: self.queues.len(),
                            queue: Some(queue),
                            source,
                            closed: Arc::new(AtomicBool::new(false)),
                            order: Vec::new(),
                        });
                    }
                    Err(err) if !sound => self.refused("create_queue", &err)?,
                    Err(err) => return Err(format!("a sound queue was refused: {err}")),
                }
            }
            3 | 4 => {
                let Some(q) = self.pick_queue(a) else { return Ok(()) };
                self.queues[q].closed.store(true, Ordering::SeqCst);
                match op % 16 {
                    3 => self.queues[q].queue.as_ref().expect("live").close(),
                    // Work in flight goes on without a handle; its callbacks may or may not run.
                    _ => drop(self.queues[q].queue.take()),
                }
            }
            5..=7 => self.enqueue(op % 16, a, b, c)?,
            8 => {
                let Some(q) = self.pick_queue(a) else { return Ok(()) };
                if b % 3 == 0 || self.statuses.is_empty() {
                    self.statuses.push(StatusArray::new(usize::from(b % 4)));
                }
                let array = self.statuses[usize::from(b) % self.statuses.len()].clone();
                let index = usize::from(c % 5);
                let queue = self.queues[q].queue.clone().expect("live");
                match queue.enqueue_status(&array, index) {
                    Ok(()) => self.queues[q]
                        .order
                        .push(Op::Status(array, index, self.totals.operations)),
                    Err(err) => self.refused("enqueue_status", &err)?,
                }
            }
            9 => {
                let Some(q) = self.pick_queue(a) else { return Ok(()) };
                if b % 4 == 0 || self.fences.is_empty() {
                    self.fences.push(Fence::new().map_err(|e| e.to_string())?);
                }
                let fence = self.fences[usize::from(b) % self.fences.len()].clone();
                if let Err(err) = self.queues[q]
                    .queue
                    .as_ref()
                    .expect("live")
                    .enqueue_signal(&fence, u64::from(c))
                {
                    self.sound_refused("enqueue_signal", q, &err, true)?;
                }
                // A moment's wait for a value that may never come: must return.
                fence.wait_timeout(u64::from(c), Duration::from_micros(u64::from(a % 4) * 50));
            }
            10 => {
                let Some(q) = self.pick_queue(a) else { return Ok(()) };
                if self.events.is_empty() || b % 3 == 0 {
                    self.events.push(Arc::new(EventFd::new().map_err(|e| e.to_string())?));
                }
                let event = self.events[usize::from(b) % self.events.len()].clone();
                if let Err(err) = self.queues[q].queue.as_ref().expect("live").enqueue_event(&event) {
                    self.sound_refused("enqueue_event", q, &err, true)?;
                }
            }
            11 => {
                let Some(q) = self.pick_queue(a) else { return Ok(()) };
                if let Err(err) = self.queues[q].queue.as_ref().expect("live").submit() {
                    self.sound_refused("submit", q, &err, true)?;
                }
            }
            12 => {
                let Some(q) = self.pick_queue(a) else { return Ok(()) };
                let queue = self.queues[q].queue.as_ref().expect("live");
                if let Err(err) = queue.cancel_requests_with_tag(u64::from(b), u64::from(c & b)) {
                    self.sound_refused("cancel_requests_with_tag", q, &err, true)?;
                }
            }
            13 => {
                let Some(q) = self.pick_queue(a) else { return Ok(()) };
                let queue = self.queues[q].queue.as_ref().expect("live");
                let info = queue.query();
                let capacity = queue.config().capacity;
                if info.empty_slots >= capacity || info.until_auto_submit > capacity / 2 {
                    return Err(format!("query said {info:?} of a queue of {capacity} slots"));
                }
                let record = queue.retrieve_error_record();
                if record.failure_count == 0 && record.first_failure.is_some() {
                    return Err("an error record with a failure and a count of 0".into());
                }
            }
            14 => self.enqueue_calling_back(a, b, c)?,
            _ => match a % 3 {
                0 => {
                    let Some(runtime) = self.runtimes.get(usize::from(b) % self.runtimes.len().max(1)) else {
                        return Ok(());
                    };
                    let path = match c % 3 {
                        0 => self.world.dir.join("missing.bin"),
                        _ => self.world.data_path.clone(),
                    };
                    match runtime.open_file(&path) {
                        Ok(file) => self.files.push(file),
                        Err(err) if c % 3 == 0 => self.refused("open_file", &err)?,
                        Err(err) => return Err(format!("open_file of the data file: {err}")),
                    }
                }
                1 => {
                    if !self.files.is_empty() {
                        // Requests made with it keep the descriptor.
                        let at = usize::from(b) % self.files.len();
                        self.files.swap_remove(at).close();
                    }
                }
                _ => {
                    if let Some(event) = self.events.get(usize::from(b) % self.events.len().max(1)) {
                        event.drain();
                    }
                }
            },
        }
        Ok(())
    }

    /// A request shaped by `b` and `c` for queue `q`, and what it must come to.
    fn request(&mut self, q: usize, b: u8, c: u8) -> (Request, Expect, Option<HostBuffer>, usize) {
        let world = self.world;
        let memory = self.queues[q].source == SourceType::Memory;
        // Now and then the other kind of source: refused.
        let wrong = b % 11 == 10;
        let as_memory = memory != wrong;
        let len = [1usize, 100, 4096, 65_536, 70_001][usize::from(c % 5)];
        let start = usize::from(b) * 397 % (world.data.len() - len);
        let dest = guarded(len.max(world.plain.len()));
        let at = GUARD as u64;
        let (request, expect, len) = match b % 9 {
            0..=2 if as_memory => (
                Request::memory(world.data.clone(), start as u64, len as u64, &dest, at),
                Expect::Bytes {
                    source: world.data.clone(),
                    start,
                },
                len,
            ),
            0..=2 => {
                let request = match (b % 3, self.files.is_empty()) {
                    (0, false) => {
                        self.files[usize::from(c) % self.files.len()].request(start as u64, len as u64, &dest, at)
                    }
                    _ => Request::file(&world.data_path, start as u64, len as u64, &dest, at),
                };
                let expect = Expect::Bytes {
                    source: world.data.clone(),
                    start,
                };
                (request, expect, len)
            }
            3 | 4 => {
                let packed = world.packed.len() as u64;
                let request = match as_memory {
                    true => Request::memory(world.packed.clone(), 0, packed, &dest, at),
                    false => Request::file(&world.packed_path, 0, packed, &dest, at),
                };
                let expect = Expect::Bytes {
                    source: world.plain.clone(),
                    start: 0,
                };
                (request.gdeflate(world.plain.len() as u64), expect, world.plain.len())
            }
            5 if as_memory => {
                self.writes += 1;
                let offset = self.writes * WRITE_SLOT;
                let request = Request::write(world.data.clone(), start as u64, len as u64, &self.out, offset);
                let expect = match wrong {
                    true => Expect::Refused,
                    false => Expect::Write {
                        source: world.data.clone(),
                        start,
                        offset,
                    },
                };
                return (request, expect, None, len);
            }
            // Past the end of the source.
            5 | 6 => {
                let request = match as_memory {
                    true => Request::memory(
                        world.data.clone(),
                        world.data.len() as u64 - 10,
                        len as u64 + 10,
                        &dest,
                        at,
                    ),
                    false => Request::file(
                        &world.data_path,
                        world.data.len() as u64 - 10,
                        len as u64 + 10,
                        &dest,
                        at,
                    ),
                };
                (request, Expect::Fails, len + 10)
            }
            // Damaged GDeflate: zeros, a truncated stream, a length the stream does not have.
            7 => {
                let out_len = world.plain.len() as u64;
                let request =
                    match (c % 3, as_memory) {
                        (0, true) => {
                            Request::memory(Arc::<[u8]>::from(vec![0u8; 600]), 0, 600, &dest, at).gdeflate(out_len)
                        }
                        (0, false) => Request::file(&world.data_path, 0, 600, &dest, at).gdeflate(out_len),
                        (1, true) => Request::memory(world.packed.clone(), 0, world.packed.len() as u64 / 2, &dest, at)
                            .gdeflate(out_len),
                        (1, false) => Request::file(&world.packed_path, 0, world.packed.len() as u64 / 2, &dest, at)
                            .gdeflate(out_len),
                        (_, true) => Request::memory(world.packed.clone(), 0, world.packed.len() as u64, &dest, at)
                            .gdeflate(out_len - 1),
                        (_, false) => Request::file(&world.packed_path, 0, world.packed.len() as u64, &dest, at)
                            .gdeflate(out_len - 1),
                    };
                (request, Expect::Fails, world.plain.len())
            }
            // A file that is not there (on a file queue), or a destination past its buffer's end.
            _ => {
                let past = dest.len() as u64 - 8;
                let request = match as_memory {
                    true => Request::memory(world.data.clone(), 0, len as u64 + 16, &dest, past),
                    false if c % 2 == 0 => Request::file(world.dir.join("missing.bin"), 0, len as u64, &dest, at),
                    false => Request::file(&world.data_path, 0, len as u64 + 16, &dest, past),
                };
                let expect = match as_memory || c % 2 == 1 {
                    true => Expect::Refused,
                    false => Expect::Fails,
                };
                (request, expect, len)
            }
        };
        let expect = if wrong { Expect::Refused } else { expect };
        (request, expect, Some(dest), len)
    }

    /// Ops 5–7: a request through `enqueue_with` (waiting), `enqueue` or `enqueue_with` (not
    /// waiting); now and then into the destination of the request before (the same bytes).
    fn enqueue(&mut self, op: u8, a: u8, b: u8, c: u8) -> Result<(), String> {
        let Some(q) = self.pick_queue(a) else { return Ok(()) };
        let (mut request, mut expect, mut dest, mut len) = self.request(q, b, c);
        if a % 7 == 6 {
            // The same request as the last one of this queue, into the same range: refused as
            // overlapping while both wait in one batch, or the same bytes land twice.
            let last = self.queues[q].order.iter().rev().find_map(|op| match op {
                Op::Request(i) => Some(*i),
                Op::Status(..) => None,
            });
            if let Some(last) = last.filter(|&i| matches!(self.requests[i].expect, Expect::Bytes { .. })) {
                let Expect::Bytes { source, start } = self.requests[last].expect.clone() else {
                    unreachable!()
                };
                let Some(shared) = self.requests[last].dest.clone() else {
                    return Ok(());
                };
                len = self.requests[last].len;
                request = match self.queues[q].source {
                    SourceType::Memory if Arc::ptr_eq(&source, &self.world.data) => {
                        Request::memory(source.clone(), start as u64, len as u64, &shared, GUARD as u64)
                    }
                    _ => return Ok(()),
                };
                expect = Expect::Bytes { source, start };
                // The first request's handle checks the range: a second would keep it from
                // ever being ours alone.
                dest = None;
            }
        }
        let request = request.tag(u64::from(a));
        let (outcomes, done) = recorder();
        let queue = self.queues[q].queue.clone().expect("live");
        let (result, outcomes) = match op {
            5 => (queue.enqueue_with(request, done, true), Some(outcomes)),
            6 => (queue.enqueue(request), None),
            _ => (queue.enqueue_with(request, done, false), Some(outcomes)),
        };
        self.settle_enqueue(q, result, expect, dest, len, outcomes, op != 7)
    }

    #[allow(clippy::too_many_arguments)]
    fn settle_enqueue(
        &mut self,
        q: usize,
        result: dsr::Result<()>,
        expect: Expect,
        dest: Option<HostBuffer>,
        len: usize,
        outcomes: Option<Arc<Mutex<Vec<RequestStatus>>>>,
        waited: bool,
    ) -> Result<(), String> {
        let accepted = match (&result, &expect) {
            (Ok(()), Expect::Refused) => return Err(format!("queue {} accepted a request it must refuse", q)),
            (Ok(()), _) => {
                self.totals.accepted += 1;
                true
            }
            (Err(err), Expect::Fails | Expect::Refused) => {
                self.refused("enqueue", err)?;
                false
            }
            (Err(err), _) => {
                let overlapping = err.kind() == ErrorKind::OverlappingDestinations;
                match overlapping {
                    true => self.refused("enqueue", err)?,
                    false => self.sound_refused("enqueue", q, err, waited)?,
                }
                false
            }
        };
        let index = self.requests.len();
        self.requests.push(Tracked {
            queue: q,
            expect,
            len,
            dest,
            outcomes: outcomes.filter(|_| accepted),
        });
        if accepted {
            self.queues[q].order.push(Op::Request(index));
        }
        Ok(())
    }

    /// Op 14: a request whose callback calls back into a queue: closes its own,
    /// enqueues into another (not waiting), cancels by tag or submits there.
    fn enqueue_calling_back(&mut self, a: u8, b: u8, c: u8) -> Result<(), String> {
        let Some(q) = self.pick_queue(a) else { return Ok(()) };
        let Some(target) = self.pick_queue(b) else {
            return Ok(());
        };
        let (request, expect, dest, len) = self.request(q, b.wrapping_mul(9), c);
        let slot: Slot = Arc::new(Mutex::new(Some((
            self.queues[target].queue.clone().expect("live"),
            self.queues[target].closed.clone(),
        ))));
        self.slots.push(slot.clone());
        let (outcomes, record) = recorder();
        let late = self.late.clone();
        let world_data = self.world.data.clone();
        let target_id = target;
        let action = c % 4;
        let done: RequestDone = Box::new(move |status: &RequestStatus| {
            record(status);
            let held = slot.lock().unwrap_or_else(|p| p.into_inner());
            let Some((queue, closed)) = held.as_ref() else { return };
            match action {
                0 => {
                    closed.store(true, Ordering::SeqCst);
                    queue.close();
                }
                1 => {
                    let dest = guarded(64);
                    let (outcomes, done) = recorder();
                    let request = Request::memory(world_data.clone(), 7, 64, &dest, GUARD as u64);
                    let request = match queue.config().source {
                        SourceType::Memory => request,
                        SourceType::File => return,
                    };
                    let accepted = queue.enqueue_with(request, done, false).is_ok();
                    late.lock().unwrap_or_else(|p| p.into_inner()).push(Tracked {
                        queue: target_id,
                        expect: Expect::Bytes {
                            source: world_data,
                            start: 7,
                        },
                        len: 64,
                        dest: Some(dest),
                        outcomes: Some(outcomes).filter(|_| accepted),
                    });
                }
                2 => {
                    let _ = queue.cancel_requests_with_tag(0xff, 0x1);
                }
                _ => {
                    let _ = queue.submit();
                }
            }
        });
        let queue = self.queues[q].queue.clone().expect("live");
        let result = queue.enqueue_with(request.tag(u64::from(a)), done, c % 8 < 4);
        self.settle_enqueue(q, result, expect, dest, len, Some(outcomes), c % 8 < 4)
    }

    /// Ends the sequence: callbacks lose their way back in, every open queue drains (a signal
    /// after everything, 30 s at most), everything is dropped, then every request is checked.
    pub fn finish(mut self) -> Result<Totals, String> {
        for slot in std::mem::take(&mut self.slots) {
            slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        for q in &mut self.queues {
            let Some(queue) = q.queue.take() else { continue };
            let fence = Fence::new().map_err(|e| e.to_string())?;
            if queue.enqueue_signal(&fence, 1).is_ok() && queue.submit().is_ok() && !fence.wait_timeout(1, PATIENCE) {
                return Err(format!("queue {} did not drain in {PATIENCE:?}", q.id));
            }
        }
        // Late requests were all enqueued by now (their callbacks ran during the drains).
        let late = std::mem::take(&mut *self.late.lock().unwrap_or_else(|p| p.into_inner()));
        self.requests.extend(late);
        self.files.clear();
        self.runtimes.clear();
        for (i, tracked) in self.requests.iter_mut().enumerate() {
            let q = &self.queues[tracked.queue];
            let closed_early = q.closed.load(Ordering::SeqCst);
            let outcome = match &tracked.outcomes {
                None => None,
                Some(outcomes) => {
                    let outcomes = outcomes.lock().unwrap_or_else(|p| p.into_inner());
                    if outcomes.len() > 1 || (outcomes.is_empty() && !closed_early) {
                        return Err(format!(
                            "request {i} (queue {}, closed early: {closed_early}) called back {} times",
                            q.id,
                            outcomes.len()
                        ));
                    }
                    outcomes.first().cloned()
                }
            };
            match &outcome {
                Some(RequestStatus::Done) => self.totals.done += 1,
                Some(RequestStatus::Failed(_)) => self.totals.failed += 1,
                Some(RequestStatus::Cancelled) => self.totals.cancelled += 1,
                None => {}
            }
            match (&outcome, &tracked.expect) {
                (Some(RequestStatus::Done), Expect::Fails) => {
                    return Err(format!("request {i}, hostile, reported done"));
                }
                (Some(RequestStatus::Failed(err)), Expect::Bytes { .. } | Expect::Write { .. }) => {
                    return Err(format!("request {i}, sound, failed: {err}"));
                }
                (Some(RequestStatus::Failed(err)), _) if err.kind() == ErrorKind::Internal => {
                    return Err(format!("request {i} failed with an internal error: {err}"));
                }
                _ => {}
            }
            let Some(dest) = tracked.dest.as_mut() else {
                if let (Some(RequestStatus::Done), Expect::Write { source, start, offset }) =
                    (&outcome, &tracked.expect)
                {
                    let written = std::fs::read(&self.out).map_err(|e| e.to_string())?;
                    let range = *offset as usize..*offset as usize + tracked.len;
                    if written.get(range) != Some(&source[*start..*start + tracked.len]) {
                        return Err(format!("write {i} reported done, but the file holds other bytes"));
                    }
                }
                continue;
            };
            // Every destination comes back to its owner once its batches retire.
            let deadline = Instant::now() + PATIENCE;
            let bytes = loop {
                if let Some(bytes) = dest.as_slice() {
                    break bytes;
                }
                if Instant::now() > deadline {
                    return Err(format!("request {i}'s destination never came back"));
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let end = bytes.len() - GUARD;
            let guards_intact = (0..GUARD).chain(end..bytes.len()).all(|k| bytes[k] == canary(k));
            if !guards_intact {
                return Err(format!("request {i} wrote outside its destination"));
            }
            if let (Some(RequestStatus::Done), Expect::Bytes { source, start }) = (&outcome, &tracked.expect) {
                if bytes[GUARD..GUARD + tracked.len] != source[*start..*start + tracked.len] {
                    return Err(format!("request {i} reported done with other bytes"));
                }
            }
        }
        self.check_statuses()?;
        let _ = std::fs::remove_file(&self.out);
        Ok(self.totals)
    }

    /// On queues never closed: each status entry (its latest use) is done, failed only where a
    /// request since the entry before could fail, and ok where every request since then is known
    /// not to have failed.
    fn check_statuses(&self) -> Result<(), String> {
        let mut last_use = std::collections::HashMap::new();
        for q in &self.queues {
            for op in &q.order {
                if let Op::Status(array, index, when) = op {
                    let last = last_use.entry((Arc::as_ptr(array), *index)).or_insert(*when);
                    *last = (*last).max(*when);
                }
            }
        }
        for q in &self.queues {
            if q.closed.load(Ordering::SeqCst) {
                continue;
            }
            let mut since = 0;
            for (k, op) in q.order.iter().enumerate() {
                let Op::Status(array, index, when) = op else { continue };
                let span = &q.order[since..k];
                since = k + 1;
                if last_use.get(&(Arc::as_ptr(array), *index)) != Some(when) {
                    continue;
                }
                let requests = span.iter().filter_map(|op| match op {
                    Op::Request(i) => Some(&self.requests[*i]),
                    Op::Status(..) => None,
                });
                let may_fail = requests.clone().any(|r| matches!(r.expect, Expect::Fails));
                match array.get(*index) {
                    StatusEntry::Failed(err) if !may_fail => {
                        return Err(format!(
                            "status entry {index} of queue {} failed with only sound requests before it: {err}",
                            q.id
                        ));
                    }
                    StatusEntry::Ok => {
                        let failed = requests.clone().any(|r| {
                            r.outcomes.as_ref().is_some_and(|o| {
                                matches!(
                                    o.lock().unwrap_or_else(|p| p.into_inner()).first(),
                                    Some(RequestStatus::Failed(_))
                                )
                            })
                        });
                        if failed {
                            return Err(format!(
                                "status entry {index} of queue {} is ok after a failed request",
                                q.id
                            ));
                        }
                    }
                    StatusEntry::Failed(_) => {}
                    other => {
                        return Err(format!(
                            "status entry {index} of queue {} is {other:?} after the drain",
                            q.id
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

fn runtime_config(a: u8, b: u8) -> RuntimeConfig {
    RuntimeConfig {
        staging_bytes: [64 << 10, 1 << 20, 16 << 20][usize::from(b % 3)],
        workers: usize::from(a % 2) + 1,
        disable_gpu_decompression: a % 3 == 0,
        force_file_buffering: b % 5 == 0,
        ..RuntimeConfig::default()
    }
}
