//! One path per request (DESIGN §9): the proxy normalizes the path once,
//! routes on it and forwards it, so an origin that normalizes (as nginx,
//! Go's `path.Clean` and most frameworks do) reads the path the route was
//! chosen on. The same verdict over the native HTTP/1.1 server, HTTP/2 and
//! the absolute form; refused spellings are a 400 that reaches no upstream.

mod common;

use std::net::SocketAddr;

use common::*;
use http_body_util::Full;

/// Two apps: `api` takes /api/ and below, `web` the rest; `tls`: lines
/// of an HTTPS listener.
async fn two_apps_with(tls: &str) -> (Upstream, Upstream, switchyard::app::Running) {
    let (api, web) = (Upstream::start("api").await, Upstream::start("web").await);
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{tls}sticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  api:\n    targets: [{{address: {}}}]\n  web:\n    targets: [{{address: {}}}]\n\
         routes:\n  - name: api\n    match: {{path_prefix: /api/}}\n    split: {{api: 1}}\n  - name: web\n    split: {{web: 1}}\n",
        api.addr, web.addr
    );
    let proxy = start_proxy(&yaml).await;
    (api, web, proxy)
}

async fn two_apps() -> (Upstream, Upstream, switchyard::app::Running) {
    two_apps_with("").await
}

/// Sends `target` three ways: HTTP/1.1 origin form, HTTP/1.1 absolute
/// form (both on the native server) and HTTP/2 (h2c, hyper); each answer's
/// status and upstream.
async fn three_ways(p: SocketAddr, target: &str) -> Vec<(&'static str, u16, String)> {
    let mut out = Vec::new();
    for (how, line) in [
        (
            "h1",
            format!("GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"),
        ),
        (
            "absolute",
            format!("GET http://app{target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"),
        ),
    ] {
        let resp = raw(p, line.as_bytes()).await;
        let status = resp
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let upstream = resp
            .lines()
            .find_map(|l| l.strip_prefix("x-upstream: "))
            .unwrap_or("")
            .trim()
            .to_owned();
        out.push((how, status, upstream));
    }
    let req = ok(
        http::Request::get(format!("http://{p}{target}")).body(Full::default()),
        "h2 request",
    );
    let got = send(&h2_client(), req).await;
    out.push(("h2", got.status.as_u16(), got.upstream().to_owned()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_routes_path_spelled_differently_reaches_that_route_normalized() {
    let (api, web, proxy) = two_apps().await;
    let p = proxy.proxy_addr;
    for (target, route, forwarded) in [
        ("/api/../admin", "web", "/admin"),
        ("/%61pi/x", "api", "/api/x"),
        ("/x/../api/y", "api", "/api/y"),
        ("//api//y", "api", "/api/y"),
        ("/%2e%2e/api/./z", "api", "/api/z"),
        (
            "/api/%7Euser?q=/../%2e%2e",
            "api",
            "/api/~user?q=/../%2e%2e",
        ),
        ("/a%20b", "web", "/a%20b"),
    ] {
        for (how, status, upstream) in three_ways(p, target).await {
            assert_eq!((status, upstream.as_str()), (200, route), "{how} {target}");
            let seen = if route == "api" { &api } else { &web };
            let uri = seen.last_seen().map(|s| s.uri).unwrap_or_default();
            // hyper's client sends the absolute form to nobody: every
            // upstream request is in origin form.
            assert_eq!(
                uri, forwarded,
                "{how} {target}: the upstream read another path"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_spellings_are_400_and_reach_no_upstream() {
    let (api, web, proxy) = two_apps().await;
    let p = proxy.proxy_addr;
    for target in [
        "/api%2F..%2Fadmin",
        "/x/..%2fapi/y",
        "/a%00b",
        "/a%zz",
        "/api%5C..%5Cadmin",
        "/x\\..\\api\\y",
    ] {
        for (how, status, _) in three_ways(p, target).await {
            // hyper's HTTP/2 server refuses a raw backslash itself (400);
            // the verdict is the same either way.
            assert_eq!(status, 400, "{how} {target}");
        }
    }
    assert_eq!(api.hits() + web.hits(), 0, "a refused path was forwarded");
    let bad = series_at(
        proxy.admin_addr,
        "switchyard_downstream_errors_total{kind=\"bad_request\"}",
    )
    .await;
    assert!(bad >= 18.0, "refusals counted: {bad}");
}

/// The same over TLS, where HTTP/1.1 is hyper's (not the native server's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_http1_over_tls_gives_the_same_verdicts() {
    let ca = common::pki::Ca::new("test CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let (cert, key) = ca.leaf(&["app.test"]).write(dir.path(), "app");
    let tls = format!(
        "tls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {}\n      key: {}\n",
        cert.display(),
        key.display()
    );
    let (api, web, proxy) = two_apps_with(&tls).await;
    let addr = proxy.tls_addr.unwrap_or_else(|| panic!("no TLS listener"));
    for (target, status, route, forwarded) in [
        ("/api/../admin", 200, "web", "/admin"),
        ("/%61pi/x", 200, "api", "/api/x"),
        ("//api//y", 200, "api", "/api/y"),
        ("/api%2F..%2Fadmin", 400, "", ""),
    ] {
        let got = common::pki::https_get(addr, "app.test", &ca, target, None).await;
        assert_eq!(
            (got.status.as_u16(), got.upstream()),
            (status, route),
            "{target}"
        );
        if status == 200 {
            let seen = if route == "api" { &api } else { &web };
            assert_eq!(
                seen.last_seen().map(|s| s.uri).unwrap_or_default(),
                forwarded
            );
        }
    }
}

/// A real origin that normalizes: nginx, which matches its `location`s on
/// the decoded, dot-resolved, slash-merged URI. One server per app, each
/// answering which of its locations took the request, and the URI it read.
/// The `api` app is reached through the proxy's `api` route only: if the
/// proxy routed on one spelling and forwarded another, nginx behind the
/// `web` route would answer from its `/api/` location (or the other way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normalizing_origin_answers_from_the_location_of_the_route_taken() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let (api_port, web_port) = (free_port(), free_port());
    let server = |port: u16, app: &str| {
        format!(
            "  server {{\n    listen 127.0.0.1:{port};\n\
             \x20   location /api/ {{ return 200 \"{app} location=api uri=$uri\\n\"; }}\n\
             \x20   location /admin {{ return 200 \"{app} location=admin uri=$uri\\n\"; }}\n\
             \x20   location / {{ return 200 \"{app} location=web uri=$uri\\n\"; }}\n  }}\n"
        )
    };
    let conf = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
         \x20 fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n{}{}}}\n",
        server(api_port, "api"),
        server(web_port, "web"),
        d = dir.path().display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    ok(std::fs::write(&conf_path, conf), "write nginx.conf");
    let bin = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("-v").output().is_ok())
        .unwrap_or_else(|| panic!("nginx is not installed (tests/run installs it)"));
    let _nginx = Killed(ok(
        std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .stderr(std::process::Stdio::null())
            .spawn(),
        "start nginx",
    ));
    for port in [api_port, web_port] {
        let mut up = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(up, "nginx did not listen on {port}");
    }
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  api:\n    targets: [{{address: 127.0.0.1:{api_port}}}]\n  web:\n    targets: [{{address: 127.0.0.1:{web_port}}}]\n\
         routes:\n  - name: api\n    match: {{path_prefix: /api/}}\n    split: {{api: 1}}\n  - name: web\n    split: {{web: 1}}\n"
    );
    let proxy = start_proxy(&yaml).await;
    let p = proxy.proxy_addr;
    for target in [
        "/api/../admin",
        "/%61pi/x",
        "/x/../api/y",
        "//api//y",
        "/%2e%2e/api/./z",
        "/api/%2e%2e/admin",
        "/api/x/../../admin",
        "/%2561pi/x",
    ] {
        let line = format!("GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
        let resp = raw(p, line.as_bytes()).await;
        let body = resp
            .rsplit("\r\n\r\n")
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let (app, location) = {
            let mut w = body.split_whitespace();
            (w.next().unwrap_or(""), w.next().unwrap_or(""))
        };
        assert!(resp.starts_with("HTTP/1.1 200"), "{target}: {resp}");
        // The app the proxy routed to answers from its own location: the
        // api app from /api/, the web app from anything but /api/.
        match app {
            "api" => assert_eq!(location, "location=api", "{target}: {body}"),
            "web" => assert_ne!(location, "location=api", "{target}: {body}"),
            _ => panic!("{target}: {resp}"),
        }
    }
}
