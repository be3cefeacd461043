//! `routes:`, validated: which requests each route takes, how it splits them
//! between groups and how it pins them; or, in the groups-only form, the one
//! catch-all route over `groups:` and the top-level `sticky:`.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde_saphyr::Spanned;

use super::fields::{Errors, ValidateOptions};
use super::keys::KeySource;
use super::raw::{RawConfig, RawMatch, RawRoute, RawSticky, RawWrites};
use super::sticky::sticky;
use super::types::*;

/// Longest regex source accepted, and the compiled program's size limit: a
/// route's regex runs on every request it is asked about.
const MAX_REGEX_LEN: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// The routes of `raw` and which form it was written in. `top`: the
/// validated top-level sticky settings (`None` when they had errors, which
/// are reported already).
pub(super) fn routes(
    errs: &mut Errors,
    raw: &RawConfig,
    groups: &[GroupSpec],
    top: Option<&Sticky>,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> (Vec<RouteSpec>, ConfigForm) {
    let Some(list) = &raw.routes else {
        let split: Vec<RouteGroup> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| RouteGroup {
                group: i,
                weight: g.weight,
                drain: g.drain,
            })
            .collect();
        let rollout = raw
            .rollout
            .as_ref()
            .and_then(|ro| super::plan::plan(errs, "", ro, groups, Some(&split)));
        let catch_all: Vec<RouteSpec> = top
            .and_then(|sticky| {
                Some(RouteSpec {
                    name: GroupName::try_new("default").ok()?,
                    matches: RouteMatch::default(),
                    split,
                    sticky: sticky.clone(),
                    bound: false,
                    writes: None,
                    rollout,
                })
            })
            .into_iter()
            .collect();
        return (catch_all, ConfigForm::GroupsOnly);
    };
    if let Some(ro) = &raw.rollout {
        errs.at(
            "rollout",
            ro,
            "with `routes:`, a rollout belongs to its route: move it under `routes[i].rollout`",
        );
    }
    if list.value.is_empty() {
        errs.at("routes", list, "at least one route is required (or leave `routes:` out for one catch-all route over `groups:`)");
    }
    let mut out: Vec<RouteSpec> = Vec::new();
    for (i, r) in list.value.iter().enumerate() {
        let at = format!("routes[{i}]");
        if let Some(spec) = route(errs, &at, &r.value, raw, groups, top, keys, opts) {
            cross_check(errs, &at, r, &spec, &out);
            out.push(spec);
        }
    }
    (out, ConfigForm::Routes)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one route's validation reads them all"
)]
fn route(
    errs: &mut Errors,
    at: &str,
    r: &RawRoute,
    raw: &RawConfig,
    groups: &[GroupSpec],
    top: Option<&Sticky>,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> Option<RouteSpec> {
    let name = GroupName::try_new(&r.name.value)
        .map_err(|_| {
            errs.at(
                format!("{at}.name"),
                &r.name,
                format!(
                    "route name `{}` must be 1-32 characters of a-z, 0-9, '-' or '_'",
                    r.name.value
                ),
            )
        })
        .ok();
    let matches = match &r.matches {
        Some(m) => route_match(errs, &format!("{at}.match"), m),
        None => Some(RouteMatch::default()),
    };
    let split = split(errs, at, r, groups);
    if let Some(own) = r.sticky.as_ref().and_then(|s| s.value.store.as_ref()) {
        errs.at(
            format!("{at}.sticky.store"),
            own,
            "the session store is the proxy's: set it in the top-level `sticky`",
        );
    }
    let sticky = match (top, &name, &matches) {
        (Some(_), Some(name), Some(m)) => {
            let merged = merged_sticky(&raw.sticky, r, name, m);
            sticky(errs, &format!("{at}.sticky"), &merged, keys, opts)
        }
        _ => None,
    };
    let writes = r.writes.as_ref().map(|w| writes(errs, at, w, groups));
    let rollout = match &r.rollout {
        None => Some(None),
        Some(ro) => super::plan::plan(errs, at, ro, groups, split.as_deref()).map(Some),
    };
    Some(RouteSpec {
        name: name?,
        matches: matches?,
        split: split?,
        sticky: sticky?,
        bound: true,
        writes: writes.map_or(Some(None), |w| w.map(Some))?,
        rollout: rollout?,
    })
}

fn writes(
    errs: &mut Errors,
    at: &str,
    raw: &Spanned<RawWrites>,
    groups: &[GroupSpec],
) -> Option<Writes> {
    let w = &raw.value;
    let group = groups.iter().position(|g| g.name.as_str() == w.group.value);
    if group.is_none() {
        errs.at(
            format!("{at}.writes.group"),
            &w.group,
            format!("no group named `{}` under `groups:`", w.group.value),
        );
    }
    let path = format!("{at}.writes.read_your_writes");
    let window = super::fields::duration_or_zero(errs, &path, &w.read_your_writes, Duration::ZERO);
    if let Some(s) = &w.read_your_writes
        && window > MAX_READ_YOUR_WRITES
    {
        errs.at(&path, s, "must be at most 1h");
    }
    Some(Writes {
        group: group?,
        read_your_writes: window,
    })
}

/// The top-level sticky settings with the route's own over them. Unless the
/// route says otherwise, its cookie is `<cookie>_<route>` and its path the
/// route's path (prefix or exact), so two routes never overwrite each
/// other's pin.
fn merged_sticky(
    top: &Spanned<RawSticky>,
    r: &RawRoute,
    name: &GroupName,
    m: &RouteMatch,
) -> Spanned<RawSticky> {
    let mut out = top.clone();
    let here = |v: String| Spanned {
        value: v,
        referenced: r.name.referenced,
        defined: r.name.defined,
    };
    let base = top
        .value
        .cookie
        .as_ref()
        .map_or("switchyard", |c| c.value.as_str());
    let own = r.sticky.as_ref().map(|s| &s.value);
    let o = &mut out.value;
    o.cookie = own
        .and_then(|s| s.cookie.clone())
        .or_else(|| Some(here(format!("{base}_{}", name.as_str()))));
    if let Some(s) = own {
        let keep = |mine: &Option<Spanned<String>>, theirs: &mut Option<Spanned<String>>| {
            if mine.is_some() {
                theirs.clone_from(mine);
            }
        };
        keep(&s.ttl, &mut o.ttl);
        keep(&s.domain, &mut o.domain);
        keep(&s.same_site, &mut o.same_site);
        keep(&s.bucket_by, &mut o.bucket_by);
        keep(&s.kind, &mut o.kind);
        keep(&s.header, &mut o.header);
        keep(&s.lifetime, &mut o.lifetime);
        if s.keys.is_some() {
            o.keys.clone_from(&s.keys);
        }
        if s.secure.is_some() {
            o.secure = s.secure;
        }
        if s.host_prefix.is_some() {
            o.host_prefix.clone_from(&s.host_prefix);
        }
    }
    let host_prefix = o.host_prefix.as_ref().is_some_and(|h| h.value);
    o.path = match own.and_then(|s| s.path.clone()) {
        Some(p) => Some(p),
        None if host_prefix => None,
        None => match &m.path {
            PathPattern::Exact(p) | PathPattern::Prefix(p) => Some(here(p.clone())),
            PathPattern::Regex(_) | PathPattern::Any => top.value.path.clone(),
        },
    };
    let header_pin = o
        .kind
        .as_ref()
        .is_some_and(|k| k.value.trim().eq_ignore_ascii_case("header"));
    if header_pin && own.and_then(|s| s.header.as_ref()).is_none() {
        let base = top
            .value
            .header
            .as_ref()
            .map_or(super::sticky::DEFAULT_PIN_HEADER, |h| h.value.trim());
        o.header = Some(here(format!("{base}-{}", name.as_str())));
    }
    // The store is the proxy's, set once at the top level.
    o.store = None;
    if let Some(sticky) = &r.sticky {
        out.referenced = sticky.referenced;
    }
    out
}

fn split(
    errs: &mut Errors,
    at: &str,
    r: &RawRoute,
    groups: &[GroupSpec],
) -> Option<Vec<RouteGroup>> {
    let mut out = Vec::new();
    let mut ok = true;
    if r.split.value.is_empty() {
        errs.at(
            format!("{at}.split"),
            &r.split,
            "at least one group is required",
        );
        return None;
    }
    for (gname, w) in &r.split.value {
        let path = format!("{at}.split.{gname}");
        let Some(g) = groups.iter().position(|g| g.name.as_str() == gname) else {
            errs.at(
                &path,
                w,
                format!("no group named `{gname}` under `groups:`"),
            );
            ok = false;
            continue;
        };
        match Weight::try_new(w.value) {
            Ok(weight) => out.push(RouteGroup {
                group: g,
                weight,
                drain: false,
            }),
            Err(m) => {
                errs.at(&path, w, m);
                ok = false;
            }
        }
    }
    for (i, d) in r.drain.iter().enumerate() {
        match out
            .iter_mut()
            .find(|s| groups[s.group].name.as_str() == d.value)
        {
            Some(s) => s.drain = true,
            None => {
                errs.at(
                    format!("{at}.drain[{i}]"),
                    d,
                    format!("`{}` is not in this route's split", d.value),
                );
                ok = false;
            }
        }
    }
    let live: u64 = out
        .iter()
        .filter(|s| !s.drain)
        .map(|s| u64::from(s.weight.get()))
        .sum();
    if ok && live == 0 {
        errs.at(
            format!("{at}.split"),
            &r.split,
            "no group of this route can take new clients: at least one needs weight > 0 and no drain",
        );
        ok = false;
    }
    ok.then_some(out)
}

fn route_match(errs: &mut Errors, at: &str, raw: &Spanned<RawMatch>) -> Option<RouteMatch> {
    let m = &raw.value;
    let mut ok = true;
    let mut hosts = Vec::new();
    for (i, h) in m.hosts.iter().enumerate() {
        match host_pattern(&h.value) {
            Ok(p) if hosts.contains(&p) => {
                errs.at(
                    format!("{at}.hosts[{i}]"),
                    h,
                    format!("`{}` is listed twice", h.value),
                );
                ok = false;
            }
            Ok(p) => hosts.push(p),
            Err(msg) => {
                errs.at(format!("{at}.hosts[{i}]"), h, msg);
                ok = false;
            }
        }
    }
    let given: Vec<(&str, &Spanned<String>)> = [
        ("path", &m.path),
        ("path_prefix", &m.path_prefix),
        ("path_regex", &m.path_regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let path = match given.as_slice() {
        [] => Some(PathPattern::Any),
        [(kind, v)] => path_pattern(kind, &v.value)
            .map_err(|msg| errs.at(format!("{at}.{kind}"), v, msg))
            .ok(),
        [_, (kind, v), ..] => {
            errs.at(
                format!("{at}.{kind}"),
                v,
                "give one of `path`, `path_prefix` and `path_regex`",
            );
            None
        }
    };
    let mut headers = Vec::new();
    for (name, v) in &m.headers {
        let n = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_str(&v.value);
        match (n, value) {
            (Ok(n), Ok(value)) => headers.push((n, value)),
            (Err(_), _) => {
                errs.at(
                    format!("{at}.headers.{name}"),
                    v,
                    format!("`{name}` is not a valid header name"),
                );
                ok = false;
            }
            (_, Err(_)) => {
                errs.at(
                    format!("{at}.headers.{name}"),
                    v,
                    "not a valid header value",
                );
                ok = false;
            }
        }
    }
    let mut headers_present = Vec::new();
    for (i, h) in m.headers_present.iter().enumerate() {
        match HeaderName::from_bytes(h.value.as_bytes()) {
            Ok(n) => headers_present.push(n),
            Err(_) => {
                errs.at(
                    format!("{at}.headers_present[{i}]"),
                    h,
                    format!("`{}` is not a valid header name", h.value),
                );
                ok = false;
            }
        }
    }
    let mut methods = Vec::new();
    for (i, v) in m.methods.iter().enumerate() {
        let upper = v.value.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(method) if !upper.is_empty() => methods.push(method),
            _ => {
                errs.at(
                    format!("{at}.methods[{i}]"),
                    v,
                    format!("`{}` is not an HTTP method", v.value),
                );
                ok = false;
            }
        }
    }
    let out = RouteMatch {
        hosts,
        path: path?,
        headers,
        headers_present,
        methods,
    };
    ok.then_some(out)
}

/// A `hosts` entry: a host name or `*.` and a domain, lowercase, no port.
fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower).to_owned();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let ipv6 = !wild
        && name.starts_with('[')
        && name.ends_with(']')
        && name[1..name.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    if !ipv6 && (name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok)) {
        return Err(if s.contains(':') && !s.starts_with('[') {
            format!("`{s}`: hosts are matched without the port; leave it out")
        } else {
            format!("`{s}` is not a host name, or `*.` followed by one")
        });
    }
    Ok(if wild {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

fn path_pattern(kind: &str, v: &str) -> Result<PathPattern, String> {
    if kind == "path_regex" {
        if v.len() > MAX_REGEX_LEN {
            return Err(format!("longer than {MAX_REGEX_LEN} characters"));
        }
        return regex::RegexBuilder::new(&format!("^(?:{v})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(PathPattern::Regex)
            .map_err(|e| {
                let text = e.to_string();
                let last = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                format!("not a valid regex: {}", last.trim())
            });
    }
    let valid = v.starts_with('/')
        && !v.contains(['?', '#'])
        && v.parse::<http::uri::PathAndQuery>().is_ok();
    if !valid {
        return Err(format!("`{v}` must be a path starting with '/' (no query)"));
    }
    Ok(if kind == "path" {
        PathPattern::Exact(v.to_owned())
    } else {
        let trimmed = v.trim_end_matches('/');
        if trimmed.is_empty() {
            // `/` takes every path: the same as no path condition (and
            // ranked as one, so no two spellings of it compete).
            PathPattern::Any
        } else {
            PathPattern::Prefix(trimmed.to_owned())
        }
    })
}

/// What a route cannot share with the routes before it: its name, its whole
/// match (the later one could never be taken), and a cookie that could
/// reach the same requests under the same name.
fn cross_check(
    errs: &mut Errors,
    at: &str,
    raw: &Spanned<RawRoute>,
    r: &RouteSpec,
    before: &[RouteSpec],
) {
    if let Some(takers) = shadowed_by(r, before) {
        errs.at(
            format!("{at}.match"),
            raw,
            format!(
                "unreachable: route{} {} before it take{} all its requests (the same conditions for each of its hosts)",
                if takers.len() == 1 { "" } else { "s" },
                takers.join(", "),
                if takers.len() == 1 { "s" } else { "" },
            ),
        );
    }
    let r_raw = &raw.value;
    for b in before {
        if b.name == r.name {
            errs.at(
                format!("{at}.name"),
                &r_raw.name,
                format!("a route named `{}` comes before", r.name),
            );
        } else if let (PinCarrier::Header(x), PinCarrier::Header(y)) =
            (&b.sticky.carrier, &r.sticky.carrier)
            && x == y
            && hosts_overlap(b, r)
        {
            let line = r_raw
                .sticky
                .as_ref()
                .and_then(|s| s.value.header.as_ref())
                .map(|h| h.referenced);
            let msg = format!(
                "pin header `{x}` is route `{}`'s too, on overlapping hosts: a client of both would send one route's pin to the other; give this route another `sticky.header`",
                b.name
            );
            at_own_or_route(errs, format!("{at}.sticky.header"), line, r_raw, msg);
        } else if b.sticky.carrier == PinCarrier::Cookie
            && r.sticky.carrier == PinCarrier::Cookie
            && b.sticky.cookie_name == r.sticky.cookie_name
            && cookies_meet(b, r)
        {
            let cookie = r_raw
                .sticky
                .as_ref()
                .and_then(|s| s.value.cookie.as_ref())
                .map(|c| c.referenced);
            let msg = format!(
                "cookie `{}` can reach the requests of route `{}` too (overlapping hosts and paths): give this route another `sticky.cookie`",
                r.sticky.cookie_name.as_str(),
                b.name
            );
            at_own_or_route(errs, format!("{at}.sticky.cookie"), cookie, r_raw, msg);
        }
    }
}

/// The earlier routes that take every request `r` would: with the same
/// conditions but the hosts, they name each of `r`'s hosts (or, like `r`,
/// none). Under the order of evaluation, equal conditions rank by the order
/// written, so `r` could never be taken; any other difference in path,
/// headers or methods leaves `r` some request of its own.
fn shadowed_by(r: &RouteSpec, before: &[RouteSpec]) -> Option<Vec<String>> {
    let sorted = |m: &RouteMatch| {
        let mut headers: Vec<(String, Vec<u8>)> = m
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        headers.sort();
        let mut present: Vec<&str> = m.headers_present.iter().map(HeaderName::as_str).collect();
        present.sort_unstable();
        let mut methods: Vec<&str> = m.methods.iter().map(Method::as_str).collect();
        methods.sort_unstable();
        (headers, present.join(" "), methods.join(" "))
    };
    let same = |b: &RouteSpec| {
        b.matches.path == r.matches.path && sorted(&b.matches) == sorted(&r.matches)
    };
    let takers: Vec<&RouteSpec> = before.iter().filter(|b| same(b)).collect();
    let covering = |host: Option<&HostPattern>| {
        takers.iter().find(|b| match host {
            None => b.matches.hosts.is_empty(),
            Some(h) => b.matches.hosts.contains(h),
        })
    };
    let mut names: Vec<String> = Vec::new();
    let hosts: Vec<Option<&HostPattern>> = if r.matches.hosts.is_empty() {
        vec![None]
    } else {
        r.matches.hosts.iter().map(Some).collect()
    };
    for h in hosts {
        let name = format!("`{}`", covering(h)?.name);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Some(names)
}

/// Whether a browser could send route `a`'s cookie and route `b`'s on one
/// request: their hosts overlap (or either cookie has a `Domain`) and one
/// cookie path covers the other's.
fn cookies_meet(a: &RouteSpec, b: &RouteSpec) -> bool {
    let hosts = a.sticky.domain.is_some() || b.sticky.domain.is_some() || hosts_overlap(a, b);
    let covers = |outer: &str, inner: &str| {
        outer == "/"
            || inner == outer
            || inner.starts_with(outer)
                && (outer.ends_with('/') || inner.as_bytes().get(outer.len()) == Some(&b'/'))
    };
    hosts && (covers(&a.sticky.path, &b.sticky.path) || covers(&b.sticky.path, &a.sticky.path))
}

/// An error at the line of the route's own key when it wrote one (`line`),
/// else at the route's name (the value came from a default).
fn at_own_or_route(
    errs: &mut Errors,
    path: String,
    line: Option<serde_saphyr::Location>,
    r: &RawRoute,
    msg: String,
) {
    match line {
        Some(line) => errs.0.push(super::error::ConfigError::new(
            path,
            super::fields::line(&line),
            msg,
        )),
        None => errs.at(path, &r.name, msg),
    }
}

/// Whether one request could be taken by either route's hosts.
fn hosts_overlap(a: &RouteSpec, b: &RouteSpec) -> bool {
    a.matches.hosts.is_empty()
        || b.matches.hosts.is_empty()
        || a.matches
            .hosts
            .iter()
            .any(|x| b.matches.hosts.iter().any(|y| hosts_meet(x, y)))
}

fn hosts_meet(a: &HostPattern, b: &HostPattern) -> bool {
    match (a, b) {
        (HostPattern::Exact(x), HostPattern::Exact(y)) => x == y,
        (HostPattern::Suffix(s), HostPattern::Exact(h))
        | (HostPattern::Exact(h), HostPattern::Suffix(s)) => h.ends_with(s.as_str()),
        (HostPattern::Suffix(x), HostPattern::Suffix(y)) => {
            x.ends_with(y.as_str()) || y.ends_with(x.as_str())
        }
    }
}
