//! How much of a file range is in the page cache: what `IoPolicy::Auto` asks before it reads a
//! range with direct I/O. A range already resident reads at memory speed through the cache,
//! while a direct read of it would go to the disk again (measured: a warm 1 GiB file at 3.2 GB/s
//! direct against 12–14 GB/s buffered on the development VM).
//!
//! Two probes, chosen once per process:
//! - `cachestat(2)` (Linux 6.5): one syscall on the descriptor, nothing mapped;
//! - `mincore(2)` on a short-lived mapping of the range, where the kernel lacks `cachestat` (or a
//!   seccomp policy refuses it).
//!
//! On overlayfs (containers' root file systems) a file's pages are cached on the file beneath the
//! overlay: `cachestat` on the overlay's descriptor counts none of them, so a warm file looked
//! cold and `Auto` read it from the disk again. A mapping reaches the real pages, so files on
//! overlayfs are probed with `mincore`. (Suspected behind 5.1 s for 128 warm 1 MiB files through
//! the Wine DLL on the GPU machine, against 6 ms buffered; io-wq's stalls on that VM, which
//! buffered reads no longer meet when their pages are cached, are the other suspect.)
//!
//! A probe that fails answers "unknown", and the read keeps its policy.

use std::os::fd::RawFd;
use std::sync::OnceLock;

/// The probe in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `cachestat(2)`.
    Cachestat,
    /// `mincore(2)` on a mapping of the range.
    Mincore,
}

impl Probe {
    /// Its name, for `dsr info`.
    pub fn name(self) -> &'static str {
        match self {
            Probe::Cachestat => "cachestat",
            Probe::Mincore => "mincore",
        }
    }
}

const PAGE: u64 = 4096;
/// `cachestat`'s number on every Linux architecture (the generic table).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

fn cachestat(fd: RawFd, offset: u64, len: u64) -> Option<u64> {
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: the syscall reads `range` and writes `stat`, both live for the call; a bad
    // descriptor is an error return.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    (rc == 0).then_some(stat.nr_cache)
}

fn mincore(fd: RawFd, offset: u64, len: u64) -> Option<u64> {
    let start = offset / PAGE * PAGE;
    let span = (offset + len).div_ceil(PAGE) * PAGE - start;
    // SAFETY: a fresh read-only shared mapping of the file range at an address of the kernel's
    // choosing; it touches no existing memory, is only inspected by `mincore` (never read, so a
    // range past the end of the file cannot fault), and is unmapped below.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            span as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            start as libc::off_t,
        );
        if map == libc::MAP_FAILED {
            return None;
        }
        let mut pages = vec![0u8; (span / PAGE) as usize];
        let rc = libc::mincore(map, span as usize, pages.as_mut_ptr());
        libc::munmap(map, span as usize);
        (rc == 0).then(|| pages.iter().filter(|&&p| p & 1 != 0).count() as u64)
    }
}

/// The probe this process uses: `cachestat` where the kernel answers it, `mincore` otherwise.
pub fn probe() -> Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let file = std::fs::File::open("/proc/self/exe");
        match file {
            Ok(file) if cachestat(std::os::fd::AsRawFd::as_raw_fd(&file), 0, PAGE).is_some() => Probe::Cachestat,
            _ => Probe::Mincore,
        }
    })
}

/// Whether the file open as `fd` is on overlayfs, whose files keep their pages on the file
/// beneath (where `cachestat` on this descriptor does not look).
fn on_overlayfs(fd: RawFd) -> bool {
    // SAFETY: `fstatfs` writes the struct, which lives across the call; a bad descriptor is an
    // error return.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::fstatfs(fd, &mut fs) == 0 && fs.f_type == libc::OVERLAYFS_SUPER_MAGIC
    }
}

/// Pages of `[offset, offset + len)` of the file open as `fd` that are in the page cache, and
/// how many pages the range spans; `None` when the probe cannot tell.
pub fn resident(fd: RawFd, offset: u64, len: u64) -> Option<(u64, u64)> {
    if len == 0 {
        return Some((0, 0));
    }
    let pages = (offset + len).div_ceil(PAGE) - offset / PAGE;
    let cached = match probe() {
        Probe::Cachestat if !on_overlayfs(fd) => cachestat(fd, offset, len)?,
        Probe::Cachestat | Probe::Mincore => mincore(fd, offset, len)?,
    };
    Some((cached.min(pages), pages))
}

/// Whether `Auto` should read the range through the page cache: most of it (half or more of its
/// pages) is already there.
pub fn mostly_resident(fd: RawFd, offset: u64, len: u64) -> bool {
    resident(fd, offset, len).is_some_and(|(cached, pages)| pages > 0 && 2 * cached >= pages)
}

/// Whether the file open as `fd` lives on a block device that reports itself rotational
/// (`/sys/dev/block/MAJ:MIN/queue/rotational`, or its disk's for a partition), where `Auto`
/// reads through the page cache even what is not cached: such a disk is seek-bound, so the
/// kernel's readahead and merging gain more than direct I/O saves by skipping a copy. Virtual
/// disks commonly report themselves so (both machines here do: virtio, `rotational` 1), and
/// there cold buffered loads measured 1.3× (dev VM) and 4.7× (the GPU machine) faster than direct
/// ones. Answered once per device and remembered; a file with no block device behind it
/// (tmpfs, overlayfs, network file systems: an anonymous device number) answers `false`.
pub fn on_rotational_disk(fd: RawFd) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static DEVICES: Mutex<Option<HashMap<libc::dev_t, bool>>> = Mutex::new(None);
    // SAFETY: `fstat` writes the struct, which lives across the call; a bad descriptor is an
    // error return.
    let dev = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return false;
        }
        st.st_dev
    };
    let mut devices = DEVICES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *devices.get_or_insert_with(HashMap::new).entry(dev).or_insert_with(|| {
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let disk = format!("/sys/dev/block/{major}:{minor}");
        [
            format!("{disk}/queue/rotational"),
            format!("{disk}/../queue/rotational"),
        ]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .is_some_and(|flag| flag.trim() == "1")
    })
}

/// Copies into `dst` what the page cache holds of the file open as `fd` from `offset` on, on
/// this thread and without waiting for the disk (`preadv2` with `RWF_NOWAIT`), up to the first
/// page it would have to read, the end of the file, or `dst`'s end. Returns the bytes copied:
/// the caller reads the rest another way, which also reports any error (a file system that
/// refuses `RWF_NOWAIT`, or a failing read, leaves everything to it).
pub fn read_resident(fd: RawFd, dst: &mut [u8], offset: u64) -> usize {
    let mut done = 0usize;
    while done < dst.len() {
        let rest = &mut dst[done..];
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let Ok(at) = libc::off_t::try_from(offset + done as u64) else {
            break;
        };
        // SAFETY: the one iovec covers `rest`, memory this function holds exclusively for the
        // call; a bad descriptor or offset is an error return.
        let n = unsafe { libc::preadv2(fd, &iov, 1, at, libc::RWF_NOWAIT) };
        match n {
            n if n > 0 => done += n as usize,
            -1 if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => break, // the end of the file, a page not cached (EAGAIN), or an error
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// The answer for a file on the build disk matches the disk's `queue/rotational`, found by
    /// another road (scanning `/sys/block` for the device number, partitions included); a
    /// pipe, on no block device, is not rotational.
    #[test]
    fn the_rotational_answer_matches_sysfs() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let file = tempfile::NamedTempFile::new_in(dir).unwrap();
        let fd = file.as_file().as_raw_fd();
        // SAFETY: `fstat` writes the struct, which lives across the call.
        let dev = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(fd, &mut st), 0);
            st.st_dev
        };
        let wanted = format!("{}:{}", libc::major(dev), libc::minor(dev));
        let mut expected = false;
        for disk in std::fs::read_dir("/sys/block").unwrap().flatten() {
            let disk = disk.path();
            let mut nodes = vec![disk.clone()];
            nodes.extend(std::fs::read_dir(&disk).unwrap().flatten().map(|e| e.path()));
            if nodes
                .iter()
                .any(|n| std::fs::read_to_string(n.join("dev")).is_ok_and(|d| d.trim() == wanted))
            {
                expected = std::fs::read_to_string(disk.join("queue/rotational")).unwrap().trim() == "1";
            }
        }
        assert_eq!(on_rotational_disk(fd), expected, "device {wanted}");
        let (read, _write) = std::io::pipe().unwrap();
        assert!(!on_rotational_disk(read.as_raw_fd()));
    }

    #[test]
    fn both_probes_see_a_file_just_written_and_agree() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&vec![7u8; 64 << 10]).unwrap();
        file.flush().unwrap();
        let fd = file.as_file().as_raw_fd();
        let by_mincore = mincore(fd, 0, 64 << 10).unwrap();
        assert_eq!(by_mincore, 16, "a file just written is in the cache");
        if let Some(by_cachestat) = cachestat(fd, 0, 64 << 10) {
            assert_eq!(by_cachestat, by_mincore);
        } else {
            eprintln!("cachestat is not available on this kernel: only mincore was checked");
        }
        assert_eq!(resident(fd, 100, 5000), Some((2, 2)), "a range across two pages");
        assert!(mostly_resident(fd, 0, 64 << 10));
        // Written back and dropped from the cache, it is not resident any more (on a file
        // system with a page cache of its own: tmpfs pages are the file and stay).
        file.as_file().sync_all().unwrap();
        // SAFETY: advice on our own descriptor.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        let after = resident(fd, 0, 64 << 10).unwrap();
        if on_tmpfs(fd) {
            eprintln!("the temporary directory is tmpfs: eviction not checked");
        } else {
            assert_eq!(after.0, 0, "evicted pages are counted out: {after:?}");
            assert!(!mostly_resident(fd, 0, 64 << 10));
        }
    }

    /// A warm file read through an overlay mount counts as resident (the probe goes past
    /// `cachestat`, which sees none of an overlay file's pages). Mounting needs root.
    #[test]
    #[cfg_attr(miri, ignore)] // mounts
    fn a_warm_file_on_overlayfs_is_resident() {
        use std::ffi::CString;
        let dir = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| dir.path().join(d));
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(lower.join("asset"), vec![7u8; 256 << 10]).unwrap();
        let c = |p: &std::path::Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let options = CString::new(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        ))
        .unwrap();
        // SAFETY: NUL-terminated strings that live across the call.
        let mounted = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                c(&merged).as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        } == 0;
        if !mounted {
            eprintln!(
                "skipped: cannot mount an overlay here ({}; needs root and overlayfs)",
                std::io::Error::last_os_error()
            );
            return;
        }
        let file = std::fs::File::open(merged.join("asset")).unwrap();
        let fd = file.as_raw_fd();
        assert!(on_overlayfs(fd));
        assert_eq!(std::fs::read(merged.join("asset")).unwrap().len(), 256 << 10);
        let seen = resident(fd, 0, 256 << 10);
        drop(file);
        // SAFETY: a mount point this test made; detached even if something still holds it.
        unsafe { libc::umount2(c(&merged).as_ptr(), libc::MNT_DETACH) };
        assert_eq!(
            seen,
            Some((64, 64)),
            "a file just read through the overlay is in the cache"
        );
    }

    fn on_tmpfs(fd: RawFd) -> bool {
        // SAFETY: `statfs` writes the struct we pass; the descriptor is ours.
        unsafe {
            let mut fs: libc::statfs = std::mem::zeroed();
            libc::fstatfs(fd, &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
        }
    }
}
