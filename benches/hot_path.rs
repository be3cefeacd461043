//! Micro-benchmarks of the per-request pieces: cookie encode and verify (valid,
//! tampered, garbage), the sticky decision, target choice, the request header
//! rewrite, and the native HTTP/1.1 code's request-head parse and
//! response-head write. Before timing, each piece's allocations per call are counted
//! and printed (a counting allocator, so absolute times of allocating pieces are
//! a little higher than under mimalloc in the binary).
//! Route matching is timed over tables of 1, 100 and 10 000 routes (hosts and
//! path prefixes): `route_find/<n>`.
//! Run: `cargo bench --bench hot_path`. Quote ratios, not absolute times.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::assign::{Pin, RequestView, decide, read_cookie};
use switchyard::config::{self, StaticKeys, ValidateOptions};
use switchyard::metrics::Metrics;
use switchyard::proxy::headers;
use switchyard::state::{LiveState, Snapshot};

use http::header::{HeaderMap, HeaderValue};

/// A browser-like request head as hyper hands it over.
fn request_headers(cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("connection", "keep-alive"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if let Ok(v) = HeaderValue::from_str(cookie) {
        h.insert("cookie", v);
    }
    h
}

/// The same browser-like request as it comes off the wire.
const WIRE_HEAD: &[u8] = b"GET /cart?item=42 HTTP/1.1\r\nHost: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0\r\nAccept: text/html,application/xhtml+xml\r\n\
Accept-Encoding: gzip, br\r\nAccept-Language: en-GB,en;q=0.9\r\nConnection: keep-alive\r\n\r\n";

fn parse_head(spans: &mut Vec<switchyard::h1::head::Span>) -> Option<http::request::Parts> {
    let mut buf = bytes::BytesMut::from(WIRE_HEAD);
    switchyard::h1::head::parse_request(&mut buf, 101, spans)
        .ok()
        .flatten()
        .map(|h| h.parts)
}

/// An upstream's answer headers, plus the proxy's Set-Cookie.
fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("server", "nginx/1.22.1"),
        ("date", "Tue, 01 Dec 2026 22:22:50 GMT"),
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "5120"),
        (
            "set-cookie",
            "switchyard=v1.abc.def; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax",
        ),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    h
}

fn write_head(out: &mut bytes::BytesMut, h: &HeaderMap) {
    out.clear();
    switchyard::h1::head::write_response_head(
        out,
        http::StatusCode::OK,
        h,
        switchyard::h1::Framing::Length(5120),
        http::Version::HTTP_11,
        true,
    );
}

/// Allocations one call of `f` makes (after a warm-up call).
fn allocs_per_call(mut f: impl FnMut()) -> u64 {
    f();
    allocation_counter::measure(f).count_total
}

fn snapshot() -> Option<Snapshot> {
    let yaml = "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky: {ttl: 12h, keys: [env:K]}\n\
                groups:\n  blue: {weight: 90, targets: [{address: 10.0.0.1:80}, {address: 10.0.0.2:80}]}\n  \
                green: {weight: 10, targets: [{address: 10.0.0.3:80}]}\n";
    let cfg = config::load_str(
        yaml,
        "bench",
        &StaticKeys(vec![("K", "YmVuY2gta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzJi")]),
        ValidateOptions::default(),
    )
    .ok()?;
    let metrics = Metrics::new(&prometheus::Registry::new()).ok()?;
    Some(Snapshot::build(
        cfg,
        &switchyard::state::Overrides::new(),
        1,
        String::new(),
        &LiveState::default(),
        &metrics,
    ))
}

fn benches(c: &mut Criterion) {
    let Some(snap) = snapshot() else {
        eprintln!("bench config failed to load");
        return;
    };
    let now = 1_800_000_000;
    let Some(pin) = Pin::new(
        [42; 16],
        "blue",
        snap.groups[0].targets[0].id,
        now,
        now + 3600,
    ) else {
        return;
    };
    let valid = snap.routes[0].codec.encode(&pin);
    let mut tampered = valid.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap_or_default();

    let host: http::uri::Authority = http::uri::Authority::from_static("shop.example.com");
    let peer = headers::peer_value(
        "192.0.2.7"
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
    );
    let sticky_cookie = format!("theme=dark; switchyard={valid}");
    let rewrite = |h: &mut HeaderMap| {
        headers::strip_hop_by_hop(h);
        headers::strip_sticky_cookie(h, |n| n == b"switchyard");
        headers::set_forwarded(h, &peer, false, &host, "https");
    };
    let mut out = String::with_capacity(256);
    println!("allocations per call:");
    for (name, n) in [
        (
            "cookie_encode (into a reused buffer)",
            allocs_per_call(|| {
                out.clear();
                snap.routes[0].codec.encode_into(&pin, &mut out);
            }),
        ),
        (
            "cookie_verify_valid",
            allocs_per_call(|| {
                let _ = black_box(snap.routes[0].codec.verify(&valid));
            }),
        ),
        (
            "cookie_verify_tampered",
            allocs_per_call(|| {
                let _ = black_box(snap.routes[0].codec.verify(&tampered));
            }),
        ),
        (
            "cookie_verify_garbage",
            allocs_per_call(|| {
                let _ = black_box(snap.routes[0].codec.verify("not-a-cookie"));
            }),
        ),
        (
            "decide_sticky",
            allocs_per_call(|| {
                let view = RequestView {
                    cookie: read_cookie(&snap.routes[0].codec, Some(valid.as_str())),
                    ..Default::default()
                };
                black_box(decide(
                    &snap.routes[0].routing,
                    &view,
                    now + 10,
                    &mut || [7; 16],
                ));
            }),
        ),
        (
            "decide_new_client",
            allocs_per_call(|| {
                black_box(decide(
                    &snap.routes[0].routing,
                    &RequestView::default(),
                    now,
                    &mut || [9; 16],
                ));
            }),
        ),
        ("rewrite_headers (no sticky cookie; map made outside)", {
            let mut h = request_headers("theme=dark");
            allocation_counter::measure(|| rewrite(&mut h)).count_total
        }),
        ("rewrite_headers (sticky cookie among others)", {
            let mut h = request_headers(&sticky_cookie);
            allocation_counter::measure(|| rewrite(&mut h)).count_total
        }),
        ("h1_parse_request (head into http parts)", {
            let mut spans = Vec::new();
            let _ = parse_head(&mut spans);
            allocation_counter::measure(|| {
                let _ = black_box(parse_head(&mut spans));
            })
            .count_total
        }),
        ("h1_write_response_head (into a reused buffer)", {
            let h = response_headers();
            let mut out = bytes::BytesMut::with_capacity(1024);
            write_head(&mut out, &h);
            allocation_counter::measure(|| write_head(&mut out, &h)).count_total
        }),
    ] {
        println!("  {name:55} {n}");
    }

    c.bench_function("h1_parse_request", |b| {
        let mut spans = Vec::new();
        b.iter(|| black_box(parse_head(&mut spans)))
    });
    c.bench_function("h1_write_response_head", |b| {
        let h = response_headers();
        let mut out = bytes::BytesMut::with_capacity(1024);
        b.iter(|| write_head(&mut out, black_box(&h)))
    });

    c.bench_function("rewrite_headers", |b| {
        b.iter_batched_ref(
            || request_headers("theme=dark"),
            |h| rewrite(h),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("rewrite_headers_sticky", |b| {
        b.iter_batched_ref(
            || request_headers(&sticky_cookie),
            |h| rewrite(h),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("cookie_encode", |b| {
        let mut out = String::with_capacity(256);
        b.iter(|| {
            out.clear();
            snap.routes[0].codec.encode_into(black_box(&pin), &mut out);
        })
    });
    c.bench_function("cookie_verify_valid", |b| {
        b.iter(|| snap.routes[0].codec.verify(black_box(&valid)))
    });
    c.bench_function("cookie_verify_tampered", |b| {
        b.iter(|| snap.routes[0].codec.verify(black_box(&tampered)))
    });
    c.bench_function("cookie_verify_garbage", |b| {
        b.iter(|| {
            snap.routes[0]
                .codec
                .verify(black_box("not-a-cookie-at-all"))
        })
    });
    c.bench_function("decide_sticky", |b| {
        b.iter(|| {
            let view = RequestView {
                cookie: read_cookie(&snap.routes[0].codec, Some(black_box(valid.as_str()))),
                ..Default::default()
            };
            decide(&snap.routes[0].routing, &view, now + 10, &mut || [7; 16])
        })
    });
    c.bench_function("decide_new_client", |b| {
        let view = RequestView::default();
        let mut n = 0u128;
        b.iter(|| {
            n += 1;
            decide(&snap.routes[0].routing, black_box(&view), now, &mut || {
                n.to_be_bytes()
            })
        })
    });
    c.bench_function("pick_target", |b| {
        b.iter(|| {
            switchyard::balance::pick_random(
                black_box(&snap.groups[0]),
                switchyard::clock::now_ms(),
                std::time::Duration::ZERO,
                &[],
            )
        })
    });
}

/// A config of `n` routes: hosts `app<k>.example.com` with ten path
/// prefixes each (`/svc0` .. `/svc9`), then a wildcard and a catch-all.
fn routes_config(n: usize) -> Option<switchyard::config::Config> {
    let mut yaml = String::from(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky: {ttl: 12h, keys: [env:K]}\n\
         groups:\n  blue: {targets: [{address: 10.0.0.1:80}]}\nroutes:\n",
    );
    for i in 0..n.saturating_sub(2) {
        yaml.push_str(&format!(
            "  - {{name: r{i}, match: {{hosts: [app{}.example.com], path_prefix: /svc{}}}, split: {{blue: 1}}}}\n",
            i / 10,
            i % 10
        ));
    }
    if n >= 2 {
        yaml.push_str("  - {name: wild, match: {hosts: [\"*.example.com\"]}, split: {blue: 1}}\n");
    }
    yaml.push_str("  - {name: rest, split: {blue: 1}}\n");
    config::load_str(
        &yaml,
        "bench",
        &StaticKeys(vec![("K", "YmVuY2gta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzJi")]),
        ValidateOptions::default(),
    )
    .map_err(|e| eprintln!("{e}"))
    .ok()
}

fn route_benches(c: &mut Criterion) {
    use switchyard::route::{RequestFacts, RouteTable};
    let headers = HeaderMap::new();
    for n in [1usize, 100, 10_000] {
        let Some(cfg) = routes_config(n) else { return };
        let table = RouteTable::new(&cfg.routes);
        // A host in the middle of the table, its last prefix: the most
        // work an exact host does.
        let host = format!("app{}.example.com", n.saturating_sub(2) / 20);
        let facts = RequestFacts {
            host: &host,
            path: "/svc9/items/42",
            method: &http::Method::GET,
            headers: &headers,
        };
        let n_alloc = allocation_counter::measure(|| {
            black_box(table.find(black_box(&facts)));
        })
        .count_total;
        eprintln!("route_find/{n}: {n_alloc} allocations per call");
        c.bench_function(&format!("route_find/{n}"), |b| {
            b.iter(|| table.find(black_box(&facts)))
        });
    }
}

/// Path normalization (issue 35): an already-normal path must cost a scan
/// and no allocation; one that needs work allocates its new path once.
fn path_benches(c: &mut Criterion) {
    use switchyard::route::path::normalize;
    let s = switchyard::config::PathSettings::default();
    for (name, p) in [
        ("normal", "/api/v1/orders/42/items"),
        ("dotted", "/api/v1/../v2/./orders//42/%69tems"),
    ] {
        let n_alloc = allocs_per_call(|| {
            let _ = black_box(normalize(black_box(p), &s));
        });
        eprintln!("path_normalize/{name}: {n_alloc} allocations per call");
        c.bench_function(&format!("path_normalize/{name}"), |b| {
            b.iter(|| normalize(black_box(p), &s).map(|c| c.len()))
        });
    }
}

criterion_group!(hot_path, benches, route_benches, path_benches);
criterion_main!(hot_path);
