//! Topics carried by a Redis server, for processes on several machines.
//!
//! One RESP3 connection per [`PubSub::redis`](crate::PubSub::redis) carries both the
//! commands and the subscriptions (a `redis::aio::ConnectionManager`, which
//! reconnects with exponential back-off and subscribes again by itself).
//! A pattern without wildcards is a `SUBSCRIBE` on its channel; one with
//! wildcards is a `PSUBSCRIBE` on a glob that selects at least what it
//! selects (`*` and `>` both become `*`, which in Redis also crosses dots),
//! and every message is checked again with [`Pattern::matches`] before it is
//! queued, so the subscription sees exactly what the local backend would give
//! it. Several patterns sharing a channel or glob share one Redis
//! subscription. When the connection drops, every subscription is told
//! [`Error::Reconnected`]: Redis keeps no history, so what was published while
//! it was down is gone.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use yuki_channel::sync;

use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use yuki_redis_link as link;

use super::{Backend, Payloads, Pending};
use crate::error::{Error, Result};
use crate::inbox::Envelope;
use crate::pattern::{Pattern, Segment};
use crate::scratch::shared_topic;
use crate::subscribers::Subscribers;

/// The shared runtime; a failure to start it is this crate's `Spawn`.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    link::runtime().map_err(|e| Error::Spawn(e.to_string()))
}

/// How a yuki pattern is subscribed in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Channel(Vec<u8>),
    Glob(Vec<u8>),
}

/// Which patterns listen on which Redis subscription.
#[derive(Debug, Default)]
struct Routes {
    /// Per Redis subscription, the patterns on it (with their inbox counts).
    by_key: HashMap<Key, Vec<(Pattern, usize)>>,
}

/// What the subscription task does, in order.
enum Op {
    Subscribe(Key, oneshot::Sender<Result<()>>),
    Unsubscribe(Key),
    /// Answers once every earlier operation was done.
    Barrier(oneshot::Sender<Result<()>>),
}

/// The backend of `PubSub::redis`: this process's subscriptions, and its
/// connection to Redis.
pub(crate) struct Redis {
    subscribers: Arc<Subscribers>,
    address: String,
    namespace: String,
    conn: ConnectionManager,
    routes: Arc<Mutex<Routes>>,
    ops: mpsc::UnboundedSender<Op>,
}

/// Receives what the connection pushes: messages and disconnections.
struct Pusher {
    subscribers: Weak<Subscribers>,
    routes: Arc<Mutex<Routes>>,
    namespace: Vec<u8>,
    lost: Arc<tokio::sync::Notify>,
}

impl redis::aio::AsyncPushSender for Pusher {
    fn send(&self, info: PushInfo) -> std::result::Result<(), redis::aio::SendError> {
        let Some(subscribers) = self.subscribers.upgrade() else {
            return Err(redis::aio::SendError);
        };
        match info.kind {
            PushKind::Disconnection => {
                tracing::warn!("lost the connection to Redis; reconnecting");
                subscribers.gap_all();
                self.lost.notify_one();
            }
            PushKind::Message => {
                if let [Value::BulkString(channel), Value::BulkString(payload)] = &info.data[..] {
                    self.deliver(
                        &subscribers,
                        Key::Channel(channel.clone()),
                        channel,
                        payload,
                    );
                }
            }
            PushKind::PMessage => {
                if let [
                    Value::BulkString(glob),
                    Value::BulkString(channel),
                    Value::BulkString(payload),
                ] = &info.data[..]
                {
                    self.deliver(&subscribers, Key::Glob(glob.clone()), channel, payload);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Pusher {
    fn deliver(&self, subscribers: &Subscribers, key: Key, channel: &[u8], payload: &[u8]) {
        let Some(topic) = channel
            .strip_prefix(&self.namespace[..])
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            return;
        };
        let patterns: Vec<Pattern> = {
            let routes = sync::lock(&self.routes);
            match routes.by_key.get(&key) {
                Some(list) => list.iter().map(|(p, _)| p.clone()).collect(),
                None => return,
            }
        };
        let mut envelope = None;
        for pattern in patterns.iter().filter(|p| p.matches(topic)) {
            subscribers.deliver_to(pattern, || {
                envelope
                    .get_or_insert_with(|| Envelope {
                        topic: shared_topic(topic),
                        payload: payload.into(),
                    })
                    .clone()
            });
        }
    }
}

impl Redis {
    /// Connects to the Redis server at `url`, keeping channel names under
    /// `namespace`.
    pub(crate) fn connect(url: &str, namespace: &str) -> Result<Redis> {
        let subscribers = Arc::new(Subscribers::default());
        let routes = Arc::new(Mutex::new(Routes::default()));
        let lost = Arc::new(tokio::sync::Notify::new());
        let pusher = Pusher {
            subscribers: Arc::downgrade(&subscribers),
            routes: routes.clone(),
            namespace: namespace.as_bytes().to_vec(),
            lost: lost.clone(),
        };
        let link::Link { address, conn } = link::connect(url, |_| pusher)?;
        let (ops, rx) = mpsc::unbounded_channel();
        runtime()?.spawn(run_ops(conn.clone(), address.clone(), rx, lost));
        Ok(Redis {
            subscribers,
            address,
            namespace: namespace.to_owned(),
            conn,
            routes,
            ops,
        })
    }

    fn fail(address: &str, e: redis::RedisError) -> Error {
        Error::Redis {
            address: address.to_owned(),
            reason: e.to_string(),
        }
    }

    fn channel(&self, topic: &str) -> Vec<u8> {
        let mut channel = Vec::with_capacity(self.namespace.len() + topic.len());
        channel.extend_from_slice(self.namespace.as_bytes());
        channel.extend_from_slice(topic.as_bytes());
        channel
    }

    fn key(&self, pattern: &Pattern) -> Key {
        let mut out = Vec::new();
        link::escape_glob(&self.namespace, &mut out);
        let mut wild = false;
        for (i, segment) in pattern.segments().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            match segment {
                Segment::Literal(lit) => link::escape_glob(lit, &mut out),
                Segment::One | Segment::Rest => {
                    wild = true;
                    out.push(b'*');
                }
            }
        }
        if wild {
            Key::Glob(out)
        } else {
            Key::Channel(self.channel(pattern.as_str()))
        }
    }

    /// Publishes the encoded messages on `topic` in one pipeline; the
    /// answer is the sum of what Redis reports for each (the subscribed
    /// connections it reached).
    fn publish_later(
        &self,
        topic: &str,
        payloads: Payloads<'_>,
    ) -> impl Future<Output = Result<usize>> + Send + 'static + use<> {
        let channel = self.channel(topic);
        let mut pipe = redis::pipe();
        for payload in payloads.iter() {
            pipe.cmd("PUBLISH").arg(&channel).arg(payload);
        }
        let mut conn = self.conn.clone();
        let address = self.address.clone();
        async move {
            let counts: Vec<usize> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| Redis::fail(&address, e))?;
            Ok(counts.into_iter().sum())
        }
    }

    /// Adds an inbox on `pattern`: subscribes in Redis if it is the first
    /// on its channel or glob, and returns once Redis confirmed.
    fn add(&self, pattern: &Pattern) -> Result<()> {
        let key = self.key(pattern);
        let (tx, rx) = oneshot::channel();
        let sent = {
            let mut routes = sync::lock(&self.routes);
            let list = routes.by_key.entry(key.clone()).or_default();
            let first = list.is_empty();
            match list.iter_mut().find(|(p, _)| p == pattern) {
                Some((_, n)) => *n += 1,
                None => list.push((pattern.clone(), 1)),
            }
            // Sent under the lock, so that a later pattern on the same
            // subscription waits (behind the barrier) until Redis confirmed.
            self.ops.send(if first {
                Op::Subscribe(key, tx)
            } else {
                Op::Barrier(tx)
            })
        };
        let stopped = |address: String| Error::Redis {
            address,
            reason: "the connection task stopped".into(),
        };
        let address = self.address.clone();
        let done = match sent {
            Ok(()) => link::block(&self.address, async move {
                rx.await.unwrap_or_else(|_| Err(stopped(address)))
            })
            .unwrap_or_else(|e| Err(e.into())),
            Err(_) => Err(stopped(address)),
        };
        if done.is_err() {
            self.remove(pattern);
        }
        done
    }

    /// Removes an inbox on `pattern`; the last one on its channel or glob
    /// unsubscribes in Redis (without waiting).
    fn remove(&self, pattern: &Pattern) {
        let key = self.key(pattern);
        {
            let mut routes = sync::lock(&self.routes);
            let Some(list) = routes.by_key.get_mut(&key) else {
                return;
            };
            if let Some(at) = list.iter().position(|(p, _)| p == pattern) {
                list[at].1 -= 1;
                if list[at].1 == 0 {
                    list.swap_remove(at);
                }
            }
            if list.is_empty() {
                routes.by_key.remove(&key);
                let _ = self.ops.send(Op::Unsubscribe(key));
            }
        }
    }
}

impl Backend for Redis {
    fn subscribers(&self) -> &Subscribers {
        &self.subscribers
    }

    fn publish(&self, topic: &str, payloads: Payloads<'_>, _: Option<Duration>) -> Result<usize> {
        link::block(&self.address, self.publish_later(topic, payloads))?
    }

    fn publish_async(&self, topic: &str, payload: &[u8], _: Option<Duration>) -> Pending {
        let spawned = link::spawn(
            self.address.clone(),
            self.publish_later(topic, Payloads::One(payload)),
        );
        Pending::Later(Box::pin(async move { spawned.await? }))
    }

    fn subscribe(&self, pattern: &Pattern, _: Option<Duration>) -> Result<()> {
        self.add(pattern)
    }

    fn unsubscribe(&self, pattern: &Pattern) {
        self.remove(pattern);
    }

    fn describe(&self, out: &mut fmt::DebugStruct<'_, '_>) {
        out.field("mode", &"redis")
            .field("address", &self.address)
            .field("namespace", &self.namespace);
    }
}

/// Applies subscription changes one after the other, so that Redis sees
/// them in the order they were decided; after the connection dropped,
/// pings the server with back-off until it is back, so that a connection
/// that only listens reconnects (and subscribes again) too.
async fn run_ops(
    mut conn: ConnectionManager,
    address: String,
    mut ops: mpsc::UnboundedReceiver<Op>,
    lost: Arc<tokio::sync::Notify>,
) {
    loop {
        let op = tokio::select! {
            op = ops.recv() => op,
            () = lost.notified() => {
                let mut delay = Duration::from_millis(50);
                while let Err(e) = redis::cmd("PING").query_async::<()>(&mut conn).await {
                    tracing::debug!(address, error = %e, "Redis is still unreachable");
                    if ops.is_closed() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                tracing::info!(address, "reconnected to Redis");
                continue;
            }
        };
        let Some(op) = op else { break };
        match op {
            Op::Subscribe(key, done) => {
                let result = match &key {
                    Key::Channel(c) => conn.subscribe(c).await,
                    Key::Glob(g) => conn.psubscribe(g).await,
                };
                let _ = done.send(result.map_err(|e| Redis::fail(&address, e)));
            }
            Op::Barrier(done) => {
                let _ = done.send(Ok(()));
            }
            Op::Unsubscribe(key) => {
                let result = match &key {
                    Key::Channel(c) => conn.unsubscribe(c).await,
                    Key::Glob(g) => conn.punsubscribe(g).await,
                };
                if let Err(e) = result {
                    tracing::debug!(address, error = %e, "an unsubscribe did not reach Redis");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_escape_and_widen() {
        let err = Redis::connect("nonsense://x", "").map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("nonsense://x"), "{err}");
        let mut out = Vec::new();
        link::escape_glob("a*b?[c]\\^", &mut out);
        assert_eq!(out, b"a\\*b\\?\\[c\\]\\\\\\^");
    }
}
