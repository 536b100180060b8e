//! Fault injection for the read stages: a plan of rules, each matching reads of files whose path
//! contains a string, that turns a read's result into an I/O error, a short read, or a late
//! completion. The io_uring stage applies it to real completions (the read went through the
//! kernel; its result is rewritten), the positioned-read stage to its calls, so both stages'
//! error and retry paths run for real in tests.

use std::path::Path;
use std::time::Duration;

/// What a matching read suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// It fails with `EIO`.
    Eio,
    /// It returns at most this many bytes per call (the rest must be read again).
    Short(usize),
    /// Its completion is held back this long.
    Delay(Duration),
}

/// One rule: reads of files whose path contains `path_contains` suffer `fault`.
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// Substring of the file's path.
    pub path_contains: String,
    /// What happens to matching reads.
    pub fault: Fault,
}

/// A set of rules; the first matching rule applies.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// The rules.
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// A plan with one rule.
    pub fn new(path_contains: impl Into<String>, fault: Fault) -> Self {
        FaultPlan::default().with(path_contains, fault)
    }

    /// Adds a rule.
    pub fn with(mut self, path_contains: impl Into<String>, fault: Fault) -> Self {
        self.rules.push(FaultRule {
            path_contains: path_contains.into(),
            fault,
        });
        self
    }

    /// The fault for a read of `path`, if any.
    pub fn fault_for(&self, path: Option<&Path>) -> Option<Fault> {
        let path = path?.to_string_lossy();
        self.rules
            .iter()
            .find(|r| path.contains(&r.path_contains))
            .map(|r| r.fault)
    }
}
