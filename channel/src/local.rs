//! The in-process queue behind a channel: crossbeam-channel, plus an explicit
//! close and wake-ups for async receivers.
//!
//! Items move through one crossbeam channel, so the hot paths (`send`,
//! blocking `recv`) are crossbeam's own, with nothing added but one load.
//! What crossbeam lacks is added around it:
//!
//! - **close**: crossbeam disconnects when its last `Sender` is dropped,
//!   atomically with respect to every send (a send either lands before the
//!   disconnection or fails with its value), and wakes every blocked sender
//!   and receiver. The queue owns exactly one `Sender`, never cloned, and
//!   `close` releases it while sends may still be using it; see
//!   [`Local::close`] for why that is sound. Receivers then drain what is
//!   left and see the disconnection, exactly as in crossbeam.
//! - **async receivers** register in a count and wait on a
//!   [`tokio::sync::Notify`]; a send checks the count (one load) and wakes one
//!   of them. No thread waits for an async receiver.

use std::mem::ManuallyDrop;
use std::pin::pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{
    Receiver, RecvTimeoutError, SendError, SendTimeoutError, Sender, TryRecvError,
    TrySendError as CbTrySendError,
};
use tokio::sync::Notify;

use crate::error::Error;

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
    /// The only sender of the crossbeam channel. Never cloned; released
    /// once, by the first [`close`](Local::close), or else on drop.
    tx: ManuallyDrop<Sender<T>>,
    rx: Receiver<T>,
    /// Set by the first `close`: it alone releases `tx`.
    closed: AtomicBool,
    async_waiters: AtomicUsize,
    notify: Notify,
    capacity: Option<usize>,
}

impl<T> Local<T> {
    /// A queue; `capacity` `None` is unbounded, `Some(0)` is taken as 1 and
    /// capacities above [`MAX_CAPACITY`] as that.
    pub(crate) fn new(capacity: Option<usize>) -> Local<T> {
        let capacity = capacity.map(|n| n.clamp(1, MAX_CAPACITY));
        let (tx, rx) = match capacity {
            None => crossbeam_channel::unbounded(),
            Some(n) => crossbeam_channel::bounded(n),
        };
        Local {
            tx: ManuallyDrop::new(tx),
            rx,
            closed: AtomicBool::new(false),
            async_waiters: AtomicUsize::new(0),
            notify: Notify::new(),
            capacity,
        }
    }

    #[inline]
    fn wake_async(&self) {
        if self.async_waiters.load(Ordering::SeqCst) != 0 {
            self.notify.notify_one();
        }
    }

    /// Sends, blocking while a bounded queue is full; a close wakes a
    /// blocked send with its value.
    #[inline]
    pub(crate) fn send(&self, value: T) -> Result<(), (T, Fail)> {
        match self.tx.send(value) {
            Ok(()) => {
                self.wake_async();
                Ok(())
            }
            Err(SendError(v)) => Err((v, Fail::Closed)),
        }
    }

    /// Sends, blocking at most `timeout` while a bounded queue is full.
    pub(crate) fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), (T, Fail)> {
        match self.tx.send_timeout(value, timeout) {
            Ok(()) => {
                self.wake_async();
                Ok(())
            }
            Err(SendTimeoutError::Timeout(v)) => Err((v, Fail::Timeout(timeout))),
            Err(SendTimeoutError::Disconnected(v)) => Err((v, Fail::Closed)),
        }
    }

    /// Sends without blocking.
    pub(crate) fn try_send(&self, value: T) -> Result<(), (T, Fail)> {
        match self.tx.try_send(value) {
            Ok(()) => {
                self.wake_async();
                Ok(())
            }
            Err(CbTrySendError::Full(v)) => Err((v, Fail::Full)),
            Err(CbTrySendError::Disconnected(v)) => Err((v, Fail::Closed)),
        }
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
    ///
    /// Releasing the sender disconnects the crossbeam channel, which fails
    /// every later send and wakes every blocked sender and receiver.
    pub(crate) fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        // SAFETY: this releases the sender's hold on the channel through a
        // bitwise copy, while other threads may still be sending through
        // `self.tx`; that stays sound because:
        // - the copy is dropped in place of `self.tx`, exactly once: the
        //   `closed` swap above admits one caller, and `drop` skips `tx`
        //   once `closed` is set;
        // - dropping a `Sender` touches only the channel it points to:
        //   it lowers the sender count and, at zero, disconnects (marks the
        //   tail, so sends through `self.tx` fail from then on, each with
        //   its value). It frees the channel only if every `Receiver` was
        //   released too, and `self.rx` lives as long as `self`; so the
        //   channel `self.tx` points to outlives every send through it;
        // - `self.tx` is never cloned: a clone would raise the count from
        //   zero again and its drop would free the channel under `self.rx`.
        drop(ManuallyDrop::into_inner(unsafe { ptr::read(&self.tx) }));
        self.notify.notify_waiters();
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
        if !*self.closed.get_mut() {
            // SAFETY: not closed, so the sender was never released; `&mut
            // self` means no send uses it.
            unsafe { ManuallyDrop::drop(&mut self.tx) };
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
    fn close_releases_the_sender_once_and_frees_every_item() {
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
