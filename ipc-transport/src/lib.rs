//! Start-up by role, child bootstrap over ipc-channel, supervision and the
//! transport across processes of yuki, over links of shared memory (Linux)
//! or of ipc-channel (every system).
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
//! # A child's life
//!
//! A child asked to stop ([`ChildHandle::stop`] or `restart` from main, or
//! its own [`Node::request_stop`] / [`Node::request_restart`]) learns of it
//! through [`Node::stop_requested`], [`Node::wait_for_stop`] (timed and
//! async forms, [`WaitForStop`]) or [`Node::on_stop`] hooks, and exits when
//! its program returns from `main`; past the grace period
//! ([`NodeBuilder::stop_timeout`]) main kills it. [`Node`]'s
//! [Stopping](Node#stopping) section gives the whole sequence. Every call a
//! child makes to main has a deadline ([`NodeBuilder::call_timeout`]);
//! main's backlog for a child that does not read is bounded
//! ([`NodeBuilder::max_backlog`]).
//!
//! # How frames travel
//!
//! Each child has one persistent link, of the [`LinkKind`] main picks for
//! it ([`NodeBuilder::link`], [`ChildBuilder::link`], or main's
//! `YUKI_LINK` variable) and names in the handshake. Over ipc-channel
//! (every system), a link is a byte channel each way, one message per
//! batch of frames; each side sees the other go when its channel closes.
//! Over shared memory (Linux, the default there), a link is a region of
//! shared memory that
//! main makes before it spawns the child, holding one byte pipe each way.
//! The region lives in a memory file whose size main seals
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before the child exists;
//! the child inherits the file, and each side checks the size and the
//! seals before it maps it. No process can then resize the file, so a
//! child cannot make main fault (SIGBUS) on its mapping. A message costs a
//! copy in and a copy out and no system call
//! while the reader is awake; a reader with nothing to read sleeps on a
//! futex in the region until the writer wakes it. Beside the region, an
//! ipc-channel socket from main carries nothing: the child watches its end,
//! and when main ends, the link closes and every waiter on it wakes (main
//! learns of a child's end from its exit). Linux only: elsewhere there is
//! no futex and no sealed memory file. Neither side trusts the other's
//! half of the region: its bytes are read and written only with atomic
//! accesses (defined behaviour even while the other process writes the
//! same bytes), positions and lengths are checked and bytes copied out
//! before they are parsed, so a child that breaks the link's rules is cut
//! off. Calls carry request ids, so many threads of a child can have calls
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
//! # The store's shared region
//!
//! Beside the links, main makes one more memory file at start-up (Linux,
//! unless [`NodeBuilder::shared_reads`] is off or `YUKI_SHARED_READS=0`):
//! 16 GiB, sparse (memory is used only as it is written), mapped
//! read-write by main and then sealed against resizing and against any new
//! writable mapping, `write(2)` or hole punching. Every child inherits it
//! at spawn (a restarted one too), checks its size and seals, and maps it
//! read-only; the store keeps there the table its children read without a
//! call ([`Transport::shared_region`](yuki_channel::Transport::shared_region)).
//! [`Node::shared_reads`] tells whether it is on.
//!
//!
//! A child finds main through a link, `socket`, in a directory of main's
//! own (mode `0700` from its creation), pointing at an ipc-channel one-shot
//! server. Such a server takes one connection: a process that connects
//! first with a wrong token, another pid or an unreadable hello is refused,
//! main moves the link to a new server, and the child still joins, until
//! the handshake time-out. ipc-channel binds each server's socket in a new
//! directory of the system temporary directory (`$TMPDIR`, else `/tmp`);
//! yuki sets that directory to mode `0700` and the socket to `0600` right
//! after it is created, and a child must present a 128-bit token besides.
//! To leave no window at all, start main with `TMPDIR` set to a directory
//! only its user can open.
//! That is where ipc-channel's servers are socket files (Linux, the
//! BSDs); on macOS and Windows a server is a name the system keeps (a Mach
//! bootstrap name, a named pipe): the child is given it directly, the
//! token still keeps other processes out, but a process of the same user
//! that connects first makes that child's spawn fail with
//! [`Error::Refused`].
//!
//! # Features
//!
//! `fault-injection` (off by default) adds the hooks that tests use to play
//! a child breaking the link's rules: `Node::send_raw_message` and
//! `RawRegion`. They bypass every check a real child goes through, so a
//! program never turns the feature on; the test crates do.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod child_side;
mod error;
#[cfg(target_os = "linux")]
mod futex;
mod link;
mod main_side;
mod node;
mod outbound;
#[cfg(target_os = "linux")]
mod pipe;
#[cfg(all(feature = "fault-injection", target_os = "linux"))]
mod raw;
mod rendezvous;
#[cfg(target_os = "linux")]
mod sealed;
mod spin;
mod stop;
#[cfg(target_os = "linux")]
mod store_region;
mod supervise;
mod transport;
mod wire;

pub use child_side::WhenMainGone;
pub use error::{Error, Result};
pub use link::{LINK_ENV, LinkKind};
pub use node::{ChildBuilder, Node, NodeBuilder};
#[cfg(all(feature = "fault-injection", target_os = "linux"))]
pub use raw::RawRegion;
pub use stop::WaitForStop;
pub use supervise::{ChildHandle, Exit, Lifecycle, Restart, RestartPolicy};
pub use transport::IpcTransport;
