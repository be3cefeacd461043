//! The writer thread: every pass (each 5 ms while lines come, less often
//! while none do) it takes every serving thread's buffer of whole lines and
//! writes each with one `write`.
//! A file that cannot be written is counted line by line
//! (`switchyard_access_log_dropped_total{reason="write_error"}`) and opened
//! again at most once a second; requests never wait for any of it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, Weak};
use std::time::{Duration, Instant};

use super::Inner;
use crate::config::LogSink;
use crate::metrics::LogDrop;

/// How often a failed file is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Opens `sink` the way the writer does (appending, created if missing).
pub(super) fn open(sink: &LogSink) -> io::Result<Option<File>> {
    match sink {
        LogSink::File(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Some),
        LogSink::Stdout | LogSink::Stderr => Ok(None),
    }
}

/// Where the writer is writing now.
struct Output {
    sink: Option<LogSink>,
    file: Option<File>,
    /// The last failed open or write of `file`.
    failed_at: Option<Instant>,
}

impl Output {
    fn new(sink: Option<LogSink>) -> Self {
        let mut out = Self {
            sink,
            file: None,
            failed_at: None,
        };
        out.reopen();
        out
    }

    fn reopen(&mut self) {
        self.file = None;
        self.failed_at = None;
        let Some(sink) = &self.sink else { return };
        match open(sink) {
            Ok(f) => self.file = f,
            Err(e) => {
                self.failed_at = Some(Instant::now());
                tracing::error!(file = %sink, error = %e, "cannot open the access log; lines are dropped and counted until it can be opened");
            }
        }
    }

    /// Writes `batch` (`lines` lines); false when they were lost.
    fn write(&mut self, batch: &[u8]) -> bool {
        match &self.sink {
            None => true,
            Some(LogSink::Stdout) => io::stdout().lock().write_all(batch).is_ok(),
            Some(LogSink::Stderr) => io::stderr().lock().write_all(batch).is_ok(),
            Some(LogSink::File(_)) => {
                if self.file.is_none() && self.failed_at.is_some_and(|t| t.elapsed() >= RETRY) {
                    self.reopen();
                }
                let Some(file) = &mut self.file else {
                    return false;
                };
                match file.write_all(batch) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(file = %self.sink.as_ref().map(ToString::to_string).unwrap_or_default(), error = %e, "cannot write the access log; retrying every second");
                        self.file = None;
                        self.failed_at = Some(Instant::now());
                        false
                    }
                }
            }
        }
    }
}

/// How long the writer sleeps between passes while lines come: they reach
/// the destination within this. Short, so that a thread's buffer is taken
/// before it grows far.
const TICK: Duration = Duration::from_millis(20);
/// Buffer capacity kept between passes.
const KEEP: usize = 4 << 20;
/// The longest sleep while nothing comes (the pause doubles from `TICK`).
const IDLE_MAX: Duration = Duration::from_millis(250);

/// The thread's loop, until the log is dropped. Each pass swaps every
/// serving thread's buffer for the empty one kept for it (so buffers are
/// reused, never freed), writes what it took, and sleeps.
pub(super) fn run(log: &Weak<Inner>) {
    let Some(first) = log.upgrade() else { return };
    let mut out = Output::new(first.sink());
    drop(first);
    let mut spares: Vec<Vec<u8>> = Vec::new();
    let mut pause = TICK;
    loop {
        let Some(inner) = log.upgrade() else { return };
        if inner.changed.swap(false, Ordering::AcqRel) {
            out.sink = inner.sink();
            out.reopen();
        }
        let buffers: Vec<_> = super::lock(&inner.buffers).clone();
        spares.resize_with(buffers.len(), Vec::new);
        let mut wrote = false;
        for (buf, spare) in buffers.iter().zip(spares.iter_mut()) {
            let lines = {
                let mut mine = super::lock(&buf.0);
                std::mem::swap(&mut mine.bytes, spare);
                std::mem::take(&mut mine.lines)
            };
            if spare.is_empty() {
                continue;
            }
            wrote = true;
            if !out.write(spare) {
                inner.dropped[LogDrop::WriteError].inc_by(lines);
            }
            spare.clear();
            // A backlog (a stalled disk) grew it: keep a working size, not the peak.
            if spare.capacity() > KEEP {
                spare.shrink_to(KEEP);
            }
        }
        pause = if wrote {
            TICK
        } else {
            (pause * 2).min(IDLE_MAX)
        };
        let mut passes = super::lock(&inner.passes);
        passes.done += 1;
        inner.passed.notify_all();
        // The pause, cut short by a `flush`: its flag is read under the
        // lock it is set under, so a ring is never missed, and left set on
        // waking, so the pass after the next one follows at once too.
        if !std::mem::take(&mut passes.hurry) {
            drop(
                inner
                    .wake
                    .wait_timeout(passes, pause)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}
