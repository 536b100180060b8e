//! The public error type: a kind the caller can match, the context a person needs to act on it
//! (stage, path, offset, tile, errno), and the underlying cause as [`std::error::Error::source`]
//! (the `io::Error`, the codec's typed reason), so a binding (the C ABI) can map it to a code of
//! its own without parsing text.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::vocabulary::NodeKind;

/// What went wrong, for matching. The message of the [`Error`] says what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is malformed (zero-length stream, range overflow, bad graph).
    InvalidRequest,
    /// The destination cannot hold what the request produces.
    DestinationTooSmall,
    /// Two in-flight requests would write the same destination bytes.
    OverlappingDestinations,
    /// The file does not exist.
    NotFound,
    /// The file could not be opened or read for lack of permission.
    PermissionDenied,
    /// The requested range runs past the end of the file.
    UnexpectedEof,
    /// Any other I/O error; `errno` says which.
    Io,
    /// Memory for the request (scratch, a buffer, GPU memory) could not be allocated.
    OutOfMemory,
    /// The GPU failed the work: the device was lost, or a Vulkan call failed. The error's
    /// source is the `VkResult` (`ash::vk::Result`); host requests are unaffected.
    Device,
    /// The data is corrupt (bad compressed stream, hash mismatch).
    Corrupt,
    /// The runtime lacks what the request needs (a codec, a device feature).
    Unsupported,
    /// A completion source dropped an operation without completing it.
    Abandoned,
    /// The executor is shutting down and takes no new work.
    ShutDown,
    /// A queue has no free slot and the caller asked not to wait.
    WouldBlock,
    /// The queue was closed: it takes no work and completes nothing more.
    Closed,
    /// A stage panicked: a bug in dsr or in a custom stage. The node failed; nothing else did.
    Internal,
}

/// What an [`Error`] keeps of the error it came from.
type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A failure, with the context to find its cause.
///
/// One pointer wide: a node's outcome and every `Result` on the hot path carry it, and failures
/// are rare, so the context lives behind a box.
#[derive(Clone, Debug)]
pub struct Error(Box<Context>);

const _: () = assert!(std::mem::size_of::<Error>() == std::mem::size_of::<usize>());

#[derive(Clone, Debug)]
struct Context {
    kind: ErrorKind,
    message: String,
    stage: Option<NodeKind>,
    path: Option<PathBuf>,
    offset: Option<u64>,
    tile: Option<u32>,
    errno: Option<i32>,
    request: Option<u32>,
    /// Shared, so an error stays cheap to clone into every report that names it.
    source: Option<Cause>,
}

/// Errors are equal when everything they say is: kind, message, context, and their causes'
/// messages (a cause has no equality of its own).
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        fn said(e: &Error) -> impl PartialEq + '_ {
            let c = &e.0;
            (
                c.kind, &c.message, c.stage, &c.path, c.offset, c.tile, c.errno, c.request,
            )
        }
        said(self) == said(other)
            && self.0.source.as_ref().map(ToString::to_string) == other.0.source.as_ref().map(ToString::to_string)
    }
}

impl Eq for Error {}

impl Error {
    /// An error of `kind` with a message that should say what to do.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Context {
            kind,
            message: message.into(),
            stage: None,
            path: None,
            offset: None,
            tile: None,
            errno: None,
            request: None,
            source: None,
        }))
    }

    /// An I/O error, classified by its errno and kept as the [`source`](std::error::Error::source).
    pub fn from_io(err: io::Error, action: &str) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::UnexpectedEof => ErrorKind::UnexpectedEof,
            io::ErrorKind::OutOfMemory => ErrorKind::OutOfMemory,
            _ => ErrorKind::Io,
        };
        let mut error = Error::new(kind, format!("{action}: {err}"));
        error.0.errno = err.raw_os_error();
        error.with_source(err)
    }

    /// Keeps `cause` as the error's [`source`](std::error::Error::source) (unless it has one).
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source.get_or_insert_with(|| Arc::new(cause));
        self
    }

    /// Names the stage that failed.
    pub fn at_stage(mut self, stage: NodeKind) -> Self {
        self.0.stage.get_or_insert(stage);
        self
    }
    /// Names the file involved.
    pub fn with_path(mut self, path: &Path) -> Self {
        self.0.path.get_or_insert_with(|| path.to_owned());
        self
    }
    /// Names the byte offset (in the source) where it failed.
    pub fn at_offset(mut self, offset: u64) -> Self {
        self.0.offset.get_or_insert(offset);
        self
    }
    /// Names the compressed tile that failed.
    pub fn at_tile(mut self, tile: u32) -> Self {
        self.0.tile.get_or_insert(tile);
        self
    }
    /// Records the OS error number.
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.0.errno.get_or_insert(errno);
        self
    }
    /// Names the request (its index in its batch).
    pub fn for_request(mut self, request: u32) -> Self {
        self.0.request.get_or_insert(request);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    /// The human-readable cause, without the context fields.
    pub fn message(&self) -> &str {
        &self.0.message
    }
    /// The stage that failed, if a stage did.
    pub fn stage(&self) -> Option<NodeKind> {
        self.0.stage
    }
    /// The file involved, if any.
    pub fn path(&self) -> Option<&Path> {
        self.0.path.as_deref()
    }
    /// The source byte offset, if known.
    pub fn offset(&self) -> Option<u64> {
        self.0.offset
    }
    /// The compressed tile, if known.
    pub fn tile(&self) -> Option<u32> {
        self.0.tile
    }
    /// The OS error number, if the OS reported one.
    pub fn errno(&self) -> Option<i32> {
        self.0.errno
    }
    /// The request's index in its batch, if known.
    pub fn request(&self) -> Option<u32> {
        self.0.request
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(request) = self.0.request {
            write!(f, "request {request}: ")?;
        }
        if let Some(stage) = self.0.stage {
            write!(f, "{stage} stage: ")?;
        }
        f.write_str(&self.0.message)?;
        let mut context = Vec::new();
        if let Some(path) = &self.0.path {
            context.push(format!("file {}", path.display()));
        }
        if let Some(offset) = self.0.offset {
            context.push(format!("offset {offset}"));
        }
        if let Some(tile) = self.0.tile {
            context.push(format!("tile {tile}"));
        }
        if let Some(errno) = self.0.errno {
            context.push(format!("errno {errno}"));
        }
        if !context.is_empty() {
            write!(f, " ({})", context.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_every_context_field() {
        let io = io::Error::from_raw_os_error(libc::ENOENT);
        let err = Error::from_io(io, "cannot open the source file")
            .at_stage(NodeKind::Read)
            .with_path(Path::new("/assets/a.bin"))
            .at_offset(4096)
            .for_request(7);
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.errno(), Some(libc::ENOENT));
        let text = err.to_string();
        assert!(
            text.starts_with("request 7: read stage: cannot open the source file"),
            "{text}"
        );
        assert!(text.contains("file /assets/a.bin"), "{text}");
        assert!(text.contains("offset 4096"), "{text}");
        assert!(text.contains("errno 2"), "{text}");
    }

    #[test]
    fn the_cause_is_kept_as_the_source() {
        use std::error::Error as _;
        let err = Error::from_io(io::Error::from_raw_os_error(libc::EIO), "read failed");
        let io = err
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .expect("an io::Error source");
        assert_eq!(io.raw_os_error(), Some(libc::EIO));
        assert_eq!(err.clone(), err, "clones share the cause");
        assert!(Error::new(ErrorKind::Corrupt, "x").source().is_none());
        let oom = Error::from_io(io::Error::from(io::ErrorKind::OutOfMemory), "cannot map");
        assert_eq!(oom.kind(), ErrorKind::OutOfMemory);
    }

    #[test]
    fn the_first_context_wins() {
        let err = Error::new(ErrorKind::Io, "x").at_offset(1).at_offset(2);
        assert_eq!(err.offset(), Some(1));
    }
}
