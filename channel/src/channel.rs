//! [`Channel<T>`]: a named FIFO queue, in-process or hosted by main.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result, SendError, SendTimeoutError, TrySendError};
use crate::hosted::Hosted;
use crate::local::{Fail, Local};
use crate::passive::{Passive, ReceiveLoop};
use crate::stream::Pending;

/// A named FIFO queue of `T`; clones are handles to the same queue.
///
/// Every handle may send and receive; each item is received once, by one
/// receiver, in the order the queue accepted it. A channel is made one of
/// two ways:
///
/// - [`Channel::new`] and [`Channel::bounded`] make an **in-process** queue:
///   items move as they are (no encoding), through crossbeam-channel.
/// - [`Channel::open`] opens a channel **hosted by main** over a
///   [`Transport`](crate::Transport), usable from every process of the
///   application with the same methods.
///
/// It can be read actively ([`recv`](Channel::recv) and its kin) or passively
/// by handlers ([`on_receive`](Channel::on_receive) with a
/// [`ReceiveLoop`]), one way at a time.
///
/// The methods are crossbeam-channel's, and so are the errors where the
/// meaning is the same: [`Error::Empty`], [`Error::Timeout`], a full channel
/// on `try_send`. Where crossbeam says *disconnected* because every handle
/// on one side was dropped, a yuki channel is [`Error::Closed`]: it is closed
/// explicitly with [`close`](Channel::close), since every handle may both
/// send and receive. [`Error::Disconnected`] means main is gone.
///
/// **Byte payloads**: a hosted channel encodes its items with serde, which
/// writes a plain `Vec<u8>` one element at a time (about ten times slower
/// than a copy for large payloads). Carry bytes as
/// `serde_bytes::ByteBuf` (or a field marked `#[serde(with = "serde_bytes")]`)
/// and they are copied whole. An item too large for the transport's frame
/// is refused with [`Error::FrameTooLarge`] while it is encoded, before it
/// costs more memory than the limit.
///
/// ```
/// use std::time::Duration;
/// use yuki_channel::{Channel, Error};
///
/// let jobs = Channel::<u32>::bounded("jobs", 2);
/// let worker = jobs.clone();
/// let t = std::thread::spawn(move || {
///     let mut sum = 0;
///     while let Ok(n) = worker.recv() {
///         sum += n;
///     }
///     sum // recv fails once the channel is closed and drained
/// });
/// for n in 1..=10 {
///     jobs.send(n).unwrap();
/// }
/// jobs.close();
/// assert_eq!(t.join().unwrap(), 55);
/// assert!(jobs.send(11).unwrap_err().is_closed());
/// assert!(matches!(jobs.recv_timeout(Duration::from_millis(1)), Err(Error::Closed { .. })));
/// ```
pub struct Channel<T> {
    shared: Arc<Shared<T>>,
    /// This handle's receive in flight as a `Stream` (each clone has its own).
    pub(crate) pending: Pending<T>,
}

/// In this order (`repr(C)`), so that what every send and receive reads
/// (the loop flag and the queue's own handles) shares few cache lines, and
/// aligned to them, so that no other allocation's writes share those lines.
#[repr(C, align(128))]
pub(crate) struct Shared<T> {
    /// Whether a [`ReceiveLoop`] reads the channel.
    pub(crate) loop_running: AtomicBool,
    pub(crate) queue: Queue<T>,
    pub(crate) name: String,
    pub(crate) passive: Passive<T>,
}

// One per channel; boxing the local queue would add a pointer chase to
// every send and receive.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Queue<T> {
    Local(Local<T>),
    Hosted(Hosted<T>),
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Channel {
            shared: self.shared.clone(),
            pending: Pending::default(),
        }
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flavor = match &self.shared.queue {
            Queue::Local(_) => "local",
            Queue::Hosted(_) => "hosted",
        };
        f.debug_struct("Channel")
            .field("name", &self.shared.name)
            .field("flavor", &flavor)
            .field("item", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Channel<T> {
    /// A new unbounded in-process channel.
    pub fn new(name: impl Into<String>) -> Channel<T> {
        Channel::from_queue(name.into(), Queue::Local(Local::new(None)))
    }

    /// A new in-process channel holding at most `capacity` items: `send`
    /// waits while it is full, `try_send` fails with [`Error::Full`]. A
    /// capacity of 0 is taken as 1 (there are no rendezvous channels), and
    /// one above 2^20 as 2^20, since the slots are allocated up front;
    /// [`capacity`](Channel::capacity) says what was made.
    pub fn bounded(name: impl Into<String>, capacity: usize) -> Channel<T> {
        Channel::from_queue(name.into(), Queue::Local(Local::new(Some(capacity))))
    }

    pub(crate) fn from_queue(name: String, queue: Queue<T>) -> Channel<T> {
        Channel {
            shared: Arc::new(Shared {
                loop_running: AtomicBool::new(false),
                name,
                queue,
                passive: Passive::default(),
            }),
            pending: Pending::default(),
        }
    }

    pub(crate) fn from_shared(shared: Arc<Shared<T>>) -> Channel<T> {
        Channel {
            shared,
            pending: Pending::default(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<T>> {
        &self.shared
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Sends `value`, waiting while a bounded channel is full.
    ///
    /// Fails, handing `value` back, with [`Error::Closed`] once the channel
    /// is closed (a sender waiting on a full channel wakes with it), and for
    /// hosted channels with [`Error::Disconnected`] when main is gone or an
    /// encoding error.
    #[inline]
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        match &self.shared.queue {
            Queue::Local(q) => q.send(value).map_err(|(v, f)| self.send_error(v, f)),
            Queue::Hosted(h) => h.send(&self.shared.name, value),
        }
    }

    /// Sends `value`, waiting at most `timeout` while a bounded channel is
    /// full and, for a hosted channel in a child, for main's answers (as
    /// crossbeam's `send_timeout`).
    ///
    /// Fails, handing `value` back, with [`SendTimeoutError::Timeout`] when
    /// no room came in time ([`Error::Timeout`]) or main did not answer in
    /// time ([`Error::CallTimeout`]: main may be frozen, and the item may
    /// still arrive), and as [`send`](Channel::send) does otherwise.
    ///
    /// ```
    /// use std::time::Duration;
    /// use yuki_channel::Channel;
    ///
    /// let jobs = Channel::<u32>::bounded("jobs", 1);
    /// jobs.send_timeout(1, Duration::from_millis(10)).unwrap();
    /// let full = jobs.send_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(full.is_timeout());
    /// assert_eq!(full.into_inner(), 2);
    /// ```
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        match &self.shared.queue {
            Queue::Local(q) => q
                .send_timeout(value, timeout)
                .map_err(|(v, f)| self.send_error(v, f).into()),
            Queue::Hosted(h) => h.send_timeout(&self.shared.name, value, timeout),
        }
    }

    /// Sends `value` if that needs no wait: fails with
    /// [`TrySendError::Full`] when a bounded channel is at its capacity, and
    /// as [`send`](Channel::send) does otherwise.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        match &self.shared.queue {
            Queue::Local(q) => q.try_send(value).map_err(|(v, f)| match f {
                Fail::Full => TrySendError::Full(v, self.fail(Fail::Full)),
                f => TrySendError::Failed(self.send_error(v, f)),
            }),
            Queue::Hosted(h) => h.try_send(&self.shared.name, value),
        }
    }

    /// Receives the next item, waiting for one.
    ///
    /// The item is the receiver's once this returns: for a hosted channel
    /// it is settled at once, so if the process dies while handling it,
    /// it is gone (at most once after it returns). For work that must
    /// survive a crash, use [`recv_delivery`](Channel::recv_delivery) and
    /// acknowledge when done (see [`Channel::open`] for both guarantees).
    ///
    /// Fails with [`Error::Closed`] once the channel is closed and every item
    /// sent before has been received, [`Error::ReceiveLoopRunning`] while a
    /// [`ReceiveLoop`] reads the channel, and for hosted channels in a child
    /// with [`Error::Disconnected`] when main is gone.
    #[inline]
    pub fn recv(&self) -> Result<T> {
        self.check_active()?;
        match &self.shared.queue {
            Queue::Local(q) => q.recv().map_err(|f| self.fail(f)),
            Queue::Hosted(h) => h.recv(&self.shared.name, None),
        }
    }

    /// Like [`recv`](Channel::recv), giving up with [`Error::Timeout`] after
    /// `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.check_active()?;
        match &self.shared.queue {
            Queue::Local(q) => q.recv_timeout(timeout).map_err(|f| self.fail(f)),
            Queue::Hosted(h) => h.recv(&self.shared.name, Some(timeout)),
        }
    }

    /// Receives an item if one is there now; fails with [`Error::Empty`]
    /// otherwise, and as [`recv`](Channel::recv) does.
    ///
    /// For a hosted channel in a child, "there now" means delivered to this
    /// process: the first receive of any kind asks main to start pushing
    /// items, so a `try_recv` right after [`open`](Channel::open) may find
    /// nothing that a moment later is there.
    pub fn try_recv(&self) -> Result<T> {
        self.check_active()?;
        match &self.shared.queue {
            Queue::Local(q) => q.try_recv().map_err(|f| self.fail(f)),
            Queue::Hosted(h) => h.try_recv(&self.shared.name),
        }
    }

    /// Receives the next item without blocking a thread (tokio or any other
    /// executor): the task sleeps until a send or the close wakes it.
    ///
    /// Errors as [`recv`](Channel::recv). Cancel-safe: dropping the future
    /// before it completes takes no item.
    pub async fn recv_async(&self) -> Result<T> {
        self.check_active()?;
        self.recv_async_passive().await
    }

    /// The receive the dispatcher uses: no passive-mode check.
    pub(crate) async fn recv_async_passive(&self) -> Result<T> {
        match &self.shared.queue {
            Queue::Local(q) => q.recv_async().await.map_err(|f| self.fail(f)),
            Queue::Hosted(h) => h.recv_async(&self.shared.name).await,
        }
    }

    /// Closes the channel: later sends fail with [`Error::Closed`], receivers
    /// get what was sent before and then [`Error::Closed`], and every waiting
    /// sender and receiver wakes. Returns `true` if this call closed it.
    ///
    /// A hosted channel closed from any process is closed for every process.
    pub fn close(&self) -> bool {
        match &self.shared.queue {
            Queue::Local(q) => q.close(),
            Queue::Hosted(h) => h.close(),
        }
    }

    /// Whether the channel has been closed.
    pub fn is_closed(&self) -> bool {
        match &self.shared.queue {
            Queue::Local(q) => q.is_closed(),
            Queue::Hosted(h) => h.is_closed(),
        }
    }

    /// How many items wait in the channel now.
    ///
    /// For a hosted channel in a child, this asks main (one call) and adds
    /// the items already delivered to this process; if main is gone it
    /// counts only the latter.
    pub fn len(&self) -> usize {
        match &self.shared.queue {
            Queue::Local(q) => q.len(),
            Queue::Hosted(h) => h.len(),
        }
    }

    /// Whether no item waits in the channel now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity of a bounded channel; `None` when unbounded.
    pub fn capacity(&self) -> Option<usize> {
        match &self.shared.queue {
            Queue::Local(q) => q.capacity(),
            Queue::Hosted(h) => h.capacity(),
        }
    }

    /// A blocking iterator over received items; it ends when
    /// [`recv`](Channel::recv) fails (the channel is closed and drained, main
    /// is gone, or a receive loop reads the channel).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// An iterator over the items there now; it ends when
    /// [`try_recv`](Channel::try_recv) fails.
    pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.try_recv().ok())
    }

    /// Whether `self` and `other` are handles to the same queue.
    pub fn same_channel(&self, other: &Channel<T>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    #[inline]
    fn check_active(&self) -> Result<()> {
        if self.shared.loop_running.load(Ordering::Acquire) {
            return Err(Error::ReceiveLoopRunning {
                channel: self.shared.name.clone(),
            });
        }
        Ok(())
    }

    fn send_error(&self, value: T, fail: Fail) -> SendError<T> {
        SendError::new(value, self.fail(fail))
    }

    fn fail(&self, fail: Fail) -> Error {
        fail.into_error(&self.shared.name, self.capacity())
    }
}

/// Passive receive: handlers share each item, so `T` must be `Sync`.
impl<T: Send + Sync + 'static> Channel<T> {
    /// Adds a handler for passive receive: once a [`ReceiveLoop`] runs, every
    /// item is handed to every handler whose `filter` accepts it, in the
    /// order the handlers were added. Handlers may be added while the loop
    /// runs.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use yuki_channel::Channel;
    ///
    /// let events = Channel::<u32>::new("events");
    /// let (seen_tx, seen_rx) = mpsc::channel();
    /// events.on_receive(|n| n % 2 == 0, move |n| seen_tx.send(*n).unwrap());
    /// let dispatcher = events.start_receive_loop().unwrap();
    /// for n in 1..=4 {
    ///     events.send(n).unwrap();
    /// }
    /// let timeout = std::time::Duration::from_secs(10);
    /// assert_eq!(seen_rx.recv_timeout(timeout).unwrap(), 2);
    /// assert_eq!(seen_rx.recv_timeout(timeout).unwrap(), 4);
    /// dispatcher.stop();
    /// ```
    pub fn on_receive(
        &self,
        filter: impl Fn(&T) -> bool + Send + Sync + 'static,
        handler: impl Fn(&T) + Send + Sync + 'static,
    ) {
        self.shared.passive.add_sync(filter, handler);
    }

    /// Adds an async handler for passive receive; it gets the item shared as
    /// an `Arc<T>`, since other handlers may get it too. The dispatcher
    /// awaits each handler before the next, so items stay in order; spawn a
    /// task in the handler for work that may run alongside.
    pub fn on_receive_async<F, Fut>(
        &self,
        filter: impl Fn(&T) -> bool + Send + Sync + 'static,
        handler: F,
    ) where
        F: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.shared.passive.add_async(filter, handler);
    }

    /// Starts the passive receive loop on a thread of its own (the seed's
    /// `start_receive_loop`). Async handlers run on a small runtime on that
    /// thread. Fails with [`Error::ReceiveLoopRunning`] if a loop already runs.
    pub fn start_receive_loop(&self) -> Result<ReceiveLoop> {
        ReceiveLoop::start_thread(self.clone())
    }

    /// Starts the passive receive loop as a task on the tokio runtime of
    /// `handle`. Fails with [`Error::ReceiveLoopRunning`] if a loop already runs.
    pub fn spawn_receive_loop(&self, handle: &tokio::runtime::Handle) -> Result<ReceiveLoop> {
        ReceiveLoop::spawn_task(self.clone(), handle)
    }
}
