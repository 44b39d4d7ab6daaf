//! What a supervised child is promised: when it is restarted, how it
//! ended, and the moments of its life the hooks hear about.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use yuki_channel::PeerId;

/// When a child that exited is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never: an exit is final.
    #[default]
    Never,
    /// When it exits with a failure (a non-zero status or a signal).
    OnFailure,
    /// Whenever it exits, unless it was stopped.
    Always,
}

/// Restart settings of one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// The wait before the first restart; doubled for each next one.
    pub backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// How many restarts are allowed before the supervisor gives up.
    pub budget: u32,
}

impl Default for Restart {
    fn default() -> Restart {
        Restart {
            policy: RestartPolicy::Never,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            budget: 5,
        }
    }
}

impl Restart {
    pub(super) fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// How a child ended for good.
///
/// What a status holds depends on the system: on Unix a run either
/// exited with a code or was ended by a signal (a child that ignored its
/// stop request and SIGTERM ends with SIGKILL); Windows has no signals,
/// so every run has a code, and a child that
/// [`ChildHandle::stop`](crate::ChildHandle::stop) or
/// [`ChildHandle::kill`](crate::ChildHandle::kill) had to end exits with
/// code 1.
///
/// ```no_run
/// # use yuki_ipc_transport::Node;
/// # let node = Node::init()?;
/// let exe = std::env::current_exe().unwrap();
/// let exit = node.spawn("worker", std::process::Command::new(exe))?.wait()?;
/// match (exit.code(), exit.signal()) {
///     (Some(0), _) => assert!(exit.success()),
///     (Some(code), _) => println!("worker exited with code {code}"),
///     (None, Some(signal)) => println!("worker was ended by signal {signal}"),
///     (None, None) => println!("worker ended: {}", exit.status),
/// }
/// # Ok::<(), yuki_ipc_transport::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The status of its last run.
    pub status: ExitStatus,
    /// How many times it was restarted by its policy.
    pub restarts: u32,
    /// Whether the supervisor gave up after the restart budget ran out.
    pub gave_up: bool,
}

impl Exit {
    /// The code its last run exited with, or `None` if a signal ended it
    /// (Unix only).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that ended its last run, if one did; always `None` on
    /// Windows, which has no signals.
    pub fn signal(&self) -> Option<i32> {
        super::os::exit_signal(&self.status)
    }

    /// Whether its last run exited with code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A moment in a child's life, reported to the hooks of
/// [`Node::on_lifecycle`](crate::Node::on_lifecycle) on a main thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// The child is about to be stopped (by `stop`, `kill` or its own request).
    Stopping {
        /// Its name.
        name: String,
        /// Its current peer id.
        peer: PeerId,
    },
    /// The child is about to be started again.
    Restarting {
        /// Its name.
        name: String,
        /// Which restart this is by policy (0 for a requested restart).
        attempt: u32,
        /// The back-off before it starts.
        delay: Duration,
    },
    /// The child's process exited.
    Exited {
        /// Its name.
        name: String,
        /// The peer id it had.
        peer: PeerId,
        /// How it exited.
        status: ExitStatus,
    },
    /// The restart budget ran out; the child stays down.
    GaveUp {
        /// Its name.
        name: String,
        /// How many restarts it had.
        restarts: u32,
    },
}

/// A hook run at each [`Lifecycle`] moment.
pub(crate) type LifecycleHook = Arc<dyn Fn(&Lifecycle) + Send + Sync>;
