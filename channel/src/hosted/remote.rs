//! A child's side of a hosted channel: sends are calls to main; receives
//! take from a local buffer that main fills by pushes, within the credit
//! this side granted.
//!
//! The buffer lock is never held while calling main: with the in-thread
//! transport the call runs main's service on this thread, and main pushes
//! back into this buffer before the call returns.

use crate::sync;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_bytes::Bytes;
use tokio::sync::Notify;

use super::options::{ChannelOptions, DEFAULT_PREFETCH};
use super::protocol::{Reply, Request, SERVICE};
use crate::codec;
use crate::error::{Error, Result};
use crate::local::Fail;
use crate::transport::Transport;

/// While more items wait in the buffer, consumption is acknowledged every
/// this many items: an acknowledgement per item would cost a call per item
/// where calls are synchronous (in-thread), and a frame per item under load.
const ACK_BATCH: u64 = 8;

/// An item main pushed, waiting in this child's buffer.
pub(crate) struct Buffered {
    /// What main settles it by.
    pub(crate) seq: u64,
    pub(crate) bytes: Vec<u8>,
    /// It went to a receiver before.
    pub(crate) redelivered: bool,
}

#[derive(Default)]
struct RemoteState {
    buffer: VecDeque<Buffered>,
    /// Settled as done and not yet reported to main: half-open ranges of
    /// sequence numbers (in order as `recv` takes them, so usually one).
    acked: Vec<(u64, u64)>,
    /// How many sequence numbers `acked` covers.
    acked_count: u64,
    /// Given back and not yet reported to main.
    requeued: Vec<u64>,
    /// Pulls sent whose reply has not come back yet.
    pulls_in_flight: u32,
    /// Whether this process receives (has granted credit).
    receiving: bool,
    /// How many unsettled items this process accepts while it receives.
    prefetch: u32,
    /// The credit last granted (or to grant): `prefetch` while receiving,
    /// 0 once the last handle is gone.
    window: u32,
    /// The acknowledgement deadline asked of main, in milliseconds (0: none).
    ack_wait_ms: u64,
    closed: bool,
    /// Closed, and main holds no more items for this channel.
    drained: bool,
    /// Why main is unreachable, once it is.
    gone: Option<String>,
    /// Bumped by each `Space` notice from main.
    space_epoch: u64,
    async_waiting: usize,
    /// Blocked in `recv`: only they need the condvar (a notify is a syscall).
    sync_waiting: usize,
}

/// A hosted channel seen from a child.
pub(crate) struct Remote {
    name: String,
    capacity: Option<usize>,
    transport: Weak<dyn Transport>,
    state: Mutex<RemoteState>,
    readable: Condvar,
    space: Condvar,
    notify: Notify,
}

/// A pull to send: what to settle, and the credit to grant.
struct Pull {
    acked: Vec<(u64, u64)>,
    requeued: Vec<u64>,
    window: u32,
    ack_wait_ms: u64,
}

impl RemoteState {
    fn record_ack(&mut self, seq: u64) {
        match self.acked.last_mut() {
            Some(last) if last.1 == seq => last.1 += 1,
            _ => self.acked.push((seq, seq + 1)),
        }
        self.acked_count += 1;
    }

    fn take_pull(&mut self) -> Pull {
        self.acked_count = 0;
        Pull {
            acked: std::mem::take(&mut self.acked),
            requeued: std::mem::take(&mut self.requeued),
            window: self.window,
            ack_wait_ms: self.ack_wait_ms,
        }
    }
}

/// A send that could not be done.
pub(crate) enum SendFail {
    Fail(Fail),
    Error(Error),
}

impl Remote {
    pub(crate) fn new(
        name: &str,
        capacity: Option<usize>,
        (closed, drained): (bool, bool),
        transport: Weak<dyn Transport>,
    ) -> Remote {
        Remote {
            name: name.to_owned(),
            capacity,
            transport,
            state: Mutex::new(RemoteState {
                closed,
                drained,
                prefetch: DEFAULT_PREFETCH,
                ..RemoteState::default()
            }),
            readable: Condvar::new(),
            space: Condvar::new(),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RemoteState> {
        sync::lock(&self.state)
    }

    fn transport(&self) -> Result<Arc<dyn Transport>> {
        self.transport
            .upgrade()
            .ok_or_else(|| Error::disconnected("the transport was dropped"))
    }

    fn call(&self, request: &Request<'_>) -> Result<Reply> {
        let frame = codec::encode(request)?;
        let reply = self.transport()?.call(SERVICE, &frame)?;
        codec::decode(&reply)
    }

    fn call_within(&self, request: &Request<'_>, timeout: Duration) -> Result<Reply> {
        let frame = codec::encode(request)?;
        let reply = self.transport()?.call_within(SERVICE, &frame, timeout)?;
        codec::decode(&reply)
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Applies what `options` sets of this process's prefetch and
    /// acknowledgement deadline; main learns it with the next pull.
    pub(crate) fn configure(&self, options: &ChannelOptions) {
        let mut st = self.lock();
        if let Some(prefetch) = options.prefetch_wanted() {
            st.prefetch = prefetch;
            if st.receiving {
                st.window = prefetch;
            }
        }
        if let Some(wait) = options.ack_timeout_wanted() {
            st.ack_wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        }
    }

    /// Sends one encoded item; waits for room when `block`, for at most
    /// `timeout` (if `None`, for ever, each call to main within the
    /// transport's call time-out): main's answers and the wait for room
    /// both count against it.
    pub(crate) fn send_until(
        &self,
        item: &[u8],
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<(), SendFail> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let timed_out = || {
            SendFail::Error(Error::CallTimeout {
                operation: format!("send to channel {:?}", self.name),
                after: timeout.unwrap_or_default(),
            })
        };
        loop {
            let epoch = {
                let st = self.lock();
                if let Some(reason) = &st.gone {
                    return Err(SendFail::Error(Error::disconnected(reason)));
                }
                st.space_epoch
            };
            let request = Request::Send {
                name: &self.name,
                item: Bytes::new(item),
            };
            let called = match (deadline, timeout) {
                (Some(d), Some(t)) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => self.call_within(&request, left).map_err(|e| match e {
                        Error::CallTimeout { .. } => timed_out(),
                        e => SendFail::Error(e),
                    }),
                    None => Err(SendFail::Fail(Fail::Timeout(t))),
                },
                _ => self.call(&request).map_err(SendFail::Error),
            };
            match called? {
                Reply::Done => return Ok(()),
                Reply::Closed => {
                    self.lock().closed = true;
                    return Err(SendFail::Fail(Fail::Closed));
                }
                Reply::Full { .. } if !block => return Err(SendFail::Fail(Fail::Full)),
                Reply::Full { .. } => {
                    let mut st = self.lock();
                    while st.space_epoch == epoch && !st.closed && st.gone.is_none() {
                        st = match deadline {
                            None => sync::wait(&self.space, st),
                            Some(d) => match d.checked_duration_since(Instant::now()) {
                                Some(left) => sync::wait_timeout(&self.space, st, left).0,
                                None => {
                                    let t = timeout.unwrap_or_default();
                                    return Err(SendFail::Fail(Fail::Timeout(t)));
                                }
                            },
                        };
                    }
                }
                other => return Err(SendFail::Error(unexpected(&self.name, &other))),
            }
        }
    }

    /// The pull to send now, if any: on the first receive (`receiving`);
    /// at once for items given back; when no pull is in flight and
    /// something was settled while the buffer is empty, or [`ACK_BATCH`]
    /// items were settled while more wait here (so main learns of it at
    /// once when idle, and under load the settlements accumulate behind
    /// the pull in flight and go as one); and when half the prefetch is
    /// unreported, so credit never starves.
    fn pull_due(&self, st: &mut RemoteState, receiving: bool) -> Option<Pull> {
        if st.gone.is_some() {
            return None;
        }
        let start = receiving && !st.receiving;
        if start {
            st.receiving = true;
            st.window = st.prefetch;
        }
        let unreported = st.acked_count + st.requeued.len() as u64;
        let due = start
            || !st.requeued.is_empty()
            || (unreported > 0
                && st.pulls_in_flight == 0
                && (st.buffer.is_empty() || unreported >= ACK_BATCH))
            || unreported >= u64::from((st.window / 2).max(1));
        if !due {
            return None;
        }
        st.pulls_in_flight += 1;
        Some(st.take_pull())
    }

    fn send_pull(self: &Arc<Self>, pull: Pull) {
        let request = Request::Pull {
            name: &self.name,
            acked: pull.acked,
            requeued: pull.requeued,
            window: pull.window,
            ack_wait_ms: pull.ack_wait_ms,
        };
        let frame = match (self.transport(), codec::encode(&request)) {
            (Ok(transport), Ok(frame)) => (transport, frame),
            _ => {
                self.lock().pulls_in_flight -= 1;
                return;
            }
        };
        let (transport, frame) = frame;
        let me = Arc::downgrade(self);
        transport.call_with(
            SERVICE,
            &frame,
            Box::new(move |reply| {
                let Some(me) = me.upgrade() else {
                    return;
                };
                let next = {
                    let mut st = me.lock();
                    st.pulls_in_flight = st.pulls_in_flight.saturating_sub(1);
                    // What was settled while this pull was in flight.
                    if reply.is_ok() {
                        me.pull_due(&mut st, false)
                    } else {
                        None
                    }
                };
                if let Some(pull) = next {
                    me.send_pull(pull);
                }
                if let Err(e) = reply {
                    tracing::debug!(channel = %me.name, error = %e, "credit not granted");
                    if let Error::Disconnected(reason) = e {
                        me.disconnected(&reason);
                    }
                }
            }),
        );
    }

    /// Settles the delivery `seq`: done with it, or (`requeue`) back to
    /// the head of main's queue for another receiver.
    pub(crate) fn settle(self: &Arc<Self>, seq: u64, requeue: bool) {
        let pull = {
            let mut st = self.lock();
            if requeue {
                st.requeued.push(seq);
            } else {
                st.record_ack(seq);
            }
            self.pull_due(&mut st, false)
        };
        if let Some(pull) = pull {
            self.send_pull(pull);
        }
    }

    /// Reports every settlement to main, gives back what waits in the
    /// buffer and asks for no more, waiting for main to take it: called
    /// when this process's last handle of the channel drops, so a child
    /// that then exits cleanly has nothing delivered again (a settlement
    /// still queued when the process exits would be lost), and a child
    /// that lives on holds nothing another receiver could take.
    pub(crate) fn flush(self: &Arc<Self>) {
        let pull = {
            let mut st = self.lock();
            if st.gone.is_some() || (!st.receiving && st.acked_count == 0) {
                return;
            }
            let back: Vec<u64> = st.buffer.drain(..).map(|b| b.seq).collect();
            st.requeued.extend(back);
            st.receiving = false;
            st.window = 0;
            st.take_pull()
        };
        let request = Request::Pull {
            name: &self.name,
            acked: pull.acked,
            requeued: pull.requeued,
            window: 0,
            ack_wait_ms: pull.ack_wait_ms,
        };
        if let (Ok(transport), Ok(frame)) = (self.transport(), codec::encode(&request))
            && let Err(e) = transport.call(SERVICE, &frame)
        {
            tracing::debug!(channel = %self.name, error = %e, "last settlements not taken");
        }
    }

    /// Takes an item from the buffer (settled at once when `auto_ack`),
    /// or says why not (`Ok(None)`: wait).
    fn take(
        &self,
        st: &mut MutexGuard<'_, RemoteState>,
        auto_ack: bool,
    ) -> Result<Option<Buffered>, Error> {
        if let Some(item) = st.buffer.pop_front() {
            if auto_ack {
                st.record_ack(item.seq);
            }
            return Ok(Some(item));
        }
        if let Some(reason) = &st.gone {
            return Err(Error::disconnected(reason));
        }
        if st.drained {
            return Err(Error::Closed {
                channel: self.name.clone(),
            });
        }
        Ok(None)
    }

    /// Receives, waiting up to `timeout` (forever if `None`).
    pub(crate) fn recv(
        self: &Arc<Self>,
        timeout: Option<Duration>,
        auto_ack: bool,
    ) -> Result<Buffered> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut st = self.lock();
            let taken = self.take(&mut st, auto_ack)?;
            if let Some(pull) = self.pull_due(&mut st, true) {
                drop(st);
                self.send_pull(pull);
                match taken {
                    Some(item) => return Ok(item),
                    None => continue,
                }
            }
            if let Some(item) = taken {
                return Ok(item);
            }
            st.sync_waiting += 1;
            let mut st = match deadline {
                None => sync::wait(&self.readable, st),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        st.sync_waiting -= 1;
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                    sync::wait_timeout(&self.readable, st, left).0
                }
            };
            st.sync_waiting -= 1;
        }
    }

    pub(crate) fn try_recv(self: &Arc<Self>, auto_ack: bool) -> Result<Buffered> {
        let mut st = self.lock();
        let taken = self.take(&mut st, auto_ack)?;
        let pull = self.pull_due(&mut st, true);
        drop(st);
        if let Some(pull) = pull {
            self.send_pull(pull);
            if taken.is_none() {
                // The in-thread transport delivers during the pull.
                let mut st = self.lock();
                if let Some(item) = self.take(&mut st, auto_ack)? {
                    return Ok(item);
                }
            }
        }
        taken.ok_or_else(|| Error::Empty {
            channel: self.name.clone(),
        })
    }

    pub(crate) async fn recv_async(self: &Arc<Self>, auto_ack: bool) -> Result<Buffered> {
        loop {
            let notified = self.notify.notified();
            let waiting = {
                let mut st = self.lock();
                let taken = self.take(&mut st, auto_ack)?;
                let pull = self.pull_due(&mut st, true);
                if let Some(item) = taken {
                    drop(st);
                    if let Some(pull) = pull {
                        self.send_pull(pull);
                    }
                    return Ok(item);
                }
                if let Some(pull) = pull {
                    drop(st);
                    self.send_pull(pull);
                    continue;
                }
                st.async_waiting += 1;
                AsyncWaiter(self)
            };
            notified.await;
            drop(waiting);
        }
    }

    pub(crate) fn close(&self) -> Result<bool> {
        match self.call(&Request::Close { name: &self.name })? {
            Reply::Closing { closed_now } => {
                self.closed();
                Ok(closed_now)
            }
            other => Err(unexpected(&self.name, &other)),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn len(&self) -> usize {
        let local = self.lock().buffer.len();
        match self.call(&Request::Len { name: &self.name }) {
            Ok(Reply::Len(n)) => local + usize::try_from(n).unwrap_or(usize::MAX),
            _ => local,
        }
    }

    /// Items pushed by main, numbered from `first`; those at the indexes
    /// `redelivered` (ascending) went to a receiver before.
    pub(crate) fn deliver<'a>(
        &self,
        first: u64,
        items: impl ExactSizeIterator<Item = &'a [u8]>,
        redelivered: &[u32],
    ) {
        let n = items.len();
        let mut again = redelivered.iter().peekable();
        let mut st = self.lock();
        // Copied to exact size: a transport's receive buffer may be far
        // larger than the item.
        st.buffer.extend((0u32..).zip(items).map(|(i, bytes)| {
            let redelivered = again.next_if_eq(&&i).is_some();
            Buffered {
                seq: first + u64::from(i),
                bytes: bytes.to_vec(),
                redelivered,
            }
        }));
        for _ in 0..n.min(st.sync_waiting) {
            self.readable.notify_one();
        }
        for _ in 0..n.min(st.async_waiting) {
            self.notify.notify_one();
        }
    }

    /// Main closed the channel.
    pub(crate) fn closed(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.space.notify_all();
    }

    /// Main closed the channel and has no more items for it.
    pub(crate) fn drained(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.drained = true;
        self.wake_all(&mut st);
    }

    /// Main has room again.
    pub(crate) fn space(&self) {
        let mut st = self.lock();
        st.space_epoch += 1;
        self.space.notify_all();
    }

    /// Main is gone.
    pub(crate) fn disconnected(&self, reason: &str) {
        let mut st = self.lock();
        // The transport's reason already says main is gone, and why.
        st.gone = Some(reason.to_owned());
        self.wake_all(&mut st);
    }

    fn wake_all(&self, _st: &mut RemoteState) {
        self.readable.notify_all();
        self.space.notify_all();
        self.notify.notify_waiters();
    }
}

fn unexpected(channel: &str, reply: &Reply) -> Error {
    match reply {
        Reply::NoChannel => Error::NoChannel(channel.to_owned()),
        other => Error::Remote(format!(
            "unexpected reply {other:?} for channel {channel:?}"
        )),
    }
}

/// Counts an async receiver while it waits.
struct AsyncWaiter<'a>(&'a Remote);

impl Drop for AsyncWaiter<'_> {
    fn drop(&mut self) {
        self.0.lock().async_waiting -= 1;
    }
}
