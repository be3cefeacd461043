//! Parking: an HTTP/1 connection idle for a second with nothing buffered is
//! held as a bare socket, without hyper's buffers, and served afresh when the
//! client sends again (src/listener/conn_io.rs). From the outside nothing may
//! change: the same TCP connection keeps working, over TLS too, for plain
//! requests and upgrades; deadlines still count from when the idling began;
//! a pipelined request cut mid-head is never lost to it; HTTP/2 never parks;
//! and shutdown closes parked connections at once.
//!
//! The proxy runs in the test's runtime, whose clock is paused (tokio's
//! `start_paused`): it moves only when every task waits on a timer, straight
//! to the next deadline. Sockets are real; deadlines are exact, so a window
//! such as "closed 2 s after the last response" is checked to the
//! millisecond instead of within a band wide enough for a busy machine.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::pki::{self, Ca};
use common::ws::Echo;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::app::Running;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const PARKED: &str = "switchyard_parked_connections";

/// Reads one HTTP/1 response (sized or chunked body); returns it whole.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let (out, closed) = read_response_bytes(s).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(!closed, "closed mid-response: {out:?}");
    out
}

async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> String {
    ok(s.write_all(GET).await, "write a request");
    let resp = read_response(s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp
}

/// Waits until the parked gauge reads `want`.
async fn wait_parked(proxy: &Running, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let now = metric(proxy, PARKED).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{PARKED} is {now}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_parks_and_the_same_connection_serves_again() {
    let (blue, _g, proxy) = blue_green(100, 0, "timeouts:\n  keepalive: 10s\n").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    get_on(&mut s).await;
    wait_parked(&proxy, 1.0).await;
    // Served again on the same socket, twice over (a resumed connection parks
    // and resumes like a new one).
    get_on(&mut s).await;
    assert_eq!(metric(&proxy, PARKED).await, 0.0, "busy again: not parked");
    wait_parked(&proxy, 1.0).await;
    get_on(&mut s).await;
    // Requests back to back do not park in between.
    for _ in 0..20 {
        get_on(&mut s).await;
    }
    assert_eq!(metric(&proxy, PARKED).await, 0.0);
    assert_eq!(blue.hits(), 23);
    assert_eq!(metric(&proxy, "switchyard_connections_total").await, 1.0);
    assert_eq!(metric(&proxy, "switchyard_open_connections").await, 1.0);
    assert_eq!(
        metric(
            &proxy,
            "switchyard_client_timeouts_total{phase=\"keepalive\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_still_closes_when_keepalive_runs_out_from_its_last_request() {
    let (_b, _g, proxy) = blue_green(100, 0, "timeouts:\n  keepalive: 2s\n").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    get_on(&mut s).await;
    let idle_from = Instant::now();
    wait_parked(&proxy, 1.0).await;
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    let idled = idle_from.elapsed();
    assert!(closed && resp.is_empty(), "closed quietly: {resp:?}");
    assert!(
        idled >= Duration::from_secs(2) && idled < Duration::from_millis(2020),
        "keepalive counts from the last response, not from the park: {idled:?}"
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_client_timeouts_total{phase=\"keepalive\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(&proxy, PARKED).await, 0.0);
    assert_eq!(metric(&proxy, "switchyard_open_connections").await, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_new_connection_parks_then_serves_http1_or_http2_or_closes_at_client_header() {
    let (blue, _g, proxy) = blue_green(
        100,
        0,
        "timeouts:\n  client_header: 2500ms\n  keepalive: 10s\n",
    )
    .await;
    let connected = Instant::now();
    let mut silent = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    let mut h1 = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    let h2 = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    wait_parked(&proxy, 3.0).await;

    // Nothing read before parking, so HTTP/1 and HTTP/2 (prior knowledge)
    // are both still possible.
    get_on(&mut h1).await;
    let (mut send, conn) = ok(
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2)).await,
        "h2 handshake on a connection that had parked",
    );
    tokio::spawn(conn);
    let req = ok(
        http::Request::get(format!("http://{}/", proxy.proxy_addr)).body(Empty::<Bytes>::new()),
        "request",
    );
    let resp = ok(send.send_request(req).await, "h2 request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = ok(resp.into_body().collect().await, "h2 body").to_bytes();
    assert_eq!(&body[..], b"blue");

    // The silent one is closed, unanswered, when client_header runs out from
    // the accept (parking does not restart the clock).
    let (resp, closed) = read_until_close(&mut silent, Duration::from_secs(5)).await;
    let waited = connected.elapsed();
    assert!(closed && resp.is_empty(), "closed quietly: {resp:?}");
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_millis(2520),
        "{waited:?}"
    );
    assert_eq!(
        metric(&proxy, "switchyard_client_timeouts_total{phase=\"header\"}").await,
        1.0
    );
    assert_eq!(blue.hits(), 2);
}

/// Long past the park point with half a head in hyper's buffer: the
/// connection must not have parked (that would lose the half); the rest of the
/// head then gets its answer.
async fn finish_the_half_head(proxy: &Running, s: &mut TcpStream) {
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(metric(proxy, PARKED).await, 0.0);
    ok(s.write_all(b"st: x\r\n\r\n").await, "the rest of the head");
    let second = read_response(s).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

#[tokio::test(start_paused = true)]
async fn a_pipelined_request_cut_mid_head_is_not_parked_and_completes() {
    let (blue, _g, proxy) = blue_green(
        100,
        0,
        "timeouts:\n  client_header: 10s\n  keepalive: 10s\n",
    )
    .await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHo")
            .await,
        "write one request and a half",
    );
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    finish_the_half_head(&proxy, &mut s).await;
    assert_eq!(blue.hits(), 2);
    let last = blue.last_seen().map(|r| r.uri);
    assert_eq!(last.as_deref(), Some("/two"));
}

#[tokio::test(start_paused = true)]
async fn a_next_head_begun_while_a_request_was_in_flight_is_not_parked_and_completes() {
    let (blue, _g, proxy) = blue_green(
        100,
        0,
        "timeouts:\n  client_header: 10s\n  keepalive: 10s\n",
    )
    .await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(b"GET /slow?ms=400 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await,
        "write",
    );
    // While the first is upstream, the next head begins (hyper reads it in
    // as it watches the connection), and stops short.
    tokio::time::sleep(Duration::from_millis(150)).await;
    ok(
        s.write_all(b"GET /two HTTP/1.1\r\nHo").await,
        "write half a head",
    );
    let first = read_response(&mut s).await;
    assert!(first.contains("slow blue"), "{first}");
    finish_the_half_head(&proxy, &mut s).await;
    assert_eq!(blue.hits(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_tls_connection_parks_and_serves_again_and_http2_never_parks() {
    let ca = Ca::new("park CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let (cert, key) = ca.leaf(&["app.test"]).write(dir.path(), "app");
    let (blue, green) = blue_and_green().await;
    let yaml = config_yaml(
        &[("blue", 1, &[&blue]), ("green", 0, &[&green])],
        &format!(
            "timeouts:\n  keepalive: 10s\ntls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {}\n      key: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let proxy = start_proxy(&yaml).await;
    let tls_addr = proxy.tls_addr.unwrap_or_else(|| panic!("a TLS listener"));

    let mut h1 = pki::connect(tls_addr, "app.test", &ca, &[b"http/1.1"]).await;
    get_on(&mut h1).await;
    let h2 = pki::connect(tls_addr, "app.test", &ca, &[b"h2"]).await;
    let (mut send, conn) = ok(
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2)).await,
        "h2 handshake",
    );
    tokio::spawn(conn);
    let h2_get = || {
        ok(
            http::Request::get("https://app.test/").body(Empty::<Bytes>::new()),
            "request",
        )
    };
    assert_eq!(ok(send.send_request(h2_get()).await, "h2").status(), 200);

    // Only the HTTP/1 connection parks.
    wait_parked(&proxy, 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(&proxy, PARKED).await, 1.0);
    get_on(&mut h1).await;
    assert_eq!(ok(send.send_request(h2_get()).await, "h2").status(), 200);
    assert_eq!(metric(&proxy, "switchyard_connections_total").await, 2.0);
    assert_eq!(blue.hits(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_websocket_upgrade_works_on_a_connection_that_had_parked() {
    let app = Upstream::start("app").await;
    let echo = Echo::start("ws").await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         override_header: x-group\noverride_plain_from: [127.0.0.0/8]\ntimeouts:\n  keepalive: 10s\ngroups:\n  app:\n    weight: 1\n    \
         targets:\n      - address: {}\n  ws:\n    weight: 0\n    targets:\n      - address: {}\n",
        app.addr, echo.addr
    );
    let proxy = start_proxy(&yaml).await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    get_on(&mut s).await;
    wait_parked(&proxy, 1.0).await;

    let mut req = ok(
        format!("ws://{}/live", proxy.proxy_addr).into_client_request(),
        "ws request",
    );
    req.headers_mut()
        .insert("x-group", http::HeaderValue::from_static("ws"));
    let (mut ws, resp) = ok(
        tokio_tungstenite::client_async(req, s).await,
        "WebSocket handshake on the parked connection",
    );
    assert_eq!(resp.status(), 101);
    for text in ["one", "two"] {
        ok(ws.send(Message::text(text)).await, "ws send");
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), text),
            other => panic!("no echo of {text}: {other:?}"),
        }
    }
    assert_eq!(metric(&proxy, PARKED).await, 0.0);
    assert_eq!(metric(&proxy, "switchyard_connections_total").await, 1.0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_parked_connections_at_once() {
    let (_b, _g, proxy) = blue_green(
        100,
        0,
        "timeouts:\n  keepalive: 30s\nshutdown:\n  drain_delay: 0s\n  grace: 20s\n",
    )
    .await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    get_on(&mut s).await;
    wait_parked(&proxy, 1.0).await;
    let started = Instant::now();
    proxy.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "shutdown waited on a parked connection: {took:?}"
    );
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(2)).await;
    assert!(closed && resp.is_empty(), "closed quietly: {resp:?}");
}

#[tokio::test(start_paused = true)]
async fn many_parked_connections_are_each_served_again_or_closed_on_time() {
    let (blue, _g, proxy) = blue_green(100, 0, "timeouts:\n  keepalive: 3s\n").await;
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
        get_on(&mut s).await;
        conns.push(s);
    }
    wait_parked(&proxy, 200.0).await;
    let (wake, rest) = conns.split_at_mut(100);
    // Half come back, in an order unlike the one they parked in; each is
    // served on its own connection, and parks again.
    for s in wake.iter_mut().rev() {
        get_on(s).await;
    }
    assert_eq!(blue.hits(), 300);
    wait_parked(&proxy, 200.0).await;
    // The other half never sends again: closed at keep-alive, quietly.
    for s in rest.iter_mut() {
        let (resp, closed) = read_until_close(s, Duration::from_secs(5)).await;
        assert!(closed && resp.is_empty(), "{resp:?}");
    }
    // The first half's clocks restarted when they were served again.
    for s in wake.iter_mut() {
        get_on(s).await;
    }
    assert_eq!(blue.hits(), 400);
    assert_eq!(
        metric(
            &proxy,
            "switchyard_client_timeouts_total{phase=\"keepalive\"}"
        )
        .await,
        100.0
    );
    assert_eq!(metric(&proxy, "switchyard_open_connections").await, 100.0);
}
