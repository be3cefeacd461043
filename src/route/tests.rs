//! The order of evaluation in the module docs, case by case, on configs
//! read from YAML.

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::assign::tests::{config_with, load_test_config};
use crate::config::{self, Config};

const GROUPS: &str = "groups:\n  a:\n    targets: [{address: 10.0.0.1:80}]\n  b:\n    targets: [{address: 10.0.0.2:80}]\n";

fn load(routes_yaml: &str) -> Result<Config, String> {
    load_test_config(&format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:K]\n{GROUPS}routes:\n{routes_yaml}"
    ))
}

/// A table over routes given as `name: match` pairs (each split to `a`).
fn table(routes: &[(&str, &str)]) -> (RouteTable, Vec<String>) {
    let yaml: String = routes
        .iter()
        .map(|(name, m)| format!("  - name: {name}\n    match: {m}\n    split: {{a: 1}}\n"))
        .collect();
    let cfg = load(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let names = cfg.routes.iter().map(|r| r.name.to_string()).collect();
    (RouteTable::new(&cfg.routes), names)
}

fn find_with(
    t: &(RouteTable, Vec<String>),
    host: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<String> {
    let facts = RequestFacts {
        host,
        path,
        method,
        headers,
    };
    t.0.find(&facts).map(|i| t.1[i].clone())
}

fn find(t: &(RouteTable, Vec<String>), host: &str, path: &str) -> Option<String> {
    find_with(t, host, path, &Method::GET, &HeaderMap::new())
}

#[test]
fn hosts_exact_before_wildcards_longest_first_before_any_host() {
    let t = table(&[
        ("any", "{}"),
        ("wide", "{hosts: [\"*.example.com\"]}"),
        ("narrow", "{hosts: [\"*.api.example.com\"]}"),
        ("exact", "{hosts: [api.example.com]}"),
    ]);
    assert_eq!(find(&t, "api.example.com", "/").as_deref(), Some("exact"));
    assert_eq!(
        find(&t, "API.Example.COM:8443", "/").as_deref(),
        Some("exact"),
        "case and port ignored"
    );
    assert_eq!(
        find(&t, "api.example.com.", "/").as_deref(),
        Some("exact"),
        "a trailing dot too"
    );
    assert_eq!(
        find(&t, "v2.api.example.com", "/").as_deref(),
        Some("narrow")
    );
    assert_eq!(
        find(&t, "a.b.api.example.com", "/").as_deref(),
        Some("narrow"),
        "more than one label"
    );
    assert_eq!(find(&t, "www.example.com", "/").as_deref(), Some("wide"));
    assert_eq!(
        find(&t, "example.com", "/").as_deref(),
        Some("any"),
        "a wildcard needs a label before it"
    );
    assert_eq!(find(&t, "other.org", "/").as_deref(), Some("any"));
    assert_eq!(find(&t, "[::1]:80", "/").as_deref(), Some("any"));
}

#[test]
fn within_a_host_exact_path_then_longest_prefix_then_regex_then_none() {
    let t = table(&[
        ("root", "{hosts: [x.test]}"),
        (
            "re",
            "{hosts: [x.test], path_regex: \"/v[0-9]+/items/[0-9]+\"}",
        ),
        ("v1", "{hosts: [x.test], path_prefix: /v1}"),
        ("v1items", "{hosts: [x.test], path_prefix: /v1/items/}"),
        ("login", "{hosts: [x.test], path: /v1/login}"),
    ]);
    assert_eq!(find(&t, "x.test", "/v1/login").as_deref(), Some("login"));
    assert_eq!(
        find(&t, "x.test", "/v1/login/x").as_deref(),
        Some("v1"),
        "exact is exact"
    );
    assert_eq!(
        find(&t, "x.test", "/v1/items/7").as_deref(),
        Some("v1items"),
        "a prefix before a regex"
    );
    assert_eq!(
        find(&t, "x.test", "/v1/items").as_deref(),
        Some("v1items"),
        "the prefix without its slash"
    );
    assert_eq!(find(&t, "x.test", "/v1").as_deref(), Some("v1"));
    assert_eq!(
        find(&t, "x.test", "/v10").as_deref(),
        Some("root"),
        "segments, not characters"
    );
    assert_eq!(find(&t, "x.test", "/v2/items/7").as_deref(), Some("re"));
    assert_eq!(
        find(&t, "x.test", "/v2/items/7/x").as_deref(),
        Some("root"),
        "a regex matches the whole path"
    );
}

#[test]
fn a_host_route_that_does_not_match_falls_through_to_the_next_tier() {
    let t = table(&[
        ("api", "{hosts: [x.test], path_prefix: /api}"),
        ("fallback", "{path_prefix: /}"),
    ]);
    assert_eq!(find(&t, "x.test", "/api/a").as_deref(), Some("api"));
    assert_eq!(find(&t, "x.test", "/web").as_deref(), Some("fallback"));
}

#[test]
fn headers_and_methods_narrow_and_rank() {
    let t = table(&[
        ("plain", "{path_prefix: /}"),
        ("canary", "{path_prefix: /, headers: {x-canary: \"1\"}}"),
        (
            "beta",
            "{path_prefix: /, headers_present: [x-beta], methods: [get]}",
        ),
        ("writes", "{path_prefix: /, methods: [POST, put]}"),
    ]);
    let mut h = HeaderMap::new();
    assert_eq!(
        find_with(&t, "h", "/", &Method::GET, &h).as_deref(),
        Some("plain")
    );
    assert_eq!(
        find_with(&t, "h", "/", &Method::POST, &h).as_deref(),
        Some("writes")
    );
    h.insert("x-canary", HeaderValue::from_static("1"));
    assert_eq!(
        find_with(&t, "h", "/", &Method::POST, &h).as_deref(),
        Some("canary"),
        "more headers rank first"
    );
    h.insert("x-canary", HeaderValue::from_static("2"));
    assert_eq!(
        find_with(&t, "h", "/", &Method::GET, &h).as_deref(),
        Some("plain"),
        "exact value only"
    );
    h.insert("x-beta", HeaderValue::from_static(""));
    assert_eq!(
        find_with(&t, "h", "/", &Method::GET, &h).as_deref(),
        Some("beta")
    );
    assert_eq!(
        find_with(&t, "h", "/", &Method::PUT, &h).as_deref(),
        Some("writes"),
        "beta takes GET only"
    );
}

#[test]
fn declared_order_breaks_ties_and_no_match_is_none() {
    let t = table(&[
        ("first", "{hosts: [a.test, b.test]}"),
        ("second", "{hosts: [b.test], headers: {x: \"1\"}}"),
        ("third", "{hosts: [c.test], path_prefix: /only}"),
    ]);
    assert_eq!(find(&t, "b.test", "/").as_deref(), Some("first"));
    assert_eq!(find(&t, "c.test", "/other"), None);
    assert_eq!(find(&t, "d.test", "/"), None);
}

#[test]
fn the_groups_only_form_takes_everything_without_a_lookup() {
    let cfg = config_with("  a:\n    weight: 1\n    targets: [{address: 10.0.0.1:80}]\n");
    assert_eq!(cfg.form, config::ConfigForm::GroupsOnly);
    let t = RouteTable::new(&cfg.routes);
    assert!(t.trivial);
    let facts = RequestFacts {
        host: "anything",
        path: "/x",
        method: &Method::DELETE,
        headers: &HeaderMap::new(),
    };
    assert_eq!(t.find(&facts), Some(0));
}

#[test]
fn bad_routes_are_named_with_their_path() {
    let cases = [
        (
            "  - name: a\n    split: {nope: 1}\n",
            "routes[0].split.nope",
        ),
        ("  - name: a\n    split: {a: 0}\n", "routes[0].split"),
        (
            "  - name: a\n    split: {a: 1, b: 1}\n    drain: [a, b]\n",
            "routes[0].split",
        ),
        (
            "  - name: a\n    split: {a: 1}\n    drain: [zz]\n",
            "routes[0].drain[0]",
        ),
        (
            "  - name: a\n    match: {path_regex: \"(\"}\n    split: {a: 1}\n",
            "routes[0].match.path_regex",
        ),
        (
            "  - name: a\n    match: {path: /a, path_prefix: /b}\n    split: {a: 1}\n",
            "routes[0].match.path_prefix",
        ),
        (
            "  - name: a\n    match: {hosts: [\"a.test:80\"]}\n    split: {a: 1}\n",
            "routes[0].match.hosts[0]",
        ),
        (
            "  - name: a\n    match: {hosts: [\"*\"]}\n    split: {a: 1}\n",
            "routes[0].match.hosts[0]",
        ),
        (
            "  - name: a\n    match: {methods: [\"GE T\"]}\n    split: {a: 1}\n",
            "routes[0].match.methods[0]",
        ),
        (
            "  - name: a\n    split: {a: 1}\n  - name: a\n    match: {hosts: [x.test]}\n    split: {a: 1}\n",
            "routes[1].name",
        ),
        (
            "  - name: a\n    match: {hosts: [x.test]}\n    split: {a: 1}\n  - name: b\n    match: {hosts: [X.test]}\n    split: {b: 1}\n",
            "routes[1].match",
        ),
        (
            "  - name: a\n    split: {a: 1}\n    sticky: {cookie: pin}\n  - name: b\n    match: {hosts: [x.test]}\n    split: {b: 1}\n    sticky: {cookie: pin}\n",
            "routes[1].sticky.cookie",
        ),
        ("  - name: Bad\n    split: {a: 1}\n", "routes[0].name"),
        (
            "  - name: a\n    match: {path_prefix: /a}\n    split: {a: 1}\n    sticky: {type: header, header: x-pin}\n  - name: b\n    match: {path_prefix: /b}\n    split: {b: 1}\n    sticky: {type: header, header: X-Pin}\n",
            "routes[1].sticky.header",
        ),
        (
            "  - name: a\n    match: {hosts: [x.test]}\n    split: {a: 1}\n  - name: b\n    match: {hosts: [y.test]}\n    split: {a: 1}\n  - name: c\n    match: {hosts: [y.test, x.test]}\n    split: {b: 1}\n",
            "routes[2].match",
        ),
        (
            "  - name: a\n    match: {hosts: [x.test], path_prefix: /}\n    split: {a: 1}\n  - name: b\n    match: {hosts: [x.test]}\n    split: {b: 1}\n",
            "routes[1].match",
        ),
        (
            "  - name: a\n    match: {headers: {x-a: \"1\", x-b: \"2\"}, methods: [GET, POST]}\n    split: {a: 1}\n  - name: b\n    match: {headers: {x-b: \"2\", x-a: \"1\"}, methods: [post, get]}\n    split: {b: 1}\n",
            "routes[1].match",
        ),
        (
            "  - name: a\n    split: {a: 1}\n    sticky: {store: {type: memory}}\n",
            "routes[0].sticky.store",
        ),
        (
            "  - name: a\n    split: {a: 1}\n    sticky: {ttl: 9d}\n",
            "routes[0].sticky.ttl",
        ),
    ];
    for (yaml, path) in cases {
        let err = load(yaml)
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{yaml}"));
        assert!(
            err.contains(path),
            "{path} not named in:\n{err}\nfor:\n{yaml}"
        );
        assert!(err.contains("line "), "no line in:\n{err}");
    }
}

#[test]
fn cookies_default_to_one_a_route_and_its_path() {
    let cfg = load(
        "  - name: api\n    match: {hosts: [x.test], path_prefix: /v1/}\n    split: {a: 1}\n  - name: web\n    match: {hosts: [x.test]}\n    split: {b: 1}\n  - name: own\n    match: {hosts: [y.test], path_prefix: /y}\n    split: {b: 1}\n    sticky: {cookie: mine, path: /, ttl: 2h}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s: Vec<_> = cfg
        .routes
        .iter()
        .map(|r| {
            (
                r.sticky.cookie_name.as_str().to_owned(),
                r.sticky.path.clone(),
                r.sticky.ttl.secs(),
            )
        })
        .collect();
    assert_eq!(
        s,
        [
            ("switchyard_api".to_owned(), "/v1".to_owned(), 3600),
            ("switchyard_web".to_owned(), "/".to_owned(), 3600),
            ("mine".to_owned(), "/".to_owned(), 7200),
        ]
    );
    assert!(cfg.routes.iter().all(|r| r.bound));
    // Header pins of one name on hosts that never meet are fine.
    load("  - name: a\n    match: {hosts: [a.test]}\n    split: {a: 1}\n    sticky: {type: header, header: x-pin}\n  - name: b\n    match: {hosts: [b.test]}\n    split: {b: 1}\n    sticky: {type: header, header: x-pin}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    // A route that keeps a host of its own is reachable.
    load("  - name: a\n    match: {hosts: [x.test]}\n    split: {a: 1}\n  - name: b\n    match: {hosts: [x.test, y.test]}\n    split: {b: 1}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    // Two routes may share a cookie name where no request carries both.
    load("  - name: a\n    match: {hosts: [a.test]}\n    split: {a: 1}\n    sticky: {cookie: pin}\n  - name: b\n    match: {hosts: [b.test]}\n    split: {b: 1}\n    sticky: {cookie: pin}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    load("  - name: a\n    match: {path_prefix: /a}\n    split: {a: 1}\n    sticky: {cookie: pin}\n  - name: b\n    match: {path_prefix: /ab}\n    split: {b: 1}\n    sticky: {cookie: pin}\n")
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn groups_hold_no_weights_under_routes_and_need_them_without() {
    let text = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:K]\ngroups:\n  a:\n    weight: 3\n    targets: [{address: 10.0.0.1:80}]\nroutes:\n  - name: r\n    split: {a: 1}\n";
    let err = load_test_config(text).err().unwrap_or_default();
    assert!(
        err.contains("groups.a.weight") && err.contains("split"),
        "{err}"
    );
    let without = text
        .replace("    weight: 3\n", "")
        .replace("routes:\n  - name: r\n    split: {a: 1}\n", "");
    let err = load_test_config(&without).err().unwrap_or_default();
    assert!(
        err.contains("groups.a.weight") && err.contains("required"),
        "{err}"
    );
}
