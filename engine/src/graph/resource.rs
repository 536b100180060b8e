//! The resources of a batch graph: source files (opened at most once per batch), callers'
//! memory sources, host destinations, and request scratch. Nodes name them by `ResourceId`
//! in their spans; views see only their [`ResourceKind`].

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::buffer::{DeviceBuffer, RawBytes, SourceBytes};
use crate::error::Result;
use crate::scratch::Scratch;
/// Where a file source comes from.
#[derive(Clone, Debug)]
pub enum FileSource {
    /// A path, opened by the read stage on first use (once per batch).
    Path(PathBuf),
    /// A file the caller has already opened.
    Open(Arc<File>),
    /// A file the caller has already opened, with the path it was opened from (named in
    /// errors; never reopened by it).
    Named(Arc<File>, Arc<std::path::Path>),
}

/// What direct I/O (`O_DIRECT`) on a file must align, in bytes (powers of two): the memory a
/// read lands in, and the file offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectAlignment {
    /// Of the memory a read lands in.
    pub memory: u32,
    /// Of the file offset and the length.
    pub offset: u32,
}

/// A source file of a batch, opened at most once, by whichever read gets there first.
#[derive(Debug)]
pub struct FileSlot {
    pub(super) source: FileSource,
    /// The path, shared, so completion sources can name the file in errors without an
    /// allocation per read.
    pub(super) shared_path: Option<Arc<std::path::Path>>,
    pub(super) opened: OnceLock<Result<Arc<File>>>,
    /// The same file opened for direct I/O, when a read asks for it.
    pub(super) direct: OnceLock<Result<Arc<File>>>,
    /// What direct I/O on it must align, asked once.
    pub(super) direct_alignment: OnceLock<DirectAlignment>,
    /// Whether the slot is a write destination (its stages open it for writing).
    pub(super) writable: bool,
}

impl FileSlot {
    /// The source as the request gave it.
    pub fn source(&self) -> &FileSource {
        &self.source
    }

    /// Whether requests write this file (else they read it).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// What identifies the file across slots of one batch: its path, or the address of the
    /// caller's open file.
    pub(super) fn identity(&self) -> FileIdentity<'_> {
        match &self.source {
            FileSource::Path(path) => FileIdentity::Path(path),
            FileSource::Open(file) | FileSource::Named(file, _) => FileIdentity::Open(Arc::as_ptr(file) as usize),
        }
    }

    /// The path, if the source is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.shared_path.as_deref()
    }

    /// The path as a shared handle (a reference count, not an allocation).
    pub fn shared_path(&self) -> Option<Arc<std::path::Path>> {
        self.shared_path.clone()
    }

    /// The open file, opening a path with `open` the first time. A failed open is remembered, so
    /// every request of the batch that needs the file reports the same error.
    pub fn get_or_open(&self, open: impl FnOnce(&std::path::Path) -> Result<File>) -> Result<&File> {
        let opened = self.opened.get_or_init(|| match &self.source {
            FileSource::Open(file) | FileSource::Named(file, _) => Ok(file.clone()),
            FileSource::Path(path) => open(path).map(Arc::new),
        });
        match opened {
            Ok(file) => Ok(file),
            Err(err) => Err(err.clone()),
        }
    }

    /// The file opened for direct I/O (`O_DIRECT`), opened with `open` the first time; a failed
    /// open (a file system without direct I/O) is remembered like [`FileSlot::get_or_open`]'s.
    pub fn get_or_open_direct(&self, open: impl FnOnce(&FileSource) -> Result<File>) -> Result<&File> {
        match self.direct.get_or_init(|| open(&self.source).map(Arc::new)) {
            Ok(file) => Ok(file),
            Err(err) => Err(err.clone()),
        }
    }

    /// What direct I/O on the file must align, asked with `probe` the first time.
    pub fn direct_alignment(&self, probe: impl FnOnce() -> DirectAlignment) -> DirectAlignment {
        *self.direct_alignment.get_or_init(probe)
    }
}

/// A file's identity within a batch, for telling a read and a write of the same file apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum FileIdentity<'a> {
    Path(&'a std::path::Path),
    Open(usize),
}

/// What a resource of a graph is, for views and validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A file: a source, or a write destination.
    File,
    /// A caller's source bytes in memory.
    Memory,
    /// A caller's host destination.
    Host,
    /// A GPU buffer destination.
    Device,
    /// Batch-owned intermediate bytes.
    Scratch,
}

pub(crate) enum Resource {
    /// Boxed: a slot holds two lazily opened descriptors and their errors.
    File(Box<FileSlot>),
    Memory(SourceBytes),
    /// Kept alive by the batch's reservations until it retires.
    Host(RawBytes),
    /// Kept alive, like a host destination, by the batch's reservation.
    Device(DeviceBuffer),
    Scratch(Scratch),
}

impl Resource {
    pub(crate) fn kind(&self) -> ResourceKind {
        match self {
            Resource::File(_) => ResourceKind::File,
            Resource::Memory(_) => ResourceKind::Memory,
            Resource::Host(_) => ResourceKind::Host,
            Resource::Device(_) => ResourceKind::Device,
            Resource::Scratch(_) => ResourceKind::Scratch,
        }
    }

    /// Length in bytes; files have none known to the graph.
    pub(super) fn len(&self) -> Option<u64> {
        match self {
            Resource::File(_) => None,
            Resource::Memory(bytes) => Some(bytes.len() as u64),
            Resource::Host(raw) => Some(raw.len as u64),
            Resource::Device(buffer) => Some(buffer.len()),
            Resource::Scratch(scratch) => Some(scratch.len() as u64),
        }
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::File(slot) => f.debug_tuple("File").field(&slot.source).finish(),
            Resource::Memory(bytes) => write!(f, "Memory({} bytes)", bytes.len()),
            Resource::Host(raw) => write!(f, "Host({} bytes)", raw.len),
            Resource::Device(buffer) => write!(f, "Device({} bytes)", buffer.len()),
            Resource::Scratch(s) => write!(f, "Scratch({} bytes)", s.len()),
        }
    }
}
