//! The retry budget: retries may add at most a share of recent requests (plus
//! a small floor per second), so a failing upstream cannot turn every request
//! into several and amplify its own outage.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::Retries;

/// Length of the window the budget counts over, in seconds.
const WINDOW_SECS: u64 = 10;

/// Requests and retries in the current window. Process-wide, outside the
/// snapshot, so a reload does not refill it.
#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Start of the window, in `clock::now_ms` seconds.
    window: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn roll(&self, now_ms: u64) {
        let now = now_ms / 1000;
        let start = self.window.load(Relaxed);
        if now >= start + WINDOW_SECS
            && self
                .window
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
        {
            // Racy by a few counts at the boundary, which a budget can afford.
            self.requests.store(0, Relaxed);
            self.retries.store(0, Relaxed);
        }
    }

    /// Counts a request at `now_ms` (`clock::now_ms`).
    pub fn note_request(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget, if there is one.
    pub fn allow(&self, cfg: &Retries) -> bool {
        let requests = self.requests.load(Relaxed);
        let cap = requests * u64::from(cfg.budget_percent) / 100
            + u64::from(cfg.min_per_second) * WINDOW_SECS;
        let used = self.retries.fetch_add(1, Relaxed);
        if used < cap {
            true
        } else {
            self.retries.fetch_sub(1, Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_share_of_requests_plus_a_floor() {
        let cfg = Retries {
            attempts: 2,
            budget_percent: 10,
            min_per_second: 1,
        };
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.note_request(crate::clock::now_ms());
        }
        // 10% of 100 plus 1/s over a 10 s window: 20 retries, then no more.
        let allowed = (0..50).filter(|_| b.allow(&cfg)).count();
        assert_eq!(allowed, 20);
        let none = Retries {
            budget_percent: 0,
            min_per_second: 0,
            ..cfg
        };
        assert!(!RetryBudget::default().allow(&none));
    }
}
