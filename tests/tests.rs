//! Integration tests of dsr, one binary with a module per area:
//! - `lowering`: request shapes become the right graphs, with the right pending counts;
//! - `archive`: packing, loading by name, and damage to every part of an archive;
//! - `execution`: dependencies, failures, completion signals, reactors, priorities, metrics;
//! - `cancellation`: tombstones before and during runs, tag masks, acknowledgement, stress;
//! - `files`: real files of many sizes and ranges, and every way a file request can go wrong;
//! - `gdeflate`: compressed assets decoded in tile groups on every worker, verified by hash;
//! - `io`: io_uring and the positioned-read fallback: policies, EOF, scale, back-pressure,
//!   cancellation in the kernel, injected faults;
//! - `gpu`: GPU buffer destinations on a real Vulkan device, with the validation layer;
//! - `gpu_edges`: GPU edges in the engine, against a scripted timeline (no GPU needed);
//! - `queue`: the DirectStorage-shaped queue and the runtime around it;
//! - `queue_sequences`: random operation sequences on the queue API, sound and hostile;
//! - `viz`: DOT of plans and runs, rendered by Graphviz;
//! - `writes`: memory into files on both backends and every policy, faults, syncs.
//!
//! The `dsr` command's own tests are in `cli/tests/`.

mod common;

mod archive;
mod cancellation;
mod execution;
mod files;
mod gdeflate;
mod gpu;
mod gpu_edges;
mod io;
mod lowering;
mod queue;
mod queue_sequences;
mod viz;
mod writes;
