//! The bounded buffer behind each subscription.
//!
//! Delivering never waits: when the buffer is full the oldest message is
//! dropped and counted, and the receiver learns the count (`Lagged`) before
//! the next message it gets. So a stuck subscriber costs the publisher one
//! short lock, never a stall.
//!
//! The buffer is in two parts, each under its own lock: deliverers append
//! to the back part, and a receiver takes the whole back part at once into
//! the front part, which it then reads alone. So under a stream of
//! messages the two sides share a lock once per batch, not once per
//! message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use yuki_channel::sync;

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
    pub(crate) payload: Payload,
}

/// Payloads up to this many bytes are kept inline in an [`Payload`].
const INLINE: usize = 62;

/// A message's encoded bytes: small ones inline, copied with the envelope
/// (no allocation per message, and no memory freed by another thread than
/// the one that allocated it), larger ones shared.
#[derive(Clone)]
pub(crate) enum Payload {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        if bytes.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            Payload::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            }
        } else {
            Payload::Shared(bytes.into())
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Payload::Shared(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.len())
    }
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
    /// The oldest part, read by receivers. Locked before `back` when both are.
    front: Mutex<Front>,
    /// The newest part, appended to by deliverers.
    back: Mutex<Back>,
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
struct Front {
    queue: VecDeque<Slot>,
    /// Messages in `queue` (losses take no room).
    messages: usize,
    /// Lost before everything in `queue`.
    lagged: u64,
    /// An unknown number may have been lost before everything in `queue`.
    gap: bool,
}

impl Front {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.lagged == 0 && !self.gap
    }

    /// Drops the oldest slot (of the front, else of the back) to make
    /// room; false when there is nothing left to drop.
    fn drop_oldest(&mut self, back: &mut Back) -> bool {
        let (slot, front) = match self.queue.pop_front() {
            Some(slot) => (slot, true),
            None => match back.queue.pop_front() {
                Some(slot) => (slot, false),
                None => return false,
            },
        };
        match slot {
            Slot::Message(_) if front => self.messages -= 1,
            Slot::Message(_) => back.messages -= 1,
            _ => {}
        }
        // With the front empty, what the back lost is lost before
        // everything left, as the front's lag says.
        match slot {
            Slot::Message(_) => self.lagged += 1,
            Slot::Lost(n) => self.lagged += n,
            Slot::Gap => self.gap = true,
        }
        true
    }
}

#[derive(Debug, Default)]
struct Back {
    queue: VecDeque<Slot>,
    /// Messages in `queue`.
    messages: usize,
    /// At most the messages in the front: what it held when last looked
    /// at (receivers only take from it), so that a deliverer can tell
    /// without the front's lock that the buffer is not full.
    front_messages: usize,
    end: Option<End>,
    sleepers: usize,
    /// Sleepers were notified and have not run yet: more notifications
    /// before they run would each cost a futex call for nothing.
    notified: bool,
    waker: Option<Waker>,
}

impl Back {
    /// Appends a loss or gap, merged with one at the back.
    fn push_mark(&mut self, slot: Slot) {
        match (self.queue.back_mut(), slot) {
            (Some(Slot::Lost(m)), Slot::Lost(n)) => *m += n,
            (Some(Slot::Gap), Slot::Gap) => {}
            (_, slot) => self.queue.push_back(slot),
        }
    }
}

impl Inbox {
    pub(crate) fn new(pattern: Pattern, capacity: usize) -> Inbox {
        Inbox {
            pattern,
            capacity: capacity.max(1),
            front: Mutex::default(),
            back: Mutex::default(),
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

    fn lock_front(&self) -> MutexGuard<'_, Front> {
        sync::lock(&self.front)
    }

    fn lock_back(&self) -> MutexGuard<'_, Back> {
        sync::lock(&self.back)
    }

    /// Queues `message`, dropping the oldest one if the buffer is full.
    pub(crate) fn deliver(&self, message: Envelope) {
        let mut b = self.lock_back();
        if b.end.is_some() {
            return;
        }
        if b.messages + b.front_messages >= self.capacity {
            // Maybe full: look at the front for how much room there is
            // (taking the locks in order), and make room.
            drop(b);
            let mut f = self.lock_front();
            b = self.lock_back();
            if b.end.is_some() {
                return;
            }
            while f.messages + b.messages >= self.capacity && f.drop_oldest(&mut b) {}
            b.front_messages = f.messages;
        }
        b.queue.push_back(Slot::Message(message));
        b.messages += 1;
        self.wake(b);
    }

    /// Counts `n` messages this inbox should have had, after those queued,
    /// but never got.
    pub(crate) fn lose(&self, n: u64) {
        let mut b = self.lock_back();
        if b.end.is_some() || n == 0 {
            return;
        }
        b.push_mark(Slot::Lost(n));
        self.wake(b);
    }

    /// Marks that an unknown number of messages may have been lost after
    /// those queued (the carrier reconnected).
    pub(crate) fn gap(&self) {
        let mut b = self.lock_back();
        if b.end.is_some() {
            return;
        }
        b.push_mark(Slot::Gap);
        self.wake(b);
    }

    /// Ends the inbox. After `Disconnected` receivers drain what is
    /// queued, then get the end; after `Closed` nobody reads, so the queue
    /// is dropped at once.
    pub(crate) fn end(&self, end: End) {
        let mut f = self.lock_front();
        let mut b = self.lock_back();
        if matches!(end, End::Closed) {
            *f = Front::default();
            b.queue.clear();
            b.messages = 0;
            b.front_messages = 0;
        }
        drop(f);
        if b.end.is_none() {
            b.end = Some(end);
        }
        self.wake(b);
    }

    fn wake(&self, mut b: MutexGuard<'_, Back>) {
        if !self.something.load(Ordering::Relaxed) {
            self.something.store(true, Ordering::Release);
        }
        let waker = b.waker.take();
        let notify = b.sleepers > 0 && !b.notified;
        if notify {
            b.notified = true;
        }
        drop(b);
        if notify {
            self.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next item: from the front, which takes the whole back part when
    /// its queue runs out. `Err` when there is nothing: then with the back
    /// still locked, so the caller can wait on it without missing a delivery.
    fn take<'a>(
        &'a self,
        f: &mut Front,
    ) -> std::result::Result<Result<Envelope>, MutexGuard<'a, Back>> {
        loop {
            if f.queue.is_empty() {
                let mut b = self.lock_back();
                std::mem::swap(&mut f.queue, &mut b.queue);
                f.messages = std::mem::take(&mut b.messages);
                b.front_messages = f.messages;
                if f.is_empty() {
                    return match &b.end {
                        Some(End::Closed) => Ok(Err(Error::Closed)),
                        Some(End::Disconnected(why)) => Ok(Err(Error::Disconnected(why.clone()))),
                        None => {
                            self.something.store(false, Ordering::Release);
                            Err(b)
                        }
                    };
                }
            }
            if let Some(item) = Inbox::take_front(f) {
                return Ok(item);
            }
        }
    }

    /// The next item of the front, if it holds more than marks of nothing.
    fn take_front(f: &mut Front) -> Option<Result<Envelope>> {
        loop {
            match f.queue.front() {
                Some(Slot::Lost(n)) => f.lagged += n,
                Some(Slot::Gap) => f.gap = true,
                _ => break,
            }
            f.queue.pop_front();
        }
        if f.lagged > 0 {
            return Some(Err(Error::Lagged(std::mem::take(&mut f.lagged))));
        }
        if std::mem::take(&mut f.gap) {
            return Some(Err(Error::Reconnected));
        }
        match f.queue.pop_front() {
            Some(Slot::Message(m)) => {
                f.messages -= 1;
                Some(Ok(m))
            }
            // The loop above left a message or nothing at the front.
            _ => None,
        }
    }

    /// The next item without waiting: `Err(Empty)` when there is none.
    pub(crate) fn try_next(&self) -> Result<Envelope> {
        self.take(&mut self.lock_front())
            .unwrap_or(Err(Error::Empty))
    }

    /// The next item, waiting at most `timeout` (forever with `None`):
    /// `Err(Empty)` when none came in time.
    pub(crate) fn next_within(&self, timeout: Option<Duration>) -> Result<Envelope> {
        let mut spins = 0;
        // The clock is read only once a wait is needed.
        let mut deadline: Option<Instant> = None;
        loop {
            let mut f = self.lock_front();
            let mut b = match self.take(&mut f) {
                Ok(item) => return item,
                Err(b) => b,
            };
            if spins < SPINS {
                drop(b);
                drop(f);
                while spins < SPINS && !self.something.load(Ordering::Acquire) {
                    backoff(spins);
                    spins += 1;
                }
                spins = SPINS;
                continue;
            }
            // Receivers wait without the front's lock, which deliverers
            // may need to make room.
            drop(f);
            b.sleepers += 1;
            if let Some(timeout) = timeout {
                deadline.get_or_insert_with(|| Instant::now() + timeout);
            }
            b = match deadline {
                None => sync::wait(&self.ready, b),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        b.sleepers -= 1;
                        return Err(Error::Empty);
                    }
                    sync::wait_timeout(&self.ready, b, deadline - now).0
                }
            };
            b.sleepers -= 1;
            b.notified = false;
        }
    }

    /// The next item for an async receiver.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Envelope>> {
        let mut f = self.lock_front();
        match self.take(&mut f) {
            Ok(item) => Poll::Ready(item),
            Err(mut b) => {
                if !b.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    b.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// How many messages wait in the buffer.
    pub(crate) fn len(&self) -> usize {
        let f = self.lock_front();
        let b = self.lock_back();
        f.messages + b.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: u8) -> Envelope {
        Envelope {
            topic: "t".into(),
            payload: (&[n][..]).into(),
        }
    }

    #[test]
    fn payloads_small_and_large_keep_their_bytes() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 1000] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let payload = Payload::from(&bytes[..]);
            assert_eq!(&*payload, &bytes[..]);
            assert_eq!(matches!(payload, Payload::Inline { .. }), len <= INLINE);
            assert_eq!(&*payload.clone(), &bytes[..]);
            assert_eq!(format!("{payload:?}"), format!("{len} bytes"));
        }
    }

    #[test]
    fn a_receiver_racing_deliveries_misses_no_wake_up_and_keeps_order() {
        let inbox = Arc::new(Inbox::new(Pattern::new("t").unwrap(), 64));
        let n = 20_000u32;
        let producer = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    inbox.deliver(env(i as u8));
                    // Bursts and pauses, so the receiver both spins and sleeps.
                    if i % 97 == 0 {
                        std::thread::yield_now();
                    }
                }
                inbox.end(End::Disconnected("done".into()));
            })
        };
        let (mut got, mut lost, mut pending_lag) = (0u64, 0u64, 0u64);
        let mut last: Option<u8> = None;
        loop {
            match inbox.next_within(Some(Duration::from_secs(10))) {
                Ok(e) => {
                    let want = last.map_or(pending_lag, |p| u64::from(p) + 1 + pending_lag) % 256;
                    assert_eq!(u64::from(e.payload[0]), want, "after {got} messages");
                    last = Some(e.payload[0]);
                    pending_lag = 0;
                    got += 1;
                }
                Err(Error::Lagged(k)) => {
                    lost += k;
                    pending_lag += k;
                }
                Err(Error::Disconnected(_)) => break,
                Err(e) => panic!("{e:?} after {got} messages"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got + lost, u64::from(n));
    }

    #[test]
    fn the_capacity_counts_messages_in_both_parts() {
        let inbox = Inbox::new(Pattern::new("t").unwrap(), 4);
        for n in 0..4 {
            inbox.deliver(env(n));
        }
        // The receiver takes the back part; three stay in the front.
        assert_eq!(inbox.try_next().unwrap().payload[0], 0);
        inbox.deliver(env(4));
        assert_eq!(inbox.len(), 4);
        // Full across both parts: the oldest, in the front, is dropped.
        inbox.deliver(env(5));
        assert_eq!(inbox.len(), 4);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(1));
        for n in 2..6 {
            assert_eq!(inbox.try_next().unwrap().payload[0], n);
        }
        assert_eq!(inbox.try_next().unwrap_err(), Error::Empty);
        // Nothing lost counts as nothing.
        inbox.lose(0);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Empty);
        assert_eq!(inbox.len(), 0);
    }

    #[test]
    fn gaps_come_in_place_after_lag_and_survive_overflow() {
        let inbox = Inbox::new(Pattern::new("t").unwrap(), 2);
        inbox.gap();
        inbox.gap();
        inbox.deliver(env(1));
        inbox.gap();
        inbox.lose(2);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Reconnected);
        assert_eq!(inbox.try_next().unwrap().payload[0], 1);
        // Losses and gaps between two messages are told together, lag first.
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(2));
        assert_eq!(inbox.try_next().unwrap_err(), Error::Reconnected);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Empty);
        // A gap pushed out with the oldest messages is still reported.
        inbox.deliver(env(2));
        inbox.gap();
        inbox.deliver(env(3));
        inbox.deliver(env(4));
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
            inbox.deliver(env(n));
        }
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(3));
        assert_eq!(inbox.try_next().unwrap().payload[0], 3);
        inbox.lose(4);
        assert_eq!(inbox.try_next().unwrap().payload[0], 4);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(4));
        // A loss pushed out of a full buffer joins the lag reported first.
        inbox.deliver(env(5));
        inbox.lose(1);
        inbox.lose(1);
        inbox.deliver(env(6));
        inbox.deliver(env(7));
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Lagged(3));
        assert_eq!(inbox.try_next().unwrap().payload[0], 6);
        assert_eq!(inbox.try_next().unwrap().payload[0], 7);
        assert_eq!(inbox.try_next().unwrap_err(), Error::Empty);
        let start = Instant::now();
        let t = Duration::from_millis(20);
        assert_eq!(inbox.next_within(Some(t)).unwrap_err(), Error::Empty);
        assert!(start.elapsed() >= t);
        inbox.deliver(env(8));
        inbox.end(End::Disconnected("gone".into()));
        inbox.deliver(env(10));
        assert_eq!(inbox.next_within(None).unwrap().payload[0], 8);
        assert_eq!(
            inbox.next_within(None).unwrap_err(),
            Error::Disconnected("gone".into())
        );
        // The first end stays.
        inbox.end(End::Closed);
        assert!(matches!(inbox.try_next(), Err(Error::Disconnected(_))));
        let closed = Inbox::new(Pattern::new("t").unwrap(), 2);
        closed.deliver(env(1));
        closed.end(End::Closed);
        assert_eq!(closed.len(), 0);
        assert_eq!(closed.try_next().unwrap_err(), Error::Closed);
        assert_eq!(inbox.capacity(), 2);
        assert_eq!(inbox.len(), 0);
    }
}
