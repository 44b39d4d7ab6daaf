//! Channels hosted by main and used from every process over a
//! [`Transport`].
//!
//! Main holds each queue (encoded items) in [`host`]; it serves the
//! `yuki.channel` service that children call to open, send, settle and
//! grant credit, close and count. A child's receivers pull with credit
//! ([`remote`]): main pushes up to the child's prefetch of unsettled items
//! ahead, coalesced into one frame per child per turn, numbered so the
//! child can settle each one.
//!
//! Settling: an item `recv` returns is settled at once; a [`Delivery`]
//! when it is acknowledged, requeued or dropped. Settlements travel with
//! the next pull: at once when nothing else is pending, else every 8
//! items or half the prefetch, accumulating behind the pull in flight; a
//! requeue goes at once, and the last handle of a channel in a process
//! flushes them and gives back what its buffer holds. When a child
//! leaves, every item main pushed to it that it had not settled goes back
//! to the head of the queue, marked redelivered, for the other receivers.
//!
//! Order: each receiver gets items in the order main accepted them, except
//! that an item given back goes to the head of the queue, after later
//! items may have gone elsewhere.
//!
//! [`Delivery`]: crate::Delivery

mod host;
mod options;
mod protocol;
mod remote;

pub use options::{ChannelOptions, DEFAULT_PREFETCH};

use crate::sync::lock;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel::{Channel, Queue, Shared};
use crate::codec;
use crate::error::{Error, Result, SendError, SendTimeoutError, TrySendError};
use crate::local::Fail;
use crate::passive::Passive;
use crate::transport::{PeerEvent, PeerId, Transport};

use host::{Host, HostQueue, Queued};
use protocol::{Push, Reply, Request, SERVICE, STREAM};
use remote::{Buffered, Remote, SendFail};

/// The typed face of a hosted queue: encode and decode captured at `open`,
/// where `T`'s serde bounds are known, so `Channel<T>` needs none.
pub(crate) struct Hosted<T> {
    encode: fn(&T, usize) -> Result<Vec<u8>>,
    decode: fn(&[u8]) -> Result<T>,
    side: Side,
    /// A handle keeps its transport alive (the queue parts hold it weakly,
    /// since the transport holds them).
    _transport: Arc<dyn Transport>,
}

enum Side {
    Main(Arc<HostQueue>),
    Child(Arc<Remote>),
}

impl<T> Drop for Hosted<T> {
    /// The last handle of this process is gone: whatever its receivers
    /// consumed is reported now, so it is not delivered again when this
    /// child leaves.
    fn drop(&mut self) {
        if let Side::Child(remote) = &self.side {
            remote.flush();
        }
    }
}

impl<T> Hosted<T> {
    fn send_inner(
        &self,
        name: &str,
        value: T,
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<(), TrySendError<T>> {
        // A value that cannot fit a frame is refused while it is encoded.
        let bytes = match (self.encode)(&value, self._transport.max_frame()) {
            Ok(b) => b,
            Err(e) => return Err(TrySendError::Failed(SendError::new(value, e))),
        };
        let fail = match &self.side {
            Side::Main(q) => match q.send_until(bytes, block, timeout, None) {
                Ok(()) => return Ok(()),
                Err((_, f)) => SendFail::Fail(f),
            },
            Side::Child(r) => match r.send_until(&bytes, block, timeout) {
                Ok(()) => return Ok(()),
                Err(f) => f,
            },
        };
        Err(match fail {
            SendFail::Fail(Fail::Full) => {
                TrySendError::Full(value, Fail::Full.into_error(name, self.capacity()))
            }
            SendFail::Fail(f) => {
                TrySendError::Failed(SendError::new(value, f.into_error(name, self.capacity())))
            }
            SendFail::Error(e) => TrySendError::Failed(SendError::new(value, e)),
        })
    }

    pub(crate) fn send(&self, name: &str, value: T) -> Result<(), SendError<T>> {
        self.send_inner(name, value, true, None)
            .map_err(|e| match e {
                TrySendError::Failed(e) => e,
                // A blocking send does not report a full channel.
                TrySendError::Full(v, e) => SendError::new(v, e),
            })
    }

    pub(crate) fn send_timeout(
        &self,
        name: &str,
        value: T,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        self.send_inner(name, value, true, Some(timeout))
            .map_err(|e| match e {
                TrySendError::Failed(e) => e.into(),
                TrySendError::Full(v, e) => SendTimeoutError::Timeout(v, e),
            })
    }

    pub(crate) fn try_send(&self, name: &str, value: T) -> Result<(), TrySendError<T>> {
        self.send_inner(name, value, false, None)
    }

    fn decoded(&self, name: &str, item: Result<Queued, Fail>) -> Result<T> {
        let item = item.map_err(|f| f.into_error(name, self.capacity()))?;
        (self.decode)(&item.bytes)
    }

    pub(crate) fn recv(&self, name: &str, timeout: Option<Duration>) -> Result<T> {
        match &self.side {
            Side::Main(q) => self.decoded(name, q.recv(timeout)),
            Side::Child(r) => (self.decode)(&r.recv(timeout, true)?.bytes),
        }
    }

    pub(crate) fn try_recv(&self, name: &str) -> Result<T> {
        match &self.side {
            Side::Main(q) => self.decoded(name, q.try_recv()),
            Side::Child(r) => (self.decode)(&r.try_recv(true)?.bytes),
        }
    }

    pub(crate) async fn recv_async(&self, name: &str) -> Result<T> {
        match &self.side {
            Side::Main(q) => self.decoded(name, q.recv_async().await),
            Side::Child(r) => (self.decode)(&r.recv_async(true).await?.bytes),
        }
    }

    /// An unsettled delivery from main's queue. An item that does not
    /// decode is settled as done: given back, it would fail every receiver.
    fn held_in_main(&self, q: &Arc<HostQueue>, name: &str, item: Result<Queued, Fail>) -> Held<T> {
        let item = item.map_err(|f| f.into_error(name, self.capacity()))?;
        let value = (self.decode)(&item.bytes)?;
        Ok((
            value,
            item.redelivered,
            Holder::Main {
                queue: q.clone(),
                bytes: item.bytes,
            },
        ))
    }

    fn held_in_child(&self, r: &Arc<Remote>, item: Result<Buffered>) -> Held<T> {
        let item = item?;
        match (self.decode)(&item.bytes) {
            Ok(value) => Ok((
                value,
                item.redelivered,
                Holder::Child {
                    remote: r.clone(),
                    seq: item.seq,
                },
            )),
            Err(e) => {
                r.settle(item.seq, false);
                Err(e)
            }
        }
    }

    pub(crate) fn recv_held(&self, name: &str, timeout: Option<Duration>) -> Held<T> {
        match &self.side {
            Side::Main(q) => self.held_in_main(q, name, q.recv(timeout)),
            Side::Child(r) => self.held_in_child(r, r.recv(timeout, false)),
        }
    }

    pub(crate) fn try_recv_held(&self, name: &str) -> Held<T> {
        match &self.side {
            Side::Main(q) => self.held_in_main(q, name, q.try_recv()),
            Side::Child(r) => self.held_in_child(r, r.try_recv(false)),
        }
    }

    pub(crate) async fn recv_held_async(&self, name: &str) -> Held<T> {
        match &self.side {
            Side::Main(q) => self.held_in_main(q, name, q.recv_async().await),
            Side::Child(r) => self.held_in_child(r, r.recv_async(false).await),
        }
    }

    pub(crate) fn close(&self) -> bool {
        match &self.side {
            Side::Main(q) => q.close(),
            Side::Child(r) => r.close().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot close a hosted channel");
                false
            }),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match &self.side {
            Side::Main(q) => q.is_closed(),
            Side::Child(r) => r.is_closed(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.side {
            Side::Main(q) => q.len(),
            Side::Child(r) => r.len(),
        }
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        match &self.side {
            Side::Main(q) => q.capacity(),
            Side::Child(r) => r.capacity(),
        }
    }
}

/// A received item not yet settled: its value, whether it was delivered
/// before, and what settles it.
pub(crate) type Held<T> = Result<(T, bool, Holder)>;

/// Where an unsettled delivery of a hosted channel came from, and so how
/// it is settled.
pub(crate) enum Holder {
    /// Taken by a receiver in main: its bytes go back on requeue.
    Main {
        queue: Arc<HostQueue>,
        bytes: Vec<u8>,
    },
    /// Pushed to this child as `seq`.
    Child { remote: Arc<Remote>, seq: u64 },
}

impl Holder {
    /// Done with it.
    pub(crate) fn ack(self) {
        if let Holder::Child { remote, seq } = self {
            remote.settle(seq, false);
        }
    }

    /// Back to the head of the queue, for another receiver.
    pub(crate) fn requeue(self) {
        match self {
            Holder::Main { queue, bytes } => queue.requeue(bytes),
            Holder::Child { remote, seq } => remote.settle(seq, true),
        }
    }
}

/// One opened channel of this process: its typed core (a `Weak<Shared<T>>`,
/// so the transport does not keep its own handles alive), for later opens.
struct Opened {
    shared: Box<dyn Any + Send + Sync>,
    type_name: &'static str,
}

/// The hosted channels of one transport endpoint (a transport extension:
/// every open on one transport shares it, and its one service or push
/// handler).
struct Hosting {
    opened: Mutex<HashMap<String, Opened>>,
    host: Option<Arc<Host>>,
    remotes: Arc<Mutex<HashMap<String, Arc<Remote>>>>,
}

impl Hosting {
    fn attach(transport: &Arc<dyn Transport>) -> Result<Arc<Hosting>> {
        transport.extensions().get_or_try_init(|| {
            let weak = Arc::downgrade(transport);
            if transport.role().is_main() {
                let host = Arc::new_cyclic(|me| Host::new(weak, me.clone()));
                let h = host.clone();
                transport.serve(
                    SERVICE,
                    Arc::new(move |from: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                        h.serve(from, req, reply)
                    }),
                )?;
                let h = Arc::downgrade(&host);
                transport.on_peer_event(Arc::new(move |event| {
                    if let (PeerEvent::Left { peer, .. }, Some(h)) = (event, h.upgrade()) {
                        if *peer != PeerId::MAIN {
                            h.peer_left(*peer);
                        }
                    }
                }));
                Ok(Hosting {
                    opened: Mutex::default(),
                    host: Some(host),
                    remotes: Arc::default(),
                })
            } else {
                let remotes: Arc<Mutex<HashMap<String, Arc<Remote>>>> = Arc::default();
                let r = remotes.clone();
                transport.on_push(STREAM, Arc::new(move |frame| on_push(&r, frame)))?;
                let r = remotes.clone();
                transport.on_peer_event(Arc::new(move |event| {
                    if let PeerEvent::Left { peer, reason } = event {
                        if *peer == PeerId::MAIN {
                            for remote in lock(&r).values() {
                                remote.disconnected(reason);
                            }
                        }
                    }
                }));
                Ok(Hosting {
                    opened: Mutex::default(),
                    host: None,
                    remotes,
                })
            }
        })
    }
}

/// A frame pushed by main to this child.
fn on_push(remotes: &Mutex<HashMap<String, Arc<Remote>>>, frame: &[u8]) {
    let push = match codec::decode_borrowed::<Push<'_>>(frame) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a malformed channel push from main");
            return;
        }
    };
    let name = match &push {
        Push::Items { name, .. }
        | Push::Closed { name }
        | Push::Drained { name }
        | Push::Space { name } => *name,
    };
    let Some(remote) = lock(remotes).get(name).cloned() else {
        tracing::debug!(
            channel = name,
            "push for a channel this process did not open"
        );
        return;
    };
    match push {
        Push::Items {
            first,
            items,
            redelivered,
            ..
        } => remote.deliver(first, items.into_iter().map(|b| &b[..]), &redelivered),
        Push::Closed { .. } => remote.closed(),
        Push::Drained { .. } => remote.drained(),
        Push::Space { .. } => remote.space(),
    }
}

/// Makes `transport` ready for hosted channels without opening one: in main
/// it serves the service children call (so children may open channels before
/// main opens any), in a child it installs the push handler. [`Channel::open`]
/// does this on first use; calling it again does nothing.
///
/// ```
/// use std::sync::Arc;
/// use yuki_channel::{Channel, InThreadTransport, Transport};
///
/// let network = InThreadTransport::main();
/// let main: Arc<dyn Transport> = network.clone();
/// yuki_channel::host_channels(&main).unwrap();
/// let child: Arc<dyn Transport> = network.connect("worker").unwrap();
/// let ch = Channel::<u8>::open(&child, "early").unwrap();
/// ch.send(1).unwrap();
/// assert_eq!(Channel::<u8>::open(&main, "early").unwrap().recv().unwrap(), 1);
/// ```
pub fn host_channels(transport: &Arc<dyn Transport>) -> Result<()> {
    Hosting::attach(transport).map(|_| ())
}

fn encode_fn<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>> {
    codec::encode_limited(value, max)
}

fn decode_fn<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    codec::decode(bytes)
}

impl<T> Channel<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens the channel `name` hosted by main, from main or from a child:
    /// the same `Channel<T>` either way, with every method working in every
    /// process. The first open (in any process) creates it unbounded; later
    /// opens join it whatever its capacity.
    ///
    /// Opening a name again on one transport returns a handle to the same
    /// channel (same handlers, same receive loop); opening it with another
    /// `T` fails with [`Error::WrongType`]. In a child, fails with
    /// [`Error::Disconnected`] when main is gone.
    ///
    /// Items are encoded with [`codec`] when they cross the seam; in main
    /// they are held encoded too, since any process may receive them. An
    /// item too large to be pushed to a child is refused with
    /// [`Error::FrameTooLarge`].
    ///
    /// A child opening a channel with another `T` than the one main
    /// recorded for the name (that of the first open in any process) fails
    /// with [`Error::ChannelTypeMismatch`], naming both types: the names
    /// are `std::any::type_name`'s, the same in every process of one
    /// build, so main and children must be built from the same code.
    ///
    /// Receiving in a child: from its first receive on, a child lets main
    /// push up to its prefetch of unsettled items ahead of its receivers
    /// ([`DEFAULT_PREFETCH`], 1, unless opened with
    /// [`open_with`](Channel::open_with)). Items pushed ahead belong to
    /// that child: its receivers get them, even after a `recv_timeout`
    /// gave up; its last handle of the channel gives them back.
    ///
    /// What each receive guarantees:
    ///
    /// - [`recv`](Channel::recv) and its kin settle the item as they return
    ///   it: **at most once after it returns**. If the process dies while
    ///   handling it, the item is gone. Only an item whose settlement had
    ///   not reached main when the child crashed (see the module notes:
    ///   up to 8 items, or half the prefetch) is delivered again.
    /// - [`recv_delivery`](Channel::recv_delivery) and its kin hand out a
    ///   [`Delivery`](crate::Delivery) that stays the receiver's until it
    ///   is acknowledged: **at least once**. A delivery requeued, dropped
    ///   unsettled, or held by a child that ends (exits, crashes, is
    ///   killed, or for the in-thread transport drops its last handle)
    ///   goes back to the head of the queue, and its next receiver sees it
    ///   marked [`redelivered`](crate::Delivery::redelivered).
    ///
    /// Items pushed to a child but not received before it left go back
    /// too, so a receiver that already got later items may get them after
    /// those. When main leaves, receivers blocked in the child wake with
    /// [`Error::Disconnected`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use yuki_channel::{Channel, InThreadTransport, Transport};
    ///
    /// let network = InThreadTransport::main();
    /// let child: Arc<dyn Transport> = network.connect("worker").unwrap();
    /// let main: Arc<dyn Transport> = network;
    /// let in_main = Channel::<String>::open(&main, "tasks").unwrap();
    /// let in_child = Channel::<String>::open(&child, "tasks").unwrap();
    /// in_child.send("from the child".to_string()).unwrap();
    /// assert_eq!(in_main.recv().unwrap(), "from the child");
    /// in_main.send("from main".to_string()).unwrap();
    /// assert_eq!(in_child.recv().unwrap(), "from main");
    /// ```
    pub fn open(transport: &Arc<dyn Transport>, name: &str) -> Result<Channel<T>> {
        Channel::open_inner(transport, name, &ChannelOptions::new())
    }

    /// Like [`open`](Channel::open), with [`ChannelOptions`]: a capacity
    /// for a channel this open creates (as
    /// [`open_bounded`](Channel::open_bounded)) and this process's
    /// prefetch, how many unsettled items main may push ahead to its
    /// receivers (see [`ChannelOptions::prefetch`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use yuki_channel::{Channel, ChannelOptions, InThreadTransport, Transport};
    ///
    /// let network = InThreadTransport::main();
    /// let child: Arc<dyn Transport> = network.connect("worker").unwrap();
    /// let main: Arc<dyn Transport> = network;
    /// let jobs = Channel::<u32>::open(&main, "jobs").unwrap();
    /// let options = ChannelOptions::new().prefetch(16);
    /// let worker = Channel::<u32>::open_with(&child, "jobs", &options).unwrap();
    /// jobs.send(7).unwrap();
    /// let job = worker.recv_delivery().unwrap();
    /// assert_eq!(*job, 7);
    /// job.ack();
    /// ```
    pub fn open_with(
        transport: &Arc<dyn Transport>,
        name: &str,
        options: &ChannelOptions,
    ) -> Result<Channel<T>> {
        Channel::open_inner(transport, name, options)
    }

    /// Like [`open`](Channel::open), for a bounded channel: the first open
    /// creates it with `capacity`; opening an existing channel whose
    /// capacity differs fails with [`Error::CapacityMismatch`].
    ///
    /// The capacity counts the items queued in main. Items already pushed
    /// to a child's receivers (at most its prefetch per child) no longer
    /// count. A child's `send` into a full channel waits until main reports
    /// room (no polling); `try_send` fails with [`TrySendError::Full`].
    pub fn open_bounded(
        transport: &Arc<dyn Transport>,
        name: &str,
        capacity: usize,
    ) -> Result<Channel<T>> {
        Channel::open_inner(transport, name, &ChannelOptions::new().capacity(capacity))
    }

    fn open_inner(
        transport: &Arc<dyn Transport>,
        name: &str,
        options: &ChannelOptions,
    ) -> Result<Channel<T>> {
        let capacity = options.capacity_wanted();
        let hosting = Hosting::attach(transport)?;
        let mut opened = lock(&hosting.opened);
        if let Some(existing) = opened.get(name) {
            let weak = existing
                .shared
                .downcast_ref::<Weak<Shared<T>>>()
                .ok_or_else(|| Error::WrongType {
                    channel: name.to_owned(),
                    expected: std::any::type_name::<T>(),
                    actual: existing.type_name,
                })?;
            if let Some(shared) = weak.upgrade() {
                let channel = Channel::from_shared(shared);
                if capacity.is_some() && channel.capacity() != capacity {
                    return Err(Error::CapacityMismatch {
                        channel: name.to_owned(),
                        requested: capacity,
                        actual: channel.capacity(),
                    });
                }
                if let Queue::Hosted(h) = &channel.shared().queue
                    && let Side::Child(remote) = &h.side
                {
                    remote.configure(options);
                }
                return Ok(channel);
            }
        }
        let side = match &hosting.host {
            Some(host) => {
                let q = host.queue(name, capacity);
                if capacity.is_some() && q.capacity() != capacity {
                    return Err(Error::CapacityMismatch {
                        channel: name.to_owned(),
                        requested: capacity,
                        actual: q.capacity(),
                    });
                }
                q.check_type(std::any::type_name::<T>()).map_err(|actual| {
                    Error::ChannelTypeMismatch {
                        channel: name.to_owned(),
                        requested: std::any::type_name::<T>(),
                        actual,
                    }
                })?;
                Side::Main(q)
            }
            None => Side::Child(open_remote(
                transport,
                &hosting,
                name,
                options,
                std::any::type_name::<T>(),
            )?),
        };
        let hosted = Hosted {
            encode: encode_fn::<T>,
            decode: decode_fn::<T>,
            side,
            _transport: transport.clone(),
        };
        let shared = Arc::new(Shared {
            loop_running: std::sync::atomic::AtomicBool::new(false),
            name: name.to_owned(),
            queue: Queue::Hosted(hosted),
            passive: Passive::default(),
        });
        opened.insert(
            name.to_owned(),
            Opened {
                shared: Box::new(Arc::downgrade(&shared)),
                type_name: std::any::type_name::<T>(),
            },
        );
        Ok(Channel::from_shared(shared))
    }
}

fn open_remote(
    transport: &Arc<dyn Transport>,
    hosting: &Hosting,
    name: &str,
    options: &ChannelOptions,
    item_type: &'static str,
) -> Result<Arc<Remote>> {
    let capacity = options.capacity_wanted();
    // All handles were dropped: the remote part, with the deliveries it
    // still holds, lives on (its item type was checked when it was made).
    if let Some(remote) = lock(&hosting.remotes).get(name) {
        if capacity.is_some() && remote.capacity() != capacity {
            return Err(Error::CapacityMismatch {
                channel: name.to_owned(),
                requested: capacity,
                actual: remote.capacity(),
            });
        }
        remote.configure(options);
        return Ok(remote.clone());
    }
    let request = Request::Open {
        name,
        capacity: capacity.map(|c| c as u64),
        item_type,
    };
    let reply = transport.call(SERVICE, &codec::encode(&request)?)?;
    let (capacity, state) = match codec::decode::<Reply>(&reply)? {
        Reply::Opened {
            capacity,
            closed,
            drained,
        } => (capacity, (closed, drained)),
        Reply::CapacityMismatch { actual } => {
            return Err(Error::CapacityMismatch {
                channel: name.to_owned(),
                requested: capacity,
                actual: actual.map(|c| usize::try_from(c).unwrap_or(usize::MAX)),
            });
        }
        Reply::WrongType { actual } => {
            return Err(Error::ChannelTypeMismatch {
                channel: name.to_owned(),
                requested: item_type,
                actual,
            });
        }
        other => {
            return Err(Error::Remote(format!(
                "unexpected reply {other:?} to opening channel {name:?}"
            )));
        }
    };
    let capacity = capacity.map(|c| usize::try_from(c).unwrap_or(usize::MAX));
    let weak: Weak<dyn Transport> = Arc::downgrade(transport);
    let remote = Arc::new(Remote::new(name, capacity, state, weak));
    remote.configure(options);
    lock(&hosting.remotes).insert(name.to_owned(), remote.clone());
    Ok(remote)
}
