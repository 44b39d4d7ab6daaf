//! The state every pub/sub handle of one process shares, and how a
//! message is routed from it: to this process's subscriptions and, in main,
//! once to each child that wants it.

use std::cell::Cell;
use std::sync::Mutex;

use yuki_channel::codec::{self, Frames};
use yuki_channel::{PeerId, Transport};

use crate::pattern::{Pattern, check_topic};
use crate::registry::Registry;
use crate::router::Router;
use crate::scratch::{keep_scratch, scratch};
use crate::wire::{Push, Reply, Request};

thread_local! {
    /// The targets of the route in progress on this thread, reused.
    static TARGETS: Cell<Vec<(PeerId, u64)>> = const { Cell::new(Vec::new()) };
}

/// The state every handle of one process shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) local: Registry,
    /// Main's routing table (main only).
    pub(crate) router: Option<Router>,
    /// Why main is gone (child only).
    pub(crate) gone: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(router: Option<Router>) -> Shared {
        Shared {
            local: Registry::default(),
            router,
            gone: Mutex::new(None),
        }
    }

    pub(crate) fn gone(&self) -> Option<String> {
        self.gone.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Delivers messages published in main or received by main: to this
    /// process's subscriptions, and once to each child that wants them.
    /// Returns how many deliveries were made (messages × subscriptions).
    pub(crate) fn route(
        &self,
        transport: Option<&dyn Transport>,
        topic: &str,
        payloads: Payloads<'_>,
    ) -> usize {
        let mut reached = payloads
            .iter()
            .map(|payload| self.deliver_here(topic.as_bytes(), payload))
            .sum();
        let (Some(router), Some(transport)) = (&self.router, transport) else {
            return reached;
        };
        let mut targets = TARGETS.take();
        router.targets(topic, &mut targets);
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
                        if router.push(transport, peer, topic, &frame, count) {
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

    /// Queues one message in this process's matching subscriptions.
    fn deliver_here(&self, topic: &[u8], payload: &[u8]) -> usize {
        self.local.deliver(topic, payload)
    }

    /// Handles a frame main pushed to this child.
    pub(crate) fn on_push(&self, frame: &[u8]) {
        match Push::decode(frame) {
            Ok(Push::Message { topic, payload }) => {
                self.deliver_here(topic, payload);
            }
            Ok(Push::Batch { topic, payloads }) => {
                for payload in Frames::new(payloads) {
                    match payload {
                        Ok(payload) => {
                            self.deliver_here(topic, payload);
                        }
                        Err(e) => tracing::warn!(error = %e, "a truncated batch from main"),
                    }
                }
            }
            Ok(Push::Lost { pattern, count }) => match Pattern::new(pattern) {
                Ok(pattern) => self.local.lose(&pattern, count),
                Err(e) => tracing::warn!(error = %e, "main reported a loss for a bad pattern"),
            },
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed pub/sub frame from main"),
        }
    }

    /// Serves a child's request in main.
    pub(crate) fn serve(
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
                Ok(()) => {
                    Reply::Done(self.route(Some(transport), topic, Payloads::One(payload)) as u64)
                }
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
                        Reply::Done(self.route(Some(transport), topic, batch) as u64)
                    }
                    Err(e) => Reply::Refused(e.to_string()),
                }
            }
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

/// What one route carries: a payload, or a batch written with `put_frame`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Payloads<'a> {
    One(&'a [u8]),
    Batch { frames: &'a [u8], count: u64 },
}

impl<'a> Payloads<'a> {
    pub(crate) fn count(&self) -> u64 {
        match self {
            Payloads::One(_) => 1,
            Payloads::Batch { count, .. } => *count,
        }
    }

    fn iter(self) -> impl Iterator<Item = &'a [u8]> {
        let (one, frames) = match self {
            Payloads::One(payload) => (Some(payload), None),
            Payloads::Batch { frames, .. } => (None, Some(Frames::new(frames).flatten())),
        };
        one.into_iter().chain(frames.into_iter().flatten())
    }
}
