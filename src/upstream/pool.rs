//! Pooled HTTP/1.1 connections to cleartext upstreams, spoken natively
//! ([`crate::h1`]) and driven by the request that uses them.
//!
//! The request future writes the head (and the body, as the client sends it)
//! and reads the response head; the response body, as the client reads it,
//! reads the rest, and goes on writing the request body if the upstream
//! answered before taking all of it. When both messages are complete and the
//! upstream keeps the connection open, it goes back on its target's idle
//! stack at once. No task runs for a connection, and nothing crosses a
//! channel: one request is one state machine polled by the client's task.
//!
//! An idle connection is checked when it is taken (a close or reset that
//! already arrived shows as a readable socket), dropped once older than
//! `timeouts.upstream_idle`, and swept once a second when traffic stops. A
//! request whose reused connection turns out closed before any of a response
//! came goes again on a new connection when that is safe: an idempotent
//! method, or nothing written, and a body not yet read from the client.
//!
//! TLS and HTTP/2 groups and upgrade requests use the hyper-util client.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::thread::ThreadId;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{Method, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::batch::{Side, Turn};
use crate::body::{BoxError, UpstreamBody};
use crate::h1::{self, Decoded, Decoder, Encoder, Framing, HeadError};

/// Idle connections kept per target and runtime.
const MAX_IDLE: usize = 1024;

/// A connection on the shelf this long gives its response timer back. The
/// timer is kept from request to request so that a busy connection does not
/// register a new one each time; but a timer made under load sits among the
/// load's short-lived allocations and, kept, pins their allocator pages:
/// 0.2 KiB more per idle client connection held afterwards (benches/README.md,
/// memory).
const TIMER_KEPT_IDLE: Duration = Duration::from_secs(1);

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    /// No whole response head within `timeouts.upstream_response`.
    #[error("no response within the response timeout")]
    ResponseTimeout,
    /// The connection ended before a whole response head came.
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("upstream connection: {0}")]
    Io(#[source] io::Error),
    #[error("invalid response: {0}")]
    Head(#[from] HeadError),
    #[error("invalid response body: {0}")]
    Framing(#[from] h1::FramingError),
    #[error("the upstream answered 101 to a request that asked for no upgrade")]
    UnexpectedUpgrade,
    /// The client's body failed (stalled, too large, or the client left).
    #[error("request body: {0}")]
    Body(#[source] BoxError),
    #[error("request body length differs from its Content-Length")]
    BodyLength,
}

impl NativeError {
    /// The upstream closed (or reset) the connection without a byte of a
    /// response: an idle connection it had given up on, or a crash.
    pub fn closed_early(&self) -> bool {
        match self {
            NativeError::Closed => true,
            NativeError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// One upstream connection, its buffers, and the request it is writing.
/// Boxed once per connection: it moves in and out of the idle stack and into
/// response bodies.
struct UpstreamConn {
    io: TcpStream,
    /// What has been read and not yet used.
    rbuf: BytesMut,
    /// The head and chunk lines still to write (before `out.data`).
    wbuf: BytesMut,
    out: RequestOut,
    spans: Vec<h1::head::Span>,
    /// The response deadline's timer, kept from request to request.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The request as it is being written.
struct RequestOut {
    body: Option<UpstreamBody>,
    encoder: Encoder,
    /// Body data to write after the connection's `wbuf`.
    data: Bytes,
    /// Any of the body was taken from the client (it cannot be sent again).
    body_read: bool,
    /// Any byte was accepted by the socket.
    wrote_any: bool,
    /// Writing failed; the response may still come.
    failed: Option<NativeError>,
    /// The first write waits for its turn in the thread's batch.
    turn: Turn,
}

impl RequestOut {
    fn idle() -> Self {
        Self::new(None, Framing::Empty)
    }

    fn new(body: Option<UpstreamBody>, framing: Framing) -> Self {
        Self {
            body: body.filter(|_| framing != Framing::Empty),
            encoder: Encoder::new(framing),
            data: Bytes::new(),
            body_read: false,
            wrote_any: false,
            failed: None,
            turn: Turn::default(),
        }
    }

    /// The whole request has been written.
    fn done(&self) -> bool {
        self.body.is_none() && self.data.is_empty() && self.failed.is_none()
    }

    /// Takes the next body frame into `wbuf`/`data`, if one is ready.
    fn next_frame(&mut self, wbuf: &mut BytesMut, cx: &mut Context<'_>) -> Result<(), NativeError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(());
        };
        let frame = match Pin::new(body).poll_frame(cx) {
            Poll::Pending => return Ok(()),
            Poll::Ready(f) => f,
        };
        self.body_read = true;
        match frame {
            None => {
                self.body = None;
                self.encoder
                    .finish(wbuf)
                    .map_err(|_| NativeError::BodyLength)?;
            }
            Some(Err(e)) => return Err(NativeError::Body(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    self.encoder
                        .encode(wbuf, &mut data)
                        .map_err(|_| NativeError::BodyLength)?;
                    self.data = data;
                }
                // Trailers end the body (nothing may follow them): they go
                // in the last chunk, or are dropped under a length.
                Err(frame) => {
                    self.body = None;
                    self.encoder
                        .finish_with(wbuf, frame.trailers_ref())
                        .map_err(|_| NativeError::BodyLength)?;
                }
            },
        }
        Ok(())
    }
}

impl UpstreamConn {
    fn new(io: TcpStream) -> Box<Self> {
        Box::new(Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::with_capacity(1024),
            out: RequestOut::idle(),
            spans: Vec::new(),
            timer: None,
        })
    }

    /// Reads what the socket has into `rbuf`. `Ok(0)`: the peer closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        h1::io::poll_fill(&mut self.io, cx, &mut self.rbuf)
    }

    /// Writes as much of the request as the socket takes now, taking body
    /// frames as they come. Returns when it cannot go on without waiting (the
    /// wakers are registered) or the request is written. A failed write is
    /// kept in `out.failed`, since the upstream may have answered already; a
    /// failed client body ends the exchange.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Result<(), NativeError> {
        if self.out.failed.is_some() {
            return Ok(());
        }
        match self.send_some(cx) {
            Ok(()) => Ok(()),
            Err(e @ NativeError::Io(_)) => {
                self.out.body = None;
                self.out.data = Bytes::new();
                self.wbuf.clear();
                self.out.failed = Some(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn send_some(&mut self, cx: &mut Context<'_>) -> Result<(), NativeError> {
        let out = &mut self.out;
        loop {
            // A body frame that is ready goes out in the same write as the
            // head (or the chunk line) before it.
            if out.data.is_empty() {
                out.next_frame(&mut self.wbuf, cx)?;
            }
            if self.wbuf.is_empty() && out.data.is_empty() {
                return Ok(());
            }
            if out.turn.poll(cx, Side::Upstream).is_pending() {
                return Ok(());
            }
            match h1::io::poll_write_pair(&mut self.io, cx, &mut self.wbuf, &mut out.data) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok(_)) => out.wrote_any = true,
                Poll::Ready(Err(e)) => return Err(NativeError::Io(e)),
            }
        }
    }

    /// Writes the request and reads until a final response head is complete
    /// (informational ones are skipped).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<h1::ResponseHead, NativeError>> {
        loop {
            self.poll_send(cx)?;
            if !self.rbuf.is_empty() {
                match h1::head::parse_response(&mut self.rbuf, method, &mut self.spans)? {
                    Some(head) if head.parts.status == http::StatusCode::SWITCHING_PROTOCOLS => {
                        return Poll::Ready(Err(NativeError::UnexpectedUpgrade));
                    }
                    Some(head) if head.parts.status.is_informational() => continue,
                    Some(head) => return Poll::Ready(Ok(head)),
                    None => {}
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(self.out.failed.take().unwrap_or(NativeError::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    return Poll::Ready(Err(self.out.failed.take().unwrap_or(NativeError::Io(e))));
                }
            }
        }
    }

    /// Whether it can take another request now, checked without waiting: a
    /// close, a reset or stray bytes that already arrived show here.
    fn reusable(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // The readiness may be left over from the last read: look.
            Poll::Ready(Ok(())) => self.poll_fill(&mut cx).is_pending(),
        }
    }
}

/// How the request's body goes on the wire: as its `Content-Length` says,
/// else empty or chunked.
fn request_framing(
    parts: &mut http::request::Parts,
    body: &UpstreamBody,
) -> Result<Framing, NativeError> {
    if let Some(n) = h1::head::content_length(&parts.headers)? {
        return Ok(Framing::Length(n));
    }
    if body.is_end_stream() {
        // A method whose body means something gets an explicit empty one,
        // so the upstream does not wait for one.
        if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
        }
        return Ok(Framing::Empty);
    }
    Ok(match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    })
}

/// Idle connections, most recently used last: taken from the top, so the
/// bottom ages out.
type Shelf = Vec<(Box<UpstreamConn>, Instant)>;

thread_local! {
    static THIS_THREAD: ThreadId = std::thread::current().id();
}

/// The idle connections of one cleartext HTTP/1.1 target, a shelf per
/// runtime. A socket answers to the I/O driver of the runtime that opened it,
/// and with `run.workers` above 1 each worker is a current-thread runtime of
/// its own: a connection another worker took would only hear of its
/// readiness when its owner's thread next polled, a cross-thread hop per
/// request (with one shared shelf, 2 workers were slower than 1,
/// benches/README.md).
pub struct H1Pool {
    address: Authority,
    connect: Duration,
    idle_timeout: Duration,
    /// Held for a push or a pop only, never across IO.
    idle: Mutex<Vec<(Option<ThreadId>, Shelf)>>,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = self.lock().iter().map(|(_, shelf)| shelf.len()).sum();
        f.debug_struct("H1Pool")
            .field("address", &self.address)
            .field("idle", &idle)
            .finish()
    }
}

/// The runtime a shelf belongs to: on a current-thread runtime, its thread
/// (the two are one); a multi-thread runtime's threads share one I/O driver,
/// and so one shelf.
fn runtime_key() -> Option<ThreadId> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => Some(THIS_THREAD.with(|t| *t)),
        _ => None,
    }
}

/// This runtime's shelf, made on first use.
fn shelf_of(shelves: &mut Vec<(Option<ThreadId>, Shelf)>) -> &mut Shelf {
    let me = runtime_key();
    let at = match shelves.iter().position(|(k, _)| *k == me) {
        Some(i) => i,
        None => {
            shelves.push((me, Vec::new()));
            shelves.len() - 1
        }
    };
    &mut shelves[at].1
}

impl H1Pool {
    /// A pool for `address`; inside a runtime, also the once-a-second sweep
    /// that closes connections left idle after traffic stops and takes the
    /// timers of those resting.
    pub fn new(address: Authority, connect: Duration, idle_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self {
            address,
            connect,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            rt.spawn(sweep(weak));
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Option<ThreadId>, Shelf)>> {
        match self.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn take(&self, now: Instant) -> Option<Box<UpstreamConn>> {
        loop {
            let (mut conn, since) = shelf_of(&mut self.lock()).pop()?;
            if now.duration_since(since) >= self.idle_timeout {
                // Everything under it is older still.
                shelf_of(&mut self.lock()).clear();
                return None;
            }
            if conn.reusable() {
                return Some(conn);
            }
        }
    }

    fn put(&self, mut conn: Box<UpstreamConn>) {
        // An idle connection holds no read buffer: idle upstream connections
        // would otherwise pin the pages of every client buffer freed beside
        // theirs, and idle client connections would stay costly (see
        // benches/README.md, memory).
        conn.rbuf = BytesMut::new();
        let mut shelves = self.lock();
        let shelf = shelf_of(&mut shelves);
        if shelf.len() < MAX_IDLE {
            shelf.push((conn, Instant::now()));
        }
    }

    /// Closes the connections idle past the idle timeout or no longer
    /// reusable, and takes the timers of those idle past [`TIMER_KEPT_IDLE`].
    fn sweep(&self, now: Instant) {
        for (_, shelf) in self.lock().iter_mut() {
            shelf.retain_mut(|(c, since)| {
                let idle = now.saturating_duration_since(*since);
                if idle >= TIMER_KEPT_IDLE {
                    c.timer = None;
                }
                idle < self.idle_timeout && c.reusable()
            });
        }
    }

    /// Connects within the connect timeout, and not past `deadline` (the
    /// response's).
    async fn connect(&self, deadline: Instant) -> Result<Box<UpstreamConn>, NativeError> {
        let limit = Instant::now() + self.connect;
        let stream = tokio::time::timeout_at(limit.min(deadline), connect_to(&self.address))
            .await
            .map_err(|_| {
                if deadline < limit {
                    NativeError::ResponseTimeout
                } else {
                    NativeError::ConnectTimeout
                }
            })?
            .map_err(NativeError::Connect)?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(UpstreamConn::new(stream))
    }

    /// Sends `req` (its URI in origin form) on an idle connection or a new
    /// one, and returns once the response head is in, within `timeout`.
    ///
    /// Not an `async fn`: one of those keeps its arguments twice in its state
    /// (as given and as unpacked), and the state is copied whole each time the
    /// caller's future moves. Unpacked here, the request is kept once.
    pub fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<NativeBody>, NativeError>> + Send + '_ {
        let (mut parts, body) = req.into_parts();
        let framing = request_framing(&mut parts, &body);
        let mut body = Some(body);
        async move {
            let framing = framing?;
            let now = Instant::now();
            let deadline = now + timeout;
            let (mut conn, mut reused) = match self.take(now) {
                Some(c) => (c, true),
                // Boxed, like the reconnect below: resolving and connecting make
                // a large future that a request on a pooled connection never needs.
                None => (Box::pin(self.connect(deadline)).await?, false),
            };
            loop {
                conn.out = RequestOut::new(body.take(), framing);
                conn.wbuf.clear();
                h1::head::write_request_head(&mut conn.wbuf, &parts, framing);
                let head = poll_fn(|cx| match conn.poll_head(cx, &parts.method) {
                    Poll::Pending if crate::body::poll_deadline(&mut conn.timer, cx, deadline) => {
                        Poll::Ready(Err(NativeError::ResponseTimeout))
                    }
                    other => other,
                })
                .await;
                match head {
                    Ok(head) => {
                        let decoder = Decoder::new(head.framing);
                        return Ok(Response::from_parts(
                            head.parts,
                            NativeBody {
                                conn: Some(conn),
                                decoder,
                                keep_alive: head.keep_alive,
                                pool: Arc::clone(self),
                            },
                        ));
                    }
                    Err(e)
                        if reused
                            && e.closed_early()
                            && !conn.out.body_read
                            && (!conn.out.wrote_any || parts.method.is_idempotent()) =>
                    {
                        // The upstream had closed this idle connection: nothing
                        // of the request reached it, or repeating it is harmless.
                        tracing::debug!(target = %self.address, error = %e, "pooled connection was closed; sending on a new one");
                        body = conn.out.body.take();
                        conn = Box::pin(self.connect(deadline)).await?;
                        reused = false;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Sweeps `pool` as often as a resting connection's timer is to be taken.
async fn sweep(pool: Weak<H1Pool>) {
    loop {
        tokio::time::sleep(TIMER_KEPT_IDLE).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep(Instant::now());
    }
}

/// Each address the authority names, in order, until one accepts.
async fn connect_to(address: &Authority) -> io::Result<TcpStream> {
    let port = address.port_u16().unwrap_or(80);
    let host = address.host();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        return TcpStream::connect(SocketAddr::new(ip, port)).await;
    }
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))))
}

/// A response body read off a native connection. Reading it drives the
/// connection (and the rest of the request body, if any); once both messages
/// are complete the connection goes back to its pool.
pub struct NativeBody {
    /// `None` once the connection went back to the pool or was given up.
    conn: Option<Box<UpstreamConn>>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Arc<H1Pool>,
}

impl std::fmt::Debug for NativeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeBody")
            .field("decoder", &self.decoder)
            .finish()
    }
}

impl NativeBody {
    /// Back to the pool if both messages are complete and nothing is left
    /// over; otherwise the connection is closed.
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.keep_alive && self.decoder.is_done() && conn.out.done() && conn.rbuf.is_empty() {
            self.pool.put(conn);
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, NativeError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            conn.poll_send(cx)?;
            match self.decoder.decode(&mut conn.rbuf)? {
                Decoded::Data(b) => return Poll::Ready(Some(Ok(b))),
                Decoded::End => return Poll::Ready(None),
                Decoded::NeedMore => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    self.decoder.eof()?;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(NativeError::Io(e)))),
            }
        }
    }
}

impl Body for NativeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match this.poll_body(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if this.decoder.is_done() {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for NativeBody {
    fn drop(&mut self) {
        // Only a connection whose response was read to the end can be
        // reused; one dropped mid-body has bytes in flight and is closed.
        if self.decoder.is_done() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection to a real loopback listener of its own, which
    /// (like its accepted end) is leaked so that the connection stays open
    /// and reusable.
    async fn idle_conn() -> io::Result<Box<UpstreamConn>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (io, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        std::mem::forget(accepted?);
        std::mem::forget(listener);
        Ok(UpstreamConn::new(io?))
    }

    fn current_thread() -> io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }

    #[test]
    fn a_connection_goes_back_to_the_shelf_of_the_worker_that_used_it() -> Result<(), BoxError> {
        let rt = current_thread()?;
        let pool = H1Pool::new(
            "127.0.0.1:1".parse()?,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        rt.block_on(async {
            pool.put(idle_conn().await?);
            io::Result::Ok(())
        })?;
        // Another worker (a runtime of its own on its own thread) finds
        // nothing to take, and what it puts back stays its own.
        let other = Arc::clone(&pool);
        let theirs = std::thread::spawn(move || -> io::Result<(bool, bool)> {
            current_thread()?.block_on(async {
                let found = other.take(Instant::now()).is_some();
                other.put(idle_conn().await?);
                let own = other.take(Instant::now()).is_some();
                other.put(idle_conn().await?);
                Ok((found, own))
            })
        })
        .join()
        .map_err(|_| "the other worker panicked")??;
        assert_eq!(theirs, (false, true), "(took another's, took its own)");
        let mine = rt.block_on(async {
            (
                pool.take(Instant::now()).is_some(),
                pool.take(Instant::now()).is_some(),
            )
        });
        assert_eq!(mine, (true, false), "(took its own, took another's)");
        let shelves = pool.lock();
        assert_eq!(shelves.len(), 2);
        assert_eq!(shelves.iter().map(|(_, s)| s.len()).sum::<usize>(), 1);
        Ok(())
    }

    #[test]
    fn a_connection_resting_a_second_gives_its_timer_back_and_stays_pooled() -> Result<(), BoxError>
    {
        let rt = current_thread()?;
        let pool = H1Pool::new(
            "127.0.0.1:1".parse()?,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let timers = |pool: &H1Pool| {
            let shelves = pool.lock();
            let all = shelves.iter().flat_map(|(_, s)| s.iter());
            all.map(|(c, _)| c.timer.is_some()).collect::<Vec<_>>()
        };
        rt.block_on(async {
            let mut conn = idle_conn().await?;
            conn.timer = Some(Box::pin(tokio::time::sleep(Duration::from_secs(60))));
            pool.put(conn);
            io::Result::Ok(())
        })?;
        pool.sweep(Instant::now());
        assert_eq!(timers(&pool), [true], "a connection just shelved keeps it");
        pool.sweep(Instant::now() + TIMER_KEPT_IDLE);
        assert_eq!(timers(&pool), [false], "after a second on the shelf");
        pool.sweep(Instant::now() + Duration::from_secs(61));
        assert_eq!(timers(&pool), [] as [bool; 0], "past the idle timeout");
        Ok(())
    }
}
