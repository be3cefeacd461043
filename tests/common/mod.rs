//! Test helpers: real upstream HTTP servers on 127.0.0.1:0, a proxy started
//! in-process or as the real binary, and real HTTP/1.1 and HTTP/2 clients.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod pki;
pub mod redis_server;
pub mod ws;

use switchyard::app::{self, Running};
use switchyard::config::{self, StaticKeys, ValidateOptions};

/// The base64 key every test proxy signs with.
pub const TEST_KEY: &str = "dGVzdC1rZXktdGhhdC1pcy1sb25nLWVub3VnaC0zMmI=";

/// Fails the test with a message; avoids unwrap in test code too.
pub fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

/// The admin token test configs name as `env:ADMIN_TOKEN`.
pub const ADMIN_TOKEN: &str = "test-admin-token-3f9c";

/// The keys test configs name (`env:TEST_KEY` and `env:OTHER_KEY`) from a
/// fixed table, and files (certificates, CA bundles, `file:` keys) from disk.
pub fn test_keys() -> TestKeys {
    TestKeys(StaticKeys(vec![
        ("TEST_KEY", TEST_KEY),
        ("OTHER_KEY", "b3RoZXIta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzJi"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
    ]))
}

/// See [`test_keys`].
#[derive(Debug, Clone)]
pub struct TestKeys(StaticKeys);

impl config::KeySource for TestKeys {
    fn env(&self, name: &str) -> Option<String> {
        self.0.env(name)
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// A real HTTP server standing in for one target. Endpoints:
/// `/upload` answers `<len> <sha256>` of the body; `/download?bytes=N` streams N
/// deterministic bytes; `/slow?ms=N` waits before answering; `/status/N`
/// answers status N (an application's own error, e.g. 500 or 501); anything
/// else answers 200 with `x-upstream: <name>`.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far, and open now.
    pub accepted: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    /// Turned false by [`Upstream::kill`].
    alive: Arc<tokio::sync::watch::Sender<bool>>,
    /// When not 0, every answer has this status (a broken release).
    pub fail_with: Arc<std::sync::atomic::AtomicU16>,
    /// Added to every answer (a slow release).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        let listener = ok(TcpListener::bind("127.0.0.1:0").await, "bind upstream");
        let addr = ok(listener.local_addr(), "upstream addr");
        let up = Upstream {
            name: name.to_owned(),
            addr,
            hits: Arc::default(),
            seen: Arc::default(),
            accepted: Arc::default(),
            open: Arc::default(),
            alive: Arc::new(tokio::sync::watch::channel(true).0),
            fail_with: Arc::default(),
            delay_ms: Arc::default(),
        };
        up.serve(listener);
        up
    }

    /// From now on, answers every request with `status` (0: as usual).
    pub fn fail_with(&self, status: u16) {
        self.fail_with.store(status, Ordering::SeqCst);
    }

    /// From now on, answers every request `ms` later.
    pub fn slow_down(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Kills the server: stops accepting, closes the listening socket, and
    /// drops every open connection mid-whatever, as a crashed process would.
    pub fn kill(&self) {
        let _ = self.alive.send(false);
    }

    /// Starts the server again on the same address, counters kept.
    pub async fn revive(&self) -> Self {
        let listener = ok(TcpListener::bind(self.addr).await, "rebind upstream");
        let up = Upstream {
            alive: Arc::new(tokio::sync::watch::channel(true).0),
            ..self.clone()
        };
        up.serve(listener);
        up
    }

    fn serve(&self, listener: TcpListener) {
        let me = self.clone();
        let mut alive = self.alive.subscribe();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = alive.changed() => return,
                    a = listener.accept() => match a {
                        Ok((s, _)) => s,
                        Err(_) => return,
                    },
                };
                let me = me.clone();
                me.accepted.fetch_add(1, Ordering::SeqCst);
                me.open.fetch_add(1, Ordering::SeqCst);
                let mut alive = me.alive.subscribe();
                tokio::spawn(async move {
                    let open = Arc::clone(&me.open);
                    let svc = service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = alive.changed() => {}
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Option<Seen> {
        self.seen.lock().ok().and_then(|s| s.last().cloned())
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<TestBody> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut s) = self.seen.lock() {
            s.push(Seen {
                method: req.method().to_string(),
                uri: req.uri().to_string(),
                version: req.version(),
                headers: req.headers().clone(),
            });
        }
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let path = req.uri().path().to_owned();
        let mut resp = match path.as_str() {
            "/upload" => {
                let mut body = req.into_body();
                let mut hasher = Sha256::new();
                let mut len = 0usize;
                let mut trailers = String::new();
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if let Some(d) = f.data_ref() {
                                len += d.len();
                                hasher.update(d);
                            }
                            for (k, v) in f.trailers_ref().into_iter().flatten() {
                                let v = String::from_utf8_lossy(v.as_bytes());
                                trailers.push_str(&format!("{k}={v};"));
                            }
                        }
                        Err(_) => break,
                    }
                }
                // Trailers it received follow the hash as `name=value;` pairs.
                let mut said = format!("{len} {}", hex(&hasher.finalize()));
                if !trailers.is_empty() {
                    said.push(' ');
                    said.push_str(&trailers);
                }
                TestBody::full(said)
            }
            "/download" => {
                let n = query.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
                TestBody::pattern(n)
            }
            "/stall" => {
                let n = query
                    .get("bytes")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(10);
                TestBody::Stall(Some(Bytes::from(vec![b's'; n])))
            }
            "/slow" => {
                let ms = query.get("ms").and_then(|b| b.parse().ok()).unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                TestBody::full(format!("slow {}", self.name))
            }
            _ => TestBody::full(self.name.clone()),
        }
        .into_response();
        if let Some(status) = path
            .strip_prefix("/status/")
            .and_then(|n| n.parse::<u16>().ok())
            .and_then(|n| http::StatusCode::from_u16(n).ok())
        {
            *resp.status_mut() = status;
        }
        resp.headers_mut()
            .insert("x-upstream", ok(self.name.parse(), "name header"));
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let fail = self.fail_with.load(Ordering::SeqCst);
        if let Ok(status) = http::StatusCode::from_u16(fail) {
            *resp.status_mut() = status;
        }
        resp
    }
}

/// A loopback port free a moment ago, for programs that must be told theirs.
pub fn free_port() -> u16 {
    let l = ok(
        std::net::TcpListener::bind("127.0.0.1:0"),
        "bind for a port",
    );
    ok(l.local_addr(), "local addr").port()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The deterministic byte pattern `/download` streams.
pub fn pattern_chunk(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i as u64).wrapping_mul(2654435761) as u8 ^ (i >> 13) as u8)
        .collect()
}

/// A response body for the test upstream: a whole buffer, or a generated stream.
pub enum TestBody {
    Full(Option<Bytes>),
    Pattern { sent: usize, total: usize },
    Stall(Option<Bytes>),
}

impl TestBody {
    fn full(s: String) -> Self {
        TestBody::Full(Some(Bytes::from(s)))
    }
    fn pattern(total: usize) -> Self {
        TestBody::Pattern { sent: 0, total }
    }
    fn into_response(self) -> Response<TestBody> {
        Response::new(self)
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            // Its first chunk, then silence: a hung upstream mid-body.
            TestBody::Stall(first) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            },
            TestBody::Pattern { sent, total } => {
                if *sent >= *total {
                    return Poll::Ready(None);
                }
                let n = (*total - *sent).min(64 * 1024);
                let chunk = pattern_chunk(*sent, n);
                *sent += n;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }
}

/// YAML for a proxy in front of `groups`: `(name, weight, targets)`.
pub fn config_yaml(groups: &[(&str, u32, &[&Upstream])], extra: &str) -> String {
    let mut y = String::from(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n",
    );
    y.push_str(extra);
    y.push_str("groups:\n");
    for (name, weight, targets) in groups {
        y.push_str(&format!("  {name}:\n    weight: {weight}\n    targets:\n"));
        for t in *targets {
            y.push_str(&format!("      - address: {}\n", t.addr));
        }
    }
    y
}

/// Starts a proxy in this process on ephemeral ports.
pub async fn start_proxy(yaml: &str) -> Running {
    let cfg = config::load_str(yaml, "test.yaml", &test_keys(), ValidateOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    ok(app::start(cfg, String::new(), None).await, "start proxy")
}

/// A proxy in this process whose config is a real file it watches and reloads.
pub struct Watched {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
}

impl Watched {
    /// Writes `yaml` to `<tempdir>/proxy.yaml` and starts a proxy on it.
    pub async fn start(yaml: &str) -> Self {
        let dir = ok(tempfile::tempdir(), "tempdir");
        let path = dir.path().join("proxy.yaml");
        ok(std::fs::write(&path, yaml), "write config");
        let running = start_watching(&path).await;
        Watched { running, dir, path }
    }
}

/// Starts a proxy on the config file at `path`, watching it.
pub async fn start_watching(path: &std::path::Path) -> Running {
    start_watching_with(path, Arc::new(test_keys())).await
}

/// Starts a proxy on the config file at `path`, reading keys from `keys`.
pub async fn start_watching_with(
    path: &std::path::Path,
    keys: Arc<dyn config::KeySource + Send + Sync>,
) -> Running {
    let source = switchyard::reload::ConfigSource {
        path: path.to_path_buf(),
        keys: Arc::clone(&keys),
        opts: ValidateOptions::default(),
    };
    let (cfg, text) = config::load_file(path, &*keys, ValidateOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    ok(
        app::start(cfg, switchyard::reload::content_hash(&text), Some(source)).await,
        "start proxy",
    )
}

/// Replaces `path` the way editors that save by rename do: a temp file in the
/// same directory, then `rename(2)` over the original.
pub fn write_by_rename(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp~");
    ok(std::fs::write(&tmp, text), "write temp config");
    ok(std::fs::rename(&tmp, path), "rename config");
}

/// The `/status` document of the admin listener at `admin`.
pub async fn status_at(admin: SocketAddr) -> serde_json::Value {
    let got = get(&h1_client(), &format!("http://{admin}/status"), None).await;
    ok(serde_json::from_slice(&got.body), "status json")
}

/// Polls `/status` until the config generation is `n` (true) or `within` passes.
pub async fn wait_generation(admin: SocketAddr, n: u64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let g = status_at(admin).await["config"]["generation"].as_u64();
        if g == Some(n) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub type H1Client = Client<HttpConnector, Full<Bytes>>;

pub fn h1_client() -> H1Client {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> H1Client {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn upstream(&self) -> &str {
        self.headers
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The sticky cookie's value from Set-Cookie, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let first = v.split(';').next()?;
                let (k, val) = first.split_once('=')?;
                (k == name).then(|| val.to_owned())
            })
    }
}

/// Sends a GET with an optional `Cookie` header.
pub async fn get(client: &H1Client, url: &str, cookie: Option<&str>) -> Got {
    let mut b = Request::get(url);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    send(client, ok(b.body(Full::default()), "request")).await
}

pub async fn send(client: &H1Client, req: Request<Full<Bytes>>) -> Got {
    let resp = ok(client.request(req).await, "send request");
    let (parts, body) = resp.into_parts();
    let body = ok(body.collect().await, "read body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Writes raw bytes on a fresh connection and reads until the server closes
/// (or 5 s pass): for requests no well-behaved client would send.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = ok(TcpStream::connect(addr).await, "connect");
    ok(s.write_all(request).await, "write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one metric sample from the admin listener; the series must exist
/// (a misspelt name or label fails the test, never reads as 0).
pub async fn metric(running: &Running, name_and_labels: &str) -> f64 {
    series_at(running.admin_addr, name_and_labels).await
}

/// Reads one metric sample from the admin listener at `admin`; the series
/// must exist.
pub async fn metric_at(admin: SocketAddr, name_and_labels: &str) -> f64 {
    series_at(admin, name_and_labels).await
}

/// The sample of a series that may not exist yet (a counter whose label
/// value has never been seen): `None` when absent. For the few checks
/// whose subject is that absence, or that wait for a first count.
pub async fn series_if_any(admin: SocketAddr, name_and_labels: &str) -> Option<f64> {
    let text = scrape_at(admin).await;
    text.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name_and_labels).then(|| v.parse().ok())?
    })
}

/// Reads one metric sample that must exist: a misspelt name or label fails
/// the test instead of reading as 0.
pub async fn series_at(admin: SocketAddr, name_and_labels: &str) -> f64 {
    match series_if_any(admin, name_and_labels).await {
        Some(v) => v,
        None => {
            let text = scrape_at(admin).await;
            panic!("no series {name_and_labels} in /metrics:\n{text}")
        }
    }
}

/// Sends one HTTP/1.1 request from the loopback address `from` (any of
/// 127.0.0.0/8: a distinct client as the proxy sees it) on a connection of
/// its own; the status and the whole answer.
pub async fn request_from(from: std::net::Ipv4Addr, to: SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = ok(tokio::net::TcpSocket::new_v4(), "socket");
    ok(
        socket.bind(SocketAddr::from((from, 0))),
        "bind client address",
    );
    let mut s = ok(socket.connect(to).await, "connect");
    ok(s.write_all(head.as_bytes()).await, "write request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

pub async fn scrape(running: &Running) -> String {
    scrape_at(running.admin_addr).await
}

pub async fn scrape_at(admin: SocketAddr) -> String {
    let got = get(&h1_client(), &format!("http://{admin}/metrics"), None).await;
    String::from_utf8_lossy(&got.body).into_owned()
}

/// A child process (nginx, HAProxy) killed when the test ends, passed or not.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real `switchyard` binary, started as a child process.
pub struct BinProxy {
    pub child: std::process::Child,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The HTTPS listener, when the config has one.
    pub tls_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    /// Every line it wrote to stderr after start-up.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl BinProxy {
    /// The config file the process was started on (when made by [`Self::start`]).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("proxy.yaml")
    }

    /// Sends a signal (e.g. "HUP", "TERM") with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = ok(
            std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.child.id().to_string())
                .status(),
            "run kill",
        );
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Runs `switchyard run --config <yaml>` and waits until it says where it listens.
    pub fn start(yaml: &str) -> Self {
        let dir = ok(tempfile::tempdir(), "tempdir");
        let path = dir.path().join("proxy.yaml");
        ok(std::fs::write(&path, yaml), "write config");
        Self::start_at(dir, &path)
    }

    /// Runs `switchyard run --config <path>`; `dir` is kept for the test's files.
    pub fn start_at(dir: tempfile::TempDir, path: &std::path::Path) -> Self {
        Self::start_command(dir, "run", path)
    }

    /// Runs `switchyard <command> --config <path>` (`run` or `demo`).
    pub fn start_command(dir: tempfile::TempDir, command: &str, path: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args([command, "--config"])
                .arg(path)
                .env("TEST_KEY", TEST_KEY)
                // The demo's config names it: unset, as README runs the demo.
                .env_remove("SWITCHYARD_COOKIE_KEY")
                .env("SWITCHYARD_LOG", "info")
                .stderr(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn(),
            "spawn switchyard",
        );
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let mut lines = std::io::BufReader::new(stderr).lines();
        let field = |line: &str, key: &str| -> Option<SocketAddr> {
            let start = line.find(key)? + key.len();
            line[start..].split_whitespace().next()?.parse().ok()
        };
        for line in lines.by_ref() {
            let line = ok(line, "read stderr");
            if let (Some(p), Some(a)) = (field(&line, "proxy_addr="), field(&line, "admin_addr=")) {
                // Keep draining stderr so the child never blocks on a full
                // pipe, and keep what it says for `wait_log`.
                let log = Arc::new(Mutex::new(Vec::new()));
                let sink = Arc::clone(&log);
                std::thread::spawn(move || {
                    for l in lines.map_while(Result::ok) {
                        if let Ok(mut v) = sink.lock() {
                            v.push(l);
                        }
                    }
                });
                return BinProxy {
                    child,
                    proxy_addr: p,
                    admin_addr: a,
                    tls_addr: field(&line, "tls_addr="),
                    dir,
                    log,
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("switchyard exited before listening");
    }

    /// Waits (up to `within`) for a log line containing `needle`, and returns
    /// it; empty when none came.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let found = self
                .log
                .lock()
                .ok()
                .and_then(|v| v.iter().find(|l| l.contains(needle)).cloned());
            if let Some(l) = found {
                return l;
            }
            if tokio::time::Instant::now() >= deadline {
                return String::new();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Resident and peak resident memory of the process, in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = ok(
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())),
            "read /proc status",
        );
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for BinProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two upstreams named `blue` and `green`.
pub async fn blue_and_green() -> (Upstream, Upstream) {
    (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    )
}

/// One `blue` and one `green` upstream behind an in-process proxy.
pub async fn blue_green(blue: u32, green: u32, extra: &str) -> (Upstream, Upstream, Running) {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", blue, &[&b]), ("green", green, &[&g])],
        extra,
    ))
    .await;
    (b, g, proxy)
}

/// Reads what the server sends until it closes (or resets) or `within`
/// passes; what came, and whether it closed in time.
pub async fn read_until_close<S>(s: &mut S, within: Duration) -> (String, bool)
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Reads one HTTP/1 response off `s`: to its Content-Length, to its last
/// chunk, or (with neither) to the close. What came, and whether the peer
/// closed before the framing said the response was whole.
pub async fn read_response_bytes<S>(s: &mut S) -> (Vec<u8>, bool)
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let body = &out[end + 4..];
            let done = match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                Some(n) => body.len() >= n.trim().parse::<usize>().unwrap_or(usize::MAX),
                None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                return (out, false);
            }
        }
        let n = ok(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
            "a response in time",
        );
        match ok(n, "read") {
            0 => return (out, true),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}
