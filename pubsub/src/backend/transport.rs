//! Topics shared over any `Transport`: main keeps the table of which child
//! subscribed to what and routes every message ([`Main`]); a child asks main
//! to publish and subscribe for it and fans out what main pushes ([`Child`]).
//!
//! One state per transport, whatever the number of `PubSub::attach` calls:
//! it lives in the transport's extensions ([`attach`]), and the handlers the
//! transport calls hold it weakly, so that it goes with the last handle.

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use yuki_channel::sync;

use yuki_channel::codec::{self, Frames};
use yuki_channel::{PeerEvent, PeerId, Role, Transport};

use super::{Backend, Payloads, Pending};
use crate::error::{Error, Result};
use crate::inbox::End;
use crate::pattern::{Pattern, check_topic};
use crate::router::Router;
use crate::scratch::{keep_scratch, scratch};
use crate::subscribers::Subscribers;
use crate::wire::{Push, Reply, Request, SERVICE};

thread_local! {
    /// The targets of the route in progress on this thread, reused.
    static TARGETS: Cell<Vec<(PeerId, u64)>> = const { Cell::new(Vec::new()) };
}

/// The per-transport singleton behind [`attach`].
enum Attached {
    Main(Arc<MainState>),
    Child(Arc<ChildState>),
}

/// The backend of `PubSub::attach` on `transport`, in main or in a child.
pub(crate) fn attach(transport: Arc<dyn Transport>) -> Result<Arc<dyn Backend>> {
    let attached = transport
        .extensions()
        .get_or_try_init::<Attached, Error>(|| match transport.role() {
            Role::Main => serve(&transport).map(Attached::Main),
            Role::Child => connect(&transport).map(Attached::Child),
        })?;
    Ok(match &*attached {
        Attached::Main(state) => Arc::new(Main {
            state: state.clone(),
            transport,
        }),
        Attached::Child(state) => Arc::new(Child {
            state: state.clone(),
            transport,
        }),
    })
}

/// Main's shared state: its own subscriptions and its children's.
#[derive(Debug)]
struct MainState {
    subscribers: Subscribers,
    router: Router,
}

/// The backend of `PubSub::attach` on main's transport.
struct Main {
    state: Arc<MainState>,
    transport: Arc<dyn Transport>,
}

fn serve(transport: &Arc<dyn Transport>) -> Result<Arc<MainState>> {
    let hub = Arc::new(MainState {
        subscribers: Subscribers::default(),
        router: Router::default(),
    });
    let (me, link) = (Arc::downgrade(&hub), Arc::downgrade(transport));
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
    let (me, link) = (Arc::downgrade(&hub), Arc::downgrade(transport));
    transport.on_push_dropped(
        SERVICE,
        Arc::new(move |peer: PeerId, frames: &[&[u8]]| {
            if let (Some(me), Some(link)) = (me.upgrade(), link.upgrade()) {
                me.router.dropped(&*link, peer, frames);
            }
        }),
    )?;
    let me = Arc::downgrade(&hub);
    transport.on_peer_event(Arc::new(move |event| {
        if let (PeerEvent::Left { peer, .. }, Some(me)) = (event, me.upgrade()) {
            me.router.remove_peer(*peer);
        }
    }));
    Ok(hub)
}

impl MainState {
    /// Delivers messages published in main or received by main: to main's
    /// subscriptions, and once to each child that wants them. Returns how
    /// many deliveries were made (messages × subscriptions).
    fn route(&self, transport: &dyn Transport, topic: &str, payloads: Payloads<'_>) -> usize {
        let mut reached = payloads
            .iter()
            .map(|payload| self.subscribers.deliver(topic.as_bytes(), payload))
            .sum();
        let mut targets = TARGETS.take();
        self.router.targets(topic, &mut targets);
        if !targets.is_empty() {
            let mut frame = scratch();
            let push = match payloads {
                Payloads::One(payload) => Push::Message {
                    topic: topic.as_bytes(),
                    payload,
                },
                Payloads::Batch { frames, .. } => Push::Batch {
                    topic: topic.as_bytes(),
                    payloads: frames,
                },
            };
            let count = payloads.count();
            match codec::encode_into(&push, &mut frame) {
                Ok(()) => {
                    for &(peer, n) in &targets {
                        if self.router.push(transport, peer, topic, &frame, count) {
                            reached += (n * count) as usize;
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

    /// Serves a child's request.
    fn serve(
        &self,
        transport: &dyn Transport,
        from: PeerId,
        request: &[u8],
        reply: &mut Vec<u8>,
    ) -> yuki_channel::Result<()> {
        let answer = match codec::decode_borrowed::<Request<'_>>(request)? {
            Request::Publish { topic, payload } => match check_topic(topic) {
                Ok(()) => Reply::Done(self.route(transport, topic, Payloads::One(payload)) as u64),
                Err(e) => Reply::Refused(e.to_string()),
            },
            Request::PublishBatch {
                topic,
                count,
                payloads,
            } => {
                // A batch that does not split into `count` payloads is a
                // broken peer, not a mistake of its user.
                let mut frames = 0u64;
                for frame in Frames::new(payloads) {
                    frame?;
                    frames += 1;
                }
                if frames != count {
                    return Err(yuki_channel::Error::Decode {
                        type_name: "pub/sub batch",
                        reason: format!("{frames} payloads where {count} were announced"),
                    });
                }
                match check_topic(topic) {
                    Ok(()) => {
                        let batch = Payloads::Batch {
                            frames: payloads,
                            count,
                        };
                        Reply::Done(self.route(transport, topic, batch) as u64)
                    }
                    Err(e) => Reply::Refused(e.to_string()),
                }
            }
            Request::Subscribe { pattern } => match Pattern::new(pattern) {
                Ok(p) => {
                    self.router.add(from, &p);
                    Reply::Done(0)
                }
                Err(e) => Reply::Refused(e.to_string()),
            },
            Request::Unsubscribe { pattern } => match Pattern::new(pattern) {
                Ok(p) => {
                    self.router.remove(from, &p);
                    Reply::Done(0)
                }
                Err(e) => Reply::Refused(e.to_string()),
            },
        };
        codec::encode_into(&answer, reply)
    }
}

impl Main {
    /// Refuses a message the transport could not carry to a child (a
    /// child's call checks its own requests).
    fn check_size(&self, topic: &str, payloads: usize) -> Result<()> {
        // Room for the frame's variant tag and two length prefixes.
        Ok(codec::check_frame(
            topic.len() + payloads + 24,
            self.transport.max_frame(),
        )?)
    }
}

impl Backend for Main {
    fn subscribers(&self) -> &Subscribers {
        &self.state.subscribers
    }

    fn publish(&self, topic: &str, payloads: Payloads<'_>, _: Option<Duration>) -> Result<usize> {
        self.check_size(topic, payloads.len())?;
        Ok(self.state.route(&*self.transport, topic, payloads))
    }

    fn publish_async(&self, topic: &str, payload: &[u8], within: Option<Duration>) -> Pending {
        Pending::Ready(self.publish(topic, Payloads::One(payload), within))
    }

    fn subscribe(&self, _: &Pattern, _: Option<Duration>) -> Result<()> {
        Ok(())
    }

    fn unsubscribe(&self, _: &Pattern) {}

    fn describe(&self, out: &mut fmt::DebugStruct<'_, '_>) {
        out.field("mode", &"main");
    }
}

/// A child's shared state: its subscriptions, and why main is gone.
#[derive(Debug, Default)]
struct ChildState {
    subscribers: Subscribers,
    gone: Mutex<Option<String>>,
}

/// The backend of `PubSub::attach` on a child's transport.
struct Child {
    state: Arc<ChildState>,
    transport: Arc<dyn Transport>,
}

fn connect(transport: &Arc<dyn Transport>) -> Result<Arc<ChildState>> {
    let remote = Arc::new(ChildState::default());
    let me: Weak<ChildState> = Arc::downgrade(&remote);
    transport.on_push(
        SERVICE,
        Arc::new(move |frame| {
            if let Some(me) = me.upgrade() {
                me.on_push(frame);
            }
        }),
    )?;
    let me = Arc::downgrade(&remote);
    transport.on_peer_event(Arc::new(move |event| {
        if let (PeerEvent::Left { peer, reason }, Some(me)) = (event, me.upgrade()) {
            if *peer == PeerId::MAIN {
                *sync::lock(&me.gone) = Some(reason.clone());
                me.subscribers.end_all(&End::Disconnected(reason.clone()));
            }
        }
    }));
    Ok(remote)
}

impl ChildState {
    fn gone(&self) -> Option<String> {
        sync::lock(&self.gone).clone()
    }

    /// Handles a frame main pushed to this child.
    fn on_push(&self, frame: &[u8]) {
        match Push::decode(frame) {
            Ok(Push::Message { topic, payload }) => {
                self.subscribers.deliver(topic, payload);
            }
            Ok(Push::Batch { topic, payloads }) => {
                for payload in Frames::new(payloads) {
                    match payload {
                        Ok(payload) => {
                            self.subscribers.deliver(topic, payload);
                        }
                        Err(e) => tracing::warn!(error = %e, "a truncated batch from main"),
                    }
                }
            }
            Ok(Push::Lost { pattern, count }) => match Pattern::new(pattern) {
                Ok(pattern) => self.subscribers.lose(&pattern, count),
                Err(e) => tracing::warn!(error = %e, "main reported a loss for a bad pattern"),
            },
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed pub/sub frame from main"),
        }
    }
}

impl Child {
    /// Calls main's pub/sub service within `within` (or the transport's
    /// call time-out); a time-out names `operation`.
    fn call_main(
        &self,
        request: &[u8],
        within: Option<Duration>,
        operation: impl FnOnce() -> String,
    ) -> Result<usize> {
        let timeout = within.unwrap_or_else(|| self.transport.call_timeout());
        match self.transport.call_within(SERVICE, request, timeout) {
            Err(yuki_channel::Error::CallTimeout { after, .. }) => Err(Error::CallTimeout {
                operation: operation(),
                after,
            }),
            reply => read_reply(reply),
        }
    }

    /// Asks main to forget one subscription of this child to `pattern`,
    /// without waiting for its answer.
    fn unsubscribe_in_main(&self, pattern: &str) {
        match codec::encode(&Request::Unsubscribe { pattern }) {
            Ok(request) => {
                let pattern = pattern.to_owned();
                self.transport.call_with(
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

impl Backend for Child {
    fn subscribers(&self) -> &Subscribers {
        &self.state.subscribers
    }

    fn publish(
        &self,
        topic: &str,
        payloads: Payloads<'_>,
        within: Option<Duration>,
    ) -> Result<usize> {
        let mut request = scratch();
        let (encoded, operation) = match payloads {
            Payloads::One(payload) => (
                codec::encode_into(&Request::Publish { topic, payload }, &mut request),
                "publish",
            ),
            Payloads::Batch { frames, count } => (
                codec::encode_into(
                    &Request::PublishBatch {
                        topic,
                        count,
                        payloads: frames,
                    },
                    &mut request,
                ),
                "publish_batch",
            ),
        };
        let reply = encoded.map_err(Error::from).and_then(|()| {
            self.call_main(&request, within, || format!("{operation} to {topic:?}"))
        });
        keep_scratch(request);
        reply
    }

    fn publish_async(&self, topic: &str, payload: &[u8], within: Option<Duration>) -> Pending {
        let request = match codec::encode(&Request::Publish { topic, payload }) {
            Ok(request) => request,
            Err(e) => return Pending::Ready(Err(e.into())),
        };
        let timeout = within.unwrap_or_else(|| self.transport.call_timeout());
        let call = self.transport.call_async_within(SERVICE, &request, timeout);
        let operation = format!("publish to {topic:?}");
        Pending::Later(Box::pin(async move {
            match call.await {
                Err(yuki_channel::Error::CallTimeout { after, .. }) => {
                    Err(Error::CallTimeout { operation, after })
                }
                reply => read_reply(reply),
            }
        }))
    }

    fn subscribe(&self, pattern: &Pattern, within: Option<Duration>) -> Result<()> {
        if let Some(why) = self.state.gone() {
            return Err(Error::Disconnected(why));
        }
        let request = codec::encode(&Request::Subscribe {
            pattern: pattern.as_str(),
        });
        let done = request.map_err(Error::from).and_then(|r| {
            self.call_main(&r, within, || {
                format!("subscribe to {:?}", pattern.as_str())
            })
        });
        if let Err(Error::CallTimeout { .. }) = done {
            // Main may still register it: the undo follows it on the link,
            // so main never forwards to no one.
            self.unsubscribe_in_main(pattern.as_str());
        }
        done.map(|_| ())
    }

    fn unsubscribe(&self, pattern: &Pattern) {
        if self.state.gone().is_none() {
            self.unsubscribe_in_main(pattern.as_str());
        }
    }

    fn describe(&self, out: &mut fmt::DebugStruct<'_, '_>) {
        out.field("mode", &"child");
    }
}

pub(crate) fn read_reply(reply: yuki_channel::Result<Vec<u8>>) -> Result<usize> {
    match codec::decode::<Reply>(&reply?)? {
        Reply::Done(n) => Ok(n as usize),
        Reply::Refused(why) => Err(Error::Refused(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PubSub;
    use yuki_channel::InThreadTransport;
    use yuki_channel::codec::mark;

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
