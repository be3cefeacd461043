//! A real browser through the HTTPS demo: headless Chromium, driven over
//! WebDriver by chromedriver, loads pages from `switchyard demo` (its built-in
//! blue and green upstreams) on a certificate made here. It must keep the
//! sticky cookie and its version for 20 loads, and move on the first load
//! after its group is set to `drain: true` in the watched config file.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
//! By hand: `cargo test --test browser -- --nocapture`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use rcgen::PublicKeyData;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use common::pki;
use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on loopback; the browser session and both processes end on drop.
struct Driver {
    child: Child,
    base: String,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Best effort: closing the session quits Chromium.
            let base = self.base.clone();
            let _ = std::thread::spawn(move || {
                let _ = Command::new("curl")
                    .args(["-s", "-X", "DELETE", &format!("{base}/session/{id}")])
                    .output();
            })
            .join();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} missing: apt-get install chromium chromium-driver"
        );
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver ({e}): apt-get install chromium-driver")
            });
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
        };
        for _ in 0..100 {
            let status = driver.try_call("GET", "/status", None).await;
            if status.is_some_and(|s| s["value"]["ready"] == true) {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not become ready");
    }

    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .ok()?;
        let res = h1_client().request(req).await.ok()?;
        let bytes = http_body_util::BodyExt::collect(res.into_body())
            .await
            .ok()?
            .to_bytes();
        serde_json::from_slice(&bytes).ok()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self
            .try_call(method, path, body)
            .await
            .unwrap_or_else(|| panic!("WebDriver {method} {path}: no answer"));
        assert!(
            answer["value"]["error"].is_null(),
            "WebDriver {method} {path}: {}",
            answer["value"]
        );
        answer["value"].clone()
    }

    /// A headless Chromium that trusts exactly the key pinned by `spki`.
    async fn open(&mut self, profile: &Path, spki: &str) {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--ignore-certificate-errors-spki-list={spki}"),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let session = self.call("POST", "/session", Some(caps)).await;
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {session}"));
        self.session = Some(id.to_owned());
    }

    fn path(&self, rest: &str) -> String {
        format!(
            "/session/{}{rest}",
            self.session.as_deref().unwrap_or_default()
        )
    }

    /// Loads `url` and returns the demo upstream's JSON answer as the page shows it.
    async fn load(&self, url: &str) -> Value {
        self.call("POST", &self.path("/url"), Some(json!({ "url": url })))
            .await;
        let script = json!({ "script": "return document.body.innerText", "args": [] });
        let text = self
            .call("POST", &self.path("/execute/sync"), Some(script))
            .await;
        let text = text.as_str().unwrap_or_default();
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("page is not the demo's JSON ({e}): {text}"))
    }

    async fn cookie(&self, name: &str) -> Value {
        self.call("GET", &self.path(&format!("/cookie/{name}")), None)
            .await
    }
}

/// The HTTPS demo with the test's certificate, its blue and green 50/50 so a
/// browser that kept no cookie would be seen switching within a few loads.
fn demo_config(dir: &Path, leaf: &pki::Leaf, drain: Option<&str>) -> String {
    let (cert, key) = (dir.join("localhost.crt"), dir.join("localhost.key"));
    let ports = std::fs::read_to_string(dir.join("ports")).unwrap_or_default();
    let ports: Vec<&str> = ports.split_whitespace().collect();
    if !cert.exists() {
        leaf.write(dir, "localhost");
    }
    let drained = |g: &str| {
        if drain == Some(g) {
            "    drain: true\n"
        } else {
            ""
        }
    };
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n\
         tls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {}\n      key: {}\n\
         sticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  blue:\n    weight: 50\n{}    targets:\n      - address: 127.0.0.1:{}\n\
         \x20 green:\n    weight: 50\n{}    targets:\n      - address: 127.0.0.1:{}\n",
        cert.display(),
        key.display(),
        drained("blue"),
        ports[0],
        drained("green"),
        ports[1],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_keeps_its_version_for_20_loads_and_moves_when_its_group_drains() {
    let ca = pki::Ca::new("switchyard browser test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let key = ok(rcgen::KeyPair::from_pem(&leaf.key_pem), "leaf key");
    let spki = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(key.subject_public_key_info()));

    let dir = ok(tempfile::tempdir(), "tempdir");
    ok(
        std::fs::write(
            dir.path().join("ports"),
            format!("{} {}", free_port(), free_port()),
        ),
        "ports",
    );
    let path = dir.path().join("proxy.yaml");
    ok(
        std::fs::write(&path, demo_config(dir.path(), &leaf, None)),
        "config",
    );
    let demo = BinProxy::start_command(ok(tempfile::tempdir(), "tempdir"), "demo", &path);
    let tls = demo
        .tls_addr
        .unwrap_or_else(|| panic!("the demo opened no HTTPS listener"));
    let url = format!("https://localhost:{}/", tls.port());

    let mut driver = Driver::start().await;
    let profile = ok(tempfile::tempdir(), "profile");
    driver.open(profile.path(), &spki).await;

    let first = driver.load(&url).await;
    let group = first["group"].as_str().unwrap_or_default().to_owned();
    assert!(group == "blue" || group == "green", "page: {first}");
    assert_eq!(first["headers"]["x-forwarded-proto"], "https");
    let cookie = driver.cookie("switchyard").await;
    let value = cookie["value"].as_str().unwrap_or_default().to_owned();
    assert!(value.starts_with("v1."), "sticky cookie: {cookie}");
    assert_eq!(cookie["secure"], true, "Secure is set on HTTPS: {cookie}");
    assert_eq!(cookie["httpOnly"], true);

    for n in 2..=20 {
        let page = driver.load(&url).await;
        assert_eq!(
            page["group"],
            group.as_str(),
            "load {n} changed version: {page}"
        );
        let now = driver.cookie("switchyard").await;
        assert_eq!(now["value"], value.as_str(), "load {n} changed the cookie");
    }
    // One assignment in all, the first load; every later request (pages and
    // the favicon fetches Chromium adds) came back with the cookie.
    let admin = demo.admin_addr;
    let new = metric_at(
        admin,
        r#"switchyard_assignments_total{group="blue",reason="new",route="default"}"#,
    )
    .await
        + metric_at(
            admin,
            r#"switchyard_assignments_total{group="green",reason="new",route="default"}"#,
        )
        .await;
    assert_eq!(new, 1.0, "the browser was assigned more than once");
    let sticky_metric = format!(
        r#"switchyard_assignments_total{{group="{group}",reason="sticky",route="default"}}"#
    );
    assert!(metric_at(admin, &sticky_metric).await >= 19.0);

    // The operator drains the browser's group by editing the file.
    write_by_rename(&path, &demo_config(dir.path(), &leaf, Some(&group)));
    assert!(
        wait_generation(demo.admin_addr, 2, Duration::from_secs(10)).await,
        "the drain edit was not applied"
    );
    let other = if group == "blue" { "green" } else { "blue" };
    let moved = driver.load(&url).await;
    assert_eq!(
        moved["group"], other,
        "the first load after the drain: {moved}"
    );
    let new_cookie = driver.cookie("switchyard").await;
    assert_ne!(
        new_cookie["value"],
        value.as_str(),
        "the cookie was not re-issued"
    );
    for _ in 0..3 {
        assert_eq!(
            driver.load(&url).await["group"],
            other,
            "not sticky after the move"
        );
    }
}
