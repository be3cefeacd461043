//! A validated `rollout:` plan: a canary plan over two groups of one
//! route's split (the stable one and the canary), its steps, and the
//! analysis each step must pass. `plan.rs` validates it; what runs it is
//! `crate::rollout`.

use std::time::Duration;

/// Weights a rollout sets are in basis points: 10 000 is the whole route.
pub const WHOLE: u32 = 10_000;

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    /// Index into `Config::groups`: where clients go back on an abort.
    pub stable: usize,
    /// Index into `Config::groups`: the version being rolled out. The split
    /// has these two groups only, so raising its weight only moves clients
    /// into it, whichever comes first (DESIGN §2).
    pub canary: usize,
    pub steps: Vec<RolloutStep>,
    pub analysis: Analysis,
    pub after_promote: AfterPromote,
}

/// One step of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutStep {
    /// The canary's weight in basis points (`WHOLE` = 100 %).
    pub weight: u32,
    /// How long the step lasts at least (its checks must also hold).
    pub hold: Duration,
    /// Wait at this step until a person resumes or promotes.
    pub pause: bool,
}

/// The checks every analysis interval must pass, over the requests of that
/// interval (of every replica).
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub interval: Duration,
    /// Below this many canary requests, an interval gives no verdict and its
    /// requests count towards the next one.
    pub min_requests: u64,
    /// Ceiling of the canary's 5xx ratio.
    pub max_error_ratio: f64,
    /// Ceiling of the canary's 5xx ratio minus the stable group's.
    pub max_error_ratio_over_stable: f64,
    /// Which latency quantile is compared (0.99: p99).
    pub quantile: f64,
    /// Ceiling of the canary's quantile over the stable group's.
    pub max_latency_over_stable: f64,
    /// Ceiling of the canary's quantile, when set.
    pub max_latency: Option<Duration>,
    /// Quantiles below this count as this much when compared: among fast
    /// answers a few milliseconds apart is noise (and histogram buckets),
    /// not a regression.
    pub latency_floor: Duration,
    /// Failed intervals, over the whole rollout, that abort it.
    pub failures_to_abort: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            min_requests: 100,
            max_error_ratio: 0.05,
            max_error_ratio_over_stable: 0.01,
            quantile: 0.99,
            max_latency_over_stable: 1.5,
            max_latency: None,
            latency_floor: Duration::from_millis(10),
            failures_to_abort: 2,
        }
    }
}

/// What the old stable group becomes when the canary is promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPromote {
    /// Its clients move to the canary at their next request.
    Drain,
    /// Weight 0: its pinned clients stay until their pins expire.
    Keep,
}

/// `2500` basis points as `25%`, `50` as `0.5%`.
pub fn percent(bp: u32) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        format!("{}%", f64::from(bp) / 100.0)
    }
}

impl RolloutPlan {
    /// `blue -> green: 5% for 10m, 25% for 10m, 50% then wait, 100%`, with
    /// each group's name from `name` (given its index).
    pub fn summary<'a>(&self, name: impl Fn(usize) -> &'a str) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| {
                let mut t = percent(s.weight);
                if !s.hold.is_zero() {
                    t.push_str(" for ");
                    t.push_str(&super::duration::format_duration(s.hold));
                }
                if s.pause {
                    t.push_str(" then wait");
                }
                t
            })
            .collect();
        format!(
            "{} -> {}: {}",
            name(self.stable),
            name(self.canary),
            steps.join(", ")
        )
    }
}
