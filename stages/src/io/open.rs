//! Opening source files, buffered or for direct I/O, and probing where direct I/O works.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use dsr_engine::{DirectAlignment, Error, FileSource, NodeKind};

use super::staging::STAGING_ALIGN;

/// Descriptor slots the process's table is grown to, once, before a load opens its files
/// (or to the open-file limit, if lower).
pub const RESERVED_DESCRIPTORS: u64 = 4096;

/// Grows this process's descriptor table now, once, to [`RESERVED_DESCRIPTORS`] slots or the
/// soft open-file limit, whichever is lower, so that opening a load's files never grows it.
///
/// Linux doubles the table when a descriptor lands past its end, and in a process with more
/// than one thread each growth waits out an RCU grace period (`expand_fdtable`), holding the
/// `open` that asked and every other thread's `open` behind it: measured at 13 ms on the
/// development VM, on the workers' path in the middle of a load of 128 files, once for each
/// doubling past the size the process happened to have. Grown here (by duplicating a descriptor
/// to the table's last slot and closing it), the wait comes at most once, when a runtime is made,
/// and not at all where that is before the process starts threads. The table costs 8 bytes a slot
/// (32 KiB at 4096). Failure (a limit below the current size, no descriptor to copy) changes
/// nothing: growth then comes as it would have.
pub fn reserve_descriptors() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `getrlimit` writes the struct, which lives across the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        let slots = limit.rlim_cur.min(RESERVED_DESCRIPTORS);
        let Ok(last) = libc::c_int::try_from(slots.saturating_sub(1)) else {
            return;
        };
        let Ok(file) = File::open("/") else {
            return;
        };
        // SAFETY: `F_DUPFD_CLOEXEC` makes a new descriptor, the lowest free one at or above
        // `last` (never one in use), of a file this function holds; it is closed at once.
        unsafe {
            let copy = libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, last);
            if copy >= 0 {
                libc::close(copy);
            }
        }
    });
}

/// Opens a source file for buffered reads; errors name the path.
pub fn open_buffered(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|err| {
        Error::from_io(err, "cannot open the source file")
            .with_path(path)
            .at_stage(NodeKind::Read)
    })
}

/// Opens a file a request writes: it must exist (writes never create or truncate); errors
/// name the path.
pub fn open_for_write(path: &Path) -> Result<File, Error> {
    OpenOptions::new().write(true).open(path).map_err(|err| {
        Error::from_io(err, "cannot open the file for writing")
            .with_path(path)
            .at_stage(NodeKind::Write)
    })
}

/// Opens a written file again for direct I/O (`O_DIRECT`), like [`open_direct`].
pub fn open_direct_write(source: &FileSource) -> Result<File, Error> {
    reopen_direct(source, true)
}

/// Opens a source for direct I/O (`O_DIRECT`). An already-open file is reopened through
/// `/proc/self/fd`, so the caller's descriptor keeps its own flags.
pub fn open_direct(source: &FileSource) -> Result<File, Error> {
    reopen_direct(source, false)
}

/// The source opened again with `O_DIRECT`, for reading or (`write`) for writing.
fn reopen_direct(source: &FileSource, write: bool) -> Result<File, Error> {
    let path: PathBuf = match source {
        FileSource::Path(path) => path.clone(),
        FileSource::Open(file) | FileSource::Named(file, _) => {
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        }
    };
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|err| {
            let (action, stage) = if write {
                ("cannot open the file for direct writes", NodeKind::Write)
            } else {
                (
                    "cannot open the file for direct I/O (does its file system support O_DIRECT?)",
                    NodeKind::Read,
                )
            };
            let error = Error::from_io(err, action).at_stage(stage);
            match source {
                FileSource::Path(path) => error.with_path(path),
                FileSource::Named(_, path) => error.with_path(path),
                FileSource::Open(_) => error,
            }
        })
}

/// What direct I/O on `file` (open with `O_DIRECT`) must align, as the kernel reports it
/// (`statx` with `STATX_DIOALIGN`, Linux 6.1 on; 0 for either means direct I/O is not
/// supported there). Many disks take memory aligned to 512 bytes (virtio) or 4 (NVMe), where a
/// destination a caller's allocator placed (a Windows title's heap under Wine: 16 bytes) can be
/// read into without a staging copy. A kernel that does not say, or a need above a page (which
/// staging slots, aligned to a page, could not meet), answers a page for both: what every
/// Linux file system with direct I/O takes.
pub fn direct_alignment(file: &File) -> DirectAlignment {
    let page = DirectAlignment {
        memory: STAGING_ALIGN as u32,
        offset: STAGING_ALIGN as u32,
    };
    // SAFETY: `statx` writes the struct, which lives across the call; the empty path with
    // `AT_EMPTY_PATH` names the descriptor itself.
    let st = unsafe {
        let mut st: libc::statx = std::mem::zeroed();
        if libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut st,
        ) != 0
        {
            return page;
        }
        st
    };
    let fits = |align: u32| align.is_power_of_two() && align as usize <= STAGING_ALIGN;
    if st.stx_mask & libc::STATX_DIOALIGN == 0 || !fits(st.stx_dio_mem_align) || !fits(st.stx_dio_offset_align) {
        return page;
    }
    DirectAlignment {
        memory: st.stx_dio_mem_align,
        offset: st.stx_dio_offset_align,
    }
}

/// Whether direct reads work in `dir` (a file is created, written, read back with `O_DIRECT`,
/// and removed), with the file system's name.
pub fn probe_direct(dir: &Path) -> (bool, String) {
    let fs = file_system_name(dir);
    let path = dir.join(format!(".dsr-direct-probe-{}", std::process::id()));
    let works = (|| -> io::Result<bool> {
        File::create(&path)?.write_all(&[0x5A; STAGING_ALIGN])?;
        let file = match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) {
            Ok(file) => file,
            Err(_) => return Ok(false),
        };
        let mut buffer = dsr_engine::HostBuffer::new(STAGING_ALIGN);
        let bytes = buffer.as_mut_slice().expect("a fresh buffer has one handle");
        Ok(file.read_at(bytes, 0).is_ok_and(|n| n == STAGING_ALIGN) && bytes[0] == 0x5A)
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_file(&path);
    (works, fs)
}

/// The name of the file system `path` is on, from /proc/self/mounts (longest matching mount).
pub fn file_system_name(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut mounts = String::new();
    let _ = File::open("/proc/self/mounts").and_then(|mut f| f.read_to_string(&mut mounts));
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point).then(|| (point.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, fs)| fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_a_file_system() {
        let dir = std::env::temp_dir();
        let (works, fs) = probe_direct(&dir);
        eprintln!("direct I/O in {}: {works} ({fs})", dir.display());
        assert!(!fs.is_empty());
        let (works, fs) = probe_direct(Path::new(env!("CARGO_MANIFEST_DIR")));
        eprintln!("direct I/O in the source tree: {works} ({fs})");
    }
}
