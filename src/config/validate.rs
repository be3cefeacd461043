//! Raw (serde) config -> validated [`Config`], gathering every error at once.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;
use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::duration::parse_duration;
use super::error::ConfigError;
use super::fields::{Errors, duration_field, duration_or_zero, int_field, socket_addr};
use super::keys::{KeySource, decode_key};
use super::raw::{
    RawConfig, RawGroup, RawHealth, RawHealthCheck, RawLimits, RawReload, RawRetries, RawSticky,
    RawTimeouts,
};
use super::types::*;

/// Options of one validation run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOptions {
    /// When no key can be read, sign with a random key made now (demo only).
    pub ephemeral_key_if_missing: bool,
}

/// Validates a parsed config.
pub fn validate(
    raw: &RawConfig,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors(Vec::new());
    let listen = raw
        .listen
        .as_ref()
        .map(|l| socket_addr(&mut errs, "listen", l));
    let tls = raw
        .tls
        .as_ref()
        .map(|t| super::tls::listener(&mut errs, t, keys));
    let admin = match &raw.admin {
        Some(a) => socket_addr(&mut errs, "admin", a),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    let sticky = sticky(&mut errs, &raw.sticky, keys, opts);
    let groups = groups(&mut errs, raw, keys);
    let override_header = raw.override_header.as_ref().and_then(|h| {
        header_name(&h.value)
            .map_err(|m| errs.at("override_header", h, m))
            .ok()
    });
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            parse_cidr(&s.value)
                .map_err(|m| errs.at(format!("trusted_proxies[{i}]"), s, m))
                .ok()
        })
        .collect();
    let timeouts = timeouts(&mut errs, &raw.timeouts);
    let reload = reload_settings(&mut errs, &raw.reload);
    let health = health_settings(&mut errs, &raw.health);
    let retries = retries(&mut errs, &raw.retries);
    let limits = limits(&mut errs, &raw.limits);
    let d = ShutdownSettings::default();
    let shutdown = ShutdownSettings {
        grace: duration_or_zero(&mut errs, "shutdown.grace", &raw.shutdown.grace, d.grace),
        drain_delay: duration_or_zero(
            &mut errs,
            "shutdown.drain_delay",
            &raw.shutdown.drain_delay,
            d.drain_delay,
        ),
    };
    let run = RunSettings {
        workers: raw
            .run
            .workers
            .as_ref()
            .map(|_| int_field(&mut errs, "run.workers", &raw.run.workers, 1..=1024, 1)),
    };
    super::tls::cross_checks(&mut errs, raw, listen.flatten(), admin, tls.as_ref());

    errs.0.sort_by_key(|e| e.line.unwrap_or(0));
    match (listen, tls, admin, sticky, errs.0.is_empty()) {
        (Some(None), _, _, _, _) | (_, Some(None), _, _, _) => Err(errs.0),
        (listen, tls, Some(admin), Some(sticky), true) => Ok(Config {
            listen: listen.flatten(),
            tls: tls.flatten(),
            admin,
            sticky,
            groups,
            override_header,
            trusted_proxies,
            timeouts,
            reload,
            health,
            retries,
            limits,
            shutdown,
            run,
        }),
        _ => Err(errs.0),
    }
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a valid header name"))
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))
}

fn timeouts(errs: &mut Errors, raw: &RawTimeouts) -> Timeouts {
    let d = Timeouts::default();
    Timeouts {
        connect: duration_field(errs, "timeouts.connect", &raw.connect, d.connect),
        upstream_response: duration_field(
            errs,
            "timeouts.upstream_response",
            &raw.upstream_response,
            d.upstream_response,
        ),
        client_header: duration_field(
            errs,
            "timeouts.client_header",
            &raw.client_header,
            d.client_header,
        ),
        upstream_idle: duration_field(
            errs,
            "timeouts.upstream_idle",
            &raw.upstream_idle,
            d.upstream_idle,
        ),
        client_body: duration_field(
            errs,
            "timeouts.client_body",
            &raw.client_body,
            d.client_body,
        ),
        upstream_body: duration_field(
            errs,
            "timeouts.upstream_body",
            &raw.upstream_body,
            d.upstream_body,
        ),
        tunnel_idle: duration_field(
            errs,
            "timeouts.tunnel_idle",
            &raw.tunnel_idle,
            d.tunnel_idle,
        ),
        tls_handshake: duration_field(
            errs,
            "timeouts.tls_handshake",
            &raw.tls_handshake,
            d.tls_handshake,
        ),
        keepalive: duration_field(errs, "timeouts.keepalive", &raw.keepalive, d.keepalive),
        client_write: duration_field(
            errs,
            "timeouts.client_write",
            &raw.client_write,
            d.client_write,
        ),
    }
}

fn health_settings(errs: &mut Errors, raw: &RawHealth) -> HealthSettings {
    let d = HealthSettings::default();
    let o = &raw.outlier;
    let outlier = Outlier {
        consecutive_failures: int_field(
            errs,
            "health.outlier.consecutive_failures",
            &o.consecutive_failures,
            0..=1000,
            d.outlier.consecutive_failures,
        ),
        base_ejection: duration_field(
            errs,
            "health.outlier.base_ejection",
            &o.base_ejection,
            d.outlier.base_ejection,
        ),
        max_ejection: duration_field(
            errs,
            "health.outlier.max_ejection",
            &o.max_ejection,
            d.outlier.max_ejection,
        ),
        max_ejected_percent: int_field(
            errs,
            "health.outlier.max_ejected_percent",
            &o.max_ejected_percent,
            0..=100,
            d.outlier.max_ejected_percent,
        ),
    };
    if let Some(m) = &o.max_ejection
        && outlier.max_ejection < outlier.base_ejection
    {
        errs.at(
            "health.outlier.max_ejection",
            m,
            "must not be shorter than base_ejection",
        );
    }
    HealthSettings {
        failover: raw.failover.unwrap_or(d.failover),
        slow_start: duration_or_zero(errs, "health.slow_start", &raw.slow_start, d.slow_start),
        outlier,
    }
}

fn limits(errs: &mut Errors, raw: &RawLimits) -> Limits {
    let d = Limits::default();
    // hyper buffers at most 64 KiB of request head; a larger limit could not apply.
    let head = 1..=64 * 1024;
    let body = match &raw.max_body_bytes {
        Some(s) if s.value < 0 => {
            errs.at(
                "limits.max_body_bytes",
                s,
                "expected an integer >= 0 (0: no limit)",
            );
            0
        }
        Some(s) => s.value as u64,
        None => d.max_body_bytes,
    };
    Limits {
        max_uri_bytes: int_field(
            errs,
            "limits.max_uri_bytes",
            &raw.max_uri_bytes,
            head.clone(),
            d.max_uri_bytes,
        ),
        max_header_bytes: int_field(
            errs,
            "limits.max_header_bytes",
            &raw.max_header_bytes,
            head,
            d.max_header_bytes,
        ),
        max_headers: int_field(
            errs,
            "limits.max_headers",
            &raw.max_headers,
            1..=1000,
            d.max_headers,
        ),
        max_body_bytes: body,
        max_connections: int_field(
            errs,
            "limits.max_connections",
            &raw.max_connections,
            0..=1_000_000,
            d.max_connections,
        ),
    }
}

fn retries(errs: &mut Errors, raw: &RawRetries) -> Retries {
    let d = Retries::default();
    Retries {
        attempts: int_field(errs, "retries.attempts", &raw.attempts, 1..=5, d.attempts),
        budget_percent: int_field(
            errs,
            "retries.budget_percent",
            &raw.budget_percent,
            0..=100,
            d.budget_percent,
        ),
        min_per_second: int_field(
            errs,
            "retries.min_per_second",
            &raw.min_per_second,
            0..=10_000,
            d.min_per_second,
        ),
    }
}

fn health_check(errs: &mut Errors, path: &str, raw: &Spanned<RawHealthCheck>) -> HealthCheck {
    let r = &raw.value;
    let at = |f: &str| format!("{path}.health_check.{f}");
    let check_path = match &r.path {
        Some(p)
            if !p.value.starts_with('/') || p.value.parse::<http::uri::PathAndQuery>().is_err() =>
        {
            errs.at(at("path"), p, "must be a path starting with '/'");
            "/".to_owned()
        }
        Some(p) => p.value.clone(),
        None => "/".to_owned(),
    };
    let interval = duration_field(errs, &at("interval"), &r.interval, Duration::from_secs(5));
    let timeout = duration_field(errs, &at("timeout"), &r.timeout, Duration::from_secs(2));
    if let Some(t) = &r.timeout
        && timeout > interval
    {
        errs.at(at("timeout"), t, "must not be longer than the interval");
    }
    let expect = match &r.expect_status {
        None => (200, 399),
        Some(s) => match status_range(&s.value) {
            Some(range) => range,
            None => {
                errs.at(
                    at("expect_status"),
                    s,
                    "expected a status or a range such as 200 or 200-399",
                );
                (200, 399)
            }
        },
    };
    HealthCheck {
        path: check_path,
        interval,
        timeout,
        expect,
        healthy_threshold: int_field(
            errs,
            &at("healthy_threshold"),
            &r.healthy_threshold,
            1..=100,
            2,
        ),
        unhealthy_threshold: int_field(
            errs,
            &at("unhealthy_threshold"),
            &r.unhealthy_threshold,
            1..=100,
            3,
        ),
    }
}

fn status_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    ((100..=599).contains(&a) && (a..=599).contains(&b)).then_some((a, b))
}

fn reload_settings(errs: &mut Errors, raw: &RawReload) -> ReloadSettings {
    let d = ReloadSettings::default();
    let path = "reload.check_interval";
    let check_interval = duration_field(errs, path, &raw.check_interval, d.check_interval);
    if let Some(s) = &raw.check_interval
        && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&check_interval)
    {
        errs.at(path, s, "must be between 1s and 1h");
    }
    ReloadSettings { check_interval }
}

fn sticky(
    errs: &mut Errors,
    raw: &RawSticky,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> Option<Sticky> {
    let cookie_name = match &raw.cookie {
        Some(c) => CookieName::try_new(&c.value)
            .map_err(|m| errs.at("sticky.cookie", c, m))
            .ok(),
        None => CookieName::try_new("switchyard").ok(),
    };
    let ttl = match parse_duration(&raw.ttl.value).and_then(Ttl::try_new) {
        Ok(t) => Some(t),
        Err(m) => {
            errs.at("sticky.ttl", &raw.ttl, m);
            None
        }
    };
    let path = match &raw.path {
        Some(p) if !p.value.starts_with('/') || !cookie_attr_ok(&p.value) => {
            errs.at(
                "sticky.path",
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
                "sticky.domain",
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
                errs.at("sticky.same_site", s, "expected one of lax, strict, none");
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
                "sticky.same_site",
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
                .map_err(|m| errs.at("sticky.bucket_by", b, m))
                .ok()
        } else {
            errs.at(
                "sticky.bucket_by",
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
                "sticky.host_prefix",
                h,
                "a `__Host-` cookie needs `path: /` and no `domain` (browsers refuse it otherwise)",
            );
        }
        if raw.secure == Some(false) {
            errs.at(
                "sticky.host_prefix",
                h,
                "a `__Host-` cookie is always `Secure`; remove `secure: false`",
            );
        }
    }
    let cookie_name = match (cookie_name, host_prefix) {
        (Some(n), true) => CookieName::try_new(&format!("__Host-{}", n.as_str()))
            .map_err(|m| errs.at("sticky.cookie", &raw.ttl, m))
            .ok(),
        (n, _) => n,
    };
    let key_files = raw
        .keys
        .value
        .iter()
        .filter_map(|k| k.value.trim().strip_prefix("file:"))
        .map(|f| f.trim().to_owned())
        .collect();
    let store = match &raw.store {
        Some(st) => super::store::settings(errs, st, keys),
        None => Some(StoreSettings::default()),
    };
    let (keys, ephemeral_key) = cookie_keys(errs, &raw.keys, keys, opts)?;
    Some(Sticky {
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

fn cookie_attr_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

fn cookie_keys(
    errs: &mut Errors,
    raw: &Spanned<Vec<Spanned<String>>>,
    source: &dyn KeySource,
    opts: ValidateOptions,
) -> Option<(Vec<CookieKey>, bool)> {
    if raw.value.is_empty() {
        errs.at(
            "sticky.keys",
            raw,
            "at least one key is required (`env:NAME` or `file:PATH`)",
        );
        return None;
    }
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for (i, spec) in raw.value.iter().enumerate() {
        let path = format!("sticky.keys[{i}]");
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
            let mut bytes = vec![0u8; MIN_KEY_LEN];
            rand::fill(&mut bytes[..]);
            return CookieKey::try_new(bytes).ok().map(|k| (vec![k], true));
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

fn groups(errs: &mut Errors, raw: &RawConfig, keys: &dyn KeySource) -> Vec<GroupSpec> {
    let mut out = Vec::new();
    if raw.groups.value.is_empty() {
        errs.at("groups", &raw.groups, "at least one group is required");
    }
    for (name, g) in &raw.groups.value {
        let path = format!("groups.{name}");
        let gname = GroupName::try_new(name)
            .map_err(|m| errs.at(&path, g, m))
            .ok();
        if let Some(spec) = group(errs, &path, gname, &g.value, keys) {
            out.push(spec);
        }
    }
    let live: u64 = out
        .iter()
        .filter(|g| !g.drain)
        .map(|g| u64::from(g.weight.get()))
        .sum();
    if live == 0 && !out.is_empty() {
        errs.at(
            "groups",
            &raw.groups,
            "no group can take new clients: at least one group needs weight > 0 and no `drain: true`",
        );
    }
    out
}

fn group(
    errs: &mut Errors,
    path: &str,
    name: Option<GroupName>,
    g: &RawGroup,
    keys: &dyn KeySource,
) -> Option<GroupSpec> {
    let weight = Weight::try_new(g.weight.value)
        .map_err(|m| errs.at(format!("{path}.weight"), &g.weight, m))
        .ok();
    if g.targets.value.is_empty() {
        errs.at(
            format!("{path}.targets"),
            &g.targets,
            "at least one target is required",
        );
    }
    let mut targets = Vec::new();
    for (i, t) in g.targets.value.iter().enumerate() {
        let tpath = format!("{path}.targets[{i}]");
        let address = authority(&t.value.address.value)
            .map_err(|m| errs.at(format!("{tpath}.address"), &t.value.address, m))
            .ok();
        let weight = match &t.value.weight {
            Some(w) => Weight::try_new(w.value)
                .map_err(|m| errs.at(format!("{tpath}.weight"), w, m))
                .ok(),
            None => Weight::try_new(1).ok(),
        };
        if let Some(a) = &address
            && targets.iter().any(|x: &TargetSpec| x.address == *a)
        {
            errs.at(
                format!("{tpath}.address"),
                &t.value.address,
                format!("`{a}` is listed twice in this group"),
            );
            continue;
        }
        if let (Some(address), Some(weight)) = (address, weight) {
            targets.push(TargetSpec { address, weight });
        }
    }
    if !targets.is_empty() && targets.iter().all(|t| t.weight.get() == 0) {
        errs.at(
            format!("{path}.targets"),
            &g.targets,
            "at least one target needs weight > 0",
        );
    }
    let health_check = g.health_check.as_ref().map(|h| health_check(errs, path, h));
    let (tls, protocol) = super::tls::upstream(errs, path, g, keys);
    Some(GroupSpec {
        name: name?,
        weight: weight?,
        drain: g.drain,
        targets,
        health_check,
        tls,
        protocol,
    })
}

fn authority(s: &str) -> Result<Authority, String> {
    let bad = || format!("`{s}` is not a `host:port` address");
    let a: Authority = s.parse().map_err(|_| bad())?;
    if a.port_u16().is_none() || a.host().is_empty() || s.contains('@') {
        return Err(bad());
    }
    Ok(a)
}
