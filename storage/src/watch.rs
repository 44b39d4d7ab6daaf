//! Change notifications: what a watcher receives, and main's list of watchers.
//!
//! Main tells every watcher whose prefix matches about each change while it
//! still holds the lock of the key's shard, so each watcher sees the changes
//! in exactly the order main applied them. Watchers in main get them through
//! a local queue; watchers in a child through the transport's push stream,
//! then the same kind of queue in the child.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use yuki_channel::sync;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use yuki_channel::{PeerId, Transport, codec};

use crate::error::{Error, Result};
use crate::protocol::{Pushed, WATCH_STREAM};
use crate::value;

/// One change of one key, as main applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key that changed.
    pub key: String,
    /// Its new encoded value, or `None` when it was deleted, cleared or expired.
    pub value: Option<Vec<u8>>,
}

impl Change {
    /// Decodes the new value as a `V` (`None` for a deletion).
    pub fn decode<V: DeserializeOwned>(&self) -> Result<Option<V>> {
        self.value
            .as_deref()
            .map(|b| value::decode(&self.key, b))
            .transpose()
    }

    /// Whether the key was removed (deleted, cleared or expired).
    pub fn is_removal(&self) -> bool {
        self.value.is_none()
    }
}

pub(crate) enum Event {
    Change(Change),
    /// Wakes a blocked receiver after [`WatchQueue::close`].
    End,
}

/// The queue between whoever delivers changes and one [`Watch`].
pub(crate) struct WatchQueue {
    tx: Sender<Event>,
    notify: Notify,
    closed: AtomicBool,
    end: Mutex<Option<Error>>,
}

impl WatchQueue {
    pub(crate) fn new(capacity: usize) -> (Arc<WatchQueue>, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let inbox = WatchQueue {
            tx,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            end: Mutex::new(None),
        };
        (Arc::new(inbox), rx)
    }

    /// Queues a change; `false` once the watcher is closed or gone.
    pub(crate) fn deliver(&self, change: Change) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.tx.try_send(Event::Change(change)) {
            Ok(()) => {
                self.notify.notify_one();
                true
            }
            Err(TrySendError::Full(_)) => {
                self.close(Error::WatchLagged);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Ends the watch with `why`, after the changes already queued.
    pub(crate) fn close(&self, why: Error) {
        {
            let mut end = sync::lock(&self.end);
            if end.is_some() {
                return;
            }
            *end = Some(why);
        }
        self.closed.store(true, Ordering::Release);
        // When the queue is full the receiver is not blocked, so a lost End is fine.
        let _ = self.tx.try_send(Event::End);
        self.notify.notify_one();
    }

    fn end(&self) -> Option<Error> {
        sync::lock(&self.end).clone()
    }
}

/// A stream of the changes to the keys under one prefix, in the order main
/// applied them, from [`Store::watch`](crate::Store::watch).
///
/// Read it blocking ([`Watch::recv`], the [`Iterator`]), with a time-out,
/// without waiting ([`Watch::try_recv`], [`Error::Empty`] when nothing is
/// queued) or from async code ([`Watch::recv_async`], the
/// `futures_core::Stream`): the same shapes as `Channel` and
/// `Subscription`, every receive through `&self`. It ends with an
/// error: [`Error::WatchLagged`] when the watcher fell more than its buffer
/// behind, [`Error::Disconnected`] when main is gone. Dropping it stops the
/// notifications.
pub struct Watch {
    inbox: Arc<WatchQueue>,
    rx: Receiver<Event>,
    finished: OnceLock<Error>,
    // In mutexes only so that a watch is `Sync` like the other receivers;
    // they are reached through `&mut self`, without locking.
    waiting: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    cancel: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Watch {
    pub(crate) fn new(
        inbox: Arc<WatchQueue>,
        rx: Receiver<Event>,
        cancel: Box<dyn FnOnce() + Send>,
    ) -> Watch {
        Watch {
            inbox,
            rx,
            finished: OnceLock::new(),
            waiting: Mutex::new(None),
            cancel: Mutex::new(Some(cancel)),
        }
    }

    /// Waits for the next change.
    pub fn recv(&self) -> Result<Change> {
        loop {
            if let Some(r) = self.try_next() {
                return r;
            }
            match self.rx.recv() {
                Ok(event) => {
                    if let Some(r) = self.take(event) {
                        return r;
                    }
                }
                Err(_) => return self.finish(Error::Disconnected("the watch was closed".into())),
            }
        }
    }

    /// Waits at most `timeout` for the next change ([`Error::Timeout`] if none came).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Change> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.try_next() {
                return r;
            }
            match self.rx.recv_deadline(deadline) {
                Ok(event) => {
                    if let Some(r) = self.take(event) {
                        return r;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(Error::Timeout(timeout)),
                Err(RecvTimeoutError::Disconnected) => {
                    return self.finish(Error::Disconnected("the watch was closed".into()));
                }
            }
        }
    }

    /// The next change if one is queued; [`Error::Empty`] if none is.
    ///
    /// ```
    /// use yuki_storage::{Error, Store};
    /// let store = Store::local();
    /// let watch = store.watch("k")?;
    /// assert!(matches!(watch.try_recv(), Err(Error::Empty)));
    /// store.set("k", &1u8)?;
    /// assert_eq!(watch.try_recv()?.key, "k");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_recv(&self) -> Result<Change> {
        self.try_next().unwrap_or(Err(Error::Empty))
    }

    /// Waits for the next change without blocking a thread. Cancel-safe:
    /// dropping the future before it completes takes no change.
    pub async fn recv_async(&self) -> Result<Change> {
        loop {
            if let Some(r) = self.try_next() {
                return r;
            }
            self.inbox.notify.notified().await;
        }
    }

    fn try_next(&self) -> Option<Result<Change>> {
        if let Some(e) = self.finished.get() {
            return Some(Err(e.clone()));
        }
        match self.rx.try_recv() {
            Ok(event) => self.take(event),
            Err(TryRecvError::Empty) => self.inbox.end().map(|e| self.finish(e)),
            Err(TryRecvError::Disconnected) => {
                Some(self.finish(Error::Disconnected("the watch was closed".into())))
            }
        }
    }

    fn take(&self, event: Event) -> Option<Result<Change>> {
        match event {
            Event::Change(c) => Some(Ok(c)),
            // More changes may still be queued ahead of the end only if the
            // End raced them; drain those first.
            Event::End => match self.rx.try_recv() {
                Ok(Event::Change(c)) => Some(Ok(c)),
                _ => self.inbox.end().map(|e| self.finish(e)),
            },
        }
    }

    fn finish<T>(&self, e: Error) -> Result<T> {
        // The first end is the one every later receive repeats.
        Err(self.finished.get_or_init(|| e).clone())
    }
}

impl Iterator for Watch {
    type Item = Result<Change>;

    /// Blocks for the next change; the end of the watch is one `Err`, then `None`.
    fn next(&mut self) -> Option<Result<Change>> {
        if self.finished.get().is_some() {
            return None;
        }
        Some(self.recv())
    }
}

impl futures_core::Stream for Watch {
    type Item = Result<Change>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Change>>> {
        let this = &mut *self;
        loop {
            if this.finished.get().is_some() {
                return Poll::Ready(None);
            }
            let next = this.try_next();
            let waiting = sync::get_mut(&mut this.waiting);
            if let Some(r) = next {
                *waiting = None;
                return Poll::Ready(Some(r));
            }
            let inbox = this.inbox.clone();
            let wait = waiting
                .get_or_insert_with(|| Box::pin(async move { inbox.notify.notified().await }));
            match wait.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => *waiting = None,
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let cancel = sync::get_mut(&mut self.cancel);
        if let Some(cancel) = cancel.take() {
            cancel();
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("queued", &self.rx.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// Main's list of watchers, local and in children.
#[derive(Default)]
pub(crate) struct Watchers {
    list: RwLock<Vec<Watcher>>,
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Where changes for children are pushed (set when attached to a transport).
    pusher: OnceLock<Weak<dyn Transport>>,
}

struct Watcher {
    prefix: Box<str>,
    target: Target,
}

enum Target {
    Local {
        id: u64,
        inbox: Arc<WatchQueue>,
    },
    Remote {
        peer: PeerId,
        id: u64,
        /// A push failed: the child must be told, then nothing more is sent.
        lost: AtomicBool,
        gone: AtomicBool,
    },
}

impl Watchers {
    pub(crate) fn set_pusher(&self, transport: Weak<dyn Transport>) {
        let _ = self.pusher.set(transport);
    }

    /// Whether anyone watches: the write path checks this before anything else.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    fn add(&self, prefix: &str, target: Target) {
        let mut list = sync::write(&self.list);
        // Forget watchers in children that can no longer be reached (one
        // registered by a child that left at that very moment, say).
        list.retain(
            |w| !matches!(&w.target, Target::Remote { gone, .. } if gone.load(Ordering::Acquire)),
        );
        list.push(Watcher {
            prefix: prefix.into(),
            target,
        });
        self.active.store(list.len(), Ordering::Release);
    }

    fn remove(&self, mut matches: impl FnMut(&Target) -> bool) {
        let mut list = sync::write(&self.list);
        list.retain(|w| !matches(&w.target));
        self.active.store(list.len(), Ordering::Release);
    }

    pub(crate) fn add_local(&self, prefix: &str, inbox: Arc<WatchQueue>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.add(prefix, Target::Local { id, inbox });
        id
    }

    pub(crate) fn remove_local(&self, id: u64) {
        self.remove(|t| matches!(t, Target::Local { id: i, .. } if *i == id));
    }

    pub(crate) fn add_remote(&self, peer: PeerId, id: u64, prefix: &str) {
        let target = Target::Remote {
            peer,
            id,
            lost: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        };
        self.add(prefix, target);
    }

    pub(crate) fn remove_remote(&self, peer: PeerId, id: u64) {
        self.remove(
            |t| matches!(t, Target::Remote { peer: p, id: i, .. } if *p == peer && *i == id),
        );
    }

    /// Drops every watcher of a child that left.
    pub(crate) fn remove_peer(&self, peer: PeerId) {
        self.remove(|t| matches!(t, Target::Remote { peer: p, .. } if *p == peer));
    }

    /// Tells every matching watcher that `key` now holds `value` (`None`:
    /// removed). Called with the key's shard locked, so the order is main's.
    pub(crate) fn notify(&self, key: &str, value: Option<&[u8]>) {
        let list = sync::read(&self.list);
        let mut pusher = None;
        for w in list.iter().filter(|w| key.starts_with(&*w.prefix)) {
            match &w.target {
                Target::Local { inbox, .. } => {
                    inbox.deliver(Change {
                        key: key.to_owned(),
                        value: value.map(<[u8]>::to_vec),
                    });
                }
                Target::Remote {
                    peer,
                    id,
                    lost,
                    gone,
                } => {
                    if gone.load(Ordering::Acquire) {
                        continue;
                    }
                    let Some(transport) = pusher
                        .get_or_insert_with(|| self.pusher.get().and_then(Weak::upgrade))
                        .as_ref()
                    else {
                        continue;
                    };
                    push_change(&**transport, *peer, *id, key, value, lost, gone);
                }
            }
        }
    }
}

impl Drop for Watchers {
    /// The store is gone: its local watches end instead of waiting forever.
    fn drop(&mut self) {
        let list = sync::get_mut_rw(&mut self.list);
        for w in list.iter() {
            if let Target::Local { inbox, .. } = &w.target {
                inbox.close(Error::Disconnected("the store was dropped".into()));
            }
        }
    }
}

fn push_change(
    transport: &dyn Transport,
    peer: PeerId,
    id: u64,
    key: &str,
    value: Option<&[u8]>,
    lost: &AtomicBool,
    gone: &AtomicBool,
) {
    let frame = if lost.load(Ordering::Acquire) {
        Pushed::Lagged { id }
    } else {
        Pushed::Change {
            id,
            key,
            value: value.map(serde_bytes::Bytes::new),
        }
    };
    let Ok(bytes) = codec::encode(&frame) else {
        return;
    };
    match transport.push(peer, WATCH_STREAM, &bytes) {
        Ok(()) => {
            if matches!(frame, Pushed::Lagged { .. }) {
                gone.store(true, Ordering::Release);
            }
        }
        Err(yuki_channel::Error::PeerBacklogged(_)) => {
            tracing::debug!(%peer, id, "watcher in a child fell behind; closing it");
            lost.store(true, Ordering::Release);
        }
        Err(e) => {
            tracing::debug!(%peer, id, error = %e, "watcher in a child is unreachable");
            gone.store(true, Ordering::Release);
        }
    }
}
