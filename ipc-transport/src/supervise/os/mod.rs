//! What starting, watching and ending a child process takes on each
//! system, behind one small interface: [`Process`] (a forked child that
//! main can wait for, force and reap), [`prepare`] (what each start of a
//! command sets up) and [`ESCALATION`] (how a child that does not stop
//! when asked is ended).
//!
//! On Unix a child is ended with SIGTERM, then SIGKILL; on Linux it can
//! also be given a parent-death signal (`PR_SET_PDEATHSIG`). Windows has
//! neither: a child is ended with `TerminateProcess` (`Child::kill`), and
//! learns of main's death only from its link.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::Handed;
#[cfg(unix)]
pub(super) use unix::{ESCALATION, Process, exit_signal, prepare, raw};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::Handed;
#[cfg(windows)]
pub(super) use windows::{ESCALATION, Process, exit_signal, prepare, raw};

#[cfg(not(any(unix, windows)))]
compile_error!("yuki-ipc-transport spawns and supervises processes on Unix and Windows only");

use std::time::Duration;

use crate::error::{Error, Result};

/// How main ends a child that did not stop when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Force {
    /// Asks the system to end it (SIGTERM: it may still clean up).
    /// Windows has no such step, so its escalation never names it.
    #[cfg_attr(windows, allow(dead_code))]
    Terminate,
    /// Ends it at once (SIGKILL, or `TerminateProcess` on Windows).
    Kill,
}

impl Force {
    /// How long to wait for the exit after this step: a child that was
    /// told to terminate gets the grace period again; a killed one only
    /// needs the system to schedule its end.
    pub(super) fn wait(self, grace: Duration) -> Duration {
        match self {
            Force::Terminate => grace,
            Force::Kill => Duration::from_secs(5),
        }
    }
}

/// Whether this system has a parent-death signal (`PR_SET_PDEATHSIG`).
pub(crate) const DEATH_SIGNAL_SUPPORTED: bool = cfg!(target_os = "linux");

/// The parent-death signal a child gets unless its builder says otherwise:
/// SIGKILL where the system has one, none elsewhere.
pub(crate) const DEFAULT_DEATH_SIGNAL: Option<i32> = if DEATH_SIGNAL_SUPPORTED {
    Some(9) // SIGKILL, the same number on every Unix
} else {
    None
};

/// Refuses a parent-death signal where the system has none (`supported`
/// is [`DEATH_SIGNAL_SUPPORTED`], a parameter so both answers are tested).
pub(crate) fn check_death_signal(signal: Option<i32>, supported: bool) -> Result<()> {
    match signal {
        Some(signal) if !supported => Err(Error::Unsupported {
            feature: "a parent-death signal (PR_SET_PDEATHSIG)",
            instead: format!(
                "it exists on Linux only, so signal {signal} cannot be armed here: pass None to \
                 ChildBuilder::parent_death_signal; the child still learns of main's death from \
                 its link and exits (WhenMainGone)"
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_signal_is_refused_only_where_the_system_has_none() {
        assert_eq!(check_death_signal(Some(9), true), Ok(()));
        assert_eq!(check_death_signal(None, true), Ok(()));
        assert_eq!(check_death_signal(None, false), Ok(()));
        let refused = check_death_signal(Some(15), false).unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("PR_SET_PDEATHSIG"), "{message}");
        assert!(message.contains("signal 15"), "{message}");
        assert!(message.contains("pass None"), "{message}");
        assert_eq!(DEFAULT_DEATH_SIGNAL.is_some(), DEATH_SIGNAL_SUPPORTED);
        #[cfg(target_os = "linux")]
        assert_eq!(DEFAULT_DEATH_SIGNAL, Some(libc::SIGKILL));
    }

    #[test]
    fn a_child_that_will_not_stop_is_forced_harder_each_step() {
        assert_eq!(
            ESCALATION.last(),
            Some(&Force::Kill),
            "the last step cannot be refused"
        );
        #[cfg(unix)]
        assert_eq!(ESCALATION, [Force::Terminate, Force::Kill]);
        #[cfg(windows)]
        assert_eq!(ESCALATION, [Force::Kill]);
        let grace = Duration::from_secs(30);
        assert_eq!(Force::Terminate.wait(grace), grace);
        assert_eq!(Force::Kill.wait(grace), Duration::from_secs(5));
    }
}
