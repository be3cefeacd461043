//! The way to the targets: each target's pools, as a snapshot builds them
//! and the request path uses them.
//!
//! ```text
//! cleartext HTTP/1.1 -> H1Pool (pool.rs: the proxy's own client, pooled per runtime)
//! TLS, HTTP/2, upgrades -> UpstreamClient (hyper-util's pooled client)
//! ```
//! and the retry budget every group's retries draw on ([`RetryBudget`]).

mod pool;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName,
};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::ServerName;

use crate::body::UpstreamBody;
use crate::config::{GroupSpec, Timeouts, UpstreamProtocol};
pub use pool::{H1Pool, NativeBody, NativeError};
pub use retry::RetryBudget;

/// A pooled client to upstreams, cleartext or TLS, HTTP/1.1 or HTTP/2. Each
/// target has its own (see `state::TargetLive`), so removing a target can close
/// exactly its connections.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// What a connection pool is made with; a change makes new pools.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect: Duration,
    pub idle: Duration,
    pub h2: bool,
    /// The TLS config: the group's when it uses TLS, else one never used.
    pub tls_config: Arc<rustls::ClientConfig>,
    /// SNI and certificate name, when not the target's host.
    pub server_name: Option<String>,
    /// What the TLS config was made from (CA digest, SNI name): configs are
    /// compared by where they came from, not by pointer.
    tls_ident: Option<TlsIdent>,
}

/// What a group's TLS client config is made from: the CA's digest, the SNI
/// name, and the client certificate's digest.
type TlsIdent = (Option<[u8; 32]>, Option<String>, Option<[u8; 32]>);

impl PartialEq for PoolSettings {
    fn eq(&self, o: &Self) -> bool {
        (self.connect, self.idle, self.h2) == (o.connect, o.idle, o.h2)
            && self.tls_ident == o.tls_ident
    }
}

impl PoolSettings {
    /// Whether the group's targets get native HTTP/1.1 connections (the proxy's own client)
    /// (cleartext HTTP/1.1), as well as the hyper-util client for upgrades.
    pub fn native(&self) -> bool {
        !self.h2 && self.tls_ident.is_none()
    }

    /// The settings for one group's targets.
    pub fn new(t: &Timeouts, g: &GroupSpec) -> Self {
        let h2 = g.protocol == UpstreamProtocol::Http2;
        let (tls_config, tls_ident) = match &g.tls {
            None => (crate::tls::placeholder_client_config(), None),
            Some(u) => {
                let client = u.client_cert.as_ref().map(|c| &c.material);
                let ident = (
                    u.ca.as_ref().map(crate::tls::CaBundle::digest),
                    u.server_name.clone(),
                    client.map(crate::tls::CertMaterial::digest),
                );
                (
                    crate::tls::client_config(u.ca.as_ref(), client),
                    Some(ident),
                )
            }
        };
        Self {
            connect: t.connect,
            idle: t.upstream_idle,
            h2,
            server_name: g.tls.as_ref().and_then(|u| u.server_name.clone()),
            tls_config,
            tls_ident,
        }
    }
}

/// Builds an upstream client: keep-alive pool with a timer (without one the
/// idle timeout does nothing), `TCP_NODELAY`, a connect timeout, and TLS and
/// HTTP/2 as the group asks.
pub fn upstream_client(s: &PoolSettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(s.connect));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(false);
    // Cleartext groups send `http://` URIs, which the connector passes
    // through untouched; their (placeholder) TLS config is never used.
    let mut tls = (*s.tls_config).clone();
    tls.alpn_protocols = vec![if s.h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let names: Arc<dyn ResolveServerName + Send + Sync> = match s
        .server_name
        .as_deref()
        .and_then(|n| ServerName::try_from(n.to_owned()).ok())
    {
        Some(name) => Arc::new(FixedServerNameResolver::new(name)),
        None => Arc::new(DefaultServerNameResolver::default()),
    };
    let https = HttpsConnector::new(connector, tls, false, names);
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(s.idle)
        .pool_max_idle_per_host(1024);
    if s.h2 {
        client
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true);
    }
    client.build(https)
}
