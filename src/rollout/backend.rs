//! Where rollout state lives: Redis, shared by every replica, when the
//! session store is Redis; else this process, with each record written
//! atomically to a state file so that a restart resumes.
//!
//! ```text
//! redis:  {prefix}rollout:{route}                      the Record (JSON), compare-and-set on `version`
//!         {prefix}rollout:{route}:{id}:{anchor}:{n}    interval n's tally, HINCRBY by every replica
//!         {prefix}rollout:leader                       who advances plans (SET PX, renewed)
//! local:  a map in memory, the records also in the state file
//!         (tmp + fsync + rename + fsync of the directory)
//! ```
//!
//! State that exists but cannot be read is not "no state" (DESIGN §12): a
//! state file that is empty, truncated or not the records' JSON is copied
//! aside (`<file>.unreadable-<unix seconds>`) and **held**: reading or
//! writing any route's record fails with [`BackendError::Unreadable`] (its
//! plan takes no step, serves its YAML split) and the file is not written,
//! until the file is deleted, or `reset` releases a route (which then runs
//! from memory; the file is written again once every planned route is
//! released). A Redis record that is not readable is held the same way, in
//! place, until `reset` deletes it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::analysis::{Tally, Window};
use super::progress::Record;
use crate::state::lock;

/// At most this many intervals are summed into one verdict.
pub const MAX_SPAN: u64 = 120;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the rollout store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the rollout store failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("a stored rollout record is not readable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot write the rollout state file {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error(
        "the rollout state is not readable ({0}); the plan is held: `switchyard rollout reset ROUTE` or deleting the state file resumes it"
    )]
    Unreadable(String),
}

impl BackendError {
    /// State exists but cannot be read: the plan holds (not a passing
    /// failure of the store, after which the last known steps serve).
    pub fn is_unreadable(&self) -> bool {
        matches!(self, Self::Corrupt(_) | Self::Unreadable(_))
    }
}

/// Where records and tallies are kept.
pub enum Backend {
    Local(Local),
    Redis(InRedis),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Local(l) => write!(f, "Backend::Local({:?})", l.file),
            Backend::Redis(r) => write!(f, "Backend::Redis({})", r.prefix),
        }
    }
}

/// One process's state.
#[derive(Debug, Default)]
pub struct Local {
    pub file: Option<PathBuf>,
    records: Mutex<HashMap<String, Record>>,
    windows: Mutex<HashMap<(String, String, u64), Window>>,
    /// The state file could not be read at start: why, and the routes an
    /// operator has released since (module doc).
    held: Mutex<Option<Held>>,
}

#[derive(Debug)]
struct Held {
    why: String,
    released: std::collections::HashSet<String>,
}

/// What a state file holds: the records by route, or why it cannot be
/// read (`Ok(None)`: there is no file).
pub fn read_state_file(path: &std::path::Path) -> Result<Option<HashMap<String, Record>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// State in Redis, shared by every replica.
pub struct InRedis {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for InRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InRedis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Compare-and-set of a record on its `version`: ARGV[1] the version the
/// writer started from (0: none stored), ARGV[2] the new JSON ("" deletes).
const SWAP: &str = r"
local cur = redis.call('GET', KEYS[1])
local v = 0
if cur then v = tonumber(cjson.decode(cur)['version']) or 0 end
if tonumber(ARGV[1]) ~= v then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1";

/// Takes or renews the lease: ARGV[1] this replica, ARGV[2] its length in ms.
const LEAD: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

impl Local {
    /// This process's state, read back from `file` when it exists. A file
    /// that cannot be read is copied aside and held (module doc).
    pub fn open(file: Option<PathBuf>) -> Self {
        let mut held = None;
        let records = match file.as_deref().map(read_state_file) {
            Some(Ok(Some(r))) => r,
            Some(Err(why)) => {
                let aside = file.as_deref().and_then(keep_aside);
                tracing::error!(
                    error = %why,
                    kept_at = aside.as_ref().map(|p| p.display().to_string()),
                    "the rollout state file is not readable: every plan is held (no step taken, YAML splits served) until `switchyard rollout reset ROUTE` or the file is deleted"
                );
                held = Some(Held {
                    why,
                    released: Default::default(),
                });
                HashMap::new()
            }
            _ => HashMap::new(),
        };
        Self {
            file,
            records: Mutex::new(records),
            windows: Mutex::default(),
            held: Mutex::new(held),
        }
    }

    /// Why `route`'s state is held, if it is.
    fn held(&self, route: &str) -> Result<(), BackendError> {
        match &*lock(&self.held) {
            Some(h) if !h.released.contains(route) => Err(BackendError::Unreadable(h.why.clone())),
            _ => Ok(()),
        }
    }

    /// Ends the hold when its cause is gone: the file was deleted, or every
    /// route planned now was released (the file is then written anew).
    fn settle_hold(&self, planned: &[&str]) {
        let mut held = lock(&self.held);
        let Some(h) = held.as_ref() else { return };
        let deleted = self.file.as_ref().is_some_and(|f| !f.exists());
        let released = planned.iter().all(|r| h.released.contains(*r));
        if !deleted && !released {
            return;
        }
        tracing::info!(
            "rollouts: the unreadable state file {}; its hold ends",
            if deleted {
                "was deleted"
            } else {
                "has every planned route reset"
            }
        );
        *held = None;
        drop(held);
        let records = lock(&self.records).clone();
        if let Err(e) = self.persist(&records) {
            tracing::warn!(error = %e, "rollouts: cannot write the state file");
        }
    }

    /// Writes every record to the state file: a temporary file beside it,
    /// flushed to disk, then renamed over it, so a crash leaves the old
    /// state or the new one, never half of one.
    fn persist(&self, records: &HashMap<String, Record>) -> Result<(), BackendError> {
        use std::io::Write;
        let Some(path) = &self.file else {
            return Ok(());
        };
        if lock(&self.held).is_some() {
            // Held: the unreadable file stays as it is; released routes run
            // from memory until the hold ends.
            return Ok(());
        }
        let err = |error| BackendError::File {
            path: path.display().to_string(),
            error,
        };
        let tmp = path.with_extension("tmp~");
        let body = serde_json::to_vec_pretty(records)?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        // The rename itself lasts only once the directory is on disk.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(std::path::Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

impl Backend {
    pub fn redis(conn: ConnectionManager, prefix: &str, timeout: Duration) -> Self {
        Backend::Redis(InRedis {
            conn,
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    /// Ends a local hold whose cause is gone (module doc); `planned`: the
    /// routes with a plan now.
    pub fn settle_hold(&self, planned: &[&str]) {
        if let Backend::Local(l) = self {
            l.settle_hold(planned);
        }
    }

    /// Forgets `route`'s record, readable or not (an operator's reset):
    /// its plan starts from its first step at the next tick.
    pub async fn reset(&self, route: &str) -> Result<(), BackendError> {
        match self {
            Backend::Local(l) => {
                let mut records = lock(&l.records);
                let mut next = records.clone();
                next.remove(route);
                if let Some(h) = lock(&l.held).as_mut() {
                    h.released.insert(route.to_owned());
                }
                l.persist(&next)?;
                *records = next;
                Ok(())
            }
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(r.record_key(route));
                r.run::<i64>(&cmd).await.map(|_| ())
            }
        }
    }

    /// The stored record of `route`.
    pub async fn load(&self, route: &str) -> Result<Option<Record>, BackendError> {
        match self {
            Backend::Local(l) => {
                l.held(route)?;
                Ok(lock(&l.records).get(route).cloned())
            }
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(r.record_key(route));
                let got: Option<String> = r.run(&cmd).await?;
                Ok(got.map(|s| serde_json::from_str(&s)).transpose()?)
            }
        }
    }

    /// Stores `new` (or deletes the record) if what is stored is still the
    /// version `from` was read at (`None`: nothing stored). `new.version`
    /// is set here. False when another writer came first.
    pub async fn swap(
        &self,
        route: &str,
        from: Option<&Record>,
        new: Option<&mut Record>,
    ) -> Result<bool, BackendError> {
        let from_version = from.map_or(0, |r| r.version);
        let new = new.map(|n| {
            n.version = from_version + 1;
            n.clone()
        });
        match self {
            Backend::Local(l) => {
                l.held(route)?;
                let mut records = lock(&l.records);
                if records.get(route).map_or(0, |r| r.version) != from_version {
                    return Ok(false);
                }
                let mut next = records.clone();
                match new {
                    Some(n) => next.insert(route.to_owned(), n),
                    None => next.remove(route),
                };
                l.persist(&next)?;
                *records = next;
                Ok(true)
            }
            Backend::Redis(r) => {
                let body = match &new {
                    Some(n) => serde_json::to_string(n)?,
                    None => String::new(),
                };
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(SWAP)
                    .arg(1)
                    .arg(r.record_key(route))
                    .arg(from_version)
                    .arg(body);
                let done: i64 = r.run(&cmd).await?;
                Ok(done == 1)
            }
        }
    }

    /// Adds `w` to interval `n` of run `rec`.
    pub async fn add(
        &self,
        route: &str,
        rec: &Record,
        n: u64,
        w: &Window,
    ) -> Result<(), BackendError> {
        match self {
            Backend::Local(l) => {
                let mut windows = lock(&l.windows);
                windows.retain(|(r, id, k), _| r != route || (*id == rec.id && *k + MAX_SPAN >= n));
                windows
                    .entry((route.to_owned(), rec.id.clone(), n))
                    .or_default()
                    .add(w);
                Ok(())
            }
            Backend::Redis(r) => {
                let key = r.window_key(route, rec, n);
                let mut pipe = redis::pipe();
                for (side, t) in [("s", &w.stable), ("c", &w.canary)] {
                    for (field, v) in fields(side, t) {
                        if v > 0 {
                            pipe.cmd("HINCRBY").arg(&key).arg(field).arg(v).ignore();
                        }
                    }
                }
                // Kept long enough for a verdict that waits on min_requests.
                let keep = (rec.interval_ms / 1000 + 1) * (MAX_SPAN + 2);
                pipe.cmd("EXPIRE").arg(&key).arg(keep).ignore();
                r.query_pipe::<()>(&pipe).await
            }
        }
    }

    /// The sum of intervals `from..=to` of run `rec`.
    pub async fn sum(
        &self,
        route: &str,
        rec: &Record,
        from: u64,
        to: u64,
    ) -> Result<Window, BackendError> {
        let mut out = Window::default();
        match self {
            Backend::Local(l) => {
                let windows = lock(&l.windows);
                for n in from..=to {
                    if let Some(w) = windows.get(&(route.to_owned(), rec.id.clone(), n)) {
                        out.add(w);
                    }
                }
            }
            Backend::Redis(r) => {
                let mut pipe = redis::pipe();
                for n in from..=to {
                    pipe.cmd("HGETALL").arg(r.window_key(route, rec, n));
                }
                let got: Vec<HashMap<String, u64>> = r.query_pipe(&pipe).await?;
                for h in got {
                    out.add(&window_of(&h));
                }
            }
        }
        Ok(out)
    }

    /// Whether this replica (`me`) advances the plans: always for one
    /// process; under Redis, the one holding the lease, for `lease`.
    pub async fn lead(&self, me: &str, lease: Duration) -> Result<bool, BackendError> {
        match self {
            Backend::Local(_) => Ok(true),
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(LEAD)
                    .arg(1)
                    .arg(format!("{}rollout:leader", r.prefix))
                    .arg(me)
                    .arg(lease.as_millis() as u64);
                let got: i64 = r.run(&cmd).await?;
                Ok(got == 1)
            }
        }
    }
}

impl InRedis {
    fn record_key(&self, route: &str) -> String {
        format!("{}rollout:{route}", self.prefix)
    }

    fn window_key(&self, route: &str, rec: &Record, n: u64) -> String {
        format!(
            "{}rollout:{route}:{}:{}:{n}",
            self.prefix, rec.id, rec.anchor_ms
        )
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BackendError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(BackendError::Timeout(self.timeout)),
        }
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(BackendError::Timeout(self.timeout)),
        }
    }
}

/// Copies an unreadable state file to `<file>.unreadable-<unix seconds>`
/// for the operator; where, when it could.
fn keep_aside(file: &std::path::Path) -> Option<PathBuf> {
    let mut name = file.file_name()?.to_os_string();
    name.push(format!(".unreadable-{}", crate::clock::unix_now()));
    let aside = file.with_file_name(name);
    std::fs::copy(file, &aside).ok().map(|_| aside)
}

/// A tally as hash fields: `s.r` (requests), `s.e` (5xx), `s.b3` (bucket
/// 3), `s.k5r` and `s.k5e` (client slot 5's requests and 5xx).
fn fields<'a>(side: &'a str, t: &'a Tally) -> impl Iterator<Item = (String, u64)> + 'a {
    [
        (format!("{side}.r"), t.requests),
        (format!("{side}.e"), t.errors),
    ]
    .into_iter()
    .chain(
        t.buckets
            .iter()
            .enumerate()
            .map(move |(i, n)| (format!("{side}.b{i}"), *n)),
    )
    .chain(t.clients.iter().enumerate().flat_map(move |(i, [r, e])| {
        [(format!("{side}.k{i}r"), *r), (format!("{side}.k{i}e"), *e)]
    }))
}

/// The window a hash of [`fields`] holds.
fn window_of(h: &HashMap<String, u64>) -> Window {
    let tally = |side: &str| {
        let get = |k: String| h.get(&k).copied().unwrap_or(0);
        let count = (0..64)
            .rev()
            .find(|i| h.contains_key(&format!("{side}.b{i}")))
            .map_or(0, |i| i + 1);
        let slots = (0..crate::config::CLIENT_SLOTS)
            .rev()
            .find(|i| h.contains_key(&format!("{side}.k{i}r")))
            .map_or(0, |i| i + 1);
        Tally {
            requests: get(format!("{side}.r")),
            errors: get(format!("{side}.e")),
            buckets: (0..count).map(|i| get(format!("{side}.b{i}"))).collect(),
            clients: (0..slots)
                .map(|i| [get(format!("{side}.k{i}r")), get(format!("{side}.k{i}e"))])
                .collect(),
        }
    };
    Window {
        stable: tally("s"),
        canary: tally("c"),
    }
}
