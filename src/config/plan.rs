//! `rollout:`, validated into a [`RolloutPlan`]: groups that exist and
//! are in the route's split, steps whose weight only grows, thresholds in
//! range; each error with its YAML path and line.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::fields::{Errors, duration_or_zero, int_field};
use super::raw::{RawAnalysis, RawRollout, RawStep};
use super::rollout::{AfterPromote, Analysis, RolloutPlan, RolloutStep, percent};
use super::types::{GroupSpec, RouteGroup};

/// Longest hold of one step.
const MAX_HOLD: Duration = Duration::from_secs(30 * 86_400);

/// Validates the rollout of the route at `at` (`routes[i]`, or `""` for the
/// groups-only form's top-level `rollout`).
pub(super) fn plan(
    errs: &mut Errors,
    at: &str,
    raw: &Spanned<RawRollout>,
    groups: &[GroupSpec],
    split: Option<&[RouteGroup]>,
) -> Option<RolloutPlan> {
    let path = |k: &str| {
        if at.is_empty() {
            format!("rollout.{k}")
        } else {
            format!("{at}.rollout.{k}")
        }
    };
    let r = &raw.value;
    let stable = member(errs, &path("stable"), &r.stable, groups, split, "stable");
    let canary = member(errs, &path("canary"), &r.canary, groups, split, "canary");
    if r.stable.value == r.canary.value {
        errs.at(
            path("canary"),
            &r.canary,
            "the canary must be another group than stable",
        );
    }
    if let (Some(split), Some(s)) = (split, stable) {
        check_split(errs, &path, raw, groups, split, s, canary);
    }
    let steps = steps(errs, &path("steps"), &r.steps);
    let analysis = r
        .analysis
        .as_ref()
        .map_or_else(Analysis::default, |a| analysis(errs, &path("analysis"), a));
    let after_promote = match r.after_promote.as_ref().map(|a| a.value.as_str()) {
        None | Some("drain") => Some(AfterPromote::Drain),
        Some("keep") => Some(AfterPromote::Keep),
        Some(_) => {
            if let Some(a) = &r.after_promote {
                errs.at(path("after_promote"), a, "expected `drain` or `keep`");
            }
            None
        }
    };
    if stable.is_some() && stable == canary {
        return None;
    }
    Some(RolloutPlan {
        stable: stable?,
        canary: canary?,
        steps: steps?,
        analysis,
        after_promote: after_promote?,
    })
}

/// The index of the group `name` names, which must be in the route's split.
fn member(
    errs: &mut Errors,
    path: &str,
    name: &Spanned<String>,
    groups: &[GroupSpec],
    split: Option<&[RouteGroup]>,
    role: &str,
) -> Option<usize> {
    let Some(g) = groups.iter().position(|g| g.name.as_str() == name.value) else {
        errs.at(
            path,
            name,
            format!("no group named `{}` under `groups:`", name.value),
        );
        return None;
    };
    if split.is_some_and(|s| !s.iter().any(|rg| rg.group == g)) {
        let why = if role == "stable" {
            "an abort sends the canary's clients back to stable, so it must be in this route's split"
        } else {
            "the canary must be in this route's split"
        };
        errs.at(
            path,
            name,
            format!("`{}` is not in this route's split: {why}", name.value),
        );
        return None;
    }
    Some(g)
}

/// The split a rollout runs over: exactly its two groups, and a stable
/// group that is not draining. Either order is monotone with two groups
/// (the canary's slice grows from its end of the bucket space), so the
/// roles can swap for the next release without reordering the YAML.
fn check_split(
    errs: &mut Errors,
    path: &dyn Fn(&str) -> String,
    raw: &Spanned<RawRollout>,
    groups: &[GroupSpec],
    split: &[RouteGroup],
    stable: usize,
    canary: Option<usize>,
) {
    let r = &raw.value;
    if split.iter().any(|s| s.group == stable && s.drain) {
        errs.at(
            path("stable"),
            &r.stable,
            format!(
                "`{}` is draining: an abort would have no stable group to return the canary's clients to",
                r.stable.value
            ),
        );
    }
    let Some(canary) = canary else { return };
    if let Some(other) = split
        .iter()
        .find(|s| s.group != stable && s.group != canary)
    {
        errs.at(
            path("stable"),
            &r.stable,
            format!(
                "the split also has `{}`: a rollout's route splits between its stable and canary groups only",
                groups[other.group].name.as_str()
            ),
        );
    }
}

fn steps(
    errs: &mut Errors,
    at: &str,
    raw: &Spanned<Vec<Spanned<RawStep>>>,
) -> Option<Vec<RolloutStep>> {
    if raw.value.is_empty() {
        errs.at(at, raw, "at least one step is required");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let mut prev = 0u32;
    for (i, s) in raw.value.iter().enumerate() {
        let p = format!("{at}[{i}]");
        let Some(weight) = step_weight(errs, &format!("{p}.weight"), &s.value.weight) else {
            ok = false;
            continue;
        };
        if weight < prev {
            errs.at(
                format!("{p}.weight"),
                &s.value.weight,
                format!(
                    "{} is below the step before ({}): the canary's weight only grows (abort to go back)",
                    percent(weight),
                    percent(prev)
                ),
            );
            ok = false;
        }
        prev = weight;
        let hold = duration_or_zero(errs, &format!("{p}.hold"), &s.value.hold, Duration::ZERO);
        if let Some(h) = &s.value.hold
            && hold > MAX_HOLD
        {
            errs.at(format!("{p}.hold"), h, "must be at most 30d");
            ok = false;
        }
        out.push(RolloutStep {
            weight,
            hold,
            pause: s.value.pause.as_ref().is_some_and(|p| p.value),
        });
    }
    ok.then_some(out)
}

/// A step's weight, percent with up to two decimals, in basis points.
fn step_weight(errs: &mut Errors, path: &str, w: &Spanned<f64>) -> Option<u32> {
    let v = w.value;
    let bp = (v * 100.0).round();
    if !(0.0..=100.0).contains(&v) || !v.is_finite() {
        errs.at(path, w, "a step's weight is a percent from 0 to 100");
        return None;
    }
    if (v * 100.0 - bp).abs() > 1e-6 {
        errs.at(
            path,
            w,
            "a weight has at most two decimals (0.01 % is one bucket in 10 000)",
        );
        return None;
    }
    Some(bp as u32)
}

fn analysis(errs: &mut Errors, at: &str, raw: &Spanned<RawAnalysis>) -> Analysis {
    let a = &raw.value;
    let d = Analysis::default();
    let p = |k: &str| format!("{at}.{k}");
    let interval = duration_or_zero(errs, &p("interval"), &a.interval, d.interval);
    if let Some(i) = &a.interval
        && !(Duration::from_millis(200)..=Duration::from_secs(3600)).contains(&interval)
    {
        errs.at(p("interval"), i, "must be from 200ms to 1h");
    }
    let min_requests = u64::from(int_field(
        errs,
        &p("min_requests"),
        &a.min_requests,
        1..=1_000_000_000,
        d.min_requests as u32,
    ));
    let ratio = |errs: &mut Errors, k: &str, v: &Option<Spanned<f64>>, default: f64| match v {
        None => default,
        Some(s) if (0.0..=1.0).contains(&s.value) => s.value,
        Some(s) => {
            errs.at(p(k), s, "a ratio from 0 to 1 (0.01 is 1 %)");
            default
        }
    };
    let max_error_ratio = ratio(
        errs,
        "max_error_ratio",
        &a.max_error_ratio,
        d.max_error_ratio,
    );
    let max_error_ratio_over_stable = ratio(
        errs,
        "max_error_ratio_over_stable",
        &a.max_error_ratio_over_stable,
        d.max_error_ratio_over_stable,
    );
    let quantile = match &a.quantile {
        None => d.quantile,
        Some(q) if q.value >= 0.5 && q.value < 1.0 => q.value,
        Some(q) => {
            errs.at(
                p("quantile"),
                q,
                "a quantile from 0.5 to below 1 (0.99 is p99)",
            );
            d.quantile
        }
    };
    let max_latency_over_stable = match &a.max_latency_over_stable {
        None => d.max_latency_over_stable,
        Some(m) if m.value >= 1.0 && m.value <= 1000.0 => m.value,
        Some(m) => {
            errs.at(
                p("max_latency_over_stable"),
                m,
                "a factor from 1 to 1000 (1.3: the canary may be 30 % slower than stable)",
            );
            d.max_latency_over_stable
        }
    };
    let max_latency = a.max_latency.as_ref().and_then(|m| {
        let v = duration_or_zero(errs, &p("max_latency"), &a.max_latency, Duration::ZERO);
        if v.is_zero() {
            errs.at(p("max_latency"), m, "must be greater than zero");
            return None;
        }
        Some(v)
    });
    let latency_floor =
        duration_or_zero(errs, &p("latency_floor"), &a.latency_floor, d.latency_floor);
    if let Some(f) = &a.latency_floor
        && latency_floor > Duration::from_secs(10)
    {
        errs.at(p("latency_floor"), f, "must be at most 10s");
    }
    let failures_to_abort = int_field(
        errs,
        &p("failures_to_abort"),
        &a.failures_to_abort,
        1..=1000,
        d.failures_to_abort,
    );
    Analysis {
        interval,
        min_requests,
        max_error_ratio,
        max_error_ratio_over_stable,
        quantile,
        max_latency_over_stable,
        max_latency,
        latency_floor,
        failures_to_abort,
    }
}
