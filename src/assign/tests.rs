//! Every row of DESIGN.md §4 that the decision alone settles, checked on
//! configs built from YAML (the failure rows, which need live health, are
//! `balance`'s: `src/balance/tests.rs`, with these helpers).

use super::*;
use crate::config::{self, Config, StaticKeys, ValidateOptions};

/// What a test decides over: the routing view and the cookie codec of a
/// config (the proxy's snapshot has both, and the failure-row tests use it).
pub(crate) trait World {
    fn routing(&self) -> &Routing;
    fn codec(&self) -> &CookieCodec;
}

/// The decision's view of one config, and nothing else.
pub(crate) struct Setup {
    routing: Routing,
    codec: CookieCodec,
}

impl World for Setup {
    fn routing(&self) -> &Routing {
        &self.routing
    }
    fn codec(&self) -> &CookieCodec {
        &self.codec
    }
}

/// `text` validated, with the test key as `env:K`.
pub(crate) fn load_test_config(text: &str) -> Result<Config, String> {
    config::load_str(
        text,
        "test",
        &StaticKeys(vec![(
            "K",
            "a2V5LWZvci11bml0LXRlc3RzLW9ubHktMzItYnl0ZXMhIQ",
        )]),
        ValidateOptions::default(),
    )
    .map_err(|e| e.to_string())
}

/// A validated config with the given groups (and a test key).
pub(crate) fn config_with(groups_yaml: &str) -> Config {
    load_test_config(&format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:K]\ngroups:\n{groups_yaml}"
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Blue and green, two targets each, at these weights.
pub(crate) fn two_groups(blue: u32, green: u32, green_extra: &str) -> Config {
    config_with(&format!(
        "  blue:\n    weight: {blue}\n    targets: [{{address: 10.0.0.1:80}}, {{address: 10.0.0.2:80}}]\n  green:\n    weight: {green}\n{green_extra}    targets: [{{address: 10.0.0.3:80}}, {{address: 10.0.0.4:80}}]\n"
    ))
}

fn snapshot(groups_yaml: &str) -> Setup {
    setup(config_with(groups_yaml))
}

fn setup(cfg: Config) -> Setup {
    Setup {
        routing: Routing::new(&cfg, &cfg.routes[0]),
        codec: CookieCodec::new(&cfg.sticky),
    }
}

fn two(blue: u32, green: u32, green_extra: &str) -> Setup {
    setup(two_groups(blue, green, green_extra))
}

pub(crate) const NOW: u32 = 1_700_000_000;

pub(crate) fn counter_ids() -> impl FnMut() -> ClientId {
    let mut n = 0u64;
    move || {
        n += 1;
        bucket::client_id_from_key(&n.to_be_bytes())
    }
}

pub(crate) fn decide_at(snap: &impl World, cookie: Option<&str>, now: u32) -> Decision {
    let view = RequestView {
        cookie: read_cookie(snap.codec(), cookie),
        ..Default::default()
    };
    decide(snap.routing(), &view, now, &mut counter_ids()).unwrap_or_else(|| panic!("no decision"))
}

/// The cookie a client would hold after `d`, pinned to target index 0 when unpinned.
pub(crate) fn cookie_for(snap: &impl World, d: &Decision) -> String {
    let r = snap.routing();
    let id = r.target_id_of(d.group, d.target.unwrap_or(0));
    let pin = d
        .pin(r.group_name(d.group), id)
        .unwrap_or_else(|| panic!("pin"));
    snap.codec().encode(&pin)
}

/// A client pinned to `group` in `snap`, found by trying fresh ids.
pub(crate) fn pinned_client(snap: &impl World, group: &str) -> (Decision, String) {
    let mut ids = counter_ids();
    for _ in 0..10_000 {
        let d = decide(snap.routing(), &RequestView::default(), NOW, &mut ids)
            .unwrap_or_else(|| panic!("none"));
        if snap.routing().group_name(d.group) == group {
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
        let d = decide(&snap.routing, &RequestView::default(), NOW, &mut ids)
            .unwrap_or_else(|| panic!());
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
        assert_eq!(after.routing.group_name(d.group), "green", "{b}/{g}");
        assert_eq!(d.reason, Reason::Sticky);
        assert!(!d.issue_cookie);
    }
}

#[test]
fn weight_zero_takes_no_new_clients() {
    let snap = two(100, 0, "");
    let mut ids = counter_ids();
    for _ in 0..2_000 {
        let d = decide(&snap.routing, &RequestView::default(), NOW, &mut ids)
            .unwrap_or_else(|| panic!());
        assert_eq!(d.group, 0);
    }
}

#[test]
fn drain_moves_pinned_clients_and_reissues() {
    let before = two(50, 50, "");
    let (d0, cookie) = pinned_client(&before, "green");
    let after = two(50, 50, "    drain: true\n");
    let d = decide_at(&after, Some(&cookie), NOW + 60);
    assert_eq!(after.routing.group_name(d.group), "blue");
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
        let d = decide(&after.routing, &RequestView::default(), NOW, &mut ids)
            .unwrap_or_else(|| panic!());
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
    assert_eq!(after.routing.group_name(d.group), "green");
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
    let d = decide(&snap.routing, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
    assert_eq!(
        (d.group, d.reason, d.issue_cookie),
        (1, Reason::Override, false)
    );
    let view = RequestView {
        override_group: Some(b"nope"),
        ..Default::default()
    };
    let d = decide(&snap.routing, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
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
        let a = decide(&snap.routing, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
        let b =
            decide(&snap.routing, &view, NOW + 5, &mut counter_ids()).unwrap_or_else(|| panic!());
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
    let d = decide(&snap.routing, &view, NOW, &mut counter_ids()).unwrap_or_else(|| panic!());
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
