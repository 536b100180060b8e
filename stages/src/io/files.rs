//! The ring's registered-file table: descriptors the kernel holds references to, so reads name
//! a table slot instead of a descriptor it would otherwise look up (and reference) per read.
//!
//! A slot is counted per read using it; the last read to finish unregisters it, so a closed and
//! reused descriptor number can never reach a stale registration.

use std::os::fd::RawFd;

use io_uring::IoUring;

/// Registered files: descriptor → table slot, with the number of reads using each.
#[derive(Debug)]
pub(crate) struct FileTable {
    enabled: bool,
    entries: Vec<(RawFd, u32, usize)>,
    free: Vec<u32>,
}

impl FileTable {
    /// A table of `slots` slots; `enabled` when the kernel registered a sparse table that size.
    pub fn new(enabled: bool, slots: u32) -> Self {
        FileTable {
            enabled,
            entries: Vec::new(),
            free: (0..slots).rev().collect(),
        }
    }

    /// The slot for `fd`, registering it if no read uses it yet; `None` when the table is off
    /// or full (the read then names the descriptor).
    pub fn register(&mut self, ring: &IoUring, fd: RawFd) -> Option<u32> {
        if !self.enabled {
            return None;
        }
        if let Some(entry) = self.entries.iter_mut().find(|e| e.0 == fd) {
            entry.2 += 1;
            return Some(entry.1);
        }
        let slot = self.free.pop()?;
        if ring.submitter().register_files_update(slot, &[fd]).is_err() {
            self.free.push(slot);
            return None;
        }
        self.entries.push((fd, slot, 1));
        Some(slot)
    }

    /// Drops a read's use of `slot`; the last user unregisters it.
    pub fn release(&mut self, ring: &IoUring, slot: u32) {
        if let Some(at) = self.entries.iter().position(|e| e.1 == slot) {
            self.entries[at].2 -= 1;
            if self.entries[at].2 == 0 {
                self.entries.swap_remove(at);
                let _ = ring.submitter().register_files_update(slot, &[-1]);
                self.free.push(slot);
            }
        }
    }
}
