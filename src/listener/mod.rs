//! Client connections: the accept loops (HTTP and HTTPS), the TLS handshake,
//! the connection limit, per-connection HTTP/1.1 and HTTP/2 serving (by ALPN
//! over TLS, by prior knowledge in cleartext), upgrades, and graceful shutdown.
//!
//! ```text
//! accept -> limit check -> [TLS handshake, certificate by SNI, ALPN] -> serve_io
//!        -> hyper (h1 | h2, upgrades on) -> proxy::Proxy per connection
//! ```
//! Connection-level timeouts (head, keep-alive idle, blocked writes) live in
//! [`conn_io`], under hyper.
//!
//! The TLS config and the connection builder are read from the snapshot current
//! at accept time, so reloaded certificates and timeouts reach new connections
//! while open ones finish on what they started with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

mod conn_io;
pub use conn_io::{Activity, InFlightRequest};
use conn_io::{ClientIo, ConnTimeouts};

use crate::config::Limits;

use crate::proxy::Proxy;
use crate::state::Shared;

/// HTTP/2 limits, set explicitly rather than left to library defaults.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/1 request head buffered (hyper's read buffer cap).
pub const H1_MAX_BUF: usize = 64 * 1024;

/// The connection builder used for every client connection.
pub fn conn_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // The head deadline is enforced by `conn_io` instead, which can tell
        // a slow head from an idle keep-alive connection.
        .header_read_timeout(None)
        // Parse one more than allowed so the proxy, not the parser, answers 431
        // with its own reason (the parser's answer would be the same status).
        .max_headers(limits.max_headers as usize + 1)
        .max_buf_size(H1_MAX_BUF)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        // RFC 8441: WebSocket over HTTP/2 arrives as an extended CONNECT.
        .enable_connect_protocol();
    b
}

/// Everything the accept loop needs.
#[derive(Debug, Clone)]
pub struct Serving {
    pub shared: Arc<Shared>,
    /// This is the HTTPS listener.
    pub tls: bool,
}

/// What each connection task holds of its listener: the shutdown signal, and
/// a sender whose drop tells the listener the task is over.
#[derive(Debug, Clone)]
struct ConnTask {
    serving: Serving,
    shutdown: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

/// Decrements the open-connections gauge when a connection task ends.
#[derive(Debug)]
struct OpenConn(prometheus::IntGauge);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accepts until `shutdown` turns true, then waits up to `shutdown.grace` for
/// open connections to finish their requests (HTTP/2 ones are sent GOAWAY).
pub async fn accept_loop(
    listener: TcpListener,
    serving: Serving,
    mut shutdown: watch::Receiver<bool>,
) {
    let (alive, mut all_done) = mpsc::channel(1);
    let task = ConnTask {
        serving,
        shutdown: shutdown.clone(),
        _alive: alive,
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accepted_one(&task, stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let grace = task.serving.shared.snapshot().config.shutdown.grace;
    drop(task);
    // Every connection task holds a sender; `recv` gives `None` once all
    // have ended.
    if tokio::time::timeout(grace, all_done.recv()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period"
        );
    }
}

/// One accepted socket: over the limit it is closed at once (counted); else it
/// is served, after a TLS handshake on the HTTPS listener.
fn accepted_one(task: &ConnTask, stream: TcpStream, peer: SocketAddr) {
    let serving = &task.serving;
    let shared = &serving.shared;
    let metrics = &shared.metrics;
    let snap = shared.snapshot();
    let max = snap.config.limits.max_connections;
    if max > 0 && metrics.open_connections.get() >= i64::from(max) {
        // Accepting and closing (rather than leaving it in the backlog) tells
        // the client at once, and keeps the kernel queue for the next ones.
        metrics.connections_refused.inc();
        tracing::debug!(%peer, max, "connection limit reached; closing a new connection");
        return;
    }
    let _ = stream.set_nodelay(true);
    metrics.connections.inc();
    metrics.open_connections.inc();
    let open = OpenConn(metrics.open_connections.clone());
    if !serving.tls {
        serve_io(task.clone(), stream, false, peer, open);
        return;
    }
    let Some(config) = snap.tls.clone() else {
        return;
    };
    let timeout = snap.config.timeouts.tls_handshake;
    let task = task.clone();
    tokio::spawn(async move {
        let counts = &task.serving.shared.metrics.tls_handshakes;
        match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await {
            Ok(Ok(tls)) => {
                counts[0].inc();
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                serve_io(task, tls, h2, peer, open);
            }
            Ok(Err(e)) => {
                counts[1].inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                counts[2].inc();
                tracing::debug!(%peer, "TLS handshake timed out");
            }
        }
    });
}

/// Serves one client connection on any byte stream. `h2`: ALPN chose HTTP/2.
fn serve_io<S>(task: ConnTask, io: S, h2: bool, peer: SocketAddr, open: OpenConn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = &task.serving.shared;
    let snap = shared.snapshot();
    let t = &snap.config.timeouts;
    let timeouts = ConnTimeouts {
        header: t.client_header,
        keepalive: t.keepalive,
        write: t.client_write,
    };
    let activity = Arc::new(Activity::default());
    let io = ClientIo::new(io, Arc::clone(&activity), Arc::clone(shared), timeouts, h2);
    let service = Proxy::new(
        Arc::clone(shared),
        peer,
        task.serving.tls,
        Arc::clone(&activity),
    );
    let conn = snap
        .conn_builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    drop(snap);
    tokio::spawn(async move {
        let _open = open;
        let ConnTask {
            mut shutdown,
            _alive,
            ..
        } = task;
        let mut conn = std::pin::pin!(conn);
        // Shutdown, or an idle HTTP/2 connection: hyper closes gracefully
        // (GOAWAY on HTTP/2, `connection: close` on a response in flight).
        let close = async {
            tokio::select! {
                stopped = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => {
                    if !stopped {
                        // The signal's sender is gone without a shutdown.
                        std::future::pending::<()>().await;
                    }
                }
                () = activity.close_requested() => {}
            }
        };
        let ended = tokio::select! {
            biased;
            r = conn.as_mut() => r,
            () = close => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    });
}
