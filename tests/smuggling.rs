//! Request framing at the edge, from the outside: a table of ambiguous and
//! malformed requests sent as raw bytes to both listeners (the cleartext one,
//! served by the proxy's own HTTP/1.1 code, and the TLS one, served by hyper),
//! which must give the same answers, forward nothing hidden, and never blame
//! a target for what a client sent (DESIGN §10).

mod common;

use std::time::Duration;

use common::pki::{self, Ca};
use common::*;
use switchyard::app::Running;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// One blue target (weight 1), one green (weight 0), both listeners.
struct Edge {
    blue: Upstream,
    green: Upstream,
    proxy: Running,
    ca: Ca,
    _dir: tempfile::TempDir,
}

async fn edge() -> Edge {
    let (blue, green) = blue_and_green().await;
    let ca = Ca::new("test CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let (cert, key) = ca.leaf(&["app.test"]).write(dir.path(), "app");
    let tls = format!(
        "tls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {}\n      key: {}\n",
        cert.display(),
        key.display()
    );
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue]), ("green", 0, &[&green])],
        &tls,
    ))
    .await;
    Edge {
        blue,
        green,
        proxy,
        ca,
        _dir: dir,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Cleartext,
    Tls,
}

/// Writes `wire` (then half-closes when `shut`), and reads until the proxy
/// closes.
async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    wire: &[u8],
    shut: bool,
) -> String {
    let _ = s.write_all(wire).await;
    if shut {
        let _ = s.shutdown().await;
    }
    read_until_close(&mut s, Duration::from_secs(5)).await.0
}

async fn exchange(e: &Edge, on: Listener, wire: &[u8], shut: bool) -> String {
    match on {
        Listener::Cleartext => {
            let s = ok(
                tokio::net::TcpStream::connect(e.proxy.proxy_addr).await,
                "connect",
            );
            exchange_on(s, wire, shut).await
        }
        Listener::Tls => {
            let addr = e
                .proxy
                .tls_addr
                .unwrap_or_else(|| panic!("no TLS listener"));
            let s = pki::connect(addr, "app.test", &e.ca, &[b"http/1.1"]).await;
            exchange_on(s, wire, shut).await
        }
    }
}

/// The status codes of every response in `text`, in order.
fn statuses(text: &str) -> Vec<String> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|r| r.get(..3))
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

/// Every path the upstreams were asked for.
fn paths(e: &Edge) -> Vec<String> {
    [&e.blue, &e.green]
        .iter()
        .flat_map(|u| u.seen.lock().map(|s| s.clone()).unwrap_or_default())
        .map(|s| s.uri)
        .collect()
}

/// The sum of every sample of one metric family, which must have some (a
/// misspelt family fails the test instead of summing to 0).
async fn total(e: &Edge, family: &str) -> f64 {
    let samples: Vec<f64> = scrape(&e.proxy)
        .await
        .lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .collect();
    assert!(!samples.is_empty(), "no series of {family} in /metrics");
    samples.iter().sum()
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nhost: app.test\r\n\r\n";
const CHUNKED: &str =
    "POST /upload HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n";
const NEXT: &str = "GET /next HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";

/// `(what, request bytes, the statuses both listeners must answer)`.
fn table() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let chunked = |body: &str| format!("{CHUNKED}{body}{SMUGGLED}");
    let sized = |lengths: &str| {
        format!("POST /upload HTTP/1.1\r\nhost: app.test\r\n{lengths}\r\nhello{NEXT}")
    };
    vec![
        ("empty chunk-size line", chunked("\r\n\r\n"), vec!["400"]),
        ("blank chunk-size line", chunked(" \r\n\r\n"), vec!["400"]),
        (
            "extension without a size",
            chunked(";x\r\n\r\n"),
            vec!["400"],
        ),
        (
            "bare LF in an extension",
            chunked("5;a\nb\r\nhello\r\n0\r\n\r\n"),
            vec!["400"],
        ),
        (
            "CR alone in an extension",
            chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"),
            vec!["400"],
        ),
        (
            "bare LF after the size",
            chunked("5\nhello\r\n0\r\n\r\n"),
            vec!["400"],
        ),
        (
            "not a hex size",
            chunked("zz\r\nhello\r\n0\r\n\r\n"),
            vec!["400"],
        ),
        (
            "0x prefix",
            chunked("0x5\r\nhello\r\n0\r\n\r\n"),
            vec!["400"],
        ),
        (
            "data longer than its size",
            chunked("5\r\nhelloEXTRA\r\n0\r\n\r\n"),
            vec!["400"],
        ),
        (
            "a trailer that is no field",
            chunked("5\r\nhello\r\n0\r\nnot a field\r\n\r\n"),
            vec!["400"],
        ),
        (
            "bare LF in a trailer",
            chunked("5\r\nhello\r\n0\r\nx: a\nb: c\r\n\r\n"),
            vec!["400"],
        ),
        (
            "Content-Length list",
            sized("content-length: 5, 5\r\n"),
            vec!["400"],
        ),
        (
            "two different lengths",
            sized("content-length: 5\r\ncontent-length: 6\r\n"),
            vec!["400"],
        ),
        (
            "signed length",
            sized("content-length: +5\r\n"),
            vec!["400"],
        ),
        (
            "length with inner space",
            sized("content-length: 5 5\r\n"),
            vec!["400"],
        ),
        (
            "space before the colon",
            sized("content-length : 5\r\n"),
            vec!["400"],
        ),
        (
            "chunked under HTTP/1.0",
            format!(
                "POST /upload HTTP/1.0\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            vec!["400"],
        ),
        (
            "a coding after chunked",
            format!(
                "POST /upload HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            vec!["400"],
        ),
        // What is well formed passes, with the request after it, whole.
        (
            "equal length lines",
            sized("content-length: 5\r\ncontent-length: 5\r\n"),
            vec!["200", "200"],
        ),
        (
            "leading zeros",
            sized("content-length: 00000000000000000005\r\n"),
            vec!["200", "200"],
        ),
        (
            "chunked with extensions and trailers",
            format!("{CHUNKED}5 ;a=b\r\nhello\r\n0\r\nx-t: 1\r\n\r\n{NEXT}"),
            vec!["200", "200"],
        ),
    ]
}

#[tokio::test]
async fn both_listeners_give_one_verdict_and_nothing_hidden_is_forwarded() {
    let e = edge().await;
    let mut failures = Vec::new();
    for (what, wire, want) in table() {
        let plain = statuses(&exchange(&e, Listener::Cleartext, wire.as_bytes(), false).await);
        let tls = statuses(&exchange(&e, Listener::Tls, wire.as_bytes(), false).await);
        if plain != want || tls != want {
            failures.push(format!(
                "{what}: cleartext {plain:?}, TLS {tls:?}, want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let seen = paths(&e);
    assert!(
        !seen.iter().any(|p| p.contains("smuggled")),
        "a hidden request reached an upstream: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|p| p.as_str() == "/next").count(),
        6,
        "each well-formed case's next request, on both listeners: {seen:?}"
    );
}

#[tokio::test]
async fn lengths_reach_the_upstream_as_one_canonical_value() {
    let e = edge().await;
    for lengths in [
        "content-length: 005\r\n",
        "content-length: 5\r\ncontent-length: 5\r\n",
    ] {
        for on in [Listener::Cleartext, Listener::Tls] {
            let wire = format!(
                "POST /upload HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n{lengths}\r\nhello"
            );
            let got = exchange(&e, on, wire.as_bytes(), false).await;
            assert_eq!(statuses(&got), ["200"], "{on:?} {lengths:?}: {got}");
            let seen = e.blue.last_seen().unwrap_or_else(|| panic!("nothing seen"));
            let values: Vec<_> = seen.headers.get_all("content-length").iter().collect();
            assert_eq!(values, ["5"], "{on:?} {lengths:?}");
        }
    }
}

/// Issue 24's first defect: five broken uploads ejected the only blue
/// target, and the next client went to green (weight 0).
#[tokio::test]
async fn a_client_with_broken_bodies_cannot_eject_a_healthy_target() {
    let e = edge().await;
    let head = |framing: &str| format!("POST /upload HTTP/1.1\r\nhost: app.test\r\n{framing}\r\n");
    let cases = [
        (
            "bad chunk size",
            format!("{}zz\r\n", head("transfer-encoding: chunked\r\n")),
            false,
        ),
        (
            "chunk data past its size",
            format!(
                "{}5\r\nhelloEXTRA\r\n0\r\n\r\n",
                head("transfer-encoding: chunked\r\n")
            ),
            false,
        ),
        (
            "cancelled upload",
            format!("{}0123456789", head("content-length: 100\r\n")),
            true,
        ),
        (
            "cancelled chunked upload",
            format!(
                "{}a\r\n0123456789\r\n",
                head("transfer-encoding: chunked\r\n")
            ),
            true,
        ),
    ];
    for on in [Listener::Cleartext, Listener::Tls] {
        for (what, wire, shut) in &cases {
            for _ in 0..6 {
                let got = exchange(&e, on, wire.as_bytes(), *shut).await;
                let codes = statuses(&got);
                assert!(
                    codes.is_empty() || codes == ["400"],
                    "{on:?} {what}: answered {codes:?}, want 400 or nothing"
                );
            }
        }
    }
    for _ in 0..5 {
        let got = get(
            &h1_client(),
            &format!("http://{}/", e.proxy.proxy_addr),
            None,
        )
        .await;
        assert_eq!(got.upstream(), "blue", "traffic moved off a healthy target");
    }
    assert_eq!(total(&e, "switchyard_target_ejections_total").await, 0.0);
    assert_eq!(total(&e, "switchyard_upstream_errors_total").await, 0.0);
    assert_eq!(
        total(&e, "switchyard_retries_total").await,
        0.0,
        "no retry spent on a client's fault"
    );
    assert!(
        metric(
            &e.proxy,
            "switchyard_downstream_errors_total{kind=\"bad_request\"}"
        )
        .await
            >= 16.0,
        "the client's faults are counted on its side"
    );
    assert_eq!(e.green.hits(), 0);
}

/// A client that trickles its body while the upstream waits for it: the
/// upstream's response timeout fires, and it is the client's (408), not
/// the target's.
#[tokio::test]
async fn a_slow_upload_that_outlasts_the_response_timeout_is_not_the_targets_fault() {
    let (blue, green) = blue_and_green().await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue]), ("green", 0, &[&green])],
        "timeouts:\n  upstream_response: 300ms\n  client_body: 10s\n",
    ))
    .await;
    for _ in 0..6 {
        let mut s = ok(
            tokio::net::TcpStream::connect(proxy.proxy_addr).await,
            "connect",
        );
        ok(
            s.write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 20\r\n\r\n0123")
                .await,
            "write",
        );
        let reader = async {
            let mut s = s;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let _ = s.write_all(b"45").await;
            }
            read_until_close(&mut s, Duration::from_secs(5)).await.0
        };
        let got = reader.await;
        assert_eq!(statuses(&got), ["408"], "{got}");
    }
    let got = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(got.upstream(), "blue");
    let text = scrape(&proxy).await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("switchyard_target_ejections_total{") && !l.ends_with(" 0")),
        "{text}"
    );
}

/// The same over HTTP/2 (prior knowledge on the cleartext listener, hyper's
/// server): a stream reset mid-upload, and DATA past its content-length, are
/// the client's doing.
#[tokio::test]
async fn broken_http2_uploads_cannot_eject_a_healthy_target_either() {
    let e = edge().await;
    for round in 0..6 {
        for overlong in [false, true] {
            let tcp = ok(
                tokio::net::TcpStream::connect(e.proxy.proxy_addr).await,
                "connect",
            );
            let (client, conn) = ok(h2::client::handshake(tcp).await, "h2 handshake");
            let driver = tokio::spawn(conn);
            let mut client = ok(client.ready().await, "h2 ready");
            let length = if overlong { "5" } else { "100" };
            let req = ok(
                http::Request::post("http://app.test/upload")
                    .header("content-length", length)
                    .body(()),
                "request",
            );
            let (resp, mut body) = ok(client.send_request(req, false), "send");
            let _ = body.send_data(bytes::Bytes::from_static(b"0123456789"), overlong);
            if !overlong {
                tokio::time::sleep(Duration::from_millis(20)).await;
                body.send_reset(h2::Reason::CANCEL);
            }
            match tokio::time::timeout(Duration::from_secs(5), resp).await {
                Ok(Ok(r)) => assert_eq!(r.status(), 400, "round {round}, overlong {overlong}"),
                Ok(Err(_)) => {}
                Err(_) => panic!("no answer or reset in 5 s (round {round}, overlong {overlong})"),
            }
            driver.abort();
        }
    }
    let got = get(
        &h1_client(),
        &format!("http://{}/", e.proxy.proxy_addr),
        None,
    )
    .await;
    assert_eq!(got.upstream(), "blue");
    assert_eq!(total(&e, "switchyard_target_ejections_total").await, 0.0);
    assert_eq!(total(&e, "switchyard_upstream_errors_total").await, 0.0);
    assert_eq!(e.green.hits(), 0);
}
