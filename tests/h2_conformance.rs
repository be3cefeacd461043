//! HTTP/2 to the letter (RFC 9113): request trailers reach an HTTP/1.1
//! upstream in the last chunk and the body always ends, so a client's
//! trailers never become a target's failure; ALPN's choice is binding
//! (`h2` means the preface or a connection error, `http/1.1` means
//! HTTP/1.1), and the preface is due within the head deadline.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::pki::{self, Ca};
use common::*;
use http::{HeaderMap, Request};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request body of one data frame and a trailer section, with no length.
struct Trailed {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Trailed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn trailed() -> Trailed {
    let mut t = HeaderMap::new();
    t.insert("x-checksum", ok("abc123".parse(), "value"));
    t.insert("content-length", ok("99".parse(), "value"));
    Trailed {
        data: Some(Bytes::from_static(b"hello")),
        trailers: Some(t),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_reach_the_upstream_and_eject_nobody() {
    let b = Upstream::start("blue").await;
    let extra = "timeouts:\n  upstream_response: 3s\n";
    let proxy = start_proxy(&config_yaml(&[("blue", 1, &[&b])], extra)).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Trailed>();
    for _ in 0..6 {
        let req = ok(
            Request::post(format!("http://{}/upload", proxy.proxy_addr)).body(trailed()),
            "request",
        );
        let resp = ok(
            tokio::time::timeout(Duration::from_secs(2), client.request(req)).await,
            "answered before the response timeout",
        );
        let resp = ok(resp, "response");
        assert_eq!(resp.status(), 200);
        let body = ok(resp.into_body().collect().await, "body").to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with("5 "), "the body's 5 bytes: {body}");
        // Forwardable trailers go in the last chunk; framing fields do not.
        assert!(body.ends_with(" x-checksum=abc123;"), "{body}");
    }
    let name = format!(
        "switchyard_target_ejections_total{{cause=\"gateway\",group=\"blue\",target=\"{}\"}}",
        b.addr
    );
    assert_eq!(series_at(proxy.admin_addr, &name).await, 0.0);
}

async fn tls_proxy(extra: &str) -> (Ca, Upstream, switchyard::app::Running, tempfile::TempDir) {
    let ca = Ca::new("test CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let (cert, key) = ca.leaf(&["app.test"]).write(dir.path(), "app");
    let b = Upstream::start("blue").await;
    let yaml = config_yaml(
        &[("blue", 1, &[&b])],
        &format!(
            "tls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {}\n      key: {}\n{extra}",
            cert.display(),
            key.display()
        ),
    );
    let proxy = start_proxy(&yaml).await;
    (ca, b, proxy, dir)
}

/// Reads what the server sends until it closes or `within` passes.
async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_is_binding_both_ways() {
    let (ca, b, proxy, _dir) = tls_proxy("").await;
    let addr = proxy.tls_addr.unwrap_or_else(|| panic!("no TLS listener"));
    // h2 agreed, HTTP/1.1 spoken: a connection error, never an HTTP/1 answer.
    let mut s = pki::connect(addr, "app.test", &ca, &[b"h2"]).await;
    assert_eq!(pki::peer(&s).1.as_deref(), Some(&b"h2"[..]));
    ok(
        s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await,
        "write",
    );
    let (got, closed) = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the connection stayed open");
    assert!(
        !got.starts_with(b"HTTP/"),
        "served as HTTP/1: {}",
        String::from_utf8_lossy(&got)
    );
    // http/1.1 agreed, the HTTP/2 preface sent: not served as HTTP/2.
    let mut s = pki::connect(addr, "app.test", &ca, &[b"http/1.1"]).await;
    ok(
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await,
        "write",
    );
    let (got, _) = read_all(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5"),
        "{text}"
    );
    assert_eq!(b.hits(), 0, "a misdirected protocol reached the upstream");
    // And both work when spoken as agreed.
    let s = pki::connect(addr, "app.test", &ca, &[b"h2"]).await;
    let mut h2 = pki::h2_over(s).await;
    let req = ok(
        Request::get("https://app.test/").body(http_body_util::Full::default()),
        "request",
    );
    assert_eq!(pki::h2_send(&mut h2, req).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_h2_preface_is_due_within_the_head_deadline() {
    let (ca, _b, proxy, _dir) =
        tls_proxy("timeouts:\n  client_header: 1s\n  keepalive: 60s\n").await;
    let addr = proxy.tls_addr.unwrap_or_else(|| panic!("no TLS listener"));
    for sent in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n",
        b"GET / HTTP/1.1\r\nHost: a",
    ] {
        let mut s = pki::connect(addr, "app.test", &ca, &[b"h2"]).await;
        ok(s.write_all(sent).await, "write");
        // Generous beside the 1 s deadline (a shared 2-core runner): what
        // this tells apart is 1 s from the 60 s keep-alive.
        let (got, closed) = read_all(&mut s, Duration::from_secs(15)).await;
        assert!(
            closed,
            "{:?}: still open after 15 s",
            String::from_utf8_lossy(sent)
        );
        assert!(
            !got.starts_with(b"HTTP/"),
            "an HTTP/1 answer on an h2 connection"
        );
    }
}
