//! Fault injection for the read stages: a plan of rules, each matching reads of files whose path
//! contains a string, that turns a read's result into an I/O error, a short read, or a late
//! completion. The io_uring stage applies it to real completions (the read went through the
//! kernel; its result is rewritten here, by `FaultPlan::rewrite`), the positioned-read stage
//! to its calls, so both stages' error and retry paths run for real in tests.

use std::path::Path;
use std::time::{Duration, Instant};

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

/// What becomes of a ring completion under a fault plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rewritten {
    /// Handle it now, with this result.
    Now(i32),
    /// Hold it back until then, with its own result.
    Later(Instant),
}

impl FaultPlan {
    /// Rewrites the result `res` (bytes, or a negated errno) of a real io_uring completion of a
    /// read of `path`: an error becomes of a success, a long read becomes short, or the
    /// completion is held back, once per read (`already_delayed` says whether it was).
    pub(crate) fn rewrite(&self, path: Option<&Path>, res: i32, already_delayed: bool) -> Rewritten {
        match self.fault_for(path) {
            Some(Fault::Eio) if res >= 0 => Rewritten::Now(-libc::EIO),
            Some(Fault::Short(max)) => {
                let max = max.clamp(1, i32::MAX as usize) as i32;
                Rewritten::Now(res.min(max))
            }
            Some(Fault::Delay(delay)) if !already_delayed => Rewritten::Later(Instant::now() + delay),
            _ => Rewritten::Now(res),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_are_rewritten_by_the_first_matching_rule() {
        let plan = FaultPlan::new("eio", Fault::Eio)
            .with("short", Fault::Short(100))
            .with("slow", Fault::Delay(Duration::from_secs(60)));
        fn at(path: &str) -> Option<&Path> {
            Some(Path::new(path))
        }
        assert_eq!(plan.rewrite(at("/a/eio.bin"), 4096, false), Rewritten::Now(-libc::EIO));
        assert_eq!(
            plan.rewrite(at("/a/eio.bin"), -libc::ENOENT, false),
            Rewritten::Now(-libc::ENOENT)
        );
        assert_eq!(plan.rewrite(at("/a/short.bin"), 4096, false), Rewritten::Now(100));
        assert_eq!(plan.rewrite(at("/a/short.bin"), 50, false), Rewritten::Now(50));
        assert!(matches!(plan.rewrite(at("/a/slow.bin"), 7, false), Rewritten::Later(_)));
        assert_eq!(plan.rewrite(at("/a/slow.bin"), 7, true), Rewritten::Now(7));
        assert_eq!(plan.rewrite(at("/a/fine.bin"), 7, false), Rewritten::Now(7));
        assert_eq!(plan.rewrite(None, 7, false), Rewritten::Now(7));
    }
}
