//! `PubSub`: the one handle to topics in every process.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use yuki_channel::Transport;
use yuki_channel::codec::{self, mark};

use crate::backend::{Backend, Payloads, local::Local, transport};
use crate::error::{Error, Result};
use crate::inbox::{DEFAULT_CAPACITY, End, Inbox};
use crate::pattern::{Pattern, check_topic};
use crate::scratch::{keep_scratch, scratch};
use crate::subscription::Subscription;

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
    /// What carries the topics; clones and attached handles share it.
    backend: Arc<dyn Backend>,
    capacity: usize,
    /// This handle's call deadline in a child (`None`: the transport's).
    timeout: Option<Duration>,
}

/// A batch is sent in pieces of about this many bytes, each one frame.
const BATCH_BYTES: usize = 64 << 10;

impl PubSub {
    /// Topics within this process only.
    pub fn local() -> PubSub {
        PubSub::on(Arc::new(Local::default()))
    }

    fn on(backend: Arc<dyn Backend>) -> PubSub {
        PubSub {
            backend,
            capacity: DEFAULT_CAPACITY,
            timeout: None,
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
        let backend = crate::backend::redis::Redis::connect(url, namespace)?;
        Ok(PubSub::on(Arc::new(backend)))
    }

    /// Topics shared with every process reached by `transport`.
    ///
    /// In main this serves the pub/sub for the children (do it before they
    /// use it); in a child it connects to main's. Attaching again to the
    /// same transport returns a handle to the same state.
    pub fn attach(transport: Arc<dyn Transport>) -> Result<PubSub> {
        transport::attach(transport).map(PubSub::on)
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

    /// The buffer capacity of this handle's new subscriptions.
    pub fn capacity(&self) -> usize {
        self.capacity
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
        let mut payload = scratch();
        let result = mark::encode_into(message, &mut payload)
            .map_err(Error::from)
            .and_then(|()| {
                self.backend
                    .publish(topic, Payloads::One(&payload), self.timeout)
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
        let pending = check_topic(topic)
            .and_then(|()| mark::encode(message).map_err(Error::from))
            .map(|payload| self.backend.publish_async(topic, &payload, self.timeout));
        async move {
            match pending {
                Ok(pending) => pending.wait().await,
                Err(e) => Err(e),
            }
        }
    }

    /// Publishes every message of `messages` on `topic`, in order, and
    /// returns how many deliveries that made (the sum, over the messages,
    /// of what [`PubSub::publish`] would return).
    ///
    /// The messages travel together, one frame per process per 64 KiB
    /// instead of one per message (from a child, one call to main per
    /// 64 KiB; on Redis, one pipeline of `PUBLISH`es per 64 KiB): the fast
    /// way to send many. Fails like [`PubSub::publish`]; when a
    /// message cannot be encoded, those before it may have been published.
    pub fn publish_batch<'m, M, I>(&self, topic: &str, messages: I) -> Result<usize>
    where
        M: Serialize + ?Sized + 'm,
        I: IntoIterator<Item = &'m M>,
    {
        check_topic(topic)?;
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
        let batch = Payloads::Batch { frames, count };
        self.backend.publish(topic, batch, self.timeout)
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

    /// Registers a subscription's buffer here and with the backend.
    pub(crate) fn open(&self, pattern: Pattern) -> Result<Arc<Inbox>> {
        let inbox = Arc::new(Inbox::new(pattern, self.capacity));
        let subscribers = self.backend.subscribers();
        subscribers.add(inbox.clone());
        if let Err(e) = self.backend.subscribe(inbox.pattern(), self.timeout) {
            subscribers.remove(&inbox);
            return Err(e);
        }
        Ok(inbox)
    }

    /// Unregisters a subscription's buffer; doing it twice does nothing.
    pub(crate) fn close(&self, inbox: &Arc<Inbox>) {
        inbox.end(End::Closed);
        if self.backend.subscribers().remove(inbox) {
            self.backend.unsubscribe(inbox.pattern());
        }
    }
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("PubSub");
        self.backend.describe(&mut out);
        out.field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}
