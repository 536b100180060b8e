//! The read stage on positioned reads (`pread(2)`): the portable fallback of the io_uring ring.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use dsr_engine::{Error, ErrorKind, Input, NodeKind, NodeRef, Outcome, Stage};

/// Reads a node's file range straight into its destination with `pread`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreadStage;

impl Stage for PreadStage {
    fn run(&self, mut node: NodeRef<'_>) -> Outcome {
        let Input::File { file, offset, len } = node.input() else {
            return Outcome::Failed(Error::new(ErrorKind::InvalidRequest, "a read node needs a file input"));
        };
        let located = |err: Error| match file.path() {
            Some(path) => err.with_path(path),
            None => err,
        };
        let opened = match file.get_or_open(open_source) {
            Ok(opened) => opened,
            Err(err) => return Outcome::Failed(located(err)),
        };
        let Some(dst) = node.destination() else {
            return Outcome::Failed(Error::new(ErrorKind::InvalidRequest, "a read node needs a destination"));
        };
        debug_assert_eq!(dst.len() as u64, len);
        match read_exact_at(opened, dst, offset) {
            Ok(()) => Outcome::Done { bytes: len },
            Err(err) => Outcome::Failed(located(err)),
        }
    }
}

/// Opens a source file for reading; errors name the path.
pub fn open_source(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|err| {
        Error::from_io(&err, "cannot open the source file")
            .with_path(path)
            .at_stage(NodeKind::Read)
    })
}

/// Fills `dst` from `file` at `offset`, resuming after short reads and `EINTR`. Running out of
/// file before `dst` is full is an `UnexpectedEof` error naming where the file ended.
pub fn read_exact_at(file: &File, dst: &mut [u8], offset: u64) -> Result<(), Error> {
    let mut done = 0usize;
    while done < dst.len() {
        let at = offset + done as u64;
        match file.read_at(&mut dst[done..], at) {
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
            Err(err) => return Err(Error::from_io(&err, "read failed").at_offset(at)),
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
        let err = open_source(Path::new("/nonexistent/dsr/asset.bin")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert!(err.to_string().contains("/nonexistent/dsr/asset.bin"), "{err}");
    }
}
