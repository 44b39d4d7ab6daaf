//! The transport seam: how frames travel between main and its children.
//!
//! Everything above this module (hosted channels, the store, pub/sub) talks
//! to other processes only through [`Transport`], a small object-safe trait
//! over byte frames, so any byte carrier can plug in: the in-thread transport
//! of this crate, ipc-channel (yuki-ipc-transport), later a socket or Redis.
//!
//! The seam offers three things:
//!
//! 1. **calls**: a process sends a request frame to a named [`Service`] in
//!    main and gets the reply frame back. Many calls may be in flight at once
//!    from many threads; each is matched to its reply by the transport.
//! 2. **pushes**: main sends a frame to one chosen peer on a named stream;
//!    the peer's handlers for that stream receive it, in the order sent.
//! 3. **lifecycle**: [`PeerEvent`]s tell main when a child joins or leaves,
//!    and tell a child when main is gone.

use crate::sync;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Role, SharedRegion};

/// Identifies one process of an application; main is always [`PeerId::MAIN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(pub u64);

impl PeerId {
    /// The main process.
    pub const MAIN: PeerId = PeerId(0);
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == PeerId::MAIN {
            f.write_str("main")
        } else {
            write!(f, "#{}", self.0)
        }
    }
}

/// A change in the set of connected processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A child connected to main (seen in main).
    Joined {
        /// The child's id, unique for the lifetime of main.
        peer: PeerId,
        /// The name main gave the child.
        name: String,
    },
    /// A child left (seen in main), or main is gone (seen in a child, with
    /// `peer == PeerId::MAIN`). Whatever was pending for that peer is void.
    Left {
        /// Who left.
        peer: PeerId,
        /// Why, in words (exit, crash, protocol violation, shutdown).
        reason: String,
    },
}

/// A handler of calls, served by main under a name.
///
/// `call` may run on any thread: a transport thread serving the caller's
/// link, or the caller's own thread (main's own calls, the in-thread
/// transport). It must not block for long, since other calls wait behind
/// it: answer from memory, or queue the work and answer later with a push.
/// It writes its reply into `reply`, which is empty on entry. An `Err`
/// means the caller broke the protocol (a malformed request): a child is
/// disconnected, with the reason logged, and its call fails with
/// [`Error::Disconnected`]; main, which cannot be cut off from itself, gets
/// [`Error::Remote`]. Errors the caller should see belong inside the reply.
pub trait Service: Send + Sync + 'static {
    /// Handles one request frame from `from`.
    fn call(&self, from: PeerId, request: &[u8], reply: &mut Vec<u8>) -> Result<()>;
}

impl<F> Service for F
where
    F: Fn(PeerId, &[u8], &mut Vec<u8>) -> Result<()> + Send + Sync + 'static,
{
    fn call(&self, from: PeerId, request: &[u8], reply: &mut Vec<u8>) -> Result<()> {
        self(from, request, reply)
    }
}

/// Receives the frames pushed to this process on one stream.
pub type PushHandler = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Receives, in main, frames pushed to `peer` on one stream that the
/// transport dropped unsent, oldest first (see [`Transport::on_push_dropped`]).
pub type DropHandler = Arc<dyn Fn(PeerId, &[&[u8]]) + Send + Sync>;

/// Receives peer events.
pub type PeerEventHandler = Arc<dyn Fn(&PeerEvent) + Send + Sync>;

/// Completes a call started with [`Transport::call_with`].
pub type ReplyHandler = Box<dyn FnOnce(Result<Vec<u8>>) + Send>;

/// How long a call waits for main's answer unless told otherwise (30 s).
///
/// ```
/// use yuki_channel::{DEFAULT_CALL_TIMEOUT, InThreadTransport, Transport};
/// assert_eq!(InThreadTransport::main().call_timeout(), DEFAULT_CALL_TIMEOUT);
/// ```
pub const DEFAULT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A carrier of frames between main and its children.
///
/// Implementations guarantee, per pair of processes: replies come back to
/// the call they answer; pushes on a stream arrive in the order sent; after
/// [`PeerEvent::Left`] for main, every pending and later call of a child
/// fails with [`Error::Disconnected`] promptly instead of hanging; a call
/// main does not answer within its deadline fails with
/// [`Error::CallTimeout`], and a reply that comes after that is dropped.
/// The same fault gives the same error over every transport: the
/// conformance suite in `yuki-e2e` checks it.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The role of the process this endpoint lives in.
    fn role(&self) -> Role;

    /// This process's id ([`PeerId::MAIN`] in main).
    fn peer_id(&self) -> PeerId;

    /// The largest frame this transport sends or accepts.
    fn max_frame(&self) -> usize;

    /// Sends `request` to `service` in main and blocks until its reply, for
    /// at most [`Transport::call_timeout`].
    ///
    /// In main the service is called directly. Fails with
    /// [`Error::FrameTooLarge`] for an oversized request (before sending
    /// it) or reply, [`Error::NoService`] when main serves no such name,
    /// [`Error::Disconnected`] when main is gone (or cut this child off for
    /// a malformed request), [`Error::Remote`] when main's own call is
    /// refused by its service, and [`Error::CallTimeout`] when no answer
    /// came in time.
    fn call(&self, service: &str, request: &[u8]) -> Result<Vec<u8>>;

    /// Sends `request` to `service` and returns at once; `done` runs with the
    /// reply (or the error) on a transport thread, or on this one when the
    /// answer is known at once, so it must be quick. It runs exactly once,
    /// with [`Error::CallTimeout`] when no answer came within
    /// [`Transport::call_timeout`]. This is what pipelined and async
    /// callers use.
    fn call_with(&self, service: &str, request: &[u8], done: ReplyHandler);

    /// The deadline of calls that name none (for a child of a `Node`, its
    /// `NodeBuilder::call_timeout`; [`DEFAULT_CALL_TIMEOUT`] unless set).
    fn call_timeout(&self) -> std::time::Duration {
        DEFAULT_CALL_TIMEOUT
    }

    /// [`Transport::call`] with its own deadline. A transport that cannot
    /// bound its waits inherits this form, which ignores `timeout`.
    fn call_within(
        &self,
        service: &str,
        request: &[u8],
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>> {
        let _ = timeout;
        self.call(service, request)
    }

    /// [`Transport::call_with`] with its own deadline (see
    /// [`Transport::call_within`]).
    fn call_with_within(
        &self,
        service: &str,
        request: &[u8],
        timeout: std::time::Duration,
        done: ReplyHandler,
    ) {
        let _ = timeout;
        self.call_with(service, request, done)
    }

    /// Serves calls to `name` with `service` (main only).
    fn serve(&self, name: &str, service: Arc<dyn Service>) -> Result<()>;

    /// Pushes `frame` to `to` on `stream` (main only). Pushing to
    /// [`PeerId::MAIN`] delivers to main's own handlers. Fails with
    /// [`Error::NoPeer`] when the peer has left and [`Error::PeerBacklogged`]
    /// when it does not keep up, so the caller can count what was dropped.
    fn push(&self, to: PeerId, stream: &str, frame: &[u8]) -> Result<()>;

    /// Adds a handler for frames pushed to this process on `stream`. Handlers
    /// run on a transport thread, in order, and must be quick.
    fn on_push(&self, stream: &str, handler: PushHandler) -> Result<()>;

    /// Makes pushes on `stream` lossy, oldest first (main only): when a
    /// peer does not keep up, the transport drops the oldest pushes queued
    /// for it on such streams to make room, and a new push on them is never
    /// refused with [`Error::PeerBacklogged`]. The frames dropped together
    /// are handed to `handler` at once, on the thread whose push or reply
    /// made room, after the transport's own locks are released (so
    /// `handler` may push again, to tell the peer what it lost). A
    /// transport drops well below its limit at once, not one frame per
    /// push, so that such a notice fits without dropping more.
    ///
    /// A transport that queues nothing for a peer (it delivers each push
    /// before returning, or refuses it) drops nothing and may keep this
    /// default, which accepts the handler and never calls it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use yuki_channel::{InThreadTransport, PeerId, Transport};
    ///
    /// let main = InThreadTransport::main();
    /// let lost = Arc::new(AtomicUsize::new(0));
    /// let count = lost.clone();
    /// main.on_push_dropped("feed", Arc::new(move |_peer: PeerId, frames: &[&[u8]]| {
    ///     count.fetch_add(frames.len(), Ordering::Relaxed);
    /// })).unwrap();
    /// let child = main.connect("reader").unwrap();
    /// main.push(child.peer_id(), "feed", b"news").unwrap();
    /// // In one process a push is delivered at once: nothing is ever dropped.
    /// assert_eq!(lost.load(Ordering::Relaxed), 0);
    /// ```
    fn on_push_dropped(&self, stream: &str, handler: DropHandler) -> Result<()> {
        let _ = (stream, handler);
        Ok(())
    }

    /// Adds a handler for peer events.
    fn on_peer_event(&self, handler: PeerEventHandler);

    /// The children connected now (in main; empty in a child).
    fn peers(&self) -> Vec<PeerId>;

    /// Per-transport singletons, so that a component attached twice to one
    /// transport shares one state (see [`Extensions::get_or_try_init`]).
    fn extensions(&self) -> &Extensions;

    /// The memory this process shares with the others for the store to
    /// read without a call: writable in main, read-only in a child. `None`
    /// (the default) where the transport shares no memory, or sharing is
    /// turned off: every read is then a call to main.
    ///
    /// ```
    /// use yuki_channel::{InThreadTransport, Transport};
    /// // In one process there is nothing to share: the map is right here.
    /// assert!(InThreadTransport::main().shared_region().is_none());
    /// ```
    fn shared_region(&self) -> Option<Arc<SharedRegion>> {
        None
    }
}

impl dyn Transport {
    /// The async form of [`Transport::call`]: the request is sent at once,
    /// and the returned future resolves with the reply. No thread waits.
    pub fn call_async(
        &self,
        service: &str,
        request: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>>> + Send + 'static + use<> {
        self.call_async_within(service, request, self.call_timeout())
    }

    /// The async form of [`Transport::call_within`]: `call_async` with its
    /// own deadline.
    pub fn call_async_within(
        &self,
        service: &str,
        request: &[u8],
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send + 'static + use<> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.call_with_within(
            service,
            request,
            timeout,
            Box::new(move |reply| {
                let _ = tx.send(reply);
            }),
        );
        async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::disconnected("the transport dropped the call")))
        }
    }
}

/// One singleton's place; locked alone while it is being created.
type Slot = Arc<Mutex<Option<Arc<dyn Any + Send + Sync>>>>;

/// A type map of per-transport singletons.
#[derive(Default)]
pub struct Extensions {
    slots: Mutex<HashMap<TypeId, Slot>>,
}

impl Extensions {
    /// Returns the `T` stored here, creating it with `init` on first use.
    ///
    /// Concurrent first uses run `init` once; a failed `init` stores nothing,
    /// so a later call tries again. `init` may use other extensions.
    pub fn get_or_try_init<T, E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        let slot = {
            let mut slots = sync::lock(&self.slots);
            slots.entry(TypeId::of::<T>()).or_default().clone()
        };
        let mut slot = sync::lock(&slot);
        if let Some(existing) = slot.as_ref() {
            let existing = existing.clone();
            return Ok(existing.downcast::<T>().expect("slot is keyed by TypeId"));
        }
        let value = Arc::new(init()?);
        *slot = Some(value.clone());
        Ok(value)
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = sync::lock(&self.slots).len();
        f.debug_struct("Extensions").field("len", &n).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_init_once_and_retry_after_failure() {
        let ext = Extensions::default();
        let r: Result<Arc<u32>, &str> = ext.get_or_try_init(|| Err("no"));
        assert!(r.is_err());
        let a = ext.get_or_try_init::<u32, ()>(|| Ok(1)).unwrap();
        let b = ext.get_or_try_init::<u32, ()>(|| Ok(2)).unwrap();
        assert_eq!((*a, *b), (1, 1));
        let s = ext
            .get_or_try_init::<String, ()>(|| {
                // Nested use of another type does not deadlock.
                let n = ext.get_or_try_init::<u32, ()>(|| Ok(3)).unwrap();
                Ok(n.to_string())
            })
            .unwrap();
        assert_eq!(*s, "1");
    }

    #[test]
    fn peer_id_displays() {
        assert_eq!(PeerId::MAIN.to_string(), "main");
        assert_eq!(PeerId(4).to_string(), "#4");
    }
}
