//! WebSocket through the proxy: a real tungstenite client and a real echo
//! upstream, over HTTP/1.1 Upgrade and over HTTP/2 extended CONNECT (RFC 8441).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::ws::Echo;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

fn yaml(groups: &[(&str, u32, SocketAddr)], extra: &str) -> String {
    let mut y = String::from(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n",
    );
    y.push_str(extra);
    y.push_str("groups:\n");
    for (name, w, addr) in groups {
        y.push_str(&format!(
            "  {name}:\n    weight: {w}\n    targets:\n      - address: {addr}\n"
        ));
    }
    y
}

/// Opens an HTTP/2 connection and sends an RFC 8441 extended CONNECT for a
/// WebSocket on it; returns the response.
async fn h2_extended_connect(proxy: SocketAddr) -> http::Response<hyper::body::Incoming> {
    let tcp = ok(TcpStream::connect(proxy).await, "connect");
    let (mut send, conn) = ok(
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await,
        "h2 handshake",
    );
    tokio::spawn(conn);
    let mut req = ok(
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{proxy}/chat"))
            .header("sec-websocket-version", "13")
            .body(Empty::<Bytes>::new()),
        "request",
    );
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    ok(send.ready().await, "ready");
    ok(send.send_request(req).await, "extended CONNECT")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket through the proxy; returns it, the upstream that took it,
/// and the sticky cookie set on the 101 (if any).
async fn open(proxy: SocketAddr, cookie: Option<&str>) -> (Ws, String, Option<String>) {
    let mut req = ok(
        format!("ws://{proxy}/chat").into_client_request(),
        "ws request",
    );
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", ok(format!("switchyard={c}").parse(), "cookie"));
    }
    let (ws, resp) = ok(
        tokio_tungstenite::connect_async(req).await,
        "ws handshake via the proxy",
    );
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()?
                .strip_prefix("switchyard=")
                .map(str::to_owned)
        });
    (ws, header("x-upstream").unwrap_or_default(), cookie)
}

/// Sends `n` binary messages totalling `total` bytes, each answered by its echo.
async fn exchange<S>(ws: &mut WebSocketStream<S>, n: usize, total: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (base, extra) = (total / n, total % n);
    let mut sent = 0;
    for i in 0..n {
        let len = base + usize::from(i < extra);
        let payload = Bytes::from(pattern_chunk(sent, len));
        sent += len;
        ok(ws.send(Message::Binary(payload.clone())).await, "send");
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        match back {
            Ok(Some(Ok(Message::Binary(b)))) => {
                assert_eq!(b, payload, "message {i} came back altered")
            }
            other => panic!("message {i}: no echo: {other:?}"),
        }
    }
    assert_eq!(sent, total);
}

#[tokio::test]
async fn a_thousand_messages_cross_intact_and_the_cookie_keeps_the_group() {
    let (blue, green) = (Echo::start("blue").await, Echo::start("green").await);
    let proxy = start_proxy(&yaml(
        &[("blue", 1, blue.addr), ("green", 1, green.addr)],
        "",
    ))
    .await;
    let (mut ws, group, cookie) = open(proxy.proxy_addr, None).await;
    let cookie = cookie.unwrap_or_else(|| panic!("the 101 carries the sticky cookie"));
    assert!(group == "blue" || group == "green", "{group}");
    exchange(&mut ws, 1000, 1 << 20).await;
    assert_eq!(
        metric(
            &proxy,
            &format!("switchyard_upgraded_connections{{group=\"{group}\"}}")
        )
        .await,
        1.0
    );
    ok(ws.close(None).await, "close");

    for i in 0..10 {
        let (mut ws, again, new_cookie) = open(proxy.proxy_addr, Some(&cookie)).await;
        assert_eq!(again, group, "reconnect {i} left its group");
        assert!(new_cookie.is_none(), "no new cookie for a pinned client");
        exchange(&mut ws, 3, 300).await;
        ok(ws.close(None).await, "close");
    }
    let (b, g) = (
        blue.sessions.load(Ordering::SeqCst),
        green.sessions.load(Ordering::SeqCst),
    );
    assert_eq!(b + g, 11);
    assert_eq!(
        if group == "blue" { b } else { g },
        11,
        "all sessions on one group"
    );
    assert_eq!(
        metric(
            &proxy,
            &format!("switchyard_upgrades_total{{group=\"{group}\"}}")
        )
        .await,
        11.0
    );
    let mut gauge = 1.0;
    // The first socket is still open on our side after its close frame: the
    // proxy ends a half-closed tunnel on its own, shortly.
    for _ in 0..250 {
        gauge = metric(
            &proxy,
            &format!("switchyard_upgraded_connections{{group=\"{group}\"}}"),
        )
        .await;
        if gauge == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gauge, 0.0, "closed tunnels leave the gauge");
}

#[tokio::test]
async fn an_open_websocket_keeps_working_across_a_config_reload() {
    let (blue, green) = (Echo::start("blue").await, Echo::start("green").await);
    let w = Watched::start(&yaml(
        &[("blue", 1, blue.addr), ("green", 0, green.addr)],
        "",
    ))
    .await;
    let (mut ws, group, _) = open(w.running.proxy_addr, None).await;
    assert_eq!(group, "blue");
    exchange(&mut ws, 10, 10_000).await;
    write_by_rename(
        &w.path,
        &yaml(&[("blue", 0, blue.addr), ("green", 1, green.addr)], ""),
    );
    assert!(wait_generation(w.running.admin_addr, 2, Duration::from_secs(5)).await);
    exchange(&mut ws, 10, 10_000).await;
    let (_, fresh, _) = open(w.running.proxy_addr, None).await;
    assert_eq!(fresh, "green", "new clients follow the new weights");
    exchange(&mut ws, 10, 10_000).await;
    ok(ws.close(None).await, "close");
}

/// On tokio's paused clock: time moves only when every task waits on a
/// timer, so the idle timeout is checked to the millisecond.
#[tokio::test(start_paused = true)]
async fn an_idle_tunnel_is_closed_after_its_idle_timeout() {
    let blue = Echo::start("blue").await;
    let proxy = start_proxy(&yaml(
        &[("blue", 1, blue.addr)],
        "timeouts:\n  tunnel_idle: 700ms\n",
    ))
    .await;
    let (mut ws, _, _) = open(proxy.proxy_addr, None).await;
    // Traffic keeps it open past the timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        exchange(&mut ws, 1, 10).await;
    }
    // ...silence closes it.
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let waited = started.elapsed();
    assert!(
        matches!(
            end,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_))))
        ),
        "the tunnel must close: {end:?}"
    );
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(720),
        "closed at the idle timeout, counted from the last byte ({waited:?})"
    );
}

#[tokio::test]
async fn websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    let blue = Echo::start("blue").await;
    let proxy = start_proxy(&yaml(&[("blue", 1, blue.addr)], "")).await;
    let mut resp = h2_extended_connect(proxy.proxy_addr).await;
    assert_eq!(resp.status(), 200, "RFC 8441: success is a 200");
    assert!(
        resp.headers().get("set-cookie").is_some(),
        "the sticky cookie rides on the 200"
    );
    assert!(resp.headers().get("sec-websocket-accept").is_none());
    let upgraded = ok(hyper::upgrade::on(&mut resp).await, "upgrade");
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    exchange(&mut ws, 100, 100_000).await;
    ok(ws.close(None).await, "close");
    assert_eq!(blue.sessions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upgrade_to_a_group_that_speaks_http2_upstream_is_a_502() {
    let blue = Echo::start("blue").await;
    let proxy = start_proxy(
        &yaml(&[("blue", 1, blue.addr)], "")
            .replace("    targets:", "    protocol: h2\n    targets:"),
    )
    .await;
    let req = ok(
        format!("ws://{}/chat", proxy.proxy_addr).into_client_request(),
        "req",
    );
    let err = tokio_tungstenite::connect_async(req).await;
    match err {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected a 502, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(blue.sessions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_open_tunnel_outlives_the_connection_keepalive_timeout() {
    let blue = Echo::start("blue").await;
    let proxy = start_proxy(&yaml(
        &[("blue", 1, blue.addr)],
        "timeouts:\n  keepalive: 300ms\n  client_header: 300ms\n",
    ))
    .await;
    // HTTP/1.1 Upgrade.
    let (mut ws, _, _) = open(proxy.proxy_addr, None).await;
    // HTTP/2 extended CONNECT on a connection that then carries nothing else.
    let mut resp = h2_extended_connect(proxy.proxy_addr).await;
    assert_eq!(resp.status(), 200);
    let upgraded = ok(hyper::upgrade::on(&mut resp).await, "upgrade");
    let mut ws2 =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    // Silent for several keepalive periods: both tunnels are still there.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    exchange(&mut ws, 3, 300).await;
    exchange(&mut ws2, 3, 300).await;
    assert_eq!(
        metric(
            &proxy,
            "switchyard_client_timeouts_total{phase=\"keepalive\"}"
        )
        .await,
        0.0
    );
}
