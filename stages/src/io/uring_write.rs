//! The write stage on io_uring: a write node becomes one operation on the shared ring (short
//! writes are resubmitted for the rest, like short reads), and the ring's reactor completes it.
//!
//! I/O policy, as for reads: `Buffered` writes through the page cache; `Direct` and `Auto` write
//! with `O_DIRECT` where the file range is aligned (4 KiB offsets and lengths), straight from the
//! node's bytes when they are aligned in memory too, and through a registered staging slot (a
//! fixed buffer) when they are not. An unaligned range cannot be written directly without
//! reading around it first: `Auto` writes it through the page cache, `Direct` refuses it.

use std::path::Path;
use std::sync::Arc;

use dsr_engine::{Error, ErrorKind, Input, IoPolicy, NodeKind, NodeRef, Outcome, Stage};

use super::op::{Op, OpFile, Target};
use super::open::{open_direct_write, open_for_write};
use super::ring::Ring;
use super::staging::STAGING_ALIGN;

/// Writes a node's bytes to its file range through io_uring.
#[derive(Debug)]
pub struct UringWriteStage {
    ring: Arc<Ring>,
}

impl UringWriteStage {
    /// A stage feeding `ring` (which must also be the executor's reactor).
    pub fn new(ring: Arc<Ring>) -> Self {
        UringWriteStage { ring }
    }
}

const ALIGN: u64 = STAGING_ALIGN as u64;

fn invalid(message: impl Into<String>) -> Outcome {
    Outcome::Failed(Error::new(ErrorKind::InvalidRequest, message).at_stage(NodeKind::Write))
}

impl Stage for UringWriteStage {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let Input::Bytes(bytes) = node.input() else {
            return invalid("a write node needs its bytes in memory");
        };
        let Some((file, offset)) = node.file_destination() else {
            return invalid("a write node needs a file destination");
        };
        let path: Option<Arc<Path>> = file.shared_path();
        let buffered = match file.get_or_open(open_for_write) {
            Ok(f) => std::os::fd::AsRawFd::as_raw_fd(f),
            Err(err) => return Outcome::Failed(err),
        };
        if bytes.is_empty() {
            // Nothing to write; the file opened for writing, which is all an empty write checks.
            return Outcome::Done { bytes: 0 };
        }
        let policy = node.request_info().io;
        let len = bytes.len() as u64;
        let file_aligned = offset.is_multiple_of(ALIGN) && len.is_multiple_of(ALIGN);
        let direct = match policy {
            IoPolicy::Buffered => None,
            IoPolicy::Direct if !file_aligned => {
                return invalid(format!(
                    "a direct write needs a file range aligned to {ALIGN} bytes, not {offset}+{len}; \
                     use the auto or buffered policy"
                ));
            }
            IoPolicy::Auto if !file_aligned => None,
            IoPolicy::Auto | IoPolicy::Direct => match file.get_or_open_direct(open_direct_write) {
                Ok(f) => Some(std::os::fd::AsRawFd::as_raw_fd(f)),
                Err(err) if policy == IoPolicy::Direct => return Outcome::Failed(err),
                Err(_) => None,
            },
        };
        // The kernel only reads these bytes: the pointer is typed `*mut` because a read's is.
        let src = bytes.as_ptr().cast_mut();
        let memory_aligned = (src as u64).is_multiple_of(ALIGN);
        let staged_fits = bytes.len() <= self.ring.staging_capacity();
        let (fd, is_direct, target) = match direct {
            Some(fd) if memory_aligned => (fd, true, Target::Destination { ptr: src }),
            Some(fd) if staged_fits => (
                fd,
                true,
                Target::Staged {
                    slot: None,
                    skip: 0,
                    dst: src,
                    dst_len: bytes.len(),
                },
            ),
            Some(_) if policy == IoPolicy::Direct => {
                return invalid(format!(
                    "a direct write of {len} bytes not aligned in memory needs a staging slot, and \
                     slots hold {} bytes; lower the read chunk",
                    self.ring.staging_capacity()
                ));
            }
            _ => (buffered, false, Target::Destination { ptr: src }),
        };
        let stats = self.ring.stats();
        stats.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if is_direct {
            stats.direct_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (pending, outcome) = node.defer();
        let file = OpFile {
            fd,
            buffered,
            direct: is_direct,
            offset,
            path,
        };
        self.ring
            .start(pending, Op::new(file, target, bytes.len(), bytes.len(), true));
        outcome
    }
}
