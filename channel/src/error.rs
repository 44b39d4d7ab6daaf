//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in yuki-channel: channels, the registry, the
/// codec and the transport seam.
///
/// Transports (in this crate and in others) report their failures with this
/// type too, so that code above the seam sees one vocabulary whatever carries
/// its frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other side of the transport is gone (main exited, the link broke,
    /// or this endpoint was shut down).
    #[error(
        "disconnected: {0}; yuki does not reconnect a link, so finish up and end this process (main starts it again if its restart policy says so)"
    )]
    Disconnected(String),

    /// A frame is larger than the transport accepts.
    #[error(
        "frame of {size} bytes exceeds the maximum of {max} bytes; send smaller values, or raise the limit (NodeBuilder::max_frame in main, InThreadTransport::with_max_frame in one process)"
    )]
    FrameTooLarge {
        /// Size of the refused frame.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A value could not be encoded.
    #[error("cannot encode a {type_name}: {reason}")]
    Encode {
        /// The Rust type that was being encoded.
        type_name: &'static str,
        /// What the encoder reported.
        reason: String,
    },

    /// Bytes could not be decoded as the expected type.
    #[error(
        "cannot decode a {type_name}: {reason}; the sender used another type or the data is corrupt"
    )]
    Decode {
        /// The Rust type that was expected.
        type_name: &'static str,
        /// What the decoder reported.
        reason: String,
    },

    /// No service of this name is served by main.
    #[error(
        "no service named {0:?} is served by main; attach the component in main before the children use it"
    )]
    NoService(String),

    /// A service of this name is already served.
    #[error("a service named {0:?} is already served; serve each name once")]
    ServiceExists(String),

    /// The operation is only possible in another role.
    #[error(
        "{operation} is only possible in the {needed:?} process; check role() before calling it"
    )]
    WrongRole {
        /// What was attempted.
        operation: &'static str,
        /// The role it needs.
        needed: crate::Role,
    },

    /// The peer does not exist or has left.
    #[error("no peer with id {0}; it has left or never joined")]
    NoPeer(crate::PeerId),

    /// The peer's outgoing queue is full: it does not read what main sends it.
    #[error(
        "the queue to peer {0} is full: it is not reading what main sends it; retry later or send it less (NodeBuilder::max_backlog sizes the queue)"
    )]
    PeerBacklogged(crate::PeerId),

    /// The remote side failed to handle a request.
    #[error("main could not handle the request: {0}")]
    Remote(String),

    /// A wait ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// Main did not answer a call within its deadline: it may be frozen
    /// (stopped, swapping) or overloaded. The request may still take effect
    /// later; its reply, if one comes, is dropped.
    #[error(
        "{operation} got no answer from main within {after:?}; main may be frozen or overloaded (the request may still take effect); raise NodeBuilder::call_timeout or give the call a longer time-out"
    )]
    CallTimeout {
        /// What was asked of main, in words.
        operation: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },

    /// The channel was closed: nothing more can be sent to it, and every
    /// item sent before the close has been received.
    #[error("channel {channel:?} is closed; open a new channel to go on")]
    Closed {
        /// The channel's name.
        channel: String,
    },

    /// The channel holds no item right now (from `try_recv`).
    #[error("channel {channel:?} is empty; wait with recv or recv_timeout")]
    Empty {
        /// The channel's name.
        channel: String,
    },

    /// A bounded channel is at its capacity (from `try_send`).
    #[error(
        "channel {channel:?} is full ({capacity} items); wait with send or receive some items first"
    )]
    Full {
        /// The channel's name.
        channel: String,
        /// The channel's capacity.
        capacity: usize,
    },

    /// An active receive was tried on a channel whose passive receive loop
    /// runs, or a second loop was started: a channel is read one way at a time.
    #[error(
        "channel {channel:?} is being read by its receive loop; stop the loop before receiving actively"
    )]
    ReceiveLoopRunning {
        /// The channel's name.
        channel: String,
    },

    /// A receive loop could not start (no thread or runtime could be made).
    #[error("cannot start the receive loop: {0}; the system is out of threads or memory")]
    LoopStart(String),

    /// A channel of this name is already registered.
    #[error("a channel named {0:?} is already registered; register each name once")]
    ChannelExists(String),

    /// No channel of this name is registered.
    #[error("no channel named {0:?} is registered; register it before looking it up")]
    NoChannel(String),

    /// A hosted channel was opened with a capacity other than the one it
    /// was created with.
    #[error(
        "channel {channel:?} has capacity {actual:?}, not {requested:?}; open it with the same capacity everywhere, or with open"
    )]
    CapacityMismatch {
        /// The channel's name.
        channel: String,
        /// The capacity asked for (`None`: unbounded).
        requested: Option<usize>,
        /// The channel's capacity (`None`: unbounded).
        actual: Option<usize>,
    },

    /// A channel was looked up (or opened) with another item type than the
    /// one it carries.
    #[error(
        "channel {channel:?} carries {actual}, not {expected}; use the same item type everywhere"
    )]
    WrongType {
        /// The channel's name.
        channel: String,
        /// The type the caller asked for.
        expected: &'static str,
        /// The type the channel carries.
        actual: &'static str,
    },

    /// A hosted channel was opened with another item type than the one
    /// main recorded for it (the first opener's, in any process).
    #[error(
        "channel {channel:?} carries {actual}, not {requested}; open it with the same item type in every process"
    )]
    ChannelTypeMismatch {
        /// The channel's name.
        channel: String,
        /// The item type this open asked for.
        requested: &'static str,
        /// The item type the channel was first opened with.
        actual: String,
    },
}

impl Error {
    /// Builds an [`Error::Disconnected`] with a reason.
    pub fn disconnected(reason: impl fmt::Display) -> Error {
        Error::Disconnected(reason.to_string())
    }

    /// Builds an [`Error::CallTimeout`] for a call to `service`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = yuki_channel::Error::call_timeout("echo", Duration::from_millis(300));
    /// assert!(e.to_string().contains("call to \"echo\""));
    /// assert!(e.to_string().contains("NodeBuilder::call_timeout"));
    /// ```
    pub fn call_timeout(service: &str, after: std::time::Duration) -> Error {
        Error::CallTimeout {
            operation: format!("a call to {service:?}"),
            after,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed send, carrying the value back to the caller.
///
/// [`SendError::error`] says why: [`Error::Closed`] for a closed channel,
/// [`Error::Disconnected`] when main is gone (hosted channels), an encoding
/// or frame-size error for a value that cannot cross the seam.
#[derive(Clone, PartialEq, Eq)]
pub struct SendError<T> {
    value: T,
    error: Error,
}

impl<T> SendError<T> {
    /// Pairs the value that was not sent with the reason.
    pub fn new(value: T, error: Error) -> SendError<T> {
        SendError { value, error }
    }

    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Why the value was not sent.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The value and the reason.
    pub fn into_parts(self) -> (T, Error) {
        (self.value, self.error)
    }

    /// Whether the channel was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.error, Error::Closed { .. })
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed: {}", self.error)
    }
}

impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<SendError<T>> for Error {
    fn from(e: SendError<T>) -> Error {
        e.error
    }
}

/// A failed `try_send`, carrying the value back to the caller.
#[derive(Clone, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The bounded channel is at its capacity; [`Error::Full`] says which.
    Full(T, Error),
    /// The value could not be sent at all (closed, disconnected, not encodable).
    Failed(SendError<T>),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v, _) => v,
            TrySendError::Failed(e) => e.into_inner(),
        }
    }

    /// Why the value was not sent.
    pub fn error(&self) -> &Error {
        match self {
            TrySendError::Full(_, e) => e,
            TrySendError::Failed(e) => e.error(),
        }
    }

    /// Whether the channel was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(..))
    }

    /// Whether the channel was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Failed(e) if e.is_closed())
    }
}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(e: SendError<T>) -> TrySendError<T> {
        TrySendError::Failed(e)
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_, e) => f.debug_tuple("Full").field(e).finish(),
            TrySendError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed: {}", self.error())
    }
}

impl<T> std::error::Error for TrySendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

impl<T> From<TrySendError<T>> for Error {
    fn from(e: TrySendError<T>) -> Error {
        match e {
            TrySendError::Full(_, e) => e,
            TrySendError::Failed(e) => e.error,
        }
    }
}

/// A failed `send_timeout`, carrying the value back to the caller (as
/// crossbeam's `SendTimeoutError`).
#[derive(Clone, PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    /// No room came in time ([`Error::Timeout`]) or main did not answer in
    /// time ([`Error::CallTimeout`]).
    Timeout(T, Error),
    /// The value could not be sent at all (closed, disconnected, not encodable).
    Failed(SendError<T>),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(v, _) => v,
            SendTimeoutError::Failed(e) => e.into_inner(),
        }
    }

    /// Why the value was not sent.
    pub fn error(&self) -> &Error {
        match self {
            SendTimeoutError::Timeout(_, e) => e,
            SendTimeoutError::Failed(e) => e.error(),
        }
    }

    /// Whether the time ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendTimeoutError::Timeout(..))
    }

    /// Whether the channel was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendTimeoutError::Failed(e) if e.is_closed())
    }
}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(e: SendError<T>) -> SendTimeoutError<T> {
        match e.error {
            Error::CallTimeout { .. } | Error::Timeout(_) => {
                SendTimeoutError::Timeout(e.value, e.error)
            }
            _ => SendTimeoutError::Failed(e),
        }
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_, e) => f.debug_tuple("Timeout").field(e).finish(),
            SendTimeoutError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed: {}", self.error())
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

impl<T> From<SendTimeoutError<T>> for Error {
    fn from(e: SendTimeoutError<T>) -> Error {
        match e {
            SendTimeoutError::Timeout(_, e) => e,
            SendTimeoutError::Failed(e) => e.error,
        }
    }
}
