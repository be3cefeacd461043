//! The per-request decision path allocates nothing: cookie verify (valid,
//! tampered, garbage), the sticky decision and a new client's decision, target
//! routing, cookie encoding into a reused buffer, and the header rewrite of a
//! clean request, and route matching over 200 routes. Counted with a counting
//! global allocator, on this thread only.

use http::header::{HeaderMap, HeaderValue};
use switchyard::assign::{Pin, RequestView, decide, read_cookie};
use switchyard::config::{self, StaticKeys, ValidateOptions};
use switchyard::metrics::Metrics;
use switchyard::proxy::headers;
use switchyard::state::{LiveState, Snapshot};

fn snapshot() -> Snapshot {
    let yaml = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky: {ttl: 12h, keys: [env:K]}\n\
                groups:\n  blue: {weight: 90, targets: [{address: 10.0.0.1:80}, {address: 10.0.0.2:80}]}\n  \
                green: {weight: 10, targets: [{address: 10.0.0.3:80}]}\n";
    let cfg = config::load_str(
        yaml,
        "t",
        &StaticKeys(vec![("K", "YmVuY2gta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzJi")]),
        ValidateOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(
        cfg,
        &switchyard::state::Overrides::new(),
        1,
        String::new(),
        &LiveState::default(),
        &metrics,
    )
}

fn allocations(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

#[test]
fn the_counter_counts() {
    let n = allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(64))));
    assert_eq!(
        n, 1,
        "the counting allocator is not in place: the zeros below would mean nothing"
    );
}

#[test]
fn the_decision_path_allocates_nothing() {
    let snap = snapshot();
    let now = 1_800_000_000;
    let pin = Pin::new(
        [42; 16],
        "blue",
        snap.groups[0].targets[0].id,
        now,
        now + 3600,
    )
    .unwrap_or_else(|| panic!("pin"));
    let valid = snap.routes[0].codec.encode(&pin);
    let tampered = valid.replacen('A', "B", 1).replacen('Q', "R", 1);
    let mut out = String::with_capacity(256);

    assert_eq!(
        allocations(|| {
            let _ = std::hint::black_box(snap.routes[0].codec.verify(&valid));
        }),
        0,
        "verify (valid)"
    );
    assert_eq!(
        allocations(|| {
            let _ = std::hint::black_box(snap.routes[0].codec.verify(&tampered));
        }),
        0,
        "verify (tampered)"
    );
    assert_eq!(
        allocations(|| {
            let _ = std::hint::black_box(snap.routes[0].codec.verify("garbage"));
        }),
        0,
        "verify (garbage)"
    );
    assert_eq!(
        allocations(|| snap.routes[0].codec.encode_into(&pin, &mut out)),
        0,
        "encode into a buffer"
    );
    assert_eq!(out, valid);

    let n = allocations(|| {
        let view = RequestView {
            cookie: read_cookie(&snap.routes[0].codec, Some(valid.as_str())),
            ..Default::default()
        };
        let mut d = decide(&snap.routes[0].routing, &view, now + 10, &mut || [7; 16])
            .unwrap_or_else(|| panic!("decision"));
        let routed =
            switchyard::balance::route(&snap, &snap.routes[0].routing, &mut d, 0, &mut |n| n / 2);
        assert!(routed.is_some());
    });
    assert_eq!(n, 0, "sticky decision and routing");
    let n = allocations(|| {
        let view = RequestView::default();
        let mut d = decide(&snap.routes[0].routing, &view, now, &mut || [9; 16])
            .unwrap_or_else(|| panic!("decision"));
        assert!(
            switchyard::balance::route(&snap, &snap.routes[0].routing, &mut d, 0, &mut |n| n / 2)
                .is_some()
        );
    });
    assert_eq!(n, 0, "new client's decision and routing");
}

#[test]
fn a_clean_request_is_checked_without_allocating() {
    let mut h = HeaderMap::with_capacity(16);
    h.insert("host", HeaderValue::from_static("example.com"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("cookie", HeaderValue::from_static("theme=dark"));
    let n = allocations(|| {
        headers::strip_hop_by_hop(&mut h);
        headers::strip_sticky_cookie(&mut h, |n| n == b"switchyard");
        assert_eq!(headers::sticky_cookies(&h, "switchyard").count(), 0);
    });
    assert_eq!(n, 0);
    assert_eq!(h.len(), 3);
}

#[test]
fn route_matching_allocates_nothing() {
    use switchyard::route::{RequestFacts, RouteTable};
    let mut yaml = String::from(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky: {ttl: 12h, keys: [env:K]}\n\
         groups:\n  blue: {targets: [{address: 10.0.0.1:80}]}\nroutes:\n",
    );
    for i in 0..200 {
        yaml.push_str(&format!(
            "  - {{name: r{i}, match: {{hosts: [app{}.example.com], path_prefix: /svc{}, headers: {{x-v: \"{i}\"}}}}, split: {{blue: 1}}}}\n",
            i / 10,
            i % 10
        ));
    }
    yaml.push_str("  - {name: wild, match: {hosts: [\"*.example.com\"], path_regex: \"/r/[0-9]+\"}, split: {blue: 1}}\n");
    let cfg = config::load_str(
        &yaml,
        "t",
        &StaticKeys(vec![("K", "YmVuY2gta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzJi")]),
        ValidateOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let table = RouteTable::new(&cfg.routes);
    let mut headers = HeaderMap::new();
    headers.insert("x-v", HeaderValue::from_static("199"));
    let method = http::Method::GET;
    for (host, path, want) in [
        ("APP19.example.com:8080", "/svc9/x", Some(199)),
        ("a.b.example.com", "/r/12", Some(200)),
        ("app3.example.com", "/svc1", None),
        ("elsewhere.test", "/", None),
    ] {
        let facts = RequestFacts {
            host,
            path,
            method: &method,
            headers: &headers,
        };
        // A regex makes its matching cache on a thread's first use; every
        // later request on the thread reuses it.
        let _ = table.find(&facts);
        let mut got = None;
        let n = allocations(|| got = table.find(std::hint::black_box(&facts)));
        assert_eq!(got, want, "{host}{path}");
        assert_eq!(n, 0, "{host}{path}");
    }
}
