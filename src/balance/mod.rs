//! Target choice inside a group: weighted power-of-two-choices on outstanding
//! requests. Two targets are drawn at random in proportion to their weights and
//! the one with fewer requests in flight per unit of weight wins. It needs no
//! shared mutable state beyond the targets' atomic counters, so it takes no lock.

use crate::state::Group;

/// Picks a target index in `group`, or `None` when no target has weight.
/// `draw(n)` returns a uniform number in `0..n`.
pub fn pick(group: &Group, draw: &mut dyn FnMut(u64) -> u64) -> Option<usize> {
    let total = *group.cumulative.last()?;
    if total == 0 {
        return None;
    }
    if group.targets.len() == 1 {
        return Some(0);
    }
    let mut weighted = || {
        let x = draw(total);
        group.cumulative.partition_point(|&c| c <= x)
    };
    let a = weighted();
    let b = weighted();
    if a == b {
        return Some(a);
    }
    let (ta, tb) = (&group.targets[a], &group.targets[b]);
    // Compare outstanding/weight without division: oa/wa <= ob/wb.
    let la = (ta.live.outstanding().max(0) as u128) * u128::from(tb.weight);
    let lb = (tb.live.outstanding().max(0) as u128) * u128::from(ta.weight);
    Some(if la <= lb { a } else { b })
}

/// [`pick`] with the thread-local random generator.
pub fn pick_random(group: &Group) -> Option<usize> {
    pick(group, &mut |n| rand::random_range(0..n))
}
