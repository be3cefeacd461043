//! `switchyard demo`: built-in upstreams for every target of the config, so the
//! proxy can be watched at work on a fresh machine with nothing else installed.
//! Each answers with its name (`blue-1`), its group and the request it saw.
//! To play a broken release, `POST /_demo/fail` on an upstream's own address
//! makes it answer 500 to everything until `POST /_demo/heal`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ServerCert, TlsListener};

/// The config the demo runs when none is given: two routes (`/api/` and
/// the rest), each with its own 90/10 canary (src/demo.yaml).
pub const EMBEDDED_CONFIG: &str = include_str!("demo.yaml");

/// Where the demo serves HTTPS when the config has no `tls` section.
pub const DEMO_HTTPS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

/// Gives a config without an HTTPS listener one on `addr`, with a self-signed
/// certificate for `localhost` and `127.0.0.1` made now (never written to disk).
/// Returns the certificate's PEM so the caller can show how to trust it.
pub fn add_self_signed_https(config: &mut Config, addr: SocketAddr) -> Result<String, String> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    let cert_pem = made.cert.pem();
    let material = crate::tls::load_cert(&cert_pem, &made.signing_key.serialize_pem())?;
    config.tls = Some(TlsListener {
        listen: addr,
        certs: vec![ServerCert {
            cert_file: "(self-signed, made by switchyard demo)".to_owned(),
            key_file: "(in memory)".to_owned(),
            material,
        }],
        redirect_http: false,
        proxy_protocol: None,
    });
    Ok(cert_pem)
}

/// One demo upstream's identity.
#[derive(Debug, Clone)]
pub struct DemoUpstream {
    pub name: String,
    pub group: String,
    pub address: SocketAddr,
}

/// Lists an upstream per target, named `<group>-<n>`. Targets that are not
/// literal `ip:port` addresses are skipped: the demo cannot be them.
pub fn upstreams(config: &Config) -> Vec<DemoUpstream> {
    config
        .groups
        .iter()
        .flat_map(|g| {
            g.targets.iter().enumerate().filter_map(move |(i, t)| {
                Some(DemoUpstream {
                    name: format!("{}-{}", g.name, i + 1),
                    group: g.name.to_string(),
                    address: t.address.as_str().parse().ok()?,
                })
            })
        })
        .collect()
}

/// Serves one demo upstream until `shutdown` turns true.
pub async fn serve_upstream(
    listener: TcpListener,
    who: DemoUpstream,
    mut shutdown: watch::Receiver<bool>,
) {
    let failing = Arc::new(AtomicBool::new(false));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let who = who.clone();
        let failing = Arc::clone(&failing);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let body = answer(&who, &failing, &req);
                async move { Ok::<_, Infallible>(body) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// `/_demo/fail` and `/_demo/heal` (POST) switch the upstream's failure
/// on and off; anything else is described, or answered 500 while failing.
fn answer(
    who: &DemoUpstream,
    failing: &AtomicBool,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let switch = match (req.method(), req.uri().path()) {
        (&Method::POST, "/_demo/fail") => Some(true),
        (&Method::POST, "/_demo/heal") => Some(false),
        _ => None,
    };
    if let Some(fail) = switch {
        failing.store(fail, Ordering::Relaxed);
        let said = if fail {
            "now answering 500\n"
        } else {
            "healthy again\n"
        };
        return Response::new(Full::new(Bytes::from(format!("{}: {said}", who.name))));
    }
    let mut r = describe(who, req);
    if failing.load(Ordering::Relaxed) {
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    r
}

fn describe(who: &DemoUpstream, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let doc = serde_json::json!({
        "upstream": who.name,
        "group": who.group,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    });
    let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&who.name) {
        r.headers_mut().insert("x-upstream", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigForm, StaticKeys, ValidateOptions, load_str};

    #[test]
    fn the_embedded_config_runs_two_routes_with_an_upstream_per_target() {
        let opts = ValidateOptions {
            ephemeral_key_if_missing: true,
        };
        let cfg = load_str(EMBEDDED_CONFIG, "demo.yaml", &StaticKeys(Vec::new()), opts)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.form, ConfigForm::Routes);
        let routes: Vec<_> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(routes, ["api", "web"]);
        let names: Vec<_> = upstreams(&cfg).into_iter().map(|u| u.name).collect();
        assert_eq!(
            names,
            ["blue-1", "blue-2", "green-1", "api-blue-1", "api-green-1"]
        );
    }
}
