//! Request ids and W3C trace context, settled once per request before it is
//! admitted, so that every answer (the proxy's own refusals included) carries
//! the same id in its log line and its echo.
//!
//! - Request id (`request_id.header`, default `X-Request-Id`): kept when a
//!   peer in `trusted_proxies` sent one that is short and printable, else a
//!   fresh one (128 random bits, hex) replaces whatever the client sent.
//! - `traceparent`: forwarded untouched (with `tracestate`) when it is one
//!   valid header; otherwise both are dropped and, with
//!   `trace_context.start`, a fresh one begins a trace.

use http::header::HeaderValue;
use http::{HeaderMap, HeaderName};

use crate::config::{RequestIdSettings, TraceContext};

/// Longest request id kept from a trusted peer.
const MAX_KEPT_ID: usize = 200;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

thread_local! {
    /// wyrand's state, seeded from the OS once per thread: ids need to be
    /// unpredictable enough never to collide, not secret, and the request
    /// path takes no lock and no syscall for them.
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new(rand::random());
}

/// The next 64 random bits of this thread's generator (wyrand).
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    })
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let r = next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    out
}

/// A trace id as 32 lowercase hex digits.
pub type TraceId = [u8; 32];

/// What a request is known by.
#[derive(Debug, Default)]
pub(super) struct Ids {
    pub request_id: Option<HeaderValue>,
    /// The proxy made `request_id` (it was not kept from a peer).
    pub generated: bool,
    pub trace_id: Option<TraceId>,
}

/// Settles the request's ids in its headers (as the upstream will see them).
pub(super) fn settle(
    request_id: Option<&RequestIdSettings>,
    trace: TraceContext,
    h: &mut HeaderMap,
    trusted_peer: impl FnOnce() -> bool,
) -> Ids {
    let (request_id, generated) = match request_id {
        Some(s) => {
            let (id, made) = settle_request_id(&s.header, h, trusted_peer);
            (Some(id), made)
        }
        None => (None, false),
    };
    Ids {
        request_id,
        generated,
        trace_id: settle_trace(trace, h),
    }
}

fn settle_request_id(
    name: &HeaderName,
    h: &mut HeaderMap,
    trusted_peer: impl FnOnce() -> bool,
) -> (HeaderValue, bool) {
    let mut sent = h.get_all(name).iter();
    if let (Some(v), None) = (sent.next(), sent.next())
        && keepable(v.as_bytes())
        && trusted_peer()
    {
        return (v.clone(), false);
    }
    let fresh = fresh_request_id();
    h.insert(name.clone(), fresh.clone());
    (fresh, true)
}

fn keepable(id: &[u8]) -> bool {
    (1..=MAX_KEPT_ID).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

fn settle_trace(trace: TraceContext, h: &mut HeaderMap) -> Option<TraceId> {
    let mut sent = h.get_all(&TRACEPARENT).iter();
    let (first, more) = (sent.next(), sent.next().is_some());
    if let (Some(v), false) = (first, more)
        && let Some(id) = trace_id_of(v.as_bytes())
    {
        return Some(id);
    }
    if first.is_some() {
        h.remove(&TRACEPARENT);
    }
    // A tracestate belongs to the traceparent it came with (W3C 3.3.1): it
    // goes with a bad one, and means nothing beside a fresh one.
    h.remove(&TRACESTATE);
    if !trace.start {
        return None;
    }
    let (trace_id, parent) = loop {
        let t: [u8; 16] = random();
        let p: [u8; 8] = random();
        if t != [0; 16] && p != [0; 8] {
            break (t, p);
        }
    };
    let mut value = [0u8; 55];
    value[..3].copy_from_slice(b"00-");
    hex_into(&mut value[3..35], &trace_id);
    value[35] = b'-';
    hex_into(&mut value[36..52], &parent);
    value[52..].copy_from_slice(if trace.sampled { b"-01" } else { b"-00" });
    let mut id = [0u8; 32];
    id.copy_from_slice(&value[3..35]);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(value)) {
        h.insert(TRACEPARENT.clone(), v);
    }
    Some(id)
}

/// The trace id of a valid `traceparent` (W3C Trace Context level 1):
/// `version-traceid-parentid-flags`, lowercase hex, no id all zeros, version
/// `ff` forbidden; a later version may add fields after a `-`.
pub fn trace_id_of(v: &[u8]) -> Option<TraceId> {
    let lower_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    let fields_ok = [version, trace, parent, flags].iter().all(|f| lower_hex(f));
    let zero = |s: &[u8]| s.iter().all(|&b| b == b'0');
    let length_ok = match version {
        b"00" => v.len() == 55,
        _ => v.len() == 55 || v[55] == b'-',
    };
    if !fields_ok || version == b"ff" || zero(trace) || zero(parent) || !length_ok {
        return None;
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(trace);
    Some(id)
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// A fresh request id: 128 random bits as 32 hex digits. Its bytes live in
/// one allocation that every clone (upstream, echo, log) shares.
fn fresh_request_id() -> HeaderValue {
    let mut hex = [0u8; 32];
    hex_into(&mut hex, &random::<16>());
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(hex))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_checked_to_the_letter() {
        assert_eq!(
            trace_id_of(VALID.as_bytes()).map(|t| t.to_vec()),
            Some(b"4bf92f3577b34da6a3ce929d0e0e4736".to_vec())
        );
        let future = format!("cc{}-what-comes-later", &VALID[2..]);
        assert!(
            trace_id_of(future.as_bytes()).is_some(),
            "a later version may add fields"
        );
        let bad = [
            "",
            &VALID[..54],
            &format!("{VALID}-x"),
            &VALID.replace("4bf9", "4BF9"),
            &VALID.replacen("00-", "ff-", 1),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            &VALID.replace('-', "_"),
            &VALID.replace("01", "0g"),
            &format!("cc{}x", &VALID[2..]),
        ];
        for b in bad {
            assert_eq!(trace_id_of(b.as_bytes()), None, "{b:?}");
        }
    }

    #[test]
    fn a_valid_trace_passes_untouched_and_a_bad_one_is_replaced() {
        let on = TraceContext {
            start: true,
            sampled: false,
        };
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(VALID));
        h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let id = settle_trace(on, &mut h);
        assert_eq!(h["traceparent"], VALID);
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(
            id.map(|i| i.to_vec()),
            Some(VALID.as_bytes()[3..35].to_vec())
        );

        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("00-zz-yy-01"));
        h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let id = settle_trace(on, &mut h);
        let fresh = h["traceparent"].as_bytes().to_vec();
        assert_eq!(trace_id_of(&fresh), id, "{fresh:?}");
        assert!(fresh.ends_with(b"-00"));
        assert!(
            !h.contains_key("tracestate"),
            "a bad parent's state goes with it"
        );

        let mut h = HeaderMap::new();
        h.append("traceparent", HeaderValue::from_static(VALID));
        h.append("traceparent", HeaderValue::from_static(VALID));
        let off = TraceContext {
            start: false,
            sampled: false,
        };
        assert_eq!(settle_trace(off, &mut h), None);
        assert!(!h.contains_key("traceparent"), "two parents are no parent");
    }

    #[test]
    fn request_ids_are_kept_only_from_trusted_peers() {
        let name = HeaderName::from_static("x-request-id");
        let mut h = HeaderMap::new();
        h.insert(&name, HeaderValue::from_static("abc-123"));
        let (kept, made) = settle_request_id(&name, &mut h, || true);
        assert_eq!((kept.to_str().ok(), made), (Some("abc-123"), false));
        let (fresh, made) = settle_request_id(&name, &mut h, || false);
        assert!(made);
        assert_eq!(fresh.len(), 32);
        assert_eq!(h[&name], fresh);
        let (other, _) = settle_request_id(&name, &mut HeaderMap::new(), || true);
        assert_ne!(fresh, other);
        // Each hostile value is really in the header, as a client can send
        // it (no DEL: neither parser nor HeaderValue lets one in).
        for hostile in [&b"a b"[..], b"id\xff", "a".repeat(201).as_bytes()] {
            let mut h = HeaderMap::new();
            let v = HeaderValue::from_bytes(hostile).unwrap_or_else(|e| panic!("{hostile:?}: {e}"));
            h.insert(&name, v);
            let (got, made) = settle_request_id(&name, &mut h, || true);
            assert!(made && got.len() == 32, "{hostile:?} is replaced");
            assert_ne!(h[&name].as_bytes(), hostile, "{hostile:?} left in place");
        }
    }
}
