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
    #[error("disconnected: {0}; the peer is gone, so reconnect or restart this process")]
    Disconnected(String),

    /// A frame is larger than the transport accepts.
    #[error(
        "frame of {size} bytes exceeds the maximum of {max} bytes; send smaller values or raise the limit"
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
    #[error("{operation} is only possible in the {needed:?} process")]
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
    #[error("the queue to peer {0} is full; it is not reading its pushes")]
    PeerBacklogged(crate::PeerId),

    /// The remote side failed to handle a request.
    #[error("main could not handle the request: {0}")]
    Remote(String),

    /// A wait ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl Error {
    /// Builds an [`Error::Disconnected`] with a reason.
    pub fn disconnected(reason: impl fmt::Display) -> Error {
        Error::Disconnected(reason.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
