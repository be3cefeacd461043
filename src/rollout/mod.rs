//! Progressive delivery inside the proxy: each route's `rollout` plan is
//! run here, step by step, with the analysis that decides whether it
//! advances, holds or aborts.
//!
//! ```text
//! every tick (a quarter of the shortest interval, 100 ms to 1 s), on every replica:
//!   lead?  (always alone; under Redis, the replica holding the lease)
//!   per planned route:
//!     record <- backend (Redis or this process + state file)
//!     leader: close due intervals -> judge -> conclude (abort?) -> advance (next step, promote?)
//!             -> compare-and-set the record; one log line per transition
//!     all:    add this replica's request counts since the last tick to the current interval
//!   overrides (weights of every record) -> Shared::set_overrides: a new snapshot when they moved
//! ```
//! A person's command (pause, resume, promote, abort, retry) is a
//! compare-and-set of the same record from whichever replica got it; every
//! replica serves what the record says from its next tick. The request path
//! is untouched: it keeps counting what it counts, and serves the snapshot.

pub mod analysis;
pub mod backend;
mod metrics;
pub mod progress;
mod view;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::unix_ms;
use crate::config::rollout::percent;
use crate::config::{Config, RolloutPlan};
use crate::state::{Overrides, Shared, Snapshot, lock};
use analysis::{Tally, Window, judge};
use backend::{Backend, BackendError, Local, MAX_SPAN};
pub use metrics::RolloutMetrics;
pub use progress::{Command, Phase, Record, Refused};

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("route `{0}` has no rollout")]
    NoRollout(String),
    #[error("the rollout of route `{0}` has not started yet (no replica has led it)")]
    NotStarted(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Store(#[from] BackendError),
    #[error("the rollout kept changing under the command; try again")]
    Busy,
}

/// One route's rollout as this replica last saw it.
#[derive(Debug, Default)]
struct Run {
    record: Option<Record>,
    /// Why its state is held (it exists but cannot be read): no step is
    /// taken and the YAML split serves until an operator resets it.
    held: Option<String>,
    /// Running totals (stable, canary) at the last tick, for the run and
    /// analysis clock they were read under.
    baseline: Option<((String, u64), Window)>,
}

/// The rollouts of this proxy.
#[derive(Debug)]
pub struct Rollouts {
    shared: Arc<Shared>,
    backend: Backend,
    /// This replica's name in the lease.
    me: String,
    metrics: RolloutMetrics,
    runs: Mutex<HashMap<String, Run>>,
    leading: AtomicBool,
    /// One tick or command at a time in this process.
    turn: tokio::sync::Mutex<()>,
    /// The last backend failure logged (unix ms), so a Redis outage logs
    /// once every 10 s, not every tick.
    failure_logged: Mutex<u64>,
    /// The last backend failure, until an operation succeeds: `/status`
    /// shows it (a state file that cannot be written stops the plan).
    last_failure: Mutex<Option<String>>,
}

/// Where a proxy without Redis keeps rollout state: `rollout_state_file`,
/// else beside the config file (`proxy.yaml` -> `proxy.rollout.json`);
/// `None` (memory only) for a config that came from no file.
pub fn state_file(config: &Config, config_path: Option<&Path>) -> Option<PathBuf> {
    config
        .rollout_state_file
        .clone()
        .or_else(|| config_path.map(|p| p.with_extension("rollout.json")))
}

/// The plans of `snap`'s routes, by route name.
fn plans(snap: &Snapshot) -> Vec<(String, RolloutPlan)> {
    snap.declared()
        .routes
        .iter()
        .filter_map(|r| r.rollout.clone().map(|p| (r.name.as_str().to_owned(), p)))
        .collect()
}

/// The names of a plan's (stable, canary) groups.
fn names<'a>(snap: &'a Snapshot, plan: &RolloutPlan) -> (&'a str, &'a str) {
    let g = &snap.declared().groups;
    let name = |i: usize| g.get(i).map_or("", |g| g.name.as_str());
    (name(plan.stable), name(plan.canary))
}

/// How often the loop runs: a quarter of the shortest analysis interval,
/// from 100 ms to 1 s.
fn period(plans: &[(String, RolloutPlan)]) -> Duration {
    plans
        .iter()
        .map(|(_, p)| p.analysis.interval / 4)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(100), Duration::from_secs(1))
}

impl Rollouts {
    /// Sets the rollouts up and runs one tick, so that a restarted proxy
    /// serves the step it was on from its first request.
    pub async fn start(
        shared: Arc<Shared>,
        config_path: Option<&Path>,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let snap = shared.snapshot();
        let backend = match shared.store.as_ref().and_then(|s| {
            s.redis_connection()
                .map(|c| Backend::redis(c, s.key_prefix(), s.timeout()))
        }) {
            Some(b) => b,
            None => Backend::Local(Local::open(state_file(&snap.config, config_path))),
        };
        let metrics = RolloutMetrics::new(&shared.registry)?;
        let me = format!("{:016x}", rand::random::<u64>());
        let r = Arc::new(Self {
            shared,
            backend,
            me,
            metrics,
            runs: Mutex::default(),
            leading: AtomicBool::new(false),
            turn: tokio::sync::Mutex::new(()),
            failure_logged: Mutex::new(0),
            last_failure: Mutex::default(),
        });
        r.tick().await;
        Ok(r)
    }

    /// Runs the loop until `shutdown` turns true.
    pub fn spawn(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let wait = period(&plans(&self.shared.snapshot()));
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                self.tick().await;
            }
        })
    }

    /// Whether this replica advanced the plans at its last tick.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Where the state is kept, in words.
    pub fn store_label(&self) -> String {
        match &self.backend {
            Backend::Redis(_) => "redis".to_owned(),
            Backend::Local(l) => l
                .file
                .as_ref()
                .map_or_else(|| "memory".to_owned(), |f| format!("file {}", f.display())),
        }
    }

    fn failed(&self, what: &str, e: &BackendError) {
        *lock(&self.last_failure) = Some(format!("{what}: {e}"));
        let now = unix_ms();
        let mut last = lock(&self.failure_logged);
        if now.saturating_sub(*last) >= 10_000 {
            *last = now;
            tracing::warn!(error = %e, "rollouts: {what} failed; serving the last known steps");
        }
    }

    /// One turn of the loop (see the module doc).
    async fn tick(&self) {
        let _turn = self.turn.lock().await;
        let snap = self.shared.snapshot();
        let plans = plans(&snap);
        let period = period(&plans);
        let now = unix_ms();
        // Leading matters while a plan runs, or a removed one's state is
        // left to delete.
        let idle = plans.is_empty() && lock(&self.runs).is_empty();
        let leading = if idle {
            false
        } else {
            let lease = period * 4 + Duration::from_secs(1);
            match self.backend.lead(&self.me, lease).await {
                Ok(l) => l,
                Err(e) => {
                    self.failed("taking the lead", &e);
                    false
                }
            }
        };
        self.leading.store(leading, Ordering::Relaxed);
        self.metrics.leader.set(i64::from(leading));
        let planned: Vec<&str> = plans.iter().map(|(r, _)| r.as_str()).collect();
        self.backend.settle_hold(&planned);
        let mut fresh = Vec::new();
        for (route, plan) in &plans {
            let (stable, canary) = names(&snap, plan);
            let loaded = match self.backend.load(route).await {
                Ok(r) => r,
                Err(e) if e.is_unreadable() => {
                    // Not "no state": hold the plan on its YAML split.
                    self.hold(route, &e);
                    fresh.push((route.clone(), None));
                    continue;
                }
                Err(e) => {
                    self.failed("reading state", &e);
                    continue;
                }
            };
            self.release(route);
            let rec = if leading {
                self.drive(route, plan, (stable, canary), loaded, now, period)
                    .await
            } else {
                loaded
            };
            let rec = rec.filter(|r| r.stable == stable && r.canary == canary);
            if let Some(r) = &rec {
                self.count(route, plan, r, &snap, now).await;
            }
            fresh.push((route.clone(), rec));
        }
        // The weights first, then the view: whoever sees a new step in
        // `/status` or the metrics finds its weights already in force.
        self.shared.set_overrides(self.overrides(&plans, &fresh));
        for (route, rec) in fresh {
            self.observe(&route, rec, leading);
        }
        self.drop_unplanned(&plans, leading).await;
    }

    /// Marks `route`'s state held (shown in `/status` and the metrics),
    /// saying so once.
    fn hold(&self, route: &str, e: &BackendError) {
        let why = e.to_string();
        let mut runs = lock(&self.runs);
        let run = runs.entry(route.to_owned()).or_default();
        if run.held.is_none() {
            tracing::error!("rollout {route}: {why}");
        }
        run.held = Some(why);
        run.baseline = None;
        self.metrics.held(route, true);
    }

    /// `route`'s state reads again.
    fn release(&self, route: &str) {
        let mut runs = lock(&self.runs);
        if let Some(run) = runs.get_mut(route)
            && run.held.take().is_some()
        {
            tracing::info!("rollout {route}: its state reads again; the plan runs");
        }
        self.metrics.held(route, false);
    }

    /// The leader's turn on one route: start the plan if it has no record
    /// (or one of another stable/canary pair), judge the intervals that
    /// closed, advance; store what changed. Returns the record in force.
    async fn drive(
        &self,
        route: &str,
        plan: &RolloutPlan,
        (stable, canary): (&str, &str),
        loaded: Option<Record>,
        now: u64,
        period: Duration,
    ) -> Option<Record> {
        let mut said = Vec::new();
        let mut rec = match &loaded {
            Some(r) if r.stable == stable && r.canary == canary => r.clone(),
            _ => {
                let r = progress::begin(plan, stable, canary, now, 0);
                said.push(format!(
                    "started: {stable} -> {canary}, {}",
                    r.position(plan)
                ));
                r
            }
        };
        if !rec.phase.is_over() {
            let interval = plan.analysis.interval.as_millis() as u64;
            if rec.interval_ms != interval {
                // The analysis clock changed: start it again from now.
                rec.interval_ms = interval;
                rec.anchor_ms = now;
                rec.next_window = 0;
                rec.from_window = 1;
            }
            if let Some(t) = self.judge_closed(route, plan, &mut rec, now, period).await {
                said.push(t);
            }
            if let Some(t) = progress::advance(plan, &mut rec, now) {
                said.push(t);
            }
        }
        if loaded.as_ref() == Some(&rec) {
            return loaded;
        }
        match self
            .backend
            .swap(route, loaded.as_ref(), Some(&mut rec))
            .await
        {
            Ok(true) => {
                *lock(&self.last_failure) = None;
                for s in said {
                    tracing::info!("rollout {route}: {s}");
                }
                Some(rec)
            }
            Ok(false) => loaded,
            Err(e) => {
                self.failed("writing state", &e);
                loaded
            }
        }
    }

    /// Judges the intervals closed since the last verdict, if any; a
    /// transition when the verdict failed.
    async fn judge_closed(
        &self,
        route: &str,
        plan: &RolloutPlan,
        rec: &mut Record,
        now: u64,
        period: Duration,
    ) -> Option<String> {
        // Every replica adds its counts each tick: wait one more for the
        // last of them before closing an interval.
        let grace = period.as_millis() as u64 + 250;
        let open = rec.window_at(now.saturating_sub(grace));
        let closed = open.checked_sub(1)?;
        if closed < rec.next_window {
            return None;
        }
        let from = rec
            .from_window
            .max(closed.saturating_sub(MAX_SPAN - 1))
            .min(closed + 1);
        rec.next_window = closed + 1;
        if from > closed {
            return None;
        }
        let w = match self.backend.sum(route, rec, from, closed).await {
            Ok(w) => w,
            Err(e) => {
                self.failed("reading the analysis counts", &e);
                return None;
            }
        };
        let (bounds, canary_up) = self.canary_view(plan);
        let Some(v) = judge(&plan.analysis, &w, &bounds, canary_up, now) else {
            rec.from_window = from;
            return None;
        };
        rec.from_window = closed + 1;
        self.metrics.judged(route, &v);
        progress::conclude(plan, rec, v, now)
    }

    /// The duration histogram's bucket bounds, and whether the canary has
    /// a target requests may go to.
    fn canary_view(&self, plan: &RolloutPlan) -> (Vec<f64>, bool) {
        let snap = self.shared.snapshot();
        let now = crate::clock::now_ms();
        let up = snap
            .groups
            .get(plan.canary)
            .is_some_and(|g| g.targets.iter().any(|t| t.live.health.usable(now)));
        let bounds = snap
            .routes
            .iter()
            .find_map(|r| r.metrics.get(plan.canary).cloned().flatten())
            .map(|m| Tally::read(&m).1)
            .unwrap_or_default();
        (bounds, up)
    }

    /// Adds this replica's requests since its last tick to the current
    /// interval of `rec` (none once it is over).
    async fn count(
        &self,
        route: &str,
        plan: &RolloutPlan,
        rec: &Record,
        snap: &Snapshot,
        now: u64,
    ) {
        let handles = snap
            .routes
            .iter()
            .find(|r| r.name.as_str() == route)
            .and_then(|r| {
                let m = |g: usize| r.metrics.get(g).cloned().flatten();
                Some((m(plan.stable)?, m(plan.canary)?))
            });
        let key = (rec.id.clone(), rec.anchor_ms);
        let reading = match handles {
            Some((s, c)) if !rec.phase.is_over() => Window {
                stable: Tally::read(&s).0,
                canary: Tally::read(&c).0,
            },
            _ => {
                lock(&self.runs)
                    .entry(route.to_owned())
                    .or_default()
                    .baseline = None;
                return;
            }
        };
        let before = lock(&self.runs)
            .entry(route.to_owned())
            .or_default()
            .baseline
            .replace((key.clone(), reading.clone()));
        let Some((k, before)) = before else { return };
        if k != key {
            return;
        }
        let delta = reading
            .stable
            .since(&before.stable)
            .zip(reading.canary.since(&before.canary));
        let Some((stable, canary)) = delta else {
            return;
        };
        if stable.is_empty() && canary.is_empty() {
            return;
        }
        let w = Window { stable, canary };
        if let Err(e) = self.backend.add(route, rec, rec.window_at(now), &w).await {
            self.failed("adding analysis counts", &e);
        }
    }

    /// Keeps `rec` as this replica's view of `route`, shows it in the
    /// metrics, and says when it moved under another replica's lead.
    fn observe(&self, route: &str, rec: Option<Record>, leading: bool) {
        let mut runs = lock(&self.runs);
        let run = runs.entry(route.to_owned()).or_default();
        if let Some(r) = &rec {
            let weight = match r.phase {
                Phase::Aborted => 0,
                Phase::Promoted => crate::config::rollout::WHOLE,
                _ => r.weight,
            };
            self.metrics.show(route, r, weight);
            let moved = run
                .record
                .as_ref()
                .is_none_or(|o| o.phase != r.phase || o.step != r.step || o.id != r.id);
            if moved && !leading {
                tracing::info!(
                    "rollout {route}: {} at step {} (canary {}), as the leading replica set it: {}",
                    r.phase.label(),
                    r.step + 1,
                    percent(weight),
                    r.reason
                );
            }
        }
        run.record = rec;
    }

    /// Forgets routes whose plan is gone; the leader deletes their records
    /// (a plan put back later starts from its first step).
    async fn drop_unplanned(&self, plans: &[(String, RolloutPlan)], leading: bool) {
        let gone: Vec<(String, Option<Record>)> = {
            let mut runs = lock(&self.runs);
            let names: Vec<String> = runs
                .keys()
                .filter(|k| !plans.iter().any(|(r, _)| r == *k))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|k| runs.remove(&k).map(|r| (k, r.record)))
                .collect()
        };
        for (route, rec) in gone {
            self.metrics.forget(&route);
            tracing::info!(
                "rollout {route}: the plan is gone from the config; the route's weights are the YAML's again"
            );
            if leading
                && let Some(r) = rec
                && let Err(e) = self.backend.swap(&route, Some(&r), None).await
            {
                self.failed("deleting state", &e);
            }
        }
    }

    /// The weights every record puts in force: the `fresh` one of a route
    /// when there is one, else the last this replica saw (its store did
    /// not answer).
    fn overrides(
        &self,
        plans: &[(String, RolloutPlan)],
        fresh: &[(String, Option<Record>)],
    ) -> Overrides {
        let runs = lock(&self.runs);
        plans
            .iter()
            .filter_map(|(route, plan)| {
                let rec = match fresh.iter().find(|(r, _)| r == route) {
                    Some((_, rec)) => rec.as_ref()?,
                    None => runs.get(route)?.record.as_ref()?,
                };
                Some((route.clone(), rec.override_of(plan)))
            })
            .collect()
    }

    /// Carries out a person's command on `route`'s rollout, and puts its
    /// weights in force here at once (other replicas at their next tick).
    pub async fn command(&self, route: &str, cmd: Command) -> Result<Record, CommandError> {
        let _turn = self.turn.lock().await;
        let snap = self.shared.snapshot();
        let plans = plans(&snap);
        let Some((_, plan)) = plans.iter().find(|(r, _)| r == route) else {
            return Err(CommandError::NoRollout(route.to_owned()));
        };
        let (stable, canary) = names(&snap, plan);
        let held = lock(&self.runs)
            .get(route)
            .is_some_and(|r| r.held.is_some());
        if cmd == Command::Reset || (cmd == Command::Retry && held) {
            return self.reset(route, plan, (stable, canary), &plans).await;
        }
        for _ in 0..5 {
            let loaded = self.backend.load(route).await?;
            let Some(mut rec) = loaded
                .clone()
                .filter(|r| r.stable == stable && r.canary == canary)
            else {
                return Err(CommandError::NotStarted(route.to_owned()));
            };
            let said = progress::command(plan, &mut rec, cmd, unix_ms())?;
            if self
                .backend
                .swap(route, loaded.as_ref(), Some(&mut rec))
                .await?
            {
                tracing::info!("rollout {route}: {said}");
                let fresh = [(route.to_owned(), Some(rec.clone()))];
                self.shared.set_overrides(self.overrides(&plans, &fresh));
                self.observe(route, Some(rec.clone()), true);
                return Ok(rec);
            }
        }
        Err(CommandError::Busy)
    }

    /// Forgets `route`'s state, readable or not, and starts its plan again
    /// from the first step (the command `reset`, and `retry` of a held one).
    async fn reset(
        &self,
        route: &str,
        plan: &RolloutPlan,
        (stable, canary): (&str, &str),
        plans: &[(String, RolloutPlan)],
    ) -> Result<Record, CommandError> {
        self.backend.reset(route).await?;
        let mut rec = progress::begin(plan, stable, canary, unix_ms(), 0);
        if !self.backend.swap(route, None, Some(&mut rec)).await? {
            return Err(CommandError::Busy);
        }
        // The last held route released: the state file is written now.
        let planned: Vec<&str> = plans.iter().map(|(r, _)| r.as_str()).collect();
        self.backend.settle_hold(&planned);
        tracing::info!(
            "rollout {route}: reset by a person: its state forgotten, started again at {}",
            rec.position(plan)
        );
        self.release(route);
        let fresh = [(route.to_owned(), Some(rec.clone()))];
        self.shared.set_overrides(self.overrides(plans, &fresh));
        self.observe(route, Some(rec.clone()), true);
        Ok(rec)
    }

    /// Every planned route's rollout: the plan and where it stands, for
    /// `/status` and the admin API.
    pub fn view(&self, snap: &Snapshot) -> Vec<serde_json::Value> {
        let runs = lock(&self.runs);
        plans(snap)
            .iter()
            .map(|(route, plan)| {
                let run = runs.get(route);
                let rec = run.and_then(|r| r.record.as_ref());
                view::describe(
                    route,
                    plan,
                    names(snap, plan),
                    rec,
                    &view::Where {
                        store: self.store_label(),
                        error: lock(&self.last_failure).clone(),
                        leader: self.leading(),
                        held: run.and_then(|r| r.held.clone()),
                    },
                )
            })
            .collect()
    }
}
