//! A transport wrapper that lets a test watch and disturb main's pushes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use yuki_channel::{
    Error, Extensions, InThreadTransport, PeerEventHandler, PeerId, PushHandler, ReplyHandler,
    Role, Service, Transport,
};

/// Wraps an in-thread endpoint: counts pushes per peer and can make pushes
/// to one peer fail with [`Error::PeerBacklogged`], as if it did not read.
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
    extensions: Extensions,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tap {
    /// Wraps `inner`.
    pub fn new(inner: Arc<InThreadTransport>) -> Arc<Tap> {
        Arc::new(Tap {
            inner,
            pushes: Mutex::default(),
            stuck: Mutex::default(),
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
        self.inner.push(to, stream, frame)
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
}
