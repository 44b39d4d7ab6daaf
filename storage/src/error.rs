//! The crate's error type.

use std::time::Duration;

/// Everything that can go wrong with a [`Store`](crate::Store).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Main is gone (or this endpoint was shut down): nothing was applied
    /// after this point, and no call waits for an answer that cannot come.
    #[error(
        "disconnected: {0}; nothing from now on reaches main's store and yuki does not reconnect, so finish up and end this process (main starts it again if its restart policy says so)"
    )]
    Disconnected(String),

    /// A Redis server could not be reached or failed a command.
    #[error("Redis at {address} failed: {reason}; check that the server runs and is reachable")]
    Redis {
        /// The server's address (or the URL as given, when it is malformed).
        address: String,
        /// What went wrong.
        reason: String,
    },

    /// The empty key is refused everywhere: it is almost always a missing name.
    #[error("the key is empty; every key needs at least one byte")]
    EmptyKey,

    /// A key longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("a key of {len} bytes exceeds the maximum of {max} bytes; use a shorter key")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },

    /// An encoded value larger than the store's
    /// [`Config::max_value_len`](crate::Config::max_value_len) (default
    /// [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN)).
    #[error(
        "the value for key {key:?} is {len} bytes encoded, over the maximum of {max}; store smaller values, split them over several keys, or raise Config::max_value_len (main's setting decides; give children the same)"
    )]
    ValueTooLarge {
        /// The key it was meant for.
        key: String,
        /// Its encoded size.
        len: usize,
        /// The maximum.
        max: usize,
    },

    /// A value could not be encoded.
    #[error("cannot encode a {type_name} for key {key:?}: {reason}")]
    Encode {
        /// The key it was meant for.
        key: String,
        /// The Rust type that was being encoded.
        type_name: &'static str,
        /// What the encoder reported.
        reason: String,
    },

    /// The stored value was written as another type than the one asked
    /// for, and cannot be read as it without becoming another value.
    #[error(
        "the value of key {key:?} was written as {written} and cannot be read as {type_name} ({reason}); read it as the type it was written with"
    )]
    WrongType {
        /// The key whose value did not decode.
        key: String,
        /// The type it was written as: a scalar's shape (`i64`, `string`,
        /// `Option<u8>`, ...) or the name of any other type without
        /// its paths (`Point`, `Vec<Point>`).
        written: String,
        /// The type that was asked for.
        type_name: &'static str,
        /// Why it cannot be read so.
        reason: String,
    },

    /// `incr` on a value that was not written as an integer of at most 64
    /// bits.
    #[error(
        "the value of key {key:?} is not an integer counter; incr works on values written as an integer type (i8 to i64, u8 to u64, isize, usize) or created by incr"
    )]
    NotAnInteger {
        /// The key.
        key: String,
    },

    /// `incr` would leave the range of the counter's integer type, or of
    /// the `i64` it returns.
    #[error(
        "incrementing key {key:?} by {by} leaves the range of the integer type it was written with (or of the i64 incr returns); the value is unchanged"
    )]
    Overflow {
        /// The key.
        key: String,
        /// The increment.
        by: i64,
    },

    /// A reply (usually a `get_all` or `keys`) would not fit in one frame.
    #[error(
        "the reply of {size} bytes exceeds the transport's maximum frame of {max} bytes; read fewer keys at once (list keys with a prefix, then get them)"
    )]
    ReplyTooLarge {
        /// The reply's size.
        size: usize,
        /// The transport's maximum frame.
        max: usize,
    },

    /// An operation of a batch was refused before the batch was sent.
    #[error(
        "operation {index} of the batch is invalid: {source}; nothing of the batch was applied"
    )]
    InvalidBatch {
        /// The operation's position in the batch.
        index: usize,
        /// Why.
        source: Box<Error>,
    },

    /// A watcher fell so far behind that its buffer filled; it was closed.
    #[error(
        "the watcher fell behind (its buffer of changes filled) and was closed; drain it faster or give it a larger buffer, then watch again and re-read the keys"
    )]
    WatchLagged,

    /// A wait ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// Main did not answer within the call's deadline: it may be frozen
    /// (stopped, swapping) or overloaded. A write may still be applied
    /// later; its reply is then dropped.
    #[error(
        "{operation} got no answer from main within {after:?}; main may be frozen or overloaded (a write may still be applied); raise NodeBuilder::call_timeout or use Store::with_timeout"
    )]
    CallTimeout {
        /// The operation, in words (such as `store get of "k"`).
        operation: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// Nothing is queued right now (from `Watch::try_recv`).
    #[error("no change is waiting; wait for one with recv or recv_timeout")]
    Empty,

    /// Main answered something this process cannot read.
    #[error(
        "main sent a reply this process cannot read ({0}); main and this process run different versions of yuki"
    )]
    Protocol(String),

    /// The transport failed in another way.
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
            yuki_channel::Error::CallTimeout { operation, after } => {
                Error::CallTimeout { operation, after }
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
