//! The runtime snapshot of proxy.yaml and the live state that outlives it.
//!
//! A [`Snapshot`] is immutable: weight tables precomputed, cookie keys prepared,
//! metric handles resolved. Requests read the current one from one
//! `ArcSwap<Snapshot>` without a lock and keep that `Arc` to the end, so a
//! request finishes on the snapshot it started with. Per-target live state
//! (outstanding requests, later health) sits behind an `Arc` found by address in
//! [`LiveState`], so a snapshot built from a new config reuses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::assign::bucket::BucketTable;
use crate::assign::cookie::CookieCodec;
use crate::config::{Config, GroupName};
use crate::metrics::{GroupMetrics, Metrics, TargetMetrics};

/// Live state of one upstream target, shared by every snapshot that lists it.
#[derive(Debug, Default)]
pub struct TargetLive {
    outstanding: AtomicI64,
}

impl TargetLive {
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

impl LiveState {
    fn target(&self, address: &str) -> Arc<TargetLive> {
        let mut map = match self.targets.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
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
    pub config: Config,
    pub groups: Vec<Group>,
    pub table: BucketTable,
    pub codec: CookieCodec,
    /// Everything after `name=value` in Set-Cookie, minus `Max-Age` and `Secure`.
    pub cookie_attrs: String,
    pub unrouted: TargetMetrics,
    pub loaded_at: SystemTime,
    /// SHA-256 of the file's bytes, hex.
    pub content_hash: String,
}

/// FNV-1a: stable across builds and platforms, which the cookie needs.
pub fn target_id(address: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in address.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl Snapshot {
    /// Builds a snapshot. Updates no metric: that happens when it is installed.
    pub fn build(
        config: Config,
        generation: u64,
        content_hash: String,
        live: &LiveState,
        metrics: &Metrics,
    ) -> Self {
        let groups: Vec<Group> = config
            .groups
            .iter()
            .map(|g| {
                let name = g.name.as_str();
                let targets: Vec<Target> = g
                    .targets
                    .iter()
                    .map(|t| {
                        let addr = t.address.as_str();
                        Target {
                            address: t.address.clone(),
                            id: target_id(addr),
                            weight: t.weight.get(),
                            live: live.target(addr),
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
                    metrics: metrics.group_handles(name),
                }
            })
            .collect();
        let table = BucketTable::new(
            groups
                .iter()
                .enumerate()
                .filter(|(_, g)| !g.drain)
                .map(|(i, g)| (i, g.weight)),
        );
        let codec = CookieCodec::new(&config.sticky);
        let cookie_attrs = cookie_attrs(&config);
        Self {
            generation,
            groups,
            table,
            codec,
            cookie_attrs,
            unrouted: metrics.unrouted_handles(),
            loaded_at: SystemTime::now(),
            content_hash,
            config,
        }
    }

    pub fn group_by_name(&self, name: &[u8]) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.name.as_str().as_bytes() == name)
    }

    /// Sets the per-group gauges to what this snapshot says.
    pub fn publish(&self, metrics: &Metrics) {
        metrics.config_generation.set(self.generation as i64);
        let loaded = self
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        metrics.config_loaded_timestamp.set(loaded);
        for g in &self.groups {
            let name = g.name.as_str();
            metrics
                .group_weight
                .with_label_values(&[name])
                .set(i64::from(g.weight));
            metrics.group_share.with_label_values(&[name]).set(g.share);
            metrics
                .group_draining
                .with_label_values(&[name])
                .set(i64::from(g.drain));
            for t in &g.targets {
                metrics
                    .target_weight
                    .with_label_values(&[name, t.address.as_str()])
                    .set(i64::from(t.weight));
            }
        }
    }
}

fn cookie_attrs(config: &Config) -> String {
    let s = &config.sticky;
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
}

impl Shared {
    pub fn new(config: Config, content_hash: String) -> prometheus::Result<Arc<Self>> {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry)?;
        let live = LiveState::default();
        let snap = Snapshot::build(config, 1, content_hash, &live, &metrics);
        snap.publish(&metrics);
        metrics.config_last_reload_success.set(1);
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(snap),
            live,
            metrics,
            registry,
            ready: AtomicBool::new(false),
        }))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}
