//! The access log: one line per request, written off the request path.
//!
//! ```text
//! request ends (its response body done or dropped)
//!   -> the line is formatted straight into this thread's buffer (line.rs);
//!      past `queue` lines waiting there, it is dropped and counted (queue_full)
//!   -> writer thread (writer.rs), every 5 ms while lines come: swaps each
//!      thread's buffer for an empty one, writes it (one write per buffer)
//!        -> stdout | stderr | file (append; reopened on SIGUSR1 and when a
//!           reload names another file; a failed write counted, retried each second)
//! ```
//! A request never waits for the log and allocates nothing for it: each
//! serving thread has its own buffer, behind a mutex that only it and the
//! writer (for a swap of two vectors) ever take, and the writer hands the
//! emptied buffers back, so their memory is reused rather than freed.

mod line;
mod writer;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use line::{LineWriter, Value, rfc3339};

use crate::config::LogSink;
use crate::metrics::{Counters, LogDrop};

/// Lines a thread has formatted and the writer has not taken yet.
#[derive(Debug, Default)]
struct ThreadLines {
    bytes: Vec<u8>,
    lines: u64,
}

/// How far the writer is, and whether someone waits for it.
#[derive(Debug, Default)]
struct Passes {
    done: u64,
    /// A `flush` waits: no pause before the next pass.
    hurry: bool,
}

/// One serving thread's buffer.
#[derive(Debug, Default)]
struct ThreadBuf(Mutex<ThreadLines>);

/// What the writer and the serving threads share.
#[derive(Debug)]
struct Inner {
    /// Tells this log's buffers from another's on a thread that serves
    /// several proxies (tests start many in one process).
    id: u64,
    /// Every thread's buffer; locked when a thread joins and once per pass.
    buffers: Mutex<Vec<Arc<ThreadBuf>>>,
    /// Most lines one thread may have waiting.
    max_lines: u64,
    sink: Mutex<Option<LogSink>>,
    /// Reopen the destination (SIGUSR1, or a new one from a reload).
    changed: AtomicBool,
    /// The writer's passes, for `flush`.
    passes: Mutex<Passes>,
    /// A pass ended (`flush` waits on it).
    passed: Condvar,
    /// Wakes the writer from its pause (`flush` rings it).
    wake: Condvar,
    dropped: Counters<LogDrop>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn sink(&self) -> Option<LogSink> {
        lock(&self.sink).clone()
    }
}

thread_local! {
    /// This thread's buffer in each log it has written to.
    static MINE: RefCell<Vec<(u64, Arc<ThreadBuf>)>> = const { RefCell::new(Vec::new()) };
}

/// The process's access log: the serving threads' buffers and the writer's
/// controls.
#[derive(Debug)]
pub struct AccessLog {
    inner: Arc<Inner>,
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
    /// with room for `queue` lines per serving thread. A file that cannot be
    /// opened is an error.
    pub fn start(
        sink: Option<LogSink>,
        queue: usize,
        dropped: Counters<LogDrop>,
    ) -> Result<Self, AccessLogError> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        if let Some(s) = &sink {
            check_writable(s)?;
        }
        let inner = Arc::new(Inner {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            buffers: Mutex::default(),
            max_lines: queue.max(1) as u64,
            sink: Mutex::new(sink),
            changed: AtomicBool::new(false),
            passes: Mutex::default(),
            passed: Condvar::new(),
            wake: Condvar::new(),
            dropped,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("switchyard-log".to_owned())
            .spawn(move || writer::run(&weak))
            .map_err(AccessLogError::Thread)?;
        Ok(Self { inner })
    }

    /// Appends one line, written by `format`, to this thread's buffer; never
    /// waits for the writer. Past `queue` lines waiting, the line is dropped
    /// and counted.
    pub fn write_line(&self, format: impl FnOnce(&mut Vec<u8>)) {
        let full = self.with_thread_buf(|buf| {
            let mut mine = lock(&buf.0);
            if mine.lines >= self.inner.max_lines {
                return true;
            }
            format(&mut mine.bytes);
            mine.lines += 1;
            false
        });
        if full {
            self.inner.dropped[LogDrop::QueueFull].inc();
        }
    }

    /// Runs `f` on this thread's buffer, made and registered on its first
    /// line (borrowed in place: no reference count moves per line).
    fn with_thread_buf<T>(&self, f: impl FnOnce(&ThreadBuf) -> T) -> T {
        let id = self.inner.id;
        MINE.with_borrow_mut(|mine| {
            if let Some((_, b)) = mine.iter().find(|(i, _)| *i == id) {
                return f(b);
            }
            // Logs that are gone (only this thread holds their buffer).
            mine.retain(|(_, b)| Arc::strong_count(b) > 1);
            let b = Arc::new(ThreadBuf::default());
            lock(&self.inner.buffers).push(Arc::clone(&b));
            mine.push((id, Arc::clone(&b)));
            f(&b)
        })
    }

    /// Points the writer at `sink` (a reload), reopening it.
    pub fn set_sink(&self, sink: Option<LogSink>) {
        {
            let mut s = lock(&self.inner.sink);
            if *s == sink {
                return;
            }
            *s = sink;
        }
        self.reopen();
    }

    /// Reopens the destination (SIGUSR1, after logrotate moved the file),
    /// at the writer's next pass.
    pub fn reopen(&self) {
        self.inner.changed.store(true, Ordering::Release);
    }

    /// Waits (up to `within`) until every line formatted so far is written,
    /// waking the writer rather than waiting out its pause.
    pub fn flush(&self, within: Duration) {
        let mut passes = lock(&self.inner.passes);
        // The pass under way may have swapped before the last line: wait
        // for the one after it.
        let target = passes.done + 2;
        passes.hurry = true;
        self.inner.wake.notify_one();
        let _ = self
            .inner
            .passed
            .wait_timeout_while(passes, within, |p| p.done < target);
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
