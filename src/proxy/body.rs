//! The response body type: an upstream body streamed through frame by frame, or
//! a short body the proxy wrote itself. No boxing, no buffering.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::activity::InFlightRequest;
use super::logged::Pending;
use crate::body::{BodyCut, BoxError, IdleTimer};
use crate::state::InFlight;
use crate::upstream::NativeBody;

#[derive(Debug)]
enum Relayed {
    /// With the idle timer of `timeouts.upstream_body` and the counter of
    /// `kind="body_timeout"` errors for when it fires.
    Upstream(UpstreamIncoming, IdleTimer, prometheus::IntCounter),
    Full(Option<Bytes>),
}

/// An upstream response body: from the hyper-util client (TLS, HTTP/2,
/// upgrades) or from a native HTTP/1.1 connection.
#[derive(Debug)]
pub enum UpstreamIncoming {
    Hyper(Incoming),
    Native(NativeBody),
}

impl Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamIncoming::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            UpstreamIncoming::Native(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamIncoming::Hyper(b) => b.is_end_stream(),
            UpstreamIncoming::Native(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamIncoming::Hyper(b) => b.size_hint(),
            UpstreamIncoming::Native(b) => b.size_hint(),
        }
    }
}

/// A response body. Holds the target's in-flight guard until the body ends, so
/// least-outstanding balancing sees streaming responses as busy.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Relayed,
    in_flight: Option<InFlight>,
    /// The client connection's request count, released with `in_flight`.
    request: Option<InFlightRequest>,
    /// The request's access log line, written when this body is dropped.
    log: Option<Box<Pending>>,
}

impl ProxyBody {
    pub fn upstream(
        body: UpstreamIncoming,
        in_flight: InFlight,
        idle: std::time::Duration,
        timeouts: prometheus::IntCounter,
    ) -> Self {
        Self {
            inner: Relayed::Upstream(body, IdleTimer::new(idle), timeouts),
            in_flight: Some(in_flight),
            request: None,
            log: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            inner: Relayed::Full(Some(bytes.into())),
            in_flight: None,
            request: None,
            log: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: Relayed::Full(None),
            in_flight: None,
            request: None,
            log: None,
        }
    }
}

impl ProxyBody {
    /// Ties the client connection's in-flight count to this body.
    pub fn hold(&mut self, request: InFlightRequest) {
        self.request = Some(request);
    }

    /// Ties the request's log line to this body: counted as it is sent,
    /// written when it is dropped (done, failed or abandoned).
    pub fn log(&mut self, line: Box<Pending>) {
        self.log = Some(line);
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(line) = self.log.take() {
            line.write();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Relayed::Upstream(b, timer, timeouts) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    timer.progress();
                    Poll::Ready(Some(Ok(f)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                // A stalled upstream: the client's response is cut (the
                // connection closed, or the HTTP/2 stream reset) rather than
                // left hanging.
                Poll::Pending if timer.poll_expired(cx) => {
                    timeouts.inc();
                    Poll::Ready(Some(Err(BodyCut::UpstreamIdle(timer.idle()).into())))
                }
                Poll::Pending => Poll::Pending,
            },
            Relayed::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        if let (Some(line), Poll::Ready(Some(Ok(frame)))) = (&mut this.log, &polled)
            && let Some(data) = frame.data_ref()
        {
            line.sent(data.len());
        }
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = polled {
            this.in_flight = None;
            this.request = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Relayed::Upstream(b, ..) => b.is_end_stream(),
            Relayed::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Relayed::Upstream(b, ..) => b.size_hint(),
            Relayed::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Relayed::Full(None) => SizeHint::with_exact(0),
        }
    }
}
