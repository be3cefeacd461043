//! What an analysis interval measured, and whether the canary passed.
//!
//! The figures come from counters the request path keeps anyway
//! (`switchyard_route_requests_total` and the route's duration histogram):
//! each replica reads its own, sends what changed since its last reading
//! into the interval's tally (summed across replicas in Redis), and the
//! replica that leads judges closed intervals. Nothing here touches a
//! request.

use serde::{Deserialize, Serialize};

use crate::config::Analysis;
use crate::metrics::{Label, RouteGroupMetrics, StatusClass};

/// One group's requests over some span: how many, how many were 5xx, and
/// how their durations fell into the histogram's buckets (not cumulative;
/// the last is above every bound); and `[requests, 5xx]` by client slot
/// (an IPv4 address or IPv6 /64 falls in one), so that no one client's
/// flood decides the error checks ([`Tally::error_bounds`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
    #[serde(default)]
    pub clients: Vec<[u64; 2]>,
}

impl Tally {
    /// The running totals of `m` now, and the histogram's upper bounds.
    pub fn read(m: &RouteGroupMetrics) -> (Self, Vec<f64>) {
        let requests = StatusClass::ALL.iter().map(|c| m.requests[*c].get()).sum();
        let errors = m.requests[StatusClass::ServerError].get();
        let proto = prometheus::core::Metric::metric(&m.duration);
        let h = proto.get_histogram();
        let mut bounds = Vec::new();
        let mut buckets = Vec::new();
        let mut below = 0u64;
        for b in h.get_bucket() {
            bounds.push(b.upper_bound());
            buckets.push(b.cumulative_count().saturating_sub(below));
            below = b.cumulative_count();
        }
        buckets.push(h.get_sample_count().saturating_sub(below));
        let clients = m.clients.as_ref().map(|c| c.read()).unwrap_or_default();
        (
            Self {
                requests,
                errors,
                buckets,
                clients,
            },
            bounds,
        )
    }

    /// What `self` has over `before`; `None` when a counter went back (its
    /// series was dropped and made anew), so the span cannot be known.
    pub fn since(&self, before: &Tally) -> Option<Tally> {
        if self.buckets.len() != before.buckets.len() || self.clients.len() != before.clients.len()
        {
            return None;
        }
        let sub = |a: u64, b: u64| a.checked_sub(b);
        Some(Tally {
            requests: sub(self.requests, before.requests)?,
            errors: sub(self.errors, before.errors)?,
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|(a, b)| sub(*a, *b))
                .collect::<Option<_>>()?,
            clients: self
                .clients
                .iter()
                .zip(&before.clients)
                .map(|(a, b)| Some([sub(a[0], b[0])?, sub(a[1], b[1])?]))
                .collect::<Option<_>>()?,
        })
    }

    pub fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        if self.clients.len() < other.clients.len() {
            self.clients.resize(other.clients.len(), [0, 0]);
        }
        for (a, b) in self.clients.iter_mut().zip(&other.clients) {
            a[0] += b[0];
            a[1] += b[1];
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.buckets.iter().all(|b| *b == 0)
    }

    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The error ratio as no one client can move it: `(low, high)`, the
    /// lowest and highest ratio left when any one client slot is taken out
    /// (with the whole ratio between them). A check fails only if even
    /// `low` is over its limit (one client's errors do not fail a canary),
    /// and passes only if even `high` is within it (one client's easy
    /// successes do not hide the others' errors); between, it is skipped.
    /// With fewer than [`MIN_CLIENT_SLOTS`] slots seen, clients cannot be
    /// told apart from the population: both are the whole ratio.
    pub fn error_bounds(&self) -> (f64, f64) {
        let whole = self.error_ratio();
        let active: Vec<&[u64; 2]> = self.clients.iter().filter(|c| c[0] > 0).collect();
        if active.len() < MIN_CLIENT_SLOTS {
            return (whole, whole);
        }
        let (n, e): (u64, u64) = active
            .iter()
            .fold((0, 0), |(n, e), c| (n + c[0], e + c[1].min(c[0])));
        let (mut low, mut high) = (whole, whole);
        for c in active {
            let rest = n - c[0];
            if rest == 0 {
                continue;
            }
            let r = (e - c[1].min(c[0])) as f64 / rest as f64;
            low = low.min(r);
            high = high.max(r);
        }
        (low, high)
    }

    /// The `q` quantile of the durations, in seconds, interpolated inside
    /// its bucket as Prometheus' `histogram_quantile` does; `None` without
    /// samples. Above the last bound, the last bound.
    pub fn quantile(&self, q: f64, bounds: &[f64]) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            let upto = below + n;
            if (upto as f64) >= rank && *n > 0 {
                let Some(&upper) = bounds.get(i) else {
                    return bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
                let into = (rank - below as f64) / *n as f64;
                return Some(lower + (upper - lower) * into.clamp(0.0, 1.0));
            }
            below = upto;
        }
        bounds.last().copied()
    }
}

/// The stable and the canary group over one span.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub stable: Tally,
    pub canary: Tally,
}

impl Window {
    pub fn add(&mut self, other: &Window) {
        self.stable.add(&other.stable);
        self.canary.add(&other.canary);
    }
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not enough of the stable group's requests to compare with.
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Pass, Outcome::Fail, Outcome::Skipped];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One check: what was measured, against what limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    pub outcome: Outcome,
}

/// Client slots a window must have seen before one of them is taken out
/// to judge the error checks ([`Tally::error_bounds`]).
pub const MIN_CLIENT_SLOTS: usize = 3;

/// The names of the checks, as metrics label them.
pub const CHECKS: [&str; 5] = [
    "error_ratio",
    "error_ratio_over_stable",
    "latency_over_stable",
    "latency_seconds",
    "canary_up",
];

/// The judgement of one or more closed intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    pub canary_requests: u64,
    pub stable_requests: u64,
    pub checks: Vec<Check>,
    /// Unix ms when it was reached.
    pub at_ms: u64,
}

impl Verdict {
    /// `canary 412 req, stable 7803 req: error_ratio 0.0000 <= 0.05, ...`
    pub fn figures(&self) -> String {
        let checks: Vec<String> = self
            .checks
            .iter()
            .map(|c| match c.outcome {
                _ if c.name == CHECKS[4] => {
                    "canary_up: no usable target (all ejected or failing health checks) FAILED"
                        .to_owned()
                }
                Outcome::Skipped => format!("{} skipped", c.name),
                Outcome::Pass => format!("{} {:.4} <= {}", c.name, c.value, c.limit),
                Outcome::Fail => format!("{} {:.4} > {} FAILED", c.name, c.value, c.limit),
            })
            .collect();
        format!(
            "canary {} req, stable {} req: {}",
            self.canary_requests,
            self.stable_requests,
            checks.join(", ")
        )
    }
}

/// Judges `w`: `None` while the canary has fewer than `min_requests`
/// requests (no verdict yet; the interval counts towards the next one).
/// A canary with no usable target (every one ejected or failing its
/// health checks, its clients served by stable meanwhile) fails at once:
/// it would never reach `min_requests`, and it is not healthy.
pub fn judge(
    a: &Analysis,
    w: &Window,
    bounds: &[f64],
    canary_up: bool,
    now_ms: u64,
) -> Option<Verdict> {
    let enough = w.canary.requests >= a.min_requests;
    if !enough && canary_up {
        return None;
    }
    let mut checks = if enough {
        checks(a, w, bounds)
    } else {
        Vec::new()
    };
    if !canary_up {
        checks.push(Check {
            name: CHECKS[4].to_owned(),
            value: 0.0,
            limit: 1.0,
            outcome: Outcome::Fail,
        });
    }
    Some(Verdict {
        passed: checks.iter().all(|c| c.outcome != Outcome::Fail),
        canary_requests: w.canary.requests,
        stable_requests: w.stable.requests,
        checks,
        at_ms: now_ms,
    })
}

/// The checks over a window with enough canary requests.
fn checks(a: &Analysis, w: &Window, bounds: &[f64]) -> Vec<Check> {
    let stable_known = w.stable.requests >= a.min_requests;
    let mut checks = Vec::new();
    // `(value, low, high)`: the figure shown, and the bounds one client
    // cannot move (equal but for the error ratios).
    let mut check = |name: &str, (value, low, high): (f64, f64, f64), limit: f64, known: bool| {
        let outcome = if !known {
            Outcome::Skipped
        } else if high <= limit {
            Outcome::Pass
        } else if low > limit {
            Outcome::Fail
        } else {
            // One client slot decides it either way: no verdict from it.
            Outcome::Skipped
        };
        checks.push(Check {
            name: name.to_owned(),
            value,
            limit,
            outcome,
        });
    };
    let exact = |v: f64| (v, v, v);
    let canary_ratio = w.canary.error_ratio();
    let (low, high) = w.canary.error_bounds();
    check(
        CHECKS[0],
        (canary_ratio, low, high),
        a.max_error_ratio,
        true,
    );
    let (s_low, s_high) = w.stable.error_bounds();
    check(
        CHECKS[1],
        (
            canary_ratio - w.stable.error_ratio(),
            low - s_high,
            high - s_low,
        ),
        a.max_error_ratio_over_stable,
        stable_known,
    );
    let canary_q = w.canary.quantile(a.quantile, bounds).unwrap_or(0.0);
    let stable_q = w.stable.quantile(a.quantile, bounds).unwrap_or(0.0);
    let floor = a.latency_floor.as_secs_f64().max(1e-6);
    let over = canary_q.max(floor) / stable_q.max(floor);
    check(
        CHECKS[2],
        exact(over),
        a.max_latency_over_stable,
        stable_known,
    );
    if let Some(max) = a.max_latency {
        check(CHECKS[3], exact(canary_q), max.as_secs_f64(), true);
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 4] = [0.01, 0.1, 1.0, 10.0];

    fn tally(requests: u64, errors: u64, buckets: [u64; 5]) -> Tally {
        Tally {
            requests,
            errors,
            buckets: buckets.to_vec(),
            clients: Vec::new(),
        }
    }

    /// A canary tally of `clients` slots, each `[requests, errors]`.
    fn by_clients(clients: &[[u64; 2]]) -> Tally {
        let requests = clients.iter().map(|c| c[0]).sum();
        Tally {
            requests,
            errors: clients.iter().map(|c| c[1]).sum(),
            buckets: vec![requests, 0, 0, 0, 0],
            clients: clients.to_vec(),
        }
    }

    fn error_check(canary: Tally) -> Outcome {
        let w = Window {
            stable: tally(1000, 0, [1000, 0, 0, 0, 0]),
            canary,
        };
        let v = judge(&analysis(), &w, &BOUNDS, true, 1).unwrap_or_else(|| panic!("verdict"));
        v.checks[0].outcome
    }

    #[test]
    fn one_clients_flood_decides_no_error_check_either_way() {
        // Ten clients at 1 % errors each pass (limit 5 %).
        let fine = [[100, 1]; 10];
        assert_eq!(error_check(by_clients(&fine)), Outcome::Pass);
        // An eleventh floods 5 000 errors: 80 % of requests, yet taken
        // out it leaves 1 %: no failure from one client.
        let mut flood = fine.to_vec();
        flood.push([5_000, 5_000]);
        assert_eq!(error_check(by_clients(&flood)), Outcome::Skipped);
        // Ten clients at 20 % errors fail; one flooding 50 000 easy
        // successes (0.4 % overall) does not make it pass.
        let bad = [[100, 20]; 10];
        assert_eq!(error_check(by_clients(&bad)), Outcome::Fail);
        let mut diluted = bad.to_vec();
        diluted.push([50_000, 0]);
        assert_eq!(error_check(by_clients(&diluted)), Outcome::Skipped);
        // Errors from many clients fail, whoever floods.
        let mut both = bad.to_vec();
        both.push([5_000, 5_000]);
        assert_eq!(error_check(by_clients(&both)), Outcome::Fail);
        // Under three client slots, the plain ratio decides.
        assert_eq!(
            error_check(by_clients(&[[100, 50], [100, 0]])),
            Outcome::Fail
        );
    }

    fn analysis() -> Analysis {
        Analysis {
            min_requests: 100,
            ..Analysis::default()
        }
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let t = tally(100, 0, [50, 50, 0, 0, 0]);
        assert_eq!(t.quantile(0.5, &BOUNDS), Some(0.01));
        let p75 = t.quantile(0.75, &BOUNDS).unwrap_or(0.0);
        assert!((p75 - 0.055).abs() < 1e-9, "{p75}");
        assert_eq!(
            tally(1, 0, [0, 0, 0, 0, 1]).quantile(0.99, &BOUNDS),
            Some(10.0)
        );
        assert_eq!(Tally::default().quantile(0.99, &BOUNDS), None);
    }

    #[test]
    fn too_few_canary_requests_give_no_verdict() {
        let w = Window {
            stable: tally(1000, 0, [1000, 0, 0, 0, 0]),
            canary: tally(99, 99, [99, 0, 0, 0, 0]),
        };
        assert!(judge(&analysis(), &w, &BOUNDS, true, 1).is_none());
    }

    #[test]
    fn a_canary_that_errors_or_slows_down_fails_and_a_healthy_one_passes() {
        let a = analysis();
        let healthy = Window {
            stable: tally(1000, 1, [990, 10, 0, 0, 0]),
            canary: tally(200, 0, [198, 2, 0, 0, 0]),
        };
        let v = judge(&a, &healthy, &BOUNDS, true, 1).unwrap_or_else(|| panic!("verdict"));
        assert!(v.passed, "{}", v.figures());
        let erroring = Window {
            canary: tally(200, 40, [200, 0, 0, 0, 0]),
            ..healthy.clone()
        };
        let v = judge(&a, &erroring, &BOUNDS, true, 1).unwrap_or_else(|| panic!("verdict"));
        assert!(!v.passed);
        assert_eq!(v.checks[0].outcome, Outcome::Fail, "{}", v.figures());
        let slow = Window {
            canary: tally(200, 0, [0, 0, 200, 0, 0]),
            ..healthy.clone()
        };
        let v = judge(&a, &slow, &BOUNDS, true, 1).unwrap_or_else(|| panic!("verdict"));
        assert!(!v.passed);
        assert_eq!(v.checks[2].outcome, Outcome::Fail, "{}", v.figures());
    }

    #[test]
    fn a_canary_with_no_usable_target_fails_without_waiting_for_requests() {
        let v = judge(&analysis(), &Window::default(), &BOUNDS, false, 1)
            .unwrap_or_else(|| panic!("verdict"));
        assert!(!v.passed);
        assert_eq!(v.checks[0].name, "canary_up");
        let w = Window {
            stable: tally(1000, 0, [1000, 0, 0, 0, 0]),
            canary: tally(200, 200, [200, 0, 0, 0, 0]),
        };
        let v = judge(&analysis(), &w, &BOUNDS, false, 1).unwrap_or_else(|| panic!("verdict"));
        let failed: Vec<&str> = v
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            failed,
            ["error_ratio", "error_ratio_over_stable", "canary_up"]
        );
    }

    #[test]
    fn comparisons_with_a_stable_group_short_of_requests_are_skipped() {
        let w = Window {
            stable: tally(3, 3, [0, 0, 0, 3, 0]),
            canary: tally(200, 0, [0, 0, 200, 0, 0]),
        };
        let v = judge(&analysis(), &w, &BOUNDS, true, 1).unwrap_or_else(|| panic!("verdict"));
        assert!(v.passed, "{}", v.figures());
        assert_eq!(v.checks[1].outcome, Outcome::Skipped);
        assert_eq!(v.checks[2].outcome, Outcome::Skipped);
    }

    #[test]
    fn a_counter_that_went_back_gives_no_span() {
        let before = tally(10, 1, [10, 0, 0, 0, 0]);
        let after = tally(3, 0, [3, 0, 0, 0, 0]);
        assert!(after.since(&before).is_none());
        let later = tally(15, 2, [14, 1, 0, 0, 0]);
        assert_eq!(later.since(&before), Some(tally(5, 1, [4, 1, 0, 0, 0])));
    }
}
