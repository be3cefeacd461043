//! What the proxy writes itself: its short error answers, the redirect to
//! HTTPS, and the `Set-Cookie` that pins a client.

use std::fmt::Write as _;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderName, Request, Response};

use super::logged::Outcome;
use super::{ConnContext, ProxyBody, ProxyError};
use crate::assign::Pin;
use crate::config::PinCarrier;
use crate::state::{Route, Snapshot};

thread_local! {
    /// Where a `Set-Cookie` value is written before it is copied out.
    static COOKIE_SCRATCH: std::cell::RefCell<String> =
        std::cell::RefCell::new(String::with_capacity(256));
}

impl ConnContext {
    /// Answers the plain listener with a permanent redirect to the same URL on
    /// the HTTPS listener (`tls.redirect_http`). 308 keeps method and body.
    pub(super) fn redirect<B>(
        &self,
        snap: &Snapshot,
        req: &Request<B>,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let Ok(host) = super::headers::request_host(req) else {
            // Admitted requests have a Host; this is only belt and braces.
            return self.refuse(snap, ProxyError::BadRequest("missing Host"), outcome);
        };
        let port = match self
            .shared
            .https_port
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => 443,
            p => p,
        };
        let mut location = String::with_capacity(128);
        location.push_str("https://");
        location.push_str(host.host());
        if port != 443 {
            let _ = write!(location, ":{port}");
        }
        location.push_str(req.uri().path_and_query().map_or("/", PathAndQuery::as_str));
        let mut resp = self.refuse(snap, ProxyError::RedirectToHttps, outcome);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }

    /// The header that hands `pin` to the client on `route`: `Set-Cookie`
    /// (without `Max-Age` for a session cookie), or the route's pin header.
    pub(super) fn hand_pin(
        &self,
        route: &Route,
        pin: &Pin,
        now: u32,
    ) -> Option<(HeaderName, HeaderValue)> {
        let sticky = &route.sticky;
        COOKIE_SCRATCH.with_borrow_mut(|v| {
            v.clear();
            let name = match &sticky.carrier {
                PinCarrier::Header(name) => {
                    route.codec.encode_into(pin, v);
                    name.clone()
                }
                PinCarrier::Cookie => {
                    v.push_str(sticky.cookie_name.as_str());
                    v.push('=');
                    route.codec.encode_into(pin, v);
                    if !sticky.session_cookie {
                        let _ = write!(v, "; Max-Age={}", pin.expires_at.saturating_sub(now));
                    }
                    v.push_str(&route.cookie_attrs);
                    if sticky.secure.unwrap_or(self.tls) {
                        v.push_str("; Secure");
                    }
                    header::SET_COOKIE
                }
            };
            // One allocation of the exact size: a `Bytes` made from a string
            // with room to spare would allocate a second time for its header.
            HeaderValue::from_str(v).ok().map(|v| (name, v))
        })
    }
}

/// A short plain-text answer written by the proxy itself.
pub fn error_response(e: ProxyError) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(format!("{e}\n")));
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(
        e,
        ProxyError::BadRequest(_)
            | ProxyError::UnsupportedTransferCoding
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge
            | ProxyError::ClientBodyTimeout
    ) {
        // The framing of a bad request cannot be trusted for the next one.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if e == ProxyError::NoTarget {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}
