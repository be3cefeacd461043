//! Write batching per runtime thread: the native HTTP/1.1 paths wait for
//! their turn before a request goes upstream or a response goes to its
//! client, and a flusher task gives the turns out once per pass of the run
//! queue, all upstream writes first, then all client writes.
//!
//! Why: on loopback the kernel wakes the peer inside the writer's `send`, and
//! a wake-up of a sleeping peer (an IPI on a VM) costs more than the send
//! itself. Tokio runs each task from its read straight to its write, so a
//! pass interleaves sends to the upstream and to the clients; a peer wakes,
//! catches up, sleeps, and is woken again within the same pass. HAProxy reads
//! everything a poll round brings and then writes, grouped by side; its peers
//! wake about half as often per request. Grouping the writes does the same
//! here at the cost of one more poll of each writing task.
//!
//! Only current-thread runtimes batch ([`start`] is a no-op elsewhere): the
//! queue is a thread-local, and the flusher must run on the thread of the
//! tasks it releases. Where no flusher runs, a turn is granted at once.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Which peer a write goes to; upstream writes are released first, since
/// their answers take the longest to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Upstream = 0,
    Client = 1,
}

#[derive(Debug, Default)]
struct Queue {
    /// A flusher runs on this thread (its waker).
    flusher: Option<Waker>,
    /// The flusher has been woken for the current pass.
    armed: bool,
    /// Turns granted so far: a writer queued in an earlier pass may go.
    pass: u64,
    waiting: [Vec<Waker>; 2],
}

thread_local! {
    static QUEUE: RefCell<Queue> = const {
        RefCell::new(Queue {
            flusher: None,
            armed: false,
            pass: 0,
            waiting: [Vec::new(), Vec::new()],
        })
    };
}

/// One write's place in the queue; once granted, it stays granted (the rest
/// of that write's bytes go without waiting).
#[derive(Debug, Default)]
pub struct Turn(TurnState);

#[derive(Debug, Default, Clone, Copy)]
enum TurnState {
    #[default]
    Fresh,
    /// Queued in this pass, at this index of its side's list.
    Queued(u64, usize),
    Granted,
}

impl Turn {
    /// Ready when this writer may write now: at once where no flusher runs,
    /// else once the flusher has released the pass it queued in.
    pub fn poll(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<()> {
        if let TurnState::Granted = self.0 {
            return Poll::Ready(());
        }
        QUEUE.with_borrow_mut(|q| {
            let Some(flusher) = &q.flusher else {
                self.0 = TurnState::Granted;
                return Poll::Ready(());
            };
            match self.0 {
                TurnState::Queued(pass, _) if pass != q.pass => {
                    self.0 = TurnState::Granted;
                    Poll::Ready(())
                }
                TurnState::Queued(_, i) => {
                    // Polled again before its turn (by another wake-up): keep
                    // the waker current.
                    if let Some(w) = q.waiting[side as usize].get_mut(i)
                        && !w.will_wake(cx.waker())
                    {
                        w.clone_from(cx.waker());
                    }
                    Poll::Pending
                }
                _ => {
                    if !q.armed {
                        q.armed = true;
                        flusher.wake_by_ref();
                    }
                    let list = &mut q.waiting[side as usize];
                    list.push(cx.waker().clone());
                    self.0 = TurnState::Queued(q.pass, list.len() - 1);
                    Poll::Pending
                }
            }
        })
    }
}

/// Starts this thread's flusher, once per current-thread runtime. The flusher
/// ends with its runtime.
pub fn start() {
    let current = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !current || QUEUE.with_borrow(|q| q.flusher.is_some()) {
        return;
    }
    tokio::spawn(Flusher {
        released: Default::default(),
        registered: false,
    });
}

/// Releases each pass's writers in the order of their sides. Runs when the
/// first writer of a pass wakes it: by then the tasks queued before it have
/// run and queued their writes.
struct Flusher {
    /// The lists swapped out of the queue, kept for their capacity.
    released: [Vec<Waker>; 2],
    registered: bool,
}

impl Future for Flusher {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let taken = QUEUE.with_borrow_mut(|q| {
            if !this.registered {
                if q.flusher.is_some() {
                    // Another flusher already serves this thread.
                    return false;
                }
                this.registered = true;
            }
            match &mut q.flusher {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            q.armed = false;
            q.pass += 1;
            for (mine, theirs) in this.released.iter_mut().zip(q.waiting.iter_mut()) {
                std::mem::swap(mine, theirs);
            }
            true
        });
        if !taken {
            return Poll::Ready(());
        }
        // Woken outside the borrow: waking only schedules, but nothing here
        // needs to rely on that.
        for list in &mut this.released {
            for w in list.drain(..) {
                w.wake();
            }
        }
        Poll::Pending
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        // The runtime is going: whoever still waits writes at once from now.
        let waiting = QUEUE.try_with(|q| {
            let mut q = q.borrow_mut();
            q.flusher = None;
            q.armed = false;
            q.pass += 1;
            std::mem::take(&mut q.waiting)
        });
        for w in waiting.into_iter().flatten().flatten() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }

    /// Each writer notes its name when its turn comes.
    async fn writer(log: Arc<Mutex<Vec<&'static str>>>, name: &'static str, side: Side) {
        let mut turn = Turn::default();
        std::future::poll_fn(|cx| turn.poll(cx, side)).await;
        log.lock().map(|mut l| l.push(name)).ok();
    }

    #[test]
    fn a_pass_releases_upstream_writes_before_client_writes() -> std::io::Result<()> {
        let rt = current_thread()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            start();
            tokio::task::yield_now().await;
            let tasks: Vec<_> = [
                ("c1", Side::Client),
                ("u1", Side::Upstream),
                ("c2", Side::Client),
                ("u2", Side::Upstream),
            ]
            .into_iter()
            .map(|(n, s)| tokio::spawn(writer(Arc::clone(&log), n, s)))
            .collect();
            for t in tasks {
                t.await.ok();
            }
        });
        assert_eq!(
            *log.lock().map_err(|_| std::io::Error::other("poisoned"))?,
            ["u1", "u2", "c1", "c2"]
        );
        Ok(())
    }

    #[test]
    fn without_a_flusher_a_turn_is_granted_at_once_and_the_flusher_ends_with_its_runtime()
    -> std::io::Result<()> {
        let log = Arc::new(Mutex::new(Vec::new()));
        // No runtime of this thread has started one.
        let rt = current_thread()?;
        rt.block_on(writer(Arc::clone(&log), "alone", Side::Client));
        {
            let rt = current_thread()?;
            rt.block_on(async {
                start();
                tokio::task::yield_now().await;
            });
            assert!(QUEUE.with_borrow(|q| q.flusher.is_some()));
        }
        assert!(QUEUE.with_borrow(|q| q.flusher.is_none()));
        rt.block_on(writer(Arc::clone(&log), "after", Side::Upstream));
        assert_eq!(
            *log.lock().map_err(|_| std::io::Error::other("poisoned"))?,
            ["alone", "after"]
        );
        Ok(())
    }
}
