//! How a node's work comes out: [`Outcome`], what a stage's `run` returns, and [`NodeEnd`], how
//! the node ended, which completion records, the request report counts and observers see.
//!
//! A node ends in one of four ways, and only these:
//!
//! | end | who decides | the request |
//! |---|---|---|
//! | `Done { bytes }` | the stage, or the completion source it deferred to | goes on |
//! | `Failed(error)` | likewise | fails with its first error; its other nodes are tombstoned |
//! | `Skipped` | a tombstone that landed before the node started: no work ran | reports Cancelled (or Failed, if a failure tombstoned it) |
//! | `Cancelled` | the completion source, after the request was tombstoned while the node's work was deferred (an io_uring read answered `ECANCELED`, a wait for a budget abandoned) | reports Cancelled |

use std::fmt;

use crate::error::Error;

/// What running a node came to.
#[derive(Debug)]
pub enum Outcome {
    /// The work is done; `bytes` were produced.
    Done {
        /// Bytes produced at the node's destination.
        bytes: u64,
    },
    /// The work failed; the request fails with this error.
    Failed(Error),
    /// The stage handed the node to a completion source through `NodeRef::defer`; it ends when
    /// that source finishes the `PendingNode`.
    Pending(Deferred),
}

/// Proof that a node was deferred: only `NodeRef::defer` makes one.
#[derive(Debug)]
pub struct Deferred(pub(crate) ());

/// How a node ended.
#[derive(Clone, PartialEq, Eq)]
pub enum NodeEnd {
    /// Its work produced `bytes`.
    Done {
        /// Bytes produced.
        bytes: u64,
    },
    /// Its work failed.
    Failed(Error),
    /// It was tombstoned before it started: its work never ran.
    Skipped,
    /// Its work was handed to a completion source and cut short there because its request was
    /// cancelled.
    Cancelled,
}

impl From<Result<u64, Error>> for NodeEnd {
    fn from(result: Result<u64, Error>) -> Self {
        match result {
            Ok(bytes) => NodeEnd::Done { bytes },
            Err(err) => NodeEnd::Failed(err),
        }
    }
}

impl fmt::Debug for NodeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeEnd::Done { bytes } => write!(f, "Done({bytes} bytes)"),
            NodeEnd::Failed(err) => write!(f, "Failed({err})"),
            NodeEnd::Skipped => f.write_str("Skipped"),
            NodeEnd::Cancelled => f.write_str("Cancelled"),
        }
    }
}
