//! The admin listener: metrics that count what the test did, health, readiness
//! and the status document.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_assignments_by_group_and_reason() {
    let (b, g, proxy) = blue_green(
        50,
        50,
        "override_header: X-Group\noverride_plain_from: [127.0.0.0/8]\n",
    )
    .await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let client = h1_client();
    let mut by_group = std::collections::HashMap::<String, (u32, u32)>::new();
    for _ in 0..30 {
        let first = get(&client, &url, None).await;
        let cookie = format!(
            "switchyard={}",
            first.set_cookie("switchyard").unwrap_or_default()
        );
        let e = by_group.entry(first.upstream().to_owned()).or_default();
        e.0 += 1;
        for _ in 0..3 {
            get(&client, &url, Some(&cookie)).await;
            e.1 += 1;
        }
    }
    let req = http::Request::get(&url)
        .header("x-group", "green")
        .body(Default::default());
    send(&client, ok(req, "req")).await;
    get(&client, &url, Some("switchyard=v1.bogus.bogus")).await;

    for (group, up) in [("blue", &b), ("green", &g)] {
        let (new, sticky) = by_group.get(group).copied().unwrap_or_default();
        let m = |reason: &str| {
            format!(
                r#"switchyard_assignments_total{{group="{group}",reason="{reason}",route="default"}}"#
            )
        };
        assert_eq!(metric(&proxy, &m("new")).await as u32, new, "{group} new");
        assert_eq!(
            metric(&proxy, &m("sticky")).await as u32,
            sticky,
            "{group} sticky"
        );
        let reqs = metric(
            &proxy,
            &format!(
                r#"switchyard_requests_total{{class="2xx",group="{group}",target="{}"}}"#,
                up.addr
            ),
        )
        .await;
        assert_eq!(
            reqs as usize,
            up.hits(),
            "{group} requests counted = upstream hits"
        );
        let hist = metric(
            &proxy,
            &format!(
                r#"switchyard_request_duration_seconds_count{{group="{group}",route="default"}}"#
            ),
        )
        .await;
        assert_eq!(hist as usize, up.hits());
    }
    assert_eq!(
        metric(
            &proxy,
            r#"switchyard_assignments_total{group="green",reason="override",route="default"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &proxy,
            r#"switchyard_cookie_rejected_total{reason="malformed"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &proxy,
            r#"switchyard_group_weight{group="green",route="default"}"#
        )
        .await,
        50.0
    );
    assert_eq!(
        metric(
            &proxy,
            r#"switchyard_group_share_ratio{group="green",route="default"}"#
        )
        .await,
        0.5
    );
    assert_eq!(metric(&proxy, "switchyard_config_generation").await, 1.0);
    assert!(metric(&proxy, "switchyard_connections_total").await >= 1.0);
    let text = scrape(&proxy).await;
    assert!(text.contains(&format!(
        r#"switchyard_build_info{{version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION")
    )));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("switchyard_"),
            "metric without prefix: {line}"
        );
    }
    assert!(!text.contains(TEST_KEY), "key material in metrics");
    // Requests refused before routing count under group "none", but no
    // target gauge does: `target_healthy{group="none"} 0` would read as a
    // group with no healthy target and page someone.
    let unrouted = raw(
        proxy.proxy_addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
    )
    .await;
    assert!(unrouted.starts_with("HTTP/1.1 400"), "{unrouted}");
    let text = scrape(&proxy).await;
    assert!(
        text.contains(r#"switchyard_requests_total{class="4xx",group="none",target="none"} 1"#)
    );
    for line in text.lines().filter(|l| l.contains(r#"group="none""#)) {
        assert!(
            line.starts_with("switchyard_requests_total"),
            "placeholder series: {line}"
        );
    }
    // Cookie mode has no store, so no store series (an alert on
    // `switchyard_store_up == 0` must not fire on it).
    assert!(
        !text.contains("switchyard_store_"),
        "store metrics in cookie mode"
    );
    assert!(
        !text.contains("switchyard_session_cache"),
        "store metrics in cookie mode"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_status() {
    let b = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(&[("blue", 3, &[&b])], "")).await;
    let admin = format!("http://{}", proxy.admin_addr);
    let client = h1_client();
    assert_eq!(
        get(&client, &format!("{admin}/healthz"), None).await.status,
        200
    );
    assert_eq!(
        get(&client, &format!("{admin}/readyz"), None).await.status,
        200
    );
    assert_eq!(
        get(&client, &format!("{admin}/nope"), None).await.status,
        404
    );
    let status = get(&client, &format!("{admin}/status"), None).await;
    let doc: serde_json::Value = ok(serde_json::from_slice(&status.body), "status is JSON");
    assert_eq!(doc["config"]["generation"], 1);
    assert_eq!(doc["groups"][0]["name"], "blue");
    assert_eq!(doc["groups"][0]["weight"], 3);
    assert_eq!(doc["groups"][0]["share_percent"], 100.0);
    assert_eq!(
        doc["groups"][0]["targets"][0]["address"],
        b.addr.to_string()
    );
    assert_eq!(doc["sticky"]["ttl"], "1h");
    assert!(!String::from_utf8_lossy(&status.body).contains(TEST_KEY));
    proxy.shutdown().await;
}

#[test]
fn admin_binds_loopback_by_default() {
    let yaml = "listen: 127.0.0.1:0\nsticky: {ttl: 1h, keys: [env:TEST_KEY]}\ngroups: {blue: {weight: 1, targets: [{address: 127.0.0.1:1}]}}\n";
    let cfg = ok(
        switchyard::config::load_str(yaml, "t", &test_keys(), Default::default()),
        "config",
    );
    assert_eq!(cfg.admin.to_string(), "127.0.0.1:9901");
}
