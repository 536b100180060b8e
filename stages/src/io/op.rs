//! The record of one read or write on the ring: which file, which range, the memory the kernel
//! fills (a read) or sends (a write), and how far it has got. The read and write stages fill one
//! in; the ring owns it from then until its node completes.

use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use super::staging::StagingPool;

/// The memory the kernel reads into, or writes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The node's own memory: its destination range (a read) or its source bytes (a write).
    Destination {
        /// Start of the range.
        ptr: *mut u8,
    },
    /// A staging slot: an aligned read around an unaligned range, whose wanted bytes are copied
    /// to the destination when the read completes; or a direct write of bytes that are not
    /// aligned in memory, copied into the slot (from `dst`, then the source) before it starts.
    Staged {
        /// The slot, once the read has one (it waits for one when none is free).
        slot: Option<u16>,
        /// Bytes of the slot before the wanted range (the aligned read starts earlier).
        skip: usize,
        /// The wanted range's destination.
        dst: *mut u8,
        dst_len: usize,
    },
}

/// One read, waiting to start or in flight.
#[derive(Debug)]
pub(crate) struct Op {
    pub fd: RawFd,
    /// A buffered descriptor to finish a direct read whose short read ended unaligned.
    pub fallback_fd: Option<RawFd>,
    /// File offset of the first byte the kernel writes.
    pub offset: u64,
    pub target: Target,
    /// Bytes asked of the kernel.
    pub len: usize,
    /// Bytes that must arrive for the node to be done (staged direct reads may stop short of
    /// `len` at the end of the file).
    pub needed: usize,
    /// Bytes arrived so far.
    pub done: usize,
    /// Bytes of the node's range in place before the op started (a read's cached head, copied
    /// on the worker): reported with the op's own when it completes.
    pub before: u64,
    pub direct: bool,
    /// Whether the kernel writes the file (else it reads it).
    pub write: bool,
    /// The file's path, for errors and fault rules.
    pub path: Option<Arc<Path>>,
    /// Index in the registered-file table, while registered.
    pub file_slot: Option<u32>,
    /// Whether an ASYNC_CANCEL was sent for it.
    pub cancel_sent: bool,
    /// Whether an injected delay has held its completion back already.
    pub delayed: bool,
}

// SAFETY: an `Op`'s pointers point at memory the operation owns exclusively until its node
// completes (a destination range the engine reserved for this node, or a staging slot it holds),
// so moving the op between threads moves that ownership with it.
unsafe impl Send for Op {}

/// Where an op goes: its descriptors (`buffered` is also the fallback of a direct op), the file
/// offset, and the file it names in errors.
pub(crate) struct OpFile {
    pub fd: RawFd,
    pub buffered: RawFd,
    pub direct: bool,
    pub offset: u64,
    pub path: Option<Arc<Path>>,
}

impl Op {
    /// A read (or, with `write`, a write) of `len` bytes of which `needed` must arrive, not yet
    /// started.
    pub fn new(file: OpFile, target: Target, len: usize, needed: usize, write: bool) -> Op {
        Op {
            fd: file.fd,
            fallback_fd: file.direct.then_some(file.buffered),
            offset: file.offset,
            target,
            len,
            needed,
            done: 0,
            before: 0,
            direct: file.direct,
            write,
            path: file.path,
            file_slot: None,
            cancel_sent: false,
            delayed: false,
        }
    }

    /// Where the kernel writes the op's first byte; `None` for a staged op without its slot yet.
    pub fn buf(&self, staging: &StagingPool) -> Option<*mut u8> {
        match self.target {
            Target::Destination { ptr } => Some(ptr),
            Target::Staged { slot, .. } => slot.map(|slot| staging.slot_ptr(slot)),
        }
    }

    /// The staging slot it holds, if any.
    pub fn slot(&self) -> Option<u16> {
        match self.target {
            Target::Staged { slot, .. } => slot,
            Target::Destination { .. } => None,
        }
    }
}
