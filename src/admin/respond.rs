//! The admin listener's short answers: plain text and JSON.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::Full;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// A plain-text answer.
pub(super) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON answer, pretty-printed.
pub(super) fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `None` when `headers` carry `Authorization: Bearer <token>` (compared
/// in constant time); else the 401 to answer, with `WWW-Authenticate`.
pub(super) fn unauthorized(headers: &HeaderMap, token: &Secret) -> Option<Response<Full<Bytes>>> {
    // The scheme's name is case-insensitive (RFC 9110 §11.1).
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return None;
    }
    let mut r = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(r)
}
