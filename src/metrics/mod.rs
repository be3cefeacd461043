//! Prometheus metrics: the registry, every metric's name and labels, and the
//! label handles the request path uses.
//!
//! Metrics are made once into a caller's [`Registry`] (never the global one).
//! Per-group and per-target handles are resolved when a snapshot is built, so a
//! request only touches atomics, never a label lookup.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::assign::{Reason, Rejection};
use crate::config::CLIENT_SLOTS;
pub use labels::{
    ByLabel, CacheLookup, ClientTimeout, Counters, Handshake, Label, Listener, LogDrop, Probe,
    ProxyHeaderRefusal, Retry, StatusClass, StoreFailure, StoreOp,
};

mod labels;

/// Values of the `result` label of `switchyard_config_reloads_total`.
pub const RELOAD_RESULTS: [&str; 3] = ["ok", "invalid", "restart_required"];

/// Label value for requests that never reached a group.
pub const NO_GROUP: &str = "none";

/// Why an upstream exchange failed. Label values of `switchyard_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    ConnectTimeout,
    ResponseTimeout,
    Protocol,
    /// The TLS handshake failed: untrusted certificate, wrong name, no common protocol.
    Tls,
    /// The upstream went silent inside its response body.
    BodyTimeout,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 6] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::ResponseTimeout,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::BodyTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::ResponseTimeout => "response_timeout",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::BodyTimeout => "body_timeout",
        }
    }
}

/// Why a request was answered by the proxy itself, before any upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamErrorKind {
    BadRequest,
    NoTarget,
    /// Plain HTTP answered with a redirect to HTTPS (`tls.redirect_http`).
    Redirect,
    /// The client was too slow sending its request body.
    ClientTimeout,
    /// No route takes the request (404).
    NoRoute,
}

impl DownstreamErrorKind {
    pub const ALL: [DownstreamErrorKind; 5] = [
        DownstreamErrorKind::BadRequest,
        DownstreamErrorKind::NoTarget,
        DownstreamErrorKind::Redirect,
        DownstreamErrorKind::ClientTimeout,
        DownstreamErrorKind::NoRoute,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DownstreamErrorKind::BadRequest => "bad_request",
            DownstreamErrorKind::NoTarget => "no_target",
            DownstreamErrorKind::Redirect => "redirect",
            DownstreamErrorKind::ClientTimeout => "client_timeout",
            DownstreamErrorKind::NoRoute => "no_route",
        }
    }
}

/// Every metric switchyard exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// Answers by route, serving group and status class.
    pub route_requests: IntCounterVec,
    pub assignments: IntCounterVec,
    pub cookie_rejected: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub downstream_errors: IntCounterVec,
    pub open_connections: IntGauge,
    /// Of those, idle HTTP/1 connections parked without hyper's buffers.
    pub parked_connections: IntGauge,
    pub connections: IntCounter,
    /// Connections accepted and closed at once because `limits.max_connections` was reached.
    pub connections_refused: IntCounter,
    /// TLS handshakes by result: `ok`, `failed`, `timeout`.
    pub tls_handshakes: Counters<Handshake>,
    /// Connections closed before their first request for want of an
    /// acceptable PROXY protocol header, by listener and why.
    pub proxy_protocol_refused: ByLabel<Listener, Counters<ProxyHeaderRefusal>>,
    /// Access log lines not written, by why (`queue_full`, `write_error`).
    pub access_log_dropped: Counters<LogDrop>,
    pub upgraded: IntGaugeVec,
    pub upgrades: IntCounterVec,
    /// Client connections closed by a client-side timeout: `header`, `body`,
    /// `keepalive` (idle between requests), `write` (client not reading).
    pub client_timeouts: Counters<ClientTimeout>,
    pub group_weight: IntGaugeVec,
    pub group_share: prometheus::GaugeVec,
    pub group_draining: IntGaugeVec,
    pub target_weight: IntGaugeVec,
    pub target_outstanding: IntGaugeVec,
    pub target_healthy: IntGaugeVec,
    pub target_ejections: IntCounterVec,
    /// Tester passes in the override header, by route and result.
    pub tester_passes: IntCounterVec,
    /// Per (route, group) a rollout judges: requests by client slot.
    client_counts: Arc<std::sync::Mutex<ClientCountsByRouteGroup>>,
    pub health_checks: IntCounterVec,
    pub retries: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: IntGauge,
    pub config_loaded_timestamp: Gauge,
    pub config_hash_info: IntGaugeVec,
    pub build_info: IntGaugeVec,
    /// `cookie_rejected` handles, by why.
    pub rejected_by: Counters<Rejection>,
    /// `downstream_errors` handles, by kind.
    pub downstream_by: Counters<DownstreamErrorKind>,
    /// Session cache lookups: `hit`, `miss`.
    pub session_cache: Counters<CacheLookup>,
    /// Redis round trips, by op.
    pub store_duration: ByLabel<StoreOp, Histogram>,
    /// Redis failures, by op then kind.
    pub store_errors: ByLabel<StoreOp, Counters<StoreFailure>>,
    /// 1 while the session store answers (always 1 in memory mode).
    pub store_up: IntGauge,
    /// The store's families, kept whole so cookie mode can unregister them.
    store_families: (IntCounterVec, HistogramVec, IntCounterVec),
    /// Handles for requests answered before any target was chosen: only the
    /// `requests` series is registered (group and target `none`); the gauges
    /// are detached so no `target_healthy{group="none"}` reads as a dead group.
    unrouted: TargetMetrics,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    m: prometheus::Result<T>,
) -> prometheus::Result<T> {
    let m = m?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    /// Creates and registers every metric in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let c = |name: &str, help: &str, labels: &[&str]| {
            reg(r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let g = |name: &str, help: &str, labels: &[&str]| {
            reg(r, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let cookie_rejected = c(
            "switchyard_cookie_rejected_total",
            "Sticky cookies not accepted, by why; the client was assigned anew.",
            &["reason"],
        )?;
        let downstream_errors = c(
            "switchyard_downstream_errors_total",
            "Requests refused by the proxy before reaching an upstream, by kind.",
            &["kind"],
        )?;
        let handshakes = c(
            "switchyard_tls_handshakes_total",
            "TLS handshakes on the HTTPS listener, by result (ok, failed, timeout).",
            &["result"],
        )?;
        let proxy_refused = c(
            "switchyard_proxy_protocol_refused_total",
            "Connections closed unserved on a listener that takes the PROXY protocol, by listener (http, https) and reason (untrusted_peer, malformed, truncated, timeout).",
            &["listener", "reason"],
        )?;
        let log_dropped = c(
            "switchyard_access_log_dropped_total",
            "Access log lines lost, by reason (queue_full: the writer fell behind; write_error: the destination refused them).",
            &["reason"],
        )?;
        let client_timeouts = c(
            "switchyard_client_timeouts_total",
            "Client connections closed by a timeout, by phase (header, body, keepalive, write).",
            &["phase"],
        )?;
        let session_cache = c(
            "switchyard_session_cache_total",
            "Session record lookups in the in-process cache, by result (hit, miss).",
            &["result"],
        )?;
        let store_duration = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_store_duration_seconds",
                    "Redis round trips of the session store, by op (get, set).",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                ]),
                &["op"],
            ),
        )?;
        let store_errors = c(
            "switchyard_store_errors_total",
            "Session store operations that failed, by op (get, set) and kind (timeout, error).",
            &["op", "kind"],
        )?;
        let requests = c(
            "switchyard_requests_total",
            "Requests answered, by group, target and status class.",
            &["group", "target", "class"],
        )?;
        let unrouted = TargetMetrics {
            requests: Counters::of(&requests, &[NO_GROUP, NO_GROUP]),
            errors: Counters::detached()?,
            outstanding: IntGauge::new("detached", "-")?,
            healthy: IntGauge::new("detached", "-")?,
            ejections: Counters::detached()?,
            probes: Counters::detached()?,
        };
        let m = Self {
            client_counts: Default::default(),
            unrouted,
            session_cache: Counters::of(&session_cache, &[]),
            store_duration: ByLabel::from_fn(|op| store_duration.with_label_values(&[op])),
            store_errors: ByLabel::from_fn(|op| Counters::of(&store_errors, &[op])),
            store_up: reg(
                r,
                IntGauge::new(
                    "switchyard_store_up",
                    "1 while the session store answers; 0 while requests fall back to bucketing. Absent in cookie mode.",
                ),
            )?,
            store_families: (session_cache, store_duration, store_errors),
            tls_handshakes: Counters::of(&handshakes, &[]),
            proxy_protocol_refused: ByLabel::from_fn(|l| Counters::of(&proxy_refused, &[l])),
            access_log_dropped: Counters::of(&log_dropped, &[]),
            client_timeouts: Counters::of(&client_timeouts, &[]),
            connections_refused: reg(
                r,
                IntCounter::new(
                    "switchyard_connections_refused_total",
                    "Client connections accepted and closed at once because limits.max_connections was reached.",
                ),
            )?,
            upgraded: g(
                "switchyard_upgraded_connections",
                "Upgraded connections (WebSocket tunnels) open now, by group.",
                &["group"],
            )?,
            upgrades: c(
                "switchyard_upgrades_total",
                "Connections upgraded (WebSocket over HTTP/1.1 or HTTP/2), by group.",
                &["group"],
            )?,
            rejected_by: Counters::of(&cookie_rejected, &[]),
            downstream_by: Counters::of(&downstream_errors, &[]),
            cookie_rejected,
            downstream_errors,
            requests,
            duration: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_request_duration_seconds",
                        "Time from request received to response headers sent, by route and the group that served it.",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0,
                    ]),
                    &["route", "group"],
                ),
            )?,
            assignments: c(
                "switchyard_assignments_total",
                "Routing decisions, by route, group and reason (new, sticky, override, reassigned, retargeted, expired, invalid, failover, store_unavailable, write, read_your_writes).",
                &["route", "group", "reason"],
            )?,
            route_requests: c(
                "switchyard_route_requests_total",
                "Requests answered on a route, by the group that served them and status class (the proxy's own 5xx included).",
                &["route", "group", "class"],
            )?,
            upstream_errors: c(
                "switchyard_upstream_errors_total",
                "Failed upstream exchanges, by group, target and kind.",
                &["group", "target", "kind"],
            )?,
            open_connections: reg(
                r,
                IntGauge::new(
                    "switchyard_open_connections",
                    "Client connections open now.",
                ),
            )?,
            parked_connections: reg(
                r,
                IntGauge::new(
                    "switchyard_parked_connections",
                    "Idle HTTP/1 client connections parked: held as a bare socket until the client sends again.",
                ),
            )?,
            connections: reg(
                r,
                IntCounter::new(
                    "switchyard_connections_total",
                    "Client connections accepted.",
                ),
            )?,
            group_weight: g(
                "switchyard_group_weight",
                "Configured weight of each group in each route's split (the groups-only form: route `default`).",
                &["route", "group"],
            )?,
            group_share: reg(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "switchyard_group_share_ratio",
                        "Share of a route's new clients each group receives (0 to 1).",
                    ),
                    &["route", "group"],
                ),
            )?,
            group_draining: g(
                "switchyard_group_draining",
                "1 when the group drains in the route (its clients there move on their next request).",
                &["route", "group"],
            )?,
            target_weight: g(
                "switchyard_target_weight",
                "Configured weight of each target inside its group.",
                &["group", "target"],
            )?,
            target_outstanding: g(
                "switchyard_target_outstanding_requests",
                "Requests in flight to each target.",
                &["group", "target"],
            )?,
            target_healthy: g(
                "switchyard_target_healthy",
                "1 when the target takes requests: passing its health checks (if any) and not ejected.",
                &["group", "target"],
            )?,
            tester_passes: c(
                "switchyard_tester_passes_total",
                "Values of the override header, by route and result (accepted, or why the pass was ignored: too_long, malformed, unknown_key, bad_signature, expired, unknown_group; plain: a group name from override_plain_from).",
                &["route", "result"],
            )?,
            target_ejections: c(
                "switchyard_target_ejections_total",
                "Times a target was ejected, by cause (gateway: consecutive gateway failures; failure_ratio: the application's error ratio).",
                &["group", "target", "cause"],
            )?,
            health_checks: c(
                "switchyard_health_checks_total",
                "Active health check probes, by result (pass, fail).",
                &["group", "target", "result"],
            )?,
            retries: c(
                "switchyard_retries_total",
                "Requests retried on another target, by result (retried, budget_exhausted).",
                &["group", "result"],
            )?,
            config_generation: reg(
                r,
                IntGauge::new(
                    "switchyard_config_generation",
                    "Generation of the config in force (1 at start, +1 per applied reload).",
                ),
            )?,
            config_reloads: c(
                "switchyard_config_reloads_total",
                "Config reload attempts that found a change, by result (ok, invalid, restart_required).",
                &["result"],
            )?,
            config_last_reload_success: reg(
                r,
                IntGauge::new(
                    "switchyard_config_last_reload_success",
                    "1 when the last config load succeeded.",
                ),
            )?,
            config_loaded_timestamp: reg(
                r,
                Gauge::new(
                    "switchyard_config_loaded_timestamp_seconds",
                    "Unix time at which the config in force was loaded.",
                ),
            )?,
            config_hash_info: g(
                "switchyard_config_hash_info",
                "Always 1; the sha256 label is the SHA-256 of the config file in force.",
                &["sha256"],
            )?,
            build_info: g(
                "switchyard_build_info",
                "Always 1; the version label says which build runs.",
                &["version"],
            )?,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for result in RELOAD_RESULTS {
            m.config_reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Drops every series labelled with a group that the config no longer has.
    pub fn forget_group(&self, group: &str) {
        for r in Retry::ALL {
            let _ = self.retries.remove_label_values(&[group, r.label()]);
        }
        let _ = self.upgrades.remove_label_values(&[group]);
        // An open tunnel keeps its gauge handle; the series goes when the
        // config names the group again or the tunnels end, whichever is first.
        if self
            .upgraded
            .get_metric_with_label_values(&[group])
            .is_ok_and(|g| g.get() == 0)
        {
            let _ = self.upgraded.remove_label_values(&[group]);
        }
    }

    /// Drops every series of a target that left `group` (pod IPs churn: keeping
    /// them would grow the scrape without bound).
    pub fn forget_target(&self, group: &str, target: &str) {
        for v in [
            &self.target_weight,
            &self.target_outstanding,
            &self.target_healthy,
        ] {
            let _ = v.remove_label_values(&[group, target]);
        }
        for e in crate::health::Ejection::ALL {
            let _ = self
                .target_ejections
                .remove_label_values(&[group, target, e.label()]);
        }
        for r in ["pass", "fail"] {
            let _ = self.health_checks.remove_label_values(&[group, target, r]);
        }
        for c in StatusClass::ALL {
            let _ = self
                .requests
                .remove_label_values(&[group, target, c.label()]);
        }
        for k in UpstreamErrorKind::ALL {
            let _ = self
                .upstream_errors
                .remove_label_values(&[group, target, k.label()]);
        }
    }

    /// Handles for `group` as `route` uses it, resolved once per snapshot;
    /// `by_client`: with its [`ClientCounts`] (the same from snapshot to
    /// snapshot, as the Prometheus series are).
    pub fn route_group_handles(
        &self,
        route: &str,
        group: &str,
        by_client: bool,
    ) -> RouteGroupMetrics {
        let clients = by_client.then(|| {
            let mut all = self
                .client_counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(all.entry((route.to_owned(), group.to_owned())).or_default())
        });
        RouteGroupMetrics {
            assignments: Counters::of(&self.assignments, &[route, group]),
            duration: self.duration.with_label_values(&[route, group]),
            requests: Counters::of(&self.route_requests, &[route, group]),
            clients,
        }
    }

    /// Drops every series of `group` as `route` used it: the route, or the
    /// group in it, is gone from the config.
    pub fn forget_route_group(&self, route: &str, group: &str) {
        self.client_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(route.to_owned(), group.to_owned()));
        let _ = self.group_weight.remove_label_values(&[route, group]);
        let _ = self.group_share.remove_label_values(&[route, group]);
        let _ = self.group_draining.remove_label_values(&[route, group]);
        let _ = self.duration.remove_label_values(&[route, group]);
        for r in Reason::ALL {
            let _ = self
                .assignments
                .remove_label_values(&[route, group, r.label()]);
        }
        for c in StatusClass::ALL {
            let _ = self
                .route_requests
                .remove_label_values(&[route, group, c.label()]);
        }
    }

    /// The tester-pass counters of `route`, resolved once per snapshot.
    pub fn pass_handles(&self, route: &str) -> Counters<crate::assign::PassResult> {
        Counters::of(&self.tester_passes, &[route])
    }

    /// Drops the tester-pass series of a route that is gone.
    pub fn forget_route_passes(&self, route: &str) {
        for r in crate::assign::PassResult::ALL {
            let _ = self.tester_passes.remove_label_values(&[route, r.label()]);
        }
    }

    /// Handles for one group, resolved once per snapshot.
    pub fn group_handles(&self, group: &str) -> GroupMetrics {
        GroupMetrics {
            retries: Counters::of(&self.retries, &[group]),
            upgraded: self.upgraded.with_label_values(&[group]),
            upgrades: self.upgrades.with_label_values(&[group]),
        }
    }

    /// Handles for one target of a group, resolved once per snapshot.
    pub fn target_handles(&self, group: &str, target: &str) -> TargetMetrics {
        TargetMetrics {
            requests: Counters::of(&self.requests, &[group, target]),
            errors: Counters::of(&self.upstream_errors, &[group, target]),
            outstanding: self.target_outstanding.with_label_values(&[group, target]),
            healthy: self.target_healthy.with_label_values(&[group, target]),
            ejections: Counters::of(&self.target_ejections, &[group, target]),
            probes: Counters::of(&self.health_checks, &[group, target]),
        }
    }

    /// Requests the proxy answered without choosing a target.
    pub fn unrouted_handles(&self) -> TargetMetrics {
        self.unrouted.clone()
    }

    /// Removes the session store's families from `r`: in cookie mode there is
    /// no store, and a `switchyard_store_up 0` would page someone for nothing.
    pub fn unregister_store(&self, r: &Registry) {
        let (cache, duration, errors) = &self.store_families;
        let _ = r.unregister(Box::new(cache.clone()));
        let _ = r.unregister(Box::new(duration.clone()));
        let _ = r.unregister(Box::new(errors.clone()));
        let _ = r.unregister(Box::new(self.store_up.clone()));
    }
}

/// Cached handles of one group as one route uses it.
#[derive(Debug, Clone)]
pub struct RouteGroupMetrics {
    pub assignments: Counters<Reason>,
    pub duration: Histogram,
    pub requests: Counters<StatusClass>,
    /// Requests and 5xx by client slot, for a rollout's analysis: only on
    /// a group a route's plan judges (stable or canary).
    pub clients: Option<Arc<ClientCounts>>,
}

type ClientCountsByRouteGroup = std::collections::HashMap<(String, String), Arc<ClientCounts>>;

/// Requests and 5xx answers by client slot (`crate::config::CLIENT_SLOTS`:
/// an IPv4 address or an IPv6 /64 falls in one), running totals like the
/// Prometheus counters beside them, so a rollout's analysis can weigh
/// clients and not only requests.
#[derive(Debug, Default)]
pub struct ClientCounts {
    requests: [AtomicU64; CLIENT_SLOTS],
    errors: [AtomicU64; CLIENT_SLOTS],
}

impl ClientCounts {
    /// One answer to the client in `slot`; `error`: a 5xx.
    pub fn record(&self, slot: usize, error: bool) {
        let slot = slot % CLIENT_SLOTS;
        self.requests[slot].fetch_add(1, Relaxed);
        if error {
            self.errors[slot].fetch_add(1, Relaxed);
        }
    }

    /// `[requests, errors]` of every slot.
    pub fn read(&self) -> Vec<[u64; 2]> {
        self.requests
            .iter()
            .zip(&self.errors)
            .map(|(r, e)| [r.load(Relaxed), e.load(Relaxed)])
            .collect()
    }
}

/// Cached per-group handles.
#[derive(Debug, Clone)]
pub struct GroupMetrics {
    pub retries: Counters<Retry>,
    pub upgraded: IntGauge,
    pub upgrades: IntCounter,
}

/// Cached per-target handles.
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    pub requests: Counters<StatusClass>,
    pub errors: Counters<UpstreamErrorKind>,
    pub outstanding: IntGauge,
    /// Set at scrape time from the target's health.
    pub healthy: IntGauge,
    pub ejections: Counters<crate::health::Ejection>,
    pub probes: Counters<Probe>,
}

impl TargetMetrics {
    pub fn count_probe(&self, passed: bool) {
        self.probes[if passed { Probe::Pass } else { Probe::Fail }].inc();
    }

    pub fn count_status(&self, status: u16) {
        self.requests[StatusClass::of(status)].inc();
    }

    pub fn count_error(&self, kind: UpstreamErrorKind) {
        self.errors[kind].inc();
    }
}
