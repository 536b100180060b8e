//! The write stage on io_uring: a write node becomes one operation on the shared ring (short
//! writes are resubmitted for the rest, like short reads), and the ring's reactor completes it.
//!
//! I/O policy, as for reads: `Buffered` writes through the page cache; `Direct` and `Auto` write
//! with `O_DIRECT` where the file range is aligned as the disk asks (`open::direct_alignment`:
//! 512-byte offsets and lengths on most disks, a page where the kernel does not say), straight
//! from the node's bytes when they are aligned in memory too, and through a registered staging
//! slot (a fixed buffer) when they are not. An unaligned range cannot be written directly without
//! reading around it first: `Auto` writes it through the page cache, `Direct` refuses it.
//!
//! Writes through the page cache do not go on the ring: the worker copies them in with `pwrite`
//! ([`PwriteStage`]). The kernel cannot run a buffered write to ext4 without blocking, so io_uring
//! hands each to one of its workers, and it runs a file's buffered writes one at a time on one
//! worker (they would take the file's lock in turn anyway): decoding a stream into a file on two
//! threads then waited for that one writer and gained 1.4× over one thread, against 1.9× with
//! each worker copying its own windows in (docs/benchmarks.md, "Buffered writes on the workers").

use std::path::Path;
use std::sync::Arc;

use dsr_engine::{DirectAlignment, Error, ErrorKind, Input, IoPolicy, NodeKind, NodeRef, Outcome, Stage};

use super::op::{Op, OpFile, Target};
use super::open::{direct_alignment, open_direct_write, open_for_write};
use super::ring::Ring;
use super::write::PwriteStage;

/// Writes a node's bytes to its file range: direct writes through io_uring, buffered ones with
/// `pwrite` on the worker.
#[derive(Debug)]
pub struct UringWriteStage {
    ring: Arc<Ring>,
    buffered: PwriteStage,
}

impl UringWriteStage {
    /// A stage feeding `ring` (which must also be the executor's reactor) with direct writes,
    /// and writing through the page cache with `buffered`.
    pub fn new(ring: Arc<Ring>, buffered: PwriteStage) -> Self {
        UringWriteStage { ring, buffered }
    }
}

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
        let policy = node.request_info().io;
        let len = bytes.len();
        if len == 0 || policy == IoPolicy::Buffered {
            // Nothing to write (the file opened for writing, which is all an empty write
            // checks), or a copy into the page cache, which this worker makes itself.
            return self.write_buffered(node, len);
        }
        let direct = match file.get_or_open_direct(open_direct_write) {
            Ok(f) => Some((
                std::os::fd::AsRawFd::as_raw_fd(f),
                file.direct_alignment(|| direct_alignment(f)),
            )),
            Err(err) if policy == IoPolicy::Direct => return Outcome::Failed(err),
            Err(_) => None,
        };
        let file_aligned = |align: DirectAlignment| {
            let need = u64::from(align.offset);
            offset.is_multiple_of(need) && (len as u64).is_multiple_of(need)
        };
        let direct = match direct {
            Some((_, align)) if policy == IoPolicy::Direct && !file_aligned(align) => {
                return invalid(format!(
                    "a direct write needs a file range aligned to {} bytes here, not {offset}+{len}; \
                     use the auto or buffered policy",
                    align.offset
                ));
            }
            Some((fd, align)) if file_aligned(align) => Some((fd, align)),
            _ => None,
        };
        // The kernel only reads these bytes: the pointer is typed `*mut` because a read's is.
        let src = bytes.as_ptr().cast_mut();
        let staged_fits = bytes.len() <= self.ring.staging_capacity();
        let (fd, target) = match direct {
            Some((fd, align)) if (src as u64).is_multiple_of(u64::from(align.memory)) => {
                (fd, Target::Destination { ptr: src })
            }
            Some((fd, _)) if staged_fits => (
                fd,
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
            _ => return self.write_buffered(node, len),
        };
        let stats = self.ring.stats();
        stats.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats.direct_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if matches!(target, Target::Staged { .. }) {
            stats.staged_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (pending, outcome) = node.defer();
        let file = OpFile {
            fd,
            buffered,
            direct: true,
            offset,
            path,
        };
        self.ring
            .start(pending, Op::new(file, target, bytes.len(), bytes.len(), true));
        outcome
    }
}

impl UringWriteStage {
    /// The node's `len` bytes written through the page cache on this worker.
    fn write_buffered(&self, node: NodeRef<'_>, len: usize) -> Outcome {
        if len > 0 {
            self.ring
                .stats()
                .writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.buffered.run(node)
    }
}
