//! What carries the topics of a [`PubSub`](crate::PubSub): one [`Backend`]
//! per way, each in a file of its own.
//!
//! - [`local`]: topics within this process;
//! - [`transport`]: topics shared over any `Transport`, served by main
//!   (`Main`) and reached from a child (`Child`);
//! - `redis` (feature `redis`): topics carried by a Redis server.
//!
//! A `PubSub` encodes messages and keeps this process's subscriptions in the
//! backend's [`Subscribers`]; the backend only says where a message goes and
//! how a subscription is made known beyond the process.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use yuki_channel::codec::Frames;

use crate::error::Result;
use crate::pattern::Pattern;
use crate::subscribers::Subscribers;

pub(crate) mod local;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod transport;

/// One way of carrying topics.
///
/// `within` is the handle's call deadline (`PubSub::with_timeout`); only a
/// backend that waits for another process uses it.
pub(crate) trait Backend: Send + Sync + 'static {
    /// This process's subscriptions, which the backend delivers to.
    fn subscribers(&self) -> &Subscribers;

    /// Publishes encoded messages on a checked `topic`; returns how many
    /// deliveries that made (what `PubSub::publish` documents).
    fn publish(
        &self,
        topic: &str,
        payloads: Payloads<'_>,
        within: Option<Duration>,
    ) -> Result<usize>;

    /// Starts publishing one encoded message; what is left to wait for, if
    /// anything, is in the returned [`Pending`] and waits without a thread.
    fn publish_async(&self, topic: &str, payload: &[u8], within: Option<Duration>) -> Pending;

    /// Makes a subscription to `pattern`, already among this process's subscribers, known
    /// beyond this process; on an error the caller takes it out again.
    fn subscribe(&self, pattern: &Pattern, within: Option<Duration>) -> Result<()>;

    /// Undoes one [`Backend::subscribe`], without waiting.
    fn unsubscribe(&self, pattern: &Pattern);

    /// Adds what tells this backend apart to a `PubSub`'s `Debug` form.
    fn describe(&self, out: &mut fmt::DebugStruct<'_, '_>);
}

/// What is left of an async publish.
pub(crate) enum Pending {
    /// Done already (or failed before anything was sent).
    Ready(Result<usize>),
    /// Sent; the answer comes later.
    Later(Pin<Box<dyn Future<Output = Result<usize>> + Send>>),
}

impl Pending {
    pub(crate) async fn wait(self) -> Result<usize> {
        match self {
            Pending::Ready(result) => result,
            Pending::Later(answer) => answer.await,
        }
    }
}

/// What one publish carries: a payload, or a batch written with `put_frame`.
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

    /// The total size of the payloads as they travel.
    pub(crate) fn len(&self) -> usize {
        match self {
            Payloads::One(payload) => payload.len(),
            Payloads::Batch { frames, .. } => frames.len(),
        }
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = &'a [u8]> {
        let (one, frames) = match self {
            Payloads::One(payload) => (Some(payload), None),
            Payloads::Batch { frames, .. } => (None, Some(Frames::new(frames).flatten())),
        };
        one.into_iter().chain(frames.into_iter().flatten())
    }
}
