//! Hot reload of proxy.yaml: noticing a change, checking it, and installing it.
//!
//! ```text
//! inotify on the parent dir(s) --debounce--+
//! SIGHUP ----------------------------------+--> Reloader::reload
//! periodic fingerprint check --------------+      read -> fingerprint unchanged? stop
//!                                                 parse -> validate -> restart-only check
//!                                                 -> Snapshot::build -> one ArcSwap store
//! ```
//! The fingerprint is the SHA-256 of the file and of every `file:` key it names,
//! so a rotated key file counts as a change and a rewrite with the same bytes
//! does not. Requests never wait on any of this: they keep the snapshot they
//! loaded, and the next request loads the new one.

pub mod diff;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch as tokio_watch};

use crate::config::{self, Config, ConfigError, ConfigErrors, KeySource, ValidateOptions};
use crate::state::{ReloadFailure, Shared, Snapshot};

/// How long the watcher waits for a burst of file events to go quiet.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a steady stream of events can hold a reload back.
const DEBOUNCE_CAP: Duration = Duration::from_secs(2);

/// Where the running config came from, so it can be read again.
#[derive(Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub keys: Arc<dyn KeySource + Send + Sync>,
    pub opts: ValidateOptions,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What set a reload off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file watcher saw the file (or its directory) change.
    Watch,
    /// SIGHUP, or a direct request: read even when the fingerprint is unchanged.
    Signal,
    /// The periodic fingerprint check.
    Periodic,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Watch => "file change",
            Trigger::Signal => "SIGHUP",
            Trigger::Periodic => "periodic check",
        }
    }
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing changed since the last attempt; nothing was done.
    Unchanged,
    /// A new snapshot is in force.
    Applied {
        generation: u64,
        changes: Vec<String>,
    },
    /// The file is invalid; the old config keeps serving.
    Invalid(ConfigErrors),
    /// The edit changes something only a restart can; none of it was applied.
    RestartRequired(ConfigErrors),
}

/// Reads, checks and installs new configs. One per running proxy; reloads are
/// serialised by the mutex it lives in.
#[derive(Debug)]
pub struct Reloader {
    source: ConfigSource,
    shared: Arc<Shared>,
    /// Fingerprint of what was last read, applied or not.
    seen: [u8; 32],
    /// Files besides the config that the last valid config was made from
    /// (cookie keys, certificates and their keys, CA bundles).
    files: Vec<String>,
}

/// SHA-256 over the config text and the bytes of each file it names (or why
/// one could not be read). Key bytes only ever enter the hash.
fn fingerprint(text: Result<&str, &str>, files: &[String]) -> [u8; 32] {
    let mut h = Sha256::new();
    match text {
        Ok(t) => h.update(t.as_bytes()),
        Err(e) => h.update(e.as_bytes()),
    }
    for f in files {
        h.update(b"\0file\0");
        h.update(f.as_bytes());
        h.update(b"\0");
        match std::fs::read(f) {
            Ok(bytes) => h.update(&bytes),
            Err(e) => h.update(e.kind().to_string().as_bytes()),
        }
    }
    h.finalize().into()
}

/// SHA-256 of config text, hex: what `/status` and the hash metric show.
pub fn content_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Reloader {
    /// A reloader for a proxy whose config was just loaded from `source`.
    pub fn new(source: ConfigSource, shared: Arc<Shared>) -> Self {
        let snap = shared.snapshot();
        let files = snap.declared().material_files();
        let text = config::read_text(&source.path);
        let seen = fingerprint(text.as_deref().map_err(String::as_str), &files);
        Self {
            source,
            shared,
            seen,
            files,
        }
    }

    pub fn path(&self) -> &Path {
        &self.source.path
    }

    /// What to watch: the directories of the file, of the file its symlinks
    /// resolve to, and of the key, certificate and CA files (and of their
    /// targets); and the names
    /// in them whose events matter.
    fn watch_set(&self) -> WatchSet {
        let mut set = WatchSet::default();
        let mut add = |p: &Path| {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !set.dirs.contains(&dir) {
                set.dirs.push(dir);
            }
            if let Some(n) = p.file_name()
                && !set.names.iter().any(|m| m == n)
            {
                set.names.push(n.to_os_string());
            }
        };
        let files = self.files.iter().map(Path::new);
        for p in std::iter::once(self.source.path.as_path()).chain(files) {
            add(p);
            if let Ok(real) = std::fs::canonicalize(p) {
                add(&real);
            }
        }
        set
    }

    /// One reload attempt. Never panics and never touches the snapshot unless
    /// the new config is valid and can be applied in full.
    pub fn reload(&mut self, trigger: Trigger) -> Outcome {
        let name = self.source.path.display().to_string();
        let text = config::read_text(&self.source.path);
        let fp = fingerprint(text.as_deref().map_err(String::as_str), &self.files);
        if fp == self.seen && trigger != Trigger::Signal {
            return Outcome::Unchanged;
        }
        self.seen = fp;
        let shared = Arc::clone(&self.shared);
        let (current, outcome) = shared.building(|overrides| {
            let current = self.shared.snapshot();
            let outcome = match text {
                Err(msg) => Outcome::Invalid(ConfigErrors {
                    source_name: name,
                    errors: vec![ConfigError::new("", None, msg)],
                }),
                Ok(text) => self.check(&current, overrides, &name, &text),
            };
            (current, outcome)
        });
        match &outcome {
            Outcome::Unchanged => {
                // Read and found equal to what runs (SIGHUP, or an edit undone):
                // whatever failed before no longer describes the file.
                self.shared.metrics.config_last_reload_success.set(1);
                self.shared.set_reload_status(|s| {
                    s.last_attempt = Some(SystemTime::now());
                    s.last_trigger = Some(trigger.label());
                    s.last_result = Some("unchanged");
                });
                tracing::info!(
                    "reload ({}): the file matches the config in force (generation {})",
                    trigger.label(),
                    current.generation
                );
            }
            Outcome::Applied {
                generation,
                changes,
            } => {
                self.shared.set_reload_status(|s| {
                    s.last_attempt = Some(SystemTime::now());
                    s.last_trigger = Some(trigger.label());
                    s.last_result = Some("ok");
                    s.last_changes = changes.clone();
                });
                let what = if changes.is_empty() {
                    "no change in effect (comments or layout only)".to_owned()
                } else {
                    changes.join(", ")
                };
                tracing::info!("reload #{generation} ok ({}): {what}", trigger.label());
            }
            Outcome::Invalid(errors) => self.refused(&current, trigger, "invalid", errors),
            Outcome::RestartRequired(errors) => {
                self.refused(&current, trigger, "restart_required", errors)
            }
        }
        outcome
    }

    /// Parses, validates and, when allowed, installs `text`.
    fn check(
        &mut self,
        current: &Snapshot,
        overrides: &crate::state::Overrides,
        name: &str,
        text: &str,
    ) -> Outcome {
        let cfg = match config::load_str(text, name, &*self.source.keys, self.source.opts) {
            Ok(c) => c,
            Err(e) => return Outcome::Invalid(e),
        };
        let files = cfg.material_files();
        if files != self.files {
            self.files = files;
            self.seen = fingerprint(Ok(text), &self.files);
        }
        let old = current.declared();
        let hash = content_hash(text);
        if cfg == *old && hash == current.content_hash {
            return Outcome::Unchanged;
        }
        if let Some(errors) = restart_only(old, &cfg, name, text) {
            return Outcome::RestartRequired(errors);
        }
        let sink = cfg.access_log.as_ref().map(|a| a.sink.clone());
        if sink != old.access_log.as_ref().map(|a| a.sink.clone())
            && let Some(Err(e)) = sink.as_ref().map(crate::access_log::check_writable)
        {
            let line = config::parse(text)
                .ok()
                .and_then(|raw| raw.access_log)
                .and_then(|a| a.value.to)
                .and_then(|t| config::line_of(&t));
            return Outcome::Invalid(config::ConfigErrors {
                source_name: name.to_owned(),
                errors: vec![config::ConfigError::new(
                    "access_log.to",
                    line,
                    e.to_string(),
                )],
            });
        }
        let changes = diff::describe(old, &cfg);
        let generation = current.generation + 1;
        let snap = Snapshot::build(
            cfg,
            overrides,
            generation,
            hash,
            &self.shared.live,
            &self.shared.metrics,
        );
        let metrics = &self.shared.metrics;
        snap.publish(metrics, Some(current));
        self.shared.current.store(Arc::new(snap));
        self.shared.access_log.set_sink(sink);
        metrics.config_reloads.with_label_values(&["ok"]).inc();
        metrics.config_last_reload_success.set(1);
        Outcome::Applied {
            generation,
            changes,
        }
    }

    fn refused(
        &self,
        current: &Snapshot,
        trigger: Trigger,
        result: &'static str,
        errors: &ConfigErrors,
    ) {
        let metrics = &self.shared.metrics;
        metrics.config_reloads.with_label_values(&[result]).inc();
        metrics.config_last_reload_success.set(0);
        let now = SystemTime::now();
        self.shared.set_reload_status(|s| {
            s.last_attempt = Some(now);
            s.last_trigger = Some(trigger.label());
            s.last_result = Some(result);
            s.last_error = Some(ReloadFailure {
                at: now,
                errors: errors.clone(),
            });
        });
        tracing::error!(
            "reload ({}) refused, still serving generation {}: {errors}",
            trigger.label(),
            current.generation
        );
    }
}

/// Listen and admin sockets are bound once; an edit that moves them cannot be
/// honoured, so none of it is (half an edit is worse than none).
fn restart_only(old: &Config, new: &Config, name: &str, text: &str) -> Option<ConfigErrors> {
    let raw = config::parse(text).ok();
    let line = |what: &str| {
        let raw = raw.as_ref()?;
        match what {
            "listen" => raw.listen.as_ref().and_then(config::line_of),
            "tls.listen" => raw
                .tls
                .as_ref()
                .map(|t| &t.value.listen)
                .and_then(config::line_of),
            _ => raw.admin.as_ref().and_then(config::line_of),
        }
    };
    let show =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
    let tls = |c: &Config| c.tls.as_ref().map(|t| t.listen);
    let mut errors = Vec::new();
    for (what, a, b) in [
        ("listen", old.listen, new.listen),
        ("tls.listen", tls(old), tls(new)),
        ("admin", Some(old.admin), Some(new.admin)),
    ] {
        if a != b {
            let (a, b) = (show(a), show(b));
            errors.push(ConfigError::new(
                what,
                line(what),
                format!(
                    "changed from {a} to {b}, which needs a restart; nothing in this edit was applied (put {a} back to apply the rest)"
                ),
            ));
        }
    }
    if old.sticky.store != new.sticky.store {
        let at = raw
            .as_ref()
            .and_then(|r| r.sticky.value.store.as_ref())
            .and_then(config::line_of);
        errors.push(ConfigError::new(
            "sticky.store",
            at,
            format!(
                "the session store changed ({} -> {}), which needs a restart; nothing in this edit was applied",
                old.sticky.store.kind.label(),
                new.sticky.store.kind.label()
            ),
        ));
    }
    (!errors.is_empty()).then(|| ConfigErrors {
        source_name: name.to_owned(),
        errors,
    })
}

#[derive(Debug, Default, PartialEq)]
struct WatchSet {
    dirs: Vec<PathBuf>,
    names: Vec<std::ffi::OsString>,
}

/// Starts the triggers and the task that serves them until `shutdown` turns
/// true: the directory watcher (debounced), SIGHUP, and the periodic
/// fingerprint check. The watcher and the signal handler are in place when
/// this returns, so an edit made right after start-up is not missed.
pub fn spawn(
    reloader: Arc<Mutex<Reloader>>,
    shutdown: tokio_watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let set = match reloader.lock() {
        Ok(r) => r.watch_set(),
        Err(_) => WatchSet::default(),
    };
    let mut watcher = watch::DirWatcher::start(tx);
    if let Some(w) = watcher.as_mut() {
        w.watch_all(&set.dirs, set.names.clone());
    }
    let hup = hangup();
    tokio::spawn(run(reloader, shutdown, rx, watcher, set, hup))
}

async fn run(
    reloader: Arc<Mutex<Reloader>>,
    mut shutdown: tokio_watch::Receiver<bool>,
    mut rx: mpsc::UnboundedReceiver<()>,
    mut watcher: Option<watch::DirWatcher>,
    mut set: WatchSet,
    mut hup: Hangup,
) {
    let Ok(shared) = reloader.lock().map(|r| Arc::clone(&r.shared)) else {
        return;
    };
    loop {
        let interval = shared.snapshot().config.reload.check_interval;
        let trigger = tokio::select! {
            _ = shutdown.changed() => return,
            Some(()) = rx.recv() => {
                debounce(&mut rx).await;
                Trigger::Watch
            }
            Some(()) = recv_hangup(&mut hup) => Trigger::Signal,
            _ = tokio::time::sleep(interval) => Trigger::Periodic,
        };
        let Ok(mut r) = reloader.lock() else { return };
        r.reload(trigger);
        let now = r.watch_set();
        drop(r);
        if now != set {
            if let Some(w) = watcher.as_mut() {
                w.watch_all(&now.dirs, now.names.clone());
            }
            set = now;
        }
    }
}

/// Waits until no event has come for [`DEBOUNCE`] (at most [`DEBOUNCE_CAP`]),
/// so an editor's truncate-write-rename burst is read once, complete.
async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = tokio::time::Instant::now() + DEBOUNCE_CAP;
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::select! {
            more = rx.recv() => if more.is_none() { return },
            _ = quiet => return,
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; file watching still works");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn recv_hangup(h: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = h {
        return s.recv().await;
    }
    let _ = h;
    std::future::pending().await
}
