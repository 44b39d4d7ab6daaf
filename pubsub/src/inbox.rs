//! The bounded buffer behind each subscription.
//!
//! Delivering never waits: when the buffer is full the oldest message is
//! dropped and counted, and the receiver learns the count (`Lagged`) before
//! the next message it gets. So a stuck subscriber costs the publisher one
//! short lock, never a stall.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pattern::Pattern;

/// The default capacity of a subscription's buffer, in messages.
pub const DEFAULT_CAPACITY: usize = 1024;

/// How many rounds a receiver spins and yields before it sleeps.
const SPINS: u32 = 12;

fn backoff(round: u32) {
    if round < 6 {
        for _ in 0..(1 << round) {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
}

/// One published message as it sits in buffers: shared by every local
/// subscription it reached, decoded by each as its own type.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Arc<[u8]>,
}

/// Why an inbox receives no more.
#[derive(Clone, Debug)]
pub(crate) enum End {
    /// Its listener was stopped or the subscription dropped.
    Closed,
    /// Main is gone.
    Disconnected(String),
}

#[derive(Debug)]
pub(crate) struct Inbox {
    pattern: Pattern,
    capacity: usize,
    state: Mutex<State>,
    ready: Condvar,
    /// Whether a receive would find something: lets a receiver spin briefly
    /// without the lock before it sleeps, which saves a wake-up per message
    /// when messages come fast.
    something: AtomicBool,
}

/// A place in the buffer: a message, or messages lost at that point.
#[derive(Debug)]
enum Slot {
    Message(Envelope),
    Lost(u64),
    /// Messages may have been lost here, how many is unknown.
    Gap,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Slot>,
    /// Messages in `queue` (losses take no room).
    messages: usize,
    /// Lost before everything in `queue`.
    lagged: u64,
    /// An unknown number may have been lost before everything in `queue`.
    gap: bool,
    end: Option<End>,
    sleepers: usize,
    /// Sleepers were notified and have not run yet: more notifications
    /// before they run would each cost a futex call for nothing.
    notified: bool,
    waker: Option<Waker>,
}

impl Inbox {
    pub(crate) fn new(pattern: Pattern, capacity: usize) -> Inbox {
        Inbox {
            pattern,
            capacity: capacity.max(1),
            state: Mutex::default(),
            ready: Condvar::new(),
            something: AtomicBool::new(false),
        }
    }

    pub(crate) fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `message`, dropping the oldest one if the buffer is full.
    pub(crate) fn deliver(&self, message: &Envelope) {
        let mut s = self.lock();
        if s.end.is_some() {
            return;
        }
        while s.messages >= self.capacity {
            match s.queue.pop_front() {
                Some(Slot::Message(_)) => {
                    s.messages -= 1;
                    s.lagged += 1;
                }
                Some(Slot::Lost(n)) => s.lagged += n,
                Some(Slot::Gap) => s.gap = true,
                None => break,
            }
        }
        s.queue.push_back(Slot::Message(message.clone()));
        s.messages += 1;
        self.wake(s);
    }

    /// Counts `n` messages this inbox should have had, after those queued,
    /// but never got.
    pub(crate) fn lose(&self, n: u64) {
        let mut s = self.lock();
        if s.end.is_some() {
            return;
        }
        match s.queue.back_mut() {
            Some(Slot::Lost(m)) => *m += n,
            Some(Slot::Message(_) | Slot::Gap) => s.queue.push_back(Slot::Lost(n)),
            None => s.lagged += n,
        }
        self.wake(s);
    }

    /// Marks that an unknown number of messages may have been lost after
    /// those queued (the carrier reconnected).
    pub(crate) fn gap(&self) {
        let mut s = self.lock();
        if s.end.is_some() {
            return;
        }
        match s.queue.back() {
            Some(Slot::Gap) => {}
            Some(_) => s.queue.push_back(Slot::Gap),
            None => s.gap = true,
        }
        self.wake(s);
    }

    /// Ends the inbox. After `Disconnected` receivers drain what is
    /// queued, then get the end; after `Closed` nobody reads, so the queue
    /// is dropped at once.
    pub(crate) fn end(&self, end: End) {
        let mut s = self.lock();
        if matches!(end, End::Closed) {
            s.queue.clear();
            s.messages = 0;
            s.lagged = 0;
            s.gap = false;
        }
        if s.end.is_none() {
            s.end = Some(end);
        }
        self.wake(s);
    }

    fn wake(&self, mut s: MutexGuard<'_, State>) {
        self.something.store(true, Ordering::Release);
        let waker = s.waker.take();
        let notify = s.sleepers > 0 && !s.notified;
        if notify {
            s.notified = true;
        }
        drop(s);
        if notify {
            self.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn take(&self, s: &mut State) -> Option<Result<Envelope>> {
        let item = Inbox::take_inner(s);
        if s.queue.is_empty() && s.lagged == 0 && !s.gap && s.end.is_none() {
            self.something.store(false, Ordering::Release);
        }
        item
    }

    fn take_inner(s: &mut State) -> Option<Result<Envelope>> {
        loop {
            match s.queue.front() {
                Some(Slot::Lost(n)) => s.lagged += n,
                Some(Slot::Gap) => s.gap = true,
                _ => break,
            }
            s.queue.pop_front();
        }
        if s.lagged > 0 {
            let n = std::mem::take(&mut s.lagged);
            return Some(Err(Error::Lagged(n)));
        }
        if std::mem::take(&mut s.gap) {
            return Some(Err(Error::Reconnected));
        }
        match s.queue.pop_front() {
            Some(Slot::Message(m)) => {
                s.messages -= 1;
                return Some(Ok(m));
            }
            Some(Slot::Lost(n)) => return Some(Err(Error::Lagged(n))),
            Some(Slot::Gap) => return Some(Err(Error::Reconnected)),
            None => {}
        }
        match &s.end {
            Some(End::Closed) => Some(Err(Error::Closed)),
            Some(End::Disconnected(why)) => Some(Err(Error::Disconnected(why.clone()))),
            None => None,
        }
    }

    /// The next item without waiting: `Err(Empty)` when there is none.
    pub(crate) fn try_next(&self) -> Result<Envelope> {
        self.take(&mut self.lock()).unwrap_or(Err(Error::Empty))
    }

    /// The next item, waiting at most `timeout` (forever with `None`):
    /// `Err(Empty)` when none came in time.
    pub(crate) fn next_within(&self, timeout: Option<Duration>) -> Result<Envelope> {
        let mut s = self.lock();
        let mut spins = 0;
        // The clock is read only once a wait is needed.
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(item) = self.take(&mut s) {
                return item;
            }
            if spins < SPINS {
                drop(s);
                while spins < SPINS && !self.something.load(Ordering::Acquire) {
                    backoff(spins);
                    spins += 1;
                }
                spins = SPINS;
                s = self.lock();
                continue;
            }
            s.sleepers += 1;
            if let Some(timeout) = timeout {
                deadline.get_or_insert_with(|| Instant::now() + timeout);
            }
            s = match deadline {
                None => self.ready.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        s.sleepers -= 1;
                        return Err(Error::Empty);
                    }
                    self.ready
                        .wait_timeout(s, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            s.sleepers -= 1;
            s.notified = false;
        }
    }

    /// The next item for an async receiver.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Envelope>> {
        let mut s = self.lock();
        match self.take(&mut s) {
            Some(item) => Poll::Ready(item),
            None => {
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// How many messages wait in the buffer.
    pub(crate) fn len(&self) -> usize {
        self.lock().messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: u8) -> Envelope {
        Envelope {
            topic: "t".into(),
            payload: vec![n].into(),
        }
    }

    #[test]
    fn gaps_come_in_place_after_lag_and_survive_overflow() {
        let inbox = Inbox::new(Pattern::new("t").unwrap(), 2);
        inbox.gap();
        inbox.gap();
        inbox.deliver(&env(1));
        inbox.gap();
        inbox.lose(2);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Reconnected);
        assert_eq!(inbox.try_next().unwrap().payload[0], 1);
        // Losses and gaps between two messages are told together, lag first.
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(2));
        assert_eq!(inbox.try_next().unwrap_err(), Error::Reconnected);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Empty);
        // A gap pushed out with the oldest messages is still reported.
        inbox.deliver(&env(2));
        inbox.gap();
        inbox.deliver(&env(3));
        inbox.deliver(&env(4));
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(1));
        assert_eq!(inbox.try_next().unwrap_err(), Error::Reconnected);
        assert_eq!(inbox.try_next().unwrap().payload[0], 3);
        inbox.end(End::Closed);
        inbox.gap();
        assert_eq!(inbox.try_next().unwrap_err(), Error::Closed);
    }

    #[test]
    fn overflow_drops_oldest_and_reports_lag_first() {
        let inbox = Inbox::new(Pattern::new("t").unwrap(), 2);
        for n in 0..5 {
            inbox.deliver(&env(n));
        }
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(3));
        assert_eq!(inbox.try_next().unwrap().payload[0], 3);
        inbox.lose(4);
        assert_eq!(inbox.try_next().unwrap().payload[0], 4);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(4));
        // A loss pushed out of a full buffer joins the lag reported first.
        inbox.deliver(&env(5));
        inbox.lose(1);
        inbox.lose(1);
        inbox.deliver(&env(6));
        inbox.deliver(&env(7));
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(3));
        assert_eq!(inbox.try_next().unwrap().payload[0], 6);
        assert_eq!(inbox.try_next().unwrap().payload[0], 7);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Empty);
        let start = Instant::now();
        let t = Duration::from_millis(20);
        assert_eq!(inbox.next_within(Some(t)).unwrap_err(), Error::Empty);
        assert!(start.elapsed() >= t);
        inbox.deliver(&env(8));
        inbox.end(End::Disconnected("gone".into()));
        inbox.deliver(&env(10));
        assert_eq!(inbox.next_within(None).unwrap().payload[0], 8);
        assert_eq!(
            inbox.next_within(None).unwrap_err(),
            Error::Disconnected("gone".into())
        );
        // The first end stays.
        inbox.end(End::Closed);
        assert!(matches!(inbox.try_next(), Err(Error::Disconnected(_))));
        let closed = Inbox::new(Pattern::new("t").unwrap(), 2);
        closed.deliver(&env(1));
        closed.end(End::Closed);
        assert_eq!(closed.len(), 0);
        assert_eq!(closed.try_next().unwrap_err(), Error::Closed);
        assert_eq!(inbox.capacity(), 2);
        assert_eq!(inbox.len(), 0);
    }
}
