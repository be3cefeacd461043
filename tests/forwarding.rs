//! Edge hygiene and forwarding: hop-by-hop headers, the sticky cookie, Host
//! checks, X-Forwarded-*, HTTP/2 clients, dead and slow upstreams.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;

async fn one_group(extra: &str) -> (Upstream, switchyard::app::Running) {
    let b = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(&[("blue", 1, &[&b])], extra)).await;
    (b, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_and_the_sticky_cookie_never_reach_the_upstream() {
    let (up, proxy) = one_group("").await;
    let cookie = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None)
        .await
        .set_cookie("switchyard")
        .unwrap_or_else(|| panic!("no cookie"));
    let req = format!(
        "GET /path?q=1 HTTP/1.1\r\nHost: app.example\r\nConnection: close, X-Secret\r\n\
         X-Secret: s3cret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
         Proxy-Connection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
         X-Real-IP: 6.6.6.6\r\n\
         Forwarded: for=6.6.6.6\r\nCookie: a=1; switchyard={cookie}; b=2\r\nX-Keep: yes\r\n\r\n"
    );
    let resp = raw(proxy.proxy_addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("set-cookie"),
        "sticky hit: no new cookie\n{resp}"
    );
    let seen = up
        .last_seen()
        .unwrap_or_else(|| panic!("upstream saw nothing"));
    let h = &seen.headers;
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "forwarded",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    assert_eq!(
        h["cookie"], "a=1; b=2",
        "other cookies pass, the sticky one does not"
    );
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "spoofed XFF replaced by the peer"
    );
    assert!(
        !h.contains_key("x-real-ip"),
        "a spoofed X-Real-IP reached the upstream"
    );
    assert_eq!(h["x-forwarded-host"], "app.example");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], "app.example", "Host is kept");
    assert_eq!(h["x-keep"], "yes");
    assert_eq!(seen.uri, "/path?q=1");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_are_appended_to() {
    let (up, proxy) = one_group("trusted_proxies: [127.0.0.0/8]\n").await;
    let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let resp = raw(proxy.proxy_addr, req).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let h = up
        .last_seen()
        .unwrap_or_else(|| panic!("nothing seen"))
        .headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        h["x-real-ip"], "203.0.113.9",
        "a trusted proxy's X-Real-IP is kept"
    );
    assert_eq!(
        h["x-forwarded-proto"], "https",
        "a trusted proxy's proto is kept"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_host_is_400_and_not_forwarded() {
    let (up, proxy) = one_group("").await;
    let cases: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET http://other.example/ HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n",
    ];
    for req in cases {
        let resp = raw(proxy.proxy_addr, req).await;
        assert!(
            resp.starts_with("HTTP/1.1 400") || resp.starts_with("HTTP/1.0 400"),
            "{resp}"
        );
    }
    let smuggle: [(&[u8], &str); 2] = [
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            " 501 ",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            " 400 ",
        ),
    ];
    for (req, status) in smuggle {
        let resp = raw(proxy.proxy_addr, req).await;
        assert!(
            resp.starts_with("HTTP/1.1") && resp.contains(status),
            "{resp}"
        );
    }
    let garbage = raw(proxy.proxy_addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.contains(" 400 "), "{garbage}");
    assert_eq!(up.hits(), 0, "nothing malformed was forwarded");
    // An absolute URI that agrees with Host is fine.
    let ok_resp = raw(
        proxy.proxy_addr,
        b"GET http://app.example/x HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok_resp.starts_with("HTTP/1.1 200"), "{ok_resp}");
    assert_eq!(up.last_seen().map(|s| s.uri), Some("/x".to_owned()));
    let default_port = raw(
        proxy.proxy_addr,
        b"GET http://APP.example:80/y HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(default_port.starts_with("HTTP/1.1 200"), "{default_port}");
    let refused = metric(
        &proxy,
        r#"switchyard_downstream_errors_total{kind="bad_request"}"#,
    )
    .await;
    assert_eq!(
        refused, 7.0,
        "six bad hosts and one transfer coding refused by switchyard itself"
    );
    // Content-Length beside Transfer-Encoding: the body is read as chunked and
    // only one framing reaches the upstream.
    let both = raw(
        proxy.proxy_addr,
        b"POST /both HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(both.starts_with("HTTP/1.1 200"), "{both}");
    let seen = up.last_seen().unwrap_or_else(|| panic!("nothing seen"));
    assert_eq!(seen.uri, "/both");
    let h = &seen.headers;
    assert!(
        !(h.contains_key("content-length") && h.contains_key("transfer-encoding")),
        "{h:?}"
    );
    assert_ne!(
        h.get("content-length").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_sticky_and_their_split_cookies_are_joined() {
    let blue = [
        Upstream::start("blue-1").await,
        Upstream::start("blue-2").await,
    ];
    let green = Upstream::start("green-1").await;
    let proxy = start_proxy(&config_yaml(
        &[
            ("blue", 50, &[&blue[0], &blue[1]]),
            ("green", 50, &[&green]),
        ],
        "",
    ))
    .await;
    let url = format!("http://{}/h2", proxy.proxy_addr);
    let client = h2_client();
    let first = get(&client, &url, None).await;
    assert_eq!(first.status, 200);
    let cookie = first
        .set_cookie("switchyard")
        .unwrap_or_else(|| panic!("no cookie over h2"));
    for _ in 0..50 {
        let req = Request::get(&url)
            .header("cookie", "a=1")
            .header("cookie", format!("switchyard={cookie}"))
            .header("cookie", "b=2")
            .body(Full::<Bytes>::default());
        let got = send(&client, ok(req, "req")).await;
        assert_eq!(got.upstream(), first.upstream());
        assert!(got.set_cookie("switchyard").is_none());
    }
    let all = [&blue[0], &blue[1], &green];
    let seen = all
        .iter()
        .find(|u| u.name == first.upstream())
        .and_then(|u| u.last_seen())
        .unwrap_or_else(|| panic!("upstream saw nothing"));
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "HTTP/1.1 to upstreams"
    );
    assert_eq!(seen.headers.get_all("cookie").iter().count(), 1);
    assert_eq!(seen.headers["cookie"], "a=1; b=2");
    assert_eq!(seen.headers["host"], proxy.proxy_addr.to_string().as_str());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_a_502_with_a_reason() {
    let dead = {
        let l = ok(std::net::TcpListener::bind("127.0.0.1:0"), "bind");
        ok(l.local_addr(), "addr")
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\ngroups:\n  blue:\n    weight: 1\n    targets: [{{address: \"{dead}\"}}]\n"
    );
    let proxy = start_proxy(&yaml).await;
    let got = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(got.status, 502);
    let body = String::from_utf8_lossy(&got.body);
    assert!(
        body.contains("upstream connection failed")
            && body.ends_with('\n')
            && body.lines().count() == 1,
        "{body}"
    );
    let errors = metric(
        &proxy,
        &format!(
            r#"switchyard_upstream_errors_total{{group="blue",kind="connect",target="{dead}"}}"#
        ),
    )
    .await;
    assert_eq!(errors, 1.0);
    proxy.shutdown().await;
}

/// Asks for an answer 3 s late through a proxy whose upstream response
/// timeout is 300 ms: a 504, at 300 ms. Run on tokio's paused clock (time
/// moves only when every task waits on a timer), so the deadline is checked
/// to the millisecond.
async fn slow_answer_is_a_timely_504(proxy: &switchyard::app::Running) -> Got {
    let started = tokio::time::Instant::now();
    let got = get(
        &h1_client(),
        &format!("http://{}/slow?ms=3000", proxy.proxy_addr),
        None,
    )
    .await;
    assert_eq!(got.status, 504);
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(300)
            && took < std::time::Duration::from_millis(320),
        "{took:?}"
    );
    got
}

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_is_a_504() {
    let (up, proxy) = one_group("timeouts:\n  upstream_response: 300ms\n").await;
    let got = slow_answer_is_a_timely_504(&proxy).await;
    assert!(String::from_utf8_lossy(&got.body).contains("did not answer in time"));
    let fast = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(fast.status, 200);
    assert_eq!(up.hits(), 2);
    let errors = metric(
        &proxy,
        &format!(r#"switchyard_upstream_errors_total{{group="blue",kind="response_timeout",target="{}"}}"#, up.addr),
    )
    .await;
    assert_eq!(errors, 1.0);
    proxy.shutdown().await;
}

/// The pool takes the response timer of a connection that rests on its
/// shelf (benches/README.md, memory): the next request on it still gets one.
#[tokio::test(start_paused = true)]
async fn a_pooled_connection_that_rested_still_times_out_a_slow_answer() {
    let (up, proxy) = one_group("timeouts:\n  upstream_response: 300ms\n").await;
    let first = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(first.status, 200);
    // The sweep runs once a second and takes the timer after a second's rest.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    slow_answer_is_a_timely_504(&proxy).await;
    assert_eq!(
        up.accepted_connections(),
        1,
        "the slow request went on the connection that rested"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_group_name_from_override_plain_from_reaches_a_group_at_weight_zero() {
    let (_b, _g, proxy) = blue_green(
        100,
        0,
        "override_header: X-Switchyard-Group\noverride_plain_from: [127.0.0.0/8]\n",
    )
    .await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let req = Request::get(&url)
        .header("x-switchyard-group", "green")
        .body(Full::<Bytes>::default());
    let got = send(&h1_client(), ok(req, "req")).await;
    assert_eq!(got.upstream(), "green");
    assert!(
        got.set_cookie("switchyard").is_none(),
        "an override pins nobody"
    );
    assert_eq!(get(&h1_client(), &url, None).await.upstream(), "blue");
    proxy.shutdown().await;
}

/// Cleartext HTTP/1.1 upstream connections are pooled per target and driven by
/// the requests themselves: a connection comes back after a sized body and
/// after a chunked one, is never reused while a response on it was abandoned
/// half-read, and one the upstream closed while idle is replaced, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_replaced_when_they_cannot_be() {
    let (up, proxy) = one_group("").await;
    let p = proxy.proxy_addr;
    let client = h1_client();
    for i in 0..10 {
        assert_eq!(
            get(&client, &format!("http://{p}/"), None).await.status,
            200
        );
        let got = get(
            &client,
            &format!("http://{p}/download?bytes={}", 50_000 + i),
            None,
        )
        .await;
        assert_eq!(got.body.len(), 50_000 + i);
        assert_eq!(&got.body[..], &pattern_chunk(0, 50_000 + i)[..]);
    }
    assert_eq!(
        up.accepted_connections(),
        1,
        "sequential requests share one connection"
    );
    // The request target is sent in origin form.
    let seen = up.last_seen().unwrap_or_else(|| panic!("nothing seen"));
    assert_eq!(seen.uri, "/download?bytes=50009");

    // A client that walks away mid-body: its upstream connection has bytes in
    // flight and must be closed, not handed to the next request.
    let stalled = raw_partial(p, b"GET /stall?bytes=5 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(stalled.starts_with("HTTP/1.1 200"), "{stalled}");
    let got = get(&client, &format!("http://{p}/"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"blue");
    assert_eq!(
        up.accepted_connections(),
        2,
        "the abandoned connection was not replaced"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while up.open_connections() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        up.open_connections(),
        1,
        "the abandoned connection stayed open"
    );

    // The upstream restarts: the pooled connection is dead, and the next
    // request (even a POST, which is never retried once sent) gets through.
    up.kill();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let up = up.revive().await;
    let req =
        Request::post(format!("http://{p}/upload")).body(Full::new(Bytes::from_static(b"abc")));
    let got = send(&client, ok(req, "request")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert!(String::from_utf8_lossy(&got.body).starts_with("3 "));
    assert_eq!(up.accepted_connections(), 3);
    proxy.shutdown().await;
}

/// Sends `request`, reads the first bytes of the answer and closes.
async fn raw_partial(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = ok(tokio::net::TcpStream::connect(addr).await, "connect");
    ok(s.write_all(request).await, "write");
    let mut buf = vec![0u8; 4096];
    let n = ok(
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await,
        "read in time",
    );
    String::from_utf8_lossy(&buf[..ok(n, "read")]).into_owned()
}

/// An idle upstream connection is closed after `timeouts.upstream_idle` even
/// when no request comes to notice it, and the next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_upstream_idle() {
    let (up, proxy) = one_group("timeouts:\n  upstream_idle: 1s\n").await;
    let url = format!("http://{}/", proxy.proxy_addr);
    assert_eq!(get(&h1_client(), &url, None).await.status, 200);
    assert_eq!(up.open_connections(), 1);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while up.open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        up.open_connections(),
        0,
        "the idle connection outlived upstream_idle"
    );
    assert_eq!(get(&h1_client(), &url, None).await.status, 200);
    assert_eq!(up.accepted_connections(), 2);
    proxy.shutdown().await;
}
