//! The request path: one snapshot load, the sticky decision, target choice,
//! header rewriting, forwarding, then `Set-Cookie` and metrics on the way back.
//!
//! ```text
//! request -> Host check -> decide(snapshot, view, now) -> balance::pick
//!         -> rewrite headers -> upstream (pooled HTTP/1.1) -> response + Set-Cookie
//! ```
//! Bodies stream both ways: the client's body is handed to the upstream request
//! as it arrives, and the upstream's body is relayed frame by frame.

mod activity;
mod body;
mod error;
pub mod headers;
mod session;
pub mod upgrade;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::capture_connection;

use crate::assign::{Pin, RequestView, decide, read_cookie};
use crate::body::{RequestBody, UpstreamBody, idle};
use crate::config::BucketBy;
use crate::metrics::{ClientTimeout, DownstreamErrorKind, Retry, TargetMetrics};
use crate::state::{Shared, Snapshot};
pub use activity::{Activity, InFlightRequest};
pub use body::ProxyBody;
pub use error::{Fault, ProxyError};
use session::Session;

/// What every request on one client connection shares.
#[derive(Debug)]
struct ConnContext {
    shared: Arc<Shared>,
    peer: SocketAddr,
    tls: bool,
    /// Requests in flight on this connection, for its idle timeout.
    activity: Arc<Activity>,
    /// The peer's address as an X-Forwarded-For value, formatted once.
    peer_value: HeaderValue,
}

/// The hyper `Service` for one client connection. Cloning is one atomic increment.
#[derive(Debug, Clone)]
pub struct Proxy(Arc<ConnContext>);

impl Proxy {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr, tls: bool, activity: Arc<Activity>) -> Self {
        Self(Arc::new(ConnContext {
            shared,
            peer,
            tls,
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
    /// Where a `Set-Cookie` value is written before it is copied out.
    static COOKIE_SCRATCH: std::cell::RefCell<String> =
        std::cell::RefCell::new(String::with_capacity(256));
}

/// Requests this thread has begun to serve. The binary's idle-memory release
/// looks at it: it walks the allocator's pages only on a thread that served
/// nothing since its last look (a busy thread's allocator purges as it goes,
/// and the walk would stall its requests).
pub fn served_on_this_thread() -> u64 {
    SERVED.with(std::cell::Cell::get)
}

impl ConnContext {
    /// Serves one request. Not an `async fn`, which would keep `req` twice in
    /// its state (as given and as bound); the block captures it once.
    #[expect(clippy::manual_async_fn, reason = "see above: the future's size")]
    fn handle(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        async move {
            SERVED.with(|n| n.set(n.get().wrapping_add(1)));
            let start = Instant::now();
            let snap = self.shared.snapshot();
            let client_version = req.version();
            let host = match headers::check_framing(&req)
                .and_then(|()| headers::canonical_length(req.headers_mut()))
                .and_then(|()| headers::check_limits(&req, &snap.config.limits))
                .and_then(|()| headers::request_host(&req).map_err(ProxyError::BadRequest))
            {
                Ok(h) => h,
                Err(e) => return self.refuse(&snap, e),
            };
            let upgrade = match upgrade::detect(&req) {
                Ok(u) => u,
                Err(e) => return self.refuse(&snap, e),
            };
            if !self.tls && snap.config.tls.as_ref().is_some_and(|t| t.redirect_http) {
                return self.redirect(&snap, &req, &host);
            }
            let sticky = &snap.config.sticky;
            let now = crate::clock::unix_now();
            let peer_ip = self.peer.ip().to_canonical();
            let ip_key = match peer_ip {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            let (decision, session) = {
                let h = req.headers();
                let mut view = RequestView {
                    cookie: read_cookie(
                        &snap.codec,
                        headers::sticky_cookies(h, sticky.cookie_name.as_str()),
                    ),
                    override_group: snap
                        .config
                        .override_header
                        .as_ref()
                        .and_then(|name| h.get(name))
                        .map(HeaderValue::as_bytes),
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
                let mut d = decide(&snap.routing, &view, now, &mut rand::random);
                if let Some(d) = d.as_mut() {
                    session.adjust(d);
                }
                (d, session)
            };
            let Some(mut decision) = decision else {
                return self.refuse(&snap, ProxyError::NoTarget);
            };
            let metrics = &self.shared.metrics;
            if let Some(r) = decision.rejected {
                metrics.rejected_by[r as usize].inc();
            }
            let now_ms = crate::clock::now_ms();
            let mut draw = |n: u64| rand::random_range(0..n);
            let Some(first) = crate::balance::route(&snap, &mut decision, now_ms, &mut draw) else {
                return self.refuse(&snap, ProxyError::NoTarget);
            };
            let group = &snap.groups[decision.group];
            if upgrade.is_some() && group.h2 {
                return self.refuse(&snap, ProxyError::UpgradeToH2Upstream);
            }
            group.metrics.assignments[decision.reason as usize].inc();

            let (set_cookie, record) = match session {
                Session::CookieMode if decision.issue_cookie => (
                    decision
                        .pin(group.name.as_str(), group.targets[first].id)
                        .and_then(|p| self.set_cookie(&snap, &p, now)),
                    None,
                ),
                Session::CookieMode | Session::Unavailable => (None, None),
                Session::New if decision.reason != crate::assign::Reason::Override => (
                    // The cookie carries the session id alone: no group, no target.
                    Pin::new(
                        decision.client_id,
                        "",
                        0,
                        decision.issued_at,
                        decision.expires_at,
                    )
                    .and_then(|p| self.set_cookie(&snap, &p, now)),
                    Some(session::record(&decision, group, &group.targets[first])),
                ),
                Session::New => (None, None),
                Session::Stored | Session::Missing { .. } => (
                    None,
                    decision
                        .issue_cookie
                        .then(|| session::record(&decision, group, &group.targets[first])),
                ),
            };

            let trusted = snap
                .config
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&peer_ip));
            let proto = if self.tls { "https" } else { "http" };
            {
                let h = req.headers_mut();
                headers::strip_hop_by_hop(h);
                headers::strip_sticky_cookie(h, sticky.cookie_name.as_str());
                headers::set_forwarded(h, &self.peer_value, trusted, &host, proto);
                if !h.contains_key(header::HOST)
                    && let Ok(v) = HeaderValue::from_str(host.as_str())
                {
                    h.insert(header::HOST, v);
                }
            }
            *req.version_mut() = if group.h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let client_upgrade = upgrade.as_ref().map(|u| {
                upgrade::prepare_request(u, &mut req);
                hyper::upgrade::on(&mut req)
            });
            let forwarded = self.forward(
                &snap,
                decision.group,
                first,
                req,
                now_ms,
                client_upgrade.is_some(),
            );
            let forwarded = match (&self.shared.store, record) {
                (Some(store), Some(record)) => {
                    // The record is written while the request is on its way; a
                    // failed write is counted by the store and costs the client
                    // nothing (its session id buckets it to the same group).
                    let id = decision.client_id;
                    tokio::join!(forwarded, Box::pin(store.put(&id, record, now))).0
                }
                _ => forwarded.await,
            };
            let response = match forwarded {
                Ok(resp) if !headers::deliverable(&resp, client_version) => {
                    // The upstream's transfer coding cannot be carried to this
                    // client. Not counted against the target: its answer was
                    // valid HTTP/1.1.
                    tracing::warn!(group = %group.name, "upstream answered with a transfer coding other than chunked, which {client_version:?} cannot carry");
                    error_response(ProxyError::UntransferableCoding)
                }
                Ok(mut resp) => {
                    if let (Some(u), Some(on_client)) = (&upgrade, client_upgrade)
                        && upgrade::prepare_response(u, &mut resp)
                    {
                        self.start_tunnel(&snap, decision.group, on_client, &mut resp);
                    }
                    if let Some(c) = set_cookie {
                        resp.headers_mut().append(header::SET_COOKIE, c);
                    }
                    resp
                }
                Err(e) => error_response(e),
            };
            group
                .metrics
                .duration
                .observe(start.elapsed().as_secs_f64());
            response
        }
    }

    /// Sends the request to `first`, and on a failure that left the request
    /// unsent (or, for idempotent methods, unanswered with nothing streamed)
    /// to other usable targets of the same group, within the attempt limit and
    /// the retry budget. Records each outcome in the target's health.
    ///
    /// The request is unpacked before the returned future exists, so that
    /// its state holds the parts once (see [`H1Pool::send`]).
    fn forward(
        &self,
        snap: &Snapshot,
        g: usize,
        first: usize,
        req: Request<RequestBody>,
        now_ms: u64,
        upgrade: bool,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send {
        let group = &snap.groups[g];
        let cfg = &snap.config;
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        // With no sibling to retry on, skip the head clone and the body slot.
        let max = if group.targets.len() < 2 {
            1
        } else {
            cfg.retries.attempts.max(1) as usize
        };
        let verdict = if http_body::Body::is_end_stream(&body) {
            idle::Verdict::none()
        } else {
            idle::Verdict::new()
        };
        let body = idle::ClientBody::new(
            body,
            cfg.timeouts.client_body,
            cfg.limits.max_body_bytes,
            verdict.clone(),
        );
        let (body, replay) = UpstreamBody::new(body, max > 1);
        let mut body = Some(body);
        let mut tried = [usize::MAX; 5];
        let mut t = first;
        let budget = &self.shared.retry_budget;
        budget.note_request(now_ms);
        async move {
            for attempt in 1..=max {
                tried[attempt - 1] = t;
                let target = &group.targets[t];
                let mut uri = http::uri::Parts::default();
                // Upgrades need hyper-util's client, which keeps the connection
                // for the tunnel; everything else goes native when the group can.
                let native = target.native.as_ref().filter(|_| !upgrade);
                if native.is_none() {
                    // The hyper-util client connects to the URI's authority and
                    // sends the origin form; a native connection sends the URI as
                    // given, so it gets the origin form alone.
                    uri.scheme = Some(group.scheme.clone());
                    uri.authority = Some(target.address.clone());
                }
                uri.path_and_query = Some(path.clone());
                let last = attempt == max;
                let mut head = if last {
                    std::mem::replace(&mut parts, Request::new(()).into_parts().0)
                } else {
                    parts.clone()
                };
                head.uri = Uri::from_parts(uri)
                    .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
                let req =
                    Request::from_parts(head, body.take().unwrap_or_else(UpstreamBody::new_empty));
                let in_flight = target.live.begin(&target.metrics.outstanding);
                let timeout = cfg.timeouts.upstream_response;
                let sent = match native {
                    // The pool keeps a timer per connection for this deadline.
                    Some(pool) => match pool.send(req, timeout).await {
                        Ok(resp) => Ok(resp.map(body::UpstreamIncoming::Native)),
                        Err(e) => {
                            tracing::debug!(target = %target.address, error = %e, "upstream request failed");
                            Err(ProxyError::classify_native(&e))
                        }
                    },
                    // Boxed: hyper-util's request future is large, and inlined
                    // it would grow (and be copied with) every request's
                    // future, native or not.
                    None => Box::pin(exchange(group, target, req, timeout)).await,
                };
                let now = crate::clock::now_ms();
                let (err, closed_early) = match sent {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        if status >= 500 {
                            self.failed(snap, g, t, now);
                        } else {
                            target.live.health.record_success(now, &cfg.health.outlier);
                        }
                        target.metrics.count_status(status);
                        let (mut head, body) = resp.into_parts();
                        // A 101's `Upgrade` names the protocol the tunnel carries.
                        let upgrade = (status == 101)
                            .then(|| head.headers.remove(header::UPGRADE))
                            .flatten();
                        headers::strip_hop_by_hop_response(&mut head.headers);
                        if let Some(p) = upgrade {
                            head.headers.insert(header::UPGRADE, p);
                        }
                        let body_timeouts = target.metrics.errors
                            [crate::metrics::UpstreamErrorKind::BodyTimeout as usize]
                            .clone();
                        return Ok(Response::from_parts(
                            head,
                            ProxyBody::upstream(
                                body,
                                in_flight,
                                cfg.timeouts.upstream_body,
                                body_timeouts,
                            ),
                        ));
                    }
                    Err(e) => e,
                };
                drop(in_flight);
                let fault = client_fault(&verdict, err)
                    .or_else(|| matches!(err.fault(), Fault::Downstream(_)).then_some(err));
                if let Some(e) = fault {
                    // The client, not the upstream, ended the exchange: the
                    // client is told, and the target is not blamed (DESIGN §10).
                    target.metrics.count_status(e.status().as_u16());
                    self.count_downstream(e);
                    return Err(e);
                }
                if let Fault::Upstream(kind) = err.fault() {
                    target.metrics.count_error(kind);
                }
                if let Some(unlogged) = target.live.failure_log_turn(now) {
                    tracing::warn!(
                        group = %group.name, target = %target.address, error = %err,
                        "upstream request failed ({unlogged} more failures of this target unlogged since the last warning; at most one a target every 10 s)"
                    );
                }
                self.failed(snap, g, t, now);
                let unsent = matches!(
                    err,
                    ProxyError::UpstreamConnect | ProxyError::ConnectTimeout
                );
                let retry = if last || !(unsent || (closed_early && idempotent)) {
                    None
                } else {
                    let next = crate::balance::pick_random(
                        group,
                        now,
                        cfg.health.slow_start,
                        &tried[..attempt],
                    );
                    match (next, replay.again()) {
                        (Some(next), Some(again)) if budget.allow(&cfg.retries) => {
                            Some((next, again))
                        }
                        (Some(_), Some(_)) => {
                            group.metrics.retries[Retry::BudgetExhausted].inc();
                            None
                        }
                        _ => None,
                    }
                };
                let Some((next, again)) = retry else {
                    target.metrics.count_status(err.status().as_u16());
                    return Err(err);
                };
                group.metrics.retries[Retry::Retried].inc();
                tracing::debug!(from = %target.address, to = %group.targets[next].address, "retrying on a sibling");
                body = Some(again);
                t = next;
            }
            Err(ProxyError::NoTarget)
        }
    }

    /// Spawns the tunnel of an accepted upgrade; it starts copying once the
    /// client has the 101 (or 200) and both sides have handed over their bytes.
    fn start_tunnel(
        &self,
        snap: &Snapshot,
        g: usize,
        client: hyper::upgrade::OnUpgrade,
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

    /// Answers the plain listener with a permanent redirect to the same URL on
    /// the HTTPS listener (`tls.redirect_http`). 308 keeps method and body.
    fn redirect<B>(
        &self,
        snap: &Snapshot,
        req: &Request<B>,
        host: &http::uri::Authority,
    ) -> Response<ProxyBody> {
        let port = match self
            .shared
            .https_port
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => 443,
            p => p,
        };
        let mut location = String::with_capacity(128);
        location.push_str("https://");
        location.push_str(host.host());
        if port != 443 {
            let _ = write!(location, ":{port}");
        }
        location.push_str(req.uri().path_and_query().map_or("/", PathAndQuery::as_str));
        let mut resp = self.refuse(snap, ProxyError::RedirectToHttps);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }

    /// Counts a failed exchange against a target's passive health.
    fn failed(&self, snap: &Snapshot, g: usize, t: usize, now: u64) {
        let group = &snap.groups[g];
        let target = &group.targets[t];
        if let Some(length) = target.live.health.record_failure(
            now,
            group.targets.iter().map(|t| &t.live.health),
            &snap.config.health.outlier,
        ) {
            target.metrics.ejections.inc();
            tracing::warn!(
                group = %group.name, target = %target.address,
                "target ejected for {}: {} failed requests in a row",
                crate::config::duration::format_duration(length),
                snap.config.health.outlier.consecutive_failures
            );
        }
    }

    fn set_cookie(&self, snap: &Snapshot, pin: &Pin, now: u32) -> Option<HeaderValue> {
        let sticky = &snap.config.sticky;
        COOKIE_SCRATCH.with_borrow_mut(|v| {
            v.clear();
            v.push_str(sticky.cookie_name.as_str());
            v.push('=');
            snap.codec.encode_into(pin, v);
            let _ = write!(v, "; Max-Age={}", pin.expires_at.saturating_sub(now));
            v.push_str(&snap.cookie_attrs);
            if sticky.secure.unwrap_or(self.tls) {
                v.push_str("; Secure");
            }
            // One allocation of the exact size: a `Bytes` made from a string
            // with room to spare would allocate a second time for its header.
            HeaderValue::from_str(v).ok()
        })
    }

    fn refuse(&self, snap: &Snapshot, e: ProxyError) -> Response<ProxyBody> {
        self.count_downstream(e);
        count(&snap.unrouted, e.status());
        error_response(e)
    }

    fn count_downstream(&self, e: ProxyError) {
        if let Fault::Downstream(kind) = e.fault() {
            self.shared.metrics.downstream_by[kind as usize].inc();
            if kind == DownstreamErrorKind::ClientTimeout {
                self.shared.metrics.client_timeouts[ClientTimeout::Body].inc();
            }
        }
    }
}

/// The client's share in a failed exchange: its body was cut (stalled, too
/// large, malformed, or its connection went), or the upstream timed out
/// while it was still waiting for the client's body. `None`: the failure is
/// the upstream's. A body the upstream simply did not read is never the
/// client's fault.
fn client_fault(verdict: &idle::Verdict, err: ProxyError) -> Option<ProxyError> {
    match verdict.get() {
        idle::BodyVerdict::TimedOut => Some(ProxyError::ClientBodyTimeout),
        idle::BodyVerdict::TooLarge => Some(ProxyError::BodyTooLarge),
        idle::BodyVerdict::Broken => Some(error::BODY_BROKEN),
        idle::BodyVerdict::Fine
            if err == ProxyError::ResponseTimeout && verdict.waiting_on_client() =>
        {
            Some(ProxyError::ClientBodyTimeout)
        }
        idle::BodyVerdict::Fine => None,
    }
}

fn count(m: &TargetMetrics, status: StatusCode) {
    m.count_status(status.as_u16());
}

/// A short plain-text answer written by the proxy itself.
pub fn error_response(e: ProxyError) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(format!("{e}\n")));
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(
        e,
        ProxyError::BadRequest(_)
            | ProxyError::UnsupportedTransferCoding
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge
            | ProxyError::ClientBodyTimeout
    ) {
        // The framing of a bad request cannot be trusted for the next one.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if e == ProxyError::NoTarget {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// One exchange with one target on its hyper-util client (TLS, HTTP/2,
/// upgrades), its response head due within `timeout`. An error comes
/// classified, with whether the upstream closed before answering.
async fn exchange(
    group: &crate::state::Group,
    target: &crate::state::Target,
    mut req: Request<UpstreamBody>,
    timeout: Duration,
) -> Result<Response<body::UpstreamIncoming>, (ProxyError, bool)> {
    // HTTP/1.1 connections whose answer could be framed two ways are not
    // reused (as on the native path); an HTTP/2 connection frames by itself.
    let capture = (!group.h2).then(|| capture_connection(&mut req));
    let Ok(sent) = tokio::time::timeout(timeout, target.client.request(req)).await else {
        return Err((ProxyError::ResponseTimeout, false));
    };
    match sent {
        Ok(mut resp) => {
            if let Some(c) = capture.filter(|_| crate::h1::head::ambiguous_length(resp.headers()))
                && let Some(conn) = c.connection_metadata().as_ref()
            {
                conn.poison();
            }
            // As the native parser leaves it: one plain length (hyper's
            // client takes lists and repeats of equal lengths as they are).
            crate::h1::head::canonical_content_length(resp.headers_mut());
            Ok(resp.map(body::UpstreamIncoming::Hyper))
        }
        Err(e) => {
            let (kind, early) = ProxyError::classify(&e);
            if kind == ProxyError::UpstreamTls {
                // An operator's mistake (CA, name) more than a blip: say why.
                tracing::warn!(group = %group.name, target = %target.address, cause = %ProxyError::root_cause(&e), "upstream TLS handshake failed");
            } else {
                tracing::debug!(target = %target.address, error = %e, "upstream request failed");
            }
            Err((kind, early))
        }
    }
}
