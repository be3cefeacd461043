//! The proxy's own HTTP/1.1 server (src/listener/native.rs) as a client on
//! the wire sees it: pipelined requests, HTTP/1.0 keep-alive and close, how
//! response bodies are framed, heads it hands to hyper, and a connection
//! that goes on after a request handed over.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn response_bytes(s: &mut TcpStream) -> Vec<u8> {
    read_response_bytes(s).await.0
}

async fn response(s: &mut TcpStream) -> String {
    String::from_utf8_lossy(&response_bytes(s).await).into_owned()
}

/// The body of a whole response, de-chunked when it was chunked.
fn body_bytes(resp: &[u8]) -> Vec<u8> {
    let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
    let mut rest = &resp[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]).into_owned();
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n + 2 {
            break;
        }
        out.extend_from_slice(&data[..n]);
        rest = &data[n + 2..];
    }
    out
}

fn body(resp: &str) -> String {
    String::from_utf8_lossy(&body_bytes(resp.as_bytes())).into_owned()
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (blue, _g, proxy) = blue_green(100, 0, "").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
              GET /three HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await,
        "write",
    );
    let first = response(&mut s).await;
    let second = response(&mut s).await;
    let third = response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert_eq!(body(&first), "blue");
    assert!(
        body(&second).starts_with("3 "),
        "the upload's body went with it: {second}"
    );
    assert_eq!(body(&third), "blue");
    let uris: Vec<String> = blue
        .seen
        .lock()
        .map(|s| s.iter().map(|r| r.uri.clone()).collect())
        .unwrap_or_default();
    assert_eq!(uris, ["/one", "/upload", "/three"]);
    assert!(header(&first, "date").is_some(), "{first}");
}

#[tokio::test]
async fn http_1_0_clients_get_keep_alive_only_when_they_ask() {
    let (_b, _g, proxy) = blue_green(100, 0, "").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    // The test upstream sends chunked bodies: the proxy, which has the whole
    // (small) body at hand, tells an HTTP/1.0 client its length.
    for _ in 0..3 {
        ok(
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
                .await,
            "write",
        );
        let resp = response(&mut s).await;
        assert_eq!(header(&resp, "connection"), Some("keep-alive"), "{resp}");
        assert_eq!(header(&resp, "content-length"), Some("4"), "{resp}");
        assert_eq!(body(&resp), "blue", "{resp}");
    }
    ok(
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await,
        "write",
    );
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "closed after an HTTP/1.0 answer without keep-alive");
    assert_eq!(header(&resp, "connection"), Some("close"), "{resp}");
    // A long body of unknown length goes to an HTTP/1.0 client delimited by
    // the close, and to an HTTP/1.1 client chunked.
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(
            b"GET /download?bytes=1000000 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        )
        .await,
        "write",
    );
    let mut resp = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    assert!(read.is_ok(), "closed at the end of the body");
    let head = String::from_utf8_lossy(&resp[..resp.len().min(400)]).into_owned();
    assert_eq!(body_bytes(&resp), pattern_chunk(0, 1_000_000), "{head}");
    assert!(header(&head, "transfer-encoding").is_none(), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(b"GET /download?bytes=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await,
        "write",
    );
    let resp = response_bytes(&mut s).await;
    let head = String::from_utf8_lossy(&resp[..400]).into_owned();
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    assert_eq!(body_bytes(&resp), pattern_chunk(0, 1_000_000));
}

#[tokio::test]
async fn heads_this_server_does_not_take_go_to_hyper_and_the_connection_goes_on() {
    let (blue, _g, proxy) = blue_green(100, 0, "limits:\n  max_headers: 20\n").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    // Natively first; then an `Upgrade` that asks for nothing (served by
    // hyper, which takes the connection over); then more on the same socket.
    ok(
        s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "write",
    );
    assert_eq!(body(&response(&mut s).await), "blue");
    ok(
        s.write_all(b"GET /handed HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n")
            .await,
        "write",
    );
    let resp = response(&mut s).await;
    assert_eq!(body(&resp), "blue", "{resp}");
    ok(
        s.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "write",
    );
    assert_eq!(body(&response(&mut s).await), "blue");
    let uris: Vec<String> = blue
        .seen
        .lock()
        .map(|s| s.iter().map(|r| r.uri.clone()).collect())
        .unwrap_or_default();
    assert_eq!(uris, ["/first", "/handed", "/after"]);
    assert_eq!(metric(&proxy, "switchyard_connections_total").await, 1.0);
    // More fields than allowed: 431, as before; a malformed head: 400. Neither
    // is forwarded.
    let mut many = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("x-h-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw(proxy.proxy_addr, many.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let resp = raw(proxy.proxy_addr, b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(blue.hits(), 3);
}

#[tokio::test]
async fn a_head_request_gets_the_head_and_no_body() {
    let (_b, _g, proxy) = blue_green(100, 0, "").await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    ok(
        s.write_all(b"HEAD /download?bytes=5000 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await,
        "write",
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The GET's small answer comes with a Content-Length: it ends the read.
    while !got.ends_with(b"blue") {
        let n = ok(
            ok(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
                "in time",
            ),
            "read",
        );
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "no body after the HEAD answer: {rest}"
    );
    assert_eq!(body(rest), "blue");
}
