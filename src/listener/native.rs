//! The proxy's own HTTP/1.1 server, for cleartext client connections: the
//! request head parsed straight off the connection's read buffer
//! ([`crate::h1`]), the request path run on it, and the response head and
//! body written back with as few writes as the body allows (a small response
//! goes out head and body in one). One task per connection, no dispatcher,
//! no channel for requests without a body.
//!
//! ```text
//! read head -> native? --no--> hand over to hyper (bytes read so far first)
//!              | yes
//!              v
//!   proxy.handle(request) <- body fed from the socket through a pipe
//!              v
//!   write head + body (Content-Length | chunked | close) -> next request
//! ```
//! Whatever this server does not do itself goes to hyper's, with the bytes
//! already read put in front of the socket: upgrades (WebSocket), CONNECT,
//! HTTP/2 with prior knowledge, transfer codings other than a lone `chunked`,
//! an unknown `Expect`, and heads httparse refuses or that have more fields
//! than it parses here (hyper answers those 400 or 431, as before). The rest
//! of that connection is hyper's.
//!
//! Deadlines are those of [`super::conn_io`]: `timeouts.client_header` for a
//! head (from the accept for the first, from its first byte for later ones;
//! 408 if a byte came), `timeouts.keepalive` between requests, and
//! `timeouts.client_write` for a blocked write. One timer serves them all and
//! is moved only when a deadline comes nearer: a busy connection resets it
//! about once a second. A connection idle for [`super::PARK_AFTER`] gives its
//! buffers back and counts as parked until its next byte.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Version};
use http_body::{Body, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::conn_io::{ConnTimeouts, HEAD_TIMEOUT_RESPONSE, PARK_AFTER};
use super::lot::{Lot, Resting, close_idle};
use super::{ClientStream, ConnTask, OpenConn};
use crate::batch::{Side, Turn};
use crate::body::{PipeError, PipeWriter, RequestBody, Room};
use crate::h1::head::write_response_head;
use crate::h1::{self, Decoded, Decoder, Encoder, Framing};
use crate::metrics::ClientTimeout;
use crate::proxy::{Proxy, ProxyBody};
use crate::state::Shared;

/// Body data up to this size is copied behind the head (one write); larger
/// frames are written from where they are.
const COPY_MAX: usize = 8 * 1024;
/// How long a closing connection keeps reading (and dropping) what the client
/// still sends, so that its answer is not lost to a reset.
const LINGER: Duration = Duration::from_secs(2);

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One client connection served natively.
struct ClientConn {
    io: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Where parsed header fields sit, reused from head to head.
    spans: Vec<h1::head::Span>,
    /// One timer for every deadline; armed no later than the nearest one.
    timer: Option<Pin<Box<Sleep>>>,
    /// A blocked write's deadline.
    write_deadline: Option<Instant>,
    shared: Arc<Shared>,
    proxy: Proxy,
    timeouts: ConnTimeouts,
    max_headers: usize,
}

/// How waiting for a head ended.
// Returned once per request and taken apart at once; boxing the head would
// cost an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Head {
    Ready(h1::head::RequestHead),
    /// Not for this server: hyper takes the connection.
    HandOver,
    /// The client closed (or the connection failed) between requests.
    Closed,
    /// Nothing came in time.
    Quiet,
    /// Part of a head came, not all of it in time.
    Slow,
    Shutdown,
    /// Idle past the park point with nothing buffered; the wait's deadline.
    Park(Instant),
}

/// What to do after a request.
enum Next {
    Keep,
    Close {
        linger: bool,
    },
    /// Hand the connection (and these bytes, read but not used) to hyper.
    HandOver(Bytes),
    /// Idle: park until this deadline.
    Park(Instant),
}

/// An active connection: what its task keeps.
struct ActiveConn {
    conn: ClientConn,
    task: ConnTask,
    lot: Arc<Lot>,
    peer: SocketAddr,
    open: OpenConn,
    accepted: Instant,
    /// No request has been served yet.
    first: bool,
    /// Woken from parking: the wait goes on to this deadline.
    resumed: Option<Instant>,
}

impl ClientConn {
    fn new(
        io: TcpStream,
        shared: Arc<Shared>,
        peer: SocketAddr,
        timeouts: ConnTimeouts,
        max_headers: usize,
    ) -> Self {
        let proxy = Proxy::new(Arc::clone(&shared), peer, None, Arc::default());
        Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            spans: Vec::new(),
            timer: None,
            write_deadline: None,
            shared,
            proxy,
            timeouts,
            max_headers,
        }
    }
}

/// Serves a cleartext client connection; `lot` is where it parks.
pub(super) fn spawn(
    task: ConnTask,
    lot: Arc<Lot>,
    io: TcpStream,
    peer: SocketAddr,
    open: OpenConn,
    accepted: Instant,
) {
    let shared = Arc::clone(&task.serving.shared);
    let snap = shared.snapshot();
    let timeouts = ConnTimeouts::of(&snap.config.timeouts);
    let max_headers = snap.config.limits.max_headers as usize + 1;
    drop(snap);
    tokio::spawn(active(ActiveConn {
        conn: ClientConn::new(io, shared, peer, timeouts, max_headers),
        task,
        lot,
        peer,
        open,
        accepted,
        first: true,
        resumed: None,
    }));
}

/// Serves a parked connection again: its socket became readable.
pub(super) fn resume(rest: Resting, lot: &Arc<Lot>, deadline: Instant, task: &ConnTask) {
    let shared = Arc::clone(&task.serving.shared);
    let conn = ClientConn::new(
        rest.io,
        shared,
        rest.peer,
        rest.timeouts,
        rest.max_headers as usize,
    );
    tokio::spawn(active(ActiveConn {
        conn,
        task: task.clone(),
        lot: Arc::clone(lot),
        peer: rest.peer,
        open: rest.open,
        accepted: rest.accepted,
        first: rest.first,
        resumed: Some(deadline),
    }));
}

/// Serves requests until the connection ends, is handed over, or parks.
/// The request path's future lives inside this task's (no allocation or
/// copy per request); parking moves the connection to a small task instead,
/// so an idle connection does not keep this one's room.
async fn active(mut s: ActiveConn) {
    {
        let end = {
            let conn = &mut s.conn;
            let mut stop = Stop {
                fut: pin!(super::stopping(&mut s.task.shutdown)),
                done: false,
            };
            loop {
                let resumed = s.resumed.take();
                let head = conn
                    .next_head(s.first, s.accepted, resumed, &mut stop)
                    .await;
                let next = match head {
                    Head::Ready(head) => match native_framing(&head.parts) {
                        Some(framing) => conn.serve(head, framing, &mut stop).await,
                        None => Next::HandOver(joined(head.raw, &mut conn.rbuf)),
                    },
                    Head::HandOver => Next::HandOver(conn.rbuf.split().freeze()),
                    Head::Park(deadline) => Next::Park(deadline),
                    Head::Closed | Head::Shutdown => Next::Close { linger: false },
                    Head::Quiet => {
                        conn.count_timeout(if s.first {
                            ClientTimeout::Header
                        } else {
                            ClientTimeout::Keepalive
                        });
                        Next::Close { linger: false }
                    }
                    Head::Slow => {
                        conn.count_timeout(ClientTimeout::Header);
                        crate::proxy::log_refused_head(
                            &conn.shared,
                            s.peer.ip(),
                            408,
                            "header_timeout",
                        );
                        conn.wbuf.clear();
                        conn.wbuf.extend_from_slice(HEAD_TIMEOUT_RESPONSE);
                        let _ = tokio::time::timeout(conn.timeouts.write, conn.flush()).await;
                        Next::Close { linger: true }
                    }
                };
                match next {
                    Next::Keep => s.first = false,
                    other => break other,
                }
            }
        };
        match end {
            Next::HandOver(read) => {
                let io = Prefixed {
                    read,
                    inner: s.conn.io,
                };
                super::serve_io(s.task, io, None, s.peer, s.open, None);
            }
            Next::Park(deadline) => {
                let rest = Resting {
                    io: s.conn.io,
                    open: s.open,
                    peer: s.peer,
                    accepted: s.accepted,
                    first: s.first,
                    timeouts: s.conn.timeouts,
                    max_headers: s.conn.max_headers as u32,
                };
                let parked = &s.conn.shared.metrics.parked_connections;
                parked.inc();
                if let Some(rest) = s.lot.park(rest, deadline) {
                    parked.dec();
                    close_idle(rest.io);
                }
            }
            Next::Close { linger } => s.conn.close(linger).await,
            Next::Keep => {}
        }
    }
}

/// A head's bytes and what followed them, as one buffer.
fn joined(head: Bytes, rest: &mut BytesMut) -> Bytes {
    if rest.is_empty() {
        return head;
    }
    let mut all = BytesMut::with_capacity(head.len() + rest.len());
    all.extend_from_slice(&head);
    all.extend_from_slice(rest);
    rest.clear();
    all.freeze()
}

/// The request body's framing, when this server takes the request; `None`
/// hands the connection to hyper (module docs).
fn native_framing(parts: &http::request::Parts) -> Option<Framing> {
    let h = &parts.headers;
    if parts.method == Method::CONNECT || h.contains_key(header::UPGRADE) {
        return None;
    }
    if let Some(expect) = h.get(header::EXPECT)
        && (parts.version != Version::HTTP_11
            || !expect.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        return None;
    }
    let mut te = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(coding) = te.next() {
        let lone_chunked = te.next().is_none()
            && coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
            && !h.contains_key(header::CONTENT_LENGTH)
            && parts.version == Version::HTTP_11;
        return lone_chunked.then_some(Framing::Chunked);
    }
    match h1::head::request_content_length(h) {
        Ok(None | Some(0)) => Some(Framing::Empty),
        Ok(Some(n)) => Some(Framing::Length(n)),
        Err(_) => None,
    }
}

/// The shutdown signal, polled where it may matter; stays stopped once it is.
struct Stop<'a, F> {
    fut: Pin<&'a mut F>,
    done: bool,
}

impl<F: Future<Output = ()>> Stop<'_, F> {
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done && self.fut.as_mut().poll(cx).is_ready() {
            self.done = true;
        }
        self.done
    }
}

/// The request body on its way from the socket into the request path.
struct Feeder {
    pipe: PipeWriter,
    decoder: Decoder,
    /// `Expect: 100-continue` not yet answered.
    continue_owed: bool,
    /// Nobody reads the body any more (the request path let go of it).
    abandoned: bool,
}

impl Feeder {
    /// Every byte of the body has been read off the connection.
    fn complete(&self) -> bool {
        self.decoder.is_done()
    }
}

/// The response on its way out.
struct ResponseOut {
    body: ProxyBody,
    encoder: Encoder,
    /// Body data too large to copy, written after `wbuf`.
    data: Bytes,
    /// The body did not match its framing (or failed): close after it.
    broken: bool,
    /// The first write waits for its turn in the thread's batch.
    turn: Turn,
}

impl ResponseOut {
    fn new(body: ProxyBody, framing: Framing) -> Self {
        Self {
            body,
            encoder: Encoder::new(framing),
            data: Bytes::new(),
            broken: false,
            turn: Turn::default(),
        }
    }
}

impl ClientConn {
    fn count_timeout(&self, which: ClientTimeout) {
        self.shared.metrics.client_timeouts[which].inc();
    }

    /// Reads what the socket has. `Ok(0)`: the client closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        h1::io::poll_fill(&mut self.io, cx, &mut self.rbuf)
    }

    /// True once `target` has passed (`proxy::poll_deadline`: the one timer
    /// moves only when a deadline comes nearer).
    fn poll_until(&mut self, cx: &mut Context<'_>, target: Instant) -> bool {
        crate::body::poll_deadline(&mut self.timer, cx, target)
    }

    /// Waits for a whole request head (module docs for the deadlines).
    /// `resumed`: served again after parking, with this deadline still on.
    async fn next_head(
        &mut self,
        first: bool,
        accepted: Instant,
        resumed: Option<Instant>,
        stop: &mut Stop<'_, impl Future<Output = ()>>,
    ) -> Head {
        // (deadline, park point), fixed when the wait first has to wait.
        let mut clock: Option<(Instant, Option<Instant>)> = resumed.map(|d| (d, None));
        let mut bytes = !self.rbuf.is_empty();
        poll_fn(|cx| {
            loop {
                if !self.rbuf.is_empty() {
                    match h1::head::parse_request(&mut self.rbuf, self.max_headers, &mut self.spans)
                    {
                        Ok(Some(head)) => return Poll::Ready(Head::Ready(head)),
                        Ok(None) => {}
                        Err(_) => return Poll::Ready(Head::HandOver),
                    }
                } else if stop.poll_stopped(cx) {
                    return Poll::Ready(Head::Shutdown);
                }
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Head::Closed),
                    Poll::Ready(Ok(_)) => {
                        if !bytes {
                            bytes = true;
                            // A head has begun: its own clock from now on
                            // (the first request's still runs from the accept).
                            clock = None;
                        }
                        continue;
                    }
                    Poll::Pending => {}
                }
                let now = Instant::now();
                let (deadline, park_at) = *clock.get_or_insert_with(|| {
                    let limit = if bytes || first {
                        self.timeouts.header
                    } else {
                        self.timeouts.keepalive
                    };
                    let deadline = if first { accepted + limit } else { now + limit };
                    let park = (!bytes && PARK_AFTER < limit).then(|| now + PARK_AFTER);
                    (deadline, park)
                });
                let next = park_at.filter(|&p| p < deadline).unwrap_or(deadline);
                if !self.poll_until(cx, next) {
                    return Poll::Pending;
                }
                if next == deadline {
                    return Poll::Ready(if bytes { Head::Slow } else { Head::Quiet });
                }
                if self.rbuf.is_empty() {
                    // Idle past the park point: give the buffers back.
                    self.rbuf = BytesMut::new();
                    self.wbuf = BytesMut::new();
                    return Poll::Ready(Head::Park(deadline));
                }
                clock = Some((deadline, None));
            }
        })
        .await
    }

    /// Serves one request the module takes.
    ///
    /// Not an `async fn`: the head is unpacked before the future exists, so
    /// the future (copied into the connection's task once per request) does
    /// not hold it twice.
    fn serve<'a>(
        &'a mut self,
        head: h1::head::RequestHead,
        framing: Framing,
        stop: &'a mut Stop<'_, impl Future<Output = ()>>,
    ) -> impl Future<Output = Next> + 'a {
        let h1::head::RequestHead { mut parts, .. } = head;
        let version = parts.version;
        let head_only = parts.method == Method::HEAD;
        let wants_keep = h1::head::persistent(version, &parts.headers);
        let (mut feeder, body) = match framing {
            Framing::Empty => (None, RequestBody::Empty),
            f => {
                let hint = match f {
                    Framing::Length(n) => SizeHint::with_exact(n),
                    _ => SizeHint::default(),
                };
                let (pipe, reader) = crate::body::pipe(hint);
                let feeder = Feeder {
                    pipe,
                    decoder: Decoder::with_max_trailers(f, self.max_headers),
                    continue_owed: parts.headers.contains_key(header::EXPECT),
                    abandoned: false,
                };
                (Some(feeder), RequestBody::Native(reader))
            }
        };
        // The upstream is not asked to expect anything: this hop answers.
        parts.headers.remove(header::EXPECT);
        async move {
            let mut handling = pin!(self.proxy.serve(Request::from_parts(parts, body)));
            let resp = poll_fn(|cx| {
                if self.poll_fed_or_gone(cx, feeder.as_mut()) {
                    return Poll::Ready(None);
                }
                handling.as_mut().poll(cx).map(Some)
            })
            .await;
            let Some(resp) = resp else {
                // The client left before its answer: the upstream exchange is
                // dropped with it.
                return Next::Close { linger: false };
            };
            let (head, mut body) = resp.into_parts();
            let stopping = poll_fn(|cx| Poll::Ready(stop.poll_stopped(cx))).await;
            let coded = head.headers.contains_key(header::TRANSFER_ENCODING);
            let mut framing =
                client_framing(head.status, &head.headers, &body, head_only, version, coded);
            // A small upstream answer is usually whole in hand by now: then it
            // goes with a Content-Length (which HTTP/1.0 clients need to keep
            // their connection) and in one write.
            let mut first = None;
            let mut ended = false;
            if !coded && matches!(framing, Framing::Chunked | Framing::Close) {
                match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                    Poll::Ready(None) => {
                        framing = Framing::Length(0);
                        ended = true;
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(d) = frame.into_data() {
                            if body.is_end_stream() {
                                framing = Framing::Length(d.len() as u64);
                            }
                            first = Some(d);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // Nothing is written yet: the client gets a 502, not a
                        // response cut short.
                        tracing::debug!(error = %e, "upstream body failed before its first byte");
                        let resp = crate::proxy::error_response(
                            crate::proxy::ProxyError::UpstreamProtocol,
                        );
                        let (h, b) = resp.into_parts();
                        let f = client_framing(h.status, &h.headers, &b, head_only, version, false);
                        write_response_head(
                            &mut self.wbuf,
                            h.status,
                            &h.headers,
                            f,
                            version,
                            false,
                        );
                        let mut out = ResponseOut::new(b, f);
                        let _ = poll_fn(|cx| self.poll_respond(cx, &mut out)).await;
                        return Next::Close { linger: false };
                    }
                    Poll::Pending => {}
                }
            }
            let keep = wants_keep
                && !stopping
                && framing != Framing::Close
                && h1::head::persistent(Version::HTTP_11, &head.headers)
                && feeder.as_ref().is_none_or(Feeder::complete);
            write_response_head(
                &mut self.wbuf,
                head.status,
                &head.headers,
                framing,
                version,
                keep,
            );
            let mut out = ResponseOut::new(body, framing);
            if let Some(d) = first {
                self.encode(&mut out, d);
                ended = out.body.is_end_stream();
            }
            if ended {
                self.end_body(&mut out);
            }
            let written = poll_fn(|cx| {
                if self.poll_fed_or_gone(cx, feeder.as_mut()) {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                self.poll_respond(cx, &mut out)
            })
            .await;
            let unread = feeder.as_ref().is_some_and(|f| !f.complete());
            match written {
                Ok(()) if keep && !out.broken => Next::Keep,
                Ok(()) => Next::Close { linger: unread },
                // The client stopped reading, or the body failed mid-way: the
                // response cannot be completed, so the connection ends here.
                Err(_) => Next::Close { linger: false },
            }
        }
    }

    /// Feeds the request body while there is one to read; after that, watches
    /// the socket for the client leaving (true). Bytes of a next request stay
    /// in the buffer for later.
    fn poll_fed_or_gone(&mut self, cx: &mut Context<'_>, feeder: Option<&mut Feeder>) -> bool {
        if let Some(f) = feeder
            && !f.pipe.is_done()
            && !f.abandoned
        {
            self.feed(cx, f);
            return false;
        }
        if !self.rbuf.is_empty() {
            return false;
        }
        matches!(self.poll_fill(cx), Poll::Ready(Ok(0) | Err(_)))
    }

    /// Moves the request body from the socket into the pipe, as far as the
    /// pipe has room and the socket has bytes.
    fn feed(&mut self, cx: &mut Context<'_>, f: &mut Feeder) {
        while !f.pipe.is_done() && !f.abandoned {
            match f.pipe.poll_room(cx) {
                Poll::Pending => return,
                Poll::Ready(Room::Gone) => {
                    f.abandoned = true;
                    return;
                }
                Poll::Ready(Room::Free) => {}
            }
            match f.decoder.decode(&mut self.rbuf) {
                Ok(Decoded::Data(b)) => {
                    f.pipe.send(b);
                    continue;
                }
                Ok(Decoded::End) => return f.pipe.finish(Ok(())),
                Ok(Decoded::NeedMore) => {}
                Err(e) => return f.pipe.finish(Err(PipeError::Framing(e))),
            }
            if f.continue_owed {
                // Only once the request path asks for the body.
                if !f.pipe.poll_wanted(cx) {
                    return;
                }
                f.continue_owed = false;
                self.wbuf.extend_from_slice(CONTINUE);
            }
            if !self.wbuf.is_empty() {
                match self.poll_write_out(cx, &mut Bytes::new()) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return f.pipe.finish(Err(PipeError::Io)),
                    Poll::Pending => return,
                }
            }
            match self.poll_fill(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok(0)) => {
                    let end = f.decoder.eof().map_err(PipeError::Framing);
                    return f.pipe.finish(end);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return f.pipe.finish(Err(PipeError::Io)),
            }
        }
    }

    /// Writes `wbuf`, then `data`, until both are out. A write that blocks
    /// for `timeouts.client_write` fails (counted).
    fn poll_write_out(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        loop {
            if self.wbuf.is_empty() && data.is_empty() {
                self.write_deadline = None;
                return Poll::Ready(Ok(()));
            }
            match h1::io::poll_write_pair(&mut self.io, cx, &mut self.wbuf, data) {
                Poll::Ready(Ok(_)) => self.write_deadline = None,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let deadline = *self
                        .write_deadline
                        .get_or_insert_with(|| Instant::now() + self.timeouts.write);
                    if !self.poll_until(cx, deadline) {
                        return Poll::Pending;
                    }
                    self.count_timeout(ClientTimeout::Write);
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
            }
        }
    }

    /// Writes the head in `wbuf` and the body behind it, frame by frame.
    fn poll_respond(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ResponseOut,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut waiting = false;
            if out.data.is_empty() && !out.encoder.is_done() && self.wbuf.len() < 2 * COPY_MAX {
                match Pin::new(&mut out.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(d) = frame.into_data() {
                            self.encode(out, d);
                        }
                        if out.body.is_end_stream() {
                            self.end_body(out);
                        }
                        continue;
                    }
                    Poll::Ready(None) => {
                        self.end_body(out);
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(error = %e, "response body failed; closing the client connection");
                        return Poll::Ready(Err(io::Error::other(e)));
                    }
                    Poll::Pending => waiting = true,
                }
            }
            ready!(out.turn.poll(cx, Side::Client));
            let mut data = std::mem::take(&mut out.data);
            let written = self.poll_write_out(cx, &mut data);
            out.data = data;
            match written {
                Poll::Ready(Ok(())) if out.encoder.is_done() => return Poll::Ready(Ok(())),
                // All out, and the body's waker is registered.
                Poll::Ready(Ok(())) if waiting => return Poll::Pending,
                // All out: room for the frames that did not fit.
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
    }

    fn encode(&mut self, out: &mut ResponseOut, mut d: Bytes) {
        if out.encoder.encode(&mut self.wbuf, &mut d).is_err() {
            // More than the length said: what it said is sent, then the close.
            out.broken = true;
        }
        if d.len() <= COPY_MAX {
            self.wbuf.extend_from_slice(&d);
        } else {
            out.data = d;
        }
    }

    fn end_body(&mut self, out: &mut ResponseOut) {
        if out.encoder.finish(&mut self.wbuf).is_err() {
            out.broken = true;
        }
    }

    /// Writes what `wbuf` holds.
    async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_out(cx, &mut Bytes::new())).await
    }

    /// Ends the connection: a FIN after what was written and, when the client
    /// may still be sending, a short read-and-drop so that its answer is not
    /// lost to a reset.
    async fn close(mut self, linger: bool) {
        let write = self.timeouts.write;
        let _ = tokio::time::timeout(write, self.io.shutdown()).await;
        if linger {
            // Read into the connection's own buffer: a buffer in this future
            // would make every connection's task that much larger.
            let _ = tokio::time::timeout(LINGER, async {
                loop {
                    self.rbuf.clear();
                    match poll_fn(|cx| self.poll_fill(cx)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
        }
    }
}

/// How the response body goes to the client (RFC 9112 §6.1-6.3); `coded`:
/// the headers carry `Transfer-Encoding` (codings besides chunked).
fn client_framing(
    status: StatusCode,
    headers: &HeaderMap,
    body: &ProxyBody,
    head_only: bool,
    version: Version,
    coded: bool,
) -> Framing {
    if head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::Empty;
    }
    if coded {
        // Codings the upstream applied, kept (`headers::strip_hop_by_hop_response`):
        // chunked on top, and never a length beside them.
        return Framing::Chunked;
    }
    match h1::head::content_length(headers) {
        Ok(Some(n)) => return Framing::Length(n),
        Err(_) => return Framing::Close,
        Ok(None) => {}
    }
    if let Some(n) = body.size_hint().exact() {
        return Framing::Length(n);
    }
    if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    }
}

/// A socket with bytes already read from it in front: what hyper is handed.
pub(super) struct Prefixed {
    read: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl ClientStream for Prefixed {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.inner.poll_read_ready(cx))?;
        Poll::Ready(Ok(()))
    }
}
