//! The key-value store of yuki: owned by the main process, reachable from
//! every process with the same API.
//!
//! A [`Store`] maps non-empty string keys to values of any serde type, kept
//! encoded. In main (or with [`Store::local`]) the data lives in a sharded
//! concurrent map in this process; in a child, [`Store::attach`] turns every
//! operation into one call to main over the transport, where it is applied
//! atomically. A write returns only after main applied it.
//!
//! Beyond `set`/`get`/`delete` there are counters ([`Store::incr`]),
//! compare-and-swap, time-to-live and its queries as in Redis
//! ([`Store::ttl`], [`Store::expire`], [`Store::persist`]), keys by prefix
//! or by glob pattern ([`Store::keys_matching`]), atomic [`Batch`]es sent
//! as one frame, change streams ([`Store::watch`]) and an async form of
//! every operation.
//!
//! Every operation is one request run by the store's backend
//! (`backend/`): main's map in this process, a child's link to main, or a
//! Redis server. The map answers in place, without encoding; main serves
//! children with the same code.
//!
//! With the `redis` feature, `Store::redis(url)` gives the same `Store` kept
//! in a Redis server, for processes on several machines (see
//! `backend/redis.rs` for how each operation maps onto Redis and what
//! differs).
//!
//! # Guarantees
//!
//! - Each operation is applied whole in main, under the lock of its key's
//!   shard; a write returns after main applied it, so any process that reads
//!   after it returned sees it. Operations on one key are linearizable; one
//!   thread's operations apply in the order it made them.
//! - A [`Batch`] is applied in order with the locks of every shard it
//!   touches held together (taken in shard order, so batches cannot
//!   deadlock); `get_all`, `keys`, `keys_matching`, `len` and `clear` hold every shard's lock
//!   together. So a snapshot never shows a batch half applied, and is a real
//!   instant of the store, not a walk over a changing map.
//! - A [`Watch`] sees every change under its prefix made after `watch`
//!   returned, in the order main applied them (changes to one key in their
//!   exact order); expiry shows as a removal when main purges the key.
//! - When main is gone, every call fails with [`Error::Disconnected`] and
//!   every watch ends with it: nothing waits forever.
//! - When main is alive but does not answer (stopped, swapping,
//!   overloaded), a child's call fails with [`Error::CallTimeout`] at its
//!   deadline: the transport's (`NodeBuilder::call_timeout`, 30 s by
//!   default), or the one of a [`Store::with_timeout`] view. A write that
//!   timed out may still be applied by main later.
//!
//! # Limits
//!
//! Keys are UTF-8, at most [`MAX_KEY_LEN`] bytes, and never empty (an empty
//! key is refused with [`Error::EmptyKey`] everywhere: it is almost always a
//! name that was never filled in). Encoded values are at most
//! [`Config::max_value_len`] bytes (default [`MAX_VALUE_LEN`]). Both are
//! checked before anything is sent, and again by main.
//! Values are compared (compare-and-swap) by their stored bytes.
//!
//! # Types
//!
//! Values are stored marked with their type (`yuki_channel::codec::mark`:
//! one byte naming a scalar's shape, or a fingerprint and the short name
//! of any other type, then bincode 2 bytes), the same bytes in every backend. Reading a value as
//! another type than it was written with gives the same value when the
//! asked type holds it (an integer as any integer type in whose range it
//! is, a string as any string type, `Some`/`None` as their contents are)
//! and otherwise [`Error::WrongType`] naming the key and both types: never
//! another value, never a panic. Structs, enums, tuples and sequences read
//! only as a type of the same name. [`Store::incr`] works on a value
//! written as any integer type up to 64 bits and keeps its type.
//! [`Store::get_raw`] gives the marked bytes; [`Store::set_raw`] stores
//! bytes of a program's own format as they are.
//!
//! ```
//! use yuki_channel::InThreadTransport;
//! use yuki_storage::Store;
//!
//! let main = InThreadTransport::main();
//! let store = Store::attach(main.clone()).unwrap();
//! let child = Store::attach(main.connect("worker").unwrap()).unwrap();
//!
//! child.set("visits", &1i64).unwrap();
//! assert_eq!(store.incr("visits", 2).unwrap(), 3);
//! assert_eq!(child.get::<i64>("visits").unwrap(), Some(3));
//! assert!(child.delete("visits").unwrap());
//! assert_eq!(store.get_or("visits", 0i64).unwrap(), 0);
//!
//! child.set_with_ttl("session.1", "ann", std::time::Duration::from_secs(60)).unwrap();
//! assert!(store.ttl("session.1").unwrap().is_some());
//! assert!(child.persist("session.1").unwrap());
//! assert_eq!(store.keys_matching("session.?").unwrap(), ["session.1"]);
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod backend;
mod batch;
mod clock;
mod data;
mod entry;
mod error;
mod glob;
mod limits;
mod mirror;
mod protocol;
mod service;
mod shards;
mod shared;
mod store;
mod strings;
mod value;
mod watch;

#[cfg(feature = "redis")]
pub use backend::redis::DEFAULT_NAMESPACE;
pub use batch::{Batch, Outcome};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use limits::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use store::{Config, Store};
pub use watch::{Change, Watch};
