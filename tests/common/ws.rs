//! A WebSocket echo upstream (tokio-tungstenite) for the WebSocket and
//! shutdown tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};

use super::ok;

/// A WebSocket echo server that names itself in the handshake (`x-upstream`).
pub struct Echo {
    pub addr: SocketAddr,
    /// Handshakes completed.
    pub sessions: Arc<AtomicUsize>,
}

impl Echo {
    pub async fn start(name: &'static str) -> Self {
        let listener = ok(TcpListener::bind("127.0.0.1:0").await, "bind echo");
        let addr = ok(listener.local_addr(), "addr");
        let sessions = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&sessions);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    // The callback's type is tungstenite's, large error and all.
                    #[allow(clippy::result_large_err)]
                    let named = |_: &WsRequest, mut resp: WsResponse| {
                        resp.headers_mut()
                            .insert("x-upstream", http::HeaderValue::from_static(name));
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, named).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() {
                            break;
                        }
                        if (msg.is_binary() || msg.is_text()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Echo { addr, sessions }
    }
}
