//! A child's side of a hosted channel: sends are calls to main; receives
//! take from a local buffer that main fills by pushes, within the credit
//! this side granted.
//!
//! The buffer lock is never held while calling main: with the in-thread
//! transport the call runs main's service on this thread, and main pushes
//! back into this buffer before the call returns.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_bytes::Bytes;
use tokio::sync::Notify;

use super::protocol::{Reply, Request, SERVICE, WINDOW};
use crate::codec;
use crate::error::{Error, Result};
use crate::local::Fail;
use crate::transport::Transport;

/// While more items wait in the buffer, consumption is acknowledged every
/// this many items: an acknowledgement per item would cost a call per item
/// where calls are synchronous (in-thread), and a frame per item under load.
const ACK_BATCH: u64 = 8;

#[derive(Default)]
struct RemoteState {
    buffer: VecDeque<Vec<u8>>,
    /// Items taken from the buffer so far.
    consumed: u64,
    /// `consumed` as last reported to main.
    reported: u64,
    /// Pulls sent whose reply has not come back yet.
    pulls_in_flight: u32,
    /// Whether this process receives (has granted credit).
    receiving: bool,
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
                ..RemoteState::default()
            }),
            readable: Condvar::new(),
            space: Condvar::new(),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RemoteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
                            None => self.space.wait(st).unwrap_or_else(|p| p.into_inner()),
                            Some(d) => match d.checked_duration_since(Instant::now()) {
                                Some(left) => {
                                    self.space
                                        .wait_timeout(st, left)
                                        .unwrap_or_else(|p| p.into_inner())
                                        .0
                                }
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

    /// The pull to send now, if any: on the first receive; when no pull is
    /// in flight and an item was consumed that emptied the buffer, or
    /// [`ACK_BATCH`] items were consumed while more wait here (so main
    /// learns of consumption at once when idle, and under load the counts
    /// accumulate behind the pull in flight and go as one); and when half
    /// the window is unreported, so credit never starves.
    fn pull_due(&self, st: &mut RemoteState) -> Option<u64> {
        let unreported = st.consumed - st.reported;
        let due = !st.receiving
            || (unreported > 0
                && st.pulls_in_flight == 0
                && (st.buffer.is_empty() || unreported >= ACK_BATCH))
            || unreported >= u64::from(WINDOW / 2);
        if !due || st.gone.is_some() {
            return None;
        }
        st.receiving = true;
        st.reported = st.consumed;
        st.pulls_in_flight += 1;
        Some(st.consumed)
    }

    fn send_pull(self: &Arc<Self>, consumed: u64) {
        let request = Request::Pull {
            name: &self.name,
            consumed,
            window: WINDOW,
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
                    // What was consumed while this pull was in flight.
                    if reply.is_ok() {
                        me.pull_due(&mut st)
                    } else {
                        None
                    }
                };
                if let Some(consumed) = next {
                    me.send_pull(consumed);
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

    /// Reports every consumed item to main and asks for no more, waiting
    /// for main to take it: called when this process's last handle of the
    /// channel drops, so a child that then exits cleanly has nothing
    /// delivered again (an acknowledgement still queued when the process
    /// exits would be lost).
    pub(crate) fn flush_acks(self: &Arc<Self>) {
        let consumed = {
            let mut st = self.lock();
            if st.consumed == st.reported || st.gone.is_some() {
                return;
            }
            st.reported = st.consumed;
            st.consumed
        };
        let request = Request::Pull {
            name: &self.name,
            consumed,
            window: 0,
        };
        if let (Ok(transport), Ok(frame)) = (self.transport(), codec::encode(&request))
            && let Err(e) = transport.call(SERVICE, &frame)
        {
            tracing::debug!(channel = %self.name, error = %e, "last acknowledgement not taken");
        }
    }

    /// Takes an item from the buffer, or says why not (`Ok(None)`: wait).
    fn take(&self, st: &mut MutexGuard<'_, RemoteState>) -> Result<Option<Vec<u8>>, Error> {
        if let Some(item) = st.buffer.pop_front() {
            st.consumed += 1;
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
    pub(crate) fn recv(self: &Arc<Self>, timeout: Option<Duration>) -> Result<Vec<u8>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut st = self.lock();
            let taken = self.take(&mut st)?;
            if let Some(pull) = self.pull_due(&mut st) {
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
                None => self.readable.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        st.sync_waiting -= 1;
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                    self.readable
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            st.sync_waiting -= 1;
        }
    }

    pub(crate) fn try_recv(self: &Arc<Self>) -> Result<Vec<u8>> {
        let mut st = self.lock();
        let taken = self.take(&mut st)?;
        let pull = self.pull_due(&mut st);
        drop(st);
        if let Some(pull) = pull {
            self.send_pull(pull);
            if taken.is_none() {
                // The in-thread transport delivers during the pull.
                let mut st = self.lock();
                if let Some(item) = self.take(&mut st)? {
                    return Ok(item);
                }
            }
        }
        taken.ok_or_else(|| Error::Empty {
            channel: self.name.clone(),
        })
    }

    pub(crate) async fn recv_async(self: &Arc<Self>) -> Result<Vec<u8>> {
        loop {
            let notified = self.notify.notified();
            let waiting = {
                let mut st = self.lock();
                let taken = self.take(&mut st)?;
                let pull = self.pull_due(&mut st);
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

    /// Items pushed by main.
    pub(crate) fn deliver<'a>(&self, items: impl ExactSizeIterator<Item = &'a [u8]>) {
        let n = items.len();
        let mut st = self.lock();
        // Copied to exact size: a transport's receive buffer may be far
        // larger than the item.
        st.buffer.extend(items.map(<[u8]>::to_vec));
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
