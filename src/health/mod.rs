//! Target health, the state machine: what active checks found, passive
//! outlier ejection, and the slow start ramp of a target that has just
//! become usable. The checks themselves run in `crate::checks`.
//!
//! A target's [`Health`] lives in its `state::TargetLive`, found by address, so
//! it outlives snapshots and survives reloads. The request path reads it with
//! relaxed atomic loads; only failures write.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::{HealthCheck, Outlier};

/// How healthy one target is, as far as this process can tell.
#[derive(Debug)]
pub struct Health {
    /// Set by the active checker after `unhealthy_threshold` failed probes.
    active_down: AtomicBool,
    /// Consecutive probe passes / failures.
    passes: AtomicU32,
    fails: AtomicU32,
    /// Consecutive failed requests (passive).
    failures: AtomicU32,
    /// Ejected until this time (ms, [`crate::clock::now_ms`]); 0 when never ejected.
    ejected_until: AtomicU64,
    /// Ejections so far: each doubles the next one's length.
    ejections: AtomicU32,
    /// When the target last became usable (added, healthy again): slow start.
    up_since: AtomicU64,
    /// An active checker task runs for this target.
    checker: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            active_down: AtomicBool::new(false),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            up_since: AtomicU64::new(crate::clock::now_ms()),
            checker: AtomicBool::new(false),
        }
    }
}

/// A change of state worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Down,
    Up,
}

impl Health {
    /// Treats the target as long established: no slow start. For the targets
    /// of the config the proxy starts with, which all begin together.
    pub fn settle(&self) {
        self.up_since.store(0, Relaxed);
    }

    /// Whether requests may be sent to the target at `now`.
    pub fn usable(&self, now: u64) -> bool {
        !self.active_down.load(Relaxed) && now >= self.ejected_until.load(Relaxed)
    }

    /// Failing active checks (ejection aside).
    pub fn active_down(&self) -> bool {
        self.active_down.load(Relaxed)
    }

    /// Milliseconds of ejection left at `now` (0 when not ejected).
    pub fn ejected_for(&self, now: u64) -> u64 {
        self.ejected_until.load(Relaxed).saturating_sub(now)
    }

    /// Share of its full weight the target takes at `now` (0.05 to 1): it ramps
    /// up linearly over `window` after it became usable.
    pub fn ramp(&self, now: u64, window: Duration) -> f64 {
        let window = window.as_millis() as u64;
        if window == 0 {
            return 1.0;
        }
        let since = self
            .up_since
            .load(Relaxed)
            .max(self.ejected_until.load(Relaxed));
        if since == 0 {
            return 1.0;
        }
        let elapsed = now.saturating_sub(since);
        if elapsed >= window {
            1.0
        } else {
            (elapsed as f64 / window as f64).max(0.05)
        }
    }

    /// A request to the target succeeded (a response below 500).
    pub fn record_success(&self, now: u64, outlier: &Outlier) {
        // Read first: the common case writes nothing, so no cache line bounces.
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        let until = self.ejected_until.load(Relaxed);
        if until != 0
            && self.ejections.load(Relaxed) != 0
            && now > until + outlier.max_ejection.as_millis() as u64
        {
            // Well behaved for a long while: the next ejection starts short again.
            self.ejections.store(0, Relaxed);
        }
    }

    /// A request to the target failed (connect error, timeout, 5xx). Returns the
    /// ejection length when this failure ejected it.
    /// `group` is the health of every target of this one's group (this one
    /// included): at most `max_ejected_percent` of it is ejected at once.
    pub fn record_failure<'a>(
        &self,
        now: u64,
        group: impl Iterator<Item = &'a Health>,
        outlier: &Outlier,
    ) -> Option<Duration> {
        if outlier.consecutive_failures == 0 {
            return None;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n < outlier.consecutive_failures || !self.usable(now) {
            return None;
        }
        // Cap the ejected share of the group, but always allow one ejection (a
        // group of one target can fail over only if its target can be ejected).
        let (mut total, mut ejected) = (0u64, 0u64);
        for h in group {
            total += 1;
            ejected += u64::from(h.ejected_for(now) > 0);
        }
        if ejected > 0 && (ejected + 1) * 100 > u64::from(outlier.max_ejected_percent) * total {
            return None;
        }
        let k = self.ejections.fetch_add(1, Relaxed).min(16);
        let length = outlier
            .base_ejection
            .saturating_mul(1 << k)
            .min(outlier.max_ejection);
        self.ejected_until
            .store(now + length.as_millis() as u64, Relaxed);
        self.failures.store(0, Relaxed);
        Some(length)
    }

    /// Takes one probe result; says when the target went down or came back.
    pub fn record_probe(&self, passed: bool, check: &HealthCheck) -> Transition {
        if passed {
            self.fails.store(0, Relaxed);
            let n = self.passes.fetch_add(1, Relaxed) + 1;
            if self.active_down.load(Relaxed) && n >= check.healthy_threshold {
                self.active_down.store(false, Relaxed);
                self.up_since.store(crate::clock::now_ms(), Relaxed);
                return Transition::Up;
            }
        } else {
            self.passes.store(0, Relaxed);
            let n = self.fails.fetch_add(1, Relaxed) + 1;
            if !self.active_down.load(Relaxed) && n >= check.unhealthy_threshold {
                self.active_down.store(true, Relaxed);
                return Transition::Down;
            }
        }
        Transition::None
    }

    /// Claims the target for an active checker; false when one runs already.
    pub fn start_checking(&self) -> bool {
        !self.checker.swap(true, Relaxed)
    }

    /// Active checking stopped (check removed from the config): trust the target again.
    pub fn stop_checking(&self) {
        self.active_down.store(false, Relaxed);
        self.passes.store(0, Relaxed);
        self.fails.store(0, Relaxed);
        self.checker.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_from_a_twentieth_to_full() {
        let h = Health::default();
        let now = crate::clock::now_ms();
        let w = Duration::from_secs(10);
        assert!(h.ramp(now, w) <= 0.06);
        assert!((h.ramp(now + 5_000, w) - 0.5).abs() < 0.01);
        assert_eq!(h.ramp(now + 10_000, w), 1.0);
        assert_eq!(h.ramp(now, Duration::ZERO), 1.0);
        h.settle();
        assert_eq!(h.ramp(now, w), 1.0);
    }
}
