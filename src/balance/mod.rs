//! Target choice inside a group, and routing around failure.
//!
//! [`pick`]: weighted power-of-two-choices on outstanding requests. Two usable
//! targets are drawn at random in proportion to their weights (a target in slow
//! start is accepted with the probability of its ramp) and the one with fewer
//! requests in flight per unit of weight wins. It needs no shared mutable state
//! beyond the targets' atomic counters, so it takes no lock.
//!
//! [`route`]: DESIGN.md §4 for failures: an unusable pinned target gives way
//! to a sibling (cookie re-issued); a group with no usable target has its
//! clients served by another group of the route for now (cookie kept), one
//! that takes new clients: never a drained or weight-0 group.

use std::time::Duration;

use crate::assign::{Decision, Reason, Routing};
use crate::state::{Group, Snapshot};

/// A uniform number in `0..n`.
pub type Draw<'a> = &'a mut dyn FnMut(u64) -> u64;

/// Attempts at drawing a usable target before scanning for one.
const DRAWS: usize = 4;

/// Picks a usable target of `group` at `now` (ms, `clock::now_ms`), never
/// `exclude`, or `None` when none is usable.
pub fn pick(
    group: &Group,
    now: u64,
    slow_start: Duration,
    exclude: &[usize],
    draw: Draw<'_>,
) -> Option<usize> {
    let total = *group.cumulative.last()?;
    if total == 0 {
        return None;
    }
    let usable = |i: usize| {
        group.targets[i].weight > 0
            && !exclude.contains(&i)
            && group.targets[i].live.health.usable(now)
    };
    if group.targets.len() == 1 {
        return usable(0).then_some(0);
    }
    let candidate = |draw: &mut dyn FnMut(u64) -> u64| {
        for _ in 0..DRAWS {
            let x = draw(total);
            let i = group.cumulative.partition_point(|&c| c <= x);
            if !usable(i) {
                continue;
            }
            let ramp = group.targets[i].live.health.ramp(now, slow_start);
            if ramp < 1.0 && (draw(1 << 20) as f64) >= ramp * f64::from(1 << 20) {
                continue;
            }
            return Some(i);
        }
        None
    };
    let a = match candidate(draw) {
        Some(a) => a,
        None => scan(group, &usable, draw)?,
    };
    let b = candidate(draw).unwrap_or(a);
    if a == b {
        return Some(a);
    }
    let (ta, tb) = (&group.targets[a], &group.targets[b]);
    // Compare outstanding/weight without division: oa/wa <= ob/wb.
    let la = (ta.live.outstanding().max(0) as u128) * u128::from(tb.weight);
    let lb = (tb.live.outstanding().max(0) as u128) * u128::from(ta.weight);
    Some(if la <= lb { a } else { b })
}

/// Weighted choice among the usable targets only: the slow path when draws
/// keep hitting unusable ones (most of the group is down).
fn scan(group: &Group, usable: &dyn Fn(usize) -> bool, draw: Draw<'_>) -> Option<usize> {
    let total: u64 = (0..group.targets.len())
        .filter(|&i| usable(i))
        .map(|i| u64::from(group.targets[i].weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut x = draw(total);
    for i in (0..group.targets.len()).filter(|&i| usable(i)) {
        let w = u64::from(group.targets[i].weight);
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    None
}

/// Whether any target of `group` is usable at `now`.
pub fn has_usable(group: &Group, now: u64) -> bool {
    group
        .targets
        .iter()
        .any(|t| t.weight > 0 && t.live.health.usable(now))
}

/// Settles `decision` on a usable target, moving it as DESIGN.md §4 says when
/// its target or group is down, and returns that target's index in
/// `snap.groups[decision.group]`. `None`: nothing usable may serve it (503).
pub fn route(
    snap: &Snapshot,
    routing: &Routing,
    decision: &mut Decision,
    now: u64,
    draw: Draw<'_>,
) -> Option<usize> {
    let slow_start = snap.config.health.slow_start;
    let group = &snap.groups[decision.group];
    if let Some(t) = decision.target {
        if group.targets[t].live.health.usable(now) {
            return Some(t);
        }
        // The pinned target is down: a sibling takes over, and the cookie says so.
        decision.target = None;
        decision.reason = Reason::Retargeted;
        decision.issue_cookie = true;
    }
    if let Some(t) = pick(group, now, slow_start, &[], draw) {
        decision.target = Some(t);
        return Some(t);
    }
    if decision.reason == Reason::Override || !snap.config.health.failover {
        return None;
    }
    let other = failover_group(snap, routing, decision.group, now)?;
    let t = pick(&snap.groups[other], now, slow_start, &[], draw)?;
    match decision.reason {
        // A client being assigned now goes where it can be served, and is pinned there.
        Reason::New | Reason::Invalid | Reason::Expired | Reason::Reassigned => {}
        // A pinned client is served elsewhere for now and keeps its cookie, so
        // it returns to its group once the group recovers.
        _ => {
            decision.issue_cookie = false;
            decision.reason = Reason::Failover;
        }
    }
    decision.group = other;
    decision.target = Some(t);
    Some(t)
}

/// The group that stands in for `failed`: one of the same route's groups
/// (never another route's: that would be another app) with a usable
/// target, that takes new clients (weight above 0, not draining), the
/// heaviest first, then the first in file order. The same for every
/// client, so failed-over clients land together.
///
/// A drained group was rolled back for a reason, and a weight-0 group was
/// never released to new clients (an unreleased canary, or a retired
/// version): neither stands in. With no group left, the client gets a 503
/// that says so, not a version nobody chose for it.
fn failover_group(snap: &Snapshot, routing: &Routing, failed: usize, now: u64) -> Option<usize> {
    routing
        .split_groups()
        .filter(|&(i, weight, drain)| {
            i != failed && weight > 0 && !drain && has_usable(&snap.groups[i], now)
        })
        .max_by_key(|&(i, weight, _)| (weight, std::cmp::Reverse(i)))
        .map(|(i, _, _)| i)
}

/// [`pick`] with the thread-local random generator.
pub fn pick_random(
    group: &Group,
    now: u64,
    slow_start: Duration,
    exclude: &[usize],
) -> Option<usize> {
    pick(group, now, slow_start, exclude, &mut |n| {
        rand::random_range(0..n)
    })
}

#[cfg(test)]
mod tests;
