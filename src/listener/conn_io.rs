//! Connection-level client timeouts, enforced in the byte stream under hyper:
//! the request head deadline (slowloris), the keep-alive idle timeout, and
//! the blocked-write deadline (a client that stopped reading).
//!
//! hyper's own `header_read_timeout` starts when it begins waiting for a head,
//! so on its own it cannot tell an idle keep-alive connection from a slow
//! request, and HTTP/2 connections get no idle timeout at all. Here the
//! service counts requests in flight per connection ([`Activity`]), and the
//! stream decides, each time a read has to wait, which clock applies:
//!
//! ```text
//! request in flight           -> none (body and upstream timers apply)
//! first request, or a byte of
//!   a new head has arrived    -> timeouts.client_header, then 408 (if any
//!                                byte came) and close
//! nothing in flight or coming -> timeouts.keepalive, then close (HTTP/1.1)
//!                                or GOAWAY (HTTP/2)
//! ```
//! Clocks are read and timers armed only when a read or write actually has to
//! wait, so a busy connection pays nothing for them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;
use crate::state::Shared;

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Written to an HTTP/1 client whose request head did not arrive in time.
const HEAD_TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 29\r\nconnection: close\r\n\r\n\
request head not sent in time";

/// Requests in flight on one client connection, shared between the service
/// (which enters and leaves) and the connection's stream (which reads it).
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// The connection task, woken when the last request leaves so that its
    /// idle clock starts even if hyper would not read again on its own.
    waker: AtomicWaker,
    /// Asks the connection task for a graceful close (HTTP/2 idle: GOAWAY).
    close: Notify,
}

impl Activity {
    /// A request starts; it is in flight until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlightRequest(Arc::clone(self))
    }

    /// Resolves when the stream has asked for a graceful close.
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }

    /// Whether a request is in flight; if so the task is woken when the last
    /// one leaves. Registering before the second look closes the race with a
    /// guard dropped in between.
    fn busy(&self, cx: &Context<'_>) -> bool {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.waker.register(cx.waker());
        self.in_flight.load(Ordering::SeqCst) > 0
    }
}

/// Keeps a request counted in [`Activity`] until dropped (with the response
/// body, or with the tunnel of an upgrade).
#[derive(Debug)]
pub struct InFlightRequest(Arc<Activity>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.waker.wake();
        }
    }
}

/// The three deadlines, as they were when the connection was accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header: Duration,
    pub keepalive: Duration,
    pub write: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// Matching the HTTP/2 preface; this many bytes matched so far.
    Sniffing(u8),
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head. `bytes`: some of it has arrived.
    Head { bytes: bool },
    /// A request is in flight.
    Busy,
    /// Between requests.
    Idle,
    /// HTTP/2 asked to close after idling; the wait for the close to finish.
    Closing,
}

/// A client byte stream with the connection-level timeouts (module docs).
#[derive(Debug)]
pub struct ClientIo<S> {
    inner: S,
    activity: Arc<Activity>,
    /// For the timeout counters.
    shared: Arc<Shared>,
    timeouts: ConnTimeouts,
    proto: Proto,
    phase: Phase,
    /// `read_timer` holds the deadline of the current phase.
    read_armed: bool,
    read_timer: Option<Pin<Box<Sleep>>>,
    /// `write_timer` holds the deadline of the current blocked write.
    write_armed: bool,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> ClientIo<S> {
    /// `h2`: ALPN already chose HTTP/2; otherwise the first bytes tell.
    pub fn new(
        inner: S,
        activity: Arc<Activity>,
        shared: Arc<Shared>,
        timeouts: ConnTimeouts,
        h2: bool,
    ) -> Self {
        let (proto, phase) = if h2 {
            (Proto::Http2, Phase::Idle)
        } else {
            (Proto::Sniffing(0), Phase::Head { bytes: false })
        };
        Self {
            inner,
            activity,
            shared,
            timeouts,
            proto,
            phase,
            read_armed: false,
            read_timer: None,
            write_armed: false,
            write_timer: None,
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Bytes arrived: learn the protocol from the first ones, and start the
    /// head clock when a new HTTP/1 request begins.
    fn on_bytes(&mut self, got: &[u8]) {
        if let Proto::Sniffing(matched) = self.proto {
            let want = &H2_PREFACE[usize::from(matched)..];
            let n = want.len().min(got.len());
            if got[..n] == want[..n] {
                let matched = matched + n as u8;
                if usize::from(matched) == H2_PREFACE.len() {
                    self.proto = Proto::Http2;
                    self.phase = Phase::Idle;
                    self.read_armed = false;
                } else {
                    self.proto = Proto::Sniffing(matched);
                }
            } else {
                self.proto = Proto::Http1;
            }
        }
        match self.phase {
            // The first request's clock runs from the accept, not the first byte.
            Phase::Head { bytes: false } => self.phase = Phase::Head { bytes: true },
            Phase::Idle if self.proto != Proto::Http2 => {
                self.phase = Phase::Head { bytes: true };
                self.read_armed = false;
            }
            _ => {}
        }
    }

    /// A read had to wait: applies the clock of the current phase.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.busy(cx) {
            if self.phase != Phase::Busy {
                self.phase = Phase::Busy;
                self.read_armed = false;
            }
            return Poll::Pending;
        }
        let limit = match self.phase {
            Phase::Busy => {
                self.phase = Phase::Idle;
                self.read_armed = false;
                self.timeouts.keepalive
            }
            Phase::Idle => self.timeouts.keepalive,
            Phase::Head { .. } | Phase::Closing => self.timeouts.header,
        };
        if !arm_and_poll(&mut self.read_timer, &mut self.read_armed, limit, cx) {
            return Poll::Pending;
        }
        self.read_armed = false;
        match self.phase {
            Phase::Idle => {
                self.metrics().client_timeouts[2].inc();
                if self.proto == Proto::Http2 {
                    // The task sends GOAWAY; if the close has not finished
                    // within the header timeout, the stream ends it.
                    self.phase = Phase::Closing;
                    self.activity.close.notify_one();
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    // End of stream on an idle HTTP/1 connection: hyper
                    // closes it cleanly.
                    Poll::Ready(Ok(()))
                }
            }
            Phase::Head { bytes } => {
                self.metrics().client_timeouts[0].inc();
                self.phase = Phase::Closing;
                if !bytes {
                    // Nothing was sent (a browser's preconnect, or a silent
                    // attacker): close without an answer.
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received within timeouts.client_header",
                )))
            }
            Phase::Closing | Phase::Busy => Poll::Ready(Ok(())),
        }
    }
}

/// Arms `timer` for `limit` from now unless already armed, and polls it.
/// True when it has fired.
fn arm_and_poll(
    timer: &mut Option<Pin<Box<Sleep>>>,
    armed: &mut bool,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    if !*armed {
        let deadline = Instant::now() + limit;
        match timer {
            Some(t) => t.as_mut().reset(deadline),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        *armed = true;
    }
    timer
        .as_mut()
        .is_some_and(|t| t.as_mut().poll(cx).is_ready())
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// The write side of the timeout: a blocked write arms the clock, any
    /// progress disarms it, and past `client_write` the write fails.
    fn poll_write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_armed = false;
            return polled;
        }
        let limit = self.timeouts.write;
        if !arm_and_poll(&mut self.write_timer, &mut self.write_armed, limit, cx) {
            return Poll::Pending;
        }
        self.write_armed = false;
        self.metrics().client_timeouts[3].inc();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not read within timeouts.client_write",
        )))
    }

    /// Best effort: the 408 goes out if the socket takes it now.
    fn send_head_timeout(&mut self, cx: &mut Context<'_>) {
        if let Poll::Ready(Ok(_)) = Pin::new(&mut self.inner).poll_write(cx, HEAD_TIMEOUT_RESPONSE)
        {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    this.on_bytes(got);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let polled = this.poll_read_deadline(cx);
                if let Poll::Ready(Err(_)) = &polled {
                    this.send_head_timeout(cx);
                }
                polled
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.poll_write_deadline(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.poll_write_deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.poll_write_deadline(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.poll_write_deadline(cx, polled)
    }
}
