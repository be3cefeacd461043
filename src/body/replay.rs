//! The request body as the upstream client sees it, able to be handed to a
//! second target if the first one never read any of it.
//!
//! The upstream client consumes a request even when it fails to connect, so
//! the client's body is parked in a slot the first poll empties. After a
//! failure, a body still in its slot was never sent and may go to a sibling;
//! one that was polled may have been partly sent and is never replayed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::idle::ClientBody;

type Held = Arc<Mutex<Option<ClientBody>>>;

#[derive(Debug)]
enum ReplayState {
    /// No body at all (GET, HEAD, ...): trivially replayable.
    Empty,
    /// Parked; the first poll takes it out of the slot.
    Parked(Held),
    /// Being sent.
    Streaming(ClientBody),
}

/// The body of a request to an upstream.
#[derive(Debug)]
pub struct UpstreamBody {
    state: ReplayState,
    hint: SizeHint,
}

/// What is needed to send the body again, if it was never read.
#[derive(Debug)]
pub struct Replay {
    source: Source,
    hint: SizeHint,
}

#[derive(Debug)]
enum Source {
    Empty,
    Held(Held),
    /// Streamed straight through: never replayable.
    Gone,
}

impl UpstreamBody {
    pub fn new_empty() -> Self {
        Self {
            state: ReplayState::Empty,
            hint: SizeHint::with_exact(0),
        }
    }

    /// Wraps a client's body. With `replayable` false it streams straight
    /// through (no slot, no lock) and [`Replay::again`] always says no.
    pub fn new(body: ClientBody, replayable: bool) -> (Self, Replay) {
        let hint = body.size_hint();
        let (state, source) = if body.is_end_stream() {
            (ReplayState::Empty, Source::Empty)
        } else if replayable {
            let slot: Held = Arc::new(Mutex::new(Some(body)));
            (ReplayState::Parked(Arc::clone(&slot)), Source::Held(slot))
        } else {
            (ReplayState::Streaming(body), Source::Gone)
        };
        (Self { state, hint }, Replay { source, hint })
    }
}

impl Replay {
    /// The body again, for another attempt, unless any of it was read.
    pub fn again(&self) -> Option<UpstreamBody> {
        let slot = match &self.source {
            Source::Empty => {
                return Some(UpstreamBody {
                    state: ReplayState::Empty,
                    hint: self.hint,
                });
            }
            Source::Gone => return None,
            Source::Held(slot) => slot,
        };
        let still_parked = match slot.lock() {
            Ok(guard) => guard.is_some(),
            Err(_) => false,
        };
        still_parked.then(|| UpstreamBody {
            state: ReplayState::Parked(Arc::clone(slot)),
            hint: self.hint,
        })
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let ReplayState::Parked(slot) = &this.state {
            let taken = match slot.lock() {
                Ok(mut guard) => guard.take(),
                Err(_) => None,
            };
            match taken {
                Some(body) => this.state = ReplayState::Streaming(body),
                // Cannot happen (one attempt at a time), but never hang on it.
                None => this.state = ReplayState::Empty,
            }
        }
        match &mut this.state {
            ReplayState::Streaming(b) => Pin::new(b).poll_frame(cx),
            ReplayState::Empty | ReplayState::Parked(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            ReplayState::Empty => true,
            ReplayState::Parked(_) => false,
            ReplayState::Streaming(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            ReplayState::Streaming(b) => b.size_hint(),
            _ => self.hint,
        }
    }
}
