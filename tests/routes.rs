//! Routes against real upstreams: one proxy in front of two apps, each with
//! its own split and its own pin; requests no route takes get a 404 and
//! reach no upstream; a pin made for one route is never honoured by another.

mod common;

use std::net::SocketAddr;

use common::*;
use http::Request;
use http_body_util::Full;

/// GET `path` on the proxy with `Host: host`, with a `Cookie` if given.
async fn get_host(proxy: SocketAddr, host: &str, path: &str, cookie: Option<&str>) -> Got {
    let mut b = Request::get(format!("http://{proxy}{path}")).header("host", host);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    send(&h1_client(), ok(b.body(Full::default()), "request")).await
}

fn set_cookie_line(got: &Got) -> String {
    got.headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(" | ")
}

const HEAD: &str =
    "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n";

#[tokio::test]
async fn two_apps_split_by_host_and_path_each_with_its_own_pin() {
    let (ab, ag, wb, wg) = (
        Upstream::start("api-blue").await,
        Upstream::start("api-green").await,
        Upstream::start("web-blue").await,
        Upstream::start("web-green").await,
    );
    let yaml = format!(
        "{HEAD}groups:\n  api-blue:\n    targets: [{{address: {}}}]\n  api-green:\n    targets: [{{address: {}}}]\n  web-blue:\n    targets: [{{address: {}}}]\n  web-green:\n    targets: [{{address: {}}}]\n\
         routes:\n  - name: api\n    match: {{hosts: [api.test], path_prefix: /v1/}}\n    split: {{api-blue: 50, api-green: 50}}\n  - name: web\n    match: {{hosts: [www.test, \"*.www.test\"]}}\n    split: {{web-blue: 100, web-green: 0}}\n",
        ab.addr, ag.addr, wb.addr, wg.addr
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr;

    // New API clients land on both API groups, never on the web's; each is
    // pinned by the API route's own cookie, scoped to its path.
    let mut seen = std::collections::BTreeSet::new();
    let mut pins = Vec::new();
    for i in 0..40 {
        let got = get_host(addr, "API.test:80", &format!("/v1/items/{i}"), None).await;
        assert_eq!(got.status, 200);
        let line = set_cookie_line(&got);
        assert!(
            line.contains("Path=/v1") && line.starts_with("switchyard_api="),
            "{line}"
        );
        let value = got.set_cookie("switchyard_api").unwrap_or_default();
        seen.insert(got.upstream().to_owned());
        pins.push((value, got.upstream().to_owned()));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["api-blue", "api-green"],
        "a 50/50 split over 40 clients"
    );
    for (value, upstream) in &pins {
        let again = get_host(
            addr,
            "api.test",
            "/v1/again",
            Some(&format!("switchyard_api={value}")),
        )
        .await;
        assert_eq!(again.upstream(), upstream, "pinned on its route");
        assert_eq!(
            again.set_cookie("switchyard_api"),
            None,
            "no new cookie for a valid pin"
        );
    }

    // The web route: its own cookie, all on web-blue, for its wildcard too.
    for host in ["www.test", "a.b.www.test"] {
        let got = get_host(addr, host, "/v1/items/1", None).await;
        assert_eq!(got.upstream(), "web-blue", "{host}");
        assert!(
            set_cookie_line(&got).starts_with("switchyard_web="),
            "{}",
            set_cookie_line(&got)
        );
        assert!(
            set_cookie_line(&got).contains("Path=/;"),
            "{}",
            set_cookie_line(&got)
        );
    }

    // No route: a 404 from the proxy, counted, and no upstream asked.
    let before = ab.hits() + ag.hits() + wb.hits() + wg.hits();
    for (host, path) in [
        ("api.test", "/v2/x"),
        ("api.test", "/v10"),
        ("other.test", "/"),
        ("www.test.evil", "/"),
    ] {
        let got = get_host(addr, host, path, None).await;
        assert_eq!(got.status, 404, "{host}{path}");
        assert_eq!(got.set_cookie("switchyard_api"), None);
    }
    assert_eq!(ab.hits() + ag.hits() + wb.hits() + wg.hits(), before);
    assert_eq!(
        metric(
            &proxy,
            "switchyard_downstream_errors_total{kind=\"no_route\"}"
        )
        .await,
        4.0
    );

    // No upstream sees any route's pin, even one sent to the other route.
    let (value, _) = &pins[0];
    get_host(
        addr,
        "www.test",
        "/",
        Some(&format!(
            "a=1; switchyard_api={value}; switchyard_web=x; b=2"
        )),
    )
    .await;
    for up in [&ab, &ag, &wb, &wg] {
        let seen: Vec<Seen> = up.seen.lock().map(|s| s.clone()).unwrap_or_default();
        for s in seen {
            let cookies: Vec<_> = s
                .headers
                .get_all("cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            assert!(
                cookies.iter().all(|c| !c.contains("switchyard")),
                "{}: {cookies:?}",
                up.name
            );
        }
    }
}

#[tokio::test]
async fn a_pin_made_for_one_route_is_not_honoured_by_another() {
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    // The same cookie name on two hosts: allowed (no request carries both),
    // and the MAC still tells the routes apart.
    let yaml = format!(
        "{HEAD}groups:\n  blue:\n    targets: [{{address: {}}}]\n  green:\n    targets: [{{address: {}}}]\n\
         routes:\n  - name: a\n    match: {{hosts: [a.test]}}\n    split: {{green: 1}}\n    sticky: {{cookie: pin}}\n  - name: b\n    match: {{hosts: [b.test]}}\n    split: {{blue: 1, green: 0}}\n    sticky: {{cookie: pin}}\n",
        blue.addr, green.addr
    );
    let proxy = start_proxy(&yaml).await;
    let first = get_host(proxy.proxy_addr, "a.test", "/", None).await;
    assert_eq!(first.upstream(), "green");
    let pin = first.set_cookie("pin").unwrap_or_default();
    // Honoured on route b, the pin would keep green (weight 0 keeps its
    // clients); it is refused, and the client starts afresh on b's split.
    let got = get_host(proxy.proxy_addr, "b.test", "/", Some(&format!("pin={pin}"))).await;
    assert_eq!(got.upstream(), "blue");
    assert!(got.set_cookie("pin").is_some_and(|v| v != pin));
    assert_eq!(
        metric(
            &proxy,
            "switchyard_cookie_rejected_total{reason=\"bad_signature\"}"
        )
        .await,
        1.0
    );
    // On its own route it still holds.
    let back = get_host(proxy.proxy_addr, "a.test", "/", Some(&format!("pin={pin}"))).await;
    assert_eq!(back.upstream(), "green");
    assert_eq!(back.set_cookie("pin"), None);
}

#[tokio::test]
async fn an_old_groups_only_config_runs_as_one_route_and_keeps_its_pins() {
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue]), ("green", 0, &[&green])],
        "",
    ))
    .await;
    let got = get(
        &h1_client(),
        &format!("http://{}/anything", proxy.proxy_addr),
        None,
    )
    .await;
    assert_eq!(got.upstream(), "blue");
    assert!(
        set_cookie_line(&got).starts_with("switchyard="),
        "{}",
        set_cookie_line(&got)
    );
    // A pin signed the way the build before routes signed it (no route in
    // the MAC) is honoured: upgrading does not re-pin anyone.
    let key = ok(switchyard::config::decode_key(TEST_KEY), "key");
    let codec = switchyard::assign::CookieCodec::with_binding(
        &[ok(switchyard::config::CookieKey::try_new(key), "key")],
        "switchyard",
        "",
        "/",
        None,
    );
    let now = switchyard::clock::unix_now();
    let target = switchyard::assign::target_id(&green.addr.to_string());
    let pin = switchyard::assign::Pin::new([7; 16], "green", target, now, now + 600)
        .unwrap_or_else(|| panic!("pin"));
    let got = get(
        &h1_client(),
        &format!("http://{}/", proxy.proxy_addr),
        Some(&format!("switchyard={}", codec.encode(&pin))),
    )
    .await;
    assert_eq!(got.upstream(), "green");
}

/// GET or POST `path` on `db.test`, with a cookie if given.
async fn db(proxy: SocketAddr, method: &str, cookie: Option<&str>) -> Got {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}/items"))
        .header("host", "db.test");
    if let Some(c) = cookie {
        b = b.header("cookie", format!("switchyard_db={c}"));
    }
    send(&h1_client(), ok(b.body(Full::default()), "request")).await
}

#[tokio::test]
async fn after_a_write_the_writers_reads_go_to_the_writes_group_for_the_window() {
    let (primary, ra, rb) = (
        Upstream::start("primary").await,
        Upstream::start("replica-a").await,
        Upstream::start("replica-b").await,
    );
    let yaml = format!(
        "{HEAD}groups:\n  primary:\n    targets: [{{address: {}}}]\n  replica-a:\n    targets: [{{address: {}}}]\n  replica-b:\n    targets: [{{address: {}}}]\n\
         routes:\n  - name: db\n    match: {{hosts: [db.test]}}\n    split: {{replica-a: 50, replica-b: 50}}\n    writes: {{group: primary, read_your_writes: 2s}}\n",
        primary.addr, ra.addr, rb.addr
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr;
    // Readers who never write never reach the primary.
    for _ in 0..20 {
        let got = db(addr, "GET", None).await;
        assert!(got.upstream().starts_with("replica-"), "{}", got.upstream());
    }
    let first = db(addr, "GET", None).await;
    let replica = first.upstream().to_owned();
    let pin = first.set_cookie("switchyard_db").unwrap_or_default();
    // The write goes to the primary and opens the window in a new pin.
    let wrote = db(addr, "POST", Some(&pin)).await;
    assert_eq!(wrote.upstream(), "primary");
    let windowed = wrote
        .set_cookie("switchyard_db")
        .unwrap_or_else(|| panic!("no new pin"));
    for _ in 0..3 {
        let read = db(addr, "GET", Some(&windowed)).await;
        assert_eq!(read.upstream(), "primary", "a read right after its write");
    }
    // Another client's reads are not affected, and the old pin has no window.
    assert_eq!(db(addr, "GET", Some(&pin)).await.upstream(), replica);
    // After the window, the same pin reads from its replica again.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let later = db(addr, "GET", Some(&windowed)).await;
    assert_eq!(later.upstream(), replica);
    assert_eq!(later.set_cookie("switchyard_db"), None);
    // A first request that writes: the primary, and a replica pin with a window.
    let fresh = db(addr, "PUT", None).await;
    assert_eq!(fresh.upstream(), "primary");
    let fresh_pin = fresh.set_cookie("switchyard_db").unwrap_or_default();
    assert_eq!(
        db(addr, "GET", Some(&fresh_pin)).await.upstream(),
        "primary"
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_assignments_total{group=\"primary\",reason=\"write\",route=\"db\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &proxy,
            "switchyard_assignments_total{group=\"primary\",reason=\"read_your_writes\",route=\"db\"}"
        )
        .await,
        4.0
    );
}

#[tokio::test]
async fn routes_are_added_removed_renamed_and_reordered_live_and_a_bad_one_is_refused_whole() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let groups = format!(
        "{HEAD}groups:\n  a:\n    targets: [{{address: {}}}]\n  b:\n    targets: [{{address: {}}}]\n",
        a.addr, b.addr
    );
    let api = "  - name: api\n    match: {hosts: [api.test]}\n    split: {a: 1}\n";
    let web = "  - name: web\n    match: {hosts: [www.test]}\n    split: {b: 1}\n";
    let w = Watched::start(&format!("{groups}routes:\n{api}{web}")).await;
    let addr = w.running.proxy_addr;
    let pinned = get_host(addr, "api.test", "/", None).await;
    let pin = pinned.set_cookie("switchyard_api").unwrap_or_default();
    assert_eq!(get_host(addr, "www.test", "/", None).await.upstream(), "b");
    assert_eq!(
        metric(
            &w.running,
            "switchyard_route_requests_total{class=\"2xx\",group=\"b\",route=\"web\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &w.running,
            "switchyard_group_weight{group=\"b\",route=\"web\"}"
        )
        .await,
        1.0
    );

    // web removed, api renamed to api2 and moved after a new route img.
    let img =
        "  - name: img\n    match: {hosts: [api.test], path_prefix: /img}\n    split: {b: 1}\n";
    let api2 = api.replace("name: api", "name: api2");
    write_by_rename(&w.path, &format!("{groups}routes:\n{img}{api2}"));
    assert!(wait_generation(w.running.admin_addr, 2, std::time::Duration::from_secs(10)).await);
    assert_eq!(
        get_host(addr, "www.test", "/", None).await.status,
        404,
        "web is gone"
    );
    assert_eq!(
        get_host(addr, "api.test", "/img/x.png", None)
            .await
            .upstream(),
        "b"
    );
    // The renamed route reads its own cookie: the old pin starts afresh.
    let again = get_host(
        addr,
        "api.test",
        "/",
        Some(&format!("switchyard_api={pin}")),
    )
    .await;
    assert_eq!(again.upstream(), "a");
    assert!(again.set_cookie("switchyard_api2").is_some());
    let status = status_at(w.running.admin_addr).await;
    let names: Vec<_> = status["routes"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["img", "api2"]);
    // The series of the routes that went are gone; the new ones are there.
    let scrape = scrape(&w.running).await;
    assert!(
        !scrape.contains("route=\"web\"") && !scrape.contains("route=\"api\""),
        "{scrape}"
    );
    assert!(
        scrape.contains("switchyard_group_weight{group=\"b\",route=\"img\"} 1"),
        "{scrape}"
    );

    // A reload with one bad route is refused whole: the routes in force stay.
    write_by_rename(
        &w.path,
        &format!("{groups}routes:\n{img}{api2}  - name: bad\n    split: {{nope: 1}}\n"),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let status = status_at(w.running.admin_addr).await;
        if status["config"]["reload"]["last_result"] == "invalid" {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad reload was never tried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(status["config"]["generation"].as_u64(), Some(2));
    let error = status["config"]["reload"]["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("routes[2].split.nope"), "{error}");
    assert_eq!(
        get_host(addr, "api.test", "/img/y", None).await.upstream(),
        "b"
    );
}

#[tokio::test]
async fn a_failing_group_fails_over_within_its_route_never_to_another_apps_group() {
    let (a1, a2, web) = (
        Upstream::start("a1").await,
        Upstream::start("a2").await,
        Upstream::start("web").await,
    );
    let yaml = format!(
        "{HEAD}health: {{outlier: {{consecutive_failures: 1}}}}\n\
         groups:\n  a1:\n    targets: [{{address: {}}}]\n  a2:\n    targets: [{{address: {}}}]\n  web:\n    targets: [{{address: {}}}]\n\
         routes:\n  - name: api\n    match: {{hosts: [api.test]}}\n    split: {{a1: 1, a2: 1}}\n  - name: solo\n    match: {{hosts: [solo.test]}}\n    split: {{a1: 1}}\n  - name: www\n    split: {{web: 1}}\n",
        a1.addr, a2.addr, web.addr
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr;
    // A client of the api route pinned to a1 (the split is 50/50).
    let mut pinned = get_host(addr, "api.test", "/", None).await;
    for _ in 0..100 {
        if pinned.upstream() == "a1" {
            break;
        }
        pinned = get_host(addr, "api.test", "/", None).await;
    }
    assert_eq!(pinned.upstream(), "a1");
    let pin = pinned.set_cookie("switchyard_api").unwrap_or_default();
    a1.kill();
    // The failure ejects a1's one target.
    assert_eq!(get_host(addr, "solo.test", "/", None).await.status, 502);
    // The api route's clients are served by its other group, a2 (which
    // takes new clients: a weight-0 group would stand in for nobody) ...
    let moved = get_host(
        addr,
        "api.test",
        "/",
        Some(&format!("switchyard_api={pin}")),
    )
    .await;
    assert_eq!(moved.upstream(), "a2");
    // ... and a route with no other group answers 503: another app's group
    // (web) is never a stand-in.
    let web_hits = web.hits();
    let solo = get_host(addr, "solo.test", "/", None).await;
    assert_eq!(solo.status, 503);
    assert_eq!(web.hits(), web_hits);
}

#[tokio::test]
async fn a_session_store_serves_every_route_each_with_its_own_session_cookie() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let yaml = format!(
        "{HEAD}  store: {{type: memory}}\ngroups:\n  a:\n    targets: [{{address: {}}}]\n  b:\n    targets: [{{address: {}}}]\n  c:\n    targets: [{{address: {}}}]\n\
         routes:\n  - name: api\n    match: {{hosts: [api.test]}}\n    split: {{a: 1, b: 1}}\n  - name: web\n    match: {{hosts: [www.test]}}\n    split: {{c: 1}}\n",
        a.addr, b.addr, c.addr
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr;
    let first = get_host(addr, "api.test", "/", None).await;
    let session = first
        .set_cookie("switchyard_api")
        .unwrap_or_else(|| panic!("no session"));
    let record = get(
        &h1_client(),
        &format!("http://{}/sessions/{session}", proxy.admin_addr),
        None,
    )
    .await;
    let rec: serde_json::Value = ok(serde_json::from_slice(&record.body), "session json");
    assert_eq!(rec["group"], first.upstream(), "{rec}");
    for _ in 0..5 {
        let again = get_host(
            addr,
            "api.test",
            "/",
            Some(&format!("switchyard_api={session}")),
        )
        .await;
        assert_eq!(again.upstream(), first.upstream());
        assert_eq!(again.set_cookie("switchyard_api"), None);
    }
    let web = get_host(addr, "www.test", "/", None).await;
    assert_eq!(web.upstream(), "c");
    let web_session = web
        .set_cookie("switchyard_web")
        .unwrap_or_else(|| panic!("no web session"));
    assert_ne!(web_session, session);
    // The api route's session is nothing to the web route.
    let crossed = get_host(
        addr,
        "www.test",
        "/",
        Some(&format!("switchyard_web={session}")),
    )
    .await;
    assert!(
        crossed
            .set_cookie("switchyard_web")
            .is_some_and(|v| v != session)
    );
}
