//! Typed channels, process roles and the transport seam of yuki.
//!
//! yuki lets one main process and its children share channels, a key-value
//! store and pub/sub topics as if they were one process. This crate is the
//! bottom layer:
//!
//! - [`Role`], [`role()`] and [`is_main_process()`]: which side this process is;
//! - [`Transport`]: the seam over which frames travel between processes
//!   (calls to services in main, pushes to a peer, peer events), and
//!   [`InThreadTransport`], its in-process implementation;
//! - [`codec`]: how typed values become frames (bincode 2).
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
mod error;
mod hosted;
mod inthread;
mod local;
mod passive;
mod registry;
mod role;
mod transport;

pub use channel::Channel;
pub use error::{Error, Result, SendError, TrySendError};
pub use inthread::InThreadTransport;
pub use passive::ReceiveLoop;
pub use registry::{Registry, lookup, names, register};
pub use role::{BOOTSTRAP_ENV, Role, is_main_process, role};
pub use transport::{
    Extensions, PeerEvent, PeerEventHandler, PeerId, PushHandler, ReplyHandler, Service, Transport,
};
