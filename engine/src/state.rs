//! The node state word: one `AtomicU32` per node holding its pending-predecessor count and its
//! life-cycle flags, so that releasing a successor, starting, finishing and tombstoning a node
//! are each a single read-modify-write.
//!
//! ```text
//!  31        30       29     28       27      26                                  0
//! +---------+--------+------+--------+-------+------------------------------------+
//! |TOMBSTONE| FAILED | DONE |RUNNING | READY |   pending predecessors (27 bits)    |
//! |         |        |      | = RAN  |       |                                    |
//! +---------+--------+------+--------+-------+------------------------------------+
//! ```
//!
//! Bit 28 means RUNNING while DONE is clear, and RAN once DONE is set: `finish` keeps it, so a
//! finished word still tells a node whose work ran (a tombstone that came too late) from one that
//! was skipped (`start` clears the bit again when it finds the tombstone first).
//!
//! The count cannot overflow into the flags: it only ever decreases from its initial value, and
//! `GraphBuilder::compile` refuses a node with more than [`MAX_PREDECESSORS`] predecessors. Every
//! release decrements it exactly once per incoming edge, so it cannot underflow either (checked
//! by a `debug_assert!`).
//!
//! Who may do what:
//! - any predecessor: [`StateWord::release`]; the one that brings the count to zero owns the
//!   node and must run it or queue it (it is the only thread that sees `true`);
//! - the owner: [`StateWord::start`] then [`StateWord::finish`];
//! - anyone, at any time: [`StateWord::tombstone`]. A tombstone that lands before `start` makes
//!   the owner skip the work; one that lands after lets the running work finish.

use crate::sync::{AtomicU32, Ordering};

const COUNT_BITS: u32 = 27;
const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;
/// The most predecessors one node may have.
pub const MAX_PREDECESSORS: u32 = COUNT_MASK;

/// The node's pending count reached zero: it sits in a queue or is about to run.
pub const READY: u32 = 1 << 27;
/// A worker has started the node.
pub const RUNNING: u32 = 1 << 28;
/// The node has finished (successfully, failed, or skipped).
pub const DONE: u32 = 1 << 29;
/// The node's work failed.
pub const FAILED: u32 = 1 << 30;
/// The node's request was cancelled or failed elsewhere: skip its work.
pub const TOMBSTONE: u32 = 1 << 31;

/// A decoded snapshot of a state word, for views and assertions.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodeState(u32);

impl NodeState {
    /// Predecessors that have not released this node yet.
    pub fn pending(self) -> u32 {
        self.0 & COUNT_MASK
    }
    /// Whether the given flag (one of this module's constants) is set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
    /// Finished without failure and without being skipped.
    pub fn is_done(self) -> bool {
        self.has(DONE) && !self.has(FAILED) && !self.skipped()
    }
    /// Finished with a failure.
    pub fn is_failed(self) -> bool {
        self.has(FAILED)
    }
    /// Tombstoned before it started: its work never ran.
    pub fn skipped(self) -> bool {
        self.has(DONE) && !self.has(RUNNING_RAN)
    }
    /// The raw word.
    pub fn bits(self) -> u32 {
        self.0
    }
}

/// Set in the finished word (in place of RUNNING, which `finish` clears) when the work ran, so a
/// finished node still tells whether its tombstone came too late to skip it. Shares RUNNING's bit:
/// a finished node is never running.
const RUNNING_RAN: u32 = RUNNING;

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut flags = Vec::new();
        for (bit, name) in [
            (READY, "READY"),
            (RUNNING, if self.has(DONE) { "RAN" } else { "RUNNING" }),
            (DONE, "DONE"),
            (FAILED, "FAILED"),
            (TOMBSTONE, "TOMBSTONE"),
        ] {
            if self.has(bit) {
                flags.push(name);
            }
        }
        write!(f, "NodeState({} pending, {})", self.pending(), flags.join("|"))
    }
}

/// How a started node must be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Run the stage.
    Run,
    /// A tombstone arrived first: skip the work, complete as cancelled.
    Skip,
}

/// The atomic state word of one node.
#[derive(Debug)]
pub struct StateWord(AtomicU32);

impl StateWord {
    /// A node waiting for `predecessors` releases.
    pub fn new(predecessors: u32) -> Self {
        debug_assert!(predecessors <= MAX_PREDECESSORS);
        let ready = if predecessors == 0 { READY } else { 0 };
        StateWord(AtomicU32::new(predecessors | ready))
    }

    /// A snapshot of the word.
    pub fn load(&self) -> NodeState {
        NodeState(self.0.load(Ordering::Acquire))
    }

    /// One predecessor has finished. Returns `true` to exactly one caller: the one whose release
    /// made the node ready, which now owns it (and must queue it, then [`StateWord::start`] it).
    ///
    /// AcqRel: the release publishes the predecessor's writes (bytes it produced) and the acquire
    /// on the last decrement makes all of them visible to whoever runs this node. The last
    /// decrement sets READY in the same read-modify-write.
    pub fn release(&self) -> bool {
        self.release_with(READY).is_some()
    }

    /// [`StateWord::release`] and [`StateWord::start`] in one read-modify-write, for the
    /// successor a worker will run next without queueing it. `None` if other predecessors are
    /// still pending; otherwise how to treat the node, which the caller now owns and has started.
    pub fn release_and_start(&self) -> Option<Start> {
        let prev = self.release_with(READY | RUNNING)?;
        if prev & TOMBSTONE != 0 {
            self.0.fetch_and(!RUNNING, Ordering::Relaxed);
            Some(Start::Skip)
        } else {
            Some(Start::Run)
        }
    }

    /// Decrements the count; on the last decrement also sets `flags`. Returns the previous word
    /// if this was the last decrement.
    fn release_with(&self, flags: u32) -> Option<u32> {
        let mut prev = self.0.load(Ordering::Relaxed);
        loop {
            debug_assert!(
                prev & COUNT_MASK != 0,
                "node released more times than it has predecessors"
            );
            let last = prev & COUNT_MASK == 1;
            let next = if last { (prev - 1) | flags } else { prev - 1 };
            match self
                .0
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return last.then_some(prev),
                Err(actual) => prev = actual,
            }
        }
    }

    /// The owner begins the node. Acquire pairs with [`StateWord::tombstone`]'s release so a
    /// tombstone set before this point is seen.
    pub fn start(&self) -> Start {
        let prev = self.0.fetch_or(RUNNING, Ordering::AcqRel);
        debug_assert!(prev & (RUNNING | DONE) == 0, "node started twice");
        debug_assert!(prev & COUNT_MASK == 0, "node started with pending predecessors");
        if prev & TOMBSTONE != 0 {
            // Undo RUNNING so the finished word records that the work never ran.
            self.0.fetch_and(!RUNNING, Ordering::Relaxed);
            Start::Skip
        } else {
            Start::Run
        }
    }

    /// The owner finishes the node. The word keeps RUNNING set when the work ran (see
    /// `RUNNING_RAN`), so a late tombstone is distinguishable from a skip.
    ///
    /// A plain store, not a read-modify-write: once a node has started, the only other writer is
    /// a tombstone, and a tombstone that arrives after the start changes nothing (the work ran);
    /// losing its bit here is harmless. Release: views that see DONE see the node's effects.
    pub fn finish(&self, failed: bool) {
        let prev = self.0.load(Ordering::Relaxed);
        debug_assert!(prev & DONE == 0, "node finished twice");
        debug_assert!(prev & COUNT_MASK == 0, "node finished with pending predecessors");
        let flags = if failed { DONE | FAILED } else { DONE };
        self.0.store(prev | flags, Ordering::Release);
    }

    /// Marks the node to be skipped if it has not started. Returns `true` if the tombstone came
    /// before the node started (it will not run), `false` if it was already running or finished.
    pub fn tombstone(&self) -> bool {
        let prev = self.0.fetch_or(TOMBSTONE, Ordering::AcqRel);
        prev & (RUNNING | DONE) == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn release_hands_the_node_to_the_last_predecessor() {
        let word = StateWord::new(3);
        assert!(!word.release());
        assert!(!word.release());
        assert!(word.release());
        assert!(word.load().has(READY));
        assert_eq!(word.load().pending(), 0);
    }

    #[test]
    fn fused_release_starts_only_the_last() {
        let word = StateWord::new(2);
        assert_eq!(word.release_and_start(), None);
        assert_eq!(word.release_and_start(), Some(Start::Run));
        assert!(word.load().has(READY | RUNNING));
        let tombstoned = StateWord::new(1);
        assert!(tombstoned.tombstone());
        assert_eq!(tombstoned.release_and_start(), Some(Start::Skip));
        assert!(!tombstoned.load().has(RUNNING));
    }

    #[test]
    fn roots_start_ready() {
        assert!(StateWord::new(0).load().has(READY));
    }

    #[test]
    fn tombstone_before_start_skips() {
        let word = StateWord::new(0);
        assert!(word.tombstone());
        assert_eq!(word.start(), Start::Skip);
        word.finish(false);
        let state = word.load();
        assert!(state.skipped());
        assert!(!state.is_done());
    }

    #[test]
    fn tombstone_after_start_lets_the_work_finish() {
        let word = StateWord::new(0);
        assert_eq!(word.start(), Start::Run);
        assert!(!word.tombstone());
        word.finish(false);
        let state = word.load();
        assert!(!state.skipped());
        assert!(state.has(DONE) && state.has(TOMBSTONE));
    }

    #[test]
    fn failure_is_recorded() {
        let word = StateWord::new(0);
        assert_eq!(word.start(), Start::Run);
        word.finish(true);
        assert!(word.load().is_failed());
    }

    #[test]
    fn the_count_is_clear_of_the_flags() {
        let word = StateWord::new(MAX_PREDECESSORS);
        let state = word.load();
        assert_eq!(state.pending(), MAX_PREDECESSORS);
        assert!(!state.has(READY | RUNNING | DONE | FAILED | TOMBSTONE));
    }
}

/// Loom models: every interleaving of the operations above on two or three threads.
/// Run with `RUSTFLAGS="--cfg loom" cargo test -p dsr-engine --release --lib state::loom`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    /// Two predecessors finishing at once: exactly one of them owns the successor.
    #[test]
    fn exactly_one_releaser_owns_the_node() {
        loom::model(|| {
            let word = Arc::new(StateWord::new(2));
            let owners = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (word, owners) = (word.clone(), owners.clone());
                    thread::spawn(move || {
                        if word.release() {
                            owners.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(owners.load(Ordering::Relaxed), 1);
            assert!(word.load().has(READY));
        });
    }

    /// The fused release-and-start races a tombstone and another predecessor: exactly one thread
    /// owns the node, and it skips exactly when the tombstone came first.
    #[test]
    fn fused_release_and_start() {
        loom::model(|| {
            let word = Arc::new(StateWord::new(2));
            let canceller = {
                let word = word.clone();
                thread::spawn(move || word.tombstone())
            };
            let other = {
                let word = word.clone();
                thread::spawn(move || word.release_and_start())
            };
            let mine = word.release_and_start();
            let theirs = other.join().unwrap();
            let before_start = canceller.join().unwrap();
            let start = match (mine, theirs) {
                (Some(s), None) | (None, Some(s)) => s,
                other => panic!("exactly one owner expected, got {other:?}"),
            };
            assert_eq!(before_start, start == Start::Skip);
            word.finish(false);
            assert_eq!(word.load().skipped(), start == Start::Skip);
        });
    }

    /// A cancel racing the owner: either the tombstone wins (the work is skipped and `tombstone`
    /// said so) or the start wins (the work runs and `tombstone` said it came too late). Never
    /// both, never neither.
    #[test]
    fn tombstone_races_start() {
        loom::model(|| {
            let word = Arc::new(StateWord::new(1));
            let canceller = {
                let word = word.clone();
                thread::spawn(move || word.tombstone())
            };
            assert!(word.release());
            let start = word.start();
            word.finish(false);
            let before_start = canceller.join().unwrap();
            assert_eq!(before_start, start == Start::Skip);
            assert_eq!(word.load().skipped(), start == Start::Skip);
        });
    }

    /// A GPU edge: one predecessor stores the timeline value it was submitted with, then
    /// releases the successor at its submission; a CPU predecessor releases it at completion.
    /// Whichever release comes last, the successor's owner sees the value to wait on (the
    /// `CompiledGraph::set_submitted` / `gpu_waits` pair is this store and load).
    #[test]
    fn a_submitted_value_reaches_the_gpu_successor() {
        loom::model(|| {
            let word = Arc::new(StateWord::new(2));
            let value = Arc::new(crate::sync::AtomicU64::new(0));
            let owner = |word: &StateWord, value: &crate::sync::AtomicU64| {
                if word.release() {
                    assert_eq!(word.start(), Start::Run);
                    assert_eq!(value.load(Ordering::Acquire), 7);
                    word.finish(false);
                }
            };
            let gpu = {
                let (word, value) = (word.clone(), value.clone());
                thread::spawn(move || {
                    value.store(7, Ordering::Release);
                    owner(&word, &value);
                })
            };
            owner(&word, &value);
            gpu.join().unwrap();
            assert!(word.load().is_done());
        });
    }

    /// Bytes a predecessor wrote (plain memory, not atomics: loom's causality checker fails the
    /// model if the owner's read is not ordered after both writes) are visible to the node's
    /// owner, whichever predecessor finishes last.
    #[test]
    fn release_publishes_predecessor_writes() {
        struct Bytes([loom::cell::UnsafeCell<usize>; 2]);
        // SAFETY: the model itself checks that accesses are ordered; that is what it tests.
        unsafe impl Sync for Bytes {}
        loom::model(|| {
            let word = Arc::new(StateWord::new(2));
            let data = Arc::new(Bytes([loom::cell::UnsafeCell::new(0), loom::cell::UnsafeCell::new(0)]));
            let handles: Vec<_> = (0..2)
                .map(|i| {
                    let (word, data) = (word.clone(), data.clone());
                    thread::spawn(move || {
                        // SAFETY: each thread writes only its own cell before releasing.
                        data.0[i].with_mut(|p| unsafe { *p = i + 1 });
                        if word.release() {
                            assert_eq!(word.start(), Start::Run);
                            // SAFETY: the release ordering under test makes both writes happen
                            // before this read; loom fails the model if it does not.
                            let seen = [data.0[0].with(|p| unsafe { *p }), data.0[1].with(|p| unsafe { *p })];
                            assert_eq!(seen, [1, 2]);
                            word.finish(false);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert!(word.load().is_done());
        });
    }
}
