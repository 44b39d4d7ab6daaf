//! The Redis connection and runtime shared by yuki's Redis backends
//! (`Store::redis` in yuki-storage, `PubSub::redis` in yuki-pubsub).
//!
//! Both backends talk to Redis the same way: one RESP3 connection that
//! carries commands and pushed messages alike (a
//! `redis::aio::ConnectionManager`, which reconnects with back-off and
//! subscribes again by itself), driven by one small tokio runtime per
//! process that every backend shares, and called from any thread, inside a
//! runtime or not. This crate holds that, so each backend keeps only what
//! it does with the connection.
//!
//! ```no_run
//! let link = yuki_redis_link::connect("redis://127.0.0.1:6379/", |_address| {
//!     // Pushed messages (subscriptions) go nowhere here.
//!     |_push: redis::PushInfo| Ok::<(), redis::aio::SendError>(())
//! })?;
//! let mut conn = link.conn.clone();
//! let pong: String = yuki_redis_link::block(&link.address, async move {
//!     redis::cmd("PING").query_async(&mut conn).await
//! })??;
//! assert_eq!(pong, "PONG");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig};

/// The longest [`block`] waits for the runtime to answer; the connection's
/// own time-outs normally end a request much sooner.
pub const CALL_LIMIT: Duration = Duration::from_secs(60);

/// Why the link could not do what was asked. Each backend reports it in
/// its own error, naming the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The runtime that drives the connections could not start (the
    /// process may be out of threads).
    #[error("cannot start the Redis runtime: {0}")]
    Runtime(String),
    /// The URL is not one the `redis` crate accepts.
    #[error("not a valid Redis URL: {0}")]
    BadUrl(String),
    /// No connection to the server could be made.
    #[error("{0}")]
    Connect(String),
    /// Nothing answered within [`CALL_LIMIT`].
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The request's task ended before it finished (the runtime is
    /// shutting down).
    #[error("the request was cancelled: {0}")]
    Cancelled(String),
}

/// A [`Failure`] and the server it concerns; each backend turns it into its
/// own error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redis at {address}: {failure}")]
pub struct LinkError {
    /// The server's address, or the URL as given when it is malformed.
    pub address: String,
    /// What went wrong.
    #[source]
    pub failure: Failure,
}

/// The runtime that drives every Redis connection of this process.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, Failure> {
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("yuki-redis")
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| Failure::Runtime(e.to_string()))
}

impl LinkError {
    /// `failure` at the server `address`.
    pub fn new(address: &str, failure: Failure) -> LinkError {
        LinkError {
            address: address.to_owned(),
            failure,
        }
    }
}

/// Runs `future`, a request to the server at `address`, on the runtime and
/// waits for it, for at most [`CALL_LIMIT`], from any thread (inside a
/// runtime or not).
pub fn block<T: Send + 'static>(
    address: &str,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, LinkError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()
        .map_err(|f| LinkError::new(address, f))?
        .spawn(async move {
            let _ = tx.send(future.await);
        });
    rx.recv_timeout(CALL_LIMIT)
        .map_err(|_| LinkError::new(address, Failure::NoAnswer(CALL_LIMIT)))
}

/// Runs `future`, a request to the server at `address`, on the runtime;
/// the result can be awaited from any executor.
pub fn spawn<T: Send + 'static>(
    address: String,
    future: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = Result<T, LinkError>> + Send + 'static {
    let handle = runtime().map(|rt| rt.spawn(future));
    async move {
        let fail = |failure| LinkError { address, failure };
        match handle {
            Ok(handle) => handle
                .await
                .map_err(|e| fail(Failure::Cancelled(e.to_string()))),
            Err(failure) => Err(fail(failure)),
        }
    }
}

/// A connection to one Redis server.
#[derive(Clone)]
pub struct Link {
    /// The server's address, as the errors name it.
    pub address: String,
    /// Commands and subscriptions; cheap to clone.
    pub conn: ConnectionManager,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Connects to the server at `url` over RESP3, handing what the server
/// pushes (subscribed messages, invalidations) to the sender that `pushes`
/// makes from the server's address.
pub fn connect<P: AsyncPushSender>(
    url: &str,
    pushes: impl FnOnce(&str) -> P,
) -> Result<Link, LinkError> {
    let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| LinkError::new(url, Failure::BadUrl(e.to_string())))?;
    let address = info.addr().to_string();
    let fail = |failure: Failure| LinkError::new(&address, failure);
    // Subscriptions share the command connection, which RESP3 allows.
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    info = info.set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| fail(Failure::Connect(e.to_string())))?;
    let config = ConnectionManagerConfig::new()
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(6)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_push_sender(pushes(&address))
        .set_automatic_resubscription();
    let conn = block(&address, ConnectionManager::new_with_config(client, config))?
        .map_err(|e| fail(Failure::Connect(e.to_string())))?;
    Ok(Link { address, conn })
}

/// Appends `text` with the characters Redis globs treat specially
/// escaped, so that it matches only itself in a `PSUBSCRIBE` or `SCAN`
/// pattern.
pub fn escape_glob(text: &str, out: &mut Vec<u8>) {
    for b in text.bytes() {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'^') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_escape_what_redis_treats_specially() {
        let mut out = Vec::new();
        escape_glob("a*b?[c]\\d^e.f", &mut out);
        assert_eq!(out, b"a\\*b\\?\\[c\\]\\\\d\\^e.f");
    }

    #[test]
    fn a_malformed_url_is_named_and_refused() {
        let err = connect("not a url", |_| {
            |_: redis::PushInfo| Ok::<(), redis::aio::SendError>(())
        })
        .unwrap_err();
        assert_eq!(err.address, "not a url");
        assert!(matches!(err.failure, Failure::BadUrl(_)), "{err}");
        assert!(err.to_string().contains("not a url"), "{err}");
    }

    #[test]
    fn futures_run_on_the_runtime_from_any_thread() {
        assert_eq!(block("here", async { 7 }), Ok(7));
        let spawned = spawn("here".to_owned(), async { 8 });
        assert_eq!(block("here", spawned), Ok(Ok(8)));
    }
}
