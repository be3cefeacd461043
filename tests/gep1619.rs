//! Gateway API session persistence (GEP-1619), case by case, on one route
//! of a `routes:` config against real upstreams:
//!
//! | GEP-1619 case                                        | test |
//! | ---------------------------------------------------- | ---- |
//! | a new session follows the weights (70/30)            | `new_sessions_follow_the_split_then_stay_whatever_the_weights` |
//! | an existing session stays when the weights change    | same |
//! | weight 0: existing sessions kept, no new ones        | `weight_zero_keeps_its_sessions_and_takes_no_new_ones` |
//! | a backend leaving the rule: its sessions re-pinned   | `a_drained_group_re_pins_its_sessions_at_their_next_request` |
//! | `type: Header`: the session in a request header      | `a_header_session_travels_in_its_header_and_never_upstream` |
//! | `lifetimeType: Session`: no Max-Age/Expires          | `a_session_cookie_has_no_max_age_and_still_expires_with_its_ttl` |

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::Request;
use http_body_util::Full;

const HEAD: &str =
    "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n";

/// A config of groups blue and green and one route `app` over them.
fn yaml(blue: &Upstream, green: &Upstream, route: &str) -> String {
    format!(
        "{HEAD}groups:\n  blue:\n    targets: [{{address: {}}}]\n  green:\n    targets: [{{address: {}}}]\nroutes:\n  - name: app\n    match: {{hosts: [app.test]}}\n{route}",
        blue.addr, green.addr
    )
}

/// Blue and green upstreams, and a watched proxy whose route `app` is `route`.
async fn start(route: &str) -> (Upstream, Upstream, Watched) {
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    let w = Watched::start(&yaml(&blue, &green, route)).await;
    (blue, green, w)
}

async fn get_app(proxy: SocketAddr, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(format!("http://{proxy}/")).header("host", "app.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&h1_client(), ok(b.body(Full::default()), "request")).await
}

const COOKIE: &str = "switchyard_app";

/// `n` new clients: each one's cookie value and the group it landed on.
async fn new_clients(proxy: SocketAddr, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let got = get_app(proxy, &[]).await;
        assert_eq!(got.status, 200);
        let pin = got.set_cookie(COOKIE).unwrap_or_else(|| panic!("no pin"));
        out.push((pin, got.upstream().to_owned()));
    }
    out
}

async fn again(proxy: SocketAddr, pin: &str) -> Got {
    get_app(proxy, &[("cookie", &format!("{COOKIE}={pin}"))]).await
}

async fn reload(w: &Watched, text: &str, generation: u64) {
    write_by_rename(&w.path, text);
    assert!(
        wait_generation(w.running.admin_addr, generation, Duration::from_secs(10)).await,
        "reload {generation} not applied"
    );
}

fn count<'a>(groups: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for g in groups {
        *m.entry(g.to_owned()).or_insert(0) += 1;
    }
    m
}

/// New clients per split check: with a 5-sigma band, a correct split
/// fails it about once in 1.7 million runs (two-sided normal tail), and a
/// split 8 points off is caught.
const SAMPLE: usize = 1000;

/// Whether `k` of `n` lies within 5 standard deviations of Binomial(n, p)'s mean.
fn within_binomial(k: usize, n: usize, p: f64) -> bool {
    let (n, k) = (n as f64, k as f64);
    let sd = (n * p * (1.0 - p)).sqrt();
    (k - n * p).abs() <= 5.0 * sd
}

#[tokio::test]
async fn new_sessions_follow_the_split_then_stay_whatever_the_weights() {
    let (blue, green, w) = start("    split: {blue: 70, green: 30}\n").await;
    let addr = w.running.proxy_addr;
    let clients = new_clients(addr, SAMPLE).await;
    let c = count(clients.iter().map(|(_, g)| g.as_str()));
    let greens = *c.get("green").unwrap_or(&0);
    assert!(
        within_binomial(greens, SAMPLE, 0.3),
        "green took {greens} of {SAMPLE}: {c:?}"
    );
    reload(
        &w,
        &yaml(&blue, &green, "    split: {blue: 30, green: 70}\n"),
        2,
    )
    .await;
    for (pin, group) in &clients {
        let got = again(addr, pin).await;
        assert_eq!(
            got.upstream(),
            group,
            "a session outlives the weights it was made under"
        );
        assert_eq!(got.set_cookie(COOKIE), None);
    }
    // New sessions follow the new weights.
    let c = count(
        new_clients(addr, SAMPLE)
            .await
            .iter()
            .map(|(_, g)| g.as_str()),
    );
    let greens = *c.get("green").unwrap_or(&0);
    assert!(
        within_binomial(greens, SAMPLE, 0.7),
        "green took {greens} of {SAMPLE}: {c:?}"
    );
}

#[tokio::test]
async fn weight_zero_keeps_its_sessions_and_takes_no_new_ones() {
    let (blue, green, w) = start("    split: {blue: 50, green: 50}\n").await;
    let addr = w.running.proxy_addr;
    let clients = new_clients(addr, 60).await;
    assert!(clients.iter().any(|(_, g)| g == "green"));
    reload(
        &w,
        &yaml(&blue, &green, "    split: {blue: 1, green: 0}\n"),
        2,
    )
    .await;
    for (pin, group) in &clients {
        assert_eq!(again(addr, pin).await.upstream(), group);
    }
    for (_, g) in new_clients(addr, 40).await {
        assert_eq!(g, "blue", "weight 0 takes no new session");
    }
}

#[tokio::test]
async fn a_drained_group_re_pins_its_sessions_at_their_next_request() {
    let (blue, green, w) = start("    split: {blue: 50, green: 50}\n").await;
    let addr = w.running.proxy_addr;
    let clients = new_clients(addr, 60).await;
    reload(
        &w,
        &yaml(
            &blue,
            &green,
            "    split: {blue: 50, green: 50}\n    drain: [green]\n",
        ),
        2,
    )
    .await;
    for (pin, group) in &clients {
        let got = again(addr, pin).await;
        assert_eq!(got.upstream(), "blue", "was on {group}");
        match got.set_cookie(COOKIE) {
            // Moved: a new pin, on which it stays.
            Some(moved) => {
                assert_eq!(group, "green");
                assert_eq!(again(addr, &moved).await.upstream(), "blue");
            }
            None => assert_eq!(group, "blue"),
        }
    }
    assert_eq!(
        metric(
            &w.running,
            "switchyard_assignments_total{group=\"blue\",reason=\"reassigned\",route=\"app\"}"
        )
        .await,
        clients.iter().filter(|(_, g)| g == "green").count() as f64
    );
}

#[tokio::test]
async fn a_header_session_travels_in_its_header_and_never_upstream() {
    let (blue, green, w) =
        start("    split: {blue: 50, green: 50}\n    sticky: {type: header}\n").await;
    let addr = w.running.proxy_addr;
    const HEADER: &str = "x-switchyard-pin-app";
    let mut groups = Vec::new();
    for _ in 0..40 {
        let got = get_app(addr, &[]).await;
        assert!(
            got.headers.get("set-cookie").is_none(),
            "no cookie for a header session"
        );
        let pin = got
            .headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {HEADER}"))
            .to_owned();
        groups.push((pin, got.upstream().to_owned()));
    }
    assert!(groups.iter().any(|(_, g)| g == "blue") && groups.iter().any(|(_, g)| g == "green"));
    for (pin, group) in &groups {
        let got = get_app(addr, &[(HEADER, pin)]).await;
        assert_eq!(got.upstream(), group);
        assert!(
            got.headers.get(HEADER).is_none(),
            "nothing new to hand back"
        );
    }
    // The pin as a cookie is nothing: a header session reads its header only.
    let (pin, _) = &groups[0];
    let got = get_app(addr, &[("cookie", &format!("{COOKIE}={pin}"))]).await;
    assert!(got.headers.get(HEADER).is_some(), "a new session");
    for up in [&blue, &green] {
        let seen = up.seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(
            seen.iter().all(|s| s.headers.get(HEADER).is_none()),
            "{HEADER} reached {}",
            up.name
        );
    }
}

#[tokio::test]
async fn a_session_cookie_has_no_max_age_and_still_expires_with_its_ttl() {
    let (_blue, _green, w) =
        start("    split: {blue: 1, green: 0}\n    sticky: {lifetime: session, ttl: 2s}\n").await;
    let addr = w.running.proxy_addr;
    let got = get_app(addr, &[]).await;
    let line = got
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(line.starts_with(&format!("{COOKIE}=")), "{line}");
    let lower = line.to_ascii_lowercase();
    assert!(
        !lower.contains("max-age") && !lower.contains("expires"),
        "{line}"
    );
    let pin = got.set_cookie(COOKIE).unwrap_or_default();
    assert_eq!(
        again(addr, &pin).await.set_cookie(COOKIE),
        None,
        "honoured within its ttl"
    );
    // Expiry is in whole seconds: a 2 s pin issued in second T is good
    // through T+1, so the check above (well under a second after it was
    // issued) cannot straddle its end, as a 1 s pin's could. The browser
    // would keep it; the signed expiry ends it all the same.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let later = again(addr, &pin).await;
    assert!(
        later.set_cookie(COOKIE).is_some_and(|v| v != pin),
        "expired: a new pin"
    );
    assert_eq!(
        metric(
            &w.running,
            "switchyard_cookie_rejected_total{reason=\"expired\"}"
        )
        .await,
        1.0
    );
}
