//! Server-side sessions (`sticky.store`): the memory store, a real Redis, three
//! replicas sharing it, Redis killed and restarted mid-run, a read-only Redis
//! (a failed-over primary), tampered session cookies, and the admin API.

mod common;

use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use common::redis_server::RedisServer;
use common::*;
use http_body_util::Full;
use switchyard::app::Running;

fn store_yaml(groups: &[(&str, u32, &[&Upstream])], store: &str, extra: &str) -> String {
    config_yaml(groups, extra).replace(
        "  keys: [env:TEST_KEY]\n",
        &format!("  keys: [env:TEST_KEY]\n  store:\n{store}"),
    )
}

fn redis_store(r: &RedisServer, cache_ttl: &str) -> String {
    format!(
        "    type: redis\n    url: {}\n    key_prefix: \"t:\"\n    cache_ttl: {cache_ttl}\n",
        r.url()
    )
}

/// Blue and green (1:1) behind a proxy whose sessions are in `r`, cached
/// for `cache_ttl`.
async fn blue_green_on(r: &RedisServer, cache_ttl: &str) -> (Upstream, Upstream, Running) {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(&store_yaml(
        &[("blue", 1, &[&b]), ("green", 1, &[&g])],
        &redis_store(r, cache_ttl),
        "",
    ))
    .await;
    (b, g, proxy)
}

/// The session cookie's value from a response (`switchyard=...`).
fn session_of(got: &Got) -> String {
    got.set_cookie("switchyard")
        .unwrap_or_else(|| panic!("no session cookie: {:?}", got.headers))
}

async fn admin(proxy: &Running, method: &str, path: &str, body: Option<&str>) -> Got {
    let req = ok(
        http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", proxy.admin_addr))
            .body(Full::from(body.unwrap_or("").to_owned())),
        "admin request",
    );
    send(&h1_client(), req).await
}

/// A proxy whose config reads real files (tokens, CA): the system key source.
async fn start_reading_files(yaml: &str) -> Running {
    let cfg = switchyard::config::load_str(
        yaml,
        "t.yaml",
        &switchyard::config::SystemKeys,
        switchyard::config::ValidateOptions {
            ephemeral_key_if_missing: true,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    ok(
        switchyard::app::start(cfg, String::new(), None).await,
        "start",
    )
}

async fn session_json(proxy: &Running, cookie: &str) -> serde_json::Value {
    let got = admin(proxy, "GET", &format!("/sessions/{cookie}"), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    ok(serde_json::from_slice(&got.body), "session json")
}

#[tokio::test]
async fn memory_store_keeps_the_assignment_server_side() {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(&store_yaml(
        &[("blue", 50, &[&b]), ("green", 50, &[&g])],
        "    type: memory\n",
        "",
    ))
    .await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let first = get(&c, &url, None).await;
    let session = session_of(&first);
    let rec = session_json(&proxy, &session).await;
    assert_eq!(
        rec["group"],
        first.upstream(),
        "the record names the group served"
    );
    assert!(rec["target"].is_string(), "and the target: {rec}");
    let cookie = format!("switchyard={session}");
    for _ in 0..20 {
        let again = get(&c, &url, Some(&cookie)).await;
        assert_eq!(again.upstream(), first.upstream());
        assert!(
            again.set_cookie("switchyard").is_none(),
            "no new cookie when sticky"
        );
    }
    // The cookie holds no routing data: the group name is not in it, in any encoding.
    assert!(!session.contains("blue") && !session.contains("green"));
    let payload = session.split('.').nth(1).unwrap_or("");
    let mut raw = [0u8; 64];
    let n = base64::Engine::decode_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload,
        &mut raw,
    )
    .unwrap_or(0);
    assert_eq!(
        n, 33,
        "kid, id, times, target 0 and an empty group: {payload}"
    );
    assert!(!String::from_utf8_lossy(&raw[..n]).contains(first.upstream()));
}

#[tokio::test]
async fn redis_records_have_the_ttl_and_expired_ones_are_reassigned() {
    let r = RedisServer::start().await;
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(
        &store_yaml(
            &[("blue", 1, &[&b]), ("green", 1, &[&g])],
            &redis_store(&r, "5s"),
            "",
        )
        .replace("  ttl: 1h\n", "  ttl: 3s\n"),
    )
    .await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let first = get(&c, &url, None).await;
    let session = session_of(&first);
    let rec = session_json(&proxy, &session).await;
    let key = format!("t:{}", rec["id"].as_str().unwrap_or(""));
    let mut conn = r.conn().await;
    let ttl: i64 = ok(conn.ttl(&key).await, "TTL");
    assert!(
        (2..=3).contains(&ttl),
        "SET .. EX with the sticky TTL: {ttl}"
    );
    let stored: String = ok(conn.get(&key).await, "GET");
    let stored: serde_json::Value = ok(serde_json::from_str(&stored), "record json");
    assert_eq!(stored["group"], first.upstream());
    let cookie = format!("switchyard={session}");
    for _ in 0..10 {
        assert_eq!(
            get(&c, &url, Some(&cookie)).await.upstream(),
            first.upstream()
        );
    }
    // Past the TTL the record (and the session) are gone: a new session.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let exists: bool = ok(conn.exists(&key).await, "EXISTS");
    assert!(!exists, "Redis expired the record");
    let later = get(&c, &url, Some(&cookie)).await;
    assert_eq!(later.status, 200);
    assert!(
        later.set_cookie("switchyard").is_some(),
        "a new session cookie"
    );
    let expired = metric(
        &proxy,
        "switchyard_assignments_total{group=\"blue\",reason=\"expired\",route=\"default\"}",
    )
    .await
        + metric(
            &proxy,
            "switchyard_assignments_total{group=\"green\",reason=\"expired\",route=\"default\"}",
        )
        .await;
    assert_eq!(expired, 1.0);
}

#[tokio::test]
async fn a_deleted_record_is_reassigned_by_the_session_id_and_rewritten() {
    let r = RedisServer::start().await;
    let (_blue, _green, proxy) = blue_green_on(&r, "100ms").await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let first = get(&c, &url, None).await;
    let session = session_of(&first);
    let id = session_json(&proxy, &session).await["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let mut conn = r.conn().await;
    let _: () = ok(
        conn.flushall().await,
        "FLUSHALL (a Redis that lost its data)",
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let again = get(&c, &url, Some(&format!("switchyard={session}"))).await;
    assert_eq!(
        again.upstream(),
        first.upstream(),
        "the session id's bucket gives the same group"
    );
    assert!(
        again.set_cookie("switchyard").is_none(),
        "the session is kept"
    );
    let exists: bool = ok(conn.exists(format!("t:{id}")).await, "EXISTS");
    assert!(exists, "the record is written again");
}

#[tokio::test]
async fn three_replicas_share_sessions_and_an_admin_pin_reaches_all() {
    let r = RedisServer::start().await;
    let (b1, b2) = (
        Upstream::start("blue-1").await,
        Upstream::start("blue-2").await,
    );
    let (g1, g2) = (
        Upstream::start("green-1").await,
        Upstream::start("green-2").await,
    );
    let yaml = store_yaml(
        &[("blue", 50, &[&b1, &b2]), ("green", 50, &[&g1, &g2])],
        &redis_store(&r, "300ms"),
        "",
    );
    let replicas = [
        start_proxy(&yaml).await,
        start_proxy(&yaml).await,
        start_proxy(&yaml).await,
    ];
    let c = h1_client();
    let first = get(&c, &format!("http://{}/", replicas[0].proxy_addr), None).await;
    let session = session_of(&first);
    let cookie = format!("switchyard={session}");
    for i in 0..300 {
        let p = &replicas[i % 3];
        let got = get(&c, &format!("http://{}/", p.proxy_addr), Some(&cookie)).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.upstream(),
            first.upstream(),
            "request {i} on replica {}: same group and target",
            i % 3
        );
    }
    // Move the client to the other group through one replica.
    let other = if first.upstream().starts_with("blue") {
        "green"
    } else {
        "blue"
    };
    let put = admin(
        &replicas[1],
        "PUT",
        &format!("/sessions/{session}"),
        Some(&format!("{{\"group\": \"{other}\"}}")),
    )
    .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut targets = std::collections::HashSet::new();
    for i in 0..30 {
        let p = &replicas[i % 3];
        let got = get(&c, &format!("http://{}/", p.proxy_addr), Some(&cookie)).await;
        assert!(
            got.upstream().starts_with(other),
            "replica {} serves the pinned group {other}, got {}",
            i % 3,
            got.upstream()
        );
        targets.insert(got.upstream().to_owned());
    }
    assert_eq!(
        targets.len(),
        1,
        "and one target in it, recorded: {targets:?}"
    );
    // Revoked: the next request starts a new session.
    let del = admin(
        &replicas[2],
        "DELETE",
        &format!("/sessions/{session}"),
        None,
    )
    .await;
    assert_eq!(del.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = get(
        &c,
        &format!("http://{}/", replicas[0].proxy_addr),
        Some(&cookie),
    )
    .await;
    let fresh = session_of(&after);
    assert_ne!(fresh, session);
    assert_eq!(
        admin(&replicas[0], "GET", &format!("/sessions/{session}"), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn redis_down_fails_no_request_and_recovery_needs_no_restart() {
    let mut r = RedisServer::start().await;
    let (_blue, _green, proxy) = blue_green_on(&r, "200ms").await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    // Twenty clients with sessions.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let got = get(&c, &url, None).await;
        clients.push((
            format!("switchyard={}", session_of(&got)),
            got.upstream().to_owned(),
        ));
    }
    r.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut served = 0;
    for round in 0..5 {
        for (cookie, group) in &clients {
            let got = get(&c, &url, Some(cookie)).await;
            assert_eq!(
                got.status, 200,
                "round {round}: no request fails while Redis is down"
            );
            assert_eq!(
                &got.upstream(),
                group,
                "bucketing by the session id keeps the group"
            );
            served += 1;
        }
        let fresh = get(&c, &url, None).await;
        assert_eq!(fresh.status, 200, "a new client is served too");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the breaker spares each request the Redis timeout: {:?} for {served}",
        started.elapsed()
    );
    let fallback = metric(
        &proxy,
        "switchyard_assignments_total{group=\"blue\",reason=\"store_unavailable\",route=\"default\"}",
    )
    .await
        + metric(
            &proxy,
            "switchyard_assignments_total{group=\"green\",reason=\"store_unavailable\",route=\"default\"}",
        )
        .await;
    assert!(fallback >= 20.0, "fallback counted: {fallback}");
    assert_eq!(metric(&proxy, "switchyard_store_up").await, 0.0);

    r.restart().await;
    // The proxy finds Redis again by itself: new sessions are written.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(&c, &url, None).await;
        assert_eq!(got.status, 200);
        let mut conn = r.conn().await;
        let n: u64 = ok(redis::cmd("DBSIZE").query_async(&mut conn).await, "DBSIZE");
        if n > 0 && metric(&proxy, "switchyard_store_up").await == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "store use did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Old clients keep their group, and get their records back.
    for (cookie, group) in &clients {
        assert_eq!(&get(&c, &url, Some(cookie)).await.upstream(), group);
    }
}

#[tokio::test]
async fn a_read_only_redis_after_failover_fails_no_request_and_writes_resume() {
    let r = RedisServer::start().await;
    let primary = RedisServer::start().await;
    let (_blue, _green, proxy) = blue_green_on(&r, "100ms").await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let mut conn = r.conn().await;
    // The server the proxy talks to becomes a replica: writes answer READONLY.
    let _: () = ok(
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port)
            .query_async(&mut conn)
            .await,
        "REPLICAOF",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        assert_eq!(get(&c, &url, None).await.status, 200);
    }
    let errors = metric(
        &proxy,
        "switchyard_store_errors_total{kind=\"error\",op=\"set\"}",
    )
    .await;
    assert!(errors >= 1.0, "READONLY writes are counted: {errors}");
    let _: () = ok(
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut conn)
            .await,
        "REPLICAOF NO ONE",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(&c, &url, None).await;
        assert_eq!(got.status, 200);
        let n: u64 = ok(redis::cmd("DBSIZE").query_async(&mut conn).await, "DBSIZE");
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_tampered_session_cookie_gets_a_fresh_session_never_another_record() {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(&store_yaml(
        &[("blue", 1, &[&b]), ("green", 1, &[&g])],
        "    type: memory\n",
        "",
    ))
    .await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let victim = session_of(&get(&c, &url, None).await);
    let victim_id = session_json(&proxy, &victim).await["id"].clone();
    // Flip characters of the id part: the signature no longer matches.
    let mut forged = victim.clone().into_bytes();
    for c in &mut forged[12..18] {
        *c = if *c == b'A' { b'B' } else { b'A' };
    }
    let forged = String::from_utf8_lossy(&forged).into_owned();
    for value in [forged.as_str(), "v1.garbage.garbage", "not-a-cookie"] {
        let got = get(&c, &url, Some(&format!("switchyard={value}"))).await;
        assert_eq!(got.status, 200, "a bad cookie is never a 500");
        let fresh = session_of(&got);
        assert_ne!(fresh, victim);
        assert_ne!(session_json(&proxy, &fresh).await["id"], victim_id);
    }
    assert!(
        metric(
            &proxy,
            "switchyard_cookie_rejected_total{reason=\"bad_signature\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_is_absent_in_cookie_mode() {
    let (b, g) = blue_and_green().await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let token = dir.path().join("token");
    ok(std::fs::write(&token, "s3cret-token\n"), "token file");
    let cfg = store_yaml(
        &[("blue", 1, &[&b]), ("green", 1, &[&g])],
        &format!(
            "    type: memory\n    admin_token: file:{}\n",
            token.display()
        ),
        "",
    );
    let proxy = start_reading_files(&cfg).await;
    let session =
        session_of(&get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await);
    let path = format!("http://{}/sessions/{session}", proxy.admin_addr);
    let call = |method: &'static str, token: Option<&'static str>, body: &'static str| {
        let mut r = http::Request::builder().method(method).uri(&path);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let req = ok(r.body(Full::from(body)), "req");
        async move { send(&h1_client(), req).await }
    };
    assert_eq!(call("GET", None, "").await.status, 401);
    assert_eq!(call("GET", Some("nope"), "").await.status, 401);
    let right = call("GET", Some("s3cret-token"), "").await;
    assert_eq!(right.status, 200, "{:?}", right.body);
    let put_bad = call("PUT", Some("s3cret-token"), "{\"group\": \"purple\"}").await;
    assert_eq!(put_bad.status, 422);

    let (_b, _g, cookie_mode) = blue_green(1, 1, "").await;
    assert_eq!(
        admin(
            &cookie_mode,
            "GET",
            "/sessions/AAAAAAAAAAAAAAAAAAAAAA",
            None
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn a_tls_redis_is_reached_with_rediss_and_a_ca_file() {
    switchyard::tls::install_default_provider();
    let ca = common::pki::Ca::new("redis test CA");
    let r = RedisServer::start_tls(&ca.leaf(&["127.0.0.1"])).await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let ca_file = dir.path().join("ca.pem");
    ok(std::fs::write(&ca_file, ca.pem()), "write CA");
    let (b, g) = blue_and_green().await;
    let yaml = store_yaml(
        &[("blue", 1, &[&b]), ("green", 1, &[&g])],
        &format!(
            // The first write also makes the TLS connection: on a loaded
            // two-core CI box that can take longer than the 50 ms default.
            "    type: redis\n    url: {}\n    ca_file: {}\n    timeout: 2s\n",
            r.url(),
            ca_file.display()
        ),
        "",
    );
    assert!(yaml.contains("rediss://"));
    let proxy = start_reading_files(&yaml).await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let first = get(&c, &url, None).await;
    let session = session_of(&first);
    // The record went over TLS: the admin API reads it back from Redis.
    let rec = session_json(&proxy, &session).await;
    assert_eq!(rec["group"], first.upstream());
    assert_eq!(metric(&proxy, "switchyard_store_up").await, 1.0);
    assert_eq!(
        metric(
            &proxy,
            "switchyard_store_errors_total{kind=\"error\",op=\"set\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn an_expired_memory_record_is_reassigned() {
    let (b, g) = blue_and_green().await;
    let proxy = start_proxy(
        &store_yaml(
            &[("blue", 1, &[&b]), ("green", 1, &[&g])],
            "    type: memory\n",
            "",
        )
        .replace("  ttl: 1h\n", "  ttl: 2s\n"),
    )
    .await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let session = session_of(&get(&c, &url, None).await);
    let cookie = format!("switchyard={session}");
    assert!(
        get(&c, &url, Some(&cookie))
            .await
            .set_cookie("switchyard")
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        admin(&proxy, "GET", &format!("/sessions/{session}"), None)
            .await
            .status,
        404,
        "the record is gone once expired"
    );
    let later = get(&c, &url, Some(&cookie)).await;
    assert!(later.set_cookie("switchyard").is_some(), "a new session");
    let expired = metric(
        &proxy,
        "switchyard_assignments_total{group=\"blue\",reason=\"expired\",route=\"default\"}",
    )
    .await
        + metric(
            &proxy,
            "switchyard_assignments_total{group=\"green\",reason=\"expired\",route=\"default\"}",
        )
        .await;
    assert_eq!(expired, 1.0);
}

/// Issue 24: a PUT after a DELETE brought the revoked session back, and its
/// client (who kept the cookie) was served on it. Revoked stays revoked.
#[tokio::test]
async fn a_revoked_session_cannot_be_pinned_back() {
    let r = RedisServer::start().await;
    let (_blue, _green, proxy) = blue_green_on(&r, "1ms").await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let c = h1_client();
    let session = session_of(&get(&c, &url, None).await);
    let path = format!("/sessions/{session}");
    assert_eq!(admin(&proxy, "DELETE", &path, None).await.status, 200);
    let put = admin(&proxy, "PUT", &path, Some(r#"{"group":"green"}"#)).await;
    assert_eq!(put.status, 409, "{:?}", put.body);
    assert_eq!(admin(&proxy, "GET", &path, None).await.status, 404);
    let again = get(&c, &url, Some(&format!("switchyard={session}"))).await;
    let fresh = session_of(&again);
    assert_ne!(fresh, session, "the client starts a new session");
    // The new session can be pinned.
    let pinned = admin(
        &proxy,
        "PUT",
        &format!("/sessions/{fresh}"),
        Some(r#"{"group":"green"}"#),
    )
    .await;
    assert_eq!(pinned.status, 200, "{:?}", pinned.body);
}

/// Polls `switchyard_store_up` until it is `want` (true) or `within` passes.
async fn store_up_becomes(proxy: &Running, want: f64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if metric(proxy, "switchyard_store_up").await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Issue 24: `switchyard_store_up` followed Redis only when a request
/// touched the store, so a quiet proxy kept showing (and alerting) a Redis
/// that had come back. A background probe follows it both ways.
#[tokio::test]
async fn a_quiet_proxy_sees_redis_go_and_come_back() {
    let mut r = RedisServer::start().await;
    let (_blue, _green, proxy) = blue_green_on(&r, "200ms").await;
    assert_eq!(metric(&proxy, "switchyard_store_up").await, 1.0);
    r.kill();
    assert!(
        store_up_becomes(&proxy, 0.0, Duration::from_secs(9)).await,
        "Redis down not seen"
    );
    r.restart().await;
    assert!(
        store_up_becomes(&proxy, 1.0, Duration::from_secs(5)).await,
        "Redis back not seen"
    );
    // And the first request after it uses Redis at once (no breaker left).
    let got = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    assert_eq!(got.status, 200);
    let mut conn = r.conn().await;
    let n: u64 = ok(redis::cmd("DBSIZE").query_async(&mut conn).await, "DBSIZE");
    assert_eq!(n, 1, "the new session was written to Redis");
}
