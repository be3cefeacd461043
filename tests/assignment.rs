//! Assignment end to end: weighted split of new clients, stickiness, tampered
//! and expired cookies, and the metrics that count them.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use switchyard::assign::{CookieCodec, Pin};
use switchyard::config::{CookieKey, decode_key};

/// Sends `n` cookie-less requests over `conc` connections; counts by upstream.
async fn new_clients(url: &str, n: usize, conc: usize) -> HashMap<String, usize> {
    let url = Arc::new(url.to_owned());
    let mut tasks = Vec::new();
    for w in 0..conc {
        let url = Arc::clone(&url);
        tasks.push(tokio::spawn(async move {
            let client = h1_client();
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in (w..n).step_by(conc) {
                let got = get(&client, &url, None).await;
                assert_eq!(got.status, 200);
                assert!(
                    got.set_cookie("switchyard").is_some(),
                    "a new client gets a cookie"
                );
                *counts.entry(got.upstream().to_owned()).or_default() += 1;
            }
            counts
        }));
    }
    let mut total = HashMap::new();
    for t in tasks {
        for (k, v) in ok(t.await, "join") {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_new_clients_follow_90_10() {
    let (_b, _g, proxy) = blue_green(90, 10, "").await;
    let counts = new_clients(&format!("http://{}/", proxy.proxy_addr), 10_000, 8).await;
    let green = *counts.get("green").unwrap_or(&0) as f64 / 100.0;
    assert!(
        (8.5..=11.5).contains(&green),
        "green got {green}% of new clients: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 10_000);
    // Every one of them is counted as a new assignment, by group.
    let new_blue = metric(
        &proxy,
        r#"switchyard_assignments_total{group="blue",reason="new",route="default"}"#,
    )
    .await;
    let new_green = metric(
        &proxy,
        r#"switchyard_assignments_total{group="green",reason="new",route="default"}"#,
    )
    .await;
    assert_eq!(new_blue as usize, counts["blue"]);
    assert_eq!(new_green as usize, counts["green"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_or_nothing_weights_are_exact() {
    let (b, g) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    for (wb, wg, only) in [(0, 100, "green"), (100, 0, "blue")] {
        let proxy = start_proxy(&config_yaml(
            &[("blue", wb, &[&b]), ("green", wg, &[&g])],
            "",
        ))
        .await;
        let counts = new_clients(&format!("http://{}/", proxy.proxy_addr), 2_000, 4).await;
        assert_eq!(counts.get(only), Some(&2_000), "{wb}/{wg}: {counts:?}");
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_its_cookie_stays_put_for_200_requests() {
    let blue = [
        Upstream::start("blue-1").await,
        Upstream::start("blue-2").await,
    ];
    let green = [
        Upstream::start("green-1").await,
        Upstream::start("green-2").await,
    ];
    let proxy = start_proxy(&config_yaml(
        &[
            ("blue", 50, &[&blue[0], &blue[1]]),
            ("green", 50, &[&green[0], &green[1]]),
        ],
        "",
    ))
    .await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let client = h1_client();
    for _ in 0..10 {
        let first = get(&client, &url, None).await;
        let cookie = first
            .set_cookie("switchyard")
            .unwrap_or_else(|| panic!("no cookie"));
        let header = format!("other=1; switchyard={cookie}");
        // An older copy of the cookie in front (another Path) does not unpin it.
        let header = format!("switchyard=v1.stale.copy; {header}");
        for i in 0..200 {
            let got = get(&client, &url, Some(&header)).await;
            assert_eq!(got.status, 200);
            assert_eq!(got.upstream(), first.upstream(), "request {i} moved");
            assert!(
                got.set_cookie("switchyard").is_none(),
                "no Set-Cookie on a sticky hit"
            );
        }
    }
    let mut total = 0.0;
    for g in ["blue", "green"] {
        total += metric(
            &proxy,
            &format!(
                r#"switchyard_assignments_total{{group="{g}",reason="sticky",route="default"}}"#
            ),
        )
        .await;
    }
    assert_eq!(total, 2_000.0, "every sticky hit is counted");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_attributes_and_max_age_match_the_ttl() {
    let b = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(&[("blue", 1, &[&b])], "")).await;
    let got = get(&h1_client(), &format!("http://{}/", proxy.proxy_addr), None).await;
    let sc = got.headers["set-cookie"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(sc.starts_with("switchyard=v1."), "{sc}");
    for attr in ["Max-Age=3600", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(sc.contains(attr), "{attr} missing from {sc}");
    }
    assert!(
        !sc.contains("Secure"),
        "no Secure on a plain HTTP listener: {sc}"
    );
    assert!(sc.len() < 300, "cookie is {} bytes", sc.len());
    proxy.shutdown().await;
}

fn tampered_values(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = v.as_bytes();
    for i in 0..bytes.len() {
        // One substitution per position, always to another base64url character
        // (or '.') so the change is as subtle as it gets.
        let c = bytes[i];
        let r = match c {
            b'A' => b'B',
            b'.' => b'A',
            _ => b'A',
        };
        let mut b = bytes.to_vec();
        b[i] = r;
        out.push(String::from_utf8(b).unwrap_or_default());
    }
    for cut in [0, 1, 3, 10, v.len() / 2, v.len() - 10, v.len() - 1] {
        out.push(v[..cut].to_owned());
    }
    out.push(format!("{v}A"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampered_cookie_is_a_fresh_assignment_never_an_error() {
    let (_b, _g, proxy) = blue_green(50, 50, "").await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let client = h1_client();
    let cookie = get(&client, &url, None)
        .await
        .set_cookie("switchyard")
        .unwrap_or_else(|| panic!("no cookie"));
    let values = tampered_values(&cookie);
    for v in &values {
        let got = get(&client, &url, Some(&format!("switchyard={v}"))).await;
        assert_eq!(
            got.status, 200,
            "tampered value {v} answered {}",
            got.status
        );
        let fresh = got
            .set_cookie("switchyard")
            .unwrap_or_else(|| panic!("{v}: no fresh cookie"));
        assert_ne!(&fresh, &cookie);
    }
    // A cookie signed with another key of the right shape.
    let other = CookieCodec::with_binding(
        &[ok(CookieKey::try_new(vec![9; 32]), "key")],
        "switchyard",
        "",
        "/",
        None,
    );
    let pin = Pin::new([1; 16], "green", 0, 1, u32::MAX).unwrap_or_else(|| panic!("pin"));
    let forged = other.encode(&pin);
    let got = get(&client, &url, Some(&format!("switchyard={forged}"))).await;
    assert_eq!(got.status, 200);
    assert!(got.set_cookie("switchyard").is_some());

    let invalid: f64 = {
        let mut t = 0.0;
        for g in ["blue", "green"] {
            t += metric(
                &proxy,
                &format!(r#"switchyard_assignments_total{{group="{g}",reason="invalid",route="default"}}"#),
            )
            .await;
        }
        t
    };
    assert_eq!(invalid as usize, values.len() + 1);
    let unknown_key = metric(
        &proxy,
        r#"switchyard_cookie_rejected_total{reason="unknown_key"}"#,
    )
    .await;
    assert!(unknown_key >= 1.0);
    let bad_sig = metric(
        &proxy,
        r#"switchyard_cookie_rejected_total{reason="bad_signature"}"#,
    )
    .await;
    let malformed = metric(
        &proxy,
        r#"switchyard_cookie_rejected_total{reason="malformed"}"#,
    )
    .await;
    assert!(
        bad_sig > 0.0 && malformed > 0.0,
        "sig {bad_sig} malformed {malformed}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cookie_is_reassigned_with_its_client_id() {
    let (_b, _g, proxy) = blue_green(50, 50, "").await;
    let url = format!("http://{}/", proxy.proxy_addr);
    let client = h1_client();
    // The test holds the key, so it can write an authentic cookie that expired a
    // second ago: the clock is injected through the cookie, no sleeping.
    let key = ok(CookieKey::try_new(ok(decode_key(TEST_KEY), "b64")), "key");
    let codec = CookieCodec::with_binding(&[key], "switchyard", "", "/", None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let mut seen_groups = std::collections::HashSet::new();
    for i in 0..40u8 {
        let id = [i; 16];
        let fresh = Pin::new(id, "blue", 0, now - 100, now + 100).unwrap_or_else(|| panic!());
        let stale = Pin::new(id, "blue", 0, now - 100, now - 1).unwrap_or_else(|| panic!());
        let sticky = get(
            &client,
            &url,
            Some(&format!("switchyard={}", codec.encode(&fresh))),
        )
        .await;
        assert_eq!(sticky.upstream(), "blue", "an unexpired pin holds");
        let got = get(
            &client,
            &url,
            Some(&format!("switchyard={}", codec.encode(&stale))),
        )
        .await;
        assert_eq!(got.status, 200);
        let reissued = got
            .set_cookie("switchyard")
            .unwrap_or_else(|| panic!("no new cookie"));
        let pin = ok(codec.verify(&reissued), "reissued cookie verifies");
        assert_eq!(pin.client_id, id, "re-bucketed with the same client id");
        assert!(pin.expires_at >= now + 3600 - 5);
        // Same id and same weights: the same group every time it is re-bucketed.
        let again = get(
            &client,
            &url,
            Some(&format!("switchyard={}", codec.encode(&stale))),
        )
        .await;
        assert_eq!(again.upstream(), got.upstream());
        seen_groups.insert(got.upstream().to_owned());
    }
    assert_eq!(
        seen_groups.len(),
        2,
        "expired clients are bucketed, not all sent to their old group"
    );
    let expired = metric(
        &proxy,
        r#"switchyard_cookie_rejected_total{reason="expired"}"#,
    )
    .await;
    assert_eq!(expired, 80.0);
    proxy.shutdown().await;
}
