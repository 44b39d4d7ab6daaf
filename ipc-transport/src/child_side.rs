//! A child's side of its link: calls in flight matched to replies by id,
//! and the reading of main's messages, which completes them and delivers
//! pushes.
//!
//! # The reading protocol
//!
//! Main's messages are read by whoever holds the **reading turn**
//! ([`Turn`]): a blocking caller that reads its own reply (no thread hop),
//! or the background reader, which reads when no caller does. Its state is
//! [`Pending`] (under one lock), the calling thread's [`Context`], and the
//! outbound writer, which only sends. The invariants:
//!
//! 1. **One reader.** At most one [`Turn`] exists (`Pending::reading`);
//!    only its holder reads the link and handles frames. A call made by a
//!    handler on that thread (a push handler, a reply callback) is nested:
//!    it reads under the same turn ([`Context::handling`]) rather than wait
//!    for a reader that is itself.
//! 2. **Completed once.** A call is in `Pending::calls` from before its
//!    request is queued until exactly one of: its reply is matched, its
//!    deadline passes (the caller or the timer thread gives it up), its
//!    request could not be queued, or main is gone. Whoever removes it, under
//!    the lock, completes it, after the lock. So a reply that comes after
//!    a give-up finds nothing and is dropped, and a caller that gives up
//!    after its reply was matched waits for that reply, which is on its way.
//! 3. **Nobody waits unread.** A blocking caller that does not hold the
//!    turn is a follower (`Pending::followers`) while it sleeps. Whoever
//!    holds the turn reads on while a follower's call is in the table, or,
//!    leaving, hands the turn to the background reader (`Pending::urgent`).
//!    Leaving is dropping the [`Turn`], on every path (a panicking handler
//!    included), so a follower is never left with nobody reading.
//! 4. **Lone callers read.** After a blocking call the background reader
//!    stays away for [`LINGER`], so that the caller's next call finds the
//!    turn free and reads its reply on its own thread.
//! 5. **Pushes in order.** A nested read defers the pushes it takes in
//!    (`Context`'s `deferred`); the outermost read on the thread runs them
//!    after the frames that came before them.
//! 6. **Gone is final.** Once `Pending::gone` is set no call enters the
//!    table, every call in it is failed, followers are released, and the
//!    background reader and the timer thread end.
//! 7. **Sending never reads.** Requests leave through [`Outbound`]: a
//!    blocking call sends its own frame inline (`flush`) before it reads
//!    or follows, so the reply it waits for was asked for; a callback call
//!    only wakes the writer thread (`kick`). No lock of the reading
//!    protocol is held while sending, and a request the writer refuses
//!    (the link closed) is taken back out of the table by its caller,
//!    unless main's going already completed it (invariant 2).
//!
//! The hand-offs between these are checked step by step, with a
//! scheduling hook that stops a thread at each point ([`Point`]), in the
//! `interleavings` tests.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use yuki_channel::sync::{self, read};

use yuki_channel::codec::{self, Frames};
use yuki_channel::{Error, PeerEvent, PeerEventHandler, PeerId, PushHandler, ReplyHandler, Result};

use crate::link::{self, LinkError as PipeError, LinkKind, Reader, Side};
use crate::outbound::{Outbound, Refused, Tx};
use crate::rendezvous::Joined;
use crate::spin::Spin;
use crate::stop::StopSignal;
use crate::wire::{self, Control, Failure, Frame};

/// What a child does when its link to main closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenMainGone {
    /// Fail pending calls, tell the peer-event handlers, request this
    /// child's stop (see [`Node::wait_for_stop`](crate::Node::wait_for_stop)),
    /// and exit the process with status 1 if the program has not ended by
    /// itself within its stop time-out
    /// ([`NodeBuilder::stop_timeout`](crate::NodeBuilder::stop_timeout)):
    /// nobody is left to stop it.
    Exit,
    /// Fail pending calls, tell the peer-event handlers and request this
    /// child's stop; the program decides what to do and when to end.
    Stay,
}

/// Where a blocking caller waits for its reply.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    reply: Option<Result<Vec<u8>>>,
    /// The caller sleeps on `ready`. A caller that reads its own reply
    /// does not, and filling its slot then costs no wake-up call.
    waiting: bool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        sync::lock(&self.state)
    }

    fn fill(&self, r: Result<Vec<u8>>) {
        let mut st = self.lock();
        st.reply = Some(r);
        if st.waiting {
            self.ready.notify_one();
        }
    }

    fn take_reply(&self) -> Option<Result<Vec<u8>>> {
        self.lock().reply.take()
    }

    fn wait(&self) -> Result<Vec<u8>> {
        let mut st = self.lock();
        loop {
            if let Some(r) = st.reply.take() {
                st.waiting = false;
                return r;
            }
            st.waiting = true;
            st = sync::wait(&self.ready, st);
        }
    }

    /// [`wait`](Slot::wait) until `deadline` (forever if `None`); `None`
    /// when it passed with no reply.
    fn wait_until(&self, deadline: Option<Instant>) -> Option<Result<Vec<u8>>> {
        let Some(deadline) = deadline else {
            return Some(self.wait());
        };
        let mut st = self.lock();
        loop {
            if let Some(r) = st.reply.take() {
                st.waiting = false;
                return Some(r);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                st.waiting = false;
                return None;
            };
            st.waiting = true;
            st = sync::wait_timeout(&self.ready, st, left).0;
        }
    }
}

/// What the reading protocol keeps per thread.
struct Context {
    /// Where this thread's blocking calls wait: a thread has at most one
    /// in flight, except nested calls from handlers, which use their own.
    slot: RefCell<Option<Arc<Slot>>>,
    /// This thread is handling received frames (it holds the reading turn).
    handling: Cell<bool>,
    /// Pushes received by a nested read, run after the frames before them.
    deferred: RefCell<Vec<(String, Vec<u8>)>>,
}

thread_local! {
    static CONTEXT: Context = const {
        Context {
            slot: RefCell::new(None),
            handling: Cell::new(false),
            deferred: RefCell::new(Vec::new()),
        }
    };
}

impl Context {
    fn with<R>(f: impl FnOnce(&Context) -> R) -> R {
        CONTEXT.with(f)
    }

    /// This thread's slot.
    fn slot(&self) -> Arc<Slot> {
        self.slot
            .borrow_mut()
            .get_or_insert_with(Arc::default)
            .clone()
    }

    /// Whether this thread is handling frames: a call it makes is nested.
    fn handling(&self) -> bool {
        self.handling.get()
    }

    /// Marks this thread as handling until the guard drops (on every
    /// path, so a handler's panic caught further up leaves no stale mark).
    fn enter() -> Handling {
        Handling {
            outermost: !CONTEXT.with(|cx| cx.handling.replace(true)),
        }
    }

    fn defer(&self, stream: &str, body: &[u8]) {
        self.deferred
            .borrow_mut()
            .push((stream.to_owned(), body.to_vec()));
    }

    /// The pushes deferred so far, in the order they came.
    fn take_deferred(&self) -> Option<Vec<(String, Vec<u8>)>> {
        let mut d = self.deferred.borrow_mut();
        (!d.is_empty()).then(|| std::mem::take(&mut *d))
    }
}

/// This thread handles received frames; the outermost read's guard
/// clears the mark when dropped.
struct Handling {
    outermost: bool,
}

impl Drop for Handling {
    fn drop(&mut self) {
        if self.outermost {
            CONTEXT.with(|cx| cx.handling.set(false));
        }
    }
}

/// The reading turn (invariant 1): its holder reads the link. Dropping it
/// hands the turn on (invariant 3).
struct Turn<'l> {
    link: &'l ChildLink,
    /// Still held; cleared by [`Turn::pass`], which already handed it on.
    held: bool,
}

impl Turn<'_> {
    /// Hands the turn on under the lock the holder already has.
    fn pass(mut self, p: &mut Pending) {
        self.held = false;
        self.link.pass_turn(p);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut p = self.link.pending();
            self.link.pass_turn(&mut p);
        }
    }
}

/// A point in the reading protocol where a test may stop a thread
/// (`ChildLink::at`): the hand-offs the interleaving tests force. The
/// points marked *locked* are reached under the lock of [`Pending`]: a
/// test only records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(not(test), allow(dead_code))]
enum Point {
    /// The background reader is about to look for the turn, holding nothing.
    BackgroundIdle,
    /// A thread took the turn (`background`: the background reader). Locked.
    TookTurn { background: bool },
    /// The turn was handed on; `urgent`: to the background reader, for
    /// followers. Locked.
    PassedTurn { urgent: bool },
    /// Blocking call `id` follows: it is about to sleep on its slot.
    Following(u64),
    /// Call `id`'s deadline passed; it is about to leave the table.
    GivingUp(u64),
    /// A reply to call `id` was matched to its waiter. Locked.
    Matched(u64),
    /// A reply to call `id` found no waiter and was dropped. Locked.
    Dropped(u64),
}

/// The scheduling hook of the interleaving tests.
#[cfg(test)]
type Hook = Arc<dyn Fn(Point) + Send + Sync>;

#[cfg(test)]
thread_local! {
    /// The hook the next link started on this thread gets, before any of
    /// its threads run.
    static NEXT_HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

enum Waiter {
    /// A thread blocked in a call; it watches its own deadline.
    Blocking(Arc<Slot>),
    /// A callback, failed by the timer thread at `deadline`.
    Callback {
        done: ReplyHandler,
        deadline: Instant,
        /// The time-out it was given, for the error.
        after: Duration,
        /// The service called, as an index into [`Pending::services`].
        service: usize,
    },
}

impl Waiter {
    fn complete(self, r: Result<Vec<u8>>) {
        match self {
            Waiter::Blocking(slot) => slot.fill(r),
            Waiter::Callback { done, .. } => done(r),
        }
    }
}

/// How a read of the link ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// A message was handled.
    Handled,
    /// The deadline passed first.
    TimedOut,
    /// The link is closed.
    Closed,
}

/// What a caller that led the reading came away with.
enum Led {
    Reply(Result<Vec<u8>>),
    /// The deadline passed with no reply.
    TimedOut,
    /// The link closed before the reply was read: look again.
    Closed,
}

/// Service names a link's callback calls have used, kept so that a timed
/// out callback can name its service without a copy per call; past this
/// many, a call is named by its link alone.
const MAX_NAMES: usize = 64;

/// After a blocking call, the background reader leaves the link alone this
/// long, so that the caller's next call reads its own reply (no thread hop).
const LINGER: Duration = Duration::from_millis(2);

/// Hashes call ids, which are sequential: a multiply spreads them well
/// enough, at a fraction of SipHash's cost on the hot path.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Calls = HashMap<u64, Waiter, std::hash::BuildHasherDefault<IdHasher>>;

struct Pending {
    calls: Calls,
    /// Set once main is gone: why.
    gone: Option<String>,
    /// Someone (a caller or the background reader) is reading the link.
    reading: bool,
    /// Blocking callers waiting while another reads, oldest first.
    followers: VecDeque<u64>,
    /// When a blocking call was last made.
    last_blocking: Instant,
    /// Callers wait while nobody reads: the background reader reads now.
    urgent: bool,
    /// The earliest deadline of a callback call, as far as the timer knows
    /// (it may have been answered since): when the timer looks next.
    next_expiry: Option<Instant>,
    /// Names of the services callback calls were made to.
    services: Vec<Box<str>>,
}

impl Pending {
    /// `service`'s index into [`Pending::services`] (`MAX_NAMES` when the
    /// list is full).
    fn service_index(&mut self, service: &str) -> usize {
        if let Some(i) = self.services.iter().position(|s| &**s == service) {
            return i;
        }
        if self.services.len() < MAX_NAMES {
            self.services.push(service.into());
            return self.services.len() - 1;
        }
        MAX_NAMES
    }
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            calls: Calls::default(),
            gone: None,
            reading: false,
            followers: VecDeque::new(),
            last_blocking: Instant::now(),
            urgent: false,
            next_expiry: None,
            services: Vec::new(),
        }
    }
}

/// A child's link to main.
pub(crate) struct ChildLink {
    pub(crate) peer: PeerId,
    pub(crate) name: String,
    pub(crate) max_frame: usize,
    /// What the link's messages travel on.
    pub(crate) kind: LinkKind,
    out: Outbound,
    /// The link from main, with its polling state (per link: every
    /// reader takes the lock).
    down: Mutex<(Reader, Spin)>,
    pending: Mutex<Pending>,
    /// Wakes the background reader when the link is free to read.
    free: Condvar,
    /// Wakes the timer thread when a callback's deadline comes sooner than
    /// it planned to look.
    timer: Condvar,
    /// The deadline of calls that name none.
    pub(crate) call_timeout: Duration,
    next_id: AtomicU64,
    /// Handlers per stream, shared so that a delivery clones a pointer, not a list.
    pub(crate) push: RwLock<HashMap<String, Arc<[PushHandler]>>>,
    pub(crate) events: RwLock<Vec<PeerEventHandler>>,
    /// The store's region, closed when main is gone (`store_region.rs`).
    pub(crate) store_region: std::sync::OnceLock<Arc<yuki_channel::SharedRegion>>,
    when_gone: WhenMainGone,
    /// Set when main asks this child to stop, or is gone.
    pub(crate) stop: Arc<StopSignal>,
    /// How long the program has to end by itself once main is gone.
    grace: Duration,
    /// The interleaving tests' scheduling hook.
    #[cfg(test)]
    hook: RwLock<Option<Hook>>,
}

impl ChildLink {
    pub(crate) fn start(
        joined: Joined,
        when_gone: WhenMainGone,
        spin: Duration,
        call_timeout: Duration,
        grace: Duration,
    ) -> std::io::Result<Arc<ChildLink>> {
        let Joined {
            peer,
            name,
            max_frame,
            ends,
        } = joined;
        let kind = ends.kind();
        let end = ends.open(Side::Child, link::message_limit(max_frame));
        let link = Arc::new(ChildLink {
            peer: PeerId(peer),
            name,
            max_frame,
            kind,
            out: Outbound::new(Tx::new(end.writer, None)),
            down: Mutex::new((end.reader, Spin::new(spin))),
            pending: Mutex::default(),
            free: Condvar::new(),
            timer: Condvar::new(),
            call_timeout,
            next_id: AtomicU64::new(1),
            push: RwLock::default(),
            events: RwLock::default(),
            store_region: std::sync::OnceLock::new(),
            when_gone,
            stop: Arc::default(),
            grace,
            #[cfg(test)]
            hook: RwLock::new(NEXT_HOOK.with(|h| h.borrow_mut().take())),
        });
        let writer = link.clone();
        std::thread::Builder::new()
            .name("yuki-out".into())
            .spawn(move || writer.out.run_writer())?;
        // Over shared memory, main's going is seen on a socket beside the
        // region; over ipc-channel, the link itself reports it.
        #[cfg(target_os = "linux")]
        if let Some((alive, region)) = end.watch {
            std::thread::Builder::new()
                .name("yuki-alive".into())
                .spawn(move || crate::pipe::watch(&alive, &region))?;
        }
        let reader = link.clone();
        std::thread::Builder::new()
            .name("yuki-link".into())
            .spawn(move || reader.background_reader())?;
        let timer = link.clone();
        std::thread::Builder::new()
            .name("yuki-deadline".into())
            .spawn(move || timer.expire_callbacks())?;
        Ok(link)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        sync::lock(&self.pending)
    }

    /// Lets a test stop this thread at `point`.
    #[cfg(test)]
    fn at(&self, point: Point) {
        let hook = read(&self.hook).clone();
        if let Some(h) = hook {
            h(point);
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn at(&self, _: Point) {}

    /// Takes the reading turn if nobody holds it.
    fn take_turn(&self, p: &mut Pending, background: bool) -> Option<Turn<'_>> {
        if p.reading {
            return None;
        }
        p.reading = true;
        self.at(Point::TookTurn { background });
        Some(Turn {
            link: self,
            held: true,
        })
    }

    /// Registers `waiter` and queues the request; returns the id, or hands
    /// the waiter back with the error.
    fn enqueue(
        &self,
        service: &str,
        request: &[u8],
        mut waiter: Waiter,
        kick: bool,
    ) -> Result<u64, (Waiter, Error)> {
        if let Err(e) = codec::check_frame(request.len(), self.max_frame) {
            return Err((waiter, e));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut p = self.pending();
            if let Some(why) = &p.gone {
                return Err((waiter, Error::disconnected(why)));
            }
            match &mut waiter {
                Waiter::Blocking(_) => p.last_blocking = Instant::now(),
                Waiter::Callback {
                    deadline,
                    service: name,
                    ..
                } => {
                    *name = p.service_index(service);
                    if p.next_expiry.is_none_or(|t| *deadline < t) {
                        p.next_expiry = Some(*deadline);
                        self.timer.notify_one();
                    }
                }
            }
            p.calls.insert(id, waiter);
        }
        let frame = Frame::Call {
            id,
            service,
            body: request,
        };
        let queued = self
            .out
            .append_then(usize::MAX, kick, |buf| wire::put(buf, &frame));
        let err = match queued {
            Ok(Ok(())) => return Ok(id),
            Ok(Err(e)) => e,
            Err(Refused::Closed | Refused::Full) => {
                Error::disconnected("the link to main is closed")
            }
        };
        match self.pending().calls.remove(&id) {
            Some(w) => Err((w, err)),
            // The reader failed it already; the waiter has its answer.
            None => Ok(id),
        }
    }

    /// Calls `service` and blocks for its reply, giving up after `timeout`.
    pub(crate) fn call(&self, service: &str, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now().checked_add(timeout);
        let (nested, slot) = Context::with(|cx| (cx.handling(), cx.slot()));
        if nested {
            return self.nested_call(service, request, timeout, deadline);
        }
        let id = match self.enqueue(service, request, Waiter::Blocking(slot.clone()), false) {
            Ok(id) => id,
            Err((_, e)) => return Err(e),
        };
        // Send at once: a thread sending already takes this frame along.
        if self.out.flush().is_err() {
            self.main_gone("the link to main closed".into(), false);
        }
        loop {
            {
                let mut p = self.pending();
                if let Some(r) = slot.take_reply() {
                    return r;
                }
                if p.gone.is_none() {
                    // Nobody reads: read our own reply, with no thread hop.
                    if let Some(turn) = self.take_turn(&mut p, false) {
                        drop(p);
                        match self.lead(turn, &slot, deadline) {
                            Led::Reply(r) => return r,
                            Led::TimedOut => return self.give_up(id, &slot, service, timeout),
                            Led::Closed => continue,
                        }
                    }
                }
                p.followers.push_back(id);
            }
            self.at(Point::Following(id));
            return match slot.wait_until(deadline) {
                Some(r) => r,
                None => self.give_up(id, &slot, service, timeout),
            };
        }
    }

    /// Ends call `id`, whose deadline passed: it leaves the table, so a
    /// reply that comes later is dropped. A reply already taken from the
    /// table is on its way to `slot`: that one is returned.
    fn give_up(&self, id: u64, slot: &Slot, service: &str, timeout: Duration) -> Result<Vec<u8>> {
        self.at(Point::GivingUp(id));
        let removed = {
            let mut p = self.pending();
            p.followers.retain(|f| *f != id);
            p.calls.remove(&id).is_some()
        };
        if removed {
            return Err(Error::call_timeout(service, timeout));
        }
        slot.wait()
    }

    /// A blocking call from a push handler or a reply callback: this thread
    /// holds the reading turn, so nobody else would read the reply; it
    /// reads the link itself (pushes that arrive meanwhile wait their turn).
    fn nested_call(
        &self,
        service: &str,
        request: &[u8],
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>> {
        let slot = Arc::new(Slot::default());
        let id = match self.enqueue(service, request, Waiter::Blocking(slot.clone()), false) {
            Ok(id) => id,
            Err((_, e)) => return Err(e),
        };
        if self.out.flush().is_err() {
            self.main_gone("the link to main closed".into(), false);
        }
        loop {
            if let Some(r) = slot.take_reply() {
                return r;
            }
            match self.read_one(true, deadline) {
                Read::Handled => {}
                Read::TimedOut => return self.give_up(id, &slot, service, timeout),
                Read::Closed => {
                    return slot
                        .take_reply()
                        .unwrap_or_else(|| Err(Error::disconnected("the link to main closed")));
                }
            }
        }
    }

    /// Reads the link with `turn` until `mine` has its reply or `deadline`
    /// passes, then passes the turn on.
    fn lead(&self, turn: Turn<'_>, mine: &Slot, deadline: Option<Instant>) -> Led {
        loop {
            // A reply is on its way: poll for it before sleeping.
            let read = self.read_one(true, deadline);
            let mut p = self.pending();
            if read == Read::Closed {
                // Main is gone: no follower is left to hand the turn to.
                turn.pass(&mut p);
                drop(p);
                return mine.take_reply().map_or(Led::Closed, Led::Reply);
            }
            if let Some(r) = mine.take_reply() {
                turn.pass(&mut p);
                return Led::Reply(r);
            }
            if read == Read::TimedOut {
                turn.pass(&mut p);
                return Led::TimedOut;
            }
        }
    }

    /// Whether blocking callers still wait for replies (dropping the
    /// entries of those already answered).
    fn has_followers(p: &mut Pending) -> bool {
        while let Some(id) = p.followers.front() {
            if p.calls.contains_key(id) {
                return true;
            }
            p.followers.pop_front();
        }
        false
    }

    /// A caller that read its own reply steps down. Other callers waiting
    /// means calls are concurrent: the background reader reads for them
    /// all from now on, rather than the turn hopping from thread to thread.
    fn pass_turn(&self, p: &mut Pending) {
        p.reading = false;
        let urgent = Self::has_followers(p);
        if urgent {
            p.urgent = true;
            self.free.notify_one();
        }
        self.at(Point::PassedTurn { urgent });
    }

    /// Reads whenever no caller does: pushes and callbacks arrive even when
    /// no thread is blocked in a call, and main's death is seen at once.
    fn background_reader(&self) {
        loop {
            self.at(Point::BackgroundIdle);
            let (turn, mut expected) = {
                let mut p = self.pending();
                let turn = loop {
                    if p.gone.is_some() {
                        return;
                    }
                    let since = p.last_blocking.elapsed();
                    if since >= LINGER || p.urgent {
                        if let Some(turn) = self.take_turn(&mut p, true) {
                            break turn;
                        }
                    }
                    // A caller reads, or may soon: look again after the
                    // linger, so no caller has to wake this thread.
                    p = sync::wait_timeout(
                        &self.free,
                        p,
                        LINGER.saturating_sub(since).max(LINGER / 2),
                    )
                    .0;
                };
                // Callers wait for replies: poll for them; else nothing
                // is expected, and an idle link must not spin.
                let expected = p.urgent;
                p.urgent = false;
                (turn, expected)
            };
            loop {
                let read = self.read_one(expected, None);
                let mut p = self.pending();
                if read == Read::Closed {
                    turn.pass(&mut p);
                    return;
                }
                // Keep reading while blocking callers wait; else step down
                // so that the next lone call reads its own reply.
                if !Self::has_followers(&mut p) {
                    turn.pass(&mut p);
                    break;
                }
                expected = true;
            }
        }
    }

    /// Calls `service`; `done` runs with the reply, or with
    /// [`Error::CallTimeout`] once `timeout` passed without one.
    pub(crate) fn call_with(
        &self,
        service: &str,
        request: &[u8],
        timeout: Duration,
        done: ReplyHandler,
    ) {
        let now = Instant::now();
        // A deadline past any real wait: never given up.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(1 << 40));
        let waiter = Waiter::Callback {
            done,
            deadline,
            after: timeout,
            // Set under the lock that registers the call.
            service: MAX_NAMES,
        };
        if let Err((w, e)) = self.enqueue(service, request, waiter, true) {
            w.complete(Err(e));
        }
    }

    /// The timer thread: fails callback calls whose deadline passed. It
    /// looks at the earliest deadline it knows of; calls answered before it
    /// cost nothing but that look, so a busy link is scanned about once a
    /// time-out, not once a call.
    fn expire_callbacks(&self) {
        let mut p = self.pending();
        loop {
            if p.gone.is_some() {
                return;
            }
            let now = Instant::now();
            match p.next_expiry {
                None => p = sync::wait(&self.timer, p),
                Some(at) if at > now => {
                    p = sync::wait_timeout(&self.timer, p, at - now).0;
                }
                Some(_) => {
                    let mut next: Option<Instant> = None;
                    let mut late = Vec::new();
                    for (id, w) in &p.calls {
                        if let Waiter::Callback { deadline, .. } = w {
                            if *deadline <= now {
                                late.push(*id);
                            } else if next.is_none_or(|t| *deadline < t) {
                                next = Some(*deadline);
                            }
                        }
                    }
                    p.next_expiry = next;
                    let mut expired = Vec::with_capacity(late.len());
                    for id in late {
                        if let Some(Waiter::Callback {
                            done,
                            after,
                            service,
                            ..
                        }) = p.calls.remove(&id)
                        {
                            let e = match p.services.get(service) {
                                Some(name) => Error::call_timeout(name, after),
                                None => Error::CallTimeout {
                                    operation: "a call".into(),
                                    after,
                                },
                            };
                            expired.push((done, e));
                        }
                    }
                    drop(p);
                    for (done, e) in expired {
                        done(Err(e));
                    }
                    p = self.pending();
                }
            }
        }
    }

    /// Calls in flight: sent, and neither answered nor given up.
    pub(crate) fn pending_calls(&self) -> usize {
        self.pending().calls.len()
    }

    pub(crate) fn send_control(&self, control: Control) -> Result<()> {
        if let Some(why) = &self.pending().gone {
            return Err(Error::disconnected(why));
        }
        match self
            .out
            .append(usize::MAX, |buf| wire::put(buf, &Frame::Control(control)))
        {
            Ok(r) => r?,
            Err(_) => return Err(Error::disconnected("the link to main is closed")),
        }
        self.out
            .flush()
            .map_err(|()| Error::disconnected("the link to main is closed"))
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn send_raw(&self, message: &[u8]) -> Result<()> {
        self.out
            .append(usize::MAX, |buf| buf.extend_from_slice(message))
            .map_err(|_| Error::disconnected("the link to main is closed"))?;
        self.out
            .flush()
            .map_err(|()| Error::disconnected("the link to main is closed"))
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn send_unwrapped(&self, bytes: &[u8]) -> Result<()> {
        self.out
            .send_unwrapped(bytes)
            .map_err(|()| Error::disconnected("the link to main is closed"))
    }

    /// Closes this child's sending half of the link and nothing else, as a
    /// child whose writer vanished would.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn drop_sender(&self) {
        self.out.drop_sender();
    }

    /// Receives one message (polling first if one is `expected`: see
    /// [`Spin`]) and handles its frames, unless `deadline` passes first.
    fn read_one(&self, expected: bool, deadline: Option<Instant>) -> Read {
        let handling = Context::enter();
        let open = self.read_message(!handling.outermost, expected, deadline);
        if handling.outermost {
            // Pushes a nested read took in, in the order they came.
            while let Some(batch) = Context::with(Context::take_deferred) {
                for (stream, body) in batch {
                    self.run_push_cached(&mut None, &stream, &body);
                }
            }
        }
        open
    }

    /// Runs the handlers of `stream` on `body`, looking them up only when
    /// `cache` holds another stream's: once per run of frames on one stream
    /// in a message rather than once per frame.
    fn run_push_cached<'m>(
        &self,
        cache: &mut Option<(&'m str, Option<Arc<[PushHandler]>>)>,
        stream: &'m str,
        body: &[u8],
    ) {
        let handlers = match cache {
            Some((s, handlers)) if *s == stream => handlers,
            _ => {
                &mut cache
                    .insert((stream, read(&self.push).get(stream).cloned()))
                    .1
            }
        };
        for h in handlers.iter().flat_map(|hs| hs.iter()) {
            h(body);
        }
    }

    fn read_message(&self, nested: bool, expected: bool, deadline: Option<Instant>) -> Read {
        let received = {
            let mut down = sync::lock(&self.down);
            let (rx, spin) = &mut *down;
            spin.recv_until(rx, expected, deadline)
        };
        let message = match received {
            Ok(Some(m)) => m,
            Ok(None) => return Read::TimedOut,
            Err(PipeError::Closed) => {
                self.main_gone("main is gone (the link closed)".into(), false);
                return Read::Closed;
            }
            Err(PipeError::Corrupt(why)) => {
                tracing::warn!(reason = %why, "main broke the link's shared memory; closing the link");
                self.main_gone(format!("the link to main broke: {why}"), false);
                return Read::Closed;
            }
        };
        // Replies are decoded first, then matched under one short lock,
        // then completed after it (callbacks may start new calls).
        let mut replies: Vec<(u64, Result<Vec<u8>>)> = Vec::new();
        let finish = |replies: &mut Vec<(u64, Result<Vec<u8>>)>| {
            if replies.is_empty() {
                return;
            }
            let mut done = Vec::with_capacity(replies.len());
            {
                let mut p = self.pending();
                for (id, r) in replies.drain(..) {
                    if let Some(w) = p.calls.remove(&id) {
                        self.at(Point::Matched(id));
                        done.push((w, r));
                    } else {
                        self.at(Point::Dropped(id));
                    }
                }
            }
            for (w, r) in done {
                w.complete(r);
            }
        };
        let mut handlers = None;
        // A reply shows main reads this link: its sends have room again.
        let mut answered = false;
        for frame in Frames::new(&message) {
            let frame = match frame.and_then(|f| wire::parse(f, self.max_frame)) {
                Ok(f) => f,
                Err(e) => {
                    finish(&mut replies);
                    tracing::warn!(reason = %e, "malformed frame from main; closing the link");
                    self.main_gone(format!("main sent a malformed frame: {e}"), false);
                    return Read::Closed;
                }
            };
            match frame {
                Frame::Reply { id, body } => {
                    answered = true;
                    replies.push((id, Ok(body.to_vec())));
                }
                Frame::Failed { id, failure } => {
                    answered = true;
                    let e = match failure {
                        Failure::NoService(s) => Error::NoService(s.to_owned()),
                        Failure::Other(why) => Error::Remote(why.to_owned()),
                        Failure::TooLarge { size, max } => Error::FrameTooLarge {
                            size: usize::try_from(size).unwrap_or(usize::MAX),
                            max: usize::try_from(max).unwrap_or(usize::MAX),
                        },
                    };
                    replies.push((id, Err(e)));
                }
                Frame::Push { stream, body } => {
                    finish(&mut replies);
                    if nested {
                        Context::with(|cx| cx.defer(stream, body));
                    } else {
                        self.run_push_cached(&mut handlers, stream, body);
                    }
                }
                Frame::Control(Control::Shutdown) => {
                    // The link stays open: the program may still save its
                    // state through main before it returns from `main`.
                    if self.stop.request() {
                        tracing::info!("main asked this child to stop");
                    }
                }
                other => {
                    finish(&mut replies);
                    tracing::warn!(frame = ?other, "main sent a frame only children send; closing the link");
                    self.main_gone("main broke the protocol".into(), false);
                    return Read::Closed;
                }
            }
        }
        finish(&mut replies);
        if answered {
            self.out.answered();
        }
        Read::Handled
    }

    /// Fails every call, tells the handlers and requests this child's stop;
    /// unless told to stay, ends the process if the program has not ended
    /// by itself within its grace period.
    fn main_gone(&self, reason: String, _asked: bool) {
        let calls = {
            let mut p = self.pending();
            if p.gone.is_some() {
                return;
            }
            p.gone = Some(reason.clone());
            p.followers.clear();
            std::mem::take(&mut p.calls)
        };
        self.free.notify_all();
        self.timer.notify_all();
        self.out.close();
        // Before any caller wakes: none may read main's data after this.
        if let Some(region) = self.store_region.get() {
            region.close();
        }
        for (_, w) in calls {
            w.complete(Err(Error::disconnected(&reason)));
        }
        let event = PeerEvent::Left {
            peer: PeerId::MAIN,
            reason: reason.clone(),
        };
        let handlers = read(&self.events).clone();
        for h in handlers {
            h(&event);
        }
        self.stop.request();
        if self.when_gone == WhenMainGone::Exit {
            let grace = self.grace;
            tracing::info!(%reason, ?grace, "link to main closed; exiting unless the program ends first");
            // Nobody is left to stop this process: after the grace period
            // it ends itself, as main would have killed it.
            let spawned = std::thread::Builder::new()
                .name("yuki-orphan".into())
                .spawn(move || {
                    std::thread::sleep(grace);
                    std::process::exit(1);
                });
            if spawned.is_err() {
                std::process::exit(1);
            }
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.pending().gone.is_some()
    }
}

#[cfg(all(test, target_os = "linux"))]
#[path = "child_side_interleavings.rs"]
mod interleavings;
