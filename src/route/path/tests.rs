//! The path normalizer: the cases origins disagree on, each with its
//! verdict, and properties over arbitrary paths: normalizing is idempotent,
//! keeps the query's side untouched, and yields a valid request target.

use proptest::prelude::*;

use super::*;
use crate::config::PathSettings;

fn norm(p: &str) -> Result<String, PathError> {
    normalize(p, &PathSettings::default()).map(Cow::into_owned)
}

fn with(p: &str, f: impl FnOnce(&mut PathSettings)) -> Result<String, PathError> {
    let mut s = PathSettings::default();
    f(&mut s);
    normalize(p, &s).map(Cow::into_owned)
}

#[test]
fn spellings_of_another_path_become_that_path() {
    for (given, want) in [
        ("/api/../admin", "/admin"),
        ("/%61pi/x", "/api/x"),
        ("/x/../api/y", "/api/y"),
        ("/%2e%2e/admin", "/admin"),
        ("/api/%2E/x", "/api/x"),
        ("//api//x", "/api/x"),
        ("/./api/./x/.", "/api/x/"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../x", "/x"),
        ("/%7Euser/%41%5a", "/~user/AZ"),
        ("/a%2db_c", "/a-b_c"),
    ] {
        assert_eq!(norm(given).as_deref(), Ok(want), "{given}");
    }
}

#[test]
fn escapes_that_are_not_unreserved_stay_uppercased() {
    assert_eq!(norm("/a%20b/%e2%82%ac").as_deref(), Ok("/a%20b/%E2%82%AC"));
    assert_eq!(
        norm("/100%25").as_deref(),
        Ok("/100%25"),
        "%25 is not decoded"
    );
    assert_eq!(
        norm("/%252e%252e/x").as_deref(),
        Ok("/%252e%252e/x"),
        "no double decoding"
    );
}

#[test]
fn what_is_refused_by_default() {
    for (given, why) in [
        ("/a%zz", PathError::BadEscape),
        ("/a%4", PathError::BadEscape),
        ("/a%", PathError::BadEscape),
        ("/a%00b", PathError::Nul),
        ("/api%2F..%2Fadmin", PathError::EscapedSlash),
        ("/a%2fb", PathError::EscapedSlash),
        ("/a%5Cb", PathError::EscapedSlash),
        ("/a\\..\\admin", PathError::Backslash),
    ] {
        assert_eq!(norm(given), Err(why), "{given}");
    }
}

#[test]
fn the_settings_change_what_they_name() {
    assert_eq!(
        with("/a%2fb", |s| s.escaped_slashes = EscapedSlashes::Keep).as_deref(),
        Ok("/a%2Fb")
    );
    assert_eq!(
        with("/api%2F..%2Fadmin", |s| s.escaped_slashes =
            EscapedSlashes::Decode)
        .as_deref(),
        Ok("/admin")
    );
    assert_eq!(
        with("/a\\b", |s| s.backslash = Backslash::Keep).as_deref(),
        Ok("/a\\b")
    );
    assert_eq!(
        with("/a\\..\\b", |s| s.backslash = Backslash::Slash).as_deref(),
        Ok("/b")
    );
    assert_eq!(
        with("//a//b", |s| s.merge_slashes = false).as_deref(),
        Ok("//a//b")
    );
    assert_eq!(
        with("/a/../b", |s| s.normalize = false).as_deref(),
        Ok("/a/../b")
    );
    assert_eq!(
        with("/a%00", |s| s.escaped_slashes = EscapedSlashes::Keep),
        Err(PathError::Nul)
    );
}

#[test]
fn a_normal_path_is_borrowed_and_star_is_left_alone() {
    let s = PathSettings::default();
    for p in ["/", "/api/orders", "/a.b/c..d/.e", "/a-b_c~d", "*"] {
        assert!(matches!(normalize(p, &s), Ok(Cow::Borrowed(_))), "{p}");
    }
}

fn settings() -> impl Strategy<Value = PathSettings> {
    (
        any::<bool>(),
        prop_oneof![
            Just(EscapedSlashes::Reject),
            Just(EscapedSlashes::Keep),
            Just(EscapedSlashes::Decode)
        ],
        prop_oneof![
            Just(Backslash::Reject),
            Just(Backslash::Keep),
            Just(Backslash::Slash)
        ],
    )
        .prop_map(|(merge_slashes, escaped_slashes, backslash)| PathSettings {
            normalize: true,
            merge_slashes,
            escaped_slashes,
            backslash,
        })
}

/// Paths built from the pieces that matter: slashes, dots, escapes of
/// every kind, backslashes and plain characters.
fn paths() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("\\".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("%5c".to_owned()),
        Just("%25".to_owned()),
        Just("%41".to_owned()),
        Just("%7e".to_owned()),
        Just("%20".to_owned()),
        Just("%".to_owned()),
        "[a-z]{1,3}",
        "%[0-9a-fA-F]{2}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

/// Routes on path prefixes, an exact path and a regex, to ask which one a
/// normalized path takes.
fn route_table() -> &'static crate::route::RouteTable {
    static TABLE: std::sync::OnceLock<crate::route::RouteTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let yaml = "  a:\n    targets: [{address: 10.0.0.1:80}]\n\
                routes:\n\
                \x20 - {name: admin, match: {path: /admin}, split: {a: 1}}\n\
                \x20 - {name: api, match: {path_prefix: /api/}, split: {a: 1}}\n\
                \x20 - {name: img, match: {path_regex: '/[a-z]+/img/.*'}, split: {a: 1}}\n\
                \x20 - {name: web, split: {a: 1}}\n";
        let cfg = crate::assign::tests::config_with(yaml);
        crate::route::RouteTable::new(&cfg.routes)
    })
}

fn route_of(table: &crate::route::RouteTable, path: &str) -> Option<usize> {
    let headers = http::HeaderMap::new();
    table.find(&crate::route::RequestFacts {
        host: "app",
        path,
        method: &http::Method::GET,
        headers: &headers,
    })
}

/// How an aggressive origin reads a path (nginx's location matching, IIS):
/// every escape decoded, `\\` read as `/`, slashes merged, dot segments
/// resolved.
fn origin_view(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let byte = match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                i += 2;
                h << 4 | l
            }
            (c, _, _) => c,
        };
        out.push(if byte == b'\\' { b'/' } else { byte });
        i += 1;
    }
    String::from_utf8_lossy(&remove_dot_segments(&merge_slashes(&out))).into_owned()
}

proptest! {
    // The count `proxy_protocol`'s guard test holds PROPTEST_CASES to.
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn normalizing_twice_gives_what_once_gave(p in paths(), s in settings()) {
        if let Ok(once) = normalize(&p, &s) {
            let twice = normalize(&once, &s);
            prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()), "from {}", p);
            prop_assert!(once.starts_with('/'));
            prop_assert!(http::uri::PathAndQuery::try_from(once.as_ref()).is_ok(), "{}", once);
            if s.merge_slashes {
                prop_assert!(!once.contains("//"), "{}", once);
            }
            let segments: Vec<&str> = once.split('/').collect();
            prop_assert!(!segments.contains(&".") && !segments.contains(&".."), "{}", once);
        }
    }

    /// The route of what the upstream receives, normalized again (as an
    /// origin that normalizes reads it), is the route that took the request.
    #[test]
    fn an_origin_that_normalizes_reads_the_route_the_proxy_chose(
        p in paths(), s in settings(), prefix in prop_oneof![Just(""), Just("/api"), Just("/admin"), Just("/x/img")],
    ) {
        let table = route_table();
        let p = format!("{prefix}{p}");
        if let Ok(forwarded) = normalize(&p, &s) {
            let origin_reads = normalize(&forwarded, &s).map(Cow::into_owned);
            prop_assert_eq!(origin_reads.as_deref(), Ok(forwarded.as_ref()));
            prop_assert_eq!(route_of(table, &forwarded), route_of(table, origin_reads.as_deref().unwrap_or("")));
        }
    }

    /// With the defaults, even an origin that decodes every escape and
    /// reads `\\` as `/` sees a path of the route the proxy chose.
    #[test]
    fn by_default_no_spelling_reaches_another_route_at_an_aggressive_origin(
        p in paths(), prefix in prop_oneof![Just(""), Just("/api"), Just("/admin"), Just("/x")],
    ) {
        let table = route_table();
        let p = format!("{prefix}{p}");
        if let Ok(forwarded) = normalize(&p, &PathSettings::default()) {
            let seen = origin_view(&forwarded);
            prop_assert_eq!(route_of(table, &forwarded), route_of(table, &seen), "{} -> {} -> {}", p, forwarded, seen);
        }
    }
}
