//! Validation of `sticky.store`: the store type, the Redis URL (a secret when
//! it holds a password, so read from `env:`/`file:`), and the cache settings.

use serde_saphyr::Spanned;

use super::fields::{Errors, duration_field, int_field};
use super::keys::KeySource;
use super::raw::RawStore;
use super::types::{Secret, StoreKind, StoreSettings};

pub(super) fn settings(
    errs: &mut Errors,
    raw: &Spanned<RawStore>,
    source: &dyn KeySource,
) -> Option<StoreSettings> {
    let st = &raw.value;
    let d = StoreSettings::default();
    let kind = match st.kind.value.trim() {
        "cookie" => Some(StoreKind::Cookie),
        "memory" => Some(StoreKind::Memory),
        "redis" => match &st.url {
            None => {
                errs.at(
                    "sticky.store.url",
                    &st.kind,
                    "the redis store needs `url` (redis://, rediss:// for TLS; `env:NAME` or `file:PATH` when it holds a password)",
                );
                None
            }
            Some(u) => redis_url(errs, u, source).map(StoreKind::Redis),
        },
        _ => {
            errs.at(
                "sticky.store.type",
                &st.kind,
                "expected one of cookie, memory, redis",
            );
            None
        }
    };
    if let (Some(u), Some(k)) = (&st.url, &kind)
        && !matches!(k, StoreKind::Redis(_))
    {
        errs.at("sticky.store.url", u, "only the redis store takes a url");
    }
    let key_prefix = match &st.key_prefix {
        Some(p)
            if p.value.is_empty()
                || p.value.len() > 64
                || p.value.contains(char::is_whitespace) =>
        {
            errs.at(
                "sticky.store.key_prefix",
                p,
                "must be 1 to 64 characters with no spaces",
            );
            None
        }
        Some(p) => Some(p.value.clone()),
        None => Some(d.key_prefix.clone()),
    };
    let timeout = duration_field(errs, "sticky.store.timeout", &st.timeout, d.timeout);
    let cache_ttl = duration_field(errs, "sticky.store.cache_ttl", &st.cache_ttl, d.cache_ttl);
    let cache_size = int_field(
        errs,
        "sticky.store.cache_size",
        &st.cache_size,
        1..=100_000_000,
        d.cache_size,
    );
    let admin_token = match &st.admin_token {
        None => Some(None),
        Some(t) => secret(errs, "sticky.store.admin_token", t, source).map(Some),
    };
    let ca_pem = match &st.ca_file {
        None => Some(None),
        Some(f) => {
            let tls =
                matches!(&kind, Some(StoreKind::Redis(u)) if u.expose().starts_with("rediss://"));
            if !tls {
                errs.at(
                    "sticky.store.ca_file",
                    f,
                    "only a rediss:// (TLS) store takes a ca_file",
                );
            }
            match source.file(f.value.trim()) {
                Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(Some(pem)),
                Ok(_) => {
                    errs.at("sticky.store.ca_file", f, "holds no PEM certificate");
                    None
                }
                Err(e) => {
                    errs.at(
                        "sticky.store.ca_file",
                        f,
                        format!("cannot read {}: {e}", f.value.trim()),
                    );
                    None
                }
            }
        }
    };
    Some(StoreSettings {
        ca_pem: ca_pem?,
        kind: kind?,
        key_prefix: key_prefix?,
        timeout,
        cache_size,
        cache_ttl,
        admin_token: admin_token?,
    })
}

/// `env:NAME`, `file:PATH` or a literal URL without a password.
fn redis_url(errs: &mut Errors, u: &Spanned<String>, source: &dyn KeySource) -> Option<Secret> {
    let text = u.value.trim();
    let url = if text.starts_with("env:") || text.starts_with("file:") {
        secret(errs, "sticky.store.url", u, source)?
    } else {
        if text.contains('@') {
            // Never echo it: the part before '@' is a credential.
            errs.at(
                "sticky.store.url",
                u,
                "a URL with credentials must come from `env:NAME` or `file:PATH`, never inline",
            );
            return None;
        }
        Secret::new(text.to_owned())
    };
    let s = url.expose().trim();
    if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
        errs.at(
            "sticky.store.url",
            u,
            "expected a redis:// or rediss:// URL",
        );
        return None;
    }
    if let Err(e) = redis::Client::open(s) {
        // The error names the URL part at fault, not the URL.
        errs.at(
            "sticky.store.url",
            u,
            format!("not a usable Redis URL ({:?})", e.kind()),
        );
        return None;
    }
    Some(Secret::new(s.to_owned()))
}

/// A secret given as `env:NAME` or `file:PATH` (a trailing newline dropped).
pub(super) fn secret(
    errs: &mut Errors,
    path: &str,
    spec: &Spanned<String>,
    source: &dyn KeySource,
) -> Option<Secret> {
    let text = spec.value.trim();
    let value = if let Some(name) = text.strip_prefix("env:") {
        match source.env(name.trim()) {
            Some(v) => v,
            None => {
                errs.at(
                    path,
                    spec,
                    format!("environment variable {} is not set", name.trim()),
                );
                return None;
            }
        }
    } else if let Some(file) = text.strip_prefix("file:") {
        match source.file(file.trim()) {
            Ok(v) => v,
            Err(e) => {
                errs.at(path, spec, format!("cannot read {}: {e}", file.trim()));
                return None;
            }
        }
    } else {
        errs.at(
            path,
            spec,
            "must be `env:NAME` or `file:PATH`, never inline",
        );
        return None;
    };
    // Whitespace around a secret is never part of it (a file's trailing
    // newline, an editor's space): every side that compares it trims alike.
    let value = value.trim().to_owned();
    if value.is_empty() {
        errs.at(path, spec, "is empty");
        return None;
    }
    Some(Secret::new(value))
}
