//! Which route a request takes. Built once per config from the routes'
//! matches (config only: no live state), asked once per request.
//!
//! Order of evaluation, the same for every request:
//!
//! ```text
//! 1. host: routes naming the request's host exactly, then wildcard routes
//!    from the longest suffix to the shortest (*.a.example.com before
//!    *.example.com), then routes that name no host.
//! 2. within one of those tiers, the first route (in this order) whose every
//!    condition holds:
//!      path:    exact, then prefixes from the longest, then regex, then none
//!      headers: more header conditions first
//!      method:  a route naming methods before one that does not
//!      then the order the routes are written in.
//! ```
//! A request that no route takes gets a 404 from the proxy. Hosts compare
//! case-insensitively, without the port or a trailing dot. Matching
//! allocates nothing: the host is lowercased on the stack and looked up in
//! hash maps built here.

pub mod path;

use std::collections::HashMap;

use http::{HeaderMap, Method};

use crate::config::{HostPattern, PathPattern, RouteMatch, RouteSpec};

/// Longest host name looked up (DNS allows 253 characters); a longer one
/// can only take a route that names no host.
const MAX_HOST: usize = 255;

/// The routes of one config, indexed for lookup.
#[derive(Debug)]
pub struct RouteTable {
    /// Exact host -> its routes, in precedence order.
    exact: HashMap<Box<str>, Vec<usize>>,
    /// Wildcard suffix (`.example.com`) -> its routes, in precedence order.
    suffix: HashMap<Box<str>, Vec<usize>>,
    /// Routes that name no host, in precedence order.
    any_host: Vec<usize>,
    matches: Vec<RouteMatch>,
    /// Every route takes every request (the groups-only form, or one route
    /// with no conditions): no lookup at all.
    trivial: bool,
}

/// What of a request a route looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request's host, as received (any case, maybe with a port).
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl RouteTable {
    pub fn new(routes: &[RouteSpec]) -> Self {
        let mut exact: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut suffix: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            if r.matches.hosts.is_empty() {
                any_host.push(i);
            }
            for h in &r.matches.hosts {
                let (map, key) = match h {
                    HostPattern::Exact(name) => (&mut exact, name),
                    HostPattern::Suffix(s) => (&mut suffix, s),
                };
                let list = map.entry(key.as_str().into()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        let order =
            |list: &mut Vec<usize>| list.sort_by_key(|&i| precedence(&routes[i].matches, i));
        exact.values_mut().for_each(order);
        suffix.values_mut().for_each(order);
        order(&mut any_host);
        let trivial = routes.len() == 1 && is_catch_all(&routes[0].matches);
        Self {
            exact,
            suffix,
            any_host,
            matches: routes.iter().map(|r| r.matches.clone()).collect(),
            trivial,
        }
    }

    /// The index of the route `req` takes, if any.
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<usize> {
        if self.trivial {
            return Some(0);
        }
        let mut buf = [0u8; MAX_HOST];
        if let Some(host) = normalized_host(req.host, &mut buf) {
            if let Some(i) = self.exact.get(host).and_then(|l| self.first(l, req)) {
                return Some(i);
            }
            // Every suffix that starts at a dot with a label before it,
            // longest first.
            for (at, _) in host.match_indices('.').filter(|&(at, _)| at > 0) {
                if let Some(i) = self
                    .suffix
                    .get(&host[at..])
                    .and_then(|l| self.first(l, req))
                {
                    return Some(i);
                }
            }
        }
        self.first(&self.any_host, req)
    }

    fn first(&self, candidates: &[usize], req: &RequestFacts<'_>) -> Option<usize> {
        candidates
            .iter()
            .copied()
            .find(|&i| conditions_hold(&self.matches[i], req))
    }
}

/// A route's rank within a host tier: lower comes first.
fn precedence(
    m: &RouteMatch,
    declared: usize,
) -> (
    u8,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    bool,
    usize,
) {
    let (kind, len) = match &m.path {
        PathPattern::Exact(p) => (0, p.len()),
        PathPattern::Prefix(p) => (1, p.len()),
        PathPattern::Regex(_) => (2, 0),
        PathPattern::Any => (3, 0),
    };
    let headers = m.headers.len() + m.headers_present.len();
    (
        kind,
        std::cmp::Reverse(len),
        std::cmp::Reverse(headers),
        m.methods.is_empty(),
        declared,
    )
}

fn is_catch_all(m: &RouteMatch) -> bool {
    m.hosts.is_empty()
        && matches!(m.path, PathPattern::Any)
        && m.headers.is_empty()
        && m.headers_present.is_empty()
        && m.methods.is_empty()
}

/// Whether every condition of `m` but the host holds for `req`.
fn conditions_hold(m: &RouteMatch, req: &RequestFacts<'_>) -> bool {
    path_matches(&m.path, req.path)
        && (m.methods.is_empty() || m.methods.contains(req.method))
        && m.headers_present
            .iter()
            .all(|n| req.headers.contains_key(n))
        && m.headers
            .iter()
            .all(|(n, v)| req.headers.get_all(n).iter().any(|got| got == v))
}

/// Whether `path` satisfies `pattern` (prefixes on segment boundaries).
pub fn path_matches(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Any => true,
        PathPattern::Exact(p) => path == p,
        PathPattern::Prefix(p) if p == "/" => true,
        PathPattern::Prefix(p) => {
            path.starts_with(p.as_str())
                && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
        }
        PathPattern::Regex(re) => re.is_match(path),
    }
}

/// `host` lowercased into `buf`, without a port or a trailing dot; `None`
/// when it cannot name any host (too long, or not ASCII).
fn normalized_host<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let name = strip_port(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > MAX_HOST || !name.is_ascii() {
        return None;
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// The host of a `host[:port]` authority (IPv6 literals keep their brackets).
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests;
