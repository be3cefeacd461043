//! Validation of the TLS parts of proxy.yaml: the HTTPS listener and its
//! certificates, and how each group reaches its upstreams. Certificate, key and
//! CA files are read and parsed here, so a bad one is a config error with its
//! YAML path and line, and a reload that meets one keeps what is in force.

use std::net::SocketAddr;

use serde_saphyr::Spanned;

use super::fields::{Errors, socket_addr};
use super::keys::KeySource;
use super::raw::{RawConfig, RawGroup, RawTls};
use super::types::{ServerCert, TlsListener, UpstreamProtocol, UpstreamTls};

/// Most certificates one listener holds: SNI lookup walks them in order.
const MAX_CERTS: usize = 64;

/// `tls:` at the top level. `None` when something in it is wrong (reported).
pub(super) fn listener(
    errs: &mut Errors,
    raw: &Spanned<RawTls>,
    files: &dyn KeySource,
) -> Option<TlsListener> {
    let t = &raw.value;
    let listen = socket_addr(errs, "tls.listen", &t.listen);
    let before = errs.0.len();
    if t.certificates.value.is_empty() {
        errs.at(
            "tls.certificates",
            &t.certificates,
            "at least one certificate is required",
        );
    } else if t.certificates.value.len() > MAX_CERTS {
        errs.at(
            "tls.certificates",
            &t.certificates,
            format!("at most {MAX_CERTS} certificates"),
        );
    }
    let mut certs = Vec::new();
    for (i, c) in t.certificates.value.iter().enumerate() {
        let path = format!("tls.certificates[{i}]");
        let cert = read(errs, &format!("{path}.cert"), &c.value.cert, files);
        let key = read(errs, &format!("{path}.key"), &c.value.key, files);
        let (Some(cert_pem), Some(key_pem)) = (cert, key) else {
            continue;
        };
        match crate::tls::load_cert(&cert_pem, &key_pem) {
            Ok(material) => certs.push(ServerCert {
                cert_file: c.value.cert.value.clone(),
                key_file: c.value.key.value.clone(),
                material,
            }),
            Err(m) => errs.at(
                format!("{path}.cert"),
                &c.value.cert,
                format!("{}: {m}", c.value.cert.value),
            ),
        }
    }
    let proxy_protocol = t
        .proxy_protocol
        .as_ref()
        .map(|p| super::edge::proxy_protocol(errs, "tls.proxy_protocol", p));
    if errs.0.len() != before {
        return None;
    }
    Some(TlsListener {
        listen: listen?,
        certs,
        redirect_http: t.redirect_http.as_ref().is_some_and(|r| r.value),
        proxy_protocol,
    })
}

fn read(
    errs: &mut Errors,
    path: &str,
    file: &Spanned<String>,
    files: &dyn KeySource,
) -> Option<String> {
    let name = file.value.trim();
    if name.is_empty() {
        errs.at(path, file, "a file path is required");
        return None;
    }
    files
        .file(name)
        .map_err(|e| errs.at(path, file, format!("cannot read `{name}`: {e}")))
        .ok()
}

/// Rules that span sections: at least one listener, distinct addresses, and a
/// redirect only where there is something to redirect.
pub(super) fn cross_checks(
    errs: &mut Errors,
    raw: &RawConfig,
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    tls: Option<&Option<TlsListener>>,
) {
    if raw.listen.is_none() && raw.tls.is_none() {
        errs.0.push(super::ConfigError::new(
            "listen",
            None,
            "a listener is required: `listen` (HTTP), `tls.listen` (HTTPS), or both",
        ));
    }
    let tls_addr = tls.and_then(Option::as_ref).map(|t| t.listen);
    let named = [
        ("listen", listen, raw.listen.as_ref()),
        (
            "tls.listen",
            tls_addr,
            raw.tls.as_ref().map(|t| &t.value.listen),
        ),
    ];
    for (what, addr, spanned) in named {
        let (Some(addr), Some(spanned)) = (addr, spanned) else {
            continue;
        };
        if addr.port() == 0 {
            continue;
        }
        if Some(addr) == admin {
            errs.at(what, spanned, "must differ from `admin`");
        }
    }
    if let (Some(l), Some(t), Some(raw_tls)) = (listen, tls_addr, raw.tls.as_ref())
        && l == t
        && l.port() != 0
    {
        errs.at(
            "tls.listen",
            &raw_tls.value.listen,
            "must differ from `listen`",
        );
    }
    if let Some(raw_tls) = &raw.tls
        && let Some(r) = raw_tls.value.redirect_http.as_ref().filter(|r| r.value)
        && raw.listen.is_none()
    {
        errs.at(
            "tls.redirect_http",
            r,
            "needs a plain `listen` address to answer with the redirect",
        );
    }
}

/// A group's `tls`, `ca_file`, `server_name` and `protocol`.
pub(super) fn upstream(
    errs: &mut Errors,
    path: &str,
    g: &RawGroup,
    files: &dyn KeySource,
) -> (Option<UpstreamTls>, UpstreamProtocol) {
    let protocol = match g.protocol.as_ref() {
        None => UpstreamProtocol::Http1,
        Some(p) => match p.value.trim().to_ascii_lowercase().as_str() {
            "http1" | "http/1.1" | "h1" => UpstreamProtocol::Http1,
            "h2" | "http2" => UpstreamProtocol::Http2,
            _ => {
                errs.at(format!("{path}.protocol"), p, "expected `http1` or `h2`");
                UpstreamProtocol::Http1
            }
        },
    };
    let on = g.tls.as_ref().is_some_and(|t| t.value);
    if !on {
        for (field, v) in [
            ("ca_file", &g.ca_file),
            ("server_name", &g.server_name),
            ("client_cert", &g.client_cert),
            ("client_key", &g.client_key),
        ] {
            if let Some(v) = v {
                errs.at(
                    format!("{path}.{field}"),
                    v,
                    "only applies with `tls: true`",
                );
            }
        }
        return (None, protocol);
    }
    let ca = g.ca_file.as_ref().and_then(|f| {
        let fpath = format!("{path}.ca_file");
        let pem = read(errs, &fpath, f, files)?;
        crate::tls::load_ca(&pem)
            .map_err(|m| errs.at(&fpath, f, format!("{}: {m}", f.value)))
            .ok()
    });
    let server_name = g.server_name.as_ref().and_then(|n| {
        let name = n.value.trim();
        rustls_pki_types::ServerName::try_from(name)
            .map(|_| name.to_owned())
            .map_err(|_| {
                errs.at(
                    format!("{path}.server_name"),
                    n,
                    format!("`{name}` is not a DNS name or IP address"),
                )
            })
            .ok()
    });
    let tls = UpstreamTls {
        ca_file: g.ca_file.as_ref().map(|f| f.value.trim().to_owned()),
        ca,
        server_name,
        client_cert: client_cert(errs, path, g, files),
    };
    (Some(tls), protocol)
}

/// A group's `client_cert` and `client_key`: both or neither.
fn client_cert(
    errs: &mut Errors,
    path: &str,
    g: &RawGroup,
    files: &dyn KeySource,
) -> Option<ServerCert> {
    let (cert, key) = match (&g.client_cert, &g.client_key) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            errs.at(
                format!("{path}.client_cert"),
                c,
                "needs `client_key` beside it",
            );
            return None;
        }
        (None, Some(k)) => {
            errs.at(
                format!("{path}.client_key"),
                k,
                "needs `client_cert` beside it",
            );
            return None;
        }
    };
    let cert_pem = read(errs, &format!("{path}.client_cert"), cert, files);
    let key_pem = read(errs, &format!("{path}.client_key"), key, files);
    let material = crate::tls::load_cert(&cert_pem?, &key_pem?)
        .map_err(|m| {
            errs.at(
                format!("{path}.client_cert"),
                cert,
                format!("{}: {m}", cert.value),
            )
        })
        .ok()?;
    Some(ServerCert {
        cert_file: cert.value.trim().to_owned(),
        key_file: key.value.trim().to_owned(),
        material,
    })
}
