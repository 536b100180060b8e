//! The read stage on positioned reads (`pread(2)`): the portable fallback of the io_uring ring,
//! chosen at start-up when io_uring is unavailable, or by configuration. It reads through the
//! page cache whatever the request's I/O policy (direct I/O needs aligned staging, which the
//! ring provides).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use dsr_engine::{Error, ErrorKind, Input, NodeKind, NodeRef, Outcome, Stage};

use super::faults::{Fault, FaultPlan};
use super::open::open_buffered;

/// Reads a node's file range straight into its destination with `pread`.
#[derive(Clone, Debug, Default)]
pub struct PreadStage {
    faults: Option<Arc<FaultPlan>>,
}

impl PreadStage {
    /// A stage whose reads suffer `faults` (for tests).
    pub fn with_faults(faults: Option<Arc<FaultPlan>>) -> Self {
        PreadStage { faults }
    }
}

impl Stage for PreadStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let Input::File { file, offset, len } = node.input() else {
            return Outcome::Failed(Error::new(ErrorKind::InvalidRequest, "a read node needs a file input"));
        };
        let located = |err: Error| match file.path() {
            Some(path) => err.with_path(path),
            None => err,
        };
        let opened = match file.get_or_open(open_buffered) {
            Ok(opened) => opened,
            Err(err) => return Outcome::Failed(located(err)),
        };
        let fault = self.faults.as_ref().and_then(|plan| plan.fault_for(file.path()));
        let Some(dst) = node.destination() else {
            return Outcome::Failed(Error::new(ErrorKind::InvalidRequest, "a read node needs a destination"));
        };
        debug_assert_eq!(dst.len() as u64, len);
        let result = match fault {
            Some(Fault::Eio) if !dst.is_empty() => {
                Err(Error::from_io(io::Error::from_raw_os_error(libc::EIO), "read failed")
                    .at_stage(NodeKind::Read)
                    .at_offset(offset))
            }
            Some(Fault::Short(max)) => read_exact_at_in(opened, dst, offset, 0, max.max(1)),
            Some(Fault::Delay(delay)) => {
                std::thread::sleep(delay);
                read_exact_at(opened, dst, offset)
            }
            _ => read_exact_at(opened, dst, offset),
        };
        match result {
            Ok(()) => Outcome::Done { bytes: len },
            Err(err) => Outcome::Failed(located(err)),
        }
    }
}

/// Fills `dst` from `file` at `offset`, resuming after short reads and `EINTR`. Running out of
/// file before `dst` is full is an `UnexpectedEof` error naming where the file ended.
pub fn read_exact_at(file: &File, dst: &mut [u8], offset: u64) -> Result<(), Error> {
    read_exact_at_in(file, dst, offset, 0, usize::MAX)
}

/// [`read_exact_at`] of a range whose first `from` bytes are in `dst` already: reads the rest,
/// and an error names the whole range.
pub fn read_rest_at(file: &File, dst: &mut [u8], offset: u64, from: usize) -> Result<(), Error> {
    read_exact_at_in(file, dst, offset, from, usize::MAX)
}

/// [`read_rest_at`] with each `pread` asking for at most `step` bytes.
fn read_exact_at_in(file: &File, dst: &mut [u8], offset: u64, from: usize, step: usize) -> Result<(), Error> {
    let mut done = from;
    while done < dst.len() {
        let at = offset + done as u64;
        let end = dst.len().min(done.saturating_add(step));
        match file.read_at(&mut dst[done..end], at) {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "the range {offset}+{} runs past the end of the file, which ends at byte {at}; \
                         read a shorter range",
                        dst.len()
                    ),
                )
                .at_offset(at));
            }
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::from_io(err, "read failed").at_offset(at)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_a_range_exactly() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        tmp.write_all(&data).unwrap();
        let mut dst = vec![0u8; 3000];
        read_exact_at(tmp.as_file(), &mut dst, 1234).unwrap();
        assert_eq!(dst, data[1234..4234]);
    }

    #[test]
    fn past_eof_names_where_the_file_ends() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&[1; 100]).unwrap();
        let mut dst = vec![0u8; 50];
        let err = read_exact_at(tmp.as_file(), &mut dst, 80).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        assert_eq!(err.offset(), Some(100));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = open_buffered(std::path::Path::new("/nonexistent/dsr/asset.bin")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert!(err.to_string().contains("/nonexistent/dsr/asset.bin"), "{err}");
    }
}
