//! Zeroed, aligned memory for destinations and scratch: page-aligned from a page up (so O_DIRECT
//! can land in place), cache-line-aligned below (a request of a few bytes cannot be read with
//! direct I/O anyway, and a page-aligned 64-byte block costs the allocator a page of its own).
//!
//! Large blocks come straight from the kernel as anonymous mappings: their pages are zero and
//! mapped on first touch, where the allocator would `memset` an over-aligned block up front
//! (std's `alloc_zeroed` only uses `calloc` up to 16-byte alignment). From 2 MiB they may also
//! be marked for transparent huge pages ([`Pages::Huge`]), which makes the kernel's per-page
//! work on direct-I/O targets (pinning, dirtying) per 2 MiB folio instead of per 4 KiB page.

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};

/// Alignment of every block of a page or more, so O_DIRECT reads can land in place.
pub const PAGE: usize = 4096;

/// Alignment of smaller blocks: a cache line, so two of them never share one.
const SMALL_ALIGN: usize = 64;

/// From here up, blocks are anonymous mappings.
const MMAP_FROM: usize = 256 << 10;

/// From here up, mappings of [`Pages::Huge`] ask for transparent huge pages.
const HUGE_FROM: usize = 2 << 20;

/// The pages a large block asks the kernel for.
///
/// Measured (docs/benchmarks.md, "Huge pages or not"): on the GPU machine's VM, a warm 1 GiB
/// load ran 1.6× faster into huge pages than into small ones; on the development VM, whose
/// balloon reports free memory to the host ([`free_pages_go_to_the_host`]), first touches of
/// huge pages stalled for seconds at a time, since the free 2 MiB blocks they need are the ones
/// the host took back, while small pages stayed steady. Direct reads gain most from huge pages
/// (the kernel pins per 2 MiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pages {
    /// Transparent huge pages (`MADV_HUGEPAGE`) from 2 MiB up.
    #[default]
    Huge,
    /// The kernel's default pages.
    Small,
}

/// Whether this machine is a VM whose balloon reports free memory to the host
/// (`VIRTIO_BALLOON_F_REPORTING`): the host then takes back free blocks of 2 MiB and up, and a
/// huge page's first touch waits for the host to back it again. Read once from sysfs.
pub fn free_pages_go_to_the_host() -> bool {
    static REPORTING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REPORTING.get_or_init(|| balloon_reports_free_pages(std::path::Path::new("/sys/bus/virtio/devices")))
}

/// Whether a virtio device under `devices` is a balloon (device id 5) offering free page
/// reporting (feature bit 5 of the bit string in its `features` file).
fn balloon_reports_free_pages(devices: &std::path::Path) -> bool {
    const BALLOON: &str = "0x0005";
    const F_REPORTING: usize = 5;
    let Ok(entries) = std::fs::read_dir(devices) else {
        return false;
    };
    entries.flatten().any(|device| {
        let read = |name: &str| std::fs::read_to_string(device.path().join(name)).unwrap_or_default();
        read("device").trim() == BALLOON && read("features").as_bytes().get(F_REPORTING) == Some(&b'1')
    })
}

fn layout(len: usize) -> Layout {
    let align = if len >= PAGE { PAGE } else { SMALL_ALIGN };
    Layout::from_size_align(len, align).expect("block sizes are checked by their callers")
}

/// `len` (non-zero) zeroed, page-aligned bytes, or `None` if memory is exhausted.
pub(crate) fn allocate_zeroed(len: usize, pages: Pages) -> Option<NonNull<u8>> {
    debug_assert!(len > 0);
    if len < MMAP_FROM {
        // SAFETY: the layout has a non-zero size.
        return NonNull::new(unsafe { alloc::alloc_zeroed(layout(len)) });
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory; the result is checked.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    // Advice only: where huge pages are off, the mapping works the same with small ones (and
    // miri, which checks this module, has no madvise).
    #[cfg(not(miri))]
    if len >= HUGE_FROM && pages == Pages::Huge {
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(raw, len, libc::MADV_HUGEPAGE) };
    }
    NonNull::new(raw.cast())
}

/// Frees a block.
///
/// # Safety
/// `ptr` came from `allocate_zeroed(len)` and nothing uses it afterwards.
pub(crate) unsafe fn free(ptr: NonNull<u8>, len: usize) {
    if len < MMAP_FROM {
        // SAFETY: by the caller's premise, allocated with this layout.
        unsafe { alloc::dealloc(ptr.as_ptr(), layout(len)) };
    } else {
        // SAFETY: by the caller's premise, a mapping of `len` bytes nobody uses any more.
        unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Not under miri, which isolates the file system.
    #[cfg(not(miri))]
    #[test]
    fn a_balloon_reporting_free_pages_is_found_in_sysfs() {
        let dir = tempfile_dir();
        let device = |name: &str, id: &str, features: &str| {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("device"), format!("{id}\n")).unwrap();
            std::fs::write(path.join("features"), format!("{features}\n")).unwrap();
        };
        device("virtio1", "0x0002", "0010001001100100");
        assert!(!balloon_reports_free_pages(&dir), "a block device");
        device("virtio0", "0x0005", "0110000000000000");
        assert!(!balloon_reports_free_pages(&dir), "a balloon without reporting");
        device("virtio0", "0x0005", "0110010100000000");
        assert!(balloon_reports_free_pages(&dir));
        assert!(!balloon_reports_free_pages(&dir.join("absent")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(not(miri))]
    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "dsr-balloon-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn blocks_of_every_kind_are_zeroed_aligned_and_writable() {
        for len in [
            1,
            64,
            PAGE - 1,
            PAGE,
            PAGE * 3 + 1,
            MMAP_FROM - 1,
            MMAP_FROM,
            HUGE_FROM + 5,
        ] {
            let ptr = allocate_zeroed(len, Pages::Huge).unwrap();
            let align = if len >= PAGE { PAGE } else { SMALL_ALIGN };
            assert_eq!(ptr.as_ptr() as usize % align, 0, "{len}");
            // SAFETY: a fresh block of `len` bytes, used only here.
            let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
            assert!(bytes.iter().all(|&b| b == 0), "{len}");
            bytes.fill(0xa5);
            // SAFETY: allocated above with this length; `bytes` is not used again.
            unsafe { free(ptr, len) };
        }
    }
}
