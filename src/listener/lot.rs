//! Where idle native connections wait ([`super::native`]): one task per
//! accept loop holds every parked socket in a slab, with one timer for all
//! their deadlines, so a parked connection costs a slot (its socket, its
//! deadline, a few small fields) rather than a task of its own.
//!
//! ```text
//! native: idle 1 s -> park(resting, deadline) --> slot + deadline heap
//!   socket readable -> slot waker -> ready list -> lot task -> active task again
//!   deadline passed -> closed (keep-alive or header timeout counted)
//!   shutdown        -> every slot closed, the lot task ends
//! ```
//! Each slot has a waker of its own (one small `Arc`), registered with the
//! socket's readiness; waking it puts the slot's key on the ready list. Keys
//! carry a generation, so a late wake-up for a slot since reused is ignored.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn_io::ConnTimeouts;
use super::{ConnTask, OpenConn};
use crate::metrics::ClientTimeout;

/// Serves a parked connection again: its socket became readable; the wait
/// goes on to the deadline given.
pub(super) type Resume = fn(Resting, &Arc<Lot>, Instant, &ConnTask);

/// Ends an idle connection (nothing to write, nothing unread): a FIN.
pub(super) fn close_idle(io: TcpStream) {
    let _ = socket2::SockRef::from(&io).shutdown(std::net::Shutdown::Write);
}

/// What a parked connection keeps: enough to serve it again.
#[derive(Debug)]
pub(super) struct Resting {
    pub io: TcpStream,
    pub open: OpenConn,
    pub peer: SocketAddr,
    pub accepted: Instant,
    /// No request has been served yet.
    pub first: bool,
    pub timeouts: ConnTimeouts,
    pub max_headers: u32,
}

#[derive(Debug)]
struct Slot {
    rest: Resting,
    generation: u32,
    deadline: Instant,
    waker: Waker,
}

#[derive(Debug, Default)]
struct Spaces {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Slots to look at: newly parked, or woken by their socket.
    ready: Vec<(u32, u32)>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    generation: u32,
    /// The lot's task has ended (shutdown): nothing more is taken.
    closed: bool,
}

/// The parked connections of one accept loop.
#[derive(Debug, Default)]
pub(super) struct Lot {
    inner: Mutex<Spaces>,
    task: AtomicWaker,
}

fn lock(m: &Mutex<Spaces>) -> MutexGuard<'_, Spaces> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Wakes the lot for one slot.
struct SlotWaker {
    lot: Weak<Lot>,
    key: u32,
    generation: u32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(lot) = self.lot.upgrade() {
            lock(&lot.inner).ready.push((self.key, self.generation));
            lot.task.wake();
        }
    }
}

/// How a slot left the lot.
enum Leave {
    Readable,
    Deadline,
}

impl Lot {
    /// A lot for `task`'s listener, its task spawned on this runtime.
    /// The lot of one accept loop; a connection whose socket becomes
    /// readable is handed to `resume` (the native server's).
    pub fn spawn(task: ConnTask, resume: Resume) -> Arc<Self> {
        let lot = Arc::new(Self::default());
        tokio::spawn(run(Arc::clone(&lot), task, resume));
        lot
    }

    /// Parks a connection until `deadline`. It is given back when the lot
    /// no longer takes any (shutting down).
    pub fn park(self: &Arc<Self>, rest: Resting, deadline: Instant) -> Option<Resting> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Some(rest);
        }
        inner.generation = inner.generation.wrapping_add(1);
        let generation = inner.generation;
        let key = match inner.free.pop() {
            Some(k) => k,
            None => {
                inner.slots.push(None);
                (inner.slots.len() - 1) as u32
            }
        };
        let waker = Waker::from(Arc::new(SlotWaker {
            lot: Arc::downgrade(self),
            key,
            generation,
        }));
        inner.slots[key as usize] = Some(Slot {
            rest,
            generation,
            deadline,
            waker,
        });
        inner.ready.push((key, generation));
        inner.deadlines.push(Reverse((deadline, key, generation)));
        // Entries of slots served again stay in the heap until their time;
        // when they outnumber the live ones, the heap is rebuilt.
        let live = inner.slots.len() - inner.free.len();
        if inner.deadlines.len() > 2 * live + 64 {
            let fresh: BinaryHeap<_> = inner
                .slots
                .iter()
                .enumerate()
                .filter_map(|(k, s)| {
                    s.as_ref()
                        .map(|s| Reverse((s.deadline, k as u32, s.generation)))
                })
                .collect();
            inner.deadlines = fresh;
        }
        drop(inner);
        self.task.wake();
        None
    }

    /// Takes the slot `key` out if it is still `generation`'s.
    fn take(inner: &mut Spaces, key: u32, generation: u32) -> Option<Slot> {
        let place = inner.slots.get_mut(key as usize)?;
        if place.as_ref()?.generation != generation {
            return None;
        }
        let slot = place.take();
        inner.free.push(key);
        slot
    }

    /// Slots that are readable or past their deadline, taken out.
    fn due(&self, now: Instant) -> Vec<(Slot, Leave)> {
        let mut inner = lock(&self.inner);
        let mut out = Vec::new();
        let ready = std::mem::take(&mut inner.ready);
        for (key, generation) in ready {
            let readable = match inner.slots.get(key as usize).and_then(Option::as_ref) {
                Some(slot) if slot.generation == generation => {
                    let mut cx = Context::from_waker(&slot.waker);
                    // A reset counts as readable: the read that follows sees it.
                    slot.rest.io.poll_read_ready(&mut cx).is_ready()
                }
                _ => false,
            };
            if readable && let Some(slot) = Self::take(&mut inner, key, generation) {
                out.push((slot, Leave::Readable));
            }
        }
        while let Some(Reverse((deadline, key, generation))) = inner.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            inner.deadlines.pop();
            if let Some(slot) = Self::take(&mut inner, key, generation) {
                out.push((slot, Leave::Deadline));
            }
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        let inner = lock(&self.inner);
        // Stale entries (slots gone) only make the timer fire early.
        inner.deadlines.peek().map(|Reverse((d, ..))| *d)
    }

    fn has_ready(&self) -> bool {
        !lock(&self.inner).ready.is_empty()
    }

    /// Shutting down: every slot, taken out; no more parking.
    fn close_all(&self) -> Vec<Slot> {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.ready.clear();
        inner.deadlines.clear();
        inner.free.clear();
        std::mem::take(&mut inner.slots)
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The lot's task: resumes readable connections, closes expired ones, and at
/// shutdown closes the rest.
async fn run(lot: Arc<Lot>, task: ConnTask, resume: Resume) {
    let shared = std::sync::Arc::clone(&task.serving.shared);
    let parked = &shared.metrics.parked_connections;
    let timeouts = &shared.metrics.client_timeouts;
    {
        // Its own receiver: `task` is cloned for every connection served again.
        let mut shutdown = task.shutdown.clone();
        let mut stop = pin!(super::stopping(&mut shutdown));
        let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
        poll_fn(|cx| {
            loop {
                lot.task.register(cx.waker());
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                let now = Instant::now();
                for (slot, leave) in lot.due(now) {
                    parked.dec();
                    match leave {
                        Leave::Readable => resume(slot.rest, &lot, slot.deadline, &task),
                        Leave::Deadline => {
                            let which = if slot.rest.first {
                                ClientTimeout::Header
                            } else {
                                ClientTimeout::Keepalive
                            };
                            timeouts[which].inc();
                            close_idle(slot.rest.io);
                        }
                    }
                }
                if let Some(next) = lot.next_deadline() {
                    if timer.deadline() != next {
                        timer.as_mut().reset(next);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                }
                if lot.has_ready() {
                    continue;
                }
                return Poll::Pending;
            }
        })
        .await;
    }
    for slot in lot.close_all() {
        parked.dec();
        close_idle(slot.rest.io);
    }
}
