//! A rollout's state and how it moves: pure functions over a [`Record`]
//! and the plan, with the time passed in, so every rule is unit-tested
//! without a socket.
//!
//! ```text
//!            hold passed and the last verdict held
//!   step 1 ───────────────────────────────────────> step 2 ... last step ──> promoted
//!     │  \ pause step: waiting ──resume──> on                                   ^
//!     │   person: paused <──pause / resume──> on           person: promote ─────┘
//!     └── failures_to_abort failed verdicts, or a person: aborted ──retry──> step 1
//! ```

use serde::{Deserialize, Serialize};

use super::analysis::Verdict;
use crate::config::rollout::{WHOLE, percent};
use crate::config::{AfterPromote, RolloutPlan};
use crate::state::Override;

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Holding its step; advances when the hold passed and the checks held.
    Progressing,
    /// Stopped by a person: holds its weight (the checks still run and can
    /// abort) until resumed.
    Paused,
    /// At a `pause: true` step, waiting for a person to resume or promote.
    Waiting,
    /// The canary is drained: every client of it is back on stable.
    Aborted,
    /// The canary has the whole route.
    Promoted,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Progressing,
        Phase::Paused,
        Phase::Waiting,
        Phase::Aborted,
        Phase::Promoted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Waiting => "waiting",
            Phase::Aborted => "aborted",
            Phase::Promoted => "promoted",
        }
    }

    /// Aborted and promoted rollouts do nothing more until retried or replaced.
    pub fn is_over(self) -> bool {
        matches!(self, Phase::Aborted | Phase::Promoted)
    }
}

/// A rollout's state: what every replica serves, and what survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Names this run: interval tallies are kept under it.
    pub id: String,
    pub stable: String,
    pub canary: String,
    pub phase: Phase,
    /// Index into the plan's steps.
    pub step: usize,
    /// The canary's weight in force, in basis points.
    pub weight: u32,
    /// Unix ms.
    pub started_ms: u64,
    pub step_started_ms: u64,
    /// The analysis clock: interval `n` is `[anchor + n*interval, anchor + (n+1)*interval)`.
    pub anchor_ms: u64,
    pub interval_ms: u64,
    /// The next interval to close.
    pub next_window: u64,
    /// The first interval the next verdict covers (earlier ones had too few
    /// canary requests, or belong to a previous step).
    pub from_window: u64,
    pub passed_in_step: u32,
    pub last_failed: bool,
    /// Failed verdicts over the whole rollout.
    pub failures: u32,
    /// Why the rollout is where it is, in words.
    pub reason: String,
    pub updated_ms: u64,
    /// Bumped by every write; a write that did not start from the stored
    /// version is refused (compare-and-set).
    pub version: u64,
    pub last_verdict: Option<Verdict>,
}

/// What a person can ask of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Promote,
    Abort,
    Retry,
    /// Forget the route's state, readable or not, and start the plan again.
    Reset,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "promote" => Command::Promote,
            "abort" => Command::Abort,
            "retry" => Command::Retry,
            "reset" => Command::Reset,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Abort => "abort",
            Command::Retry => "retry",
            Command::Reset => "reset",
        }
    }
}

/// Why a command cannot apply now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} a rollout that is {phase}")]
pub struct Refused {
    pub command: &'static str,
    pub phase: &'static str,
}

/// A rollout that just began at the plan's first step.
pub fn begin(plan: &RolloutPlan, stable: &str, canary: &str, now: u64, version: u64) -> Record {
    let interval_ms = plan.analysis.interval.as_millis() as u64;
    let mut r = Record {
        id: format!("{now:x}"),
        stable: stable.to_owned(),
        canary: canary.to_owned(),
        phase: Phase::Progressing,
        step: 0,
        weight: 0,
        started_ms: now,
        step_started_ms: now,
        anchor_ms: now,
        interval_ms,
        next_window: 0,
        from_window: 0,
        passed_in_step: 0,
        last_failed: false,
        failures: 0,
        reason: "started".to_owned(),
        updated_ms: now,
        version,
        last_verdict: None,
    };
    enter(plan, &mut r, 0, now);
    r
}

/// Moves `r` to step `i`: its weight in force, a fresh hold, and analysis
/// from the next interval on (the current one mixes two weights).
fn enter(plan: &RolloutPlan, r: &mut Record, i: usize, now: u64) {
    let Some(step) = plan.steps.get(i) else {
        return;
    };
    r.step = i;
    r.weight = step.weight;
    r.step_started_ms = now;
    r.passed_in_step = 0;
    r.last_failed = false;
    r.from_window = r.window_at(now) + 1;
    r.next_window = r.next_window.max(r.from_window);
    if step.pause && r.phase == Phase::Progressing {
        r.phase = Phase::Waiting;
    }
}

impl Record {
    /// The interval `now` falls in.
    pub fn window_at(&self, now: u64) -> u64 {
        now.saturating_sub(self.anchor_ms) / self.interval_ms.max(1)
    }

    /// When interval `w` ends (unix ms).
    pub fn window_end(&self, w: u64) -> u64 {
        self.anchor_ms + (w + 1) * self.interval_ms.max(1)
    }

    /// The weights this state puts in force over the plan's two groups.
    pub fn override_of(&self, plan: &RolloutPlan) -> Override {
        let (canary_weight, canary_drain, stable_drain) = match self.phase {
            Phase::Aborted => (0, true, false),
            Phase::Promoted => (WHOLE, false, plan.after_promote == AfterPromote::Drain),
            _ => (self.weight, false, false),
        };
        Override {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            canary_weight,
            canary_drain,
            stable_drain,
        }
    }

    /// `step 2/4 (canary 25%)`.
    pub fn position(&self, plan: &RolloutPlan) -> String {
        format!(
            "step {}/{} (canary {})",
            self.step + 1,
            plan.steps.len(),
            percent(self.weight)
        )
    }
}

/// What moved, in words, for the one log line a transition gets.
pub type Transition = String;

/// Applies a verdict: counts a failure (aborting at `failures_to_abort`) or
/// a pass.
pub fn conclude(plan: &RolloutPlan, r: &mut Record, v: Verdict, now: u64) -> Option<Transition> {
    let figures = v.figures();
    let passed = v.passed;
    r.last_verdict = Some(v);
    r.updated_ms = now;
    if passed {
        r.passed_in_step += 1;
        r.last_failed = false;
        return None;
    }
    r.failures += 1;
    r.last_failed = true;
    if r.failures < plan.analysis.failures_to_abort {
        return Some(format!(
            "check failed at {} ({} of {} failures abort): {figures}",
            r.position(plan),
            r.failures,
            plan.analysis.failures_to_abort
        ));
    }
    let at = r.position(plan);
    r.phase = Phase::Aborted;
    r.reason = format!(
        "aborted: {} failed checks (limit {}); last: {figures}",
        r.failures, plan.analysis.failures_to_abort
    );
    Some(format!(
        "ABORTED at {at}: canary drained, its clients go back to {}; {} failed checks; last: {figures}",
        r.stable, r.failures
    ))
}

/// Advances `r` when its step's hold passed and its last verdict held: to
/// the next step, or to promoted after the last.
pub fn advance(plan: &RolloutPlan, r: &mut Record, now: u64) -> Option<Transition> {
    if r.phase != Phase::Progressing || r.passed_in_step == 0 || r.last_failed {
        return None;
    }
    let hold = plan
        .steps
        .get(r.step)
        .map_or(0, |s| s.hold.as_millis() as u64);
    if now < r.step_started_ms.saturating_add(hold) {
        return None;
    }
    let figures = r
        .last_verdict
        .as_ref()
        .map(Verdict::figures)
        .unwrap_or_default();
    let from = r.position(plan);
    r.updated_ms = now;
    if r.step + 1 >= plan.steps.len() {
        r.phase = Phase::Promoted;
        r.reason = format!("promoted after its last step; last checks: {figures}");
        return Some(format!(
            "PROMOTED after {from}: {} has the whole route (write that in proxy.yaml before removing the plan); last checks: {figures}",
            r.canary
        ));
    }
    enter(plan, r, r.step + 1, now);
    r.reason = format!("advanced: checks held over the hold; last: {figures}");
    Some(format!(
        "{from} -> {}: checks held; last: {figures}",
        r.position(plan)
    ))
}

/// Applies a person's command.
pub fn command(
    plan: &RolloutPlan,
    r: &mut Record,
    cmd: Command,
    now: u64,
) -> Result<Transition, Refused> {
    let refused = Refused {
        command: cmd.label(),
        phase: r.phase.label(),
    };
    let at = r.position(plan);
    let said = match (cmd, r.phase) {
        (Command::Pause, Phase::Progressing | Phase::Waiting) => {
            r.phase = Phase::Paused;
            format!("paused by a person at {at}")
        }
        (Command::Resume, Phase::Paused | Phase::Waiting) => {
            r.phase = Phase::Progressing;
            format!("resumed by a person at {at}")
        }
        (Command::Promote, p) if !p.is_over() => {
            r.phase = Phase::Promoted;
            format!(
                "PROMOTED by a person at {at}: {} has the whole route",
                r.canary
            )
        }
        (Command::Abort, p) if !p.is_over() => {
            r.phase = Phase::Aborted;
            format!(
                "ABORTED by a person at {at}: canary drained, its clients go back to {}",
                r.stable
            )
        }
        (Command::Retry, Phase::Aborted) => {
            let version = r.version;
            *r = begin(plan, &r.stable, &r.canary, now, version);
            format!("retried by a person: back to {}", r.position(plan))
        }
        _ => return Err(refused),
    };
    r.reason = said.clone();
    r.updated_ms = now;
    Ok(said)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Analysis, RolloutStep};
    use crate::rollout::analysis::{Check, Outcome};

    fn plan() -> RolloutPlan {
        let step = |pct: u32, secs: u64, pause: bool| RolloutStep {
            weight: pct * 100,
            hold: Duration::from_secs(secs),
            pause,
        };
        RolloutPlan {
            stable: 0,
            canary: 1,
            steps: vec![step(5, 10, false), step(50, 10, true), step(100, 0, false)],
            analysis: Analysis {
                interval: Duration::from_secs(1),
                failures_to_abort: 2,
                ..Analysis::default()
            },
            after_promote: AfterPromote::Drain,
        }
    }

    fn verdict(passed: bool) -> Verdict {
        Verdict {
            passed,
            canary_requests: 100,
            stable_requests: 1000,
            checks: vec![Check {
                name: "error_ratio".into(),
                value: if passed { 0.0 } else { 0.5 },
                limit: 0.05,
                outcome: if passed { Outcome::Pass } else { Outcome::Fail },
            }],
            at_ms: 0,
        }
    }

    #[test]
    fn a_step_advances_only_after_its_hold_and_a_verdict_that_held() {
        let p = plan();
        let mut r = begin(&p, "blue", "green", 1_000, 0);
        assert_eq!((r.step, r.weight), (0, 500));
        assert!(advance(&p, &mut r, 20_000).is_none(), "no verdict yet");
        assert!(conclude(&p, &mut r, verdict(true), 2_000).is_none());
        assert!(advance(&p, &mut r, 5_000).is_none(), "hold not over");
        assert!(advance(&p, &mut r, 11_000).is_some());
        assert_eq!((r.step, r.weight, r.phase), (1, 5000, Phase::Waiting));
        assert!(
            r.from_window > r.window_at(11_000),
            "the mixed interval is left out"
        );
    }

    #[test]
    fn a_pause_step_waits_for_a_person_and_the_last_step_promotes() {
        let p = plan();
        let mut r = begin(&p, "blue", "green", 0, 0);
        conclude(&p, &mut r, verdict(true), 1);
        advance(&p, &mut r, 10_000);
        conclude(&p, &mut r, verdict(true), 10_001);
        assert!(advance(&p, &mut r, 60_000).is_none(), "waiting");
        assert!(command(&p, &mut r, Command::Resume, 60_000).is_ok());
        assert!(advance(&p, &mut r, 60_001).is_some());
        assert_eq!(r.weight, WHOLE);
        conclude(&p, &mut r, verdict(true), 60_002);
        assert!(advance(&p, &mut r, 60_003).is_some());
        assert_eq!(r.phase, Phase::Promoted);
        let o = r.override_of(&p);
        assert_eq!((o.canary_weight, o.stable_drain), (WHOLE, true));
    }

    #[test]
    fn failed_verdicts_abort_at_the_limit_and_drain_the_canary() {
        let p = plan();
        let mut r = begin(&p, "blue", "green", 0, 0);
        assert!(conclude(&p, &mut r, verdict(false), 1).is_some());
        assert_eq!(r.phase, Phase::Progressing);
        conclude(&p, &mut r, verdict(true), 2);
        conclude(&p, &mut r, verdict(false), 3);
        assert_eq!(r.phase, Phase::Aborted, "failures count over the rollout");
        let o = r.override_of(&p);
        assert_eq!((o.canary_weight, o.canary_drain), (0, true));
        assert!(command(&p, &mut r, Command::Promote, 4).is_err());
        assert!(command(&p, &mut r, Command::Retry, 5).is_ok());
        assert_eq!((r.phase, r.step, r.failures), (Phase::Progressing, 0, 0));
    }

    #[test]
    fn a_failed_last_verdict_holds_the_step() {
        let p = plan();
        let mut r = begin(&p, "blue", "green", 0, 0);
        conclude(&p, &mut r, verdict(true), 1);
        conclude(&p, &mut r, verdict(false), 2);
        assert!(advance(&p, &mut r, 50_000).is_none());
        conclude(&p, &mut r, verdict(true), 50_001);
        assert!(advance(&p, &mut r, 50_002).is_some());
    }

    #[test]
    fn pause_holds_a_progressing_rollout_until_resumed() {
        let p = plan();
        let mut r = begin(&p, "blue", "green", 0, 0);
        assert!(command(&p, &mut r, Command::Pause, 1).is_ok());
        conclude(&p, &mut r, verdict(true), 2);
        assert!(advance(&p, &mut r, 50_000).is_none());
        assert!(command(&p, &mut r, Command::Pause, 3).is_err());
        assert!(command(&p, &mut r, Command::Resume, 4).is_ok());
        assert!(advance(&p, &mut r, 50_001).is_some());
    }
}

#[cfg(test)]
mod monotone {
    use crate::assign::bucket::BucketTable;
    use crate::config::rollout::WHOLE;

    /// With the split's two groups in either order, each step's raise only
    /// moves buckets into the canary: no client of the canary goes back.
    #[test]
    fn raising_the_canary_moves_clients_only_into_it_in_either_order() {
        let (stable, canary) = (0usize, 1usize);
        for canary_first in [false, true] {
            let table = |w: u32| {
                let (s, c) = ((stable, WHOLE - w), (canary, w));
                BucketTable::new(if canary_first { vec![c, s] } else { vec![s, c] })
            };
            let steps = [0, 1, 500, 2500, 5000, 9999, WHOLE];
            for pair in steps.windows(2) {
                let (before, after) = (table(pair[0]), table(pair[1]));
                for b in 0..WHOLE {
                    if before.group_of(b) == Some(canary) {
                        assert_eq!(
                            after.group_of(b),
                            Some(canary),
                            "{canary_first} {pair:?} {b}"
                        );
                    }
                }
                assert_eq!(after.buckets_of(canary), pair[1]);
            }
        }
    }
}
