//! Main's side of hosted channels: the queues, the service children call,
//! and the credit-window pump that pushes items to children.
//!
//! Each queue is one lock around the items, the children's credit and the
//! counts of main's own waiting receivers. Everything that changes what can
//! be delivered (a send, a pull, a receiver that stops waiting, a child that
//! leaves) ends with [`HostQueue::pump`] under that lock, so pushes to one
//! child leave in queue order. Pushing under the lock is allowed because a
//! child's push handler only touches the child's own state.

use crate::sync::{self, lock};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_bytes::Bytes;
use tokio::sync::Notify;

use super::protocol::{Push, Reply, Request, STREAM};
use crate::codec;
use crate::error::{Error, Result};
use crate::local::Fail;
use crate::transport::{PeerId, Transport};

/// All hosted queues of one main transport.
pub(crate) struct Host {
    transport: Weak<dyn Transport>,
    queues: Mutex<HashMap<String, Arc<HostQueue>>>,
    me: Weak<Host>,
    /// The shortest acknowledgement deadline a child asked for, in
    /// milliseconds (0: none yet, and no thread watches deadlines).
    shortest_wait_ms: AtomicU64,
}

impl Host {
    pub(crate) fn new(transport: Weak<dyn Transport>, me: Weak<Host>) -> Host {
        Host {
            transport,
            queues: Mutex::default(),
            me,
            shortest_wait_ms: AtomicU64::new(0),
        }
    }

    /// Starts the thread that takes back items held past their deadline,
    /// once a child asks for a deadline; it ends with the host.
    fn watch_deadlines(&self, wait_ms: u64) {
        let shortest = &self.shortest_wait_ms;
        if shortest
            .compare_exchange(0, wait_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Watched already: at most shorten the check period.
            shortest.fetch_min(wait_ms, Ordering::AcqRel);
            return;
        }
        let host = self.me.clone();
        let started = std::thread::Builder::new()
            .name("yuki-ack-deadlines".into())
            .spawn(move || reclaim_loop(&host));
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot watch acknowledgement deadlines; held items are taken back only when their receiver leaves");
        }
    }

    /// Takes back every item held past its deadline; returns the next
    /// deadline, if any.
    fn reclaim(&self, now: Instant) -> Option<Instant> {
        let queues: Vec<_> = lock(&self.queues).values().cloned().collect();
        queues.iter().filter_map(|q| q.reclaim(now)).min()
    }

    /// The queue `name`, created with `capacity` if new.
    pub(crate) fn queue(&self, name: &str, capacity: Option<usize>) -> Arc<HostQueue> {
        lock(&self.queues)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(HostQueue {
                    name: name.to_owned(),
                    capacity: capacity.map(|c| c.max(1)),
                    transport: self.transport.clone(),
                    state: Mutex::default(),
                    readable: Condvar::new(),
                    writable: Condvar::new(),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    fn existing(&self, name: &str) -> Option<Arc<HostQueue>> {
        lock(&self.queues).get(name).cloned()
    }

    /// Serves one request of `from`. An `Err` is a protocol violation.
    pub(crate) fn serve(&self, from: PeerId, request: &[u8], reply: &mut Vec<u8>) -> Result<()> {
        let answer = match codec::decode_borrowed::<Request<'_>>(request)? {
            Request::Open {
                name,
                capacity,
                item_type,
            } => {
                let wanted = capacity.map(|c| usize::try_from(c).unwrap_or(usize::MAX));
                let q = self.queue(name, wanted);
                if capacity.is_some() && q.capacity != wanted.map(|c| c.max(1)) {
                    Reply::CapacityMismatch {
                        actual: q.capacity.map(|c| c as u64),
                    }
                } else if let Err(actual) = q.check_type(item_type) {
                    Reply::WrongType { actual }
                } else {
                    let mut st = q.lock();
                    st.peers.entry(from).or_default();
                    Reply::Opened {
                        capacity: q.capacity.map(|c| c as u64),
                        closed: st.closed,
                        drained: st.closed && st.items.is_empty(),
                    }
                }
            }
            Request::Send { name, item } => match self.existing(name) {
                None => Reply::NoChannel,
                Some(q) => match q.send_from(item.to_vec(), from) {
                    Ok(()) => Reply::Done,
                    Err((_, Fail::Full)) => Reply::Full {
                        capacity: q.capacity.unwrap_or(0) as u64,
                    },
                    Err(_) => Reply::Closed,
                },
            },
            Request::Pull {
                name,
                acked,
                requeued,
                window,
                ack_wait_ms,
            } => match self.existing(name) {
                None => Reply::NoChannel,
                Some(q) => {
                    q.pull(from, &acked, &requeued, window, ack_wait_ms);
                    if ack_wait_ms > 0 {
                        self.watch_deadlines(ack_wait_ms);
                    }
                    Reply::Done
                }
            },
            Request::Close { name } => match self.existing(name) {
                None => Reply::NoChannel,
                Some(q) => Reply::Closing {
                    closed_now: q.close(),
                },
            },
            Request::Len { name } => match self.existing(name) {
                None => Reply::NoChannel,
                Some(q) => Reply::Len(q.len() as u64),
            },
        };
        codec::encode_into(&answer, reply)
    }

    /// A child left: what was pushed to it and not acknowledged goes back
    /// to the head of each queue, for the other receivers.
    pub(crate) fn peer_left(&self, peer: PeerId) {
        let queues: Vec<_> = lock(&self.queues).values().cloned().collect();
        for q in queues {
            q.peer_left(peer);
        }
    }
}

/// An item waiting in main's queue.
pub(crate) struct Queued {
    pub(crate) bytes: Vec<u8>,
    /// It went to a receiver before, which gave it back unsettled.
    pub(crate) redelivered: bool,
}

impl Queued {
    fn fresh(bytes: Vec<u8>) -> Queued {
        Queued {
            bytes,
            redelivered: false,
        }
    }
}

/// An item pushed to a child, by its sequence number.
enum Slot {
    /// The child holds it; pushed at that instant.
    Held(Queued, Instant),
    /// Taken back at its acknowledgement deadline: it still counts against
    /// the child's credit until the child settles it.
    Reclaimed,
    Settled,
}

/// One child's credit on one queue.
#[derive(Default)]
struct PeerState {
    /// How many unsettled items the child accepts (its prefetch).
    window: u32,
    /// How long the child may hold an item before main takes it back.
    ack_wait: Option<Duration>,
    /// Pushed to the child and not yet settled, by sequence number from
    /// `base`, oldest first.
    in_flight: VecDeque<Slot>,
    /// The sequence number of `in_flight[0]`.
    base: u64,
    /// How many entries of `in_flight` are held or reclaimed.
    held: usize,
    /// The last push failed because the child is backlogged: wait for its
    /// next pull before pushing again.
    stalled: bool,
}

impl PeerState {
    /// The sequence number of the next item pushed.
    fn next_seq(&self) -> u64 {
        self.base + self.in_flight.len() as u64
    }

    /// Settles the item `seq`, handing it back if the child still held it.
    fn settle(&mut self, seq: u64) -> Option<Queued> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let slot = self.in_flight.get_mut(index)?;
        let item = match std::mem::replace(slot, Slot::Settled) {
            Slot::Held(item, _) => Some(item),
            Slot::Reclaimed => None,
            Slot::Settled => return None,
        };
        self.held -= 1;
        while let Some(Slot::Settled) = self.in_flight.front() {
            self.in_flight.pop_front();
            self.base += 1;
        }
        item
    }

    /// Everything the child held, in push order.
    fn take_all(&mut self) -> Vec<Queued> {
        self.held = 0;
        self.base = self.next_seq();
        self.in_flight
            .drain(..)
            .filter_map(|slot| match slot {
                Slot::Held(item, _) => Some(item),
                _ => None,
            })
            .collect()
    }

    /// Takes back what the child has held past its deadline, in push
    /// order; returns when the next deadline falls, if one does.
    fn reclaim(&mut self, now: Instant, back: &mut Vec<Queued>) -> Option<Instant> {
        let wait = self.ack_wait?;
        for slot in &mut self.in_flight {
            if let Slot::Held(_, pushed) = slot {
                let due = *pushed + wait;
                if due > now {
                    // Pushed in order, so the rest are due later.
                    return Some(due);
                }
                if let Slot::Held(item, _) = std::mem::replace(slot, Slot::Reclaimed) {
                    back.push(item);
                }
            }
        }
        None
    }
}

#[derive(Default)]
struct HostState {
    items: VecDeque<Queued>,
    /// The item type's name, as the first opener gave it.
    item_type: Option<String>,
    closed: bool,
    peers: BTreeMap<PeerId, PeerState>,
    /// The child served last, so children take turns.
    cursor: Option<PeerId>,
    /// Main's receivers waiting now (blocking and async): that many items
    /// stay in main rather than being pushed.
    main_waiting: usize,
    async_waiting: usize,
    /// Main's senders waiting for room (a notify is a syscall: only for them).
    senders_waiting: usize,
    /// Children told the queue is full, to be told when it is not.
    space_waiters: BTreeSet<PeerId>,
}

/// Bytes an item adds to a push frame beyond its own (its length prefix,
/// and its index should it be redelivered).
const ITEM_OVERHEAD: usize = 15;

/// Bytes a push frame of items needs beyond the items.
pub(crate) fn push_overhead(name: &str) -> usize {
    name.len() + 48
}

/// One hosted queue, held by main.
pub(crate) struct HostQueue {
    name: String,
    capacity: Option<usize>,
    transport: Weak<dyn Transport>,
    state: Mutex<HostState>,
    readable: Condvar,
    writable: Condvar,
    notify: Notify,
}

impl HostQueue {
    fn lock(&self) -> MutexGuard<'_, HostState> {
        lock(&self.state)
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Records `item_type` as the queue's item type if it has none yet;
    /// otherwise fails with the one it has if they differ.
    pub(crate) fn check_type(&self, item_type: &str) -> Result<(), String> {
        let mut st = self.lock();
        match &st.item_type {
            None => {
                st.item_type = Some(item_type.to_owned());
                Ok(())
            }
            Some(t) if t == item_type => Ok(()),
            Some(t) => Err(t.clone()),
        }
    }

    /// A child's send, which never waits here: refused when full, the child
    /// is put among the senders to tell of room in the same step, so an item
    /// taken just after the refusal cannot miss it (the child would wait for
    /// a notice that never comes).
    pub(crate) fn send_from(&self, item: Vec<u8>, from: PeerId) -> Result<(), (Vec<u8>, Fail)> {
        self.send_until(item, false, None, Some(from))
    }

    /// Queues an item; when full, waits for room (at most `timeout`) if
    /// `block`, else refuses it and registers `waiter` to be told of room.
    pub(crate) fn send_until(
        &self,
        item: Vec<u8>,
        block: bool,
        timeout: Option<Duration>,
        waiter: Option<PeerId>,
    ) -> Result<(), (Vec<u8>, Fail)> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if let Some(t) = self.transport.upgrade() {
            let max = t.max_frame();
            if item.len() + ITEM_OVERHEAD + push_overhead(&self.name) > max {
                let size = item.len() + ITEM_OVERHEAD + push_overhead(&self.name);
                return Err((item, Fail::TooLarge { size, max }));
            }
        }
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err((item, Fail::Closed));
            }
            match self.capacity {
                Some(cap) if st.items.len() >= cap => {
                    if !block {
                        if let Some(peer) = waiter {
                            st.space_waiters.insert(peer);
                        }
                        return Err((item, Fail::Full));
                    }
                    let left = match deadline {
                        None => None,
                        Some(d) => match d.checked_duration_since(Instant::now()) {
                            Some(left) => Some(left),
                            None => return Err((item, Fail::Timeout(timeout.unwrap_or_default()))),
                        },
                    };
                    st.senders_waiting += 1;
                    st = match left {
                        None => sync::wait(&self.writable, st),
                        Some(left) => sync::wait_timeout(&self.writable, st, left).0,
                    };
                    st.senders_waiting -= 1;
                }
                _ => break,
            }
        }
        st.items.push_back(Queued::fresh(item));
        if st.main_waiting > 0 {
            self.readable.notify_one();
        }
        if st.async_waiting > 0 {
            self.notify.notify_one();
        }
        self.pump(&mut st);
        Ok(())
    }

    /// Takes the next item for one of main's own receivers.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Result<Queued, Fail> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some(item) = st.items.pop_front() {
                self.taken(&mut st);
                return Ok(item);
            }
            if st.closed {
                return Err(Fail::Closed);
            }
            st.main_waiting += 1;
            st = match deadline {
                None => sync::wait(&self.readable, st),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    sync::wait_timeout(&self.readable, st, left).0
                }
            };
            st.main_waiting -= 1;
            if let Some(deadline) = deadline {
                if st.items.is_empty() && !st.closed && Instant::now() >= deadline {
                    return Err(Fail::Timeout(timeout.unwrap_or_default()));
                }
            }
            // Items kept back for this receiver may now go to children.
            self.pump(&mut st);
        }
    }

    pub(crate) fn try_recv(&self) -> Result<Queued, Fail> {
        let mut st = self.lock();
        match st.items.pop_front() {
            Some(item) => {
                self.taken(&mut st);
                Ok(item)
            }
            None if st.closed => Err(Fail::Closed),
            None => Err(Fail::Empty),
        }
    }

    pub(crate) async fn recv_async(&self) -> Result<Queued, Fail> {
        loop {
            let notified = self.notify.notified();
            let _waiting = {
                let mut st = self.lock();
                if let Some(item) = st.items.pop_front() {
                    self.taken(&mut st);
                    return Ok(item);
                }
                if st.closed {
                    return Err(Fail::Closed);
                }
                st.async_waiting += 1;
                AsyncWaiter(self)
            };
            notified.await;
        }
    }

    /// Items left the queue: tell children once a closed queue is empty,
    /// and wake senders waiting for room in main and in children.
    fn taken(&self, st: &mut HostState) {
        if st.closed && st.items.is_empty() {
            self.broadcast(st, &Push::Drained { name: &self.name });
        }
        if self.capacity.is_none() {
            return;
        }
        if st.senders_waiting > 0 {
            self.writable.notify_one();
        }
        if st.space_waiters.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut st.space_waiters);
        if let (Some(t), Ok(frame)) = (
            self.transport.upgrade(),
            codec::encode(&Push::Space { name: &self.name }),
        ) {
            for peer in waiters {
                let _ = t.push(peer, STREAM, &frame);
            }
        }
    }

    pub(crate) fn close(&self) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.closed = true;
        self.readable.notify_all();
        self.writable.notify_all();
        self.notify.notify_waiters();
        self.broadcast(&st, &Push::Closed { name: &self.name });
        if st.items.is_empty() {
            self.broadcast(&st, &Push::Drained { name: &self.name });
        }
        true
    }

    /// Pushes a notice to every child that opened the queue.
    fn broadcast(&self, st: &HostState, push: &Push<'_>) {
        if let (Some(t), Ok(frame)) = (self.transport.upgrade(), codec::encode(push)) {
            for peer in st.peers.keys() {
                let _ = t.push(*peer, STREAM, &frame);
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    fn pull(
        &self,
        peer: PeerId,
        acked: &[(u64, u64)],
        requeued: &[u64],
        window: u32,
        ack_wait_ms: u64,
    ) {
        let mut st = self.lock();
        let p = st.peers.entry(peer).or_default();
        p.window = window;
        p.ack_wait = (ack_wait_ms > 0).then(|| Duration::from_millis(ack_wait_ms));
        p.stalled = false;
        for &(start, end) in acked {
            // Bounded by what main holds for the child, whatever it claims.
            for seq in start.max(p.base)..end.min(p.next_seq()) {
                p.settle(seq);
            }
        }
        let mut back: Vec<(u64, Queued)> = requeued
            .iter()
            .filter_map(|&seq| p.settle(seq).map(|q| (seq, q)))
            .collect();
        if !back.is_empty() {
            back.sort_by_key(|(seq, _)| *seq);
            self.requeue_locked(&mut st, back.into_iter().map(|(_, q)| q).collect());
            // Other receivers first: the child gave these back.
            st.cursor = Some(peer);
        }
        self.pump(&mut st);
    }

    /// Puts `items` (in queue order) back at the head of the queue, marked
    /// redelivered, and wakes main's receivers for them.
    fn requeue_locked(&self, st: &mut HostState, items: Vec<Queued>) {
        let n = items.len();
        for mut item in items.into_iter().rev() {
            item.redelivered = true;
            st.items.push_front(item);
        }
        for _ in 0..n.min(st.main_waiting) {
            self.readable.notify_one();
        }
        for _ in 0..n.min(st.async_waiting) {
            self.notify.notify_one();
        }
    }

    /// A delivery main's own receiver took goes back to the head of the
    /// queue (requeued, or dropped unsettled).
    pub(crate) fn requeue(&self, bytes: Vec<u8>) {
        let mut st = self.lock();
        self.requeue_locked(
            &mut st,
            vec![Queued {
                bytes,
                redelivered: true,
            }],
        );
        self.pump(&mut st);
    }

    /// Takes back what children held past their deadlines, for the other
    /// receivers; returns the next deadline, if any.
    fn reclaim(&self, now: Instant) -> Option<Instant> {
        let mut st = self.lock();
        let mut next: Option<Instant> = None;
        let mut took = false;
        let peers: Vec<PeerId> = st.peers.keys().copied().collect();
        for peer in peers {
            let mut back = Vec::new();
            let Some(p) = st.peers.get_mut(&peer) else {
                continue;
            };
            if let Some(due) = p.reclaim(now, &mut back) {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            if !back.is_empty() {
                tracing::info!(
                    channel = %self.name,
                    %peer,
                    items = back.len(),
                    "a receiver held items past its acknowledgement deadline; they go back to the head of the queue"
                );
                self.requeue_locked(&mut st, back);
                st.cursor = Some(peer);
                took = true;
            }
        }
        if took {
            self.pump(&mut st);
        }
        next
    }

    fn peer_left(&self, peer: PeerId) {
        let mut st = self.lock();
        st.space_waiters.remove(&peer);
        let Some(mut p) = st.peers.remove(&peer) else {
            return;
        };
        let back = p.take_all();
        if !back.is_empty() {
            tracing::info!(
                channel = %self.name,
                %peer,
                items = back.len(),
                "a receiver left; items it had not settled go back to the head of the queue"
            );
            self.requeue_locked(&mut st, back);
        }
        self.pump(&mut st);
    }

    /// Pushes what can be pushed to children with credit, in turns, one
    /// frame per child per turn.
    fn pump(&self, st: &mut HostState) {
        let reserved = st.main_waiting + st.async_waiting;
        if st.items.len() <= reserved || st.peers.is_empty() {
            return;
        }
        let Some(transport) = self.transport.upgrade() else {
            return;
        };
        // Children after the cursor first, then the rest.
        let order: Vec<PeerId> = {
            let cursor = st.cursor;
            let (after, before): (Vec<PeerId>, Vec<PeerId>) =
                st.peers.keys().partition(|k| Some(**k) > cursor);
            after.into_iter().chain(before).collect()
        };
        let mut frame = Vec::new();
        let mut drained = false;
        for peer in order {
            let available = st.items.len().saturating_sub(reserved);
            if available == 0 {
                break;
            }
            let Some(p) = st.peers.get(&peer) else {
                continue;
            };
            let credit = (p.window as usize).saturating_sub(p.held);
            // A child acknowledges each item as it consumes it when idle:
            // refilling it item by item would cost a frame per item. It
            // gets more once half its window is free, and still holds at
            // least that much meanwhile.
            if credit == 0 || credit < (p.window as usize) / 2 || p.stalled {
                continue;
            }
            // As many as fit in one frame (at least one: `send` refuses
            // items that could never be pushed).
            let budget = transport
                .max_frame()
                .saturating_sub(push_overhead(&self.name));
            let mut n = 0;
            let mut size = 0;
            for item in st.items.iter().take(credit.min(available)) {
                size += item.bytes.len() + ITEM_OVERHEAD;
                if n > 0 && size > budget {
                    break;
                }
                n += 1;
            }
            let first = p.next_seq();
            let batch: Vec<Queued> = st.items.drain(..n).collect();
            frame.clear();
            let refs: Vec<&Bytes> = batch.iter().map(|q| Bytes::new(&q.bytes)).collect();
            let redelivered: Vec<u32> = (0u32..)
                .zip(&batch)
                .filter(|(_, q)| q.redelivered)
                .map(|(i, _)| i)
                .collect();
            let encoded = codec::encode_into(
                &Push::Items {
                    name: &self.name,
                    first,
                    items: refs,
                    redelivered,
                },
                &mut frame,
            );
            let pushed = encoded.and_then(|()| transport.push(peer, STREAM, &frame));
            match pushed {
                Ok(()) => {
                    let p = st.peers.entry(peer).or_default();
                    p.held += n;
                    let now = Instant::now();
                    p.in_flight
                        .extend(batch.into_iter().map(|item| Slot::Held(item, now)));
                    st.cursor = Some(peer);
                    drained = true;
                }
                Err(e) => {
                    for item in batch.into_iter().rev() {
                        st.items.push_front(item);
                    }
                    match e {
                        Error::NoPeer(_) | Error::Disconnected(_) => {
                            // Its Left event hands back what it held.
                            if let Some(p) = st.peers.get_mut(&peer) {
                                p.stalled = true;
                            }
                        }
                        e => {
                            tracing::warn!(channel = %self.name, %peer, error = %e,
                                "cannot push items to a receiver; they stay queued");
                            if let Some(p) = st.peers.get_mut(&peer) {
                                p.stalled = true;
                            }
                        }
                    }
                }
            }
        }
        if drained {
            self.taken(st);
        }
    }
}

/// Watches acknowledgement deadlines while the host lives: wakes at the
/// next deadline, or at half the shortest wait when none is pending, so an
/// item is taken back at most half a wait after its deadline.
fn reclaim_loop(host: &Weak<Host>) {
    loop {
        let Some(h) = host.upgrade() else {
            return;
        };
        let now = Instant::now();
        let next = h.reclaim(now);
        let half = Duration::from_millis(h.shortest_wait_ms.load(Ordering::Acquire).max(2) / 2);
        drop(h);
        let until = next.map_or(now + half, |n| n.min(now + half));
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
    }
}

/// Counts an async receiver of main while it waits; when it stops waiting
/// (item, close, or cancelled), what it kept back may go to children.
struct AsyncWaiter<'a>(&'a HostQueue);

impl Drop for AsyncWaiter<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.async_waiting -= 1;
        self.0.pump(&mut st);
    }
}
