//! Every row of DESIGN.md §4, checked on snapshots built from YAML.

use super::*;
use crate::config::{self, StaticKeys, ValidateOptions};
use crate::metrics::Metrics;
use crate::state::{LiveState, Snapshot};

fn snapshot(groups_yaml: &str) -> Snapshot {
    let text = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:K]\ngroups:\n{groups_yaml}"
    );
    let cfg = config::load_str(
        &text,
        "test",
        &StaticKeys(vec![(
            "K",
            "a2V5LWZvci11bml0LXRlc3RzLW9ubHktMzItYnl0ZXMhIQ",
        )]),
        ValidateOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(cfg, 1, String::new(), &LiveState::default(), &metrics)
}

fn two(blue: u32, green: u32, green_extra: &str) -> Snapshot {
    snapshot(&format!(
        "  blue:\n    weight: {blue}\n    targets: [{{address: 10.0.0.1:80}}, {{address: 10.0.0.2:80}}]\n  green:\n    weight: {green}\n{green_extra}    targets: [{{address: 10.0.0.3:80}}, {{address: 10.0.0.4:80}}]\n"
    ))
}

const NOW: u32 = 1_700_000_000;

fn counter_ids() -> impl FnMut() -> ClientId {
    let mut n = 0u64;
    move || {
        n += 1;
        bucket::client_id_from_key(&n.to_be_bytes())
    }
}

fn decide_at(snap: &Snapshot, cookie: Option<&str>, now: u32) -> Decision {
    let view = RequestView {
        cookie: read_cookie(&snap.codec, cookie),
        ..Default::default()
    };
    decide(snap, &view, now, &mut counter_ids()).unwrap_or_else(|| panic!("no decision"))
}

/// The cookie a client would hold after `d`, pinned to target index 0 when unpinned.
fn cookie_for(snap: &Snapshot, d: &Decision) -> String {
    let g = &snap.groups[d.group];
    let t = &g.targets[d.target.unwrap_or(0)];
    let pin = d.pin(g, t).unwrap_or_else(|| panic!("pin"));
    snap.codec.encode(&pin)
}

/// A client pinned to `group` in `snap`, found by trying fresh ids.
fn pinned_client(snap: &Snapshot, group: &str) -> (Decision, String) {
    let mut ids = counter_ids();
    for _ in 0..10_000 {
        let d =
            decide(snap, &RequestView::default(), NOW, &mut ids).unwrap_or_else(|| panic!("none"));
        if snap.groups[d.group].name.as_str() == group {
            let c = cookie_for(snap, &d);
            return (d, c);
        }
    }
    panic!("no client landed in {group}");
}

#[test]
fn new_clients_split_by_weight_and_get_a_cookie() {
    let snap = two(90, 10, "");
    let mut ids = counter_ids();
    let mut green = 0;
    for _ in 0..10_000 {
        let d = decide(&snap, &RequestView::default(), NOW, &mut ids).unwrap_or_else(|| panic!());
        assert!(d.issue_cookie);
        assert_eq!(d.reason, Reason::New);
        assert_eq!(d.expires_at, NOW + 3600);
        green += usize::from(d.group == 1);
    }
    assert!((850..=1150).contains(&green), "green got {green} of 10000");
}

#[test]
fn sticky_client_keeps_group_and_target_without_new_cookie() {
    let snap = two(50, 50, "");
    let (d0, cookie) = pinned_client(&snap, "green");
    let d = decide_at(&snap, Some(&cookie), NOW + 10);
    assert_eq!(
        (d.group, d.target, d.reason, d.issue_cookie),
        (d0.group, Some(0), Reason::Sticky, false)
    );
    assert_eq!(d.client_id, d0.client_id);
}

#[test]
fn weight_change_keeps_pinned_clients_until_expiry() {
    let before = two(10, 90, "");
    let (_, cookie) = pinned_client(&before, "green");
    for (b, g) in [(90, 10), (99, 1), (100, 0)] {
        let after = two(b, g, "");
        let d = decide_at(&after, Some(&cookie), NOW + 60);
        assert_eq!(after.groups[d.group].name.as_str(), "green", "{b}/{g}");
        assert_eq!(d.reason, Reason::Sticky);
        assert!(!d.issue_cookie);
    }
}

#[test]
fn weight_zero_takes_no_new_clients() {
    let snap = two(100, 0, "");
    let mut ids = counter_ids();
    for _ in 0..2_000 {
        let d = decide(&snap, &RequestView::default(), NOW, &mut ids).unwrap_or_else(|| panic!());
        assert_eq!(d.group, 0);
    }
}

#[test]
fn drain_moves_pinned_clients_and_reissues() {
    let before = two(50, 50, "");
    let (d0, cookie) = pinned_client(&before, "green");
    let after = two(50, 50, "    drain: true\n");
    let d = decide_at(&after, Some(&cookie), NOW + 60);
    assert_eq!(after.groups[d.group].name.as_str(), "blue");
    assert_eq!(d.reason, Reason::Reassigned);
    assert!(d.issue_cookie);
    assert_eq!(d.client_id, d0.client_id, "the client id survives a move");
    assert_eq!(
        d.expires_at,
        NOW + 60 + 3600,
        "a new assignment gets a new expiry"
    );
    // Drained: no new clients either.
    let mut ids = counter_ids();
    for _ in 0..2_000 {
        let d = decide(&after, &RequestView::default(), NOW, &mut ids).unwrap_or_else(|| panic!());
        assert_eq!(d.group, 0);
    }
}

#[test]
fn removed_group_moves_pinned_clients_and_reissues() {
    let before = two(50, 50, "");
    let (_, cookie) = pinned_client(&before, "green");
    let after = snapshot("  blue:\n    weight: 1\n    targets: [{address: 10.0.0.1:80}]\n");
    let d = decide_at(&after, Some(&cookie), NOW + 60);
    assert_eq!(
        (d.group, d.reason, d.issue_cookie),
        (0, Reason::Reassigned, true)
    );
}

#[test]
fn removed_target_moves_within_the_group_keeping_expiry() {
    let before = two(50, 50, "");
    let (d0, cookie) = pinned_client(&before, "green");
    // Target 10.0.0.3 (index 0, the pinned one) is gone.
    let after = snapshot(
        "  blue:\n    weight: 50\n    targets: [{address: 10.0.0.1:80}]\n  green:\n    weight: 50\n    targets: [{address: 10.0.0.4:80}, {address: 10.0.0.5:80}]\n",
    );
    let d = decide_at(&after, Some(&cookie), NOW + 60);
    assert_eq!(after.groups[d.group].name.as_str(), "green");
    assert_eq!(
        (d.target, d.reason, d.issue_cookie),
        (None, Reason::Retargeted, true)
    );
    assert_eq!(d.expires_at, d0.expires_at);
}

#[test]
fn pinned_target_survives_reordering() {
    let before = two(50, 50, "");
    let (_, cookie) = pinned_client(&before, "green");
    let after = snapshot(
        "  green:\n    weight: 50\n    targets: [{address: 10.0.0.9:80}, {address: 10.0.0.3:80}]\n  blue:\n    weight: 50\n    targets: [{address: 10.0.0.1:80}]\n",
    );
    let d = decide_at(&after, Some(&cookie), NOW + 60);
    assert_eq!((d.group, d.target, d.reason), (0, Some(1), Reason::Sticky));
}

#[test]
fn expired_cookie_is_rebucketed_with_the_same_id() {
    let snap = two(50, 50, "");
    for group in ["blue", "green"] {
        let (d0, cookie) = pinned_client(&snap, group);
        let d = decide_at(&snap, Some(&cookie), d0.expires_at);
        assert_eq!(d.reason, Reason::Expired);
        assert_eq!(d.rejected, Some(Rejection::Expired));
        assert_eq!((d.group, d.client_id), (d0.group, d0.client_id));
        assert!(d.issue_cookie);
        let d = decide_at(&snap, Some(&cookie), d0.expires_at - 1);
        assert_eq!(
            d.reason,
            Reason::Sticky,
            "one second before expiry it still holds"
        );
    }
}

#[test]
fn invalid_cookie_is_a_new_assignment_with_a_reason() {
    let snap = two(50, 50, "");
    let (_, cookie) = pinned_client(&snap, "green");
    let mut tampered = cookie.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap_or_default();
    for (value, why) in [
        (tampered.as_str(), Rejection::BadSignature),
        ("garbage", Rejection::Malformed),
        (&cookie[..cookie.len() - 5], Rejection::Malformed),
    ] {
        let d = decide_at(&snap, Some(value), NOW);
        assert_eq!(
            (d.reason, d.rejected, d.issue_cookie),
            (Reason::Invalid, Some(why), true)
        );
    }
}

#[test]
fn override_header_forces_group_for_one_request() {
    let snap = two(100, 0, "");
    let view = RequestView {
        override_group: Some(b"green"),
        ..Default::default()
    };
    let d = decide(&snap, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
    assert_eq!(
        (d.group, d.reason, d.issue_cookie),
        (1, Reason::Override, false)
    );
    let view = RequestView {
        override_group: Some(b"nope"),
        ..Default::default()
    };
    let d = decide(&snap, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
    assert_eq!(d.reason, Reason::New);
}

#[test]
fn bucket_key_makes_clients_without_cookie_stick() {
    let snap = two(50, 50, "");
    let mut groups = std::collections::HashSet::new();
    for user in 0..200u32 {
        let key = format!("user-{user}");
        let view = RequestView {
            bucket_key: Some(key.as_bytes()),
            ..Default::default()
        };
        let a = decide(&snap, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
        let b = decide(&snap, &view, NOW + 5, &mut counter_ids()).unwrap_or_else(|| panic!());
        assert_eq!((a.group, a.client_id), (b.group, b.client_id));
        groups.insert(a.group);
    }
    assert_eq!(groups.len(), 2, "keys spread over both groups");
}

#[test]
fn the_first_authentic_cookie_of_several_wins() {
    let snap = two(50, 50, "");
    let (d0, cookie) = pinned_client(&snap, "green");
    let stale = "v1.AAAA.BBBB";
    let view = RequestView {
        cookie: read_cookie(&snap.codec, [stale, cookie.as_str()]),
        ..Default::default()
    };
    let d = decide(&snap, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
    assert_eq!(
        (d.group, d.reason, d.issue_cookie),
        (d0.group, Reason::Sticky, false)
    );
    // None authentic: the first refusal is the reason given.
    assert_eq!(
        read_cookie(&snap.codec, [stale, "x"]),
        Some(Err(Rejection::Malformed))
    );
    assert_eq!(read_cookie(&snap.codec, []), None);
    // Past the cap, further copies are not even looked at.
    let many = [stale; MAX_COOKIE_CANDIDATES];
    let with_valid_last = many.iter().copied().chain([cookie.as_str()]);
    assert!(matches!(
        read_cookie(&snap.codec, with_valid_last),
        Some(Err(_))
    ));
}

// === DESIGN.md §4, the failure rows (balance::route on top of decide) ===

/// A check whose every probe result flips a target at once.
fn one_probe_check() -> crate::config::HealthCheck {
    crate::config::HealthCheck {
        path: "/".into(),
        interval: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(1),
        expect: (200, 399),
        healthy_threshold: 1,
        unhealthy_threshold: 1,
    }
}

/// Marks a target down the way an active check would.
fn take_down(snap: &Snapshot, group: usize, target: usize) {
    snap.groups[group].targets[target]
        .live
        .health
        .record_probe(false, &one_probe_check());
}

fn routed(snap: &Snapshot, cookie: &str) -> (Decision, usize) {
    let mut d = decide_at(snap, Some(cookie), NOW);
    let now = crate::clock::now_ms();
    let t = crate::balance::route(snap, &mut d, now, &mut |n| n / 2)
        .unwrap_or_else(|| panic!("no route"));
    (d, t)
}

/// A green client's cookie, pinned to green's first target.
fn green_pinned_to_first(snap: &Snapshot) -> (usize, String) {
    let (d, _) = pinned_client(snap, "green");
    let pinned = Decision {
        target: Some(0),
        ..d
    };
    (d.group, cookie_for(snap, &pinned))
}

#[test]
fn an_unhealthy_pinned_target_gives_way_to_a_sibling_with_a_new_cookie() {
    let snap = two(50, 50, "");
    let (g, cookie) = green_pinned_to_first(&snap);
    take_down(&snap, g, 0);
    let (d, t) = routed(&snap, &cookie);
    assert_eq!((d.group, t), (g, 1));
    assert_eq!(d.reason, Reason::Retargeted);
    assert!(d.issue_cookie);
}

#[test]
fn a_group_with_no_healthy_target_is_served_elsewhere_cookie_kept() {
    let snap = two(50, 50, "");
    let (g, cookie) = green_pinned_to_first(&snap);
    take_down(&snap, g, 0);
    take_down(&snap, g, 1);
    let (d, _) = routed(&snap, &cookie);
    assert_eq!(snap.groups[d.group].name.as_str(), "blue");
    assert_eq!(d.reason, Reason::Failover);
    assert!(!d.issue_cookie, "failover must not rewrite the cookie");
}

#[test]
fn new_clients_skip_a_dead_group_and_nothing_healthy_means_no_route() {
    let snap = two(0, 100, "");
    take_down(&snap, 1, 0);
    take_down(&snap, 1, 1);
    let mut d = decide_at(&snap, None, NOW);
    assert_eq!(snap.groups[d.group].name.as_str(), "green");
    let now = crate::clock::now_ms();
    assert!(crate::balance::route(&snap, &mut d, now, &mut |n| n / 2).is_some());
    assert_eq!(snap.groups[d.group].name.as_str(), "blue");
    assert!(d.issue_cookie, "a new client is pinned where it is served");
    assert_eq!(d.reason, Reason::New);
    take_down(&snap, 0, 0);
    take_down(&snap, 0, 1);
    let mut d = decide_at(&snap, None, NOW);
    assert!(crate::balance::route(&snap, &mut d, now, &mut |n| n / 2).is_none());
}

#[test]
fn a_target_in_slow_start_takes_a_small_share() {
    let mut snap = two(50, 50, "");
    snap.config.health.slow_start = std::time::Duration::from_secs(60);
    // Target 1 of blue was "just added": its ramp restarts now.
    let fresh = crate::health::Health::default();
    let now = crate::clock::now_ms();
    assert!(fresh.ramp(now, snap.config.health.slow_start) < 0.1);
    let blue = &snap.groups[0];
    blue.targets[0].live.health.settle();
    // Simulate the fresh target by making target 1 fail checks then pass again.
    take_down(&snap, 0, 1);
    blue.targets[1]
        .live
        .health
        .record_probe(true, &one_probe_check());
    let r1 = blue.targets[1]
        .live
        .health
        .ramp(now, snap.config.health.slow_start);
    assert!(r1 < 0.1, "ramp {r1}");
    let mut rng = 12345u64;
    let mut draw = |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let fresh_picks = (0..10_000)
        .filter(|_| {
            crate::balance::pick(blue, now, snap.config.health.slow_start, &[], &mut draw)
                == Some(1)
        })
        .count();
    assert!(
        fresh_picks < 1_500,
        "a target in slow start took {fresh_picks} of 10000"
    );
    assert!(
        fresh_picks > 0,
        "a target in slow start must still get some traffic"
    );
}
