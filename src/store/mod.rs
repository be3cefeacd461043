//! Server-side session records (`sticky.store: memory | redis`): the client's
//! cookie holds only a signed random session id, and the assignment (group,
//! target, bucket, expiry) lives here under that id.
//!
//! ```text
//! get:  cache (fresh for cache_ttl) -> Redis GET (within `timeout`) -> cache
//! put:  Redis SET .. EX <seconds left> -> cache
//! down: an error or timeout opens a 1 s breaker: requests skip Redis and the
//!       proxy buckets by the session id (`reason="store_unavailable"`) until
//!       one probe succeeds. The connection manager reconnects by itself; a
//!       READONLY answer (a failed-over primary) makes a new connection.
//! ```
//! The memory store is the cache alone, sized by `cache_size`, with records
//! trusted until they expire. Nothing here ever fails a request: every path
//! ends in a record, "missing", or "unavailable".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use crate::assign::ClientId;
use crate::config::{StoreKind, StoreSettings};
use crate::metrics::{CacheLookup, Metrics, StoreFailure, StoreOp};

/// A session id is the client id the session cookie carries.
pub type SessionId = ClientId;

/// How long the store is skipped after a failure before one probe.
const BREAKER: Duration = Duration::from_secs(1);

/// What is stored under a session id. `revoked` marks a session evicted by the
/// admin API: its next request starts a new session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub group: Arc<str>,
    pub target: u32,
    pub bucket: u32,
    pub issued_at: u32,
    pub expires_at: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Record),
    /// No record (never written, expired, or lost with a Redis without
    /// persistence).
    Missing,
    /// The store did not answer in time, or is known to be down.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the session store failed recently; asking again within a second")]
    Down,
    #[error("the session store failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("a stored record is not readable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

#[derive(Debug, Clone)]
struct Cached {
    record: Record,
    at: Instant,
}

pub struct SessionStore {
    cache: quick_cache::sync::Cache<SessionId, Cached>,
    /// `None`: the memory store.
    redis: Option<RedisBackend>,
    cache_ttl: Duration,
    timeout: Duration,
    prefix: String,
    metrics: Metrics,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("redis", &self.redis.is_some())
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

struct RedisBackend {
    client: redis::Client,
    conn: ArcSwap<ConnectionManager>,
    /// Unix ms until which Redis is not asked (0: closed).
    down_until: AtomicU64,
}

fn manager(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    Ok(ConnectionManager::new_lazy_with_config(
        client.clone(),
        config,
    )?)
}

/// Text form of a session id: what the admin API takes and the Redis key ends with.
pub fn id_text(id: &SessionId) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// Parses the text form of a session id.
pub fn parse_id(text: &str) -> Option<SessionId> {
    let mut out = [0u8; 18];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(16) => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&out[..16]);
            Some(id)
        }
        _ => None,
    }
}

impl SessionStore {
    /// The store `settings` ask for, or `None` in cookie mode. Redis is
    /// connected lazily (in the background), so a Redis that is down at
    /// start-up does not stop the proxy.
    pub fn new(settings: &StoreSettings, metrics: &Metrics) -> Result<Option<Self>, StoreError> {
        let redis = match &settings.kind {
            StoreKind::Cookie => return Ok(None),
            StoreKind::Memory => None,
            StoreKind::Redis(url) => {
                let client = match &settings.ca_pem {
                    None => redis::Client::open(url.expose())?,
                    Some(pem) => redis::Client::build_with_tls(
                        url.expose(),
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem.as_bytes().to_vec()),
                        },
                    )?,
                };
                let conn = manager(&client, settings.timeout)?;
                Some(RedisBackend {
                    client,
                    conn: ArcSwap::from_pointee(conn),
                    down_until: AtomicU64::new(0),
                })
            }
        };
        metrics.store_up.set(1);
        Ok(Some(Self {
            cache: quick_cache::sync::Cache::new(settings.cache_size as usize),
            redis,
            cache_ttl: settings.cache_ttl,
            timeout: settings.timeout,
            prefix: settings.key_prefix.clone(),
            metrics: metrics.clone(),
        }))
    }

    pub fn is_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// A handle on the Redis connection, for other shared state (rollouts)
    /// kept beside the sessions; `None` in memory mode.
    pub fn redis_connection(&self) -> Option<ConnectionManager> {
        self.redis.as_ref().map(|r| (**r.conn.load()).clone())
    }

    /// What every key this proxy writes starts with.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// How long a Redis round trip may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn key(&self, id: &SessionId) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 22);
        k.push_str(&self.prefix);
        URL_SAFE_NO_PAD.encode_string(id, &mut k);
        k
    }

    fn cached(&self, id: &SessionId, now: u32) -> Option<Record> {
        let c = self.cache.get(id)?;
        let fresh = self.redis.is_none() || c.at.elapsed() < self.cache_ttl;
        (fresh && now < c.record.expires_at).then_some(c.record)
    }

    /// The record of `id` as this request should see it.
    pub async fn get(&self, id: &SessionId, now: u32) -> Lookup {
        if let Some(r) = self.cached(id, now) {
            self.metrics.session_cache[CacheLookup::Hit].inc();
            return Lookup::Found(r);
        }
        self.metrics.session_cache[CacheLookup::Miss].inc();
        let Some(redis) = &self.redis else {
            return Lookup::Missing;
        };
        if !self.may_ask(redis) {
            return Lookup::Unavailable;
        }
        match self.redis_get(redis, id).await {
            Ok(Some(record)) if now < record.expires_at => {
                self.cache.insert(
                    *id,
                    Cached {
                        record: record.clone(),
                        at: Instant::now(),
                    },
                );
                Lookup::Found(record)
            }
            Ok(_) => Lookup::Missing,
            Err(StoreError::Corrupt(e)) => {
                tracing::warn!(error = %e, "unreadable session record; treated as missing");
                Lookup::Missing
            }
            Err(_) => Lookup::Unavailable,
        }
    }

    /// Stores `record` under `id` until it expires: Redis first, then the
    /// cache. A failure is counted and logged, never raised: the client keeps
    /// its cookie and is bucketed by its session id until the store is back.
    pub async fn put(&self, id: &SessionId, record: Record, now: u32) -> Result<(), StoreError> {
        let ttl = u64::from(record.expires_at.saturating_sub(now).max(1));
        if let Some(redis) = &self.redis {
            if !self.may_ask(redis) {
                return Err(StoreError::Down);
            }
            self.redis_set(redis, id, &record, ttl).await?;
        }
        self.cache.insert(
            *id,
            Cached {
                record,
                at: Instant::now(),
            },
        );
        Ok(())
    }

    /// The stored record, skipping the cache (admin reads).
    pub async fn fetch(&self, id: &SessionId, now: u32) -> Result<Option<Record>, StoreError> {
        match &self.redis {
            None => Ok(self.cached(id, now)),
            Some(redis) => Ok(self
                .redis_get(redis, id)
                .await?
                .filter(|r| now < r.expires_at)),
        }
    }

    /// Whether Redis may be asked now. After a failure only one request in
    /// each breaker period probes it; the rest fall back at once rather than
    /// each waiting out the timeout.
    fn may_ask(&self, redis: &RedisBackend) -> bool {
        let until = redis.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = crate::clock::now_ms();
        if now < until {
            return false;
        }
        let next = now + BREAKER.as_millis() as u64;
        redis
            .down_until
            .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn record_outcome<T>(
        &self,
        redis: &RedisBackend,
        op: StoreOp,
        started: Instant,
        r: &Result<T, StoreError>,
    ) {
        self.metrics.store_duration[op].observe(started.elapsed().as_secs_f64());
        match r {
            Ok(_) | Err(StoreError::Corrupt(_)) => self.mark_up(redis),
            Err(e) => {
                let kind = if matches!(e, StoreError::Timeout(_)) {
                    StoreFailure::Timeout
                } else {
                    StoreFailure::Error
                };
                self.metrics.store_errors[op][kind].inc();
                self.mark_down(redis, e);
            }
        }
    }

    fn mark_up(&self, redis: &RedisBackend) {
        if redis.down_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!("session store is answering again");
        }
        self.metrics.store_up.set(1);
    }

    fn mark_down(&self, redis: &RedisBackend, e: &StoreError) {
        let next = crate::clock::now_ms() + BREAKER.as_millis() as u64;
        if redis.down_until.swap(next, Ordering::Relaxed) == 0 {
            tracing::warn!(error = %e, "session store unavailable; bucketing by session id until it answers");
        }
        self.metrics.store_up.set(0);
        if let StoreError::Redis(re) = e
            && re.code() == Some("READONLY")
        {
            // A failover left this connection on a replica; a new
            // one resolves the endpoint again.
            if let Ok(m) = manager(&redis.client, self.timeout) {
                redis.conn.store(Arc::new(m));
            }
        }
    }

    /// Asks Redis for a `PING`, off the request path, so that
    /// `switchyard_store_up` and the breaker follow Redis on a quiet proxy
    /// too (down when it goes, up when it comes back). True: it answered.
    /// Probes count in no request metric.
    pub async fn probe(&self) -> bool {
        let Some(redis) = &self.redis else {
            return true;
        };
        let mut conn = (**redis.conn.load()).clone();
        let ping = redis::cmd("PING");
        let r =
            match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut conn)).await {
                Err(_) => Err(StoreError::Timeout(self.timeout)),
                Ok(r) => r.map(drop).map_err(StoreError::Redis),
            };
        match r {
            Ok(()) => self.mark_up(redis),
            Err(e) => self.mark_down(redis, &e),
        }
        redis.down_until.load(Ordering::Relaxed) == 0
    }

    async fn redis_get(
        &self,
        redis: &RedisBackend,
        id: &SessionId,
    ) -> Result<Option<Record>, StoreError> {
        let started = Instant::now();
        let mut conn = (**redis.conn.load()).clone();
        let key = self.key(id);
        let r = match tokio::time::timeout(self.timeout, conn.get::<_, Option<String>>(key)).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(text))) => serde_json::from_str(&text)
                .map(Some)
                .map_err(StoreError::from),
        };
        self.record_outcome(redis, StoreOp::Get, started, &r);
        r
    }

    async fn redis_set(
        &self,
        redis: &RedisBackend,
        id: &SessionId,
        record: &Record,
        ttl: u64,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut conn = (**redis.conn.load()).clone();
        let key = self.key(id);
        let r = match serde_json::to_string(record) {
            Err(e) => Err(StoreError::Corrupt(e)),
            Ok(text) => {
                match tokio::time::timeout(self.timeout, conn.set_ex::<_, _, ()>(key, text, ttl))
                    .await
                {
                    Err(_) => Err(StoreError::Timeout(self.timeout)),
                    Ok(r) => r.map_err(StoreError::Redis),
                }
            }
        };
        self.record_outcome(redis, StoreOp::Set, started, &r);
        r
    }
}
