//! Client connections: the accept loops (HTTP and HTTPS), the TLS handshake,
//! the connection limit, per-connection HTTP/1.1 and HTTP/2 serving (by ALPN
//! over TLS, by prior knowledge in cleartext), upgrades, and graceful shutdown.
//!
//! ```text
//! accept -> limit check -> cleartext -> native (HTTP/1.x, the proxy's own) --.
//!                       |                  | not for it: bytes read so far  |
//!                       |                  v                                |
//!                       '-> TLS handshake (SNI, ALPN) -> serve_io -> hyper  |
//!                           (h1 | h2, upgrades on) -> proxy::Proxy          |
//!             ^  idle 1 s, nothing buffered                                 |
//!             '-- next bytes -- parked (bare socket, small task) <----------'
//! ```
//! The native server and its own timeouts and parking are in [`native`]. For
//! hyper's connections, connection-level timeouts (head, keep-alive idle,
//! blocked writes) and the decision to park live in [`conn_io`], under hyper;
//! the tasks that serve, park and resume them are here.
//!
//! The TLS config and the connection builder are read from the snapshot current
//! at accept time, so reloaded certificates and timeouts reach new connections
//! while open ones finish on what they started with.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

mod conn_io;
mod lot;
mod native;
mod proxied;
use crate::metrics::{ClientTimeout, Handshake, Label, Listener, ProxyHeaderRefusal};
use crate::proxy::Activity;
pub use conn_io::PARK_AFTER;
use conn_io::{ClientIo, ConnTimeouts, ParkSlot, Parked, ParkedFor};

use crate::config::Limits;

use crate::proxy::{Proxy, TlsInfo};
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
fn conn_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
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

/// The builder for a parked HTTP/1 connection served again: the HTTP/1 half of
/// [`conn_builder`], set the same way, without the HTTP/2 sniffing (one read
/// and one copy fewer; the protocol is known by then).
fn h1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(limits.max_headers as usize + 1)
        .max_buf_size(H1_MAX_BUF)
        .keep_alive(true);
    b
}

/// Everything the accept loop needs.
#[derive(Debug, Clone)]
pub struct Serving {
    pub shared: Arc<Shared>,
    /// This is the HTTPS listener.
    pub tls: bool,
    /// hyper's server builders for the config generation last seen.
    builders: Arc<ArcSwap<Builders>>,
}

/// hyper's server builders, made from one config generation's limits (its
/// limits apply to connections accepted after it is installed).
#[derive(Debug)]
struct Builders {
    generation: u64,
    /// h2c and the connections the native server hands over.
    auto: auto::Builder<TokioExecutor>,
    /// The same, HTTP/2 only: TLS connections whose ALPN chose `h2`
    /// (served with `serve_connection`, which honours it: the upgradeable
    /// form sniffs the first bytes whatever it was told).
    h2: auto::Builder<TokioExecutor>,
    /// The same, HTTP/1 only: for a parked connection served again.
    h1: http1::Builder,
}

impl Builders {
    fn of(snap: &crate::state::Snapshot) -> Self {
        Self {
            generation: snap.generation,
            auto: conn_builder(&snap.config.limits),
            h2: conn_builder(&snap.config.limits).http2_only(),
            h1: h1_builder(&snap.config.limits),
        }
    }
}

impl Serving {
    pub fn new(shared: Arc<Shared>, tls: bool) -> Self {
        let builders = Arc::new(ArcSwap::from_pointee(Builders::of(&shared.snapshot())));
        Self {
            shared,
            tls,
            builders,
        }
    }

    /// The builders for `snap`'s generation, made anew after a reload.
    fn builders(&self, snap: &crate::state::Snapshot) -> Arc<Builders> {
        let current = self.builders.load_full();
        if current.generation == snap.generation {
            return current;
        }
        let fresh = Arc::new(Builders::of(snap));
        self.builders.store(Arc::clone(&fresh));
        fresh
    }
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
    // Where this listener's idle cleartext connections wait.
    let lot = lot::Lot::spawn(task.clone(), native::resume);
    crate::batch::start();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accepted_one(&task, &lot, stream, peer),
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

/// One accepted socket: over the limit it is closed at once (counted); on a
/// listener that takes the PROXY protocol, its header is read first; then it
/// is served, after a TLS handshake on the HTTPS listener.
fn accepted_one(task: &ConnTask, lot: &Arc<lot::Lot>, stream: TcpStream, peer: SocketAddr) {
    let accepted = tokio::time::Instant::now();
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
    let proxy_protocol = if serving.tls {
        snap.config
            .tls
            .as_ref()
            .and_then(|t| t.proxy_protocol.as_ref())
    } else {
        snap.config.proxy_protocol.as_ref()
    };
    let Some(pp) = proxy_protocol else {
        metrics.connections.inc();
        metrics.open_connections.inc();
        let open = OpenConn(metrics.open_connections.clone());
        serve_accepted(task, lot, stream, peer, open, accepted);
        return;
    };
    let listener = if serving.tls {
        Listener::Https
    } else {
        Listener::Http
    };
    let refused = &metrics.proxy_protocol_refused[listener];
    if !pp.trusts(peer.ip()) {
        refused[ProxyHeaderRefusal::UntrustedPeer].inc();
        tracing::debug!(%peer, "closing a connection from outside proxy_protocol.from");
        return;
    }
    metrics.connections.inc();
    metrics.open_connections.inc();
    let open = OpenConn(metrics.open_connections.clone());
    let deadline = accepted + snap.config.timeouts.client_header;
    let (task, lot) = (task.clone(), Arc::clone(lot));
    tokio::spawn(async move {
        let mut stream = stream;
        let read = tokio::time::timeout_at(deadline, proxied::read_header(&mut stream, peer));
        let why = match read.await {
            Ok(Ok(client)) => return serve_accepted(&task, &lot, stream, client, open, accepted),
            Ok(Err(why)) => why,
            Err(_) => ProxyHeaderRefusal::Timeout,
        };
        task.serving.shared.metrics.proxy_protocol_refused[listener][why].inc();
        tracing::debug!(%peer, reason = why.label(), "closing a connection: no acceptable PROXY protocol header");
    });
}

/// Serves an accepted connection whose client is `peer`: natively in
/// cleartext, or after a TLS handshake.
fn serve_accepted(
    task: &ConnTask,
    lot: &Arc<lot::Lot>,
    stream: TcpStream,
    peer: SocketAddr,
    open: OpenConn,
    accepted: tokio::time::Instant,
) {
    if !task.serving.tls {
        native::spawn(task.clone(), Arc::clone(lot), stream, peer, open, accepted);
        return;
    }
    let snap = task.serving.shared.snapshot();
    let Some(config) = snap.tls.clone() else {
        return;
    };
    let timeout = snap.config.timeouts.tls_handshake;
    drop(snap);
    let task = task.clone();
    tokio::spawn(async move {
        let counts = &task.serving.shared.metrics.tls_handshakes;
        match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await {
            Ok(Ok(tls)) => {
                counts[Handshake::Ok].inc();
                let session = tls.get_ref().1;
                let alpn = match session.alpn_protocol() {
                    Some(b"h2") => Alpn::H2,
                    _ => Alpn::Http1,
                };
                let info = TlsInfo::of(session);
                serve_io(task, tls, Some(alpn), peer, open, Some(info));
            }
            Ok(Err(e)) => {
                counts[Handshake::Failed].inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                counts[Handshake::Timeout].inc();
                tracing::debug!(%peer, "TLS handshake timed out");
            }
        }
    });
}

/// A client socket whose readability can be awaited without reading from it:
/// what a parked connection waits on (`conn_io` module docs).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientStream for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    /// hyper parks a connection only after a read found nothing, so rustls
    /// holds no plaintext; whatever comes next arrives on the socket.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// How a parked connection's wait ended.
#[derive(Clone, Copy)]
enum Wake {
    Readable,
    Deadline,
    Shutdown,
}

/// Resolves when the shutdown signal turns true (never, if its sender is
/// gone without one).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What a client connection keeps across its hyper connections (it has more
/// than one when it parks; `conn_io` module docs).
struct ClientConnState<S> {
    task: ConnTask,
    _open: OpenConn,
    peer: SocketAddr,
    timeouts: ConnTimeouts,
    activity: Arc<Activity>,
    service: Proxy,
    /// `None` for HTTP/2, which never parks.
    slot: Option<ParkSlot<S>>,
}

/// Serves one client connection on any byte stream. `alpn`: what ALPN chose
/// on a TLS connection (binding: `h2` is served as HTTP/2 only, anything
/// else as HTTP/1.1 only, RFC 9113 §3.3); `None` in cleartext, where the
/// first bytes tell; `tls`: the TLS session it runs in, if any.
fn serve_io<S: ClientStream>(
    task: ConnTask,
    io: S,
    alpn: Option<Alpn>,
    peer: SocketAddr,
    open: OpenConn,
    tls: Option<TlsInfo>,
) {
    let shared = Arc::clone(&task.serving.shared);
    let snap = shared.snapshot();
    let timeouts = ConnTimeouts::of(&snap.config.timeouts);
    let activity = Arc::new(Activity::default());
    let service = Proxy::new(Arc::clone(&shared), peer, tls, Arc::clone(&activity));
    let h2 = alpn == Some(Alpn::H2);
    let slot: Option<ParkSlot<S>> = (!h2).then(ParkSlot::default);
    let io = ClientIo::new(
        io,
        Arc::clone(&activity),
        shared,
        timeouts,
        h2,
        slot.clone(),
    );
    drop(snap);
    let state = ClientConnState {
        task,
        _open: open,
        peer,
        timeouts,
        activity,
        service,
        slot,
    };
    let builder = match alpn {
        None => Builder::Sniffing,
        Some(Alpn::H2) => Builder::Http2,
        Some(Alpn::Http1) => Builder::Http1,
    };
    tokio::spawn(serving(io, builder, state));
}

/// The protocol a TLS handshake settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alpn {
    H2,
    /// `http/1.1`, or no ALPN at all (HTTP/2 over TLS requires it).
    Http1,
}

/// Which hyper builder serves a connection.
#[derive(Debug, Clone, Copy)]
enum Builder {
    /// HTTP/1 or HTTP/2, told by the first bytes (cleartext).
    Sniffing,
    /// HTTP/2 only: ALPN chose `h2`; anything but the preface is a
    /// connection error.
    Http2,
    /// HTTP/1 only (a parked connection that has served HTTP/1 before).
    Http1,
}

/// Runs one hyper connection to its end; if the connection parked, hands it
/// to a task of its own that waits for the client's next bytes.
// Not `async fn`: `serving` and `parked_wait` spawn each other, and only a
// declared `Send` lets the compiler check that without a cycle.
#[allow(clippy::manual_async_fn)]
fn serving<S: ClientStream>(
    io: ClientIo<S>,
    builder: Builder,
    mut state: ClientConnState<S>,
) -> impl Future<Output = ()> + Send {
    async move {
        // The hyper connection is made here, in the task, and dropped at the
        // end of this block: its stream's drop is what fills the slot. (Made
        // outside and passed in, it would be copied and held twice over.)
        let ended = {
            let snap = state.task.serving.shared.snapshot();
            let service = state.service.clone();
            let (shutdown, activity) = (&mut state.task.shutdown, &state.activity);
            let builders = state.task.serving.builders(&snap);
            drop(snap);
            match builder {
                Builder::Sniffing => {
                    let conn = builders
                        .auto
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    drop(builders);
                    serve_conn(std::pin::pin!(conn), shutdown, activity).await
                }
                Builder::Http2 => {
                    let conn = builders
                        .h2
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned();
                    drop(builders);
                    serve_conn(std::pin::pin!(conn), shutdown, activity).await
                }
                Builder::Http1 => {
                    let conn = builders
                        .h1
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades();
                    drop(builders);
                    serve_conn(std::pin::pin!(conn), shutdown, activity).await
                }
            }
        };
        let parked = state
            .slot
            .as_ref()
            .and_then(|slot| slot.lock().ok().and_then(|mut parked| parked.take()));
        match ended {
            Err(e) => {
                tracing::debug!(peer = %state.peer, error = %e, "client connection ended with an error");
                log_unparsed(&state.task.serving.shared, state.peer, e.as_ref());
            }
            // A new task rather than a loop here: the parked one is small, and
            // this one's room for the hyper connection is freed.
            Ok(()) => {
                if let Some(parked) = parked {
                    tokio::spawn(parked_wait(parked, state));
                }
            }
        }
    }
}

/// A head hyper could not parse was answered by hyper itself (400, or 431
/// when too large) without reaching the proxy: its access log line.
fn log_unparsed(shared: &Shared, peer: SocketAddr, e: &(dyn std::error::Error + 'static)) {
    let Some(e) = e.downcast_ref::<hyper::Error>() else {
        return;
    };
    if e.is_parse_too_large() {
        crate::proxy::log_refused_head(shared, peer.ip(), 431, "headers_too_large");
    } else if e.is_parse() {
        crate::proxy::log_refused_head(shared, peer.ip(), 400, "bad_request");
    }
}

/// A parked connection: waits for the client's next bytes, then serves it
/// again; or closes it at the phase's deadline or at shutdown.
#[allow(clippy::manual_async_fn)]
fn parked_wait<S: ClientStream>(
    mut parked: Parked<S>,
    mut state: ClientConnState<S>,
) -> impl Future<Output = ()> + Send {
    async move {
        let gauge = &state.task.serving.shared.metrics.parked_connections;
        gauge.inc();
        let wake = tokio::select! {
            biased;
            () = stopping(&mut state.task.shutdown) => Wake::Shutdown,
            // An error (a reset) counts as readable: hyper reads it and ends.
            _ = std::future::poll_fn(|cx| parked.io.poll_read_ready(cx)) => Wake::Readable,
            () = tokio::time::sleep_until(parked.deadline) => Wake::Deadline,
        };
        gauge.dec();
        let shared = &state.task.serving.shared;
        let slot = match (wake, state.slot.clone()) {
            (Wake::Readable, Some(slot)) => slot,
            (wake, _) => {
                if matches!(wake, Wake::Deadline) {
                    let which = match parked.waiting {
                        ParkedFor::FirstHead => ClientTimeout::Header,
                        ParkedFor::NextRequest => ClientTimeout::Keepalive,
                    };
                    shared.metrics.client_timeouts[which].inc();
                }
                let _ = tokio::time::timeout(state.timeouts.write, parked.io.shutdown()).await;
                return;
            }
        };
        let waiting = parked.waiting;
        let io = ClientIo::resume(
            parked,
            Arc::clone(&state.activity),
            Arc::clone(shared),
            state.timeouts,
            slot,
        );
        let builder = match waiting {
            // Nothing was read before it parked: HTTP/2 is still possible.
            ParkedFor::FirstHead => Builder::Sniffing,
            ParkedFor::NextRequest => Builder::Http1,
        };
        tokio::spawn(serving(io, builder, state));
    }
}

type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// One hyper connection serving a client, from either builder.
trait HyperConn: Send + 'static {
    fn poll_conn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>>;
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S: ClientStream> HyperConn
    for auto::UpgradeableConnection<'static, TokioIo<ClientIo<S>>, Proxy, TokioExecutor>
{
    fn poll_conn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        Future::poll(self, cx)
    }

    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<S: ClientStream> HyperConn
    for auto::Connection<'static, TokioIo<ClientIo<S>>, Proxy, TokioExecutor>
{
    fn poll_conn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        Future::poll(self, cx)
    }

    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}

impl<S: ClientStream> HyperConn for http1::UpgradeableConnection<TokioIo<ClientIo<S>>, Proxy> {
    fn poll_conn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        Future::poll(self, cx).map_err(ConnError::from)
    }

    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Runs one hyper connection to its end. Shutdown, or an idle HTTP/2
/// connection: hyper closes gracefully (GOAWAY on HTTP/2, `connection:
/// close` on a response in flight).
async fn serve_conn<C: HyperConn>(
    mut conn: Pin<&mut C>,
    shutdown: &mut watch::Receiver<bool>,
    activity: &Activity,
) -> Result<(), ConnError> {
    let close = async {
        tokio::select! {
            () = stopping(shutdown) => {}
            () = activity.close_requested() => {}
        }
    };
    tokio::select! {
        biased;
        r = std::future::poll_fn(|cx| conn.as_mut().poll_conn(cx)) => r,
        () = close => {
            conn.as_mut().graceful_shutdown();
            std::future::poll_fn(|cx| conn.as_mut().poll_conn(cx)).await
        }
    }
}
