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
//! compare-and-swap, time-to-live, atomic [`Batch`]es sent as one frame,
//! change streams ([`Store::watch`]) and an async form of every operation.
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
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod batch;
mod clock;
mod data;
mod error;
mod limits;
mod protocol;
mod remote;
mod service;
mod shards;
mod store;
mod value;
mod watch;

pub use batch::{Batch, Outcome};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use limits::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use store::{Config, Store};
pub use watch::{Change, Watch};
