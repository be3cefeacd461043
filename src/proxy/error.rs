//! What can go wrong on the request path, and what the client is told.

use std::error::Error as _;

use http::StatusCode;

use crate::metrics::{DownstreamErrorKind, UpstreamErrorKind};

/// A request the proxy answers itself. Each maps to one status and one metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("not implemented: transfer coding other than chunked")]
    UnsupportedTransferCoding,
    #[error("no upstream target is available")]
    NoTarget,
    #[error("not found: no route takes this request")]
    NoRoute,
    #[error("URI too long")]
    UriTooLong,
    #[error("request header fields too large")]
    HeadersTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("bad gateway: upstream connection failed")]
    UpstreamConnect,
    #[error("gateway timeout: upstream connect timed out")]
    ConnectTimeout,
    #[error("gateway timeout: upstream did not answer in time")]
    ResponseTimeout,
    #[error("bad gateway: upstream sent an invalid or incomplete response")]
    UpstreamProtocol,
    #[error("bad gateway: upstream TLS handshake failed")]
    UpstreamTls,
    #[error("method not allowed: CONNECT is not proxied")]
    ConnectNotAllowed,
    #[error("not implemented: only the websocket protocol can be upgraded to")]
    UpgradeNotSupported,
    #[error(
        "bad gateway: this group's upstreams speak HTTP/2, which cannot carry an HTTP/1.1 upgrade"
    )]
    UpgradeToH2Upstream,
    #[error("moved to HTTPS")]
    RedirectToHttps,
    #[error("request timeout: the request body stalled")]
    ClientBodyTimeout,
    #[error(
        "bad gateway: the upstream used a transfer coding (not chunked) that this client's HTTP version cannot carry"
    )]
    UntransferableCoding,
}

/// A client body that was malformed or cut off.
pub const BODY_BROKEN: ProxyError = ProxyError::BadRequest("malformed or incomplete request body");

/// Whose fault a failure is (DESIGN §10): the client's or the upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Downstream(DownstreamErrorKind),
    Upstream(UpstreamErrorKind),
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::NoTarget => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamConnect
            | ProxyError::UpstreamProtocol
            | ProxyError::UpstreamTls
            | ProxyError::UpgradeToH2Upstream
            | ProxyError::UntransferableCoding => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpgradeNotSupported => StatusCode::NOT_IMPLEMENTED,
            ProxyError::RedirectToHttps => StatusCode::PERMANENT_REDIRECT,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The reason written in the access log's `error` field.
    pub fn label(self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::UnsupportedTransferCoding => "unsupported_transfer_coding",
            ProxyError::NoTarget => "no_target",
            ProxyError::NoRoute => "no_route",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::HeadersTooLarge => "headers_too_large",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::UpstreamConnect => "upstream_connect",
            ProxyError::ConnectTimeout => "connect_timeout",
            ProxyError::ResponseTimeout => "upstream_timeout",
            ProxyError::UpstreamProtocol => "upstream_protocol",
            ProxyError::UpstreamTls => "upstream_tls",
            ProxyError::ConnectNotAllowed => "connect_not_allowed",
            ProxyError::UpgradeNotSupported => "upgrade_not_supported",
            ProxyError::UpgradeToH2Upstream => "upgrade_to_h2_upstream",
            ProxyError::RedirectToHttps => "redirect_https",
            ProxyError::ClientBodyTimeout => "client_body_timeout",
            ProxyError::UntransferableCoding => "untransferable_coding",
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::UnsupportedTransferCoding
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge
            | ProxyError::ConnectNotAllowed
            | ProxyError::UpgradeNotSupported => Fault::Downstream(DownstreamErrorKind::BadRequest),
            ProxyError::RedirectToHttps => Fault::Downstream(DownstreamErrorKind::Redirect),
            ProxyError::ClientBodyTimeout => Fault::Downstream(DownstreamErrorKind::ClientTimeout),
            ProxyError::NoTarget => Fault::Downstream(DownstreamErrorKind::NoTarget),
            ProxyError::NoRoute => Fault::Downstream(DownstreamErrorKind::NoRoute),
            ProxyError::UpstreamConnect => Fault::Upstream(UpstreamErrorKind::Connect),
            ProxyError::ConnectTimeout => Fault::Upstream(UpstreamErrorKind::ConnectTimeout),
            ProxyError::ResponseTimeout => Fault::Upstream(UpstreamErrorKind::ResponseTimeout),
            ProxyError::UpstreamProtocol
            | ProxyError::UpgradeToH2Upstream
            | ProxyError::UntransferableCoding => Fault::Upstream(UpstreamErrorKind::Protocol),
            ProxyError::UpstreamTls => Fault::Upstream(UpstreamErrorKind::Tls),
        }
    }

    /// The text of the most specific cause, for the log line of a failure
    /// (e.g. which certificate check failed).
    pub fn root_cause(e: &hyper_util::client::legacy::Error) -> String {
        let mut last = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            last = match s.downcast_ref::<std::io::Error>().and_then(rustls_inside) {
                Some(tls) => return tls.to_string(),
                None => s.to_string(),
            };
            source = s.source();
        }
        last
    }

    /// Classifies an error of the upstream client, and says whether the
    /// upstream closed the connection before sending any of a response (which
    /// an idempotent request may be retried after).
    /// [`Self::classify`] for a native connection's error.
    pub fn classify_native(e: &crate::upstream::NativeError) -> (Self, bool) {
        use crate::upstream::NativeError;
        match e {
            NativeError::ConnectTimeout => (ProxyError::ConnectTimeout, false),
            NativeError::ResponseTimeout => (ProxyError::ResponseTimeout, false),
            NativeError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                (ProxyError::ConnectTimeout, false)
            }
            NativeError::Connect(_) => (ProxyError::UpstreamConnect, false),
            // The client's body failed or did not match its length: never
            // the upstream's doing.
            NativeError::Body(_) | NativeError::BodyLength => (BODY_BROKEN, false),
            e => (ProxyError::UpstreamProtocol, e.closed_early()),
        }
    }

    pub fn classify(e: &hyper_util::client::legacy::Error) -> (Self, bool) {
        let mut timed_out = false;
        let mut closed_early = false;
        let mut tls = false;
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
                // tokio-rustls reports handshake failures as io errors
                // wrapping the rustls error.
                tls |= rustls_inside(io).is_some();
            }
            tls |= s.is::<rustls::Error>();
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                closed_early |= h.is_incomplete_message() || h.is_canceled();
            }
            source = s.source();
        }
        let kind = match (e.is_connect(), timed_out) {
            (true, _) if tls => ProxyError::UpstreamTls,
            (true, true) => ProxyError::ConnectTimeout,
            (true, false) => ProxyError::UpstreamConnect,
            (false, _) => ProxyError::UpstreamProtocol,
        };
        (kind, closed_early)
    }
}

/// The rustls error an io error wraps, however deep: tokio-rustls and
/// hyper-rustls each wrap the handshake's error in an io error of their own.
fn rustls_inside(io: &std::io::Error) -> Option<&rustls::Error> {
    let inner = io.get_ref()?;
    inner.downcast_ref::<rustls::Error>().or_else(|| {
        inner
            .downcast_ref::<std::io::Error>()
            .and_then(rustls_inside)
    })
}
