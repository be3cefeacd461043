//! A test PKI made at run time (rcgen), TLS clients that pick their SNI and
//! ALPN, and a TLS upstream server: everything the TLS tests need, on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use super::{Got, ok};

/// A certificate authority that issues leaf certificates for test names.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    pub fn der(&self) -> CertificateDer<'static> {
        ok(
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes()),
            "leaf DER",
        )
    }

    /// Writes `<stem>.crt` and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        ok(std::fs::write(&c, &self.cert_pem), "write cert");
        ok(std::fs::write(&k, &self.key_pem), "write key");
        (c, k)
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = ok(CertificateParams::new(Vec::<String>::new()), "CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = ok(KeyPair::generate(), "CA key");
        Ca {
            issuer: ok(CertifiedIssuer::self_signed(params, key), "CA cert"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = ok(CertificateParams::new(names), "leaf params");
        let key = ok(KeyPair::generate(), "leaf key");
        let cert = ok(params.signed_by(&key, &self.issuer), "sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client config trusting only this CA, offering only `versions` and
    /// `suites`, in that order of preference.
    pub fn client_config_offering(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        suites: Vec<rustls::SupportedCipherSuite>,
    ) -> Arc<rustls::ClientConfig> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = suites;
        let mut roots = rustls::RootCertStore::empty();
        ok(roots.add(self.issuer.der().clone()), "add root");
        let builder = ok(
            rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(versions),
            "client versions",
        );
        Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        switchyard::tls::install_default_provider();
        let mut roots = rustls::RootCertStore::empty();
        ok(roots.add(self.issuer.der().clone()), "add root");
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// A TLS connection to `addr` sending `sni`, trusting `ca`, offering `alpn`.
pub async fn connect(addr: SocketAddr, sni: &str, ca: &Ca, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = ok(TcpStream::connect(addr).await, "connect");
    let name = ok(ServerName::try_from(sni.to_owned()), "server name");
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(alpn));
    ok(connector.connect(name, tcp).await, "TLS handshake")
}

/// The leaf certificate the server presented, and the ALPN protocol agreed.
pub fn peer(s: &TlsStream<TcpStream>) -> (Option<CertificateDer<'static>>, Option<Vec<u8>>) {
    let (_, conn) = s.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    (leaf, conn.alpn_protocol().map(<[u8]>::to_vec))
}

/// An HTTP/2 connection over TLS, as a browser would make it.
pub async fn h2_over(
    s: TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (send, conn) = ok(
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await,
        "h2 handshake",
    );
    tokio::spawn(conn);
    send
}

/// Sends one request on an HTTP/2 connection and reads the answer whole.
pub async fn h2_send(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Got {
    ok(send.ready().await, "h2 ready");
    let resp = ok(send.send_request(req).await, "h2 request");
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: ok(body.collect().await, "h2 body").to_bytes(),
    }
}

/// One HTTP/1.1 GET over a fresh TLS connection.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    ca: &Ca,
    path: &str,
    cookie: Option<&str>,
) -> Got {
    let s = connect(addr, sni, ca, &[b"http/1.1"]).await;
    let (mut send, conn) = ok(
        hyper::client::conn::http1::handshake(TokioIo::new(s)).await,
        "h1 handshake",
    );
    tokio::spawn(conn);
    let mut b = Request::get(path).header("host", sni);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    let resp = ok(
        send.send_request(ok(b.body(Full::<Bytes>::default()), "req"))
            .await,
        "send",
    );
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: ok(body.collect().await, "body").to_bytes(),
    }
}

/// An HTTPS upstream presenting `leaf`, speaking HTTP/1.1 and HTTP/2 (by ALPN).
/// Answers `x-upstream: <name>` and `x-version: <the version it saw>`.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub versions: Arc<Mutex<Vec<http::Version>>>,
}

impl TlsUpstream {
    pub async fn start(name: &str, leaf: &Leaf) -> Self {
        Self::start_verifying(name, leaf, None).await
    }

    /// An upstream that requires a client certificate issued by `clients`
    /// (mTLS) and refuses the handshake without one.
    pub async fn start_requiring_client(name: &str, leaf: &Leaf, clients: &Ca) -> Self {
        Self::start_verifying(name, leaf, Some(clients)).await
    }

    async fn start_verifying(name: &str, leaf: &Leaf, clients: Option<&Ca>) -> Self {
        let chain = vec![leaf.der()];
        let key = ok(
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()),
            "key",
        );
        switchyard::tls::install_default_provider();
        let builder = rustls::ServerConfig::builder();
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                ok(roots.add(ca.issuer.der().clone()), "add client root");
                let verifier = ok(
                    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build(),
                    "client verifier",
                );
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = ok(builder.with_single_cert(chain, key), "server config");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = ok(TcpListener::bind("127.0.0.1:0").await, "bind");
        let addr = ok(listener.local_addr(), "addr");
        let versions = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&versions);
        let name = name.to_owned();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let name = name.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let name = name.clone();
                        let seen = Arc::clone(&seen);
                        async move {
                            if let Ok(mut v) = seen.lock() {
                                v.push(req.version());
                            }
                            let mut r = Response::new(Full::new(Bytes::from_static(b"tls ok")));
                            r.headers_mut()
                                .insert("x-upstream", ok(name.parse(), "header"));
                            r.headers_mut().insert(
                                "x-version",
                                ok(format!("{:?}", req.version()).parse(), "header"),
                            );
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream { addr, versions }
    }
}
