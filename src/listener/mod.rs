//! Client connections: the accept loop, per-connection HTTP/1.1 and cleartext
//! HTTP/2 (prior knowledge) serving, and graceful shutdown.
//!
//! The connection's byte stream is generic (`serve_io`), so a TLS acceptor
//! slots in between `accept` and serving without touching the request path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Limits, Timeouts};
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
pub fn conn_builder(t: &Timeouts, limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.client_header)
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
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    b
}

/// Everything the accept loop needs. The connection builder comes from the
/// snapshot current at accept time, so reloaded timeouts reach new connections.
#[derive(Debug, Clone)]
pub struct Serving {
    pub shared: Arc<Shared>,
    pub tls: bool,
}

/// Decrements the open-connections gauge when a connection task ends.
struct OpenConn(prometheus::IntGauge);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accepts until `shutdown` turns true, then waits up to `grace` for open
/// connections to finish their requests.
pub async fn accept_loop(
    listener: TcpListener,
    serving: Serving,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    serve_io(&serving, &graceful, TokioIo::new(stream), peer);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period"
        );
    }
}

/// Serves one client connection on any byte stream.
pub fn serve_io<I>(serving: &Serving, graceful: &GracefulShutdown, io: I, peer: SocketAddr)
where
    I: Read + Write + Unpin + Send + 'static,
{
    let metrics = &serving.shared.metrics;
    metrics.connections.inc();
    metrics.open_connections.inc();
    let open = OpenConn(metrics.open_connections.clone());
    let service = Proxy::new(Arc::clone(&serving.shared), peer, serving.tls);
    let snap = serving.shared.snapshot();
    let conn = snap.conn_builder.serve_connection(io, service).into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _open = open;
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    });
}
