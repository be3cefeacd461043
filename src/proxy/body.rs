//! The response body type: an upstream body streamed through frame by frame, or
//! a short body the proxy wrote itself. No boxing, no buffering.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::state::InFlight;

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// A response body. Holds the target's in-flight guard until the body ends, so
/// least-outstanding balancing sees streaming responses as busy.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    in_flight: Option<InFlight>,
}

impl ProxyBody {
    pub fn upstream(body: Incoming, in_flight: InFlight) -> Self {
        Self {
            inner: Inner::Upstream(body),
            in_flight: Some(in_flight),
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            inner: Inner::Full(Some(bytes.into())),
            in_flight: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            in_flight: None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = polled {
            this.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
        }
    }
}
