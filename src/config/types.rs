//! Validated config values. Each newtype has private fields and a fallible
//! constructor, so a value that exists has already been checked.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;
use ipnet::IpNet;

pub use super::edge::{
    AccessLogSettings, Backslash, DEFAULT_QUEUE, EscapedSlashes, Key16, LogField, LogFormat,
    LogSink, PathSettings, ProxyProtocol, RequestIdSettings, TraceContext,
};

/// Longest sticky TTL accepted: 7 days, the AWS ALB maximum.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest weight of a group or a target.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Shortest key accepted, in bytes, after base64 decoding.
pub const MIN_KEY_LEN: usize = 32;

/// The validated, typed config. Built only by [`super::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Plain HTTP listener; `None` when only HTTPS is served.
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsListener>,
    pub admin: SocketAddr,
    /// The defaults every route's sticky settings start from (and, in the
    /// groups-only form, the one route's own).
    pub sticky: Sticky,
    pub groups: Vec<GroupSpec>,
    /// Never empty: the groups-only form has one catch-all route.
    pub routes: Vec<RouteSpec>,
    pub form: ConfigForm,
    /// The header a tester pass travels in (`switchyard pass` makes one);
    /// `None`: no override.
    pub override_header: Option<HeaderName>,
    /// Peers whose plain group name in the override header is honoured (an
    /// internal QA network); empty: passes only.
    pub override_plain_from: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub timeouts: Timeouts,
    pub reload: ReloadSettings,
    pub health: HealthSettings,
    pub retries: Retries,
    pub limits: Limits,
    pub shutdown: ShutdownSettings,
    pub run: RunSettings,
    /// PROXY protocol on the plain listener.
    pub proxy_protocol: Option<ProxyProtocol>,
    pub access_log: Option<AccessLogSettings>,
    pub paths: PathSettings,
    /// `None`: request ids are off.
    pub request_id: Option<RequestIdSettings>,
    pub trace_context: TraceContext,
    /// Bearer token the admin API's commands (rollouts) require.
    pub admin_token: Option<Secret>,
    /// Where rollout state is kept without Redis (`None`: next to the config
    /// file, or in memory only for a config that came from no file).
    pub rollout_state_file: Option<std::path::PathBuf>,
}

/// How the process runs; read once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSettings {
    /// Runtime worker threads; `None`: one per available core.
    pub workers: Option<u32>,
}

/// What SIGTERM/SIGINT does: readiness off, `drain_delay` of still accepting
/// (load balancers see the readiness change), then no new connections and up
/// to `grace` for requests and tunnels in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSettings {
    pub grace: Duration,
    pub drain_delay: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
        }
    }
}

impl Config {
    /// Files besides proxy.yaml whose content the config depends on (cookie
    /// keys, certificates, CA bundles): a reload notices when one is rewritten.
    pub fn material_files(&self) -> Vec<String> {
        let mut files = self.sticky.key_files.clone();
        if let Some(tls) = &self.tls {
            for c in &tls.certs {
                files.push(c.cert_file.clone());
                files.push(c.key_file.clone());
            }
        }
        for g in &self.groups {
            if let Some(ca) = g.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
                files.push(ca.clone());
            }
            if let Some(c) = g.tls.as_ref().and_then(|t| t.client_cert.as_ref()) {
                files.push(c.cert_file.clone());
                files.push(c.key_file.clone());
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// The share (0 to 1) of new clients `group` receives: its weight over the
    /// weights of all groups that take new clients. Draining groups get none.
    pub fn share(&self, group: &GroupSpec) -> f64 {
        let live: u64 = self
            .groups
            .iter()
            .filter(|g| !g.drain)
            .map(|g| u64::from(g.weight.get()))
            .sum();
        if group.drain || live == 0 {
            0.0
        } else {
            f64::from(group.weight.get()) / live as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sticky {
    pub cookie_name: CookieName,
    pub ttl: Ttl,
    /// First signs, all verify.
    pub keys: Vec<CookieKey>,
    pub path: String,
    pub domain: Option<String>,
    pub same_site: SameSite,
    /// `None`: automatic (set on TLS listeners only).
    pub secure: Option<bool>,
    /// The cookie name carries the `__Host-` prefix: `Secure`, `Path=/` and no
    /// `Domain` always, so no subdomain can set or shadow it.
    pub host_prefix: bool,
    pub bucket_by: Option<BucketBy>,
    /// Where assignments live: in the cookie (default) or server-side.
    pub store: StoreSettings,
    /// True when the key was generated at start-up (demo only): cookies will not
    /// survive a restart and replicas will not agree.
    pub ephemeral_key: bool,
    /// The `file:` key sources read, so a reload notices when one is rewritten.
    pub key_files: Vec<String>,
    /// How the pin travels between proxy and client.
    pub carrier: PinCarrier,
    /// A cookie without `Max-Age`: it ends with the browser session (the
    /// signed expiry, `ttl`, still bounds it).
    pub session_cookie: bool,
}

/// How a pin travels (Gateway API GEP-1619's session persistence types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCarrier {
    /// `Set-Cookie` out, `Cookie` back (`sticky.type: cookie`, the default).
    Cookie,
    /// The same header both ways (`sticky.type: header`): for API and agent
    /// clients that keep no cookies.
    Header(HeaderName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the upstream's response head arrives.
    pub upstream_response: Duration,
    /// Until a client's request head is complete (slowloris), counted from
    /// the connection's start for its first request and from the first byte of
    /// the head for later ones.
    pub client_header: Duration,
    /// An open client connection with no request in flight and no byte of a
    /// new one is closed after this (HTTP/2: `GOAWAY`).
    pub keepalive: Duration,
    /// Longest a write to the client may stay blocked (a client that stopped
    /// reading); past it the connection is closed.
    pub client_write: Duration,
    /// Idle pooled upstream connections close after this.
    pub upstream_idle: Duration,
    /// Longest silence inside a client's request body: 408 beyond.
    pub client_body: Duration,
    /// Longest silence inside an upstream's response body: the response is cut.
    pub upstream_body: Duration,
    /// An upgraded connection (WebSocket) with no byte either way closes after this.
    pub tunnel_idle: Duration,
    /// A TLS handshake must finish within this.
    pub tls_handshake: Duration,
}

/// The HTTPS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// Chosen by SNI; the first also answers clients no certificate names.
    pub certs: Vec<ServerCert>,
    /// Answer the plain listener with a redirect to HTTPS.
    pub redirect_http: bool,
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// One certificate chain and key of the HTTPS listener, as loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCert {
    pub cert_file: String,
    pub key_file: String,
    pub material: crate::tls::CertMaterial,
}

/// How a group's upstreams are reached over TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// `None`: the system's trust store.
    pub ca_file: Option<String>,
    pub ca: Option<crate::tls::CaBundle>,
    /// SNI and the name the certificate must carry; default the target's host.
    pub server_name: Option<String>,
    /// The certificate the proxy presents to upstreams that ask (mTLS).
    pub client_cert: Option<ServerCert>,
}

/// The HTTP version spoken to a group's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2: by ALPN over TLS, by prior knowledge (h2c) in cleartext.
    Http2,
}

/// What happens around failing targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// When a group has no healthy target, serve its clients from another
    /// group (their cookie kept) instead of answering 503.
    pub failover: bool,
    /// A target that becomes healthy, or is added, ramps up to its full share
    /// over this long. Zero: off.
    pub slow_start: Duration,
    pub outlier: Outlier,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            failover: true,
            slow_start: Duration::ZERO,
            outlier: Outlier::default(),
        }
    }
}

/// Passive outlier ejection: a target that fails the proxy this many times
/// in a row (connect errors, resets, timeouts, broken answers, 502/503/504)
/// is taken out for a while; the application's own 5xx count only through
/// `failure_ratio` (`crate::health` says how).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Zero: gateway-failure ejection off.
    pub consecutive_failures: u32,
    /// First ejection; each further one doubles it, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share of a group's targets is ejected at once.
    pub max_ejected_percent: u32,
    /// Ejection on the application's error ratio; `None`: off (the default).
    pub failure_ratio: Option<FailureRatio>,
}

/// Client slots of the failure-ratio window: a client (an IPv4 address, an
/// IPv6 /64) falls in one, so one client moves one slot's ratio only.
pub const CLIENT_SLOTS: usize = 16;

/// The failure-ratio detector: a target whose clients see the
/// application's 5xx (other than 502/503/504) this often is ejected, when
/// the window holds enough requests from enough distinct clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRatio {
    /// The mean error ratio over the window's client slots, in percent, that ejects.
    pub percent: u32,
    /// Requests the window must hold before it can eject.
    pub min_requests: u32,
    /// Distinct erring clients (client slots, at most 16) it must hold.
    pub min_clients: u32,
    /// How long a window lasts.
    pub window: Duration,
}

impl Default for FailureRatio {
    fn default() -> Self {
        Self {
            percent: 50,
            min_requests: 100,
            min_clients: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
            failure_ratio: None,
        }
    }
}

/// Request size limits; a request over one is answered by the proxy and not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request target (path and query) length: 414 beyond.
    pub max_uri_bytes: u32,
    /// Sum of header names and values: 431 beyond.
    pub max_header_bytes: u32,
    /// Number of header fields: 431 beyond.
    pub max_headers: u32,
    /// Request body size, 0 for no limit: 413 beyond.
    pub max_body_bytes: u64,
    /// Open client connections, 0 for no limit: more are accepted and closed at once.
    pub max_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 0,
            max_connections: 10_000,
        }
    }
}

/// Retrying a failed upstream exchange on a sibling target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// Retries may add at most this share of recent requests...
    pub budget_percent: u32,
    /// ...plus this many per second, so a quiet proxy can still retry.
    pub min_per_second: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 2,
            budget_percent: 20,
            min_per_second: 5,
        }
    }
}

/// An active health check of every target of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and query) requested with GET.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Statuses that count as healthy, inclusive.
    pub expect: (u16, u16),
    /// Consecutive passes that make an unhealthy target healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy target unhealthy.
    pub unhealthy_threshold: u32,
}

/// How the running proxy looks for changes to its config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSettings {
    /// How often the file's content (and key files) are compared with what was
    /// last loaded: the safety net under the file watcher.
    pub check_interval: Duration,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(5),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            upstream_response: Duration::from_secs(60),
            client_header: Duration::from_secs(10),
            upstream_idle: Duration::from_secs(90),
            client_body: Duration::from_secs(30),
            upstream_body: Duration::from_secs(60),
            tunnel_idle: Duration::from_secs(300),
            tls_handshake: Duration::from_secs(10),
            keepalive: Duration::from_secs(75),
            client_write: Duration::from_secs(60),
        }
    }
}

/// How a client without a cookie is bucketed, when not at random.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketBy {
    Header(HeaderName),
    ClientIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// Which shape of proxy.yaml a config was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigForm {
    /// Top-level `groups:` with their weights: one catch-all route.
    GroupsOnly,
    /// `routes:` over `groups:` that hold no weights.
    Routes,
}

/// One route: which requests it takes, how it splits them between groups,
/// and how it pins them.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: GroupName,
    pub matches: RouteMatch,
    /// The groups it splits between, in the order written.
    pub split: Vec<RouteGroup>,
    pub sticky: Sticky,
    /// A pin's MAC covers the route's name, so no other route honours it.
    /// False only for the groups-only form's route, whose pins stay valid.
    pub bound: bool,
    /// Where writes go, if not by the split.
    pub writes: Option<Writes>,
    /// A canary plan over two groups of the split.
    pub rollout: Option<super::rollout::RolloutPlan>,
}

/// A route's read/write split: unsafe methods (anything but GET, HEAD,
/// OPTIONS, TRACE) go to `group`; for `read_your_writes` after a write, that
/// client's reads go there too (carried, signed, in its pin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writes {
    /// Index into `Config::groups`.
    pub group: usize,
    pub read_your_writes: Duration,
}

/// Longest read-your-writes window accepted.
pub const MAX_READ_YOUR_WRITES: Duration = Duration::from_secs(3600);

impl PartialEq for RouteSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.matches == other.matches
            && self.split == other.split
            && self.sticky == other.sticky
            && self.bound == other.bound
            && self.writes == other.writes
            && self.rollout == other.rollout
    }
}

impl RouteSpec {
    /// The share (0 to 1) of this route's new clients that group `g` (an
    /// index into `Config::groups`) receives; draining groups get none.
    pub fn share_of(&self, g: usize) -> f64 {
        let live: u64 = self
            .split
            .iter()
            .filter(|s| !s.drain)
            .map(|s| u64::from(s.weight.get()))
            .sum();
        match self.split.iter().find(|s| s.group == g) {
            Some(s) if !s.drain && live > 0 => f64::from(s.weight.get()) / live as f64,
            _ => 0.0,
        }
    }
}

/// A group as one route splits to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteGroup {
    /// Index into `Config::groups`.
    pub group: usize,
    pub weight: Weight,
    pub drain: bool,
}

/// The conditions of a route; all that are given must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    /// Headers that must have exactly this value.
    pub headers: Vec<(HeaderName, http::HeaderValue)>,
    /// Headers that must be present.
    pub headers_present: Vec<HeaderName>,
    /// Empty: any method.
    pub methods: Vec<http::Method>,
}

impl PartialEq for RouteMatch {
    fn eq(&self, other: &Self) -> bool {
        self.hosts == other.hosts
            && self.path == other.path
            && self.headers == other.headers
            && self.headers_present == other.headers_present
            && self.methods == other.methods
    }
}

impl fmt::Display for RouteMatch {
    /// `hosts a.example.com *.example.com, path_prefix /v1, ...`, or `everything`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if !self.hosts.is_empty() {
            let hosts: Vec<String> = self
                .hosts
                .iter()
                .map(|h| match h {
                    HostPattern::Exact(n) => n.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                })
                .collect();
            parts.push(format!("hosts {}", hosts.join(" ")));
        }
        match &self.path {
            PathPattern::Any => {}
            PathPattern::Exact(p) => parts.push(format!("path {p}")),
            PathPattern::Prefix(p) => parts.push(format!("path_prefix {p}")),
            PathPattern::Regex(r) => parts.push(format!("path_regex {}", r.as_str())),
        }
        for (n, v) in &self.headers {
            parts.push(format!(
                "header {n}: {}",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        for n in &self.headers_present {
            parts.push(format!("header {n} present"));
        }
        if !self.methods.is_empty() {
            let m: Vec<&str> = self.methods.iter().map(http::Method::as_str).collect();
            parts.push(format!("methods {}", m.join(" ")));
        }
        if parts.is_empty() {
            f.write_str("every request")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// A host a route takes, lowercase, without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name under the suffix (`.example.com`), one
    /// label or more; not `example.com` itself.
    Suffix(String),
}

/// The path condition of a route, on the request's path (no query).
#[derive(Debug, Clone, Default)]
pub enum PathPattern {
    #[default]
    Any,
    Exact(String),
    /// On segment boundaries: `/v1` takes `/v1`, `/v1/` and `/v1/x`, not
    /// `/v10`. Kept without a trailing slash (except `/` itself).
    Prefix(String),
    /// The whole path must match (anchored).
    Regex(regex::Regex),
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathPattern::Any, PathPattern::Any) => true,
            (PathPattern::Exact(a), PathPattern::Exact(b))
            | (PathPattern::Prefix(a), PathPattern::Prefix(b)) => a == b,
            (PathPattern::Regex(a), PathPattern::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub name: GroupName,
    /// The groups-only form's weight (0 with routes, whose splits hold them).
    pub weight: Weight,
    /// The groups-only form's drain (false with routes).
    pub drain: bool,
    pub targets: Vec<TargetSpec>,
    pub health_check: Option<HealthCheck>,
    /// `Some`: upstreams are reached over TLS.
    pub tls: Option<UpstreamTls>,
    pub protocol: UpstreamProtocol,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub address: Authority,
    pub weight: Weight,
}

// === impl Weight ===

/// A relative weight, `0..=MAX_WEIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(u32);

impl Weight {
    pub fn try_new(value: i64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(v) if v <= MAX_WEIGHT => Ok(Self(v)),
            _ if value < 0 => Err("expected an integer >= 0".into()),
            _ => Err(format!("expected an integer <= {MAX_WEIGHT}")),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

// === impl GroupName ===

/// A group name: 1 to 32 of `a-z 0-9 - _`, so it is safe in a cookie, a metric
/// label and a log line alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(String);

impl GroupName {
    pub fn try_new(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "group name `{name}` must be 1-32 characters of a-z, 0-9, '-' or '_'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl CookieName ===

/// A cookie name made of RFC 6265 token characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieName(String);

impl CookieName {
    pub fn try_new(name: &str) -> Result<Self, String> {
        const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={} \t";
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !SEPARATORS.contains(&b));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "cookie name `{name}` must be 1-64 token characters"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// === impl Ttl ===

/// A sticky TTL between one second and seven days, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(u32);

impl Ttl {
    pub fn try_new(d: Duration) -> Result<Self, String> {
        if d < Duration::from_secs(1) {
            return Err("must be at least 1s".into());
        }
        if d > MAX_TTL {
            return Err("must be at most 7d (the longest a sticky pin may last)".into());
        }
        if d.subsec_nanos() != 0 {
            return Err("must be a whole number of seconds".into());
        }
        // MAX_TTL fits in u32 seconds, checked just above.
        Ok(Self(d.as_secs() as u32))
    }

    pub fn secs(self) -> u32 {
        self.0
    }
}

// === impl CookieKey ===

/// A cookie signing key of at least [`MIN_KEY_LEN`] bytes. Its `Debug` never
/// shows the bytes, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieKey(Vec<u8>);

impl CookieKey {
    pub fn try_new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(format!(
                "key is {} bytes; at least {MIN_KEY_LEN} random bytes are required (`switchyard keygen` makes one)",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieKey(<{} bytes redacted>)", self.0.len())
    }
}

/// `sticky.store`: where a client's assignment is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// Prefix of every Redis key written.
    pub key_prefix: String,
    /// Longest wait for Redis before the request falls back to bucketing.
    pub timeout: Duration,
    /// Records kept in the in-process cache (memory store: the store's size).
    pub cache_size: u32,
    /// How long a cached record is trusted before Redis is asked again; bounds
    /// how long an admin change on another replica takes to be seen here.
    pub cache_ttl: Duration,
    /// Bearer token the admin `/sessions` API requires, when set.
    pub admin_token: Option<Secret>,
    /// PEM roots that `rediss://` trusts instead of the system store.
    pub ca_pem: Option<String>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Cookie,
            key_prefix: "switchyard:session:".to_owned(),
            timeout: Duration::from_millis(50),
            cache_size: 100_000,
            cache_ttl: Duration::from_secs(5),
            admin_token: None,
            ca_pem: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    /// The signed cookie carries the assignment (no server-side state).
    Cookie,
    /// Records in this process only: one replica, or tests.
    Memory,
    /// Records in Redis, shared by every replica. The URL may hold a password.
    Redis(Secret),
}

impl StoreKind {
    pub fn label(&self) -> &'static str {
        match self {
            StoreKind::Cookie => "cookie",
            StoreKind::Memory => "memory",
            StoreKind::Redis(_) => "redis",
        }
    }
}

/// A string that must not reach logs: its `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}
