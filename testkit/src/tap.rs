//! A transport wrapper that lets a test watch and disturb main's pushes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use yuki_channel::sync::lock;

use yuki_channel::{
    DropHandler, Error, Extensions, InThreadTransport, PeerEventHandler, PeerId, PushHandler,
    ReplyHandler, Role, Service, Transport,
};

/// Wraps an in-thread endpoint: counts pushes per peer and can make pushes
/// to one peer fail with [`Error::PeerBacklogged`], as if it did not read
/// ([`Tap::stick`]), or queue them in a bounded backlog that drops the
/// oldest on lossy streams, as the transport across processes does
/// ([`Tap::hold`]).
///
/// It has extensions of its own, so a component attached through the tap
/// is not the one attached to the wrapped endpoint.
///
/// ```
/// use yuki_channel::{InThreadTransport, Transport};
/// use yuki_testkit::Tap;
///
/// let network = InThreadTransport::main();
/// let child = network.connect("c").unwrap();
/// let tap = Tap::new(network.clone());
/// tap.push(child.peer_id(), "s", b"x").unwrap();
/// assert_eq!(tap.pushes(child.peer_id()), 1);
/// tap.stick(Some(child.peer_id()));
/// assert!(tap.push(child.peer_id(), "s", b"x").is_err());
/// ```
#[derive(Debug)]
pub struct Tap {
    inner: Arc<InThreadTransport>,
    pushes: Mutex<HashMap<PeerId, u64>>,
    stuck: Mutex<Option<PeerId>>,
    held: Mutex<Option<Held>>,
    lossy: Mutex<Lossy>,
    extensions: Extensions,
}

/// The lossy streams and their drop handlers.
#[derive(Default)]
struct Lossy(HashMap<String, Vec<DropHandler>>);

impl std::fmt::Debug for Lossy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The pushes held back for one peer.
#[derive(Debug)]
struct Held {
    peer: PeerId,
    capacity: usize,
    queue: VecDeque<(String, Vec<u8>)>,
}

impl Tap {
    /// Wraps `inner`.
    pub fn new(inner: Arc<InThreadTransport>) -> Arc<Tap> {
        Arc::new(Tap {
            inner,
            pushes: Mutex::default(),
            stuck: Mutex::default(),
            held: Mutex::default(),
            lossy: Mutex::default(),
            extensions: Extensions::default(),
        })
    }

    /// The wrapped endpoint (to disconnect it, for instance).
    pub fn inner(&self) -> &Arc<InThreadTransport> {
        &self.inner
    }

    /// How many pushes reached `peer` through the tap.
    pub fn pushes(&self, peer: PeerId) -> u64 {
        lock(&self.pushes).get(&peer).copied().unwrap_or(0)
    }

    /// How many pushes reached any peer through the tap.
    pub fn total_pushes(&self) -> u64 {
        lock(&self.pushes).values().sum()
    }

    /// Makes pushes to `peer` fail as backlogged (`None`: none fail).
    pub fn stick(&self, peer: Option<PeerId>) {
        *lock(&self.stuck) = peer;
    }

    /// Holds pushes to `peer` back, as if it read nothing, until
    /// [`Tap::release`]: at most `capacity` wait. Past that, a push drops
    /// the oldest held pushes on streams made lossy with
    /// [`Transport::on_push_dropped`], down to three quarters of
    /// `capacity` (each handed to its drop handlers), and is held; a push
    /// for which none could be dropped fails with [`Error::PeerBacklogged`].
    /// Releases any peer held before.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use yuki_channel::{InThreadTransport, Transport};
    /// use yuki_testkit::Tap;
    ///
    /// let network = InThreadTransport::main();
    /// let child = network.connect("c").unwrap();
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// child.on_push("s", Arc::new(move |f| g.lock().unwrap().push(f.to_vec()))).unwrap();
    /// let tap = Tap::new(network.clone());
    /// let lost = Arc::new(Mutex::new(Vec::new()));
    /// let l = lost.clone();
    /// tap.on_push_dropped("s", Arc::new(move |_, fs| {
    ///     l.lock().unwrap().extend(fs.iter().map(|f| f.to_vec()))
    /// })).unwrap();
    /// tap.hold(child.peer_id(), 4);
    /// for f in [b"1", b"2", b"3", b"4", b"5"] {
    ///     tap.push(child.peer_id(), "s", f).unwrap();
    /// }
    /// tap.release();
    /// assert_eq!(*lost.lock().unwrap(), [b"1".to_vec()]);
    /// assert_eq!(got.lock().unwrap().len(), 4);
    /// ```
    pub fn hold(&self, peer: PeerId, capacity: usize) {
        self.release();
        *lock(&self.held) = Some(Held {
            peer,
            capacity: capacity.max(1),
            queue: VecDeque::new(),
        });
    }

    /// Delivers the held pushes, in order, and holds no more.
    pub fn release(&self) {
        let Some(held) = lock(&self.held).take() else {
            return;
        };
        for (stream, frame) in held.queue {
            // A peer that left meanwhile misses them, as it would anyway.
            let _ = self.inner.push(held.peer, &stream, &frame);
        }
    }

    /// Holds `frame` if its peer is held: `None` if it is not.
    fn hold_push(
        &self,
        to: PeerId,
        stream: &str,
        frame: &[u8],
    ) -> Option<yuki_channel::Result<()>> {
        let mut dropped = Vec::new();
        {
            let mut held = lock(&self.held);
            let held = held.as_mut().filter(|h| h.peer == to)?;
            if held.queue.len() >= held.capacity {
                // Down to three quarters, as across processes, so that the
                // loss notices that follow fit without dropping more.
                let lossy = lock(&self.lossy);
                let target = held.capacity / 4 * 3;
                let mut at = 0;
                while held.queue.len() > target && at < held.queue.len() {
                    if let Some(handlers) = lossy.0.get(&held.queue[at].0) {
                        let (_, frame) = held.queue.remove(at).unwrap_or_default();
                        dropped.push((handlers.clone(), frame));
                    } else {
                        at += 1;
                    }
                }
                if dropped.is_empty() {
                    return Some(Err(Error::PeerBacklogged(to)));
                }
            }
            held.queue.push_back((stream.to_owned(), frame.to_vec()));
        }
        for (handlers, frame) in dropped {
            for h in handlers {
                h(to, &[&frame]);
            }
        }
        Some(Ok(()))
    }
}

impl Transport for Tap {
    fn role(&self) -> Role {
        self.inner.role()
    }
    fn peer_id(&self) -> PeerId {
        self.inner.peer_id()
    }
    fn max_frame(&self) -> usize {
        self.inner.max_frame()
    }
    fn call(&self, service: &str, request: &[u8]) -> yuki_channel::Result<Vec<u8>> {
        self.inner.call(service, request)
    }
    fn call_with(&self, service: &str, request: &[u8], done: ReplyHandler) {
        self.inner.call_with(service, request, done)
    }
    fn call_timeout(&self) -> std::time::Duration {
        self.inner.call_timeout()
    }
    fn call_within(
        &self,
        service: &str,
        request: &[u8],
        timeout: std::time::Duration,
    ) -> yuki_channel::Result<Vec<u8>> {
        self.inner.call_within(service, request, timeout)
    }
    fn call_with_within(
        &self,
        service: &str,
        request: &[u8],
        timeout: std::time::Duration,
        done: ReplyHandler,
    ) {
        self.inner.call_with_within(service, request, timeout, done)
    }
    fn serve(&self, name: &str, service: Arc<dyn Service>) -> yuki_channel::Result<()> {
        self.inner.serve(name, service)
    }
    fn push(&self, to: PeerId, stream: &str, frame: &[u8]) -> yuki_channel::Result<()> {
        if *lock(&self.stuck) == Some(to) {
            return Err(Error::PeerBacklogged(to));
        }
        *lock(&self.pushes).entry(to).or_default() += 1;
        if let Some(held) = self.hold_push(to, stream, frame) {
            return held;
        }
        self.inner.push(to, stream, frame)
    }
    fn on_push_dropped(&self, stream: &str, handler: DropHandler) -> yuki_channel::Result<()> {
        self.inner.on_push_dropped(stream, handler.clone())?;
        lock(&self.lossy)
            .0
            .entry(stream.to_owned())
            .or_default()
            .push(handler);
        Ok(())
    }
    fn on_push(&self, stream: &str, handler: PushHandler) -> yuki_channel::Result<()> {
        self.inner.on_push(stream, handler)
    }
    fn on_peer_event(&self, handler: PeerEventHandler) {
        self.inner.on_peer_event(handler)
    }
    fn peers(&self) -> Vec<PeerId> {
        self.inner.peers()
    }
    fn extensions(&self) -> &Extensions {
        &self.extensions
    }
    fn shared_region(&self) -> Option<Arc<yuki_channel::SharedRegion>> {
        self.inner.shared_region()
    }
}
