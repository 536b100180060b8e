//! The atomics the state word is built on: std's, or loom's under `--cfg loom` so the model in
//! `state.rs` explores every interleaving of the real code rather than of a copy.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
