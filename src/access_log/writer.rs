//! The writer thread: takes whole lines off the bounded queue and writes them
//! in batches (one `write` per batch, a flush whenever the queue runs dry).
//! A file that cannot be written is counted line by line
//! (`switchyard_access_log_dropped_total{reason="write_error"}`) and opened
//! again at most once a second; requests never wait for any of it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{Control, Msg};
use crate::config::LogSink;
use crate::metrics::{Counters, LogDrop};

/// Bytes gathered before a write, when lines arrive faster than that.
const BATCH: usize = 64 * 1024;
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

/// The thread's loop, until every sender is gone.
pub(super) fn run(rx: Receiver<Msg>, control: Arc<Control>, dropped: Counters<LogDrop>) {
    let mut out = Output::new(control.sink());
    let mut batch = Vec::with_capacity(BATCH);
    let mut lines = 0u64;
    loop {
        // Wakes at least once a second so a failed file is retried and a
        // SIGUSR1 is seen even when nothing is logged.
        let msg = match rx.recv_timeout(RETRY) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if control.changed.swap(false, Ordering::AcqRel) {
            out.sink = control.sink();
            out.reopen();
        }
        let mut flushed = Vec::new();
        let mut next = msg;
        while let Some(m) = next {
            match m {
                Msg::Line(l) => {
                    batch.extend_from_slice(&l);
                    lines += 1;
                }
                Msg::Wake => {}
                Msg::Flush(done) => flushed.push(done),
            }
            if batch.len() >= BATCH {
                write_batch(&mut out, &mut batch, &mut lines, &dropped);
            }
            next = rx.try_recv().ok();
        }
        write_batch(&mut out, &mut batch, &mut lines, &dropped);
        for done in flushed {
            let _ = done.send(());
        }
    }
}

fn write_batch(
    out: &mut Output,
    batch: &mut Vec<u8>,
    lines: &mut u64,
    dropped: &Counters<LogDrop>,
) {
    if !batch.is_empty() && !out.write(batch) {
        dropped[LogDrop::WriteError].inc_by(*lines);
    }
    batch.clear();
    *lines = 0;
}
