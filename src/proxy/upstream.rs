//! Pooled HTTP/1.1 connections to cleartext upstreams, driven by the request
//! that uses them.
//!
//! hyper-util's pooled client runs a task per upstream connection: every
//! request crosses a channel into that task and a oneshot back, the response
//! body is read by the task and handed over once more, and the pool is a map
//! keyed by scheme and authority behind one mutex. Here the connection's
//! future is polled by the request future while it waits for the response
//! head, then by the response body as the client reads it; when the body has
//! ended the connection goes back on its own target's idle stack. No task runs
//! for a connection. An idle connection is checked when it is taken (an
//! upstream that closed it shows as a finished connection future), dropped once
//! older than `timeouts.upstream_idle`, and swept by a timer when traffic stops.
//!
//! TLS and HTTP/2 groups and upgrade requests keep the hyper-util client.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::UpstreamBody;

/// Idle connections kept per target, as the hyper-util pool was configured.
const MAX_IDLE: usize = 1024;

type Conn = http1::Connection<TokioIo<TcpStream>, UpstreamBody>;

/// One upstream connection: the handle requests go in by, and the future that
/// does its reading and writing (`None` once it has finished).
struct H1Conn {
    sender: http1::SendRequest<UpstreamBody>,
    /// Boxed once per connection: its buffers make it large, and it moves in
    /// and out of the idle stack.
    conn: Option<Pin<Box<Conn>>>,
}

impl H1Conn {
    /// Drives the connection's IO. Ready once the connection is over.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        match conn.as_mut().poll(cx) {
            Poll::Pending => false,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                // Dropping it also fails a request it never took.
                self.conn = None;
                true
            }
        }
    }

    /// Whether it can take another request now, checked without waiting: a
    /// close or a reset that already arrived shows here.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !self.drive(&mut cx) && self.sender.is_ready()
    }
}

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

/// The idle connections of one cleartext HTTP/1.1 target.
pub struct H1Pool {
    address: Authority,
    connect: Duration,
    idle_timeout: Duration,
    /// Most recently used last: taken from the top, so the bottom ages out.
    /// Held for a push or a pop only, never across IO.
    idle: Mutex<Vec<(H1Conn, Instant)>>,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("address", &self.address)
            .field("idle", &self.lock().len())
            .finish()
    }
}

impl H1Pool {
    /// A pool for `address`; inside a runtime, also the timer that closes
    /// connections left idle after traffic stops.
    pub fn new(address: Authority, connect: Duration, idle_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self {
            address,
            connect,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            let every = (idle_timeout / 2).max(Duration::from_secs(1));
            rt.spawn(sweep(weak, every));
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(H1Conn, Instant)>> {
        match self.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn take(&self) -> Option<H1Conn> {
        let now = Instant::now();
        loop {
            let (mut conn, since) = self.lock().pop()?;
            if now.duration_since(since) >= self.idle_timeout {
                // Everything under it is older still.
                self.lock().clear();
                return None;
            }
            if conn.reusable() {
                return Some(conn);
            }
        }
    }

    fn put(&self, conn: H1Conn) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain_mut(|(c, since)| {
            now.duration_since(*since) < self.idle_timeout && c.reusable()
        });
    }

    async fn connect(&self) -> Result<H1Conn, InlineError> {
        let stream = tokio::time::timeout(self.connect, connect_to(&self.address))
            .await
            .map_err(|_| InlineError::ConnectTimeout)?
            .map_err(InlineError::Connect)?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(InlineError::Http)?;
        Ok(H1Conn {
            sender,
            conn: Some(Box::pin(conn)),
        })
    }

    /// Sends `req` on an idle connection, or a new one. A request an idle
    /// connection turned out unable to take (closed as it was picked) is sent
    /// again on a new connection: it was never written, so this is safe for
    /// any method.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<InlineBody>, InlineError> {
        let (mut conn, mut reused) = match self.take() {
            Some(c) => (c, true),
            // Boxed, like the reconnect below: resolving and connecting make
            // a large future that a request on a pooled connection never needs.
            None => (Box::pin(self.connect()).await?, false),
        };
        let mut req = req;
        loop {
            let mut sent = std::pin::pin!(conn.sender.try_send_request(req));
            let result = poll_fn(|cx| {
                if let Poll::Ready(r) = sent.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if conn.drive(cx) {
                    // The connection is over; the request's answer (an error)
                    // is ready now that the connection has been dropped.
                    return sent.as_mut().poll(cx);
                }
                Poll::Pending
            })
            .await;
            match result {
                Ok(resp) => {
                    let (head, body) = resp.into_parts();
                    return Ok(Response::from_parts(
                        head,
                        InlineBody {
                            body,
                            ended: false,
                            conn: Some(conn),
                            pool: Arc::clone(self),
                        },
                    ));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        req = unsent;
                        conn = Box::pin(self.connect()).await?;
                        reused = false;
                    }
                    _ => return Err(InlineError::Http(e.into_error())),
                },
            }
        }
    }
}

async fn sweep(pool: Weak<H1Pool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}

/// Each address the authority names, in order, until one accepts.
async fn connect_to(address: &Authority) -> std::io::Result<TcpStream> {
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
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"))
    }))
}

/// A response body read off an inline connection. Polling it drives the
/// connection; once it has ended (and the connection can take another
/// request), dropping it returns the connection to its pool.
pub struct InlineBody {
    body: Incoming,
    /// Set when the body said it had ended: a chunked body's `is_end_stream`
    /// stays false even then.
    ended: bool,
    conn: Option<H1Conn>,
    pool: Arc<H1Pool>,
}

impl std::fmt::Debug for InlineBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineBody")
            .field("body", &self.body)
            .finish()
    }
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // Read what is there, ask for more (polling the body signals demand),
        // and let the connection answer that demand: a body that fits in a
        // read or two is done in one call, and otherwise both the socket and
        // the body channel hold this task's waker.
        for _ in 0..2 {
            if let Some(c) = this.conn.as_mut() {
                c.drive(cx);
            }
            if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
                this.ended |= frame.is_none();
                return Poll::Ready(frame);
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        // Only a connection whose response was read to the end can be reused;
        // one dropped mid-body has bytes in flight and is closed.
        if !(self.ended || self.body.is_end_stream()) {
            return;
        }
        if let Some(mut conn) = self.conn.take() {
            if conn.reusable() {
                self.pool.put(conn);
            }
        }
    }
}
