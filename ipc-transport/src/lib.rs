//! Start-up by role, child bootstrap over ipc-channel, supervision and the
//! shared memory transport of yuki.
//!
//! [`Node::init`] is the one call a program makes at start-up. In the main
//! process it starts the server side; in a child (the `YUKI_BOOTSTRAP`
//! variable is set by [`Node::spawn`]) it connects to main, presents a
//! one-time token and learns its peer id and name. [`Node::transport`] is
//! the [`Transport`](yuki_channel::Transport) the store, pub/sub and hosted
//! channels attach to.
//!
//! ```no_run
//! use std::process::Command;
//! use std::sync::Arc;
//! use std::time::Duration;
//! use yuki_channel::{PeerId, Role};
//! use yuki_ipc_transport::Node;
//!
//! let node = Node::init()?;
//! let transport = node.transport();
//! if node.role() == Role::Main {
//!     transport.serve("echo", Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
//!         reply.extend_from_slice(req);
//!         Ok(())
//!     }))?;
//!     let exe = std::env::current_exe().unwrap();
//!     let worker = node.spawn("worker", Command::new(exe))?;
//!     worker.wait_timeout(Duration::from_secs(10))?;
//! } else {
//!     assert_eq!(transport.call("echo", b"hi")?, b"hi");
//! }
//! # Ok::<(), yuki_ipc_transport::Error>(())
//! ```
//!
//! # How frames travel
//!
//! Each child has one persistent link: a region of shared memory that the
//! child makes during the handshake and main checks, holding one byte pipe
//! each way. A message costs a copy in and a copy out and no system call
//! while the reader is awake; a reader with nothing to read sleeps on a
//! futex in the region until the writer wakes it. Beside the region, an
//! ipc-channel socket from main carries nothing: the child watches its end,
//! and when main ends, the link closes and every waiter on it wakes (main
//! learns of a child's end from its exit). Linux only: elsewhere there is
//! no futex, and ipc-channel may copy the region instead of sharing it. Neither side trusts the other's half of the region: positions
//! and lengths are checked and bytes copied out before they are parsed, so
//! a child that breaks the link's rules is cut off. (A child can still make
//! main fault by shrinking the region's memory file; children are processes
//! main spawned, under its own user, which could as well signal it.) Calls
//! carry request ids, so many threads of a child can have calls
//! in flight; frames queued while a message is being sent leave together in
//! the next one (requests, replies and pushes alike). Main reads each link
//! on its own thread and runs the services inline. In a child, a lone
//! caller reads its own reply from the link (no thread hop); when several
//! callers wait, a background reader serves them all, and it also delivers
//! pushes and notices at once when main is gone. Both ends of a link that
//! was just busy poll it briefly before they block
//! ([`NodeBuilder::reply_spin`]): waking a sleeping thread on another core
//! costs more than the round trip itself.
//!
//! # The handshake socket
//!
//! ipc-channel binds each child's one-shot server as `socket` in a new
//! directory of the system temporary directory (`$TMPDIR`, else `/tmp`).
//! yuki sets that directory to mode `0700` and the socket to `0600` right
//! after it is created, and a child must present a 128-bit token besides.
//! To leave no window at all, start main with `TMPDIR` set to a directory
//! only its user can open.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod child_side;
mod error;
mod futex;
mod main_side;
mod node;
mod outbound;
mod pipe;
mod raw;
mod rendezvous;
mod spin;
mod stop;
mod supervise;
mod transport;
mod wire;

pub use child_side::WhenMainGone;
pub use error::{Error, Result};
pub use node::{ChildBuilder, Node, NodeBuilder};
#[doc(hidden)]
pub use raw::RawRegion;
pub use stop::WaitForStop;
pub use supervise::{ChildHandle, Exit, Lifecycle, Restart, RestartPolicy};
pub use transport::IpcTransport;
