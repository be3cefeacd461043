//! Graceful shutdown of the real binary on SIGTERM: readiness goes false first,
//! new connections are refused once the drain delay is over, requests and
//! WebSocket tunnels in flight finish, and the process exits 0 within the grace.

mod common;

use std::time::{Duration, Instant};

use common::ws::Echo;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn yaml(app: &Upstream, ws: &Echo, shutdown: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         override_header: x-group\noverride_plain_from: [127.0.0.0/8]\nshutdown:\n{shutdown}groups:\n  app:\n    weight: 1\n    targets:\n      - address: {}\n  \
         ws:\n    weight: 0\n    targets:\n      - address: {}\n",
        app.addr, ws.addr
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_ws(proxy: std::net::SocketAddr) -> Ws {
    let mut req = ok(
        format!("ws://{proxy}/live").into_client_request(),
        "ws request",
    );
    req.headers_mut()
        .insert("x-group", http::HeaderValue::from_static("ws"));
    ok(tokio_tungstenite::connect_async(req).await, "ws handshake").0
}

async fn echo_once(ws: &mut Ws, text: &str) {
    ok(ws.send(Message::text(text)).await, "ws send");
    match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), text),
        other => panic!("no echo of {text}: {other:?}"),
    }
}

/// Waits for the child to exit; its exit status and how long that took.
async fn wait_exit(proxy: &mut BinProxy, within: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = ok(proxy.child.try_wait(), "try_wait") {
            return (status, start.elapsed());
        }
        assert!(start.elapsed() < within, "still running after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_and_a_websocket_finish_refuses_new_connections_and_exits_0() {
    let app = Upstream::start("app").await;
    let echo = Echo::start("ws").await;
    let mut proxy = BinProxy::start(&yaml(&app, &echo, "  grace: 8s\n  drain_delay: 300ms\n"));
    let addr = proxy.proxy_addr;
    let admin = proxy.admin_addr;

    let mut ws = open_ws(addr).await;
    echo_once(&mut ws, "before").await;
    // Eight requests in flight, each taking 1.5 s upstream, on their own connections.
    let slow: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                get(&h1_client(), &format!("http://{addr}/slow?ms=1500"), None)
                    .await
                    .status
            })
        })
        .collect();
    // And one HTTP/2 connection with a slow request in flight.
    let tcp = ok(tokio::net::TcpStream::connect(addr).await, "h2 connect");
    let (mut h2, conn) = ok(
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await,
        "h2 handshake",
    );
    tokio::spawn(conn);
    let h2_slow = {
        let req = ok(
            http::Request::get(format!("http://{addr}/slow?ms=1500"))
                .body(http_body_util::Empty::<bytes::Bytes>::new()),
            "req",
        );
        ok(h2.ready().await, "h2 ready");
        let fut = h2.send_request(req);
        tokio::spawn(async move { ok(fut.await, "h2 in-flight request").status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.signal("TERM");
    let signalled = Instant::now();
    let mut ready = 200;
    for _ in 0..50 {
        ready = get(&h1_client(), &format!("http://{admin}/readyz"), None)
            .await
            .status
            .as_u16();
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, 503, "readiness goes false first");
    // New connections are taken for the drain delay (300 ms), then refused.
    // Only the lower bound is tight: a slow runner can make the refusal
    // late, never early; 5 s is generous for the upper one.
    let refused_after = loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "new connections still taken 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        refused_after >= Duration::from_millis(300),
        "refused {refused_after:?} after SIGTERM, before the drain delay was over"
    );

    // The tunnel still works during the grace period.
    echo_once(&mut ws, "during shutdown").await;
    for s in slow {
        assert_eq!(
            ok(s.await, "request task"),
            200,
            "in-flight requests complete"
        );
    }
    assert_eq!(
        ok(h2_slow.await, "h2 task"),
        200,
        "the HTTP/2 stream in flight completes"
    );
    assert_eq!(app.hits(), 9);
    // The proxy sent GOAWAY: the connection takes no new stream.
    let after = ok(
        http::Request::get(format!("http://{addr}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new()),
        "req",
    );
    let refused = match h2.ready().await {
        Err(_) => true,
        Ok(()) => h2.send_request(after).await.is_err(),
    };
    assert!(refused, "a new stream after GOAWAY is refused");
    echo_once(&mut ws, "still here").await;
    ok(ws.close(None).await, "close");
    drop(ws);

    let (status, _) = wait_exit(&mut proxy, Duration::from_secs(8)).await;
    assert!(status.success(), "exit code 0, got {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exits once the last tunnel closed, not at the end of the grace period ({:?})",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_still_open_at_the_end_of_the_grace_period_is_cut_and_the_exit_is_0() {
    let app = Upstream::start("app").await;
    let echo = Echo::start("ws").await;
    let mut proxy = BinProxy::start(&yaml(&app, &echo, "  grace: 1s\n"));
    let mut ws = open_ws(proxy.proxy_addr).await;
    echo_once(&mut ws, "hello").await;
    proxy.signal("TERM");
    let (status, took) = wait_exit(&mut proxy, Duration::from_secs(5)).await;
    assert!(status.success(), "exit code 0, got {status:?}");
    assert!(
        took >= Duration::from_millis(900),
        "the tunnel had its grace ({took:?})"
    );
    assert!(took < Duration::from_secs(3), "and no more ({took:?})");
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    assert!(
        matches!(
            end,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_))))
        ),
        "the client sees its tunnel end: {end:?}"
    );
}
