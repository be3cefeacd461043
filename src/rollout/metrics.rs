//! The rollouts' metrics, registered beside the proxy's own.

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::analysis::{CHECKS, Outcome, Verdict};
use super::progress::{Phase, Record};

#[derive(Debug, Clone)]
pub struct RolloutMetrics {
    step: IntGaugeVec,
    weight: GaugeVec,
    state: IntGaugeVec,
    analysis: IntCounterVec,
    value: GaugeVec,
    unreadable: IntGaugeVec,
    pub leader: IntGauge,
}

impl RolloutMetrics {
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            step: IntGaugeVec::new(
                Opts::new(
                    "switchyard_rollout_step",
                    "The step a route's rollout is at (1 is the first).",
                ),
                &["route"],
            )?,
            weight: GaugeVec::new(
                Opts::new(
                    "switchyard_rollout_canary_weight_ratio",
                    "The share of new clients a route's rollout gives its canary now, 0 to 1 (0 once aborted, 1 once promoted).",
                ),
                &["route"],
            )?,
            state: IntGaugeVec::new(
                Opts::new(
                    "switchyard_rollout_state",
                    "1 for the state a route's rollout is in (progressing, paused, waiting, aborted, promoted), 0 for the others.",
                ),
                &["route", "state"],
            )?,
            analysis: IntCounterVec::new(
                Opts::new(
                    "switchyard_rollout_analysis_total",
                    "Analysis checks judged, by route, check and result (pass, fail, skipped); counted by the replica that judged them.",
                ),
                &["route", "check", "result"],
            )?,
            value: GaugeVec::new(
                Opts::new(
                    "switchyard_rollout_analysis_value",
                    "What the last verdict of a route's rollout measured, by check (ratios; latency_over_stable a factor; latency_seconds seconds).",
                ),
                &["route", "check"],
            )?,
            unreadable: IntGaugeVec::new(
                Opts::new(
                    "switchyard_rollout_state_unreadable",
                    "1 while a route's rollout state exists but cannot be read: its plan is held on the YAML split until `switchyard rollout reset` or the state file is deleted.",
                ),
                &["route"],
            )?,
            leader: IntGauge::new(
                "switchyard_rollout_leader",
                "1 on the replica that advances the rollouts (always 1 without Redis).",
            )?,
        };
        r.register(Box::new(m.step.clone()))?;
        r.register(Box::new(m.weight.clone()))?;
        r.register(Box::new(m.state.clone()))?;
        r.register(Box::new(m.analysis.clone()))?;
        r.register(Box::new(m.value.clone()))?;
        r.register(Box::new(m.unreadable.clone()))?;
        r.register(Box::new(m.leader.clone()))?;
        Ok(m)
    }

    /// Sets the gauges of `route` to what `rec` says.
    pub fn show(&self, route: &str, rec: &Record, weight_bp: u32) {
        self.step
            .with_label_values(&[route])
            .set(rec.step as i64 + 1);
        self.weight
            .with_label_values(&[route])
            .set(f64::from(weight_bp) / 10_000.0);
        for p in Phase::ALL {
            self.state
                .with_label_values(&[route, p.label()])
                .set(i64::from(p == rec.phase));
        }
        if let Some(v) = &rec.last_verdict {
            for c in &v.checks {
                self.value
                    .with_label_values(&[route, c.name.as_str()])
                    .set(c.value);
            }
        }
    }

    /// Whether `route`'s state is held as unreadable.
    pub fn held(&self, route: &str, held: bool) {
        self.unreadable
            .with_label_values(&[route])
            .set(i64::from(held));
    }

    /// Counts the checks of a verdict this replica reached.
    pub fn judged(&self, route: &str, v: &Verdict) {
        for c in &v.checks {
            self.analysis
                .with_label_values(&[route, c.name.as_str(), c.outcome.label()])
                .inc();
        }
    }

    /// Drops every series of a route that no longer has a rollout.
    pub fn forget(&self, route: &str) {
        let _ = self.step.remove_label_values(&[route]);
        let _ = self.weight.remove_label_values(&[route]);
        let _ = self.unreadable.remove_label_values(&[route]);
        for p in Phase::ALL {
            let _ = self.state.remove_label_values(&[route, p.label()]);
        }
        for c in CHECKS {
            let _ = self.value.remove_label_values(&[route, c]);
            for o in Outcome::ALL {
                let _ = self.analysis.remove_label_values(&[route, c, o.label()]);
            }
        }
    }
}
