//! The file bytes a batch's requests read and write, checked as each request is pushed: a
//! request that would write bytes another request of the batch reads or writes is refused
//! alone, with the reason, rather than failing the whole batch when it compiles (the compile
//! check stays as the backstop). Reads against reads never conflict, so a batch of reads only
//! costs nothing here.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use crate::graph::FileSource;
use crate::request::{Destination, Request, Source};

/// A file as the compile check identifies it: its path, or the address of the caller's open
/// file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    Path(PathBuf),
    Open(usize),
}

impl FileKey {
    fn of(file: &FileSource) -> FileKey {
        match file {
            FileSource::Path(path) => FileKey::Path(path.clone()),
            FileSource::Open(file) | FileSource::Named(file, _) => FileKey::Open(std::sync::Arc::as_ptr(file) as usize),
        }
    }
}

/// A range of one file.
type Access = Option<(FileKey, Range<u64>)>;

/// What one request reads and writes of files.
#[derive(Debug)]
pub(crate) struct Accesses {
    read: Access,
    written: Access,
}

/// One file's ranges read and written so far.
#[derive(Debug, Default)]
struct Ranges {
    read: Vec<Range<u64>>,
    written: Vec<Range<u64>>,
}

/// Per file, the ranges read and the ranges written so far.
#[derive(Debug, Default)]
pub(crate) struct FileRanges {
    files: HashMap<FileKey, Ranges>,
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

impl FileRanges {
    /// The file ranges `request` reads and writes.
    fn of(request: &Request) -> Accesses {
        let read = match &request.source {
            Source::File { file, offset, len } if *len > 0 => {
                Some((FileKey::of(file), *offset..offset.saturating_add(*len)))
            }
            _ => None,
        };
        let written = match &request.destination {
            Destination::File { file, offset, .. } if request.output_len() > 0 => {
                Some((FileKey::of(file), *offset..offset.saturating_add(request.output_len())))
            }
            _ => None,
        };
        Accesses { read, written }
    }

    /// Refuses `request` if it writes bytes the batch reads or writes, or reads bytes the batch
    /// writes (or reads and writes overlapping bytes itself); otherwise its ranges, for
    /// [`FileRanges::add`] once it is lowered.
    pub fn check(&self, request: &Request) -> Result<Accesses> {
        let Accesses { read, written } = Self::of(request);
        let conflict = |what: &str| {
            Err(Error::new(
                ErrorKind::OverlappingDestinations,
                format!(
                    "{what} overlapping bytes of one file in one batch; put the write and the other \
                     access in batches one after the other"
                ),
            ))
        };
        if let (Some((rk, r)), Some((wk, w))) = (&read, &written) {
            if rk == wk && overlaps(r, w) {
                return conflict("it reads and writes");
            }
        }
        if let Some((key, r)) = &read {
            if let Some(ranges) = self.files.get(key) {
                if ranges.written.iter().any(|w| overlaps(r, w)) {
                    return conflict("it reads bytes another request writes:");
                }
            }
        }
        if let Some((key, w)) = &written {
            if let Some(ranges) = self.files.get(key) {
                if ranges.written.iter().any(|o| overlaps(w, o)) {
                    return conflict("it writes bytes another request writes:");
                }
                if ranges.read.iter().any(|o| overlaps(w, o)) {
                    return conflict("it writes bytes another request reads:");
                }
            }
        }
        Ok(Accesses { read, written })
    }

    /// Records a lowered request's ranges.
    pub fn add(&mut self, accesses: Accesses) {
        if let Some((key, r)) = accesses.read {
            self.files.entry(key).or_default().read.push(r);
        }
        if let Some((key, w)) = accesses.written {
            self.files.entry(key).or_default().written.push(w);
        }
    }
}
