//! Upgraded connections: WebSocket over HTTP/1.1 (`Upgrade: websocket`) and
//! over HTTP/2 (RFC 8441 extended CONNECT, turned into an HTTP/1.1 upgrade
//! towards the upstream), and the tunnel that copies bytes both ways after.
//!
//! ```text
//! client --GET Upgrade / CONNECT :protocol--> proxy --GET Upgrade--> upstream
//! client <--101 / 200 (+Set-Cookie)---------- proxy <--101----------- upstream
//! client <=============== tunnel (idle timeout, counted) ============> upstream
//! ```
//! The upgrade request takes the same sticky path as any request; only the
//! headers that make it an upgrade cross the proxy in addition. A tunnel holds
//! nothing of the snapshot, so a reload leaves it alone; shutdown waits for it
//! within the grace period and then cuts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::ProxyError;
use crate::tunnels::Tunnels;

/// How long a tunnel stays half-open after one side has closed.
const FIN_GRACE: Duration = Duration::from_secs(2);

/// The one protocol an HTTP/2 extended CONNECT may ask for.
const WEBSOCKET: &str = "websocket";

/// How a client asked to upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// HTTP/1.1 `Connection: upgrade` + `Upgrade: <protocol>`.
    Http1(HeaderValue),
    /// HTTP/2 extended CONNECT with `:protocol websocket`.
    H2WebSocket,
}

/// Says whether `req` asks for an upgrade. CONNECT without `:protocol` (a
/// forward-proxy tunnel) is refused: this is a reverse proxy.
pub fn detect<B>(req: &Request<B>) -> Result<Option<Upgrade>, ProxyError> {
    if req.method() == Method::CONNECT {
        return match req.extensions().get::<hyper::ext::Protocol>() {
            Some(p) if p.as_str().eq_ignore_ascii_case(WEBSOCKET) => Ok(Some(Upgrade::H2WebSocket)),
            Some(_) => Err(ProxyError::UpgradeNotSupported),
            None => Err(ProxyError::ConnectNotAllowed),
        };
    }
    if req.version() != Version::HTTP_11 {
        return Ok(None);
    }
    let h = req.headers();
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    match h.get(header::UPGRADE) {
        // h2c upgrades are for the hop, never for the upstream (RFC 9113 §3.1).
        Some(p) if asks && !p.as_bytes().trim_ascii().eq_ignore_ascii_case(b"h2c") => {
            Ok(Some(Upgrade::Http1(p.clone())))
        }
        _ => Ok(None),
    }
}

/// Puts back the headers that make the forwarded request an HTTP/1.1 upgrade
/// (hop-by-hop stripping removed them), turning an HTTP/2 CONNECT into a GET.
pub fn prepare_request<B>(up: &Upgrade, req: &mut Request<B>) {
    let protocol = match up {
        Upgrade::Http1(p) => p.clone(),
        Upgrade::H2WebSocket => {
            *req.method_mut() = Method::GET;
            // RFC 8441 §5: the client sends no key over HTTP/2, and the
            // upstream's HTTP/1.1 handshake needs one.
            let mut key = [0u8; 16];
            rand::fill(&mut key);
            let key = base64::engine::general_purpose::STANDARD.encode(key);
            if let Ok(v) = HeaderValue::from_str(&key) {
                req.headers_mut().insert(header::SEC_WEBSOCKET_KEY, v);
            }
            HeaderValue::from_static(WEBSOCKET)
        }
    };
    let h = req.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, protocol);
}

/// Shapes the upstream's answer for the client: a 101 stays a 101 (with
/// `Upgrade` and `Connection`) for HTTP/1.1 and becomes a 200 for HTTP/2;
/// anything else is relayed as an ordinary response. True when a tunnel follows.
pub fn prepare_response<B>(up: &Upgrade, resp: &mut Response<B>) -> bool {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let h = resp.headers_mut();
    match up {
        Upgrade::Http1(asked) => {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if !h.contains_key(header::UPGRADE) {
                h.insert(header::UPGRADE, asked.clone());
            }
        }
        Upgrade::H2WebSocket => {
            h.remove(header::UPGRADE);
            h.remove(header::CONNECTION);
            h.remove(header::SEC_WEBSOCKET_ACCEPT);
            *resp.status_mut() = StatusCode::OK;
        }
    }
    true
}

/// What a tunnel is told when it is started.
#[derive(Debug)]
pub struct TunnelSpec {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    pub idle: Duration,
    pub gauge: prometheus::IntGauge,
    pub tunnels: Arc<Tunnels>,
    pub group: String,
    /// Keeps the client connection counted busy while the tunnel is open.
    pub request: super::InFlightRequest,
}

/// Runs a tunnel to its end: both upgrades complete, then bytes are copied
/// both ways until both sides close, it is idle for `idle`, or shutdown cuts it.
pub async fn run(spec: TunnelSpec) {
    let _guard = spec.tunnels.enter();
    let mut cut = spec.tunnels.cut_signal();
    let (client, upstream) = match tokio::try_join!(spec.client, spec.upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(group = %spec.group, error = %e, "upgrade did not complete");
            return;
        }
    };
    spec.gauge.inc();
    let gauge = spec.gauge;
    let _dec = scopeguard(move || gauge.dec());
    let (mut cr, mut cw) = tokio::io::split(TokioIo::new(client));
    let (mut ur, mut uw) = tokio::io::split(TokioIo::new(upstream));
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let copy = async {
        let up = pump(&mut cr, &mut uw, &last, start);
        let down = pump(&mut ur, &mut cw, &last, start);
        tokio::pin!(up, down);
        // One side done: the other may finish what it is sending (a
        // WebSocket close handshake), briefly; a half-open tunnel is not kept.
        tokio::select! {
            () = &mut up => { let _ = tokio::time::timeout(FIN_GRACE, down).await; }
            () = &mut down => { let _ = tokio::time::timeout(FIN_GRACE, up).await; }
        }
    };
    tokio::select! {
        _ = copy => {}
        () = idle_watch(&last, start, spec.idle) => {
            tracing::debug!(group = %spec.group, "tunnel closed after its idle timeout");
        }
        _ = cut.wait_for(|c| *c) => {
            tracing::debug!(group = %spec.group, "tunnel cut at the end of the shutdown grace period");
        }
    }
}

/// Copies one direction until EOF or an error, then half-closes the other
/// side's write half so the peer sees the end too.
async fn pump<R, W>(r: &mut R, w: &mut W, last: &AtomicU64, start: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
                    break;
                }
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = w.shutdown().await;
}

/// Resolves once nothing has moved for `idle`.
async fn idle_watch(last: &AtomicU64, start: Instant, idle: Duration) {
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = start + since + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn scopeguard<F: FnOnce()>(f: F) -> OnDrop<F> {
    OnDrop(Some(f))
}
