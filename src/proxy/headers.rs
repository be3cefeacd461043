//! Header hygiene at the edge: Host checks, hop-by-hop removal, the sticky
//! cookie's extraction and removal, and the X-Forwarded-* family.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Request, Version};

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Refuses a transfer coding other than plain `chunked`: hyper decodes only the
/// chunking, so a `gzip, chunked` body would reach the upstream re-framed with
/// its gzip coding silently dropped. (Content-Length next to Transfer-Encoding,
/// the classic smuggling pair, never gets here: hyper drops the Content-Length
/// and reads the body as chunked, as RFC 9112 §6.3 says.)
pub fn check_framing<B>(req: &Request<B>) -> Result<(), super::ProxyError> {
    let mut te = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = te.next() else {
        return Ok(());
    };
    if te.next().is_some()
        || !first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    {
        return Err(super::ProxyError::UnsupportedTransferCoding);
    }
    Ok(())
}

/// Leaves one `Content-Length` line in its plain decimal form (`005` and
/// repeated equal lines arrive from clients; upstreams must not see them),
/// or refuses what is no length at all. Untouched in the common case.
pub fn canonical_length(headers: &mut HeaderMap) -> Result<(), super::ProxyError> {
    if crate::h1::head::content_length_is_canonical(headers) {
        return Ok(());
    }
    match crate::h1::head::request_content_length(headers) {
        Ok(Some(n)) => {
            crate::h1::head::set_content_length(headers, n);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(_) => Err(super::ProxyError::BadRequest("invalid Content-Length")),
    }
}

/// Refuses a request over the configured size limits, before anything of it
/// is forwarded. A body without `Content-Length` is limited as it streams.
pub fn check_limits<B>(
    req: &Request<B>,
    limits: &crate::config::Limits,
) -> Result<(), super::ProxyError> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_uri_bytes as usize {
        return Err(super::ProxyError::UriTooLong);
    }
    let h = req.headers();
    if h.len() > limits.max_headers as usize {
        return Err(super::ProxyError::HeadersTooLarge);
    }
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if bytes > limits.max_header_bytes as usize {
        return Err(super::ProxyError::HeadersTooLarge);
    }
    if limits.max_body_bytes > 0 {
        let declared = crate::h1::head::request_content_length(h).ok().flatten();
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            return Err(super::ProxyError::BodyTooLarge);
        }
    }
    Ok(())
}

/// Finds the request's one authority. HTTP/1.x needs exactly one valid `Host`;
/// an absolute URI (and HTTP/2's `:authority`) must agree with it when both are there.
pub fn request_host<B>(req: &Request<B>) -> Result<Authority, &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    let from_header = match host {
        Some(v) => Some(
            Authority::try_from(v.as_bytes())
                .ok()
                .filter(|a| !a.as_str().contains('@'))
                .ok_or("invalid Host header")?,
        ),
        None => None,
    };
    let from_uri = req.uri().authority();
    match (from_header, from_uri) {
        (Some(h), Some(u)) if !same_authority(&h, u, req.uri().scheme()) => {
            Err("Host header disagrees with the request URI")
        }
        (Some(h), _) => Ok(h),
        (None, Some(u)) if req.version() == Version::HTTP_2 => Ok(u.clone()),
        _ => Err("missing Host header"),
    }
}

/// Host names compare without case; a missing port is the scheme's default.
fn same_authority(a: &Authority, b: &Authority, scheme: Option<&http::uri::Scheme>) -> bool {
    let default = if scheme == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    a.host().eq_ignore_ascii_case(b.host())
        && a.port_u16().unwrap_or(default) == b.port_u16().unwrap_or(default)
}

/// Every value of the sticky cookie in the request's `Cookie` headers (HTTP/2
/// clients send one header per cookie), in order.
pub fn sticky_cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// Leaves one `Cookie` header without the sticky cookies (those whose name
/// `is_pin` says is a route's pin, so no pin reaches an upstream), joined
/// with `; ` as HTTP/1.1 requires, or none if nothing remains. Untouched in
/// the common case of one header without a sticky cookie.
pub fn strip_sticky_cookie(headers: &mut HeaderMap, is_pin: impl Fn(&[u8]) -> bool) {
    let values = headers.get_all(header::COOKIE);
    let mut iter = values.iter();
    let Some(first) = iter.next() else { return };
    let single = iter.next().is_none();
    if single {
        match sticky_cookie_in(first.as_bytes(), &is_pin) {
            None => return,
            // The usual returning client: the sticky cookie is all there is.
            Some(_) if !first.as_bytes().contains(&b';') => {
                headers.remove(header::COOKIE);
                return;
            }
            Some(_) => {}
        }
    }
    let mut joined = Vec::new();
    for v in values.iter() {
        for pair in v.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() || sticky_cookie_in(pair, &is_pin).is_some() {
                continue;
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_bytes(&joined)
        && !joined.is_empty()
    {
        headers.insert(header::COOKIE, v);
    }
}

/// The position of the first pair in `header` whose name is a pin's.
fn sticky_cookie_in(header: &[u8], is_pin: &impl Fn(&[u8]) -> bool) -> Option<usize> {
    header.split(|&b| b == b';').position(|pair| {
        let pair = pair.trim_ascii();
        pair.iter()
            .position(|&b| b == b'=')
            .is_some_and(|eq| is_pin(pair[..eq].trim_ascii_end()))
    })
}

/// The transfer codings a response carries besides chunked, as the
/// `Transfer-Encoding` value the proxy sends on (they stay applied to the
/// body; the proxy re-chunks it): `gzip, chunked` for `gzip`. `None` for
/// none or chunked alone, the usual case.
///
/// A `Content-Length` beside a transfer coding is dropped here (RFC 9112
/// §6.3: the coding frames the message; hyper's client keeps the stale
/// length among the headers).
fn transfer_codings(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (values.next(), values.next()) {
        (None, _) => return None,
        (Some(_), _) if headers.contains_key(header::CONTENT_LENGTH) => {
            headers.remove(header::CONTENT_LENGTH);
            return transfer_codings(headers);
        }
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            return None;
        }
        _ => {}
    }
    let mut codings: Vec<&[u8]> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
        .collect();
    if codings
        .last()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
    {
        codings.pop();
    }
    if codings.is_empty() {
        return None;
    }
    codings.push(b"chunked");
    HeaderValue::from_bytes(&codings.join(&b", "[..])).ok()
}

/// Whether a response can go to a client of `version`: transfer codings are
/// HTTP/1.1's alone (HTTP/2 and HTTP/1.0 have no way to carry them).
pub fn deliverable<B>(resp: &http::Response<B>, version: Version) -> bool {
    version == Version::HTTP_11 || !resp.headers().contains_key(header::TRANSFER_ENCODING)
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers, hop_by_hop_present(headers));
}

/// [`strip_hop_by_hop`] for a response on its way to the client: the
/// transfer codings the upstream applied besides chunked stay (as
/// [`transfer_codings`] gives them), and no `Content-Length` stays beside
/// them. Looks nothing up unless `Transfer-Encoding` is there.
pub fn strip_hop_by_hop_response(headers: &mut HeaderMap) {
    let present = hop_by_hop_present(headers);
    let codings = if present & TRANSFER_ENCODING_BIT != 0 {
        transfer_codings(headers)
    } else {
        None
    };
    remove_hop_by_hop(headers, present);
    if let Some(codings) = codings {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::TRANSFER_ENCODING, codings);
    }
}

/// `Transfer-Encoding`'s bit in [`hop_by_hop_present`]'s answer.
const TRANSFER_ENCODING_BIT: u8 = 1 << 5;

/// Which of [`HOP_BY_HOP`] the message has, a bit each.
fn hop_by_hop_present(headers: &HeaderMap) -> u8 {
    // A message carries a handful of headers and few of these: one pass over
    // the names present says which to remove, instead of eight hashed removals.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    present
}

fn remove_hop_by_hop(headers: &mut HeaderMap, present: u8) {
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is Connection. Its usual tokens (`keep-alive`, `close`,
    // `upgrade`) name nothing to remove beyond the list; any other token
    // names a header that must not cross either.
    if present & 1 != 0
        && let Some(conn) = headers.get(header::CONNECTION)
    {
        let named: Vec<HeaderName> = conn
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| t.eq_ignore_ascii_case(h.as_str().as_bytes()))
            })
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (i, h) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(h);
        }
    }
}

/// The peer's address as an `X-Forwarded-For` value: made once per client
/// connection, then shared by every request on it.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    let mut ip = [0u8; 64];
    HeaderValue::from_bytes(fmt_ip(peer, &mut ip)).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Sets X-Forwarded-For/-Proto/-Host. A client's own values are kept (and
/// appended to) only when the peer is a trusted proxy; so is its
/// X-Real-IP, which from anyone else is removed (X-Forwarded-For says who
/// the client is; one lookup, where setting it would cost an insert on
/// every request). `peer` comes from [`peer_value`].
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    trusted: bool,
    host: &Authority,
    proto: &'static str,
) {
    // Three inserts at most: grow the table once, not once per insert.
    headers.reserve(3);
    if trusted {
        let prior: Vec<&[u8]> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let xff = if prior.is_empty() {
            Ok(peer.clone())
        } else {
            let mut v = prior.join(&b", "[..]);
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&v)
        };
        if let Ok(v) = xff {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    } else {
        if headers.contains_key(header::FORWARDED) {
            headers.remove(header::FORWARDED);
        }
        headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
    }
    if !trusted && headers.contains_key(&X_REAL_IP) {
        headers.remove(&X_REAL_IP);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        // The Host header, when it is what `host` came from, is shared, not copied.
        let value = match headers.get(header::HOST) {
            Some(v) if v.as_bytes() == host.as_str().as_bytes() => Ok(v.clone()),
            _ => HeaderValue::from_str(host.as_str()),
        };
        if let Ok(v) = value {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
    }
}

fn fmt_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // An IPv6 address is at most 45 characters: the buffer cannot overflow.
    let _ = write!(cursor, "{}", ip.to_canonical());
    let n = cursor.position() as usize;
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn finds_the_sticky_cookie_in_split_headers() {
        let h = map(&[("cookie", "a=1; sy=old"), ("cookie", "sy=v1.x.y; b=2")]);
        let found: Vec<&str> = sticky_cookies(&h, "sy").collect();
        assert_eq!(found, ["old", "v1.x.y"]);
        assert_eq!(sticky_cookies(&h, "s").count(), 0);
    }

    #[test]
    fn strips_only_the_sticky_cookie_and_joins() {
        let mut h = map(&[("cookie", "a=1; sy=v1.x.y"), ("cookie", "b=2")]);
        strip_sticky_cookie(&mut h, |n| n == b"sy");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut h = map(&[("cookie", "sy=v1")]);
        strip_sticky_cookie(&mut h, |n| n == b"sy");
        assert!(h.get("cookie").is_none());
        let mut h = map(&[("cookie", "sya=1")]);
        strip_sticky_cookie(&mut h, |n| n == b"sy");
        assert_eq!(h["cookie"], "sya=1");
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "s"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-keep", "k"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn a_lone_sticky_cookie_goes_with_its_header_and_keep_alive_names_nothing_extra() {
        let mut h = map(&[("cookie", "sy=v1.abc.def"), ("host", "x")]);
        strip_sticky_cookie(&mut h, |n| n == b"sy");
        assert!(!h.contains_key("cookie"));
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade, close"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-length"));
    }

    #[test]
    fn forwarded_for_is_the_peer_unless_trusted() {
        let host: Authority = "example.com".parse().unwrap_or_else(|_| panic!());
        let peer: IpAddr = "192.0.2.7".parse().unwrap_or_else(|_| panic!());
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        set_forwarded(&mut h, &peer_value(peer), false, &host, "http");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "example.com");
        let mut h = map(&[("x-forwarded-for", "203.0.113.1")]);
        set_forwarded(&mut h, &peer_value(peer), true, &host, "http");
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
    }
}
