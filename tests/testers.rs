//! Tester passes (DESIGN §6): the override header takes a value signed with
//! the route's keys, naming the route, a group and an expiry, as `switchyard
//! pass` prints it. An unsigned name, an expired pass, another route's or
//! another key's pass is ignored (the client is assigned as usual) and
//! counted by why; a plain group name is honoured only from
//! `override_plain_from`. The header never reaches the upstream.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::*;
use http_body_util::Full;
use switchyard::assign::PassCodec;
use switchyard::config::{self, ValidateOptions};

const HEADER: &str = "x-switchyard-pass";

fn yaml(b: &Upstream, g: &Upstream, extra: &str) -> String {
    config_yaml(
        &[("blue", 100, &[b]), ("green", 0, &[g])],
        &format!("override_header: X-Switchyard-Pass\n{extra}"),
    )
}

/// `switchyard pass` run on `config` with the test's key in its environment.
fn pass_cli(config: &Path, args: &[&str]) -> std::process::Output {
    ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("pass")
            .args(args)
            .arg("--config")
            .arg(config)
            .env("TEST_KEY", TEST_KEY)
            .output(),
        "run switchyard pass",
    )
}

/// `value` with its byte at `at` (inside the signed payload) changed.
fn tamper(value: &str, at: usize) -> String {
    let mut b = value.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8_lossy(&b).into_owned()
}

async fn with_header(p: std::net::SocketAddr, value: &str, h2: bool) -> Got {
    let client = if h2 { h2_client() } else { h1_client() };
    let req = ok(
        http::Request::get(format!("http://{p}/"))
            .header(HEADER, value)
            .body(Full::default()),
        "request",
    );
    send(&client, req).await
}

fn passes(result: &str) -> String {
    format!("switchyard_tester_passes_total{{result=\"{result}\",route=\"default\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_signed_live_pass_for_the_route_opens_a_group() {
    let (b, g) = blue_and_green().await;
    let text = yaml(&b, &g, "");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("proxy.yaml");
    ok(std::fs::write(&path, &text), "write config");
    let proxy = start_proxy(&text).await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);

    let out = pass_cli(&path, &["--group", "green", "--ttl", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pass = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    for h2 in [false, true] {
        let got = with_header(p, &pass, h2).await;
        assert_eq!(
            (got.status.as_u16(), got.upstream()),
            (200, "green"),
            "h2 {h2}"
        );
        assert!(got.set_cookie("switchyard").is_none(), "a pass pins nobody");
    }
    assert_eq!(series_at(a, &passes("accepted")).await, 2.0);
    let seen = g.last_seen().unwrap_or_else(|| panic!("green saw nothing"));
    assert!(
        !seen.headers.contains_key(HEADER),
        "the pass reached the upstream"
    );

    // Not a pass: the plain name, another route's, another key's, an
    // expired one. Each is served by weight (blue) and counted.
    let cfg = ok(
        config::load_str(&text, "t.yaml", &test_keys(), ValidateOptions::default()),
        "config",
    );
    let keys = &cfg.routes[0].sticky.keys;
    let now = switchyard::clock::unix_now();
    let other_key =
        switchyard::config::CookieKey::try_new(vec![9; 32]).unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        ("green".to_owned(), "malformed"),
        (
            PassCodec::new(keys, "api")
                .issue("green", now, now + 60)
                .unwrap_or_default(),
            "bad_signature",
        ),
        (
            PassCodec::new(&[other_key], "default")
                .issue("green", now, now + 60)
                .unwrap_or_default(),
            "unknown_key",
        ),
        (
            PassCodec::new(keys, "default")
                .issue("green", now - 120, now - 60)
                .unwrap_or_default(),
            "expired",
        ),
        (tamper(&pass, 23), "bad_signature"),
    ];
    for (value, why) in &cases {
        let before = series_at(a, &passes(why)).await;
        let got = with_header(p, value, false).await;
        assert_eq!(
            (got.status.as_u16(), got.upstream()),
            (200, "blue"),
            "{why}: {value}"
        );
        assert!(
            got.set_cookie("switchyard").is_some(),
            "{why}: assigned as usual"
        );
        assert_eq!(series_at(a, &passes(why)).await, before + 1.0, "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_group_name_is_honoured_only_from_override_plain_from() {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(&yaml(&b, &g, "override_plain_from: [127.0.0.1/32]\n")).await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let head =
        format!("GET / HTTP/1.1\r\nHost: app\r\n{HEADER}: green\r\nConnection: close\r\n\r\n");
    let (status, text) = request_from(Ipv4Addr::new(127, 0, 0, 1), p, &head).await;
    assert_eq!(status, 200);
    assert!(
        text.to_ascii_lowercase().contains("x-upstream: green"),
        "{text}"
    );
    assert_eq!(series_at(a, &passes("plain")).await, 1.0);
    let (status, text) = request_from(Ipv4Addr::new(127, 0, 0, 2), p, &head).await;
    assert_eq!(status, 200);
    assert!(
        text.to_ascii_lowercase().contains("x-upstream: blue"),
        "{text}"
    );
    assert_eq!(series_at(a, &passes("malformed")).await, 1.0);
}

#[test]
fn switchyard_pass_refuses_what_the_proxy_would_ignore() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("proxy.yaml");
    let base = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\ngroups:\n  blue:\n    weight: 100\n    targets: [{address: 127.0.0.1:1}]\n  green:\n    weight: 0\n    targets: [{address: 127.0.0.1:2}]\n";
    ok(std::fs::write(&path, base), "write");
    let out = pass_cli(&path, &["--group", "green"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("override_header"), "{err}");
    ok(
        std::fs::write(&path, format!("override_header: X-Pass\n{base}")),
        "write",
    );
    for (args, says) in [
        (&["--group", "purple"][..], "does not split to"),
        (&["--group", "green", "--route", "api"][..], "no route"),
        (&["--group", "green", "--ttl", "8d"][..], "at most 7d"),
    ] {
        let out = pass_cli(&path, args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = pass_cli(&path, &["--group", "green"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("v1."));
}
