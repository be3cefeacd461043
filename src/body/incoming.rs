//! A client's request body as the request path sees it, from either server:
//! hyper's (TLS, HTTP/2, and connections the proxy's own server hands over)
//! or the proxy's own HTTP/1.1 server (`listener::native`), which reads the
//! body off the socket and passes it through a [`pipe`].
//!
//! The pipe holds one chunk. Its writer (the connection) reads the socket only
//! when the chunk has been taken, so a client can never push more than one
//! read's worth past an upstream that is not reading; its reader (the body the
//! upstream exchange polls) may be handed to another task and outlive the
//! request's connection loop, so the two share an `Arc`. Both sides usually
//! run in the same task, and the lock is never contended for long.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::BoxError;

/// A request body from either server.
#[derive(Debug)]
pub enum RequestBody {
    Hyper(Incoming),
    Native(PipeReader),
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            RequestBody::Native(b) => b.poll_chunk(cx).map_ok(Frame::data),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::Native(b) => b.ended,
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::Native(b) => b.hint,
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Why a body read off the socket did not end well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    #[error("request body: {0}")]
    Framing(#[from] crate::h1::FramingError),
    #[error("request body: the client connection failed")]
    Io,
    #[error("request body: the connection stopped reading it")]
    Abandoned,
}

#[derive(Debug, Default)]
struct PipeState {
    chunk: Option<Bytes>,
    end: Option<Result<(), PipeError>>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The reader polled and found nothing: it waits for data.
    wanted: bool,
    reader_gone: bool,
}

fn lock(m: &Mutex<PipeState>) -> MutexGuard<'_, PipeState> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A new pipe for a body of `hint`'s size.
pub fn pipe(hint: SizeHint) -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Mutex::new(PipeState::default()));
    (
        PipeWriter {
            shared: Arc::clone(&shared),
            done: false,
        },
        PipeReader {
            shared,
            hint,
            ended: false,
        },
    )
}

/// The body end of a pipe.
#[derive(Debug)]
pub struct PipeReader {
    shared: Arc<Mutex<PipeState>>,
    hint: SizeHint,
    ended: bool,
}

impl PipeReader {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut s = lock(&self.shared);
        if let Some(chunk) = s.chunk.take() {
            if let Some(w) = s.writer.take() {
                w.wake();
            }
            drop(s);
            let n = chunk.len() as u64;
            if let Some(left) = self.hint.exact() {
                self.hint.set_exact(left.saturating_sub(n));
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match s.end {
            Some(Ok(())) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                self.ended = true;
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                s.wanted = true;
                if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.reader = Some(cx.waker().clone());
                }
                if let Some(w) = s.writer.take() {
                    w.wake();
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.reader_gone = true;
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }
}

/// What the writer may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// The slot is empty: send a chunk.
    Free,
    /// Nobody will read any more.
    Gone,
}

/// The connection end of a pipe.
#[derive(Debug)]
pub struct PipeWriter {
    shared: Arc<Mutex<PipeState>>,
    done: bool,
}

impl PipeWriter {
    /// Ready when a chunk can be sent (or the reader is gone).
    pub fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Room> {
        let mut s = lock(&self.shared);
        if s.reader_gone {
            return Poll::Ready(Room::Gone);
        }
        if s.chunk.is_none() {
            return Poll::Ready(Room::Free);
        }
        if !s.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.writer = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the reader has asked for data (and found none); if not, the
    /// writer is woken when it does.
    pub fn poll_wanted(&mut self, cx: &mut Context<'_>) -> bool {
        let mut s = lock(&self.shared);
        if s.wanted || s.reader_gone {
            return true;
        }
        if !s.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.writer = Some(cx.waker().clone());
        }
        false
    }

    /// Puts a chunk in the (empty) slot.
    pub fn send(&mut self, chunk: Bytes) {
        let mut s = lock(&self.shared);
        s.chunk = Some(chunk);
        s.wanted = false;
        if let Some(r) = s.reader.take() {
            r.wake();
        }
    }

    /// Ends the body, well or not.
    pub fn finish(&mut self, end: Result<(), PipeError>) {
        self.done = true;
        let mut s = lock(&self.shared);
        s.end = Some(end);
        if let Some(r) = s.reader.take() {
            r.wake();
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Err(PipeError::Abandoned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_body(b: &mut RequestBody) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(b).poll_frame(&mut cx)
    }

    #[test]
    fn chunks_pass_one_at_a_time_then_the_end() {
        let (mut w, r) = pipe(SizeHint::with_exact(5));
        let mut body = RequestBody::Native(r);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(!w.poll_wanted(&mut cx));
        assert!(poll_body(&mut body).is_pending());
        assert!(w.poll_wanted(&mut cx));
        assert_eq!(w.poll_room(&mut cx), Poll::Ready(Room::Free));
        w.send(Bytes::from_static(b"abc"));
        assert!(w.poll_room(&mut cx).is_pending(), "one chunk at a time");
        let got = poll_body(&mut body);
        assert!(
            matches!(got, Poll::Ready(Some(Ok(ref f))) if f.data_ref().is_some_and(|d| &d[..] == b"abc"))
        );
        assert_eq!(body.size_hint().exact(), Some(2));
        w.send(Bytes::from_static(b"de"));
        w.finish(Ok(()));
        assert!(matches!(poll_body(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll_body(&mut body), Poll::Ready(None)));
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_writer_that_goes_away_fails_the_body_and_a_reader_that_goes_away_is_seen() {
        let (w, r) = pipe(SizeHint::default());
        let mut body = RequestBody::Native(r);
        drop(w);
        assert!(matches!(poll_body(&mut body), Poll::Ready(Some(Err(_)))));
        let (mut w, r) = pipe(SizeHint::default());
        drop(r);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(w.poll_room(&mut cx), Poll::Ready(Room::Gone));
    }
}
