//! The crate's error type.

use std::time::Duration;

/// Everything that can go wrong with topics, publishing and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic given to `publish` is not a valid topic.
    #[error(
        "invalid topic {topic:?}: {reason}; a topic is dot-separated words such as \"chat.room1\", without `*`, `>` or spaces"
    )]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A pattern given to `subscribe` or `on_message` is not a valid pattern.
    #[error(
        "invalid pattern {pattern:?}: {reason}; a pattern is a topic whose segments may be `*` (one segment) or, last, `>` (one or more segments)"
    )]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The subscription fell behind: its buffer overflowed and this many of
    /// the oldest messages were dropped (or main's backlog for this process
    /// dropped them, oldest first, or could not take them). The next receive
    /// returns the next message kept; a loss is reported even when no
    /// message follows it.
    #[error(
        "this subscription fell behind and lost {0} messages; receive faster or subscribe with a larger capacity"
    )]
    Lagged(u64),

    /// The connection to the Redis server was lost and re-established:
    /// messages published meanwhile may have been missed (Redis keeps no
    /// history). The subscription goes on with the next message.
    #[error(
        "the connection to Redis was lost and re-established; messages published meanwhile may have been missed"
    )]
    Reconnected,

    /// A Redis server could not be reached or failed a command.
    #[error("Redis at {address} failed: {reason}; check that the server runs and is reachable")]
    Redis {
        /// The server's address (or the URL as given, when it is malformed).
        address: String,
        /// What went wrong.
        reason: String,
    },

    /// A message was published as another type than the subscription's,
    /// and cannot be read as it without becoming another value. The
    /// subscription goes on with the next message.
    #[error(
        "a message on topic {topic:?} was published as {written} and cannot be read as {type_name} ({reason}); publish and subscribe with the same type"
    )]
    Decode {
        /// The topic the message was published on.
        topic: String,
        /// The type it was published as: a scalar's shape (`i64`,
        /// `string`, ...) or the name of any other type without its paths
        /// (`Point`, `Vec<Point>`).
        written: String,
        /// The type the subscription expects.
        type_name: &'static str,
        /// Why it cannot be read so.
        reason: String,
    },

    /// A message could not be encoded.
    #[error("cannot encode a {type_name}: {reason}")]
    Encode {
        /// The type that was being encoded.
        type_name: &'static str,
        /// What the encoder reported.
        reason: String,
    },

    /// `try_recv` found no message waiting.
    #[error("no message is waiting; call recv to wait for one")]
    Empty,

    /// A wait for a message ran out of time.
    #[error("no message arrived within {0:?}")]
    Timeout(Duration),

    /// Main did not answer within the call's deadline (seen in a child): it
    /// may be frozen (stopped, swapping) or overloaded. A publish may still
    /// be delivered later, a subscription may still be registered.
    #[error(
        "{operation} got no answer from main within {after:?}; main may be frozen or overloaded (the request may still take effect); raise NodeBuilder::call_timeout or use PubSub::with_timeout"
    )]
    CallTimeout {
        /// The operation, in words (such as `publish to "chat.room1"`).
        operation: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// Main is gone (seen in a child): nothing more will arrive, and nothing
    /// can be published.
    #[error(
        "disconnected: {0}; nothing more arrives or can be published and yuki does not reconnect, so finish up and end this process (main starts it again if its restart policy says so)"
    )]
    Disconnected(String),

    /// The subscription was closed by its [`Listener`](crate::Listener) guard.
    #[error("this subscription was closed; subscribe again to receive more")]
    Closed,

    /// Main serves no pub/sub on this transport.
    #[error(
        "main serves no pub/sub; call PubSub::attach on main's transport before the children use it"
    )]
    NotAttached,

    /// An async handler was registered outside a tokio runtime.
    #[error(
        "on_message_async needs a tokio runtime; call it from within one (for example inside #[tokio::main])"
    )]
    NoRuntime,

    /// A handler thread could not be started.
    #[error("cannot start a handler thread: {0}; the process is out of threads or memory")]
    Spawn(String),

    /// Main refused a request from this process.
    #[error("main refused the request: {0}")]
    Refused(String),

    /// The transport failed.
    #[error("transport failed: {0}")]
    Transport(#[source] yuki_channel::Error),
}

#[cfg(feature = "redis")]
impl From<yuki_redis_link::LinkError> for Error {
    fn from(e: yuki_redis_link::LinkError) -> Error {
        Error::Redis {
            address: e.address,
            reason: e.failure.to_string(),
        }
    }
}

impl From<yuki_channel::Error> for Error {
    fn from(e: yuki_channel::Error) -> Error {
        match e {
            yuki_channel::Error::Disconnected(why) => Error::Disconnected(why),
            yuki_channel::Error::NoService(_) => Error::NotAttached,
            yuki_channel::Error::CallTimeout { operation, after } => {
                Error::CallTimeout { operation, after }
            }
            yuki_channel::Error::Encode { type_name, reason } => {
                Error::Encode { type_name, reason }
            }
            other => Error::Transport(other),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;
    use std::error::Error as _;
    use std::time::Duration;

    #[test]
    fn a_wrapped_transport_error_is_its_source() {
        let inner = yuki_channel::Error::Timeout(Duration::from_millis(5));
        let e = Error::from(inner.clone());
        assert!(matches!(&e, Error::Transport(t) if *t == inner), "{e:?}");
        let source = e.source().expect("the transport error is the source");
        assert_eq!(source.downcast_ref::<yuki_channel::Error>(), Some(&inner));
        assert!(e.to_string().contains(&inner.to_string()), "{e}");
    }
}
