//! The read stage on io_uring: a read node becomes one operation on the shared ring and the
//! worker moves on; the ring's reactor completes the node when the bytes are in. A buffered read
//! first copies what the page cache holds on the worker (`residency::read_resident`), so a warm
//! read completes here; the rest goes to the blocking-read threads (`blocking`), or to the ring
//! where [`crate::io::RingConfig::blocking_threads`] is off.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dsr_engine::{Error, ErrorKind, Input, IoPolicy, NodeRef, Outcome, Stage};

use super::blocking::Job;
use super::op::{Op, OpFile, Target};
use super::open::{direct_alignment, open_buffered, open_direct};
use super::residency;
use super::ring::Ring;
use super::staging::STAGING_ALIGN;

/// Reads a node's file range through io_uring.
#[derive(Debug)]
pub struct UringReadStage {
    ring: Arc<Ring>,
}

impl UringReadStage {
    /// A stage feeding `ring` (which must also be the executor's reactor).
    pub fn new(ring: Arc<Ring>) -> Self {
        UringReadStage { ring }
    }
}

const ALIGN: u64 = STAGING_ALIGN as u64;

impl Stage for UringReadStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let Input::File { file, offset, len } = node.input() else {
            return Outcome::Failed(Error::new(ErrorKind::InvalidRequest, "a read node needs a file input"));
        };
        let path: Option<Arc<Path>> = file.shared_path();
        let buffered = match file.get_or_open(open_buffered) {
            Ok(f) => std::os::fd::AsRawFd::as_raw_fd(f),
            Err(err) => return Outcome::Failed(err),
        };
        let policy = node.request_info().io;
        // Auto reads a range that is mostly in the page cache through the cache: a direct read
        // would fetch it from the disk again. Asked before the file is opened for direct I/O, so
        // a warm load opens one descriptor a file, not two. A file on a rotational disk reads
        // through the cache too, cold or not (`residency::on_rotational_disk`).
        let cached = policy == IoPolicy::Auto && residency::mostly_resident(buffered, offset, len);
        let rotational = policy == IoPolicy::Auto
            && !cached
            && self.ring.rotational_buffered()
            && residency::on_rotational_disk(buffered);
        if cached {
            self.ring.stats().auto_cached.fetch_add(1, Relaxed);
        }
        if rotational {
            self.ring.stats().auto_rotational.fetch_add(1, Relaxed);
        }
        let direct = match policy {
            IoPolicy::Buffered => None,
            IoPolicy::Auto if cached || rotational => None,
            IoPolicy::Auto | IoPolicy::Direct => match file.get_or_open_direct(|source| {
                self.ring.stats().direct_opens.fetch_add(1, Relaxed);
                open_direct(source)
            }) {
                Ok(f) => Some((
                    std::os::fd::AsRawFd::as_raw_fd(f),
                    file.direct_alignment(|| direct_alignment(f)),
                )),
                Err(err) if policy == IoPolicy::Direct => return Outcome::Failed(err),
                Err(_) => None,
            },
        };
        let Some(dst) = node.destination() else {
            return Outcome::Failed(Error::new(ErrorKind::InvalidRequest, "a read node needs a destination"));
        };
        if dst.is_empty() {
            // Nothing to read; the file opened, which is all an empty read can check.
            return Outcome::Done { bytes: 0 };
        }
        // Lands in place where the destination, offset and length meet what the disk asks
        // (`open::direct_alignment`); else reads page-aligned around the range into a slot.
        let aligned = direct.is_some_and(|(_, align)| {
            let (memory, file) = (u64::from(align.memory), u64::from(align.offset));
            (dst.as_ptr() as u64).is_multiple_of(memory) && offset.is_multiple_of(file) && len.is_multiple_of(file)
        });
        let start = offset / ALIGN * ALIGN;
        let end = (offset + len).div_ceil(ALIGN) * ALIGN;
        let staged_fits = (end - start) as usize <= self.ring.staging_capacity();
        let direct = direct.map(|(fd, _)| fd).filter(|_| aligned || staged_fits);
        // Through the page cache: what is cached is a copy, made here on the worker (workers
        // copy in parallel; the ring would copy on the one thread that submits, or hand the
        // read to its kernel workers, which stalled for seconds on the GPU machine's VM). The
        // blocking-read threads read what the cache lacks (the ring's cold buffered reads
        // stalled there too). Reads under an injected fault keep to the ring.
        let mut copied = 0;
        if direct.is_none() && !self.ring.injects_fault(path.as_deref()) {
            copied = residency::read_resident(buffered, dst, offset);
            let stats = self.ring.stats();
            if copied > 0 {
                stats.resident_bytes.fetch_add(copied as u64, Relaxed);
            }
            if copied == dst.len() {
                stats.buffered.fetch_add(1, Relaxed);
                stats.resident_copies.fetch_add(1, Relaxed);
                return Outcome::Done { bytes: len };
            }
            // Regular files only: a read of a pipe or a device may wait for ever, which only
            // the ring can cancel (and `pread` cannot seek there anyway).
            if let Some(threads) = self.ring.blocking_threads().filter(|_| is_regular(buffered)) {
                stats.buffered.fetch_add(1, Relaxed);
                stats.thread_reads.fetch_add(1, Relaxed);
                let (whole, whole_len) = (dst.as_mut_ptr(), dst.len());
                let (pending, outcome) = node.defer();
                // SAFETY: the node's destination and its file's descriptor, both valid until the
                // node completes, which only the thread's read does.
                unsafe {
                    threads.read(Job {
                        fd: buffered,
                        dst: whole,
                        len: whole_len,
                        offset,
                        from: copied,
                        path,
                        pending,
                    })
                };
                return outcome;
            }
        }
        let (dst, dst_len) = (dst[copied..].as_mut_ptr(), dst.len() - copied);
        let (fd, is_direct, offset, target, read_len, needed) = match direct {
            Some(fd) if aligned => (fd, true, offset, Target::Destination { ptr: dst }, dst_len, dst_len),
            Some(fd) => {
                let skip = (offset - start) as usize;
                let target = Target::Staged {
                    slot: None,
                    skip,
                    dst,
                    dst_len,
                };
                (fd, true, start, target, (end - start) as usize, skip + dst_len)
            }
            // Too large for a slot (or no direct I/O here): the rest through the page cache.
            None => (
                buffered,
                false,
                offset + copied as u64,
                Target::Destination { ptr: dst },
                dst_len,
                dst_len,
            ),
        };
        let stats = self.ring.stats();
        let counter = match (is_direct, &target) {
            (true, Target::Staged { .. }) => &stats.staged,
            (true, Target::Destination { .. }) => &stats.direct_landed,
            (false, _) => &stats.buffered,
        };
        counter.fetch_add(1, Relaxed);
        let (pending, outcome) = node.defer();
        let file = OpFile {
            fd,
            buffered,
            direct: is_direct,
            offset,
            path,
        };
        let mut op = Op::new(file, target, read_len, needed, false);
        op.before = copied as u64;
        self.ring.start(pending, op);
        outcome
    }
}

/// Whether `fd` is a regular file (asked once a read misses the page cache: a `fstat`, next to
/// the disk read it leads to).
fn is_regular(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: `fstat` writes the struct, which lives across the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: any descriptor; a bad one is an error, not undefined behaviour.
    (unsafe { libc::fstat(fd, &mut st) } == 0) && st.st_mode & libc::S_IFMT == libc::S_IFREG
}
