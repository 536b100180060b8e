//! The atomics the state word and the queue's lock-free handshake are built on: std's, or loom's
//! under `--cfg loom` so the models in `state.rs` and `queue.rs` explore every interleaving of
//! the real code rather than of a copy.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
