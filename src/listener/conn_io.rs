//! Connection-level client timeouts, enforced in the byte stream under hyper:
//! the request head deadline (slowloris), the keep-alive idle timeout, and
//! the blocked-write deadline (a client that stopped reading).
//!
//! hyper's own `header_read_timeout` starts when it begins waiting for a head,
//! so on its own it cannot tell an idle keep-alive connection from a slow
//! request, and HTTP/2 connections get no idle timeout at all. Here the
//! service counts requests in flight per connection ([`crate::proxy::Activity`]), and the
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
//!
//! **Parking.** hyper keeps an HTTP/1 connection's read and write buffers (16
//! KiB and more) for as long as the connection lives, idle or not. So an
//! HTTP/1 connection idle for [`PARK_AFTER`] with nothing buffered is parked:
//! the stream tells hyper "end of stream", hyper finishes the connection
//! cleanly (no bytes written, and the socket is not shut down: see
//! `poll_shutdown`), and the bare socket goes back to the connection task
//! through a [`ParkSlot`]. The task waits for the next byte, within what is
//! left of the phase's deadline, and serves the connection afresh. A parked
//! connection costs its socket and a small task, not hyper's buffers.
//!
//! "Nothing buffered" is known from the bytes that went through: the last four
//! read were the `\r\n\r\n` that ends a request head (or nothing was read
//! yet). A connection that ended on anything else, such as a pipelined request
//! cut mid-head or a body hyper is still draining, is not parked and waits out
//! its deadline as before.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::ClientTimeout;
use crate::metrics::Metrics;
use crate::proxy::Activity;
use crate::state::Shared;

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an HTTP/1 connection idles with hyper's buffers before it is
/// parked (module docs). Long enough that a client keeping its connection busy
/// never pays for the rebuild; short enough that idle connections cost little.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// The end of a request head: when the last bytes read were these, hyper's
/// read buffer holds no part of a next request.
const HEAD_END: u32 = u32::from_be_bytes(*b"\r\n\r\n");

/// Written to an HTTP/1 client whose request head did not arrive in time.
pub(super) const HEAD_TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 29\r\nconnection: close\r\n\r\n\
request head not sent in time";

/// The three deadlines, as they were when the connection was accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header: Duration,
    pub keepalive: Duration,
    pub write: Duration,
}

impl ConnTimeouts {
    pub fn of(t: &crate::config::Timeouts) -> Self {
        Self {
            header: t.client_header,
            keepalive: t.keepalive,
            write: t.client_write,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// Matching the HTTP/2 preface; this many bytes matched so far.
    Sniffing(u8),
    Http1,
    Http2,
}

/// What a parked connection was waiting for, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkedFor {
    /// The first request head (timeouts.client_header from the accept).
    FirstHead,
    /// The next request on a keep-alive connection (timeouts.keepalive).
    NextRequest,
}

/// A parked connection, handed from the stream to the connection task.
#[derive(Debug)]
pub struct Parked<S> {
    pub io: S,
    pub waiting: ParkedFor,
    /// When the phase's deadline runs out.
    pub deadline: Instant,
}

/// Where a stream leaves its socket when it parks; the connection task takes
/// it once hyper has finished. Touched only when a connection parks.
pub type ParkSlot<S> = Arc<Mutex<Option<Parked<S>>>>;

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
    /// `None` only once parked and dropped (the socket went to the slot).
    inner: Option<S>,
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
    /// The last four bytes read, oldest first (`HEAD_END` when a head ended).
    tail: u32,
    /// Some byte has been read on this connection.
    read_any: bool,
    /// The read clock runs to `phase_deadline`; `read_timer` was first set
    /// to the park point before it.
    park_pending: bool,
    phase_deadline: Option<Instant>,
    /// Told hyper "end of stream" to park; the socket goes to `slot` on drop.
    parked: Option<ParkedFor>,
    slot: Option<ParkSlot<S>>,
    /// Served again after parking: what it waited for and the deadline left.
    resumed: Option<(ParkedFor, Instant)>,
    /// ALPN chose `h2`: the preface is due within the head deadline like
    /// any first request, but a late one gets no HTTP/1 408, just the close.
    alpn_h2: bool,
}

impl<S> ClientIo<S> {
    /// `h2`: ALPN already chose HTTP/2; otherwise the first bytes tell.
    /// `slot`: where to park the socket (none: never park).
    pub fn new(
        inner: S,
        activity: Arc<Activity>,
        shared: Arc<Shared>,
        timeouts: ConnTimeouts,
        alpn_h2: bool,
        slot: Option<ParkSlot<S>>,
    ) -> Self {
        // Every connection starts on the head clock, HTTP/2 by ALPN too: its
        // preface must arrive in time (RFC 9113 §3.4), as a first head must.
        let (proto, phase) = (Proto::Sniffing(0), Phase::Head { bytes: false });
        Self {
            alpn_h2,
            inner: Some(inner),
            activity,
            shared,
            timeouts,
            proto,
            phase,
            read_armed: false,
            read_timer: None,
            write_armed: false,
            write_timer: None,
            tail: 0,
            read_any: false,
            park_pending: false,
            phase_deadline: None,
            parked: None,
            slot,
            resumed: None,
        }
    }

    /// A parked HTTP/1 connection that became readable, served afresh. Once
    /// bytes arrive the head clock starts as it would have without parking.
    pub fn resume(
        parked: Parked<S>,
        activity: Arc<Activity>,
        shared: Arc<Shared>,
        timeouts: ConnTimeouts,
        slot: ParkSlot<S>,
    ) -> Self {
        let mut io = Self::new(parked.io, activity, shared, timeouts, false, Some(slot));
        if parked.waiting == ParkedFor::NextRequest {
            io.proto = Proto::Http1;
            io.phase = Phase::Idle;
            io.read_any = true;
            io.tail = HEAD_END;
        }
        // The phase goes on to its old deadline (a wake-up with no request
        // behind it does not buy a fresh one) and does not park again. The
        // timer is armed only if a read has to wait, as usual.
        io.resumed = Some((parked.waiting, parked.deadline));
        io
    }

    fn inner(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection parked"))
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Bytes arrived: learn the protocol from the first ones, and start the
    /// head clock when a new HTTP/1 request begins.
    fn on_bytes(&mut self, got: &[u8]) {
        self.read_any = true;
        self.tail = match got {
            [.., a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => got.iter().fold(self.tail, |t, &b| (t << 8) | u32::from(b)),
        };
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
                // A new head gets a fresh clock, parked before or not.
                self.resumed = None;
            }
            _ => {}
        }
    }

    /// Whether the current phase may park, and as what: HTTP/1 (or not yet
    /// known, with nothing read), between requests or before the first, with a
    /// slot to park in.
    fn parkable_phase(&self) -> Option<ParkedFor> {
        if self.slot.is_none() || self.proto == Proto::Http2 {
            return None;
        }
        match self.phase {
            Phase::Idle => Some(ParkedFor::NextRequest),
            Phase::Head { bytes: false } if !self.read_any => Some(ParkedFor::FirstHead),
            _ => None,
        }
    }

    fn read_fired(&mut self, cx: &mut Context<'_>) -> bool {
        self.read_timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
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
                // A request came and went since it was served again.
                self.resumed = None;
                self.timeouts.keepalive
            }
            Phase::Idle => self.timeouts.keepalive,
            Phase::Head { .. } | Phase::Closing => self.timeouts.header,
        };
        if !self.read_armed {
            let now = Instant::now();
            let resumed = self.resumed.map(|(_, deadline)| deadline);
            let deadline = resumed.unwrap_or(now + limit);
            self.phase_deadline = Some(deadline);
            self.park_pending =
                resumed.is_none() && PARK_AFTER < limit && self.parkable_phase().is_some();
            let first = if self.park_pending {
                now + PARK_AFTER
            } else {
                deadline
            };
            match &mut self.read_timer {
                Some(t) => t.as_mut().reset(first),
                None => self.read_timer = Some(Box::pin(tokio::time::sleep_until(first))),
            }
            self.read_armed = true;
        }
        if !self.read_fired(cx) {
            return Poll::Pending;
        }
        if self.park_pending {
            self.park_pending = false;
            if let Some(waiting) = self.parkable_phase()
                && (!self.read_any || self.tail == HEAD_END)
            {
                // End of stream to hyper, which finishes cleanly; the
                // socket goes to the slot when hyper drops the stream.
                self.parked = Some(waiting);
                return Poll::Ready(Ok(()));
            }
            // Not safe to park: wait out the rest of the phase.
            if let (Some(t), Some(deadline)) = (&mut self.read_timer, self.phase_deadline) {
                t.as_mut().reset(deadline);
            }
            if !self.read_fired(cx) {
                return Poll::Pending;
            }
        }
        self.read_armed = false;
        match self.phase {
            Phase::Idle => {
                self.metrics().client_timeouts[ClientTimeout::Keepalive].inc();
                if self.proto == Proto::Http2 {
                    // The task sends GOAWAY; if the close has not finished
                    // within the header timeout, the stream ends it.
                    self.phase = Phase::Closing;
                    self.activity.request_close();
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    // End of stream on an idle HTTP/1 connection: hyper
                    // closes it cleanly.
                    Poll::Ready(Ok(()))
                }
            }
            Phase::Head { bytes } => {
                self.metrics().client_timeouts[ClientTimeout::Header].inc();
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
        self.metrics().client_timeouts[ClientTimeout::Write].inc();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not read within timeouts.client_write",
        )))
    }

    /// Best effort: the 408 goes out if the socket takes it now (never on
    /// a connection that ALPN made HTTP/2).
    fn send_head_timeout(&mut self, cx: &mut Context<'_>) {
        if self.alpn_h2 {
            return;
        }
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        if let Poll::Ready(Ok(_)) = Pin::new(&mut *inner).poll_write(cx, HEAD_TIMEOUT_RESPONSE) {
            let _ = Pin::new(inner).poll_flush(cx);
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
        if this.parked.is_some() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(this.inner()?).poll_read(cx, buf) {
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
        let polled = Pin::new(this.inner()?).poll_write(cx, buf);
        this.poll_write_deadline(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(this.inner()?).poll_write_vectored(cx, bufs);
        this.poll_write_deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(this.inner()?).poll_flush(cx);
        this.poll_write_deadline(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked.is_some() {
            // Parking: hyper is done with the connection, the client is not.
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(this.inner()?).poll_shutdown(cx);
        this.poll_write_deadline(cx, polled)
    }
}

impl<S> Drop for ClientIo<S> {
    fn drop(&mut self) {
        let (Some(waiting), Some(slot)) = (self.parked, self.slot.take()) else {
            return;
        };
        let (Some(io), Some(deadline)) = (self.inner.take(), self.phase_deadline) else {
            return;
        };
        if let Ok(mut parked) = slot.lock() {
            *parked = Some(Parked {
                io,
                waiting,
                deadline,
            });
        }
    }
}
