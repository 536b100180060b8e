//! Writes without the ring: the positioned-write stage (`pwrite(2)`, the fallback where
//! io_uring is missing, always through the page cache), and the sync stage both backends use.
//!
//! The sync stage makes a request's written bytes durable with `fdatasync` once all its writes
//! have completed. It blocks its worker for as long as the device takes, once per request that
//! asks for it; a write-heavy engine that syncs often would want it on the ring
//! (`IORING_OP_FSYNC`) instead.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use dsr_engine::{Error, ErrorKind, Input, NodeKind, NodeRef, Outcome, Stage};

use super::faults::{Fault, FaultPlan};
use super::open::open_for_write;

/// Writes a node's bytes to its file range with `pwrite`.
#[derive(Clone, Debug, Default)]
pub struct PwriteStage {
    faults: Option<Arc<FaultPlan>>,
}

impl PwriteStage {
    /// A stage whose writes suffer `faults` (for tests).
    pub fn with_faults(faults: Option<Arc<FaultPlan>>) -> Self {
        PwriteStage { faults }
    }
}

fn invalid(message: &str) -> Outcome {
    Outcome::Failed(Error::new(ErrorKind::InvalidRequest, message).at_stage(NodeKind::Write))
}

impl Stage for PwriteStage {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let Input::Bytes(bytes) = node.input() else {
            return invalid("a write node needs its bytes in memory");
        };
        let Some((file, offset)) = node.file_destination() else {
            return invalid("a write node needs a file destination");
        };
        let located = |err: Error| match file.path() {
            Some(path) => err.with_path(path).at_stage(NodeKind::Write),
            None => err.at_stage(NodeKind::Write),
        };
        let opened = match file.get_or_open(open_for_write) {
            Ok(opened) => opened,
            Err(err) => return Outcome::Failed(located(err)),
        };
        let result = match self.faults.as_ref().and_then(|plan| plan.fault_for(file.path())) {
            Some(Fault::Eio) if !bytes.is_empty() => {
                Err(Error::from_io(io::Error::from_raw_os_error(libc::EIO), "write failed").at_offset(offset))
            }
            Some(Fault::Short(max)) => write_all_at_in(opened, bytes, offset, max.max(1)),
            Some(Fault::Delay(delay)) => {
                std::thread::sleep(delay);
                write_all_at(opened, bytes, offset)
            }
            _ => write_all_at(opened, bytes, offset),
        };
        match result {
            Ok(()) => Outcome::Done {
                bytes: bytes.len() as u64,
            },
            Err(err) => Outcome::Failed(located(err)),
        }
    }
}

/// Writes all of `src` to `file` at `offset`, resuming after short writes and `EINTR`.
pub fn write_all_at(file: &File, src: &[u8], offset: u64) -> Result<(), Error> {
    write_all_at_in(file, src, offset, usize::MAX)
}

/// [`write_all_at`] with each `pwrite` offering at most `step` bytes.
fn write_all_at_in(file: &File, src: &[u8], offset: u64, step: usize) -> Result<(), Error> {
    let mut done = 0usize;
    while done < src.len() {
        let at = offset + done as u64;
        let end = src.len().min(done.saturating_add(step));
        match file.write_at(&src[done..end], at) {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("the write stopped at byte {at}: the kernel took no more bytes (is the file system full?)"),
                )
                .at_offset(at));
            }
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::from_io(err, "write failed").at_offset(at)),
        }
    }
    Ok(())
}

/// Makes a request's written bytes durable: `fdatasync` on its file, after its writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncStage;

impl Stage for SyncStage {
    fn run(&self, node: NodeRef<'_>) -> Outcome {
        let Some((file, _)) = node.file_destination() else {
            return Outcome::Failed(
                Error::new(ErrorKind::InvalidRequest, "a sync node needs a file").at_stage(NodeKind::Sync),
            );
        };
        let located = |err: Error| match file.path() {
            Some(path) => err.with_path(path).at_stage(NodeKind::Sync),
            None => err.at_stage(NodeKind::Sync),
        };
        let synced = file
            .get_or_open(open_for_write)
            .and_then(|f| f.sync_data().map_err(|e| Error::from_io(e, "fdatasync failed")));
        match synced {
            Ok(()) => Outcome::Done { bytes: 0 },
            Err(err) => Outcome::Failed(located(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_range_exactly_in_short_steps() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        write_all_at_in(tmp.as_file(), &data, 777, 1000).unwrap();
        let back = std::fs::read(tmp.path()).unwrap();
        assert_eq!(back.len(), 10_777);
        assert_eq!(&back[777..], &data[..]);
        assert!(back[..777].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_missing_file_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.bin");
        let err = open_for_write(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(!path.exists());
    }
}
