//! A request's access log line: what is known of it when it arrives (kept
//! from its head), what each phase learns ([`Outcome`]), and the rest when
//! its response body ends or is dropped ([`Pending::write`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};

use super::ids::Ids;
use super::{ConnContext, ProxyError, TlsInfo};
use crate::access_log::{LineWriter, Value};
use crate::assign::{Reason, Rejection};
use crate::body::Verdict;
use crate::config::{AccessLogSettings, LogField};
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
    uri: Uri,
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
        if settings.sample_per_million < 1_000_000
            && rand::random_range(0..1_000_000) >= settings.sample_per_million
        {
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
            uri: req.uri().clone(),
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
    fn client_address(&self, snap: &Snapshot, h: &HeaderMap) -> IpAddr {
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

impl Pending {
    /// What the request path learned, with the answer's status.
    pub(super) fn answered(&mut self, status: u16, ids: Ids, outcome: Outcome) {
        self.status = status;
        self.ids = ids;
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
        let mut line = Vec::with_capacity(384);
        let mut w = LineWriter::new(&mut line, settings.format);
        for &field in &settings.fields {
            w.field(field, self.value(settings, field, &mut [0u8; 39]));
        }
        w.end();
        self.shared.access_log.send(line);
    }

    fn value<'a>(
        &'a self,
        settings: &AccessLogSettings,
        field: LogField,
        scratch: &'a mut [u8; 39],
    ) -> Value<'a> {
        let o = &self.outcome;
        let text = |s: &'a str| Value::Text(s.as_bytes());
        let group = o.group.and_then(|g| self.snap.groups.get(g));
        match field {
            LogField::Time => Value::Time(self.started),
            LogField::Client => {
                let mut cursor = std::io::Cursor::new(&mut scratch[..]);
                let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{}", self.client));
                let n = cursor.position() as usize;
                Value::Text(&scratch[..n])
            }
            LogField::Method => text(self.method.as_str()),
            LogField::Host => self
                .host
                .as_ref()
                .map_or(Value::Absent, |h| Value::Text(h.as_bytes())),
            LogField::Path => text(match (settings.query, self.uri.path_and_query()) {
                (true, Some(pq)) => pq.as_str(),
                _ => self.uri.path(),
            }),
            LogField::Protocol => text(match self.version {
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
                .map_or(Value::Absent, |r| text(r.name.as_str())),
            LogField::Group => group.map_or(Value::Absent, |g| text(g.name.as_str())),
            LogField::Target => group
                .zip(o.target)
                .and_then(|(g, t)| g.targets.get(t))
                .map_or(Value::Absent, |t| text(t.address.as_str())),
            LogField::Reason => o.reason.map_or(Value::Absent, |r| text(r.label())),
            LogField::Rejection => o.rejection.map_or(Value::Absent, |r| text(r.label())),
            LogField::Retries => Value::Int(u64::from(o.retries)),
            LogField::RequestId => self
                .ids
                .request_id
                .as_ref()
                .map_or(Value::Absent, |v| Value::Text(v.as_bytes())),
            LogField::TraceId => self
                .ids
                .trace_id
                .as_ref()
                .map_or(Value::Absent, |t| Value::Text(t)),
            LogField::Tls => self.tls.as_ref().map_or(Value::Absent, |t| text(t.version)),
            LogField::Sni => self
                .tls
                .as_ref()
                .and_then(|t| t.sni.as_deref())
                .map_or(Value::Absent, text),
            LogField::UserAgent => self
                .user_agent
                .as_ref()
                .map_or(Value::Absent, |v| Value::Text(v.as_bytes())),
            LogField::Error => o.error.map_or(Value::Absent, |e| text(e.label())),
        }
    }
}
