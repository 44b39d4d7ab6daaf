//! Typed channels, process roles and the transport seam of yuki.
//!
//! yuki lets one main process and its children share channels, a key-value
//! store and pub/sub topics as if they were one process. This crate is the
//! bottom layer:
//!
//! - [`Channel<T>`]: a named FIFO queue that every handle may send to
//!   (`send`, `try_send`, [`Channel::send_timeout`] for a bounded one) and
//!   receive from, actively (`recv`, `recv_timeout`, `try_recv`,
//!   `recv_async`, or as a `futures_core::Stream`) or passively
//!   (`on_receive` handlers run by a [`ReceiveLoop`]). [`Channel::new`] and [`Channel::bounded`] make an
//!   in-process queue (crossbeam-channel underneath, values moved as they
//!   are); [`Channel::open`] opens one hosted by main and shared by every
//!   process over a [`Transport`] ([`Channel::open_with`] with
//!   [`ChannelOptions`]: capacity, prefetch, acknowledgement deadline);
//!   a process opening it with another item type than main's fails at
//!   open with [`Error::ChannelTypeMismatch`];
//! - [`Delivery<T>`]: an item received with acknowledgement
//!   ([`Channel::recv_delivery`]), which the receiver acks or requeues and
//!   which comes back to the queue if its receiver ends first;
//! - [`Registry`] with [`register`], [`lookup`] and [`names`]: channels found
//!   by name;
//! - [`Role`], [`role()`], [`is_main_process()`] and [`set_role()`]: which side this process is;
//! - [`Transport`]: the seam over which frames travel between processes
//!   (calls to services in main, each with a deadline, pushes to a peer,
//!   peer events), and
//!   [`InThreadTransport`], its in-process implementation;
//! - [`SharedRegion`]: memory main shares with its children, which a
//!   transport that can share memory hands to the store
//!   ([`Transport::shared_region`]);
//! - [`codec`]: how typed values become frames (bincode 2), and
//!   [`codec::mark`]: values marked with their type, so the store and
//!   pub/sub read a value as another type as the same value or an error;
//! - [`Error`], the one error type, and [`SendError`] / [`TrySendError`] /
//!   [`SendTimeoutError`], which hand a value that was not sent back to its
//!   sender. A call main does not answer within its deadline
//!   ([`Transport::call_timeout`]) fails with [`Error::CallTimeout`].
//!
//! ```
//! use std::time::Duration;
//! use yuki_channel::{Channel, Error};
//!
//! let orders = Channel::<String>::new("orders");
//! let kitchen = orders.clone();
//! let cook = std::thread::spawn(move || {
//!     let mut cooked = Vec::new();
//!     while let Ok(order) = kitchen.recv() {
//!         cooked.push(order);
//!     }
//!     cooked
//! });
//! orders.send("soup".to_string()).unwrap();
//! orders.send("bread".to_string()).unwrap();
//! orders.close();
//! assert_eq!(cook.join().unwrap(), ["soup", "bread"]);
//!
//! // Every failure says what happened, and a failed send returns the value.
//! let late = orders.send("cake".to_string()).unwrap_err();
//! assert!(late.is_closed());
//! assert_eq!(late.into_inner(), "cake");
//! assert!(matches!(orders.try_recv(), Err(Error::Closed { .. })));
//! ```
//!
//! The transport seam carries frames between processes:
//!
//! ```
//! use std::sync::Arc;
//! use yuki_channel::{InThreadTransport, PeerId, Role, Transport};
//!
//! let main = InThreadTransport::main();
//! main.serve("double", Arc::new(|_from: PeerId, req: &[u8], reply: &mut Vec<u8>| {
//!     let n: u64 = yuki_channel::codec::decode(req)?;
//!     yuki_channel::codec::encode_into(&(n * 2), reply)
//! })).unwrap();
//!
//! let child = main.connect("worker").unwrap();
//! assert_eq!(child.role(), Role::Child);
//! let reply = child.call("double", &yuki_channel::codec::encode(&21u64).unwrap()).unwrap();
//! assert_eq!(yuki_channel::codec::decode::<u64>(&reply).unwrap(), 42);
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod channel;
pub mod codec;
mod delivery;
mod error;
mod hosted;
mod inthread;
mod local;
mod passive;
mod region;
mod registry;
mod role;
mod stream;
pub mod sync;
mod transport;

pub use channel::Channel;
pub use delivery::Delivery;
pub use error::{Error, Result, SendError, SendTimeoutError, TrySendError};
pub use hosted::{ChannelOptions, DEFAULT_PREFETCH, host_channels};
pub use inthread::InThreadTransport;
pub use passive::ReceiveLoop;
pub use region::SharedRegion;
pub use registry::{Registry, lookup, names, register};
pub use role::{BOOTSTRAP_ENV, Role, is_main_process, role, set_role};
pub use transport::{
    DEFAULT_CALL_TIMEOUT, DropHandler, Extensions, PeerEvent, PeerEventHandler, PeerId,
    PushHandler, ReplyHandler, Service, Transport,
};
