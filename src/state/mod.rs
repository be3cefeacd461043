//! The runtime snapshot of proxy.yaml and the live state that outlives it.
//!
//! A [`Snapshot`] is immutable: weight tables precomputed, cookie keys prepared,
//! metric handles resolved. Requests read the current one from one
//! `ArcSwap<Snapshot>` without a lock and keep that `Arc` to the end, so a
//! request finishes on the snapshot it started with. Per-target live state
//! (outstanding requests, the connection pool, later health) sits behind an
//! `Arc` found by address in [`LiveState`], so a snapshot built from a new config
//! reuses it. A removed target's state, pool included, is dropped when the last
//! snapshot and the last in-flight request that hold it are gone: its idle
//! upstream connections close then, and not before its requests finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::assign::cookie::CookieCodec;
use crate::assign::{PassCodec, PassResult, Routing, target_id};
use crate::config::{Config, GroupName, PinCarrier, RouteSpec, Sticky};
use crate::metrics::{Counters, GroupMetrics, Metrics, RouteGroupMetrics, TargetMetrics};
use crate::route::RouteTable;
use crate::upstream::{H1Pool, PoolSettings, UpstreamClient, upstream_client};

pub mod overrides;
pub use overrides::{Override, Overrides};

/// Live state of one upstream target, shared by every snapshot that lists it.
#[derive(Debug, Default)]
pub struct TargetLive {
    outstanding: AtomicI64,
    pub health: crate::health::Health,
    /// When a failed request to this target was last logged (unix ms), and
    /// how many failures went unlogged since.
    failure_logged_at: AtomicU64,
    failures_unlogged: AtomicU64,
    /// The target's connection pool and the settings it was made with. Read
    /// only while a snapshot is built; requests use the clone in [`Target`].
    pool: Mutex<Option<PoolSlot>>,
}

/// A target's pools and the settings they were made with.
type PoolSlot = (PoolSettings, UpstreamClient, Option<Arc<H1Pool>>);

/// At most one warning a target per this many ms for failed requests.
const FAILURE_LOG_EVERY_MS: u64 = 10_000;

impl TargetLive {
    /// Whether a failed request at `now_ms` is to be logged (at most one a
    /// target every 10 s, so that a dead target does not flood the log);
    /// `Some(n)`: yes, with `n` failures left unlogged since the last one.
    pub fn failure_log_turn(&self, now_ms: u64) -> Option<u64> {
        let last = self.failure_logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= FAILURE_LOG_EVERY_MS;
        if due
            && self
                .failure_logged_at
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.failures_unlogged.swap(0, Ordering::Relaxed));
        }
        self.failures_unlogged.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The pool for `settings`: the existing one when it was made with the same
    /// settings, else a new one (the old pool closes once nothing uses it).
    fn client(
        &self,
        settings: &PoolSettings,
        address: &Authority,
    ) -> (UpstreamClient, Option<Arc<H1Pool>>) {
        let mut slot = lock(&self.pool);
        match &*slot {
            Some((s, c, native)) if s == settings => (c.clone(), native.clone()),
            _ => {
                let c = upstream_client(settings);
                let native = settings
                    .native()
                    .then(|| H1Pool::new(address.clone(), settings.connect, settings.idle));
                *slot = Some((settings.clone(), c.clone(), native.clone()));
                (c, native)
            }
        }
    }

    pub fn outstanding(&self) -> i64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>, gauge: &prometheus::IntGauge) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        InFlight {
            live: Arc::clone(self),
            gauge: gauge.clone(),
        }
    }
}

/// A request in flight to a target; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight {
    live: Arc<TargetLive>,
    gauge: prometheus::IntGauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.live.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// Where live state is found by target address while snapshots are built.
/// Only snapshot building takes this lock; requests never do.
#[derive(Debug, Default)]
pub struct LiveState {
    targets: Mutex<HashMap<String, Weak<TargetLive>>>,
}

/// A poisoned lock only means a panic elsewhere; the data (counters, pools) is
/// still sound, so carry on with it. (The layers above use this one.)
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl LiveState {
    fn target(&self, address: &str) -> Arc<TargetLive> {
        let mut map = lock(&self.targets);
        if let Some(live) = map.get(address).and_then(Weak::upgrade) {
            return live;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let live = Arc::new(TargetLive::default());
        map.insert(address.to_owned(), Arc::downgrade(&live));
        live
    }
}

/// One upstream `host:port` of a group.
#[derive(Debug)]
pub struct Target {
    pub address: Authority,
    /// Stable id carried in the cookie: a hash of the address.
    pub id: u32,
    pub weight: u32,
    pub live: Arc<TargetLive>,
    /// This target's own connection pool (see [`TargetLive`]).
    pub client: UpstreamClient,
    /// Inline HTTP/1.1 connections, for a cleartext HTTP/1.1 group.
    pub native: Option<Arc<H1Pool>>,
    pub metrics: TargetMetrics,
}

/// A target group as the request path sees it.
#[derive(Debug)]
pub struct Group {
    pub name: GroupName,
    pub weight: u32,
    pub drain: bool,
    /// Share of new clients (0 to 1).
    pub share: f64,
    pub targets: Vec<Target>,
    /// Running sums of target weights, for weighted random choice.
    pub cumulative: Vec<u64>,
    pub health_check: Option<crate::config::HealthCheck>,
    /// `https` when the group's upstreams are reached over TLS.
    pub scheme: http::uri::Scheme,
    /// The group's upstreams speak HTTP/2 (no HTTP/1.1 upgrades to them).
    pub h2: bool,
    pub metrics: GroupMetrics,
}

impl Group {
    pub fn target_by_id(&self, id: u32) -> Option<usize> {
        self.targets.iter().position(|t| t.id == id)
    }
}

/// The immutable runtime form of one config.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    /// The config in force: proxy.yaml with the rollouts' weights applied.
    pub config: Config,
    /// proxy.yaml as written, when a rollout's weights differ from it.
    declared: Option<Box<Config>>,
    pub groups: Vec<Group>,
    /// One per route of the config, in its order (the groups-only form: one).
    pub routes: Vec<Route>,
    /// Which route a request takes.
    pub route_table: RouteTable,
    /// Every route's pin cookie name: none reaches an upstream.
    pub cookie_names: PinNames,
    /// Every route's pin header (`sticky.type: header`): none reaches an
    /// upstream either.
    pub pin_headers: PinHeaders,
    pub unrouted: TargetMetrics,
    /// The HTTPS listener's TLS config (certificates by SNI), when it has one.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub loaded_at: SystemTime,
    /// SHA-256 of the file's bytes, hex.
    pub content_hash: String,
}

impl Snapshot {
    /// Builds a snapshot of `config` as declared, with `overrides` (the
    /// rollouts' weights) in force. Updates no metric: that happens when it
    /// is installed.
    pub fn build(
        config: Config,
        overrides: &Overrides,
        generation: u64,
        content_hash: String,
        live: &LiveState,
        metrics: &Metrics,
    ) -> Self {
        let (config, declared) = match overrides::apply(&config, overrides) {
            Some(in_force) => (in_force, Some(Box::new(config))),
            None => (config, None),
        };
        let groups: Vec<Group> = config
            .groups
            .iter()
            .map(|g| {
                let name = g.name.as_str();
                let pool = PoolSettings::new(&config.timeouts, g);
                let targets: Vec<Target> = g
                    .targets
                    .iter()
                    .map(|t| {
                        let addr = t.address.as_str();
                        let live = live.target(addr);
                        if generation == 1 {
                            // Targets the proxy starts with are not "new".
                            live.health.settle();
                        }
                        let (client, native) = live.client(&pool, &t.address);
                        Target {
                            address: t.address.clone(),
                            id: target_id(addr),
                            weight: t.weight.get(),
                            client,
                            native,
                            live,
                            metrics: metrics.target_handles(name, addr),
                        }
                    })
                    .collect();
                let cumulative = targets
                    .iter()
                    .scan(0u64, |acc, t| {
                        *acc += u64::from(t.weight);
                        Some(*acc)
                    })
                    .collect();
                let weight = g.weight.get();
                let share = config.share(g);
                Group {
                    name: g.name.clone(),
                    weight,
                    drain: g.drain,
                    share,
                    targets,
                    cumulative,
                    health_check: g.health_check.clone(),
                    scheme: if g.tls.is_some() {
                        http::uri::Scheme::HTTPS
                    } else {
                        http::uri::Scheme::HTTP
                    },
                    h2: g.protocol == crate::config::UpstreamProtocol::Http2,
                    metrics: metrics.group_handles(name),
                }
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| Route::new(&config, r, metrics))
            .collect();
        let mut cookie_names = Vec::new();
        let mut pin_headers = Vec::new();
        for r in &config.routes {
            match &r.sticky.carrier {
                PinCarrier::Cookie => cookie_names.push(r.sticky.cookie_name.as_str()),
                PinCarrier::Header(h) => pin_headers.push(h.clone()),
            }
        }
        let cookie_names = PinNames::new(cookie_names);
        let pin_headers = PinHeaders::new(pin_headers);
        Self {
            generation,
            groups,
            routes,
            route_table: RouteTable::new(&config.routes),
            cookie_names,
            pin_headers,
            unrouted: metrics.unrouted_handles(),
            tls: config.tls.as_ref().and_then(|t| {
                crate::tls::server_config(&t.certs.iter().map(|c| &c.material).collect::<Vec<_>>())
            }),
            loaded_at: SystemTime::now(),
            content_hash,
            config,
            declared,
        }
    }

    /// proxy.yaml as written: what a reload compares a new file with.
    pub fn declared(&self) -> &Config {
        self.declared.as_deref().unwrap_or(&self.config)
    }

    /// Every (route, group) pair a route splits or writes to, by name.
    fn route_groups(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes.iter().flat_map(|r| {
            r.metrics
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_some())
                .map(|(g, _)| (r.name.as_str(), self.groups[g].name.as_str()))
        })
    }

    pub fn group_by_name(&self, name: &[u8]) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.name.as_str().as_bytes() == name)
    }

    /// Sets the config gauges to what this snapshot says, and drops the series of
    /// groups and targets that `prev` had and this one has not, so neither a
    /// dashboard nor the registry keeps what the config no longer names.
    pub fn publish(&self, metrics: &Metrics, prev: Option<&Snapshot>) {
        if let Some(prev) = prev {
            for g in &prev.groups {
                let name = g.name.as_str();
                let Some(now) = self.groups.iter().find(|n| n.name == g.name) else {
                    metrics.forget_group(name);
                    for t in &g.targets {
                        metrics.forget_target(name, t.address.as_str());
                    }
                    continue;
                };
                for t in &g.targets {
                    if !now.targets.iter().any(|n| n.address == t.address) {
                        metrics.forget_target(name, t.address.as_str());
                    }
                }
            }
            for r in &prev.routes {
                if r.passes.is_some()
                    && !self
                        .routes
                        .iter()
                        .any(|n| n.name == r.name && n.passes.is_some())
                {
                    metrics.forget_route_passes(r.name.as_str());
                }
            }
            for (route, group) in prev.route_groups() {
                if !self.route_groups().any(|(r, g)| r == route && g == group) {
                    metrics.forget_route_group(route, group);
                }
            }
            if prev.content_hash != self.content_hash {
                let _ = metrics
                    .config_hash_info
                    .remove_label_values(&[&prev.content_hash]);
            }
        }
        metrics
            .config_hash_info
            .with_label_values(&[&self.content_hash])
            .set(1);
        metrics.config_generation.set(self.generation as i64);
        let loaded = self
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        metrics.config_loaded_timestamp.set(loaded);
        for r in &self.config.routes {
            let route = r.name.as_str();
            for sg in &r.split {
                let labels = [route, self.groups[sg.group].name.as_str()];
                metrics
                    .group_weight
                    .with_label_values(&labels)
                    .set(i64::from(sg.weight.get()));
                metrics
                    .group_share
                    .with_label_values(&labels)
                    .set(r.share_of(sg.group));
                metrics
                    .group_draining
                    .with_label_values(&labels)
                    .set(i64::from(sg.drain));
            }
        }
        for g in &self.groups {
            let name = g.name.as_str();
            for t in &g.targets {
                metrics
                    .target_weight
                    .with_label_values(&[name, t.address.as_str()])
                    .set(i64::from(t.weight));
            }
        }
    }
}

/// A set of names asked about on every request: a list while it is short,
/// a hash set once it is not (a thousand routes must not cost a thousand
/// comparisons per cookie or header).
#[derive(Debug)]
enum NameSet<T> {
    Few(Vec<T>),
    Many(std::collections::HashSet<T>),
}

impl<T: Ord + std::hash::Hash> NameSet<T> {
    /// Past this many names, a lookup is one hash instead of a scan.
    const FEW: usize = 8;

    fn new(mut names: Vec<T>) -> Self {
        names.sort();
        names.dedup();
        if names.len() <= Self::FEW {
            NameSet::Few(names)
        } else {
            NameSet::Many(names.into_iter().collect())
        }
    }

    fn contains<Q>(&self, name: &Q) -> bool
    where
        T: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        match self {
            NameSet::Few(list) => list.iter().any(|n| n.borrow() == name),
            NameSet::Many(set) => set.contains(name),
        }
    }
}

/// The routes' pin cookie names, asked about each cookie of a request.
#[derive(Debug)]
pub struct PinNames(NameSet<Box<[u8]>>);

impl PinNames {
    fn new(names: Vec<&str>) -> Self {
        Self(NameSet::new(
            names.into_iter().map(|n| n.as_bytes().into()).collect(),
        ))
    }

    /// Whether `name` is a route's pin cookie.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.0.contains(name)
    }
}

/// The routes' pin headers, taken off a request: each removed by name while
/// they are few, the request's own headers looked up in the set once they
/// are not.
#[derive(Debug)]
pub struct PinHeaders(NameSet<HeaderKey>);

/// A header name ordered by its text, so the set can sort and dedup it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HeaderKey(http::HeaderName);

impl PartialOrd for HeaderKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HeaderKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl PinHeaders {
    fn new(names: Vec<http::HeaderName>) -> Self {
        Self(NameSet::new(names.into_iter().map(HeaderKey).collect()))
    }

    /// Removes every pin header from `headers`.
    pub fn strip(&self, headers: &mut http::HeaderMap) {
        match &self.0 {
            NameSet::Few(list) => {
                for k in list {
                    headers.remove(&k.0);
                }
            }
            NameSet::Many(set) => {
                let found: Vec<http::HeaderName> = headers
                    .keys()
                    .filter(|k| set.contains(&HeaderKey((*k).clone())))
                    .cloned()
                    .collect();
                for name in found {
                    headers.remove(name);
                }
            }
        }
    }
}

/// One route of a snapshot: what its requests are decided and pinned with.
#[derive(Debug)]
pub struct Route {
    pub name: GroupName,
    /// What [`crate::assign::decide`] needs of this route.
    pub routing: Routing,
    /// Signs and verifies this route's pins (bound to its name under `routes:`).
    pub codec: CookieCodec,
    pub sticky: Sticky,
    /// Everything after `name=value` in Set-Cookie, minus `Max-Age` and `Secure`.
    pub cookie_attrs: String,
    /// `writes:`: the group that takes writes, and the read-your-writes
    /// window in whole seconds (rounded up; 0: none).
    pub writes: Option<(usize, u32)>,
    /// Per group index: its handles as this route uses it (`None` for a
    /// group the route neither splits to nor writes to).
    pub metrics: Vec<Option<RouteGroupMetrics>>,
    /// Tester passes, when the config names an override header.
    pub passes: Option<TesterPasses>,
}

/// A route's tester passes: their codec and their counters by result.
#[derive(Debug)]
pub struct TesterPasses {
    pub codec: PassCodec,
    pub counted: Counters<PassResult>,
}

impl Route {
    fn new(config: &Config, spec: &RouteSpec, metrics: &Metrics) -> Self {
        let serves = |g: usize| {
            spec.split.iter().any(|s| s.group == g) || spec.writes.is_some_and(|w| w.group == g)
        };
        let handles = config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                // A rollout's analysis weighs the clients of the two groups it judges.
                let judged = spec
                    .rollout
                    .as_ref()
                    .is_some_and(|p| p.stable == i || p.canary == i);
                serves(i).then(|| {
                    metrics.route_group_handles(spec.name.as_str(), g.name.as_str(), judged)
                })
            })
            .collect();
        Self {
            metrics: handles,
            passes: config.override_header.as_ref().map(|_| TesterPasses {
                codec: PassCodec::new(&spec.sticky.keys, spec.name.as_str()),
                counted: metrics.pass_handles(spec.name.as_str()),
            }),
            name: spec.name.clone(),
            routing: Routing::new(config, spec),
            codec: CookieCodec::for_route(&spec.sticky, spec.bound.then(|| spec.name.as_str())),
            sticky: spec.sticky.clone(),
            cookie_attrs: cookie_attrs(&spec.sticky),
            writes: spec.writes.map(|w| {
                let window = w.read_your_writes;
                let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
                (w.group, u32::try_from(secs).unwrap_or(u32::MAX))
            }),
        }
    }
}

fn cookie_attrs(s: &Sticky) -> String {
    let mut a = format!("; Path={}", s.path);
    if let Some(d) = &s.domain {
        a.push_str("; Domain=");
        a.push_str(d);
    }
    a.push_str("; HttpOnly; SameSite=");
    a.push_str(s.same_site.as_str());
    a
}

/// The process-wide state: the current snapshot and what outlives it.
#[derive(Debug)]
pub struct Shared {
    pub current: ArcSwap<Snapshot>,
    pub live: LiveState,
    pub metrics: Metrics,
    pub registry: prometheus::Registry,
    /// `/readyz`: true while listeners accept and no shutdown has begun.
    pub ready: AtomicBool,
    /// Written by the reloader, read by `/status`; never touched by requests.
    reload: Mutex<ReloadStatus>,
    pub retry_budget: crate::upstream::RetryBudget,
    /// The HTTPS listener's bound port (0 until bound), for redirects.
    pub https_port: std::sync::atomic::AtomicU16,
    /// Upgraded connections (WebSocket tunnels), for shutdown to wait on.
    pub tunnels: Arc<crate::tunnels::Tunnels>,
    /// Server-side session records; `None` in cookie mode. Built once at
    /// start-up: changing `sticky.store` needs a restart.
    pub store: Option<crate::store::SessionStore>,
    /// The access log's queue and writer (idle while the log is off).
    pub access_log: crate::access_log::AccessLog,
    /// The rollouts' weights, applied to every snapshot built.
    overrides: Mutex<Overrides>,
    /// Held while a snapshot is built and stored, so that a reload and a
    /// rollout's step never install over each other.
    building: Mutex<()>,
}

/// Why the shared state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot set up the session store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::AccessLogError),
}

/// The outcome of the latest reload attempts, as `/status` shows them.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// When the file was last read because something may have changed.
    pub last_attempt: Option<SystemTime>,
    /// `ok`, `invalid`, `restart_required`, or `unchanged` (read, and equal to
    /// the config in force).
    pub last_result: Option<&'static str>,
    /// What set the last attempt off: `file change`, `SIGHUP`, `periodic check`.
    pub last_trigger: Option<&'static str>,
    /// What the last applied reload changed, in words.
    pub last_changes: Vec<String>,
    /// The most recent refusal, kept after later successes so it can be read.
    pub last_error: Option<ReloadFailure>,
}

/// A refused reload: when, and every reason with its YAML path and line.
#[derive(Debug, Clone)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub errors: crate::config::ConfigErrors,
}

impl Shared {
    pub fn new(config: Config, content_hash: String) -> Result<Arc<Self>, SharedError> {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry)?;
        let store = crate::store::SessionStore::new(&config.sticky.store, &metrics)?;
        if store.is_none() {
            metrics.unregister_store(&registry);
        }
        let log = config.access_log.as_ref();
        let access_log = crate::access_log::AccessLog::start(
            log.map(|l| l.sink.clone()),
            log.map_or(crate::config::DEFAULT_QUEUE as usize, |l| l.queue),
            metrics.access_log_dropped.clone(),
        )?;
        let live = LiveState::default();
        let snap = Snapshot::build(config, &Overrides::new(), 1, content_hash, &live, &metrics);
        snap.publish(&metrics, None);
        metrics.config_last_reload_success.set(1);
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(snap),
            live,
            metrics,
            registry,
            ready: AtomicBool::new(false),
            reload: Mutex::new(ReloadStatus::default()),
            retry_budget: crate::upstream::RetryBudget::default(),
            tunnels: Arc::default(),
            https_port: std::sync::atomic::AtomicU16::new(0),
            store,
            access_log,
            overrides: Mutex::default(),
            building: Mutex::default(),
        }))
    }

    /// Runs `f` (which builds and stores a snapshot) with the rollouts'
    /// weights of the moment, and no other build at the same time.
    pub fn building<T>(&self, f: impl FnOnce(&Overrides) -> T) -> T {
        let _one_at_a_time = lock(&self.building);
        let overrides = lock(&self.overrides).clone();
        f(&overrides)
    }

    /// Puts `overrides` in force: a new snapshot of the declared config with
    /// them, when they differ from those in force. True when they did.
    pub fn set_overrides(&self, overrides: Overrides) -> bool {
        let _one_at_a_time = lock(&self.building);
        if *lock(&self.overrides) == overrides {
            return false;
        }
        let current = self.snapshot();
        let snap = Snapshot::build(
            current.declared().clone(),
            &overrides,
            current.generation + 1,
            current.content_hash.clone(),
            &self.live,
            &self.metrics,
        );
        snap.publish(&self.metrics, Some(&current));
        self.current.store(Arc::new(snap));
        *lock(&self.overrides) = overrides;
        true
    }

    /// What the last reload attempts did, for `/status`.
    pub fn reload_status(&self) -> ReloadStatus {
        lock(&self.reload).clone()
    }

    pub fn set_reload_status(&self, f: impl FnOnce(&mut ReloadStatus)) {
        f(&mut lock(&self.reload));
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_and_headers_are_found_whether_few_or_many() {
        for n in [1usize, 8, 9, 1000] {
            let names: Vec<String> = (0..n).map(|i| format!("switchyard_r{i}")).collect();
            let pins = PinNames::new(names.iter().map(String::as_str).collect());
            assert!(
                pins.contains(format!("switchyard_r{}", n - 1).as_bytes()),
                "{n}"
            );
            assert!(!pins.contains(b"switchyard_r"), "{n}");
            assert!(!pins.contains(b"other"), "{n}");

            let headers: Vec<http::HeaderName> = (0..n)
                .filter_map(|i| http::HeaderName::from_bytes(format!("x-pin-{i}").as_bytes()).ok())
                .collect();
            let strip = PinHeaders::new(headers);
            let mut h = http::HeaderMap::new();
            h.insert("x-pin-0", http::HeaderValue::from_static("a"));
            if let Ok(last) = http::HeaderName::from_bytes(format!("x-pin-{}", n - 1).as_bytes()) {
                h.insert(last, http::HeaderValue::from_static("b"));
            }
            h.insert("x-keep", http::HeaderValue::from_static("c"));
            strip.strip(&mut h);
            assert_eq!(h.len(), 1, "{n}: {h:?}");
            assert!(h.contains_key("x-keep"));
        }
    }
}
