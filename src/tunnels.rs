//! Upgraded connections (WebSocket tunnels) open now, for shutdown: it waits
//! for the count to reach zero within the grace period, then tells the rest
//! to close.

use std::sync::Arc;

use tokio::sync::watch;

/// Open tunnels, for shutdown: it waits for the count to reach zero within
/// the grace period, then tells the rest to close.
#[derive(Debug)]
pub struct Tunnels {
    open: watch::Sender<usize>,
    cut: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(0),
            cut: watch::Sender::new(false),
        }
    }
}

impl Tunnels {
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Resolves when no tunnel is open.
    pub async fn all_closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// What a tunnel watches for the order to close.
    pub fn cut_signal(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }

    /// Tells every open tunnel to close now.
    pub fn cut_all(&self) {
        self.cut.send_replace(true);
    }

    /// A tunnel opens; it counts as open until the guard drops.
    pub fn enter(self: &Arc<Self>) -> TunnelGuard {
        self.open.send_modify(|n| *n += 1);
        TunnelGuard(Arc::clone(self))
    }
}

/// Keeps one tunnel counted in [`Tunnels`].
#[derive(Debug)]
pub struct TunnelGuard(Arc<Tunnels>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}
