//! The HTTPS listener: certificates chosen by SNI, ALPN, HTTP/2 with sticky
//! cookies, certificate reload, redirects, cookie attributes, and TLS to upstreams.
//! Every certificate is made in the test by a test CA; every client is real.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::pki::{self, Ca};
use common::*;
use http::Request;
use http_body_util::Full;

/// YAML with an HTTPS listener holding `certs` (`(cert, key)` paths) before the groups.
fn tls_yaml(
    certs: &[(std::path::PathBuf, std::path::PathBuf)],
    groups: &[(&str, u32, &[&Upstream])],
    extra: &str,
) -> String {
    let mut tls = String::from("tls:\n  listen: 127.0.0.1:0\n  certificates:\n");
    for (c, k) in certs {
        tls.push_str(&format!(
            "    - cert: {}\n      key: {}\n",
            c.display(),
            k.display()
        ));
    }
    tls.push_str(extra);
    config_yaml(groups, &tls)
}

/// A test CA and one certificate for `app.test` from it, written to a temp dir.
struct AppCert {
    ca: Ca,
    certs: [(std::path::PathBuf, std::path::PathBuf); 1],
    _dir: tempfile::TempDir,
}

fn app_cert() -> AppCert {
    let ca = Ca::new("test CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let certs = [ca.leaf(&["app.test"]).write(dir.path(), "app")];
    AppCert {
        ca,
        certs,
        _dir: dir,
    }
}

/// Blue and green upstreams, 50/50, behind a proxy serving `certs` over HTTPS.
async fn blue_green_over_tls(
    certs: &[(std::path::PathBuf, std::path::PathBuf)],
) -> (Upstream, Upstream, switchyard::app::Running) {
    let (blue, green) = blue_and_green().await;
    let yaml = tls_yaml(certs, &[("blue", 1, &[&blue]), ("green", 1, &[&green])], "");
    let proxy = start_proxy(&yaml).await;
    (blue, green, proxy)
}

fn tls_addr(r: &switchyard::app::Running) -> std::net::SocketAddr {
    r.tls_addr.unwrap_or_else(|| panic!("no HTTPS listener"))
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_alpn_negotiates_h2() {
    let ca = Ca::new("test CA");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test", "*.b.test"]);
    let dir = ok(tempfile::tempdir(), "tempdir");
    let certs = [a.write(dir.path(), "a"), b.write(dir.path(), "b")];
    let (_blue, _green, proxy) = blue_green_over_tls(&certs).await;
    let addr = tls_addr(&proxy);

    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    for (sni, want, name) in [
        ("a.test", &a, "A"),
        ("b.test", &b, "B"),
        ("www.b.test", &b, "B (wildcard)"),
    ] {
        let s = pki::connect(addr, sni, &ca, both).await;
        let (leaf, alpn) = pki::peer(&s);
        assert_eq!(
            leaf,
            Some(want.der()),
            "SNI {sni} must get certificate {name}"
        );
        assert_eq!(
            alpn.as_deref(),
            Some(&b"h2"[..]),
            "ALPN must pick h2 when offered"
        );
    }
    let s = pki::connect(addr, "a.test", &ca, &[b"http/1.1"]).await;
    assert_eq!(
        pki::peer(&s).1.as_deref(),
        Some(&b"http/1.1"[..]),
        "a client offering only http/1.1 gets it"
    );
    // TLS 1.0/1.1 are off: a client that insists on 1.2 still works, and the
    // session uses 1.2 or 1.3 only.
    let (_, conn) = s.get_ref();
    let v = conn.protocol_version();
    assert!(
        matches!(
            v,
            Some(rustls::ProtocolVersion::TLSv1_3) | Some(rustls::ProtocolVersion::TLSv1_2)
        ),
        "{v:?}"
    );
    assert_eq!(
        metric(&proxy, "switchyard_tls_handshakes_total{result=\"ok\"}").await,
        4.0
    );
}

#[tokio::test]
async fn a_sticky_client_over_http2_keeps_its_group_and_split_cookies_are_joined() {
    let AppCert { ca, certs, _dir } = app_cert();
    let (blue, green, proxy) = blue_green_over_tls(&certs).await;
    let s = pki::connect(tls_addr(&proxy), "app.test", &ca, &[b"h2", b"http/1.1"]).await;
    let mut h2 = pki::h2_over(s).await;
    let req = |cookies: &[&str]| {
        let mut b = Request::get("https://app.test/page");
        for c in cookies {
            b = b.header("cookie", *c);
        }
        ok(b.body(Full::<Bytes>::default()), "request")
    };

    let first = pki::h2_send(&mut h2, req(&[])).await;
    assert_eq!(first.status, 200);
    let raw_cookie = first
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        raw_cookie.contains("; Secure"),
        "HTTPS sets Secure: {raw_cookie}"
    );
    let cookie = first
        .set_cookie("switchyard")
        .unwrap_or_else(|| panic!("no cookie"));
    let group = first.upstream().to_owned();

    for i in 0..20 {
        // Browsers on HTTP/2 send one `cookie` field per cookie (RFC 9113 §8.2.3).
        let sticky = format!("switchyard={cookie}");
        let got = pki::h2_send(&mut h2, req(&["theme=dark", &sticky, &format!("n={i}")])).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.upstream(), group, "request {i} left its group");
        assert!(
            got.set_cookie("switchyard").is_none(),
            "no new cookie for a pinned client"
        );
    }
    let up = if group == "blue" { &blue } else { &green };
    let seen = up
        .last_seen()
        .unwrap_or_else(|| panic!("upstream saw nothing"));
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies.len(), 1, "one Cookie header upstream: {cookies:?}");
    assert_eq!(cookies[0], "theme=dark; n=19");
    assert_eq!(
        seen.headers.get("x-forwarded-proto").map(|v| v.as_bytes()),
        Some(&b"https"[..])
    );
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "HTTP/1.1 to the upstream"
    );
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_handshakes_and_a_broken_one_is_refused() {
    let ca = Ca::new("test CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let old = ca.leaf(&["app.test"]);
    let certs = [old.write(dir.path(), "app")];
    let (blue, green) = blue_and_green().await;
    let yaml = tls_yaml(
        &certs,
        &[("blue", 1, &[&blue]), ("green", 1, &[&green])],
        "",
    );
    let w = Watched::start(&yaml).await;
    let addr = tls_addr(&w.running);
    let admin = w.running.admin_addr;

    // New connections all the while, each a fresh handshake and a request.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ca = Arc::new(ca);
    let load = {
        let (stop, done, failed, ca) = (stop.clone(), done.clone(), failed.clone(), ca.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok200 = tokio::time::timeout(Duration::from_secs(5), async {
                    let s = pki::connect(addr, "app.test", &ca, &[b"http/1.1"]).await;
                    drop(s);
                    pki::https_get(addr, "app.test", &ca, "/", None)
                        .await
                        .status
                        == 200
                })
                .await
                .unwrap_or(false);
                let c = if ok200 { &done } else { &failed };
                c.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let new = ca.leaf(&["app.test"]);
    // Key first, then certificate, each by rename, as cert-manager's Secret
    // update (an atomic symlink swap) or an operator's `mv` would.
    write_renamed(&certs[0].1, &new.key_pem);
    write_renamed(&certs[0].0, &new.cert_pem);
    let mut seen_new = false;
    for _ in 0..100 {
        let s = pki::connect(addr, "app.test", &ca, &[b"http/1.1"]).await;
        if pki::peer(&s).0 == Some(new.der()) {
            seen_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen_new,
        "new handshakes must get the new certificate within 5 s"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A broken PEM: refused, reported with its path, old (new) cert kept.
    write_renamed(
        &certs[0].0,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    let mut reported = serde_json::Value::Null;
    for _ in 0..100 {
        let st = status_at(admin).await;
        if st["config"]["reload"]["last_result"] == "invalid" {
            reported = st["config"]["reload"]["last_error"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = reported.to_string();
    assert!(
        text.contains("tls.certificates[0].cert"),
        "status must name the field: {text}"
    );
    let s = pki::connect(addr, "app.test", &ca, &[b"http/1.1"]).await;
    assert_eq!(
        pki::peer(&s).0,
        Some(new.der()),
        "the last good certificate keeps serving"
    );

    stop.store(true, Ordering::Relaxed);
    ok(load.await, "load task");
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(done > 10, "the load made progress ({done})");
    assert_eq!(
        failed, 0,
        "no request failed across certificate changes ({done} ok)"
    );
}

fn write_renamed(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    ok(std::fs::write(&tmp, text), "write temp");
    ok(std::fs::rename(&tmp, path), "rename");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_when_asked() {
    let AppCert { ca, certs, _dir } = app_cert();
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&tls_yaml(
        &certs,
        &[("blue", 1, &[&blue])],
        "  redirect_http: true\n",
    ))
    .await;
    let port = tls_addr(&proxy).port();
    let got = get(
        &h1_client(),
        &format!("http://{}/a/b?x=1", proxy.proxy_addr),
        None,
    )
    .await;
    assert_eq!(got.status, 308);
    let loc = got
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(loc, format!("https://127.0.0.1:{port}/a/b?x=1"));
    assert!(
        got.set_cookie("switchyard").is_none(),
        "a redirect assigns nobody"
    );
    assert_eq!(blue.hits(), 0, "nothing forwarded");
    let https = pki::https_get(tls_addr(&proxy), "app.test", &ca, "/", None).await;
    assert_eq!(https.status, 200);
    assert_eq!(blue.hits(), 1);
}

#[tokio::test]
async fn host_prefixed_cookie_is_secure_with_path_root_and_no_domain() {
    let AppCert { ca, certs, _dir } = app_cert();
    let blue = Upstream::start("blue").await;
    let yaml = tls_yaml(&certs, &[("blue", 1, &[&blue])], "").replace(
        "  ttl: 1h\n",
        "  ttl: 1h\n  host_prefix: true\n  same_site: none\n",
    );
    let proxy = start_proxy(&yaml).await;
    let got = pki::https_get(tls_addr(&proxy), "app.test", &ca, "/", None).await;
    let sc = got
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(sc.starts_with("__Host-switchyard="), "{sc}");
    for attr in ["; Path=/", "; Secure", "; SameSite=None", "; HttpOnly"] {
        assert!(sc.contains(attr), "{attr} missing from {sc}");
    }
    assert!(!sc.contains("Domain="), "{sc}");
    let value = got.set_cookie("__Host-switchyard").unwrap_or_default();
    let again = pki::https_get(
        tls_addr(&proxy),
        "app.test",
        &ca,
        "/",
        Some(&format!("__Host-switchyard={value}")),
    )
    .await;
    assert!(
        again.set_cookie("__Host-switchyard").is_none(),
        "the prefixed cookie is read back"
    );
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_handshake_timeout() {
    let AppCert { certs, _dir, .. } = app_cert();
    let blue = Upstream::start("blue").await;
    let yaml = tls_yaml(&certs, &[("blue", 1, &[&blue])], "")
        .replace("groups:\n", "timeouts:\n  tls_handshake: 300ms\ngroups:\n");
    let proxy = start_proxy(&yaml).await;
    let mut s = ok(
        tokio::net::TcpStream::connect(tls_addr(&proxy)).await,
        "connect",
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not left hanging: {read:?}"
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_tls_handshakes_total{result=\"timeout\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn upstream_tls_with_the_groups_ca_works_over_http1_and_http2() {
    let ca = Ca::new("upstream CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let ca_file = dir.path().join("ca.pem");
    ok(std::fs::write(&ca_file, ca.pem()), "write CA");
    let up = pki::TlsUpstream::start("secure", &ca.leaf(&["backend.internal"])).await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  one:\n    weight: 1\n    tls: true\n    ca_file: {ca}\n    server_name: backend.internal\n    targets:\n      - address: {a}\n  \
         two:\n    weight: 0\n    tls: true\n    protocol: h2\n    ca_file: {ca}\n    server_name: backend.internal\n    targets:\n      - address: {a}\n",
        ca = ca_file.display(),
        a = up.addr
    );
    let proxy = start_proxy(&yaml.replace(
        "groups:",
        "override_header: x-group\noverride_plain_from: [127.0.0.0/8]\ngroups:",
    ))
    .await;
    let client = h1_client();
    let got = get(&client, &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.upstream(), "secure");
    assert_eq!(
        got.headers.get("x-version").map(|v| v.as_bytes()),
        Some(&b"HTTP/1.1"[..])
    );
    let req = ok(
        Request::get(format!("http://{}/", proxy.proxy_addr))
            .header("x-group", "two")
            .body(Full::<Bytes>::default()),
        "req",
    );
    let got = send(&client, req).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.headers.get("x-version").map(|v| v.as_bytes()),
        Some(&b"HTTP/2.0"[..]),
        "protocol: h2 speaks HTTP/2 to the upstream"
    );
}

#[tokio::test]
async fn upstream_tls_with_a_wrong_ca_is_a_502_counted_as_tls() {
    let right = Ca::new("upstream CA");
    let wrong = Ca::new("some other CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let ca_file = dir.path().join("ca.pem");
    ok(std::fs::write(&ca_file, wrong.pem()), "write CA");
    let up = pki::TlsUpstream::start("secure", &right.leaf(&["127.0.0.1"])).await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  one:\n    weight: 1\n    tls: true\n    ca_file: {}\n    targets:\n      - address: {}\n",
        ca_file.display(),
        up.addr
    );
    let proxy = BinProxy::start(&yaml);
    let got = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(got.status, 502);
    let body = String::from_utf8_lossy(&got.body);
    let all = proxy.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(body.contains("TLS"), "the answer says why: {body} {all}");
    assert!(
        up.versions.lock().map(|v| v.is_empty()).unwrap_or(false),
        "nothing reached the upstream"
    );
    let errors = metric_at(
        proxy.admin_addr,
        &format!(
            "switchyard_upstream_errors_total{{group=\"one\",kind=\"tls\",target=\"{}\"}}",
            up.addr
        ),
    )
    .await;
    assert_eq!(errors, 1.0);
    let log = proxy
        .wait_log("upstream TLS handshake failed", Duration::from_secs(5))
        .await;
    assert!(
        log.contains("UnknownIssuer") || log.contains("unknown issuer") || log.contains("issuer"),
        "the log names the cause: {log}"
    );
}

/// Issue 24: the listener followed the client's cipher order; scanners flag
/// that. A client that prefers ChaCha20 gets the server's first choice it
/// offers, AES-256-GCM, on TLS 1.3 and on TLS 1.2.
#[tokio::test]
async fn the_server_chooses_the_cipher_suite_by_its_own_order() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let cert = app_cert();
    let (_blue, _green, proxy) = blue_green_over_tls(&cert.certs).await;
    let cases = [
        (
            &rustls::version::TLS13,
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
            ],
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            &rustls::version::TLS12,
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
    ];
    for (version, offered, want) in cases {
        let cfg = cert.ca.client_config_offering(&[version], offered);
        let tcp = ok(
            tokio::net::TcpStream::connect(tls_addr(&proxy)).await,
            "connect",
        );
        let name = ok(
            rustls_pki_types::ServerName::try_from("app.test"),
            "server name",
        );
        let s = ok(
            tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await,
            "handshake",
        );
        let suite = s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
        assert_eq!(suite, Some(want), "{:?}", version.version);
    }
}

/// An HTTPS upstream that writes its answers byte for byte (hyper's server
/// would tidy them): `/length-and-chunked` has a stale `Content-Length`
/// beside chunked, `/list` a `Content-Length: 2, 2`, anything else a plain
/// `Content-Length: 2`. Counts the connections it accepts.
async fn raw_tls_upstream(leaf: &pki::Leaf) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = ok(
        {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
        },
        "key",
    );
    let mut cfg = ok(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der()], key),
        "server config",
    );
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await, "bind");
    let addr = ok(listener.local_addr(), "addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let answer: &[u8] = if head.contains(" /list ") {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"
                    } else if head.contains(" /length-and-chunked ") {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    if tls.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Issue 24, through the hyper-util client (TLS upstreams): lengths a
/// reader could take two ways reach the client as one plain length or none.
#[tokio::test]
async fn upstream_tls_answers_reach_the_client_with_one_framing() {
    let ca = Ca::new("upstream CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let ca_file = dir.path().join("ca.pem");
    ok(std::fs::write(&ca_file, ca.pem()), "write CA");
    let (up, accepted) = raw_tls_upstream(&ca.leaf(&["127.0.0.1"])).await;
    let proxy = start_proxy(&format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         groups:\n  one:\n    weight: 1\n    tls: true\n    ca_file: {}\n    targets:\n      - address: {up}\n",
        ca_file.display()
    ))
    .await;
    let c = h1_client();
    let base = format!("http://{}", proxy.proxy_addr);
    for _ in 0..2 {
        assert_eq!(
            &get(&c, &format!("{base}/plain"), None).await.body[..],
            b"ok"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a plain answer keeps its connection"
    );
    for path in ["/length-and-chunked", "/list"] {
        let before = accepted.load(Ordering::SeqCst);
        let got = get(&c, &format!("{base}{path}"), None).await;
        assert_eq!(
            (got.status.as_u16(), &got.body[..]),
            (200, &b"ok"[..]),
            "{path}"
        );
        let lengths: Vec<_> = got.headers.get_all("content-length").iter().collect();
        assert!(
            lengths.iter().all(|v| v.as_bytes() == b"2"),
            "{path}: {lengths:?}"
        );
        assert!(lengths.len() <= 1, "{path}: {lengths:?}");
        assert_eq!(
            &get(&c, &format!("{base}/plain"), None).await.body[..],
            b"ok"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            before + 1,
            "{path}: its connection was used again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_presents_the_groups_client_certificate_and_reloads_it() {
    let up_ca = Ca::new("upstream CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("some other client CA");
    let up =
        pki::TlsUpstream::start_requiring_client("secure", &up_ca.leaf(&["127.0.0.1"]), &clients)
            .await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let ca_file = dir.path().join("ca.pem");
    ok(std::fs::write(&ca_file, up_ca.pem()), "write CA");
    let good = clients.leaf(&["switchyard.test"]);
    let bad = stranger.leaf(&["switchyard.test"]);
    let (cert, key) = good.write(dir.path(), "client");
    let group = |name: &str, client: bool| {
        let mut g = format!(
            "  {name}:\n    tls: true\n    ca_file: {}\n    targets:\n      - address: {}\n",
            ca_file.display(),
            up.addr
        );
        if client {
            g.push_str(&format!(
                "    client_cert: {}\n    client_key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        g
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         routes:\n  - name: with\n    match: {{hosts: [with.test]}}\n    split: {{with: 1}}\n\
         \x20 - name: without\n    match: {{hosts: [without.test]}}\n    split: {{without: 1}}\n\
         groups:\n{}{}",
        group("with", true),
        group("without", false)
    );
    let config = dir.path().join("proxy.yaml");
    ok(std::fs::write(&config, &yaml), "write config");
    let proxy = start_watching(&config).await;
    let ask = |host: &'static str| {
        let url = format!("http://{}/", proxy.proxy_addr);
        async move {
            send(
                &h1_client(),
                ok(
                    Request::get(url)
                        .header("host", host)
                        .body(Full::new(Bytes::new())),
                    "request",
                ),
            )
            .await
        }
    };
    let with = ask("with.test").await;
    assert_eq!(with.status, 200, "{:?}", with.body);
    assert_eq!(&with.body[..], b"tls ok");
    assert_eq!(
        ask("without.test").await.status,
        502,
        "no client certificate, no answer"
    );
    let served = up.versions.lock().map(|v| v.len()).unwrap_or(0);
    assert_eq!(served, 1);

    // The certificate file is replaced by one the upstream does not trust:
    // the reload takes it, and the upstream refuses the proxy from then on.
    ok(std::fs::write(&cert, &bad.cert_pem), "write cert");
    ok(std::fs::write(&key, &bad.key_pem), "write key");
    assert!(wait_generation(proxy.admin_addr, 2, Duration::from_secs(15)).await);
    assert_eq!(
        ask("with.test").await.status,
        502,
        "a wrong certificate is refused"
    );
    ok(std::fs::write(&cert, &good.cert_pem), "write cert");
    ok(std::fs::write(&key, &good.key_pem), "write key");
    assert!(wait_generation(proxy.admin_addr, 3, Duration::from_secs(15)).await);
    assert_eq!(ask("with.test").await.status, 200, "the right one again");
    assert_eq!(up.versions.lock().map(|v| v.len()).unwrap_or(0), 2);
    proxy.shutdown().await;
}
