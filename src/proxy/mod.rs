//! The request path, in phases that each read as one step:
//!
//! ```text
//! admit    framing, limits, Host, upgrade, HTTPS redirect, route (this file)
//! decide   cookie / override / bucket key, session store, assign::decide
//! target   balance::route picks the target; counted by reason
//! pin      the Set-Cookie and the store record the decision leaves
//! rewrite  hop-by-hop, sticky cookie, X-Forwarded-*, version
//! forward  one exchange, retried on siblings, health fed  (forward.rs)
//! respond  the upstream's answer + Set-Cookie, or the proxy's own (reply.rs)
//! ```
//! Bodies stream both ways: the client's body is handed to the upstream request
//! as it arrives, and the upstream's body is relayed frame by frame. Only
//! `decide` (the store) and `forward` wait; every other phase is plain code,
//! so the request's future holds no more than those two awaits need.

mod activity;
mod body;
mod error;
mod forward;
pub mod headers;
mod ids;
mod logged;
mod reply;
mod session;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::assign::{Decision, PassResult, Pin, Reason, RequestView, read_cookie};
use crate::body::RequestBody;
use crate::config::{BucketBy, PinCarrier};
use crate::metrics::{ClientTimeout, DownstreamErrorKind, StatusClass};
use crate::route::RequestFacts;
use crate::state::{Group, Route, Shared, Snapshot};
use crate::store::Record;
pub use activity::{Activity, InFlightRequest};
pub use body::ProxyBody;
pub use error::{Fault, ProxyError};
pub use logged::log_refused_head;
pub use reply::error_response;
use session::Session;
use upgrade::Upgrade;

/// A TLS connection's protocol version and SNI, for the access log.
#[derive(Debug)]
pub struct TlsInfo {
    pub version: &'static str,
    pub sni: Option<Box<str>>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection) -> Self {
        Self {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLS",
            },
            sni: conn.server_name().map(Box::from),
        }
    }
}

/// What every request on one client connection shares.
#[derive(Debug)]
struct ConnContext {
    shared: Arc<Shared>,
    /// The client's address (after the PROXY protocol, if the listener takes it).
    peer: SocketAddr,
    tls: bool,
    tls_info: Option<Arc<TlsInfo>>,
    /// Requests in flight on this connection, for its idle timeout.
    activity: Arc<Activity>,
    /// The peer's address as an X-Forwarded-For value, formatted once.
    peer_value: HeaderValue,
}

/// The hyper `Service` for one client connection. Cloning is one atomic increment.
#[derive(Debug, Clone)]
pub struct Proxy(Arc<ConnContext>);

impl Proxy {
    /// A connection's service; `tls`: what its TLS session is, if it has one.
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
        activity: Arc<Activity>,
    ) -> Self {
        Self(Arc::new(ConnContext {
            shared,
            peer,
            tls: tls.is_some(),
            tls_info: tls.map(Arc::new),
            activity,
            peer_value: headers::peer_value(peer.ip()),
        }))
    }
}

impl Proxy {
    /// Serves one request from the proxy's own HTTP/1.1 server, which keeps
    /// the future where it is (no box).
    pub fn serve(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        ConnContext::handle(Arc::clone(&self.0), req)
    }
}

impl hyper::service::Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = StdPin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let ctx = Arc::clone(&self.0);
        let request = ctx.activity.enter();
        // The request's future is made inside the block: made outside and
        // captured, it would be kept twice (as captured and as awaited).
        Box::pin(async move {
            let mut resp = ConnContext::handle(ctx, req.map(RequestBody::Hyper)).await;
            // The connection counts as busy until the response body is done.
            resp.body_mut().hold(request);
            Ok(resp)
        })
    }
}

thread_local! {
    static SERVED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Requests this thread has begun to serve. The binary's idle-memory release
/// looks at it: it walks the allocator's pages only on a thread that served
/// nothing since its last look (a busy thread's allocator purges as it goes,
/// and the walk would stall its requests).
pub fn served_on_this_thread() -> u64 {
    SERVED.with(std::cell::Cell::get)
}

/// What `admit` found in a request it lets through.
struct Admitted {
    /// The authority the request is for (Host or the URI's).
    host: Authority,
    /// Index of the route it takes (`Snapshot::routes`).
    route: usize,
    /// Its method is not safe (anything but GET, HEAD, OPTIONS, TRACE).
    write: bool,
    /// The protocol the client asks to switch to, if any.
    upgrade: Option<Upgrade>,
}

/// Where a request is served, and the target its pin names.
struct Served {
    group: usize,
    target: usize,
    /// The client's slot (`crate::health::client_slot`), when a failure-ratio
    /// detector or a rollout's analysis weighs clients.
    client: Option<usize>,
    /// Why the request went to `group`.
    reason: Reason,
    /// The target of the decision's own group, named in the pin (a write
    /// may be served elsewhere); `None`: that group has none to name.
    pinned: Option<usize>,
}

/// What the decision leaves behind once its target is known.
struct PinOut {
    /// The pin for the client: `Set-Cookie`, or the route's pin header.
    handed: Option<(HeaderName, HeaderValue)>,
    /// Written to the session store beside the exchange.
    record: Option<Record>,
}

/// Normalizes the request's path once (`crate::route::path`), in its URI,
/// so the route is chosen on the path the upstream receives. Returns the
/// new path and query when it changed; a path it refuses is a 400.
fn normalize_target<B>(
    req: &mut Request<B>,
    settings: &crate::config::PathSettings,
) -> Result<Option<PathAndQuery>, ProxyError> {
    let uri = req.uri();
    let normal = crate::route::path::normalize(uri.path(), settings)
        .map_err(|e| ProxyError::BadRequest(e.reason()))?;
    let std::borrow::Cow::Owned(mut path) = normal else {
        return Ok(None);
    };
    if let Some(q) = uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let invalid = |_| ProxyError::BadRequest("invalid request target");
    let pq = PathAndQuery::try_from(path).map_err(invalid)?;
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query = Some(pq.clone());
    *req.uri_mut() = http::Uri::from_parts(parts)
        .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    Ok(Some(pq))
}

/// Read-your-writes: whether a request goes to its route's writes group,
/// and why. A write opens (or moves on) the client's window, carried in its
/// pin, during which its reads go there too. The override header wins.
fn writes_group(
    route: &Route,
    decision: &mut Decision,
    write: bool,
    now: u32,
) -> Option<(usize, Reason)> {
    let (group, window) = route.writes?;
    if decision.reason == Reason::Override {
        return None;
    }
    if write {
        if window > 0 {
            // Whole seconds, rounded up, plus the one the write is in.
            decision.writes_until = now.saturating_add(window).saturating_add(1);
            decision.issue_cookie = true;
        }
        Some((group, Reason::Write))
    } else if decision.writes_until > now {
        Some((group, Reason::ReadYourWrites))
    } else {
        None
    }
}

impl ConnContext {
    /// Serves one request: its ids settled, its phases run, its ids echoed
    /// and its log line begun (written when the response body is done). Not
    /// an `async fn`, which would keep `req` twice in its state (as given and
    /// as bound); the block captures it once.
    #[expect(clippy::manual_async_fn, reason = "see above: the future's size")]
    fn handle(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        async move {
            SERVED.with(|n| n.set(n.get().wrapping_add(1)));
            let start = Instant::now();
            let snap = self.shared.snapshot();
            let log = self.log_start(&snap, &req, start);
            let ids = self.settle_ids(&snap, req.headers_mut());
            let mut outcome = logged::Outcome {
                timed: log.is_some(),
                ..Default::default()
            };
            let mut response = self.phases(&snap, req, start, &mut outcome).await;
            if let (Some(settings), Some(id)) = (&snap.config.request_id, &ids.request_id)
                && settings.echo
            {
                response
                    .headers_mut()
                    .insert(settings.header.clone(), id.clone());
            }
            if let Some(mut log) = log {
                log.answered(response.status().as_u16(), ids, outcome);
                response.body_mut().log(log);
            }
            response
        }
    }

    /// The request id and trace context (`ids` module).
    fn settle_ids(&self, snap: &Snapshot, h: &mut HeaderMap) -> ids::Ids {
        let cfg = &snap.config;
        ids::settle(cfg.request_id.as_ref(), cfg.trace_context, h, || {
            let ip = self.peer.ip().to_canonical();
            cfg.trusted_proxies.iter().any(|n| n.contains(&ip))
        })
    }

    /// The phases, in the module's order; `outcome` gathers what they
    /// decide, for the log line.
    async fn phases(
        &self,
        snap: &Snapshot,
        mut req: Request<RequestBody>,
        start: Instant,
        outcome: &mut logged::Outcome,
    ) -> Response<ProxyBody> {
        let client_version = req.version();
        let admitted = match self.admit(snap, &mut req, outcome) {
            Ok(a) => a,
            Err(ProxyError::RedirectToHttps) => return self.redirect(snap, &req, outcome),
            Err(e) => return self.refuse(snap, e, outcome),
        };
        outcome.route = Some(admitted.route);
        let now = crate::clock::unix_now();
        let route = &snap.routes[admitted.route];
        let Some((mut decision, session)) = self.decide(snap, route, req.headers(), now).await
        else {
            return self.refuse(snap, ProxyError::NoTarget, outcome);
        };
        outcome.rejection = decision.rejected;
        let now_ms = crate::clock::now_ms();
        let mut served = match self.target(snap, route, &mut decision, now, now_ms, &admitted) {
            Ok(s) => s,
            Err(e) => return self.refuse(snap, e, outcome),
        };
        let judged = route.metrics[served.group]
            .as_ref()
            .is_some_and(|m| m.clients.is_some());
        if judged || snap.config.health.outlier.failure_ratio.is_some() {
            let client = self.client_address(snap, req.headers());
            served.client = Some(crate::health::client_slot(client));
        }
        (outcome.group, outcome.target) = (Some(served.group), Some(served.target));
        outcome.reason = Some(served.reason);
        let group = &snap.groups[served.group];
        let pin = self.pin(snap, route, &decision, session, served.pinned, now);
        let client_upgrade = self.rewrite(snap, &mut req, &admitted, group);
        let upgrading = client_upgrade.is_some();
        let sending = outcome.timed.then(Instant::now);
        let forwarded = self.forward(snap, &served, req, now_ms, upgrading, outcome);
        let forwarded = match (&self.shared.store, pin.record) {
            (Some(store), Some(record)) => {
                // The record is written while the request is on its way; a
                // failed write is counted by the store and costs the client
                // nothing (its session id buckets it to the same group).
                let id = decision.client_id;
                tokio::join!(forwarded, Box::pin(store.put(&id, record, now))).0
            }
            _ => forwarded.await,
        };
        outcome.upstream = sending.map(|t| t.elapsed());
        let upgrade = admitted.upgrade.as_ref().zip(client_upgrade);
        let response = match forwarded {
            Ok(resp) => self.respond(
                snap,
                served.group,
                resp,
                client_version,
                upgrade,
                pin.handed,
            ),
            Err(e) => {
                outcome.error = Some(e);
                error_response(e)
            }
        };
        if let Some(m) = &route.metrics[served.group] {
            m.duration.observe(start.elapsed().as_secs_f64());
            let class = StatusClass::of(response.status().as_u16());
            m.requests[class].inc();
            if let (Some(counts), Some(slot)) = (&m.clients, served.client) {
                counts.record(slot, class == StatusClass::ServerError);
            }
        }
        response
    }

    /// Admit: a request whose framing, limits and Host hold, whose upgrade
    /// (if any) can be carried and which a route takes; otherwise why not (a
    /// 4xx, or `RedirectToHttps` on the plain listener when `tls.redirect_http`).
    fn admit(
        &self,
        snap: &Snapshot,
        req: &mut Request<RequestBody>,
        outcome: &mut logged::Outcome,
    ) -> Result<Admitted, ProxyError> {
        headers::check_framing(req)?;
        headers::canonical_length(req.headers_mut())?;
        headers::check_limits(req, &snap.config.limits)?;
        let host = headers::request_host(req).map_err(ProxyError::BadRequest)?;
        if let Some(p) = normalize_target(req, &snap.config.paths)? {
            outcome.path = Some(p);
        }
        let upgrade = upgrade::detect(req)?;
        if !self.tls && snap.config.tls.as_ref().is_some_and(|t| t.redirect_http) {
            return Err(ProxyError::RedirectToHttps);
        }
        let facts = RequestFacts {
            host: host.as_str(),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        };
        let route = snap.route_table.find(&facts).ok_or(ProxyError::NoRoute)?;
        Ok(Admitted {
            host,
            route,
            write: !req.method().is_safe(),
            upgrade,
        })
    }

    /// Decide: which group (and pinned target, if any) the request belongs
    /// to, from its cookie, override header and bucket key, through the
    /// session store in store mode. `None`: no group can take it.
    async fn decide(
        &self,
        snap: &Snapshot,
        route: &Route,
        h: &HeaderMap,
        now: u32,
    ) -> Option<(Decision, Session)> {
        let sticky = &route.sticky;
        let ip_key = match self.peer.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        let mut view = RequestView {
            cookie: match &sticky.carrier {
                PinCarrier::Cookie => read_cookie(
                    &route.codec,
                    headers::sticky_cookies(h, sticky.cookie_name.as_str()),
                ),
                PinCarrier::Header(name) => read_cookie(
                    &route.codec,
                    h.get_all(name).iter().filter_map(|v| v.to_str().ok()),
                ),
            },
            override_group: self.override_group(snap, route, h, now),
            bucket_key: match &sticky.bucket_by {
                None => None,
                Some(BucketBy::ClientIp) => Some(&ip_key[..]),
                Some(BucketBy::Header(name)) => h.get(name).map(HeaderValue::as_bytes),
            },
        };
        let session = match &self.shared.store {
            Some(store) if view.override_group.is_none() => {
                // Boxed: the Redis round trip's future is large, and
                // inlined it would grow every request's future, store or not.
                Box::pin(session::resolve(store, &mut view, now)).await
            }
            _ => Session::CookieMode,
        };
        let mut decision = crate::assign::decide(&route.routing, &view, now, &mut rand::random)?;
        session.adjust(&mut decision);
        Some((decision, session))
    }

    /// The group the override header opens for this request: a verified
    /// tester pass's, or a plain group name from an `override_plain_from`
    /// peer. Anything else is ignored (the client is assigned as usual)
    /// and counted by why.
    fn override_group<'s>(
        &self,
        snap: &'s Snapshot,
        route: &Route,
        h: &HeaderMap,
        now: u32,
    ) -> Option<&'s [u8]> {
        let value = h.get(snap.config.override_header.as_ref()?)?.as_bytes();
        let passes = route.passes.as_ref()?;
        let plain_from = &snap.config.override_plain_from;
        if !plain_from.is_empty()
            && let Some(g) = route.routing.group_by_name(value)
        {
            let ip = self.peer.ip().to_canonical();
            if plain_from.iter().any(|n| n.contains(&ip)) {
                passes.counted[PassResult::Plain].inc();
                return Some(snap.groups[g].name.as_str().as_bytes());
            }
        }
        match passes.codec.check(value, &route.routing, now) {
            Ok((_, g)) => {
                passes.counted[PassResult::Accepted].inc();
                Some(snap.groups[g].name.as_str().as_bytes())
            }
            Err(why) => {
                passes.counted[why].inc();
                None
            }
        }
    }

    /// Target: the decision's target if it is usable, else one the balancer
    /// picks; or, for a write or a read in the client's read-your-writes
    /// window, a target of the route's writes group. Counted by reason.
    fn target(
        &self,
        snap: &Snapshot,
        route: &Route,
        decision: &mut Decision,
        now: u32,
        now_ms: u64,
        admitted: &Admitted,
    ) -> Result<Served, ProxyError> {
        if let Some(r) = decision.rejected {
            self.shared.metrics.rejected_by[r].inc();
        }
        let mut draw = |n: u64| rand::random_range(0..n);
        let pinned = crate::balance::route(snap, &route.routing, decision, now_ms, &mut draw);
        let served = match writes_group(route, decision, admitted.write, now) {
            Some((g, reason)) => {
                let slow_start = snap.config.health.slow_start;
                let t = crate::balance::pick_random(&snap.groups[g], now_ms, slow_start, &[]);
                (g, t.ok_or(ProxyError::NoTarget)?, reason)
            }
            None => (
                decision.group,
                pinned.ok_or(ProxyError::NoTarget)?,
                decision.reason,
            ),
        };
        let (group, target, reason) = served;
        if admitted.upgrade.is_some() && snap.groups[group].h2 {
            return Err(ProxyError::UpgradeToH2Upstream);
        }
        if let Some(m) = &route.metrics[group] {
            m.assignments[reason].inc();
        }
        Ok(Served {
            group,
            target,
            client: None,
            reason,
            pinned,
        })
    }

    /// Pin: what the client is told (`Set-Cookie`) and what the store keeps,
    /// now that the target is known. In cookie mode the cookie carries the
    /// assignment; in store mode it carries the session id alone.
    fn pin(
        &self,
        snap: &Snapshot,
        route: &Route,
        decision: &Decision,
        session: Session,
        pinned: Option<usize>,
        now: u32,
    ) -> PinOut {
        let group = &snap.groups[decision.group];
        let Some(target) = pinned.map(|t| &group.targets[t]) else {
            return PinOut {
                handed: None,
                record: None,
            };
        };
        let record = || Some(session::record(decision, group, target));
        let (handed, record) = match session {
            Session::CookieMode if decision.issue_cookie => (
                decision
                    .pin(group.name.as_str(), target.id)
                    .and_then(|p| self.hand_pin(route, &p, now)),
                None,
            ),
            Session::CookieMode | Session::Unavailable => (None, None),
            Session::New if decision.reason != Reason::Override => (
                // The cookie carries the session id alone: no group, no target.
                Pin::new(
                    decision.client_id,
                    "",
                    0,
                    decision.issued_at,
                    decision.expires_at,
                )
                .and_then(|p| self.hand_pin(route, &p, now)),
                record(),
            ),
            Session::New => (None, None),
            Session::Stored | Session::Missing { .. } => (
                None,
                if decision.issue_cookie {
                    record()
                } else {
                    None
                },
            ),
        };
        PinOut { handed, record }
    }

    /// Rewrite: the request as the upstream should see it (no hop-by-hop
    /// fields, no sticky cookie, `X-Forwarded-*`, a Host, the group's HTTP
    /// version). Returns the client's side of an upgrade it carries.
    fn rewrite(
        &self,
        snap: &Snapshot,
        req: &mut Request<RequestBody>,
        admitted: &Admitted,
        group: &Group,
    ) -> Option<OnUpgrade> {
        let peer_ip = self.peer.ip().to_canonical();
        let trusted = snap
            .config
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&peer_ip));
        let proto = if self.tls { "https" } else { "http" };
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h);
        headers::strip_sticky_cookie(h, |name| snap.cookie_names.contains(name));
        snap.pin_headers.strip(h);
        if let Some(name) = &snap.config.override_header {
            // A pass is a tester's credential: the application has no use for it.
            h.remove(name);
        }
        headers::set_forwarded(h, &self.peer_value, trusted, &admitted.host, proto);
        if !h.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(admitted.host.as_str())
        {
            h.insert(header::HOST, v);
        }
        *req.version_mut() = if group.h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        admitted.upgrade.as_ref().map(|u| {
            upgrade::prepare_request(u, req);
            hyper::upgrade::on(req)
        })
    }

    /// Respond: the upstream's answer as the client gets it, with the
    /// tunnel of an accepted upgrade started and the `Set-Cookie` added.
    fn respond(
        &self,
        snap: &Snapshot,
        g: usize,
        mut resp: Response<ProxyBody>,
        client_version: Version,
        upgrade: Option<(&Upgrade, OnUpgrade)>,
        handed: Option<(HeaderName, HeaderValue)>,
    ) -> Response<ProxyBody> {
        if !headers::deliverable(&resp, client_version) {
            // The upstream's transfer coding cannot be carried to this
            // client. Not counted against the target: its answer was
            // valid HTTP/1.1.
            tracing::warn!(group = %snap.groups[g].name, "upstream answered with a transfer coding other than chunked, which {client_version:?} cannot carry");
            return error_response(ProxyError::UntransferableCoding);
        }
        if let Some((u, on_client)) = upgrade
            && upgrade::prepare_response(u, &mut resp)
        {
            self.start_tunnel(snap, g, on_client, &mut resp);
        }
        if let Some((name, value)) = handed {
            resp.headers_mut().append(name, value);
        }
        resp
    }

    /// Spawns the tunnel of an accepted upgrade; it starts copying once the
    /// client has the 101 (or 200) and both sides have handed over their bytes.
    fn start_tunnel(
        &self,
        snap: &Snapshot,
        g: usize,
        client: OnUpgrade,
        resp: &mut Response<ProxyBody>,
    ) {
        let group = &snap.groups[g];
        group.metrics.upgrades.inc();
        let spec = upgrade::TunnelSpec {
            client,
            upstream: hyper::upgrade::on(resp),
            idle: snap.config.timeouts.tunnel_idle,
            gauge: group.metrics.upgraded.clone(),
            tunnels: Arc::clone(&self.shared.tunnels),
            group: group.name.to_string(),
            // The tunnel has its own idle timeout; the connection's must not
            // close it while it is open.
            request: self.activity.enter(),
        };
        tokio::spawn(upgrade::run(spec));
    }

    /// The proxy's own answer to a request it does not forward, counted.
    fn refuse(
        &self,
        snap: &Snapshot,
        e: ProxyError,
        outcome: &mut logged::Outcome,
    ) -> Response<ProxyBody> {
        outcome.error = Some(e);
        self.count_downstream(e);
        snap.unrouted.count_status(e.status().as_u16());
        error_response(e)
    }

    fn count_downstream(&self, e: ProxyError) {
        if let Fault::Downstream(kind) = e.fault() {
            self.shared.metrics.downstream_by[kind].inc();
            if kind == DownstreamErrorKind::ClientTimeout {
                self.shared.metrics.client_timeouts[ClientTimeout::Body].inc();
            }
        }
    }
}
