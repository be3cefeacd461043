//! A request's access log line: what is known of it when it arrives (kept
//! from its head), what each phase learns ([`Outcome`]), and the rest when
//! its response body ends or is dropped ([`Pending::write`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Version};

use super::ids::Ids;
use super::{ConnContext, ProxyError, TlsInfo};
use crate::access_log::{LineWriter, Value};
use crate::assign::{Reason, Rejection};
use crate::body::Verdict;
use crate::config::{AccessLogSettings, LogField, LogFormat};
use crate::state::{Shared, Snapshot};

/// What the phases learn of a request, for its log line. Filled whether or
/// not the line is written: a few stores, cheaper than asking.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub route: Option<usize>,
    pub group: Option<usize>,
    pub target: Option<usize>,
    pub reason: Option<Reason>,
    pub rejection: Option<Rejection>,
    pub retries: u8,
    /// From the request's sending to its response head.
    pub upstream: Option<Duration>,
    pub error: Option<ProxyError>,
    /// The client's body, for the bytes it brought.
    pub body: Verdict,
    /// The request is logged: time its exchange (`upstream`).
    pub timed: bool,
    /// The path as forwarded, when normalizing changed it.
    pub path: Option<PathAndQuery>,
}

/// A request whose line is written when its response body is done.
#[derive(Debug)]
pub struct Pending {
    shared: Arc<Shared>,
    snap: Arc<Snapshot>,
    started: SystemTime,
    start: Instant,
    client: IpAddr,
    method: Method,
    path: Option<PathAndQuery>,
    host: Option<HeaderValue>,
    version: Version,
    user_agent: Option<HeaderValue>,
    tls: Option<Arc<TlsInfo>>,
    ids: Ids,
    outcome: Outcome,
    status: u16,
    bytes_out: u64,
}

impl ConnContext {
    /// The beginning of a request's line, if this request is logged (the log
    /// is on, and the request falls in `sample`).
    pub(super) fn log_start<B>(
        &self,
        snap: &Arc<Snapshot>,
        req: &Request<B>,
        start: Instant,
    ) -> Option<Box<Pending>> {
        let settings = snap.config.access_log.as_ref()?;
        if !sampled(settings) {
            return None;
        }
        let h = req.headers();
        Some(Box::new(Pending {
            shared: Arc::clone(&self.shared),
            snap: Arc::clone(snap),
            started: SystemTime::now(),
            start,
            client: self.client_address(snap, h),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            host: h.get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            }),
            version: req.version(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            tls: self.tls_info.clone(),
            ids: Ids::default(),
            outcome: Outcome::default(),
            status: 0,
            bytes_out: 0,
        }))
    }

    /// The client's address: the peer's (after the PROXY protocol), or, from
    /// a peer in `trusted_proxies`, the last `X-Forwarded-For` entry that is
    /// not itself trusted.
    pub(super) fn client_address(&self, snap: &Snapshot, h: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| {
            let ip = ip.to_canonical();
            snap.config.trusted_proxies.iter().any(|n| n.contains(&ip))
        };
        let peer = self.peer.ip().to_canonical();
        if !trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        let hops = h
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !trusted(&client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

/// Whether this request falls in `access_log.sample`.
fn sampled(settings: &AccessLogSettings) -> bool {
    settings.sample_per_million >= 1_000_000
        || rand::random_range(0..1_000_000) < settings.sample_per_million
}

/// `ip` as text in `scratch` (39 bytes hold any IPv6 address); IPv4, the
/// common case, without the formatting machinery.
fn ip_text(ip: IpAddr, scratch: &mut [u8; 39]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    scratch[n] = b'.';
                    n += 1;
                }
                let mut buf = itoa::Buffer::new();
                let digits = buf.format(octet).as_bytes();
                scratch[n..n + digits.len()].copy_from_slice(digits);
                n += digits.len();
            }
            &scratch[..n]
        }
        IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut scratch[..]);
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{v6}"));
            let n = cursor.position() as usize;
            &scratch[..n]
        }
    }
}

/// The line of a request the connection refused before it was a request
/// (a head that does not parse, or that did not come in time): when, from
/// whom, the status the client got and why. Everything else is absent.
pub fn log_refused_head(shared: &Shared, client: IpAddr, status: u16, error: &'static str) {
    let snap = shared.snapshot();
    let Some(settings) = snap.config.access_log.as_ref() else {
        return;
    };
    if !sampled(settings) {
        return;
    }
    let client = client.to_canonical().to_string();
    shared.access_log.write_line(|out| {
        let mut w = LineWriter::new(out, settings.format);
        for &field in &settings.fields {
            w.field(
                field,
                match field {
                    LogField::Time => Value::Time(SystemTime::now()),
                    LogField::Client => Value::Plain(&client),
                    LogField::Status => Value::Int(u64::from(status)),
                    LogField::Error => Value::Plain(error),
                    _ => Value::Absent,
                },
            );
        }
        w.end();
    });
}

impl Pending {
    /// What the request path learned, with the answer's status.
    pub(super) fn answered(&mut self, status: u16, ids: Ids, mut outcome: Outcome) {
        self.status = status;
        self.ids = ids;
        if let Some(p) = outcome.path.take() {
            // The line shows the path as forwarded.
            self.path = Some(p);
        }
        self.outcome = outcome;
    }

    pub(super) fn sent(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    /// Formats the line and queues it (the response body is done).
    pub(super) fn write(self) {
        let Some(settings) = self.snap.config.access_log.as_ref() else {
            return;
        };
        if settings.errors_only && self.status < 400 {
            return;
        }
        // One copy of the field loop per format, each with its format known
        // where every field is written.
        self.shared
            .access_log
            .write_line(|out| match settings.format {
                LogFormat::Json => self.fields(LineWriter::new(out, LogFormat::Json), settings),
                LogFormat::Text => self.fields(LineWriter::new(out, LogFormat::Text), settings),
            });
    }

    #[inline(always)]
    fn fields(&self, mut w: LineWriter<'_>, settings: &AccessLogSettings) {
        for &field in &settings.fields {
            w.field(field, self.value(settings, field, &mut [0u8; 39]));
        }
        w.end();
    }

    #[inline(always)]
    fn value<'a>(
        &'a self,
        settings: &AccessLogSettings,
        field: LogField,
        scratch: &'a mut [u8; 39],
    ) -> Value<'a> {
        let o = &self.outcome;
        let plain = Value::Plain;
        let group = o.group.and_then(|g| self.snap.groups.get(g));
        match field {
            LogField::Time => Value::Time(self.started),
            LogField::Client => Value::PlainBytes(ip_text(self.client, scratch)),
            LogField::Method => Value::Text(self.method.as_str().as_bytes()),
            LogField::Host => self
                .host
                .as_ref()
                .map_or(Value::Absent, |h| Value::Text(h.as_bytes())),
            LogField::Path => Value::Text(
                match (&self.path, settings.query) {
                    (Some(pq), true) => pq.as_str(),
                    (Some(pq), false) => pq.path(),
                    (None, _) => "/",
                }
                .as_bytes(),
            ),
            LogField::Protocol => plain(match self.version {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_3 => "HTTP/3",
                _ => "HTTP/1.1",
            }),
            LogField::Status => Value::Int(u64::from(self.status)),
            LogField::BytesIn => Value::Int(o.body.received()),
            LogField::BytesOut => Value::Int(self.bytes_out),
            LogField::Duration => Value::Millis(self.start.elapsed()),
            LogField::Upstream => o.upstream.map_or(Value::Absent, Value::Millis),
            LogField::Route => o
                .route
                .and_then(|r| self.snap.routes.get(r))
                .map_or(Value::Absent, |r| plain(r.name.as_str())),
            LogField::Group => group.map_or(Value::Absent, |g| plain(g.name.as_str())),
            LogField::Target => group
                .zip(o.target)
                .and_then(|(g, t)| g.targets.get(t))
                .map_or(Value::Absent, |t| plain(t.address.as_str())),
            LogField::Reason => o.reason.map_or(Value::Absent, |r| plain(r.label())),
            LogField::Rejection => o.rejection.map_or(Value::Absent, |r| plain(r.label())),
            LogField::Retries => Value::Int(u64::from(o.retries)),
            LogField::RequestId => match &self.ids.request_id {
                None => Value::Absent,
                // Made here: 32 hex digits, nothing to escape.
                Some(v) if self.ids.generated => Value::PlainBytes(v.as_bytes()),
                Some(v) => Value::Text(v.as_bytes()),
            },
            // Validated as lowercase hex when it was taken or made.
            LogField::TraceId => self
                .ids
                .trace_id
                .as_ref()
                .map_or(Value::Absent, |t| Value::PlainBytes(t)),
            LogField::Tls => self
                .tls
                .as_ref()
                .map_or(Value::Absent, |t| plain(t.version)),
            LogField::Sni => self
                .tls
                .as_ref()
                .and_then(|t| t.sni.as_deref())
                .map_or(Value::Absent, |s| Value::Text(s.as_bytes())),
            LogField::UserAgent => self
                .user_agent
                .as_ref()
                .map_or(Value::Absent, |v| Value::Text(v.as_bytes())),
            LogField::Error => o.error.map_or(Value::Absent, |e| plain(e.label())),
        }
    }
}
