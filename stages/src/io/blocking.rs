//! Threads for buffered reads the page cache cannot serve: each reads its range to the end with
//! blocking `pread`s and completes the node, so dsr's workers never wait for the disk.
//!
//! io_uring would take such a read too (its kernel workers block for it), but on the GPU
//! machine's 16-CPU VM (Linux 6.18, virtio) cold buffered reads on the ring stalled for seconds in
//! half the runs, native and under Wine alike: nothing in flight at the disk, every io_uring and
//! dsr thread asleep, the reads trickling in at a few MB/s. Blocking `pread`s of the same ranges
//! from ordinary threads never did (docs/benchmarks.md, "Session 16"). A thread per read in
//! flight, up to a bound, keeps as many reads at the disk as the ring did; idle threads leave
//! after a while, so a title that loads once does not keep them.

use std::collections::VecDeque;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use dsr_engine::{NodeKind, PendingNode};

use super::pread::read_rest_at;

/// How long an idle thread waits for another read before it leaves.
const IDLE: Duration = Duration::from_secs(5);

/// One read: `len` bytes of `fd` at `offset` into `dst`, of which the first `from` are there
/// already (copied from the page cache), finishing `pending` (with the error, naming `path` and
/// the whole range, if it fails).
#[derive(Debug)]
pub struct Job {
    /// The file, open for buffered reads.
    pub fd: RawFd,
    /// Where the bytes go.
    pub dst: *mut u8,
    /// How many.
    pub len: usize,
    /// From where in the file.
    pub offset: u64,
    /// Bytes at the start of `dst` in place already: the job reads the rest.
    pub from: usize,
    /// The file's path, for errors.
    pub path: Option<Arc<Path>>,
    /// The node the read finishes.
    pub pending: PendingNode,
}

// SAFETY: `dst` is the pending node's destination and `fd` its file's descriptor; both stay valid
// while the node is unfinished (its batch owns them and cannot retire before the node does), and
// only this job touches that range of the destination (the worker that copied its head did so
// before handing the job over, through the pool's lock).
unsafe impl Send for Job {}

impl Job {
    fn run(self) {
        if self.pending.is_tombstoned() {
            // Cancelled (or failed elsewhere) while it waited for a thread: nothing to read.
            self.pending.cancel();
            return;
        }
        // SAFETY: see `Job`'s `Send`: the range is this job's alone until it completes the node.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.dst, self.len) };
        // SAFETY: the descriptor outlives the job (see `Job`), and `ManuallyDrop` never closes it.
        let file = ManuallyDrop::new(unsafe { File::from_raw_fd(self.fd) });
        let result = read_rest_at(&file, dst, self.offset, self.from).map_err(|err| {
            let err = err.at_stage(NodeKind::Read);
            match &self.path {
                Some(path) => err.with_path(path),
                None => err,
            }
        });
        self.pending.complete(result.map(|()| self.len as u64));
    }
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads running, and of those, waiting for a job.
    threads: usize,
    idle: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    most: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The threads, started as reads come (up to a bound) and leaving when idle.
pub struct BlockingReads {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BlockingReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("BlockingReads")
            .field("threads", &state.threads)
            .field("queued", &state.jobs.len())
            .field("most", &self.shared.most)
            .finish()
    }
}

impl BlockingReads {
    /// Up to `most` threads (at least one).
    pub fn new(most: usize) -> Self {
        BlockingReads {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                ready: Condvar::new(),
                most: most.max(1),
            }),
        }
    }

    /// As many threads as io_uring would give its blocking workers here: four a CPU, 8 to 64.
    pub fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self::new((4 * cpus).clamp(8, 64))
    }

    /// Runs `job` on one of the threads: reads its bytes, then completes its node.
    ///
    /// # Safety
    /// `job.dst` must be valid for `job.len` bytes and `job.fd` open until `job.pending` is
    /// completed, and nothing else may touch that range meanwhile (a node's destination and its
    /// file's descriptor are).
    pub unsafe fn read(&self, job: Job) {
        let mut state = self.shared.lock();
        state.jobs.push_back(job);
        if state.idle >= state.jobs.len() || state.threads >= self.shared.most {
            drop(state);
            self.shared.ready.notify_one();
            return;
        }
        state.threads += 1;
        drop(state);
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("dsr-read".into())
            .spawn(move || serve(&shared));
        if spawned.is_err() {
            // No thread to be had: the job waits for one that runs (there is at least one
            // unless this was the first; then it runs here, on the worker).
            let mut state = self.shared.lock();
            state.threads -= 1;
            if state.threads == 0 {
                let jobs = std::mem::take(&mut state.jobs);
                drop(state);
                jobs.into_iter().for_each(Job::run);
            }
        }
    }

    /// Ends the queued reads of cancelled requests now, rather than when a thread gets to
    /// them (every thread may be waiting on a slow disk).
    pub fn sweep(&self) {
        let cancelled: VecDeque<Job> = {
            let mut state = self.shared.lock();
            if state.jobs.is_empty() {
                return;
            }
            let (cancelled, kept) = std::mem::take(&mut state.jobs)
                .into_iter()
                .partition(|job| job.pending.is_tombstoned());
            state.jobs = kept;
            cancelled
        };
        for job in cancelled {
            job.pending.cancel();
        }
    }
}

fn serve(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            // A panic (an observer's, while the node completes) fails the node as abandoned
            // when its `PendingNode` unwinds; the thread stays, so the pool never shrinks
            // below what its count says.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
            state = shared.lock();
            continue;
        }
        if state.closed {
            break;
        }
        state.idle += 1;
        let (next, timeout) = shared
            .ready
            .wait_timeout(state, IDLE)
            .unwrap_or_else(|p| p.into_inner());
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() {
            break;
        }
    }
    state.threads -= 1;
}

impl Drop for BlockingReads {
    fn drop(&mut self) {
        // Jobs hold their nodes, which hold the executor that holds this: none is queued now.
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}
