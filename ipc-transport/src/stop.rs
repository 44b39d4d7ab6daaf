//! A child's stop request: set once (main asked it to stop or restart, or
//! main is gone), seen by polling, blocking, awaiting or a hook.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use yuki_channel::sync;

use crate::error::{Error, Result};

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    requested: bool,
    hooks: Vec<Hook>,
    wakers: Vec<Waker>,
}

/// The stop request of one child process.
#[derive(Default)]
pub(crate) struct StopSignal {
    state: Mutex<State>,
    changed: Condvar,
}

impl StopSignal {
    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Marks the stop as requested and wakes every waiter; the hooks run
    /// on a thread of their own, so a hook that calls main or takes its
    /// time does not hold up the link. Returns whether this was the first
    /// request.
    pub(crate) fn request(&self) -> bool {
        let (hooks, wakers) = {
            let mut st = self.lock();
            if st.requested {
                return false;
            }
            st.requested = true;
            (
                std::mem::take(&mut st.hooks),
                std::mem::take(&mut st.wakers),
            )
        };
        self.changed.notify_all();
        for w in wakers {
            w.wake();
        }
        run_hooks(hooks);
        true
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.lock().requested
    }

    /// Waits until the stop is requested or `deadline` passes; returns
    /// whether it was requested.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut st = self.lock();
        while !st.requested {
            st = match deadline {
                None => sync::wait(&self.changed, st),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    sync::wait_timeout(&self.changed, st, d - now).0
                }
            };
        }
        true
    }

    /// Adds a hook run once when the stop is requested (at once, on its
    /// own thread, if it already was).
    pub(crate) fn on_stop(&self, hook: Hook) {
        let mut st = self.lock();
        if st.requested {
            drop(st);
            run_hooks(vec![hook]);
        } else {
            st.hooks.push(hook);
        }
    }

    fn poll_requested(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.requested {
            return Poll::Ready(());
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

fn run_hooks(hooks: Vec<Hook>) {
    if hooks.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("yuki-on-stop".into())
        .spawn(move || {
            for h in hooks {
                h();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the thread for the on_stop hooks; they do not run");
    }
}

/// The future of [`Node::wait_for_stop_async`](crate::Node::wait_for_stop_async):
/// ready when this child is asked to stop (or main is gone).
///
/// It owns what it waits on, so it may outlive the node's borrow (spawn it,
/// or put it in a `select!`).
#[must_use = "a future does nothing unless awaited"]
pub struct WaitForStop {
    signal: Option<Arc<StopSignal>>,
}

impl WaitForStop {
    pub(crate) fn new(signal: Option<Arc<StopSignal>>) -> WaitForStop {
        WaitForStop { signal }
    }
}

impl Future for WaitForStop {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &self.signal {
            None => Poll::Ready(Err(Error::WrongRole(NOT_IN_MAIN))),
            Some(s) => s.poll_requested(cx).map(Ok),
        }
    }
}

impl fmt::Debug for WaitForStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForStop")
            .field("requested", &self.signal.as_ref().map(|s| s.is_requested()))
            .finish()
    }
}

/// Why the stop calls fail in main.
pub(crate) const NOT_IN_MAIN: &str =
    "only a child is asked to stop: main stops when its program does (drop its Node)";

/// The bound of a timed wait, saturating for very long time-outs.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Flag(AtomicUsize);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_request_wakes_waiters_once_and_runs_each_hook_once() {
        let s = Arc::new(StopSignal::default());
        assert!(!s.is_requested());
        assert!(!s.wait_until(deadline(Duration::from_millis(10))));
        let (tx, rx) = crossbeam_channel::unbounded();
        let before = tx.clone();
        s.on_stop(Box::new(move || before.send("before").unwrap()));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait_until(None))
        };
        assert!(s.request());
        assert!(!s.request(), "a second request is not a new one");
        assert!(waiter.join().unwrap());
        let after = tx.clone();
        s.on_stop(Box::new(move || after.send("after").unwrap()));
        let mut ran: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        ran.sort();
        assert_eq!(ran, ["after", "before"]);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    #[test]
    fn the_future_is_woken_by_the_request() {
        let s = Arc::new(StopSignal::default());
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = WaitForStop::new(Some(s.clone()));
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        s.request();
        assert_eq!(
            flag.0.load(Ordering::SeqCst),
            1,
            "one waker kept, woken once"
        );
        assert!(matches!(
            Pin::new(&mut f).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut in_main = WaitForStop::new(None);
        assert!(matches!(
            Pin::new(&mut in_main).poll(&mut cx),
            Poll::Ready(Err(Error::WrongRole(_)))
        ));
    }
}
