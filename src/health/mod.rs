//! Target health: active HTTP checks, passive outlier ejection, and the slow
//! start ramp of a target that has just become usable.
//!
//! A target's [`Health`] lives in its `state::TargetLive`, found by address, so
//! it outlives snapshots and survives reloads. The request path reads it with
//! relaxed atomic loads; only failures write. Active checkers are one task per
//! checked target, started by [`spawn_supervisor`] and ended when the target or
//! its group's `health_check` leaves the config.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;

use crate::config::{HealthCheck, Outlier};
use crate::state::{Group, Shared, TargetLive};

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
    pub fn record_failure(&self, now: u64, group: &Group, outlier: &Outlier) -> Option<Duration> {
        if outlier.consecutive_failures == 0 {
            return None;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n < outlier.consecutive_failures || !self.usable(now) {
            return None;
        }
        // Cap the ejected share of the group, but always allow one ejection (a
        // group of one target can fail over only if its target can be ejected).
        let total = group.targets.len() as u64;
        let ejected = group
            .targets
            .iter()
            .filter(|t| t.live.health.ejected_for(now) > 0)
            .count() as u64;
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

    /// Active checking stopped (check removed from the config): trust the target again.
    fn stop_checking(&self) {
        self.active_down.store(false, Relaxed);
        self.passes.store(0, Relaxed);
        self.fails.store(0, Relaxed);
        self.checker.store(false, Relaxed);
    }
}

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

fn probe_client() -> ProbeClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        // Each probe opens its own connection, so a refused connect is seen.
        .pool_max_idle_per_host(0)
        .build(c)
}

/// One GET to `address` + `check.path`; true when the status is in range.
async fn probe(client: &ProbeClient, address: &str, check: &HealthCheck) -> bool {
    let Ok(req) = Request::get(format!("http://{address}{}", check.path))
        .header(http::header::USER_AGENT, "switchyard-health-check")
        .body(Empty::new())
    else {
        return false;
    };
    match tokio::time::timeout(check.timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status().as_u16();
            (check.expect.0..=check.expect.1).contains(&s)
        }
        _ => false,
    }
}

/// Starts one checker per checked target now, and again after each reload.
pub fn spawn_supervisor(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = probe_client();
        let mut seen_generation = 0;
        loop {
            let snap = shared.snapshot();
            if snap.generation != seen_generation {
                seen_generation = snap.generation;
                for g in &snap.groups {
                    if g.health_check.is_none() {
                        continue;
                    }
                    for t in &g.targets {
                        if !t.live.health.checker.swap(true, Relaxed) {
                            tokio::spawn(check_loop(
                                Arc::downgrade(&t.live),
                                t.address.to_string(),
                                Arc::clone(&shared),
                                client.clone(),
                                shutdown.clone(),
                            ));
                        }
                    }
                }
            }
            drop(snap);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    })
}

/// Probes one target until it leaves the config, its group stops checking,
/// or the proxy shuts down. The check settings are re-read from the current
/// snapshot every round, so a reload changes them in place.
async fn check_loop(
    live: Weak<TargetLive>,
    address: String,
    shared: Arc<Shared>,
    client: ProbeClient,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let Some(target) = live.upgrade() else { return };
        let snap = shared.snapshot();
        let found = snap.groups.iter().find_map(|g| {
            let t = g.targets.iter().find(|t| Arc::ptr_eq(&t.live, &target))?;
            Some((g, t))
        });
        let Some((group, t)) = found else {
            target.health.stop_checking();
            return;
        };
        let Some(check) = group.health_check.clone() else {
            target.health.stop_checking();
            return;
        };
        let (gname, metrics) = (group.name.clone(), t.metrics.clone());
        drop(snap);
        let passed = probe(&client, &address, &check).await;
        metrics.count_probe(passed);
        match target.health.record_probe(passed, &check) {
            Transition::Down => tracing::warn!(
                group = %gname, target = %address,
                "target unhealthy: {} health checks of {} failed in a row",
                check.unhealthy_threshold, check.path
            ),
            Transition::Up => tracing::info!(
                group = %gname, target = %address,
                "target healthy again: {} health checks passed in a row",
                check.healthy_threshold
            ),
            Transition::None => {}
        }
        drop(target);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(check.interval) => {}
        }
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
