//! Unix: children are forked with the link's memory file left open across
//! exec (and, on Linux, armed with the parent-death signal), ended with
//! SIGTERM then SIGKILL, and watched without being reaped, so that their
//! pid stays main's until the supervisor has marked the exit.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use super::Force;
use yuki_channel::sync::lock;

/// What a start hands down to the child: a descriptor left open across
/// exec (the link's memory file).
pub(crate) type Handed = std::os::fd::OwnedFd;

/// The descriptor's number, as the child will find it.
pub(crate) fn raw(handed: &Handed) -> i32 {
    use std::os::fd::AsRawFd;
    handed.as_raw_fd()
}

/// SIGTERM first (the child may clean up), then SIGKILL.
pub(crate) const ESCALATION: &[Force] = &[Force::Terminate, Force::Kill];

/// Sets what every start of this command needs: the descriptor `inherit`
/// holds at each fork (the link's memory file, or -1 for none) stays open
/// across exec, and on Linux the parent-death signal is armed.
pub(crate) fn prepare(
    mut cmd: Command,
    death_signal: Option<i32>,
    inherit: Arc<AtomicI32>,
) -> Command {
    // SAFETY: only async-signal-safe calls (an atomic load, fcntl) run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = inherit.load(Ordering::Relaxed);
            if fd >= 0 && libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[cfg(target_os = "linux")]
    if let Some(sig) = death_signal {
        arm_death_signal(&mut cmd, sig);
    }
    // Refused before any start (`check_death_signal`): nothing to arm.
    #[cfg(not(target_os = "linux"))]
    let _ = death_signal;
    cmd
}

#[cfg(target_os = "linux")]
fn arm_death_signal(cmd: &mut Command, sig: i32) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the signal was armed.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// The signal that ended a run, if a signal did.
pub(crate) fn exit_signal(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// One forked run of a child, until it is reaped.
pub(crate) struct Process {
    pid: u32,
    child: Mutex<Child>,
}

impl Process {
    pub(crate) fn new(child: Child) -> Process {
        Process {
            pid: child.id(),
            child: Mutex::new(child),
        }
    }

    /// Blocks until it has exited, without reaping it (so its pid stays
    /// ours and a signal cannot reach a stranger).
    pub(crate) fn wait_exited(&self) {
        loop {
            // SAFETY: waitid writes only into `info`, which we own.
            let r = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
    }

    /// Reaps it once it has exited: its status.
    pub(crate) fn reap(&self) -> io::Result<ExitStatus> {
        lock(&self.child).wait()
    }

    /// Sends it SIGTERM or SIGKILL. The caller makes sure it has not been
    /// reaped yet (its pid cannot belong to anyone else).
    pub(crate) fn force(&self, force: Force) {
        let sig = match force {
            Force::Terminate => libc::SIGTERM,
            Force::Kill => libc::SIGKILL,
        };
        // SAFETY: kill(2) has no memory effects; the pid is unreaped, so ours.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_status_says_its_code_or_its_signal() {
        let exited = ExitStatus::from_raw(3 << 8);
        assert_eq!((exited.code(), exit_signal(&exited)), (Some(3), None));
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(
            (killed.code(), exit_signal(&killed)),
            (None, Some(libc::SIGKILL))
        );
    }

    #[test]
    fn a_process_is_forced_and_reaped_with_its_signal() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let process = Process::new(child);
        process.force(Force::Terminate);
        process.wait_exited();
        assert_eq!(exit_signal(&process.reap().unwrap()), Some(libc::SIGTERM));
        let process = Process::new(Command::new("sleep").arg("30").spawn().unwrap());
        process.force(Force::Kill);
        process.wait_exited();
        assert_eq!(exit_signal(&process.reap().unwrap()), Some(libc::SIGKILL));
    }
}
