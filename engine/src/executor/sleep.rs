//! Parking idle workers without losing wake-ups, and without a wake-up per node.
//!
//! A wake-up costs tens of microseconds on small VMs, so a worker only parks after it has spun
//! through every queue, and a producer only wakes a sleeper when one is parked: pushing a node is
//! one fence and one load when nobody sleeps. The protocol is the classic announce-then-recheck:
//!
//! - sleeper: lock; `sleepers += 1`; fence; re-check every queue; if empty, wait for a token;
//! - producer: push; fence; if `sleepers > 0`: lock, move one sleeper to a token, notify.
//!
//! The two fences order "push, then read sleepers" against "announce, then read queues": either
//! the sleeper's re-check sees the push or the producer sees the sleeper. Tokens (counted under
//! the lock) make a notify that lands before the sleeper waits still count.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Sleep {
    /// Workers parked or about to park; only changed under `tokens`' lock.
    sleepers: AtomicUsize,
    /// Wake-ups handed out and not yet taken.
    tokens: Mutex<usize>,
    wake: Condvar,
}

impl Sleep {
    /// Parks the calling worker until woken, unless `has_work` finds something once it has
    /// announced itself. With a `timeout` it also returns when that passes.
    pub fn sleep(&self, has_work: impl Fn() -> bool, timeout: Option<Duration>) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if has_work() {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        loop {
            if *tokens > 0 {
                // The producer that left this token already took us off `sleepers`.
                *tokens -= 1;
                return;
            }
            match timeout {
                None => tokens = self.wake.wait(tokens).unwrap_or_else(|p| p.into_inner()),
                Some(timeout) => {
                    let (guard, result) = self
                        .wake
                        .wait_timeout(tokens, timeout)
                        .unwrap_or_else(|p| p.into_inner());
                    tokens = guard;
                    if result.timed_out() && *tokens == 0 {
                        self.sleepers.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    }

    /// Wakes up to `count` parked workers, if any are parked. Call after making work visible.
    pub fn notify(&self, count: usize) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let woken = count.min(self.sleepers.load(Ordering::SeqCst));
        if woken == 0 {
            return;
        }
        self.sleepers.fetch_sub(woken, Ordering::SeqCst);
        *tokens += woken;
        drop(tokens);
        if woken == 1 {
            self.wake.notify_one();
        } else {
            self.wake.notify_all();
        }
    }

    /// Wakes every parked worker (shutdown, or a batch retiring during shutdown).
    pub fn notify_all(&self) {
        self.notify(usize::MAX);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;

    /// A producer that publishes work and notifies never strands a sleeper, however the two
    /// interleave (run many times to shake out orderings).
    #[test]
    fn stress_no_lost_wakeups() {
        for _ in 0..2000 {
            let sleep = Arc::new(Sleep::default());
            let work = Arc::new(AtomicBool::new(false));
            let sleeper = {
                let (sleep, work) = (sleep.clone(), work.clone());
                thread::spawn(move || {
                    while !work.load(Ordering::SeqCst) {
                        sleep.sleep(|| work.load(Ordering::SeqCst), None);
                    }
                })
            };
            work.store(true, Ordering::SeqCst);
            sleep.notify(1);
            sleeper.join().unwrap();
        }
    }

    #[test]
    fn timeout_returns_without_work() {
        let sleep = Sleep::default();
        sleep.sleep(|| false, Some(Duration::from_millis(1)));
        assert_eq!(sleep.sleepers.load(Ordering::SeqCst), 0);
    }
}
