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
            ProxyError::UpstreamConnect | ProxyError::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn side(self) -> Side {
        match self {
            ProxyError::BadRequest(_) | ProxyError::UnsupportedTransferCoding => {
                Side::Downstream(DownstreamErrorKind::BadRequest)
            }
            ProxyError::NoTarget => Side::Downstream(DownstreamErrorKind::NoTarget),
            ProxyError::UpstreamConnect => Side::Upstream(UpstreamErrorKind::Connect),
            ProxyError::ConnectTimeout => Side::Upstream(UpstreamErrorKind::ConnectTimeout),
            ProxyError::ResponseTimeout => Side::Upstream(UpstreamErrorKind::ResponseTimeout),
            ProxyError::UpstreamProtocol => Side::Upstream(UpstreamErrorKind::Protocol),
        }
    }

    /// Classifies an error of the upstream client.
    pub fn from_client(e: &hyper_util::client::legacy::Error) -> Self {
        if !e.is_connect() {
            return ProxyError::UpstreamProtocol;
        }
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return ProxyError::ConnectTimeout;
                }
            }
            source = s.source();
        }
        ProxyError::UpstreamConnect
    }
}
