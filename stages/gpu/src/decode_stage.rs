//! The `DecompressGpu` stage: GDeflate tiles decoded by dsr's shader straight into the request's
//! GPU buffer range.
//!
//! A node is a piece of a stream (`NodeRef::from`): the tiles whose compressed bytes end within
//! it, its input being the stream up to its end (read into scratch, or the caller's bytes). The
//! stage parses the stream's table, picks the piece's tiles and queues them as a job:
//!
//! - **Batched.** While the GPU has room ([`GpuDecodeConfig::flights`] submissions; one by
//!   default, since the driver runs them one after another) the waiting jobs go when a stream is
//!   complete or a GPU's worth of tiles waits (`BATCH_TILES`); otherwise they wait for more,
//!   and the waiter thread's clock sends them once no piece has come for `BATCH_QUIET` or the
//!   oldest has waited `BATCH_WAIT`. So a busy GPU gets few, large dispatches (a tile is 32
//!   lanes of serial work, and the GPU needs thousands at once) and jobs of any request or batch
//!   share them. Each submission is one command buffer on the compute queue: one dispatch over
//!   all its tiles, then the tile hash check where requests carry hashes.
//! - **No copy** (`DecodeInput::Direct`, the default): the shader reads compressed bytes where
//!   the reads put them, in scratch blocks imported into Vulkan ([`HostImports`]); bytes not in an
//!   imported block (the caller's, small blocks) are copied into the submission's host-visible
//!   list when it is recorded. `DecodeInput::Copy` copies them into a device buffer first.
//! - **Pooled.** Device copies and lists come from a small pool, so a steady stream of loads
//!   allocates nothing.
//!
//! A waiter thread takes the submissions in order, checks every tile's status when the GPU is
//! done and completes the jobs' nodes (a bad tile fails its request naming the tile, as the CPU
//! route does; other requests are untouched), then submits what waited meanwhile.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ash::vk;
use dsr_engine::{DeviceBuffer, Error, ErrorKind, Input, NodeRef, Outcome, PendingNode, Stage};
use dsr_gdeflate::{Reason, TileStream, TILE_SIZE};

use crate::buffer::{allocate_buffer, device_address, GpuBuffer, HostVisible};
use crate::choose::{Chooser, DecodeBackend};
use crate::context::GpuContext;
use crate::decode::{barrier, status_result, submit_once, GpuDecoder, HashDesc, Submitted, TileDesc, PROFILE_WORDS};
use crate::import::HostImports;
use crate::timestamps::{Pair, QueryPairs};

/// How compressed bytes reach the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeInput {
    /// Copied into a device-local buffer at the start of the submission, and read there.
    Copy,
    /// Read by the shader where they lie (an imported scratch block, or host-visible staging),
    /// across the bus: no copy and no barrier in the submission.
    Direct,
}

/// The `DecompressGpu` stage's knobs.
#[derive(Clone, Copy, Debug)]
pub struct GpuDecodeConfig {
    /// How compressed bytes reach the shader.
    pub input: DecodeInput,
    /// Submissions on the GPU at once before new jobs wait to be batched into the next.
    pub flights: usize,
    /// The decoder for submissions the driver's `VK_NV_memory_decompression` may take (every
    /// tile hashed, the extension enabled): `None` chooses by what each measured on this device
    /// ([`crate::choose`]); `Some` forces one. The default is the shader alone, and the driver's
    /// decoder is for trusted data only: on an H100 (driver 580.159.04) it lost the device on
    /// garbage tiles and hung on zeroed ones (docs/benchmarks.md), where dsr's shader fails the
    /// tile by name. `DSR_GPU_DECODER=auto|nv` turns it on, with a warning.
    pub decoder: Option<DecodeBackend>,
}

impl Default for GpuDecodeConfig {
    /// Measured on an H100 (docs/benchmarks.md): reading in place beat copying first, and one
    /// submission at a time beat four (the driver runs them one after another anyway, so small
    /// early ones only delay the large ones behind them).
    fn default() -> Self {
        GpuDecodeConfig {
            input: DecodeInput::Direct,
            flights: 1,
            decoder: Some(DecodeBackend::Shader),
        }
    }
}

impl GpuDecodeConfig {
    /// The defaults, with `DSR_GPU_DECODE_INPUT=copy|direct`, `DSR_GPU_DECODE_FLIGHTS=N` and
    /// `DSR_GPU_DECODER=shader|nv|auto` applied (for measuring one against the other).
    pub fn from_env() -> Self {
        let mut config = GpuDecodeConfig::default();
        match std::env::var("DSR_GPU_DECODE_INPUT").as_deref() {
            Ok("direct") => config.input = DecodeInput::Direct,
            Ok("copy") => config.input = DecodeInput::Copy,
            _ => {}
        }
        if let Some(n) = std::env::var("DSR_GPU_DECODE_FLIGHTS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.flights = usize::max(n, 1);
        }
        match std::env::var("DSR_GPU_DECODER").as_deref() {
            Ok("shader") => config.decoder = Some(DecodeBackend::Shader),
            Ok("nv") => config.decoder = Some(DecodeBackend::Nv),
            Ok("auto") => config.decoder = None,
            _ => {}
        }
        if config.decoder != Some(DecodeBackend::Shader) {
            eprintln!(
                "dsr: DSR_GPU_DECODER lets the driver's VK_NV_memory_decompression decode; it is for \
                 trusted data only (on an H100 it lost the device on garbage tiles and hung on zeroed ones)"
            );
        }
        config
    }
}
/// Tiles waiting that are submitted whatever is in flight.
const FLUSH_TILES: usize = 16384;
/// Tiles worth a submission of their own while more pieces of their streams are coming: about
/// what a large GPU decodes at once (a tile takes one workgroup for milliseconds, and an H100
/// holds some two thousand), so a submission of fewer leaves most of it idle for as long.
const BATCH_TILES: usize = 2048;
/// While the GPU has room, pieces waiting for more to batch with go once none has come for
/// this long (the pieces of a stream being read arrive far closer together)...
const BATCH_QUIET: Duration = Duration::from_millis(1);
/// ...or once the oldest has waited this long: about as long as a submission of even one tile
/// holds the GPU (5–7 ms on an H100), since submissions run one after another.
const BATCH_WAIT: Duration = Duration::from_millis(8);
/// Submissions each decoder has run in this process: shader, driver (see [`submissions`]).
static SUBMISSIONS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// How many submissions dsr's shader and the driver's `VK_NV_memory_decompression` have run in
/// this process, across every `DecompressGpu` stage (for reports and tests).
pub fn submissions() -> (u64, u64) {
    (
        SUBMISSIONS[0].load(Ordering::Relaxed),
        SUBMISSIONS[1].load(Ordering::Relaxed),
    )
}

/// Submissions timed at once (more go untimed; one or a few are in flight).
const QUERY_PAIRS: u32 = 8;
/// Buffers of each kind the pool keeps for reuse.
const POOL_KEEP: usize = 8;
/// The smallest buffer the pool makes (larger requests round up to a power of two).
const POOL_MIN: u64 = 1 << 20;

/// Where a job's compressed bytes are copied to the GPU from.
enum Source {
    /// An imported scratch block, at this offset: copied straight from where the read put them.
    Imported { buffer: vk::Buffer, offset: u64 },
    /// Pooled host-visible staging holding them.
    /// Host memory not imported (the caller's bytes, or a small scratch block), valid while
    /// the job's node is unfinished: copied into the submission's host-visible list when it
    /// is recorded.
    Host(*const u8),
}

/// One node's tiles, waiting for a submission or in one.
struct Job {
    pending: PendingNode,
    piece: Piece,
    /// Whether it is its stream's last piece.
    last: bool,
}

/// What the waiter thread is handed.
enum Message {
    /// A submission to finish.
    Flight(Box<Flight>),
    /// A job waits to be batched while nothing is in flight: submit it in time.
    Waiting,
}

/// A node's tiles and where their bytes are.
struct Piece {
    source: Source,
    /// The bytes of the stream copied (`start` 4-byte aligned, as every tile's start is).
    window: Range<u64>,
    /// The first tile's index in the stream (the others follow it).
    first: u32,
    /// The tiles, `src` an offset into `window` until the submission places it.
    tiles: Vec<TileDesc>,
    /// Bytes of output.
    bytes: u64,
    /// The expected XXH3-64 of each tile's output, when the request carries tile hashes: checked
    /// on the GPU after the decode, in the same submission.
    hashes: Option<Vec<u64>>,
}

// SAFETY: a piece's pointer (to its bytes, its node's input) is process memory, valid from any
// thread until its node completes; a piece is owned by one thread at a time (its stage's
// worker, the submitting thread, the waiter).
unsafe impl Send for Piece {}

/// A submission on the GPU and what it holds until the GPU is done.
struct Flight {
    submitted: Submitted,
    jobs: Vec<Job>,
    /// The device copy of the jobs' bytes (`DecodeInput::Copy`).
    input: Option<DeviceBuffer>,
    /// The tile list, statuses and hash checks, placed as `layout` says.
    list: HostVisible,
    layout: ListLayout,
    /// Which decoder ran its tiles (the driver's writes no statuses).
    decoder: DecodeBackend,
    /// Its timestamps around the decode, where the queue writes them.
    timed: Option<Pair>,
}

/// Where a submission's host-visible list holds what: the tile list, a status word per tile
/// (and the profiling build's words), then the hash checks and a status word per check.
#[derive(Clone, Copy, Debug)]
struct ListLayout {
    tiles: usize,
    hashed: usize,
    status: u64,
    hashes: u64,
    hash_status: u64,
    /// Where the compressed bytes not imported are copied.
    staged: u64,
    len: u64,
}

impl ListLayout {
    fn new(tiles: usize, hashed: usize, staged: u64) -> ListLayout {
        let status = (tiles * std::mem::size_of::<TileDesc>()) as u64;
        let hashes = (status + 4 * (tiles + PROFILE_WORDS) as u64).next_multiple_of(8);
        let hash_status = hashes + (hashed * std::mem::size_of::<HashDesc>()) as u64;
        let staged_at = (hash_status + 4 * hashed as u64).next_multiple_of(8);
        ListLayout {
            tiles,
            hashed,
            status,
            hashes,
            hash_status,
            staged: staged_at,
            len: staged_at + staged,
        }
    }
}

// SAFETY: as for `Job`.
unsafe impl Send for Flight {}

/// Buffers kept for reuse, the smallest that fits taken first.
struct Pool {
    device: Mutex<Vec<DeviceBuffer>>,
    host: Mutex<Vec<HostVisible>>,
}

// SAFETY: the kept buffers' mappings are process memory, valid from any thread; each is
// reached only through the mutexes, by one holder at a time.
unsafe impl Send for Pool {}
// SAFETY: as above: shared access goes through the mutexes.
unsafe impl Sync for Pool {}

/// What waits to be submitted, and how much is on the GPU.
#[derive(Default)]
struct State {
    waiting: Vec<Job>,
    waiting_tiles: usize,
    /// Whether a waiting job ends its stream (its request waits for nothing more of ours).
    waiting_last: bool,
    /// When the oldest waiting job came, and the newest.
    waiting_since: Option<Instant>,
    waiting_latest: Option<Instant>,
    in_flight: usize,
}

/// What became of a queued job.
enum Queued {
    /// It went into this submission (with everything waiting).
    Submitted(Flight),
    /// It waits for more to batch with; `wake` when the waiter must start the clock.
    Waiting { wake: bool },
}

/// The stage's shared half: the decoder, the queue of jobs and the pool.
struct Decoding {
    decoder: Arc<GpuDecoder>,
    config: GpuDecodeConfig,
    /// `DSR_GPU_DECODE_TRACE=1`: each submission and completion on stderr, timed from here
    /// (for seeing where a load's time goes).
    trace: Option<Instant>,
    imports: Option<Arc<HostImports>>,
    state: Mutex<State>,
    pool: Pool,
    /// The driver's decoder, where the device has it enabled.
    nv: Option<ash::nv::memory_decompression::Device>,
    /// Which decoder a submission the driver's could take goes to.
    chooser: Mutex<Chooser>,
    /// Timestamps around each submission's decode (for the chooser and observers).
    timestamps: Option<QueryPairs>,
}

/// The `DecompressGpu` stage (see the module comment).
pub struct DecompressGpuStage {
    decoding: Arc<Decoding>,
    waiter: Mutex<Option<mpsc::Sender<Message>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DecompressGpuStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecompressGpuStage")
            .field("form", &self.decoding.decoder.form())
            .finish()
    }
}

fn corrupt(err: dsr_gdeflate::Error) -> Error {
    let error = Error::new(ErrorKind::Corrupt, format!("{err}; the asset is damaged, repack it"));
    let error = match err.tile {
        Some(tile) => error.at_tile(tile),
        None => error,
    };
    error.with_source(err)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl DecompressGpuStage {
    /// The stage on `decoder`'s device, with its waiter thread; `imports` are the executor's
    /// scratch blocks imported into Vulkan (copied from directly), if any.
    pub fn new(
        decoder: GpuDecoder,
        imports: Option<Arc<HostImports>>,
        config: GpuDecodeConfig,
    ) -> std::io::Result<DecompressGpuStage> {
        let context = decoder.context().clone();
        let nv = context
            .nv_decompression()
            .then(|| ash::nv::memory_decompression::Device::new(context.instance(), context.device()));
        // Untimed where the queue writes no timestamps (or the pool cannot be made): the
        // chooser then keeps to the shader.
        let timestamps = QueryPairs::new(&context, context.compute_queue().family, QUERY_PAIRS)
            .ok()
            .flatten();
        let decoding = Arc::new(Decoding {
            decoder: Arc::new(decoder),
            config,
            trace: (std::env::var_os("DSR_GPU_DECODE_TRACE").is_some()).then(Instant::now),
            imports,
            state: Mutex::new(State::default()),
            pool: Pool {
                device: Mutex::new(Vec::new()),
                host: Mutex::new(Vec::new()),
            },
            nv,
            chooser: Mutex::new(Chooser::default()),
            timestamps,
        });
        let (tx, rx) = mpsc::channel::<Message>();
        let shared = decoding.clone();
        let thread = std::thread::Builder::new()
            .name("dsr-gpu-decode".into())
            .spawn(move || shared.wait_loop(rx))?;
        Ok(DecompressGpuStage {
            decoding,
            waiter: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The node's job: its tiles, and its bytes where the GPU can copy them from. `None` when
    /// the piece holds no whole tile.
    fn piece(&self, node: &NodeRef<'_>) -> Result<Option<Piece>, Error> {
        let decoding = &self.decoding;
        let context = decoding.decoder.context();
        if context.is_lost() {
            return Err(context.lost_error());
        }
        let Input::Bytes(bytes) = node.input() else {
            return Err(invalid("a GPU decode node needs its stream in host memory"));
        };
        let Some(dst) = node.device_destination() else {
            return Err(invalid("a GPU decode node needs a GPU destination"));
        };
        let target = GpuBuffer::of(dst.buffer, context)?;
        if !dst.buffer.decodable() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the GPU decoder cannot write into this buffer (made without device addresses)",
            ));
        }
        // The piece ending the stream (`tile` 1) sees all of it and checks it whole; the others
        // see the stream up to their end, and may not hold its table yet.
        let last = node.tile() == 1;
        let stream = if last {
            TileStream::parse(bytes).map_err(corrupt)?
        } else {
            match TileStream::parse_prefix(bytes).map_err(corrupt)? {
                Some(stream) => stream,
                None => return Ok(None),
            }
        };
        if stream.uncompressed_len() != dst.len {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the stream decodes to {} bytes but the request expects {}",
                    stream.uncompressed_len(),
                    dst.len
                ),
            ));
        }
        if last {
            // With the table in order and the stream ending where it says, the pieces take
            // every tile exactly once; otherwise this piece fails the request.
            stream.check_order().map_err(corrupt)?;
        }
        let from = usize::try_from(node.from()).unwrap_or(usize::MAX);
        let tiles = match last {
            true => stream.tiles_ending_in(from, usize::MAX),
            false => stream.tiles_ending_in(from, bytes.len()),
        };
        if tiles.is_empty() {
            return Ok(None);
        }
        if !last {
            // A table out of order is named so by whichever piece meets it (the last piece
            // checked it whole above), not by a tile it misplaces.
            stream.check_order_of(tiles.clone()).map_err(corrupt)?;
        }
        let dst_base = device_address(context, target.raw()) + dst.offset;
        let (mut start, mut end) = (u64::MAX, 0);
        let mut spans = Vec::with_capacity(tiles.len());
        for i in tiles.clone() {
            let (span, size) = stream.tile_span(i).map_err(corrupt)?;
            if span.start % 4 != 0 {
                return Err(corrupt(dsr_gdeflate::Error {
                    reason: Reason::Misaligned,
                    tile: Some(i as u32),
                }));
            }
            start = start.min(span.start as u64);
            end = end.max(span.end as u64);
            spans.push((span, size));
        }
        let window = start..end;
        let mut descs = Vec::with_capacity(spans.len());
        let mut out = 0;
        for (i, (span, size)) in tiles.clone().zip(spans) {
            descs.push(TileDesc {
                src: span.start as u64 - window.start,
                dst: dst_base + (i * TILE_SIZE) as u64,
                src_bytes: span.len() as u32,
                dst_bytes: size as u32,
            });
            out += size as u64;
        }
        let hashes = match &node.request_info().tile_hashes {
            None => None,
            Some(all) => Some(
                all.get(tiles.clone())
                    .ok_or_else(|| invalid("the request has fewer tile hashes than its stream has tiles"))?
                    .to_vec(),
            ),
        };
        let piece = &bytes[window.start as usize..window.end as usize];
        let imported = decoding
            .imports
            .as_ref()
            .and_then(|imports| imports.lookup(piece.as_ptr(), piece.len() as u64));
        let source = match imported {
            Some((buffer, offset)) => Source::Imported { buffer, offset },
            None => Source::Host(piece.as_ptr()),
        };
        Ok(Some(Piece {
            source,
            window,
            first: tiles.start as u32,
            tiles: descs,
            bytes: out,
            hashes,
        }))
    }
}

impl Stage for DecompressGpuStage {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let piece = match self.piece(&node) {
            Ok(Some(piece)) => piece,
            Ok(None) => return Outcome::Done { bytes: 0 },
            Err(err) => return Outcome::Failed(err),
        };
        let last = node.tile() == 1;
        let (pending, outcome) = node.defer();
        let job = Job { pending, piece, last };
        let message = match self.decoding.queue(job) {
            Queued::Submitted(flight) => Message::Flight(Box::new(flight)),
            Queued::Waiting { wake: true } => Message::Waiting,
            Queued::Waiting { wake: false } => return outcome,
        };
        let waiter = lock(&self.waiter);
        match waiter.as_ref().map(|tx| tx.send(message)) {
            Some(Ok(())) => {}
            // The waiter is gone (the stage is shutting down): finish here instead.
            Some(Err(mpsc::SendError(message))) => {
                drop(waiter);
                let mut next = match message {
                    Message::Flight(flight) => Some(*flight),
                    Message::Waiting => self.decoding.submit_stale(true),
                };
                while let Some(flight) = next {
                    self.decoding.finish(flight);
                    next = self.decoding.done_one().or_else(|| self.decoding.submit_stale(true));
                }
            }
            None => unreachable!("the sender lives as long as the stage"),
        }
        outcome
    }
}

impl Drop for DecompressGpuStage {
    fn drop(&mut self) {
        // Closing the channel ends the waiter once it has finished what was submitted and
        // what waited behind it.
        lock(&self.waiter).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        self.decoding.pool.clear(self.decoding.decoder.context());
    }
}

impl Decoding {
    /// Queues `job`: submits what waits when the GPU has room and it is worth a submission (a
    /// stream is complete, or a GPU's worth of tiles waits), or when a great many tiles wait;
    /// otherwise the job waits for more, and the waiter is told if it must time the wait.
    fn queue(&self, job: Job) -> Queued {
        let jobs = {
            let mut state = lock(&self.state);
            state.waiting_tiles += job.piece.tiles.len();
            state.waiting_last |= job.last;
            let now = Instant::now();
            state.waiting_since.get_or_insert(now);
            state.waiting_latest = Some(now);
            let first = state.waiting.is_empty();
            state.waiting.push(job);
            let room = state.in_flight < self.config.flights;
            let worth = state.waiting_last || state.waiting_tiles >= BATCH_TILES;
            if !(room && worth) && state.waiting_tiles < FLUSH_TILES {
                // With nothing in flight, only the waiter's clock submits it.
                return Queued::Waiting {
                    wake: first && state.in_flight == 0,
                };
            }
            take_waiting(&mut state)
        };
        match self.submit(jobs).or_else(|| self.done_one()) {
            Some(flight) => Queued::Submitted(flight),
            // Nothing went (cancelled, or failed): others may wait with nothing in flight.
            None => Queued::Waiting { wake: true },
        }
    }

    /// The waiter: finishes submissions in order, submitting what waited behind each; while
    /// the GPU is idle and jobs wait for more, submits them once [`BATCH_QUIET`] passes without
    /// another or the oldest has waited [`BATCH_WAIT`].
    fn wait_loop(&self, rx: mpsc::Receiver<Message>) {
        let mut own = VecDeque::new();
        loop {
            let flight = match own.pop_front() {
                Some(flight) => flight,
                None => {
                    let message = match self.idle_deadline() {
                        None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                        Some(deadline) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now())),
                    };
                    match message {
                        Ok(Message::Flight(flight)) => *flight,
                        Ok(Message::Waiting) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            own.extend(self.submit_stale(false));
                            continue;
                        }
                        // The stage is gone: submit and finish whatever still waits.
                        Err(mpsc::RecvTimeoutError::Disconnected) => match self.submit_stale(true) {
                            Some(flight) => flight,
                            None => return,
                        },
                    }
                }
            };
            self.finish(flight);
            if let Some(next) = self.done_one() {
                own.push_back(next);
            }
        }
    }

    /// When the waiting jobs must be submitted, if the GPU is idle and some wait.
    fn idle_deadline(&self) -> Option<Instant> {
        let state = lock(&self.state);
        match (state.in_flight, state.waiting_since, state.waiting_latest) {
            (0, Some(since), Some(latest)) => Some((since + BATCH_WAIT).min(latest + BATCH_QUIET)),
            _ => None,
        }
    }

    /// Submits the waiting jobs if the GPU is idle and they have waited long enough (or
    /// `now`).
    fn submit_stale(&self, now: bool) -> Option<Flight> {
        let jobs = {
            let mut state = lock(&self.state);
            let stale = state.waiting_since.is_some_and(|since| since.elapsed() >= BATCH_WAIT)
                || state
                    .waiting_latest
                    .is_some_and(|latest| latest.elapsed() >= BATCH_QUIET);
            if state.in_flight > 0 || state.waiting.is_empty() || !(now || stale) {
                return None;
            }
            take_waiting(&mut state)
        };
        self.submit(jobs).or_else(|| self.done_one())
    }

    /// One submission left the GPU (or never reached it): submits the jobs that waited, if
    /// any is worth it; those left wait for more, or for the waiter's clock. A job waits only
    /// while something is in flight or the clock runs, so none is left behind.
    fn done_one(&self) -> Option<Flight> {
        loop {
            let jobs = {
                let mut state = lock(&self.state);
                state.in_flight -= 1;
                let worth = state.waiting_last || state.waiting_tiles >= BATCH_TILES;
                if state.waiting.is_empty() || !worth {
                    if !state.waiting.is_empty() {
                        // The clock starts now that the GPU is idle.
                        let now = Instant::now();
                        state.waiting_since = Some(now);
                        state.waiting_latest = Some(now);
                    }
                    return None;
                }
                take_waiting(&mut state)
            };
            if let Some(flight) = self.submit(jobs) {
                return Some(flight);
            }
        }
    }

    /// Records and submits `jobs` (counted in flight already): their bytes into one device
    /// buffer, one dispatch over all their tiles. Cancelled jobs are let go first; when nothing
    /// is left, or on failure (the jobs fail), `None`.
    fn submit(&self, jobs: Vec<Job>) -> Option<Flight> {
        let (live, cancelled): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| !j.pending.is_tombstoned());
        for job in cancelled {
            self.release_job(job, None);
        }
        match self.record(live) {
            Ok(flight) => flight,
            Err((jobs, err)) => {
                for job in jobs {
                    self.release_job(job, Some(Err(err.clone())));
                }
                None
            }
        }
    }

    fn record(&self, jobs: Vec<Job>) -> Result<Option<Flight>, (Vec<Job>, Error)> {
        if jobs.is_empty() {
            return Ok(None);
        }
        let context = self.decoder.context();
        if context.is_lost() {
            return Err((jobs, context.lost_error()));
        }
        let direct = self.config.input == DecodeInput::Direct;
        // Each job's window at a 4-byte-aligned place of the device copy, or where it lies.
        let mut at = Vec::with_capacity(jobs.len());
        let mut input_len = 0u64;
        for job in &jobs {
            at.push(input_len);
            input_len = (input_len + (job.piece.window.end - job.piece.window.start)).next_multiple_of(4);
        }
        let tiles: usize = jobs.iter().map(|j| j.piece.tiles.len()).sum();
        let hashed: usize = jobs
            .iter()
            .filter(|j| j.piece.hashes.is_some())
            .map(|j| j.piece.tiles.len())
            .sum();
        let staged: u64 = jobs
            .iter()
            .filter(|j| matches!(j.piece.source, Source::Host(_)))
            .map(|j| (j.piece.window.end - j.piece.window.start).next_multiple_of(4))
            .sum();
        let layout = ListLayout::new(tiles, hashed, staged);
        let input = match direct {
            true => None,
            false => match self.pool.device(context, input_len.max(4)) {
                Ok(input) => Some(input),
                Err(err) => return Err((jobs, err)),
            },
        };
        let give_input = |input: Option<DeviceBuffer>| {
            if let Some(input) = input {
                self.pool.give_device(input);
            }
        };
        let list = match self.pool.host(context, layout.len) {
            Ok(list) => list,
            Err(err) => {
                give_input(input);
                return Err((jobs, err));
            }
        };
        let input_raw = match input.as_ref().map(|input| GpuBuffer::of(input, context)).transpose() {
            Ok(gpu) => gpu.map(GpuBuffer::raw),
            Err(err) => {
                give_input(input);
                self.pool.give_host(context, list);
                return Err((jobs, err));
            }
        };
        // Where each job's window lies on the GPU's side: its imported block, or the list's
        // staging area, where bytes not imported are copied now.
        let mut staged_at = layout.staged;
        let sources: Vec<(vk::Buffer, u64)> = jobs
            .iter()
            .map(|job| match job.piece.source {
                Source::Imported { buffer, offset } => (buffer, offset),
                Source::Host(ptr) => {
                    let len = job.piece.window.end - job.piece.window.start;
                    // SAFETY: (1) the job's bytes are valid while its node is unfinished (they
                    // are its input); (2) the list maps `layout.len` bytes, of which these are
                    // this job's alone, and no GPU work uses the list yet.
                    unsafe { std::ptr::copy_nonoverlapping(ptr, list.ptr.add(staged_at as usize), len as usize) };
                    let at = staged_at;
                    staged_at += len.next_multiple_of(4);
                    (list.buffer, at)
                }
            })
            .collect();
        let bases: Vec<u64> = match input_raw {
            Some(raw) => {
                let base = device_address(context, raw);
                at.iter().map(|&place| base + place).collect()
            }
            None => sources
                .iter()
                .map(|&(buffer, offset)| device_address(context, buffer) + offset)
                .collect(),
        };
        // The tile list: each job's tiles pointed at its window. The driver's decoder may take
        // them only where every tile's output is checked by its hash (it reports nothing of a
        // bad tile) and every region keeps its rules (4-byte-aligned addresses, non-empty).
        let descs = list.ptr.cast::<TileDesc>();
        let mut n = 0;
        let mut nv_fits = self.nv.is_some() && hashed == tiles;
        for (job, &base) in jobs.iter().zip(&bases) {
            for tile in &job.piece.tiles {
                let placed = TileDesc {
                    src: base + tile.src,
                    ..*tile
                };
                nv_fits &= placed.src.is_multiple_of(4)
                    && placed.dst.is_multiple_of(4)
                    && placed.src_bytes > 0
                    && placed.dst_bytes > 0;
                // SAFETY: the list maps `tiles` descriptors (sized above); host-visible memory
                // the GPU does not use yet; unaligned-safe write.
                unsafe { descs.add(n).write_unaligned(placed) };
                n += 1;
            }
        }
        let timed = self.timestamps.as_ref().and_then(QueryPairs::take);
        let decoder = match (nv_fits, self.config.decoder) {
            (false, _) => DecodeBackend::Shader,
            (true, Some(forced)) => forced,
            // Untimed, the chooser would learn nothing: keep to the shader.
            (true, None) if timed.is_none() => DecodeBackend::Shader,
            (true, None) => lock(&self.chooser).pick(tiles),
        };
        let regions: Vec<vk::DecompressMemoryRegionNV> = match decoder {
            DecodeBackend::Shader => Vec::new(),
            DecodeBackend::Nv => (0..tiles)
                .map(|i| {
                    // SAFETY: written just above, `tiles` of them.
                    let tile = unsafe { descs.add(i).read_unaligned() };
                    vk::DecompressMemoryRegionNV::default()
                        .src_address(tile.src)
                        .dst_address(tile.dst)
                        .compressed_size(tile.src_bytes.into())
                        .decompressed_size(tile.dst_bytes.into())
                        .decompression_method(vk::MemoryDecompressionMethodFlagsNV::GDEFLATE_1_0)
                })
                .collect(),
        };
        // The hash checks: each hashed tile's output range and its expected hash.
        let checks = list.ptr.wrapping_add(layout.hashes as usize).cast::<HashDesc>();
        let mut n = 0;
        for job in &jobs {
            let Some(hashes) = &job.piece.hashes else { continue };
            for (tile, &expected) in job.piece.tiles.iter().zip(hashes) {
                let check = HashDesc {
                    addr: tile.dst,
                    len: tile.dst_bytes,
                    pad: 0,
                    expected,
                };
                // SAFETY: the list maps `hashed` checks at `layout.hashes` (sized above).
                unsafe { checks.add(n).write_unaligned(check) };
                n += 1;
            }
        }
        let list_addr = device_address(context, list.buffer);
        let (tiles_addr, status_addr) = (list_addr, list_addr + layout.status);
        let (checks_addr, checked_addr) = (list_addr + layout.hashes, list_addr + layout.hash_status);
        let decoding = &self.decoder;
        let copies: Vec<(vk::Buffer, vk::BufferCopy)> = jobs
            .iter()
            .zip(&at)
            .zip(&sources)
            .map(|((job, &place), &(buffer, offset))| {
                let size = job.piece.window.end - job.piece.window.start;
                let region = vk::BufferCopy::default()
                    .src_offset(offset)
                    .dst_offset(place)
                    .size(size);
                (buffer, region)
            })
            .collect();
        let submitted = submit_once(context, |device, cb| {
            let compute = vk::PipelineStageFlags::COMPUTE_SHADER;
            // SAFETY: `cb` is recording on the compute family; every buffer lives until the
            // waiter has seen the fence (imported blocks: their requests hold the scratch until
            // their nodes complete); the tile lists were checked by the stage (inputs inside
            // their windows at aligned offsets, outputs in their nodes' reserved destination
            // ranges, one 64 KiB slot each, and no tile in two jobs).
            unsafe {
                if let Some(input_raw) = input_raw {
                    for (buffer, region) in &copies {
                        device.cmd_copy_buffer(cb, *buffer, input_raw, std::slice::from_ref(region));
                    }
                    // The driver's decoder reads in its own stage, named only by all-commands.
                    let reader = match decoder {
                        DecodeBackend::Shader => (compute, vk::AccessFlags::SHADER_READ),
                        DecodeBackend::Nv => (vk::PipelineStageFlags::ALL_COMMANDS, vk::AccessFlags::MEMORY_READ),
                    };
                    barrier(
                        device,
                        cb,
                        (vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::TRANSFER_WRITE),
                        reader,
                    );
                }
                if let (Some(timestamps), Some(pair)) = (&self.timestamps, timed) {
                    timestamps.start(cb, pair);
                }
                // What the decode wrote: the driver's decoder writes in its own stage, named
                // only by the all-commands scope in these (version 1) barriers.
                let wrote = match (decoder, &self.nv) {
                    (DecodeBackend::Nv, Some(nv)) => {
                        nv.cmd_decompress_memory(cb, &regions);
                        (vk::PipelineStageFlags::ALL_COMMANDS, vk::AccessFlags::MEMORY_WRITE)
                    }
                    _ => {
                        decoding.record(cb, tiles_addr, status_addr, tiles as u32);
                        (compute, vk::AccessFlags::SHADER_WRITE)
                    }
                };
                if let (Some(timestamps), Some(pair)) = (&self.timestamps, timed) {
                    timestamps.end(cb, pair);
                }
                let mut last = wrote;
                if hashed > 0 {
                    // The hash check reads what the decode wrote.
                    barrier(device, cb, wrote, (compute, vk::AccessFlags::SHADER_READ));
                    decoding.record_hash(cb, checks_addr, checked_addr, hashed as u32);
                    last = (wrote.0 | compute, wrote.1 | vk::AccessFlags::SHADER_WRITE);
                }
                // Only the host waits for the statuses: later dispatches are not held back, and
                // GPU work after the node's completion is submitted after the host saw the fence.
                barrier(
                    device,
                    cb,
                    last,
                    (vk::PipelineStageFlags::HOST, vk::AccessFlags::HOST_READ),
                );
            }
        });
        if let (Some(start), Ok(_)) = (self.trace, &submitted) {
            let bytes: u64 = jobs.iter().map(|j| j.piece.window.end - j.piece.window.start).sum();
            eprintln!(
                "gpu-decode {:9.3} ms: submitted {} piece(s), {tiles} tile(s), {} KiB in, {decoder:?}",
                start.elapsed().as_secs_f64() * 1e3,
                jobs.len(),
                bytes >> 10
            );
        }
        match submitted {
            Ok(submitted) => {
                SUBMISSIONS[(decoder == DecodeBackend::Nv) as usize].fetch_add(1, Ordering::Relaxed);
                Ok(Some(Flight {
                    submitted,
                    jobs,
                    input,
                    list,
                    layout,
                    decoder,
                    timed,
                }))
            }
            Err(err) => {
                // Never submitted: the buffers are free again.
                give_input(input);
                self.pool.give_host(context, list);
                if let (Some(timestamps), Some(pair)) = (&self.timestamps, timed) {
                    timestamps.finish(pair, false);
                }
                Err((jobs, err))
            }
        }
    }

    /// Waits for one submission, checks its tiles, completes its jobs' nodes and gives its
    /// buffers back.
    fn finish(&self, flight: Flight) {
        let context = self.decoder.context();
        let Flight {
            submitted,
            jobs,
            input,
            list,
            layout,
            decoder,
            timed,
        } = flight;
        if let Err(err) = submitted.wait(context) {
            // The buffers (and the query pair) may still be in use: leak them rather than free
            // them under the GPU.
            std::mem::forget((input, list));
            for job in jobs {
                job.pending.complete(Err(err.clone()));
            }
            return;
        }
        let gpu = match (&self.timestamps, timed) {
            (Some(timestamps), Some(pair)) => timestamps
                .finish(pair, true)
                .map(|ticks| timestamps.span(ticks, "compute")),
            _ => None,
        };
        if let Some(gpu) = gpu {
            let bytes = jobs.iter().map(|j| j.piece.bytes).sum();
            lock(&self.chooser).record(layout.tiles, bytes, decoder, gpu.duration);
            for job in &jobs {
                job.pending.gpu_time(&gpu);
            }
        }
        if let Some(start) = self.trace {
            eprintln!(
                "gpu-decode {:9.3} ms: done {} tile(s), {decoder:?}, GPU {:.3} ms",
                start.elapsed().as_secs_f64() * 1e3,
                layout.tiles,
                gpu.map_or(0.0, |g| g.duration.as_secs_f64() * 1e3)
            );
        }
        // SAFETY: the list maps a status word per tile and per check at these offsets, written
        // by the work just waited for.
        let (decoded, checked) = unsafe {
            (
                std::slice::from_raw_parts(list.ptr.add(layout.status as usize).cast::<u32>(), layout.tiles),
                std::slice::from_raw_parts(list.ptr.add(layout.hash_status as usize).cast::<u32>(), layout.hashed),
            )
        };
        let (mut at, mut check) = (0, 0);
        let mut results = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let n = job.piece.tiles.len();
            let mine = &decoded[at..at + n];
            at += n;
            // The driver's decoder writes no statuses: its tiles are all hashed, and checked so.
            let failure = match decoder {
                DecodeBackend::Shader => mine
                    .iter()
                    .enumerate()
                    .find_map(|(i, &w)| status_result(w).err().map(|reason| (i, reason))),
                DecodeBackend::Nv => None,
            };
            let mismatch = match job.piece.hashes {
                Some(_) => {
                    check += n;
                    checked[check - n..check].iter().position(|&w| w != 0)
                }
                None => None,
            };
            results.push(match (failure, mismatch) {
                (None, None) => Ok(job.piece.bytes),
                (Some((i, reason)), _) => Err(corrupt(dsr_gdeflate::Error {
                    reason,
                    tile: Some(job.piece.first + i as u32),
                })),
                (None, Some(i)) => Err(Error::new(
                    ErrorKind::Corrupt,
                    "the decoded tile does not match its hash: the asset is damaged, repack it",
                )
                .at_tile(job.piece.first + i as u32)),
            });
        }
        if let Some(input) = input {
            self.pool.give_device(input);
        }
        self.pool.give_host(context, list);
        for (job, result) in jobs.into_iter().zip(results) {
            self.release_job(job, Some(result));
        }
    }

    /// Completes a job's node: with `result`, or as cancelled.
    fn release_job(&self, job: Job, result: Option<Result<u64, Error>>) {
        let pending = job.pending;
        match result {
            Some(result) => pending.complete(result),
            None => pending.cancel(),
        }
    }
}

/// Takes every waiting job for a submission, counting it in flight.
fn take_waiting(state: &mut State) -> Vec<Job> {
    state.in_flight += 1;
    state.waiting_tiles = 0;
    state.waiting_last = false;
    state.waiting_since = None;
    state.waiting_latest = None;
    std::mem::take(&mut state.waiting)
}

impl Pool {
    fn size_for(len: u64) -> u64 {
        len.max(POOL_MIN).next_power_of_two()
    }

    fn device(&self, context: &Arc<GpuContext>, len: u64) -> Result<DeviceBuffer, Error> {
        let mut kept = lock(&self.device);
        if let Some(i) = best_fit(kept.iter().map(|b| b.len()), len) {
            return Ok(kept.swap_remove(i));
        }
        drop(kept);
        allocate_buffer(context, Self::size_for(len))
    }

    fn host(&self, context: &GpuContext, len: u64) -> Result<HostVisible, Error> {
        let mut kept = lock(&self.host);
        if let Some(i) = best_fit(kept.iter().map(|b| b.len), len) {
            return Ok(kept.swap_remove(i));
        }
        drop(kept);
        // Statuses are read back word by word: cached memory, not write-combined.
        HostVisible::readable(context, Self::size_for(len))
    }

    fn give_device(&self, buffer: DeviceBuffer) {
        let mut kept = lock(&self.device);
        if kept.len() < POOL_KEEP {
            kept.push(buffer);
        }
    }

    fn give_host(&self, context: &GpuContext, buffer: HostVisible) {
        let mut kept = lock(&self.host);
        if kept.len() < POOL_KEEP {
            kept.push(buffer);
        } else {
            drop(kept);
            // SAFETY: given back only once the GPU is done with it.
            unsafe { buffer.destroy(context) };
        }
    }

    fn clear(&self, context: &GpuContext) {
        lock(&self.device).clear();
        for buffer in lock(&self.host).drain(..) {
            // SAFETY: in the pool, so no GPU work uses it.
            unsafe { buffer.destroy(context) };
        }
    }
}

/// The index of the smallest of `lens` that holds `len`.
fn best_fit(lens: impl Iterator<Item = u64>, len: u64) -> Option<usize> {
    lens.enumerate()
        .filter(|&(_, have)| have >= len)
        .min_by_key(|&(_, have)| have)
        .map(|(i, _)| i)
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}
