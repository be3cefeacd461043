//! Wiring: snapshot -> listeners -> admin; and shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::Config;
use crate::listener::{self, Serving};
use crate::reload::{self, ConfigSource, Outcome, Reloader, Trigger};
use crate::rollout::Rollouts;
use crate::state::Shared;
use crate::store::SessionStore;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    // The io error is part of the message, not a `source`: a chain printer
    // (anyhow's `{:#}`) would say it twice.
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Shared(#[from] crate::state::SharedError),
}

/// A running proxy: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    /// The plain HTTP listener's address, or the HTTPS one when there is no plain one.
    pub proxy_addr: SocketAddr,
    /// The HTTPS listener's address, when `tls` is configured.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub rollouts: Arc<Rollouts>,
    reloader: Option<Arc<Mutex<Reloader>>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<(TcpListener, SocketAddr), AppError> {
    let err = |error| AppError::Bind { addr, what, error };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Binds the listeners and starts serving `config`. With a `source`, the file
/// it came from is watched and reloaded (see [`crate::reload`]).
pub async fn start(
    config: Config,
    content_hash: String,
    source: Option<ConfigSource>,
) -> Result<Running, AppError> {
    start_with_workers(config, content_hash, source, &[]).await
}

/// [`start`], with client connections also accepted and served on each of
/// `workers`: thread-per-core runtimes beside the one this runs on. Each
/// accepts on its own copy of the listening sockets, and a connection stays
/// on the thread that accepted it (no work stealing, no cross-thread wake-up
/// on the request path). Admin, health checks and reloads stay here.
pub async fn start_with_workers(
    config: Config,
    content_hash: String,
    source: Option<ConfigSource>,
    workers: &[tokio::runtime::Handle],
) -> Result<Running, AppError> {
    let plain = match config.listen {
        Some(addr) => Some(bind(addr, "listen").await?),
        None => None,
    };
    let tls = match config.tls.as_ref().map(|t| t.listen) {
        Some(addr) => Some(bind(addr, "tls.listen").await?),
        None => None,
    };
    let (admin_listener, admin_addr) = bind(config.admin, "admin").await?;
    let shared = Shared::new(config, content_hash)?;
    // Before the first connection: a restarted proxy serves the step its
    // rollouts were on from its first request.
    let rollouts = Rollouts::start(
        Arc::clone(&shared),
        source.as_ref().map(|s| s.path.as_path()),
    )
    .await
    .map_err(AppError::Metrics)?;
    let (tx, rx) = watch::channel(false);
    let tls_addr = tls.as_ref().map(|(_, a)| *a);
    if let Some(a) = tls_addr {
        shared.https_port.store(a.port(), Ordering::Relaxed);
    }
    let proxy_addr = match (&plain, tls_addr) {
        (Some((_, a)), _) => *a,
        (None, Some(a)) => a,
        // Validation requires one listener; fall back to the admin address
        // rather than panic if that ever changed.
        (None, None) => admin_addr,
    };
    let mut tasks = Vec::new();
    for (bound, is_tls) in [(plain, false), (tls, true)] {
        let Some((l, addr)) = bound else { continue };
        let serving = Serving::new(Arc::clone(&shared), is_tls);
        for worker in workers {
            let copy = socket2::SockRef::from(&l)
                .try_clone()
                .map(std::net::TcpListener::from)
                .map_err(|error| AppError::Bind {
                    addr,
                    what: if is_tls { "tls.listen" } else { "listen" },
                    error,
                })?;
            let serving = serving.clone();
            let rx = rx.clone();
            tasks.push(worker.spawn(async move {
                // Registered with the worker's own reactor, so its accepts and
                // its connections' IO are polled on that thread.
                match TcpListener::from_std(copy) {
                    Ok(l) => listener::accept_loop(l, serving, rx).await,
                    Err(e) => tracing::error!(error = %e, "a worker could not take the listener"),
                }
            }));
        }
        tasks.push(tokio::spawn(listener::accept_loop(l, serving, rx.clone())));
    }
    tasks.extend([
        tokio::spawn(admin::serve(
            admin_listener,
            Arc::clone(&shared),
            Arc::clone(&rollouts),
            rx.clone(),
        )),
        Arc::clone(&rollouts).spawn(rx.clone()),
        crate::checks::spawn_supervisor(Arc::clone(&shared), rx.clone()),
    ]);
    tasks.push(tokio::spawn(reopen_log_on_sigusr1(
        Arc::clone(&shared),
        rx.clone(),
    )));
    if shared.store.as_ref().is_some_and(SessionStore::is_redis) {
        tasks.push(tokio::spawn(probe_store(Arc::clone(&shared), rx.clone())));
    }
    let reloader = source.map(|src| {
        tracing::info!(path = %src.path.display(), "watching the config file for changes");
        let r = Arc::new(Mutex::new(Reloader::new(src, Arc::clone(&shared))));
        tasks.push(reload::spawn(Arc::clone(&r), rx));
        r
    });
    shared.ready.store(true, Ordering::Relaxed);
    match tls_addr {
        Some(tls_addr) => {
            tracing::info!(%proxy_addr, %tls_addr, %admin_addr, "switchyard is serving");
        }
        None => tracing::info!(%proxy_addr, %admin_addr, "switchyard is serving"),
    }
    Ok(Running {
        proxy_addr,
        tls_addr,
        admin_addr,
        shared,
        rollouts,
        reloader,
        shutdown: tx,
        tasks,
    })
}

impl Running {
    /// Reloads the config file now, as SIGHUP does. `None` without a file.
    pub fn reload(&self) -> Option<Outcome> {
        let r = self.reloader.as_ref()?;
        let mut r = r.lock().ok()?;
        Some(r.reload(Trigger::Signal))
    }

    /// Shuts down as `shutdown:` says: readiness off at once, new connections
    /// still accepted for `drain_delay` (so load balancers can notice), then
    /// the listeners close (HTTP/2 clients get GOAWAY) and requests and tunnels
    /// in flight have until `grace` to finish; tunnels still open then are cut.
    pub async fn shutdown(self) {
        let settings = self.shared.snapshot().config.shutdown;
        self.shared.ready.store(false, Ordering::Relaxed);
        tracing::info!(
            drain_delay = ?settings.drain_delay,
            grace = ?settings.grace,
            "shutting down: readiness is off"
        );
        tokio::time::sleep(settings.drain_delay).await;
        let deadline = tokio::time::Instant::now() + settings.grace;
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let tunnels = &self.shared.tunnels;
        if tokio::time::timeout_at(deadline, tunnels.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tunnels.open(),
                "upgraded connections still open after the grace period; closing them"
            );
            tunnels.cut_all();
            let _ = tokio::time::timeout(Duration::from_secs(1), tunnels.all_closed()).await;
        }
        // Requests are done: their lines are queued; see them written.
        self.shared.access_log.flush(Duration::from_secs(2));
        tracing::info!("shutdown complete");
    }
}

/// SIGUSR1 reopens the access log file (after logrotate moved it).
async fn reopen_log_on_sigusr1(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGUSR1; the access log will not be reopened on it");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                got = usr1.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGUSR1: reopening the access log");
                    shared.access_log.reopen();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (shared, shutdown.wait_for(|stop| *stop).await);
    }
}

/// Listens for SIGINT (Ctrl-C) and SIGTERM from the moment it is called (so
/// call it before starting: a signal that comes during start-up is not lost)
/// and resolves on the first of them.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Pings the Redis session store in the background: every second while it
/// is down, every five while it is up, so that its state is known (and the
/// breaker closed) without waiting for a request to touch it.
async fn probe_store(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let Some(store) = &shared.store else { return };
        wait = if store.probe().await {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(1)
        };
    }
}
