//! TLS material and the rustls configurations built from it: certificate
//! chains and keys read from PEM, the SNI certificate resolver of the HTTPS
//! listener, and the client configs used to reach TLS upstreams.
//!
//! ```text
//! proxy.yaml tls.certificates[] --load_cert--> CertMaterial --server_config--> ServerConfig
//! groups.<g>.ca_file            --load_ca-->   CaBundle     --client_config--> ClientConfig
//! ```
//! Loading happens during config validation, so a bad PEM is reported like any
//! other config error (YAML path and line) and a reload that meets one keeps
//! the certificates in force. The crypto provider is chosen here, explicitly:
//! aws-lc-rs, the one rustls and every crate above it are built with.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};

/// ALPN protocols offered to clients, most preferred first.
pub const ALPN_SERVER: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The process's one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// rustls refuses protocol versions only when the provider has no cipher
/// suite for them; aws-lc-rs has suites for TLS 1.2 and 1.3, so this cannot
/// fail at run time, and a build that broke it would fail every test.
#[allow(clippy::expect_used)]
fn versions<S: rustls::ConfigSide>(
    r: Result<rustls::ConfigBuilder<S, rustls::WantsVerifier>, rustls::Error>,
) -> rustls::ConfigBuilder<S, rustls::WantsVerifier> {
    r.expect("aws-lc-rs supports TLS 1.2 and 1.3")
}

/// Installs [`provider`] as the process default, for code that asks rustls for
/// one (tests' own clients). Harmless when one is installed already.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

// === impl CertMaterial ===

/// A certificate chain with its private key, ready to serve. Two are equal when
/// their PEM bytes are, so a reload can tell a replaced certificate.
#[derive(Clone)]
pub struct CertMaterial {
    key: Arc<CertifiedKey>,
    digest: [u8; 32],
}

impl CertMaterial {
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// The SHA-256 of the chain's and key's PEM: equal material, equal digest.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// First 8 bytes of the SHA-256 of the chain's and key's PEM, hex: enough
    /// to tell two versions apart in a log line, and no secret.
    pub fn fingerprint(&self) -> String {
        self.digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl PartialEq for CertMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Debug for CertMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertMaterial({} certs, {})",
            self.key.cert.len(),
            self.fingerprint()
        )
    }
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8,
/// PKCS#1 or SEC1), and checks that they belong together.
pub fn load_cert(chain_pem: &str, key_pem: &str) -> Result<CertMaterial, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("certificate file holds no CERTIFICATE block".into());
    }
    // The name check below parses the leaf; a garbled DER fails here, not at a handshake.
    webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("key file holds no usable private key: {e}"))?;
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate".to_owned()
        }
        e => format!("the private key cannot be used: {e}"),
    })?;
    let mut h = Sha256::new();
    h.update(chain_pem.as_bytes());
    h.update([0]);
    h.update(key_pem.as_bytes());
    Ok(CertMaterial {
        key: Arc::new(key),
        digest: h.finalize().into(),
    })
}

// === impl SniResolver ===

/// Picks the certificate whose names cover the client's SNI (wildcards
/// included), in config order; the first certificate answers clients that send
/// no SNI or a name no certificate covers.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn covers(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
        key.cert
            .first()
            .and_then(|leaf| webpki::EndEntityCert::try_from(leaf).ok())
            .is_some_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|sni| ServerName::try_from(sni).ok())
            .and_then(|name| self.certs.iter().find(|c| Self::covers(c, &name)));
        chosen.or_else(|| self.certs.first()).cloned()
    }
}

/// The HTTPS listener's config: TLS 1.2 and 1.3 only, the server's cipher
/// suite order, ALPN `h2` then `http/1.1`, certificates chosen by SNI. `None` without certificates.
pub fn server_config(certs: &[&CertMaterial]) -> Option<Arc<ServerConfig>> {
    if certs.is_empty() {
        return None;
    }
    let resolver = SniResolver {
        certs: certs.iter().map(|c| Arc::clone(&c.key)).collect(),
    };
    let mut cfg = versions(
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions(),
    )
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = ALPN_SERVER.iter().map(|p| p.to_vec()).collect();
    // The server's order of cipher suites (AES-GCM, then ChaCha20), not the
    // client's: what auditors and scanners expect of an edge.
    cfg.ignore_client_order = true;
    Some(Arc::new(cfg))
}

// === impl CaBundle ===

/// Trust anchors for a group's upstreams, read from a PEM bundle.
#[derive(Clone)]
pub struct CaBundle {
    roots: Arc<RootCertStore>,
    digest: [u8; 32],
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} roots)", self.roots.len())
    }
}

impl CaBundle {
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }
}

/// Reads a PEM bundle of CA certificates; every block must be a usable anchor.
pub fn load_ca(pem: &str) -> Result<CaBundle, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA file is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("CA file holds no CERTIFICATE block".into());
    }
    let mut roots = RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| format!("certificate #{} is not a usable CA: {e}", i + 1))?;
    }
    Ok(CaBundle {
        roots: Arc::new(roots),
        digest: Sha256::digest(pem.as_bytes()).into(),
    })
}

/// The system's trust store, read once (for `tls: true` without `ca_file`).
fn native_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "while reading the system's CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system CA certificates loaded");
        Arc::new(roots)
    }))
}

/// A client config for upstreams that trusts the given anchors (or the
/// system's), presenting `client` to upstreams that ask for a certificate
/// (mTLS). ALPN is left to the connector, which knows the group's protocol.
pub fn client_config(ca: Option<&CaBundle>, client: Option<&CertMaterial>) -> Arc<ClientConfig> {
    let roots = ca.map_or_else(native_roots, |c| Arc::clone(&c.roots));
    let builder = versions(
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions(),
    )
    .with_root_certificates(roots);
    let cfg = match client {
        Some(c) => builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::clone(&c.key)))),
        None => builder.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// The one certificate the proxy presents to upstreams.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client config that trusts nothing, for connectors that only ever make
/// cleartext connections but must be built with one.
pub fn placeholder_client_config() -> Arc<ClientConfig> {
    static CFG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CFG.get_or_init(|| {
        let cfg = versions(
            ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions(),
        )
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
        Arc::new(cfg)
    }))
}
