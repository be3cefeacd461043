//! The access log, request ids and trace context, end to end: real clients
//! (HTTP/1.1 on the native server, HTTP/2 over TLS), real upstreams, lines
//! read back from the file the proxy wrote.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::pki::{self, Ca};
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn log_yaml(path: &Path, extra: &str) -> String {
    format!("access_log:\n  to: {}\n{extra}", path.display())
}

/// Waits until `path` holds at least `n` lines, and returns them.
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let got: Vec<String> = text.lines().map(str::to_owned).collect();
        if got.len() >= n || tokio::time::Instant::now() >= deadline {
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "only whole lines: {text:?}"
            );
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The line whose `key` is `value`. Lines of requests served on different
/// threads may come out of order (each thread has its own buffer), so tests
/// find a request's line by what it says, not by where it is.
fn line_with(lines: &[String], key: &str, value: impl Into<Value>) -> Value {
    let value = value.into();
    lines
        .iter()
        .map(|l| json(l))
        .find(|l| l[key] == value)
        .unwrap_or_else(|| panic!("no line with {key} = {value} in {lines:#?}"))
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn temp_log() -> (tempfile::TempDir, PathBuf) {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("access.log");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_line_per_request_says_who_what_where_and_why() {
    let (_dir, path) = temp_log();
    let (blue, green) = blue_and_green().await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue]), ("green", 0, &[&green])],
        &log_yaml(
            &path,
            "override_header: X-Group\noverride_plain_from: [127.0.0.0/8]\n",
        ),
    ))
    .await;
    let base = format!("http://{}", proxy.proxy_addr);
    let client = h1_client();

    // A POST with a chunked body of 1000 bytes, a trace and a user agent.
    let body = http_body_util::StreamBody::new(futures_stream(vec![
        Bytes::from(vec![b'a'; 400]),
        Bytes::from(vec![b'b'; 600]),
    ]));
    let req = ok(
        Request::post(format!("{base}/upload?id=7"))
            .header("host", "shop.test")
            .header("user-agent", "agent/1.0 \"quoted\"")
            .header("traceparent", TRACEPARENT)
            .body(body),
        "request",
    );
    let resp = ok(client_streaming().request(req).await, "POST");
    let echoed = resp.headers()["x-request-id"].clone();
    let seen = blue
        .last_seen()
        .unwrap_or_else(|| panic!("upstream saw nothing"));
    assert_eq!(
        seen.headers["x-request-id"], echoed,
        "upstream and client get one id"
    );
    assert_eq!(
        seen.headers["traceparent"], TRACEPARENT,
        "a valid trace passes untouched"
    );
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .unwrap_or_default();
    let got = ok(
        http_body_util::BodyExt::collect(resp.into_body()).await,
        "body",
    )
    .to_bytes();

    // Sticky, then an override, then a proxy-made 502 (green is dead).
    let _ = get(&client, &format!("{base}/again"), Some(&cookie)).await;
    green.kill();
    // `kill` closes the listener from its own task: wait until it has.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(green.addr).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let over = send(
        &client,
        ok(
            Request::get(format!("{base}/qa"))
                .header("x-group", "green")
                .body(Full::new(Bytes::new())),
            "request",
        ),
    )
    .await;
    assert_eq!(over.status, 502);

    let lines = lines(&path, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let first = line_with(&lines, "path", "/upload");
    let want = [
        ("method", Value::from("POST")),
        ("host", Value::from("shop.test")),
        ("path", Value::from("/upload")),
        ("protocol", Value::from("HTTP/1.1")),
        ("status", Value::from(200)),
        ("client", Value::from("127.0.0.1")),
        ("route", Value::from("default")),
        ("group", Value::from("blue")),
        ("reason", Value::from("new")),
        ("retries", Value::from(0)),
        ("bytes_in", Value::from(1000)),
        ("bytes_out", Value::from(got.len())),
        (
            "request_id",
            Value::from(echoed.to_str().unwrap_or_default()),
        ),
        ("trace_id", Value::from(&TRACEPARENT[3..35])),
        ("user_agent", Value::from("agent/1.0 \"quoted\"")),
        ("tls", Value::Null),
        ("rejection", Value::Null),
        ("error", Value::Null),
    ];
    for (k, v) in want {
        assert_eq!(first[k], v, "{k} in {first}");
    }
    assert_eq!(first["target"], blue.addr.to_string());
    assert!(
        first["time"]
            .as_str()
            .is_some_and(|t| t.len() == 24 && t.ends_with('Z')),
        "{first}"
    );
    assert!(
        first["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{first}"
    );
    assert!(
        first["upstream_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{first}"
    );
    assert!(
        first["duration_ms"].as_f64() >= first["upstream_ms"].as_f64(),
        "{first}"
    );

    let second = line_with(&lines, "path", "/again");
    assert_eq!(second["reason"], "sticky", "{second}");
    assert_eq!(second["bytes_in"], 0);
    let fresh = second["trace_id"].as_str().unwrap_or_default();
    assert_eq!(
        fresh.len(),
        32,
        "a trace started for a request without one: {second}"
    );
    assert_ne!(second["request_id"], first["request_id"]);

    let third = line_with(&lines, "path", "/qa");
    assert_eq!(third["status"], 502, "{third}");
    assert_eq!(third["reason"], "override");
    assert_eq!(third["group"], "green");
    assert_eq!(third["error"], "upstream_connect", "{third}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_version_sni_and_http2_are_logged() {
    let (_dir, path) = temp_log();
    let ca = Ca::new("test CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let (cert, key) = ca.leaf(&["app.test"]).write(dir.path(), "app");
    let blue = Upstream::start("blue").await;
    let extra = format!(
        "{}tls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {}\n      key: {}\n",
        log_yaml(&path, "  format: text\n  query: true\n"),
        cert.display(),
        key.display()
    );
    let proxy = start_proxy(&config_yaml(&[("blue", 1, &[&blue])], &extra)).await;
    let addr = proxy
        .tls_addr
        .unwrap_or_else(|| panic!("no HTTPS listener"));
    let tls = pki::connect(addr, "app.test", &ca, &[b"h2"]).await;
    assert_eq!(pki::peer(&tls).1.as_deref(), Some(&b"h2"[..]));
    let mut h2 = pki::h2_over(tls).await;
    let req = ok(
        Request::get("https://app.test/search?q=a%20b").body(Full::new(Bytes::new())),
        "request",
    );
    let got = pki::h2_send(&mut h2, req).await;
    assert_eq!(got.status, 200);
    let lines = lines(&path, 1).await;
    let line = lines.last().cloned().unwrap_or_default();
    for part in [
        "method=GET",
        "path=/search?q=a%20b",
        "protocol=HTTP/2",
        "status=200",
        "tls=TLSv1.3",
        "sni=app.test",
        "group=blue",
        "error=-",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_are_escaped_and_edge_refusals_are_logged_with_their_reason() {
    let (_dir, path) = temp_log();
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        &log_yaml(
            &path,
            "trusted_proxies: [127.0.0.1]\nlimits:\n  max_uri_bytes: 64\n",
        ),
    ))
    .await;
    // obs-text, a tab, quotes and braces in a user agent; a request id
    // from a trusted peer with JSON in it; both kept verbatim and escaped.
    let req = b"GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: ev\til\"},{\"status\":1 \xff\xfe\r\nX-Request-Id: id\"}{\r\nConnection: close\r\n\r\n";
    let resp = raw(proxy.proxy_addr, req).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-request-id: id\"}{"), "{resp}");
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "a".repeat(100)
    );
    let resp = raw(proxy.proxy_addr, long.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 414"), "{resp}");
    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = line_with(&lines, "status", 200);
    assert_eq!(
        first["user_agent"], "ev\til\"},{\"status\":1 \u{ff}\u{fe}",
        "{first}"
    );
    assert_eq!(first["request_id"], "id\"}{");
    let second = line_with(&lines, "status", 414);
    assert_eq!(second["status"], 414, "{second}");
    assert_eq!(second["error"], "uri_too_long");
    assert_eq!(second["group"], Value::Null, "refused before any group");
    assert_eq!(blue.hits(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_only_sampling_and_field_lists_keep_lines_few_and_short() {
    let (_dir, path) = temp_log();
    let blue = Upstream::start("blue").await;
    let yaml = config_yaml(
        &[("blue", 1, &[&blue])],
        &log_yaml(
            &path,
            "  errors_only: true\n  fields: [status, path, error]\n",
        ),
    )
    .replace(
        "groups:\n",
        "routes:\n  - name: app\n    match: {path_prefix: /app}\n    split: {blue: 1}\ngroups:\n",
    )
    .replace("    weight: 1\n", "");
    let proxy = start_proxy(&yaml).await;
    let client = h1_client();
    for p in ["/app/1", "/nowhere", "/app/2"] {
        let _ = get(&client, &format!("http://{}{p}", proxy.proxy_addr), None).await;
    }
    let got = lines(&path, 1).await;
    assert_eq!(
        got,
        ["{\"status\":404,\"path\":\"/nowhere\",\"error\":\"no_route\"}"]
    );
    proxy.shutdown().await;

    let (_dir, path) = temp_log();
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        &log_yaml(&path, "  sample: 0.25\n  fields: [status]\n"),
    ))
    .await;
    for _ in 0..400 {
        let _ = get(&client, &format!("http://{}/", proxy.proxy_addr), None).await;
    }
    proxy.shutdown().await;
    let n = lines(&path, 0).await.len();
    // Binomial(400, 0.25): mean 100, sd 8.7; this fails about once in 10^8.
    assert!((45..=155).contains(&n), "{n} of 400 lines at sample 0.25");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_can_be_renamed_or_turned_off_and_traces_left_alone() {
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        "request_id:\n  header: X-Correlation-Id\n  echo: false\ntrace_context:\n  start: false\n",
    ))
    .await;
    let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-Correlation-Id: from-an-untrusted-client\r\nTraceparent: 00-bad\r\nTracestate: a=b\r\nConnection: close\r\n\r\n";
    let resp = raw(proxy.proxy_addr, req).await;
    assert!(
        !resp.to_ascii_lowercase().contains("x-correlation-id"),
        "not echoed: {resp}"
    );
    let seen = blue
        .last_seen()
        .unwrap_or_else(|| panic!("nothing seen"))
        .headers;
    let id = seen["x-correlation-id"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(id.len(), 32, "an untrusted client's id is replaced: {id}");
    assert!(!seen.contains_key("x-request-id"));
    assert!(
        !seen.contains_key("traceparent"),
        "an invalid trace is dropped, none started"
    );
    assert!(!seen.contains_key("tracestate"));
    proxy.shutdown().await;

    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        "request_id:\n  enabled: false\ntrace_context:\n  sampled: true\n",
    ))
    .await;
    let resp = raw(
        proxy.proxy_addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: mine\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !resp.to_ascii_lowercase().contains("x-request-id"),
        "{resp}"
    );
    let seen = blue
        .last_seen()
        .unwrap_or_else(|| panic!("nothing seen"))
        .headers;
    assert_eq!(
        seen["x-request-id"], "mine",
        "off: the client's header passes as any other"
    );
    let tp = seen["traceparent"].to_str().unwrap_or_default();
    assert!(
        tp.starts_with("00-") && tp.ends_with("-01") && tp.len() == 55,
        "{tp}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_keep_up_or_be_written_drops_lines_never_requests() {
    // A FIFO nobody reads: the writer blocks once the pipe is full, the
    // queue fills, and lines are dropped and counted while every request
    // is answered.
    let dir = ok(tempfile::tempdir(), "tempdir");
    let fifo = dir.path().join("fifo");
    let made = ok(
        std::process::Command::new("mkfifo").arg(&fifo).status(),
        "mkfifo",
    );
    assert!(made.success());
    let _reader = ok(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo),
        "open the FIFO's reading end",
    );
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        &log_yaml(&fifo, "  queue: 16\n"),
    ))
    .await;
    let client = h1_client();
    let long_path = format!("/{}", "p".repeat(2000));
    for _ in 0..300 {
        let got = get(
            &client,
            &format!("http://{}{long_path}", proxy.proxy_addr),
            None,
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let dropped = metric(
        &proxy,
        "switchyard_access_log_dropped_total{reason=\"queue_full\"}",
    )
    .await;
    assert!(dropped > 0.0, "a full queue drops lines: {dropped}");
    drop(_reader);
    drop(proxy);

    // /dev/full refuses every write: counted as write errors, requests fine.
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        "access_log:\n  to: /dev/full\n",
    ))
    .await;
    for _ in 0..5 {
        let got = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
        assert_eq!(got.status, 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut failed = 0.0;
    while failed < 5.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        failed = metric(
            &proxy,
            "switchyard_access_log_dropped_total{reason=\"write_error\"}",
        )
        .await;
    }
    assert_eq!(failed, 5.0);
    proxy.shutdown().await;

    // A file that cannot be opened is an error at start, naming the key.
    let cfg = ok(
        switchyard::config::load_str(
            &config_yaml(
                &[("blue", 1, &[&blue])],
                "access_log:\n  to: /nonexistent/dir/access.log\n",
            ),
            "test.yaml",
            &test_keys(),
            switchyard::config::ValidateOptions::default(),
        ),
        "config",
    );
    let err = match switchyard::app::start(cfg, String::new(), None).await {
        Ok(_) => panic!("started with an unwritable access log"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("access_log.to") && err.contains("/nonexistent/dir/access.log"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_file_and_a_reload_can_move_it() {
    let blue = Upstream::start("blue").await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let first = dir.path().join("access.log");
    let yaml = config_yaml(&[("blue", 1, &[&blue])], &log_yaml(&first, ""));
    let path = dir.path().join("proxy.yaml");
    ok(std::fs::write(&path, &yaml), "write config");
    let proxy = BinProxy::start_at(dir, &path);
    let url = format!("http://{}/", proxy.proxy_addr);
    let client = h1_client();
    let _ = get(&client, &format!("{url}one"), None).await;
    assert_eq!(lines(&first, 1).await.len(), 1);

    // logrotate: move the file away, then SIGUSR1.
    let rotated = proxy.dir.path().join("access.log.1");
    ok(std::fs::rename(&first, &rotated), "rotate");
    proxy.signal("USR1");
    assert!(
        !proxy
            .wait_log("reopening the access log", Duration::from_secs(5))
            .await
            .is_empty()
    );
    let _ = get(&client, &format!("{url}two"), None).await;
    let now = lines(&first, 1).await;
    assert_eq!(now.len(), 1, "a new file after SIGUSR1");
    assert!(json(&now[0])["path"] == "/two");
    assert_eq!(
        lines(&rotated, 1).await.len(),
        1,
        "the rotated file keeps its line"
    );

    // A reload to an unwritable file is refused; one to a new file moves the log.
    let bad = yaml.replace(&first.display().to_string(), "/nonexistent/x.log");
    write_by_rename(&path, &bad);
    assert!(
        !proxy
            .wait_log("access_log.to", Duration::from_secs(10))
            .await
            .is_empty()
    );
    let second = proxy.dir.path().join("other.log");
    write_by_rename(&path, &yaml.replace("access.log", "other.log"));
    assert!(
        !proxy
            .wait_log("reload #2 ok", Duration::from_secs(10))
            .await
            .is_empty()
    );
    let _ = get(&client, &format!("{url}three"), None).await;
    let moved = lines(&second, 1).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(json(&moved[0])["path"], "/three");
    assert_eq!(lines(&first, 1).await.len(), 1, "the old file gets no more");
}

/// A body that yields `chunks`, one frame each (sent chunked).
fn futures_stream(chunks: Vec<Bytes>) -> Chunks {
    Chunks(chunks.into_iter().collect())
}

struct Chunks(std::collections::VecDeque<Bytes>);

impl futures_core::Stream for Chunks {
    type Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

type StreamingBody = http_body_util::StreamBody<Chunks>;

fn client_streaming() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    StreamingBody,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

use std::os::unix::fs::OpenOptionsExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_refused_before_the_request_path_are_logged_too() {
    let (_dir, path) = temp_log();
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        &log_yaml(&path, "timeouts:\n  client_header: 1s\n"),
    ))
    .await;
    // A head no parser takes: hyper answers 400 itself.
    let resp = raw(
        proxy.proxy_addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // Part of a head, then nothing: 408 at client_header.
    let mut s = ok(
        tokio::net::TcpStream::connect(proxy.proxy_addr).await,
        "connect",
    );
    ok(
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\nHo").await,
        "write",
    );
    let (resp, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    let got = lines(&path, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let (a, b) = (
        line_with(&got, "status", 400),
        line_with(&got, "status", 408),
    );
    assert_eq!(
        (a["status"].clone(), a["error"].clone()),
        (400.into(), "bad_request".into()),
        "{a}"
    );
    assert_eq!(
        (b["status"].clone(), b["error"].clone()),
        (408.into(), "header_timeout".into()),
        "{b}"
    );
    assert_eq!(a["client"], "127.0.0.1");
    assert_eq!(blue.hits(), 0);
    proxy.shutdown().await;
}

#[test]
fn bad_edge_settings_are_config_errors_with_their_path_and_line() {
    let yaml = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
        proxy_protocol:\n  from: [10.0.0.0/33]\n\
        access_log:\n  format: xml\n  sample: 1.5\n  fields: [status, nope, status]\n  queue: 1\n\
        request_id:\n  header: \"bad header\"\n\
        groups:\n  blue:\n    weight: 1\n    tls: true\n    client_cert: /x.crt\n    targets:\n      - address: 127.0.0.1:1\n";
    let err = match switchyard::config::load_str(
        yaml,
        "edge.yaml",
        &test_keys(),
        switchyard::config::ValidateOptions::default(),
    ) {
        Ok(_) => panic!("a bad config was accepted"),
        Err(e) => e.to_string(),
    };
    for want in [
        "proxy_protocol.from[0]: `10.0.0.0/33` is not an IP address or CIDR range (line 7)",
        "access_log.format: expected `json` or `text` (line 9)",
        "access_log.sample: expected a share of requests above 0 and at most 1",
        "access_log.fields[1]: unknown field `nope`",
        "access_log.fields[2]: `status` is listed twice",
        "access_log.queue: expected an integer from 16 to 1048576 (line 12)",
        "request_id.header: `bad header` is not a valid header name (line 14)",
        "groups.blue.client_cert: needs `client_key` beside it (line 19)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// The line shows the path as forwarded: normalized, when normalizing
/// changed it (the query, logged only when `query: true`, as it came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logged_path_is_the_forwarded_one() {
    let (_dir, path) = temp_log();
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(&[("blue", 1, &[&blue])], &log_yaml(&path, ""))).await;
    let req = b"GET /a/../%62/./c?x=/../y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let resp = raw(proxy.proxy_addr, req).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        blue.last_seen().map(|s| s.uri).unwrap_or_default(),
        "/b/c?x=/../y"
    );
    let lines = lines(&path, 1).await;
    let line = line_with(&lines, "status", 200);
    assert_eq!(line["path"], "/b/c", "{line}");
    proxy.shutdown().await;
}
