//! Target health, the state machine: what active checks found, passive
//! outlier ejection, and the slow start ramp of a target that has just
//! become usable. The checks themselves run in `crate::checks`.
//!
//! Passive ejection has two detectors, because a target can fail the proxy
//! or merely answer a request with an error (DESIGN §10):
//! - **gateway failures** (connect refused or reset, timeouts, a broken
//!   answer, and the gateway statuses 502/503/504 from the target) eject
//!   after `consecutive_failures` in a row; any other answer resets the run;
//! - **application errors** (every other 5xx) eject only through the
//!   failure-ratio detector, off unless configured: over a window, the mean
//!   error ratio of the clients seen (each client slot weighs the same,
//!   however much it sent) over a floor of requests and of distinct
//!   erring clients, and never the group's last usable target (an app's
//!   errors must not fail its clients over to another version).
//!
//! A target's [`Health`] lives in its `state::TargetLive`, found by address, so
//! it outlives snapshots and survives reloads. The request path reads it with
//! relaxed atomic loads; only failures write.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::{CLIENT_SLOTS, FailureRatio, HealthCheck, Outlier};

/// The slot of a client's address: IPv6 by its /64, which one subscriber
/// usually holds whole.
pub fn client_slot(ip: std::net::IpAddr) -> usize {
    let key = match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => u64::from(v4.to_bits()),
        std::net::IpAddr::V6(v6) => (v6.to_bits() >> 64) as u64 ^ (1 << 63),
    };
    // splitmix64's finalizer: neighbouring addresses land in unrelated slots.
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) % CLIENT_SLOTS as u64) as usize
}

/// Why a target was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    /// `consecutive_failures` gateway failures in a row.
    Gateway,
    /// The failure-ratio detector over the application's errors.
    FailureRatio,
}

impl Ejection {
    pub const ALL: [Self; 2] = [Self::Gateway, Self::FailureRatio];

    pub fn label(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::FailureRatio => "failure_ratio",
        }
    }
}

/// The failure-ratio detector's window: requests and application errors
/// per client slot, each slot one `u64` (errors in the high half), so a
/// request costs one atomic add.
#[derive(Debug, Default)]
struct Answers {
    /// When the window began (ms); 0: not yet.
    since: AtomicU64,
    slots: [AtomicU64; CLIENT_SLOTS],
}

/// What a window holds, summed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Judged {
    requests: u64,
    /// Slots with at least one error.
    erring: u32,
    /// Mean of the slots' error ratios, over slots with requests.
    ratio: f64,
}

impl Answers {
    fn record(&self, now: u64, slot: usize, error: bool, window: Duration) {
        let since = self.since.load(Relaxed);
        if since == 0 || now.saturating_sub(since) >= window.as_millis() as u64 {
            // One thread starts the new window; a count racing it may land
            // in either window, which a ratio over many requests can bear.
            if self
                .since
                .compare_exchange(since, now, Relaxed, Relaxed)
                .is_ok()
            {
                self.clear();
            }
        }
        let add = if error { (1 << 32) | 1 } else { 1 };
        self.slots[slot % CLIENT_SLOTS].fetch_add(add, Relaxed);
    }

    fn clear(&self) {
        for s in &self.slots {
            s.store(0, Relaxed);
        }
    }

    fn judge(&self) -> Judged {
        let (mut requests, mut erring, mut active, mut sum) = (0u64, 0u32, 0u32, 0f64);
        for s in &self.slots {
            let v = s.load(Relaxed);
            let (errors, n) = (v >> 32, v & 0xffff_ffff);
            if n == 0 {
                continue;
            }
            requests += n;
            active += 1;
            erring += u32::from(errors > 0);
            sum += errors.min(n) as f64 / n as f64;
        }
        let ratio = if active == 0 {
            0.0
        } else {
            sum / f64::from(active)
        };
        Judged {
            requests,
            erring,
            ratio,
        }
    }
}

impl FailureRatio {
    /// Whether a window's figures are enough, and bad enough, to eject.
    fn trips(&self, j: Judged) -> bool {
        j.requests >= u64::from(self.min_requests)
            && j.erring >= self.min_clients
            && j.ratio * 100.0 >= f64::from(self.percent)
    }
}

/// How healthy one target is, as far as this process can tell.
#[derive(Debug)]
pub struct Health {
    /// Set by the active checker after `unhealthy_threshold` failed probes.
    active_down: AtomicBool,
    /// Consecutive probe passes / failures.
    passes: AtomicU32,
    fails: AtomicU32,
    /// Consecutive gateway failures (passive).
    failures: AtomicU32,
    /// The failure-ratio detector's window (used only when it is on).
    answers: Answers,
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
            answers: Answers::default(),
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

    /// The target answered (anything but a gateway status): the run of
    /// gateway failures ends.
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

    /// A gateway failure (connect error, reset, timeout, broken answer,
    /// 502/503/504). Returns the ejection length when this one ejected it.
    /// `group` is the health of every target of this one's group (this one
    /// included): at most `max_ejected_percent` of it is ejected at once.
    pub fn record_failure<'a>(
        &self,
        now: u64,
        group: impl Iterator<Item = &'a Health>,
        outlier: &Outlier,
    ) -> Option<Duration> {
        // An ejected target's late answers do not start its next run.
        if outlier.consecutive_failures == 0 || !self.usable(now) {
            return None;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n < outlier.consecutive_failures {
            return None;
        }
        // Always allow one ejection: a group of one target can fail over
        // only if its target can be ejected.
        let length = self.eject(now, group, outlier, 0)?;
        self.failures.store(0, Relaxed);
        Some(length)
    }

    /// One answer of the application's, for the failure-ratio detector:
    /// `error` for a 5xx that is not a gateway status. `slot`: the client's
    /// ([`client_slot`]). Returns the ejection length when it ejected.
    pub fn record_answer<'a>(
        &self,
        now: u64,
        slot: usize,
        error: bool,
        group: impl Iterator<Item = &'a Health>,
        outlier: &Outlier,
    ) -> Option<Duration> {
        let ratio = outlier.failure_ratio.as_ref()?;
        self.answers.record(now, slot, error, ratio.window);
        if !error || !self.usable(now) || !ratio.trips(self.answers.judge()) {
            return None;
        }
        // Never the last usable target: the app's own errors are the
        // rollout's to judge, not a reason to fail over to another group.
        let length = self.eject(now, group, outlier, 1)?;
        self.answers.clear();
        Some(length)
    }

    /// Ejects the target unless that would eject more than
    /// `max_ejected_percent` of `group` or leave fewer than `keep` other
    /// targets of it usable; the length doubles with each ejection.
    fn eject<'a>(
        &self,
        now: u64,
        group: impl Iterator<Item = &'a Health>,
        outlier: &Outlier,
        keep: u64,
    ) -> Option<Duration> {
        let (mut total, mut ejected, mut usable_others) = (0u64, 0u64, 0u64);
        for h in group {
            total += 1;
            ejected += u64::from(h.ejected_for(now) > 0);
            usable_others += u64::from(!std::ptr::eq(h, self) && h.usable(now));
        }
        if usable_others < keep {
            return None;
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

    fn outlier(ratio: Option<FailureRatio>) -> Outlier {
        Outlier {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(5),
            max_ejected_percent: 100,
            failure_ratio: ratio,
        }
    }

    fn group(n: usize) -> Vec<Health> {
        (0..n).map(|_| Health::default()).collect()
    }

    /// Feeds target 0 of `g` `n` gateway failures at `now`; the last result.
    fn fail(g: &[Health], now: u64, n: u32, o: &Outlier) -> Option<Duration> {
        let results: Vec<_> = (0..n)
            .map(|_| g[0].record_failure(now, g.iter(), o))
            .collect();
        results.into_iter().flatten().next()
    }

    #[test]
    fn gateway_failures_in_a_row_eject_with_doubling_lengths_up_to_the_cap() {
        let o = outlier(None);
        let g = group(1);
        let mut now = 1_000;
        assert_eq!(fail(&g, now, 2, &o), None, "two of three do not eject");
        g[0].record_success(now, &o);
        assert_eq!(fail(&g, now, 2, &o), None, "an answer ends the run");
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let length = fail(&g, now, 3, &o).unwrap_or_else(|| panic!("not ejected at {now}"));
            assert!(!g[0].usable(now), "ejected at {now}");
            assert!(
                g[0].usable(now + length.as_millis() as u64),
                "back after {length:?}"
            );
            lengths.push(length.as_secs());
            now += length.as_millis() as u64;
        }
        assert_eq!(lengths, [1, 2, 4, 5, 5]);
        // Well behaved past max_ejection after its last one: short again.
        now += 6_000;
        g[0].record_success(now, &o);
        assert_eq!(fail(&g, now, 3, &o), Some(Duration::from_secs(1)));
    }

    #[test]
    fn at_most_max_ejected_percent_of_a_group_is_out() {
        let mut o = outlier(None);
        o.max_ejected_percent = 50;
        let g = group(4);
        let now = 1_000;
        for t in 0..4 {
            for _ in 0..3 {
                g[t].record_failure(now, g.iter(), &o);
            }
        }
        let out = g.iter().filter(|h| !h.usable(now)).count();
        assert_eq!(out, 2, "half of four");
    }

    fn ratio() -> FailureRatio {
        FailureRatio {
            percent: 50,
            min_requests: 20,
            min_clients: 3,
            window: Duration::from_secs(10),
        }
    }

    /// `clients` client slots each send `n` answers to target 0, the last
    /// `errors` of them errors; whether target 0 ended up ejected.
    fn answers(g: &[Health], o: &Outlier, clients: &[usize], n: u32, errors: u32) -> bool {
        let now = 1_000;
        for &slot in clients {
            for i in 0..n {
                g[0].record_answer(now, slot, i >= n - errors, g.iter(), o);
            }
        }
        !g[0].usable(now)
    }

    #[test]
    fn one_client_alone_never_ejects_by_ratio_however_much_it_errs() {
        let o = outlier(Some(ratio()));
        let g = group(3);
        assert!(!answers(&g, &o, &[7], 10_000, 10_000));
        assert_eq!(g[0].failures.load(Relaxed), 0, "not a gateway failure");
    }

    #[test]
    fn enough_distinct_erring_clients_eject_by_ratio_but_never_the_last_target() {
        let o = outlier(Some(ratio()));
        let g = group(2);
        assert!(!answers(&g, &o, &[1, 2], 20, 20), "two clients of three");
        let g = group(2);
        assert!(answers(&g, &o, &[1, 2, 3], 20, 20), "three clients");
        let g = group(1);
        assert!(
            !answers(&g, &o, &[1, 2, 3, 4, 5], 20, 20),
            "the last usable target"
        );
        let g = group(2);
        g[1].ejected_until.store(u64::MAX, Relaxed);
        assert!(
            !answers(&g, &o, &[1, 2, 3, 4], 20, 20),
            "its sibling is out"
        );
    }

    #[test]
    fn the_ratio_is_a_mean_over_clients_so_one_flood_moves_it_by_one_share() {
        let o = outlier(Some(ratio()));
        // Four clients each see 40 % errors: under 50 %. A fifth sends
        // 10 000 errors: its slot counts once, (4 * 0.4 + 1) / 5 = 52 %.
        let g = group(2);
        assert!(!answers(&g, &o, &[1, 2, 3, 4], 10, 4));
        assert!(answers(&g, &o, &[5], 10_000, 10_000));
        // Four clients see 60 % errors after one floods successes:
        // (4 * 0.6 + 0) / 5 = 48 %; without the flood, 60 % ejects.
        let g = group(2);
        assert!(!answers(&g, &o, &[9], 10_000, 0));
        assert!(!answers(&g, &o, &[1, 2, 3, 4], 10, 6));
        let g = group(2);
        assert!(answers(&g, &o, &[1, 2, 3, 4], 10, 6));
    }

    #[test]
    fn a_window_ends_and_its_counts_go() {
        let o = outlier(Some(ratio()));
        let g = group(2);
        for slot in 1..=3 {
            for _ in 0..10 {
                g[0].record_answer(1_000, slot, true, g.iter(), &o);
            }
        }
        assert!(!g[0].usable(1_000), "ejected within one window");
        let g = group(2);
        for (i, slot) in (1..=3).enumerate() {
            let now = 1_000 + i as u64 * 10_000;
            for _ in 0..10 {
                g[0].record_answer(now, slot, true, g.iter(), &o);
            }
        }
        assert!(
            g.iter().all(|h| h.usable(40_000)),
            "each window held one client"
        );
    }

    #[test]
    fn client_slots_spread_addresses_and_keep_an_ipv6_64_together() {
        let mut seen = [0u32; CLIENT_SLOTS];
        for i in 0..1_600u32 {
            seen[client_slot(std::net::Ipv4Addr::from(0x0a00_0000 + i).into())] += 1;
        }
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap_or_else(|e| panic!("{e}"));
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client_slot(a), client_slot(b));
    }

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
