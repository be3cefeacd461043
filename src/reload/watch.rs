//! The file-system watcher (inotify on Linux) behind reload's `Watch` trigger.
//!
//! Directories are watched, not files: an editor that saves by writing a temp
//! file and renaming it, and a Kubernetes ConfigMap that swaps its `..data`
//! symlink, both replace the file's inode, and a watch on the old inode would
//! go silent. Events about the names that matter (the file, its symlink
//! target, key files, and the kubelet's `..`-prefixed entries) are passed on,
//! not those of the neighbours in a busy directory; the reloader's fingerprint
//! then decides whether anything really changed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

pub struct DirWatcher {
    watcher: RecommendedWatcher,
    watched: Vec<PathBuf>,
    names: Arc<Mutex<Vec<OsString>>>,
}

fn relevant(ev: &notify::Event, names: &Mutex<Vec<OsString>>) -> bool {
    // Our own reads of the file show up as access events; passing them on
    // would make every reload trigger the next.
    if matches!(ev.kind, EventKind::Access(_)) {
        return false;
    }
    if ev.paths.is_empty() {
        return true;
    }
    let Ok(names) = names.lock() else { return true };
    ev.paths
        .iter()
        .filter_map(|p| p.file_name())
        .any(|n| n.as_encoded_bytes().starts_with(b"..") || names.iter().any(|m| m == n))
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl DirWatcher {
    /// Starts a watcher that sends `()` on `tx` for every relevant event. `None`
    /// (with a warning) when the platform refuses, e.g. out of inotify
    /// instances: the periodic check still finds changes.
    pub fn start(tx: UnboundedSender<()>) -> Option<Self> {
        let names: Arc<Mutex<Vec<OsString>>> = Arc::default();
        let ours = Arc::clone(&names);
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if relevant(&ev, &ours) => {
                tracing::debug!(kind = ?ev.kind, paths = ?ev.paths, "config file event");
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(Self {
                watcher,
                watched: Vec::new(),
                names,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config directory; relying on the periodic check");
                None
            }
        }
    }

    /// Makes the watched set exactly `dirs`, passing on events about `names`.
    pub fn watch_all(&mut self, dirs: &[PathBuf], names: Vec<OsString>) {
        if let Ok(mut n) = self.names.lock() {
            *n = names;
        }
        for old in std::mem::take(&mut self.watched) {
            if dirs.contains(&old) {
                self.watched.push(old);
            } else {
                let _ = self.watcher.unwatch(&old);
            }
        }
        for dir in dirs {
            if self.watched.contains(dir) {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching for config changes");
                    self.watched.push(dir.clone());
                }
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "cannot watch directory; relying on the periodic check"
                ),
            }
        }
    }
}
