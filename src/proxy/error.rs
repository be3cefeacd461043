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
}

/// Which side a failure is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream(DownstreamErrorKind),
    Upstream(UpstreamErrorKind),
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::NoTarget => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamConnect | ProxyError::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn side(self) -> Side {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::UnsupportedTransferCoding
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge => Side::Downstream(DownstreamErrorKind::BadRequest),
            ProxyError::NoTarget => Side::Downstream(DownstreamErrorKind::NoTarget),
            ProxyError::UpstreamConnect => Side::Upstream(UpstreamErrorKind::Connect),
            ProxyError::ConnectTimeout => Side::Upstream(UpstreamErrorKind::ConnectTimeout),
            ProxyError::ResponseTimeout => Side::Upstream(UpstreamErrorKind::ResponseTimeout),
            ProxyError::UpstreamProtocol => Side::Upstream(UpstreamErrorKind::Protocol),
        }
    }

    /// Classifies an error of the upstream client, and says whether the
    /// upstream closed the connection before sending any of a response (which
    /// an idempotent request may be retried after).
    pub fn classify(e: &hyper_util::client::legacy::Error) -> (Self, bool) {
        let mut timed_out = false;
        let mut closed_early = false;
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            }
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                closed_early |= h.is_incomplete_message() || h.is_canceled();
            }
            source = s.source();
        }
        let kind = match (e.is_connect(), timed_out) {
            (true, true) => ProxyError::ConnectTimeout,
            (true, false) => ProxyError::UpstreamConnect,
            (false, _) => ProxyError::UpstreamProtocol,
        };
        (kind, closed_early)
    }
}
