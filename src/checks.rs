//! Active health checks: one task per checked target, started by
//! [`spawn_supervisor`] (now and after each reload) and ended when the target
//! or its group's `health_check` leaves the config. What they find goes into
//! the target's [`crate::health::Health`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;

use crate::config::HealthCheck;
use crate::health::Transition;
use crate::state::{Shared, TargetLive};

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

fn probe_client() -> ProbeClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        // Each probe opens its own connection, so a refused connect is seen.
        .pool_max_idle_per_host(0)
        .build(c)
}

/// One GET to `address` + `check.path`; true when the status is in range.
async fn probe(client: &ProbeClient, address: &str, check: &HealthCheck) -> bool {
    let Ok(req) = Request::get(format!("http://{address}{}", check.path))
        .header(http::header::USER_AGENT, "switchyard-health-check")
        .body(Empty::new())
    else {
        return false;
    };
    match tokio::time::timeout(check.timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status().as_u16();
            (check.expect.0..=check.expect.1).contains(&s)
        }
        _ => false,
    }
}

/// Starts one checker per checked target now, and again after each reload.
pub fn spawn_supervisor(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = probe_client();
        let mut seen_generation = 0;
        loop {
            let snap = shared.snapshot();
            if snap.generation != seen_generation {
                seen_generation = snap.generation;
                for g in &snap.groups {
                    if g.health_check.is_none() {
                        continue;
                    }
                    for t in &g.targets {
                        if t.live.health.start_checking() {
                            tokio::spawn(check_loop(
                                Arc::downgrade(&t.live),
                                t.address.to_string(),
                                Arc::clone(&shared),
                                client.clone(),
                                shutdown.clone(),
                            ));
                        }
                    }
                }
            }
            drop(snap);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    })
}

/// Probes one target until it leaves the config, its group stops checking,
/// or the proxy shuts down. The check settings are re-read from the current
/// snapshot every round, so a reload changes them in place.
async fn check_loop(
    live: Weak<TargetLive>,
    address: String,
    shared: Arc<Shared>,
    client: ProbeClient,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let Some(target) = live.upgrade() else { return };
        let snap = shared.snapshot();
        let found = snap.groups.iter().find_map(|g| {
            let t = g.targets.iter().find(|t| Arc::ptr_eq(&t.live, &target))?;
            Some((g, t))
        });
        let Some((group, t)) = found else {
            target.health.stop_checking();
            return;
        };
        let Some(check) = group.health_check.clone() else {
            target.health.stop_checking();
            return;
        };
        let (gname, metrics) = (group.name.clone(), t.metrics.clone());
        drop(snap);
        let passed = probe(&client, &address, &check).await;
        metrics.count_probe(passed);
        match target.health.record_probe(passed, &check) {
            Transition::Down => tracing::warn!(
                group = %gname, target = %address,
                "target unhealthy: {} health checks of {} failed in a row",
                check.unhealthy_threshold, check.path
            ),
            Transition::Up => tracing::info!(
                group = %gname, target = %address,
                "target healthy again: {} health checks passed in a row",
                check.healthy_threshold
            ),
            Transition::None => {}
        }
        drop(target);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(check.interval) => {}
        }
    }
}
