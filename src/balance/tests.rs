//! DESIGN.md §4, the failure rows: `balance::route` on top of
//! `assign::decide`, over snapshots with live health.

use crate::assign::tests::{NOW, World, cookie_for, decide_at, pinned_client, two_groups};
use crate::assign::{CookieCodec, Decision, Reason, Routing};
use crate::metrics::Metrics;
use crate::state::{LiveState, Snapshot};

impl World for Snapshot {
    fn routing(&self) -> &Routing {
        &self.routes[0].routing
    }
    fn codec(&self) -> &CookieCodec {
        &self.routes[0].codec
    }
}

fn two(blue: u32, green: u32, green_extra: &str) -> Snapshot {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = two_groups(blue, green, green_extra);
    Snapshot::build(
        cfg,
        &crate::state::Overrides::new(),
        1,
        String::new(),
        &LiveState::default(),
        &metrics,
    )
}

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
    let t = super::route(snap, &snap.routes[0].routing, &mut d, now, &mut |n| n / 2)
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
    let snap = two(10, 90, "");
    take_down(&snap, 1, 0);
    take_down(&snap, 1, 1);
    let mut d = decide_at(&snap, None, NOW);
    assert_eq!(snap.groups[d.group].name.as_str(), "green");
    let now = crate::clock::now_ms();
    assert!(super::route(&snap, &snap.routes[0].routing, &mut d, now, &mut |n| n / 2).is_some());
    assert_eq!(snap.groups[d.group].name.as_str(), "blue");
    assert!(d.issue_cookie, "a new client is pinned where it is served");
    assert_eq!(d.reason, Reason::New);
    take_down(&snap, 0, 0);
    take_down(&snap, 0, 1);
    let mut d = decide_at(&snap, None, NOW);
    assert!(super::route(&snap, &snap.routes[0].routing, &mut d, now, &mut |n| n / 2).is_none());
}

/// Neither a weight-0 group (never released to new clients) nor a drained
/// one (rolled back) stands in for a dead group: the client gets a 503.
#[test]
fn failover_never_lands_on_a_weight_zero_or_drained_group() {
    for (blue, green_extra) in [(0, ""), (50, "    drain: true\n")] {
        let snap = two(blue, 100, green_extra);
        let (g, cookie) = if blue == 0 {
            // Blue takes no new clients; green's pinned clients lose green.
            green_pinned_to_first(&snap)
        } else {
            // Green drains; blue's pinned clients lose blue.
            let (d, c) = pinned_client(&snap, "blue");
            (d.group, c)
        };
        take_down(&snap, g, 0);
        take_down(&snap, g, 1);
        let mut d = decide_at(&snap, Some(&cookie), NOW);
        let now = crate::clock::now_ms();
        let r = super::route(&snap, &snap.routes[0].routing, &mut d, now, &mut |n| n / 2);
        assert!(
            r.is_none(),
            "blue {blue} green {green_extra:?}: served by {}",
            snap.groups[d.group].name.as_str()
        );
    }
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
            super::pick(blue, now, snap.config.health.slow_start, &[], &mut draw) == Some(1)
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
