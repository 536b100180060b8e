//! Destinations requests write into (host memory, and GPU buffers as opaque handles), and the
//! reservations that keep two in-flight requests from writing the same bytes.
//!
//! A [`HostBuffer`] is a shared handle to one page-aligned allocation. Requests carry a clone of
//! it and a *reservation* of the byte range they write; a reservation that overlaps another live
//! one is refused when the request is pushed, so concurrent writes are disjoint by construction.
//! The engine drops its clones and reservations when the batch retires, after which
//! [`HostBuffer::as_slice`] (which needs the only handle) hands the bytes back to the caller.
//!
//! A [`DeviceBuffer`] is the same for a buffer in GPU memory, which the engine never touches: it
//! knows the length and keeps the reservations; the handle inside belongs to the GPU stages
//! (`dsr-gpu`), which downcast it. The engine names no Vulkan type.

use std::alloc::Layout;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::memory::Pages;

/// Alignment of every host allocation of a page or more, so O_DIRECT reads can land in place
/// (smaller ones are aligned to a cache line).
pub const HOST_ALIGN: usize = crate::memory::PAGE;

/// A caller's host memory: the destination of requests.
#[derive(Clone)]
pub struct HostBuffer {
    alloc: Arc<HostAlloc>,
}

struct HostAlloc {
    ptr: NonNull<u8>,
    len: usize,
    reservations: Ranges,
    /// The memory is a caller's (`HostBuffer::from_raw`): not freed here.
    borrowed: bool,
}

// SAFETY: `HostAlloc` owns its allocation like a `Box<[u8]>` does; the bytes are only reached
// through `&mut self` (unique handle) or through reservations whose ranges never overlap, so
// sharing the handle between threads cannot race on the same bytes.
unsafe impl Send for HostAlloc {}
// SAFETY: as for `Send`: shared access hands out disjoint ranges only.
unsafe impl Sync for HostAlloc {}

impl Drop for HostAlloc {
    fn drop(&mut self) {
        if self.len != 0 && !self.borrowed {
            // SAFETY: `ptr` came from `allocate_zeroed(self.len, _)` (see `HostBuffer::new`) and the
            // last handle is going.
            unsafe { crate::memory::free(self.ptr, self.len) }
        }
    }
}

impl HostBuffer {
    /// A zeroed buffer of `len` bytes, page-aligned from a page up. Large buffers are mapped on first touch
    /// (see [`HostBuffer::prefault`] for loads that should not pay for that) and use huge
    /// pages where the system allows, which makes direct I/O into them cheaper.
    pub fn new(len: usize) -> Self {
        Self::with_pages(len, Pages::Huge)
    }

    /// A zeroed buffer of `len` bytes whose large mappings use `pages` (see [`Pages`] for which
    /// suits what).
    pub fn with_pages(len: usize, pages: Pages) -> Self {
        let ptr = if len == 0 {
            NonNull::<u8>::dangling()
        } else {
            crate::memory::allocate_zeroed(len, pages).unwrap_or_else(|| {
                let layout = Layout::from_size_align(len, HOST_ALIGN).unwrap_or(Layout::new::<u8>());
                std::alloc::handle_alloc_error(layout)
            })
        };
        HostBuffer {
            alloc: Arc::new(HostAlloc {
                ptr,
                len,
                reservations: Ranges::default(),
                borrowed: false,
            }),
        }
    }

    /// A handle to `len` bytes of the caller's memory at `ptr` (a C caller's destination), which
    /// dsr writes but never frees.
    ///
    /// # Safety
    /// The memory must be valid for writes of `len` bytes, and neither read, written nor freed
    /// by anyone else until every request made with this handle has finished and the handle
    /// (with its clones) has been dropped.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Self {
        HostBuffer {
            alloc: Arc::new(HostAlloc {
                ptr,
                len,
                reservations: Ranges::default(),
                borrowed: true,
            }),
        }
    }

    /// A buffer whose pages are already mapped, so a load into it measures I/O rather than page
    /// faults (first touch of fresh memory runs at 1–2 GB/s on small VMs).
    pub fn prefault(len: usize) -> Self {
        Self::prefault_on(len, 1, Pages::Huge)
    }

    /// The same with `pages`, its pages touched by `threads` threads at once (page faults, and
    /// the zeroing behind them, are per-thread work).
    pub fn prefault_on(len: usize, threads: usize, pages: Pages) -> Self {
        fn touch(part: &mut [u8]) {
            for page in part.chunks_mut(HOST_ALIGN) {
                // Volatile: the allocator promised zeroes, so the optimiser may drop a plain
                // store of zero (and with it the page fault this exists to take now).
                // SAFETY: `page` is a live, exclusively borrowed, non-empty chunk.
                unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
            }
        }
        let mut buffer = HostBuffer::with_pages(len, pages);
        if let Some(bytes) = buffer.as_mut_slice() {
            if threads <= 1 {
                touch(bytes);
            } else {
                let per = bytes
                    .len()
                    .div_ceil(threads)
                    .next_multiple_of(HOST_ALIGN)
                    .max(HOST_ALIGN);
                std::thread::scope(|scope| {
                    for part in bytes.chunks_mut(per) {
                        scope.spawn(move || touch(part));
                    }
                });
            }
        }
        buffer
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        self.alloc.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.alloc.len == 0
    }

    /// The bytes, when this is the only handle (no batch holds the buffer any more).
    pub fn as_slice(&mut self) -> Option<&[u8]> {
        self.as_mut_slice().map(|bytes| &*bytes)
    }

    /// The bytes, mutably, when this is the only handle.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        let alloc = Arc::get_mut(&mut self.alloc)?;
        // SAFETY: `get_mut` proves no other handle exists, so no request can hold a reservation
        // and nothing else can reach these bytes; ptr/len describe our own live allocation.
        Some(unsafe { std::slice::from_raw_parts_mut(alloc.ptr.as_ptr(), alloc.len) })
    }

    /// Whether two handles refer to the same allocation.
    pub fn same_allocation(&self, other: &HostBuffer) -> bool {
        Arc::ptr_eq(&self.alloc, &other.alloc)
    }

    /// Reserves `range` for writing by `owner`, refusing overlap with any live reservation.
    #[cfg(test)]
    pub(crate) fn reserve(&self, owner: ReservationOwner, range: Range<u64>) -> Result<Reservation> {
        self.clone().into_reservation(owner, range)
    }

    /// [`HostBuffer::reserve`], the reservation keeping this handle (lowering moves a request's
    /// handle here rather than count one more reference to a buffer workers are releasing).
    pub(crate) fn into_reservation(self, owner: ReservationOwner, range: Range<u64>) -> Result<Reservation> {
        self.alloc
            .reservations
            .reserve(self.alloc.len as u64, owner, range.clone())?;
        Ok(Reservation {
            target: Reserved::Host(self),
            owner,
            range,
        })
    }

    pub(crate) fn raw(&self) -> RawBytes {
        RawBytes {
            ptr: self.alloc.ptr,
            len: self.alloc.len,
        }
    }
}

impl fmt::Debug for HostBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuffer")
            .field("ptr", &self.alloc.ptr)
            .field("len", &self.alloc.len)
            .field("handles", &Arc::strong_count(&self.alloc))
            .finish()
    }
}

/// Who holds a reservation: a batch (by its builder's id) and a request in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReservationOwner {
    pub batch: u64,
    pub request: u32,
}

impl fmt::Display for ReservationOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {} of batch {}", self.request, self.batch)
    }
}

/// A live claim on a destination range; dropping it releases the range (and the handle).
/// The byte ranges of one destination that requests in flight write: live, non-empty
/// reservations by start, with their end and owner. They never overlap, so the only one a new
/// range can overlap is the last that starts before the new range ends: checking and releasing
/// are O(log n) however many requests share the buffer. The first live reservation is kept
/// inline: a buffer one request writes (the C ABI makes one per request) never allocates.
#[derive(Debug, Default)]
struct Ranges(Mutex<Live>);

#[derive(Debug, Default)]
struct Live {
    /// One reservation outside the map (start, end, owner), whichever took the empty place.
    inline: Option<(u64, u64, ReservationOwner)>,
    more: BTreeMap<u64, (u64, ReservationOwner)>,
}

impl Ranges {
    /// Records `owner`'s write of `range` in a destination of `len` bytes, unless it runs past
    /// the end or overlaps a live reservation.
    fn reserve(&self, len: u64, owner: ReservationOwner, range: Range<u64>) -> Result<()> {
        if range.end > len {
            return Err(Error::new(
                ErrorKind::DestinationTooSmall,
                format!(
                    "the destination holds {len} bytes but the request writes bytes {}..{}; \
                     give a larger buffer or a smaller range",
                    range.start, range.end
                ),
            ));
        }
        if range.start < range.end {
            let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let before_end = live.more.range(..range.end).next_back().map(|(&s, &(e, o))| (s, e, o));
            let overlap = [live.inline, before_end]
                .into_iter()
                .flatten()
                .find(|&(start, end, _)| start < range.end && end > range.start);
            if let Some((start, end, other)) = overlap {
                return Err(Error::new(
                    ErrorKind::OverlappingDestinations,
                    format!(
                        "destination bytes {}..{} overlap bytes {start}..{end} that {other} writes; \
                         requests in flight must write disjoint ranges",
                        range.start, range.end
                    ),
                ));
            }
            if live.inline.is_none() {
                live.inline = Some((range.start, range.end, owner));
            } else {
                live.more.insert(range.start, (range.end, owner));
            }
        }
        Ok(())
    }

    fn release(&self, owner: ReservationOwner, range: &Range<u64>) {
        if range.start < range.end {
            let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if live
                .inline
                .is_some_and(|(start, _, o)| start == range.start && o == owner)
            {
                live.inline = None;
            } else if live.more.get(&range.start).is_some_and(|&(_, o)| o == owner) {
                live.more.remove(&range.start);
            }
        }
    }
}

/// What a reservation keeps alive until its batch retires.
#[derive(Debug)]
enum Reserved {
    Host(HostBuffer),
    Device(DeviceBuffer),
}

/// One request's claim on a destination range; dropping it (when the batch retires) ends it.
#[derive(Debug)]
pub(crate) struct Reservation {
    target: Reserved,
    owner: ReservationOwner,
    range: Range<u64>,
}

impl Reservation {
    /// The index, in its batch, of the request that holds it.
    pub(crate) fn request(&self) -> u32 {
        self.owner.request
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let ranges = match &self.target {
            Reserved::Host(buffer) => &buffer.alloc.reservations,
            Reserved::Device(buffer) => &buffer.inner.reservations,
        };
        ranges.release(self.owner, &self.range);
    }
}

/// A buffer in GPU memory as the engine knows it: a length, the reservations of requests in
/// flight, and a handle only the GPU stages read ([`DeviceBuffer::handle`]). Cloning shares it;
/// whatever the handle owns (the Vulkan buffer and its memory) is released when the last clone
/// goes, which a batch writing into it delays until the batch retires.
#[derive(Clone)]
pub struct DeviceBuffer {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    len: u64,
    handle: Box<dyn Any + Send + Sync>,
    reservations: Ranges,
    /// The GPU decoder can write into it (its GPU side has device addresses).
    decodable: bool,
}

impl DeviceBuffer {
    /// A device buffer of `len` bytes whose GPU side is `handle` (for `dsr-gpu`: the Vulkan
    /// buffer, and its memory when dsr allocated it).
    pub fn new(len: u64, handle: impl Any + Send + Sync) -> Self {
        DeviceBuffer {
            inner: Arc::new(DeviceInner {
                len,
                handle: Box::new(handle),
                reservations: Ranges::default(),
                decodable: false,
            }),
        }
    }

    /// The same, marked as a buffer the GPU decoder can write into (for `dsr-gpu`, which knows).
    pub fn new_decodable(len: u64, handle: impl Any + Send + Sync) -> Self {
        DeviceBuffer {
            inner: Arc::new(DeviceInner {
                len,
                handle: Box::new(handle),
                reservations: Ranges::default(),
                decodable: true,
            }),
        }
    }

    /// Whether the GPU decoder can write into it.
    pub fn decodable(&self) -> bool {
        self.inner.decodable
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The GPU side, for the stages that own its type to downcast.
    pub fn handle(&self) -> &(dyn Any + Send + Sync) {
        &*self.inner.handle
    }

    /// Whether two handles are the same buffer.
    pub fn same_buffer(&self, other: &DeviceBuffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn reserve(&self, owner: ReservationOwner, range: Range<u64>) -> Result<Reservation> {
        self.inner.reservations.reserve(self.inner.len, owner, range.clone())?;
        Ok(Reservation {
            target: Reserved::Device(self.clone()),
            owner,
            range,
        })
    }
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("len", &self.inner.len)
            .field("handles", &Arc::strong_count(&self.inner))
            .finish()
    }
}

/// The bytes of a memory source: shared with the runtime (`Arc<[u8]>`, `Vec<u8>`), or
/// borrowed from a caller who keeps them alive and unchanged until the request completes (the C
/// ABI's contract, and DirectStorage's: its memory sources are not copied).
#[derive(Clone)]
pub struct SourceBytes(SourceRepr);

#[derive(Clone)]
enum SourceRepr {
    Shared(Arc<[u8]>),
    Borrowed(RawBytes),
}

impl SourceBytes {
    /// `len` bytes at `ptr`, not copied and not freed here.
    ///
    /// # Safety
    /// The bytes must be readable, and not written by anyone, until every request using them
    /// has completed (its report or callback came); `ptr` may dangle only when `len` is 0.
    pub unsafe fn borrowed(ptr: NonNull<u8>, len: usize) -> Self {
        SourceBytes(SourceRepr::Borrowed(RawBytes { ptr, len }))
    }
}

impl std::ops::Deref for SourceBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            SourceRepr::Shared(bytes) => bytes,
            // SAFETY: by `borrowed`'s contract the bytes are readable and unchanged while a
            // request holds them, which is as long as this handle lives inside the engine.
            SourceRepr::Borrowed(raw) => unsafe { std::slice::from_raw_parts(raw.ptr.as_ptr(), raw.len) },
        }
    }
}

impl From<Arc<[u8]>> for SourceBytes {
    fn from(bytes: Arc<[u8]>) -> Self {
        SourceBytes(SourceRepr::Shared(bytes))
    }
}

impl From<Vec<u8>> for SourceBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SourceBytes(SourceRepr::Shared(bytes.into()))
    }
}

impl fmt::Debug for SourceBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            SourceRepr::Shared(_) => "shared",
            SourceRepr::Borrowed(_) => "borrowed",
        };
        write!(f, "SourceBytes({} bytes, {kind})", self.len())
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct RawBytes {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

// SAFETY: a `RawBytes` is an address and a length; moving or sharing those values is harmless.
// Every dereference is an `unsafe` block elsewhere that states why the bytes are alive and
// unaliased at that point.
unsafe impl Send for RawBytes {}
// SAFETY: as above.
unsafe impl Sync for RawBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: ReservationOwner = ReservationOwner { batch: 1, request: 0 };
    const OTHER: ReservationOwner = ReservationOwner { batch: 1, request: 1 };

    #[test]
    fn overlapping_reservations_are_refused() {
        let buffer = HostBuffer::new(100);
        let _a = buffer.reserve(OWNER, 0..50).unwrap();
        let err = buffer.reserve(OTHER, 49..60).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OverlappingDestinations);
        assert!(err.message().contains("request 0 of batch 1"), "{err}");
        buffer.reserve(OTHER, 50..60).unwrap();
    }

    #[test]
    fn overlaps_are_found_in_the_inline_place_and_the_map_alike() {
        const THIRD: ReservationOwner = ReservationOwner { batch: 2, request: 0 };
        let buffer = HostBuffer::new(100);
        let first = buffer.reserve(OWNER, 10..20).unwrap(); // inline
        let second = buffer.reserve(OTHER, 40..50).unwrap(); // in the map
        for (range, holder) in [(15..16, "request 0 of batch 1"), (45..60, "request 1 of batch 1")] {
            let err = buffer.reserve(THIRD, range).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::OverlappingDestinations);
            assert!(err.message().contains(holder), "{err}");
        }
        drop(first);
        // The inline place is free again and takes the next one; the map's entry still counts.
        let third = buffer.reserve(THIRD, 0..30).unwrap();
        assert!(buffer.reserve(OWNER, 49..51).is_err());
        drop(second);
        let again = buffer.reserve(OWNER, 30..100).unwrap();
        assert!(buffer.reserve(OTHER, 29..31).is_err());
        drop((third, again));
        buffer.reserve(OTHER, 0..100).unwrap();
    }

    #[test]
    fn out_of_range_is_too_small() {
        let buffer = HostBuffer::new(10);
        assert_eq!(
            buffer.reserve(OWNER, 5..11).unwrap_err().kind(),
            ErrorKind::DestinationTooSmall
        );
    }

    #[test]
    fn bytes_come_back_when_reservations_drop() {
        let mut buffer = HostBuffer::new(16);
        let reservation = buffer.reserve(OWNER, 0..16).unwrap();
        assert!(buffer.as_slice().is_none(), "a live reservation holds a handle");
        drop(reservation);
        assert_eq!(buffer.as_slice().unwrap(), &[0; 16]);
        buffer.reserve(OTHER, 0..16).map(drop).unwrap();
    }

    #[test]
    fn empty_reservations_never_conflict() {
        let buffer = HostBuffer::new(8);
        let _a = buffer.reserve(OWNER, 4..4).unwrap();
        let _b = buffer.reserve(OTHER, 0..8).unwrap();
    }
}
