//! The serde view of proxy.yaml: field names, defaults and nothing else.
//!
//! Nothing here is trusted. Values that validation must check carry their YAML
//! location (`Spanned`) so that an error can name the line it came from; the
//! validated form lives in [`super::types`] and never sees serde.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Spanned<String>,
    #[serde(default)]
    pub admin: Option<Spanned<String>>,
    pub sticky: RawSticky,
    pub groups: Spanned<IndexMap<String, Spanned<RawGroup>>>,
    #[serde(default)]
    pub override_header: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub reload: RawReload,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    #[serde(default)]
    pub check_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    #[serde(default)]
    pub cookie: Option<Spanned<String>>,
    pub ttl: Spanned<String>,
    pub keys: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub domain: Option<Spanned<String>>,
    #[serde(default)]
    pub same_site: Option<Spanned<String>>,
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default)]
    pub bucket_by: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub weight: Spanned<i64>,
    #[serde(default)]
    pub drain: bool,
    pub targets: Spanned<Vec<Spanned<RawTarget>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub address: Spanned<String>,
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default)]
    pub connect: Option<Spanned<String>>,
    #[serde(default)]
    pub upstream_response: Option<Spanned<String>>,
    #[serde(default)]
    pub client_header: Option<Spanned<String>>,
    #[serde(default)]
    pub upstream_idle: Option<Spanned<String>>,
}
