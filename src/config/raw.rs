//! The serde view of proxy.yaml: field names, defaults and nothing else.
//!
//! Nothing here is trusted. Values that validation must check carry their YAML
//! location (`Spanned`) so that an error can name the line it came from; the
//! validated form lives in [`super::types`] and never sees serde.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Plain HTTP listener; optional when `tls` is set.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub tls: Option<Spanned<RawTls>>,
    #[serde(default)]
    pub admin: Option<Spanned<String>>,
    pub sticky: Spanned<RawSticky>,
    pub groups: Spanned<IndexMap<String, Spanned<RawGroup>>>,
    /// Absent: the groups-only form (one catch-all route over `groups`).
    #[serde(default)]
    pub routes: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    #[serde(default)]
    pub override_header: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    pub override_plain_from: Vec<Spanned<String>>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub reload: RawReload,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub retries: RawRetries,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub run: RawRun,
    /// PROXY protocol on the plain listener (`listen`).
    #[serde(default)]
    pub proxy_protocol: Option<Spanned<RawProxyProtocol>>,
    #[serde(default)]
    pub access_log: Option<Spanned<RawAccessLog>>,
    #[serde(default)]
    pub paths: Option<Spanned<RawPaths>>,
    #[serde(default)]
    pub request_id: Option<Spanned<RawRequestId>>,
    #[serde(default)]
    pub trace_context: Option<Spanned<RawTraceContext>>,
    /// The groups-only form's rollout (with `routes:`, each route has its own).
    #[serde(default)]
    pub rollout: Option<Spanned<RawRollout>>,
    /// Bearer token for the admin API's commands (`env:NAME` or `file:PATH`).
    #[serde(default)]
    pub admin_token: Option<Spanned<String>>,
    /// Where a proxy without Redis keeps its rollouts' state.
    #[serde(default)]
    pub rollout_state_file: Option<Spanned<String>>,
}

/// `rollout:`: a canary plan over one route's stable and canary groups.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub stable: Spanned<String>,
    pub canary: Spanned<String>,
    pub steps: Spanned<Vec<Spanned<RawStep>>>,
    #[serde(default)]
    pub analysis: Option<Spanned<RawAnalysis>>,
    /// What the old stable becomes once the canary is promoted: `drain` or `keep`.
    #[serde(default)]
    pub after_promote: Option<Spanned<String>>,
}

/// One step: the canary's weight (percent) and how long to hold it, or
/// `pause: true` to wait there for a person.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub weight: Spanned<f64>,
    #[serde(default)]
    pub hold: Option<Spanned<String>>,
    #[serde(default)]
    pub pause: Option<Spanned<bool>>,
}

/// The checks each analysis interval must pass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub min_requests: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_error_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_error_ratio_over_stable: Option<Spanned<f64>>,
    #[serde(default)]
    pub quantile: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_latency_over_stable: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_latency: Option<Spanned<String>>,
    #[serde(default)]
    pub latency_floor: Option<Spanned<String>>,
    #[serde(default)]
    pub failures_to_abort: Option<Spanned<i64>>,
}

/// `proxy_protocol:` of one listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    /// The peers (balancers) allowed to send the header: addresses or CIDRs.
    pub from: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    #[serde(default)]
    pub to: Option<Spanned<String>>,
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    #[serde(default)]
    pub fields: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub query: Option<Spanned<bool>>,
    #[serde(default)]
    pub sample: Option<Spanned<f64>>,
    #[serde(default)]
    pub errors_only: Option<Spanned<bool>>,
    #[serde(default)]
    pub queue: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestId {
    #[serde(default)]
    pub enabled: Option<Spanned<bool>>,
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    pub echo: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraceContext {
    #[serde(default)]
    pub start: Option<Spanned<bool>>,
    #[serde(default)]
    pub sampled: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    #[serde(default)]
    pub workers: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    #[serde(default)]
    pub grace: Option<Spanned<String>>,
    #[serde(default)]
    pub drain_delay: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Spanned<String>,
    pub certificates: Spanned<Vec<Spanned<RawCert>>>,
    #[serde(default)]
    pub redirect_http: Option<Spanned<bool>>,
    #[serde(default)]
    pub proxy_protocol: Option<Spanned<RawProxyProtocol>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub max_uri_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_header_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_headers: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_body_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default)]
    pub failover: Option<bool>,
    #[serde(default)]
    pub slow_start: Option<Spanned<String>>,
    #[serde(default)]
    pub outlier: RawOutlier,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    #[serde(default)]
    pub consecutive_failures: Option<Spanned<i64>>,
    #[serde(default)]
    pub base_ejection: Option<Spanned<String>>,
    #[serde(default)]
    pub max_ejection: Option<Spanned<String>>,
    #[serde(default)]
    pub max_ejected_percent: Option<Spanned<i64>>,
    #[serde(default)]
    pub failure_ratio: Option<Spanned<RawFailureRatio>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureRatio {
    #[serde(default)]
    pub percent: Option<Spanned<i64>>,
    #[serde(default)]
    pub min_requests: Option<Spanned<i64>>,
    #[serde(default)]
    pub min_clients: Option<Spanned<i64>>,
    #[serde(default)]
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    #[serde(default)]
    pub attempts: Option<Spanned<i64>>,
    #[serde(default)]
    pub budget_percent: Option<Spanned<i64>>,
    #[serde(default)]
    pub min_per_second: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub expect_status: Option<Spanned<String>>,
    #[serde(default)]
    pub healthy_threshold: Option<Spanned<i64>>,
    #[serde(default)]
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    #[serde(default)]
    pub check_interval: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    #[serde(default)]
    pub cookie: Option<Spanned<String>>,
    /// Required at the top level; a route's own may leave it out.
    #[serde(default)]
    pub ttl: Option<Spanned<String>>,
    /// Required at the top level; a route's own may leave it out.
    #[serde(default)]
    pub keys: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub domain: Option<Spanned<String>>,
    #[serde(default)]
    pub same_site: Option<Spanned<String>>,
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default)]
    pub host_prefix: Option<Spanned<bool>>,
    #[serde(default)]
    pub bucket_by: Option<Spanned<String>>,
    #[serde(default)]
    pub store: Option<Spanned<RawStore>>,
    /// `cookie` (default) or `header`.
    #[serde(default, rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// With `type: header`: the header's name.
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    /// `permanent` (default: `Max-Age` = the pin's lifetime) or `session`.
    #[serde(default)]
    pub lifetime: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub key_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub cache_size: Option<Spanned<i64>>,
    #[serde(default)]
    pub cache_ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub admin_token: Option<Spanned<String>>,
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// Required in the groups-only form; with `routes`, weights are a route's.
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub drain: Option<Spanned<bool>>,
    pub targets: Spanned<Vec<Spanned<RawTarget>>>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
    #[serde(default)]
    pub tls: Option<Spanned<bool>>,
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// mTLS towards the upstreams: the certificate chain the proxy presents.
    #[serde(default)]
    pub client_cert: Option<Spanned<String>>,
    #[serde(default)]
    pub client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub address: Spanned<String>,
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default)]
    pub connect: Option<Spanned<String>>,
    #[serde(default)]
    pub upstream_response: Option<Spanned<String>>,
    #[serde(default)]
    pub client_header: Option<Spanned<String>>,
    #[serde(default)]
    pub upstream_idle: Option<Spanned<String>>,
    #[serde(default)]
    pub client_body: Option<Spanned<String>>,
    #[serde(default)]
    pub upstream_body: Option<Spanned<String>>,
    #[serde(default)]
    pub tunnel_idle: Option<Spanned<String>>,
    #[serde(default)]
    pub tls_handshake: Option<Spanned<String>>,
    #[serde(default)]
    pub keepalive: Option<Spanned<String>>,
    #[serde(default)]
    pub client_write: Option<Spanned<String>>,
}

/// One route: which requests it takes (`match`), how it splits them between
/// groups, and how it pins them (`sticky`, over the top-level defaults).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    #[serde(default, rename = "match")]
    pub matches: Option<Spanned<RawMatch>>,
    pub split: Spanned<IndexMap<String, Spanned<i64>>>,
    /// Groups of the split whose clients move to the others (DESIGN §4).
    #[serde(default)]
    pub drain: Vec<Spanned<String>>,
    /// The route's own sticky settings (all but `store`); what is left out
    /// comes from the top-level `sticky`.
    #[serde(default)]
    pub sticky: Option<Spanned<RawSticky>>,
    /// Where writes (and, for a while after one, the writer's reads) go.
    #[serde(default)]
    pub writes: Option<Spanned<RawWrites>>,
    /// A canary plan over two groups of this route's split.
    #[serde(default)]
    pub rollout: Option<Spanned<RawRollout>>,
}

/// A route's read/write split.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWrites {
    pub group: Spanned<String>,
    /// How long after a write the client's reads go to `group` too.
    #[serde(default)]
    pub read_your_writes: Option<Spanned<String>>,
}

/// What a request must have to take a route; every condition given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub path_regex: Option<Spanned<String>>,
    /// Header name -> the exact value it must have.
    #[serde(default)]
    pub headers: IndexMap<String, Spanned<String>>,
    /// Headers that must be present, whatever their value.
    #[serde(default)]
    pub headers_present: Vec<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    #[serde(default)]
    pub normalize: Option<bool>,
    #[serde(default)]
    pub merge_slashes: Option<bool>,
    #[serde(default)]
    pub escaped_slashes: Option<Spanned<String>>,
    #[serde(default)]
    pub backslash: Option<Spanned<String>>,
}
