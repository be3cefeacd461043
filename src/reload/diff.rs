//! What a new config changes compared with the one in force, in an operator's
//! words: for the reload log line, `/status`, and `switchyard check --against`.
//!
//! Pure functions of two [`Config`]s; nothing here touches the running proxy.

use std::fmt::Write as _;
use std::time::Duration;

use crate::assign::bucket::{BUCKETS, BucketTable};
use crate::assign::cookie::key_id;
use crate::config::duration::format_duration;
use crate::config::{BucketBy, Config, ConfigForm, GroupSpec, RouteSpec};

/// A slice of bucket space that changes group between two configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: String,
    pub to: String,
    /// Buckets moved, out of [`BUCKETS`].
    pub buckets: u32,
    /// True when `from` is draining (or gone) in the new config, so its clients
    /// move at their next request instead of when their cookie expires.
    pub at_next_request: bool,
}

impl Move {
    pub fn percent(&self) -> f64 {
        100.0 * f64::from(self.buckets) / f64::from(BUCKETS)
    }
}

fn table(r: &RouteSpec) -> BucketTable {
    BucketTable::new(
        r.split
            .iter()
            .filter(|s| !s.drain)
            .map(|s| (s.group, s.weight.get())),
    )
}

/// Which share of bucket space changes group, largest first, in the
/// groups-only form's one route. A client whose bucket moved keeps its
/// pinned group until its cookie expires (or at once, when its group drains
/// or disappears); new clients follow the new split now.
pub fn bucket_moves(old: &Config, new: &Config) -> Vec<Move> {
    match (old.routes.first(), new.routes.first()) {
        (Some(o), Some(n)) => route_moves((old, o), (new, n)),
        _ => Vec::new(),
    }
}

/// [`bucket_moves`] between one route as it was and as it is.
fn route_moves(old: (&Config, &RouteSpec), new: (&Config, &RouteSpec)) -> Vec<Move> {
    let (t_old, t_new) = (table(old.1), table(new.1));
    let name = |c: &Config, i: Option<usize>| {
        i.and_then(|i| c.groups.get(i))
            .map_or_else(|| "nobody".to_owned(), |g| g.name.to_string())
    };
    let mut moves: Vec<Move> = Vec::new();
    for b in 0..BUCKETS {
        let from = name(old.0, t_old.group_of(b));
        let to = name(new.0, t_new.group_of(b));
        if from == to {
            continue;
        }
        match moves.iter_mut().find(|m| m.from == from && m.to == to) {
            Some(m) => m.buckets += 1,
            None => {
                let at_next_request = new
                    .1
                    .split
                    .iter()
                    .find(|s| new.0.groups[s.group].name.as_str() == from)
                    .is_none_or(|s| s.drain);
                moves.push(Move {
                    from,
                    to,
                    buckets: 1,
                    at_next_request,
                });
            }
        }
    }
    moves.sort_by(|a, b| b.buckets.cmp(&a.buckets).then(a.from.cmp(&b.from)));
    moves
}

/// What changes route by route (the `routes:` form): routes added and
/// removed, a new order, a new match, pin or writes group, and the share of
/// each route's clients that moves.
fn route_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.form != new.form {
        out.push(
            "form: groups only <-> routes (each route pins with its own cookie: every pinned client is assigned anew)"
                .to_owned(),
        );
        return out;
    }
    let find = |c: &'_ Config, name: &crate::config::GroupName| {
        c.routes.iter().position(|r| &r.name == name)
    };
    for r in &old.routes {
        if find(new, &r.name).is_none() {
            out.push(format!(
                "route {} removed (its clients are assigned anew by whatever route now takes their requests)",
                r.name
            ));
        }
    }
    let order = |a: &Config, b: &Config| -> Vec<String> {
        a.routes
            .iter()
            .filter(|r| find(b, &r.name).is_some())
            .map(|r| r.name.to_string())
            .collect()
    };
    let (before, after) = (order(old, new), order(new, old));
    if before != after {
        out.push(format!(
            "routes reordered: {} (the order breaks ties within a host tier)",
            after.join(", ")
        ));
    }
    for r in &new.routes {
        let Some(i) = find(old, &r.name) else {
            out.push(format!("route {} added: {}", r.name, r.matches));
            continue;
        };
        let o = &old.routes[i];
        if o.matches != r.matches {
            out.push(format!(
                "route {} now takes: {} (was: {})",
                r.name, r.matches, o.matches
            ));
        }
        let (a, b) = (&o.sticky, &r.sticky);
        if a.cookie_name != b.cookie_name
            || a.path != b.path
            || a.domain != b.domain
            || a.carrier != b.carrier
        {
            out.push(format!("route {}: its pin changes name, scope or kind (its pinned clients are assigned anew)", r.name));
        }
        if a.ttl != b.ttl {
            let d = |t: u32| dur(Duration::from_secs(u64::from(t)));
            out.push(format!(
                "route {} ttl {} -> {} (cookies already issued keep their expiry)",
                r.name,
                d(a.ttl.secs()),
                d(b.ttl.secs())
            ));
        }
        if o.writes != r.writes {
            let w = |c: &Config, s: &RouteSpec| {
                s.writes.map_or_else(
                    || "none".to_owned(),
                    |w| {
                        format!(
                            "{} (read your writes {})",
                            c.groups[w.group].name,
                            dur(w.read_your_writes)
                        )
                    },
                )
            };
            out.push(format!(
                "route {} writes {} -> {}",
                r.name,
                w(old, o),
                w(new, r)
            ));
        }
        let ttl = b.ttl.secs();
        for line in describe_moves_within(&route_moves((old, o), (new, r)), ttl) {
            out.push(format!("route {}: {line}", r.name));
        }
    }
    out
}

/// One line per move, for people: `12.50% of clients: blue -> green (...)`.
pub fn describe_moves(moves: &[Move], new: &Config) -> Vec<String> {
    describe_moves_within(moves, new.sticky.ttl.secs())
}

/// [`describe_moves`] for pins that live `ttl_secs`.
fn describe_moves_within(moves: &[Move], ttl_secs: u32) -> Vec<String> {
    let ttl = format_duration(Duration::from_secs(u64::from(ttl_secs)));
    moves
        .iter()
        .map(|m| {
            let when = if m.at_next_request {
                format!(
                    "pinned clients move at their next request: {} is draining or gone",
                    m.from
                )
            } else {
                format!("pinned clients move when their cookie expires, within {ttl}")
            };
            format!(
                "{:.2}% of bucket space moves {} -> {} (new clients now; {when})",
                m.percent(),
                m.from,
                m.to
            )
        })
        .collect()
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn dur(d: Duration) -> String {
    format_duration(d)
}

/// `what a -> b`, with an optional note in parentheses.
fn was(
    out: &mut Vec<String>,
    what: &str,
    a: impl std::fmt::Display,
    b: impl std::fmt::Display,
    note: &str,
) {
    if note.is_empty() {
        out.push(format!("{what} {a} -> {b}"));
    } else {
        out.push(format!("{what} {a} -> {b} ({note})"));
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// What replacing `old` with `new` does, in words: every change, then the
/// bucket space that moves between groups. The reload log line and `check
/// --against` both print this.
pub fn describe(old: &Config, new: &Config) -> Vec<String> {
    let mut lines = changes(old, new);
    lines.extend(rollout_changes(old, new));
    if old.form == ConfigForm::GroupsOnly && new.form == ConfigForm::GroupsOnly {
        lines.extend(describe_moves(&bucket_moves(old, new), new));
    } else {
        lines.extend(route_changes(old, new));
    }
    lines
}

fn group_name(c: &Config, i: usize) -> &str {
    c.groups.get(i).map_or("?", |g| g.name.as_str())
}

/// Rollout plans added, removed or changed, by route (a running rollout's
/// own steps are logged by the rollout, not here).
fn rollout_changes(old: &Config, new: &Config) -> Vec<String> {
    let plan = |c: &Config, name: &str| {
        c.routes
            .iter()
            .find(|r| r.name.as_str() == name)
            .and_then(|r| r.rollout.clone())
    };
    let mut names: Vec<&str> = Vec::new();
    for r in old.routes.iter().chain(&new.routes) {
        if !names.contains(&r.name.as_str()) {
            names.push(r.name.as_str());
        }
    }
    let mut out = Vec::new();
    for name in names {
        match (plan(old, name), plan(new, name)) {
            (None, Some(p)) => out.push(format!(
                "route {name}: rollout added ({})",
                p.summary(|i| group_name(new, i))
            )),
            (Some(_), None) if new.routes.iter().any(|r| r.name.as_str() == name) => out.push(
                format!("route {name}: rollout removed (the YAML's weights are back)"),
            ),
            (Some(a), Some(b)) if a != b => out.push(format!(
                "route {name}: rollout plan changed ({})",
                b.summary(|i| group_name(new, i))
            )),
            _ => {}
        }
    }
    out
}

/// Every difference between `old` and `new`, one phrase each, in file order.
/// Key material is never shown: keys are named by their public fingerprint.
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let restart = "needs a restart";
    if old.listen != new.listen {
        was(
            &mut out,
            "listen",
            opt(old.listen),
            opt(new.listen),
            restart,
        );
    }
    tls_changes(old, new, &mut out);
    if old.admin != new.admin {
        was(&mut out, "admin", old.admin, new.admin, restart);
    }
    sticky_changes(old, new, &mut out);
    group_changes(old, new, &mut out);
    if old.override_header != new.override_header {
        let h = |c: &Config| opt(c.override_header.as_ref());
        was(&mut out, "override_header", h(old), h(new), "");
    }
    if old.trusted_proxies != new.trusted_proxies {
        let list = |c: &Config| {
            let v: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
            format!("[{}]", v.join(", "))
        };
        was(&mut out, "trusted_proxies", list(old), list(new), "");
    }
    let (a, b) = (&old.timeouts, &new.timeouts);
    for (name, x, y) in [
        ("timeouts.connect", a.connect, b.connect),
        (
            "timeouts.upstream_response",
            a.upstream_response,
            b.upstream_response,
        ),
        ("timeouts.client_header", a.client_header, b.client_header),
        ("timeouts.upstream_idle", a.upstream_idle, b.upstream_idle),
        ("timeouts.client_body", a.client_body, b.client_body),
        ("timeouts.upstream_body", a.upstream_body, b.upstream_body),
        ("timeouts.tunnel_idle", a.tunnel_idle, b.tunnel_idle),
        ("timeouts.tls_handshake", a.tls_handshake, b.tls_handshake),
        ("timeouts.keepalive", a.keepalive, b.keepalive),
        ("timeouts.client_write", a.client_write, b.client_write),
        (
            "reload.check_interval",
            old.reload.check_interval,
            new.reload.check_interval,
        ),
    ] {
        if x != y {
            was(&mut out, name, dur(x), dur(y), "");
        }
    }
    edge_changes(old, new, &mut out);
    if old.run.workers != new.run.workers {
        let w = |r: &crate::config::RunSettings| {
            r.workers
                .map_or_else(|| "one per core".to_owned(), |n| n.to_string())
        };
        was(&mut out, "run.workers", w(&old.run), w(&new.run), restart);
    }
    out
}

/// PROXY protocol, access log, request ids, trace context.
fn edge_changes(old: &Config, new: &Config, out: &mut Vec<String>) {
    let pp = |p: Option<&crate::config::ProxyProtocol>| match p {
        None => "off".to_owned(),
        Some(p) => {
            let v: Vec<String> = p.from.iter().map(ToString::to_string).collect();
            format!("from [{}]", v.join(", "))
        }
    };
    let tls_pp = |c: &Config| pp(c.tls.as_ref().and_then(|t| t.proxy_protocol.as_ref()));
    if old.proxy_protocol != new.proxy_protocol {
        let note = "applies to connections accepted from now on";
        let (a, b) = (old.proxy_protocol.as_ref(), new.proxy_protocol.as_ref());
        was(out, "proxy_protocol", pp(a), pp(b), note);
    }
    if tls_pp(old) != tls_pp(new) {
        let note = "applies to connections accepted from now on";
        was(out, "tls.proxy_protocol", tls_pp(old), tls_pp(new), note);
    }
    if old.access_log != new.access_log {
        let a = |c: &Config| match &c.access_log {
            None => "off".to_owned(),
            Some(a) => format!("{:?} to {}", a.format, a.sink).to_lowercase(),
        };
        was(out, "access_log", a(old), a(new), "");
    }
    if old.request_id != new.request_id {
        let r = |c: &Config| match &c.request_id {
            None => "off".to_owned(),
            Some(r) => r.header.to_string(),
        };
        was(out, "request_id", r(old), r(new), "");
    }
    if old.trace_context != new.trace_context {
        let t = |c: &Config| format!("{:?}", c.trace_context);
        was(out, "trace_context", t(old), t(new), "");
    }
}

fn sticky_changes(old: &Config, new: &Config, out: &mut Vec<String>) {
    let (a, b) = (&old.sticky, &new.sticky);
    // The MAC binds name, domain and path, so changing one voids every cookie.
    let voids = "every pinned client is assigned anew";
    if a.cookie_name != b.cookie_name {
        let n = |s: &crate::config::Sticky| s.cookie_name.as_str().to_owned();
        was(out, "sticky.cookie", n(a), n(b), voids);
    }
    if a.ttl != b.ttl {
        let d = |t: u32| dur(Duration::from_secs(u64::from(t)));
        let note = "cookies already issued keep their expiry";
        was(out, "sticky.ttl", d(a.ttl.secs()), d(b.ttl.secs()), note);
    }
    if a.path != b.path {
        was(out, "sticky.path", &a.path, &b.path, voids);
    }
    if a.domain != b.domain {
        let d = |s: &crate::config::Sticky| opt(s.domain.as_ref());
        was(out, "sticky.domain", d(a), d(b), voids);
    }
    if a.same_site != b.same_site {
        was(
            out,
            "sticky.same_site",
            a.same_site.as_str(),
            b.same_site.as_str(),
            "",
        );
    }
    if a.secure != b.secure {
        let s = |v: Option<bool>| v.map_or_else(|| "auto".to_owned(), |v| v.to_string());
        was(out, "sticky.secure", s(a.secure), s(b.secure), "");
    }
    if a.bucket_by != b.bucket_by {
        let s = |v: &Option<BucketBy>| match v {
            None => "random".to_owned(),
            Some(BucketBy::ClientIp) => "client_ip".to_owned(),
            Some(BucketBy::Header(h)) => format!("header:{h}"),
        };
        was(
            out,
            "sticky.bucket_by",
            s(&a.bucket_by),
            s(&b.bucket_by),
            "",
        );
    }
    if a.keys != b.keys {
        let ids = |c: &Config| -> Vec<u32> { c.sticky.keys.iter().map(key_id).collect() };
        let (ka, kb) = (ids(old), ids(new));
        let mut s = String::from("sticky.keys:");
        for k in kb.iter().filter(|k| !ka.contains(k)) {
            let _ = write!(s, " key {k:08x} added;");
        }
        for k in ka.iter().filter(|k| !kb.contains(k)) {
            let _ = write!(
                s,
                " key {k:08x} removed (cookies it signed are no longer accepted);"
            );
        }
        if ka.first() != kb.first() {
            let _ = write!(s, " new cookies are now signed by key {:08x};", kb[0]);
        }
        if !ka.iter().any(|k| kb.contains(k)) {
            let _ = write!(s, " no old key remains: {voids};");
        }
        if s.ends_with(':') {
            s.push_str(" reordered;");
        }
        s.pop();
        out.push(s);
    }
}

fn group_changes(old: &Config, new: &Config, out: &mut Vec<String>) {
    let find = |c: &'_ Config, g: &GroupSpec| c.groups.iter().position(|x| x.name == g.name);
    for g in &new.groups {
        let share = new.share(g);
        let Some(i) = find(old, g) else {
            let targets = format!(
                "{} target{}",
                g.targets.len(),
                if g.targets.len() == 1 { "" } else { "s" }
            );
            out.push(if new.form == ConfigForm::GroupsOnly {
                format!(
                    "group {} added (weight {}, share {}, {targets})",
                    g.name,
                    g.weight.get(),
                    pct(share)
                )
            } else {
                format!("group {} added ({targets})", g.name)
            });
            continue;
        };
        let o = &old.groups[i];
        if new.form == ConfigForm::GroupsOnly && old.form == ConfigForm::GroupsOnly {
            weight_changes(old, o, new, g, out);
        }
        health_and_target_changes(o, g, out);
    }
    for o in &old.groups {
        if find(new, o).is_none() {
            out.push(format!(
                "group {} removed (its pinned clients move at their next request)",
                o.name
            ));
        }
    }
    let order = |c: &Config| -> Vec<String> {
        c.groups
            .iter()
            .filter(|g| find(old, g).is_some() && find(new, g).is_some())
            .map(|g| g.name.to_string())
            .collect()
    };
    let groups_only = old.form == ConfigForm::GroupsOnly && new.form == ConfigForm::GroupsOnly;
    if groups_only && order(old) != order(new) {
        out.push(format!(
            "group order {} -> {} (bucket slices follow file order)",
            order(old).join(", "),
            order(new).join(", ")
        ));
    }
}

/// A group's weight, share and drain flag, in the groups-only form (under
/// `routes:` they are each route's, in [`route_changes`]).
fn weight_changes(old: &Config, o: &GroupSpec, new: &Config, g: &GroupSpec, out: &mut Vec<String>) {
    let share = new.share(g);
    let old_share = old.share(o);
    let share_moved = (old_share - share).abs() > 5e-7;
    let shares = format!("share {} -> {}", pct(old_share), pct(share));
    if o.weight != g.weight {
        let mut s = format!("{} weight {} -> {}", g.name, o.weight.get(), g.weight.get());
        // A drain change below carries the share itself.
        if share_moved && o.drain == g.drain {
            let _ = write!(s, " ({shares})");
        }
        out.push(s);
    } else if share_moved && o.drain == g.drain {
        out.push(format!("{} {shares}", g.name));
    }
    if o.drain != g.drain {
        out.push(if g.drain {
            format!(
                "{} now draining ({shares}; its pinned clients move at their next request)",
                g.name
            )
        } else {
            format!("{} no longer draining ({shares})", g.name)
        });
    }
}

/// A group's health check, upstream connection and targets.
fn health_and_target_changes(o: &GroupSpec, g: &GroupSpec, out: &mut Vec<String>) {
    match (&o.health_check, &g.health_check) {
        (None, Some(h)) => out.push(format!(
            "{} health check added (GET {} every {})",
            g.name,
            h.path,
            dur(h.interval)
        )),
        (Some(_), None) => out.push(format!("{} health check removed", g.name)),
        (Some(a), Some(b)) if a != b => out.push(format!(
            "{} health check changed (GET {} every {})",
            g.name,
            b.path,
            dur(b.interval)
        )),
        _ => {}
    }
    if o.tls != g.tls || o.protocol != g.protocol {
        out.push(format!(
                "{} upstream connection changed to {} (new connections; pooled ones are closed when idle)",
                g.name,
                upstream_kind(g)
            ));
    }
    for t in &g.targets {
        match o.targets.iter().find(|x| x.address == t.address) {
            None => out.push(format!(
                "target {} added to {} (weight {})",
                t.address,
                g.name,
                t.weight.get()
            )),
            Some(x) if x.weight != t.weight => out.push(format!(
                "target {} in {} weight {} -> {}",
                t.address,
                g.name,
                x.weight.get(),
                t.weight.get()
            )),
            Some(_) => {}
        }
    }
    for x in &o.targets {
        if !g.targets.iter().any(|t| t.address == x.address) {
            out.push(format!(
                "target {} removed from {} (its pinned clients move to a sibling)",
                x.address, g.name
            ));
        }
    }
}

/// The HTTPS listener: address, redirect, and each certificate by file and by
/// content fingerprint (a digest, never key material).
fn tls_changes(old: &Config, new: &Config, out: &mut Vec<String>) {
    let addr = |c: &Config| opt(c.tls.as_ref().map(|t| t.listen));
    if addr(old) != addr(new) {
        was(out, "tls.listen", addr(old), addr(new), "needs a restart");
    }
    let (Some(a), Some(b)) = (&old.tls, &new.tls) else {
        return;
    };
    if a.redirect_http != b.redirect_http {
        was(
            out,
            "tls.redirect_http",
            a.redirect_http,
            b.redirect_http,
            "",
        );
    }
    let certs = |t: &crate::config::TlsListener| {
        t.certs
            .iter()
            .map(|c| format!("{} ({})", c.cert_file, c.material.fingerprint()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if a.certs != b.certs || certs(a) != certs(b) {
        was(
            out,
            "tls.certificates",
            format!("[{}]", certs(a)),
            format!("[{}]", certs(b)),
            "",
        );
    }
}

fn upstream_kind(g: &crate::config::GroupSpec) -> String {
    let proto = match g.protocol {
        crate::config::UpstreamProtocol::Http1 => "HTTP/1.1",
        crate::config::UpstreamProtocol::Http2 => "HTTP/2",
    };
    match &g.tls {
        None => format!("{proto} in cleartext"),
        Some(t) => format!(
            "{proto} over TLS (CA {}{})",
            t.ca_file.as_deref().unwrap_or("system"),
            t.server_name
                .as_ref()
                .map(|n| format!(", name {n}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StaticKeys, ValidateOptions, load_str};

    const KEYS: [(&str, &str); 2] = [
        ("K1", "dGVzdC1rZXktdGhhdC1pcy1sb25nLWVub3VnaC0zMmI="),
        ("K2", "b3RoZXIta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzJi"),
    ];

    fn cfg(body: &str) -> Config {
        let text = format!("listen: 127.0.0.1:8080\n{body}");
        load_str(
            &text,
            "t.yaml",
            &StaticKeys(KEYS.to_vec()),
            ValidateOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn canary(green: u32, extra_green: &str) -> Config {
        cfg(&format!(
            "sticky: {{ttl: 1h, keys: [env:K1]}}\ngroups:\n  blue:\n    weight: {}\n    targets: [{{address: 10.0.0.1:80}}]\n  green:\n    weight: {green}\n{extra_green}    targets: [{{address: 10.0.0.9:80}}]\n",
            100 - green
        ))
    }

    /// Groups a, b, c and the routes given.
    fn routed(routes: &str) -> Config {
        cfg(&format!(
            "sticky: {{ttl: 1h, keys: [env:K1]}}\ngroups:\n  a:\n    targets: [{{address: 10.0.0.1:80}}]\n  b:\n    targets: [{{address: 10.0.0.2:80}}]\n  c:\n    targets: [{{address: 10.0.0.3:80}}]\nroutes:\n{routes}"
        ))
    }

    #[test]
    fn under_routes_the_diff_speaks_route_by_route() {
        let api = "  - name: api\n    match: {hosts: [api.test]}\n    split: {a: 90, b: 10}\n";
        let web = "  - name: web\n    match: {hosts: [www.test]}\n    split: {c: 1}\n";
        let old = routed(&format!("{api}{web}"));
        // The canary on api moves to 25%; web stays put; a route is added,
        // the two old ones swap places.
        let api2 = api.replace("a: 90, b: 10", "a: 75, b: 25");
        let new = routed(&format!(
            "{web}{api2}  - name: img\n    match: {{path_prefix: /img}}\n    split: {{c: 1}}\n"
        ));
        let d = describe(&old, &new);
        assert_eq!(
            d,
            [
                "routes reordered: web, api (the order breaks ties within a host tier)",
                "route api: 15.00% of bucket space moves a -> b (new clients now; pinned clients move when their cookie expires, within 1h)",
                "route img added: path_prefix /img",
            ],
            "{d:#?}"
        );
        // Draining on one route moves its clients at their next request; a
        // removed route says where its clients go.
        let drained = routed(&format!(
            "{}    drain: [b]\n",
            api.trim_end_matches('\n').to_owned() + "\n"
        ));
        let d = describe(&old, &drained);
        assert!(d.iter().any(|l| l == "route web removed (its clients are assigned anew by whatever route now takes their requests)"), "{d:#?}");
        assert!(
            d.iter().any(
                |l| l.starts_with("route api: 10.00% of bucket space moves b -> a")
                    && l.contains("at their next request")
            ),
            "{d:#?}"
        );
        // No weight line for groups, which hold none under routes.
        assert!(d.iter().all(|l| !l.contains("weight")), "{d:#?}");
    }

    #[test]
    fn a_weight_shift_reads_like_the_issue_says() {
        let c = changes(&canary(10, ""), &canary(25, ""));
        assert_eq!(
            c,
            [
                "blue weight 90 -> 75 (share 90.0% -> 75.0%)",
                "green weight 10 -> 25 (share 10.0% -> 25.0%)"
            ]
        );
        let m = bucket_moves(&canary(10, ""), &canary(25, ""));
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].from.as_str(), m[0].to.as_str()), ("blue", "green"));
        assert_eq!(m[0].buckets, 1_500);
        assert!(!m[0].at_next_request);
        assert!(
            describe_moves(&m, &canary(25, ""))[0]
                .starts_with("15.00% of bucket space moves blue -> green")
        );
    }

    #[test]
    fn draining_moves_everyone_at_the_next_request() {
        let m = bucket_moves(&canary(50, ""), &canary(50, "    drain: true\n"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].buckets, 5_000);
        assert!(m[0].at_next_request);
        let c = changes(&canary(50, ""), &canary(50, "    drain: true\n"));
        assert!(
            c.iter()
                .any(|l| l.starts_with("green now draining (share 50.0% -> 0.0%")),
            "{c:?}"
        );
        assert!(c.iter().any(|l| l == "blue share 50.0% -> 100.0%"), "{c:?}");
    }

    #[test]
    fn targets_keys_and_timeouts_are_named() {
        let a = cfg(
            "sticky: {ttl: 1h, keys: [env:K1]}\ngroups:\n  blue:\n    weight: 1\n    targets: [{address: 10.0.0.1:80}, {address: 10.0.0.2:80}]\n",
        );
        let b = cfg(
            "sticky: {ttl: 2h, keys: [env:K2, env:K1]}\ntimeouts: {connect: 1s}\ngroups:\n  blue:\n    weight: 1\n    targets: [{address: 10.0.0.1:80, weight: 3}, {address: 10.0.0.3:80}]\n",
        );
        let c = changes(&a, &b);
        let all = c.join(" | ");
        for want in [
            "sticky.ttl 1h -> 2h",
            "added; new cookies are now signed by key",
            "target 10.0.0.1:80 in blue weight 1 -> 3",
            "target 10.0.0.3:80 added to blue (weight 1)",
            "target 10.0.0.2:80 removed from blue",
            "timeouts.connect 3s -> 1s",
        ] {
            assert!(all.contains(want), "missing {want:?} in {all}");
        }
        assert!(bucket_moves(&a, &b).is_empty());
        assert!(!all.contains("dGVzd"), "key material must never be shown");
    }

    #[test]
    fn identical_configs_have_no_changes() {
        assert!(changes(&canary(10, ""), &canary(10, "")).is_empty());
        assert!(bucket_moves(&canary(10, ""), &canary(10, "")).is_empty());
    }
}
