//! The file-system watcher (inotify on Linux) behind reload's `Watch` trigger.
//!
//! Directories are watched, not files: an editor that saves by writing a temp
//! file and renaming it, and a Kubernetes ConfigMap that swaps its `..data`
//! symlink, both replace the file's inode, and a watch on the old inode would
//! go silent. Any event but a read in a watched directory is passed on; the
//! reloader's fingerprint decides whether anything really changed.

use std::path::PathBuf;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

pub struct DirWatcher {
    watcher: RecommendedWatcher,
    watched: Vec<PathBuf>,
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
        let handler = move |res: notify::Result<notify::Event>| match res {
            // Our own reads of the file show up as access events; passing them
            // on would make every reload trigger the next.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(Self {
                watcher,
                watched: Vec::new(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config directory; relying on the periodic check");
                None
            }
        }
    }

    /// Makes the watched set exactly `dirs`.
    pub fn watch_all(&mut self, dirs: &[PathBuf]) {
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
