//! [`ChildHandle`]: what main holds of a supervised child.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use yuki_channel::PeerId;

use super::child::{ChildShared, ChildState};
use super::os::{self, Force};
use super::phase::{Event, Phase};
use super::policy::{Exit, Lifecycle};
use super::{Supervisor, prune};
use crate::error::{Error, Result};
use crate::wire::Control;
use yuki_channel::sync::lock;

/// Main's handle on one supervised child (cheap to clone).
pub struct ChildHandle {
    pub(super) shared: Arc<ChildShared>,
}

impl ChildHandle {
    pub(super) fn new(shared: Arc<ChildShared>) -> ChildHandle {
        shared.handles.fetch_add(1, Ordering::Relaxed);
        ChildHandle { shared }
    }
}

impl Clone for ChildHandle {
    fn clone(&self) -> ChildHandle {
        ChildHandle::new(self.shared.clone())
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        // The last handle of an ended child lets the table forget it now,
        // whichever internal thread still holds it for a moment.
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(sup) = self.shared.sup.upgrade() {
                prune(&mut lock(&sup.children));
            }
        }
    }
}

/// How long [`ChildHandle::kill`] waits for a killed child's exit.
const KILL_WAIT: Duration = Duration::from_secs(60);

impl ChildHandle {
    /// The name it was spawned with.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The process id of its current (or last) run.
    pub fn pid(&self) -> u32 {
        self.shared.lock().pid
    }

    /// Its peer id on the transport for its current (or last) run; a
    /// restarted child joins with a new id.
    pub fn id(&self) -> PeerId {
        self.shared.lock().peer
    }

    /// How many times its policy restarted it.
    pub fn restarts(&self) -> u32 {
        self.shared.lock().restarts
    }

    fn sup(&self) -> Result<Arc<Supervisor>> {
        self.shared
            .sup
            .upgrade()
            .ok_or_else(|| Error::NotRunning(self.shared.name.clone()))
    }

    /// Stops it for good: asks it over its link (its
    /// [`Node::wait_for_stop`](crate::Node::wait_for_stop) returns and its
    /// `on_stop` hooks run), waits up to `timeout` (the grace period) for
    /// its program to return from `main`, then ends it: on Unix SIGTERM,
    /// `timeout` again, then SIGKILL; on Windows, which has no signals,
    /// `TerminateProcess` (exit code 1). Runs the [`Lifecycle::Stopping`]
    /// hooks first. See [Stopping](crate::Node#stopping).
    pub fn stop(&self, timeout: Duration) -> Result<Exit> {
        let sup = self.sup()?;
        let (link, peer) = {
            let mut st = self.shared.lock();
            if let Some(done) = st.life.finished() {
                return Ok(done);
            }
            st.on(Event::StopAsked);
            (st.link.clone(), st.peer)
        };
        self.shared.changed.notify_all();
        sup.emit(&Lifecycle::Stopping {
            name: self.shared.name.clone(),
            peer,
        });
        if let Some(link) = link {
            link.send_control(Control::Shutdown);
        }
        if let Ok(exit) = self.wait_timeout(timeout) {
            return Ok(exit);
        }
        for &force in os::ESCALATION {
            self.shared.force(force);
            if let Ok(exit) = self.wait_timeout(force.wait(timeout)) {
                return Ok(exit);
            }
        }
        Err(Error::Transport(yuki_channel::Error::Timeout(timeout)))
    }

    /// Kills it at once, for good (SIGKILL on Unix, `TerminateProcess` on
    /// Windows), and waits for its exit.
    ///
    /// Neither can be caught or ignored, so the child always exits; how
    /// soon depends only on the kernel scheduling it, which on a loaded
    /// machine can take seconds. `kill` therefore waits until the exit has
    /// been reaped, for up to a minute: a bound only against a process stuck
    /// in an uninterruptible kernel wait (a hung disk or network file
    /// system), after which it returns [`Error::Transport`] with a time-out and
    /// the exit is still reaped later ([`ChildHandle::wait`] sees it).
    pub fn kill(&self) -> Result<Exit> {
        {
            let mut st = self.shared.lock();
            if let Some(done) = st.life.finished() {
                return Ok(done);
            }
            st.on(Event::StopAsked);
        }
        self.shared.changed.notify_all();
        self.shared.force(Force::Kill);
        self.wait_timeout(KILL_WAIT)
    }

    /// Stops it (as [`ChildHandle::stop`], with the node's
    /// [`stop_timeout`](crate::NodeBuilder::stop_timeout) as the grace
    /// period) and starts it again at once; returns when the new run has
    /// joined, or with the new run's own error when it could not start
    /// (such as [`Error::ExitedEarly`] or [`Error::NeverConnected`]). See
    /// [Stopping](crate::Node#stopping).
    pub fn restart(&self) -> Result<()> {
        let sup = self.sup()?;
        let (link, generation) = {
            let mut st = self.shared.lock();
            if st.life.finished().is_some() || st.life.stopping() {
                return Err(Error::NotRunning(self.shared.name.clone()));
            }
            st.on(Event::RestartAsked);
            st.start_failed = None;
            (st.link.clone(), st.generation)
        };
        sup.emit(&Lifecycle::Restarting {
            name: self.shared.name.clone(),
            attempt: 0,
            delay: Duration::ZERO,
        });
        if let Some(link) = link {
            link.send_control(Control::Shutdown);
        }
        let gone = |st: &ChildState| st.generation > generation || !st.life.running();
        let timeout = sup.stop_timeout;
        let asked = std::iter::once(None);
        for force in asked.chain(os::ESCALATION.iter().copied().map(Some)) {
            if let Some(force) = force {
                self.shared.force(force);
            }
            if self.shared.wait_until(Instant::now() + timeout, gone) {
                break;
            }
        }
        let up = |st: &ChildState| {
            st.start_failed.is_some()
                || match st.life.phase {
                    Phase::Finished(_) => true,
                    Phase::Running { .. } => st.generation > generation,
                    _ => false,
                }
        };
        let deadline = Instant::now() + timeout + sup.handshake_timeout;
        let joined = self.shared.wait_until(deadline, up);
        // The new run's own failure (it exited early, never connected...)
        // says more than the time-out or the end that followed it.
        if let Some(e) = self.shared.lock().start_failed.take() {
            return Err(e);
        }
        if !joined {
            return Err(Error::HandshakeTimeout(sup.handshake_timeout));
        }
        if self.shared.lock().life.finished().is_some() {
            return Err(Error::NotRunning(self.shared.name.clone()));
        }
        Ok(())
    }

    /// Waits until it has ended for good (stopped, or not restarted), and
    /// says how: the same shape as [`ChildHandle::stop`] and
    /// [`ChildHandle::kill`].
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::Node;
    /// # let node = Node::init()?;
    /// let exe = std::env::current_exe().unwrap();
    /// let child = node.spawn("worker", std::process::Command::new(exe))?;
    /// let exit = child.wait()?;
    /// println!("worker ended: {}", exit.status);
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn wait(&self) -> Result<Exit> {
        loop {
            match self.wait_timeout(Duration::from_secs(3600)) {
                Err(Error::Transport(yuki_channel::Error::Timeout(_))) => {}
                other => return other,
            }
        }
    }

    /// Like [`ChildHandle::wait`], giving up after `timeout` with
    /// [`Error::Transport`] holding a time-out, as `stop` does.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Exit> {
        self.shared
            .wait_until(Instant::now() + timeout, |st| st.life.finished().is_some());
        self.try_wait()
            .ok_or(Error::Transport(yuki_channel::Error::Timeout(timeout)))
    }

    /// How it ended, if it has ended for good.
    pub fn try_wait(&self) -> Option<Exit> {
        self.shared.lock().life.finished()
    }

    /// Whether its process is running now.
    pub fn is_running(&self) -> bool {
        self.shared.lock().life.alive()
    }
}

impl fmt::Debug for ChildHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ChildHandle")
            .field("name", &self.shared.name)
            .field("pid", &st.pid)
            .field("peer", &st.peer)
            .field("phase", &st.life.phase)
            .field("asked", &st.life.ask)
            .finish()
    }
}
