//! Where a store's data lives, behind one interface.
//!
//! Every operation of [`Store`](crate::Store) is one [`Request`] and is read
//! back from one [`Reply`]: the store builds the request, a backend runs it,
//! and the store reads the reply with a function it hands over. Each backend
//! gets there its own way:
//!
//! - [`Local`](local::Local): main's map in this process; the reply is built
//!   in place, borrowing the map under its lock, never encoded;
//! - [`Remote`](remote::Remote): a child's link to main; the request is
//!   encoded and sent, main's [`StoreService`](crate::service::StoreService)
//!   answers it with the same code the local backend runs;
//! - [`Redis`](redis::Redis) (feature `redis`): the request becomes a Lua
//!   script or a `SCAN` in a Redis server.
//!
//! So a new operation is a new [`Op`](crate::protocol::Op) or [`Request`]
//! variant, one arm in each backend (main's map, the Redis plan and its
//! script) and one method on the store, with its async twin beside it.
//!
//! The backends are an enum, not trait objects: the reading function is
//! generic (a closure per call site), which a trait object could not take
//! without boxing it, and the local `get` must stay a direct call.

pub(crate) mod local;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod remote;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::protocol::{Reply, Request};
use crate::watch::Watch;

/// What every backend does: run a request and hand its reply to `read`,
/// block or await, and open watches.
pub(crate) trait Backend {
    /// Runs `request`; a failure the backend reports arrives as `Err`,
    /// never as a [`Reply::Failed`] given to `read`. `timeout` bounds the
    /// wait of a backend that waits for another process.
    fn execute<R>(
        &self,
        request: Request<'_>,
        timeout: Option<Duration>,
        read: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R>;

    /// The async form of [`Backend::execute`]: the request leaves before
    /// this returns, and the future owns all it needs.
    fn execute_async<R, P>(
        &self,
        request: Request<'_>,
        timeout: Option<Duration>,
        read: P,
    ) -> impl Future<Output = Result<R>> + Send + 'static
    where
        R: Send + 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static;

    /// Watches the keys under `prefix`.
    fn watch(&self, prefix: &str, timeout: Option<Duration>) -> Result<Watch>;

    /// The async form of [`Backend::watch`].
    fn watch_async(
        &self,
        prefix: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Watch>> + Send;
}

/// The backend of one store.
#[derive(Clone)]
pub(crate) enum Any {
    Local(local::Local),
    Remote(Arc<remote::Remote>),
    #[cfg(feature = "redis")]
    Redis(Arc<redis::Redis>),
}

/// Runs `$body` with `$b` bound to whichever backend `$any` holds.
macro_rules! each {
    ($any:expr, $b:ident => $body:expr) => {
        match $any {
            Any::Local($b) => $body,
            Any::Remote($b) => $body,
            #[cfg(feature = "redis")]
            Any::Redis($b) => $body,
        }
    };
}

impl Any {
    #[inline]
    pub(crate) fn execute<R>(
        &self,
        request: Request<'_>,
        timeout: Option<Duration>,
        read: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R> {
        each!(self, b => b.execute(request, timeout, read))
    }

    pub(crate) async fn execute_async<R, P>(
        &self,
        request: Request<'_>,
        timeout: Option<Duration>,
        read: P,
    ) -> Result<R>
    where
        R: Send + 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static,
    {
        each!(self, b => b.execute_async(request, timeout, read).await)
    }

    pub(crate) fn watch(&self, prefix: &str, timeout: Option<Duration>) -> Result<Watch> {
        each!(self, b => b.watch(prefix, timeout))
    }

    pub(crate) async fn watch_async(
        &self,
        prefix: &str,
        timeout: Option<Duration>,
    ) -> Result<Watch> {
        each!(self, b => b.watch_async(prefix, timeout).await)
    }
}
