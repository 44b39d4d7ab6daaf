//! The in-process queue behind a channel: crossbeam-channel, plus an explicit
//! close and wake-ups for async receivers.
//!
//! Items move through one crossbeam channel, so the hot paths (`send`,
//! blocking `recv`) are crossbeam's own. What crossbeam lacks is added
//! around it:
//!
//! - **close**: crossbeam disconnects when its last `Sender` is dropped. The
//!   queue owns exactly one `Sender`; `close` marks the queue closed and the
//!   sender is dropped once no send is in progress (a count of senders in
//!   progress shares one atomic word with the closed flag). Receivers then
//!   drain what is left and see the disconnection, exactly as in crossbeam.
//! - **senders blocked on a full bounded queue** wait on the queue and on a
//!   close signal at once, so a close wakes them with their value.
//! - **async receivers** register in a count and wait on a
//!   [`tokio::sync::Notify`]; a send checks the count (one load) and wakes one
//!   of them. No thread waits for an async receiver.

use std::cell::UnsafeCell;
use std::mem::ManuallyDrop;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{
    Receiver, RecvTimeoutError, Select, Sender, TryRecvError, TrySendError as CbTrySendError,
};
use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::error::Error;

/// The queue is closed: no new send may start.
const CLOSED: usize = 1;
/// The sender has been dropped (only ever set together with [`CLOSED`]).
const DROPPED: usize = 2;
/// One send in progress.
const USER: usize = 4;

/// The largest capacity of an in-process bounded queue: its slots are
/// allocated up front.
pub(crate) const MAX_CAPACITY: usize = 1 << 20;

/// Why a queue operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    Empty,
    Full,
    Closed,
    Timeout(Duration),
    /// A hosted item too large to be pushed to a child.
    TooLarge {
        size: usize,
        max: usize,
    },
}

impl Fail {
    /// The error a caller sees for this failure on the channel `name`.
    pub(crate) fn into_error(self, name: &str, capacity: Option<usize>) -> Error {
        let channel = name.to_owned();
        match self {
            Fail::Empty => Error::Empty { channel },
            Fail::Closed => Error::Closed { channel },
            Fail::Timeout(d) => Error::Timeout(d),
            Fail::TooLarge { size, max } => Error::FrameTooLarge { size, max },
            Fail::Full => Error::Full {
                channel,
                capacity: capacity.unwrap_or(0),
            },
        }
    }
}

pub(crate) struct Local<T> {
    /// What every send writes, on a cache line of its own: receivers never
    /// touch it, so a send does not evict what a receiver reads.
    send: CachePadded<SendSide<T>>,
    rx: Receiver<T>,
    async_waiters: AtomicUsize,
    notify: Notify,
    /// Dropped on close: wakes senders blocked on a full bounded queue.
    close_tx: Mutex<Option<Sender<()>>>,
    close_rx: Receiver<()>,
    capacity: Option<usize>,
}

struct SendSide<T> {
    /// The only sender; dropped exactly once, by whoever moves `state` from
    /// `CLOSED` (no send in progress) to `CLOSED | DROPPED`.
    tx: UnsafeCell<ManuallyDrop<Sender<T>>>,
    state: AtomicUsize,
}

// SAFETY: `tx` is only read while a send is registered in `state` and only
// dropped once no send is registered (see `try_drop_sender`); `Sender<T>` is
// `Sync` for `T: Send`.
unsafe impl<T: Send> Sync for Local<T> {}

impl<T> Local<T> {
    /// A queue; `capacity` `None` is unbounded, `Some(0)` is taken as 1 and
    /// capacities above [`MAX_CAPACITY`] as that.
    pub(crate) fn new(capacity: Option<usize>) -> Local<T> {
        let capacity = capacity.map(|n| n.clamp(1, MAX_CAPACITY));
        let (tx, rx) = match capacity {
            None => crossbeam_channel::unbounded(),
            Some(n) => crossbeam_channel::bounded(n),
        };
        let (close_tx, close_rx) = crossbeam_channel::bounded(0);
        Local {
            send: CachePadded::new(SendSide {
                tx: UnsafeCell::new(ManuallyDrop::new(tx)),
                state: AtomicUsize::new(0),
            }),
            rx,
            async_waiters: AtomicUsize::new(0),
            notify: Notify::new(),
            close_tx: Mutex::new(Some(close_tx)),
            close_rx,
            capacity,
        }
    }

    /// Registers a send in progress; `None` when the queue is closed.
    #[inline]
    fn enter(&self) -> Option<&Sender<T>> {
        let prev = self.send.state.fetch_add(USER, Ordering::Acquire);
        if prev & CLOSED != 0 {
            self.leave();
            return None;
        }
        // SAFETY: the sender is not dropped while a send is registered.
        Some(unsafe { &*self.send.tx.get() })
    }

    #[inline]
    fn leave(&self) {
        let prev = self.send.state.fetch_sub(USER, Ordering::AcqRel);
        if prev & (CLOSED | DROPPED) == CLOSED && prev / USER == 1 {
            self.try_drop_sender();
        }
    }

    fn try_drop_sender(&self) {
        if self
            .send
            .state
            .compare_exchange(
                CLOSED,
                CLOSED | DROPPED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            // SAFETY: no send is registered and none can start (CLOSED), and
            // the DROPPED bit makes this the only drop.
            unsafe { ManuallyDrop::drop(&mut *self.send.tx.get()) };
            self.notify.notify_waiters();
        }
    }

    #[inline]
    fn wake_async(&self) {
        if self.async_waiters.load(Ordering::SeqCst) != 0 {
            self.notify.notify_one();
        }
    }

    /// Sends, blocking while a bounded queue is full.
    #[inline]
    pub(crate) fn send(&self, value: T) -> Result<(), (T, Fail)> {
        let Some(tx) = self.enter() else {
            return Err((value, Fail::Closed));
        };
        let result = match tx.try_send(value) {
            Ok(()) => Ok(()),
            Err(CbTrySendError::Full(v)) => self.send_blocking(tx, v),
            Err(CbTrySendError::Disconnected(v)) => Err((v, Fail::Closed)),
        };
        if result.is_ok() {
            self.wake_async();
        }
        self.leave();
        result
    }

    /// Waits for room or for the close, whichever comes first.
    fn send_blocking(&self, tx: &Sender<T>, mut value: T) -> Result<(), (T, Fail)> {
        loop {
            let mut sel = Select::new();
            sel.send(tx);
            sel.recv(&self.close_rx);
            sel.ready();
            if self.is_closed() {
                return Err((value, Fail::Closed));
            }
            match tx.try_send(value) {
                Ok(()) => return Ok(()),
                Err(CbTrySendError::Full(v)) => value = v,
                Err(CbTrySendError::Disconnected(v)) => return Err((v, Fail::Closed)),
            }
        }
    }

    /// Sends without blocking.
    pub(crate) fn try_send(&self, value: T) -> Result<(), (T, Fail)> {
        let Some(tx) = self.enter() else {
            return Err((value, Fail::Closed));
        };
        let result = match tx.try_send(value) {
            Ok(()) => Ok(()),
            Err(CbTrySendError::Full(v)) => Err((v, Fail::Full)),
            Err(CbTrySendError::Disconnected(v)) => Err((v, Fail::Closed)),
        };
        if result.is_ok() {
            self.wake_async();
        }
        self.leave();
        result
    }

    #[inline]
    pub(crate) fn recv(&self) -> Result<T, Fail> {
        self.rx.recv().map_err(|_| Fail::Closed)
    }

    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, Fail> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => Fail::Timeout(timeout),
            RecvTimeoutError::Disconnected => Fail::Closed,
        })
    }

    pub(crate) fn try_recv(&self) -> Result<T, Fail> {
        self.rx.try_recv().map_err(|e| match e {
            TryRecvError::Empty => Fail::Empty,
            TryRecvError::Disconnected => Fail::Closed,
        })
    }

    /// Receives without holding a thread: waits on the notifier.
    ///
    /// Cancel-safe: dropping the future before it completes takes nothing
    /// from the queue.
    pub(crate) async fn recv_async(&self) -> Result<T, Fail> {
        loop {
            match self.try_recv() {
                Err(Fail::Empty) => {}
                other => return other,
            }
            let mut notified = pin!(self.notify.notified());
            let _waiting = AsyncWaiter::new(&self.async_waiters);
            notified.as_mut().enable();
            match self.try_recv() {
                Err(Fail::Empty) => {}
                other => return other,
            }
            notified.await;
        }
    }

    /// Closes the queue; `true` if this call closed it.
    pub(crate) fn close(&self) -> bool {
        let prev = self.send.state.fetch_or(CLOSED, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            return false;
        }
        drop(
            self.close_tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        self.try_drop_sender();
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.send.state.load(Ordering::Acquire) & CLOSED != 0
    }

    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }
}

impl<T> Drop for Local<T> {
    fn drop(&mut self) {
        if *self.send.state.get_mut() & DROPPED == 0 {
            // SAFETY: `&mut self`: nobody else uses the sender, and it was
            // not dropped before.
            unsafe { ManuallyDrop::drop(self.send.tx.get_mut()) };
        }
    }
}

/// Counts an async receiver while it waits.
struct AsyncWaiter<'a>(&'a AtomicUsize);

impl<'a> AsyncWaiter<'a> {
    fn new(count: &'a AtomicUsize) -> AsyncWaiter<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        AsyncWaiter(count)
    }
}

impl Drop for AsyncWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn close_waits_for_sends_in_progress_and_drops_once() {
        let q = Arc::new(Local::<Arc<()>>::new(None));
        let token = Arc::new(());
        q.send(token.clone()).unwrap();
        assert!(q.close());
        assert!(!q.close());
        assert_eq!(q.send(token.clone()).unwrap_err().1, Fail::Closed);
        assert_eq!(q.try_recv().map(|_| ()), Ok(()));
        assert_eq!(q.try_recv().map(|_| ()), Err(Fail::Closed));
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn dropping_an_open_queue_frees_its_items() {
        let token = Arc::new(());
        let q = Local::new(Some(4));
        q.send(token.clone()).unwrap();
        drop(q);
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
