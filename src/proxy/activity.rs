//! Requests in flight on one client connection: the service enters and
//! leaves ([`Activity::enter`], a guard held by the response body or the
//! tunnel), and the connection's stream reads it to choose its idle clock
//! (`listener::conn_io`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Context;

use atomic_waker::AtomicWaker;
use tokio::sync::Notify;

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

    /// The stream asks the connection task for a graceful close.
    pub fn request_close(&self) {
        self.close.notify_one();
    }

    /// Resolves when the stream has asked for a graceful close.
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }

    /// Whether a request is in flight; if so the task is woken when the last
    /// one leaves. Registering before the second look closes the race with a
    /// guard dropped in between.
    pub fn busy(&self, cx: &Context<'_>) -> bool {
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
