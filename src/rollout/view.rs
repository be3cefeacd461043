//! A rollout as `/status` and the admin API show it: the plan, where it
//! stands, and where its state is kept.

use super::progress::Record;
use crate::config::RolloutPlan;
use crate::config::duration::format_duration;

/// Where a replica keeps the state, and whether it leads.
#[derive(Debug)]
pub(super) struct Where {
    pub store: String,
    /// The last failure of the store, until an operation succeeds.
    pub error: Option<String>,
    pub leader: bool,
    /// Why the route's state is held (exists but cannot be read).
    pub held: Option<String>,
}

/// One rollout as JSON.
pub(super) fn describe(
    route: &str,
    plan: &RolloutPlan,
    (stable, canary): (&str, &str),
    rec: Option<&Record>,
    at: &Where,
) -> serde_json::Value {
    let steps: Vec<_> = plan
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "weight_percent": f64::from(s.weight) / 100.0,
                "hold": format_duration(s.hold),
                "pause": s.pause,
            })
        })
        .collect();
    let a = &plan.analysis;
    let state = rec.map(|rec| {
        let hold = plan
            .steps
            .get(rec.step)
            .map_or(0, |s| s.hold.as_millis() as u64);
        serde_json::json!({
            "state": rec.phase.label(),
            "step": rec.step + 1,
            "canary_weight_percent": f64::from(rec.override_of(plan).canary_weight) / 100.0,
            "started_unix_ms": rec.started_ms,
            "step_started_unix_ms": rec.step_started_ms,
            "hold_ends_unix_ms": rec.step_started_ms + hold,
            "passed_in_step": rec.passed_in_step,
            "failures": rec.failures,
            "reason": rec.reason,
            "last_verdict": rec.last_verdict,
            "updated_unix_ms": rec.updated_ms,
        })
    });
    serde_json::json!({
        "route": route,
        "stable": stable,
        "canary": canary,
        "steps": steps,
        "analysis": {
            "interval": format_duration(a.interval),
            "min_requests": a.min_requests,
            "max_error_ratio": a.max_error_ratio,
            "max_error_ratio_over_stable": a.max_error_ratio_over_stable,
            "quantile": a.quantile,
            "max_latency_over_stable": a.max_latency_over_stable,
            "max_latency": a.max_latency.map(format_duration),
            "latency_floor": format_duration(a.latency_floor),
            "failures_to_abort": a.failures_to_abort,
        },
        "after_promote": match plan.after_promote {
            crate::config::AfterPromote::Drain => "drain",
            crate::config::AfterPromote::Keep => "keep",
        },
        "store": at.store,
        "store_error": at.error,
        "leader": at.leader,
        "held": at.held,
        "status": state,
    })
}
