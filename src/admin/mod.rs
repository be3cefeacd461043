//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`; in
//! store mode `/sessions/{id}` (GET, PUT, DELETE; bearer token when
//! configured); and `/rollouts` (always behind `admin_token`). It binds
//! loopback by default and never shows key material.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::duration::format_duration;
use crate::rollout::Rollouts;
use crate::state::{Shared, Snapshot};
use respond::{json, text};

mod respond;
mod rollouts;
mod sessions;

/// Serves the admin endpoints until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    rollouts: Arc<Rollouts>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        let rollouts = Arc::clone(&rollouts);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let rollouts = Arc::clone(&rollouts);
                async move {
                    let path = req.uri().path();
                    let resp = if path.starts_with("/sessions/") {
                        sessions::handle(&shared, req).await
                    } else if path == "/rollouts" || path.starts_with("/rollouts/") {
                        rollouts::handle(&shared, &rollouts, req).await
                    } else {
                        route(&shared, &rollouts, &req)
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(shared: &Shared, rollouts: &Rollouts, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/metrics" => metrics(shared),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/status" => json(&status(&shared.snapshot(), shared, rollouts)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz or /status\n",
        ),
    }
}

fn metrics(shared: &Shared) -> Response<Full<Bytes>> {
    // Ejections end by the clock, not by an event: read health as of now.
    let now = crate::clock::now_ms();
    for g in &shared.snapshot().groups {
        for t in &g.targets {
            t.metrics.healthy.set(i64::from(t.live.health.usable(now)));
        }
    }
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Err(e) = encoder.encode(&shared.registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(buf)));
    if let Ok(v) = header::HeaderValue::from_str(encoder.format_type()) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The `/status` document.
pub fn status(snap: &Snapshot, shared: &Shared, rollouts: &Rollouts) -> serde_json::Value {
    let now = crate::clock::now_ms();
    let groups: Vec<_> = snap
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let targets: Vec<_> = g
                .targets
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "address": t.address.as_str(),
                        "weight": t.weight,
                        "outstanding": t.live.outstanding(),
                        "healthy": t.live.health.usable(now),
                        "failing_checks": t.live.health.active_down(),
                        "ejected_ms": t.live.health.ejected_for(now),
                    })
                })
                .collect();
            serde_json::json!({
                "name": g.name.as_str(),
                "weight": g.weight,
                "drain": g.drain,
                "share_percent": (g.share * 10_000.0).round() / 100.0,
                // Buckets are a route's; the groups-only form has one route.
                "buckets": (snap.config.form == crate::config::ConfigForm::GroupsOnly)
                    .then(|| snap.routes.first().map(|r| r.routing.table().buckets_of(i)))
                    .flatten(),
                "targets": targets,
            })
        })
        .collect();
    let loaded = snap
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sticky = &snap.config.sticky;
    let unix = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
    let r = shared.reload_status();
    let last_error = r.last_error.as_ref().map(|f| {
        let errors: Vec<_> = f
            .errors
            .errors
            .iter()
            .map(|e| {
                serde_json::json!({
                    "path": e.path,
                    "line": e.line,
                    "message": e.message,
                })
            })
            .collect();
        serde_json::json!({
            "at_unix": unix(f.at),
            "file": f.errors.source_name,
            "message": f.errors.to_string(),
            "errors": errors,
        })
    });
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": shared.ready.load(Ordering::Relaxed),
        "config": {
            "generation": snap.generation,
            "loaded_at_unix": loaded,
            "sha256": snap.content_hash,
            "reload": {
                "last_attempt_unix": r.last_attempt.and_then(unix),
                "last_trigger": r.last_trigger,
                "last_result": r.last_result,
                "last_changes": r.last_changes,
                "last_error": last_error,
            },
        },
        "sticky": {
            "cookie": sticky.cookie_name.as_str(),
            "ttl": format_duration(Duration::from_secs(u64::from(sticky.ttl.secs()))),
            "keys": sticky.keys.len(),
            "ephemeral_key": sticky.ephemeral_key,
        },
        "groups": groups,
        "routes": routes_status(snap),
        "rollouts": rollouts.view(snap),
    })
}

/// Each route: its cookie and lifetime, and each group of its split with its
/// weight, drain flag, share of new clients and buckets.
fn routes_status(snap: &Snapshot) -> Vec<serde_json::Value> {
    snap.config
        .routes
        .iter()
        .zip(&snap.routes)
        .map(|(spec, route)| {
            let split: Vec<_> = spec
                .split
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "group": snap.groups[s.group].name.as_str(),
                        "weight": s.weight.get(),
                        "drain": s.drain,
                        "share_percent": (spec.share_of(s.group) * 10_000.0).round() / 100.0,
                        "buckets": route.routing.table().buckets_of(s.group),
                    })
                })
                .collect();
            serde_json::json!({
                "name": spec.name.as_str(),
                "cookie": route.sticky.cookie_name.as_str(),
                "cookie_path": route.sticky.path,
                "ttl": format_duration(Duration::from_secs(u64::from(route.sticky.ttl.secs()))),
                "split": split,
            })
        })
        .collect()
}
