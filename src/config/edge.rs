//! The edge's own settings, validated: PROXY protocol per listener, the
//! access log, request ids and trace context.

use std::path::PathBuf;

use http::HeaderName;
use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::fields::{Errors, header_name, int_field};
use super::raw::{RawAccessLog, RawPaths, RawProxyProtocol, RawRequestId, RawTraceContext};

/// A listener that takes a PROXY protocol header (v1 or v2) before each
/// connection's first byte. Every connection must carry one, and only the
/// peers in `from` may send it: any other connection is closed unserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    pub from: Vec<IpNet>,
}

impl ProxyProtocol {
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.from.iter().any(|n| n.contains(&ip))
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    Stdout,
    Stderr,
    /// Appended to; reopened on `SIGUSR1` (logrotate) and when a reload
    /// names another file.
    File(PathBuf),
}

impl std::fmt::Display for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogSink::Stdout => f.write_str("stdout"),
            LogSink::Stderr => f.write_str("stderr"),
            LogSink::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `key=value` pairs separated by spaces; values with spaces or quotes
    /// are quoted.
    Text,
}

/// A JSON key with its separator, zero-padded to 16 bytes, and its length.
pub type Key16 = ([u8; 16], u8);

/// `s` in a [`Key16`]; a key over 16 bytes stops the build.
const fn pad16(s: &str) -> Key16 {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i];
        i += 1;
    }
    (out, b.len() as u8)
}

macro_rules! log_fields {
    ($($(#[$doc:meta])* $variant:ident => $text:literal),+ $(,)?) => {
        /// One field of an access log line, in the order written.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum LogField { $($(#[$doc])* $variant),+ }

        impl LogField {
            pub const ALL: &'static [LogField] = &[$(LogField::$variant),+];
            pub fn name(self) -> &'static str {
                match self { $(LogField::$variant => $text),+ }
            }
            /// `,"name":`: the field's key as a JSON line writes it, with
            /// the comma before it, in 16 bytes (zero-padded) and its length:
            /// a copy of a length known when compiled, no `memcpy` call.
            pub fn json_key16(self) -> &'static Key16 {
                match self { $(LogField::$variant => {
                    const K: Key16 = pad16(concat!(",\"", $text, "\":"));
                    &K
                }),+ }
            }
            /// `,"name":"`: [`Self::json_key16`] with the opening quote of
            /// a string value, so the two are one copy.
            pub fn json_key16_quoted(self) -> &'static Key16 {
                match self { $(LogField::$variant => {
                    const K: Key16 = pad16(concat!(",\"", $text, "\":\""));
                    &K
                }),+ }
            }
            /// ` name=`: the field's key as a text line writes it, with the
            /// space before it.
            pub fn text_key(self) -> &'static str {
                match self { $(LogField::$variant => concat!(" ", $text, "=")),+ }
            }
        }
    };
}

log_fields! {
    /// When the request began, RFC 3339 UTC with milliseconds.
    Time => "time",
    /// The client's address: after the PROXY protocol, and after
    /// `X-Forwarded-For` from `trusted_proxies`.
    Client => "client",
    Method => "method",
    Host => "host",
    /// The path, with the query string when `query: true`.
    Path => "path",
    Protocol => "protocol",
    Status => "status",
    /// Request body bytes received from the client.
    BytesIn => "bytes_in",
    /// Response body bytes sent to the client.
    BytesOut => "bytes_out",
    /// From the request's head to the response's last byte, milliseconds.
    Duration => "duration_ms",
    /// From sending upstream to the response head, milliseconds.
    Upstream => "upstream_ms",
    Route => "route",
    Group => "group",
    Target => "target",
    /// Why the client went to its group: new, sticky, override, ...
    Reason => "reason",
    /// Why a pin the client sent was refused, if it was.
    Rejection => "rejection",
    Retries => "retries",
    RequestId => "request_id",
    TraceId => "trace_id",
    Tls => "tls",
    Sni => "sni",
    UserAgent => "user_agent",
    /// Why the proxy answered itself (no_route, upstream_timeout, ...).
    Error => "error",
}

/// `access_log:`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSettings {
    pub sink: LogSink,
    pub format: LogFormat,
    pub fields: Vec<LogField>,
    pub query: bool,
    /// Lines kept out of each million requests (`sample` × 10⁶).
    pub sample_per_million: u32,
    /// Only answers of 400 and above.
    pub errors_only: bool,
    /// Lines waiting for the writer, per serving thread; past it a line is
    /// dropped and counted.
    pub queue: usize,
}

/// `request_id:`: on unless `enabled: false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdSettings {
    pub header: HeaderName,
    /// Send the id back to the client in the same header.
    pub echo: bool,
}

impl Default for RequestIdSettings {
    fn default() -> Self {
        Self {
            header: HeaderName::from_static("x-request-id"),
            echo: true,
        }
    }
}

/// `trace_context:` (W3C `traceparent`/`tracestate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// Start a trace (a fresh `traceparent`) for a request that carries none
    /// or an invalid one.
    pub start: bool,
    /// The sampled flag of a trace the proxy starts: whether it asks the
    /// applications behind it to record the trace.
    pub sampled: bool,
}

impl Default for TraceContext {
    fn default() -> Self {
        Self {
            start: true,
            sampled: false,
        }
    }
}

/// `proxy_protocol:` of one listener; `path` is its YAML path.
pub(super) fn proxy_protocol(
    errs: &mut Errors,
    path: &str,
    raw: &Spanned<RawProxyProtocol>,
) -> ProxyProtocol {
    let list = &raw.value.from;
    if list.value.is_empty() {
        errs.at(
            format!("{path}.from"),
            list,
            "name the balancers allowed to send the header (addresses or CIDR ranges)",
        );
    }
    ProxyProtocol {
        from: cidrs(errs, &format!("{path}.from"), &list.value),
    }
}

/// A list of addresses or CIDR ranges.
pub(super) fn cidrs(errs: &mut Errors, path: &str, list: &[Spanned<String>]) -> Vec<IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            parse_cidr(&s.value)
                .map_err(|m| errs.at(format!("{path}[{i}]"), s, m))
                .ok()
        })
        .collect()
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))
}

/// Most lines that may wait for the writer, per serving thread.
const MAX_QUEUE: u32 = 1 << 20;
/// Lines a serving thread may have waiting by default: a quarter of a
/// second at 250 000 requests a second, room for a slow disk's stall.
pub const DEFAULT_QUEUE: u32 = 65_536;

/// `access_log:`.
pub(super) fn access_log(errs: &mut Errors, raw: &Spanned<RawAccessLog>) -> AccessLogSettings {
    let a = &raw.value;
    let sink = match a.to.as_ref() {
        None => LogSink::Stdout,
        Some(t) => match t.value.trim() {
            "stdout" | "-" => LogSink::Stdout,
            "stderr" => LogSink::Stderr,
            "" => {
                errs.at("access_log.to", t, "expected stdout, stderr or a file path");
                LogSink::Stdout
            }
            file => LogSink::File(PathBuf::from(file)),
        },
    };
    let format = match a.format.as_ref().map(|f| f.value.trim()) {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(_) => {
            if let Some(f) = &a.format {
                errs.at("access_log.format", f, "expected `json` or `text`");
            }
            LogFormat::Json
        }
    };
    let fields = match &a.fields {
        None => LogField::ALL.to_vec(),
        Some(list) => log_fields(errs, list),
    };
    let sample = match &a.sample {
        None => 1_000_000,
        Some(s) if s.value > 0.0 && s.value <= 1.0 => (s.value * 1e6).round().max(1.0) as u32,
        Some(s) => {
            errs.at(
                "access_log.sample",
                s,
                "expected a share of requests above 0 and at most 1 (0.1: one in ten)",
            );
            1_000_000
        }
    };
    AccessLogSettings {
        sink,
        format,
        fields,
        query: a.query.as_ref().is_some_and(|q| q.value),
        sample_per_million: sample,
        errors_only: a.errors_only.as_ref().is_some_and(|e| e.value),
        queue: int_field(
            errs,
            "access_log.queue",
            &a.queue,
            16..=MAX_QUEUE,
            DEFAULT_QUEUE,
        ) as usize,
    }
}

fn log_fields(errs: &mut Errors, list: &Spanned<Vec<Spanned<String>>>) -> Vec<LogField> {
    if list.value.is_empty() {
        errs.at("access_log.fields", list, "name at least one field");
    }
    let mut out = Vec::new();
    for (i, f) in list.value.iter().enumerate() {
        let name = f.value.trim();
        match LogField::ALL.iter().find(|k| k.name() == name) {
            Some(k) if out.contains(k) => errs.at(
                format!("access_log.fields[{i}]"),
                f,
                format!("`{name}` is listed twice"),
            ),
            Some(k) => out.push(*k),
            None => {
                let known: Vec<&str> = LogField::ALL.iter().map(|k| k.name()).collect();
                errs.at(
                    format!("access_log.fields[{i}]"),
                    f,
                    format!("unknown field `{name}`; known: {}", known.join(", ")),
                );
            }
        }
    }
    out
}

/// `request_id:`; `None` when turned off.
pub(super) fn request_id(
    errs: &mut Errors,
    raw: Option<&Spanned<RawRequestId>>,
) -> Option<RequestIdSettings> {
    let Some(raw) = raw else {
        return Some(RequestIdSettings::default());
    };
    let r = &raw.value;
    if r.enabled.as_ref().is_some_and(|e| !e.value) {
        return None;
    }
    let mut settings = RequestIdSettings::default();
    if let Some(h) = &r.header {
        match header_name(h.value.trim()) {
            Ok(name) if is_reserved(&name) => errs.at(
                "request_id.header",
                h,
                format!("`{name}` is a header the proxy manages itself"),
            ),
            Ok(name) => settings.header = name,
            Err(m) => errs.at("request_id.header", h, m),
        }
    }
    if let Some(e) = &r.echo {
        settings.echo = e.value;
    }
    Some(settings)
}

/// Headers whose meaning the proxy owns: a request id may not take their name.
fn is_reserved(name: &HeaderName) -> bool {
    use http::header::*;
    [
        HOST,
        CONNECTION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        UPGRADE,
        TE,
        TRAILER,
        COOKIE,
        SET_COOKIE,
    ]
    .contains(name)
        || [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "traceparent",
            "tracestate",
        ]
        .contains(&name.as_str())
}

pub(super) fn trace_context(raw: Option<&Spanned<RawTraceContext>>) -> TraceContext {
    let t = raw.map(|t| &t.value);
    TraceContext {
        start: t.and_then(|t| t.start.as_ref()).is_none_or(|s| s.value),
        sampled: t.and_then(|t| t.sampled.as_ref()).is_some_and(|s| s.value),
    }
}

/// `paths:`: how request paths are normalized (defaults: on, slashes
/// merged, encoded slashes and backslashes refused).
pub(super) fn paths(errs: &mut Errors, raw: Option<&Spanned<RawPaths>>) -> PathSettings {
    let d = PathSettings::default();
    let Some(raw) = raw else { return d };
    let p = &raw.value;
    let choice = |errs: &mut Errors, key: &str, v: &Option<Spanned<String>>, allowed: &[&str]| {
        let v = v.as_ref()?;
        let text = v.value.trim();
        if allowed.contains(&text) {
            Some(text.to_owned())
        } else {
            errs.at(
                format!("paths.{key}"),
                v,
                format!("expected one of: {}", allowed.join(", ")),
            );
            None
        }
    };
    let escaped_slashes = match choice(
        errs,
        "escaped_slashes",
        &p.escaped_slashes,
        &["reject", "keep", "decode"],
    )
    .as_deref()
    {
        Some("keep") => EscapedSlashes::Keep,
        Some("decode") => EscapedSlashes::Decode,
        _ => d.escaped_slashes,
    };
    let backslash = match choice(
        errs,
        "backslash",
        &p.backslash,
        &["reject", "keep", "slash"],
    )
    .as_deref()
    {
        Some("keep") => Backslash::Keep,
        Some("slash") => Backslash::Slash,
        _ => d.backslash,
    };
    PathSettings {
        normalize: p.normalize.unwrap_or(d.normalize),
        merge_slashes: p.merge_slashes.unwrap_or(d.merge_slashes),
        escaped_slashes,
        backslash,
    }
}

/// How a request's path is normalized before routing (`crate::route::path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSettings {
    /// Off: the path is routed and forwarded as it came (route confusion
    /// with an origin that normalizes becomes possible).
    pub normalize: bool,
    /// Runs of `/` become one.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
    pub backslash: Backslash,
}

impl Default for PathSettings {
    fn default() -> Self {
        Self {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            backslash: Backslash::Reject,
        }
    }
}

/// What an encoded slash or backslash (`%2F`, `%5C`) in a path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// 400: an origin that decodes it would see another path.
    Reject,
    /// Forwarded as it came (hex uppercased): one segment to the proxy.
    Keep,
    /// Decoded, then normalized like any `/` (or `\`, as `backslash` says).
    Decode,
}

/// What a raw `\` in a path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backslash {
    /// 400: some origins read it as `/`.
    Reject,
    /// Forwarded as it came.
    Keep,
    /// Read as `/`, then normalized.
    Slash,
}
