//! `PubSub`: the one handle to topics in every process.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;
use serde::de::DeserializeOwned;
use yuki_channel::{PeerEvent, PeerId, Role, Transport, codec};

use crate::error::{Error, Result};
use crate::inbox::{DEFAULT_CAPACITY, End, Envelope, Inbox};
use crate::pattern::{Pattern, check_topic};
use crate::registry::Registry;
use crate::router::Router;
use crate::subscription::Subscription;
use crate::wire::{Push, Reply, Request, SERVICE};

/// Publish/subscribe topics, shared by every process of an application.
///
/// The same type works in main, in a child and in one process alone:
///
/// - [`PubSub::local`]: topics within this process only;
/// - [`PubSub::attach`] on main's transport: main keeps the table of which
///   process subscribed to what, and forwards each message only where it is
///   wanted, once per process;
/// - [`PubSub::attach`] on a child's transport: publishing and subscribing go
///   through main.
///
/// `PubSub` is cheap to clone; clones share one state. Attaching twice to one
/// transport also gives the same state.
///
/// Delivery is FIFO per publisher per subscription. Every subscription has a
/// bounded buffer ([`PubSub::with_capacity`], default
/// [`DEFAULT_CAPACITY`]): a slow subscriber loses its oldest messages and
/// learns how many ([`Error::Lagged`]); it never stalls a publisher, main or
/// other subscribers.
#[derive(Clone)]
pub struct PubSub {
    shared: Arc<Shared>,
    transport: Option<Arc<dyn Transport>>,
    capacity: usize,
}

/// The state every handle of one process shares.
#[derive(Debug)]
pub(crate) struct Shared {
    local: Registry,
    /// Main's routing table (main only).
    router: Option<Router>,
    /// Why main is gone (child only).
    gone: Mutex<Option<String>>,
}

impl Shared {
    fn new(router: Option<Router>) -> Shared {
        Shared {
            local: Registry::default(),
            router,
            gone: Mutex::new(None),
        }
    }

    fn gone(&self) -> Option<String> {
        self.gone.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Delivers a message published in main or received by main: to this
    /// process's subscriptions, and once to each child that wants it.
    fn route(&self, transport: Option<&dyn Transport>, topic: &str, payload: &[u8]) -> usize {
        let mut reached = self.local.deliver(topic, || Envelope {
            topic: shared_topic(topic),
            payload: payload.into(),
        });
        let (Some(router), Some(transport)) = (&self.router, transport) else {
            return reached;
        };
        let mut targets = TARGETS.take();
        router.targets(topic, &mut targets);
        if !targets.is_empty() {
            let mut frame = scratch();
            match codec::encode_into(&Push::Message { topic, payload }, &mut frame) {
                Ok(()) => {
                    for &(peer, n) in &targets {
                        if router.push(transport, peer, topic, &frame) {
                            reached += n as usize;
                        }
                    }
                }
                Err(e) => tracing::error!(topic, error = %e, "cannot encode a push frame"),
            }
            keep_scratch(frame);
        }
        TARGETS.set(targets);
        reached
    }

    /// Handles a frame main pushed to this child.
    fn on_push(&self, frame: &[u8]) {
        match codec::decode_borrowed::<Push<'_>>(frame) {
            Ok(Push::Message { topic, payload }) => {
                self.local.deliver(topic, || Envelope {
                    topic: shared_topic(topic),
                    payload: payload.into(),
                });
            }
            Ok(Push::Lost { pattern, count }) => match Pattern::new(pattern) {
                Ok(pattern) => self.local.lose(&pattern, count),
                Err(e) => tracing::warn!(error = %e, "main reported a loss for a bad pattern"),
            },
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed pub/sub frame from main"),
        }
    }

    /// Serves a child's request in main.
    fn serve(
        &self,
        transport: &dyn Transport,
        from: PeerId,
        request: &[u8],
        reply: &mut Vec<u8>,
    ) -> yuki_channel::Result<()> {
        let (Some(router), request) = (
            &self.router,
            codec::decode_borrowed::<Request<'_>>(request)?,
        ) else {
            return Err(yuki_channel::Error::disconnected(
                "pub/sub is not served here",
            ));
        };
        let answer = match request {
            Request::Publish { topic, payload } => match check_topic(topic) {
                Ok(()) => Reply::Done(self.route(Some(transport), topic, payload) as u64),
                Err(e) => Reply::Refused(e.to_string()),
            },
            Request::Subscribe { pattern } => match Pattern::new(pattern) {
                Ok(p) => {
                    router.add(from, &p);
                    Reply::Done(0)
                }
                Err(e) => Reply::Refused(e.to_string()),
            },
            Request::Unsubscribe { pattern } => match Pattern::new(pattern) {
                Ok(p) => {
                    router.remove(from, &p);
                    Reply::Done(0)
                }
                Err(e) => Reply::Refused(e.to_string()),
            },
        };
        codec::encode_into(&answer, reply)
    }
}

thread_local! {
    /// The targets of the publish in progress on this thread, reused.
    static TARGETS: Cell<Vec<(PeerId, u64)>> = const { Cell::new(Vec::new()) };
    /// Encoding buffers, reused so that a publish allocates nothing for
    /// them. Taken while in use, so a nested publish gets its own.
    static SCRATCH: Cell<Vec<Vec<u8>>> = const { Cell::new(Vec::new()) };
    /// The last topic a message was delivered on here, shared by the next
    /// message on the same topic instead of a new allocation.
    static LAST_TOPIC: Cell<Option<Arc<str>>> = const { Cell::new(None) };
}

/// Buffers larger than this are not kept for reuse.
const KEEP_SCRATCH: usize = 64 << 10;

fn scratch() -> Vec<u8> {
    SCRATCH.with(|s| {
        let mut all = s.take();
        let buf = all.pop().unwrap_or_default();
        s.set(all);
        buf
    })
}

fn keep_scratch(mut buf: Vec<u8>) {
    if buf.capacity() <= KEEP_SCRATCH {
        buf.clear();
        SCRATCH.with(|s| {
            let mut all = s.take();
            if all.len() < 4 {
                all.push(buf);
            }
            s.set(all);
        });
    }
}

/// `topic` as a shared string, reusing the last one made on this thread.
pub(crate) fn shared_topic(topic: &str) -> Arc<str> {
    LAST_TOPIC.with(|last| {
        let shared = match last.take() {
            Some(t) if &*t == topic => t,
            _ => Arc::from(topic),
        };
        last.set(Some(shared.clone()));
        shared
    })
}

/// The per-transport singleton behind [`PubSub::attach`].
struct Attached(Arc<Shared>);

impl PubSub {
    /// Topics within this process only.
    pub fn local() -> PubSub {
        PubSub {
            shared: Arc::new(Shared::new(None)),
            transport: None,
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// Topics shared with every process reached by `transport`.
    ///
    /// In main this serves the pub/sub for the children (do it before they
    /// use it); in a child it connects to main's. Attaching again to the
    /// same transport returns a handle to the same state.
    pub fn attach(transport: Arc<dyn Transport>) -> Result<PubSub> {
        let attached = transport
            .extensions()
            .get_or_try_init::<Attached, Error>(|| {
                let shared = match transport.role() {
                    Role::Main => Self::serve(&transport)?,
                    Role::Child => Self::connect(&transport)?,
                };
                Ok(Attached(shared))
            })?;
        Ok(PubSub {
            shared: attached.0.clone(),
            transport: Some(transport),
            capacity: DEFAULT_CAPACITY,
        })
    }

    fn serve(transport: &Arc<dyn Transport>) -> Result<Arc<Shared>> {
        let shared = Arc::new(Shared::new(Some(Router::default())));
        let (me, link) = (Arc::downgrade(&shared), Arc::downgrade(transport));
        transport.serve(
            SERVICE,
            Arc::new(move |from: PeerId, request: &[u8], reply: &mut Vec<u8>| {
                match (me.upgrade(), link.upgrade()) {
                    (Some(me), Some(link)) => me.serve(&*link, from, request, reply),
                    _ => Err(yuki_channel::Error::disconnected("pub/sub is shut down")),
                }
            }),
        )?;
        let me = Arc::downgrade(&shared);
        transport.on_peer_event(Arc::new(move |event| {
            if let (PeerEvent::Left { peer, .. }, Some(me)) = (event, me.upgrade()) {
                if let Some(router) = &me.router {
                    router.remove_peer(*peer);
                }
            }
        }));
        Ok(shared)
    }

    fn connect(transport: &Arc<dyn Transport>) -> Result<Arc<Shared>> {
        let shared = Arc::new(Shared::new(None));
        let me: Weak<Shared> = Arc::downgrade(&shared);
        transport.on_push(
            SERVICE,
            Arc::new(move |frame| {
                if let Some(me) = me.upgrade() {
                    me.on_push(frame);
                }
            }),
        )?;
        let me = Arc::downgrade(&shared);
        transport.on_peer_event(Arc::new(move |event| {
            if let (PeerEvent::Left { peer, reason }, Some(me)) = (event, me.upgrade()) {
                if *peer == PeerId::MAIN {
                    *me.gone.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                    me.local.end_all(&End::Disconnected(reason.clone()));
                }
            }
        }));
        Ok(shared)
    }

    /// A handle whose new subscriptions and handlers buffer up to `capacity`
    /// messages each (at least 1). Other handles keep their own capacity.
    pub fn with_capacity(&self, capacity: usize) -> PubSub {
        PubSub {
            capacity: capacity.max(1),
            ..self.clone()
        }
    }

    /// The buffer capacity of this handle's new subscriptions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The transport to main, when this is a child.
    fn child_link(&self) -> Option<&Arc<dyn Transport>> {
        self.transport.as_ref().filter(|t| t.role() == Role::Child)
    }

    /// Publishes `message` on `topic` and returns how many subscriptions,
    /// in every process, it reached (from a child, as counted by main).
    ///
    /// Fails with [`Error::InvalidTopic`], [`Error::Encode`], and in a child
    /// with [`Error::Disconnected`] when main is gone or
    /// [`Error::NotAttached`] when main serves no pub/sub.
    pub fn publish<M: Serialize + ?Sized>(&self, topic: &str, message: &M) -> Result<usize> {
        check_topic(topic)?;
        let payload = codec::encode(message)?;
        match self.child_link() {
            None => Ok(self
                .shared
                .route(self.transport.as_deref(), topic, &payload)),
            Some(link) => {
                let request = codec::encode(&Request::Publish {
                    topic,
                    payload: &payload,
                })?;
                read_reply(link.call(SERVICE, &request))
            }
        }
    }

    /// The async form of [`PubSub::publish`]: in a child the request is sent
    /// at once and no thread waits for main's answer.
    pub fn publish_async<M: Serialize + ?Sized>(
        &self,
        topic: &str,
        message: &M,
    ) -> impl Future<Output = Result<usize>> + Send + 'static + use<M> {
        enum Pending<F> {
            Done(Result<usize>),
            Call(F),
        }
        let encoded = codec::encode(message).map_err(Error::from);
        let pending = match (check_topic(topic), encoded) {
            (Err(e), _) | (_, Err(e)) => Pending::Done(Err(e)),
            (Ok(()), Ok(payload)) => match self.child_link() {
                None => Pending::Done(Ok(self.shared.route(
                    self.transport.as_deref(),
                    topic,
                    &payload,
                ))),
                Some(link) => match codec::encode(&Request::Publish {
                    topic,
                    payload: &payload,
                }) {
                    Ok(request) => Pending::Call(link.call_async(SERVICE, &request)),
                    Err(e) => Pending::Done(Err(e.into())),
                },
            },
        };
        async move {
            match pending {
                Pending::Done(result) => result,
                Pending::Call(call) => read_reply(call.await),
            }
        }
    }

    /// Subscribes to every topic `pattern` matches, receiving messages as
    /// `M`. Dropping the subscription unsubscribes.
    ///
    /// Fails with [`Error::InvalidPattern`], and in a child with
    /// [`Error::Disconnected`] or [`Error::NotAttached`].
    pub fn subscribe<M: DeserializeOwned>(&self, pattern: &str) -> Result<Subscription<M>> {
        let inbox = self.open(Pattern::new(pattern)?)?;
        Ok(Subscription::new(self.clone(), inbox))
    }

    /// Registers a subscription's buffer here and, in a child, with main.
    pub(crate) fn open(&self, pattern: Pattern) -> Result<Arc<Inbox>> {
        if let Some(why) = self.shared.gone() {
            return Err(Error::Disconnected(why));
        }
        let inbox = Arc::new(Inbox::new(pattern, self.capacity));
        self.shared.local.add(inbox.clone());
        if let Some(link) = self.child_link() {
            let request = codec::encode(&Request::Subscribe {
                pattern: inbox.pattern().as_str(),
            });
            let done = request
                .map_err(Error::from)
                .and_then(|r| read_reply(link.call(SERVICE, &r)));
            if let Err(e) = done {
                self.shared.local.remove(&inbox);
                return Err(e);
            }
        }
        Ok(inbox)
    }

    /// Unregisters a subscription's buffer; doing it twice does nothing.
    pub(crate) fn close(&self, inbox: &Arc<Inbox>) {
        inbox.end(End::Closed);
        if !self.shared.local.remove(inbox) {
            return;
        }
        let Some(link) = self.child_link() else {
            return;
        };
        if self.shared.gone().is_some() {
            return;
        }
        let pattern = inbox.pattern().as_str();
        match codec::encode(&Request::Unsubscribe { pattern }) {
            Ok(request) => {
                let pattern = pattern.to_owned();
                link.call_with(
                    SERVICE,
                    &request,
                    Box::new(move |reply| {
                        if let Err(e) = read_reply(reply) {
                            tracing::debug!(pattern, error = %e, "unsubscribe did not reach main");
                        }
                    }),
                );
            }
            Err(e) => tracing::error!(pattern, error = %e, "cannot encode an unsubscribe"),
        }
    }
}

fn read_reply(reply: yuki_channel::Result<Vec<u8>>) -> Result<usize> {
    match codec::decode::<Reply>(&reply?)? {
        Reply::Done(n) => Ok(n as usize),
        Reply::Refused(why) => Err(Error::Refused(why)),
    }
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match (&self.transport, &self.shared.router) {
            (None, _) => "local",
            (Some(_), Some(_)) => "main",
            (Some(_), None) => "child",
        };
        f.debug_struct("PubSub")
            .field("mode", &mode)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yuki_channel::InThreadTransport;

    #[test]
    fn main_refuses_bad_requests_and_cuts_off_garbage() {
        let main = InThreadTransport::main();
        let ps = PubSub::attach(main.clone()).unwrap();
        assert_eq!(ps.with_capacity(0).capacity(), 1);
        let child = main.connect("c").unwrap();
        for request in [
            Request::Publish {
                topic: "a..b",
                payload: b"",
            },
            Request::Subscribe { pattern: "a.>.b" },
            Request::Unsubscribe { pattern: "" },
        ] {
            let reply = child.call(SERVICE, &codec::encode(&request).unwrap());
            assert!(matches!(read_reply(reply), Err(Error::Refused(_))));
        }
        // Unsubscribing what was never subscribed changes nothing.
        let reply = child.call(
            SERVICE,
            &codec::encode(&Request::Unsubscribe { pattern: "x" }).unwrap(),
        );
        assert_eq!(read_reply(reply), Ok(0));
        assert!(matches!(
            child.call(SERVICE, b"\xff\xff garbage"),
            Err(yuki_channel::Error::Disconnected(_))
        ));
    }

    #[test]
    fn a_child_ignores_malformed_pushes() {
        let main = InThreadTransport::main();
        let _ps = PubSub::attach(main.clone()).unwrap();
        let child_t = main.connect("c").unwrap();
        let child = PubSub::attach(child_t.clone()).unwrap();
        let sub = child.subscribe::<u8>("x").unwrap();
        main.push(child_t.peer_id(), SERVICE, b"\xff garbage")
            .unwrap();
        let lost = Push::Lost {
            pattern: "bad..pattern",
            count: 3,
        };
        main.push(child_t.peer_id(), SERVICE, &codec::encode(&lost).unwrap())
            .unwrap();
        assert_eq!(sub.try_recv().unwrap_err(), Error::Empty);
    }
}
