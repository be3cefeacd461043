//! Micro-benchmarks of the per-request pieces: cookie encode and verify (valid,
//! tampered, garbage), the sticky decision, and target choice.
//! Run: `cargo bench --bench hot_path`. Quote ratios, not absolute times.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::assign::{Pin, RequestView, decide, read_cookie};
use switchyard::config::{self, StaticKeys, ValidateOptions};
use switchyard::metrics::Metrics;
use switchyard::state::{LiveState, Snapshot};

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
    let valid = snap.codec.encode(&pin);
    let mut tampered = valid.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap_or_default();

    c.bench_function("cookie_encode", |b| {
        let mut out = String::with_capacity(256);
        b.iter(|| {
            out.clear();
            snap.codec.encode_into(black_box(&pin), &mut out);
        })
    });
    c.bench_function("cookie_verify_valid", |b| {
        b.iter(|| snap.codec.verify(black_box(&valid)))
    });
    c.bench_function("cookie_verify_tampered", |b| {
        b.iter(|| snap.codec.verify(black_box(&tampered)))
    });
    c.bench_function("cookie_verify_garbage", |b| {
        b.iter(|| snap.codec.verify(black_box("not-a-cookie-at-all")))
    });
    c.bench_function("decide_sticky", |b| {
        b.iter(|| {
            let view = RequestView {
                cookie: read_cookie(&snap.codec, Some(black_box(valid.as_str()))),
                ..Default::default()
            };
            decide(&snap, &view, now + 10, &mut || [7; 16])
        })
    });
    c.bench_function("decide_new_client", |b| {
        let view = RequestView::default();
        let mut n = 0u128;
        b.iter(|| {
            n += 1;
            decide(&snap, black_box(&view), now, &mut || n.to_be_bytes())
        })
    });
    c.bench_function("pick_target", |b| {
        b.iter(|| {
            switchyard::balance::pick_random(
                black_box(&snap.groups[0]),
                switchyard::health::now_ms(),
                std::time::Duration::ZERO,
                &[],
            )
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
