//! The access log: one line per request, written off the request path.
//!
//! ```text
//! request ends (its response body done or dropped)
//!   -> the line is formatted in the request's task (line.rs)
//!   -> try_send on a bounded queue: full -> dropped, counted (queue_full)
//!   -> writer thread (writer.rs): batches, one write each, flush when idle
//!        -> stdout | stderr | file (append; reopened on SIGUSR1 and when a
//!           reload names another file; a failed write counted, retried each second)
//! ```
//! A request never waits for the log: `send` only ever tries.

mod line;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use line::{LineWriter, Value, rfc3339};

use crate::config::LogSink;
use crate::metrics::{Counters, LogDrop};

/// What goes through the queue.
enum Msg {
    Line(Vec<u8>),
    /// Look at the control flags.
    Wake,
    /// Answer once everything before this is written.
    Flush(SyncSender<()>),
}

/// What the rest of the process tells the writer besides lines.
#[derive(Debug, Default)]
struct Control {
    sink: Mutex<Option<LogSink>>,
    /// Reopen the destination (SIGUSR1, or a new one from a reload).
    changed: AtomicBool,
}

impl Control {
    fn sink(&self) -> Option<LogSink> {
        self.sink.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The queue's sending end and the writer's controls; one per process.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Msg>,
    control: Arc<Control>,
    dropped: Counters<LogDrop>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("access_log.to: cannot open {sink}: {source}")]
    Open {
        sink: LogSink,
        source: std::io::Error,
    },
    #[error("cannot start the access log writer thread: {0}")]
    Thread(std::io::Error),
}

impl AccessLog {
    /// Starts the writer thread on `sink` (`None`: the log is off for now),
    /// with room for `queue` lines. A file that cannot be opened is an error.
    pub fn start(
        sink: Option<LogSink>,
        queue: usize,
        dropped: Counters<LogDrop>,
    ) -> Result<Self, AccessLogError> {
        if let Some(s) = &sink {
            check_writable(s)?;
        }
        let control = Arc::new(Control {
            sink: Mutex::new(sink),
            changed: AtomicBool::new(false),
        });
        let (tx, rx) = sync_channel(queue.max(1));
        let (c, d) = (Arc::clone(&control), dropped.clone());
        std::thread::Builder::new()
            .name("switchyard-log".to_owned())
            .spawn(move || writer::run(rx, c, d))
            .map_err(AccessLogError::Thread)?;
        Ok(Self {
            tx,
            control,
            dropped,
        })
    }

    /// Queues one whole line; never waits. A full queue drops it, counted.
    pub fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped[LogDrop::QueueFull].inc(),
            Err(TrySendError::Disconnected(_)) => self.dropped[LogDrop::WriteError].inc(),
        }
    }

    /// Points the writer at `sink` (a reload), reopening it.
    pub fn set_sink(&self, sink: Option<LogSink>) {
        if let Ok(mut s) = self.control.sink.lock() {
            if *s == sink {
                return;
            }
            *s = sink;
        }
        self.reopen();
    }

    /// Reopens the destination (SIGUSR1, after logrotate moved the file).
    pub fn reopen(&self) {
        self.control.changed.store(true, Ordering::Release);
        // A full queue means the writer is awake and will see the flag.
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Waits (up to `within`) until every line queued so far is written.
    pub fn flush(&self, within: Duration) {
        let (done, written) = sync_channel(1);
        let tx = self.tx.clone();
        // `send` may wait for room; a thread keeps that off the caller's runtime.
        std::thread::spawn(move || {
            let _ = tx.send(Msg::Flush(done));
        });
        let _ = written.recv_timeout(within);
    }
}

/// Whether `sink` can be opened for appending: checked before a config that
/// names it is taken, so that an unwritable file is a clear error at once.
pub fn check_writable(sink: &LogSink) -> Result<(), AccessLogError> {
    writer::open(sink)
        .map(drop)
        .map_err(|source| AccessLogError::Open {
            sink: sink.clone(),
            source,
        })
}
