//! Slow and hostile clients, stalled upstreams, and the connection limit:
//! 408 for a stalled request body, 413 for a chunked body over the limit, a
//! cut response for a stalled upstream body, `Expect: 100-continue` without a
//! stall, slowloris connections closed while normal clients are served,
//! connections over `limits.max_connections` accepted and closed at once, the
//! keep-alive idle timeout apart from the head timeout (408 for a slow head),
//! and a client that stops reading cut after `timeouts.client_write`.
//!
//! The proxy runs in the test's runtime with tokio's clock paused: time
//! moves only when every task waits on a timer, straight to the next
//! deadline, so a timeout is checked to the millisecond. The slowloris test
//! keeps the real clock: many sockets served at once by two threads are its
//! subject.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn status_of(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_body_gets_408_and_the_target_is_not_blamed() {
    let (blue, _g, proxy) = blue_green(100, 0, "timeouts:\n  client_body: 400ms\n").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789";
    ok(s.write_all(head.as_bytes()).await, "write");
    let started = Instant::now();
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), "408", "{resp}");
    assert!(closed, "the connection is closed after a 408");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(420),
        "{took:?}"
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_downstream_errors_total{kind=\"client_timeout\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&proxy, "switchyard_client_timeouts_total{phase=\"body\"}").await,
        1.0
    );
    let target = format!(
        "switchyard_target_healthy{{group=\"blue\",target=\"{}\"}}",
        blue.addr
    );
    assert_eq!(
        metric(&proxy, &target).await,
        1.0,
        "a slow client does not eject the target"
    );
}

#[tokio::test(start_paused = true)]
async fn a_chunked_body_over_the_limit_gets_413_as_it_streams() {
    let (blue, _g, proxy) = blue_green(100, 0, "limits:\n  max_body_bytes: 1000\n").await;
    let mut req =
        String::from("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        req.push_str(&format!("1f4\r\n{}\r\n", "d".repeat(500)));
    }
    req.push_str("0\r\n\r\n");
    let resp = raw(proxy.proxy_addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), "413", "{resp}");
    assert!(
        !resp.contains("1500 "),
        "the upstream never answered a whole 1 500-byte body: {resp}"
    );
    let _ = &blue;
    let small = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1f4\r\n"
        .to_owned()
        + &"e".repeat(500)
        + "\r\n0\r\n\r\n";
    let resp = raw(proxy.proxy_addr, small.as_bytes()).await;
    assert_eq!(status_of(&resp), "200", "under the limit passes: {resp}");
    assert!(
        resp.contains("500 "),
        "the upstream got all 500 bytes: {resp}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_upstream_body_is_cut_and_counted() {
    let (blue, _g, proxy) = blue_green(100, 0, "timeouts:\n  upstream_body: 400ms\n").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(b"GET /stall?bytes=5 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await,
        "write",
    );
    let started = Instant::now();
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the client is not left hanging: {resp}");
    assert_eq!(status_of(&resp), "200", "the head had been sent: {resp}");
    assert!(resp.contains("sssss"), "what arrived was relayed: {resp}");
    assert!(
        !resp.ends_with("0\r\n\r\n"),
        "the response is visibly cut, not ended cleanly: {resp:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(420),
        "{took:?}"
    );
    let kind = format!(
        "switchyard_upstream_errors_total{{group=\"blue\",kind=\"body_timeout\",target=\"{}\"}}",
        blue.addr
    );
    assert_eq!(metric(&proxy, &kind).await, 1.0);
}

#[tokio::test(start_paused = true)]
async fn expect_100_continue_is_answered_without_a_stall() {
    let (_b, _g, proxy) = blue_green(100, 0, "").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    let head =
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n";
    ok(s.write_all(head.as_bytes()).await, "write head");
    let mut buf = [0u8; 64];
    let n = ok(
        ok(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
            "100 Continue in time",
        ),
        "read",
    );
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    ok(s.write_all(b"hello world").await, "write body");
    let mut out = Vec::new();
    loop {
        let n = ok(
            ok(
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
                "response in time",
            ),
            "read",
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if n == 0 || text.ends_with("\r\n0\r\n\r\n") || text.ends_with("ce2efcde9") {
            break;
        }
    }
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&resp), "200", "{resp}");
    assert!(
        resp.contains("11 b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_normal_clients_are_served() {
    let (blue, green) = blue_and_green().await;
    let yaml = config_yaml(
        &[("blue", 1, &[&blue]), ("green", 1, &[&green])],
        "timeouts:\n  client_header: 2s\n",
    );
    let proxy = BinProxy::start(&yaml);
    let addr = proxy.proxy_addr;
    // 500 connections, each sending its request head one byte per second.
    let mut slow = Vec::new();
    for _ in 0..500 {
        slow.push(ok(TcpStream::connect(addr).await, "slow connect"));
    }
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut served = 0;
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        for s in &mut slow {
            let _ = s.write_all(&head[i % head.len()..i % head.len() + 1]).await;
        }
        i += 1;
        // Normal clients meanwhile: each answered, promptly.
        for _ in 0..5 {
            let t = Instant::now();
            let got = get(&h1_client(), &format!("http://{addr}/"), None).await;
            assert_eq!(got.status, 200);
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "a normal client waited {:?}",
                t.elapsed()
            );
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // However slowly this loop turned on a loaded runner, each of its
    // rounds served its five normal clients while the slow ones were open.
    assert!(
        i >= 1 && served == 5 * i,
        "{served} normal clients in {i} rounds"
    );
    // Past the header timeout, every slow connection has been closed.
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(
        closed, 500,
        "every slowloris connection is closed after client_header"
    );
    let timeouts = metric_at(
        proxy.admin_addr,
        "switchyard_client_timeouts_total{phase=\"header\"}",
    )
    .await;
    assert_eq!(timeouts, 500.0, "each is counted as a header timeout");
    let open = metric_at(proxy.admin_addr, "switchyard_open_connections").await;
    assert!(
        open <= 2.0,
        "slow connections are gone from the gauge: {open}"
    );
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_limit_are_accepted_and_closed_at_once() {
    let (_b, _g, proxy) = blue_green(100, 0, "limits:\n  max_connections: 5\n").await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
        ok(
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
            "write",
        );
        let mut buf = [0u8; 512];
        let n = ok(s.read(&mut buf).await, "read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut extra = ok(TcpStream::connect(proxy.proxy_addr).await, "connect 6th");
    let (resp, closed) = read_until_close(&mut extra, Duration::from_secs(2)).await;
    assert!(
        closed && resp.is_empty(),
        "the 6th connection is closed unanswered: {resp:?}"
    );
    assert_eq!(
        metric(&proxy, "switchyard_connections_refused_total").await,
        1.0
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(got.status, 200, "room again once connections close");
}

/// Reads one response to `GET /` from the blue upstream (its body is "blue",
/// sent chunked or with a length).
async fn read_blue_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !(out.ends_with(b"\r\n\r\nblue") || out.ends_with(b"blue\r\n0\r\n\r\n")) {
        let n = ok(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
            "a response in time",
        );
        let n = ok(n, "read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(start_paused = true)]
async fn an_idle_keepalive_connection_waits_keepalive_not_client_header() {
    let (_b, _g, proxy) = blue_green(
        100,
        0,
        "timeouts:\n  client_header: 400ms\n  keepalive: 1500ms\n",
    )
    .await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ok(s.write_all(req).await, "write");
    assert!(read_blue_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Idle for well past client_header: still open, and it serves again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    ok(
        s.write_all(req).await,
        "second request on the same connection",
    );
    assert!(read_blue_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Then idle: closed after keepalive, with nothing sent.
    let started = Instant::now();
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(closed && resp.is_empty(), "closed quietly: {resp:?}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(1520),
        "closed after keepalive: {waited:?}"
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_client_timeouts_total{phase=\"keepalive\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&proxy, "switchyard_client_timeouts_total{phase=\"header\"}").await,
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_keepalive_closes_idle_connections_before_client_header() {
    let (_b, _g, proxy) = blue_green(
        100,
        0,
        "timeouts:\n  client_header: 5s\n  keepalive: 300ms\n",
    )
    .await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "write",
    );
    read_blue_response(&mut s).await;
    let started = Instant::now();
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(4)).await;
    let waited = started.elapsed();
    assert!(closed && resp.is_empty(), "closed quietly: {resp:?}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(320),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_gets_408_and_a_silent_connection_is_closed_unanswered() {
    let (blue, _g, proxy) = blue_green(
        100,
        0,
        "timeouts:\n  client_header: 500ms\n  keepalive: 10s\n",
    )
    .await;
    // A head that starts and never ends.
    let mut partial = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        partial
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow:")
            .await,
        "write",
    );
    // A connection that sends nothing at all (first request: client_header
    // applies, not keepalive).
    let mut silent = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    // A keep-alive connection whose second head stalls: client_header again,
    // from its first byte.
    let mut second = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        second.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "write",
    );
    read_blue_response(&mut second).await;
    ok(second.write_all(b"GET / HT").await, "write");

    let started = Instant::now();
    let (resp, closed) = read_until_close(&mut partial, Duration::from_secs(5)).await;
    assert!(closed, "closed after the header timeout");
    assert_eq!(status_of(&resp), "408", "{resp}");
    assert!(resp.contains("connection: close"), "{resp}");
    let (resp, closed) = read_until_close(&mut silent, Duration::from_secs(5)).await;
    assert!(
        closed && resp.is_empty(),
        "a silent connection gets no answer: {resp:?}"
    );
    let (resp, closed) = read_until_close(&mut second, Duration::from_secs(5)).await;
    assert!(closed, "the stalled second head is cut");
    assert_eq!(status_of(&resp), "408", "{resp}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(520),
        "{took:?}"
    );
    assert_eq!(
        metric(&proxy, "switchyard_client_timeouts_total{phase=\"header\"}").await,
        3.0
    );
    assert_eq!(blue.hits(), 1, "only the complete request was forwarded");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_after_client_write() {
    let (_b, _g, proxy) = blue_green(100, 0, "timeouts:\n  client_write: 500ms\n").await;
    let socket = ok(tokio::net::TcpSocket::new_v4(), "socket");
    ok(socket.set_recv_buffer_size(4096), "small receive buffer");
    let mut s = ok(socket.connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(b"GET /download?bytes=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await,
        "write",
    );
    // Read nothing: the proxy's writes block once the socket buffers fill.
    let gauge = "switchyard_client_timeouts_total{phase=\"write\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&proxy, gauge).await < 1.0 {
        assert!(Instant::now() < deadline, "the blocked write was never cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection is gone: draining what was buffered ends in a close.
    // The drain runs on a blocking thread against the real clock: with the
    // clock paused, a tokio timeout would jump ahead whenever a read waits
    // for loopback to move the next segment, and fail a healthy close.
    let s = ok(s.into_std(), "into_std");
    ok(s.set_nonblocking(false), "blocking");
    let drained = tokio::task::spawn_blocking(move || drain_until_close(s, Duration::from_secs(5)));
    let (closed, total) = ok(drained.await, "drain");
    assert!(closed, "closed by the proxy");
    assert!(total < 200_000_000, "the response was cut ({total} bytes)");
    let open = metric(&proxy, "switchyard_open_connections").await;
    assert!(open <= 1.0, "{open}");
}

/// Reads until the peer closes or `within` (real time) passes: (closed, bytes read).
fn drain_until_close(mut s: std::net::TcpStream, within: Duration) -> (bool, usize) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return (false, total);
        }
        match s.read(&mut sink) {
            Ok(0) => return (true, total),
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (false, total);
            }
            Err(_) => return (true, total),
        }
    }
}

/// Frame types an HTTP/2 client saw until the server closed, answering PINGs.
async fn h2_frames_until_close(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(within, async {
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return;
            }
            seen.push(head[3]);
            // PING without ACK: answer it, as a live client does.
            if head[3] == 6 && head[4] & 1 == 0 {
                let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                let _ = s.write_all(&ack).await;
            }
        }
    })
    .await;
    assert!(result.is_ok(), "the server did not close; frames: {seen:?}");
    seen
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_gets_goaway_after_keepalive() {
    let (_b, _g, proxy) = blue_green(100, 0, "timeouts:\n  keepalive: 600ms\n").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    // Preface and an empty SETTINGS frame; no stream is ever opened.
    ok(
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await,
        "preface",
    );
    ok(s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await, "settings");
    let started = Instant::now();
    let frames = h2_frames_until_close(&mut s, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    const GOAWAY: u8 = 7;
    assert!(frames.contains(&GOAWAY), "closed with GOAWAY: {frames:?}");
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_millis(620),
        "{waited:?}"
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_client_timeouts_total{phase=\"keepalive\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_with_a_stream_open_is_not_idle() {
    let (_b, _g, proxy) = blue_green(100, 0, "timeouts:\n  keepalive: 500ms\n").await;
    let tcp = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    let (mut send, conn) = ok(
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await,
        "h2 handshake",
    );
    let conn = tokio::spawn(conn);
    // A response that takes three keepalive periods to start.
    let req = ok(
        http::Request::get(format!("http://{}/slow?ms=1500", proxy.proxy_addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new()),
        "request",
    );
    ok(send.ready().await, "ready");
    let resp = ok(send.send_request(req).await, "the slow request completes");
    assert_eq!(resp.status(), 200);
    let body = ok(
        http_body_util::BodyExt::collect(resp.into_body()).await,
        "body",
    );
    assert_eq!(&body.to_bytes()[..], b"slow blue");
    // Then, with nothing in flight, the server ends the connection.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the connection closes once idle");
    let idled = started.elapsed();
    assert!(
        idled >= Duration::from_millis(500) && idled < Duration::from_millis(520),
        "keepalive counts from the end of the last stream: {idled:?}"
    );
}
