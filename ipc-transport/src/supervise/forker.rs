//! The one long-lived thread that forks every child, so that
//! `PR_SET_PDEATHSIG` ties children to main rather than to a passing thread,
//! and what each fork sets up before the child's program runs.

use std::io;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use crate::error::{Error, Result};
use yuki_channel::sync::lock;

type Job = Box<dyn FnOnce() + Send>;

/// Forks on its own thread; forking ends when it is closed.
pub(super) struct Forker {
    jobs: Mutex<Option<Sender<Job>>>,
}

impl Forker {
    pub(super) fn start() -> Result<Forker> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        std::thread::Builder::new()
            .name("yuki-supervisor".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Error::os("starting the supervisor thread", e))?;
        Ok(Forker {
            jobs: Mutex::new(Some(tx)),
        })
    }

    /// Spawns `cmd` on the forker thread and returns its result.
    pub(super) fn fork(&self, cmd: &Arc<Mutex<Command>>) -> Result<Child> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let cmd = cmd.clone();
        let job: Job = Box::new(move || {
            let r = lock(&cmd).spawn();
            let _ = tx.send(r);
        });
        let sent = lock(&self.jobs).as_ref().map(|f| f.send(job).is_ok());
        if sent != Some(true) {
            return Err(Error::os("spawning a child", "the node is shutting down"));
        }
        rx.recv()
            .map_err(|_| Error::os("spawning a child", "the supervisor thread ended"))?
            .map_err(|e| Error::os("spawning a child", e))
    }

    /// Ends the thread; later forks fail.
    pub(super) fn close(&self) {
        lock(&self.jobs).take();
    }
}
/// Sets what every start of this command needs: the link's memory file
/// (whose descriptor `inherit` holds at each fork) stays open across exec,
/// and the parent-death signal.
pub(super) fn prepare(
    mut cmd: Command,
    death_signal: Option<i32>,
    inherit: Arc<AtomicI32>,
) -> Command {
    use std::os::unix::process::CommandExt;
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
    #[cfg(not(target_os = "linux"))]
    let _ = death_signal;
    cmd
}

/// Blocks until `pid` has exited, without reaping it (so its pid stays ours
/// and signals cannot reach a stranger).
pub(super) fn wait_exited_keep_zombie(pid: u32) {
    loop {
        // SAFETY: waitid writes only into `info`, which we own.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}
