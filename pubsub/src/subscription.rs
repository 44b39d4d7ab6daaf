//! `Subscription`: the receiving end of a pattern, and the `Message`s it yields.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use serde::de::DeserializeOwned;
use yuki_channel::codec::mark;

use crate::error::{Error, Result};
use crate::inbox::{Envelope, Inbox};
use crate::pattern::Pattern;
use crate::pubsub::PubSub;

/// A message received by a subscription: the topic it was published on and
/// its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Message<M> {
    topic: Arc<str>,
    value: M,
}

impl<M> Message<M> {
    /// The topic the message was published on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The value.
    pub fn value(&self) -> &M {
        &self.value
    }

    /// The value, taken out of the message.
    pub fn into_value(self) -> M {
        self.value
    }
}

/// Decodes one buffered message as `M`: the value published, or (when it
/// was published as another type that cannot be read as `M` without
/// becoming another value) [`Error::Decode`] naming the topic and both types.
pub(crate) fn open_envelope<M: DeserializeOwned>(envelope: Envelope) -> Result<Message<M>> {
    match mark::decode::<M>(&envelope.payload) {
        // The topic is moved, not cloned: its count is shared with the
        // thread that delivered, and each change of it costs both threads.
        Ok(value) => Ok(Message {
            topic: envelope.topic,
            value,
        }),
        Err(m) => Err(Error::Decode {
            topic: envelope.topic.to_string(),
            written: m.written,
            type_name: m.asked,
            reason: m.reason,
        }),
    }
}

/// The messages of every topic matching one pattern, decoded as `M`.
///
/// Receive with [`recv`](Subscription::recv),
/// [`recv_timeout`](Subscription::recv_timeout),
/// [`try_recv`](Subscription::try_recv),
/// [`recv_async`](Subscription::recv_async), with a blocking iterator
/// ([`Subscription::iter`], `for m in &subscription`) or as a [`Stream`]. Besides messages, a receive may give
/// [`Error::Lagged`] (messages were lost; the next receive goes on with the
/// oldest kept) or [`Error::Decode`] (one message was not an `M`; the next
/// receive goes on). In a child, once main is gone, receives fail with
/// [`Error::Disconnected`] after the buffered messages.
///
/// Dropping the subscription unsubscribes; when it was the last of its
/// process on its pattern, main stops forwarding that pattern there.
pub struct Subscription<M> {
    pubsub: PubSub,
    inbox: Arc<Inbox>,
    _type: PhantomData<fn() -> M>,
}

impl<M> Subscription<M> {
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }
}

impl<M: DeserializeOwned> Subscription<M> {
    pub(crate) fn new(pubsub: PubSub, inbox: Arc<Inbox>) -> Subscription<M> {
        Subscription {
            pubsub,
            inbox,
            _type: PhantomData,
        }
    }

    /// Waits for the next message.
    pub fn recv(&self) -> Result<Message<M>> {
        self.inbox.next_within(None).and_then(|e| open_envelope(e))
    }

    /// Waits at most `timeout` for the next message; [`Error::Timeout`] if
    /// none came.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message<M>> {
        match self.inbox.next_within(Some(timeout)) {
            Err(Error::Empty) => Err(Error::Timeout(timeout)),
            other => other.and_then(|e| open_envelope(e)),
        }
    }

    /// The next message if one is waiting; [`Error::Empty`] if none is.
    pub fn try_recv(&self) -> Result<Message<M>> {
        self.inbox.try_next().and_then(|e| open_envelope(e))
    }

    /// Waits for the next message without blocking a thread.
    pub async fn recv_async(&self) -> Result<Message<M>> {
        std::future::poll_fn(|cx| self.inbox.poll_next(cx))
            .await
            .and_then(|e| open_envelope(e))
    }

    /// The pattern this subscription receives.
    pub fn pattern(&self) -> &Pattern {
        self.inbox.pattern()
    }

    /// How many messages wait in the buffer.
    pub fn len(&self) -> usize {
        self.inbox.len()
    }

    /// Whether no message waits in the buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's capacity, in messages.
    pub fn capacity(&self) -> usize {
        self.inbox.capacity()
    }
}

/// Ends the iteration, rather than yielding an error, when nothing more can
/// arrive.
fn until_end<M>(item: Result<M>) -> Option<Result<M>> {
    match item {
        Err(Error::Closed | Error::Disconnected(_)) => None,
        other => Some(other),
    }
}

impl<M: DeserializeOwned> Subscription<M> {
    /// A blocking iterator over the messages: lag and decode errors are
    /// items; it ends when nothing more can arrive (main is gone).
    pub fn iter(&self) -> Iter<'_, M> {
        Iter { subscription: self }
    }
}

/// A blocking iterator over a subscription's messages, from
/// [`Subscription::iter`].
#[derive(Debug)]
pub struct Iter<'a, M> {
    subscription: &'a Subscription<M>,
}

impl<M: DeserializeOwned> Iterator for Iter<'_, M> {
    type Item = Result<Message<M>>;

    fn next(&mut self) -> Option<Self::Item> {
        until_end(self.subscription.recv())
    }
}

/// An owning blocking iterator over a subscription's messages.
#[derive(Debug)]
pub struct IntoIter<M> {
    subscription: Subscription<M>,
}

impl<M: DeserializeOwned> Iterator for IntoIter<M> {
    type Item = Result<Message<M>>;

    fn next(&mut self) -> Option<Self::Item> {
        until_end(self.subscription.recv())
    }
}

impl<'a, M: DeserializeOwned> IntoIterator for &'a Subscription<M> {
    type Item = Result<Message<M>>;
    type IntoIter = Iter<'a, M>;

    fn into_iter(self) -> Iter<'a, M> {
        self.iter()
    }
}

impl<M: DeserializeOwned> IntoIterator for Subscription<M> {
    type Item = Result<Message<M>>;
    type IntoIter = IntoIter<M>;

    fn into_iter(self) -> IntoIter<M> {
        IntoIter { subscription: self }
    }
}

/// Like the iterator, without blocking a thread.
impl<M: DeserializeOwned> Stream for Subscription<M> {
    type Item = Result<Message<M>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbox
            .poll_next(cx)
            .map(|item| until_end(item.and_then(|e| open_envelope(e))))
    }
}

impl<M> Drop for Subscription<M> {
    fn drop(&mut self) {
        self.pubsub.close(&self.inbox);
    }
}

impl<M> fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", self.inbox.pattern())
            .field("type", &std::any::type_name::<M>())
            .field("queued", &self.inbox.len())
            .finish()
    }
}
