//! Failure handling: health checks, passive ejection, routing a pinned client
//! around a dead target or group, retries, and the 503 when nothing is left.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

/// Checks fast enough that the tests see state changes within a second,
/// with a probe timeout no loaded 2-core runner makes a loopback answer
/// miss (an 80 ms one could, and would mark a healthy target down): a dead
/// target's refused connect fails its probe at once, whatever the timeout.
const CHECK: &str = "    health_check:\n      path: /\n      interval: 250ms\n      timeout: 250ms\n      healthy_threshold: 1\n      unhealthy_threshold: 1\n";

/// YAML for `(group, weight, targets, lines added under the group)`.
fn yaml(groups: &[(&str, u32, &[&Upstream], &str)], extra: &str) -> String {
    let mut y = String::from(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n",
    );
    y.push_str(extra);
    y.push_str("groups:\n");
    for (name, weight, targets, lines) in groups {
        y.push_str(&format!(
            "  {name}:\n    weight: {weight}\n{lines}    targets:\n"
        ));
        for t in *targets {
            y.push_str(&format!("      - address: {}\n", t.addr));
        }
    }
    y
}

/// The group an `x-upstream` name belongs to: `blue-2` -> `blue`.
fn group_of(upstream: &str) -> &str {
    upstream.split('-').next().unwrap_or(upstream)
}

/// Polls `/status` until `target`'s `healthy` is `want` (true) or 3 s pass.
async fn wait_healthy(admin: SocketAddr, target: SocketAddr, want: bool) -> bool {
    // A few probe intervals, generously: the state changes at the next probe.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let status = status_at(admin).await;
        let found = status["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["targets"].as_array().into_iter().flatten())
            .find(|t| t["address"] == target.to_string())
            .and_then(|t| t["healthy"].as_bool());
        if found == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("{}", status_at(admin).await);
    eprintln!(
        "{}",
        scrape_at(admin)
            .await
            .lines()
            .filter(|l| l.contains("health"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    false
}

/// Cookies of `n` new clients, each with the group it landed in.
async fn pin(proxy: SocketAddr, n: usize) -> Vec<(String, String)> {
    let c = h1_client();
    let mut out = Vec::new();
    for _ in 0..n {
        let got = get(&c, &format!("http://{proxy}/"), None).await;
        let v = got
            .set_cookie("switchyard")
            .unwrap_or_else(|| panic!("no cookie"));
        out.push((
            format!("switchyard={v}"),
            group_of(got.upstream()).to_owned(),
        ));
    }
    out
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    wrong_group: AtomicUsize,
    /// The upstream that last served each client.
    last: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    /// Clients last served by `upstream`.
    fn on(&self, upstream: &str) -> usize {
        self.last
            .lock()
            .map(|l| l.iter().filter(|u| *u == upstream).count())
            .unwrap_or(0)
    }
}

/// `n` keep-alive clients, each pinned by its first response, sending
/// `/slow?ms=20` until `stop`; a failure is a non-2xx or a broken connection.
fn steady_load(
    proxy: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    if let Ok(mut last) = tally.last.lock() {
        *last = vec![String::new(); n];
    }
    (0..n)
        .map(|i| {
            let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
            tokio::spawn(async move {
                let client = h1_client();
                let url = format!("http://{proxy}/slow?ms=20");
                let mut pinned: Option<(String, String)> = None;
                while !stop.load(Ordering::Relaxed) {
                    let mut req = http::Request::get(&url);
                    if let Some((c, _)) = &pinned {
                        req = req.header("cookie", c.as_str());
                    }
                    let req = ok(req.body(Full::<Bytes>::default()), "request");
                    let Ok(resp) = client.request(req).await else {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let upstream = resp
                        .headers()
                        .get("x-upstream")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    if let Ok(mut last) = tally.last.lock() {
                        last[i].clone_from(&upstream);
                    }
                    if !resp.status().is_success() {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    } else if let Some((_, g)) = &pinned {
                        if group_of(&upstream) != g {
                            tally.wrong_group.fetch_add(1, Ordering::Relaxed);
                        }
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let cookie = resp
                            .headers()
                            .get("set-cookie")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.split(';').next())
                            .map(str::to_owned);
                        pinned = cookie.map(|c| (c, group_of(&upstream).to_owned()));
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = resp.into_body().collect().await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_target_costs_at_most_its_in_flight_requests() {
    const CLIENTS: usize = 16;
    let b1 = Upstream::start("blue-1").await;
    let b2 = Upstream::start("blue-2").await;
    let g = Upstream::start("green").await;
    let proxy = start_proxy(&yaml(
        &[
            ("blue", 50, &[&b1, &b2], CHECK),
            ("green", 50, &[&g], CHECK),
        ],
        "health:\n  outlier:\n    base_ejection: 500ms\n",
    ))
    .await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients = steady_load(p, CLIENTS, Arc::clone(&stop), Arc::clone(&tally));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(b1.hits() > 0, "blue-1 took no load before the kill");
    // Each client has one request in flight at most: only those on blue-1
    // can lose one to the kill (and a GET cut before its answer is retried
    // on blue-2, so usually none does).
    let exposed = tally.on("blue-1");
    b1.kill();
    assert!(
        wait_healthy(a, b1.addr, false).await,
        "the dead target was not marked unhealthy"
    );
    let during = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tally.ok.load(Ordering::Relaxed) > during,
        "traffic stopped after the kill"
    );
    assert_eq!(
        metric_at(
            a,
            &format!(
                "switchyard_target_healthy{{group=\"blue\",target=\"{}\"}}",
                b1.addr
            )
        )
        .await,
        0.0
    );
    let b1 = b1.revive().await;
    let hits = b1.hits();
    assert!(
        wait_healthy(a, b1.addr, true).await,
        "the revived target was not marked healthy"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while b1.hits() == hits && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        ok(c.await, "client");
    }
    let (okays, failed, wrong) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.wrong_group.load(Ordering::Relaxed),
    );
    eprintln!("{okays} ok, {failed} failed, {wrong} in the wrong group");
    assert!(b1.hits() > hits, "the revived target was never used again");
    assert!(
        failed <= exposed,
        "{failed} failures: more than the {exposed} requests that could be in flight on blue-1"
    );
    assert_eq!(wrong, 0, "a pinned client changed group");
}

#[tokio::test]
async fn a_dead_group_fails_over_with_cookies_kept_and_comes_back() {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(&yaml(
        &[("blue", 50, &[&b], CHECK), ("green", 50, &[&g], CHECK)],
        "",
    ))
    .await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let green: Vec<String> = pin(p, 40)
        .await
        .into_iter()
        .filter(|(_, grp)| grp == "green")
        .map(|(c, _)| c)
        .collect();
    assert!(!green.is_empty(), "nobody landed in green");
    g.kill();
    assert!(wait_healthy(a, g.addr, false).await);
    let c = h1_client();
    for cookie in &green {
        let got = get(&c, &format!("http://{p}/"), Some(cookie)).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.upstream(), "blue", "a green client was not failed over");
        assert!(
            got.set_cookie("switchyard").is_none(),
            "failover rewrote the cookie"
        );
    }
    assert_eq!(
        metric_at(
            a,
            "switchyard_assignments_total{group=\"blue\",reason=\"failover\",route=\"default\"}"
        )
        .await,
        green.len() as f64
    );
    // New clients are not handed to a dead group.
    for (_, grp) in pin(p, 10).await {
        assert_eq!(grp, "blue");
    }
    let g = g.revive().await;
    assert!(wait_healthy(a, g.addr, true).await);
    for cookie in &green {
        let got = get(&c, &format!("http://{p}/"), Some(cookie)).await;
        assert_eq!(got.upstream(), "green", "a green client did not return");
        assert!(got.set_cookie("switchyard").is_none());
    }
}

#[tokio::test]
async fn without_failover_or_any_healthy_target_the_answer_is_503() {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(&yaml(
        &[("blue", 50, &[&b], CHECK), ("green", 50, &[&g], CHECK)],
        "health:\n  failover: false\n",
    ))
    .await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let pinned = pin(p, 30).await;
    g.kill();
    assert!(wait_healthy(a, g.addr, false).await);
    let c = h1_client();
    for (cookie, grp) in &pinned {
        let got = get(&c, &format!("http://{p}/"), Some(cookie)).await;
        if grp == "green" {
            assert_eq!(got.status, 503);
            assert!(got.headers.contains_key("retry-after"));
        } else {
            assert_eq!(got.status, 200);
        }
    }
    b.kill();
    assert!(wait_healthy(a, b.addr, false).await);
    let got = get(&c, &format!("http://{p}/"), None).await;
    assert_eq!(got.status, 503, "nothing is healthy");
    assert_eq!(
        got.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
}

/// A port nothing listens on, held for as long as the socket lives: bound
/// but not listening, so connects are refused, and no other test (or
/// process) can be handed the port meanwhile (a port merely freed could be,
/// and a "dead" target would then answer).
fn refused_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = ok(tokio::net::TcpSocket::new_v4(), "socket");
    ok(socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))), "bind");
    let addr = ok(socket.local_addr(), "addr");
    (socket, addr)
}

#[tokio::test]
async fn a_post_to_a_refusing_target_is_sent_once_to_a_sibling() {
    let live = Upstream::start("blue-live").await;
    let (_held, dead) = refused_addr();
    let g = Upstream::start("green").await;
    let y = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         health:\n  outlier:\n    consecutive_failures: 0\n\
         groups:\n  blue:\n    weight: 1\n    targets:\n      - address: {dead}\n      - address: {}\n  \
         green:\n    weight: 0\n    targets:\n      - address: {}\n",
        live.addr, g.addr
    );
    let proxy = start_proxy(&y).await;
    let c = h1_client();
    let body = vec![7u8; 100_000];
    for i in 0..20 {
        let req = ok(
            http::Request::post(format!("http://{}/upload", proxy.proxy_addr))
                .body(Full::new(Bytes::from(body.clone()))),
            "request",
        );
        let got = send(&c, req).await;
        assert_eq!(got.status, 200, "POST {i}: {:?}", got.body);
        assert!(got.body.starts_with(b"100000 "), "POST {i}: {:?}", got.body);
    }
    assert_eq!(
        live.hits(),
        20,
        "each POST must reach the live target exactly once"
    );
    assert!(
        metric(
            &proxy,
            "switchyard_retries_total{group=\"blue\",result=\"retried\"}"
        )
        .await
            > 0.0,
        "no POST hit the refusing target first"
    );
}

/// A target that answers GETs but drops the connection after reading part of
/// a POST body, without a response.
async fn dies_mid_body() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await, "bind");
    let addr = ok(l.local_addr(), "addr");
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&posts);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if got.starts_with(b"POST") {
                    seen.fetch_add(1, Ordering::SeqCst);
                    while got.len() < 8 * 1024 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    return; // dropped mid-body
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nx-upstream: blue-dying\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, posts)
}

#[tokio::test]
async fn a_target_dying_mid_post_body_gets_502_and_no_retry() {
    let (dying, posts) = dies_mid_body().await;
    let live = Upstream::start("blue-live").await;
    let g = Upstream::start("green").await;
    let y = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  blue:\n    weight: 1\n    targets:\n      - address: {dying}\n      - address: {}\n  \
         green:\n    weight: 0\n    targets:\n      - address: {}\n",
        live.addr, g.addr
    );
    let proxy = start_proxy(&y).await;
    let p = proxy.proxy_addr;
    // A cookie pinned to the dying target.
    let c = h1_client();
    let mut cookie = None;
    for _ in 0..50 {
        let got = get(&c, &format!("http://{p}/"), None).await;
        if got.upstream() == "blue-dying" {
            cookie = got.set_cookie("switchyard");
            break;
        }
    }
    let cookie = cookie.unwrap_or_else(|| panic!("never pinned to the dying target"));
    let before = live.hits();
    let req = ok(
        http::Request::post(format!("http://{p}/upload"))
            .header("cookie", format!("switchyard={cookie}"))
            .body(Full::new(Bytes::from(vec![1u8; 1 << 20]))),
        "request",
    );
    let got = send(&c, req).await;
    assert_eq!(got.status, 502);
    assert_eq!(posts.load(Ordering::SeqCst), 1);
    assert_eq!(
        live.hits(),
        before,
        "a POST whose body was streamed was retried"
    );
}

/// Issue 24: a 502 because a target is down left no trace at the default
/// log level. Now a warning names the target and why, at most once a target
/// every 10 s however many requests fail.
#[tokio::test]
async fn a_dead_target_is_named_in_a_rate_limited_warning() {
    let (_held, dead) = refused_addr();
    let proxy = BinProxy::start(&format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  blue:\n    weight: 1\n    targets:\n      - address: {dead}\n"
    ));
    for _ in 0..5 {
        let got = raw(
            proxy.proxy_addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    }
    let line = proxy
        .wait_log("upstream request failed", Duration::from_secs(3))
        .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&dead.to_string()), "{line}");
    assert!(line.contains("upstream connection failed"), "{line}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = proxy
        .log
        .lock()
        .map(|l| {
            l.iter()
                .filter(|l| l.contains("upstream request failed"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(lines, 1, "one warning for five failures within 10 s");
}
