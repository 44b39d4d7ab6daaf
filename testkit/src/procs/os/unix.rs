//! Unix: waitid without reaping, kill(2), and (Linux) a pidfd to wait for
//! a process that is not the harness's child.

use std::io;
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::Instant;

use yuki_channel::sync::lock;

/// A child the harness started, until it is reaped.
pub(in crate::procs) struct Process {
    pid: u32,
    child: Mutex<Child>,
}

impl Process {
    pub(in crate::procs) fn new(child: Child) -> Process {
        Process {
            pid: child.id(),
            child: Mutex::new(child),
        }
    }

    /// Blocks until it has exited, without reaping it (so its pid stays ours).
    pub(in crate::procs) fn wait_exited(&self) {
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

    pub(in crate::procs) fn reap(&self) -> io::Result<ExitStatus> {
        lock(&self.child).wait()
    }

    /// Sends `sig`; the caller makes sure it is not reaped yet.
    pub(in crate::procs) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory effects; the pid is unreaped, so ours.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) };
    }

    /// Sends SIGKILL; the caller makes sure it is not reaped yet.
    pub(in crate::procs) fn kill(&self) {
        self.signal(libc::SIGKILL);
    }
}

/// Waits until `pid` has exited or the deadline passes, woken by the kernel
/// through a pidfd (no polling).
#[cfg(target_os = "linux")]
pub(in crate::procs) fn wait_gone(pid: u32, deadline: Instant) {
    // SAFETY: pidfd_open takes plain integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return; // Already gone (ESRCH), or no pidfd support: report what is left.
    }
    let fd = fd as libc::c_int;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
}

/// No pidfd here, and leftovers are only looked for on Linux: nothing to
/// wait for.
#[cfg(not(target_os = "linux"))]
pub(in crate::procs) fn wait_gone(_pid: u32, _deadline: Instant) {}
