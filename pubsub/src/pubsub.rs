//! `PubSub`: the one handle to topics in every process.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use yuki_channel::codec::{self, mark};
use yuki_channel::{PeerEvent, PeerId, Role, Transport};

use crate::error::{Error, Result};
use crate::inbox::{DEFAULT_CAPACITY, End, Inbox};
use crate::pattern::{Pattern, check_topic};
use crate::router::Router;
use crate::scratch::{keep_scratch, scratch};
use crate::shared::{Payloads, Shared};
use crate::subscription::Subscription;
use crate::wire::{Reply, Request, SERVICE};

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
///
/// **Byte payloads**: messages are encoded with serde, which writes a plain
/// `Vec<u8>` one element at a time; publish bytes as
/// `serde_bytes::ByteBuf` (or a field marked `#[serde(with = "serde_bytes")]`)
/// and they are copied whole, about ten times faster for large payloads.
#[derive(Clone)]
pub struct PubSub {
    shared: Arc<Shared>,
    transport: Option<Arc<dyn Transport>>,
    capacity: usize,
    /// This handle's call deadline in a child (`None`: the transport's).
    timeout: Option<Duration>,
    #[cfg(feature = "redis")]
    redis: Option<Arc<crate::redis::Link>>,
}

/// A batch is sent in pieces of about this many bytes, each one frame.
const BATCH_BYTES: usize = 64 << 10;

/// The per-transport singleton behind [`PubSub::attach`].
struct Attached(Arc<Shared>);

impl PubSub {
    /// Topics within this process only.
    pub fn local() -> PubSub {
        PubSub {
            shared: Arc::new(Shared::new(None)),
            transport: None,
            capacity: DEFAULT_CAPACITY,
            timeout: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Topics carried by the Redis server at `url` (such as
    /// `redis://127.0.0.1:6379`), shared with every process on every machine
    /// that uses the same server: see [`PubSub::redis_with_namespace`].
    #[cfg(feature = "redis")]
    pub fn redis(url: &str) -> Result<PubSub> {
        PubSub::redis_with_namespace(url, "")
    }

    /// Topics carried by the Redis server at `url`, each on the Redis
    /// channel `namespace` + topic (so `namespace` keeps applications
    /// sharing one server apart).
    ///
    /// Everything works as with the other backends, except:
    /// - [`PubSub::publish`] returns what Redis reports: how many subscribed
    ///   connections (one per `PubSub` and its clones) the message reached,
    ///   not how many subscriptions;
    /// - a message reaches this process's own subscriptions through the
    ///   server, so it may arrive shortly after `publish` returned;
    /// - when the connection drops, calls fail with [`Error::Redis`] until
    ///   it is back (it reconnects by itself, with back-off), and every
    ///   subscription gets [`Error::Reconnected`] once: what was published
    ///   meanwhile is lost.
    ///
    /// Fails with [`Error::Redis`], naming the address, when the URL is
    /// malformed or the server cannot be reached.
    #[cfg(feature = "redis")]
    pub fn redis_with_namespace(url: &str, namespace: &str) -> Result<PubSub> {
        let shared = Arc::new(Shared::new(None));
        let link = crate::redis::Link::connect(url, namespace, &shared)?;
        Ok(PubSub {
            shared,
            transport: None,
            capacity: DEFAULT_CAPACITY,
            timeout: None,
            redis: Some(Arc::new(link)),
        })
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
            timeout: None,
            #[cfg(feature = "redis")]
            redis: None,
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
        // Pushes to a child that does not keep up drop the oldest, and the
        // child is told what it lost.
        let (me, link) = (Arc::downgrade(&shared), Arc::downgrade(transport));
        transport.on_push_dropped(
            SERVICE,
            Arc::new(move |peer: PeerId, frames: &[&[u8]]| {
                if let (Some(me), Some(link)) = (me.upgrade(), link.upgrade()) {
                    if let Some(router) = &me.router {
                        router.dropped(&*link, peer, frames);
                    }
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

    /// A handle to the same topics whose calls to main from a child
    /// (publish, subscribe) wait at most `timeout` for main's answer, in
    /// place of the transport's call time-out (`NodeBuilder::call_timeout`,
    /// 30 s by default); they fail with [`Error::CallTimeout`] when main
    /// does not answer in time. In main and for local topics, where nothing
    /// waits for another process, and for Redis, it changes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// let topics = yuki_pubsub::PubSub::local().with_timeout(Duration::from_millis(300));
    /// assert_eq!(topics.timeout(), Some(Duration::from_millis(300)));
    /// assert_eq!(topics.publish("t", &1u8).unwrap(), 0);
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> PubSub {
        PubSub {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// The deadline set with [`PubSub::with_timeout`], if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Calls main's pub/sub service from a child, within this handle's
    /// deadline; a time-out names `operation`.
    fn call_main(
        &self,
        link: &Arc<dyn Transport>,
        request: &[u8],
        operation: impl FnOnce() -> String,
    ) -> Result<usize> {
        let timeout = self.timeout.unwrap_or_else(|| link.call_timeout());
        match link.call_within(SERVICE, request, timeout) {
            Err(yuki_channel::Error::CallTimeout { after, .. }) => Err(Error::CallTimeout {
                operation: operation(),
                after,
            }),
            reply => read_reply(reply),
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
    /// It never waits for a subscriber: a full buffer drops its oldest
    /// message, and so does main's backlog for a child that does not keep
    /// up with what main sends it (past the transport's limit, such as
    /// `NodeBuilder::max_backlog`). A message queued for a child counts as
    /// reached; one dropped later is not taken back from the count, but
    /// the subscriptions concerned learn every loss as [`Error::Lagged`],
    /// even when nothing is published after it. With no subscriber at all
    /// the message goes nowhere and the count is 0.
    ///
    /// Fails with [`Error::InvalidTopic`], [`Error::Encode`], and in a child
    /// with [`Error::Disconnected`] when main is gone or
    /// [`Error::NotAttached`] when main serves no pub/sub.
    pub fn publish<M: Serialize + ?Sized>(&self, topic: &str, message: &M) -> Result<usize> {
        check_topic(topic)?;
        #[cfg(feature = "redis")]
        if let Some(link) = &self.redis {
            return link.publish_blocking(topic, vec![mark::encode(message)?]);
        }
        let mut payload = scratch();
        let result = mark::encode_into(message, &mut payload)
            .map_err(Error::from)
            .and_then(|()| match self.child_link() {
                None => {
                    self.check_size(topic, payload.len())?;
                    let one = Payloads::One(&payload);
                    Ok(self.shared.route(self.transport.as_deref(), topic, one))
                }
                Some(link) => {
                    let mut request = scratch();
                    let publish = Request::Publish {
                        topic,
                        payload: &payload,
                    };
                    let reply = codec::encode_into(&publish, &mut request)
                        .map_err(Error::from)
                        .and_then(|()| {
                            self.call_main(link, &request, || format!("publish to {topic:?}"))
                        });
                    keep_scratch(request);
                    reply
                }
            });
        keep_scratch(payload);
        result
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
            Call(F, String),
            #[cfg(feature = "redis")]
            Redis(std::pin::Pin<Box<dyn Future<Output = Result<usize>> + Send>>),
        }
        let encoded = mark::encode(message).map_err(Error::from);
        let pending = match (check_topic(topic), encoded) {
            (Err(e), _) | (_, Err(e)) => Pending::Done(Err(e)),
            #[cfg(feature = "redis")]
            (Ok(()), Ok(payload)) if self.redis.is_some() => match &self.redis {
                Some(link) => Pending::Redis(Box::pin(link.publish_spawned(topic, vec![payload]))),
                None => Pending::Done(Err(Error::NotAttached)),
            },
            (Ok(()), Ok(payload)) => match self.child_link() {
                None => Pending::Done(self.check_size(topic, payload.len()).map(|()| {
                    self.shared
                        .route(self.transport.as_deref(), topic, Payloads::One(&payload))
                })),
                Some(link) => match codec::encode(&Request::Publish {
                    topic,
                    payload: &payload,
                }) {
                    Ok(request) => {
                        let timeout = self.timeout.unwrap_or_else(|| link.call_timeout());
                        let operation = format!("publish to {topic:?}");
                        Pending::Call(
                            link.call_async_within(SERVICE, &request, timeout),
                            operation,
                        )
                    }
                    Err(e) => Pending::Done(Err(e.into())),
                },
            },
        };
        async move {
            match pending {
                Pending::Done(result) => result,
                Pending::Call(call, operation) => match call.await {
                    Err(yuki_channel::Error::CallTimeout { after, .. }) => {
                        Err(Error::CallTimeout { operation, after })
                    }
                    reply => read_reply(reply),
                },
                #[cfg(feature = "redis")]
                Pending::Redis(publish) => publish.await,
            }
        }
    }

    /// Publishes every message of `messages` on `topic`, in order, and
    /// returns how many deliveries that made (the sum, over the messages,
    /// of what [`PubSub::publish`] would return).
    ///
    /// The messages travel together, one frame per process per 64 KiB
    /// instead of one per message (and from a child, one call to main):
    /// the fast way to send many. Fails like [`PubSub::publish`]; when a
    /// message cannot be encoded, those before it may have been published.
    pub fn publish_batch<'m, M, I>(&self, topic: &str, messages: I) -> Result<usize>
    where
        M: Serialize + ?Sized + 'm,
        I: IntoIterator<Item = &'m M>,
    {
        check_topic(topic)?;
        #[cfg(feature = "redis")]
        if let Some(link) = &self.redis {
            let payloads = messages
                .into_iter()
                .map(|m| mark::encode(m).map_err(Error::from))
                .collect::<Result<Vec<_>>>()?;
            return link.publish_blocking(topic, payloads);
        }
        let (mut frames, mut one) = (scratch(), scratch());
        let mut count = 0;
        let mut total = 0;
        let mut result = Ok(());
        for message in messages {
            one.clear();
            if let Err(e) = mark::encode_into(message, &mut one) {
                result = Err(e.into());
                break;
            }
            codec::put_frame(&mut frames, &one);
            count += 1;
            if frames.len() >= BATCH_BYTES {
                match self.send_batch(topic, &frames, count) {
                    Ok(n) => total += n,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                frames.clear();
                count = 0;
            }
        }
        if result.is_ok() && count > 0 {
            result = self.send_batch(topic, &frames, count).map(|n| total += n);
        }
        keep_scratch(frames);
        keep_scratch(one);
        result.map(|()| total)
    }

    fn send_batch(&self, topic: &str, frames: &[u8], count: u64) -> Result<usize> {
        match self.child_link() {
            None => {
                self.check_size(topic, frames.len())?;
                let batch = Payloads::Batch { frames, count };
                Ok(self.shared.route(self.transport.as_deref(), topic, batch))
            }
            Some(link) => {
                let mut request = scratch();
                let reply = codec::encode_into(
                    &Request::PublishBatch {
                        topic,
                        count,
                        payloads: frames,
                    },
                    &mut request,
                )
                .map_err(Error::from)
                .and_then(|()| {
                    self.call_main(link, &request, || format!("publish_batch to {topic:?}"))
                });
                keep_scratch(request);
                reply
            }
        }
    }

    /// In main, refuses a message the transport could not carry to a child
    /// (a child's call checks its own requests).
    fn check_size(&self, topic: &str, payload: usize) -> Result<()> {
        match &self.transport {
            // Room for the frame's variant tag and two length prefixes.
            Some(t) => Ok(codec::check_frame(
                topic.len() + payload + 24,
                t.max_frame(),
            )?),
            None => Ok(()),
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
        #[cfg(feature = "redis")]
        if let Some(link) = &self.redis {
            if let Err(e) = link.subscribe(inbox.pattern()) {
                self.shared.local.remove(&inbox);
                return Err(e);
            }
        }
        if let Some(link) = self.child_link() {
            let request = codec::encode(&Request::Subscribe {
                pattern: inbox.pattern().as_str(),
            });
            let done = request.map_err(Error::from).and_then(|r| {
                self.call_main(link, &r, || {
                    format!("subscribe to {:?}", inbox.pattern().as_str())
                })
            });
            if let Err(e) = done {
                self.shared.local.remove(&inbox);
                if matches!(e, Error::CallTimeout { .. }) {
                    // Main may still register it: the undo follows it on
                    // the link, so main never forwards to no one.
                    unsubscribe_in_main(link, inbox.pattern().as_str());
                }
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
        #[cfg(feature = "redis")]
        if let Some(link) = &self.redis {
            link.unsubscribe(inbox.pattern());
        }
        let Some(link) = self.child_link() else {
            return;
        };
        if self.shared.gone().is_some() {
            return;
        }
        unsubscribe_in_main(link, inbox.pattern().as_str());
    }
}

/// Asks main to forget one subscription of this child to `pattern`,
/// without waiting for its answer.
fn unsubscribe_in_main(link: &Arc<dyn Transport>, pattern: &str) {
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

pub(crate) fn read_reply(reply: yuki_channel::Result<Vec<u8>>) -> Result<usize> {
    match codec::decode::<Reply>(&reply?)? {
        Reply::Done(n) => Ok(n as usize),
        Reply::Refused(why) => Err(Error::Refused(why)),
    }
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "redis")]
        if let Some(link) = &self.redis {
            return f
                .debug_struct("PubSub")
                .field("mode", &"redis")
                .field("address", &link.address())
                .field("capacity", &self.capacity)
                .finish_non_exhaustive();
        }
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
    use crate::wire::Push;
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
        // A batch that does not hold what it announces cuts the child off.
        let lying = Request::PublishBatch {
            topic: "x",
            count: 2,
            payloads: b"\x01\x00\x00\x00a",
        };
        let other = main.connect("liar").unwrap();
        assert!(matches!(
            other.call(SERVICE, &codec::encode(&lying).unwrap()),
            Err(yuki_channel::Error::Disconnected(_))
        ));
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
        // A topic that is not text reaches nothing, and what follows arrives.
        for topic in [&b"\xff\xfe"[..], b"x"] {
            let message = Push::Message {
                topic,
                payload: &mark::encode(&7u8).unwrap(),
            };
            main.push(
                child_t.peer_id(),
                SERVICE,
                &codec::encode(&message).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(sub.try_recv().unwrap().into_value(), 7);
        assert_eq!(sub.try_recv().unwrap_err(), Error::Empty);
    }
}
