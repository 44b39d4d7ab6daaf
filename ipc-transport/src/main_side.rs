//! Main's side of the links: one reader thread per child that runs the
//! services inline and answers in one message per batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use yuki_channel::sync::{self, read, write};

use yuki_channel::codec::{self, Frames};
use yuki_channel::{
    DropHandler, Error, PeerEvent, PeerEventHandler, PeerId, PushHandler, Result, Service,
};

use crate::link::{self, Ends, LinkError as PipeError, LinkKind, Reader, Side};
use crate::outbound::{Outbound, Refused, Tx, shed_oldest};
use crate::spin::Spin;
use crate::wire::{self, Control, Failure, Frame};

/// Called when a child asks main to stop or restart it.
pub(crate) type ControlSink = Arc<dyn Fn(PeerId, Control) + Send + Sync>;

/// Called when a link must be cut while a send to it is stuck: kills the process.
pub(crate) type KillHook = Box<dyn Fn() + Send + Sync>;

/// Everything main's transport shares between its links.
pub(crate) struct Hub {
    pub(crate) max_frame: usize,
    /// Bytes a child's outgoing buffer may hold: past it, lossy pushes drop
    /// the oldest, and other pushes are refused unless that made room.
    pub(crate) max_backlog: usize,
    /// How long a link's reader polls for the next request before blocking.
    reply_spin: Duration,
    services: RwLock<HashMap<String, Arc<dyn Service>>>,
    /// Bumped on every new service, so link threads refresh their copies.
    services_version: AtomicU64,
    links: RwLock<HashMap<PeerId, Arc<Link>>>,
    /// Handlers per stream, shared so that a delivery clones a pointer, not a list.
    pub(crate) push: RwLock<HashMap<String, Arc<[PushHandler]>>>,
    /// The lossy streams, with who learns of each push dropped on them.
    pub(crate) dropped: RwLock<HashMap<String, Arc<[DropHandler]>>>,
    pub(crate) events: RwLock<Vec<PeerEventHandler>>,
    next_peer: AtomicU64,
    pub(crate) control: RwLock<Option<ControlSink>>,
    /// The link kind of children spawned without one of their own.
    pub(crate) link_kind: LinkKind,
}

/// One child's link, as main sees it.
pub(crate) struct Link {
    pub(crate) peer: PeerId,
    pub(crate) name: String,
    pub(crate) out: Outbound,
    dead: AtomicBool,
    /// Set (under its lock) once `Left` is being told.
    left: Mutex<bool>,
    kill: Mutex<Option<KillHook>>,
}

impl Hub {
    pub(crate) fn new(
        max_frame: usize,
        max_backlog: usize,
        reply_spin: Duration,
        link_kind: LinkKind,
    ) -> Hub {
        Hub {
            max_frame,
            max_backlog,
            reply_spin,
            services: RwLock::default(),
            services_version: AtomicU64::new(0),
            links: RwLock::default(),
            push: RwLock::default(),
            dropped: RwLock::default(),
            events: RwLock::default(),
            next_peer: AtomicU64::new(1),
            control: RwLock::default(),
            link_kind,
        }
    }

    pub(crate) fn next_peer(&self) -> PeerId {
        PeerId(self.next_peer.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn serve(&self, name: &str, service: Arc<dyn Service>) -> Result<()> {
        let mut services = write(&self.services);
        if services.contains_key(name) {
            return Err(Error::ServiceExists(name.to_owned()));
        }
        services.insert(name.to_owned(), service);
        self.services_version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub(crate) fn service(&self, name: &str) -> Option<Arc<dyn Service>> {
        read(&self.services).get(name).cloned()
    }

    pub(crate) fn emit(&self, event: &PeerEvent) {
        let handlers = read(&self.events).clone();
        for h in handlers {
            h(event);
        }
    }

    pub(crate) fn deliver_push(&self, stream: &str, frame: &[u8]) {
        let handlers = read(&self.push).get(stream).cloned();
        for h in handlers.iter().flat_map(|hs| hs.iter()) {
            h(frame);
        }
    }

    pub(crate) fn link(&self, peer: PeerId) -> Option<Arc<Link>> {
        read(&self.links).get(&peer).cloned()
    }

    pub(crate) fn peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<_> = read(&self.links).keys().copied().collect();
        peers.sort();
        peers
    }

    /// Queues `frame` for `to` on `stream`; the link's writer sends it.
    pub(crate) fn push(&self, to: PeerId, stream: &str, frame: &[u8]) -> Result<()> {
        codec::check_frame(frame.len(), self.max_frame)?;
        if to == PeerId::MAIN {
            self.deliver_push(stream, frame);
            return Ok(());
        }
        let link = self.link(to).ok_or(Error::NoPeer(to))?;
        let mut dropped = Vec::new();
        let queued = link.out.append_or_shed(
            self.max_backlog,
            true,
            |buf, keep| self.shed(buf, keep, &mut dropped, Some(stream)),
            |buf| wire::put_push(buf, stream, frame),
        );
        self.hand_dropped(to, &dropped);
        match queued {
            Ok(r) => r?,
            Err(Refused::Full) => return Err(Error::PeerBacklogged(to)),
            Err(Refused::Closed) => return Err(Error::NoPeer(to)),
        }
        Ok(())
    }

    /// Makes room in a child's full buffer by dropping its oldest pushes on
    /// lossy streams, down to three quarters of the limit, into `dropped`.
    /// Says whether a frame for `stream` goes in anyway: one on a lossy
    /// stream always does: it is never refused.
    fn shed(
        &self,
        buf: &mut Vec<u8>,
        keep: &mut usize,
        dropped: &mut Vec<u8>,
        stream: Option<&str>,
    ) -> bool {
        let lossy = read(&self.dropped);
        if lossy.is_empty() {
            return false;
        }
        let target = self.max_backlog / 4 * 3;
        // Most frames are on one stream: it is looked up once.
        let mut last = (String::new(), false);
        let is_lossy = |f: &[u8]| {
            let Some(s) = wire::push_stream(f) else {
                return false;
            };
            if last.0 != s {
                last = (s.to_owned(), lossy.contains_key(s));
            }
            last.1
        };
        shed_oldest(buf, keep, target, is_lossy, dropped);
        stream.is_some_and(|s| lossy.contains_key(s))
    }

    /// Hands the pushes dropped for `peer` to their streams' drop
    /// handlers, each run of one stream at once.
    fn hand_dropped(&self, peer: PeerId, dropped: &[u8]) {
        if dropped.is_empty() {
            return;
        }
        let mut frames = Frames::new(dropped)
            .filter_map(|f| match f.and_then(|f| wire::parse(f, usize::MAX)) {
                Ok(Frame::Push { stream, body }) => Some((stream, body)),
                _ => None,
            })
            .peekable();
        let mut run = Vec::new();
        while let Some((stream, body)) = frames.next() {
            run.push(body);
            if frames.peek().is_some_and(|(next, _)| *next == stream) {
                continue;
            }
            let handlers = read(&self.dropped).get(stream).cloned();
            for h in handlers.iter().flat_map(|hs| hs.iter()) {
                h(peer, &run);
            }
            run.clear();
        }
    }

    /// Makes pushes on `stream` lossy, telling `handler` of each one dropped.
    pub(crate) fn on_push_dropped(&self, stream: &str, handler: DropHandler) {
        let mut dropped = write(&self.dropped);
        let entry = dropped
            .entry(stream.to_owned())
            .or_insert_with(|| Arc::new([]));
        *entry = entry.iter().cloned().chain([handler]).collect();
    }

    /// Starts serving a child that finished its handshake.
    pub(crate) fn attach(
        self: &Arc<Hub>,
        peer: PeerId,
        name: &str,
        ends: Ends,
        kill: Option<KillHook>,
    ) -> Result<Arc<Link>> {
        let end = ends.open(Side::Main, link::message_limit(self.max_frame));
        let mut reader = end.reader;
        let link = Arc::new(Link {
            peer,
            name: name.to_owned(),
            out: Outbound::new(Tx::new(end.writer, end.alive)),
            dead: AtomicBool::new(false),
            left: Mutex::new(false),
            kill: Mutex::new(kill),
        });
        write(&self.links).insert(peer, link.clone());
        let writer = link.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("yuki-out-{peer}"))
            .spawn(move || writer.out.run_writer())
            .and_then(|_| {
                let (hub, serving) = (self.clone(), link.clone());
                std::thread::Builder::new()
                    .name(format!("yuki-link-{peer}"))
                    .spawn(move || serve_link(&hub, &serving, &mut reader))
            });
        if let Err(e) = spawned {
            self.disconnect(&link, &format!("cannot start its link threads: {e}"));
            return Err(Error::disconnected(e));
        }
        self.emit(&PeerEvent::Joined {
            peer,
            name: name.to_owned(),
        });
        Ok(link)
    }

    /// Cuts a link (once): the child sees main leave; main sees the child leave.
    ///
    /// A second caller returns only after the first has told the handlers,
    /// so whoever sees the link cut also sees its `Left` event delivered.
    pub(crate) fn disconnect(&self, link: &Link, reason: &str) {
        let mut left = sync::lock(&link.left);
        if *left {
            return;
        }
        *left = true;
        link.dead.store(true, Ordering::Release);
        write(&self.links).remove(&link.peer);
        link.out.close();
        self.emit(&PeerEvent::Left {
            peer: link.peer,
            reason: reason.to_owned(),
        });
    }

    /// Cuts a link for breaking the rules, with a logged reason.
    fn violation(&self, link: &Link, reason: String) {
        tracing::warn!(peer = %link.peer, child = %link.name, %reason, "disconnecting child");
        self.disconnect(link, &reason);
    }

    /// Cuts off (and kills) every child whose link has been blocked in a
    /// send for over `limit`: it does not read, and main's memory and
    /// threads must not wait on it for ever.
    pub(crate) fn cut_stalled(&self, limit: Duration) {
        let links: Vec<_> = read(&self.links).values().cloned().collect();
        for link in links {
            if link.out.stuck_for().is_some_and(|d| d > limit) {
                self.violation(
                    &link,
                    format!(
                        "it does not read its replies or pushes: it has not read what main sent it for over {limit:?}"
                    ),
                );
                link.kill();
            }
        }
    }

    /// Shuts every link (main is going away).
    pub(crate) fn close_all(&self, reason: &str) {
        let links: Vec<_> = read(&self.links).values().cloned().collect();
        for link in links {
            self.disconnect(&link, reason);
        }
    }
}

impl Link {
    pub(crate) fn send_control(&self, control: Control) {
        let queued = self
            .out
            .append(usize::MAX, |buf| wire::put(buf, &Frame::Control(control)));
        if matches!(queued, Ok(Ok(()))) {
            self.out.kick();
        }
    }

    fn kill(&self) {
        if let Some(kill) = sync::lock(&self.kill).as_ref() {
            kill();
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// The services a link thread has looked up, refreshed when one is added.
struct ServiceCache {
    version: u64,
    map: HashMap<String, Arc<dyn Service>>,
}

impl ServiceCache {
    fn get(&mut self, hub: &Hub, name: &str) -> Option<Arc<dyn Service>> {
        let version = hub.services_version.load(Ordering::Acquire);
        if version != self.version {
            self.map.clear();
            self.version = version;
        }
        if let Some(s) = self.map.get(name) {
            return Some(s.clone());
        }
        let s = hub.service(name)?;
        self.map.insert(name.to_owned(), s.clone());
        Some(s)
    }
}

/// The state one link thread keeps between messages.
struct Serving<'a> {
    hub: &'a Hub,
    link: &'a Link,
    cache: ServiceCache,
    /// Replies (and failures) to send back together.
    batch: Vec<u8>,
    /// One service's reply, before it is framed.
    reply: Vec<u8>,
}

impl Serving<'_> {
    /// Runs the calls of one message, framing their replies into `batch`.
    /// An `Err` is a protocol violation, with its reason.
    /// Returns how many calls it held.
    fn handle(&mut self, message: &[u8]) -> Result<usize, String> {
        let (hub, link) = (self.hub, self.link);
        let mut calls = 0;
        for frame in Frames::new(message) {
            let frame = frame
                .and_then(|f| wire::parse(f, hub.max_frame))
                .map_err(|e| format!("malformed frame: {e}"))?;
            match frame {
                Frame::Call { id, service, body } => {
                    calls += 1;
                    let Some(svc) = self.cache.get(hub, service) else {
                        let f = Frame::Failed {
                            id,
                            failure: Failure::NoService(service),
                        };
                        wire::put(&mut self.batch, &f)
                            .map_err(|e| format!("unencodable reply: {e}"))?;
                        continue;
                    };
                    self.reply.clear();
                    svc.call(link.peer, body, &mut self.reply)
                        .map_err(|e| format!("service {service:?} refused its request: {e}"))?;
                    let written = if self.reply.len() > hub.max_frame {
                        let failure = Failure::TooLarge {
                            size: self.reply.len() as u64,
                            max: hub.max_frame as u64,
                        };
                        wire::put(&mut self.batch, &Frame::Failed { id, failure })
                    } else {
                        let body = &self.reply;
                        wire::put(&mut self.batch, &Frame::Reply { id, body })
                    };
                    written.map_err(|e| format!("unencodable reply: {e}"))?;
                }
                Frame::Control(c @ (Control::Stop | Control::Restart)) => {
                    let sink = read(&hub.control).clone();
                    if let Some(sink) = sink {
                        sink(link.peer, c);
                    }
                }
                other => return Err(format!("sent a frame only main may send: {other:?}")),
            }
        }
        Ok(calls)
    }
}

/// Replies gathered from several queued messages go out in one message, up
/// to about this many bytes.
const REPLY_BATCH: usize = 64 << 10;

/// Replies up to this many bytes are sent by the link's reader itself: a
/// child's pipe takes that much at once unless it has left far more
/// unread (then only that child's link waits, or the stall watchdog, when
/// turned on, cuts it loose).
const INLINE_REPLY: usize = 16 << 10;

/// Reads one child's link until it closes: runs each call inline and sends
/// the replies of the messages that were waiting together.
fn serve_link(hub: &Hub, link: &Link, up: &mut Reader) {
    let mut serving = Serving {
        hub,
        link,
        cache: ServiceCache {
            version: u64::MAX,
            map: HashMap::new(),
        },
        batch: Vec::new(),
        reply: Vec::new(),
    };
    // Replies pile up unsent while the writer is stuck on a child that
    // does not read; past this the child is cut off.
    let limit = hub.max_backlog;
    let (mut busy, mut looked) = (false, false);
    let mut spin = Spin::new(hub.reply_spin);
    let mut first = true;
    loop {
        // Every pass but the first follows a handled message: the child
        // is busy, and its next request is likely close behind.
        let mut message = match spin.recv(up, !std::mem::take(&mut first)) {
            Ok(m) => m,
            Err(e) => return cut(hub, link, e),
        };
        if link.is_dead() {
            return;
        }
        // A child that sends is taken to read: a send to it that blocks
        // holds only this link's thread (or the stall watchdog cuts it).
        link.out.answered();
        serving.batch.clear();
        loop {
            let calls = match serving.handle(&message) {
                Ok(calls) => calls,
                Err(reason) => return hub.violation(link, reason),
            };
            // A message of several calls means calls are concurrent: more
            // may be waiting, to be answered in the same message. A lone
            // call is answered at once (a look costs a system call).
            busy = calls > 1 || (busy && calls > 0 && looked);
            looked = false;
            if !busy || serving.batch.len() >= REPLY_BATCH {
                break;
            }
            looked = true;
            // An error shows again in the next receive, after these replies.
            match up.try_recv() {
                Ok(Some(m)) => message = m,
                Ok(None) | Err(_) => {
                    busy = false;
                    break;
                }
            }
        }
        if serving.reply.capacity() > 1 << 20 {
            serving.reply = Vec::new();
        }
        if serving.batch.is_empty() {
            continue;
        }
        let batch = &serving.batch;
        // Replies are never dropped, but pushes on lossy streams may make
        // room for them.
        let mut dropped = Vec::new();
        let queued = link.out.append_or_shed(
            limit,
            false,
            |buf, keep| hub.shed(buf, keep, &mut dropped, None),
            |buf| buf.extend_from_slice(batch),
        );
        hub.hand_dropped(link.peer, &dropped);
        match queued {
            Ok(()) => {}
            Err(Refused::Closed) => return cut(hub, link, up.closed()),
            Err(Refused::Full) => {
                let reason = format!("it does not read its replies (over {limit} bytes queued)");
                hub.violation(link, reason);
                link.kill();
                return;
            }
        }
        if serving.batch.capacity() > 1 << 20 {
            serving.batch = Vec::new();
        }
        // A small reply goes out on this thread, with no hop to the
        // writer; a large one, or one queued behind a send that is under
        // way, is the writer's, so this thread goes back to reading and
        // sees the backlog grow if the child does not read.
        if link.out.send_or_kick(INLINE_REPLY).is_err() {
            return cut(hub, link, up.closed());
        }
    }
}

/// Ends a link whose pipe failed, saying why: the child closed it, or broke
/// its rules (a violation, logged).
fn cut(hub: &Hub, link: &Link, e: PipeError) {
    match e {
        PipeError::Closed => hub.disconnect(link, "the child closed its link"),
        PipeError::Corrupt(why) => {
            hub.violation(link, format!("malformed data on its link: {why}"))
        }
    }
}
