//! Raw (serde) config -> validated [`Config`], gathering every error at once.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::fields::{
    Errors, ValidateOptions, duration_field, duration_or_zero, header_name, int_field, socket_addr,
};
use super::keys::KeySource;
use super::raw::{
    RawConfig, RawFailureRatio, RawGroup, RawHealth, RawHealthCheck, RawLimits, RawReload,
    RawRetries, RawTimeouts,
};
use super::types::*;

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
    let sticky = super::sticky::sticky(&mut errs, "sticky", &raw.sticky, keys, opts);
    let groups = groups(&mut errs, raw, keys);
    let (routes, form) =
        super::routes::routes(&mut errs, raw, &groups, sticky.as_ref(), keys, opts);
    let override_header = raw.override_header.as_ref().and_then(|h| {
        header_name(&h.value)
            .map_err(|m| errs.at("override_header", h, m))
            .ok()
    });
    let trusted_proxies = super::edge::cidrs(&mut errs, "trusted_proxies", &raw.trusted_proxies);
    let override_plain_from =
        super::edge::cidrs(&mut errs, "override_plain_from", &raw.override_plain_from);
    if let (Some(first), None) = (raw.override_plain_from.first(), &raw.override_header) {
        errs.at(
            "override_plain_from",
            first,
            "needs override_header: it says who may send a plain group name in it",
        );
    }
    let proxy_protocol = raw
        .proxy_protocol
        .as_ref()
        .map(|p| super::edge::proxy_protocol(&mut errs, "proxy_protocol", p));
    if let (Some(p), None) = (&raw.proxy_protocol, &raw.listen) {
        errs.at(
            "proxy_protocol",
            p,
            "applies to the plain `listen`, which is not set (the HTTPS listener's is `tls.proxy_protocol`)",
        );
    }
    let access_log = raw
        .access_log
        .as_ref()
        .map(|a| super::edge::access_log(&mut errs, a));
    let paths = super::edge::paths(&mut errs, raw.paths.as_ref());
    let request_id = super::edge::request_id(&mut errs, raw.request_id.as_ref());
    let trace_context = super::edge::trace_context(raw.trace_context.as_ref());
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
    let admin_token = match &raw.admin_token {
        None => Some(None),
        Some(t) => super::store::secret(&mut errs, "admin_token", t, keys).map(Some),
    };
    let rollout_state_file = match &raw.rollout_state_file {
        Some(f) if f.value.trim().is_empty() => {
            errs.at("rollout_state_file", f, "is empty");
            None
        }
        Some(f) => Some(std::path::PathBuf::from(f.value.trim())),
        None => None,
    };

    errs.0.sort_by_key(|e| e.line.unwrap_or(0));
    match (listen, tls, admin, sticky, errs.0.is_empty()) {
        (Some(None), _, _, _, _) | (_, Some(None), _, _, _) => Err(errs.0),
        (listen, tls, Some(admin), Some(sticky), true) => Ok(Config {
            listen: listen.flatten(),
            tls: tls.flatten(),
            admin,
            sticky,
            groups,
            routes,
            form,
            override_header,
            override_plain_from,
            trusted_proxies,
            timeouts,
            reload,
            health,
            retries,
            limits,
            shutdown,
            run,
            proxy_protocol,
            access_log,
            paths,
            request_id,
            trace_context,
            admin_token: admin_token.flatten(),
            rollout_state_file,
        }),
        _ => Err(errs.0),
    }
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
        failure_ratio: o
            .failure_ratio
            .as_ref()
            .map(|r| failure_ratio(errs, &r.value)),
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

fn failure_ratio(errs: &mut Errors, raw: &RawFailureRatio) -> FailureRatio {
    let d = FailureRatio::default();
    let at = "health.outlier.failure_ratio";
    FailureRatio {
        percent: int_field(
            errs,
            &format!("{at}.percent"),
            &raw.percent,
            1..=100,
            d.percent,
        ),
        min_requests: int_field(
            errs,
            &format!("{at}.min_requests"),
            &raw.min_requests,
            1..=1_000_000,
            d.min_requests,
        ),
        min_clients: int_field(
            errs,
            &format!("{at}.min_clients"),
            &raw.min_clients,
            1..=CLIENT_SLOTS as u32,
            d.min_clients,
        ),
        window: duration_field(errs, &format!("{at}.window"), &raw.window, d.window),
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

fn groups(errs: &mut Errors, raw: &RawConfig, keys: &dyn KeySource) -> Vec<GroupSpec> {
    let mut out = Vec::new();
    if raw.groups.value.is_empty() {
        errs.at("groups", &raw.groups, "at least one group is required");
    }
    let routed = raw.routes.is_some();
    for (name, g) in &raw.groups.value {
        let path = format!("groups.{name}");
        let gname = GroupName::try_new(name)
            .map_err(|m| errs.at(&path, g, m))
            .ok();
        if !routed && g.value.weight.is_none() {
            errs.at(
                format!("{path}.weight"),
                g,
                "required: the group's share of new clients (or define `routes:` that split between groups)",
            );
        }
        if let Some(spec) = group(errs, &path, gname, &g.value, routed, keys) {
            out.push(spec);
        }
    }
    let live: u64 = out
        .iter()
        .filter(|g| !g.drain)
        .map(|g| u64::from(g.weight.get()))
        .sum();
    if !routed && live == 0 && !out.is_empty() {
        errs.at(
            "groups",
            &raw.groups,
            "no group can take new clients: at least one group needs weight > 0 and no `drain: true`",
        );
    }
    out
}

/// A group's weight and drain flag: its own in the groups-only form; with
/// `routes:`, each route's split holds them and the group none.
fn group_share(
    errs: &mut Errors,
    path: &str,
    g: &RawGroup,
    routed: bool,
) -> Option<(Weight, bool)> {
    const ROUTED: &str = "with `routes:`, a group has no weight or drain of its own: set them in each route's `split` and `drain`";
    if routed {
        if let Some(w) = &g.weight {
            errs.at(format!("{path}.weight"), w, ROUTED);
        }
        if let Some(d) = &g.drain {
            errs.at(format!("{path}.drain"), d, ROUTED);
        }
        return Weight::try_new(0).ok().map(|w| (w, false));
    }
    let drain = g.drain.as_ref().is_some_and(|d| d.value);
    let w = g.weight.as_ref()?;
    Weight::try_new(w.value)
        .map_err(|m| errs.at(format!("{path}.weight"), w, m))
        .ok()
        .map(|w| (w, drain))
}

fn group(
    errs: &mut Errors,
    path: &str,
    name: Option<GroupName>,
    g: &RawGroup,
    routed: bool,
    keys: &dyn KeySource,
) -> Option<GroupSpec> {
    let share = group_share(errs, path, g, routed);
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
    let (weight, drain) = share?;
    Some(GroupSpec {
        name: name?,
        weight,
        drain,
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
