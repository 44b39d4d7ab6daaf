//! Publish/subscribe topics across every process of a yuki application.
//!
//! Any process publishes on a topic (`chat.room1`) and any process
//! subscribes to a pattern (`chat.*`, `chat.>`). Main keeps the table of
//! which process subscribed to what and sends each message once to each
//! process that wants it; the process fans it out to its subscriptions.
//! [`PubSub`] is the same type in main, in a child and in one process alone.
//!
//! ```
//! use yuki_pubsub::PubSub;
//!
//! # fn main() -> yuki_pubsub::Result<()> {
//! let pubsub = PubSub::local(); // or PubSub::attach(transport)?
//! let chat = pubsub.subscribe::<String>("chat.*")?;
//! let reached = pubsub.publish("chat.room1", "hello")?;
//! assert_eq!(reached, 1);
//!
//! let message = chat.recv()?;
//! assert_eq!(message.topic(), "chat.room1");
//! assert_eq!(message.value(), "hello");
//! # Ok(())
//! # }
//! ```
//!
//! Messages are marked with their type (`yuki_channel::codec::mark`), so a
//! subscription of another type than the message's gets the same value
//! when its type holds it (a non-negative `i64` as a `u64`, a `&str` as a
//! `String`) and otherwise [`Error::Decode`] naming the topic and both
//! types: never another value.
//!
//! - [`Pattern`]: topics and patterns (NATS-like: `*` is one segment, `>`
//!   one or more trailing segments);
//! - [`Subscription`]: the receiving end, bounded: when it falls behind
//!   (or main's backlog for its process fills) the oldest messages go
//!   first and every loss is told as [`Error::Lagged`];
//! - [`listener`]: sync and async callbacks, [`Listener`] guards.
//!
//! A child's `publish` and `subscribe` are calls to main with a deadline
//! (`NodeBuilder::call_timeout`, 30 s by default, or
//! [`PubSub::with_timeout`] for one handle): when main does not answer in
//! time they fail with [`Error::CallTimeout`] (a timed-out subscribe is
//! undone in main).
//!
//! With the `redis` feature, `PubSub::redis(url)` gives the same `PubSub`
//! carried by a Redis server, for processes on several machines (see
//! `backend/redis.rs` for how patterns map onto Redis channels and globs).
//!
//! How a message travels, file by file: [`PubSub::publish`] (`pubsub.rs`)
//! encodes it and hands it to its backend (`backend/`: `local.rs`,
//! `transport.rs`, `redis.rs`). In main, `backend/transport.rs` routes it to
//! this process's subscriptions (`subscribers.rs`, a pattern trie in
//! `table.rs`) and, through main's table of children (`router.rs`), pushes
//! one frame (`wire.rs`) to each child that wants it; there the child's side
//! of `backend/transport.rs` fans it out again into each subscription's
//! bounded buffer (`inbox.rs`), where [`Subscription::recv`]
//! (`subscription.rs`) decodes it. From a child, `publish` is one call to
//! main, which then routes it the same way.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod backend;
mod error;
mod inbox;
pub mod listener;
mod memo;
mod pattern;
mod pubsub;
mod router;
mod scratch;
mod subscribers;
mod subscription;
mod table;
mod wire;

pub use error::{Error, Result};
pub use inbox::DEFAULT_CAPACITY;
pub use listener::Listener;
pub use pattern::Pattern;
pub use pubsub::PubSub;
pub use subscription::{IntoIter, Iter, Message, Subscription};
