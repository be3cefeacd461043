//! Body guards: the longest silence allowed inside a streaming body (client
//! request bodies and upstream response bodies alike), and the size limit of a
//! request body that has no `Content-Length` to check up front.
//!
//! The timer is lazy: nothing is read or armed until the stream first has to
//! wait (an empty or already-buffered body costs nothing); after that a frame
//! only records when it came, and the one `Sleep` is moved to the new deadline
//! when it is next polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// True once `target` has passed, on a timer kept for a stream of
/// deadlines: it is moved only when `target` is nearer than where it stands,
/// and moved on when it fires early. Deadlines that only ever move later (one
/// per request on a kept-alive connection) then cost one timer registration
/// per span of the timer, not one per deadline.
pub fn poll_deadline(
    timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    target: Instant,
) -> bool {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(target)));
    if timer.deadline() > target {
        timer.as_mut().reset(target);
    }
    loop {
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if timer.deadline() >= target {
            return true;
        }
        timer.as_mut().reset(target);
    }
}

/// Fires when a stream has made no progress for `idle`.
#[derive(Debug)]
pub struct IdleTimer {
    idle: Duration,
    /// Last progress; `None` until the stream first waits.
    last: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            last: None,
            sleep: None,
        }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Data arrived. Before the first wait there is no silence to measure.
    pub fn progress(&mut self) {
        if self.last.is_some() {
            self.last = Some(Instant::now());
        }
    }

    /// Call when the stream is pending: true once `idle` has passed since the
    /// last progress (and then the caller gives up on the stream).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let last = *self.last.get_or_insert_with(Instant::now);
        let deadline = last + self.idle;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// Why a client's request body was cut, as seen by the request path after the
/// upstream exchange failed because of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BodyVerdict {
    Fine = 0,
    /// Silent for longer than `timeouts.client_body`: 408.
    TimedOut = 1,
    /// Longer than `limits.max_body_bytes` (no Content-Length said so): 413.
    TooLarge = 2,
    /// Malformed (bad chunking, shorter than its Content-Length) or cut off
    /// by the client's connection: 400, or nothing when the client left.
    Broken = 3,
}

/// Set beside the verdict while the body waits for the client to send more:
/// an upstream that times out then was waiting for the client too.
const WAITING: u8 = 0x80;

/// Shared between the body (which sets it) and the request path (which reads
/// it): why the body was cut, and how many bytes of it came. Requests without
/// a body get `none()`, which allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Verdict(Option<Arc<BodyState>>);

#[derive(Debug, Default)]
struct BodyState {
    verdict: AtomicU8,
    /// Body bytes received from the client so far.
    received: AtomicU64,
}

impl Verdict {
    pub fn new() -> Self {
        Self(Some(Arc::default()))
    }

    pub fn none() -> Self {
        Self(None)
    }

    /// Records why the body was cut; the first reason stands.
    pub fn set(&self, v: BodyVerdict) {
        if let Some(a) = &self.0 {
            let _ = a
                .verdict
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                    (now & !WAITING == 0).then_some(v as u8)
                });
        }
    }

    fn waiting(&self, yes: bool) {
        if let Some(a) = &self.0 {
            let a = &a.verdict;
            // Read first: most polls change nothing, and a read is cheaper
            // than a read-modify-write.
            if (a.load(Ordering::Relaxed) & WAITING != 0) == yes {
                return;
            }
            if yes {
                a.fetch_or(WAITING, Ordering::Relaxed);
            } else {
                a.fetch_and(!WAITING, Ordering::Relaxed);
            }
        }
    }

    pub fn get(&self) -> BodyVerdict {
        let Some(a) = &self.0 else {
            return BodyVerdict::Fine;
        };
        match a.verdict.load(Ordering::Relaxed) & !WAITING {
            1 => BodyVerdict::TimedOut,
            2 => BodyVerdict::TooLarge,
            3 => BodyVerdict::Broken,
            _ => BodyVerdict::Fine,
        }
    }

    /// The body is unfinished and was last left waiting on the client (not
    /// on the upstream to take what it had).
    pub fn waiting_on_client(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|a| a.verdict.load(Ordering::Relaxed) & WAITING != 0)
    }

    /// Body bytes the client has sent so far (for the access log).
    pub fn received(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |a| a.received.load(Ordering::Relaxed))
    }

    fn note_received(&self, total: u64) {
        if let Some(a) = &self.0 {
            a.received.store(total, Ordering::Relaxed);
        }
    }
}

/// The error a guarded body ends with; the request path maps it to a status
/// through the [`Verdict`], the upstream sees the request aborted.
#[derive(Debug, thiserror::Error)]
pub enum BodyCut {
    #[error("the client sent no body data for {0:?}")]
    ClientIdle(Duration),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the upstream sent no body data for {0:?}")]
    UpstreamIdle(Duration),
}

/// A client's request body on its way upstream, with the idle timeout and
/// (when the size was not declared) the size limit applied as it streams.
#[derive(Debug)]
pub struct ClientBody {
    inner: super::incoming::RequestBody,
    timer: IdleTimer,
    /// 0: no limit.
    limit: u64,
    seen: u64,
    verdict: Verdict,
}

impl ClientBody {
    pub fn new(
        inner: super::incoming::RequestBody,
        idle: Duration,
        limit: u64,
        verdict: Verdict,
    ) -> Self {
        Self {
            inner,
            timer: IdleTimer::new(idle),
            limit,
            seen: 0,
            verdict,
        }
    }
}

impl http_body::Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.verdict.waiting(polled.is_pending());
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.progress();
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    this.verdict.note_received(this.seen);
                    if this.limit > 0 && this.seen > this.limit {
                        this.verdict.set(BodyVerdict::TooLarge);
                        return Poll::Ready(Some(Err(BodyCut::TooLarge(this.limit).into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // Whatever the server reading it said (bad chunking, a short
                // body, a reset), it is the client's doing (DESIGN §10).
                this.verdict.set(BodyVerdict::Broken);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.timer.poll_expired(cx) {
                    this.verdict.set(BodyVerdict::TimedOut);
                    return Poll::Ready(Some(Err(BodyCut::ClientIdle(this.timer.idle()).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
