//! The crate's error type.

use std::time::Duration;

/// Everything that can go wrong starting a node or supervising children.
///
/// Failures of calls and pushes on the transport are reported with
/// [`yuki_channel::Error`], like every other transport's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bootstrap variable does not hold what a parent writes there.
    #[error(
        "the YUKI_BOOTSTRAP value is malformed ({0}); start children with Node::spawn, which sets it"
    )]
    MalformedBootstrap(String),

    /// The parent named in the bootstrap value is not there to connect to.
    #[error("the parent process is gone or not listening ({0}); children cannot run without it")]
    ParentGone(String),

    /// The parent refused this child's token.
    #[error(
        "the parent refused the handshake: {0}; only processes spawned by this parent can join"
    )]
    Refused(String),

    /// The handshake started but did not finish in time: the other side
    /// connected (or was connected to) and did not answer.
    #[error(
        "the handshake started but did not finish within {0:?}; the other side is stuck or too slow (raise NodeBuilder::handshake_timeout)"
    )]
    HandshakeTimeout(Duration),

    /// A spawned child ran but never connected to main: its program does
    /// not call `Node::init()`, or not before the handshake time-out.
    #[error(
        "child {name:?} (pid {pid}) started but never connected within {waited:?}; its program must call Node::init() first thing at start-up (if it does and starts slowly, raise NodeBuilder::handshake_timeout)"
    )]
    NeverConnected {
        /// The child's name.
        name: String,
        /// Its process id (it has been killed).
        pid: u32,
        /// How long main waited.
        waited: Duration,
    },

    /// `Node::init` was called in main while this process's main node is
    /// alive.
    #[error(
        "this process already has a main Node; Node::init runs once per process: share that Node (in an Arc) or its transport, or build a separate main with NodeBuilder::independent_main"
    )]
    AlreadyMain,

    /// The role this process was started with disagrees with the role
    /// `yuki_channel::role()` already gave.
    #[error(
        "this process already runs as {fixed:?} (yuki_channel::role() answered before Node::init), so it cannot join as {wanted:?}; call Node::init before anything asks for the role"
    )]
    RoleConflict {
        /// The role already fixed.
        fixed: yuki_channel::Role,
        /// The role this init would have given.
        wanted: yuki_channel::Role,
    },

    /// A child exited before it finished its handshake.
    #[error(
        "child {name:?} exited ({status}) before it connected; it must call Node::init() at start-up"
    )]
    ExitedEarly {
        /// The child's name.
        name: String,
        /// How it exited.
        status: String,
    },

    /// The operating system refused to start a process or create a channel.
    #[error("{what} failed: {reason}")]
    Os {
        /// What was attempted.
        what: &'static str,
        /// What the system said.
        reason: String,
    },

    /// The operation is only possible in the other role.
    #[error("{0}; check Node::role() before calling it")]
    WrongRole(&'static str),

    /// A child of this name is already running.
    #[error("a child named {0:?} is already running; give each child its own name")]
    NameTaken(String),

    /// The child has been stopped for good, or its node is gone.
    #[error(
        "child {0:?} is not running: it was stopped or ended for good, or its Node was dropped; spawn it again to start a new run"
    )]
    NotRunning(String),

    /// The feature does not exist on this system.
    #[error("{feature} is not available on this system: {instead}")]
    Unsupported {
        /// What was asked for.
        feature: &'static str,
        /// Why not, and what to do instead.
        instead: String,
    },

    /// The link kind named in `YUKI_LINK` is not one this crate knows.
    #[error(
        "YUKI_LINK is {0:?}, which names no link kind; set it to \"shared-memory\" or \"ipc-channel\", or unset it for the system's default"
    )]
    UnknownLink(String),

    /// The link kind asked for does not exist on this system.
    #[error(
        "the {0} link does not run on this system (shared memory links are Linux only); use LinkKind::IpcChannel or unset YUKI_LINK"
    )]
    LinkUnsupported(crate::LinkKind),

    /// An error from the transport.
    #[error("transport failed: {0}")]
    Transport(#[from] yuki_channel::Error),
}

impl Error {
    pub(crate) fn os(what: &'static str, reason: impl std::fmt::Display) -> Error {
        Error::Os {
            what,
            reason: reason.to_string(),
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
