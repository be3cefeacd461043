//! Passive health judged as a gateway would (DESIGN §10): what a target did
//! to the proxy (gateway failures) ejects after a run of them; the
//! application's own errors eject only through the failure-ratio detector,
//! over many requests from several distinct clients, never the group's last
//! target; and failover never lands on a weight-0 or drained group.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;

/// YAML for `(group, weight, targets)` with `extra` at the top level.
fn yaml(groups: &[(&str, u32, &[&Upstream])], extra: &str) -> String {
    config_yaml(groups, extra)
}

fn ejections(group: &str, target: &Upstream, cause: &str) -> String {
    format!(
        "switchyard_target_ejections_total{{cause=\"{cause}\",group=\"{group}\",target=\"{}\"}}",
        target.addr
    )
}

const RATIO: &str = "health:\n  outlier:\n    failure_ratio:\n      percent: 50\n      min_requests: 20\n      min_clients: 3\n      window: 60s\n";

/// One client, requests the app answers with its own errors: 501 to methods
/// it does not implement, 500 and 505 from one URL. Blue (one target, the
/// only released group) is never ejected and green (weight 0) is never
/// reached, by default and with the failure-ratio detector on.
#[tokio::test]
async fn one_client_answered_with_app_errors_ejects_nobody() {
    for extra in ["", RATIO] {
        let (b, g) = blue_and_green().await;
        let proxy = start_proxy(&yaml(&[("blue", 100, &[&b]), ("green", 0, &[&g])], extra)).await;
        let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
        let me = Ipv4Addr::new(127, 0, 0, 1);
        for (method, status) in [("PATCH", 501), ("OPTIONS", 501), ("GET", 500), ("GET", 505)] {
            for _ in 0..15 {
                let head = format!(
                    "{method} /status/{status} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
                );
                let (got, _) = request_from(me, p, &head).await;
                assert_eq!(got, status, "{method} /status/{status} ({extra:?})");
            }
        }
        for cause in ["gateway", "failure_ratio"] {
            assert_eq!(
                series_at(a, &ejections("blue", &b, cause)).await,
                0.0,
                "{cause} ({extra:?})"
            );
        }
        let c = h1_client();
        for _ in 0..5 {
            let got = get(&c, &format!("http://{p}/"), None).await;
            assert_eq!(
                (got.status.as_u16(), got.upstream()),
                (200, "blue"),
                "({extra:?})"
            );
        }
        assert_eq!(g.hits(), 0, "green (weight 0) was reached ({extra:?})");
    }
}

/// 502/503/504 from the target are gateway failures: five in a row eject
/// it (counted by cause), its sibling serves meanwhile, and it is back
/// after the ejection.
#[tokio::test]
async fn gateway_statuses_in_a_row_eject_and_the_target_returns() {
    let (b1, b2) = (
        Upstream::start("blue-1").await,
        Upstream::start("blue-2").await,
    );
    let extra = "health:\n  outlier:\n    base_ejection: 1s\n";
    let proxy = start_proxy(&yaml(&[("blue", 100, &[&b1, &b2])], extra)).await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let name = ejections("blue", &b1, "gateway");
    assert_eq!(series_at(a, &name).await, 0.0);
    b1.fail_with(503);
    let c = h1_client();
    for _ in 0..200 {
        get(&c, &format!("http://{p}/"), None).await;
        if b1.hits() >= 5 {
            break;
        }
    }
    assert_eq!(b1.hits(), 5, "blue-1 answered 503 five times");
    assert_eq!(series_at(a, &name).await, 1.0);
    for _ in 0..20 {
        let got = get(&c, &format!("http://{p}/"), None).await;
        assert_eq!((got.status.as_u16(), got.upstream()), (200, "blue-2"));
    }
    b1.fail_with(0);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..200 {
        let got = get(&c, &format!("http://{p}/"), None).await;
        if got.upstream() == "blue-1" {
            assert_eq!(got.status, 200);
            return;
        }
    }
    panic!("blue-1 never came back after its ejection");
}

/// Eight distinct clients (loopback addresses) each meet a target that
/// answers 500 to everything: the failure-ratio detector ejects it while
/// its sibling serves. The same against a group's only target ejects
/// nothing: the app's errors do not fail clients over to another version.
#[tokio::test]
async fn a_target_erring_for_many_clients_is_ejected_by_ratio_but_not_the_last() {
    let (b1, b2) = (
        Upstream::start("blue-1").await,
        Upstream::start("blue-2").await,
    );
    b1.fail_with(500);
    let proxy = start_proxy(&yaml(&[("blue", 100, &[&b1, &b2])], RATIO)).await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let head = "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
    for client in 2..10 {
        for _ in 0..10 {
            request_from(Ipv4Addr::new(127, 0, 0, client), p, head).await;
        }
    }
    assert_eq!(
        series_at(a, &ejections("blue", &b1, "failure_ratio")).await,
        1.0
    );
    assert_eq!(
        series_at(a, &ejections("blue", &b2, "failure_ratio")).await,
        0.0
    );
    let before = b1.hits();
    for _ in 0..20 {
        let (status, text) = request_from(Ipv4Addr::new(127, 0, 0, 20), p, head).await;
        assert_eq!(status, 200, "{text}");
    }
    assert_eq!(b1.hits(), before, "an ejected target was sent requests");

    let (b, g) = blue_and_green().await;
    b.fail_with(500);
    let proxy = start_proxy(&yaml(&[("blue", 100, &[&b]), ("green", 0, &[&g])], RATIO)).await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    for client in 2..10 {
        for _ in 0..10 {
            let (status, _) = request_from(Ipv4Addr::new(127, 0, 0, client), p, head).await;
            assert_eq!(status, 500, "blue's own answer");
        }
    }
    assert_eq!(
        series_at(a, &ejections("blue", &b, "failure_ratio")).await,
        0.0
    );
    assert_eq!(g.hits(), 0, "green (weight 0) was reached");
}

/// A dead stable group's clients are not failed over to a drained group
/// (rolled back) nor to a weight-0 one (never released): 503.
#[tokio::test]
async fn failover_skips_drained_and_weight_zero_groups() {
    let (b, g) = blue_and_green().await;
    let dead = Upstream::start("dead").await;
    dead.kill();
    for green in [
        "  green:\n    weight: 0\n",
        "  green:\n    weight: 50\n    drain: true\n",
    ] {
        let y = format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\nhealth:\n  outlier:\n    consecutive_failures: 1\ngroups:\n  blue:\n    weight: 100\n    targets:\n      - address: {}\n{green}    targets:\n      - address: {}\n",
            dead.addr, g.addr
        );
        let proxy = start_proxy(&y).await;
        let c = h1_client();
        for _ in 0..5 {
            let got = get(&c, &format!("http://{}/", proxy.proxy_addr), None).await;
            assert!(
                matches!(got.status.as_u16(), 502 | 503),
                "{green:?}: {}",
                got.status
            );
        }
        assert_eq!(g.hits(), 0, "{green:?}: green was reached");
    }
    drop(b);
}
