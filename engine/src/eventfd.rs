//! A non-blocking eventfd: the readiness signal batches hand to poll loops, and completion
//! sources offer waiting workers (`Reactor::arm`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd, non-blocking and close-on-exec.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd, not readable until signalled.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Takes over `fd`, an eventfd the caller made (a C caller's, duplicated for dsr): signals
    /// write to it as to one of dsr's own.
    pub fn from_owned(fd: OwnedFd) -> Self {
        EventFd(fd)
    }

    /// Makes it readable (adds one to its counter).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. A failure (the counter
        // at its maximum) leaves it readable, which is all a poller needs.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes the signal back (resets the counter); returns whether it was signalled.
    pub fn drain(&self) -> bool {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from a non-blocking descriptor we own.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) == 8 }
    }

    /// The descriptor, to poll.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_drained_once() {
        let fd = EventFd::new().unwrap();
        assert!(!fd.drain(), "not signalled yet");
        fd.signal();
        fd.signal();
        assert!(fd.drain());
        assert!(!fd.drain(), "one drain takes every signal");
    }
}
