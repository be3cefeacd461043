//! Size limits: each over-limit request is answered by the proxy (414, 431,
//! 413) and never reaches an upstream.

mod common;

use common::*;

async fn proxy_with(extra: &str) -> (Upstream, Upstream, switchyard::app::Running) {
    blue_green(100, 0, extra).await
}

fn status_of(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn oversized_requests_are_refused_and_not_forwarded() {
    let (b, g, proxy) = proxy_with("limits:\n  max_body_bytes: 1000\n").await;
    let p = proxy.proxy_addr;

    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert_eq!(status_of(&raw(p, long_uri.as_bytes()).await), "414");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..101 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status_of(&raw(p, many.as_bytes()).await), "431");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    assert_eq!(status_of(&raw(p, big.as_bytes()).await), "431");

    let body = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{}",
        "c".repeat(2000)
    );
    let resp = raw(p, body.as_bytes()).await;
    assert_eq!(status_of(&resp), "413", "{resp}");

    assert_eq!(
        b.hits() + g.hits(),
        0,
        "an over-limit request was forwarded"
    );
    // Within limits, the same shapes pass.
    let fine =
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(status_of(&raw(p, fine.as_bytes()).await), "200");
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn limits_are_configurable() {
    let (b, _g, proxy) = proxy_with("limits:\n  max_uri_bytes: 100\n  max_headers: 5\n").await;
    let p = proxy.proxy_addr;
    let uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(150));
    assert_eq!(status_of(&raw(p, uri.as_bytes()).await), "414");
    let six = "GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n";
    assert_eq!(status_of(&raw(p, six.as_bytes()).await), "431");
    assert_eq!(b.hits(), 0);
}
