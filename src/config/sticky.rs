//! `sticky:` validated: the cookie's name and attributes, the pin's
//! lifetime, the signing keys (read from their sources, never inline) and
//! the session store; for the top level and for each route's own settings
//! merged over it.

use http::HeaderName;
use serde_saphyr::Spanned;

use super::duration::parse_duration;
use super::fields::{Errors, ValidateOptions, header_name};
use super::keys::{KeySource, decode_key};
use super::raw::RawSticky;
use super::types::*;

/// Validates sticky settings found at YAML path `at` (`sticky`, or a
/// route's merged over it).
pub(super) fn sticky(
    errs: &mut Errors,
    at: &str,
    spanned: &Spanned<RawSticky>,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> Option<Sticky> {
    let raw = &spanned.value;
    let Some(raw_ttl) = &raw.ttl else {
        errs.at(
            format!("{at}.ttl"),
            spanned,
            "required: how long a pin lasts, 1s to 7d",
        );
        return None;
    };
    let Some(raw_keys) = &raw.keys else {
        errs.at(
            format!("{at}.keys"),
            spanned,
            "required: at least one key (`env:NAME` or `file:PATH`)",
        );
        return None;
    };
    let cookie_name = match &raw.cookie {
        Some(c) => CookieName::try_new(&c.value)
            .map_err(|m| errs.at(format!("{at}.cookie"), c, m))
            .ok(),
        None => CookieName::try_new("switchyard").ok(),
    };
    let ttl = match parse_duration(&raw_ttl.value).and_then(Ttl::try_new) {
        Ok(t) => Some(t),
        Err(m) => {
            errs.at(format!("{at}.ttl"), raw_ttl, m);
            None
        }
    };
    let path = match &raw.path {
        Some(p) if !p.value.starts_with('/') || !cookie_attr_ok(&p.value) => {
            errs.at(
                format!("{at}.path"),
                p,
                "must start with '/' and hold no ';', spaces or control characters",
            );
            None
        }
        Some(p) => Some(p.value.clone()),
        None => Some("/".to_owned()),
    };
    let domain = match &raw.domain {
        Some(d) if d.value.is_empty() || !cookie_attr_ok(&d.value) || d.value.contains('/') => {
            errs.at(
                format!("{at}.domain"),
                d,
                "must be a host name such as example.com",
            );
            None
        }
        Some(d) => Some(Some(d.value.clone())),
        None => Some(None),
    };
    let same_site = match raw.same_site.as_ref() {
        None => Some(SameSite::Lax),
        Some(s) => match s.value.to_ascii_lowercase().as_str() {
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            "none" => Some(SameSite::None),
            _ => {
                errs.at(
                    format!("{at}.same_site"),
                    s,
                    "expected one of lax, strict, none",
                );
                None
            }
        },
    };
    let forced_secure = raw.host_prefix.as_ref().is_some_and(|h| h.value);
    if same_site == Some(SameSite::None)
        && raw.secure != Some(true)
        && !forced_secure
        && let Some(s) = &raw.same_site
    {
        errs.at(
                format!("{at}.same_site"),
                s,
                "`none` requires `secure: true` or `host_prefix: true` (browsers drop SameSite=None cookies without Secure)",
            );
    }
    let bucket_by = raw.bucket_by.as_ref().and_then(|b| {
        let v = b.value.trim();
        if v == "client_ip" {
            Some(BucketBy::ClientIp)
        } else if let Some(h) = v.strip_prefix("header:") {
            header_name(h.trim())
                .map(BucketBy::Header)
                .map_err(|m| errs.at(format!("{at}.bucket_by"), b, m))
                .ok()
        } else {
            errs.at(
                format!("{at}.bucket_by"),
                b,
                "expected `client_ip` or `header:<Name>`",
            );
            None
        }
    });
    let host_prefix = raw.host_prefix.as_ref().is_some_and(|h| h.value);
    if let Some(h) = raw.host_prefix.as_ref().filter(|h| h.value) {
        if path.as_deref().is_some_and(|p| p != "/") || raw.domain.is_some() {
            errs.at(
                format!("{at}.host_prefix"),
                h,
                "a `__Host-` cookie needs `path: /` and no `domain` (browsers refuse it otherwise)",
            );
        }
        if raw.secure == Some(false) {
            errs.at(
                format!("{at}.host_prefix"),
                h,
                "a `__Host-` cookie is always `Secure`; remove `secure: false`",
            );
        }
    }
    let cookie_name = match (cookie_name, host_prefix) {
        (Some(n), true) => CookieName::try_new(&format!("__Host-{}", n.as_str()))
            .map_err(|m| errs.at(format!("{at}.cookie"), raw_ttl, m))
            .ok(),
        (n, _) => n,
    };
    let key_files = raw_keys
        .value
        .iter()
        .filter_map(|k| k.value.trim().strip_prefix("file:"))
        .map(|f| f.trim().to_owned())
        .collect();
    let store = match &raw.store {
        Some(st) => super::store::settings(errs, st, keys),
        None => Some(StoreSettings::default()),
    };
    let (keys, ephemeral_key) = cookie_keys(errs, at, raw_keys, keys, opts)?;
    let (carrier, session_cookie) = carrier(errs, at, raw);
    Some(Sticky {
        carrier: carrier?,
        session_cookie,
        store: store?,
        cookie_name: cookie_name?,
        ttl: ttl?,
        keys,
        path: path?,
        domain: domain?,
        same_site: same_site?,
        secure: if host_prefix { Some(true) } else { raw.secure },
        host_prefix,
        bucket_by,
        ephemeral_key,
        key_files,
    })
}

/// The key this process signs with when no key can be read (the demo, and
/// `check --no-secrets`): one for the whole process, so every route's copy
/// and every reload sign alike, and a pinned client stays pinned.
fn ephemeral_key() -> &'static [u8; MIN_KEY_LEN] {
    static KEY: std::sync::OnceLock<[u8; MIN_KEY_LEN]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = [0u8; MIN_KEY_LEN];
        rand::fill(&mut bytes[..]);
        bytes
    })
}

/// The header a `type: header` pin travels in when none is named (under
/// `routes:`, `<it>-<route>`).
pub(super) const DEFAULT_PIN_HEADER: &str = "x-switchyard-pin";

/// `type`, `header` and `lifetime`: how the pin travels, and whether a
/// cookie outlives the browser session.
fn carrier(errs: &mut Errors, at: &str, raw: &RawSticky) -> (Option<PinCarrier>, bool) {
    let header = raw.header.as_ref().map(|h| {
        header_name(h.value.trim())
            .map_err(|m| errs.at(format!("{at}.header"), h, m))
            .ok()
    });
    let carrier = match raw
        .kind
        .as_ref()
        .map(|k| (k, k.value.trim().to_ascii_lowercase()))
    {
        None => Some(PinCarrier::Cookie),
        Some((_, k)) if k == "cookie" => Some(PinCarrier::Cookie),
        Some((_, k)) if k == "header" => match header {
            Some(h) => h.map(PinCarrier::Header),
            None => HeaderName::from_bytes(DEFAULT_PIN_HEADER.as_bytes())
                .ok()
                .map(PinCarrier::Header),
        },
        Some((k, _)) => {
            errs.at(format!("{at}.type"), k, "expected `cookie` or `header`");
            None
        }
    };
    if let (Some(PinCarrier::Cookie), Some(h)) = (&carrier, &raw.header) {
        errs.at(
            format!("{at}.header"),
            h,
            "a header name needs `type: header`",
        );
    }
    let session_cookie = match &raw.lifetime {
        None => false,
        Some(l) => match l.value.trim().to_ascii_lowercase().as_str() {
            "permanent" => false,
            "session" if matches!(carrier, Some(PinCarrier::Header(_))) => {
                errs.at(
                    format!("{at}.lifetime"),
                    l,
                    "`session` is a cookie's lifetime; a header pin lasts its ttl",
                );
                false
            }
            "session" => true,
            _ => {
                errs.at(
                    format!("{at}.lifetime"),
                    l,
                    "expected `permanent` or `session`",
                );
                false
            }
        },
    };
    (carrier, session_cookie)
}

fn cookie_attr_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

fn cookie_keys(
    errs: &mut Errors,
    at: &str,
    raw: &Spanned<Vec<Spanned<String>>>,
    source: &dyn KeySource,
    opts: ValidateOptions,
) -> Option<(Vec<CookieKey>, bool)> {
    if raw.value.is_empty() {
        errs.at(
            format!("{at}.keys"),
            raw,
            "at least one key is required (`env:NAME` or `file:PATH`)",
        );
        return None;
    }
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for (i, spec) in raw.value.iter().enumerate() {
        let path = format!("{at}.keys[{i}]");
        let text = spec.value.trim();
        let material = if let Some(name) = text.strip_prefix("env:") {
            match source.env(name.trim()) {
                Some(v) => v,
                None => {
                    missing.push((
                        path,
                        spec,
                        format!("environment variable {} is not set", name.trim()),
                    ));
                    continue;
                }
            }
        } else if let Some(file) = text.strip_prefix("file:") {
            match source.file(file.trim()) {
                Ok(v) => v,
                Err(e) => {
                    missing.push((
                        path,
                        spec,
                        format!("cannot read key file {}: {e}", file.trim()),
                    ));
                    continue;
                }
            }
        } else {
            // Never echo the value: someone may have pasted the key itself here.
            errs.at(
                path,
                spec,
                "a key must be given as `env:NAME` or `file:PATH`, never inline",
            );
            continue;
        };
        match decode_key(&material).and_then(CookieKey::try_new) {
            Ok(k) => keys.push(k),
            Err(m) => errs.at(path, spec, m),
        }
    }
    if opts.ephemeral_key_if_missing {
        // `check` on a build machine and `demo` run where the secret is not.
        if keys.is_empty() {
            return CookieKey::try_new(ephemeral_key().to_vec())
                .ok()
                .map(|k| (vec![k], true));
        }
        return Some((keys, false));
    }
    for (path, spec, msg) in missing {
        errs.at(path, spec, msg);
    }
    if keys.is_empty() {
        None
    } else {
        Some((keys, false))
    }
}
