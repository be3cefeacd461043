//! Forward: one exchange with a target, and on a failure that left the
//! request unsent (or, for idempotent methods, unanswered with nothing
//! streamed) the same request on other usable targets of the group, within
//! the attempt limit and the retry budget. Each outcome feeds the target's
//! health; a failure that is the client's never does (DESIGN §10).
//!
//! ```text
//! attempt -> send (native pool | hyper-util) -> accept the answer
//!                                            -> blame: client's fault? end, unblamed
//!                                                      upstream's? count, health
//!                                            -> sibling to retry on, or the error
//! ```

use std::future::Future;
use std::time::Duration;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, header};
use hyper_util::client::legacy::connect::capture_connection;

use super::body::UpstreamIncoming;
use super::logged::Outcome;
use super::{ConnContext, Fault, ProxyBody, ProxyError, Served, error};
use crate::body::{Replay, RequestBody, UpstreamBody, idle};
use crate::config::Config;
use crate::health::Ejection;
use crate::metrics::{Retry, UpstreamErrorKind};
use crate::state::{Group, InFlight, Snapshot, Target};

/// Retries never go further than this many attempts (`retries.attempts`
/// is validated against it).
const MAX_ATTEMPTS: usize = 5;

/// One request on its way to a group: what every attempt needs.
struct Exchange {
    /// The request's head, cloned for each attempt but the last.
    parts: Parts,
    path: PathAndQuery,
    idempotent: bool,
    max_attempts: usize,
    /// Whether the client's body failed, and how.
    verdict: idle::Verdict,
    /// The body for the next attempt.
    body: Option<UpstreamBody>,
    /// Gives the body again for a retry.
    replay: Replay,
    /// Targets tried so far, in order.
    tried: [usize; MAX_ATTEMPTS],
}

impl Exchange {
    fn new(cfg: &Config, group: &Group, req: Request<RequestBody>) -> Self {
        let (parts, body) = req.into_parts();
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
        let max_attempts = if group.targets.len() < 2 {
            1
        } else {
            (cfg.retries.attempts.max(1) as usize).min(MAX_ATTEMPTS)
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
        let (body, replay) = UpstreamBody::new(body, max_attempts > 1);
        Self {
            parts,
            path,
            idempotent,
            max_attempts,
            verdict,
            body: Some(body),
            replay,
            tried: [usize::MAX; MAX_ATTEMPTS],
        }
    }

    /// The request of attempt `attempt` (from 1) to `target`. The hyper-util
    /// client connects to the URI's authority and sends the origin form; a
    /// native connection sends the URI as given, so it gets the origin form alone.
    fn request(
        &mut self,
        attempt: usize,
        group: &Group,
        target: &Target,
        native: bool,
    ) -> Result<Request<UpstreamBody>, ProxyError> {
        let mut uri = http::uri::Parts::default();
        if !native {
            uri.scheme = Some(group.scheme.clone());
            uri.authority = Some(target.address.clone());
        }
        uri.path_and_query = Some(self.path.clone());
        let mut head = if attempt == self.max_attempts {
            std::mem::replace(&mut self.parts, Request::new(()).into_parts().0)
        } else {
            self.parts.clone()
        };
        head.uri =
            Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        let body = self.body.take().unwrap_or_else(UpstreamBody::new_empty);
        Ok(Request::from_parts(head, body))
    }

    /// Whether a failed attempt may be made again elsewhere: not the last,
    /// and the request either never left or (idempotent) was cut off
    /// before any of an answer.
    fn may_retry(&self, attempt: usize, err: ProxyError, closed_early: bool) -> bool {
        let unsent = matches!(
            err,
            ProxyError::UpstreamConnect | ProxyError::ConnectTimeout
        );
        attempt < self.max_attempts && (unsent || (closed_early && self.idempotent))
    }
}

impl ConnContext {
    /// Sends the request to the target `served` names, retrying on siblings
    /// as the module says; `outcome` learns the target that answered, the
    /// retries, and the client body's byte count.
    ///
    /// The request is unpacked before the returned future exists, so that
    /// its state holds the parts once (see [`crate::upstream::H1Pool::send`]).
    pub(super) fn forward(
        &self,
        snap: &Snapshot,
        served: &Served,
        req: Request<RequestBody>,
        now_ms: u64,
        upgrade: bool,
        outcome: &mut Outcome,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send {
        let (g, first) = (served.group, served.target);
        let group = &snap.groups[g];
        let mut ex = Exchange::new(&snap.config, group, req);
        outcome.body = ex.verdict.clone();
        let mut t = first;
        self.shared.retry_budget.note_request(now_ms);
        async move {
            for attempt in 1..=ex.max_attempts {
                ex.tried[attempt - 1] = t;
                (outcome.target, outcome.retries) = (Some(t), (attempt - 1) as u8);
                let target = &group.targets[t];
                // Upgrades need hyper-util's client, which keeps the connection
                // for the tunnel; everything else goes native when the group can.
                let native = target.native.as_ref().filter(|_| !upgrade);
                let req = ex.request(attempt, group, target, native.is_some())?;
                let in_flight = target.live.begin(&target.metrics.outstanding);
                let timeout = snap.config.timeouts.upstream_response;
                let sent = match native {
                    // The pool keeps a timer per connection for this deadline.
                    Some(pool) => match pool.send(req, timeout).await {
                        Ok(resp) => Ok(resp.map(UpstreamIncoming::Native)),
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
                        return Ok(self.accept(snap, (g, t), served.client, resp, in_flight, now));
                    }
                    Err(e) => e,
                };
                drop(in_flight);
                self.blame(snap, g, t, &ex.verdict, err, now)?;
                let retry = ex.may_retry(attempt, err, closed_early);
                let Some((next, again)) = retry
                    .then(|| self.sibling(snap, g, &ex.tried[..attempt], &ex.replay, now))
                    .flatten()
                else {
                    target.metrics.count_status(err.status().as_u16());
                    return Err(err);
                };
                group.metrics.retries[Retry::Retried].inc();
                tracing::debug!(from = %target.address, to = %group.targets[next].address, "retrying on a sibling");
                ex.body = Some(again);
                t = next;
            }
            Err(ProxyError::NoTarget)
        }
    }

    /// An answer from target `t`: its health fed (a gateway status is a
    /// failure; any other answer ends a run of them, and feeds the
    /// failure-ratio detector when it is on), its status counted,
    /// hop-by-hop fields dropped, the body wrapped to relay.
    fn accept(
        &self,
        snap: &Snapshot,
        (g, t): (usize, usize),
        client: Option<usize>,
        resp: Response<UpstreamIncoming>,
        in_flight: InFlight,
        now: u64,
    ) -> Response<ProxyBody> {
        let target = &snap.groups[g].targets[t];
        let status = resp.status().as_u16();
        let outlier = &snap.config.health.outlier;
        if matches!(status, 502..=504) {
            self.failed(snap, g, t, now);
        } else {
            target.live.health.record_success(now, outlier);
            if let Some(slot) = client.filter(|_| outlier.failure_ratio.is_some()) {
                self.answered(snap, (g, t), slot, status >= 500, now);
            }
        }
        target.metrics.count_status(status);
        let (mut head, body) = resp.into_parts();
        // A 101's `Upgrade` names the protocol the tunnel carries.
        let upgrade = (status == 101)
            .then(|| head.headers.remove(header::UPGRADE))
            .flatten();
        super::headers::strip_hop_by_hop_response(&mut head.headers);
        if let Some(p) = upgrade {
            head.headers.insert(header::UPGRADE, p);
        }
        let body_timeouts = target.metrics.errors[UpstreamErrorKind::BodyTimeout].clone();
        let body = ProxyBody::upstream(
            body,
            in_flight,
            snap.config.timeouts.upstream_body,
            body_timeouts,
        );
        Response::from_parts(head, body)
    }

    /// Whose failure `err` is. The client's (its body failed, or the
    /// upstream waited on it) ends the exchange with the client's answer
    /// and blames no target; the upstream's is counted, logged (rate
    /// limited) and fed to the target's health.
    fn blame(
        &self,
        snap: &Snapshot,
        g: usize,
        t: usize,
        verdict: &idle::Verdict,
        err: ProxyError,
        now: u64,
    ) -> Result<(), ProxyError> {
        let group = &snap.groups[g];
        let target = &group.targets[t];
        let clients = client_fault(verdict, err)
            .or_else(|| matches!(err.fault(), Fault::Downstream(_)).then_some(err));
        if let Some(e) = clients {
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
        Ok(())
    }

    /// A usable sibling not yet `tried`, with the body again, if the retry
    /// budget allows one more attempt.
    fn sibling(
        &self,
        snap: &Snapshot,
        g: usize,
        tried: &[usize],
        replay: &Replay,
        now: u64,
    ) -> Option<(usize, UpstreamBody)> {
        let group = &snap.groups[g];
        let cfg = &snap.config;
        let next = crate::balance::pick_random(group, now, cfg.health.slow_start, tried);
        match (next, replay.again()) {
            (Some(next), Some(again)) if self.shared.retry_budget.allow(&cfg.retries) => {
                Some((next, again))
            }
            (Some(_), Some(_)) => {
                group.metrics.retries[Retry::BudgetExhausted].inc();
                None
            }
            _ => None,
        }
    }

    /// Counts a gateway failure against a target's passive health.
    fn failed(&self, snap: &Snapshot, g: usize, t: usize, now: u64) {
        let group = &snap.groups[g];
        let target = &group.targets[t];
        let outlier = &snap.config.health.outlier;
        if let Some(length) = target.live.health.record_failure(
            now,
            group.targets.iter().map(|t| &t.live.health),
            outlier,
        ) {
            target.metrics.ejections[Ejection::Gateway].inc();
            tracing::warn!(
                group = %group.name, target = %target.address,
                "target ejected for {}: {} gateway failures in a row",
                crate::config::duration::format_duration(length),
                outlier.consecutive_failures
            );
        }
    }

    /// Feeds the failure-ratio detector with one of the application's
    /// answers (`error`: a 5xx other than 502/503/504), by the client's slot.
    fn answered(
        &self,
        snap: &Snapshot,
        (g, t): (usize, usize),
        slot: usize,
        error: bool,
        now: u64,
    ) {
        let group = &snap.groups[g];
        let target = &group.targets[t];
        if let Some(length) = target.live.health.record_answer(
            now,
            slot,
            error,
            group.targets.iter().map(|t| &t.live.health),
            &snap.config.health.outlier,
        ) {
            target.metrics.ejections[Ejection::FailureRatio].inc();
            tracing::warn!(
                group = %group.name, target = %target.address,
                "target ejected for {}: its application errors crossed health.outlier.failure_ratio",
                crate::config::duration::format_duration(length),
            );
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

/// One exchange with one target on its hyper-util client (TLS, HTTP/2,
/// upgrades), its response head due within `timeout`. An error comes
/// classified, with whether the upstream closed before answering.
async fn exchange(
    group: &crate::state::Group,
    target: &crate::state::Target,
    mut req: Request<UpstreamBody>,
    timeout: Duration,
) -> Result<Response<UpstreamIncoming>, (ProxyError, bool)> {
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
            Ok(resp.map(UpstreamIncoming::Hyper))
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
